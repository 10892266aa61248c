"""The automation sensor on an instance of hundreds of symbols: each kind of change requests
exactly its slices, as on the 2-symbol lake of ``test_automation.py``.

The instance is populated in bulk once per module (``bulk.py``: the events Dagster stores for a
fully built lake, 200 symbols × 2 months) and copied for each test. Ticks run as the sensor
runs them on the code server (``AutomationConditionSensorDefinition.evaluate_tick``: cursor,
custom conditions, the backfill it emits); the runs it requests are completed by recording
their materializations, until a tick requests nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from quant_assets.assets import metrics as metrics_mod
from quant_assets.definitions import automation_sensor
from quant_assets.definitions import defs as project_defs
from quant_assets.portfolio import universes
from quant_assets.strategies import registry
from quant_assets_tests import bulk
from resources import CriticResource, LakeResource

N_SYMBOLS = 200
SYMBOLS = bulk.symbols(N_SYMBOLS)
MONTHS = ("2024-01", "2024-02")
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")
#: Month × symbol assets downstream of ticks, by what they follow.
CHAIN = [f"{stage}_{s}" for s in STRATEGIES for stage in ("backtest", "sensitivity", "metrics", "critique")]
RESEARCH = ["bars_1m", "sweep_ema_cross", "agreement_ema_cross", "wf_fold_ema_cross"]
VALIDATIONS = [f"oos_validation_{s}" for s in STRATEGIES] + ["sweep_oos_ema_cross"]
ROLLUPS = [f"report_{s}" for s in STRATEGIES] + ["factors_ema_cross", "factors_mean_reversion", "walkforward_ema_cross"]
#: The unpartitioned ledgers over every validation (and hand-off), and the promotions judged on them:
#: one request each whenever one of them ran.
LEDGER = {"discoveries": {"None"}, "critic_scorecard": {"None"}, "promotions": {"None"},
          # universes.toml's portfolios: over every month of their strategies' backtests
          **{f"portfolio_{name}": {"None"} for name in universes.load().portfolios}}


def _defs(specs=None) -> dg.Definitions:
    """The project's assets (as quant_assets.definitions lists them) built for ``specs``."""
    from quant_assets.assets.backtests import backtest_assets
    from quant_assets.assets.book import book
    from quant_assets.assets.critiques import critique_asset, oos_asset
    from quant_assets.assets.discoveries import discoveries_asset
    from quant_assets.assets.promotions import promotions_asset
    from quant_assets.assets.funding import funding
    from quant_assets.assets.metrics import metrics_asset
    from quant_assets.assets.reports import report_asset
    from quant_assets.assets.research import research_assets
    from quant_assets.assets.scorecard import scorecard_asset
    from quant_assets.assets.sensitivity import sensitivity_asset
    from quant_assets.assets.ticks import ticks
    from quant_assets.assets.universes import universe_assets

    specs = specs or registry.load()
    # (book: never materialised here, as in a lake of L1 files built before the book existed;
    # an optional input of the slices that read it)
    assets = [ticks, funding, book, *backtest_assets(specs), *(sensitivity_asset(s) for s in specs.values()),
              *(metrics_asset(s) for s in specs.values()),
              *(report_asset(s) for s in specs.values()), *(critique_asset(s) for s in specs.values()),
              *(oos_asset(s) for s in specs.values()), *research_assets(specs), discoveries_asset(specs),
              promotions_asset(specs), scorecard_asset(specs),
              *universe_assets(universes.load(), specs, registry.load_universe(), "1m")]
    return dg.Definitions(assets=assets, resources={"lake": LakeResource(), "critic": CriticResource()})


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("scale_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        inst.add_dynamic_partitions("symbols", SYMBOLS)
        slices = [(m, s) for s in SYMBOLS for m in MONTHS]
        with bulk.bulk_writes(inst):
            bulk.report_landing(inst, slices)
            bulk.report_chain(inst, project_defs, slices)
        bulk.warm_status_cache(inst, project_defs)
    return home


@pytest.fixture
def scale_instance(populated, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(populated, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def _tick(instance, defs: dg.Definitions, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
    data = automation_sensor.evaluate_tick(context)
    requested: dict[str, set[str]] = {}
    for request in data.run_requests:
        if request.asset_graph_subset is not None:  # the sensor emits a backfill for many partitions
            pairs = [(ap.asset_key, ap.partition_key) for ap in request.asset_graph_subset.iterate_asset_partitions()]
        else:
            pairs = [(k, request.partition_key) for k in request.asset_selection or []]
        for key, pk in pairs:
            requested.setdefault(key.to_user_string(), set()).add(str(pk))
    return data.cursor, requested


def _settled_cursor(instance, defs: dg.Definitions) -> str:
    cursor, requested = _tick(instance, defs, None)
    cursor, requested = _tick(instance, defs, cursor)
    assert requested == {}, {k: len(v) for k, v in requested.items()}  # an up-to-date lake: nothing to do
    return cursor


def _until_quiet(instance, defs: dg.Definitions, cursor: str, max_ticks: int = 4) -> dict[str, set[str]]:
    """Tick, record every requested partition as materialised, until a tick requests nothing;
    no (asset, partition) may be requested twice."""
    seen: dict[str, set[str]] = {}
    for tick in range(max_ticks):
        cursor, requested = _tick(instance, defs, cursor)
        if not requested:
            return seen
        for key, pks in requested.items():
            assert not seen.get(key, set()) & pks, f"{key} requested twice"
            seen.setdefault(key, set()).update(pks)
        with bulk.bulk_writes(instance):
            bulk.report_done(instance, [(dg.AssetKey(k), None if pk == "None" else pk) for k, pks in requested.items() for pk in pks],
                             f"t{tick}")
    raise AssertionError(f"still requesting after {max_ticks} ticks")


def test_a_new_month_for_every_symbol_requests_its_chain_then_the_validations_before_it_and_the_roll_ups(scale_instance):
    cursor = _settled_cursor(scale_instance, project_defs)
    with bulk.bulk_writes(scale_instance):
        bulk.report_landing(scale_instance, [("2024-03", s) for s in SYMBOLS])
    new = {f"2024-03|{s}" for s in SYMBOLS}
    requested = _until_quiet(scale_instance, project_defs, cursor)
    # February's validations test on March; March's wait for April (missing)
    assert requested == {**{a: new for a in CHAIN + RESEARCH},
                         **{a: {f"2024-02|{s}" for s in SYMBOLS} for a in VALIDATIONS},
                         **{a: set(SYMBOLS) for a in ROLLUPS}, **LEDGER}


def test_a_changed_old_slice_of_one_symbol_rebuilds_only_that_slice_and_the_next_month_warmed_on_it(scale_instance):
    cursor = _settled_cursor(scale_instance, project_defs)
    symbol = SYMBOLS[137]
    with bulk.bulk_writes(scale_instance):
        bulk.report_landing(scale_instance, [("2024-01", symbol)], version="v2")
    requested = _until_quiet(scale_instance, project_defs, cursor)
    # February's backtests, sensitivities and sweep read January (warm-up), with what follows them
    # (its bars do not: they read February only); January's own validations re-test (their inputs
    # changed, February's metrics among them; February's wait for March), and the symbol's roll-ups
    both = {f"2024-01|{symbol}", f"2024-02|{symbol}"}
    assert requested == {**{a: both for a in CHAIN + RESEARCH}, "bars_1m": {f"2024-01|{symbol}"},
                         **{a: {f"2024-01|{symbol}"} for a in VALIDATIONS},
                         **{a: {symbol} for a in ROLLUPS}, **LEDGER}


def test_a_parameter_change_rebuilds_that_strategy_on_every_slice_and_nothing_else(scale_instance, tmp_path):
    cursor = _settled_cursor(scale_instance, project_defs)
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[mean_reversion]\nentry_z = 3.0\n")
    requested = _until_quiet(scale_instance, _defs(registry.load(cfg)), cursor)
    every = {f"{m}|{s}" for m in MONTHS for s in SYMBOLS}
    assert requested == {"backtest_mean_reversion": every, "sensitivity_mean_reversion": every, "metrics_mean_reversion": every,
                         "critique_mean_reversion": every,
                         "oos_validation_mean_reversion": {f"2024-01|{s}" for s in SYMBOLS},  # February's waits for March
                         "report_mean_reversion": set(SYMBOLS),
                         "factors_mean_reversion": set(SYMBOLS),  # the factor analysis of its signal, with its lengths
                         **LEDGER}


def test_an_analytics_version_change_rebuilds_metrics_and_what_follows_only(scale_instance, monkeypatch):
    cursor = _settled_cursor(scale_instance, project_defs)
    monkeypatch.setattr(metrics_mod, "METRICS_CODE_VERSION", "metrics-v999")
    requested = _until_quiet(scale_instance, _defs(), cursor)
    every = {f"{m}|{s}" for m in MONTHS for s in SYMBOLS}
    assert requested == {**{f"{stage}_{s}": every for s in STRATEGIES for stage in ("metrics", "critique")},
                         **{a: {f"2024-01|{s}" for s in SYMBOLS} for a in VALIDATIONS},
                         **{f"report_{s}": set(SYMBOLS) for s in STRATEGIES},
                         # the portfolios read backtests, which did not change
                         **{k: v for k, v in LEDGER.items() if not k.startswith("portfolio_")}}
