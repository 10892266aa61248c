"""``metrics_<strategy>`` and ``report_<strategy>`` through Dagster on a real instance and lake:
outputs, metadata and checks, DuckDB views, the tearsheet, and staleness propagation."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from quant_assets import sync
from quant_assets.analytics.slice_metrics import METRICS_SCHEMA
from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.metrics import AGREEMENT_CHECK, metrics_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.ticks import ticks
from quant_assets.definitions import ASSETS
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import duck
from quant_assets.strategies import registry
from resources import CriticResource, LakeResource

MONTHS = ("2024-01", "2024-02")
STRATEGIES = ("ema_cross", "mean_reversion")
SLICE_ASSETS = ["ticks", *(f"{stage}_{s}" for s in STRATEGIES for stage in ("backtest", "metrics"))]


def _run(instance, selection, partition_key, assets=ASSETS):
    return dg.materialize(assets, selection=selection, partition_key=partition_key, instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


@pytest.fixture
def two_months(lake, instance):
    for month in MONTHS:
        write_landing(lake, SyntheticSpec("BTCUSDT", month, seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    slices = [_run(instance, SLICE_ASSETS, f"{m}|BTCUSDT") for m in MONTHS]
    assert all(r.success for r in slices)
    reports = _run(instance, [f"report_{s}" for s in STRATEGIES], "BTCUSDT")
    assert reports.success
    return slices, reports


def test_metric_sets_are_stored_with_metadata_and_a_passing_agreement_check(lake, instance, two_months):
    slices, _ = two_months
    for name in STRATEGIES:
        (mat,) = slices[0].asset_materializations_for_node(f"metrics_{name}")
        out = lake.metrics_dir(name, "BTCUSDT", "2024-01")
        row = pl.read_parquet(out / "metrics.parquet")
        assert dict(row.schema) == METRICS_SCHEMA and row.height == 1
        md = mat.metadata
        assert {"sharpe", "total_return_pct", "max_drawdown_pct", "trades", "annualisation", "path"} <= set(md)
        assert md["equity_curve"].value.startswith("![equity and drawdown](data:image/png;base64,")
        assert "525,600 periods/year" in md["annualisation"].value  # 60 s grid, 365 trading days (crypto)
        manifest = json.loads((out / "manifest.json").read_text())
        backtest = json.loads((lake.backtest_dir(name, "BTCUSDT", "2024-01") / "manifest.json").read_text())
        assert manifest["backtest_code_version"] == backtest["code_version"]  # lineage back to the backtest
        trades = pl.read_parquet(out / "trades.parquet")
        assert len(trades) == row["trades"][0]
        assert {"spread_at_entry", "vol_regime", "entry_hour_utc", "duration_s", "pnl"} <= set(trades.columns)
        if len(trades):
            assert trades["spread_at_entry"].null_count() == 0 and trades["spread_at_entry"].min() > 0
    checks = [e for e in slices[0].get_asset_check_evaluations() if e.check_name == AGREEMENT_CHECK]
    assert len(checks) == len(STRATEGIES) and all(c.passed for c in checks)
    con = duck.connect(lake)
    assert con.sql("SELECT count(*) FROM metrics").fetchall() == [(len(STRATEGIES) * len(MONTHS),)]
    assert con.sql("SELECT count(DISTINCT month) FROM trades").fetchall()[0][0] >= 1
    assert con.sql("SELECT count(*) FROM regimes WHERE regime = 'high'").fetchall() == [(len(STRATEGIES) * len(MONTHS),)]


def test_roll_up_covers_every_month_with_a_tearsheet_and_robustness(lake, instance, two_months):
    _, reports = two_months
    for name in STRATEGIES:
        (mat,) = reports.asset_materializations_for_node(f"report_{name}")
        out = lake.report_dir(name, "BTCUSDT")
        report = json.loads((out / "report.json").read_text())
        assert report["months"] == list(MONTHS)
        assert mat.metadata["months"].value == list(MONTHS)
        html = (out / "tearsheet.html").read_text()
        assert "<html" in html.lower() and len(html) > 10_000
        assert mat.metadata["tearsheet"].value == str(out / "tearsheet.html")
        assert set(report) >= {"metrics", "bootstrap", "monte_carlo", "deflated_sharpe", "walk_forward"}
        assert report["walk_forward"]["windows"] == 1
        assert report["deflated_sharpe"]["n_trials"] == 1  # one parameter set tried so far
        daily = pl.read_parquet(out / "daily.parquet")
        assert daily["date"].is_sorted() and 55 <= len(daily) <= 61
        monthly = pl.read_parquet(out / "monthly.parquet")
        assert monthly["month"].to_list() == list(MONTHS)
        # on deployed capital: the months' PnL over the largest capital any of them put at risk
        peaks = monthly["deployed_peak"].drop_nulls()
        overall = report["deployed"]["metrics"]["return_on_deployed"]
        assert (overall is None) == (not len(peaks))
        if len(peaks):
            assert overall == pytest.approx(float(monthly["pnl"].sum()) / float(peaks.max()), rel=1e-9)


def test_a_changed_backtest_slice_makes_exactly_its_metric_slice_and_its_roll_up_stale(lake, instance, two_months, tmp_path):
    slices = [(m, "BTCUSDT") for m in MONTHS]
    ours = ("backtest_", "metrics_", "report_")  # critiques are not materialised in this fixture
    before = {(s.month, s.asset.path[0]): s.state for s in sync.plan(lake, instance, slices)
              if s.asset.path[0].endswith(STRATEGIES) and s.asset.path[0].startswith(ours)}
    assert set(before.values()) == {"materialized"}
    # Tune ema_cross and re-run its January backtest only: a new data version for that slice.
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[ema_cross]\nfast_period = 40\n")
    specs = registry.load(cfg)
    tuned = [ticks, *backtest_assets(specs), *(metrics_asset(s) for s in specs.values()), *(report_asset(s) for s in specs.values())]
    assert _run(instance, ["backtest_ema_cross"], "2024-01|BTCUSDT", assets=tuned).success
    after = {(s.month, s.asset.path[0]): s.state
             for s in sync.plan(lake, instance, slices, definitions=dg.Definitions(assets=tuned, resources={"lake": LakeResource(), "critic": CriticResource()}))
             if s.asset.path[0].endswith(STRATEGIES) and s.asset.path[0].startswith(ours)}
    changed = {k: v for k, v in after.items() if v != "materialized"}
    assert changed == {
        ("2024-01", "metrics_ema_cross"): "stale",  # its backtest slice has a new data version
        ("all", "report_ema_cross"): "stale",  # the roll-up reads every month
        ("2024-02", "backtest_ema_cross"): "stale",  # not re-run yet: its code version changed
    }


def test_a_roll_up_with_no_metric_set_fails_clearly(lake, instance):
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = _run(instance, ["report_ema_cross"], "BTCUSDT")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no month has a metric set yet" in failure.step_failure_data.user_failure_data.description
