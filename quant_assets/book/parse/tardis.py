"""Tardis.dev order-book CSVs (``datasets`` downloads, one symbol and day per file).

**incremental_book_L2**: ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``
(times µs since epoch: ``timestamp`` the exchange's, ``local_timestamp`` Tardis's receive time;
``side`` ``bid``/``ask``; ``amount`` the level's new absolute size, 0 removing it). A run of
``is_snapshot`` rows after a non-snapshot row (or at the start: Tardis's start-of-day snapshot)
is a full snapshot that replaces the book. Staged rows, in file order:

- a message is a run of rows with the same ``local_timestamp``, ``timestamp`` and
  ``is_snapshot`` (a whole snapshot run is one message); ``seq`` is the file line of its first
  row (Tardis has no sequence: continuity ``none``, only the order is kept), :data:`F_LAST` on
  its last row;
- a snapshot run starts with one ``clear`` row (side 0), then one ``add`` per row, ``is_snapshot``;
- other rows: ``update`` (``delete`` when ``amount`` is 0).

**book_snapshot_25** / **book_snapshot_5** (any depth N): ``exchange,symbol,timestamp,
local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,...`` -- each row a
top-N snapshot: one ``clear`` then one ``add`` per level present (bids then asks, best first;
empty cells are levels the book did not have), all ``is_snapshot``, ``seq`` the line.

A row that cannot be used keeps its ``src_line`` with a reason: another symbol than the landing
folder's, a side that is not bid/ask, a time, price or amount that is not a number. Read lazily.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from quant_assets.book.formats import BookFormat, conform, register
from quant_assets.book.parse.common import csv_header, reason_chain, scan_text_csv
from quant_assets.book.schema import DEPTH_L2
from quant_assets.lake.identity import claims_match

INCREMENTAL_NAME = "tardis_incremental_book_l2"
INCREMENTAL_LAYOUT = "Tardis incremental_book_L2 CSV: exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount (µs)"
SNAPSHOT_NAME = "tardis_book_snapshot"
SNAPSHOT_LAYOUT = ("Tardis book_snapshot_25/_5 CSV: exchange,symbol,timestamp,local_timestamp,"
                   "asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,... (µs)")
_HEAD = ("exchange", "symbol", "timestamp", "local_timestamp")
_INCREMENTAL = (*_HEAD, "is_snapshot", "side", "price", "amount")
_LEVEL_COL = re.compile(r"^(bids|asks)\[(\d+)\]\.(price|amount)$")
_US = 1_000


def _integer(c: str) -> pl.Expr:
    return pl.col(c).str.strip_chars().cast(pl.Int64, strict=False)


def _number(c: str | pl.Expr) -> pl.Expr:
    e = pl.col(c) if isinstance(c, str) else c
    return e.str.strip_chars().cast(pl.Float64, strict=False)


def _finite(e: pl.Expr) -> pl.Expr:
    return e.is_not_null() & e.is_finite()


def _bad_symbols(lf: pl.LazyFrame, symbol: str) -> list[str]:
    """The symbols a file claims that are not the landing folder's (one pass over one column)."""
    claimed = lf.select(pl.col("symbol").str.strip_chars().unique()).collect(engine="streaming").to_series()
    return [s for s in claimed.drop_nulls().to_list() if not claims_match(s, symbol)]


def _times(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.with_columns(ts_event=_integer("timestamp") * _US, ts_recv=_integer("local_timestamp") * _US)


def _time_reason() -> tuple[pl.Expr, pl.Expr]:
    return (pl.col("ts_event").is_null() | pl.col("ts_recv").is_null(),
            pl.lit("timestamp/local_timestamp '") + pl.col("timestamp").fill_null("") + pl.lit("'/'")
            + pl.col("local_timestamp").fill_null("") + pl.lit("' is not an integer epoch in µs"))


def _symbol_reason(bad: list[str], symbol: str) -> tuple[pl.Expr, pl.Expr]:
    sym = pl.col("symbol").str.strip_chars()
    return sym.is_in(bad), pl.lit("row of symbol ") + sym + pl.lit(f", not the landing folder's {symbol}")


# ---- incremental_book_L2 --------------------------------------------------------------------

def incremental_matches(landing: Path, plain: Path) -> bool:
    header = csv_header(plain)
    return header[:4] == list(_HEAD) and all(c in header for c in _INCREMENTAL)


def incremental_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    header = csv_header(plain)
    lf = _times(scan_text_csv(plain, header))
    bad = _bad_symbols(lf, symbol)
    snap_txt = pl.col("is_snapshot").str.strip_chars().str.to_lowercase()
    side_txt = pl.col("side").str.strip_chars().str.to_lowercase()
    lf = lf.with_columns(
        snap=snap_txt.replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean),
        side_v=side_txt.replace_strict({"bid": 1, "ask": -1, "buy": 1, "sell": -1}, default=None, return_dtype=pl.Int8),
        price_v=_number("price"), size_v=_number("amount"),
    )
    lf = lf.with_columns(reason=reason_chain(
        _symbol_reason(bad, symbol),
        (pl.col("snap").is_null(), pl.lit("is_snapshot '") + pl.col("is_snapshot").fill_null("") + pl.lit("' is not true/false")),
        (pl.col("side_v").is_null(), pl.lit("side '") + pl.col("side").fill_null("") + pl.lit("' is not bid or ask")),
        _time_reason(),
        (_finite(pl.col("price_v")).not_(), pl.lit("price '") + pl.col("price").fill_null("") + pl.lit("' is not a number")),
        (_finite(pl.col("size_v")).not_(), pl.lit("amount '") + pl.col("amount").fill_null("") + pl.lit("' is not a number")),
    ))
    ok = pl.col("reason").is_null()
    snap = pl.col("snap").fill_null(False)
    prev = lambda e: e.shift(1)  # noqa: E731
    # a message: a run of rows of one (local_timestamp, timestamp, is_snapshot); a snapshot run is one message
    new_msg = (
        (snap != prev(snap)) | (snap.not_() & ((pl.col("ts_recv") != prev(pl.col("ts_recv"))) | (pl.col("ts_event") != prev(pl.col("ts_event")))))
    ).fill_null(True)
    snap_start = snap & (prev(snap).fill_null(False).not_())
    rows = lf.with_columns(
        seq=pl.when(new_msg).then(pl.col("src_line")).forward_fill(), start=snap_start, key=pl.col("src_line") * 2 + 1,
    ).select(
        "key", "start", "src_line", "ts_event", "ts_recv", "seq", "reason",
        side=pl.when(ok).then(pl.col("side_v")), price=pl.when(ok).then(pl.col("price_v")),
        size=pl.when(ok).then(pl.col("size_v")),
        action=pl.when(ok.not_()).then(pl.lit(None, pl.String)).when(pl.col("size_v") == 0).then(pl.lit("delete"))
        .when(snap).then(pl.lit("add")).otherwise(pl.lit("update")),
        is_snapshot=snap & ok,
    )
    clears = rows.filter(pl.col("start")).with_columns(
        key=pl.col("key") - 1, side=pl.lit(0, pl.Int8), price=pl.lit(None, pl.Float64), size=pl.lit(0.0),
        action=pl.lit("clear"), is_snapshot=pl.lit(True), reason=pl.lit(None, pl.String),
    )
    return conform(clears.merge_sorted(rows, key="key").drop("key", "start"))


# ---- book_snapshot_N ------------------------------------------------------------------------

def _levels(header: list[str]) -> int:
    """N of a book_snapshot_N header (levels 0..N-1 of both sides, price and amount), else 0."""
    seen = {m.groups() for c in header if (m := _LEVEL_COL.match(c))}
    n = 1 + max((int(i) for _, i, _ in seen), default=-1)
    want = {(s, str(i), f) for s in ("bids", "asks") for i in range(n) for f in ("price", "amount")}
    return n if n and seen == want else 0


def snapshot_matches(landing: Path, plain: Path) -> bool:
    header = csv_header(plain)
    return header[:4] == list(_HEAD) and _levels(header) > 0


def snapshot_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    header = csv_header(plain)
    n = _levels(header)
    lf = _times(scan_text_csv(plain, header))
    bad = _bad_symbols(lf, symbol)
    lf = lf.with_columns(row_reason=reason_chain(_symbol_reason(bad, symbol), _time_reason()))
    level = lambda side, s, i: pl.struct(  # noqa: E731
        side=pl.lit(side, pl.Int8), px=pl.col(f"{s}[{i}].price"), qty=pl.col(f"{s}[{i}].amount"), where=pl.lit(f"{s}[{i}]"))
    clear = pl.struct(side=pl.lit(0, pl.Int8), px=pl.lit(None, pl.String), qty=pl.lit("0"), where=pl.lit("clear"))
    levels = pl.concat_list([clear, *[level(1, "bids", i) for i in range(n)], *[level(-1, "asks", i) for i in range(n)]])
    rows = lf.select("src_line", "ts_event", "ts_recv", "row_reason", lv=levels).explode("lv").unnest("lv")
    empty = lambda c: pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")  # noqa: E731
    is_clear = pl.col("side") == 0
    # a rejected row keeps one row (its clear) with the reason; an absent level is no row
    rows = rows.filter(is_clear | (pl.col("row_reason").is_null() & (empty("px") & empty("qty")).not_()))
    price, size = _number("px"), _number("qty")
    reason = pl.coalesce(pl.col("row_reason"), reason_chain(
        (is_clear.not_() & _finite(price).not_(), pl.col("where") + pl.lit(".price '") + pl.col("px").fill_null("") + pl.lit("' is not a number")),
        (is_clear.not_() & _finite(size).not_(), pl.col("where") + pl.lit(".amount '") + pl.col("qty").fill_null("") + pl.lit("' is not a number")),
    ))
    rows = rows.with_columns(reason=reason)
    ok = pl.col("reason").is_null()
    return conform(rows.select(
        "src_line", "ts_event", "ts_recv", "reason", seq=pl.col("src_line"),
        side=pl.when(ok).then(pl.col("side")), price=pl.when(ok & is_clear.not_()).then(price),
        size=pl.when(ok).then(pl.when(is_clear).then(0.0).otherwise(size)),
        action=pl.when(ok.not_()).then(pl.lit(None, pl.String)).when(is_clear).then(pl.lit("clear")).otherwise(pl.lit("add")),
        is_snapshot=ok,
    ))


INCREMENTAL = register(BookFormat(name=INCREMENTAL_NAME, layout=INCREMENTAL_LAYOUT, matches=incremental_matches,
                                  parse=incremental_parse, level=DEPTH_L2, continuity="none"))
SNAPSHOT = register(BookFormat(name=SNAPSHOT_NAME, layout=SNAPSHOT_LAYOUT, matches=snapshot_matches,
                               parse=snapshot_parse, level=DEPTH_L2, continuity="none"))
