"""Which slices automation rebuilds, on a real instance: ``evaluate_automation_conditions`` over
a lake of 2 symbols × 2 months whose assets are all materialised, after each kind of change.

The materialised state is recorded with Dagster's own events (``report_runless_asset_event``,
one per asset and partition, with data versions), as running every engine for every slice would
make this test minutes long; the end-to-end test runs the real chain through the daemon.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from quant_assets import automation
from quant_assets.assets import metrics as metrics_mod
from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.critiques import critique_asset, oos_asset
from quant_assets.assets.book import book
from quant_assets.assets.funding import funding
from quant_assets.assets.metrics import metrics_asset
from quant_assets.assets.sensitivity import sensitivity_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.ticks import ticks
from quant_assets.assets.venues import venue_profile_asset
from quant_assets.engines.invariants import CHECKS
from quant_assets.partitions import months_window
from quant_assets.definitions import defs as project_defs
from quant_assets.schedules import nightly_partitions, nightly_rebacktest
from quant_assets.strategies import registry
from quant_assets.venues.scope import symbol_venue
from resources import CriticResource, LakeResource

SYMBOLS = ("BTCUSDT", "ETHUSDT")
MONTHS = ("2024-01", "2024-02")
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")
SLICE_STAGES = ("backtest", "sensitivity", "metrics", "critique")


def _defs(specs=None) -> dg.Definitions:
    specs = specs or registry.load()
    assets = [ticks, funding, book, venue_profile_asset(), *backtest_assets(specs), *(sensitivity_asset(s) for s in specs.values()),
              *(metrics_asset(s) for s in specs.values()),
              *(report_asset(s) for s in specs.values()), *(critique_asset(s) for s in specs.values()),
              *(oos_asset(s) for s in specs.values())]
    return dg.Definitions(assets=assets, resources={"lake": LakeResource(), "critic": CriticResource()})


# Blocking ones first, in a fixed order (check_keys is a set): the tests fail TICKS_CHECKS[0],
# which must be a blocking check (quotes_match_book, comparing with the book, is a warning).
TICKS_CHECKS = sorted((s.name for s in ticks.check_specs), key=lambda n: (not next(
    s.blocking for s in ticks.check_specs if s.name == n), n))
BOOK_CHECKS = sorted(k.name for k in book.check_keys)
BACKTEST_CHECKS = list(CHECKS)


def _provenance(instance, key: str) -> dict[str, str]:
    """The provenance tags a run records (code version, and per dependency a data version and the
    pointer to its latest event): with them staleness compares data versions; without them
    (a bare runless report) Dagster compares timestamps, and a dependency partition never
    materialised (the month before a symbol's first, which a backtest's window reads) is "new"."""
    node = project_defs.resolve_asset_graph().get(dg.AssetKey(key))
    tags = {"dagster/code_version": node.code_version or ""}
    for parent in node.parent_keys:
        records = instance.fetch_materializations(parent, limit=1).records
        tags[f"dagster/input_data_version/{parent.to_user_string()}"] = "recorded"
        tags[f"dagster/input_event_pointer/{parent.to_user_string()}"] = str(records[0].storage_id) if records else "NULL"
    return tags


def _report(instance, key: str, pk: str, version: str = "v1", checks_pass: bool = True, provenance: bool = False) -> None:
    # a symbol's venue settings have the data version the asset computes: the digest of the settings in force
    data_version = symbol_venue(LakeResource().lake(), pk).version if key == "venue_profile" else f"{key}-{pk}-{version}"
    tags = {"dagster/data_version": data_version, **(_provenance(instance, key) if provenance else {})}
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=pk, tags=tags))
    if key == "ticks":
        # the landing sensor's ticks runs build the slice's funding partition with it; a spot
        # slice's says "not applicable", with the same data version every time
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="funding", partition=pk, tags={"dagster/data_version": "not-applicable"}))
    checked = instance.__dict__.setdefault("_test_checked_partitions", set())
    if key.startswith("backtest_") and (key, pk) not in checked:
        # every backtest step evaluates the result's invariants (blocking checks) with it
        checked.add((key, pk))
        for name in BACKTEST_CHECKS:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(key), check_name=name, passed=True, severity=dg.AssetCheckSeverity.ERROR, partition=pk))
    if key == "book" and (key, pk) not in checked:
        checked.add((key, pk))  # the book step evaluates its checks (blocking ones included) with it
        for name in BOOK_CHECKS:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("book"), check_name=name, passed=True, severity=dg.AssetCheckSeverity.ERROR, partition=pk))
    if key == "ticks" and (pk not in checked or not checks_pass):
        # the ticks step evaluates its blocking checks on every partition it writes (runless
        # check events can be stored once per partition, which is all these tests need)
        checked.add(pk)
        for i, name in enumerate(TICKS_CHECKS):
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("ticks"), check_name=name, passed=checks_pass or i > 0,
                severity=dg.AssetCheckSeverity.ERROR, partition=pk))


def _materialise_slice(instance, month: str, symbol: str, version: str = "v1", stages=("ticks", *SLICE_STAGES),
                       provenance: bool = False) -> None:
    pk = f"{month}|{symbol}"
    for stage in stages:
        for name in (["ticks"] if stage == "ticks" else [f"{stage}_{s}" for s in STRATEGIES]):
            _report(instance, name, pk, version, provenance=provenance)


#: The two symbols trade on two venues (instruments.toml), so that a venue's settings can change alone.
VENUE_OF = {"BTCUSDT": "BINANCE", "ETHUSDT": "COINBASE"}


def _register_symbols(instance, tmp_path, monkeypatch) -> None:
    """The symbols' partitions and venue settings (on two venues), as sync or automation build them first."""
    cfg = tmp_path / "instruments.toml"
    cfg.write_text("".join(f'[{s}]\nvenue = "{v}"\n' for s, v in VENUE_OF.items()))
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(cfg))
    instance.add_dynamic_partitions("symbols", list(SYMBOLS))
    for symbol in SYMBOLS:
        _report(instance, "venue_profile", symbol)


@pytest.fixture
def lake_state(lake, instance, tmp_path, monkeypatch):
    _register_symbols(instance, tmp_path, monkeypatch)
    for month in MONTHS:
        for symbol in SYMBOLS:
            _materialise_slice(instance, month, symbol)
    for symbol in SYMBOLS:
        for s in STRATEGIES:
            _report(instance, f"oos_validation_{s}", f"2024-01|{symbol}")
            _report(instance, f"report_{s}", symbol)
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance)
    assert first.total_requested == 0, _requested(first)  # an up-to-date lake: nothing to do
    return first.cursor


def _requested(result) -> dict[str, set[str]]:
    return {k.to_user_string(): {str(pk) for pk in pks}
            for k, pks in result._requested_partitions_by_asset_key.items() if pks}


def _until_quiet(instance, defs: dg.Definitions, cursor, max_ticks: int = 5) -> tuple[dict[str, set[str]], int]:
    """Evaluate tick after tick, completing every requested run (a new data version for each
    requested partition), until a tick requests nothing. Returns everything requested, and
    asserts no asset partition was requested twice."""
    seen: dict[str, set[str]] = {}
    for tick in range(1, max_ticks + 1):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        requested = _requested(result)
        if not requested:
            return seen, tick - 1
        for key, pks in requested.items():
            assert not (seen.get(key, set()) & pks), f"{key} {pks} requested twice"
            seen.setdefault(key, set()).update(pks)
            for pk in pks:
                _report(instance, key, pk, version=f"tick{tick}")
        cursor = result.cursor
    raise AssertionError(f"still requesting after {max_ticks} ticks: {requested}")


def _expect(pk_by_stage: dict[str, set[str]], strategies=STRATEGIES) -> dict[str, set[str]]:
    return {f"{stage}_{s}": pks for stage, pks in pk_by_stage.items() for s in strategies if pks}


def test_a_new_month_for_one_symbol_rebuilds_that_slice_its_predecessor_validation_and_roll_ups(lake, instance, lake_state):
    _report(instance, "ticks", "2024-03|BTCUSDT")  # the landing sensor's ticks run for a new month
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    # the first tick requests the new slice's chain up to its metrics (one run for the partition); its
    # critique waits for February's validation, which March's metrics make possible (critique memory)
    assert _requested(first) == _expect({s: {"2024-03|BTCUSDT"} for s in SLICE_STAGES if s != "critique"})
    requested, ticks_used = _until_quiet(instance, _defs(), lake_state)
    assert requested == _expect({
        "backtest": {"2024-03|BTCUSDT"}, "sensitivity": {"2024-03|BTCUSDT"}, "metrics": {"2024-03|BTCUSDT"}, "critique": {"2024-03|BTCUSDT"},
        "oos_validation": {"2024-02|BTCUSDT"},  # February's suggestions can now be tested on March
        "report": {"BTCUSDT"},  # once the month's slices are done
    })
    assert sum(len(p) for p in requested.values()) == 3 * 6 and ticks_used == 3


def test_a_critique_waits_for_the_previous_month_s_validation_it_remembers(lake, instance, lake_state):
    _report(instance, "ticks", "2024-03|BTCUSDT")
    order, cursor = [], lake_state
    for tick in range(1, 5):
        result = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=cursor)
        requested = _requested(result)
        order.append({k.rsplit("_", 2)[0] if k.startswith("oos_") else k.split("_")[0] for k in requested if k.endswith("ema_cross")})
        for key, pks in requested.items():
            for pk in pks:
                _report(instance, key, pk, version=f"tick{tick}")
        cursor = result.cursor
    # March's metrics, then February's validation (on March), then March's critique with its result
    assert order[:3] == [{"backtest", "sensitivity", "metrics"}, {"oos_validation", "report"}, {"critique"}], order
    # a previous validation that failed holds nothing back
    _report(instance, "ticks", "2024-03|ETHUSDT")
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=cursor)
    for key, pks in _requested(first).items():
        for pk in pks:
            _report(instance, key, pk, version="eth")
    for s in STRATEGIES:  # February's validation of ETHUSDT ran and failed
        run = _start_run(instance, f"oos_validation_{s}", "2024-02|ETHUSDT")
        instance.report_run_failed(run)
    second = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=first.cursor)
    assert "2024-03|ETHUSDT" in _requested(second).get("critique_ema_cross", set())


def test_a_changed_file_for_an_old_month_rebuilds_that_month_and_the_next_one_which_warms_on_it(lake, instance, lake_state):
    _report(instance, "ticks", "2024-01|ETHUSDT", version="v2")
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    # February's backtests and sensitivities read January's ticks (warm-up): requested with January's, on the first tick
    both = {"2024-01|ETHUSDT", "2024-02|ETHUSDT"}
    assert {k: v for k, v in _requested(first).items() if k.startswith(("backtest_", "sensitivity_"))} == _expect(
        {"backtest": both, "sensitivity": both})
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    assert requested == _expect({
        "backtest": both, "sensitivity": both, "metrics": both, "critique": both,  # and what follows them, in each month
        "oos_validation": {"2024-01|ETHUSDT"},  # January's re-tests on February (February's waits for March)
        "report": {"ETHUSDT"},
    })


def test_a_book_landing_rebuilds_only_the_strategies_that_read_depth_in_that_slice(lake, instance, lake_state):
    # The lake was built before any book partition existed (missing: an optional input, nothing
    # waited for it); a depth file for February of BTCUSDT lands: its book is materialised.
    _report(instance, "book", "2024-02|BTCUSDT")
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    # hftbacktest's market maker (queue positions) and ema_cross (depth "optional": NautilusTrader's
    # book) read it; mean_reversion declares no depth and is untouched.
    depth = ("ema_cross", "market_maker")
    assert requested == _expect({
        "backtest": {"2024-02|BTCUSDT"}, "sensitivity": {"2024-02|BTCUSDT"}, "metrics": {"2024-02|BTCUSDT"},
        "critique": {"2024-02|BTCUSDT"}, "oos_validation": {"2024-01|BTCUSDT"}, "report": {"BTCUSDT"},
    }, strategies=depth)


def test_a_roll_up_waits_for_the_month_runs_requested_on_the_same_tick(lake, instance, lake_state):
    # A backtest re-run by hand from the UI: its metrics (a month × symbol run) are requested on
    # the next tick; the report (a per-symbol run, launched beside it) must not read the backtest
    # before those metrics exist. It is requested on the tick after, once.
    for s in STRATEGIES:
        _report(instance, f"backtest_{s}", "2024-02|ETHUSDT", version="by-hand")
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    assert "metrics_ema_cross" in _requested(first) and not any(k.startswith("report_") for k in _requested(first))
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    assert {k: v for k, v in requested.items() if k.startswith("report_")} == _expect({"report": {"ETHUSDT"}})


def test_a_symbol_s_first_month_is_built_without_a_previous_month(lake, instance, tmp_path, monkeypatch):
    _register_symbols(instance, tmp_path, monkeypatch)
    cursor = dg.evaluate_automation_conditions(defs=_defs(), instance=instance).cursor
    _report(instance, "ticks", "2024-01|BTCUSDT")  # the symbol's first month: 2023-12 never landed
    requested, ticks_used = _until_quiet(instance, _defs(), cursor)
    assert requested == _expect({**{s: {"2024-01|BTCUSDT"} for s in SLICE_STAGES}, "report": {"BTCUSDT"}})
    assert ticks_used == 2  # the slice's chain, then its roll-ups


def _start_run(instance, key: str, pk: str) -> dg.DagsterRun:
    """A run of ``key`` for partition ``pk`` that has started (its materialization planned) and not ended."""
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent
    from dagster._core.test_utils import create_run_for_test

    run = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
                              asset_selection=frozenset({dg.AssetKey(key)}), tags={"dagster/partition": pk})
    instance.report_dagster_event(DagsterEvent.build_asset_materialization_planned_event(
        "__ASSET_JOB", key, AssetMaterializationPlannedData(dg.AssetKey(key), partition=pk)), run_id=run.run_id)
    return run


def test_a_previous_month_in_progress_holds_the_next_month_back_until_its_run_ends(lake, instance, lake_state):
    run = _start_run(instance, "ticks", "2024-01|ETHUSDT")  # January's ticks are being re-ingested
    _report(instance, "ticks", "2024-02|ETHUSDT", version="v2")  # while February's land
    feb = {"2024-02|ETHUSDT"}
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    # February would warm on a half-written January: nothing of February is requested (ETHUSDT's roll-ups wait too)
    assert _requested(first) == {}
    instance.handle_run_event(run.run_id, dg.DagsterEvent(  # January's run ends with a new data version
        event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name="__ASSET_JOB", message="done"))
    _report(instance, "ticks", "2024-01|ETHUSDT", version="v2")
    requested, _ = _until_quiet(instance, _defs(), first.cursor)
    both = {"2024-01|ETHUSDT", *feb}
    assert requested == _expect({"backtest": both, "sensitivity": both, "metrics": both, "critique": both,
                                 "oos_validation": {"2024-01|ETHUSDT"}, "report": {"ETHUSDT"}})


def test_a_parameter_change_rebuilds_only_that_strategy(lake, instance, lake_state, tmp_path):
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[mean_reversion]\nentry_z = 3.0\n")
    requested, _ = _until_quiet(instance, _defs(registry.load(cfg)), lake_state)
    every = {f"{m}|{s}" for m in MONTHS for s in SYMBOLS}
    assert requested == _expect({
        "backtest": every, "sensitivity": every, "metrics": every, "critique": every,
        "oos_validation": {f"2024-01|{s}" for s in SYMBOLS},  # February's waits for March
        "report": set(SYMBOLS),
    }, strategies=("mean_reversion",))


def test_editing_one_venue_s_profile_rebuilds_only_the_slices_on_that_venue(lake, instance, lake_state, tmp_path, monkeypatch):
    venues = tmp_path / "venues.toml"
    venues.write_text("[COINBASE.spot]\nentry_latency_ms = 50.0\n")
    monkeypatch.setenv("QUANT_VENUES", str(venues))
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    eth = {f"{m}|ETHUSDT" for m in MONTHS}
    # every symbol recomputes its venue settings (the asset's code changed); only ETHUSDT's moved
    assert requested.pop("venue_profile") == set(SYMBOLS)
    assert requested == _expect({"backtest": eth, "sensitivity": eth, "metrics": eth, "critique": eth,
                                 "oos_validation": {"2024-01|ETHUSDT"}, "report": {"ETHUSDT"}})


def test_a_fee_schedule_edit_rebuilds_the_slices_of_that_venue_and_kind_only(lake, instance, lake_state, tmp_path, monkeypatch):
    cfg = tmp_path / "instruments.toml"
    cfg.write_text(cfg.read_text() + '[[fees]]\nvenue = "BINANCE"\nkind = "spot"\nfrom = "2019-01-01"\nmaker = 0.0008\ntaker = 0.0009\n')
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    btc = {f"{m}|BTCUSDT" for m in MONTHS}
    assert requested.pop("venue_profile") == set(SYMBOLS)
    assert requested == _expect({"backtest": btc, "sensitivity": btc, "metrics": btc, "critique": btc,
                                 "oos_validation": {"2024-01|BTCUSDT"}, "report": {"BTCUSDT"}})


def test_a_change_in_analytics_code_rebuilds_metrics_and_what_follows_only(lake, instance, lake_state, monkeypatch):
    monkeypatch.setattr(metrics_mod, "METRICS_CODE_VERSION", "metrics-v999")
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    every = {f"{m}|{s}" for m in MONTHS for s in SYMBOLS}
    assert not any(k.startswith("backtest_") for k in requested)
    assert requested == _expect({"metrics": every, "critique": every,
                                 "oos_validation": {f"2024-01|{s}" for s in SYMBOLS}, "report": set(SYMBOLS)})


def test_nothing_runs_while_an_upstream_slice_failed_its_blocking_checks(lake, instance, lake_state):
    # a ticks materialisation whose blocking check failed: its slice must not be rebuilt on it
    _report(instance, "ticks", "2024-03|ETHUSDT", checks_pass=False)
    requested, _ = _until_quiet(instance, _defs(), lake_state)
    assert not any("2024-03|ETHUSDT" in pks for pks in requested.values())
    # nothing else either: the failed check blocks the slice, and the roll-up has no new month
    assert requested == {}


def test_every_downstream_asset_carries_a_named_condition_and_the_automation_runs_by_default():
    graph = project_defs.resolve_asset_graph()
    labels = {k.to_user_string(): graph.get(k).automation_condition.get_label() if graph.get(k).automation_condition else None
              for k in graph.get_all_asset_keys()}
    assert labels.pop("ticks") is None  # the landing sensor drives ticks
    assert labels.pop("funding") is None  # and funding
    assert labels.pop("book") is None  # and book (beside ticks, for months with depth files)
    assert labels.pop("fetch") is None  # its schedules and the CLI (it downloads: never by automation)
    assert labels.pop("venue_profile") == "rebuild_venue_profiles"
    assert labels.pop("discoveries") == "rebuild_ledger"  # unpartitioned, over every tested change
    assert labels.pop("promotions") == "rebuild_ledger"  # and what survives it, judged on later months
    assert labels.pop("critic_scorecard") == "rebuild_ledger"  # likewise, over every validation
    for key in [k for k in labels if k.startswith("portfolio_")]:  # universes.toml's portfolios: over every month
        assert labels.pop(key) == "rebuild_ledger"
    assert set(labels.values()) == {"rebuild_stale_slices", "rebuild_rollups"}
    assert all(v == "rebuild_rollups" for k, v in labels.items() if k.startswith("report_"))
    states = {s.name: s.default_status for s in project_defs.sensors}
    assert states == {"landing_sensor": dg.DefaultSensorStatus.RUNNING, "automation_sensor": dg.DefaultSensorStatus.RUNNING}
    schedules = {s.name: s for s in project_defs.schedules}
    assert schedules["nightly_rebacktest"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["nightly_rebacktest"].cron_schedule == "0 2 * * *"
    # one daily fetch per source, at its publication time (sources.toml's publish_utc or the default)
    assert {k: v.cron_schedule for k, v in schedules.items() if k != "nightly_rebacktest"} == {
        "fetch_binance": "0 6 * * *", "fetch_tardis": "0 3 * * *", "fetch_databento": "0 10 * * *"}
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert all(pools[k] == {automation.ENGINE_POOL} for k in pools if k.startswith(("backtest_", "oos_validation_")))


def test_the_nightly_schedule_requests_recent_months_and_stale_or_failed_slices(lake, instance, tmp_path, monkeypatch):
    _register_symbols(instance, tmp_path, monkeypatch)
    for month in ("2024-01", "2024-02", "2024-03"):
        for symbol in SYMBOLS:
            _materialise_slice(instance, month, symbol, provenance=True)
    # January of ETHUSDT: its mean_reversion backtest failed, so the slice has no backtest since its ticks changed
    _report(instance, "ticks", "2024-01|ETHUSDT", version="v2")
    at = datetime(2024, 3, 12, 2, 0, tzinfo=UTC)
    expected = ["2024-01|ETHUSDT", "2024-02|BTCUSDT", "2024-02|ETHUSDT", "2024-03|BTCUSDT", "2024-03|ETHUSDT"]
    assert nightly_partitions(instance, lake, at) == expected
    # LakeResource is a context-manager resource (an object-store lake is pulled and pushed
    # around its use), so its contexts are opened with `with`, as Dagster requires.
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   resources={"lake": LakeResource()}) as context:
        requests = list(nightly_rebacktest(context))
        assert [r.partition_key for r in requests] == expected
        assert [r.run_key for r in requests] == [f"nightly:2024-03-12:{pk}" for pk in expected]
        # the same night evaluated again asks for the same run keys (Dagster skips them)
        assert [r.run_key for r in nightly_rebacktest(context)] == [r.run_key for r in requests]


def test_a_re_ingest_that_reproduces_the_same_data_version_rebuilds_nothing(lake, instance, lake_state):
    _report(instance, "ticks", "2024-01|BTCUSDT", version="v1")  # same bytes, same data version
    requested, ticks_used = _until_quiet(instance, _defs(), lake_state)
    assert requested == {} and ticks_used == 0


def _report_run_checks(instance, pk: str, failing: str | None = None,
                       severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> None:
    """A ticks materialization with its check evaluations as a real run stores them: the checks
    of a partitioned asset are recorded unpartitioned, each naming the materialization it
    checked (its storage id), which is what ties it to the partition."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="ticks", partition=pk, tags={"dagster/data_version": f"ticks-{pk}-run"}))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="funding", partition=pk, tags={"dagster/data_version": "not-applicable"}))
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("ticks"), asset_partitions=[pk]), limit=1).records[0]
    target = AssetCheckEvaluationTargetMaterializationData(storage_id=record.storage_id, run_id="", timestamp=record.timestamp)
    for name in TICKS_CHECKS:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("ticks"), check_name=name, passed=name != failing,
            severity=severity if name == failing else dg.AssetCheckSeverity.ERROR, target_materialization_data=target))


def test_blocking_checks_are_judged_on_each_partition_s_latest_materialization_as_runs_record_them(lake, instance, lake_state):
    # March lands for both symbols; BTCUSDT's materialization failed a blocking check, ETHUSDT's passed
    _report_run_checks(instance, "2024-03|BTCUSDT", failing=TICKS_CHECKS[0])
    _report_run_checks(instance, "2024-03|ETHUSDT")
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    # (its critique waits for February's validation, which March's metrics make possible)
    assert _requested(first) == _expect({s: {"2024-03|ETHUSDT"} for s in SLICE_STAGES if s != "critique"})


@pytest.mark.parametrize("severity", [dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR])
def test_a_blocking_check_failed_with_warn_severity_holds_nothing_back_as_in_a_run(lake, instance, lake_state, severity):
    # calendar_complete is blocking; it fails with WARN by default (QUANT_GAPS=warn): the month's
    # slices run, as Dagster's own run would let them; with ERROR (QUANT_GAPS=block) they wait
    from quant_assets.assets.ticks import CALENDAR_COMPLETE

    _report_run_checks(instance, "2024-03|BTCUSDT", failing=CALENDAR_COMPLETE, severity=severity)
    _report_run_checks(instance, "2024-03|ETHUSDT")
    first = dg.evaluate_automation_conditions(defs=_defs(), instance=instance, cursor=lake_state)
    held = set() if severity == dg.AssetCheckSeverity.WARN else {"2024-03|BTCUSDT"}
    expect = {s: {"2024-03|BTCUSDT", "2024-03|ETHUSDT"} - held for s in SLICE_STAGES if s != "critique"}
    if not held:  # both Marches ready: February's out-of-sample validations (on March) run too
        expect["oos_validation"] = {"2024-02|BTCUSDT", "2024-02|ETHUSDT"}
    assert _requested(first) == _expect(expect)


def test_the_nightly_schedule_builds_the_plan_s_cache_within_its_budget_and_judges_staleness_once_built(lake, instance, tmp_path, monkeypatch):
    from quant_assets import schedules

    _register_symbols(instance, tmp_path, monkeypatch)
    for month in ("2024-01", "2024-02", "2024-03"):
        for symbol in SYMBOLS:
            _materialise_slice(instance, month, symbol, provenance=True)
    _report(instance, "ticks", "2024-01|ETHUSDT", version="v2")  # January of ETHUSDT is stale (and February, warmed on it)
    at = datetime(2024, 3, 12, 2, 0, tzinfo=UTC)
    recent = ["2024-02|BTCUSDT", "2024-02|ETHUSDT", "2024-03|BTCUSDT", "2024-03|ETHUSDT"]
    monkeypatch.setattr(schedules, "WARM_BUDGET_S", 0.0)  # no time to build the cache tonight
    assert nightly_partitions(instance, lake, at) == recent  # missing slices only: there are none
    monkeypatch.setattr(schedules, "WARM_BUDGET_S", 20.0)
    assert nightly_partitions(instance, lake, at) == ["2024-01|ETHUSDT", *recent]


# --- a window of earlier months only (a walk-forward fold reading the months before it) ------

TOY_SLICES = dg.MultiPartitionsDefinition({
    "month": dg.MonthlyPartitionsDefinition(start_date="2024-01", fmt="%Y-%m", end_offset=1),
    "symbol": dg.StaticPartitionsDefinition(["A"]),
})


@dg.asset(partitions_def=TOY_SLICES)
def toy_source():
    """Fed from outside (as ticks): not automated."""


@dg.asset(partitions_def=TOY_SLICES, deps=[toy_source], automation_condition=automation.rebuild_stale_slices())
def toy_sweep():
    """A slice per month (as a sweep)."""


@dg.asset(partitions_def=TOY_SLICES, automation_condition=automation.rebuild_stale_slices(),
          deps=[dg.AssetDep(toy_sweep, partition_mapping=months_window(-1, -1))])
def toy_fold():
    """Month M reads the sweep of M-1 only (a walk-forward fold with k = 1)."""


def test_earlier_months_requested_on_the_same_tick_count_only_where_the_backfill_orders_them(instance):
    defs = dg.Definitions(assets=[toy_source, toy_sweep, toy_fold])
    months = ("2024-01", "2024-02", "2024-03")
    for name in ("toy_source", "toy_sweep", "toy_fold"):
        for m in months:
            _report(instance, name, f"{m}|A")
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    # February's source changes: its sweep is requested alone, a single-partition run that nothing
    # orders before March's fold (another partition, another run): the fold waits a tick for it
    _report(instance, "toy_source", "2024-02|A", version="v2")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(first) == {"toy_sweep": {"2024-02|A"}}
    _report(instance, "toy_sweep", "2024-02|A", version="v2")
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(second) == {"toy_fold": {"2024-03|A"}}
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor).cursor

    # January's and February's: two sweeps, so one backfill with the folds, whose daemon runs
    # each fold after the sweep it reads: requested on the same tick. January's fold reads
    # December, before the first month: it has no earlier month and nothing to rebuild.
    for m in months[:2]:
        _report(instance, "toy_source", f"{m}|A", version="v3")
    requested, ticks_used = _until_quiet(instance, defs, cursor)
    assert requested == {"toy_sweep": {"2024-01|A", "2024-02|A"}, "toy_fold": {"2024-02|A", "2024-03|A"}}
    assert ticks_used == 1
