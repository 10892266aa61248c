"""The research layer: bars from ticks, vectorised sweeps checked against a plain loop of the
same rules, the deflated Sharpe against the formula by hand, and the Dagster assets."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import kurtosis, norm, skew

from quant_assets.research.bars import bars, parse_interval
from quant_assets.research.sweep import SweepSettings, bar_path, run_sweep
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets.strategies.spec import Axis

MIN = 60_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01 UTC, ns


def _ticks(rows: list[tuple]) -> pl.LazyFrame:
    """(ts_event ns, kind, price, size, bid, ask) rows as a canonical-enough tick frame."""
    ts, kind, px, sz, bid, ask = zip(*rows)
    return pl.LazyFrame({"ts_event": ts, "ts_recv": ts, "kind": kind, "price": px, "size": sz, "bid_px": bid, "ask_px": ask},
                        schema={"ts_event": pl.Int64, "ts_recv": pl.Int64, "kind": pl.String, "price": pl.Float64,
                                "size": pl.Float64, "bid_px": pl.Float64, "ask_px": pl.Float64})


def test_bars_take_ohlc_from_trades_else_mids_and_skip_empty_minutes():
    q = lambda t, b, a: (t, "quote", None, None, b, a)  # noqa: E731
    tr = lambda t, p, s: (t, "trade", p, s, None, None)  # noqa: E731
    rows = [
        q(T0 + 1, 99.0, 101.0), tr(T0 + 2, 100.5, 1.0), tr(T0 + 3, 102.0, 2.0), tr(T0 + 4, 99.5, 0.5), q(T0 + 5, 100.0, 100.5),
        q(T0 + MIN + 1, 100.0, 102.0), q(T0 + MIN + 2, 103.0, 104.0), q(T0 + MIN + 3, 101.0, 102.0),
        q(T0 + 3 * MIN + 1, 90.0, 91.0),  # minute 2 has no tick at all
        q(T0 + 4 * MIN, 92.0, 93.0),  # on the boundary: received as minute 3 closes, so part of it
    ]
    out = bars(_ticks(rows), parse_interval("1m")).collect()
    assert out["ts"].to_list() == [T0, T0 + MIN, T0 + 3 * MIN]
    first, second, last = out.rows(named=True)
    assert (first["bid_open"], first["ask_open"], first["quote_open_ts"]) == (99.0, 101.0, T0 + 1)
    assert (last["bid_open"], last["bid_close"], last["quotes"]) == (90.0, 92.0, 2)
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.5, 102.0, 99.5, 99.5)
    assert first["source"] == "trades" and first["volume"] == 3.5 and first["trades"] == 3 and first["quotes"] == 2
    assert first["mid_close"] == 100.25 and first["spread_close"] == 0.5 and first["spread_mean"] == 1.25
    assert (second["open"], second["high"], second["low"], second["close"]) == (101.0, 103.5, 101.0, 101.5)
    assert second["source"] == "mid" and second["volume"] == 0.0 and second["trades"] == 0
    assert last["close"] == 92.5
    with pytest.raises(ValueError, match="expected a whole number and a unit"):
        parse_interval("1 minute")


def _bars(n: int = 3_000, seed: int = 7, t0: int = T0) -> pl.DataFrame:
    """Quote bars of a random walk: each bar's first quote a little off its last one."""
    rng = np.random.default_rng(seed)
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    spread = 0.01 + 0.01 * rng.random(n)
    open_mid = mid * np.exp(rng.normal(0, 0.0005, n))
    ts = t0 + np.arange(n, dtype=np.int64) * MIN
    return pl.DataFrame({"ts": ts, "mid_close": mid, "bid_close": mid - spread / 2, "ask_close": mid + spread / 2,
                         "bid_open": open_mid - spread / 2, "ask_open": open_mid + spread / 2, "quote_open_ts": ts + 1})


def _loop(bars_df: pl.DataFrame, fast: int, slow: int, notional: float, fee: float, cash0: float,
          history: pl.DataFrame | None = None) -> tuple[float, int]:
    """The vectorised form's rules as a plain bar-by-bar loop: (total return, orders). EMAs
    seeded at the combination's own warm-up start, decisions on a bar's close from the month's
    first bar once warm (three slow lengths), executed at the next bar's first quote."""
    path = bar_path(bars_df, history)
    h, warm = path.history, 3 * slow
    a = max(0, h - warm)
    close = path.close
    a_f, a_s = 2 / (fast + 1), 2 / (slow + 1)
    ef = es = close[a]
    cash, pos, side, orders, pending = cash0, 0.0, 0, 0, None
    for i in range(a, len(close)):
        c = close[i]
        if i > a:
            ef, es = a_f * c + (1 - a_f) * ef, a_s * c + (1 - a_s) * es
        if pending is not None:
            want, target = pending
            delta = target - pos
            price = path.ask_open[i] if want > 0 else path.bid_open[i]
            cash -= delta * price + abs(delta) * price * fee
            pos, orders, pending = target, orders + 1, None
        if i < h or i - a + 1 < warm or i == len(close) - 1:
            continue
        want = 1 if ef > es else -1 if ef < es else side
        if want != side and want != 0:
            pending, side = (want, want * notional / c), want
    return (cash + pos * close[-1]) / cash0 - 1.0, orders


def test_the_sweep_grid_matches_a_plain_loop_of_the_same_rules():
    df = _bars()
    axes = (Axis("fast_period", 5, 25, 10), Axis("slow_period", 60, 200, 70))
    res = run_sweep(df, EMA_CROSS, fee=0.0004, trading_days=365, starting_cash=100_000.0, axes=axes,
                    settings=SweepSettings(chunk=4, top_k=2, spa_reps=50))
    assert res.table.height == 9 and res.summary["combinations"] == 9
    for row in res.table.iter_rows(named=True):
        total, orders = _loop(df, row["fast_period"], row["slow_period"], 10_000.0, 0.0004, 100_000.0)
        assert row["orders"] == orders, row
        assert row["total_return"] == pytest.approx(total, rel=1e-9, abs=1e-12), row
    assert res.table["rank"].to_list() == list(range(1, 10))
    assert res.table["sharpe"].to_list() == sorted(res.table["sharpe"].to_list(), reverse=True)
    assert 0.0 <= res.summary["spa_pvalue"] <= 1.0 and len(res.summary["top"]) == 2


def test_a_sweep_warmed_on_the_previous_month_decides_from_its_first_bar():
    # The previous month's last 600 bars warm every combination (3 x slow <= 600): the month is
    # the loop over history + month with decisions only in the month; cold, it waits 3 x slow.
    prev, month = _bars(n=800, seed=1, t0=T0 - 800 * MIN), _bars(n=2_000, seed=2)
    axes = (Axis("fast_period", 5, 25, 20), Axis("slow_period", 60, 200, 140))
    warm = run_sweep(month, EMA_CROSS, fee=0.0004, trading_days=365, starting_cash=100_000.0, axes=axes,
                     settings=SweepSettings(top_k=1, spa_reps=20), history=prev.tail(600))
    cold = run_sweep(month, EMA_CROSS, fee=0.0004, trading_days=365, starting_cash=100_000.0, axes=axes,
                     settings=SweepSettings(top_k=1, spa_reps=20))
    assert warm.summary["history_bars"] == 600 and cold.summary["history_bars"] == 0
    for res, hist in ((warm, prev.tail(600)), (cold, None)):
        for row in res.table.iter_rows(named=True):
            total, orders = _loop(month, row["fast_period"], row["slow_period"], 10_000.0, 0.0004, 100_000.0, hist)
            assert (row["orders"], row["total_return"]) == (orders, pytest.approx(total, rel=1e-9, abs=1e-12)), row
    # Warm, the first order comes on the month's second bar (decided at the first bar's close).
    assert warm.table["orders"].min() >= 1 and cold.summary["warmup"]["longest_wait_bars"] == 3 * 200 - 1


def test_the_deflated_sharpe_of_the_best_is_the_formula_by_hand():
    df = _bars(n=6_000, seed=3)
    axes = (Axis("fast_period", 5, 15, 5), Axis("slow_period", 60, 100, 40))
    res = run_sweep(df, EMA_CROSS, fee=0.0, trading_days=365, starting_cash=100_000.0, axes=axes,
                    settings=SweepSettings(top_k=1, spa_reps=20))
    n = res.table.height
    h = res.hourly[:, res.table["combo"][0]]  # the best combination, in grid order
    h = h[~np.isnan(h)]
    sr = h.mean() / h.std(ddof=1)  # per hour
    all_sr = [c.mean() / c.std(ddof=1) * math.sqrt(24 * 365) for c in res.hourly.T]
    v = np.var(all_sr, ddof=1) / (24 * 365)  # per-hour variance of the Sharpe ratio across trials
    g = 0.5772156649015329  # Euler-Mascheroni
    sr0 = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    # vectorbt passes scipy's (excess) kurtosis where Bailey & López de Prado write kurtosis:
    # the hand value follows vectorbt there (see the README on this known deviation).
    k, s = kurtosis(h), skew(h)
    hand = norm.cdf((sr - sr0) * math.sqrt(len(h) - 1) / math.sqrt(1 - s * sr + (k - 1) / 4 * sr**2))
    assert res.summary["n_trials"] == n == 6
    assert res.summary["top"][0]["deflated_sharpe"] == pytest.approx(hand, rel=1e-6)


def test_bars_and_sweep_assets_publish_a_ranked_grid_with_a_heat_map(lake, instance):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import duck
    from resources import CriticResource, LakeResource

    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    res = dg.materialize(ASSETS, selection=["ticks", "bars_1m", "sweep_ema_cross"], partition_key="2024-01|BTCUSDT",
                         instance=instance, resources={"lake": LakeResource(), "critic": CriticResource()})
    assert res.success
    (mat,) = res.asset_materializations_for_node("sweep_ema_cross")
    md = mat.metadata
    assert md["combinations"].value == 100 and md["heatmap"].value.startswith("![Sharpe over the grid](data:image/png;base64,")
    assert 0.0 <= md["spa_pvalue"].value <= 1.0
    out = lake.sweep_dir("ema_cross", "BTCUSDT", "2024-01")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 100 and len(summary["top"]) == 3
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    con = duck.connect(lake)
    assert con.execute("SELECT count(*) FROM sweeps WHERE strategy='ema_cross'").fetchone()[0] == 100
    # the sweep runs on the bars that hold a quote (the mid bars the event-driven strategy sees)
    assert con.execute("SELECT count(*) FROM bars WHERE interval='1m' AND mid_close IS NOT NULL").fetchone()[0] == md["bars"].value
    # The number of candidates kept is the launchpad's config.
    more = dg.materialize(ASSETS, selection=["sweep_ema_cross"], partition_key="2024-01|BTCUSDT", instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()},
                          run_config={"ops": {"sweep_ema_cross": {"config": {"top_k": 5}}}})
    (mat,) = more.asset_materializations_for_node("sweep_ema_cross")
    assert len(mat.metadata["top"].value) == 5


def test_a_slice_too_short_to_rank_gives_an_explained_empty_grid():
    res = run_sweep(_bars(n=100), EMA_CROSS, fee=0.0004, trading_days=365, starting_cash=100_000.0)
    assert res.table.height == 0 and res.summary["top"] == [] and "at least 1440" in res.summary["reason"]


def test_the_fused_metrics_equal_vectorbts_kernels():
    import vectorbt as vbt

    from quant_assets.research.sweep import value_metrics

    rng = np.random.default_rng(11)
    value = 1e5 * np.cumprod(1 + rng.normal(0, 1e-3, (5_000, 7)), axis=0)
    value[:, 3] = 1e5  # never traded: no Sharpe
    rets = vbt.returns.nb.returns_nb(value, np.full(7, 1e5))
    sharpe, mdd = value_metrics(value, 1e5, 525_600.0)
    expected = vbt.returns.nb.sharpe_ratio_nb(rets, 525_600.0)
    ok = np.arange(7) != 3
    np.testing.assert_allclose(sharpe[ok], expected[ok], rtol=1e-9)
    assert np.isnan(sharpe[3]) and np.isinf(expected[3])  # vectorbt says infinity; we say undefined
    np.testing.assert_allclose(mdd, vbt.returns.nb.max_drawdown_nb(rets), rtol=1e-12, atol=1e-15)


def test_the_top_sweep_candidates_are_re_tested_event_driven_on_the_next_month(lake, instance):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import duck
    from resources import CriticResource, LakeResource

    for month in ("2024-01", "2024-02"):
        write_landing(lake, SyntheticSpec("BTCUSDT", month, seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    run = lambda sel, pk: dg.materialize(ASSETS, selection=sel, partition_key=pk, instance=instance,  # noqa: E731
                                         resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    for month in ("2024-01", "2024-02"):
        assert run(["ticks", "bars_1m", "sweep_ema_cross", "backtest_ema_cross", "metrics_ema_cross"], f"{month}|BTCUSDT").success
    feb = run(["sweep_oos_ema_cross"], "2024-02|BTCUSDT")
    assert feb.success and not feb.asset_materializations_for_node("sweep_oos_ema_cross")  # March is missing: it waits
    jan = run(["sweep_oos_ema_cross"], "2024-01|BTCUSDT")
    assert jan.success
    (mat,) = jan.asset_materializations_for_node("sweep_oos_ema_cross")
    assert mat.metadata["candidates"].value == 3 and mat.metadata["oos_month"].value == "2024-02"
    t = pl.read_parquet(lake.handoff_dir("ema_cross", "BTCUSDT", "2024-01") / "handoff.parquet")
    summary = json.loads((lake.sweep_dir("ema_cross", "BTCUSDT", "2024-01") / "summary.json").read_text())
    assert t["sweep_rank"].to_list() == [c["rank"] for c in summary["top"]] == [1, 2, 3]
    for row, cand in zip(t.iter_rows(named=True), summary["top"], strict=True):
        event = json.loads(row["event_params"])
        # ema_cross signals on 1-minute bars, as the sweep: the candidate is the combination itself
        assert (event["fast_period"], event["slow_period"]) == (cand["fast_period"], cand["slow_period"])
        assert row["oos_candidate_sharpe"] is not None and row["oos_baseline_sharpe"] is not None and row["n_tested"] == 3
        assert row["tested"] and row["local_bar"] == pytest.approx(0.05 / 3) and "improved" not in row  # the FDR ledger decides
        assert (lake.handoff_dir("ema_cross", "BTCUSDT", "2024-01") / "runs" / f"rank{cand['rank']}" / "2024-02" / "fills.parquet").exists()
    assert duck.connect(lake).execute("SELECT count(*) FROM handoffs").fetchone()[0] == 3


def test_bar_sizes_come_from_configuration_and_the_sweep_runs_on_the_first(lake, instance, monkeypatch):
    import dagster as dg

    from quant_assets.assets.research import research_assets
    from quant_assets.assets.ticks import ticks
    from quant_assets.definitions import SPECS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.settings import bar_intervals
    from resources import CriticResource, LakeResource

    monkeypatch.setenv("QUANT_BAR_INTERVALS", "5m, 1m,5m")
    assert bar_intervals() == ("5m", "1m")
    assets = research_assets(SPECS)
    keys = {k.to_user_string() for a in assets for k in a.keys}
    assert {"bars_5m", "bars_1m", "sweep_ema_cross", "agreement_ema_cross"} <= keys
    (sweep,) = [a for a in assets if a.key.to_user_string() == "sweep_ema_cross"]
    assert {d.to_user_string() for d in sweep.asset_deps[sweep.key]} == {"bars_5m"}
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    res = dg.materialize([ticks, *assets], selection=["ticks", "bars_5m", "bars_1m"], partition_key="2024-01|BTCUSDT",
                         instance=instance, resources={"lake": LakeResource(), "critic": CriticResource()})
    assert res.success
    five = pl.read_parquet(lake.bars_path("5m", "BTCUSDT", "2024-01"))
    one = pl.read_parquet(lake.bars_path("1m", "BTCUSDT", "2024-01"))
    assert (five["ts"] % (5 * MIN)).max() == 0 and five["trades"].sum() == one["trades"].sum()
    assert five.height < one.height and five["high"].max() == one["high"].max()
    monkeypatch.setenv("QUANT_BAR_INTERVALS", "1m,5 minutes")
    with pytest.raises(ValueError, match="QUANT_BAR_INTERVALS='1m,5 minutes': bar interval '5 minutes': expected"):
        bar_intervals()
