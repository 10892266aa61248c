"""Build one ``book`` partition (symbol × month) from the staged depth files of its month.

The partition is a pure function of the depth files in the landing folder now (and of the code):

1. **Sources.** Every staged depth file whose rows touch the month, plus, for the *warm-up*, the
   files from the last snapshot before the month's first instant: the book at 00:00 of the 1st is
   rebuilt from the source's own snapshot and the deltas after it (never a guess), so the month's
   first day file can start with it. Two files of updates must not overlap in time (one depth
   stream per instrument-month; a file of snapshots only may overlap anything). Files of L2 and
   L3 depth do not mix.
2. **Stream, day by day.** For each UTC day (receive time) the day's rows of every source are read
   (Parquet statistics skip the other days' row groups), sorted by (``ts_recv``, ``seq``, source,
   line) and passed through :class:`quant_assets.book.validate.Stream`, which applies the rules of
   :mod:`quant_assets.book.validate` while it rebuilds the book. Memory is one day of rows plus
   the book: a month of 50M+ deltas is never held.
3. **Publish.** Each day with published rows becomes ``day=DD/part-0.parquet``, beginning with the
   full snapshot of the book at its first delta; each is checked on its own (sorted, replays
   alone to exactly the book the stream holds at its end, never crossed). ``manifest.json`` is
   written last, and the month folder replaces the published one in one atomic swap. A blocking
   rule broken anywhere raises :class:`BookBlocked`: nothing is published, the previous partition
   stays as it was. The rows set aside (gaps, stale snapshots, duplicates, and on a blocking
   failure the offending message) go to ``quarantine/symbol=S/book-month=M.parquet``, rewritten
   by every build, each with its source file, line and reason.

A month whose sources and code are those of its published ``manifest.json`` is not rebuilt
(``reused``): the landing sensor and ``quant-assets sync`` run ``book`` beside every ``ticks``
run, and a month of depth is expensive to rebuild for nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from quant_assets.book.schema import ACTION, BOOK_COLUMNS, BOOK_SCHEMA, DEPTH_L3, F_GAP_RESET
from quant_assets.book.formats import foreign
from quant_assets.book.staging import read_facts
from quant_assets.ingest.build import sources_fingerprint
from quant_assets.ingest.validate import month_start_ns, next_month
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.store import ROW_GROUP_ROWS, ZSTD_LEVEL, Lake, atomic_dir, file_sha256
from quant_assets.lake.symbols import normalise_symbol

if TYPE_CHECKING:
    from quant_assets.book.replay import Book


class _Lazy:
    """The compiled kernels' module, imported on first use: the Dagster definitions import this
    module (for BOOK_VERSION, CHECKS and the fingerprints) and must not pay numba's import."""

    def __getattr__(self, name: str):
        import quant_assets.book.validate as mod

        return getattr(mod, name)


V = _Lazy()
#: ``action`` names in the order of the Enum (its physical codes are the kernels' integers).
ACTION_NAMES = tuple(ACTION.categories)

#: Bump when the build changes what a partition contains (the Dagster asset's code version).
BOOK_VERSION = "1"

NS_PER_DAY = 86_400 * 1_000_000_000
#: The source fingerprint of a month no depth file touches (of the empty set).
NO_SOURCES_FP = sources_fingerprint([])
APPLIED, REUSED, NONE = "applied", "reused", "none"

#: The checks of a build: name -> (blocking, what passing means).
CHECKS: dict[str, tuple[bool, str]] = {
    "book_sizes_non_negative": (True, "every size >= 0 (a negative size means the source is not absolute sizes)"),
    "book_not_crossed": (True, "best bid < best ask after every message and snapshot"),
    "book_starts_with_snapshot": (True, "the month's updates have a snapshot to start from; every day file opens with a full snapshot "
                                        "(updates before the first snapshot are quarantined and their span recorded)"),
    "book_gaps_recovered": (True, "every sequence gap is followed by a snapshot within the month (the book resets there)"),
    "book_days_replay": (True, "each day file is sorted by (ts_recv, seq) and replays alone to the book the month's stream holds at its end"),
    "book_gaps": (False, "no gap in the month (a recovered gap is a warning: its span is in the metadata, its rows in the quarantine)"),
}


class BookInputError(ValueError):
    """The month's depth files cannot be combined (overlapping streams, L2 with L3); nothing changes."""


@dataclass
class Outcome:
    name: str
    passed: bool
    detail: str = ""
    count: int = 0

    @property
    def blocking(self) -> bool:
        return CHECKS[self.name][0]


class BookBlocked(Exception):
    """A blocking check failed; the published partition is unchanged."""

    def __init__(self, symbol: str, month: str, outcomes: list[Outcome], quarantine: Path | None) -> None:
        self.outcomes = outcomes
        bad = [f"{o.name}: {o.detail}" for o in outcomes if not o.passed and o.blocking]
        where = f"; rows and reasons in {quarantine}" if quarantine else ""
        super().__init__(f"{symbol} {month}: blocking book checks failed: " + "; ".join(bad) + where)


@dataclass
class BookBuild:
    """What a book build did; everything the Dagster layer reports."""

    symbol: str
    month: str
    status: str  # applied | reused | none
    level: str | None = None
    path: Path | None = None
    rows: int = 0  # published rows, opening snapshots included
    deltas: int = 0  # published rows that are not snapshot rows
    snapshot_rows: int = 0
    messages: int = 0
    days: list[dict] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)
    quarantined: int = 0
    max_levels: tuple[int, int] = (0, 0)  # (bid, ask) levels held at most
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[FileRecord] = field(default_factory=list)
    warmup: list[FileRecord] = field(default_factory=list)
    failed: list[FileRecord] = field(default_factory=list)
    sha256: str | None = None  # of the day files' hashes: the partition's data version
    seconds: float = 0.0
    #: Of the month's files and the previous month's (its possible warm-up): what
    #: :func:`expected_fingerprints` computes from the manifest, compared by sync and the sensor.
    source_fingerprint: str = NO_SOURCES_FP


# ---- sources --------------------------------------------------------------------------------

def book_records(lake: Lake, symbol: str) -> list[FileRecord]:
    """The manifest records of ``symbol``'s depth files (new files staged first), failed ones too."""
    from quant_assets.ingest.landing import survey, table_of

    return [r for r in survey(lake, symbol, table="book") if r.status == "failed" and r.format is None
            or table_of(r) == "book"]


def _dedupe(records: list[FileRecord]) -> list[FileRecord]:
    seen, out = set(), []
    for r in sorted(records, key=lambda r: r.path):
        if r.sha256 not in seen:
            seen.add(r.sha256)
            out.append(r)
    return out


def _previous_month(month: str) -> str:
    y, m = (int(x) for x in month.split("-"))
    return f"{y - (m == 1)}-{(m - 2) % 12 + 1:02d}"


def month_sources(records: list[FileRecord], month: str) -> tuple[list[FileRecord], list[FileRecord]]:
    """(files touching ``month``, files touching only the month before: warm-up candidates)."""
    ok = [r for r in records if r.status == "staged"]
    sources = _dedupe([r for r in ok if month in r.months])
    have = {r.sha256 for r in sources}
    prev = _previous_month(month)
    warm = _dedupe([r for r in ok if prev in r.months and month not in r.months and r.sha256 not in have])
    return sources, warm


NO_SOURCES = NO_SOURCES_FP


def expected_fingerprints(lake: Lake, symbol: str, surveyed: list[FileRecord] | None = None) -> dict[str, str]:
    """The source fingerprint of each month some depth file touches (its files and the previous
    month's, which its warm-up may read); any other month has :data:`NO_SOURCES`. ``surveyed``:
    the records of ``survey(lake, symbol, table=None)`` when the caller has them."""
    from quant_assets.ingest.landing import table_of

    records = book_records(lake, symbol) if surveyed is None else [r for r in surveyed if table_of(r) == "book"]
    months = {m for r in records if r.status == "staged" for m in r.months}
    out = {}
    for month in months:
        sources, warm = month_sources(records, month)
        out[month] = sources_fingerprint(sources + warm)
    return out


def expected_fingerprint(lake: Lake, symbol: str, month: str) -> str:
    return expected_fingerprints(lake, symbol).get(month, NO_SOURCES)


@dataclass
class _Source:
    rec: FileRecord
    path: Path
    facts: dict
    mode: int
    index: int


def _check_sources(symbol: str, month: str, sources: list[_Source]) -> str:
    """The month's level; raises :class:`BookInputError` on L2 mixed with L3 or overlapping streams."""
    levels = {s.facts["level"] for s in sources}
    if len(levels) > 1:
        names = ", ".join(f"{s.rec.path} ({s.facts['level']})" for s in sources)
        raise BookInputError(f"{symbol} {month}: L2 and L3 depth files in one month ({names}); land one kind per instrument")
    streams = sorted((s for s in sources if s.facts["update_rows"]), key=lambda s: s.facts["recv_min"])
    for a, b in zip(streams, streams[1:]):
        if a.facts["recv_max"] >= b.facts["recv_min"]:
            raise BookInputError(
                f"{symbol} {month}: depth files {a.rec.path} and {b.rec.path} overlap in time "
                f"({_iso(b.facts['recv_min'])} to {_iso(min(a.facts['recv_max'], b.facts['recv_max']))}); one depth stream per "
                "instrument-month: remove one (a file of snapshots only may overlap)")
    return levels.pop()


def _warm_start(sources: list[_Source], month_lo: int) -> int | None:
    """``ts_recv`` of the last snapshot before the month among the sources, or None."""
    best = None
    for s in sources:
        if not s.facts["snapshot_rows"] or s.facts["recv_min"] is None or s.facts["recv_min"] >= month_lo:
            continue
        ts = (pl.scan_parquet(s.path)
              .filter(pl.col("reason").is_null() & pl.col("is_snapshot") & (pl.col("ts_recv") < month_lo))
              .select(pl.col("ts_recv").max()).collect().item())
        if ts is not None and (best is None or ts > best):
            best = ts
    return best


def _day_rows(sources: list[_Source], lo: int, hi: int) -> pl.DataFrame:
    """Staged rows of every source received in [lo, hi), sorted (ts_recv, seq, source, line)."""
    frames = [
        pl.scan_parquet(s.path)
        # another instrument's rows (in the staging quarantine with their reason) are not this book's
        .filter((pl.col("ts_recv") >= lo) & (pl.col("ts_recv") < hi) & ~foreign(pl.col("reason")))
        .with_columns(src=pl.lit(s.index, pl.Int32), mode=pl.lit(s.mode, pl.Int8))
        for s in sources if s.facts["recv_min"] is not None and s.facts["recv_min"] < hi and s.facts["recv_max"] >= lo
        or s.facts["rejected"]
    ]
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames).sort("ts_recv", "seq", "src", "src_line").collect()


def _kernel_arrays(rows: pl.DataFrame) -> dict[str, np.ndarray]:
    from quant_assets.book.replay import columns as book_columns

    a = book_columns(rows)
    a["is_snapshot"] = rows["is_snapshot"].fill_null(False).to_numpy()
    a["seq_first"] = rows["seq_first"].fill_null(-1).to_numpy()
    a["seq_prev"] = rows["seq_prev"].fill_null(-1).to_numpy()
    a["bad"] = rows["reason"].is_not_null().to_numpy()
    a["mode"] = rows["mode"].to_numpy()
    a["src_line"] = rows["src_line"].fill_null(-1).to_numpy()
    a["flags"] = rows["flags"].fill_null(0).to_numpy()
    # a rejected row may lack any value: the kernel never applies it, only counts it
    a["action"] = rows["action"].cast(pl.String).replace_strict(
        {name: i for i, name in enumerate(ACTION_NAMES)}, default=0, return_dtype=pl.Int8).to_numpy()
    a["side"] = rows["side"].fill_null(0).to_numpy()
    return {k: np.ascontiguousarray(v) for k, v in a.items()}


def _published(out: dict[str, np.ndarray], l3: bool) -> pl.DataFrame:
    """The day's published rows as canonical ``book`` rows."""
    oid = pl.Series("order_id", out["order_id"], pl.UInt64)
    return pl.DataFrame({
        "ts_event": out["ts_event"], "ts_recv": out["ts_recv"], "seq": out["seq"], "side": out["side"],
        "price": out["price"], "size": out["size"],
        # the kernels' small integers are the Enum's physical codes (ACTION_NAMES is its order)
        "action": pl.Series("action", np.asarray(ACTION_NAMES)[out["action"]], ACTION),
        "is_snapshot": out["is_snapshot"],
        "order_id": oid.set(oid == 0, None) if l3 else pl.Series("order_id", [None] * len(oid), pl.UInt64),
        "flags": out["flags"],
    }).cast(BOOK_SCHEMA)  # type: ignore[arg-type]


def _iso(ts: int | None) -> str | None:
    if ts is None or ts < 0:
        return None
    return datetime.fromtimestamp(ts / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the day checks --------------------------------------------------------------------------

def check_day(day: pl.DataFrame, state: Book) -> str | None:
    """Why the published rows of one day break the day-file invariants, or None: they start with a
    full snapshot (a ``clear`` of both sides), are sorted by (``ts_recv``, ``seq``), replay alone
    without an error or a crossed top, and end at exactly the book ``state`` the month's stream
    holds (L2: every level; L3: every order, and each level's order count)."""
    if day.height == 0:
        return None
    first = day.row(0, named=True)
    if not (first["action"] == "clear" and first["side"] == 0 and first["is_snapshot"]):
        return "does not start with a full snapshot (a clear of both sides)"
    r, q = day["ts_recv"], day["seq"]
    order_ok = ((r.diff().fill_null(0) > 0) | ((r.diff().fill_null(0) == 0) & (q.diff().fill_null(0) >= 0))).all()
    if not order_ok:
        return "rows not sorted by (ts_recv, seq)"
    from quant_assets.book.replay import Book, top_changes

    book = Book(l3=state.l3)
    tops = top_changes(day, book)
    crossed = tops.filter(pl.col("bid_px") >= pl.col("ask_px"))
    if crossed.height:
        row = crossed.row(0, named=True)
        return f"replayed alone, crossed at ts_recv={row['ts_recv']} seq={row['seq']}"
    if state.l3:
        if book.orders() != state.orders():
            return "replayed alone, its orders differ from the month's book at the day's end"
        for s in (0, 1):
            k = int(state.n[s])
            if int(book.n[s]) != k or not np.array_equal(book.keys[s, :k], state.keys[s, :k]) \
                    or not np.array_equal(book.cnt[s, :k], state.cnt[s, :k]):
                return "replayed alone, its levels differ from the month's book at the day's end"
    else:
        for s in (0, 1):
            k = int(state.n[s])
            if int(book.n[s]) != k or not np.array_equal(book.keys[s, :k], state.keys[s, :k]) \
                    or not np.array_equal(book.sz[s, :k], state.sz[s, :k]):
                return "replayed alone, its levels differ from the month's book at the day's end"
    return None


# ---- the build -------------------------------------------------------------------------------

def read_manifest(lake: Lake, symbol: str, month: str) -> dict | None:
    path = lake.book_month_dir(symbol, month) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def build_book(lake: Lake, symbol: str, month: str) -> BookBuild:
    """(Re)write ``book/symbol=S/month=M/`` from the landing zone's depth files (module docstring).

    Returns the build (``none`` when no depth file touches the month: nothing written). Raises
    :class:`BookBlocked` when a blocking check fails and :class:`BookInputError` when the files
    cannot be combined; the published partition is then unchanged."""
    symbol = normalise_symbol(symbol)
    with lake.lock(f"book-{symbol}-{month}"):
        return _build_locked(lake, symbol, month)


def _build_locked(lake: Lake, symbol: str, month: str) -> BookBuild:
    t0 = time.perf_counter()
    records = book_records(lake, symbol)
    failed = [r for r in records if r.status == "failed"]
    month_recs, warm_recs = month_sources(records, month)
    final = lake.book_month_dir(symbol, month)
    if not month_recs:
        if (final / "manifest.json").exists():
            raise BookInputError(f"{symbol} {month}: no depth file in {lake.landing_dir(symbol)} touches the month but "
                                 f"{final} was published from earlier files; restore them, or delete it")
        return BookBuild(symbol, month, NONE, failed=failed)
    fingerprint = sources_fingerprint(month_recs + warm_recs)
    published = read_manifest(lake, symbol, month)
    if published and published.get("source_fingerprint") == fingerprint and published.get("book_version") == BOOK_VERSION:
        return _from_manifest(lake, symbol, month, published, month_recs, warm_recs, failed, time.perf_counter() - t0)

    sources = []
    for i, rec in enumerate(month_recs + warm_recs):
        facts = read_facts(lake, symbol, rec.sha256)
        if facts is None:
            raise BookInputError(f"{rec.path}: staged facts missing (re-run to stage it again)")
        sources.append(_Source(rec, lake.book_staging_path(symbol, rec.sha256), facts, V.MODES[facts["continuity"]], i))
    level = _check_sources(symbol, month, sources)
    l3 = level == DEPTH_L3
    lo, hi = month_start_ns(month), month_start_ns(next_month(month))
    warm_from = _warm_start(sources, lo)
    warm_used = [s.rec for s in sources[len(month_recs):]
                 if warm_from is not None and s.facts["recv_max"] is not None and s.facts["recv_max"] >= warm_from]
    days = [(d, False) for d in range((warm_from // NS_PER_DAY) * NS_PER_DAY, lo, NS_PER_DAY)] if warm_from is not None else []
    days += [(d, True) for d in range(lo, hi, NS_PER_DAY)]

    stream = V.Stream(l3)
    result = BookBuild(symbol, month, APPLIED, level=level, path=final, sources=month_recs, warmup=warm_used, failed=failed,
                       source_fingerprint=fingerprint)
    quarantine_parts: list[Path] = []
    paths = [s.rec.path for s in sources]
    outcomes: dict[str, Outcome] = {}
    day_meta: list[dict] = []
    scratch = lake.scratch_dir()
    try:
        with atomic_dir(final, "book") as tmp:
            for day_lo, emit in days:
                rows = _day_rows(sources, day_lo, day_lo + NS_PER_DAY)
                if rows.height == 0:
                    continue
                a = _kernel_arrays(rows)
                try:
                    out, status, det_a, det_b = stream.day(a, emit)
                except V.Blocked as exc:
                    name = "book_sizes_non_negative" if exc.code == V.BLOCK_NEGATIVE else "book_not_crossed"
                    src = rows.row(exc.row, named=True)
                    where = f"{paths[src['src']]} line {src['src_line']} (ts_recv {src['ts_recv']}, seq {src['seq']})"
                    outcomes[name] = Outcome(name, False, f"{where}: {exc.detail}", 1)
                    quarantine_parts.append(_quarantine_blocked(scratch, rows, exc, paths))
                    raise BookBlocked(symbol, month, list(outcomes.values()), _write_quarantine(lake, symbol, month, quarantine_parts))
                if not emit:
                    continue
                q = _quarantine_day(scratch, rows, status, det_a, det_b, paths)
                if q is not None:
                    quarantine_parts.append(q)
                    result.quarantined += int((~np.isin(status, (V.ST_EMIT, V.ST_EXCLUDED))).sum())
                if len(out["ts_recv"]) == 0:
                    continue
                frame = _published(out, l3)
                problem = check_day(frame, stream.book)
                dd = datetime.fromtimestamp(day_lo / 1e9, tz=timezone.utc).strftime("%d")
                if problem is not None:
                    outcomes["book_days_replay"] = Outcome("book_days_replay", False, f"day {dd}: {problem}", 1)
                    raise BookBlocked(symbol, month, list(outcomes.values()), _write_quarantine(lake, symbol, month, quarantine_parts))
                opening = "gap-reset" if frame["flags"][0] & F_GAP_RESET else ("carried" if out["src"][0] < 0 else "source")
                path = tmp / f"day={dd}" / "part-0.parquet"
                path.parent.mkdir(parents=True)
                frame.write_parquet(path, compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)
                snap = int(frame["is_snapshot"].sum())
                day_meta.append({
                    "day": dd, "rows": frame.height, "snapshot_rows": snap, "opening": opening,
                    "first_ts_recv": int(frame["ts_recv"][0]), "last_ts_recv": int(frame["ts_recv"][-1]),
                    "sha256": file_sha256(path),
                })
                result.rows += frame.height
                result.snapshot_rows += snap
            _month_end_outcomes(stream, outcomes, day_meta, lo)
            result.gaps = _gap_dicts(stream.gap_records(), lo)
            gaps_recovered = [g for g in result.gaps if g["recovered"]]
            outcomes["book_gaps"] = Outcome(
                "book_gaps", not gaps_recovered,
                f"{len(gaps_recovered)} gap(s), {sum(g['rows'] for g in gaps_recovered)} rows quarantined" if gaps_recovered else "",
                len(gaps_recovered))
            for name in CHECKS:
                outcomes.setdefault(name, Outcome(name, True))
            result.outcomes = [outcomes[n] for n in CHECKS]
            if any(not o.passed and o.blocking for o in result.outcomes):
                raise BookBlocked(symbol, month, result.outcomes, _write_quarantine(lake, symbol, month, quarantine_parts))
            result.days = day_meta
            result.deltas = result.rows - result.snapshot_rows
            result.messages = int(stream.st[V.S_MSGS])
            result.max_levels = (int(stream.st[V.S_MAX_BID]), int(stream.st[V.S_MAX_ASK]))
            result.sha256 = hashlib.sha256(",".join(d["sha256"] for d in day_meta).encode()).hexdigest()
            result.seconds = time.perf_counter() - t0
            if result.gaps:
                result.warnings.append(f"{len(result.gaps)} gap span(s): see gaps")
            (tmp / "manifest.json").write_text(json.dumps(_manifest(result, fingerprint), indent=2, sort_keys=True))
        _write_quarantine(lake, symbol, month, quarantine_parts)
    finally:
        for p in quarantine_parts:
            p.unlink(missing_ok=True)
    return result


def _month_end_outcomes(stream: V.Stream, outcomes: dict[str, Outcome], day_meta: list[dict], lo: int) -> None:
    recs = stream.gap_records()
    if stream.gap_open and len(recs):
        g = recs[-1]
        start = max(int(g[V.GC_START]), lo)
        if g[V.GC_KIND] == V.G_PRESNAP and not stream.ever_synced:
            outcomes["book_starts_with_snapshot"] = Outcome(
                "book_starts_with_snapshot", False,
                f"{int(g[V.GC_ROWS])} update rows from {_iso(start)} and no snapshot to start from in the month "
                "(land a snapshot: a REST depth snapshot, a start-of-day snapshot)", int(g[V.GC_ROWS]))
        else:
            outcomes["book_gaps_recovered"] = Outcome(
                "book_gaps_recovered", False,
                f"{V.GAP_KINDS[int(g[V.GC_KIND])]} from {_iso(start)} (last good seq {int(g[V.GC_LAST_SEQ])}, expected "
                f"{int(g[V.GC_EXPECTED])}, got {int(g[V.GC_GOT])}) and no snapshot after it in the month: "
                f"{int(g[V.GC_ROWS])} rows unusable", int(g[V.GC_ROWS]))


def _gap_dicts(recs: np.ndarray, lo: int) -> list[dict]:
    out = []
    for g in recs:
        end = int(g[V.GC_END])
        if g[V.GC_WARM] and 0 <= end < lo:
            continue  # opened and closed before the month: the previous month's
        out.append({
            "kind": V.GAP_KINDS[int(g[V.GC_KIND])], "start_ns": int(g[V.GC_START]), "end_ns": end if end >= 0 else None,
            "start": _iso(int(g[V.GC_START])), "end": _iso(end), "recovered": end >= 0,
            "last_seq": int(g[V.GC_LAST_SEQ]), "expected": int(g[V.GC_EXPECTED]), "got": int(g[V.GC_GOT]),
            "rows": int(g[V.GC_ROWS]), "began_before_month": bool(g[V.GC_WARM]),
        })
    return out


def _quarantine_frame(rows: pl.DataFrame, mask: np.ndarray, reason: pl.Expr, paths: list[str]) -> pl.DataFrame:
    return rows.filter(pl.Series(mask)).select(
        pl.col("src").replace_strict(dict(enumerate(paths)), return_dtype=pl.String).alias("source"),
        "src_line", reason.alias("reject_reason"),
        pl.lit("book").alias("table"), *[pl.col(c).cast(BOOK_SCHEMA[c]) for c in BOOK_COLUMNS],
    )


def _quarantine_day(scratch: Path, rows: pl.DataFrame, status: np.ndarray, det_a: np.ndarray, det_b: np.ndarray,
                    paths: list[str]) -> Path | None:
    mask = ~np.isin(status, (V.ST_EMIT, V.ST_EXCLUDED))
    if not mask.any():
        return None
    rows = rows.with_columns(status=pl.Series(status), det_a=pl.Series(det_a), det_b=pl.Series(det_b))
    frame = _quarantine_frame(rows, mask, V.reason_expr(), paths)
    path = scratch / f"{uuid.uuid4().hex}-book-quarantine.parquet"
    frame.write_parquet(path)
    return path


def _quarantine_blocked(scratch: Path, rows: pl.DataFrame, exc: V.Blocked, paths: list[str]) -> Path:
    """The message holding the blocking row, each of its rows with the blocking reason."""
    key = rows.row(exc.row, named=True)
    mask = ((rows["ts_recv"] == key["ts_recv"]) & (rows["seq"] == key["seq"])).to_numpy()
    reason = pl.lit(f"blocking: {exc.detail}")
    path = scratch / f"{uuid.uuid4().hex}-book-quarantine.parquet"
    _quarantine_frame(rows, mask, reason, paths).write_parquet(path)
    return path


def _write_quarantine(lake: Lake, symbol: str, month: str, parts: list[Path]) -> Path | None:
    """The month's build quarantine (replaced; removed when the build set nothing aside)."""
    final = lake.book_month_quarantine_path(symbol, month)
    if not parts:
        final.unlink(missing_ok=True)
        return None
    lake.write_parquet(pl.scan_parquet(parts), final)
    return final


def _manifest(b: BookBuild, fingerprint: str) -> dict:
    return {
        "symbol": b.symbol, "month": b.month, "book_version": BOOK_VERSION, "level": b.level,
        "source_fingerprint": fingerprint,
        "sources": [{"path": r.path, "sha256": r.sha256, "format": r.format} for r in b.sources],
        "warmup": [{"path": r.path, "sha256": r.sha256, "format": r.format} for r in b.warmup],
        # the day files in order, relative to the month folder (what book.read.book_slice streams)
        "files": [f"day={d['day']}/part-0.parquet" for d in b.days],
        "rows": b.rows, "deltas": b.deltas, "snapshot_rows": b.snapshot_rows, "messages": b.messages,
        "days": b.days, "gaps": b.gaps, "quarantined": b.quarantined, "max_levels": list(b.max_levels),
        "checks": [{"name": o.name, "passed": o.passed, "blocking": o.blocking, "detail": o.detail, "count": o.count}
                   for o in b.outcomes],
        "warnings": b.warnings, "sha256": b.sha256, "build_seconds": round(b.seconds, 3),
    }


def _from_manifest(lake: Lake, symbol: str, month: str, m: dict, sources: list[FileRecord], warm: list[FileRecord],
                   failed: list[FileRecord], seconds: float) -> BookBuild:
    used = {w["sha256"] for w in m.get("warmup", [])}
    return BookBuild(
        symbol, month, REUSED, level=m["level"], path=lake.book_month_dir(symbol, month), rows=m["rows"], deltas=m["deltas"],
        snapshot_rows=m["snapshot_rows"], messages=m["messages"], days=m["days"], gaps=m["gaps"],
        quarantined=m["quarantined"], max_levels=tuple(m["max_levels"]),
        outcomes=[Outcome(c["name"], c["passed"], c["detail"], c["count"]) for c in m["checks"]],
        warnings=m["warnings"], sources=sources, warmup=[r for r in warm if r.sha256 in used], failed=failed,
        sha256=m["sha256"], seconds=seconds, source_fingerprint=m["source_fingerprint"],
    )


def gap_spans(lake: Lake, symbol: str, month: str) -> list[tuple[int, int | None]]:
    """The published month's gap spans as (start ns, end ns or None), for engines and features:
    inside a span the book is unknown (its deltas are in the quarantine, not in the day files)."""
    m = read_manifest(lake, symbol, month)
    return [(g["start_ns"], g["end_ns"]) for g in (m or {}).get("gaps", [])]


def level_of(lake: Lake, symbol: str, month: str) -> str | None:
    """``depth-L2`` / ``depth-L3`` of a published book month, None when it has none."""
    m = read_manifest(lake, symbol, month)
    return m["level"] if m else None


