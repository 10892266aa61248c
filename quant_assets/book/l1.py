"""L1 from depth: the ``ticks`` quotes of a month derived from its published ``book`` (when the
venue gave no quote file), and the comparison of a quote file with the book's top (when both
exist).

Derived quotes are the top of the book after each message that changes it
(:func:`quant_assets.book.replay.top_changes`), read day file by day file (bounded memory), one
``quote`` row per change with both sides present (``bid_px``/``bid_sz``/``ask_px``/``ask_sz``;
``ts_event``/``ts_recv``/``seq`` of the message). They are staged like a landing file's quotes
(``staging/symbol=S/src=bookl1-<book sha>.parquet``) and merged into the month with the trades.

Limits. Inside a gap span of the book (its ``manifest.json`` ``gaps``) the book is unknown: no
quote is derived there, so the last quote before the gap stands until the book's reset snapshot
(the spans are reported beside the derived quotes: ``BuildResult.quotes_from_book``). Months
never read each other: the month's book already starts from its own snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.book.read import book_slice
from quant_assets.book.replay import Book, top_changes
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.schema import TICK_COLUMNS, TICK_SCHEMA
from quant_assets.lake.store import Lake

#: Share of compared quotes whose bid and ask both agree with the book's top within a tick,
#: at or above which the ``quotes_match_book`` check passes.
AGREEMENT_MIN = 0.9


@dataclass
class DerivedQuotes:
    """The derived quotes of a month: a staged-like record (``sha256`` names the staging file),
    the book it came from and the book's gap spans (when its top was unknown)."""

    record: FileRecord
    rows: int
    book_sha256: str
    level: str
    gaps: list[dict]


def _manifest(lake: Lake, symbol: str, month: str) -> dict:
    import json

    return json.loads((lake.book_month_dir(symbol, month) / "manifest.json").read_text())


def _tops(day: Path) -> pl.DataFrame:
    """Top changes of one day file (replayed alone: it starts with its snapshot)."""
    rows = pl.read_parquet(day)
    return top_changes(rows, Book(l3=rows["order_id"].null_count() < rows.height))


def derive_quotes(lake: Lake, symbol: str, month: str) -> DerivedQuotes | None:
    """Stage the quotes of the published book of (symbol, month); None when it has no book.
    Reuses the staged file when the book has not changed (its name carries the book's hash)."""
    from quant_assets.ingest.landing import staged_facts

    sl = book_slice(lake, symbol, month)
    if sl is None:
        return None
    m = _manifest(lake, symbol, month)
    sha = "bookl1" + m["sha256"][:14]
    staged = lake.staging_path(symbol, sha)
    if not staged.exists():
        parts: list[Path] = []
        prev: tuple | None = None
        try:
            for i, day in enumerate(sl.days):
                tops = _tops(day).filter(pl.col("bid_px").is_not_null() & pl.col("ask_px").is_not_null())
                if prev is not None and tops.height and tuple(tops.row(0)[3:]) == prev:
                    tops = tops.slice(1)  # the day's opening snapshot repeats the previous day's last top
                if tops.height:
                    prev = tuple(tops.row(-1)[3:])
                    part = lake.scratch_dir() / f"bookl1-{symbol}-{month}-{i:02d}.parquet"
                    _as_ticks(tops).write_parquet(part)
                    parts.append(part)
            frame = pl.scan_parquet(parts) if parts else pl.DataFrame(schema=TICK_SCHEMA).lazy()
            lake.write_parquet(frame.select(TICK_COLUMNS), staged)
        finally:
            for p in parts:
                p.unlink(missing_ok=True)
    facts = staged_facts(staged, staged.with_suffix(".none"))
    rec = FileRecord(path=f"{lake.relative(lake.book_month_dir(symbol, month))} (top of book)", symbol=symbol, size=0,
                     mtime_ns=0, sha256=sha, format="book-top", status="staged", months=[month],
                     **{k: facts[k] for k in ("rows_accepted", "recv_min", "recv_max", "event_min", "event_max", "ordered")})
    return DerivedQuotes(rec, int(facts["rows_accepted"]), m["sha256"], m["level"], m.get("gaps", []))


def _as_ticks(tops: pl.DataFrame) -> pl.DataFrame:
    return tops.select(
        "ts_event", "ts_recv", "seq", pl.lit("quote").alias("kind"), "bid_px", "bid_sz", "ask_px", "ask_sz",
        pl.lit(None, pl.Float64).alias("price"), pl.lit(None, pl.Float64).alias("size"),
        pl.lit(None, pl.Int8).alias("side"), pl.lit(None, pl.String).alias("trade_id"),
    ).cast(TICK_SCHEMA)  # type: ignore[arg-type]


def compare_quotes(lake: Lake, symbol: str, month: str, ticks: Path, tick_size: float | None) -> dict:
    """How far a month's quote file agrees with its book's top: each quote (by ``ts_recv``) is
    compared with the book's top as of that time (the last top change at or before it), inside the
    book's span and outside its gaps. Returns ``compared`` (quotes), ``agree`` (bid and ask both
    within ``tick_size``), ``share`` (agree / compared; None with ``reason`` when nothing could be
    compared or the tick size is unknown), the book's ``sha256``. Day by day: bounded memory."""
    sl = book_slice(lake, symbol, month)
    if sl is None:
        return {"compared": 0, "agree": 0, "share": None, "reason": "no book for the month"}
    m = _manifest(lake, symbol, month)
    if not tick_size or tick_size <= 0:
        return {"compared": 0, "agree": 0, "share": None, "reason": "the instrument's tick size is unknown",
                "book_sha256": m["sha256"]}
    gaps = [(g["start_ns"], g["end_ns"] if g["end_ns"] is not None else np.iinfo(np.int64).max) for g in m.get("gaps", [])]
    quotes = pl.scan_parquet(ticks).filter(pl.col("kind") == "quote").select("ts_recv", "bid_px", "ask_px")
    tol = tick_size * (1 + 1e-6)
    compared = agree = 0
    for day in sl.days:
        tops = _tops(day).select("ts_recv", pl.col("bid_px").alias("book_bid"), pl.col("ask_px").alias("book_ask"))
        if tops.height == 0:
            continue
        lo, hi = int(tops["ts_recv"][0]), int(tops["ts_recv"][-1])
        nxt = lo + 86_400 * 10**9 - lo % (86_400 * 10**9)  # the day's end: its last top holds until then
        q = quotes.filter((pl.col("ts_recv") >= lo) & (pl.col("ts_recv") < max(nxt, hi + 1))).collect()
        for a, b in gaps:
            q = q.filter((pl.col("ts_recv") < a) | (pl.col("ts_recv") >= b))
        if q.height == 0:
            continue
        j = q.sort("ts_recv").join_asof(tops, on="ts_recv", strategy="backward")
        ok = ((pl.col("bid_px") - pl.col("book_bid")).abs() <= tol) & ((pl.col("ask_px") - pl.col("book_ask")).abs() <= tol)
        compared += j.height
        agree += int(j.select(ok.fill_null(False).sum()).item())
    out: dict = {"compared": compared, "agree": agree, "share": agree / compared if compared else None,
                 "tick_size": tick_size, "book_sha256": m["sha256"]}
    if not compared:
        out["reason"] = "no quote inside the book's span"
    return out


def quotes_vs_book(lake: Lake, symbol: str, month: str, ticks: Path, tick_size: float | None) -> dict:
    """:func:`compare_quotes` against the month's book as its depth files give it now: the book is
    built first (or reused: the same sources and code give the published partition). A book that
    cannot be built gives ``share`` None with the reason."""
    from quant_assets.book.build import BookBlocked, BookInputError, build_book

    try:
        if build_book(lake, symbol, month).status == "none":
            return {"compared": 0, "agree": 0, "share": None, "reason": "no depth file touches the month"}
    except (BookBlocked, BookInputError) as exc:
        return {"compared": 0, "agree": 0, "share": None, "reason": f"the month's book could not be built: {exc}"}
    return compare_quotes(lake, symbol, month, ticks, tick_size)
