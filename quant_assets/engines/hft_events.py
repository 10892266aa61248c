"""Canonical ticks → hftbacktest 2.4.4 event array (``hftbacktest.types.event_dtype``).

hftbacktest has no L1 feed type it backtests (``DEPTH_BBO_EVENT`` is ignored), so each L1
quote becomes market-depth events on a book that holds one level per side:

* per side, only when that side's price or size changed since the previous quote: first a
  ``DEPTH_EVENT`` with qty 0 at the *previous* quote's price (clears it; only when the price
  moved), then a ``DEPTH_EVENT`` with the new price and size (sets it). Bid events come before
  ask events; all events of one quote share its timestamps, and hftbacktest applies every
  event up to the time it advances to before the strategy looks, so the transiently empty
  side is never observed. (Clearing first also keeps hftbacktest's best-level search O(1):
  the side is empty when the new level is set.)
* a trade becomes ``TRADE_EVENT`` with ``BUY_EVENT`` (side +1, buyer aggressor) or
  ``SELL_EVENT`` (side -1). Side 0 (unknown) is inferred against the prevailing mid (in
  receive order): above it BUY, below it SELL, at it neither flag (hftbacktest's exchange then
  ignores the trade for fills, as it cannot tell which queue it hit).

Fields: ``exch_ts = ts_event`` and ``local_ts = ts_recv`` (int64 ns); ``px`` in quote
currency, ``qty`` in base units. A quote with an unknown size (null, e.g. FX) gets
``missing_qty`` so its level exists (hftbacktest deletes levels of < 0.5 lot).

Ordering (what hftbacktest requires, see ``hftbacktest.data.validate_event_order``): rows
flagged ``EXCH_EVENT`` must be non-decreasing in ``exch_ts`` and rows flagged ``LOCAL_EVENT``
non-decreasing in ``local_ts``; the exchange and the local processor each walk the same array
and read only the rows with their flag. Canonical files are sorted by ``ts_recv``; when
``ts_event`` is non-decreasing in that order too, every row carries both flags.

When it is not (the venue's times are out of receive order), the two processors see the
quotes in different orders, and a "clear the previous level" event is only right for the
order it was computed in: the exchange's previous quote is not the local one. So the deltas are
computed per order: a tick that has the same rank in both orders *and* the same previous quote
gets one row with both flags; every other tick gets a ``LOCAL_EVENT`` copy (deltas against its
previous quote in receive order) and an ``EXCH_EVENT`` copy (deltas in exchange order), each
placed by its rank in its own order. (hftbacktest's ``correct_event_order`` splits rows the
same way but copies each row's event unchanged into both orders, which leaves stale levels in
the exchange's book: they pile up, make its best-level search scan the price range, and fill
orders against prices that are gone.)

The conversion is vectorised: numpy for the bookkeeping and one numba kernel that writes the
rows in a single pass (compiled on first use, cached on disk); no Python loop per row. A month
of N ticks takes about 64 bytes × (4 × quotes + trades) for the array (~280 MB for 1M quotes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# The flag values of hftbacktest.types (2.4.4), repeated so this module imports without
# hftbacktest/numba; the tests check them against hftbacktest's.
DEPTH_EVENT = 1
TRADE_EVENT = 2
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28

#: ``hftbacktest.types.event_dtype`` (64 bytes, aligned).
EVENT_DTYPE = np.dtype(
    [("ev", "u8"), ("exch_ts", "i8"), ("local_ts", "i8"), ("px", "f8"), ("qty", "f8"),
     ("order_id", "u8"), ("ival", "i8"), ("fval", "f8")],
    align=True,
)

COLUMNS = ["ts_event", "ts_recv", "kind", "bid_px", "bid_sz", "ask_px", "ask_sz", "price", "size", "side"]


def read_ticks(path: Path | str) -> pl.DataFrame:
    """The columns the conversion needs from a canonical ticks Parquet file."""
    return pl.read_parquet(path, columns=COLUMNS)


@dataclass(frozen=True)
class _Ticks:
    """Per-tick numpy columns in receive order: prices float64 with NaN for null, quote sizes
    with unknown ones filled, the trade aggressor side resolved (+1/-1/0)."""

    exch: np.ndarray
    recv: np.ndarray
    is_quote: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray  # int8

    def __len__(self) -> int:
        return len(self.exch)


def _f64(df: pl.DataFrame, col: str, fill: float = np.nan) -> np.ndarray:
    """A float column as float64 numpy with nulls as ``fill`` (zero-copy when there are none)."""
    s = df[col]
    x = s.cast(pl.Float64).to_numpy()  # nulls become NaN (a copy only when there are nulls)
    if s.null_count() and not np.isnan(fill):
        np.nan_to_num(x, copy=False, nan=fill)
    return x


def _readonly(x: np.ndarray) -> np.ndarray:
    """``x`` marked read-only: numba types read-only and writable arrays differently, and polars
    hands out either (a zero-copy view or a copy), which would compile the kernel twice."""
    x = np.ascontiguousarray(x)
    x.flags.writeable = False
    return x


def _columns(df: pl.DataFrame, tick_size: float, missing_qty: float) -> _Ticks:
    """The tick columns as numpy (one copy at most each: a month is large and, in a VM, fresh
    memory is slow to touch), unknown quote sizes filled, trade aggressor sides resolved."""
    is_quote = (df["kind"] == "quote").to_numpy()
    bid_px, ask_px = _f64(df, "bid_px"), _f64(df, "ask_px")
    price = _f64(df, "price")
    side = df["side"].fill_null(0).to_numpy()
    unknown = ~is_quote & (side == 0)
    if unknown.any():
        # Quote rule against the mid of the last quote at or before the trade, in receive order;
        # a millionth of a tick of slack absorbs float noise in the mid.
        last_quote = np.maximum.accumulate(np.where(is_quote, np.arange(len(is_quote)), -1))
        src = last_quote[unknown]
        mid = np.where(src >= 0, (bid_px[np.maximum(src, 0)] + ask_px[np.maximum(src, 0)]) / 2.0, np.nan)
        eps = 1e-6 * tick_size
        side = side.copy()
        side[unknown] = np.where(price[unknown] > mid + eps, 1, np.where(price[unknown] < mid - eps, -1, 0))
    # Sizes are read for quotes only, so filling the trades' nulls too is harmless.
    return _Ticks(
        exch=_readonly(df["ts_event"].to_numpy()),
        recv=_readonly(df["ts_recv"].to_numpy()),
        is_quote=_readonly(is_quote),
        bid_px=_readonly(bid_px),
        bid_sz=_readonly(_f64(df, "bid_sz", missing_qty)),
        ask_px=_readonly(ask_px),
        ask_sz=_readonly(_f64(df, "ask_sz", missing_qty)),
        price=_readonly(price),
        size=_readonly(_f64(df, "size")),
        side=_readonly(side.astype(np.int8, copy=False)),
    )


def _prev_quote(is_quote: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each position k of ``order`` (tick indices), the tick index of the last quote before
    it in that order, or -1."""
    pos = np.where(is_quote[order], np.arange(len(order)), -1)
    last = np.maximum.accumulate(pos)
    prev_pos = np.empty_like(last)
    prev_pos[0] = -1
    prev_pos[1:] = last[:-1]
    return np.where(prev_pos >= 0, order[np.maximum(prev_pos, 0)], -1)


def _rows_kernel(
    write, counts, start, idx, prevq, tick_flags, t_exch, t_recv, is_quote,
    bid_px, bid_sz, ask_px, ask_sz, price, size, side, ev, exch_ts, local_ts, px, qty,
):  # pragma: no cover - compiled by numba (see _kernel)
    """One pass over the ticks ``idx`` (in that order): count their event rows into
    ``counts`` (``write`` False), or write them from row ``start[k]`` on (``write`` True).

    A quote is compared with the quote ``prevq[k]`` (tick index, -1: none) per side: if the
    price moved, a qty-0 row at the old price (when there was one); if the price or the size
    changed, a row with the new level. Bid rows before ask rows. A trade is one row, flagged
    by its aggressor ``side``. Rows get the tick's ``tick_flags[k]`` (EXCH/LOCAL bits; one
    value for all when the array has one element). NaN compares equal to NaN here: a side that
    stays unknown is no change. Written row by row, as a numpy version needs a strided pass
    over the 64-byte rows per field and per event kind (5x slower on a month).
    """
    one_flag = tick_flags.shape[0] == 1
    for k in range(idx.shape[0]):
        i = idx[k]
        f = tick_flags[0] if one_flag else tick_flags[k]
        # The counting pass gets an empty ``start``: reading it there was an out-of-bounds read
        # (numba does no bounds checks) that segfaulted when the heap layout put it on an
        # unmapped page (seen when NautilusTrader had run first in the process).
        r = start[k] if write else 0
        n = 0
        if is_quote[i]:
            p = prevq[k]
            for book_side in range(2):
                if book_side == 0:
                    new_px, new_sz, flag = bid_px[i], bid_sz[i], BUY_EVENT
                    old_px = bid_px[p] if p >= 0 else np.nan
                    old_sz = bid_sz[p] if p >= 0 else np.nan
                else:
                    new_px, new_sz, flag = ask_px[i], ask_sz[i], SELL_EVENT
                    old_px = ask_px[p] if p >= 0 else np.nan
                    old_sz = ask_sz[p] if p >= 0 else np.nan
                moved = new_px != old_px and not (np.isnan(new_px) and np.isnan(old_px))
                resized = new_sz != old_sz and not (np.isnan(new_sz) and np.isnan(old_sz))
                if moved and not np.isnan(old_px):
                    if write:
                        ev[r + n] = DEPTH_EVENT | flag | f
                        exch_ts[r + n] = t_exch[i]
                        local_ts[r + n] = t_recv[i]
                        px[r + n] = old_px
                        qty[r + n] = 0.0
                    n += 1
                if not np.isnan(new_px) and (moved or resized):
                    if write:
                        ev[r + n] = DEPTH_EVENT | flag | f
                        exch_ts[r + n] = t_exch[i]
                        local_ts[r + n] = t_recv[i]
                        px[r + n] = new_px
                        qty[r + n] = new_sz
                    n += 1
        else:
            if write:
                aggressor = BUY_EVENT if side[i] > 0 else (SELL_EVENT if side[i] < 0 else 0)
                ev[r] = TRADE_EVENT | aggressor | f
                exch_ts[r] = t_exch[i]
                local_ts[r] = t_recv[i]
                px[r] = price[i]
                qty[r] = size[i]
            n = 1
        if not write:
            counts[k] = n


_compiled = None


def _kernel():
    """:func:`_rows_kernel`, compiled on first use (numba is imported only then). It uses no
    hftbacktest objects, so numba can cache it on disk (``__pycache__``); loading it costs
    ~1 s in a new process, once per process."""
    global _compiled
    if _compiled is None:
        from numba import njit

        # Serial on purpose: a parallel=True build was ~0.2 s faster on a month, but one
        # benchmark process died of a segfault while it was in use (not reproduced; numba's
        # disk-cached parallel kernels are a known suspect). The first-touch cost it hid is
        # now avoided by pre-populated memory (_zeroed_events).
        _compiled = njit(nogil=True, cache=True)(_rows_kernel)
    return _compiled


def _stream_rows(t: _Ticks, idx: np.ndarray, prevq: np.ndarray) -> np.ndarray:
    """Event rows per tick of ``idx``."""
    counts = np.empty(len(idx), np.int64)
    # Empty outputs of the writing call's types (field views), so both calls share one compile.
    none = np.zeros(2, EVENT_DTYPE)  # two rows: their field views are strided, as in the real call
    _kernel()(False, counts, np.empty(0, np.int64), idx, prevq, np.zeros(1, np.uint64), t.exch, t.recv, t.is_quote,
              t.bid_px, t.bid_sz, t.ask_px, t.ask_sz, t.price, t.size, t.side,
              none["ev"], none["exch_ts"], none["local_ts"], none["px"], none["qty"])
    return counts


def _write_rows(t: _Ticks, out: np.ndarray, idx: np.ndarray, prevq: np.ndarray, start: np.ndarray, flags: np.ndarray) -> None:
    _kernel()(True, np.empty(0, np.int64), start, idx, prevq, flags, t.exch, t.recv, t.is_quote,
              t.bid_px, t.bid_sz, t.ask_px, t.ask_sz, t.price, t.size, t.side,
              out["ev"], out["exch_ts"], out["local_ts"], out["px"], out["qty"])


def _zeroed_events(n: int) -> np.ndarray:
    """A zero-filled event array of ``n`` rows. On Linux the pages are mapped up front
    (``MAP_POPULATE``): one pass in the kernel instead of a page fault per 4 KiB on first write,
    which in a VM costs more than the conversion itself for a month of events. The array keeps
    its mapping alive and unmaps it when garbage-collected."""
    import mmap

    nbytes = n * EVENT_DTYPE.itemsize
    populate = getattr(mmap, "MAP_POPULATE", 0)
    if nbytes < (64 << 20) or not populate:
        return np.zeros(n, EVENT_DTYPE)
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    return np.frombuffer(mm, dtype=EVENT_DTYPE)


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    """Start of each group, plus the total at the end (length ``len(counts) + 1``)."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def to_events(
    ticks: pl.DataFrame | Path | str, tick_size: float, missing_qty: float = 1.0, end_marker_ns: int | None = None,
) -> np.ndarray:
    """Convert canonical ticks (a DataFrame in the tick schema, or a Parquet path) to an
    hftbacktest event array, ready for ``BacktestAsset.data``.

    ``tick_size`` (quote currency) only serves the side inference of trades with side 0;
    prices are passed through (hftbacktest rounds them to ticks). Rows should be sorted by
    ``ts_recv`` (the canonical order); they are re-sorted (stably) if not. With
    ``end_marker_ns``, a no-op row that far after the last timestamp ends the array (see
    :func:`with_end_marker`; built in place, as a month's array is hundreds of MB). The result
    satisfies ``hftbacktest.data.validate_event_order``. An empty input gives an empty array.
    """
    df = read_ticks(ticks) if isinstance(ticks, (str, Path)) else ticks.select(COLUMNS)
    if df.height == 0:
        return np.zeros(0, EVENT_DTYPE)
    recv = df["ts_recv"].to_numpy()
    if np.any(recv[1:] < recv[:-1]):
        df = df.sort("ts_recv", maintain_order=True)
    t = _columns(df, tick_size, missing_qty)
    n = len(t)
    extra = 0 if end_marker_ns is None else 1
    local_order = np.arange(n)
    prevq_local = _prev_quote(t.is_quote, local_order)
    local_start = _exclusive_cumsum(_stream_rows(t, local_order, prevq_local))

    if not np.any(t.exch[1:] < t.exch[:-1]):
        out = _zeroed_events(local_start[-1] + extra)
        _write_rows(t, out, local_order, prevq_local, local_start, np.full(1, EXCH_EVENT | LOCAL_EVENT, np.uint64))
    else:
        exch_order = np.argsort(t.exch, kind="stable")
        exch_rank = np.empty(n, np.int64)
        exch_rank[exch_order] = local_order
        prevq_exch = np.empty(n, np.int64)
        prevq_exch[exch_order] = _prev_quote(t.is_quote, exch_order)
        shared = (exch_rank == local_order) & (prevq_exch == prevq_local)
        exch_only = exch_order[~shared[exch_order]]
        exch_prevq = prevq_exch[exch_only]
        exch_start = _exclusive_cumsum(_stream_rows(t, exch_only, exch_prevq))
        # Merge by rank, tick by tick (a tick's rows stay together): a local tick's rows go at
        # its receive rank, after the exchange rows of lower exchange rank; an exchange-only
        # tick's rows go at its exchange rank, after the local rows of that rank and below.
        exch_key = exch_rank[exch_only]  # increasing
        local_at = local_start[:-1] + exch_start[np.searchsorted(exch_key, local_order, side="left")]
        exch_at = exch_start[:-1] + local_start[exch_key + 1]
        out = _zeroed_events(local_start[-1] + exch_start[-1] + extra)
        _write_rows(t, out, local_order, prevq_local, local_at,
                    np.where(shared, EXCH_EVENT | LOCAL_EVENT, LOCAL_EVENT).astype(np.uint64))
        _write_rows(t, out, exch_only, exch_prevq, exch_at, np.full(1, EXCH_EVENT, np.uint64))
    if end_marker_ns is not None:
        _set_end_marker(out, end_marker_ns)
    return out


def _set_end_marker(out: np.ndarray, pad_ns: int) -> None:
    """Make the (zeroed) last row of ``out`` the end marker, ``pad_ns`` after the others."""
    body = out[:-1]
    last = max(int(body["exch_ts"].max()), int(body["local_ts"].max())) if len(body) else 0
    out["ev"][-1] = EXCH_EVENT | LOCAL_EVENT
    out["exch_ts"][-1] = last + pad_ns
    out["local_ts"][-1] = last + pad_ns
    out["px"][-1] = np.nan


def with_end_marker(events: np.ndarray, pad_ns: int) -> np.ndarray:
    """A copy of ``events`` plus one no-op row ``pad_ns`` after the last timestamp (both flags,
    no event type: both processors skip it).

    hftbacktest 2.4.4 stops advancing its clock once the data is exhausted (``elapse`` returns
    1 and ``current_timestamp`` stays at the start of that step), so order round trips after
    the last real event would carry stale times. With the marker, the close-out at the last
    event (cancels, the closing IOC) runs at real timestamps; ``pad_ns`` must exceed its round
    trips. ``to_events(..., end_marker_ns=pad_ns)`` does the same without the copy.
    """
    out = np.zeros(len(events) + 1, EVENT_DTYPE)
    out[:-1] = events
    _set_end_marker(out, pad_ns)
    return out
