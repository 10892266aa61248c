"""Tardis.dev CSV downloads (``trades`` and ``quotes`` data types), timestamps in µs.

- trades: exchange,symbol,timestamp,local_timestamp,id,side,price,amount
- quotes: exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount

``timestamp`` is the exchange's time (-> ``ts_event``), ``local_timestamp`` Tardis's receive
time (-> ``ts_recv``). ``side`` is the aggressor: buy, sell or unknown.
"""

from __future__ import annotations

import polars as pl

from quant_assets.ingest.formats import SourceFormat, scan_fields, to_canonical
from quant_assets.ingest.sample import Sample
from quant_assets.ingest.timeunits import epoch_to_ns

_TRADES = {
    "exchange": pl.String(), "symbol": pl.String(), "timestamp": pl.Int64(), "local_timestamp": pl.Int64(),
    "id": pl.String(), "side": pl.String(), "price": pl.Float64(), "amount": pl.Float64(),
}
_QUOTES = {
    "exchange": pl.String(), "symbol": pl.String(), "timestamp": pl.Int64(), "local_timestamp": pl.Int64(),
    "ask_amount": pl.Float64(), "ask_price": pl.Float64(), "bid_price": pl.Float64(), "bid_amount": pl.Float64(),
}


def _scan_trades(s: Sample) -> pl.LazyFrame:
    lf = scan_fields(s, _TRADES)
    side = pl.col("side").str.to_lowercase()
    return to_canonical(
        lf, "trade",
        ts_event=epoch_to_ns("timestamp", "us"), ts_recv=epoch_to_ns("local_timestamp", "us"),
        seq=pl.col("src_line"), price=pl.col("price"), size=pl.col("amount"),
        side=pl.when(side == "buy").then(1).when(side == "sell").then(-1).when(side == "unknown").then(0),
        trade_id=pl.col("id"),
    )


def _scan_quotes(s: Sample) -> pl.LazyFrame:
    lf = scan_fields(s, _QUOTES)
    return to_canonical(
        lf, "quote",
        ts_event=epoch_to_ns("timestamp", "us"), ts_recv=epoch_to_ns("local_timestamp", "us"),
        seq=pl.col("src_line"), bid_px=pl.col("bid_price"), bid_sz=pl.col("bid_amount"),
        ask_px=pl.col("ask_price"), ask_sz=pl.col("ask_amount"),
    )


TRADES = SourceFormat("tardis_trades", ",".join(_TRADES), lambda s: s.header == list(_TRADES), _scan_trades)
QUOTES = SourceFormat("tardis_quotes", ",".join(_QUOTES), lambda s: s.header == list(_QUOTES), _scan_quotes)
FORMATS = (TRADES, QUOTES)


def symbol_in_content(sample: Sample) -> str | None:
    """The ``symbol`` field of the first data row (Tardis files name their instrument)."""
    row = sample.data_row
    return row[1].upper() if sample.header is not None and len(row) > 1 and sample.header[:2] == ["exchange", "symbol"] else None
