"""The universe assets on a real Dagster instance: a basis universe's month through ticks,
funding, the multi-instrument backtest and its metric set; the cross-section and the portfolio
roll-up; automation requesting only the month of a member's new data; universes.toml errors."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.funding import funding
from quant_assets.assets.research import bars_asset
from quant_assets.assets.ticks import ticks
from quant_assets.assets.universes import (cross_section_key, multi_backtest_key, multi_metrics_key, portfolio_key,
                                           universe_assets)
from quant_assets import sync
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.portfolio import universes as U
from quant_assets.strategies import registry
from resources import LakeResource

SPOT, PERP = "BTCUSDT", "BTCUSDT-PERP"
MONTHS = ("2024-01", "2024-02")
TOML = """
[universes]
btc_basis = ["BTCUSDT", "BTCUSDT-PERP"]
[backtests]
basis = ["btc_basis"]
[cross_sections]
ema_cross = ["btc_basis"]
[portfolios.pair]
universe = "btc_basis"
strategies = ["ema_cross"]
"""


def _defs(path) -> dg.Definitions:
    uni = U.load(path)
    specs, uspecs = registry.load(), registry.load_universe()
    U.check_strategies(uni, specs, uspecs)
    return dg.Definitions(assets=[ticks, funding, bars_asset("1m"), *backtest_assets(specs),
                                  *universe_assets(uni, specs, uspecs, "1m")],
                          resources={"lake": LakeResource()})


@pytest.fixture
def universes_file(tmp_path, monkeypatch):
    path = tmp_path / "universes.toml"
    path.write_text(TOML)
    monkeypatch.setenv(U.CONFIG_ENV, str(path))
    return path


def test_basis_universe_month_end_to_end(lake, instance, universes_file):
    """One month of synthetic spot and perpetual (with funding) through the real assets: the
    multi backtest reads both members' ticks and the perpetual's funding, its metric set splits
    the account's PnL, and every figure says what it was built from."""
    defs = _defs(universes_file)
    instance.add_dynamic_partitions("symbols", [SPOT, PERP])
    month = MONTHS[0]
    job = defs.resolve_implicit_global_asset_job_def()
    for s in (SPOT, PERP):
        write_landing(lake, SyntheticSpec(s, month, events=20_000))
        assert job.execute_in_process(instance=instance, partition_key=f"{month}|{s}", asset_selection=[
            dg.AssetKey(k) for k in ("ticks", "funding", "bars_1m", "backtest_ema_cross")]).success
    keys = [multi_backtest_key("basis", "btc_basis"), multi_metrics_key("basis", "btc_basis"), cross_section_key("ema_cross", "btc_basis")]
    res = job.execute_in_process(instance=instance, partition_key=f"{month}|btc_basis", asset_selection=[dg.AssetKey(k) for k in keys])
    assert res.success
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(portfolio_key("pair"))]).success
    # the cross-section ranked both members (two bins: a pair), the portfolio combined both lines
    xs = instance.fetch_materializations(dg.AssetKey(keys[2]), limit=1).records[0].asset_materialization.metadata
    assert xs["members_used"].value == 2 and xs["quantiles"].value == 2 and xs["reason"].value == ""
    port = json.loads((lake.root / "portfolios" / "universe=btc_basis" / "set=pair" / "portfolio.json").read_text())
    assert port["lines"] == ["ema_cross:BTCUSDT", "ema_cross:BTCUSDT-PERP"] and port["months"] == [month]
    # sync's universe pass: everything built is fresh; ticks rebuilt to the same data (a newer
    # event, the same data version) leave it fresh (Dagster's staleness decides that case)
    graph, slices = defs.resolve_asset_graph(), {(month, SPOT), (month, PERP)}
    assert {r[3] for r in sync.universe_states(instance, graph, slices)} == {"materialized"}
    assert job.execute_in_process(instance=instance, partition_key=f"{month}|{SPOT}", asset_selection=[dg.AssetKey("ticks")]).success
    assert {r[3] for r in sync.universe_states(instance, graph, slices)} == {"materialized"}
    bt = instance.fetch_materializations(dg.AssetKey(keys[0]), limit=1).records[0].asset_materialization
    members = bt.metadata["members"].value
    assert set(members) == {SPOT, PERP}
    assert members[PERP]["funding"] == "applied" and members[SPOT]["funding"] == "not applicable"
    # the run read the members' published ticks: their data versions are recorded
    tv = bt.metadata["ticks_data_versions"].value
    for s in (SPOT, PERP):
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("ticks"), asset_partitions=[f"{month}|{s}"]), limit=1).records[0]
        assert tv[s] == rec.asset_materialization.tags["dagster/data_version"]
    metrics = json.loads((lake.root / "metrics_multi" / "strategy=basis" / "universe=btc_basis" / f"month={month}" /
                          "metrics.json").read_text())
    split = metrics["split"]
    assert split["basis_pnl"] + split["funding_pnl"] + split["fees"] + split["other"] == pytest.approx(metrics["pnl"], abs=1e-6)
    assert metrics["pnl"] == pytest.approx(metrics["final_equity"] - metrics["starting_cash"])
    mem = pl.read_parquet(lake.root / "metrics_multi" / "strategy=basis" / "universe=btc_basis" / f"month={month}" / "members.parquet")
    spot_row = mem.filter(pl.col("symbol") == SPOT).row(0, named=True)
    assert spot_row["funding_pnl"] is None and "funding" in json.loads(spot_row["null_reasons"])["funding_pnl"]


def test_a_members_new_month_requests_only_that_month_of_its_universe(lake, instance, universes_file):
    """Automation on the real definitions: new ticks of one member in one month request that
    month of the universe's backtest only; a non-member's new ticks request nothing of it."""
    defs = _defs(universes_file)
    instance.add_dynamic_partitions("symbols", [SPOT, PERP, "ETHUSDT"])
    key = dg.AssetKey(multi_backtest_key("basis", "btc_basis"))
    for m in MONTHS:
        for s in (SPOT, PERP, "ETHUSDT"):
            for asset in ("ticks", "funding"):
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=asset, partition=f"{m}|{s}", tags={"dagster/data_version": f"{asset}-{m}-{s}-v1"}))
                for check in (ticks if asset == "ticks" else funding).check_specs:  # as the step evaluates them
                    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                        asset_key=dg.AssetKey(asset), check_name=check.name, passed=True,
                        severity=dg.AssetCheckSeverity.ERROR, partition=f"{m}|{s}"))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, partition=f"{m}|btc_basis", tags={"dagster/data_version": f"mb-{m}-v1"}))
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    for s, expected in (("ETHUSDT", set()), (PERP, {f"{MONTHS[1]}|btc_basis"})):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="ticks", partition=f"{MONTHS[1]}|{s}", tags={"dagster/data_version": f"ticks-{s}-v2"}))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        requested = {str(k) for r in result.results if r.key == key for k in r.true_subset.expensively_compute_partition_keys()}
        assert requested == expected, s


@pytest.mark.parametrize(("text", "message"), [
    ("[universes]\nu = [\"BTCUSDT\"]\n[backtests]\nbasis = [\"nope\"]\n", "\\[backtests\\] basis: no universe 'nope'"),
    ("[universes]\nu = [\"BTCUSDT\"]\n[cross_sections]\nbasis = [\"u\"]\n", "\\[cross_sections\\] basis: not a single-instrument"),
    ("[universes]\nu = [\"BTCUSDT\"]\n[backtests]\nbsis = [\"u\"]\n", "\\[backtests\\] bsis: no such strategy"),
    ("[universes]\nu = [\"BTCUSDT\"]\n[portfolios.p]\nuniverse = \"u\"\nstrategies = [\"ema_cross\"]\nweighting = \"vol\"\n",
     "\\[portfolios.p\\]: weighting 'vol'"),
    ("[universes]\nu = [\"BTCUSDT\"]\n[portfolios.p]\nuniverse = \"u\"\nstrategies = [\"ema_cross\"]\nweights = {\"x:Y\" = 1}\n",
     "\\[portfolios.p\\]: weights"),
    ("[universes]\nu = [\"BTCUSDT\"]\n[portfolio.p]\n", "unknown table\\(s\\) 'portfolio'"),
])
def test_universes_toml_errors_name_the_file_and_table(tmp_path, text, message):
    path = tmp_path / "universes.toml"
    path.write_text(text)
    with pytest.raises(U.UniverseError, match=message) as exc:
        U.check_strategies(U.load(path), registry.load(), registry.load_universe())
    assert str(path) in str(exc.value)


def test_basis_is_tuned_in_strategies_toml_and_not_a_single_symbol_strategy(tmp_path):
    path = tmp_path / "strategies.toml"
    path.write_text("[basis]\nentry_apr = 20.0\n[basis_wide]\nbase = \"basis\"\nentry_apr = 40.0\n[ema_cross]\nfast_period = 20\n")
    assert "basis" not in registry.load(path, promoted=False)
    uni = registry.load_universe(path)
    assert uni["basis"].resolved()["entry_apr"] == 20.0 and uni["basis_wide"].resolved()["entry_apr"] == 40.0
    assert registry.load(path, promoted=False)["ema_cross"].resolved()["fast_period"] == 20
