"""Dagster's stale status of many asset partitions at once, from the facts :mod:`quant_assets.latest`
loads in bulk: what ``CachingStaleStatusResolver.get_status(key, pk) == STALE`` answers for a
materialised partition, without its queries per partition (17+ per slice, ~4 ms each).

The rules reproduced (``dagster/_core/definitions/data_version.py``, Dagster 1.13,
``_get_stale_causes_materialized`` and ``_is_dep_updated``); a materialised partition is stale when

* its latest event has provenance (a ``dagster/code_version`` tag) and
  - the asset's current code version is set and differs from the recorded one, or
  - it recorded an input that is no longer a dependency, or
  - for a dependency partition (through the asset graph's partition mapping; none when the
    mapping gives 100 partitions or more, Dagster's ``SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD``):
    the input was not recorded at all, or the dependency partition has an event after the
    recorded input pointer (a storage id) whose data version differs from the data version of
    its latest event at or before the pointer (a "NULL" pointer never counts as updated);
* it has no provenance (a runless report) and a dependency partition was never materialised
  or has a later timestamp.

Only partitions whose dependency has an event after their pointer (the rare slices whose
upstream was re-materialised after them) need the data version at the pointer; it comes from
the cached chain of superseded events, else from one query, memoised per (dependency, partition,
pointer). Partition mappings are evaluated in bulk for the kinds this project uses (identity; a
window of months on month × symbol, from a constant offset (month+1) to ``months_window``'s
M−k..M, whose every month that exists is a dependency partition, so a changed M−1 makes M
stale; the per-symbol input of a month × symbol slice; a month × symbol dependency of a
per-symbol roll-up); an asset
with any other dependency (an unknown mapping, an unpartitioned or external dependency, as in
tests' partial definitions) is left to Dagster's own resolver, partition by partition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg
from dagster._core.definitions.data_version import (
    DEFAULT_DATA_VERSION,
    NULL_DATA_VERSION,
    SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD,
    extract_data_version_from_entry,
)
from dagster._core.definitions.partitions.mapping.multi.base import DimensionPartitionMapping

from quant_assets.latest import AssetLatest

#: Child partition key -> its dependency partition keys, in Dagster's order-free sense.
Mapper = Callable[[str], Sequence[str]]

_EMPTY: tuple[str, ...] = ()


def identity(pk: str) -> tuple[str]:
    """The identity mapping (recognised by the resolver, which then skips the call)."""
    return (pk,)


def multi_key(month: str, symbol: str) -> str:
    """A month × symbol key as Dagster spells it: dimension values joined by ``|`` in
    dimension-name order (``month`` < ``symbol``), as ``str(MultiPartitionKey)`` gives."""
    return f"{month}|{symbol}"


def _dimension_names(partitions_def) -> list[str] | None:
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return sorted(d.name for d in partitions_def.partitions_defs)
    return None


def mapper(graph, child: dg.AssetKey, parent: dg.AssetKey) -> Mapper | None:
    """The dependency partitions of ``parent`` for each partition of ``child``, evaluated
    without Dagster (see the module docstring), or None for a mapping this does not know."""
    child_node, parent_node = graph.get(child), graph.get(parent)
    if not parent_node.is_materializable or not parent_node.is_partitioned or not child_node.is_partitioned:
        return None
    mapping = graph.get_partition_mapping(child, parent)
    child_def, parent_def = child_node.partitions_def, parent_node.partitions_def
    if isinstance(mapping, dg.IdentityPartitionMapping) and child_def == parent_def:
        return identity
    if (isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and mapping.partition_dimension_name == "symbol"
            and _dimension_names(child_def) == ["month", "symbol"]
            and parent_def == child_def.get_partitions_def_for_dimension("symbol")):
        # a slice reads its symbol's per-symbol input (venue_profile): "2024-01|BTCUSDT" -> BTCUSDT
        return lambda pk: (pk.split("|", 1)[1],)
    if _dimension_names(parent_def) != ["month", "symbol"]:
        return None
    months = list(parent_def.get_partitions_def_for_dimension("month").get_partition_keys())
    if (isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and mapping.partition_dimension_name == "symbol"
            and child_def == parent_def.get_partitions_def_for_dimension("symbol")):
        if len(months) >= SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD:
            return lambda pk: _EMPTY  # Dagster leaves such dependencies out of staleness
        return lambda symbol: [multi_key(m, symbol) for m in months]
    if isinstance(mapping, dg.MultiPartitionMapping) and child_def == parent_def:
        dims = mapping.downstream_mappings_by_upstream_dimension
        month_map, symbol_map = dims.get("month"), dims.get("symbol")
        if not (isinstance(month_map, DimensionPartitionMapping) and isinstance(symbol_map, DimensionPartitionMapping)
                and month_map.dimension_name == "month" and symbol_map.dimension_name == "symbol"
                and isinstance(symbol_map.partition_mapping, dg.IdentityPartitionMapping)
                and type(month_map.partition_mapping) is dg.TimeWindowPartitionMapping
                and month_map.partition_mapping.allow_nonexistent_upstream_partitions):
            return None
        start, end = month_map.partition_mapping.start_offset, month_map.partition_mapping.end_offset
        position = {m: i for i, m in enumerate(months)}

        def shifted(pk: str) -> list[str]:
            month, symbol = pk.split("|", 1)
            i = position.get(month)
            if i is None:
                return []
            return [multi_key(months[j], symbol) for j in range(i + start, i + end + 1) if 0 <= j < len(months)]

        return shifted
    return None


class StaleResolver:
    """``is_stale(key, pk, row)`` for materialised partitions of the assets in ``latest``.

    Built once per plan: the per-asset dependency mappers and code versions. Dagster's own
    resolver is created (lazily) only for the assets it must handle (see module docstring)."""

    def __init__(self, instance: dg.DagsterInstance, graph, latest: dict[dg.AssetKey, AssetLatest]):
        self.instance, self.graph, self.latest = instance, graph, latest
        self.code_version: dict[dg.AssetKey, str | None] = {}
        self.parent_names: dict[dg.AssetKey, frozenset[str]] = {}
        self.deps: dict[dg.AssetKey, list[tuple[dg.AssetKey, str, AssetLatest, Mapper]]] = {}
        self.delegated: set[dg.AssetKey] = set()
        for key in latest:
            node = graph.get(key)
            self.code_version[key] = node.code_version
            self.parent_names[key] = frozenset(p.to_user_string() for p in node.parent_keys)
            deps = []
            for parent in sorted(node.parent_keys):
                fn = mapper(graph, key, parent) if parent in latest else None
                if fn is None:
                    self.delegated.add(key)
                    break
                deps.append((parent, parent.to_user_string(), latest[parent], fn))
            self.deps[key] = deps
        self._versions: dict[tuple[dg.AssetKey, str, int], str | None] = {}
        self._checkers: dict[dg.AssetKey, Callable[[str, int], bool]] = {}
        self._dagster = None
        #: Data versions asked of the instance (the cached chain did not reach the pointer).
        self.queries = 0

    def is_stale(self, key: dg.AssetKey, pk: str, row: int) -> bool:
        """Whether materialised partition ``pk`` of ``key`` (row ``row`` of its facts) is stale."""
        return self.checker(key)(pk, row)

    def checker(self, key: dg.AssetKey) -> Callable[[str, int], bool]:
        """:meth:`is_stale` for one asset, with everything that does not depend on the partition
        bound once (a plan calls it for each of up to 33,600 partitions of each asset)."""
        if key in self._checkers:
            return self._checkers[key]
        if key in self.delegated:
            self._checkers[key] = lambda pk, row: self._dagster_status(key, pk)
            return self._checkers[key]
        facts = self.latest[key]
        code_versions, timestamps, inputs_col, pointers_col = facts.code_version, facts.timestamp, facts.inputs, facts.pointers
        current, parent_names = self.code_version[key], self.parent_names[key]
        # (parent, name, facts, identity mapping?, mapper, index, storage ids, timestamps)
        deps = [(parent, name, dep, fn is identity, fn, dep.index, dep.storage_id, dep.timestamp)
                for parent, name, dep, fn in self.deps[key]]
        # (index, timestamps) of identity-mapped dependencies, and (mapper, index, timestamps) of
        # the others, for the no-provenance path (no tuple built per dependency and partition)
        same = [(index, dep_ts) for _, _, _, ident, _, index, _, dep_ts in deps if ident]
        mapped = [(fn, index, dep_ts) for _, _, _, ident, fn, index, _, dep_ts in deps if not ident]
        known_inputs: dict[tuple[str, ...], bool] = {}  # recorded inputs -> all still dependencies?
        version_at, differ = self._version_at, self._differ

        def is_stale(pk: str, row: int) -> bool:
            code_version = code_versions[row]
            if code_version is None:  # no provenance: timestamps decide
                ts = timestamps[row]
                for index, dep_ts in same:
                    j = index.get(pk)
                    if j is None or dep_ts[j] > ts:
                        return True
                for fn, index, dep_ts in mapped:
                    for q in fn(pk):
                        j = index.get(q)
                        if j is None or dep_ts[j] > ts:
                            return True
                return False
            if current and current != code_version:
                return True
            inputs = inputs_col[row]
            ok = known_inputs.get(inputs)
            if ok is None:
                ok = known_inputs[inputs] = parent_names.issuperset(inputs)
            if not ok:
                return True  # a recorded input is no longer a dependency
            pointers = pointers_col[row]
            for parent, name, dep, ident, fn, index, storage_ids, _ in deps:
                qs = (pk,) if ident else fn(pk)
                if not qs:
                    continue
                if name not in pointers or name not in inputs:
                    return True  # a new dependency
                pointer = pointers[name]
                if not pointer:
                    continue  # "NULL": Dagster compares the latest event with itself
                for q in qs:
                    j = index.get(q)
                    if j is not None and storage_ids[j] > pointer and differ(version_at(parent, dep, q, pointer), dep.data_version[j]):
                        return True
            return False

        self._checkers[key] = is_stale
        return is_stale

    @staticmethod
    def _differ(previous: str | None, current: str | None) -> bool:
        # Dagster's _data_versions_differ: INITIAL then NULL is no change.
        if previous == DEFAULT_DATA_VERSION.value and current == NULL_DATA_VERSION.value:
            return False
        return previous != current

    def _version_at(self, parent: dg.AssetKey, dep: AssetLatest, q: str, pointer: int) -> str | None:
        """Data version of the latest event of ``parent`` partition ``q`` at or before ``pointer``."""
        known, version = dep.version_at(q, pointer)
        if known:
            return version
        memo = (parent, q, pointer)
        if memo not in self._versions:
            self.queries += 1
            record = self.instance.get_latest_data_version_record(parent, False, q, before_cursor=pointer + 1)
            found = extract_data_version_from_entry(record.event_log_entry) if record else None
            self._versions[memo] = found.value if found is not None else None
        return self._versions[memo]

    def _dagster_status(self, key: dg.AssetKey, pk: str) -> bool:
        from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
        from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
        from dagster._time import get_current_datetime

        if self._dagster is None:
            view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                                  instance=self.instance, asset_graph=self.graph)
            self._dagster = CachingStaleStatusResolver(instance=self.instance, asset_graph=self.graph, loading_context=view)
        return self._dagster.get_status(key, pk) == StaleStatus.STALE
