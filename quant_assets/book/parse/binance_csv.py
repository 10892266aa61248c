"""Binance historical order-book CSVs (the ``T_DEPTH``/``S_DEPTH`` downloads: a ``depth_snap``
file and ``depth_update`` files per day), one level change per row::

    symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu
    BTCUSDT,1704067200012,1001,1003,b,set,42000.10,1.500,1000

Columns are recognised by name (header required; ``symbol`` and ``pu`` optional, spot files
have no ``pu``). ``timestamp`` is the event time (ms; µs accepted), ``side`` ``b``/``a``
(``bid``/``ask`` too), ``update_type`` ``snap`` (a snapshot level) or ``set`` (a level's new
absolute size, ``0`` removing it). Rows of one message share ``last_update_id`` and are
contiguous; a snapshot is a run of ``snap`` rows of one ``last_update_id``.

Staged rows (:data:`~quant_assets.book.schema.STAGED_SCHEMA`), in file order:

- a snapshot: one ``clear`` row (side 0, at the run's first line) then one ``add`` row per
  ``snap`` row, ``is_snapshot``, ``seq = last_update_id`` (``seq_first``/``seq_prev`` null, as a
  REST snapshot's);
- a ``set`` row: ``update`` (``delete`` when ``qty`` is 0), ``seq = last_update_id``,
  ``seq_first = first_update_id``, ``seq_prev = pu`` (null without the column);
- ``ts_event`` = ``ts_recv`` = ``timestamp`` (the file has one time); :data:`F_LAST` on the last
  row of each ``last_update_id`` run.

A row that cannot be used keeps its ``src_line`` with a reason: another symbol than the landing
folder's, an unknown side or update type, a time, id, price or quantity that is not a number.
The file is read lazily (the builder sinks it), so a day's update file streams.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quant_assets.book.formats import BookFormat, conform, register
from quant_assets.book.parse.common import csv_header, epoch_unit_of, reason_chain, scan_text_csv
from quant_assets.book.schema import DEPTH_L2
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.timeunits import TO_NS
from quant_assets.lake.identity import claims_match

NAME = "binance_depth_csv"
LAYOUT = ("Binance order-book CSV (T_DEPTH/S_DEPTH depth_snap or depth_update): header "
          "[symbol,]timestamp,first_update_id,last_update_id,side,update_type,price,qty[,pu]")
REQUIRED = ("timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty")

_SIDES = {"b": 1, "bid": 1, "a": -1, "ask": -1}
_SNAP_TYPES = ("snap", "snapshot")
_SET_TYPES = ("set", "update")


def matches(landing: Path, plain: Path) -> bool:
    header = csv_header(plain)
    return all(c in header for c in REQUIRED)


def parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    """Staged rows of a depth CSV (module docstring); lazy."""
    header = csv_header(plain)
    if len(set(header)) != len(header):
        raise IngestError(landing, f"duplicate column names in the header {header}; expected {LAYOUT}")
    unit = epoch_unit_of(landing, plain, "timestamp", ("ms", "us"))
    lf = scan_text_csv(plain, header)
    bad_symbols: list[str] = []
    if "symbol" in header:  # one cheap pass over one column: the symbols the file claims
        claimed = lf.select(pl.col("symbol").str.strip_chars().unique()).collect(engine="streaming").to_series()
        bad_symbols = [s for s in claimed.drop_nulls().to_list() if not claims_match(s, symbol)]

    integer = lambda c: pl.col(c).str.strip_chars().cast(pl.Int64, strict=False)  # noqa: E731
    number = lambda c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)  # noqa: E731
    kind = pl.col("update_type").str.strip_chars().str.to_lowercase()
    side_txt = pl.col("side").str.strip_chars().str.to_lowercase()
    lf = lf.with_columns(side_raw=pl.col("side"), price_raw=pl.col("price")).with_columns(
        ts=integer("timestamp") * TO_NS[unit], u=integer("last_update_id"), U=integer("first_update_id"),
        pu=integer("pu") if "pu" in header else pl.lit(None, pl.Int64),
        side=side_txt.replace_strict(_SIDES, default=None, return_dtype=pl.Int8),
        price=number("price"), size=number("qty"),
        snap=kind.is_in(_SNAP_TYPES), known=kind.is_in(_SNAP_TYPES + _SET_TYPES),
        sym=pl.col("symbol").str.strip_chars() if "symbol" in header else pl.lit(None, pl.String),
    )
    finite = lambda c: pl.col(c).is_not_null() & pl.col(c).is_finite()  # noqa: E731
    reason = reason_chain(
        (pl.col("sym").is_in(bad_symbols), pl.lit("row of symbol ") + pl.col("sym") + pl.lit(f", not the landing folder's {symbol}")),
        (pl.col("known").not_(), pl.lit("update_type '") + pl.col("update_type").fill_null("") + pl.lit("' is not snap or set")),
        (pl.col("side").is_null(), pl.lit("side '") + pl.col("side_raw").fill_null("") + pl.lit("' is not b (bid) or a (ask)")),
        (pl.col("ts").is_null(), pl.lit("timestamp '") + pl.col("timestamp").fill_null("") + pl.lit(f"' is not an integer epoch in {unit}")),
        (pl.col("u").is_null() | pl.col("U").is_null(), pl.lit("first_update_id/last_update_id is not an integer")),
        (finite("price").not_(), pl.lit("price '") + pl.col("price_raw").fill_null("") + pl.lit("' is not a number")),
        (finite("size").not_(), pl.lit("qty '") + pl.col("qty").fill_null("") + pl.lit("' is not a number")),
    )
    lf = lf.with_columns(reason=reason)
    ok = pl.col("reason").is_null()
    # a snapshot starts where a usable snap row follows anything but a snap row of the same id
    prev_snap = (pl.col("snap") & ok).shift(1).fill_null(False)
    starts = pl.col("snap") & ok & (prev_snap.not_() | (pl.col("u") != pl.col("u").shift(1)).fill_null(True))
    rows = lf.with_columns(start=starts, key=pl.col("src_line") * 2 + 1).select(
        "key", "start", "src_line", ts_event="ts", seq=pl.when(ok).then(pl.col("u")),
        side=pl.when(ok).then(pl.col("side")), price=pl.when(ok).then(pl.col("price")), size=pl.when(ok).then(pl.col("size")),
        action=pl.when(ok.not_()).then(pl.lit(None, pl.String)).when(pl.col("size") == 0).then(pl.lit("delete"))
        .when(pl.col("snap")).then(pl.lit("add")).otherwise(pl.lit("update")),
        is_snapshot=pl.col("snap") & ok,
        seq_first=pl.when(ok & pl.col("snap").not_()).then(pl.col("U")),
        seq_prev=pl.when(ok & pl.col("snap").not_()).then(pl.col("pu")),
        reason="reason",
    )
    clears = rows.filter(pl.col("start")).with_columns(
        key=pl.col("key") - 1, side=pl.lit(0, pl.Int8), price=pl.lit(None, pl.Float64), size=pl.lit(0.0),
        action=pl.lit("clear"), seq_first=pl.lit(None, pl.Int64), seq_prev=pl.lit(None, pl.Int64),
    )
    merged = clears.merge_sorted(rows, key="key").drop("key", "start")
    return conform(merged)


FORMAT = register(BookFormat(name=NAME, layout=LAYOUT, matches=matches, parse=parse, level=DEPTH_L2, continuity="auto"))
