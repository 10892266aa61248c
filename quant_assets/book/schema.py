"""The canonical ``book`` table: order-book depth (L2 market-by-price, L3 market-by-order) as a
stream of deltas, one table per instrument × month, stored by UTC day.

Invariants of a published ``book`` partition (``book/symbol=S/month=M/day=DD/part-0.parquet``):

- ``ts_event`` and ``ts_recv`` are int64 ns since the Unix epoch, UTC (``ts_recv`` = ``ts_event``
  where the source has one time); rows are sorted by (``ts_recv``, ``seq``, row order within a
  message) and a day file holds the rows *received* on that UTC day.
- Every day file starts with a **full snapshot** of the book as it stood at the day's first
  delta (``is_snapshot`` rows: one ``clear`` row, ``side`` 0, then one ``add`` row per level
  (L2) or per order (L3), all stamped with the first delta's ``ts_recv``), so a month and each
  of its days can be replayed alone. The month's first day's snapshot is the source's own (a
  REST snapshot, a Tardis start-of-day snapshot, a Databento MBP/MBO snapshot) or the book
  reconstructed from the previous day file, never a guess.
- ``action``: ``add`` (a new level or order), ``update`` (a level's new total size, or an order's
  new remaining size), ``delete`` (the level or order is gone; ``size`` 0), ``clear`` (the whole
  book, ``side`` 0, or one side). L2 sizes are absolute (the level's new size), never increments.
- ``side``: +1 bid, −1 ask, 0 both (``clear``). ``price`` in quote currency per base unit, ``size``
  in base units, ``size`` ≥ 0; ``order_id`` set on L3 rows only.
- ``seq``: the source's sequence (Binance ``u``, Databento ``sequence``, Tardis: the row's line),
  strictly increasing between messages; several rows of one message share it.
- ``flags``: bit 0 (:data:`F_LAST`) on the last row of a message (the book is consistent only
  after it: a crossed book is checked there); bit 1 (:data:`F_GAP_RESET`) on the ``clear`` that
  starts a snapshot rebuilding the book after a sequence gap (the gap itself is in the
  partition's quality metadata and the quarantine).

A book is **crossed** when its best bid ≥ its best ask after a message's last row: a blocking
check. Fidelity: a slice with a ``book`` partition is ``depth-L2`` or ``depth-L3``
(:mod:`quant_assets.engines.fidelity`).

Parsed landing files are staged with :data:`STAGED_SCHEMA` (the canonical columns plus where a
row came from and the continuity fields of its message), one Parquet per landing file, before
the month is built and validated (``quant_assets.book.build``).
"""

from __future__ import annotations

import polars as pl

ACTION = pl.Enum(["add", "update", "delete", "clear"])
BID, ASK, BOTH = 1, -1, 0
#: ``flags`` bits.
F_LAST = 1
F_GAP_RESET = 2

BOOK_SCHEMA: dict[str, pl.DataType] = {
    "ts_event": pl.Int64(),
    "ts_recv": pl.Int64(),
    "seq": pl.Int64(),
    "side": pl.Int8(),
    "price": pl.Float64(),
    "size": pl.Float64(),
    "action": ACTION,
    "is_snapshot": pl.Boolean(),
    "order_id": pl.UInt64(),
    "flags": pl.UInt8(),
}
BOOK_COLUMNS = list(BOOK_SCHEMA)

#: Staged rows: the canonical columns plus provenance and each message's continuity fields,
#: read by the builder's sequence checks (null where a format has none).
STAGED_SCHEMA: dict[str, pl.DataType] = {
    **BOOK_SCHEMA,
    "src_line": pl.Int64(),     # 1-based line (or record) of the landing file
    "seq_first": pl.Int64(),    # Binance U (first update id of the message); Databento: sequence
    "seq_prev": pl.Int64(),     # Binance futures pu (the previous message's u); null elsewhere
    "reason": pl.String(),      # why the row is rejected (null: accepted), as in the tick staging
}

BOOK_DOCS: dict[str, str] = {
    "ts_event": "venue event time, int64 ns since epoch UTC",
    "ts_recv": "receive time, int64 ns since epoch UTC (= ts_event when the source has one time)",
    "seq": "the source's sequence (Binance u, Databento sequence, else the source line); one per message",
    "side": "+1 bid, -1 ask, 0 both sides (clear)",
    "price": "level (L2) or order (L3) price, quote currency",
    "size": "level's new total size (L2) or order's remaining size (L3), base units; 0 on delete",
    "action": "add | update | delete | clear",
    "is_snapshot": "part of a full snapshot (each day file starts with one)",
    "order_id": "the venue's order id (L3 only)",
    "flags": "bit 0: last row of a message; bit 1: the clear that rebuilds the book after a gap",
}

DEPTH_L2 = "depth-L2"
DEPTH_L3 = "depth-L3"
