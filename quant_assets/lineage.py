"""Lineage of any slice: walk from an asset partition back to the landed files.

Each step comes from Dagster's own records (the latest materialization of the partition: its
data version, its code version, the data version of each input it read, the run, the time)
and from the lake (the path in the metadata; for ``ticks``, the landing files and their
content hashes). Parents are found through the asset graph's partition mappings, so a
critique leads to its metric set, a validation to the next month's slices, and a roll-up to
every materialised month. ``quant-assets lineage <asset> <partition>`` prints the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

from quant_assets.definitions import defs

#: Dagster tags every materialization with the event it read of each input (its storage id).
INPUT_EVENT_TAG = "dagster/input_event_pointer/"


@dataclass
class Node:
    asset: str
    partition: str | None
    materialized: bool
    data_version: str | None = None
    code_version: str | None = None
    run_id: str | None = None
    storage_id: int | None = None
    timestamp: float | None = None
    path: str | None = None
    inputs: dict[str, int] = field(default_factory=dict)  # upstream asset -> storage id of the event it read
    sources: list[dict[str, Any]] = field(default_factory=list)  # ticks: landing files
    parents: list[Node] = field(default_factory=list)
    current: bool | None = None  # its inputs' versions are still the upstreams' latest

    def as_dict(self) -> dict[str, Any]:
        return {k: ([p.as_dict() for p in v] if k == "parents" else v) for k, v in self.__dict__.items()}


def _node(instance: dg.DagsterInstance, key: dg.AssetKey, pk: str | None) -> Node:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk] if pk else None), limit=1).records
    if not records:
        return Node(key.to_user_string(), pk, False)
    mat = records[0].asset_materialization
    tags = mat.tags or {}
    md = mat.metadata
    return Node(
        asset=key.to_user_string(), partition=pk, materialized=True,
        data_version=tags.get("dagster/data_version"), code_version=tags.get("dagster/code_version"),
        run_id=records[0].run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp,
        path=str(md["path"].value) if "path" in md else None,
        inputs={k[len(INPUT_EVENT_TAG):]: int(v) for k, v in tags.items() if k.startswith(INPUT_EVENT_TAG) and v.isdigit()},
        sources=list(md["sources"].value) if "sources" in md else [],
    )


def trace(instance: dg.DagsterInstance, asset: str, partition: str | None, definitions: dg.Definitions | None = None) -> Node:
    """The lineage tree of ``asset`` at ``partition`` (parents that were never materialised are
    left out, except for direct same-partition inputs, which show as missing)."""
    graph = (definitions or defs).resolve_asset_graph()
    key = dg.AssetKey.from_user_string(asset)
    if not graph.has(key):
        raise KeyError(f"no asset {asset!r}; known: {', '.join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))}")
    seen: dict[tuple[str, str | None], Node] = {}

    def walk(k: dg.AssetKey, pk: str | None) -> Node:
        if (k.to_user_string(), pk) in seen:
            return seen[(k.to_user_string(), pk)]
        node = _node(instance, k, pk)
        seen[(k.to_user_string(), pk)] = node
        if not node.materialized:
            return node
        with partition_loading_context(dynamic_partitions_store=instance):
            parents = sorted(graph.get_parents_partitions(k, pk).parent_partitions,
                             key=lambda p: (p.asset_key.to_user_string(), p.partition_key or ""))
        for p in parents:
            child = walk(p.asset_key, p.partition_key)
            if child.materialized or p.partition_key == pk:
                node.parents.append(child)
        # Whether every parent partition it read is still the latest: Dagster's pointer is the
        # newest event of the input asset when the step ran (across partitions), so a parent
        # partition materialised after it has a larger storage id.
        read = [(node.inputs[p.asset], p.storage_id) for p in node.parents
                if p.materialized and p.asset in node.inputs and p.storage_id is not None]
        if read:
            node.current = all(parent <= pointer for pointer, parent in read)
        return node

    return walk(key, partition)
