"""Metric sets and robustness on data made in code: quantstats against an independent
implementation (empyrical-reloaded), vectorbt against quantstats, known trades, and the
edge cases that must give nulls with reasons rather than NaN, infinity or a crash."""

from __future__ import annotations

import json
import math

import empyrical as ep
import numpy as np
import pandas as pd
import polars as pl
import pytest
import quantstats as qs

from quant_assets.analytics import robustness
from quant_assets.analytics.periods import period_metrics
from quant_assets.analytics.returns import ReturnSeries, daily, sample_returns, stitch
from quant_assets.analytics.slice_metrics import METRICS_SCHEMA, BacktestSlice, compute, metrics_frame
from quant_assets.analytics.trades import portfolio, table_trade_stats, trade_table, vectorbt_trade_stats
from quant_assets.engines.result import EQUITY_SCHEMA, FILL_SCHEMA, RAW_FILL_SCHEMA, annotate_fills, equity_curve

T0 = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC, ns
MIN = 60_000_000_000


def _series(returns: np.ndarray, interval_s: float = 60.0, trading_days: int = 365) -> ReturnSeries:
    idx = pd.DatetimeIndex((T0 + np.arange(1, len(returns) + 1) * int(interval_s * 1e9)).astype("datetime64[ns]"))
    return ReturnSeries(pd.Series(returns, index=idx), interval_s, trading_days, 100_000.0,
                        100_000.0 * float(np.prod(1 + returns)))


@pytest.fixture(scope="module")
def noisy() -> ReturnSeries:
    rng = np.random.default_rng(7)
    return _series(rng.standard_t(4, 20_000) * 2e-4 + 1e-6)


def test_period_metrics_agree_with_empyrical(noisy: ReturnSeries) -> None:
    m = period_metrics(noisy).values
    r, ann = noisy.returns, noisy.periods_per_year
    assert noisy.periods_per_year == 365 * 1440
    assert m["sharpe"] == pytest.approx(ep.sharpe_ratio(r, annualization=ann), rel=1e-9)
    assert m["sortino"] == pytest.approx(ep.sortino_ratio(r, annualization=ann), rel=1e-9)
    assert m["volatility"] == pytest.approx(ep.annual_volatility(r, annualization=ann), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(ep.max_drawdown(r), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(r), rel=1e-9)  # computed in numpy for speed
    assert m["calmar"] == pytest.approx(qs.stats.calmar(r, periods=ann), rel=1e-9)
    assert m["cagr"] == pytest.approx(ep.annual_return(r, annualization=ann), rel=1e-9)
    assert m["calmar"] == pytest.approx(ep.calmar_ratio(r, annualization=ann), rel=1e-9)
    assert m["omega"] == pytest.approx(ep.omega_ratio(r, annualization=ann), rel=1e-9)
    assert m["tail_ratio"] == pytest.approx(ep.tail_ratio(r), rel=1e-9)
    assert m["total_return"] == pytest.approx(ep.cum_returns_final(r), rel=1e-9)
    # historical VaR / CVaR at 95%
    assert m["var_95"] == pytest.approx(ep.value_at_risk(r, cutoff=0.05), rel=1e-9)
    assert m["cvar_95"] == pytest.approx(ep.conditional_value_at_risk(r, cutoff=0.05), rel=1e-9)
    assert 0 < m["psr"] < 1 and 0 < m["win_rate"] < 1 and m["profit_factor"] > 0
    assert m["max_drawdown_duration_s"] > 0


def test_longest_underwater_period_is_measured_in_seconds() -> None:
    # up, then 3 periods under water, back to a new high, then 1 period under water at the end
    m = period_metrics(_series(np.array([0.01, -0.01, -0.01, 0.005, 0.03, -0.001]))).values
    assert m["max_drawdown_duration_s"] == 4 * 60.0  # from the peak at period 1 to the recovery at period 5


@pytest.mark.parametrize(
    ("returns", "nulls"),
    [
        (np.zeros(500), {"sharpe", "sortino", "calmar", "psr", "omega", "profit_factor", "tail_ratio", "win_rate"}),
        (np.r_[np.zeros(100), 0.01, np.zeros(100)], {"sortino", "calmar", "omega", "profit_factor", "tail_ratio"}),
        (np.array([0.01]), None),
        (np.array([]), None),
    ],
    ids=["flat", "one-winning-period", "one-period", "empty"],
)
def test_undefined_metrics_are_null_with_a_reason(returns: np.ndarray, nulls: set[str] | None) -> None:
    m = period_metrics(_series(returns))
    for name, value in m.values.items():
        assert value is None or math.isfinite(value), name
    expected = nulls if nulls is not None else {k for k in m.values if k != "total_return"}
    assert expected <= {k for k, v in m.values.items() if v is None}
    assert expected <= set(m.reasons) and all(m.reasons[k] for k in expected)


# ---- one backtest slice made in code --------------------------------------------------
def _slice(fill_rows: list[tuple[int, int, float, float, float]], mids: np.ndarray, start: float = 100_000.0) -> BacktestSlice:
    """Fills (minute index, side, qty, price, fee) and one mid per minute → a stored-format slice."""
    ts = T0 + np.arange(len(mids), dtype=np.int64) * MIN
    raw = pl.DataFrame(
        {"ts": [T0 + i * MIN for i, *_ in fill_rows], "side": [s for _, s, *_ in fill_rows],
         "qty": [q for *_, q, _, _ in fill_rows], "price": [p for *_, p, _ in fill_rows],
         "fee": [f for *_, f in fill_rows], "liquidity": ["taker"] * len(fill_rows),
         "order_id": [str(i) for i in range(len(fill_rows))]},
        schema=RAW_FILL_SCHEMA,
    )
    fills = annotate_fills(raw)
    samples = pl.DataFrame({"ts": ts, "mid": mids})
    equity = equity_curve(fills, samples, start)
    manifest = {"params": {"equity_interval_s": 60.0}, "starting_cash": start, "files": {}}
    return BacktestSlice(fills.cast(FILL_SCHEMA), equity.cast(EQUITY_SCHEMA), manifest, None)  # type: ignore[arg-type]


def _walk(n: int, seed: int = 1) -> np.ndarray:
    return 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 5e-4, n)))


def test_known_trades_give_known_trade_statistics() -> None:
    mids = np.full(100, 100.0)
    # long 10 @100 -> sell @102 (+20), short 5 @102 -> buy back @103 (-5), each side 0.1 fee
    bt = _slice([(10, 1, 10.0, 100.0, 0.1), (20, -1, 10.0, 102.0, 0.1), (30, -1, 5.0, 102.0, 0.1), (40, 1, 5.0, 103.0, 0.1)], mids)
    pf = portfolio(bt.fills, bt.equity, bt.starting_cash, bt.interval_s)
    table = trade_table(pf)
    assert table["pnl"].to_list() == pytest.approx([20.0 - 0.2, -5.0 - 0.2])
    assert table["direction"].to_list() == [1, -1]
    assert table["duration_s"].to_list() == [600.0, 600.0]
    vbt_stats = vectorbt_trade_stats(pf, table).values
    assert vbt_stats["trades"] == 2 and vbt_stats["trade_win_rate"] == 0.5
    assert vbt_stats["expectancy"] == pytest.approx((19.8 - 5.2) / 2)
    assert vbt_stats["avg_win"] == pytest.approx(19.8) and vbt_stats["avg_loss"] == pytest.approx(-5.2)
    assert vbt_stats["best_trade"] == pytest.approx(19.8) and vbt_stats["worst_trade"] == pytest.approx(-5.2)
    assert table_trade_stats(table).values == pytest.approx(vbt_stats)


def test_vectorbt_and_quantstats_agree_on_a_slice() -> None:
    mids = _walk(5_000)
    # alternate long and short 1 unit (2 units per reversal), then close what is left
    rows = [(i, 1 if k % 2 == 0 else -1, 1.0 if k == 0 else 2.0, float(mids[i]) + 0.01, 0.05)
            for k, i in enumerate(range(100, 4_900, 300))]
    left = sum(side * qty for _, side, qty, *_ in rows)
    rows.append((4_950, -1 if left > 0 else 1, abs(left), float(mids[4_950]), 0.05))
    bt = _slice(rows, mids)
    sm = compute(bt, 365, None, "s", "TEST", "2024-01")
    row = sm.row
    assert row["trades"] > 10
    for a, b in (("total_return", "vbt_total_return"), ("sharpe", "vbt_sharpe"), ("max_drawdown", "vbt_max_drawdown")):
        assert row[a] == pytest.approx(row[b], rel=1e-9), a
    assert row["final_equity"] == pytest.approx(100_000.0 * (1 + row["total_return"]), rel=1e-12)
    frame = metrics_frame(row)
    assert dict(frame.schema) == METRICS_SCHEMA and frame.height == 1


@pytest.mark.parametrize("case", ["flat", "single-trade", "wiped-out", "empty"])
def test_edge_slices_give_nulls_with_reasons_never_nan(case: str) -> None:
    mids = _walk(600)
    if case == "flat":
        bt = _slice([], mids)
    elif case == "single-trade":
        bt = _slice([(10, 1, 1.0, float(mids[10]), 0.1), (500, -1, 1.0, float(mids[500]), 0.1)], mids)
    elif case == "wiped-out":
        crash = np.r_[np.full(300, 100.0), np.full(300, 1.0)]
        bt = _slice([(10, 1, 2_000.0, 100.0, 0.0), (590, -1, 2_000.0, 1.0, 0.0)], crash)
    else:
        bt = _slice([], np.zeros(0))
    sm = compute(bt, 365, None, "s", "TEST", "2024-01")
    frame = metrics_frame(sm.row)
    floats = [c for c, t in METRICS_SCHEMA.items() if t == pl.Float64()]
    assert not frame.select(pl.any_horizontal(pl.col(floats).is_nan() | pl.col(floats).is_infinite())).item()
    reasons = json.loads(sm.row["null_reasons"])
    for name in floats:
        if frame[name][0] is None and name not in ("start_ts", "end_ts"):
            assert name in reasons or name in ("final_equity", "pnl", "time_in_market", "vbt_total_return"), name
    if case == "flat":
        assert sm.row["trades"] == 0 and sm.row["sharpe"] is None and sm.row["volatility"] == 0.0
        assert "no fills" in reasons["trade_win_rate"]
    if case == "single-trade":
        assert sm.row["trades"] == 1 and sm.row["trade_win_rate"] in (0.0, 1.0)
    if case == "wiped-out":
        assert sm.row["total_return"] == -1.0 and sm.row["max_drawdown"] == -1.0
        assert "series stops there" in reasons["_notes"]
    if case == "empty":
        assert sm.row["periods"] == 0 and "at least 2" in reasons["sharpe"]


def test_risk_on_deployed_capital_is_not_diluted_by_idle_cash() -> None:
    # 100 units at 100 (a 10,000 position) on 100,000 of cash; the price falls to 90: -1,000.
    mids = np.r_[np.full(10, 100.0), np.linspace(100.0, 90.0, 41), np.full(49, 90.0)]
    row = compute(_slice([(10, 1, 100.0, 100.0, 0.0), (60, -1, 100.0, 90.0, 0.0)], mids), 365, None, "s", "T", "2024-01").row
    assert row["pnl"] == pytest.approx(-1_000.0) and row["total_return"] == pytest.approx(-0.01)
    assert row["return_on_deployed"] == pytest.approx(-0.10, rel=1e-12)
    assert row["max_drawdown_on_deployed"] == pytest.approx(-0.10, rel=1e-12)
    assert row["deployed_peak"] == pytest.approx(10_000.0) and 9_000.0 < row["deployed_avg"] < 10_000.0
    # fees count: PnL net of fees over the peak capital at risk
    fees = compute(_slice([(10, 1, 100.0, 100.0, 10.0), (60, -1, 100.0, 90.0, 10.0)], mids), 365, None, "s", "T", "2024-01").row
    assert fees["return_on_deployed"] == pytest.approx(-0.102) and fees["max_drawdown_on_deployed"] == pytest.approx(-0.102)
    # a loss of many times the notional is reported as such, never saturated at -100%
    churn = [(10 + 2 * i + j, 1 - 2 * j, 100.0, 100.0, 100.0) for i in range(20) for j in (0, 1)]
    many = compute(_slice(churn, np.full(60, 100.0)), 365, None, "s", "T", "2024-01").row
    assert many["return_on_deployed"] == pytest.approx(-0.4) and many["deployed_peak"] == pytest.approx(10_000.0)
    # a round trip between two samples still deploys capital; never in the market: null with the reason
    quick = compute(_slice([(10, 1, 100.0, 100.0, 0.0), (10, -1, 100.0, 99.0, 0.0)], np.full(30, 100.0)), 365, None, "s", "T", "2024-01").row
    assert quick["deployed_peak"] == pytest.approx(10_000.0) and quick["return_on_deployed"] == pytest.approx(-0.01)
    flat = compute(_slice([], mids), 365, None, "s", "T", "2024-01").row
    assert flat["return_on_deployed"] is None and "never in the market" in json.loads(flat["null_reasons"])["return_on_deployed"]


def test_closed_days_are_left_out_of_the_periods() -> None:
    # Friday moves, Saturday and Sunday flat (an FX weekend), Monday moves: 1-hour samples.
    hours = 24 * 4
    ts = 1_704_412_800_000_000_000 + np.arange(hours, dtype=np.int64) * 3_600_000_000_000  # Fri 2024-01-05
    mid = np.r_[100 + np.arange(24) * 0.1, np.full(48, 102.3), 102.3 + np.arange(24) * 0.1]
    eq = pl.DataFrame({"ts": ts, "equity": 1_000.0 + mid, "mid": mid})
    rs = sample_returns(eq, 3_600.0, 260)
    assert rs.closed_days == 2 and len(rs) == 47  # 96 samples, first is the base, 48 weekend ones dropped
    assert rs.periods_per_year == 260 * 24


def test_daily_compounds_and_stitch_chains_months() -> None:
    a, b = _series(np.full(1440 * 2, 1e-5)), _series(np.full(1440, -1e-5))
    d = daily(a.returns)  # returns are stamped at the end of their minute: 00:00 belongs to the new day
    assert d.to_list() == pytest.approx([(1 + 1e-5) ** 1439 - 1, (1 + 1e-5) ** 1440 - 1, 1e-5])
    s = stitch([a, b])
    assert len(s) == len(a) + len(b)
    assert s.final_equity == pytest.approx(100_000.0 * (1 + 1e-5) ** 2880 * (1 - 1e-5) ** 1440)


# ---- robustness ------------------------------------------------------------------------
def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    d = pd.Series(rng.normal(0.002, 0.01, 250), index=pd.date_range("2024-01-01", periods=250, freq="D"))
    first = robustness.bootstrap_ci(d, 365, reps=400, seed=5)
    assert first == robustness.bootstrap_ci(d, 365, reps=400, seed=5)
    point = d.mean() / d.std() * math.sqrt(365)
    assert first["sharpe"]["lo"] < point < first["sharpe"]["hi"]
    assert first["cagr"]["lo"] < first["cagr"]["hi"]
    assert robustness.bootstrap_ci(d.iloc[:5], 365)["sharpe"] is None


def test_monte_carlo_reshuffles_paths_not_totals() -> None:
    r = pd.Series(np.r_[np.full(30, 0.01), np.full(10, -0.02)])  # all losses at the end: a deep drawdown
    mc = robustness.monte_carlo_drawdown(r, sims=300, seed=1)
    assert mc["observed_max_drawdown"] == pytest.approx((1 - 0.02) ** 10 - 1)
    assert mc["p05"] <= mc["p50"] <= mc["p95"] <= 0
    assert mc["share_deeper_than_observed"] == 0.0  # no order can be worse than all losses in a row
    # chunking does not change the answer's shape: many trades, bounded memory
    big = pd.Series(np.random.default_rng(0).normal(0, 1e-3, 50_000))
    out = robustness.monte_carlo_drawdown(big, sims=200, seed=2)
    assert out["sims"] == 200 and out["p05"] < out["p95"]


def test_deflated_sharpe_falls_as_trials_grow() -> None:
    rng = np.random.default_rng(11)
    d = pd.Series(rng.normal(0.001, 0.01, 500), index=pd.date_range("2024-01-01", periods=500, freq="D"))
    one, ten, thousand = (robustness.deflated_sharpe(d, 365, n)["dsr"] for n in (1, 10, 1_000))
    assert 0 < thousand < ten < one < 1


def test_walk_forward_uses_only_past_months_in_sample() -> None:
    months = [(f"2024-{m:02d}", _series(np.random.default_rng(m).normal(0, 1e-4, 200))) for m in range(1, 6)]
    table, summary = robustness.walk_forward(months, in_sample_months=2)
    assert table["out_of_sample"].to_list() == ["2024-02", "2024-03", "2024-04", "2024-05"]
    assert table["in_sample"].to_list() == ["2024-01", "2024-01,2024-02", "2024-02,2024-03", "2024-03,2024-04"]
    assert summary["windows"] == 4
    _, none = robustness.walk_forward(months[:1])
    assert none["windows"] == 0 and "at least 2" in none["reason"]


def _equity(vol_per_min: np.ndarray, interval_s: float = 60.0) -> pl.DataFrame:
    rng = np.random.default_rng(11)
    mid = 100.0 * np.exp(np.cumsum(vol_per_min * rng.standard_normal(len(vol_per_min))))
    ts = T0 + np.arange(len(mid), dtype=np.int64) * int(interval_s * 1e9)
    return pl.DataFrame({"ts": ts, "mid": mid, "equity": np.full(len(mid), 100_000.0)})


def test_volatility_regimes_use_only_the_volatility_before_each_sample() -> None:
    from quant_assets.analytics.trades import REGIME_MIN_HISTORY_S, sample_regimes

    # three calm days, then a day four times as volatile
    day = 1_440
    vol = np.concatenate([np.full(3 * day, 1e-4), np.full(day, 4e-4)])
    equity = _equity(vol)
    full = sample_regimes(equity, 60.0, 525_600.0)
    # the cold start: no regime until a day of volatility history exists, never an invented one
    first_day = full.head(REGIME_MIN_HISTORY_S // 60)
    assert first_day["regime"].null_count() == len(first_day)
    # labels of the first three days do not change when the volatile day is cut off: nothing
    # about a sample depends on what comes after it (whole-month terciles would move them)
    calm = sample_regimes(equity.head(3 * day), 60.0, 525_600.0)
    assert full.head(3 * day).equals(calm)
    assert set(calm["regime"].drop_nulls()) == {"low", "normal", "high"}
    # the cut points at a sample are terciles of the volatility before it
    i = 2 * day + 17
    past = full["vol"].head(i).drop_nulls().to_numpy()
    lo, hi = full["vol_lo"][i], full["vol_hi"][i]
    assert np.mean(past <= lo) == pytest.approx(1 / 3, abs=0.02) and np.mean(past <= hi) == pytest.approx(2 / 3, abs=0.02)
    # once its hour-long window is inside it, the volatile day is high against the calm past
    assert (full["regime"].tail(day - 60) == "high").all()
