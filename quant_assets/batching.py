"""Batched backfills: one step builds many slices, each reported as if it had had its own run.

A backfill of a whole month × symbol asset (400 symbols × 84 months = 33,600 slices) would
otherwise be 33,600 runs of ~8 s overhead each. Every partitioned asset here declares
:data:`BACKFILL_POLICY`, so Dagster cuts a backfill into ranged runs, and its body is
:func:`build_slices`, which loops over ``context.partition_keys`` calling a per-slice function
(the domain call, no Dagster in it) and reports each slice on its own:

* a built slice: one ``AssetMaterialization`` for its partition, with its own metadata and data
  version and the provenance tags Dagster's staleness reads (``dagster/code_version``,
  ``dagster/input_data_version/<dep>``, ``dagster/input_event_pointer/<dep>``), computed the way
  Dagster computes them for a run of that one slice; then its check evaluations, for that
  partition, aimed at that materialization;
* a slice that is not built on purpose (a backtest not applicable to the slice's fidelity, an
  out-of-sample test waiting for its next month): what a one-slice run logs and records for it;
* a slice that fails: logged with its reason (check evaluations first, if it has any); the
  loop goes on, and at the end the step fails naming every failed slice and why, after the
  others were recorded. Dagster then shows those partitions as failed and the others as
  materialised, and the backfill counts them so. Dagster runs no step downstream of a failed
  one: the slices of this run of assets downstream of the failed step wait for another run (the
  backfill counts them failed; automation requests them once the backfill is over).

A run of one partition (the landing sensor's, ``quant-assets sync``'s ``dg.materialize``, a
single-partition launch, or a backfill run of one slice) takes Dagster's ordinary path instead:
a ``MaterializeResult`` with its check results, exactly as before batching existed. (Its check
evaluations carry no partition, as the check specs have none; a batched step's carry the slice's,
the only way to tell them apart within one step.)

Blocking checks. Dagster gates on blocking checks per step: in a one-slice run a failed one
fails the step and the run's downstream steps are skipped. In a batched run that would cost the
downstream work of every slice of the run for one bad slice, so a batched step records the
failed evaluation (blocking, for its partition) and does not fail for it; a downstream batched
step of the same run skips every slice whose upstream slice in this run failed a blocking check
or was not built, saying why. That is what one run per slice would have done, slice by slice.
Upstream slices built by other runs are not gated here, as in a one-slice run (the automation
condition ``all_deps_blocking_checks_passed`` keeps those from being requested). Through a window
of months (``months_window``: a backtest reads M−1's ticks to warm up) the earlier months are
optional, as automation judges them: one this run did not build is read as it is (or the slice
starts cold), one that failed a blocking check gates the slice. Provenance covers every month
read: a slice's input data version of such a dependency hashes the data versions of all of them
(M−1 and M), as Dagster's own runs do, so a new M−1 makes M stale in both stale statuses.

Two Dagster internals are relied on, pinned with Dagster (1.13.27) and covered by
quant_assets_tests/test_batching.py: the event-log queries behind provenance, and the
source-asset metadata key that lets a step yield its output (so that downstream steps of the
run execute) without Dagster adding one materialization per partition of the range.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD,
    DataVersion,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.definitions.partitions.utils.mapping import infer_partition_mapping
from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION
from dagster._core.events import DagsterEventType

from quant_assets.settings import backfill_partitions_per_run

#: Largest number of partitions one backfill run builds (``$QUANT_BACKFILL_PARTITIONS_PER_RUN``,
#: default 500). Dagster cuts a month × symbol target
#: into lines before chunking them: one month × a contiguous range of symbols, or one symbol ×
#: a contiguous range of months, along whichever dimension has fewer distinct keys in the target
#: (a range over both would be a rectangle, so it never makes one). A whole asset of 400
#: symbols × 84 months is therefore 84 lines of 400 symbols: at 500 per run, 84 runs (at 336,
#: i.e. 33,600 / 100, each line would split in two: 168 runs). One month of every symbol (what
#: new data usually asks for) is one run, as is a roll-up over every symbol. 500 leaves room for
#: 100 more symbols before a month needs two runs. A scattered set of slices gets one run per
#: contiguous stretch of a line, never a partition twice. The price of big runs: one line is one
#: run, so on its own it uses one of the run queue's slots (max_concurrent_runs) where one run
#: per slice would use them all.
PARTITIONS_PER_RUN = backfill_partitions_per_run()
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(PARTITIONS_PER_RUN)

#: Detailed reasons kept in a failed step's description (all of them go in its metadata).
_DESCRIBED_FAILURES = 20


@dataclass(frozen=True)
class Built:
    """A slice was built: its materialization's metadata, data version and check results."""

    metadata: Mapping[str, Any]
    data_version: str
    checks: Sequence[dg.AssetCheckResult] = ()


@dataclass(frozen=True)
class NotBuilt:
    """A slice is not built, on purpose (not a failure): ``message`` is logged at INFO; an
    ``observation`` (metadata) is recorded for the slice's partition when given, then ``checks``."""

    message: str
    observation: Mapping[str, Any] | None = None
    checks: Sequence[dg.AssetCheckResult] = ()


class SliceFailed(Exception):
    """A slice failed with check results to record first (``ticks`` refusing to publish a
    candidate that broke a blocking rule). Other exceptions fail a slice too, without checks."""

    def __init__(self, description: str, *, metadata: Mapping[str, Any] | None = None,
                 checks: Sequence[dg.AssetCheckResult] = ()) -> None:
        super().__init__(description)
        self.description = description
        self.metadata = dict(metadata or {})
        self.checks = list(checks)


#: Builds one slice from its partition key (``2024-01|BTCUSDT``, or a symbol for a roll-up).
SliceFn = Callable[[str], "Built | NotBuilt"]


def build_slices(context: dg.AssetExecutionContext, build: SliceFn) -> Iterator[Any]:
    """The body of a partitioned asset: ``yield from build_slices(context, build_one)``.

    One partition: Dagster's ordinary path (exceptions propagate as they always did). Several:
    every slice is built and reported on its own (see the module docstring); the step fails at
    the end, with every failed slice and its reason, if any failed."""
    keys = [str(k) for k in context.partition_keys]
    if len(keys) == 1:
        yield from _one(context, keys[0], build)
    else:
        yield from _batched(context, keys, build)


def _one(context: dg.AssetExecutionContext, pk: str, build: SliceFn) -> Iterator[Any]:
    try:
        outcome = build(pk)
    except SliceFailed as exc:
        yield from exc.checks
        raise dg.Failure(description=exc.description, metadata=exc.metadata) from exc
    if isinstance(outcome, Built):
        yield dg.MaterializeResult(metadata=dict(outcome.metadata), data_version=dg.DataVersion(outcome.data_version),
                                   check_results=list(outcome.checks))
        return
    context.log.info(outcome.message)
    if outcome.observation is not None:
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=pk, metadata=dict(outcome.observation)))
    yield from outcome.checks


def _batched(context: dg.AssetExecutionContext, keys: list[str], build: SliceFn) -> Iterator[Any]:
    name = context.asset_key.to_user_string()
    upstream = _Upstream(context, keys)
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    built = 0
    for pk in keys:
        gate = upstream.gate(pk)
        if gate:
            skipped[pk] = gate
            context.log.warning(f"{name} {pk}: skipped: {gate}")
            continue
        try:
            outcome = build(pk)
        except SliceFailed as exc:
            _log_checks(context, pk, exc.checks)
            failed[pk] = exc.description
            context.log.error(f"{name} {pk}: failed: {exc.description}")
            continue
        except dg.Failure as exc:
            failed[pk] = exc.description or str(exc)
            context.log.error(f"{name} {pk}: failed: {failed[pk]}")
            continue
        except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen input fails its slice, not the others
            failed[pk] = f"{type(exc).__name__}: {exc}"
            context.log.error(f"{name} {pk}: failed: {failed[pk]}\n{traceback.format_exc()}")
            continue
        if isinstance(outcome, Built):
            built += 1
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=pk, metadata=dict(outcome.metadata),
                                          tags=upstream.tags(pk, outcome.data_version))
        else:
            context.log.info(outcome.message)
            if outcome.observation is not None:
                context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=pk,
                                                      metadata=dict(outcome.observation)))
        _log_checks(context, pk, outcome.checks)
    context.log.info(f"{name}: {built} of {len(keys)} slices built, {len(skipped)} skipped, {len(failed)} failed")
    if failed:
        listed = "; ".join(f"{pk}: {why}" for pk, why in list(failed.items())[:_DESCRIBED_FAILURES])
        more = f"; and {len(failed) - _DESCRIBED_FAILURES} more (metadata 'failed_slices')" if len(failed) > _DESCRIBED_FAILURES else ""
        raise dg.Failure(
            description=f"{len(failed)} of {len(keys)} slices of {name} failed ({built} built and recorded): {listed}{more}",
            metadata={"failed_slices": dg.MetadataValue.json(failed), "built": built, "skipped": dg.MetadataValue.json(skipped)},
            allow_retries=False,
        )
    # The step's outputs, so that downstream steps of this run execute; the metadata key stops
    # Dagster from adding a materialization (without metadata) for every partition of the range.
    suppress = {SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION: True}
    yield dg.MaterializeResult(metadata=suppress)
    selected = context.selected_asset_check_keys
    for output_name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=output_name, metadata=suppress)


def _log_checks(context: dg.AssetExecutionContext, pk: str, checks: Sequence[dg.AssetCheckResult]) -> None:
    """Record ``checks`` for partition ``pk``, aimed at its latest materialization (the one just
    recorded, or for a refused candidate the published one), as a one-slice run does. Logged,
    not yielded: a yielded failed blocking evaluation would fail the whole step at its end."""
    if not checks:
        return
    specs = {s.name: s for s in context.assets_def.check_specs}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[pk]), limit=1).records
    target = (AssetCheckEvaluationTargetMaterializationData(storage_id=records[0].storage_id, run_id=records[0].run_id,
                                                             timestamp=records[0].timestamp) if records else None)
    for c in checks:
        context.log_event(dg.AssetCheckEvaluation(
            asset_key=context.asset_key, check_name=c.check_name, passed=c.passed, metadata=c.metadata,
            target_materialization_data=target, severity=c.severity, description=c.description,
            blocking=specs[c.check_name].blocking, partition=pk,
        ))


class _Upstream:
    """What a batched step needs to know about its upstream assets, read once per step:
    provenance per slice (as ``_get_input_provenance_data`` in dagster/_core/execution/plan/
    execute_step.py computes it for a one-slice run) and the in-run gate."""

    def __init__(self, context: dg.AssetExecutionContext, keys: list[str]) -> None:
        instance = context.instance
        layer = context.job_def.asset_layer
        self._key = context.asset_key
        self._pdef = context.assets_def.partitions_def
        self._code_version = layer.get(self._key).code_version or context.run_id
        self._parents = sorted(layer.get(self._key).parent_keys, key=lambda k: k.to_user_string())
        storage = instance.event_log_storage
        records = {r.asset_entry.asset_key: r for r in instance.get_asset_records(self._parents)}
        #: dep -> (storage id, data version) of its latest materialization (or observation), if any
        self._latest: dict[dg.AssetKey, tuple[int, DataVersion | None] | None] = {}
        #: dep -> slice -> the dep's partitions the slice reads (partitioned deps only)
        self._dep_keys: dict[dg.AssetKey, dict[str, list[str]]] = {}
        self._dep_versions: dict[dg.AssetKey, Mapping[str, Mapping[str, str]]] = {}
        #: dep read through a window of months -> the partitions of it that slices of this step
        #: need (their own month, not an earlier one) and that were never materialised
        self._absent: dict[dg.AssetKey, set[str]] = {}
        #: index of the month in this asset's keys, if it is partitioned by month and more
        pdef = self._pdef
        months = ([i for i, d in enumerate(pdef.partitions_defs) if isinstance(d.partitions_def, dg.MonthlyPartitionsDefinition)]
                  if isinstance(pdef, dg.MultiPartitionsDefinition) else [])
        self._month_at = months[0] if len(months) == 1 else None
        self._same_pdef = {dep: layer.get(dep).partitions_def == pdef for dep in self._parents}
        for dep in self._parents:
            record = records.get(dep)
            event = record.asset_entry.last_materialization_record if record else None
            if event is None and record is not None and storage.asset_records_have_last_observation:
                event = record.asset_entry.last_observation_record
            if event is None and not storage.asset_records_have_last_observation:
                event = next(iter(instance.fetch_observations(dep, limit=1).records), None)
            self._latest[dep] = (event.storage_id, extract_data_version_from_entry(event.event_log_entry)) if event else None
            dep_pdef = layer.get(dep).partitions_def
            if dep_pdef is None or self._pdef is None:
                continue
            mapping = infer_partition_mapping(context.assets_def.get_partition_mapping_for_dep(dep), self._pdef, dep_pdef)
            with partition_loading_context(dynamic_partitions_store=instance):
                self._dep_keys[dep] = {
                    pk: [str(k) for k in mapping.get_upstream_mapped_partitions_result_for_partitions(
                        self._pdef.empty_subset().with_partition_keys([pk]), self._pdef, dep_pdef,
                    ).partitions_subset.get_partition_keys()]
                    for pk in keys
                }
            wanted = sorted({k for ks in self._dep_keys[dep].values() if len(ks) < SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD
                             for k in ks})
            versions: dict[str, Mapping[str, str]] = {}
            for chunk in _chunks(wanted):
                versions.update(storage.get_latest_tags_by_partition(
                    dep, DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=chunk))
            self._dep_versions[dep] = versions
            if not _reads_earlier_months(mapping):
                continue
            needed = sorted({k for pk in keys for k in self._dep_keys[dep][pk]
                             if len(self._dep_keys[dep][pk]) < SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD
                             and not self._earlier(dep, k, pk)})
            found: set[str] = set()
            for chunk in _chunks(needed):
                found |= set(storage.get_latest_storage_id_by_partition(
                    dep, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(chunk)))
            self._absent[dep] = set(needed) - found
        self._gate = self._read_run(context, keys)

    def tags(self, pk: str, data_version: str) -> dict[str, str]:
        """The tags of slice ``pk``'s materialization: what Dagster writes for a one-slice run
        whose output carries ``data_version`` (the asset's code version, each dependency's data
        version for this slice and a pointer to its latest event, the partition's dimensions)."""
        tags = {CODE_VERSION_TAG: self._code_version}
        for dep in self._parents:
            latest = self._latest[dep]
            if latest is None:  # never materialised nor observed
                version, pointer = DEFAULT_DATA_VERSION, None
            else:
                pointer = latest[0]
                ks = self._dep_keys.get(dep, {}).get(pk)
                if ks is not None and len(ks) < SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD:
                    # the versions of the partitions read, in partition-key order, hashed together
                    by_partition = self._dep_versions[dep]
                    joined = "".join(by_partition[k][DATA_VERSION_TAG] for k in sorted(ks) if k in by_partition)
                    version = DataVersion(hashlib.sha256(joined.encode()).hexdigest())
                else:
                    version = latest[1] or DEFAULT_DATA_VERSION
            tags[get_input_data_version_tag(dep)] = version.value
            tags[get_input_event_pointer_tag(dep)] = str(pointer) if pointer else NULL_EVENT_POINTER
        tags[DATA_VERSION_TAG] = data_version
        tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
        if isinstance(self._pdef, dg.MultiPartitionsDefinition):
            tags.update(get_tags_from_multi_partition_key(self._pdef.get_partition_key_from_str(pk)))
        return tags

    def gate(self, pk: str) -> str:
        """Why slice ``pk`` must not be built in this run ("" if it may): an upstream slice that
        this run was to build was not built (it failed, was not applicable, or was skipped) or
        failed a blocking check, or one it needs was never materialised. An *earlier* month of a
        window (``months_window``: the month before, read to warm up) is an optional input, as
        automation judges it: missing or not built in this run, the slice reads what exists of
        it (nothing: it starts cold); a failed blocking check still gates (the slice would warm
        on refused data).

        A slice whose own month of a window dependency was never materialised is skipped, not
        failed: Dagster's backfill targets, with the months it was asked for, their readers
        through the window (a backfill of ticks and backtests up to M also targets the backtests
        of M+1, which read M); where M+1 has no ticks its backtests cannot be built, and failing
        them would stop the run's downstream steps for every slice."""
        reasons = []
        for dep, (built, notes, blocked) in self._gate.items():
            for k in self._dep_keys[dep][pk]:
                if k not in self._run_keys:
                    continue  # not this run's to build: not gated, as in a one-slice run
                where = f"{dep.to_user_string()} {k}"
                if k not in built:
                    if not self._earlier(dep, k, pk):
                        reasons.append(f"{where} was not built in this run" + (f" ({notes[k]})" if k in notes else ""))
                elif blocked.get(k):
                    reasons.append(f"{where} failed its blocking check(s) {', '.join(sorted(blocked[k]))}")
        for dep, absent in self._absent.items():
            for k in self._dep_keys[dep].get(pk, ()):
                if k in absent and not (dep in self._gate and k in self._run_keys):  # (in-run ones: judged above)
                    reasons.append(f"{dep.to_user_string()} {k} does not exist (never materialised)")
        return "; ".join(reasons)

    def _earlier(self, dep: dg.AssetKey, dep_key: str, pk: str) -> bool:
        """Whether ``dep_key`` (a partition of ``dep``) is of an earlier month than slice ``pk``:
        both of this asset's month × symbol partitions (keys join the dimensions in name order,
        "2024-01|BTCUSDT")."""
        if self._month_at is None or not self._same_pdef[dep]:
            return False
        return dep_key.split("|")[self._month_at] < pk.split("|")[self._month_at]  # YYYY-MM sorts as time

    def _read_run(self, context: dg.AssetExecutionContext,
                  keys: list[str]) -> dict[dg.AssetKey, tuple[set[str], dict[str, str], dict[str, set[str]]]]:
        """For each upstream asset that this run also builds, over the same partitions: which of
        its slices of this run were materialised, why others were not (their observations), and
        which failed a blocking check in this run."""
        instance, run_id = context.instance, context.run_id
        self._run_keys = set(keys)
        # What this run executes (a re-execution from failure skips steps that succeeded before):
        # Dagster records a planned materialization per asset when it creates the run.
        planned = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
        in_run = {r.event_log_entry.dagster_event.asset_key for r in planned if r.event_log_entry.dagster_event}
        layer = context.job_def.asset_layer
        deps = [d for d in self._parents if d in in_run and d in self._dep_keys and layer.get(d).partitions_def == self._pdef]
        if not deps:
            return {}
        after = min(r.storage_id for r in planned) - 1
        evaluations = [e.dagster_event.event_specific_data
                       for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION) if e.dagster_event]
        out: dict[dg.AssetKey, tuple[set[str], dict[str, str], dict[str, set[str]]]] = {}
        for dep in deps:
            wanted = sorted({k for ks in self._dep_keys[dep].values() for k in ks if k in self._run_keys})
            built = {str(r.partition_key) for r in _records(instance.fetch_materializations, dep, wanted, after) if r.run_id == run_id}
            notes: dict[str, str] = {}
            for r in _records(instance.fetch_observations, dep, wanted, after):
                if r.run_id == run_id and r.asset_observation is not None:
                    text = r.asset_observation.metadata.get("not_applicable")
                    if text is not None:
                        notes[str(r.partition_key)] = f"not applicable: {text.value}"
            latest: dict[tuple[str, str], bool] = {}  # (partition, check) -> failed, the last evaluation in the run
            for ev in evaluations:
                if ev.asset_key == dep and ev.partition is not None and ev.blocking:
                    latest[(str(ev.partition), ev.check_name)] = not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
            blocked: dict[str, set[str]] = {}
            for (partition, check_name), bad in latest.items():
                if bad:
                    blocked.setdefault(partition, set()).add(check_name)
            out[dep] = (built, notes, blocked)
        return out


def _reads_earlier_months(mapping: dg.PartitionMapping) -> bool:
    """Whether ``mapping`` (of a month × symbol asset on another) is a window reaching months
    before the slice's own (``quant_assets.partitions.months_window`` with a negative start)."""
    if not isinstance(mapping, dg.MultiPartitionMapping):
        return False
    month = mapping.downstream_mappings_by_upstream_dimension.get("month")
    inner = month.partition_mapping if month is not None else None
    return isinstance(inner, dg.TimeWindowPartitionMapping) and inner.start_offset < 0


def _records(fetch: Callable[..., Any], key: dg.AssetKey, partitions: list[str], after: int | None) -> Iterator[Any]:
    """Every event record that ``fetch`` (``instance.fetch_materializations`` or
    ``fetch_observations``) finds for ``key``'s ``partitions`` after storage id ``after``."""
    for chunk in _chunks(partitions):
        cursor = None
        while True:
            result = fetch(dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk, after_storage_id=after),
                           limit=1000, cursor=cursor)
            yield from result.records
            if not result.has_more:
                break
            cursor = result.cursor


def _chunks(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """``keys`` in lists of at most ``size``: a query names them all (SQLite caps its parameters)."""
    for i in range(0, len(keys), size):
        yield keys[i:i + size]
