"""The landing manifest: one row per landed file, at ``<lake>/manifest/landing.parquet``.

Each row records what we know of the file's current content (size, mtime, SHA-256), its
format, its status (``probed``: months known; ``staged``: parsed and validated; ``failed``:
unreadable, with the reason), row counts and the months it touches. Updates are
read-modify-write under an inter-process lock, written atomically.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.lake.store import Lake, file_sha256, sweep_debris

MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "path": pl.String(),
    "symbol": pl.String(),
    "size": pl.Int64(),
    "mtime_ns": pl.Int64(),
    "sha256": pl.String(),
    "format": pl.String(),
    "status": pl.String(),
    "error": pl.String(),
    "months": pl.List(pl.String()),
    "rows_accepted": pl.Int64(),
    "rows_rejected": pl.Int64(),
    "recv_min": pl.Int64(),
    "recv_max": pl.Int64(),
    "event_min": pl.Int64(),
    "event_max": pl.Int64(),
    "ordered": pl.Boolean(),
    "updated_at_ns": pl.Int64(),
}


@dataclass
class FileRecord:
    """What the lake knows of one landing file."""

    path: str  # relative to the lake root
    symbol: str
    size: int
    mtime_ns: int
    sha256: str
    format: str | None = None
    status: str = "seen"
    error: str | None = None
    months: list[str] = field(default_factory=list)
    rows_accepted: int | None = None
    rows_rejected: int | None = None
    #: First and last ``ts_recv`` (ns) of the accepted rows.
    recv_min: int | None = None
    recv_max: int | None = None
    #: First and last ``ts_event`` (ns) of the accepted rows.
    event_min: int | None = None
    event_max: int | None = None
    #: Accepted rows strictly increase on (ts_recv, seq) in file order and no two rows are
    #: duplicates: the file can be streamed into a partition without a sort.
    ordered: bool | None = None
    updated_at_ns: int = 0


def read_manifest(lake: Lake) -> dict[str, FileRecord]:
    """All records by path (empty when nothing has landed yet)."""
    if not lake.manifest_path.exists():
        return {}
    df = pl.read_parquet(lake.manifest_path)
    return {row["path"]: FileRecord(**row) for row in df.iter_rows(named=True)}


def upsert(lake: Lake, records: list[FileRecord]) -> None:
    """Insert or replace ``records`` by path."""
    if not records:
        return
    with lake.lock("manifest"):
        sweep_debris(lake.manifest_path.parent, lake.manifest_path.name)  # a killed update's temp file
        current = read_manifest(lake)
        now = time.time_ns()
        for rec in records:
            rec.updated_at_ns = now
            current[rec.path] = rec
        rows = [asdict(r) for r in sorted(current.values(), key=lambda r: r.path)]
        lake.write_parquet(pl.DataFrame(rows, schema=MANIFEST_SCHEMA), lake.manifest_path)


def fingerprint(lake: Lake, path: Path, known: dict[str, FileRecord], symbol: str, rel: str | None = None) -> FileRecord:
    """The record for ``path``'s current content: reused from ``known`` when size and mtime
    are unchanged (no re-hash), else a fresh ``seen`` record with a new SHA-256. ``rel``:
    ``lake.relative(path)`` when the caller knows it."""
    st = path.stat()
    rel = lake.relative(path) if rel is None else rel
    prev = known.get(rel)
    if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
        return prev
    return FileRecord(path=rel, symbol=symbol, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=file_sha256(path))
