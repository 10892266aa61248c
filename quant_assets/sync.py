"""Headless orchestration: what ``quant-assets sync`` and ``status`` do, on the real Dagster instance.

``plan`` decides, for every asset in the definitions and every known month × symbol slice,
whether it must run: it is *missing* (never materialised), *stale* (Dagster's own staleness:
its code version or an upstream data version changed) or its *sources changed* (for assets
fed from outside Dagster, e.g. ``ticks`` from landing files, a fingerprint of those sources
differs from the one recorded at the last materialisation). ``sync`` then runs each slice in
process, recorded in the instance like any run launched from the UI.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
# Dagster has no public API for per-partition staleness; this is what its UI uses.
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from quant_assets.definitions import ASSETS, defs
from quant_assets.ingest.build import expected_fingerprint
from quant_assets.ingest.landing import survey
from quant_assets.lake.store import Lake
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets.partitions import month_partitions, partition_key, symbol_partitions

#: Assets fed from outside Dagster: a function giving the fingerprint of their current
#: sources for (lake, symbol, month), compared with the ``source_fingerprint`` metadata.
EXTERNAL_SOURCES: dict[dg.AssetKey, Callable[[Lake, str, str], str | None]] = {
    dg.AssetKey("ticks"): expected_fingerprint,
}


@dataclass(frozen=True)
class SliceState:
    asset: dg.AssetKey
    month: str
    symbol: str
    state: str  # materialized | missing | stale | sources changed
    rows: int | None = None

    @property
    def needs_run(self) -> bool:
        return self.state != "materialized"


def discover(lake: Lake, instance: dg.DagsterInstance, log: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Survey the landing zone, register its symbols as partitions, return (month, symbol) slices."""
    valid_months = set(month_partitions.get_partition_keys())
    slices: set[tuple[str, str]] = set()
    new_symbols = []
    for folder in lake.landing_symbols():
        try:
            symbol = normalise_symbol(folder)
        except InvalidSymbolError as exc:
            log(f"skipped landing/{folder}: {exc}")
            continue
        for rec in survey(lake, symbol):
            if rec.status == "failed":
                log(f"failed {rec.path}: {rec.error}")
            for month in rec.months:
                if month in valid_months:
                    slices.add((month, symbol))
        if any(s == symbol for _, s in slices) and not instance.has_dynamic_partition(symbol_partitions.name, symbol):
            new_symbols.append(symbol)
    if new_symbols:
        instance.add_dynamic_partitions(symbol_partitions.name, new_symbols)
    return sorted(slices)


def _last_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, pk: str) -> dg.AssetMaterialization | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization


def plan(
    lake: Lake, instance: dg.DagsterInstance, slices: list[tuple[str, str]], definitions: dg.Definitions | None = None
) -> list[SliceState]:
    """The state of every asset × slice (see module docstring); ``definitions`` default to the project's."""
    graph = (definitions or defs).resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    out = []
    for month, symbol in slices:
        pk = str(partition_key(month, symbol))
        for key in graph.get_all_asset_keys():
            if not graph.get(key).is_materializable:
                continue
            mat = _last_materialization(instance, key, pk)
            rows = None
            if mat is None:
                state = "missing"
            else:
                row_meta = mat.metadata.get("dagster/row_count")
                rows = int(row_meta.value) if row_meta is not None else None
                state = "materialized"
                fingerprint_fn = EXTERNAL_SOURCES.get(key)
                recorded = mat.metadata.get("source_fingerprint")
                if fingerprint_fn and (recorded is None or recorded.value != fingerprint_fn(lake, symbol, month)):
                    state = "sources changed"
                elif resolver.get_status(key, pk) == StaleStatus.STALE:
                    state = "stale"
            out.append(SliceState(key, month, symbol, state, rows))
    return out


def run_slices(
    instance: dg.DagsterInstance, states: list[SliceState], resources: dict | None = None, log_level: str = "WARNING"
) -> Iterator[tuple[str, str, dg.ExecuteInProcessResult]]:
    """Materialise the slices that need it, one in-process run per slice (all its stale assets
    together, in dependency order); yields (month, symbol, result) as runs finish. A failed
    slice does not stop the others."""
    by_slice: dict[tuple[str, str], list[dg.AssetKey]] = {}
    for s in states:
        if s.needs_run:
            by_slice.setdefault((s.month, s.symbol), []).append(s.asset)
    for (month, symbol), keys in sorted(by_slice.items()):
        result = dg.materialize(
            ASSETS,
            selection=dg.AssetSelection.assets(*keys).downstream(),
            partition_key=str(partition_key(month, symbol)),
            instance=instance,
            resources=resources or defs.resources,
            tags={"quant_assets/trigger": "sync"},
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        yield month, symbol, result
