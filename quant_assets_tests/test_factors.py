"""Factor analysis with alphalens: a planted signal gives the IC and quintile ordering it must,
the IC equals a Spearman correlation computed by hand, turnover equals a count by hand, and the
per-symbol asset publishes its report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from quant_assets.research.factors import SIGNAL_DEFS, FactorInputError, FactorSettings, analyse, quintile_turnover, samples

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
    # over that month's samples (forward returns may reach into the next month's prices).
    sig, mid = df["signal"].to_numpy(), df["mid"].to_numpy()
    fwd = mid[1:] / mid[:-1] - 1.0
    jan = slice(0, 600)
    by_hand = spearmanr(sig[jan], fwd[jan]).statistic
    assert res.ic.filter(pl.col("month") == "2024-01")["1h"][0] == pytest.approx(by_hand, rel=1e-12)
    assert res.report["periods"]["4h"]["ic_mean"] < one["ic_mean"]  # a one-hour edge fades over four
    assert res.png[:4] == b"\x89PNG"


def test_turnover_is_the_share_that_came_from_another_quintile():
    q = np.array([5, 5, 1, 5, 5, 3, 5])
    month = np.array(["a"] * 4 + ["b"] * 3)
    # In quintile 5 with a predecessor in the same month: t=1 (from 5), t=3 (from 1), t=6 (from 3); t=4 crosses months.
    assert quintile_turnover(q, month, 5, 1) == pytest.approx(2 / 3)
    assert quintile_turnover(q, month, 2, 1) is None


def test_signals_follow_the_strategies_definitions():
    n = 400
    mid = 100 + np.sin(np.arange(n) / 20.0)
    bars = pl.DataFrame({"ts": T0 + np.arange(n, dtype=np.int64) * 60_000_000_000, "mid_close": mid})
    ema = samples(bars, SIGNAL_DEFS["ema_spread"], {"fast_period": 5, "slow_period": 50}, 60_000_000_000)
    a_f, a_s = 2 / 6, 2 / 51
    ef = es = mid[0]
    for i in range(1, n):
        ef, es = a_f * mid[i] + (1 - a_f) * ef, a_s * mid[i] + (1 - a_s) * es
    assert ema.height == n - 49  # defined from the slow length on
    assert ema["signal"][-1] == pytest.approx((ef - es) / mid[-1], rel=1e-9)
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
