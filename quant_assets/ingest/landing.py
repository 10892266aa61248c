"""Landing files -> staged, validated Parquet (one per source file) and the manifest.

Two steps, both cached by the file's SHA-256 so a file is parsed once however often it is
seen:
- ``probe``: recognise the format and find the months the file touches (reads only the
  timestamp column). The landing sensor uses it to request exactly those partitions.
- ``stage``: parse every row once, give each a reject reason or none, and write
  ``staging/symbol=S/src=<hash>.parquet``; rejected rows also go to ``quarantine/`` with the
  source file and line. Partitions are then built from staged files (``ingest.build``).

Depth (order-book) files (``quant_assets.book.formats``) are recognised first, by content: their
probe stages them at once (``quant_assets.book.staging``: a capture is parsed once, its months
come from that parse) into ``book_staging/``; their record is the ``book`` table's. A capture
whose format also carries L1 (``BookFormat.ticks``: a websocket capture's bookTicker and trade
messages) is staged as ticks too, under the same hash; one manifest record serves both tables
(:func:`tables_of`), and the ``ticks`` build reads its tick side through
``quant_assets.book.staging.ticks_view``.

Funding files (``quant_assets.funding.parse``) land in the same folders. They are recognised
before the tick formats, recorded in the manifest with their format and months (status
``probed``: they are read again from the landing file when the ``funding`` table is built, being
small), and never staged as ticks: ``survey`` hands each consumer only its own table's records
(``table="ticks"`` by default), plus every failed file (a failure is reported everywhere).

The landing file itself is only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from quant_assets.book import formats as book_formats
from quant_assets.book import staging as book_staging
from quant_assets.funding import parse as funding_parse
from quant_assets.funding.schema import is_perpetual
from quant_assets.ingest.detect import Detected, detect, plain_file, scan_detected, symbol_hints
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.sample import Sample
from quant_assets.ingest.versions import superseded
from quant_assets.ingest.validate import ts_in_range, with_reasons
from quant_assets.lake.identity import claims_match, parse_symbol
from quant_assets.lake.manifest import FileRecord, fingerprint, read_manifest, upsert
from quant_assets.lake.schema import DEDUPE_COLUMNS, TICK_COLUMNS
from quant_assets.lake.store import Lake, sweep_debris
from quant_assets.lake.symbols import normalise_symbol
from quant_assets.settings import START_MONTH_ENV, start_month


@contextlib.contextmanager
def open_checked(lake: Lake, symbol: str, path: Path) -> Iterator[tuple[Detected, pl.LazyFrame]]:
    """Detect ``path``'s format, cross-check its symbol, and yield its frame with reasons.

    A file's claimed symbol is checked against the *raw* symbol of the folder's instrument
    (``landing/BTCUSDT-PERP/BTCUSDT-trades-2024-03.zip`` is fine: Binance names spot and
    perpetual files alike), see :func:`quant_assets.lake.identity.claims_match`."""
    with plain_file(path, lake.scratch_dir()) as text_path:
        yield checked_text(symbol, path, text_path)


def checked_text(symbol: str, path: Path, text_path: Path) -> tuple[Detected, pl.LazyFrame]:
    """:func:`open_checked` on an already decompressed ``text_path``."""
    detected = detect(path, text_path)
    for where, claimed in symbol_hints(path, detected).items():
        if where == "file name" and claimed.endswith("_PERP"):
            # Binance names its COIN-M (inverse) perpetuals BTCUSD_PERP; their trade files
            # have the spot layout's column types, so without this they would parse as a
            # linear instrument with sizes in contracts: wrong numbers, not an error.
            raise IngestError(path, f"a Binance COIN-M (inverse) contract file ({claimed}): its sizes are contracts of a "
                                    "fixed USD value and its PnL is in the base coin; the lake models linear instruments "
                                    "only (size in base, prices and PnL in quote), so COIN-M files are not ingested")
        # A venue names its perpetual by the underlying pair (BTCUSDT-trades-... in BTCUSDT-PERP/).
        if not claims_match(claimed, symbol):
            raw, kind = parse_symbol(symbol)
            raise IngestError(path, f"the {where} says {claimed!r} but the file is in landing folder {symbol!r} "
                                    f"(a {kind} instrument whose files should say {raw!r})")
    return detected, scan_detected(detected)


def table_of(rec: FileRecord) -> str:
    """The table a file's record belongs to: ``funding`` for a funding file, ``book`` for a depth
    file, else ``ticks`` (an unprobed file too). A depth capture that also carries L1 feeds
    ``ticks`` as well: see :func:`tables_of`."""
    if rec.format in funding_parse.FUNDING_FORMATS:
        return "funding"
    return "book" if book_formats.is_book_format(rec.format) else "ticks"


def tables_of(rec: FileRecord) -> tuple[str, ...]:
    """Every table a file's record feeds: its :func:`table_of`, and ``ticks`` too for a depth
    capture whose format yields ticks (``BookFormat.ticks``)."""
    table = table_of(rec)
    if table == "book" and book_staging.has_ticks(rec):
        return ("book", "ticks")
    return (table,)


def probe_funding(lake: Lake, symbol: str, path: Path, rec: FileRecord, fmt: funding_parse.FundingFormat,
                  sample: Sample) -> FileRecord:
    """Record a funding file: format, months of its funding times, row count; or failed, with
    the reason (a spot folder, a symbol mismatch, any bad row). Never raises an IngestError."""
    rec.format = fmt.name
    try:
        for where, claimed in funding_parse.symbol_claims(path, fmt, sample).items():
            if not claims_match(claimed, symbol):
                raise IngestError(path, f"the {where} says {claimed!r} but the file is in landing folder {symbol!r}")
        if not is_perpetual(symbol):
            raise IngestError(
                path, f"a funding file ({fmt.name}) in the landing folder of {symbol!r}, which is not a perpetual: "
                f"funding applies only to perpetuals (symbols ending in -PERP); expected it in landing/{symbol}-PERP/"
            )
        rows = funding_parse.read(fmt, sample, lake.relative(path))
    except IngestError as exc:
        return _fail(rec, exc)
    ok = rows.select(pl.col("ts").alias("ts_event")).filter(ts_in_range(start_month()))
    rec.status, rec.error = "probed", None
    rec.months = sorted({_month_of(t) for t in ok["ts_event"].to_list()})
    rec.rows_accepted, rec.rows_rejected = len(rows), 0
    rec.event_min = rec.recv_min = int(rows["ts"].min()) if len(rows) else None  # type: ignore[arg-type]
    rec.event_max = rec.recv_max = int(rows["ts"].max()) if len(rows) else None  # type: ignore[arg-type]
    rec.ordered = True
    return rec


def _fail(rec: FileRecord, exc: Exception) -> FileRecord:
    rec.status, rec.error = "failed", (exc.reason if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}")
    return rec


def _polars_error(path: Path, exc: Exception) -> IngestError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IngestError(path, f"could not parse ({type(exc).__name__}: {first})")


def _no_month_error(path: Path, lf: pl.LazyFrame) -> IngestError:
    """Why a file touches no month: no row has a timestamp from the start month to now.

    Without this a file of rows dated 2100 (or all before ``QUANT_START_MONTH``) would stay
    ``probed`` with no months and no message: never built, never explained."""
    ts = pl.col("ts_event")
    span = lf.select(lo=ts.min(), hi=ts.max(), n=ts.count()).collect(engine="streaming").row(0, named=True)
    start = start_month()
    expected = f"expected rows from {START_MONTH_ENV}={start} up to now (+1 day of clock skew)"
    if not span["n"]:
        return IngestError(path, f"no row of {path.name} has a parseable timestamp; {expected}")
    return IngestError(path, f"no row of {path.name} falls in a month to build: its timestamps run from "
                             f"{_iso(span['lo'])} to {_iso(span['hi'])}; {expected}")


def _iso(ts_ns: int) -> str:
    try:
        return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # far outside the calendar: show the raw number
        return f"{ts_ns} ns"


def probe(lake: Lake, symbol: str, path: Path, rec: FileRecord) -> FileRecord:
    """Fill ``rec`` with the format and the months of ``path``'s valid timestamps."""
    try:
        with plain_file(path, lake.scratch_dir()) as text_path:
            if (funding := funding_parse.sniff(path, text_path)) is not None:
                return probe_funding(lake, symbol, path, rec, *funding)
            if (book := book_formats.sniff(path, text_path)) is not None:
                return book_staging.stage_file(lake, symbol, path, text_path, rec, book)
            detected, lf = checked_text(symbol, path, text_path)
            # Only the timestamp column is read: projection pushdown keeps the probe cheap.
            months = sorted(_months(lf.select("ts_event").filter(ts_in_range(start_month()))))
            if not months:
                raise _no_month_error(path, lf)
    except IngestError as exc:
        return _fail(rec, exc)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return _fail(rec, _polars_error(path, exc))
    rec.format, rec.status, rec.error, rec.months = detected.format_name, "probed", None, months
    return rec


def survey(
    lake: Lake, symbol: str, probe_new: bool = True, ready: Callable[[Path, os.stat_result], bool] | None = None,
    table: str | None = "ticks", known: dict[str, FileRecord] | None = None,
) -> list[FileRecord]:
    """Fingerprint every landing file of ``symbol``; probe new or changed ones; record them.

    With ``probe_new=False`` new files come back as ``seen`` records, unprobed (a caller
    that stages them anyway learns their months from staging, and saves a parse).

    Files for which ``ready(path, stat)`` is False are skipped: they may still be being
    written (the sensor looks again on its next tick). Returns the current record of each
    file (a failed file is recorded and returned, never raised: one bad file must not hide
    the others) that belongs to ``table`` (see :func:`table_of`; failed files belong to every
    table, unprobed ones to ``ticks``; None: every file). Every file is recorded whatever
    ``table`` is. ``known``: the manifest as read by the caller, when it surveys many symbols
    (each survey otherwise reads the whole manifest; records of other symbols' files are
    never consulted, so one read serves them all).

    A file another one supersedes (an older version of a re-published file, a Binance daily
    file beside its month's archive: :func:`quant_assets.ingest.versions.superseded`) is
    recorded with status ``superseded`` and the name of its replacement, and never returned:
    no build reads it, and it stays in the landing folder and the manifest.
    """
    symbol = normalise_symbol(symbol)
    known = read_manifest(lake) if known is None else known
    out, changed = [], []
    folder = None  # the folder's lake-relative path, resolved once
    files = lake.landing_files(symbol)
    replaced = superseded(p.name for p in files)
    for path in files:
        if ready is not None and not ready(path, path.stat()):
            continue
        rel = None
        if not path.is_symlink():
            # what lake.relative(path) gives, without resolving every file's path (a third of
            # a 33,600-file survey): only a symlinked file resolves elsewhere
            folder = folder if folder is not None else lake.relative(path.parent)
            rel = f"{folder}/{path.name}"
        rec = fingerprint(lake, path, known, symbol, rel=rel)
        if path.name in replaced:
            # An older version (or a daily file its month's archive covers): recorded, never
            # built from (quant_assets.ingest.versions). Not probed: nothing will read it.
            why = f"superseded by {replaced[path.name]}"
            if rec.status != "superseded" or rec.error != why:
                rec.status, rec.error = "superseded", why
                changed.append(rec)
            continue
        if rec.status == "superseded":  # its replacement is gone: it is current again
            rec.status, rec.error = "seen", None
            if not probe_new:
                changed.append(rec)
        if rec.status == "seen" and probe_new:
            rec = probe(lake, symbol, path, rec)
            changed.append(rec)
        if table is None or rec.status == "failed" or table in tables_of(rec):
            out.append(rec)
    upsert(lake, changed)
    return out


def stage(lake: Lake, symbol: str, rec: FileRecord) -> FileRecord:
    """Parse and validate the file behind ``rec`` once per content hash: accepted rows (canonical
    columns, source order) to its staging file, rejected rows to quarantine, in one pass."""
    if book_formats.is_book_format(rec.format):
        if rec.status == "staged" and book_staging.read_facts(lake, symbol, rec.sha256) is not None:
            return rec
        return _stage_book(lake, symbol, rec)
    staged = lake.staging_path(symbol, rec.sha256)
    if rec.status == "staged" and staged.exists():
        return rec
    path = lake.root / rec.path
    quarantine = lake.quarantine_path(symbol, rec.sha256)
    with lake.lock(f"stage-{rec.sha256[:20]}"):
        current = read_manifest(lake).get(rec.path)
        if current is not None and current.sha256 == rec.sha256 and current.status == "staged" and staged.exists():
            return current
        for done in (staged, quarantine):  # what a killed earlier staging left (we hold its lock)
            sweep_debris(done.parent, done.name)
        try:
            with plain_file(path, lake.scratch_dir()) as text_path:
                if (funding := funding_parse.sniff(path, text_path)) is not None:
                    # Not ticks: recorded as a funding file; the ticks build leaves it out.
                    rec = probe_funding(lake, symbol, path, rec, *funding)
                    upsert(lake, [rec])
                    return rec
                if (book := book_formats.sniff(path, text_path)) is not None:
                    # A depth file: staged for the book (and its tick side, if it has one).
                    rec = book_staging.stage_file(lake, symbol, path, text_path, rec, book)
                    upsert(lake, [rec])
                    return rec
                detected, lf = checked_text(symbol, path, text_path)
                write_staged_ticks(lake, rec, with_reasons(lf, start_month()), staged, quarantine)
            facts = staged_facts(staged, quarantine)
            if facts["rows_accepted"] + facts["rows_rejected"] == 0:
                staged.unlink()
                quarantine.unlink()
                raise IngestError(path, "no data rows")
            if not facts["months"]:
                # Every row is out of range, so all are in quarantine, each with its reason
                # (kept); the file is failed like the probe fails it, with the same reason,
                # rather than "staged" feeding no partition.
                reason = _no_month_error(path, pl.scan_parquet(quarantine))
                staged.unlink()
                raise reason
            if facts["rows_rejected"] == 0:
                quarantine.unlink()
        except IngestError as exc:
            rec = _fail(rec, exc)
        except pl.exceptions.PolarsError as exc:
            rec = _fail(rec, _polars_error(path, exc))
        # An OSError (disk full, permissions) says nothing about the file: it propagates and
        # the file is tried again next time, rather than being recorded as failed.
        else:
            rec.format, rec.status, rec.error = detected.format_name, "staged", None
            for key, value in facts.items():
                setattr(rec, key, value)
        upsert(lake, [rec])
        return rec


def _stage_book(lake: Lake, symbol: str, rec: FileRecord) -> FileRecord:
    """(Re)stage a depth file whose staging is missing (or of an older staging version)."""
    path = lake.root / rec.path
    try:
        with plain_file(path, lake.scratch_dir()) as text_path:
            book = book_formats.sniff(path, text_path)
            if book is None:  # replaced by something else since it was recorded
                raise IngestError(path, "no longer a depth file; recognised depth formats:\n" + book_formats.recognised())
            rec = book_staging.stage_file(lake, symbol, path, text_path, rec, book)
    except IngestError as exc:
        rec = _fail(rec, exc)
    upsert(lake, [rec])
    return rec


def _month_key() -> pl.Expr:
    """``ts_event`` -> yyyymm as an integer (cheaper than formatting every row)."""
    dt = pl.from_epoch(pl.col("ts_event"), time_unit="ns").dt
    return (dt.year().cast(pl.Int32) * 100 + dt.month().cast(pl.Int32)).alias("yyyymm")


def _month_of(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m")


def _months(lf: pl.LazyFrame) -> set[str]:
    keys = lf.select(_month_key()).unique().collect(engine="streaming")["yyyymm"].to_list()
    return {f"{k // 100:04d}-{k % 100:02d}" for k in keys}


def write_staged_ticks(lake: Lake, rec: FileRecord, checked: pl.LazyFrame, staged: Path, quarantine: Path) -> None:
    """Write a file's canonical tick rows (``checked``: with ``reject_reason`` from
    ``with_reasons``): the good ones to ``staged``, the rejected ones with the landing file and
    line to ``quarantine``, in one pass over the source."""
    ok = pl.col("reject_reason").is_null()
    lake.write_parquet_many([
        (checked.filter(ok).select(TICK_COLUMNS), staged),
        (checked.filter(~ok).select(pl.lit(rec.path).alias("source"), "src_line", "reject_reason", *TICK_COLUMNS), quarantine),
    ])


def staged_facts(staged: Path, quarantine: Path) -> dict[str, object]:
    """Manifest facts of a staged file: counts, the months it touches (accepted rows, and
    rejected rows with a plausible timestamp), ``ts_recv``/``ts_event`` spans and ``ordered``:
    accepted rows strictly increase on (ts_recv, seq) in file order with no duplicates (equal
    in every column but ``seq``). Duplicates can only share a ``ts_recv``, so only rows in runs
    of equal ``ts_recv`` are compared, by a 64-bit hash of their values: a collision can only
    send the file down the sorting path, never publish a duplicate."""
    acc = pl.scan_parquet(staged)
    r, q = pl.col("ts_recv"), pl.col("seq")
    increasing = ((r > r.shift(1)) | ((r == r.shift(1)) & (q > q.shift(1)))).fill_null(True).all()
    spans = acc.select(
        rows=pl.len(), recv_min=r.min(), recv_max=r.max(),
        event_min=pl.col("ts_event").min(), event_max=pl.col("ts_event").max(), increasing=increasing,
    ).collect(engine="streaming").row(0, named=True)
    tie = ((r == r.shift(1)) | (r == r.shift(-1))).fill_null(False)
    dup_in_ties = (
        acc.filter(tie).select(pl.struct("ts_recv", pl.struct(DEDUPE_COLUMNS).hash(seed=0)).is_duplicated().any())
        .collect(engine="streaming").item()
    )
    if spans["rows"] and _month_of(spans["event_min"]) == _month_of(spans["event_max"]):
        months = {_month_of(spans["event_min"])}  # the usual one-month file: no extra pass
    else:
        months = _months(acc)
    rejected = 0
    if quarantine.exists():
        rej = pl.scan_parquet(quarantine)
        rejected = rej.select(pl.len()).collect().item()
        months |= _months(rej.filter(ts_in_range(start_month())))
    return {
        "rows_accepted": spans["rows"], "rows_rejected": rejected, "months": sorted(months),
        "recv_min": spans["recv_min"], "recv_max": spans["recv_max"],
        "event_min": spans["event_min"], "event_max": spans["event_max"],
        "ordered": bool(spans["increasing"]) and not bool(dup_in_ties),
    }
