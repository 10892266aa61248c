"""``backtest_<strategy>`` assets through Dagster: outputs, metadata, lineage, determinism,
staleness after a parameter change, and clear failures on unusable partitions."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import polars as pl
import pytest

from quant_assets import sync
from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.ticks import ticks
from quant_assets.definitions import ASSETS
from quant_assets.engines.result import EQUITY_SCHEMA, FILL_SCHEMA
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import duck
from quant_assets.strategies import registry
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource

PK = "2024-01|BTCUSDT"
STRATEGIES = ["ema_cross", "mean_reversion", "market_maker"]


def _materialize(instance, assets=ASSETS, selection=("ticks", *(f"backtest_{s}" for s in STRATEGIES))):
    return dg.materialize(assets, selection=list(selection), partition_key=PK, instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


@pytest.fixture
def one_slice(lake, instance):
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=3, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = _materialize(instance)
    assert result.success
    return result


def test_each_strategy_writes_the_common_result_format_with_lineage(lake, instance, one_slice):
    (ticks_mat,) = one_slice.asset_materializations_for_node("ticks")
    for name in STRATEGIES:
        (mat,) = one_slice.asset_materializations_for_node(f"backtest_{name}")
        out = lake.backtest_dir(name, "BTCUSDT", "2024-01")
        fills, equity = pl.read_parquet(out / "fills.parquet"), pl.read_parquet(out / "equity.parquet")
        assert dict(fills.schema) == FILL_SCHEMA and dict(equity.schema) == EQUITY_SCHEMA
        assert len(fills) > 0 and len(equity) > 100, name
        assert fills["position"][-1] == 0.0 and equity["position"][-1] == 0.0  # ends flat
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["ticks_data_version"] == ticks_mat.tags["dagster/data_version"]
        assert manifest["code_version"] == mat.tags["dagster/code_version"]
        assert manifest["events"] == 20_000
        # what the run measured about itself is beside the manifest, not in it (same data, same bytes)
        run = json.loads((out / "run.json").read_text())
        assert run["events_per_s"] > 0 and run["peak_rss_mb"] > 0 and not {"wall_s", "peak_rss_mb"} & set(manifest)
        assert "run.json" not in manifest["files"]
        hashes = manifest["files"]
        assert hashes["fills.parquet"] == hashlib.sha256((out / "fills.parquet").read_bytes()).hexdigest()
        md = mat.metadata
        assert md["fills"].value == len(fills)
        assert md["pnl"].value == pytest.approx(equity["equity"][-1] - 100_000.0, abs=1e-6)
        assert md["equity_curve"].value.startswith("![equity and drawdown](data:image/png;base64,")
        assert {"turnover", "fees", "events_per_s", "max_drawdown_pct"} <= set(md)
    con = duck.connect(lake)
    assert sorted(con.sql("SELECT DISTINCT strategy FROM fills").fetchall()) == [(s,) for s in sorted(STRATEGIES)]


def test_rematerialising_gives_the_same_data_versions(instance, one_slice):
    first = {
        e.asset_key.path[0]: e.event_specific_data.materialization.tags["dagster/data_version"]
        for e in one_slice.get_asset_materialization_events()
    }
    again = _materialize(instance, selection=[f"backtest_{s}" for s in STRATEGIES])
    assert again.success
    for name in STRATEGIES:
        (mat,) = again.asset_materializations_for_node(f"backtest_{name}")
        assert mat.tags["dagster/data_version"] == first[f"backtest_{name}"]


def test_a_parameter_change_makes_only_that_strategys_slices_stale(lake, instance, one_slice, tmp_path):
    slices = [("2024-01", "BTCUSDT")]
    states = {s.asset.path[0]: s.state for s in sync.plan(lake, instance, slices)
              if s.asset.path[0].startswith(("ticks", "backtest_"))}
    assert set(states.values()) == {"materialized"}
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[mean_reversion]\nentry_z = 3.0\n")
    tuned = dg.Definitions(assets=[ticks, *backtest_assets(registry.load(cfg))], resources={"lake": LakeResource(), "critic": CriticResource()})
    states = {s.asset.path[0]: s.state for s in sync.plan(lake, instance, slices, definitions=tuned)}
    assert states == {"ticks": "materialized", "backtest_ema_cross": "materialized",
                      "backtest_market_maker": "materialized", "backtest_mean_reversion": "stale"}


def test_a_trades_only_month_backtests_on_trades_and_the_market_maker_is_not_applicable(lake, instance):
    # Binance spot publishes trades only: the NautilusTrader strategies run on quotes made from
    # the trades (labelled), the market maker is n/a with its reason, the run succeeds, and
    # sync neither fails nor runs anything again.
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(400))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = _materialize(instance)
    assert result.success
    (ticks_mat,) = result.asset_materializations_for_node("ticks")
    assert ticks_mat.metadata["fidelity"].value == "trades-only"
    for name in ("ema_cross", "mean_reversion"):
        (mat,) = result.asset_materializations_for_node(f"backtest_{name}")
        assert mat.metadata["fidelity"].value == "trades-only"
        assert "quotes made from trades" in mat.metadata["fidelity_assumption"].value
        manifest = json.loads((lake.backtest_dir(name, "BTCUSDT", "2024-01") / "manifest.json").read_text())
        assert manifest["fidelity"] == "trades-only"
    assert not result.asset_materializations_for_node("backtest_market_maker")
    assert not lake.backtest_dir("market_maker", "BTCUSDT", "2024-01").exists()
    (obs,) = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION" and e.step_key == "backtest_market_maker"]
    assert "not applicable on trades-only data" in obs.event_specific_data.asset_observation.metadata["not_applicable"].value
    states = {s.asset.path[0]: s for s in sync.plan(lake, instance, [("2024-01", "BTCUSDT")])}
    for name in ("backtest_market_maker", "metrics_market_maker", "critique_market_maker", "oos_validation_market_maker"):
        assert states[name].state == "n/a" and "trades-only" in states[name].reason, name
    assert not states["backtest_market_maker"].needs_run
    assert states["report_market_maker"].state == "n/a"
