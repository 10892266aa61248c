"""Binance public-data CSVs (data.binance.vision): spot and USD-M trades, aggTrades, bookTicker.

Layouts (files may or may not have a header; times are ms, spot files from 2025 are µs):
- trades:     id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]
- aggTrades:  agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]
- bookTicker: update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time

``is_buyer_maker=true`` means the buyer's order rested, so the seller was the aggressor
(canonical ``side=-1``). Our own parser rather than hftbacktest's bundled converter because
that one marks every trade as a sell and keeps ms timestamps.
"""

from __future__ import annotations

import re

import polars as pl

from quant_assets.ingest.formats import SourceFormat, first_int, scan_fields, to_canonical
from quant_assets.ingest.sample import Sample
from quant_assets.ingest.timeunits import epoch_to_ns, infer_epoch_unit

#: ``BTCUSDT-trades-2024-01.zip`` -> symbol, data type.
FILE_NAME_RE = re.compile(r"^([A-Za-z0-9_]+)-(trades|aggTrades|bookTicker)-\d{4}-\d{2}")

_UNITS = ("ms", "us")

_TRADES = {
    "id": pl.Int64(), "price": pl.Float64(), "qty": pl.Float64(), "quote_qty": pl.Float64(),
    "time": pl.Int64(), "is_buyer_maker": pl.Boolean(), "is_best_match": pl.Boolean(),
}
_AGG = {
    "agg_trade_id": pl.Int64(), "price": pl.Float64(), "quantity": pl.Float64(),
    "first_trade_id": pl.Int64(), "last_trade_id": pl.Int64(), "transact_time": pl.Int64(),
    "is_buyer_maker": pl.Boolean(), "is_best_match": pl.Boolean(),
}
_BOOK = {
    "update_id": pl.Int64(), "best_bid_price": pl.Float64(), "best_bid_qty": pl.Float64(),
    "best_ask_price": pl.Float64(), "best_ask_qty": pl.Float64(),
    "transaction_time": pl.Int64(), "event_time": pl.Int64(),
}


def _header_is(sample: Sample, names: dict[str, pl.DataType]) -> bool:
    header = sample.header
    return header is not None and header == list(names)[: len(header)] and len(header) >= 6


def _side_from_maker(col: str) -> pl.Expr:
    """Booleans parse case-insensitively (Binance writes True and true); unparseable -> null,
    which validation rejects (Binance always knows the aggressor, so 0 would hide a bad row)."""
    return pl.when(pl.col(col)).then(-1).when(pl.col(col).not_()).then(1)


def _match_trades(s: Sample) -> bool:
    if s.header is not None:
        return _header_is(s, _TRADES)
    head = ["int", "float", "float", "float", "int", "bool"]
    return s.row_fits(head) or s.row_fits([*head, "bool"])


def _scan_trades(s: Sample) -> pl.LazyFrame:
    unit = infer_epoch_unit(first_int(s, 4, str(s.source)), _UNITS, str(s.source))
    lf = scan_fields(s, _TRADES)
    return to_canonical(
        lf, "trade",
        ts_event=epoch_to_ns("time", unit), seq=pl.col("id"), price=pl.col("price"),
        size=pl.col("qty"), side=_side_from_maker("is_buyer_maker"), trade_id=pl.col("id").cast(pl.String),
    )


def _match_agg(s: Sample) -> bool:
    if s.header is not None:
        return _header_is(s, _AGG)
    head = ["int", "float", "float", "int", "int", "int", "bool"]
    return s.row_fits(head) or s.row_fits([*head, "bool"])


def _scan_agg(s: Sample) -> pl.LazyFrame:
    unit = infer_epoch_unit(first_int(s, 5, str(s.source)), _UNITS, str(s.source))
    lf = scan_fields(s, _AGG)
    return to_canonical(
        lf, "trade",
        ts_event=epoch_to_ns("transact_time", unit), seq=pl.col("agg_trade_id"), price=pl.col("price"),
        size=pl.col("quantity"), side=_side_from_maker("is_buyer_maker"),
        trade_id=pl.col("agg_trade_id").cast(pl.String),
    )


def _match_book(s: Sample) -> bool:
    if s.header is not None:
        return _header_is(s, _BOOK)
    return s.row_fits(["int", "float", "float", "float", "float", "int", "int"])


def _scan_book(s: Sample) -> pl.LazyFrame:
    unit = infer_epoch_unit(first_int(s, 5, str(s.source)), _UNITS, str(s.source))
    lf = scan_fields(s, _BOOK)
    return to_canonical(
        lf, "quote",
        ts_event=epoch_to_ns("transaction_time", unit), ts_recv=epoch_to_ns("event_time", unit),
        seq=pl.col("update_id"), bid_px=pl.col("best_bid_price"), bid_sz=pl.col("best_bid_qty"),
        ask_px=pl.col("best_ask_price"), ask_sz=pl.col("best_ask_qty"),
    )


TRADES = SourceFormat("binance_trades", ",".join(_TRADES) + " (is_best_match optional)", _match_trades, _scan_trades)
AGG_TRADES = SourceFormat("binance_aggtrades", ",".join(_AGG) + " (is_best_match optional)", _match_agg, _scan_agg)
BOOK_TICKER = SourceFormat("binance_bookticker", ",".join(_BOOK), _match_book, _scan_book)
FORMATS = (TRADES, AGG_TRADES, BOOK_TICKER)


def symbol_from_name(file_name: str) -> str | None:
    """The symbol a Binance-style file name carries, if it has that shape."""
    m = FILE_NAME_RE.match(file_name)
    return m.group(1).upper() if m else None
