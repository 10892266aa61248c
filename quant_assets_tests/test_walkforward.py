"""Walk-forward optimisation: the choice is the grid's best deflated Sharpe on the months before
the fold, run event-driven on the fold's month; a new month adds exactly one fold."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import kurtosis, norm, skew

from quant_assets.research.walkforward import NoInSample, WalkForwardSettings, choose, efficiency, hourly_sharpe

MONTHS = ("2024-01", "2024-02", "2024-03")
WF = {"ticks", "funding", "venue_profile", "bars_1m", "sweep_ema_cross", "wf_fold_ema_cross", "walkforward_ema_cross"}


def test_the_choice_is_the_highest_deflated_sharpe_of_the_grid():
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 1e-3, (2_000, 12))
    r[:, 7] += 2e-4  # a real edge; column 3 a better Sharpe on fewer, fatter-tailed returns
    r[:, 3] = np.where(np.arange(2_000) % 50 == 0, 0.02, -2e-4) + rng.normal(0, 1e-4, 2_000)
    c = choose(r, 365)
    per_year = 24 * 365
    sr = r.mean(axis=0) / r.std(axis=0, ddof=1)
    v = np.var(sr * math.sqrt(per_year), ddof=1) / per_year
    g = 0.5772156649015329
    n = r.shape[1]
    sr0 = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    # vectorbt's statistic (its excess-kurtosis convention, see the README on the sweeps)
    dsr = [norm.cdf((sr[j] - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew(r[:, j]) * sr[j] + (kurtosis(r[:, j]) - 1) / 4 * sr[j] ** 2))
           for j in range(n)]
    assert c.index == int(np.argmax(dsr)) and c.deflated_sharpe == pytest.approx(max(dsr), rel=1e-6)
    assert c.sharpe == pytest.approx(sr[c.index] * math.sqrt(per_year)) and c.combinations == n
    assert c.sharpe_rank == 1 + int(np.sum(sr > sr[c.index]))
    with pytest.raises(NoInSample, match="no combination has in-sample returns with variance"):
        choose(np.zeros((10, 3)), 365)


def test_the_efficiency_is_no_ratio_to_a_sharpe_near_zero():
    assert efficiency(1.0, 2.0) == 0.5 and efficiency(-1.0, 0.5) == -2.0
    assert efficiency(-4.0, 0.001) is None and efficiency(1.0, -1.0) is None and efficiency(None, 2.0) is None


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUANT_WALKFORWARD", "rolling:2")
    assert WalkForwardSettings.from_env() == WalkForwardSettings(in_sample_months=2)
    monkeypatch.setenv("QUANT_WALKFORWARD", "anchored:12")
    s = WalkForwardSettings.from_env()
    assert s.anchored and s.reach == 12 and s.mode == "anchored (up to 12 months)"
    monkeypatch.setenv("QUANT_WALKFORWARD", "rolling:0")
    with pytest.raises(ValueError, match="QUANT_WALKFORWARD='rolling:0': expected rolling:K or anchored"):
        WalkForwardSettings.from_env()


def _sync(lake, instance, slices):
    from quant_assets import sync

    def plan() -> list:
        return sync.plan(lake, instance, slices, assets=lambda k: k.path[-1] in WF)

    built: dict[str, set[str]] = {}
    for month, symbol, result in sync.run_slices(instance, plan(), replan=plan):
        assert result.success, (month, symbol)
        for e in result.get_asset_materialization_events():
            built.setdefault(e.asset_key.path[-1], set()).add(str(e.partition))
    assert [s for s in plan() if s.needs_run] == []  # a second sync has nothing to do
    return built


def test_a_new_month_adds_exactly_one_fold(lake, instance):
    from quant_assets import sync
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import duck

    for i, month in enumerate(MONTHS):
        write_landing(lake, SyntheticSpec("BTCUSDT", month, seed=11 + i, events=12_000))
    built = _sync(lake, instance, sync.discover(lake, instance))
    # January has no month before it: no fold; February's chooses on January, March's on both.
    assert built["wf_fold_ema_cross"] == {"2024-02|BTCUSDT", "2024-03|BTCUSDT"}
    march = pl.read_parquet(lake.wf_fold_dir("ema_cross", "BTCUSDT", "2024-03") / "fold.parquet").row(0, named=True)
    assert march["in_sample"] == "2024-01,2024-02" and march["combinations"] == 100
    # the same strategy as the sweep ranked: lengths in 1-minute bars, taken as they are
    assert json.loads(march["event_params"]) == json.loads(march["params_bars"])
    oos = lake.wf_fold_dir("ema_cross", "BTCUSDT", "2024-03") / "oos"
    manifest = json.loads((oos / "manifest.json").read_text())
    assert manifest["params"]["slow_period"] == json.loads(march["params_bars"])["slow_period"]
    assert manifest["warmup"]["from_month"] == "2024-02"
    sharpe, _ = hourly_sharpe(pl.read_parquet(oos / "equity.parquet"), 60.0, 365)
    assert march["oos_sharpe"] == pytest.approx(sharpe)
    report = json.loads((lake.walkforward_dir("ema_cross", "BTCUSDT") / "report.json").read_text())
    assert report["folds"] == 2 and [p["oos_month"] for p in report["parameter_path"]] == ["2024-02", "2024-03"]
    assert duck.connect(lake).execute("SELECT count(*) FROM wf_folds").fetchone()[0] == 2

    before = {m: (lake.wf_fold_dir("ema_cross", "BTCUSDT", m) / "fold.parquet").read_bytes() for m in ("2024-02", "2024-03")}
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-04", seed=20, events=12_000))
    built = _sync(lake, instance, sync.discover(lake, instance))
    assert built["wf_fold_ema_cross"] == {"2024-04|BTCUSDT"}  # one fold, nothing else recomputed
    assert built["sweep_ema_cross"] == {"2024-04|BTCUSDT"}
    assert {m: (lake.wf_fold_dir("ema_cross", "BTCUSDT", m) / "fold.parquet").read_bytes() for m in before} == before
    april = pl.read_parquet(lake.wf_fold_dir("ema_cross", "BTCUSDT", "2024-04") / "fold.parquet").row(0, named=True)
    assert april["in_sample"] == "2024-01,2024-02,2024-03"  # rolling 3 months
    report = json.loads((lake.walkforward_dir("ema_cross", "BTCUSDT") / "report.json").read_text())
    assert report["folds"] == 3 and report["months"] == ["2024-02", "2024-03", "2024-04"]
