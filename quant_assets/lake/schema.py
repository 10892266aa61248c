"""The canonical tick schema: one table for L1 quotes and trades.

Invariants of a published ``ticks`` partition:
- ``ts_event`` and ``ts_recv`` are int64 nanoseconds since the Unix epoch, UTC.
  ``ts_event`` is the venue's time, ``ts_recv`` the time we (or the data vendor) received it;
  where a source gives one time only, both are equal.
- rows are sorted by (``ts_recv``, ``seq``) and unique; ``seq`` is the source's own sequence
  (trade id, update id) where it has one, else the line number in the source file.
- ``kind`` is ``quote`` (``bid_px, bid_sz, ask_px, ask_sz`` set, ``price, size, side`` null)
  or ``trade`` (``price, size, side`` set, the quote columns null).
- prices are in quote currency per unit of base, sizes in base units; prices are > 0,
  sizes > 0 where known (FX quotes may have no size: null), ``bid_px <= ask_px``.
- ``side`` is +1 when the buyer was the aggressor, -1 the seller, 0 unknown.
"""

from __future__ import annotations

import polars as pl

KIND = pl.Enum(["quote", "trade"])

TICK_SCHEMA: dict[str, pl.DataType] = {
    "ts_event": pl.Int64(),
    "ts_recv": pl.Int64(),
    "seq": pl.Int64(),
    "kind": KIND,
    "bid_px": pl.Float64(),
    "bid_sz": pl.Float64(),
    "ask_px": pl.Float64(),
    "ask_sz": pl.Float64(),
    "price": pl.Float64(),
    "size": pl.Float64(),
    "side": pl.Int8(),
    "trade_id": pl.String(),
}
TICK_COLUMNS = list(TICK_SCHEMA)
#: Two rows equal on these (all but ``seq``) are duplicates: one is kept.
DEDUPE_COLUMNS = [c for c in TICK_COLUMNS if c != "seq"]

#: Human-readable description of each column, for README, metadata and the UI.
TICK_DOCS: dict[str, str] = {
    "ts_event": "venue event time, int64 ns since epoch UTC",
    "ts_recv": "receive time, int64 ns since epoch UTC (= ts_event when the source has one time)",
    "seq": "int64 tie-breaker: source sequence (trade/update id) or source line number",
    "kind": "quote | trade",
    "bid_px": "best bid, quote currency (quotes)",
    "bid_sz": "best bid size, base units (quotes; null when unknown)",
    "ask_px": "best ask, quote currency (quotes)",
    "ask_sz": "best ask size, base units (quotes; null when unknown)",
    "price": "trade price, quote currency (trades)",
    "size": "trade size, base units (trades)",
    "side": "+1 buyer aggressor, -1 seller aggressor, 0 unknown (trades)",
    "trade_id": "venue trade id as text (trades)",
}
