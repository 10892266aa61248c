"""Build one ``ticks`` partition (symbol × month) from the staged landing files.

The partition is a pure function of the landing files present now: every file of the
symbol that touches the month contributes its accepted rows; rows are sorted by
(``ts_recv``, ``seq``) and exact duplicates (same values in every column but ``seq``) are
kept once, the one with the lowest ``seq``. Ingesting a file twice, or two overlapping files,
therefore gives the same partition.

Two paths give that same result. Most exchange files are already in time order without
duplicates (staging records this as ``ordered``); when every source of the month is ordered
and their time ranges do not overlap, the rows are streamed straight into the partition in
bounded memory. Otherwise (overlapping or unordered files) the month is sorted and
de-duplicated: in memory when it fits the memory budget (``QUANT_MEMORY_BUDGET_MB``), else
slice by slice of ``ts_recv``; a month that would need more than ``MAX_SORT_SLICES`` slices is
refused with a message rather than left to the OOM killer.

The new partition is written to a temporary file, checked, and only then renamed over the
old one: a failure at any point (a crash, a failed blocking check) leaves the previous
partition untouched.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.ingest.landing import stage, survey, table_of, tables_of
from quant_assets.ingest.validate import month_start_ns, next_month
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.schema import DEDUPE_COLUMNS, TICK_COLUMNS
from quant_assets.lake.store import Lake, atomic_target, file_sha256, link_or_copy, sink, sweep_debris
from quant_assets.lake.symbols import normalise_symbol
from quant_assets.settings import MEMORY_BUDGET_ENV, memory_budget_bytes



class NoDataError(ValueError):
    """No landing file has valid ticks for the requested partition."""


@dataclass
class BuildResult:
    """What a partition build did; everything the Dagster layer reports as metadata."""

    symbol: str
    month: str
    path: Path
    rows: int
    quotes: int
    trades: int
    ts_min: int  # ns
    ts_max: int  # ns
    rejected: int  # rows of this month rejected by the row rules
    sha256: str  # of the published file: the partition's data version
    sources: list[FileRecord] = field(default_factory=list)
    failed: list[FileRecord] = field(default_factory=list)
    sort_slices: int = 1  # time slices the sorting build used to stay in the memory budget
    #: Depth files of the month: inputs of the ticks too (its quotes come from the book's top when
    #: no file has quotes; otherwise the quotes are compared with it).
    book_sources: list[FileRecord] = field(default_factory=list)
    #: When the month's quotes were derived from its book (``quant_assets.book.l1``): rows, the
    #: book's hash, level and gap spans; or ``reason`` why they could not be. None: not attempted.
    quotes_from_book: dict | None = None

    @property
    def source_fingerprint(self) -> str:
        """Hash of the contributing files' content hashes (what the partition was built from)."""
        return sources_fingerprint(with_book(self.sources, self.book_sources))


def with_book(sources: list[FileRecord], book: list[FileRecord]) -> list[FileRecord]:
    """``sources`` and the depth files not among them (a capture with a tick side is in both)."""
    have = {r.sha256 for r in sources}
    return sources + [r for r in book if r.sha256 not in have]


def sources_fingerprint(records: list[FileRecord]) -> str:
    return hashlib.sha256(",".join(sorted(r.sha256 for r in records)).encode()).hexdigest()[:20]


def month_frame(paths: list[Path], month: str) -> pl.LazyFrame:
    """Rows of ``month`` from staged or quarantine files; filtering on ``ts_event`` lets
    Parquet statistics skip row groups of other months."""
    lo, hi = month_start_ns(month), month_start_ns(next_month(month))
    return pl.scan_parquet(paths).filter((pl.col("ts_event") >= lo) & (pl.col("ts_event") < hi))


def streamable(sources: list[FileRecord]) -> bool:
    """True when the sources can be concatenated in ``recv_min`` order without a sort: each is
    ordered and each starts strictly after the previous one ends."""
    if not all(r.ordered for r in sources):
        return False
    spans = sorted((r.recv_min, r.recv_max) for r in sources)
    return all(prev[1] < nxt[0] for prev, nxt in zip(spans, spans[1:]))


#: Memory the sorting month build needs per row (polars sort + de-duplication of the month),
#: measured with bench/hardening_bench.py (about 180 B/row at 8M rows); rounded up for margin.
SORT_BYTES_PER_ROW = 250
#: More time slices than this means a month far beyond the machine: refused, not attempted.
MAX_SORT_SLICES = 256


class MemoryBudgetError(ValueError):
    """A month that cannot be built within the memory budget, even in slices."""


def _sorted_unique(lf: pl.LazyFrame) -> pl.LazyFrame:
    # Tie-break equal (ts_recv, seq) by a hash of the values so the order does not depend
    # on which file came first; equal hashes are then exact duplicates (or dropped below).
    return (
        lf.with_columns(pl.struct(DEDUPE_COLUMNS).hash(seed=0).alias("_h"))
        .sort("ts_recv", "seq", "_h")
        .unique(subset=DEDUPE_COLUMNS, keep="first", maintain_order=True)
        .drop("_h")
    )


def canonical_month(lake: Lake, symbol: str, sources: list[FileRecord], month: str) -> pl.LazyFrame:
    """The sorted, de-duplicated canonical ticks of ``month`` from staged ``sources``, in one
    plan (the sorting case holds the month in memory: see :func:`write_month`)."""
    if streamable(sources):
        ordered = sorted(sources, key=lambda r: r.recv_min)  # type: ignore[arg-type, return-value]
        return month_frame([lake.staging_path(symbol, r.sha256) for r in ordered], month).select(TICK_COLUMNS)
    staged = [lake.staging_path(symbol, r.sha256) for r in sources]
    return _sorted_unique(month_frame(staged, month).select(TICK_COLUMNS))


def sort_slices(sources: list[FileRecord], budget_bytes: int) -> int:
    """How many ``ts_recv`` slices the sorting build needs to stay within ``budget_bytes``
    (1: the whole month at once). Raises :class:`MemoryBudgetError` past ``MAX_SORT_SLICES``."""
    need = sum(r.rows_accepted or 0 for r in sources) * SORT_BYTES_PER_ROW
    # Twice the even share: ticks bunch in time, so equal time slices are not equal in rows.
    slices = max(1, -(-2 * need // budget_bytes)) if need > budget_bytes // 2 else 1
    if slices > MAX_SORT_SLICES:
        raise MemoryBudgetError(
            f"sorting {need / 2**30:.1f} GiB of ticks ({SORT_BYTES_PER_ROW} B/row) would take {slices} slices of a "
            f"{budget_bytes / 2**30:.1f} GiB budget ({MEMORY_BUDGET_ENV}); raise the budget or land fewer overlapping files"
        )
    return slices


def write_month(lake: Lake, symbol: str, sources: list[FileRecord], month: str, out: Path) -> int:
    """Write the canonical month to ``out``; returns the number of time slices used.

    Ordered, non-overlapping sources stream. Otherwise the month is sorted, in memory when it
    fits the budget, else in ``ts_recv`` slices: each slice is sorted and de-duplicated alone
    (duplicates share ``ts_recv``, so they fall in one slice) and the sorted slices are then
    concatenated by a streaming copy. Peak memory is about one slice.
    """
    if streamable(sources):
        sink(canonical_month(lake, symbol, sources, month), out)
        return 1
    slices = sort_slices(sources, memory_budget_bytes())
    if slices == 1:
        sink(canonical_month(lake, symbol, sources, month), out)
        return 1
    staged = month_frame([lake.staging_path(symbol, r.sha256) for r in sources], month).select(TICK_COLUMNS)
    lo = min(r.recv_min for r in sources if r.recv_min is not None)
    hi = max(r.recv_max for r in sources if r.recv_max is not None) + 1
    edges = [lo + (hi - lo) * i // slices for i in range(slices)] + [hi]
    parts: list[Path] = []
    try:
        for a, b in zip(edges, edges[1:]):
            part = lake.scratch_dir() / f"{uuid.uuid4().hex}-{symbol}-{month}-{len(parts):04d}.parquet"
            parts.append(part)
            sink(_sorted_unique(staged.filter((pl.col("ts_recv") >= a) & (pl.col("ts_recv") < b))), part)
        sink(pl.scan_parquet(parts), out)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return slices


def build_partition(
    lake: Lake,
    symbol: str,
    month: str,
    check: Callable[[Path, list[FileRecord]], None] | None = None,
) -> BuildResult:
    """Stage what is needed and (re)write ``ticks/symbol=S/month=M/part-0.parquet``.

    ``check(candidate, sources)`` is called on the candidate file before it replaces the
    published one; it raises to stop publication (blocking checks).
    """
    symbol = normalise_symbol(symbol)
    # Two runs of one partition (the sensor's and a manual one) must not interleave.
    with lake.lock(f"ticks-{symbol}-{month}"):
        return _build_locked(lake, symbol, month, check)


def _build_locked(lake: Lake, symbol: str, month: str, check: Callable[[Path, list[FileRecord]], None] | None) -> BuildResult:
    # New files are staged directly (staging finds their months); known ones only if they
    # touch this month.
    records = [
        stage(lake, symbol, r) if r.status == "seen" or (r.status != "failed" and month in r.months) else r
        for r in survey(lake, symbol, probe_new=False)
    ]
    # Staging recognises a new funding file and records it as such: it feeds ``funding``, not ticks;
    # a depth capture feeds ticks through its tick side (the book's own rows are not ticks).
    records = [v for r in records if (v := _as_ticks(lake, r)) is not None]
    failed = [r for r in records if r.status == "failed"]
    sources = [r for r in records if r.status == "staged" and month in r.months]
    quarantined = [lake.quarantine_path(symbol, r.sha256) for r in records if r.status == "staged" and r.rows_rejected]
    rejected = month_frame(quarantined, month).select(pl.len()).collect().item() if quarantined else 0
    # A staged file whose every row was rejected still counts as an input (its fingerprint)
    # but feeds no rows: it has no time span to order by.
    feeding = [r for r in sources if r.rows_accepted]
    book_sources = [r for r in survey(lake, symbol, probe_new=False, table="book")
                    if r.status == "staged" and month in r.months and table_of(r) == "book"]
    from_book = None
    if book_sources and not _has_quotes(lake, symbol, feeding, month):
        from_book, derived = _quotes_from_book(lake, symbol, month)
        if derived is not None:
            feeding = feeding + [derived]
    if not feeding:
        if from_book is not None:
            failed = failed + [FileRecord(path=f"book of {month}", symbol=symbol, size=0, mtime_ns=0, sha256="",
                                          status="failed", error=from_book.get("reason", "no quote derived"))]
        detail = f"; {rejected} rows of that month were rejected (see {lake.root / 'quarantine'})" if rejected else ""
        broken = f"; failed files: {[f'{r.path}: {r.error}' for r in failed]}" if failed else ""
        raise NoDataError(f"no valid ticks for {symbol} {month} in {lake.landing_dir(symbol)}{detail}{broken}")

    final = lake.ticks_path(symbol, month)
    sweep_debris(final.parent, final.name)  # what a killed earlier build left (we hold its lock)
    slices = 1
    with atomic_target(final) as tmp:
        lo, hi = month_start_ns(month), month_start_ns(next_month(month))
        (only,) = feeding if len(feeding) == 1 else (None,)
        if only is not None and only.ordered and lo <= only.event_min < hi and lo <= only.event_max < hi:
            # One ordered file holding exactly this month (the usual monthly exchange file):
            # the staged file already is the partition; link it instead of rewriting it.
            link_or_copy(lake.staging_path(symbol, only.sha256), tmp)
        else:
            slices = write_month(lake, symbol, feeding, month, tmp)
        stats = (
            pl.scan_parquet(tmp)
            .select(
                pl.len().alias("rows"),
                (pl.col("kind") == "quote").sum().alias("quotes"),
                (pl.col("kind") == "trade").sum().alias("trades"),
                pl.col("ts_event").min().alias("ts_min"),
                pl.col("ts_event").max().alias("ts_max"),
            )
            .collect()
            .row(0, named=True)
        )
        if stats["rows"] == 0:
            raise NoDataError(f"no valid ticks for {symbol} {month}: all {rejected} rows were rejected (see {lake.root / 'quarantine'})")
        if check is not None:
            check(tmp, sources)
        sha = file_sha256(tmp)
    return BuildResult(
        symbol=symbol, month=month, path=final, rejected=rejected, sha256=sha,
        sources=sources, failed=failed, sort_slices=slices, book_sources=book_sources, quotes_from_book=from_book,
        **{k: int(v) for k, v in stats.items()},
    )


def _has_quotes(lake: Lake, symbol: str, feeding: list[FileRecord], month: str) -> bool:
    """Whether any staged tick file of the month has a quote (reads only ``kind``, stops early)."""
    if not feeding:
        return False
    frame = month_frame([lake.staging_path(symbol, r.sha256) for r in feeding], month)
    return frame.filter(pl.col("kind") == "quote").select("kind").head(1).collect().height > 0


def _quotes_from_book(lake: Lake, symbol: str, month: str) -> tuple[dict, FileRecord | None]:
    """The month's quotes from its book's top: builds the book (or reuses it: same sources and code
    give the published one) and stages its top changes. A book that cannot be built gives no
    quotes, with the reason."""
    from quant_assets.book.build import BookBlocked, BookInputError, build_book
    from quant_assets.book.l1 import derive_quotes

    try:
        build_book(lake, symbol, month)
    except (BookBlocked, BookInputError) as exc:
        return {"rows": 0, "reason": f"the month's book could not be built: {exc}"}, None
    derived = derive_quotes(lake, symbol, month)
    if derived is None or derived.rows == 0:
        return {"rows": 0, "reason": "the month's book has no two-sided top"}, None
    return {"rows": derived.rows, "book_sha256": derived.book_sha256, "level": derived.level,
            "gaps": derived.gaps}, derived.record


def _as_ticks(lake: Lake, rec: FileRecord) -> FileRecord | None:
    """``rec`` as a source of ticks: itself, a depth capture's tick side, or None (not ticks)."""
    from quant_assets.book.staging import ticks_view

    if rec.status == "failed":
        return rec
    if "ticks" not in tables_of(rec):
        return None
    return ticks_view(lake, rec)


def expected_fingerprint(lake: Lake, symbol: str, month: str) -> str | None:
    """Fingerprint of the files that would feed (symbol, month) now, from the manifest
    (after a ``survey``); None when no file touches it."""
    return expected_fingerprints(lake, symbol).get(month)


def expected_fingerprints(lake: Lake, symbol: str, surveyed: list[FileRecord] | None = None) -> dict[str, str]:
    """:func:`expected_fingerprint` of every month some file of ``symbol`` touches, from one
    survey instead of one per month (a month absent from the result has no file: None).
    ``surveyed``: the records of ``survey(lake, symbol, table=None)`` when the caller already
    has them (one survey shared with the funding fingerprints)."""
    records = survey(lake, symbol, table=None) if surveyed is None else surveyed
    by_month: dict[str, list[FileRecord]] = {}
    book: dict[str, list[FileRecord]] = {}
    for rec in records:
        if rec.status == "failed":
            continue
        # a depth file is an input of its months' ticks (derived quotes, or the comparison)
        into = by_month if "ticks" in tables_of(rec) else book if table_of(rec) == "book" else None
        if into is not None:
            for month in set(rec.months):
                into.setdefault(month, []).append(rec)
        if into is by_month and table_of(rec) == "book":
            for month in set(rec.months):
                book.setdefault(month, []).append(rec)
    return {month: sources_fingerprint(with_book(by_month.get(month, []), book.get(month, [])))
            for month in by_month.keys() | book.keys()}
