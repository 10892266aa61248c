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
        assert manifest["events"] == 20_000 and manifest["events_per_s"] > 0 and manifest["peak_rss_mb"] > 0
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


def test_a_partition_with_only_trades_fails_clearly_and_publishes_nothing(lake, instance):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(5))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = _materialize(instance)
    assert not result.success
    assert result.asset_materializations_for_node("ticks")
    for name in STRATEGIES:
        (failure,) = [e for e in result.all_events if e.is_step_failure and e.step_key == f"backtest_{name}"]
        message = failure.step_failure_data.user_failure_data.description
        assert f"backtest_{name} {PK}" in message and "only trades" in message, message
        assert not lake.backtest_dir(name, "BTCUSDT", "2024-01").exists()
