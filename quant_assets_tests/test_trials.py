"""Every trial counted: a sweep enters the trials ledger once per grid with its size, its
combinations' returns are kept beside the grid, and the roll-ups' deflated Sharpe uses the
observed variance of Sharpe across those trials (a known dispersion, checked by hand)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy.stats import kurtosis, norm, skew

from quant_assets.analytics import robustness, trials
from quant_assets.research import sweep_returns
from quant_assets.research.run import run_sweep_slice
from quant_assets.research.sweep import GRIDS, SweepSettings
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets_tests.test_research import MIN, _bars

JAN = 1_704_067_200_000_000_000  # 2024-01-01 UTC, ns
FEB = 1_706_745_600_000_000_000  # 2024-02-01 UTC, ns
HOUR = 3_600_000_000_000
DAY = 24 * HOUR


def _write_bars(lake, month: str, t0: int, n: int = 3_000, seed: int = 7) -> None:
    bars = _bars(n, seed).with_columns(ts=pl.lit(t0) + pl.int_range(n, dtype=pl.Int64) * MIN)
    lake.write_parquet(bars, lake.bars_path("1m", "BTCUSDT", month))


def _ledger_sets(lake) -> int:
    return int(trials.read(lake)["n_sets"].sum())


def test_a_sweep_adds_its_grid_once_and_keeps_every_combinations_hourly_returns(lake):
    settings = SweepSettings(spa_reps=10)
    sweep = lambda month: run_sweep_slice(lake, EMA_CROSS, "BTCUSDT", month, 0.0004, 365, 100_000.0,  # noqa: E731
                                          settings=settings)
    _write_bars(lake, "2024-01", JAN)
    _write_bars(lake, "2024-02", FEB, seed=8)
    before = _ledger_sets(lake)
    out = sweep("2024-01")
    grid_size = out.summary["combinations"]
    assert grid_size == len(GRIDS["ema_cross"][0].values()) * len(GRIDS["ema_cross"][1].values()) == 100
    assert _ledger_sets(lake) == before + grid_size
    (row,) = trials.read(lake).rows(named=True)
    assert row["impl"] == EMA_CROSS.impl and row["n_sets"] == grid_size and row["kind"] == trials.PARAMETERS
    assert trials.count(lake, EMA_CROSS.impl) == grid_size
    sweep("2024-01")  # the same slice again: the same grid, no new trial
    sweep("2024-02")  # another month of the same grid: the same parameter sets on more data
    assert _ledger_sets(lake) == before + grid_size and trials.read(lake).height == 1

    # returns.parquet: combo int32, hour ts int64 ns, return float32; hours x combinations rows
    table = pl.read_parquet(out.directory / sweep_returns.FILE)
    assert dict(table.schema) == sweep_returns.SCHEMA
    hours = math.ceil(3_000 / 60)
    assert table.height == hours * grid_size
    assert set(table["ts"].unique().to_list()) == {JAN + h * HOUR for h in range(hours)}
    read = sweep_returns.read_sweep_returns(lake, "ema_cross", "BTCUSDT", ["2024-02", "2024-01", "2024-03"])
    assert read.months == ["2024-01", "2024-02"] and set(read.missing) == {"2024-03"}
    assert read.returns.shape == (2 * hours, grid_size) and read.ts[0] == JAN and read.ts[hours] == FEB
    assert read.combos["combo"].to_list() == list(range(grid_size))
    grid = pl.read_parquet(out.directory / "grid.parquet").sort("combo")
    assert read.combos.columns == ["combo", "fast_period", "slow_period"]
    assert read.combos["slow_period"].to_list() == grid["slow_period"].to_list()
    # the kept returns compound to each combination's total return of the month (float32)
    total = np.prod(1.0 + read.returns[:hours], axis=0) - 1.0
    np.testing.assert_allclose(total, grid["total_return"].to_numpy(), rtol=1e-4, atol=1e-6)


def _trial_returns(sharpes: np.ndarray, days: int, vol: float = 0.01, seed: int = 1) -> np.ndarray:
    """days × trials daily returns whose annualised (365) Sharpe ratios are exactly ``sharpes``:
    one standardised noise z (mean 0, sd 1), trial k = vol * (z + sharpes[k] / sqrt(365))."""
    z = np.random.default_rng(seed).standard_normal(days)
    z = (z - z.mean()) / z.std(ddof=1)
    return vol * (z[:, None] + sharpes[None, :] / math.sqrt(365))


def test_the_deflated_sharpe_uses_the_observed_variance_of_sharpe_across_the_trials(lake):
    from quant_assets.analytics.trial_sharpes import observed

    days = 60
    sharpes = np.linspace(-2.0, 2.0, 9)  # variance across trials: known exactly
    daily = _trial_returns(sharpes, days)
    # written the way a sweep writes them: one hour a day carries the day's return, per month
    ts = JAN + np.arange(days, dtype=np.int64) * DAY
    for month, part in (("2024-01", ts < FEB), ("2024-02", ts >= FEB)):
        d = lake.sweep_dir("ema_cross", "BTCUSDT", month)
        lake.write_parquet(sweep_returns.returns_frame(ts[part], daily[part]), d / sweep_returns.FILE)
        lake.write_parquet(pl.DataFrame({"combo": np.arange(9), "fast_period": np.arange(9) + 10,
                                         "slow_period": np.full(9, 200)}), d / "grid.parquet")
        lake.write_json({"axes": [{"name": "fast_period"}, {"name": "slow_period"}]}, d / "summary.json")
        lake.write_json({"files": {}}, d / "manifest.json")

    obs = observed(lake, "ema_cross", "BTCUSDT", ["2024-01", "2024-02"], 365)
    assert obs.var_annual == pytest.approx(np.var(sharpes, ddof=1), rel=1e-5)  # float32 storage
    assert obs.trials == 9 and obs.months == ["2024-01", "2024-02"] and obs.days == days

    headline = pd.Series(daily[:, -1], index=pd.date_range("2024-01-01", periods=days, freq="D"))
    n_trials = 120
    out = robustness.deflated_sharpe(headline, 365, n_trials, obs)
    assert out["var_sharpe_source"] == "observed" and out["var_sharpe_annual"] == pytest.approx(np.var(sharpes, ddof=1), rel=1e-5)
    assert "observed variance" in out["method"] and out["trials_observed"] == 9
    # by hand: Bailey & López de Prado with V[SR] observed (per day), vectorbt's excess kurtosis
    x = headline.to_numpy()
    sr = x.mean() / x.std(ddof=1)
    v = np.var(sharpes, ddof=1) / 365
    g = np.euler_gamma
    sr0 = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n_trials) + g * norm.ppf(1 - 1 / (n_trials * math.e)))
    s, k = skew(x), kurtosis(x)
    hand = norm.cdf((sr - sr0) * math.sqrt(days - 1) / math.sqrt(1 - s * sr + (k - 1) / 4 * sr**2))
    assert out["dsr"] == pytest.approx(hand, rel=1e-4)
    # the fallback names its method and why: no trial returns for a strategy without a sweep
    none = observed(lake, "mean_reversion", "BTCUSDT", ["2024-01", "2024-02"], 365)
    assert none.var_annual is None and "no sweep" in none.reason
    fallback = robustness.deflated_sharpe(headline, 365, n_trials, none)
    assert fallback["var_sharpe_source"] == "estimator" and "estimator's variance" in fallback["method"]
    assert fallback["var_sharpe_reason"] == none.reason and fallback["dsr"] != out["dsr"]
