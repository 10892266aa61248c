"""Book features at given times (bar closes): depth imbalance over N levels, microprice, depth
within ±X bps of the mid, read from a month's published ``book`` day by day (bounded memory).

Columns (one row per time, in the order given):

- ``book_imbalance``: (bid depth − ask depth) / (bid depth + ask depth) over the best
  :data:`BOOK_LEVELS` levels of each side, in [−1, 1]; positive: more resting size to buy.
- ``microprice``: (best bid × ask size + best ask × bid size) / (bid size + ask size), quote
  currency: the mid weighted toward the side with less size at the top.
- ``depth_bid_bps`` / ``depth_ask_bps``: resting size (base units) at prices within
  :data:`BOOK_BPS` bps of the mid, on each side.
- ``book_reason``: null when the features are known, else why they are null: the month has no
  book, the time is before its first snapshot, inside a gap span (the book is unknown there:
  never the stale book), or a side of the book is empty.

The book at time ``t`` has every message *received* at or before ``t`` applied (the receive
clock of the bars; a bar's features are the book at its close). A month's features read only
that month's book (which starts from its own snapshot): nothing about a month depends on a later
one.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quant_assets.book.build import read_manifest
from quant_assets.book.read import book_slice
from quant_assets.lake.store import Lake

#: Levels per side of ``book_imbalance``.
BOOK_LEVELS = 5
#: Half-width of the ``depth_*_bps`` band around the mid, in basis points.
BOOK_BPS = 10.0
#: Bump when the features change (part of the bars' code version).
FEATURES_VERSION = "1"

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "book_imbalance": pl.Float64(), "microprice": pl.Float64(),
    "depth_bid_bps": pl.Float64(), "depth_ask_bps": pl.Float64(), "book_reason": pl.String(),
}
NO_BOOK = "no book for the month"


def book_features(lake: Lake, symbol: str, month: str, times: np.ndarray, until: int,
                  n_levels: int = BOOK_LEVELS, bps: float = BOOK_BPS) -> pl.DataFrame:
    """The features at ``times`` (int64 ns, ascending, on the receive clock; ``until``: the end of
    the month, exclusive) from the published book of (symbol, month); every row null with
    :data:`NO_BOOK` when it has none."""
    times = np.ascontiguousarray(times, dtype=np.int64)
    sl = book_slice(lake, symbol, month)
    if sl is None:
        return pl.DataFrame({**{c: [None] * len(times) for c in FEATURE_SCHEMA if c != "book_reason"},
                             "book_reason": [NO_BOOK] * len(times)}, schema=FEATURE_SCHEMA)
    from quant_assets.book.replay import Sampler  # numba: imported when features are computed

    sampler = Sampler(times, n_levels, bps, l3=sl.is_l3)
    first_ts = None
    for day in sl.days:
        rows = pl.read_parquet(day)
        if first_ts is None and rows.height:
            first_ts = int(rows["ts_recv"][0])
        sampler.feed(rows)
    f = sampler.finish(until)
    bid, bid_sz, ask, ask_sz, dbid, dask, wbid, wask = (f[:, k] for k in range(8))
    with np.errstate(invalid="ignore", divide="ignore"):
        imbalance = (dbid - dask) / (dbid + dask)
        micro = (bid * ask_sz + ask * bid_sz) / (bid_sz + ask_sz)
    reason = np.full(len(times), None, dtype=object)
    reason[np.isnan(bid) | np.isnan(ask)] = "book empty on a side"
    if first_ts is not None:
        reason[times < first_ts] = "before the book's first snapshot"
    for g in (read_manifest(lake, symbol, month) or {}).get("gaps", []):
        end = g["end_ns"] if g["end_ns"] is not None else np.iinfo(np.int64).max
        # the book is unknown from the gap's start until the snapshot that resets it
        reason[(times >= g["start_ns"]) & (times < end)] = f"inside a gap of the book ({g['kind']})"
    known = np.array([r is None for r in reason], dtype=bool)
    col = lambda a: pl.Series(np.where(known, a, np.nan)).fill_nan(None)  # noqa: E731
    return pl.DataFrame({
        "book_imbalance": col(imbalance), "microprice": col(micro),
        "depth_bid_bps": col(wbid), "depth_ask_bps": col(wask), "book_reason": pl.Series(reason.tolist(), dtype=pl.String),
    }, schema=FEATURE_SCHEMA)
