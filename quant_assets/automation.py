"""Named automation conditions: which slices Dagster rebuilds on its own, and when.

``rebuild_stale_slices`` (every month × symbol asset downstream of ``ticks``): request a slice
when an upstream slice has a new data version (or will be requested on the same tick) or when
the asset's code version changed, remembered until the slice is requested
(``since_last_handled``: a slice that fails is not retried on every tick); then only if it is
not in progress and every upstream slice it reads exists (or is being requested), is not in
progress, and passed its blocking checks. Unlike ``AutomationCondition.eager()`` this covers
every month, not only the latest time window: history matters for research (new data lands in
old months too).

``rebuild_rollups`` (per-symbol roll-ups over all months): the same triggers, but a roll-up
needs only some of its months (most months of 2020 have no data), so it waits for at least one
upstream month to exist and for none to be in progress.

``rebuild_ledger`` (``discoveries`` and ``critic_scorecard``, unpartitioned, over every
validation and hand-off slice): the same triggers, no readiness gate.

``ticks`` has none: the landing sensor requests it, as only it knows when files land.

Windows of months (:func:`quant_assets.partitions.months_window`: a backtest reads M−1's ticks
to warm up, a walk-forward fold the sweeps of the months before it): a new data version of any
month of the window requests the slice (ticks of M−1 request the backtests of M−1 and M); the
slice's own month is a required input, the earlier months optional ones (see
:class:`DepsReady`); a requested earlier month triggers it on the same tick
(:class:`WillBeRequested`).

Cost follows the work (issue 18): a tick must stay cheap at 400 symbols × 84 months, 33,600
slices per asset. Dagster's ``any_deps_match`` maps the whole candidate subset up through each
partition mapping, key by key for the month+1 and multi-to-single-dimension mappings, on every
tick; ``all_deps_blocking_checks_passed`` judges a check by its latest evaluation over all
partitions and stores whole partition sets in the cursor. The three conditions below replace
them: triggers are found from the changed upstream partitions down (few), and readiness is
judged once per dependency for the few slices about to be requested. Identity, constant month
shifts and month windows are mapped as key strings (a window of w months maps a key to w keys,
up or down), so a window costs w times the keys of an identity, never the size of the lake. A slice that merely
*became* missing (a wiped partition) is not a trigger: it would keep every never-built slice
(n/a ones, those whose upstream never landed) in the cursor; ``quant-assets sync`` and the
nightly schedule build missing slices.
"""

from __future__ import annotations

import weakref

import dagster as dg

AC = dg.AutomationCondition

#: The Dagster concurrency pool of the steps that run an engine (backtests, out-of-sample
#: re-tests): a month of 10M ticks peaks near 1 GB in NautilusTrader and 2.5-3 GB in
#: hftbacktest, so the limit (``concurrency.pools.default_limit`` in dagster.yaml, 2 as written
#: by quant-assets) keeps a backfill of hundreds of slices inside a 16 GB workstation.
ENGINE_POOL = "engines"


class _Custom(dg.AutomationCondition):
    """A condition of this module: Dagster's documented extension point (an ``evaluate`` of our
    own), evaluated on the code server (the daemon cannot load user classes)."""

    def __init__(self, label: str | None = None) -> None:
        self.label = label

    @property
    def requires_cursor(self) -> bool:
        return False

    def get_label(self) -> str | None:
        return self.label


def _requested_in_same_run(context, parent: dg.AssetKey):  # noqa: ANN001
    """The partitions of ``parent`` requested on this tick that will run in the same run as
    this asset's (same partitions, identity mapping): only those count as present. A parent
    requested in another run (month+1 of an out-of-sample test) has not run yet."""
    from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run

    requested = context.request_subsets_by_key.get(parent)
    if requested is None or not executable_in_same_run(context.asset_graph, context.key, parent):
        return context.asset_graph_view.get_empty_subset(key=parent)
    return requested


def _month_window(mapping: dg.PartitionMapping, pdef) -> tuple[int, int, int] | None:  # noqa: ANN001
    """(first month offset, last month offset, index of the month in a key) when ``mapping``
    between two month × symbol assets is the identity (0, 0), a constant month shift (the
    out-of-sample tests' month+1: 1, 1) or a window of months of the same symbol
    (:func:`quant_assets.partitions.months_window`: -1, 0 reads M−1 and M), else None. Such
    mappings are then applied to keys as strings: Dagster maps a multi-partition subset key by
    key through per-key objects, ~0.1 ms a key, 2.5 s a tick at 400 symbols."""
    if not isinstance(pdef, dg.MultiPartitionsDefinition):
        return None
    names = [d.name for d in pdef.partitions_defs]
    times = [d.name for d in pdef.partitions_defs if isinstance(d.partitions_def, dg.MonthlyPartitionsDefinition)]
    if len(times) != 1:
        return None
    if isinstance(mapping, dg.IdentityPartitionMapping):
        return 0, 0, names.index(times[0])
    if not isinstance(mapping, dg.MultiPartitionMapping):
        return None
    first = last = 0
    for upstream_dim, dm in mapping.downstream_mappings_by_upstream_dimension.items():
        inner = dm.partition_mapping
        if dm.dimension_name != upstream_dim:
            return None
        if isinstance(inner, dg.IdentityPartitionMapping):
            continue
        if (upstream_dim == times[0] and type(inner) is dg.TimeWindowPartitionMapping
                and inner.start_offset <= inner.end_offset):
            first, last = inner.start_offset, inner.end_offset
            continue
        return None
    return first, last, names.index(times[0])


def _window(context, child: dg.AssetKey, parent: dg.AssetKey) -> tuple[int, int, int] | None:  # noqa: ANN001
    """:func:`_month_window` of the dependency of ``child`` on ``parent`` (same partitions only)."""
    graph = context.asset_graph
    pdef = graph.get(parent).partitions_def
    if graph.get(child).partitions_def != pdef:
        return None
    return _month_window(graph.get_partition_mapping(child, parent), pdef)


def _window_keys(keys, offsets, at: int, valid_months: set[str]) -> set[str]:  # noqa: ANN001
    """``keys`` ("YYYY-MM|SYMBOL") with their month moved by each of ``offsets`` months; months
    outside the partitions (``valid_months``) are dropped, as Dagster drops nonexistent upstream
    partitions (``allow_nonexistent_upstream_partitions``)."""
    out = set()
    for key in keys:
        parts = str(key).split("|")
        base = int(parts[at][:4]) * 12 + int(parts[at][5:7]) - 1
        for offset in offsets:
            y, m = divmod(base + offset, 12)
            parts[at] = f"{y:04d}-{m + 1:02d}"
            if parts[at] in valid_months:
                out.add("|".join(parts))
    return out


def _map(context, subset, to_key: dg.AssetKey, direction: str, offsets=None):  # noqa: ANN001
    """``subset`` of one asset mapped to ``to_key`` (``up``: to a parent, ``down``: to a child),
    with the string fast path of :func:`_month_window` where it applies, else Dagster's.
    ``offsets``: only these month offsets of the window (child month + offset = parent month),
    for a dependency the fast path applies to; default the whole window."""
    view = context.asset_graph_view
    child, parent = (subset.key, to_key) if direction == "up" else (to_key, subset.key)
    window = _window(context, child, parent)
    if window is None:
        assert offsets is None, (child, parent)
        return subset.compute_mapped_subset(to_key, direction=direction)
    first, last, at = window
    offsets = range(first, last + 1) if offsets is None else offsets
    if subset.is_empty or not offsets:
        return view.get_empty_subset(key=to_key)
    pdef = context.asset_graph.get(to_key).partitions_def
    if list(offsets) == [0]:
        keys = {str(k) for k in subset.expensively_compute_partition_keys()}
    else:
        # the months that exist, computed once per tick (Dagster builds each key from a schedule)
        known = _MONTHS.setdefault(view, {})
        dim = pdef.partitions_defs[at].name
        if (id(pdef), dim) not in known:
            known[(id(pdef), dim)] = set(pdef.get_partitions_def_for_dimension(dim).get_partition_keys())
        months = known[(id(pdef), dim)]
        keys = _window_keys(subset.expensively_compute_partition_keys(),
                            offsets if direction == "up" else [-o for o in offsets], at, months)
    return view.get_subset_from_partition_keys(key=to_key, partitions_def=pdef, partition_keys=keys)


def _parents(context) -> list[dg.AssetKey]:  # noqa: ANN001 - dagster's AutomationContext (internal type)
    return sorted(k for k in context.asset_graph.get(context.key).parent_entity_keys if isinstance(k, dg.AssetKey))


class AnyDepMatchesDownward(_Custom):
    """True for the partitions with a dependency partition matching ``operand``, found from the
    parents down rather than from the candidates up.

    ``AutomationCondition.any_deps_match`` maps the whole candidate subset (every slice of the
    asset, 33,600 at 400 symbols × 84 months) up through each partition mapping, key by key for
    the month+1 and multi-to-single-dimension mappings, evaluates the operand there and maps the
    result back, on every tick. The operand used here (a new data version, or requested on this
    tick) is a property of each parent partition alone, so evaluating it on the parent's full
    subset gives the same partitions, and it is cheap there: Dagster computes it from the events
    since the previous tick. Only those few partitions are then mapped down. A tick's cost thus
    follows the number of changed upstream slices, not the size of the lake.
    """

    def __init__(self, operand: dg.AutomationCondition, label: str | None = None) -> None:
        self.operand = operand
        self.label = label

    @property
    def name(self) -> str:
        return "any_dep_matches_downward"

    @property
    def description(self) -> str:
        return "Any dependency partition matches (evaluated on the dependencies, mapped down)"

    @property
    def children(self) -> list[dg.AutomationCondition]:
        return [self.operand]

    async def evaluate(self, context):  # noqa: ANN001 - dagster's AutomationContext (internal type)
        view = context.asset_graph_view
        true_subset = context.get_empty_subset()
        results = []
        for i, parent in enumerate(_parents(context)):
            result = await context.for_child_condition(
                child_condition=self.operand, child_indices=[i], candidate_subset=view.get_full_subset(key=parent),
            ).evaluate_async()
            results.append(result)
            if not result.true_subset.is_empty:
                true_subset = true_subset.compute_union(_map(context, result.true_subset, context.key, "down"))
        return dg.AutomationResult(context, true_subset=context.candidate_subset.compute_intersection(true_subset),
                                   child_results=results)


#: Dependencies a slice reads where they exist and does without otherwise: the order book (an
#: L1-only month has none; a lake built before the book existed has no partition at all until
#: ``sync`` or the landing sensor builds it). Missing is fine; in progress or failing a
#: blocking check holds the slice back, as for the earlier months of a window.
OPTIONAL_INPUTS = frozenset({dg.AssetKey("book")})


class DepsReady(_Custom):
    """True for the slices whose every dependency partition exists (or will be requested on
    this tick), is not in progress, and passed its blocking checks: each check's latest
    evaluation *for that partition* succeeded on its latest materialization (or the partition
    will be requested: its checks then run in the same run, where a failure stops this step).

    A window of months (:func:`quant_assets.partitions.months_window`) splits in parts: the
    slice's own month and any later one (an out-of-sample test's month+1) are required, as
    above; the *earlier* months are optional inputs (history that warms indicators, a
    walk-forward's in-sample months): a symbol's first month has none, so missing is fine, but
    an earlier month in progress (a run or a backfill) holds the slice back (it would read a
    half-written month, and be stale as soon as that run ends), and so does one whose blocking
    checks failed (the slice would warm on data its checks refused; it waits until the month is
    fixed, as a slice of that month does).

    A dependency partition of *another* month requested on this tick (earlier or later) counts
    as requested-and-present only where the tick's requests order it before this slice: Dagster
    puts an asset requested for several partitions, with the requested assets connected to it,
    in one backfill, whose daemon runs a slice only after the parent partitions it reads; so
    when the parent is requested for several partitions, or this asset is about to be.
    Otherwise they would be two single-partition runs, free to run in either order, and the
    slice could be built on the old month and never again: it waits a tick (the month's new
    data version then requests it). The slice's own month is the same partition key, so the
    same run (or, in a backfill, an ordered one).

    A dependency slice that is due on this tick but held back (its own trigger fired and this
    condition said no) counts as in progress: a slice that also reads what changed directly
    (metrics read the backtest *and* ticks) would otherwise run now on the dependency about to
    be rebuilt, and again once it is.

    One mapping up per dependency (and part of a window) for the candidates not yet blocked by
    another (the few slices about to be requested), instead of one per condition; the
    dependency partitions that are not ready (fewer still) are mapped back down.
    """

    @property
    def name(self) -> str:
        return "deps_ready"

    @property
    def description(self) -> str:
        return ("Every dependency partition exists or will be requested, is not in progress and passed its blocking "
                "checks (earlier months of a window may be missing)")

    @staticmethod
    def _parts(context, parent: dg.AssetKey) -> list[tuple[object, bool, bool]]:  # noqa: ANN001
        """(month offsets, or None for Dagster's whole mapping; optional?; in the same run when
        requested on this tick?) for each part of the dependency on ``parent``."""
        from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run

        window = _window(context, context.key, parent)
        if window is None:
            return [(None, parent in OPTIONAL_INPUTS, executable_in_same_run(context.asset_graph, context.key, parent))]
        first, last, _ = window
        parts: list[tuple[object, bool, bool]] = []
        if first <= 0 <= last:
            parts.append(([0], parent in OPTIONAL_INPUTS, True))
        if last > 0:
            parts.append((range(max(first, 1), last + 1), parent in OPTIONAL_INPUTS, False))
        if first < 0:
            parts.append((range(first, min(last, -1) + 1), True, False))
        return parts

    async def evaluate(self, context):  # noqa: ANN001 - dagster's AutomationContext (internal type)
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context, true_subset=candidates)
        graph, view = context.asset_graph, context.asset_graph_view
        pending = _PENDING.setdefault(view, {})
        blocked = held = context.get_empty_subset()
        for parent in _parents(context):
            requested = context.request_subsets_by_key.get(parent) or view.get_empty_subset(key=parent)
            checks = sorted(ck.name for ck in graph.get(parent).check_keys if graph.get(ck).blocking)
            for offsets, optional, same_run in self._parts(context, parent):
                # only the candidates not yet blocked: after a code change every partition of the
                # asset is a candidate, most blocked by their own month's missing input already
                live = candidates.compute_difference(blocked)
                if live.is_empty:
                    break
                upstream = _map(context, live, parent, "up", offsets)
                if upstream.is_empty:
                    continue
                # requested partitions that will have run before this slice does
                present = requested if same_run or requested.size > 1 else view.get_empty_subset(key=parent)
                missing = await view.compute_missing_subset(key=parent, from_subset=upstream)
                busy = upstream.compute_intersection(
                    (await view.compute_run_in_progress_subset(key=parent, from_subset=upstream)).compute_union(
                        await view.compute_backfill_in_progress_subset(key=parent, from_subset=upstream)))
                if parent in pending:
                    busy = busy.compute_union(upstream.compute_intersection(pending[parent]))
                waits = upstream.compute_intersection(requested).compute_difference(present)
                if not waits.is_empty:  # requested for another run: ordered only if this asset's request is a backfill
                    held = held.compute_union(_map(context, waits, context.key, "down", offsets))
                bad = busy if optional else missing.compute_difference(requested).compute_union(busy)
                to_check = upstream.compute_difference(requested).compute_difference(missing).compute_difference(bad)
                if checks and not to_check.is_empty:
                    keys = {str(pk) for pk in to_check.expensively_compute_partition_keys()}
                    verdicts = _check_verdicts(view, parent, checks, keys)
                    failing = {pk for pk in keys if not verdicts[pk]}
                    if failing:
                        bad = bad.compute_union(view.get_subset_from_partition_keys(
                            key=parent, partitions_def=graph.get(parent).partitions_def, partition_keys=failing))
                if not bad.is_empty:
                    blocked = blocked.compute_union(_map(context, bad, context.key, "down", offsets))
        ready = candidates.compute_difference(blocked)
        if ready.size <= 1:  # a single-partition run: nothing orders it after the other months requested beside it
            ready = ready.compute_difference(held)
        if ready.size != candidates.size:
            pending[context.key] = candidates.compute_difference(ready)
        return dg.AutomationResult(context, true_subset=ready)


class RollupDepsReady(_Custom):
    """True for the roll-up partitions (one per symbol) with at least one materialised (or
    requested in the same run) upstream month and no upstream month in progress or requested
    on this tick in another run.

    A per-symbol roll-up reads every month of its symbol (``MultiToSingleDimensionPartitionMapping``);
    Dagster maps each candidate symbol up to its 84 months key by key, twice per dependency.
    Here each dependency's materialised and in-progress slices are read once and grouped by
    symbol (string work on the keys, no per-key objects). Other mappings fall back to Dagster's.
    """

    @property
    def name(self) -> str:
        return "rollup_deps_ready"

    @property
    def description(self) -> str:
        return "Some dependency month exists (or will be requested) and none is in progress"

    async def evaluate(self, context):  # noqa: ANN001 - dagster's AutomationContext (internal type)
        from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run

        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context, true_subset=candidates)
        graph, view = context.asset_graph, context.asset_graph_view
        wanted = {str(pk) for pk in candidates.expensively_compute_partition_keys()}
        present: set[str] = set()
        busy: set[str] = set()
        for parent in _parents(context):
            mapping = graph.get_partition_mapping(context.key, parent)
            pdef = graph.get(parent).partitions_def
            if not (isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and isinstance(pdef, dg.MultiPartitionsDefinition)):
                upstream = candidates.compute_mapped_subset(parent, direction="up")
                have = upstream.compute_difference(await view.compute_missing_subset(key=parent, from_subset=upstream))
                present |= {str(pk) for pk in have.compute_mapped_subset(context.key, direction="down").expensively_compute_partition_keys()}
                running = upstream.compute_intersection(await view.compute_run_in_progress_subset(key=parent, from_subset=upstream))
                busy |= {str(pk) for pk in running.compute_mapped_subset(context.key, direction="down").expensively_compute_partition_keys()}
                continue
            # Multi-partition keys join the dimensions in the definition's order ("2024-01|BTCUSDT").
            dim = [d.name for d in pdef.partitions_defs].index(mapping.partition_dimension_name)

            def symbols(subset) -> set[str]:  # noqa: ANN001
                return {str(pk).split("|")[dim] for pk in subset.expensively_compute_partition_keys()}

            present |= symbols(await view.compute_materialized_asset_subset(key=parent)) & wanted
            present |= symbols(_requested_in_same_run(context, parent)) & wanted
            # Requested on this tick in another run (a month × symbol run, this a per-symbol one):
            # not started yet, so not "in progress", but the roll-up would race it (it read a
            # backtest before its metrics existed). It waits for that run to end.
            requested = context.request_subsets_by_key.get(parent)
            if requested is not None and not executable_in_same_run(graph, context.key, parent):
                busy |= symbols(requested) & wanted
            full = view.get_full_subset(key=parent)
            running = (await view.compute_run_in_progress_subset(key=parent, from_subset=full)).compute_union(
                await view.compute_backfill_in_progress_subset(key=parent, from_subset=full))
            busy |= symbols(running) & wanted
        ready = (present - busy) & wanted
        return dg.AutomationResult(context, true_subset=candidates.compute_intersection_with_partition_keys(ready)
                                   if ready else context.get_empty_subset())


#: Per automation tick (one AssetGraphView each): the month keys of each month dimension.
_MONTHS: "weakref.WeakKeyDictionary[object, dict[tuple[int, str], set[str]]]" = weakref.WeakKeyDictionary()

#: Per automation tick (one AssetGraphView each), per asset: the slices :class:`DepsReady` held
#: back although their trigger fired (assets are evaluated in dependency order, so a child sees
#: its parents' entries).
_PENDING: "weakref.WeakKeyDictionary[object, dict[dg.AssetKey, object]]" = weakref.WeakKeyDictionary()

#: Per automation tick (one AssetGraphView each), per asset: partition -> its blocking checks
#: all passed on its latest materialization. Every asset of a new slice asks about the same
#: upstream partitions; one query serves them all.
_VERDICTS: "weakref.WeakKeyDictionary[object, dict[dg.AssetKey, dict[str, bool]]]" = weakref.WeakKeyDictionary()


def _check_verdicts(view, asset: dg.AssetKey, checks: list[str], partitions: set[str]) -> dict[str, bool]:  # noqa: ANN001
    """partition -> whether every blocking check in ``checks`` of ``asset`` passed on the
    partition's latest materialization: its latest evaluation targeting that materialization
    succeeded (a run's evaluations name the materialization they checked: Dagster stores the
    checks of a partitioned asset unpartitioned, so the target is what ties an evaluation to a
    partition); an evaluation recorded for the partition without a target (a runless report)
    counts where no targeted one exists. Two indexed queries for the partitions not yet known
    this tick, on Dagster's check-executions table (``idx_asset_check_executions``: asset, check,
    materialization id, partition); Dagster's ``get_asset_check_partition_info`` judges by the
    ``partition`` column alone and joins every materialization of the asset (0.2 s a call at 200
    symbols × 84 months, whatever the number of partitions asked).

    A failed evaluation of severity WARN counts as passed here, as it does when Dagster runs the
    check (``execute_step`` stops downstream steps only for a blocking check failed with severity
    ERROR; the ``blocking`` argument's doc says the same), and as the in-run gate of
    :mod:`quant_assets.batching` does: a check that is blocking only when its setting says so
    (``calendar_complete``, ``QUANT_GAPS``) warns without holding the slices back. (Dagster's own
    ``all_deps_blocking_checks_passed`` reads the execution status alone, so it would hold back on
    a WARN.) The evaluation event is read, for its severity, only for the failed rows."""
    import sqlalchemy as sa
    from dagster._core.events import DagsterEventType
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as T

    known = _VERDICTS.setdefault(view, {}).setdefault(asset, {})
    todo = sorted(partitions - known.keys())
    if todo:
        storage = view.instance.event_log_storage
        materialized = storage.get_latest_storage_id_by_partition(
            asset, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(todo))
        partition_of = {sid: pk for pk, sid in materialized.items()}
        targeted: dict[tuple[str, str], tuple[int, str]] = {}
        untargeted: dict[tuple[str, str], tuple[int, str]] = {}
        base = [T.c.asset_key == asset.to_string(), T.c.check_name.in_(checks), T.c.evaluation_event_storage_id.isnot(None)]
        ids = sorted(partition_of)
        for i in range(0, max(len(ids), len(todo)), 400):  # SQLite caps the number of bound parameters
            queries = []
            if ids[i:i + 400]:
                queries.append((targeted, sa.and_(*base, T.c.materialization_event_storage_id.in_(ids[i:i + 400]))))
            if todo[i:i + 400]:
                queries.append((untargeted, sa.and_(*base, T.c.materialization_event_storage_id.is_(None),
                                                    T.c.partition.in_(todo[i:i + 400]))))
            for into, where in queries:
                failed_event = sa.case((T.c.execution_status == "FAILED", T.c.evaluation_event), else_=None)
                query = sa.select(T.c.id, T.c.check_name, T.c.partition, T.c.execution_status,
                                  T.c.materialization_event_storage_id, failed_event.label("failed_event")).where(where)
                with storage.index_connection() as conn:
                    for row in conn.execute(query):
                        pk = partition_of.get(row.materialization_event_storage_id) if into is targeted else row.partition
                        k = (pk, row.check_name)
                        if pk is not None and (k not in into or row.id > into[k][0]):
                            status = "SUCCEEDED" if _warned(row.failed_event) else row.execution_status
                            into[k] = (row.id, status)
        for pk in todo:
            rows = [targeted.get((pk, name)) or untargeted.get((pk, name)) for name in checks]
            known[pk] = pk in materialized and all(r is not None and r[1] == "SUCCEEDED" for r in rows)
    return {pk: known[pk] for pk in partitions}


def _warned(event: str | None) -> bool:
    """Whether a stored check evaluation event (serialized ``EventLogEntry``) failed with severity
    WARN only (see :func:`_check_verdicts`); False for None or an event that cannot be read."""
    if not event:
        return False
    from dagster._serdes import deserialize_value

    try:
        evaluation = deserialize_value(event, dg.EventLogEntry).dagster_event.event_specific_data
    except Exception:  # noqa: BLE001 - an unreadable event is judged by its status (FAILED)
        return False
    return getattr(evaluation, "severity", None) == dg.AssetCheckSeverity.WARN


class WillBeRequested(_Custom):
    """``AutomationCondition.will_be_requested()`` as the operand of :class:`AnyDepMatchesDownward`
    (evaluated on a parent for the child that reads it): the parent partitions requested on this
    tick. Dagster's counts them only where parent and child can share a run (identity or a time
    window of one partition), so a month window would see them only on the next tick, as a new
    data version: a month's sweep a tick after its bars, in another run. Here a window without
    later months counts too; :class:`DepsReady` then decides whether the child may be requested
    on this tick (its own month: the same run; an earlier month: only where a backfill orders
    them)."""

    @property
    def name(self) -> str:
        return "will_be_requested"

    @property
    def description(self) -> str:
        return "Will be requested this tick (and is read in the same run, or through a window of earlier months)"

    async def evaluate(self, context):  # noqa: ANN001 - dagster's AutomationContext (internal type)
        from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run

        requested = context.request_subsets_by_key.get(context.key)
        root, graph = context.root_context.key, context.asset_graph
        counts = requested is not None and graph.get(context.key).is_materializable and (
            executable_in_same_run(graph, root, context.key)
            or ((w := _window(context, root, context.key)) is not None and w[1] <= 0))
        return dg.AutomationResult(context, true_subset=context.candidate_subset.compute_intersection(requested)
                                   if counts else context.get_empty_subset())


def any_dep_new_data_version() -> dg.AutomationCondition:
    """An upstream partition has a new *data version* since the last tick (not merely a new
    materialization: a nightly re-run or a re-ingest that reproduces the same bytes triggers
    nothing downstream), or will be requested on this tick. Updates made by a run that also
    materialised this asset are ignored, as in ``any_deps_updated``."""
    return AnyDepMatchesDownward(
        (AC.data_version_changed() & ~AC.executed_with_root_target()).with_label("new_data_version_without_root")
        | WillBeRequested(),
        label="any_dep_new_data_version",
    )


def _previous_month_key(key: str, at: int) -> str:
    from quant_assets.engines.warmup import previous_month

    parts = key.split("|")
    parts[at] = previous_month(parts[at])
    return "|".join(parts)


class PreviousValidationSettled(_Custom):
    """For a critique of month M: true unless the out-of-sample validation of M−1's critique (of
    the same symbol and strategy) is about to run or running. The critique reads what became of
    earlier suggestions (:mod:`quant_assets.critique.memory`), and M−1's validation learns it from
    M's metrics, which the critique also waits for: both are due on the same tick, in two runs,
    and the critique should go second. Held back while that validation is in progress, or will
    run: M−1's critique exists and its validation is missing without having failed, or M's
    metrics are requested on this tick (the validation can only follow them). A validation that
    failed, or M−1 without a critique, holds nothing. (A validation that is merely stale, after M
    was rebuilt, is not waited for: the critique then remembers the previous result.)

    Evaluated last in the critique's condition, on the few slices about to be requested: key
    strings shifted one month, three subsets of two assets."""

    def __init__(self, strategy: str, label: str | None = None) -> None:
        super().__init__(label)
        self.strategy = strategy

    @property
    def name(self) -> str:
        return "previous_validation_settled"

    @property
    def description(self) -> str:
        return "The validation of the previous month's critique is neither running nor about to run"

    async def evaluate(self, context):  # noqa: ANN001 - dagster's AutomationContext (internal type)
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context, true_subset=candidates)
        view, graph = context.asset_graph_view, context.asset_graph
        oos, critique = dg.AssetKey(f"oos_validation_{self.strategy}"), context.key
        metrics = dg.AssetKey(f"metrics_{self.strategy}")
        if not (graph.has(oos) and graph.has(metrics)):
            return dg.AutomationResult(context, true_subset=candidates)
        pdef = graph.get(critique).partitions_def
        at = [d.name for d in pdef.partitions_defs].index("month")
        keys = {str(pk) for pk in candidates.expensively_compute_partition_keys()}
        prev_of = {k: _previous_month_key(k, at) for k in keys}
        known = set(pdef.get_partitions_def_for_dimension("month").get_partition_keys())
        prev_keys = {p for p in prev_of.values() if p.split("|")[at] in known}
        if not prev_keys:
            return dg.AutomationResult(context, true_subset=candidates)

        def subset(key: dg.AssetKey, pks: set[str]):  # noqa: ANN202
            return view.get_subset_from_partition_keys(key=key, partitions_def=pdef, partition_keys=pks)

        def pks(sub) -> set[str]:  # noqa: ANN001
            return {str(pk) for pk in sub.expensively_compute_partition_keys()}

        prev_oos = subset(oos, prev_keys)
        busy = pks((await view.compute_run_in_progress_subset(key=oos, from_subset=prev_oos)).compute_union(
            await view.compute_backfill_in_progress_subset(key=oos, from_subset=prev_oos)))
        criticised = prev_keys - pks(await view.compute_missing_subset(key=critique, from_subset=subset(critique, prev_keys)))
        if criticised:
            prev = subset(oos, criticised)
            missing = pks(await view.compute_missing_subset(key=oos, from_subset=prev))
            failed = pks(await view.compute_execution_failed_subset(key=oos, from_subset=prev))
            busy |= missing - failed
            requested = context.request_subsets_by_key.get(metrics)
            if requested is not None:
                busy |= {prev_of[k] for k in pks(requested) & keys} & criticised
        ready = {k for k in keys if prev_of[k] not in busy}
        return dg.AutomationResult(context, true_subset=candidates.compute_intersection_with_partition_keys(ready)
                                   if ready else context.get_empty_subset())


def rebuild_critiques(strategy: str) -> dg.AutomationCondition:
    """:func:`rebuild_stale_slices`, and the previous month's validation first
    (:class:`PreviousValidationSettled`)."""
    return (_triggers() & ~AC.in_progress() & DepsReady(label="deps_ready")
            & PreviousValidationSettled(strategy, label="previous_validation_settled")).with_label("rebuild_stale_slices")


def _triggers() -> dg.AutomationCondition:
    return (any_dep_new_data_version() | AC.code_version_changed()).since_last_handled()


def rebuild_stale_slices() -> dg.AutomationCondition:
    return (_triggers() & ~AC.in_progress() & DepsReady(label="deps_ready")).with_label("rebuild_stale_slices")


def rebuild_rollups() -> dg.AutomationCondition:
    return (_triggers() & ~AC.in_progress() & RollupDepsReady(label="rollup_deps_ready")).with_label("rebuild_rollups")


def rebuild_ledger() -> dg.AutomationCondition:
    """An unpartitioned ledger over every slice of its dependencies (``discoveries``: the
    false-discovery control over every tested change; ``critic_scorecard``: each critic against
    the null critic): rebuilt when a dependency partition has a new data version or its code
    version changed, unless it is in progress. No readiness gate: it reads what is published
    (most validation slices wait for their next month for ever, so "every dependency exists"
    would never hold), and the next new data version runs it again. Its run reads only the
    slices that changed."""
    return (_triggers() & ~AC.in_progress()).with_label("rebuild_ledger")


def rebuild_venue_profiles() -> dg.AutomationCondition:
    """A symbol's venue settings (``venue_profile``, one partition per symbol, no dependencies):
    built when its symbol appears (the partition becomes missing) and recomputed for every symbol
    when the settings' code version changes (an edit of venues.toml or instruments.toml). Each
    recomputation is cheap and, where that symbol's settings did not move, keeps its data version,
    so nothing downstream of it is requested."""
    return ((AC.missing().newly_true() | AC.code_version_changed()).since_last_handled()
            & ~AC.in_progress()).with_label("rebuild_venue_profiles")
