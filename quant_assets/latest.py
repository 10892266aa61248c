"""The latest materialization of every partition of an asset, in bulk: what planning
(:func:`quant_assets.sync.plan`) reads from the Dagster instance.

Planning needs, per asset partition, a handful of facts of its latest materialization: its
storage id, timestamp, data version, the provenance Dagster recorded (code version, the data
version and event pointer of each input) and a few metadata values (row count, the fidelity and
source fingerprint of ``ticks``). Only the data version is indexed by Dagster; the rest lives in
the serialised event, and deserialising it is what costs: measured on this machine (2 cores),
0.3 ms for a 3 KB event and 0.7 ms for a metric set's 60 KB (its equity-curve image), so the
latest record of 24 assets × 33,600 slices (800k events) would take 4-9 minutes, every time.

A stored event never changes (its storage id names it), so its facts are cached, per asset, in
one file beside the instance (``<DAGSTER_HOME>/quant_assets/latest/``), in columns (a 33,600-row
asset unpickles in ~15 ms; one tuple per row took 100 ms). A :func:`load` first reads every
asset's record (one query for all of them: its last materialization); an asset whose last event
is the cache's newest has nothing new and costs no other query (the usual case: a warm plan of
400 x 84 makes none). Any other asset costs one query for the latest storage id of every
partition (which also notices wiped ones) and one for the events stored since the cache's
cursor, which alone are deserialised: the cost follows the work done since the last plan. The
first load of an existing instance pays once for the latest event of every partition (measured:
97 s at 400 x 84 with bulk-reported events, minutes more with real runs' metadata), saving asset
by asset, so an interrupted first load keeps what it did.

The events since the cursor are read in order, so each partition also keeps the data versions of
the events it superseded (its most recent :data:`HISTORY` ones): Dagster's staleness asks for
"the data version of the latest event of this partition at or before storage id N" (an input
pointer), and :meth:`AssetLatest.version_at` answers it from that chain when it reaches back to
N, or says it cannot (the caller then asks the instance).

Limits: the cache trusts storage ids. Dagster's SQLite event log reuses the ids of deleted rows
at the top of the table, so an asset wiped and re-materialised could give a partition the very
id its cached event had; the asset record's timestamp catches that for the asset's newest event
only, so delete the cache folder after wiping assets. An event committed after one with a
higher id (concurrent writers on Postgres; SQLite writes one at a time) is missed by the scan
past the cursor: if it is its partition's latest, the storage-id check reloads it; if a later
event superseded it before the next plan, it is missing from that partition's history, and a
pointer falling between the two would read the older data version.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG, DataProvenance
from dagster._core.events import DagsterEventType

#: Bumped whenever the cached columns change meaning: an older file is ignored and rebuilt.
FORMAT = 1

#: Metadata values kept per event (``.value`` of the entry): the row count every status shows,
#: and what the plan reads of ``ticks`` / ``funding`` (fidelity, its inputs, source fingerprint).
METADATA = ("dagster/row_count", "fidelity", "quotes", "trades", "source_fingerprint")

#: Superseded events whose data version each partition keeps (most recent first).
HISTORY = 4

#: Storage ids per ``fetch_materializations`` call (its limit is 10,000).
CHUNK = 5_000

_OLD_DATA_VERSION_TAG = "dagster/logical_version"


@dataclass
class AssetLatest:
    """The latest materialization of each partition of one asset, in columns (row ``i`` is
    partition ``partitions[i]``). ``timestamp`` in seconds since the epoch (the event's);
    ``code_version`` None means the event carries no provenance (a runless report);
    ``inputs`` holds the assets whose input data version was recorded and ``pointers`` the
    recorded storage id per input (None for Dagster's "NULL"); ``metadata`` the
    :data:`METADATA` values present. ``history[pk]`` lists (storage id, data version) of
    the events ``pk`` superseded while this cache watched, newest first, with no gap: every
    event of ``pk`` between the oldest listed and the latest is listed. ``cursor``: the newest
    storage id accounted for; a later refresh reads only the events after it."""

    asset: str
    partitions: list[str] = field(default_factory=list)
    storage_id: list[int] = field(default_factory=list)
    timestamp: list[float] = field(default_factory=list)
    data_version: list[str | None] = field(default_factory=list)
    code_version: list[str | None] = field(default_factory=list)
    inputs: list[tuple[str, ...]] = field(default_factory=list)
    pointers: list[dict[str, int | None]] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    cursor: int = 0
    index: dict[str, int] = field(default_factory=dict, repr=False)

    COLUMNS = ("partitions", "storage_id", "timestamp", "data_version", "code_version", "inputs", "pointers", "metadata")

    def get(self, pk: str) -> int | None:
        """Row of partition ``pk``, None when it was never materialised."""
        return self.index.get(pk)

    def version_at(self, pk: str, storage_id: int) -> tuple[bool, str | None]:
        """(known, data version) of the latest event of ``pk`` with a storage id <= ``storage_id``;
        known is False when the cached chain does not reach back that far."""
        i = self.index.get(pk)
        if i is None:
            return False, None
        if self.storage_id[i] <= storage_id:
            return True, self.data_version[i]
        for sid, dv in self.history.get(pk, ()):
            if sid <= storage_id:
                return True, dv
        return False, None

    # ---- updates --------------------------------------------------------------------
    def _put(self, pk: str, facts: tuple, keep_history: bool) -> None:
        i = self.index.get(pk)
        if i is None:
            self.index[pk] = len(self.partitions)
            self.partitions.append(pk)
            for name, value in zip(self.COLUMNS[1:], facts):
                getattr(self, name).append(value)
            return
        if facts[0] == self.storage_id[i] or (keep_history and facts[0] < self.storage_id[i]):
            return  # read again (a rescan after a wipe lowered the cursor): nothing new
        if keep_history:
            chain = [(self.storage_id[i], self.data_version[i]), *self.history.get(pk, ())]
            self.history[pk] = chain[:HISTORY]
        else:
            self.history.pop(pk, None)  # a gap: the chain restarts at this event
        for name, value in zip(self.COLUMNS[1:], facts):
            getattr(self, name)[i] = value

    def _drop(self, gone: set[str]) -> None:
        keep = [i for i, pk in enumerate(self.partitions) if pk not in gone]
        for name in self.COLUMNS:
            column = getattr(self, name)
            setattr(self, name, [column[i] for i in keep])
        self.index = {pk: i for i, pk in enumerate(self.partitions)}
        for pk in gone:
            self.history.pop(pk, None)

    # ---- persistence ----------------------------------------------------------------
    def dump(self, path: Path) -> None:
        """Write atomically (a concurrent reader sees the old file or the new one; two writers:
        the last wins, and either file is a valid cache)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"format": FORMAT, "asset": self.asset, "cursor": self.cursor, "history": self.history,
                 **{name: getattr(self, name) for name in self.COLUMNS}}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path, asset: str) -> AssetLatest:
        """The cached facts of ``asset`` at ``path``; empty when absent, unreadable or of
        another format."""
        try:
            with open(path, "rb") as fh:
                state = pickle.load(fh)
            if state.get("format") != FORMAT or state.get("asset") != asset:
                raise ValueError("other format")
            out = cls(asset, cursor=state["cursor"], history=state["history"],
                      **{name: state[name] for name in cls.COLUMNS})
        except (OSError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError, AttributeError):
            return cls(asset)
        out.index = {pk: i for i, pk in enumerate(out.partitions)}
        return out


def facts_of(record: dg.EventLogRecord) -> tuple:
    """The cached columns (after ``partitions``) of one materialization record."""
    mat = record.asset_materialization
    assert mat is not None
    tags = mat.tags or {}
    provenance = DataProvenance.from_tags(tags)
    meta = {label: mat.metadata[label].value for label in METADATA if label in mat.metadata}
    if provenance is None:
        code_version, inputs, pointers = None, (), {}
    else:
        code_version = provenance.code_version
        inputs = tuple(sorted(k.to_user_string() for k in provenance.input_data_versions))
        pointers = {k.to_user_string(): v for k, v in provenance.input_storage_ids.items()}
    return (record.storage_id, record.timestamp, tags.get(DATA_VERSION_TAG) or tags.get(_OLD_DATA_VERSION_TAG),
            code_version, inputs, pointers, meta)


def cache_dir(instance: dg.DagsterInstance) -> Path | None:
    """Where the facts of ``instance`` are cached; None for an instance without a local
    directory (nothing is persisted then)."""
    try:
        root = instance.root_directory
    except Exception:  # noqa: BLE001 - an instance without local artifact storage
        return None
    return Path(root) / "quant_assets" / "latest" if root else None


def _file(directory: Path, key: dg.AssetKey) -> Path:
    return directory / ("__".join(key.path) + ".pickle")


def _fetch(instance: dg.DagsterInstance, key: dg.AssetKey, storage_ids: list[int]) -> Iterable[dg.EventLogRecord]:
    for start in range(0, len(storage_ids), CHUNK):
        chunk = storage_ids[start:start + CHUNK]
        yield from instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)).records


def _since(instance: dg.DagsterInstance, key: dg.AssetKey, cursor: int) -> Iterable[dg.EventLogRecord]:
    """Every materialization of ``key`` stored after ``cursor``, oldest first."""
    page = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor),
                                                 limit=CHUNK, cursor=page, ascending=True)
        yield from result.records
        if not result.has_more:
            return
        page = result.cursor


def unchanged(cached: AssetLatest, record: dg.AssetRecord | None) -> bool:
    """Whether the asset's record (one row per asset, read for all assets in one query) shows
    nothing new since ``cached``: its last materialization is the cache's newest event, same
    storage id and timestamp. Every stored materialization updates that row and wiping the
    asset deletes it (Dagster's SQL storages cannot wipe single partitions), so a match means
    no event was added or removed; the timestamp guards against an id reused after a wipe."""
    last = record.asset_entry.last_materialization_record if record is not None else None
    if last is None:
        return not cached.partitions and not cached.cursor  # never materialised, as cached
    if not cached.partitions or last.storage_id != cached.cursor:
        return False
    try:
        row = cached.storage_id.index(last.storage_id)
    except ValueError:
        return False
    return cached.timestamp[row] == last.timestamp


def refresh(instance: dg.DagsterInstance, key: dg.AssetKey, cached: AssetLatest) -> bool:
    """Bring ``cached`` up to date with the instance; True when anything changed.

    One query for the latest storage id of every partition, then: with a cursor, the events
    stored since it, oldest first (so superseded ones enter the history); without one (a
    first load), the latest event of each partition by storage id. A partition whose latest
    id still differs from the cache (a wipe, or an event stored out of order) is loaded by id
    with its history restarted, and partitions no longer materialised are dropped."""
    latest_ids: Mapping[str, int] = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION)
    changed = False
    top = max(latest_ids.values(), default=0)
    if cached.cursor and top > cached.cursor:
        for record in _since(instance, key, cached.cursor):
            if record.partition_key is not None:
                cached._put(record.partition_key, facts_of(record), keep_history=True)
                changed = True
    stale = [sid for pk, sid in latest_ids.items() if (i := cached.index.get(pk)) is None or cached.storage_id[i] != sid]
    for record in _fetch(instance, key, sorted(stale)):
        cached._put(record.partition_key, facts_of(record), keep_history=False)
        changed = True
    gone = set(cached.index) - set(latest_ids)
    if gone:
        cached._drop(gone)
        changed = True
    if top != cached.cursor:
        # every event up to the top id is now known (those after the old cursor were read in
        # order, or the latest of each partition was loaded): later refreshes read past it
        cached.cursor = top
        changed = True
    return changed


def load(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> dict[dg.AssetKey, AssetLatest]:
    """The latest-materialization facts of every asset of ``keys``, refreshed from the
    instance (see the module docstring); each asset's cache file is rewritten when it changed."""
    directory = cache_dir(instance)
    keys = list(keys)
    records = {r.asset_entry.asset_key: r for r in instance.get_asset_records(keys)}
    out = {}
    for key in keys:
        name = key.to_user_string()
        cached = AssetLatest.read(_file(directory, key), name) if directory else AssetLatest(name)
        if unchanged(cached, records.get(key)):
            out[key] = cached  # the common case of a warm cache: no query for this asset
            continue
        if refresh(instance, key, cached) and directory is not None:
            try:
                cached.dump(_file(directory, key))
            except OSError:
                pass  # a read-only home: plan from memory, the cache is only an accelerator
        out[key] = cached
    return out


def missing_from_cache(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> list[dg.AssetKey]:
    """The assets of ``keys`` with materializations but no cache file yet: a plan over them
    would first read every partition's latest record (minutes at 400 symbols × 84 months)."""
    directory = cache_dir(instance)
    keys = list(keys)
    materialized = {r.asset_entry.asset_key for r in instance.get_asset_records(keys)
                    if r.asset_entry.last_materialization_storage_id}
    return [k for k in keys if k in materialized and (directory is None or not _file(directory, k).exists())]
