"""Headless orchestration: what ``quant-assets sync`` and ``status`` do, on the real Dagster instance.

``plan`` decides, for every asset in the definitions and every known month × symbol slice,
whether it must run: it is *missing* (never materialised), *stale* (Dagster's own staleness:
its code version or an upstream data version changed) or its *sources changed* (for assets
fed from outside Dagster, e.g. ``ticks`` from landing files, a fingerprint of those sources
differs from the one recorded at the last materialisation). It reads the instance in bulk, a
few queries per asset whatever the number of slices, and reproduces Dagster's staleness rules
in memory (:mod:`quant_assets.staleness`), so it stays in seconds at 400 symbols × 84 months.
``sync`` then runs each slice in process, recorded in the instance like any run launched from
the UI.

Two kinds of assets: *slice* assets partitioned month × symbol (``ticks``, backtests, metrics)
and *roll-ups* partitioned by symbol alone (reports over all months). A roll-up's state is
per symbol (``month`` is :data:`ALL_MONTHS`); it runs after its symbol's slices, and again
whenever one of them ran.
"""

import gc
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import dagster as dg
from quant_assets.definitions import ASSETS, defs
from quant_assets.book.build import NO_SOURCES as NO_BOOK_SOURCES
from quant_assets.engines.warmup import previous_month
from quant_assets.critique.budget import waiting_for_budget
from quant_assets.book.build import expected_fingerprints as expected_book_fingerprints
from quant_assets.funding.build import NO_SOURCES as NO_FUNDING_SOURCES
from quant_assets.funding.build import expected_fingerprints as expected_funding_fingerprints
from quant_assets.ingest.build import expected_fingerprints
from quant_assets.ingest.landing import survey, table_of
from quant_assets.lake.manifest import FileRecord, read_manifest
from quant_assets.lake.store import Lake
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets.partitions import month_partitions, month_symbol_partitions, partition_key, symbol_partitions
from quant_assets.settings import critic_budget_usd

#: The ``month`` of a roll-up's state: it covers every month of its symbol.
ALL_MONTHS = "all"

#: Assets fed from outside Dagster: a function giving, from one survey of a symbol's landing
#: folder (the records of ``survey(lake, symbol, table=None)``), the fingerprint of the current
#: sources of each month, compared with the ``source_fingerprint`` metadata; and the fingerprint
#: of a month the result does not name.
EXTERNAL_SOURCES: dict[dg.AssetKey, tuple[Callable[[Lake, str, list[FileRecord]], dict[str, str]], str | None]] = {
    dg.AssetKey("ticks"): (expected_fingerprints, None),
    dg.AssetKey("funding"): (expected_funding_fingerprints, NO_FUNDING_SOURCES),
    dg.AssetKey("book"): (expected_book_fingerprints, NO_BOOK_SOURCES),
}


def _waits(lake: Lake, key: dg.AssetKey, symbol: str, month: str,
           budget_waits: Collection[tuple[str, str, str]] = frozenset()) -> bool:
    """An out-of-sample test of ``month`` (a critique's or a sweep's) waits until month+1 has its
    metric set; a walk-forward fold of ``month`` until a month before it has sweep returns, and
    a symbol's walk-forward report until it has a fold; a critique in ``budget_waits`` (it
    waited for the critic's day budget today, :func:`quant_assets.critique.budget.waiting_for_budget`)
    until the next UTC day."""
    from quant_assets.critique.oos import next_month_ready

    name = key.path[-1]
    if name.startswith("critique_"):
        return (name.removeprefix("critique_"), symbol, month) in budget_waits
    if name.startswith("wf_fold_") and month != ALL_MONTHS:
        from quant_assets.research.walkforward import WalkForwardSettings, in_sample_months

        return not in_sample_months(lake, name.removeprefix("wf_fold_"), symbol, month, WalkForwardSettings.from_env())
    if name.startswith("walkforward_") and month == ALL_MONTHS:
        from quant_assets.research.walkforward import fold_months

        return not fold_months(lake, name.removeprefix("walkforward_"), symbol)  # no fold yet to stitch
    prefix = next((p for p in ("oos_validation_", "sweep_oos_") if name.startswith(p)), None)
    if prefix is None or month == ALL_MONTHS:
        return False
    return not next_month_ready(lake, name.removeprefix(prefix), symbol, month)


#: The ``month`` :func:`run_slices` yields for the run of per-symbol inputs (venue settings),
#: with a count of symbols as its ``symbol``.
INPUTS = "inputs"

#: The ``month`` (and ``symbol``) :func:`run_slices` yields for the run of the unpartitioned
#: ledgers over the whole lake (``discoveries``: the false-discovery control over every test;
#: ``critic_scorecard``: each critic against the null critic).
LEDGER = "ledger"

#: States that need no run: done, waiting for the next month, or not applicable to the data.
SETTLED = ("materialized", "waiting", "n/a")

#: Passes :func:`run_slices` makes after the first, each over what the runs before it made
#: stale or runnable: slices run in month order, so a month's change reaches the later months
#: that read it (a window, e.g. a backtest warming up on M−1) in the next pass, and the
#: validations of the month before them (which read month+1) in the one after. A pass runs only
#: if the one before ran something; an asset that still needs a run after this many is left to
#: the next sync (``status`` shows it).
MAX_REPLANS = 4


@dataclass(frozen=True, slots=True)  # slots: a plan at 400 x 84 holds 600k of them
class SliceState:
    asset: dg.AssetKey
    month: str  # YYYY-MM, or ALL_MONTHS for a roll-up
    symbol: str
    state: str  # materialized | missing | stale | sources changed | waiting | n/a
    rows: int | None = None
    reason: str | None = None  # why a slice is n/a

    @property
    def needs_run(self) -> bool:
        return self.state not in SETTLED

    @property
    def is_rollup(self) -> bool:
        return self.month == ALL_MONTHS


def discover(lake: Lake, instance: dg.DagsterInstance, log: Callable[[str], None] = print,
             surveyed: dict[str, list[FileRecord]] | None = None) -> list[tuple[str, str]]:
    """Survey the landing zone, register its symbols as partitions, return (month, symbol) slices.
    ``surveyed``: filled with each symbol's records (every table), for a :func:`plan` that
    follows with no run in between to reuse instead of surveying again."""
    valid_months = set(month_partitions.get_partition_keys())
    slices: set[tuple[str, str]] = set()
    new_symbols = []
    known = read_manifest(lake)  # once, not once per symbol
    registered = set(instance.get_dynamic_partitions(symbol_partitions.name))  # one query, not one per symbol
    for folder in lake.landing_symbols():
        try:
            symbol = normalise_symbol(folder)
        except InvalidSymbolError as exc:
            log(f"skipped landing/{folder}: {exc}")
            continue
        records = survey(lake, symbol, known=known, table=None)
        if surveyed is not None:
            surveyed[symbol] = records
        found = False
        for rec in records:
            if rec.status != "failed" and table_of(rec) == "funding":
                continue  # a funding file: its months are not slices (a depth file's are)
            if rec.status == "failed":
                log(f"failed {rec.path}: {rec.error}")
            for month in rec.months:
                if month in valid_months:
                    slices.add((month, symbol))
                    found = True
        if found and symbol not in registered:
            new_symbols.append(symbol)
    if new_symbols:
        instance.add_dynamic_partitions(symbol_partitions.name, new_symbols)
    return sorted(slices)


def _strategy_engines() -> dict[str, str]:
    """Asset name -> engine of its strategy, for every per-strategy asset whose applicability
    follows its backtest's (backtest, sensitivity, metrics, critique, out-of-sample test, report)."""
    from quant_assets.definitions import SPECS

    out = {}
    for name, spec in SPECS.items():
        for prefix in ("backtest_", "sensitivity_", "metrics_", "critique_", "oos_validation_", "report_"):
            out[prefix + name] = spec.engine
    return out


def _fidelity(meta: dict | None) -> str | None:
    """The fidelity a ``ticks`` materialization recorded (older ones: from its counts), from
    its metadata values (label -> value); None without a materialization."""
    from quant_assets.engines.fidelity import fidelity_of

    if meta is None:
        return None
    if "fidelity" in meta:
        return str(meta["fidelity"])
    if "quotes" in meta and "trades" in meta:
        return fidelity_of(int(meta["quotes"]), int(meta["trades"]))
    return None


#: Assets the plan leaves out: ``fetch`` downloads from the network, so it runs only when asked
#: (its schedules, ``quant-assets fetch``, a launch); ``sync`` and ``status`` work offline on
#: what has landed.
NOT_PLANNED = frozenset({dg.AssetKey("fetch")})


def plan(
    lake: Lake, instance: dg.DagsterInstance, slices: list[tuple[str, str]], definitions: dg.Definitions | None = None,
    assets: Callable[[dg.AssetKey], bool] | None = None, surveyed: dict[str, list[FileRecord]] | None = None,
) -> list[SliceState]:
    """The state of every asset × slice (see module docstring); ``definitions`` default to the
    project's; ``assets``: only the assets it accepts (the others are neither planned nor, if
    no planned asset depends on them, read); ``surveyed``: landing records per symbol from a
    :func:`discover` just before (a symbol missing from it is surveyed here).

    Built from bulk facts, never slice by slice: the latest event of every partition of every
    asset, whose facts are cached beside the instance and refreshed from one query for all
    asset records plus, per asset with new events, one for its partitions' latest storage ids
    and one for the events since (:mod:`quant_assets.latest`); Dagster's staleness rules
    applied to them in memory (:mod:`quant_assets.staleness`); one landing survey per symbol
    for the source fingerprints. Measured warm at 400 symbols x 84 months (33,600 slices,
    606,800 states): 2.5 s. Order: every slice's assets (slices in the given order), then each
    symbol's roll-ups (symbols sorted)."""
    # The plan builds ~30 objects per asset partition (cached facts, states) and frees none:
    # the cyclic garbage collector's passes over them cost a third of a warm plan (measured at
    # 10 x 84) and would reclaim nothing, so it is paused meanwhile.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _plan(lake, instance, slices, definitions, assets, surveyed or {})
    finally:
        if paused:
            gc.enable()


def _plan(lake: Lake, instance: dg.DagsterInstance, slices: list[tuple[str, str]], definitions: dg.Definitions | None,
          assets: Callable[[dg.AssetKey], bool] | None, surveyed: dict[str, list[FileRecord]]) -> list[SliceState]:
    from quant_assets import latest as latest_mod
    from quant_assets.engines.fidelity import not_applicable
    from quant_assets.staleness import StaleResolver, multi_key

    graph = (definitions or defs).resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys()
            if graph.get(k).is_materializable and k not in NOT_PLANNED and (assets is None or assets(k))]
    slice_keys = [k for k in keys if graph.get(k).partitions_def == month_symbol_partitions]
    rollup_keys = [k for k in keys if graph.get(k).partitions_def == symbol_partitions]
    needed = {*slice_keys, *rollup_keys}
    needed |= {p for k in slice_keys + rollup_keys for p in graph.get(k).parent_keys if graph.get(p).is_materializable}
    facts = latest_mod.load(instance, sorted(needed))
    resolver = StaleResolver(instance, graph, facts)

    # The slices' fidelity, from their ticks (read even when the definitions leave ticks out).
    ticks_key = dg.AssetKey("ticks")
    ticks = facts[ticks_key] if ticks_key in facts else latest_mod.load(instance, [ticks_key])[ticks_key]
    # str(partition_key(m, s)), without building a MultiPartitionKey per slice (0.4 s at 33,600)
    pks = {(month, symbol): multi_key(month, normalise_symbol(symbol)) for month, symbol in slices}
    fidelity: dict[tuple[str, str], str | None] = {}
    for month, symbol in slices:
        row = ticks.get(pks[(month, symbol)])
        fidelity[(month, symbol)] = _fidelity(ticks.metadata[row]) if row is not None else None
    months_of: dict[str, list[str | None]] = {}  # symbol -> the fidelity of each of its slices
    for (month, symbol), f in fidelity.items():
        months_of.setdefault(symbol, []).append(f)
    engines = _strategy_engines()
    reasons: dict[tuple[str, str | None], str | None] = {}
    budget_waits = waiting_for_budget(lake, critic_budget_usd()[0])  # one read of today's spend ledger

    def n_a(engine: str | None, fidelities: list[str | None]) -> str | None:
        """Why a strategy's asset is n/a on every one of ``fidelities`` (the first month's
        reason); None when it applies to one of them, or there are none."""
        if engine is None or not fidelities:
            return None
        for f in fidelities:
            if (engine, f) not in reasons:
                reasons[(engine, f)] = not_applicable(engine, f) if f else None
            if reasons[(engine, f)] is None:
                return None
        return reasons[(engine, fidelities[0])]

    # One landing survey per symbol (not one per slice): the fingerprints of all its months.
    fingerprints: dict[tuple[dg.AssetKey, str], dict[str, str]] = {}
    manifest: list[dict[str, FileRecord]] = []  # read once, when a first survey is needed

    def sources(key: dg.AssetKey, symbol: str, month: str) -> str | None:
        fn, default = EXTERNAL_SOURCES[key]
        if (key, symbol) not in fingerprints:
            records = surveyed.get(symbol)
            if records is None:
                if not manifest:
                    manifest.append(read_manifest(lake))
                records = survey(lake, symbol, table=None, known=manifest[0])
            for k, (f, _) in EXTERNAL_SOURCES.items():
                fingerprints[(k, symbol)] = f(lake, symbol, records)
        return fingerprints[(key, symbol)].get(month, default)

    slice_targets = [(month, symbol, pks[(month, symbol)], [fidelity[(month, symbol)]]) for month, symbol in slices]
    rollup_targets = [(ALL_MONTHS, symbol, symbol, months_of[symbol]) for symbol in sorted(months_of)]

    def states_of(key: dg.AssetKey, targets: list[tuple[str, str, str, list[str | None]]]) -> list[SliceState]:
        """The state of ``key`` for each target, asset by asset (its facts and checks bound once)."""
        asset, engine, fingerprinted = facts[key], engines.get(key.path[-1]), key in EXTERNAL_SOURCES
        index, metadata, is_stale = asset.index, asset.metadata, resolver.checker(key)
        states: list[SliceState] = []
        append, state_of = states.append, SliceState  # (600k iterations at 400 x 84: locals)
        for month, symbol, pk, fidelities in targets:
            row = index.get(pk)
            if row is None:
                reason = n_a(engine, fidelities)
                if reason is not None:
                    append(state_of(key, month, symbol, "n/a", None, reason))
                else:
                    append(state_of(key, month, symbol, "waiting" if _waits(lake, key, symbol, month, budget_waits)
                                    else "missing"))
                continue
            meta = metadata[row]
            rows = meta.get("dagster/row_count")
            state = "materialized"
            if fingerprinted and month != ALL_MONTHS and (
                    "source_fingerprint" not in meta or meta["source_fingerprint"] != sources(key, symbol, month)):
                state = "sources changed"
            elif is_stale(pk, row):
                state = "stale"
            append(state_of(key, month, symbol, state, None if rows is None else int(rows)))
        return states

    # Computed asset by asset, returned slice by slice (each slice's assets together), then the
    # roll-ups symbol by symbol, in the order of the definitions' keys.
    out: list[SliceState] = []
    for group_keys, targets in ((slice_keys, slice_targets), (rollup_keys, rollup_targets)):
        for per_target in zip(*(states_of(key, targets) for key in group_keys)):
            out.extend(per_target)
    return out


def _not_done(result: dg.ExecuteInProcessResult, selected: set[dg.AssetKey]) -> set[str]:
    """Assets (user strings) of ``selected`` whose step did not succeed in ``result``: it failed,
    or it never ran because something upstream failed. In process an asset's step key is its
    name. A step that succeeded without output (a validation waiting for its next month) is done."""
    succeeded = {e.step_key for e in result.all_events if e.step_key and e.is_step_success}
    return {k.to_user_string() for k in selected} - succeeded


def run_slices(
    instance: dg.DagsterInstance, states: list[SliceState], resources: dict | None = None, log_level: str = "WARNING",
    replan: Callable[[], list[SliceState]] | None = None,
) -> Iterator[tuple[str, str, dg.ExecuteInProcessResult]]:
    """Materialise what needs it, in one process: one run per slice (all its stale assets and
    what follows them within the slice, in dependency order, slices in month order); then, with
    ``replan``, more passes over the slices that still need a run, while the previous pass ran
    something (at most :data:`MAX_REPLANS`): an out-of-sample validation of month M can only run
    once month M+1 exists, a slice that reads an earlier month (a backtest warming up on M−1) is
    stale once that month was rebuilt, and so is the validation of M−1 once M's metrics were;
    then one run per symbol for its roll-ups (those that were not up to date, and all of them
    where a slice ran); last, one run of the unpartitioned ledgers (``discoveries``,
    ``critic_scorecard``) when a slice ran or they were never built or their code changed. Yields (month, symbol, result) as runs
    finish; roll-up runs have ``month == ALL_MONTHS``, the ledgers' run ``month == symbol ==
    LEDGER``. A failed run does not stop the others, and no asset of a slice that failed (or was
    skipped after a failure) runs again in the same call: one invocation never runs a failing
    step twice."""
    graph = defs.resolve_asset_graph()
    slice_keys = {s.asset for s in states if not s.is_rollup}
    # Per-symbol assets that slices read (venue_profile) run before the slices, the others
    # (roll-ups over the months) after them.
    input_keys = {s.asset for s in states if s.is_rollup and _is_input(graph, s.asset)}
    rollup_keys = {s.asset for s in states if s.is_rollup} - input_keys
    inputs: set[str] = set()
    # A roll-up that is n/a for its symbol (every month of it is) is never run.
    rollup_na = {(s.symbol, s.asset) for s in states if s.is_rollup and s.state == "n/a"}
    by_slice: dict[tuple[str, str], list[dg.AssetKey]] = {}
    rollups: dict[str, set[dg.AssetKey]] = {}
    for s in states:
        if s.needs_run:
            if s.asset in input_keys:
                inputs.add(s.symbol)
            elif s.is_rollup:
                rollups.setdefault(s.symbol, set()).add(s.asset)
            else:
                by_slice.setdefault((s.month, s.symbol), []).append(s.asset)
    config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    failed: set[tuple[str, str, str]] = set()
    if inputs:
        yield INPUTS, f"{len(inputs)} symbol(s)", _run_inputs(instance, input_keys, inputs, resources, config)

    def run(month: str, symbol: str, chosen: set[dg.AssetKey]) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            ASSETS,
            selection=dg.AssetSelection.assets(*chosen),
            partition_key=str(partition_key(month, symbol)),
            instance=instance,
            resources=resources or defs.resources,
            tags={"quant_assets/trigger": "sync"},
            raise_on_error=False,
            run_config=config,
        )
        failed.update((month, symbol, k) for k in _not_done(result, chosen))
        return result

    # The research loop's order: the critique of month M reads what became of M−1's
    # suggestions (critique.memory), which M−1's validation learns once M's metrics exist. So
    # where both are due, a slice runs in three: its stages up to the metrics, the previous
    # month's validation, then its critique and validation.
    waiting_oos: dict[tuple[str, str], set[dg.AssetKey]] = {}
    for s in states:
        if _validation(s.asset) and (s.needs_run or s.state == "waiting") and not s.is_rollup:
            waiting_oos.setdefault((s.month, s.symbol), set()).add(s.asset)
    for (month, symbol), keys in sorted(by_slice.items()):
        chosen = (dg.AssetSelection.assets(*keys).downstream() & dg.AssetSelection.assets(*slice_keys)).resolve(graph)
        late = {k for k in chosen if _critic_stage(k)}
        prev = (previous_month(month), symbol)
        prev_oos = waiting_oos.pop(prev, set())
        rollups.setdefault(symbol, set()).update(rollup_keys)
        if late and prev_oos and chosen - late:
            early = run(month, symbol, chosen - late)
            yield month, symbol, early
            if early.success:
                yield prev[0], symbol, run(prev[0], symbol, prev_oos)
                yield month, symbol, run(month, symbol, late)
            else:
                failed.update((month, symbol, k.to_user_string()) for k in late)
        else:
            yield month, symbol, run(month, symbol, chosen)
    ran, passes = bool(by_slice or inputs), 0  # (new venue settings can make slices stale too)
    while replan is not None and ran and passes < MAX_REPLANS:
        passes += 1
        latest = replan()
        # The slices just built tell which roll-ups are n/a (the first plan could not know
        # the fidelity of months that had no ticks yet).
        rollup_na |= {(s.symbol, s.asset) for s in latest if s.is_rollup and s.state == "n/a"}
        again: dict[tuple[str, str], list[dg.AssetKey]] = {}
        for s in latest:
            if s.needs_run and not s.is_rollup and (s.month, s.symbol, s.asset.to_user_string()) not in failed:
                again.setdefault((s.month, s.symbol), []).append(s.asset)
        ran = bool(again)
        for (month, symbol), keys in sorted(again.items()):
            selection = dg.AssetSelection.assets(*keys).downstream() & dg.AssetSelection.assets(*slice_keys)
            result = dg.materialize(
                ASSETS,
                selection=selection,
                partition_key=str(partition_key(month, symbol)),
                instance=instance,
                resources=resources or defs.resources,
                tags={"quant_assets/trigger": "sync"},
                raise_on_error=False,
                run_config=config,
            )
            rollups.setdefault(symbol, set()).update(rollup_keys)
            failed.update((month, symbol, k) for k in _not_done(result, selection.resolve(graph)))
            yield month, symbol, result
    for symbol, keys in sorted(rollups.items()):
        keys = {k for k in keys if (symbol, k) not in rollup_na}
        if not keys:
            continue
        result = dg.materialize(
            ASSETS,
            selection=dg.AssetSelection.assets(*keys),
            partition_key=symbol,
            instance=instance,
            resources=resources or defs.resources,
            tags={"quant_assets/trigger": "sync"},
            raise_on_error=False,
            run_config=config,
        )
        yield ALL_MONTHS, symbol, result
    ran_universes = False
    universe_of = universe_assets(graph)
    for (month, universe), keys in sorted(_universes_due(instance, graph, {(st.month, st.symbol) for st in states
                                                                          if not st.is_rollup}).items()):
        # and what reads them in the same universe (a rebuilt backtest's metrics)
        same = [k for k, u in universe_of.items() if u == universe]
        selection = dg.AssetSelection.assets(*keys).downstream() & dg.AssetSelection.assets(*same)
        result = dg.materialize(ASSETS, selection=selection, partition_key=f"{month}|{universe}",
                                instance=instance, resources=resources or defs.resources,
                                tags={"quant_assets/trigger": "sync"}, raise_on_error=False, run_config=config)
        ran_universes = True
        yield month, universe, result
    ledgers = _ledgers_due(instance, graph, ran=bool(by_slice) or ran_universes)
    if ledgers:
        result = dg.materialize(ASSETS, selection=dg.AssetSelection.assets(*ledgers), instance=instance,
                                resources=resources or defs.resources, tags={"quant_assets/trigger": "sync"},
                                raise_on_error=False, run_config=config)
        yield LEDGER, LEDGER, result


def universe_assets(graph) -> dict[dg.AssetKey, str]:  # noqa: ANN001 - dagster's BaseAssetGraph
    """The month × universe assets (:mod:`quant_assets.assets.universes`) -> their universe."""
    out = {}
    for key in graph.get_all_asset_keys():
        pdef = graph.get(key).partitions_def
        if isinstance(pdef, dg.MultiPartitionsDefinition) and "universe" in pdef.partition_dimension_names:
            out[key] = pdef.get_partitions_def_for_dimension("universe").get_partition_keys()[0]
    return out


def universe_states(instance: dg.DagsterInstance, graph, slices: set[tuple[str, str]]  # noqa: ANN001
                    ) -> list[tuple[dg.AssetKey, str, str, str]]:
    """(asset, universe, month, state) of every month × universe asset for the months where
    every member has a slice; state ``materialized``, ``missing`` or ``stale``.

    Bulk facts first, Dagster's staleness only where they leave a doubt: per asset one query for
    its partitions' latest materialization (storage id and code version) and one per dependency
    for the members' partitions' latest storage ids. A partition is missing without a
    materialization, stale when its code version changed, fresh when no partition it reads was
    materialised after it; otherwise (a dependency rebuilt since) Dagster's staleness decides,
    as it compares data versions (a dependency rebuilt to the same data makes nothing stale).
    A dependency that is itself stale (its own inputs changed) does not make the partition
    stale here: sync runs this pass after the slices, once those are rebuilt. Cost: a few
    queries per universe asset, and one Dagster status per partition whose inputs were rebuilt
    since it was; never per symbol of the lake (``bench/universe_status_bench.py``)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.events import DagsterEventType
    from dagster._time import get_current_datetime
    from quant_assets.portfolio.universes import load

    universes = load()
    storage = instance.event_log_storage
    mat = DagsterEventType.ASSET_MATERIALIZATION
    resolver = None
    months_of: dict[str, set[str]] = {}
    for month, symbol in slices:
        months_of.setdefault(symbol, set()).add(month)
    out = []
    for key, universe in sorted(universe_assets(graph).items()):
        members = universes.sets.get(universe)
        if not members:
            continue
        months = sorted(set.intersection(*(months_of.get(m, set()) for m in members)))
        pks = {m: f"{m}|{universe}" for m in months}
        own, code = _latest_with_code_version(instance, key, list(pks.values()))
        current = graph.get(key).code_version
        reads = {m: {p: graph.get_parent_partition_keys_for_child(pk, p, key).partitions_subset.get_partition_keys()
                     for p in graph.get(key).parent_keys} for m, pk in pks.items() if pk in own}
        newest: dict[dg.AssetKey, dict[str, int]] = {}
        for parent in graph.get(key).parent_keys:
            wanted = {k for r in reads.values() for k in r[parent]}
            newest[parent] = dict(storage.get_latest_storage_id_by_partition(parent, mat, wanted)) if wanted else {}
        for month, pk in pks.items():
            if pk not in own:
                state = "missing"
            elif code.get(pk) != current:
                state = "stale"
            elif not any(newest[p].get(k, 0) > own[pk] for p, ks in reads[month].items() for k in ks):
                state = "materialized"
            else:
                if resolver is None:
                    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                                          instance=instance, asset_graph=graph)
                    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
                state = "materialized" if resolver.get_status(key, pk) == StaleStatus.FRESH else "stale"
            out.append((key, universe, month, state))
    return out


def _latest_with_code_version(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]
                              ) -> tuple[dict[str, int], dict[str, str | None]]:
    """(partition -> storage id, partition -> code version) of each partition's latest
    materialization: the records of those partitions, newest first, in pages (Dagster indexes
    the latest data version by partition, not the code version)."""
    from dagster._core.definitions.data_version import CODE_VERSION_TAG

    from quant_assets.batching import _chunks

    ids: dict[str, int] = {}
    code: dict[str, str | None] = {}
    for chunk in _chunks(partitions):
        cursor = None
        while True:
            page = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk),
                                                   limit=1000, cursor=cursor, ascending=False)
            for r in page.records:
                if r.partition_key not in ids:
                    ids[r.partition_key] = r.storage_id
                    code[r.partition_key] = r.asset_materialization.tags.get(CODE_VERSION_TAG)
            if not page.has_more:
                break
            cursor = page.cursor
    return ids, code


def _universes_due(instance: dg.DagsterInstance, graph, slices: set[tuple[str, str]]  # noqa: ANN001
                   ) -> dict[tuple[str, str], list[dg.AssetKey]]:
    """(month, universe) -> its assets to run (:func:`universe_states` not materialised)."""
    due: dict[tuple[str, str], list[dg.AssetKey]] = {}
    for key, universe, month, state in universe_states(instance, graph, slices):
        if state != "materialized":
            due.setdefault((month, universe), []).append(key)
    return due


def _critic_stage(key: dg.AssetKey) -> bool:
    """A critique or its out-of-sample validation (the loop's last stages in a slice)."""
    return key.to_user_string().startswith(("critique_", "oos_validation_"))


def _validation(key: dg.AssetKey) -> bool:
    return key.to_user_string().startswith("oos_validation_")


def _ledgers_due(instance: dg.DagsterInstance, graph, ran: bool) -> list[dg.AssetKey]:  # noqa: ANN001
    """The unpartitioned assets over the whole lake (``discoveries``, ``critic_scorecard``) to run
    at the end of a sync: all of them when a slice ran (its tests may be new: they read only what
    changed), else those never materialised or whose code version changed (a new ``$QUANT_FDR_Q``)."""
    from dagster._core.definitions.data_version import CODE_VERSION_TAG

    keys = sorted(k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable and graph.get(k).partitions_def is None)
    if ran:
        return keys
    due = []
    for key in keys:
        latest = instance.fetch_materializations(key, limit=1).records
        if not latest or latest[0].asset_materialization.tags.get(CODE_VERSION_TAG) != graph.get(key).code_version:
            due.append(key)
    return due


def _is_input(graph, key: dg.AssetKey) -> bool:  # noqa: ANN001 - dagster's BaseAssetGraph
    """A per-symbol asset that month × symbol slices depend on (not a roll-up of them)."""
    return any(graph.get(child).partitions_def == month_symbol_partitions for child in graph.get(key).child_keys)


def _run_inputs(instance: dg.DagsterInstance, keys: set[dg.AssetKey], symbols: set[str], resources: dict | None,
                config: dict) -> dg.ExecuteInProcessResult:
    """One run building the per-symbol inputs of ``symbols``: a partition range from the first to
    the last of them in the symbols' registration order (the assets are batched, so one step
    builds them all; a symbol in between whose settings did not move is recomputed to the same
    data version, which makes nothing downstream stale)."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    order = {s: i for i, s in enumerate(instance.get_dynamic_partitions(symbol_partitions.name))}
    ranked = sorted(symbols, key=lambda s: order.get(s, len(order)))
    tags = {"quant_assets/trigger": "sync"}
    if len(ranked) == 1:
        return dg.materialize(ASSETS, selection=dg.AssetSelection.assets(*keys), partition_key=ranked[0],
                              instance=instance, resources=resources or defs.resources, tags=tags,
                              raise_on_error=False, run_config=config)
    tags |= {ASSET_PARTITION_RANGE_START_TAG: ranked[0], ASSET_PARTITION_RANGE_END_TAG: ranked[-1]}
    return dg.materialize(ASSETS, selection=dg.AssetSelection.assets(*keys), instance=instance,
                          resources=resources or defs.resources, tags=tags, raise_on_error=False, run_config=config)
