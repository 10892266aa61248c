"""Factor analysis with alphalens: a planted signal gives the IC and quintile ordering it must,
the IC equals a Spearman correlation computed by hand, turnover equals a count by hand, and the
per-symbol asset publishes its report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from quant_assets.research.factors import (
    CALIBRATION_NS, SIGNAL_DEFS, FactorInputError, FactorSettings, analyse, point_in_time_lengths, quintile_turnover, samples,
    trailing_quantiles,
)

HOUR = 3_600_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01 UTC, ns


def _planted(n_per_month: int = 600, seed: int = 1) -> pl.DataFrame:
    """Hourly samples over two months where the next hour's return is 0.001 × signal plus noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for m, month in enumerate(("2024-01", "2024-02")):
        ts = T0 + (m * 31 * 24 + np.arange(n_per_month)) * HOUR
        frames.append(pl.DataFrame({"ts": ts, "month": [month] * n_per_month, "signal": rng.normal(size=n_per_month)}))
    df = pl.concat(frames)
    sig = df["signal"].to_numpy()
    ret = 0.001 * sig + rng.normal(0, 0.0005, len(sig))
    mid = 100.0 * np.cumprod(np.r_[1.0, 1.0 + ret[:-1]])  # mid[t+1] / mid[t] - 1 = ret[t]
    return df.with_columns(mid=pl.Series(mid))


def test_a_planted_signal_has_the_ic_and_quintile_order_it_must():
    df = _planted()
    res = analyse(df, "BTCUSDT", FactorSettings(periods=(1, 4)))
    one = res.report["periods"]["1h"]
    assert one["ic_mean"] > 0.8 and one["months"] == 2
    q = one["quantile_mean_bps"]
    assert q == sorted(q) and one["top_minus_bottom_bps"] > 15  # monotone, top quintile beats the bottom
    # alphalens's IC of a month is the Spearman correlation of the signal with the forward return
    # over that month's samples; a forward return that would reach into the next month's prices
    # does not count (January's last sample has none), so January's IC is known at its end.
    sig, mid = df["signal"].to_numpy(), df["mid"].to_numpy()
    fwd = mid[1:] / mid[:-1] - 1.0
    jan = slice(0, 599)
    by_hand = spearmanr(sig[jan], fwd[jan]).statistic
    assert res.ic.filter(pl.col("month") == "2024-01")["1h"][0] == pytest.approx(by_hand, rel=1e-12)
    assert res.report["periods"]["4h"]["ic_mean"] < one["ic_mean"]  # a one-hour edge fades over four
    assert res.png[:4] == b"\x89PNG"


def _three_months(n_per_month: int = 600) -> pl.DataFrame:
    """Like :func:`_planted` over three months (January and February identical to two months')."""
    two = _planted(n_per_month)
    rng = np.random.default_rng(9)
    ts = T0 + (2 * 31 * 24 + np.arange(n_per_month)) * HOUR
    march = pl.DataFrame({"ts": ts, "month": ["2024-03"] * n_per_month, "signal": rng.normal(size=n_per_month) * 10.0,
                          "mid": two["mid"][-1] * np.cumprod(1 + rng.normal(0, 0.01, n_per_month))})
    return pl.concat([two, march.select(two.columns)])


def test_quintiles_are_trailing_and_a_later_month_changes_no_earlier_part():
    settings = FactorSettings(periods=(1, 4), quantile_window=200, quantile_min_history=50)
    two, three = _planted(), _three_months()
    a, b = analyse(two, "BTCUSDT", settings), analyse(three, "BTCUSDT", settings)
    # every per-month part of January and February is unchanged by March (whose signal is ten
    # times larger: month-wide or all-history bins would move everyone's quintile)
    assert b.ic.filter(pl.col("month") != "2024-03").equals(a.ic)
    assert b.samples.filter(pl.col("month") != "2024-03").equals(a.samples)
    # the cold start: the first 50 samples have no quintile; the rest rank against the 200 before them
    q = a.samples["quantile"]
    assert q.head(50).null_count() == 50 and q.slice(50).null_count() == 0
    sig = a.samples["signal"].to_numpy()
    past = sig[300 - 200:300]
    assert q[300] == min(5, int(np.floor(np.mean(past < sig[300]) * 5)) + 1)
    assert a.report["quantile_cold_start"] == 50 and a.report["kept"] == 1_150
    # a forward return never reaches into the next month: January's last 4h return is null
    jan = a.samples.filter(pl.col("month") == "2024-01")
    assert jan["fwd_4h"].tail(4).null_count() == 4 and jan["fwd_4h"].head(596).null_count() == 0
    # a planted signal still orders its trailing quintiles
    assert a.report["periods"]["1h"]["quantile_mean_bps"] == sorted(a.report["periods"]["1h"]["quantile_mean_bps"])


def test_trailing_quantiles_by_hand():
    x = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0])
    # window 3, at least 2 predecessors: x[2]=3 beats 1 of (5, 1) -> share 1/2 -> bin 2 of 3; x[3]=2
    # beats 1 of (5, 1, 3); x[4]=4 beats 2 of (1, 3, 2); x[5]=0 none; x[6]=9 all
    assert trailing_quantiles(x, 3, 3, 2).tolist() == [0, 0, 2, 2, 3, 1, 3]


def test_lengths_in_quote_updates_are_converted_with_earlier_months_only():
    from dataclasses import replace

    from quant_assets.strategies.registry import MEAN_REVERSION

    minute = 60_000_000_000
    spec = replace(MEAN_REVERSION, values={"window": 600})
    def bars(month_index: int, quotes: int, n: int = 3 * 1_440) -> pl.DataFrame:
        return pl.DataFrame({"ts": T0 + month_index * 31 * 86_400_000_000_000 + np.arange(n, dtype=np.int64) * minute,
                             "quotes": [quotes] * n})
    jan = bars(0, 10).with_columns(quotes=pl.when(pl.col("ts") < T0 + CALIBRATION_NS).then(20).otherwise(10))
    months = {"2024-01": jan, "2024-02": bars(1, 30), "2024-03": bars(2, 100)}
    got = point_in_time_lengths(spec, SIGNAL_DEFS["zscore_reversion"], months)
    # January: its first day only (20 quotes a bar), its samples before the day's end left out
    assert (got["2024-01"].quotes_per_bar, got["2024-01"].lengths, got["2024-01"].from_ts) == (20.0, {"window": 30}, T0 + CALIBRATION_NS)
    # February: January's bars (1,440 x 20 + 2,880 x 10); March: January and February's, never its own
    jan_mean = (1_440 * 20 + 2_880 * 10) / 4_320
    assert got["2024-02"].quotes_per_bar == pytest.approx(jan_mean) and got["2024-02"].from_ts is None
    assert got["2024-03"].quotes_per_bar == pytest.approx((4_320 * jan_mean + 4_320 * 30) / 8_640)
    assert got["2024-03"].lengths == {"window": round(600 / got["2024-03"].quotes_per_bar)}
    # appending a month changes no earlier month's lengths
    assert {m: got[m] for m in ("2024-01", "2024-02")} == point_in_time_lengths(
        spec, SIGNAL_DEFS["zscore_reversion"], {m: months[m] for m in ("2024-01", "2024-02")})


def test_turnover_is_the_share_that_came_from_another_quintile():
    q = np.array([5, 5, 1, 5, 5, 3, 5])
    month = np.array(["a"] * 4 + ["b"] * 3)
    # In quintile 5 with a predecessor in the same month: t=1 (from 5), t=3 (from 1), t=6 (from 3); t=4 crosses months.
    assert quintile_turnover(q, month, 5, 1) == pytest.approx(2 / 3)
    assert quintile_turnover(q, month, 2, 1) is None
    # a predecessor with no quintile yet (0: the cold start) is left out, not counted as a move
    assert quintile_turnover(np.array([0, 5, 5, 0, 5]), np.array(["a"] * 5), 5, 1) == pytest.approx(0.0)


def test_signals_follow_the_strategies_definitions():
    n = 400
    mid = 100 + np.sin(np.arange(n) / 20.0)
    bars = pl.DataFrame({"ts": T0 + np.arange(n, dtype=np.int64) * 60_000_000_000, "mid_close": mid})
    ema = samples(bars, SIGNAL_DEFS["ema_spread"], {"fast_period": 5, "slow_period": 50}, 60_000_000_000)
    a_f, a_s = 2 / 6, 2 / 51
    ef = es = mid[0]
    for i in range(1, n):
        ef, es = a_f * mid[i] + (1 - a_f) * ef, a_s * mid[i] + (1 - a_s) * es
    assert ema.height == n - 149  # sampled once the strategy's warm-up (3 slow lengths) is seen
    assert ema["signal"][-1] == pytest.approx((ef - es) / mid[-1], rel=1e-9)
    # The previous month's last 150 bars warm it: sampled from the month's first bar, the EMAs
    # seeded at the history's first bar (the strategy's own warm-up feed).
    prev = bars.with_columns(ts=pl.col("ts") - n * 60_000_000_000)
    warm = samples(bars, SIGNAL_DEFS["ema_spread"], {"fast_period": 5, "slow_period": 50}, 60_000_000_000, history=prev)
    both = np.concatenate([mid[-150:], mid])
    ef = es = both[0]
    for x in both[1:]:
        ef, es = a_f * x + (1 - a_f) * ef, a_s * x + (1 - a_s) * es
    assert warm.height == n and warm["ts"][0] == bars["ts"][0]
    assert warm["signal"][-1] == pytest.approx((ef - es) / mid[-1], rel=1e-9)
    z = samples(bars, SIGNAL_DEFS["zscore_reversion"], {"window": 30}, 60_000_000_000)
    w = mid[-30:]
    assert z["signal"][-1] == pytest.approx(-(mid[-1] - w.mean()) / w.std(ddof=1), rel=1e-9)


def test_too_few_samples_is_an_explained_error():
    with pytest.raises(FactorInputError, match="BTCUSDT: 50 signal samples; the analysis needs at least 100"):
        analyse(_planted(n_per_month=25), "BTCUSDT")


def test_the_factor_asset_reports_per_symbol_across_months(lake, instance):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import duck
    from resources import CriticResource, LakeResource

    for month in ("2024-01", "2024-02"):
        write_landing(lake, SyntheticSpec("BTCUSDT", month, seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    for month in ("2024-01", "2024-02"):
        assert dg.materialize(ASSETS, selection=["ticks", "bars_1m"], partition_key=f"{month}|BTCUSDT", instance=instance,
                              resources={"lake": LakeResource(), "critic": CriticResource()}).success
    res = dg.materialize(ASSETS, selection=["factors_ema_cross", "factors_mean_reversion"], partition_key="BTCUSDT",
                         instance=instance, resources={"lake": LakeResource(), "critic": CriticResource()})
    assert res.success
    (mat,) = res.asset_materializations_for_node("factors_ema_cross")
    assert mat.metadata["months"].value == 2 and mat.metadata["signal"].value == "ema_spread"
    assert mat.metadata["plot"].value.startswith("![quintile returns and IC by month](data:image/png;base64,")
    report = json.loads((lake.factor_dir("ema_cross", "BTCUSDT") / "report.json").read_text())
    assert report["months"] == ["2024-01", "2024-02"] and set(report["periods"]) == {"1h", "4h", "24h"}
    assert -1.0 <= report["periods"]["1h"]["ic_mean"] <= 1.0 and len(report["periods"]["1h"]["quantile_mean_bps"]) == 5
    assert mat.metadata["path"].value.endswith("report.json")
    con = duck.connect(lake)
    assert con.execute("SELECT count(DISTINCT strategy), count(*) FROM factor_ic").fetchone() == (2, 4)


def test_a_symbol_with_too_little_data_gets_an_explained_empty_report(lake):
    from quant_assets.research.factors import run_factors
    from quant_assets.strategies.registry import EMA_CROSS

    n = 300  # five hours of minutes: five hourly samples
    bars = pl.DataFrame({"ts": T0 + np.arange(n, dtype=np.int64) * 60_000_000_000, "mid_close": 100 + np.arange(n) * 0.01,
                         "quotes": [1] * n})
    path = lake.bars_path("1m", "BTCUSDT", "2024-01")
    path.parent.mkdir(parents=True)
    bars.write_parquet(path)
    out = run_factors(lake, EMA_CROSS, SIGNAL_DEFS["ema_spread"], "BTCUSDT")
    report = json.loads((out.directory / "report.json").read_text())
    assert report["periods"] == {} and "the analysis needs at least 100" in report["reason"]
    assert report["months"] == ["2024-01"]
