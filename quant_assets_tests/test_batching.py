"""Batched backfills (quant_assets/batching.py): Dagster's backfill machinery cuts a target into
ranged runs, whose steps loop over their partitions and report slice by slice.

The backfills here are real: a ``PartitionBackfill`` submitted to the instance and the backfill
daemon's iteration run in process, its runs executed synchronously (Dagster's test run launcher)
from the code location quant_assets_tests/batch_defs.py (ticks, funding, book, bars_1m). The same
slices built one run per slice with ``dg.materialize`` in a second lake and instance are the
reference: same files, byte for byte, same metadata, same provenance, same staleness.
"""

from __future__ import annotations

import re

import hashlib
import logging
import random
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._utils.test.data_versions import get_stale_status_resolver

from quant_assets import batching
from quant_assets.assets import research
from quant_assets.lake.store import Lake
from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions
from quant_assets_tests import batch_defs
from quant_assets_tests import builders as b
from resources import LakeResource

SYMBOLS = ("AAAUSDT", "BBBUSDT")
#: Dagster cuts this into 2024-01 × both symbols (a batched run of two slices) and 2024-02|AAAUSDT
#: (a run of one slice: Dagster's ordinary path), both running ticks, funding, book and bars together.
TARGET = ["2024-01|AAAUSDT", "2024-01|BBBUSDT", "2024-02|AAAUSDT"]
KEYS = [dg.AssetKey(k) for k in ("ticks", "funding", "book", "bars_1m")]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: What is built from landing files (the landing ledger records times, so it differs between lakes).
DATA_DIRS = ("ticks", "funding", "bars", "staging", "instruments")


def _land(lake: Lake) -> None:
    for symbol in SYMBOLS:
        for month, t0 in (("2024-01", b.JAN_MS), ("2024-02", b.FEB_START_MS)):
            b.write(lake.landing_dir(symbol) / f"{symbol}-bookTicker-{month}.csv", b.binance_bookticker_csv(4, t0_ms=t0))
            b.write(lake.landing_dir(symbol) / f"{symbol}-trades-{month}.csv", b.binance_trades_csv(3, t0_ms=t0))


@pytest.fixture
def sync_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An instance whose runs execute in this process as they are submitted (no run queue)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home), synchronous_run_launcher=True, synchronous_run_coordinator=True) as inst:
        inst.add_dynamic_partitions("symbols", list(SYMBOLS))
        yield inst


@pytest.fixture
def reference(tmp_path: Path):
    """The same slices built one run per slice, in a lake and instance of their own."""
    root = tmp_path / "reference"
    root.mkdir()
    _land(Lake.at(root))
    home = tmp_path / "reference_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as inst:
        inst.add_dynamic_partitions("symbols", list(SYMBOLS))
        for pk in TARGET:
            assert dg.materialize(batch_defs.ASSETS, partition_key=pk, instance=inst,
                                  resources={"lake": LakeResource(root=str(root))}).success
        yield root, inst


def _backfill(instance: dg.DagsterInstance, partitions: list[str]) -> tuple[PartitionBackfill, list[dg.DagsterRun]]:
    """Submit a backfill of ``KEYS`` over ``partitions`` and run the backfill daemon until it is done."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="quant_assets_tests.batch_defs", attribute="defs"), location_name="batch")
    backfill_id = uuid.uuid4().hex[:8]
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id, asset_graph=workspace.create_request_context().asset_graph,
            partition_names=partitions, asset_selection=KEYS, backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None))
        for _ in range(6):
            list(execute_backfill_iteration(workspace, logging.getLogger("test_batching")))
            if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
                break
    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    return instance.get_backfill(backfill_id), sorted(runs, key=lambda r: r.tags[RANGE_START])


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in DATA_DIRS for p in sorted((root / d).rglob("*")) if p.is_file()}


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, pk: str) -> dg.EventLogRecord:
    (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=5).records
    return record


def _metadata(record: dg.EventLogRecord, root: Path) -> dict[str, object]:
    """A materialization's metadata, with the lake root (which differs between the lakes) and the
    stored version's publish time (when, not what) cut out."""
    out = {k: str(v.value).replace(str(root), "<lake>") for k, v in record.asset_materialization.metadata.items()}
    if "version_files" in out:
        out["version_files"] = re.sub(r"'published_at(_ns)?': [^,}]+", "'published_at': <when>", out["version_files"])
    return out


def _evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    return [e.dagster_event.event_specific_data for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def _statuses(instance: dg.DagsterInstance, assets=batch_defs.ASSETS) -> dict[tuple[str, str], StaleStatus]:
    resolver = get_stale_status_resolver(instance, assets)
    return {(k.to_user_string(), pk): resolver.get_status(k, pk) for k in KEYS for pk in TARGET}


def test_a_backfill_runs_batched_and_equals_one_run_per_slice(lake, sync_instance, reference, monkeypatch):
    _land(lake)
    backfill, runs = _backfill(sync_instance, TARGET)

    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    # two runs for three slices, each building all four assets over its partitions
    assert [(r.tags[RANGE_START], r.tags[RANGE_END], r.status) for r in runs] == [
        ("2024-01|AAAUSDT", "2024-01|BBBUSDT", DagsterRunStatus.SUCCESS),
        ("2024-02|AAAUSDT", "2024-02|AAAUSDT", DagsterRunStatus.SUCCESS),
    ]
    assert all(set(r.asset_selection) == set(KEYS) for r in runs)
    ref_root, ref = reference
    for key in KEYS:
        assert set(sync_instance.get_materialized_partitions(key)) == set(TARGET)
        for pk in TARGET:
            mine, theirs = _latest(sync_instance, key, pk), _latest(ref, key, pk)  # one materialization each
            assert _metadata(mine, lake.root) == _metadata(theirs, ref_root), (key, pk)
            tags, ref_tags = mine.asset_materialization.tags, theirs.asset_materialization.tags
            pointers = {t for t in tags if t.startswith("dagster/input_event_pointer/")}
            assert tags.keys() == ref_tags.keys() and pointers == {t for t in ref_tags if t.startswith("dagster/input_event_pointer/")}
            # the pointers are storage ids, which differ between instances; everything else is equal
            assert {t: v for t, v in tags.items() if t not in pointers} == {t: v for t, v in ref_tags.items() if t not in pointers}
            assert all(tags[t].isdigit() for t in pointers)
    assert _files(lake.root) == _files(ref_root) and _files(ref_root)

    # the ticks checks, per slice: in the batched run evaluated for their partition (and the
    # book's, "not applicable" on these L1 files, likewise)
    evaluations = [e for e in _evaluations(sync_instance, runs[0].run_id) if e.asset_key == dg.AssetKey("ticks")]
    assert sorted((str(e.partition), e.passed) for e in evaluations if e.check_name != "calendar_complete") == sorted(
        (pk, True) for pk in TARGET[:2] for _ in range(6))  # 5 row rules + quotes_match_book (n/a: no depth)
    # seconds of one day a month: the calendar check warns (blocking, severity WARN), and the
    # slices downstream were built all the same (above)
    assert sorted((str(e.partition), e.passed, e.blocking, e.severity.value) for e in evaluations
                  if e.check_name == "calendar_complete") == [(pk, False, True, "WARN") for pk in TARGET[:2]]
    for e in evaluations:
        assert e.target_materialization_data.storage_id == _latest(sync_instance, dg.AssetKey("ticks"), e.partition).storage_id
    book_evaluations = [e for e in _evaluations(sync_instance, runs[0].run_id) if e.asset_key == dg.AssetKey("book")]
    assert book_evaluations and all(e.passed and e.target_materialization_data.storage_id == _latest(
        sync_instance, dg.AssetKey("book"), e.partition).storage_id for e in book_evaluations)

    # staleness reads the provenance of batched slices as that of slices built one by one
    assert set(_statuses(sync_instance).values()) == {StaleStatus.FRESH} and _statuses(ref) == _statuses(sync_instance)
    monkeypatch.setattr(research, "RESEARCH_VERSION", f"{research.RESEARCH_VERSION}-next")
    new_code = [*batch_defs.ASSETS[:3], research.bars_asset("1m")]
    for inst in (sync_instance, ref):
        statuses = _statuses(inst, new_code)
        assert {pk for (k, pk), s in statuses.items() if s == StaleStatus.STALE} == set(TARGET)
        assert {s for (k, _), s in statuses.items() if k != "bars_1m"} == {StaleStatus.FRESH}
        causes = get_stale_status_resolver(inst, new_code).get_stale_causes(dg.AssetKey("bars_1m"), TARGET[0])
        assert [c.category for c in causes] == [StaleCauseCategory.CODE]
    # new ticks for one slice make only that slice's bars stale, in both
    for inst, root in ((sync_instance, lake.root), (ref, ref_root)):
        b.write(root / "landing" / "AAAUSDT" / "AAAUSDT-trades-extra.csv", b.binance_trades_csv(2, t0_ms=b.JAN_MS + 60_000, start_id=90))
        assert dg.materialize(batch_defs.ASSETS, selection=["ticks"], partition_key=TARGET[0], instance=inst,
                              resources={"lake": LakeResource(root=str(root))}).success
        stale = {kp for kp, s in _statuses(inst).items() if s == StaleStatus.STALE}
        assert stale == {("bars_1m", TARGET[0])}, inst


def test_a_failing_slice_is_reported_for_itself_and_the_others_are_kept(lake, sync_instance, tmp_path, monkeypatch):
    _land(lake)
    # BBBUSDT's quotes (42000.10, ...) are off a 0.5 price grid: its ticks candidate breaks a blocking rule
    cfg = tmp_path / "instruments.toml"
    cfg.write_text("[BBBUSDT]\ntick_size = 0.5\n")
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(cfg))
    backfill, (run,) = _backfill(sync_instance, TARGET[:2])

    assert run.status == DagsterRunStatus.FAILURE and backfill.status == BulkActionStatus.COMPLETED_FAILED
    ticks, bad, good = dg.AssetKey("ticks"), "2024-01|BBBUSDT", "2024-01|AAAUSDT"
    (failure,) = [e for e in sync_instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
    message = failure.dagster_event.step_failure_data.user_failure_data.description
    assert failure.step_key == "ticks" and message.startswith("1 of 2 slices of ticks failed (1 built and recorded): ")
    assert f"{bad}: BBBUSDT 2024-01: blocking checks failed: precision_matches_instrument" in message
    assert failure.dagster_event.step_failure_data.user_failure_data.metadata["failed_slices"].value.keys() == {bad}
    # the good slice is materialised, the bad one is failed in Dagster's partition status; its
    # candidate was never published
    assert set(sync_instance.get_materialized_partitions(ticks)) == {good}
    status = sync_instance.get_status_by_partition(ticks, [good, bad], month_symbol_partitions)
    assert status == {good: AssetPartitionStatus.MATERIALIZED, bad: AssetPartitionStatus.FAILED}
    assert not lake.ticks_path("BBBUSDT", "2024-01").exists()
    failed_checks = {(e.partition, e.check_name, e.severity.value) for e in _evaluations(sync_instance, run.run_id) if not e.passed}
    # (and the good slice's calendar warning: a few seconds of January 1st, 30 days without rows)
    assert failed_checks == {(bad, "precision_matches_instrument", "ERROR"), (good, "calendar_complete", "WARN")}
    # funding does not read ticks: both slices built in the same run
    assert set(sync_instance.get_materialized_partitions(dg.AssetKey("funding"))) == set(TARGET[:2])
    # a failed step stops the run's downstream steps, so the good slice's bars wait for another
    # run (the backfill counts them failed; automation requests them once the backfill is over)
    assert not sync_instance.get_materialized_partitions(dg.AssetKey("bars_1m"))
    failed = backfill.asset_backfill_data.failed_and_downstream_subset
    assert set(failed.get_partitions_subset(ticks).get_partition_keys()) == {bad}
    assert set(failed.get_partitions_subset(dg.AssetKey("bars_1m")).get_partition_keys()) == set(TARGET[:2])


# --- the in-run gate and the events of a batched step, on two toy assets ----------------------

SLICES = dg.MultiPartitionsDefinition({
    "month": dg.MonthlyPartitionsDefinition(start_date="2024-01", fmt="%Y-%m", end_offset=1),
    "symbol": dg.StaticPartitionsDefinition(["A", "B", "C", "D"]),
})


@dg.asset(partitions_def=SLICES, code_version="up-1", output_required=False,
          check_specs=[dg.AssetCheckSpec("sane", asset="up", blocking=True)])
def up(context):
    def one(pk: str) -> batching.Built | batching.NotBuilt:
        if pk.endswith("C"):
            return batching.NotBuilt(f"up {pk}: n/a", observation={"not_applicable": "no quotes"},
                                     checks=[dg.AssetCheckResult(check_name="sane", passed=True)])
        # B is built but breaks its blocking invariant: kept for inspection, never read
        return batching.Built({"n": 1}, f"up-{pk}", checks=[dg.AssetCheckResult(check_name="sane", passed=not pk.endswith("B"))])
    yield from batching.build_slices(context, one)


@dg.asset(partitions_def=SLICES, deps=[up], code_version="down-1")
def down(context):
    yield from batching.build_slices(context, lambda pk: batching.Built({"n": 2}, f"down-{pk}"))


def test_a_batched_step_gates_its_slices_on_the_same_run_upstream(instance):
    res = dg.materialize([up, down], instance=instance, tags={RANGE_START: "2024-01|A", RANGE_END: "2024-01|D"})
    # the step does not fail for a failed blocking check (that would cost every slice downstream)
    assert res.success
    mats = sorted((e.asset_key.to_user_string(), e.partition) for e in res.get_asset_materialization_events())
    # one materialization per built slice, none for the range
    assert mats == [("down", "2024-01|A"), ("down", "2024-01|D"),
                            ("up", "2024-01|A"), ("up", "2024-01|B"), ("up", "2024-01|D")]
    (observation,) = [e for e in res.all_events if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    assert observation.partition == "2024-01|C"
    checks = {e.partition: (e.passed, e.blocking) for e in res.get_asset_check_evaluations()}
    assert checks == {"2024-01|A": (True, True), "2024-01|B": (False, True), "2024-01|C": (True, True), "2024-01|D": (True, True)}
    logs = [r.user_message for r in instance.all_logs(res.run_id) if "skipped:" in (r.user_message or "")]
    assert sorted(logs) == [
        "down 2024-01|B: skipped: up 2024-01|B failed its blocking check(s) sane",
        "down 2024-01|C: skipped: up 2024-01|C was not built in this run (not applicable: no quotes)",
    ]
    tags = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("down"), asset_partitions=["2024-01|D"]),
                                           limit=1).records[0].asset_materialization.tags
    assert tags["dagster/code_version"] == "down-1" and tags["dagster/data_version"] == "down-2024-01|D"
    assert tags["dagster/input_data_version/up"] == hashlib.sha256(b"up-2024-01|D").hexdigest()
    assert tags["dagster/partition/symbol"] == "D"


#: early's data versions carry this generation: bumped to give a slice a new data version
GENERATION = {"n": 1}


@dg.asset(partitions_def=SLICES, code_version="early-1", output_required=False,
          check_specs=[dg.AssetCheckSpec("sane", asset="early", blocking=True)])
def early(context):
    def one(pk: str) -> batching.Built | batching.NotBuilt:
        if pk == "2024-01|C":
            return batching.NotBuilt(f"early {pk}: n/a", observation={"not_applicable": "no quotes"},
                                     checks=[dg.AssetCheckResult(check_name="sane", passed=True)])
        return batching.Built({"n": 1}, f"early-{pk}-{GENERATION['n']}",
                              checks=[dg.AssetCheckResult(check_name="sane", passed=pk != "2024-01|B")])
    yield from batching.build_slices(context, one)


@dg.asset(partitions_def=SLICES, deps=[dg.AssetDep(early, partition_mapping=WITH_PREVIOUS_MONTH)], code_version="warm-1")
def warm(context):
    """Month M reads M-1 and M of ``early`` (a backtest warming up on the previous month)."""
    yield from batching.build_slices(context, lambda pk: batching.Built({"n": 2}, f"warm-{pk}"))


def test_a_window_of_months_records_every_month_read_and_gates_on_the_earlier_one_s_checks_only(instance, monkeypatch):
    from quant_assets import latest, staleness

    monkeypatch.setitem(GENERATION, "n", 1)
    res = dg.materialize([early, warm], instance=instance, tags={RANGE_START: "2024-01|A", RANGE_END: "2024-02|D"})
    assert res.success
    logs = sorted(r.user_message for r in instance.all_logs(res.run_id) if "skipped:" in (r.user_message or ""))
    assert logs == [
        "warm 2024-01|B: skipped: early 2024-01|B failed its blocking check(s) sane",
        "warm 2024-01|C: skipped: early 2024-01|C was not built in this run (not applicable: no quotes)",
        # February of B would warm on January's refused data; February of C starts from what exists of January (nothing)
        "warm 2024-02|B: skipped: early 2024-01|B failed its blocking check(s) sane",
    ]
    built = {"2024-01|A", "2024-01|D", "2024-02|A", "2024-02|C", "2024-02|D"}
    assert set(instance.get_materialized_partitions(dg.AssetKey("warm"))) == built

    def tags(inst, pk: str) -> dict[str, str]:
        return inst.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("warm"), asset_partitions=[pk]),
                                           limit=1).records[0].asset_materialization.tags

    # the input data version of a slice hashes every month it read, as a run of that one slice records it
    with dg.instance_for_test() as reference:
        for pk in ("2024-01|A", "2024-02|A"):
            assert dg.materialize([early], partition_key=pk, instance=reference).success
        assert dg.materialize([early, warm], selection=["warm"], partition_key="2024-02|A", instance=reference).success
        assert tags(instance, "2024-02|A")["dagster/input_data_version/early"] == \
            tags(reference, "2024-02|A")["dagster/input_data_version/early"] == \
            hashlib.sha256(b"early-2024-01|A-1early-2024-02|A-1").hexdigest()

    # a new data version of January makes January's and February's slices stale, in Dagster's
    # stale status and the bulk plan's alike
    def stale(definitions) -> dict[str, tuple[bool, bool]]:
        graph = definitions.resolve_asset_graph()
        keys = [dg.AssetKey("early"), dg.AssetKey("warm")]
        ours = staleness.StaleResolver(instance, graph, latest.load(instance, keys))
        assert dg.AssetKey("warm") not in ours.delegated  # the window is mapped in bulk
        facts = ours.latest[dg.AssetKey("warm")]
        resolver = get_stale_status_resolver(instance, [early, warm])
        return {pk: (resolver.get_status(dg.AssetKey("warm"), pk) == StaleStatus.STALE, ours.is_stale(dg.AssetKey("warm"), pk, facts.get(pk)))
                for pk in sorted(built)}

    definitions = dg.Definitions(assets=[early, warm])
    assert stale(definitions) == {pk: (False, False) for pk in built}
    monkeypatch.setitem(GENERATION, "n", 2)
    assert dg.materialize([early], partition_key="2024-01|A", instance=instance).success
    assert stale(definitions) == {pk: ((True, True) if pk.endswith("|A") else (False, False)) for pk in built}


def test_a_slice_whose_own_month_of_a_window_was_never_built_is_skipped_not_failed(instance, monkeypatch):
    # What a backfill of early and warm up to January targets: February's warm too (it reads
    # January); February's early never existed, so that slice is skipped and the step succeeds
    monkeypatch.setitem(GENERATION, "n", 1)
    assert dg.materialize([early], partition_key="2024-01|A", instance=instance).success
    res = dg.materialize([early, warm], selection=["warm"], instance=instance,
                         tags={RANGE_START: "2024-01|A", RANGE_END: "2024-02|A"})
    assert res.success
    assert set(instance.get_materialized_partitions(dg.AssetKey("warm"))) == {"2024-01|A"}
    logs = [r.user_message for r in instance.all_logs(res.run_id) if "skipped" in (r.user_message or "")]
    assert logs == ["warm 2024-02|A: skipped: early 2024-02|A does not exist (never materialised)",
                    "warm: 1 of 2 slices built, 1 skipped, 0 failed"]


def test_the_run_size_cuts_a_whole_asset_into_at_most_100_runs_each_partition_once():
    """What ``context.partition_keys`` holds in each run of a backfill of 400 symbols × 84 months,
    as the asset backfill daemon builds its runs (``build_run_requests_with_backfill_policies``)."""
    symbols = [f"S{i:03d}USDT" for i in range(400)]
    months = [f"{y}-{m:02d}" for y in range(2020, 2027) for m in range(1, 13)]
    graph = AssetGraph.from_assets(batch_defs.ASSETS)
    with dg.instance_for_test() as instance, partition_loading_context(dynamic_partitions_store=instance):
        instance.add_dynamic_partitions("symbols", symbols)

        def runs(target: list[str]) -> list[list[str]]:
            requests = build_run_requests_with_backfill_policies(
                [AssetKeyPartitionKey(dg.AssetKey("ticks"), pk) for pk in target], graph, instance)
            return [[str(k) for k in month_symbol_partitions.get_partition_keys_in_range(
                dg.PartitionKeyRange(r.tags[RANGE_START], r.tags[RANGE_END]))] for r in requests]

        whole = [f"{m}|{s}" for m in months for s in symbols]
        assert len(whole) == 33_600
        chunks = runs(whole)
        # one run per month, each every symbol of that month
        assert len(chunks) == 84 <= 100 and {len(c) for c in chunks} == {400}
        assert sorted(k for c in chunks for k in c) == sorted(whole)
        assert len(runs([f"2024-06|{s}" for s in symbols])) == 1
        scattered = random.Random(7).sample(whole, 300)
        chunks = runs(scattered)
        assert sorted(k for c in chunks for k in c) == sorted(scattered)  # each exactly once, nothing else
        assert all(len(c) <= batching.PARTITIONS_PER_RUN for c in chunks)


def test_a_batched_run_over_one_symbol_pulls_that_symbol_only_from_an_object_store():
    from types import SimpleNamespace

    from resources.lake import _run_symbol

    def symbol(**tags):
        return _run_symbol(SimpleNamespace(dagster_run=SimpleNamespace(tags=tags)))

    assert symbol(**{RANGE_START: "2024-01|AAAUSDT", RANGE_END: "2024-06|AAAUSDT"}) == "AAAUSDT"
    assert symbol(**{RANGE_START: "AAAUSDT", RANGE_END: "AAAUSDT"}) == "AAAUSDT"  # a roll-up's run of one
    assert symbol(**{RANGE_START: "2024-01|AAAUSDT", RANGE_END: "2024-01|BBBUSDT"}) is None  # every symbol
    assert symbol(**{RANGE_START: "AAAUSDT", RANGE_END: "BBBUSDT"}) is None
