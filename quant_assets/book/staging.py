"""Stage one depth landing file: parse it once per content hash, give every row its reason, and
record what the builder needs to know about it.

- ``book_staging/symbol=S/src=<hash>.parquet``: **every** parsed row (:data:`STAGED_SCHEMA`), in
  file order, with ``reason`` null (accepted) or set. Rejected rows stay in place because the
  builder must know a message lost a row (a message applied without one of its levels is a wrong
  book: see rule 7 of :mod:`quant_assets.book.validate`).
- ``quarantine/symbol=S/book-src=<hash>.parquet``: the rejected rows, with ``source`` (the landing
  file), ``src_line`` and ``reject_reason`` (the DuckDB view ``quarantine`` shows them beside the
  tick rejects; ``table`` = ``book``).
- ``book_staging/symbol=S/src=<hash>.json``: the file's facts (format, level, continuity, rows,
  snapshot and update rows, receive span, months, and for a capture that also carries L1 the
  facts of its tick side).

Row rules applied here (the parser's own reasons come first): a plausible ``ts_recv``/``ts_event``
(from ``QUANT_START_MONTH`` to now), a known ``action``, a side (+1/-1; 0 only on ``clear``), a
positive finite price and a finite size on every row but a ``clear``, an ``order_id`` on the L3
rows of an L3 format. A negative size is *not* a row reason: it is a blocking rule of the build
(a source that is not absolute sizes), judged there.

A format with ``ticks`` also stages its L1 rows exactly as a tick file is staged (the tick row
rules, ``staging/`` and ``quarantine/`` under the same hash), so one capture feeds both tables.

The landing file is only read. Months are UTC months of ``ts_recv`` (a day file holds the rows
*received* that day).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from quant_assets.book.formats import BookFormat, conform, is_book_format
from quant_assets.book.schema import BOOK_COLUMNS, DEPTH_L3, STAGED_SCHEMA
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.validate import FUTURE_SLACK_NS, MIN_TS_NS, month_start_ns, with_reasons
from quant_assets.ingest.timeunits import now_ns
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.store import Lake, sweep_debris
from quant_assets.settings import START_MONTH_ENV, start_month

#: Bumped when staging changes what a staged file holds: files of an older version are staged again.
STAGING_VERSION = 1


def facts_path(lake: Lake, symbol: str, sha256: str) -> Path:
    return lake.book_staging_path(symbol, sha256).with_suffix(".json")


def read_facts(lake: Lake, symbol: str, sha256: str) -> dict | None:
    """The staged file's facts, or None when it is not staged (or was staged by another version)."""
    path = facts_path(lake, symbol, sha256)
    staged = lake.book_staging_path(symbol, sha256)
    if not (path.exists() and staged.exists()):
        return None
    facts = json.loads(path.read_text())
    return facts if facts.get("staging_version") == STAGING_VERSION else None


def row_reasons(start: str, level: str, now: int | None = None) -> pl.Expr:
    """The parser's ``reason``, else the first row rule a staged row breaks, else null."""
    hi = (now or now_ns()) + FUTURE_SLACK_NS
    lo = max(MIN_TS_NS, month_start_ns(start))
    recv, event = pl.col("ts_recv"), pl.col("ts_event")
    act, side, px, sz = pl.col("action"), pl.col("side"), pl.col("price"), pl.col("size")
    level_row = act.is_not_null() & (act != "clear")
    rule = (
        pl.when(recv.is_null() | event.is_null()).then(pl.lit("missing or unparseable timestamp"))
        .when((recv < MIN_TS_NS) | (event < MIN_TS_NS)).then(pl.lit("timestamp before 1990 (wrong unit?)"))
        .when((recv > hi) | (event > hi)).then(pl.lit("timestamp in the future"))
        .when(recv < lo).then(pl.lit(f"before {START_MONTH_ENV}={start}"))
        .when(act.is_null()).then(pl.lit("unknown action (expected add, update, delete or clear)"))
        .when(side.is_null() | ~side.is_in([-1, 0, 1])).then(pl.lit("side not +1 (bid), -1 (ask) or 0 (clear)"))
        .when(level_row & (side == 0)).then(pl.lit("add/update/delete without a side (expected +1 bid or -1 ask)"))
        .when(level_row & (px.is_null() | ~px.is_finite())).then(pl.lit("missing, unparseable or NaN price"))
        .when(level_row & (px <= 0)).then(pl.lit("non-positive price"))
        .when(level_row & (sz.is_null() | sz.is_nan() | sz.is_infinite())).then(pl.lit("missing, unparseable or NaN size"))
    )
    if level == DEPTH_L3:
        rule = rule.when(level_row & pl.col("order_id").is_null()).then(pl.lit("L3 row without an order_id"))
    return pl.coalesce(pl.col("reason"), rule.otherwise(pl.lit(None, pl.String)))


def _month_of(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m")


def _months(lf: pl.LazyFrame, col: str) -> list[str]:
    dt = pl.from_epoch(pl.col(col), time_unit="ns").dt
    keys = lf.select((dt.year().cast(pl.Int32) * 100 + dt.month().cast(pl.Int32)).alias("k")).unique() \
        .collect(engine="streaming")["k"].drop_nulls().to_list()
    return sorted(f"{k // 100:04d}-{k % 100:02d}" for k in keys)


def book_facts(staged: Path, start: str) -> dict:
    """Counts, spans and months of a staged book file (one streaming pass)."""
    lf = pl.scan_parquet(staged)
    ok = pl.col("reason").is_null()
    r = pl.col("ts_recv")
    row = lf.select(
        rows=pl.len(), rejected=(~ok).sum(),
        snapshot_rows=(ok & pl.col("is_snapshot")).sum(), update_rows=(ok & ~pl.col("is_snapshot")).sum(),
        recv_min=r.filter(ok).min(), recv_max=r.filter(ok).max(),
        event_min=pl.col("ts_event").filter(ok).min(), event_max=pl.col("ts_event").filter(ok).max(),
        ordered=(r.filter(ok) >= r.filter(ok).shift(1)).fill_null(True).all(),
        l3=pl.col("order_id").filter(ok).is_not_null().any(),
        has_prev=pl.col("seq_prev").filter(ok).is_not_null().any(),
        has_first=pl.col("seq_first").filter(ok).is_not_null().any(),
    ).collect(engine="streaming").row(0, named=True)
    lo = max(MIN_TS_NS, month_start_ns(start))
    plausible = r.is_not_null() & (r >= lo) & (r <= now_ns() + FUTURE_SLACK_NS)
    row["months"] = _months(lf.filter(plausible), "ts_recv")
    return row


def continuity_of(fmt: BookFormat, facts: dict) -> str:
    if fmt.continuity != "auto":
        return fmt.continuity
    return "prev" if facts["has_prev"] else "next" if facts["has_first"] else "none"


def stage_file(lake: Lake, symbol: str, landing: Path, plain: Path, rec: FileRecord, fmt: BookFormat) -> FileRecord:
    """Stage ``landing`` (already decompressed at ``plain``) as a depth file of ``fmt``; returns the
    record filled in (``staged``), or ``failed`` with the reason (an :class:`IngestError` of the
    parser, a file with no rows, no row in a month to build). Never raises an IngestError."""
    rec = replace(rec, format=fmt.name)
    staged = lake.book_staging_path(symbol, rec.sha256)
    quarantine = lake.book_quarantine_path(symbol, rec.sha256)
    fpath = facts_path(lake, symbol, rec.sha256)
    start = start_month()
    with lake.lock(f"book-stage-{rec.sha256[:20]}"):
        for done in (staged, quarantine, fpath):
            sweep_debris(done.parent, done.name)
        facts = read_facts(lake, symbol, rec.sha256)
        try:
            if facts is None:
                facts = _stage(lake, symbol, landing, plain, rec, fmt, staged, quarantine, start)
                lake.write_json(facts, fpath)
        except IngestError as exc:
            rec.status, rec.error = "failed", exc.reason
            return rec
        except pl.exceptions.PolarsError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            rec.status, rec.error = "failed", f"could not parse as {fmt.name} ({type(exc).__name__}: {first})"
            return rec
    return apply_facts(rec, facts)


def apply_facts(rec: FileRecord, facts: dict) -> FileRecord:
    """``rec`` with the staged facts: the book's counts and spans, the months of both tables."""
    ticks = facts.get("ticks") or {}
    rec.status, rec.error = "staged", None
    rec.months = sorted(set(facts["months"]) | set(ticks.get("months", [])))
    rec.rows_accepted = facts["rows"] - facts["rejected"]
    rec.rows_rejected = facts["rejected"]
    rec.recv_min, rec.recv_max = facts["recv_min"], facts["recv_max"]
    rec.event_min, rec.event_max = facts["event_min"], facts["event_max"]
    rec.ordered = bool(facts["ordered"])
    return rec


def _stage(lake: Lake, symbol: str, landing: Path, plain: Path, rec: FileRecord, fmt: BookFormat,
           staged: Path, quarantine: Path, start: str) -> dict:
    parsed = fmt.parse(landing, plain, symbol)
    rows = conform(parsed).with_columns(reason=row_reasons(start, fmt.level))
    bad = pl.col("reason").is_not_null()
    lake.write_parquet_many([
        (rows, staged),
        (rows.filter(bad).select(
            pl.lit(rec.path).alias("source"), "src_line", pl.col("reason").alias("reject_reason"),
            pl.lit("book").alias("table"), *BOOK_COLUMNS), quarantine),
    ])
    facts = book_facts(staged, start)
    if facts["rows"] == 0:
        staged.unlink()
        quarantine.unlink()
        raise IngestError(landing, f"no depth rows in {landing.name} (recognised as {fmt.name}: {fmt.layout})")
    if not facts["rejected"]:
        quarantine.unlink()
    if not facts["months"]:
        raise IngestError(landing, f"no row of {landing.name} has a receive time from {START_MONTH_ENV}={start} up to now "
                                   f"(+1 day of clock skew); {facts['rejected']} rows rejected, see {quarantine}")
    facts.update(format=fmt.name, level=DEPTH_L3 if facts["l3"] or fmt.level == DEPTH_L3 else fmt.level,
                 continuity=continuity_of(fmt, facts), staging_version=STAGING_VERSION, source=rec.path)
    if fmt.ticks is not None:
        facts["ticks"] = _stage_ticks(lake, symbol, landing, plain, rec, fmt, start)
    return facts


def _stage_ticks(lake: Lake, symbol: str, landing: Path, plain: Path, rec: FileRecord, fmt: BookFormat,
                 start: str) -> dict | None:
    """The capture's L1 rows staged as a tick file (None when it has none)."""
    from quant_assets.ingest.landing import staged_facts, write_staged_ticks

    assert fmt.ticks is not None
    staged, quarantine = lake.staging_path(symbol, rec.sha256), lake.quarantine_path(symbol, rec.sha256)
    for done in (staged, quarantine):
        sweep_debris(done.parent, done.name)
    write_staged_ticks(lake, rec, with_reasons(fmt.ticks(landing, plain, symbol), start), staged, quarantine)
    facts = staged_facts(staged, quarantine)
    if facts["rows_accepted"] + facts["rows_rejected"] == 0:
        staged.unlink()
        quarantine.unlink()
        return None
    if facts["rows_rejected"] == 0:
        quarantine.unlink()
    return facts


def ticks_view(lake: Lake, rec: FileRecord) -> FileRecord | None:
    """The record of a depth capture as the ``ticks`` table sees it: its tick side's counts, spans
    and months, staged at the usual tick staging path (None: the file has no tick side, or it is
    not staged yet). A record of any other file is returned as it is."""
    if not is_book_format(rec.format) or rec.status != "staged":
        return rec
    facts = read_facts(lake, rec.symbol, rec.sha256)
    ticks = (facts or {}).get("ticks")
    if not ticks:
        return None
    return replace(rec, **{k: ticks[k] for k in ("months", "rows_accepted", "rows_rejected", "recv_min", "recv_max",
                                                  "event_min", "event_max", "ordered")})


def has_ticks(rec: FileRecord) -> bool:
    """Whether a book record's format also yields ticks (from the registry, no file opened)."""
    from quant_assets.book.formats import by_name

    try:
        return by_name(rec.format).ticks is not None if rec.format else False
    except KeyError:
        return False
