"""The fetch ledger: every download outcome, append-only, one JSON line each.

``<lake>/fetch/<source>.jsonl`` (:meth:`Lake.fetch_ledger_path`), appended with
:meth:`Lake.append_line` under the lake lock ``fetch-ledger-<source>``. A row:

======== =====================================================================================
at       UTC time of the outcome (ISO 8601, ``Z``)
source, dataset, symbol, period
         the key: ``symbol`` is the landing folder, ``period`` ``YYYY-MM`` or ``YYYY-MM-DD``
url      the file's URL (never a key: keys travel in headers)
name     the logical landing name (``BTCUSDT-trades-2024-03.zip``)
landing  lake-relative path of the version that holds these bytes (``landed``/``unchanged``)
version  that version (1: the name as published; 2+: ``name~vN``, a re-upload)
sha256   hex SHA-256 of those bytes (or the checksum the source published, ``unchanged``)
size     bytes
status   ``landed`` new bytes renamed into landing; ``unchanged`` the source still publishes
         the bytes already landed (nothing downloaded, or the download matched);
         ``not_published`` 404 for the newest period (try later); ``missing`` 404 while a later
         period of the same dataset exists (a gap at the source); ``refused`` failed
         verification (nothing landed); ``failed`` the request did not succeed (``reason``)
reason   why, for every status but ``landed``/``unchanged`` (empty otherwise)
======== =====================================================================================

:func:`state` reads every line with Polars (one scan, no Python loop over rows) and gives the
latest outcome of each key plus what was last landed for it: the planner's "already have it".
A line torn by a writer killed mid-append (it does not end in ``}``) is skipped: the file it
described landed before the line was written, so the next fetch downloads it again, finds the
same bytes in landing and records it ``unchanged`` (no new version).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import polars as pl

from quant_assets.lake.store import Lake

STATUSES = ("landed", "unchanged", "not_published", "missing", "refused", "failed")
KEY = ["source", "dataset", "symbol", "period"]
SCHEMA: dict[str, pl.DataType] = {
    "at": pl.String(), "source": pl.String(), "dataset": pl.String(), "symbol": pl.String(), "period": pl.String(),
    "url": pl.String(), "name": pl.String(), "landing": pl.String(), "version": pl.Int64(), "sha256": pl.String(),
    "size": pl.Int64(), "status": pl.String(), "reason": pl.String(),
}
#: Columns of :func:`state`.
STATE_SCHEMA: dict[str, pl.DataType] = {
    **{k: pl.String() for k in KEY}, "status": pl.String(), "reason": pl.String(), "at": pl.String(),
    "landed_sha256": pl.String(), "landed_version": pl.Int64(), "landed_path": pl.String(),
    "landed_size": pl.Int64(), "landed_at": pl.String(),
}


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row(rf: Any, status: str, *, reason: str | None = None, landing: str | None = None, version: int | None = None,
        sha256: str | None = None, size: int | None = None, at: datetime | None = None) -> dict[str, Any]:
    """A ledger row for RemoteFile ``rf`` (see the module table)."""
    if status not in STATUSES:
        raise ValueError(f"ledger status {status!r}: expected one of {', '.join(STATUSES)}")
    return {"at": now_iso(at), "source": rf.source, "dataset": rf.dataset, "symbol": rf.symbol, "period": rf.period,
            "url": rf.url, "name": rf.name, "landing": landing, "version": version, "sha256": sha256, "size": size,
            "status": status, "reason": reason}


def append(lake: Lake, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (all of one source or several) to their sources' ledgers, durably."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    for source, items in by_source.items():
        path = lake.fetch_ledger_path(source)
        with lake.lock(f"fetch-ledger-{source}"):
            for r in items:
                lake.append_line(json.dumps({k: r.get(k) for k in SCHEMA}, separators=(",", ":")), path)


def scan(lake: Lake, sources: list[str] | None = None) -> pl.LazyFrame:
    """Every complete ledger line as a LazyFrame of :data:`SCHEMA` plus ``row`` (line order
    within its source's file). Read as raw lines then JSON-decoded, so a torn last line of a
    killed writer is skipped instead of failing the whole read."""
    folder = lake.root / "fetch"
    if sources is None:
        paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    else:
        paths = [p for p in (lake.fetch_ledger_path(s) for s in sources) if p.exists()]
    paths = [p for p in paths if p.stat().st_size > 0]
    if not paths:
        return pl.LazyFrame(schema={"row": pl.UInt32(), **SCHEMA})
    frames = []
    for p in paths:
        # \x1f never appears raw in a JSON line (json.dumps escapes control characters).
        lines = pl.scan_csv(p, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String()})
        frames.append(
            lines.filter(pl.col("line").str.starts_with("{") & pl.col("line").str.ends_with("}"))
            .with_row_index("row")
            .select("row", pl.col("line").str.json_decode(pl.Struct(SCHEMA)).alias("r"))
            .unnest("r")
        )
    return pl.concat(frames, how="vertical")


def state(lake: Lake, sources: list[str] | None = None) -> pl.DataFrame:
    """Per key (source, dataset, symbol, period): the latest outcome (``status``, ``reason``,
    ``at``) and the last bytes landed for it (``landed_*``: null when nothing ever landed).
    ``unchanged`` rows count as landed (they name the version that holds the bytes)."""
    good = pl.col("status").is_in(["landed", "unchanged"])
    out = (
        scan(lake, sources).sort("source", "row")
        .group_by(KEY, maintain_order=True)
        .agg(
            pl.col("status").last(), pl.col("reason").last(), pl.col("at").last(),
            pl.col("sha256").filter(good).last().alias("landed_sha256"),
            pl.col("version").filter(good).last().alias("landed_version"),
            pl.col("landing").filter(good).last().alias("landed_path"),
            pl.col("size").filter(good).last().alias("landed_size"),
            pl.col("at").filter(good).last().alias("landed_at"),
        )
        .collect()
    )
    return out.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)  # type: ignore[arg-type]


def months_covered_by_days(st: pl.DataFrame) -> pl.DataFrame:
    """(source, dataset, symbol, month) whose every calendar day has landed as a daily file:
    a monthly file of such a month would only repeat those bytes."""
    day = pl.col("period")
    daily = st.filter((day.str.len_chars() == 10) & pl.col("landed_sha256").is_not_null())
    if daily.is_empty():
        return pl.DataFrame(schema={"source": pl.String, "dataset": pl.String, "symbol": pl.String, "month": pl.String})
    return (
        daily.with_columns(month=day.str.slice(0, 7))
        .group_by("source", "dataset", "symbol", "month").agg(n=pl.len())
        .with_columns(days=(pl.col("month") + "-01").str.to_date().dt.month_end().dt.day())
        .filter(pl.col("n") >= pl.col("days"))
        .select("source", "dataset", "symbol", "month")
    )
