"""Populate a Dagster instance in bulk, as the landing ingest records it, for scale tests and
``bench/scale_bench.py``: no lake files, only the instance's events.

Per slice (month × symbol): one ``ticks`` materialization with a data version and its five
blocking-check evaluations, and the slice's ``funding`` materialization ("not applicable" for
spot), which is what a landing-sensor run writes. Optionally the downstream chain too.

The events go through Dagster's own ``report_runless_asset_event`` (so the tables, indexes and
asset-status cache are exactly what a run would leave); :func:`bulk_writes` only keeps one
SQLite connection per shard open in one transaction instead of opening, migrating-checking and
committing one per event, which takes a 33,600-slice instance from ~1 h to a few minutes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import dagster as dg
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from quant_assets.assets.ticks import CALENDAR_COMPLETE, RULES

#: The blocking checks of ``ticks`` (its row rules and the calendar check), each evaluated by every build.
TICKS_RULES = [*RULES, CALENDAR_COMPLETE]


@contextlib.contextmanager
def bulk_writes(instance: dg.DagsterInstance) -> Iterator[None]:
    """Within the block, the instance's SQLite event storage writes through one open connection
    per shard, unsynced, committed at the end. Only for an instance nothing else writes to."""
    storage = instance.event_log_storage
    if not hasattr(storage, "conn_string_for_shard"):  # not SQLite: nothing to batch
        yield
        return
    # The shards and their tables must exist before connections are held open.
    instance.report_runless_asset_event(dg.AssetObservation(asset_key="__bulk_init__"))
    conns: dict[str, tuple] = {}

    @contextlib.contextmanager
    def connect(shard: str):
        if shard not in conns:
            engine = create_engine(storage.conn_string_for_shard(shard), poolclass=NullPool)
            if shard not in storage._initialized_dbs:
                storage._initdb(engine)
                storage._initialized_dbs.add(shard)
            conn = engine.connect()
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.commit()
            conns[shard] = (engine, conn)
        yield conns[shard][1]

    patched = {"_connect": connect, "has_table": lambda *_a, **_k: True}
    for name, fn in patched.items():
        setattr(storage, name, fn)
    try:
        yield
    finally:
        for name in patched:
            delattr(storage, name)
        for engine, conn in conns.values():
            conn.commit()
            conn.close()
            engine.dispose()
        instance.wipe_assets([dg.AssetKey("__bulk_init__")])


def months_between(first: str, count: int) -> list[str]:
    """``count`` consecutive months from ``first`` (YYYY-MM)."""
    y, m = int(first[:4]), int(first[5:])
    out = []
    for _ in range(count):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def report_landing(instance: dg.DagsterInstance, slices: Iterable[tuple[str, str]], version: str = "v1") -> int:
    """Record what a landing-sensor run writes for each (month, symbol): a ``ticks``
    materialization with its data version and check evaluations, and ``funding``. Returns the
    number of events stored. A runless check evaluation is stored once per partition (Dagster
    keys them by run and partition), so a re-reported slice keeps its first, passing ones."""
    n = 0
    checked = instance.get_materialized_partitions(dg.AssetKey("ticks"))
    for month, symbol in slices:
        pk = f"{month}|{symbol}"
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="ticks", partition=pk, tags={"dagster/data_version": f"ticks-{pk}-{version}"}))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="funding", partition=pk, tags={"dagster/data_version": "not-applicable"}))
        if pk in checked:
            n += 2
            continue
        for name in TICKS_RULES:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("ticks"), check_name=name, passed=True,
                severity=dg.AssetCheckSeverity.ERROR, partition=pk))
        n += 2 + len(TICKS_RULES)
    return n


def symbols(count: int) -> list[str]:
    """``count`` distinct spot symbols (``S0000USDT`` ...)."""
    return [f"S{i:04d}USDT" for i in range(count)]


def report_chain(instance: dg.DagsterInstance, defs: dg.Definitions, slices: Iterable[tuple[str, str]],
                 version: str = "v1") -> int:
    """Record every month × symbol asset downstream of ``ticks`` as materialised for each slice
    (with the backtests' blocking-check evaluations), and every per-symbol roll-up once: the
    state of a lake the pipeline has fully built. Returns the number of events stored."""
    from quant_assets.engines.invariants import CHECKS

    graph = defs.resolve_asset_graph()
    def materializable(kind: type) -> list[dg.AssetKey]:
        # in dependency order, as runs write them (a child older than its parent would be stale)
        return [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable
                and isinstance(graph.get(k).partitions_def, kind)]

    # (the landing-fed tables are not downstream work: the book stays missing here, an optional input)
    slice_keys = [k for k in materializable(dg.MultiPartitionsDefinition) if k.path[-1] not in ("ticks", "funding", "book")]
    rollup_keys = materializable(dg.DynamicPartitionsDefinition)
    n, seen_symbols = 0, set()
    for month, symbol in slices:
        pk = f"{month}|{symbol}"
        seen_symbols.add(symbol)
        for key in slice_keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=key, partition=pk, tags={"dagster/data_version": f"{key.path[-1]}-{pk}-{version}"}))
            n += 1
            if key.path[-1].startswith("backtest_"):
                for name in CHECKS:
                    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                        asset_key=key, check_name=name, passed=True, severity=dg.AssetCheckSeverity.ERROR, partition=pk))
                    n += 1
    for symbol in sorted(seen_symbols):
        for key in rollup_keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=key, partition=symbol, tags={"dagster/data_version": f"{key.path[-1]}-{symbol}-{version}"}))
            n += 1
    return n


def warm_status_cache(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    """Build every partitioned asset's status cache (materialized / failed / in-progress
    subsets) as a live instance has it: Dagster updates it incrementally whenever the UI, a
    sensor or a schedule reads it, so only a freshly bulk-populated instance lacks it."""
    from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable and node.partitions_def is not None:
            get_and_update_asset_status_cache_value(instance, key, node.partitions_def)



def report_done(instance: dg.DagsterInstance, asset_partitions: Iterable[tuple[dg.AssetKey, str]], version: str) -> int:
    """Record each (asset, partition) as materialised with a new data version, as the runs
    automation requested would (backtests with their check evaluations). Returns events stored."""
    from quant_assets.engines.invariants import CHECKS

    n = 0
    pairs = list(asset_partitions)
    # runless check evaluations are stored once per partition (see report_landing)
    checked = {k: instance.get_materialized_partitions(k) for k in {k for k, _ in pairs} if k.path[-1].startswith("backtest_")}
    for key, pk in pairs:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, partition=pk, tags={"dagster/data_version": f"{key.path[-1]}-{pk}-{version}"}))
        n += 1
        if key in checked and pk not in checked[key]:
            for name in CHECKS:
                instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                    asset_key=key, check_name=name, passed=True, severity=dg.AssetCheckSeverity.ERROR, partition=pk))
                n += 1
    return n
