"""NautilusTrader on order-book depth: a month's ``book`` day files (:mod:`quant_assets.book.schema`)
as ``OrderBookDeltas``, merged with the ticks in receive-time order, for a venue whose book type
is ``L2_MBP`` (``depth-L2``) or ``L3_MBO`` (``depth-L3``).

**One ``OrderBookDeltas`` per message.** The engine's matching engine iterates (matches resting
orders) after every data point, and the exchange then delivers the commands whose latency has
elapsed. Fed row by row it would show an order a book half-way through a message: after a
snapshot's ``clear``, an empty book; inside a Binance diff, a transiently crossed one. The rows of
a message (up to its ``F_LAST`` row, where the schema says the book is consistent) are therefore
applied together and the engine iterates once. Each delta's ``ts_init`` is its message's receive
time (the ``ts_recv`` of its ``F_LAST`` row); ``ts_event`` is the row's own.

**Order against the ticks.** By ``ts_recv``; at an equal ``ts_recv`` the book message comes first
(a quote derived from the book's top at that instant follows the message that made it, so an order
sent on that quote meets the book the quote shows), then the ticks in file order.

**Streaming.** Each day file is read in batches of ``rows`` rows cut at message boundaries, and
the merge holds at most about a batch of each stream: memory is bounded by a batch, not by the
day or the month. A day file must start with its snapshot (a ``clear`` row with ``is_snapshot``),
end on an ``F_LAST`` row and keep ``ts_recv`` non-decreasing (across days too): anything else
is a :class:`~quant_assets.engines.inputs.BacktestInputError` naming the file and row.

**Conversion, vectorised.** NautilusTrader 1.221 has raw-array constructors for ``QuoteTick`` and
``TradeTick`` but none for ``OrderBookDelta``. Rows are written with numpy straight into an array
laid out as its C struct ``OrderBookDelta_t`` (``core/rust/model.pxd``: 160 bytes, 128-bit fixed
point prices and sizes scaled by 1e16 in this high-precision build) and turned into Python objects
by ``OrderBookDelta.list_from_capsule``, a compiled loop. The layout is checked once per process
against ``OrderBookDelta.from_raw`` on sample rows (a mismatch raises instead of feeding garbage).
Measured in ``bench/nautilus_depth_bench.py``.

**What NautilusTrader 1.221 does not model, and what we do about it.**

- A ``CLEAR`` clears the whole book whatever its side: a one-sided clear row cannot be replayed and
  is refused (the builder's sources, Binance, Tardis and Databento, clear the whole book).
- An ``add``/``update`` whose size rounds to zero at the instrument's size precision is fed as a
  ``delete`` (the engine cannot hold an empty level); sizes finer than that precision are rounded
  to it. Both are counted and noted on the run.
- Our own fills do not remove liquidity from the book: the book is the recorded one, so two market
  orders between two book messages both see the same levels.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.book.schema import BOOK_COLUMNS, DEPTH_L3, F_LAST
from quant_assets.engines.inputs import BacktestInputError

#: Rows read from a day file per batch (cut back to the batch's last complete message).
BOOK_BATCH_ROWS = 250_000

#: NautilusTrader's ``RecordFlag`` bits (nautilus_trader.model.enums): F_LAST 128, F_SNAPSHOT 32.
NT_F_LAST = 128
NT_F_SNAPSHOT = 32
#: NautilusTrader's fixed-point scale in its high-precision build: raw = value × 10**16.
FIXED_PRECISION = 16

#: ``OrderBookDelta_t`` (model.pxd) as numpy sees it: InstrumentId_t (two pointers), action,
#: BookOrder_t {side, Price_t {int128 raw, precision}, Quantity_t {uint128 raw, precision},
#: order_id} aligned to 16 bytes, flags, sequence, ts_event, ts_init.
DELTA_DTYPE = np.dtype({
    "names": ["iid0", "iid1", "action", "side", "px_lo", "px_hi", "px_prec", "sz_lo", "sz_hi", "sz_prec",
              "order_id", "flags", "sequence", "ts_event", "ts_init"],
    "formats": ["<u8", "<u8", "u1", "u1", "<u8", "<u8", "u1", "<u8", "<u8", "u1", "<u8", "u1", "<u8", "<u8", "<u8"],
    "offsets": [0, 8, 16, 32, 48, 56, 64, 80, 88, 96, 112, 128, 136, 144, 152],
    "itemsize": 160,
})


class _CVec(ctypes.Structure):
    """``CVec`` (core.pxd): the buffer ``list_from_capsule`` reads (it never frees it)."""

    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t), ("cap", ctypes.c_size_t)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_get = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_get.restype = ctypes.c_void_p
_capsule_get.argtypes = [ctypes.py_object, ctypes.c_char_p]

_layout_checked = False
#: Reused struct buffer: a fresh 40 MB array per batch costs more in page faults than filling it.
_scratch = np.zeros(0, DELTA_DTYPE)


def _buffer(n: int) -> np.ndarray:
    """A :data:`DELTA_DTYPE` array of ``n`` rows, reused between batches (every field the rows
    use is written before each use; padding bytes are never read)."""
    global _scratch
    if len(_scratch) < n:
        _scratch = np.zeros(n, DELTA_DTYPE)
    return _scratch[:n]


def book_type_of(level: str):
    """NautilusTrader's ``BookType`` for a book of ``level`` (``depth-L2`` or ``depth-L3``)."""
    from nautilus_trader.model.enums import BookType

    return BookType.L3_MBO if level == DEPTH_L3 else BookType.L2_MBP


def _mul128(a: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) 64-bit halves of ``a × b`` for non-negative ``a`` (< 2**63) and ``b`` (< 2**64),
    exactly, with 32-bit limbs: prices above ~922 quote currency overflow 64 bits once scaled by
    1e16, and numpy has no 128-bit integer."""
    m, s32 = np.uint64(0xFFFFFFFF), np.uint64(32)
    a = a.astype(np.uint64)
    al, ah = a & m, a >> s32
    bl, bh = np.uint64(b & 0xFFFFFFFF), np.uint64(b >> 32)
    ll, lh, hl, hh = al * bl, al * bh, ah * bl, ah * bh
    cross = (ll >> s32) + (lh & m) + (hl & m)
    return (ll & m) | (cross << s32), hh + (lh >> s32) + (hl >> s32) + (cross >> s32)


def _instrument_id_words(instrument_id) -> np.ndarray:
    """The two pointer words of ``instrument_id``'s ``InstrumentId_t`` (interned strings that live
    as long as the process), read from a delta NautilusTrader built itself."""
    from nautilus_trader.model.data import OrderBookDelta

    capsule = OrderBookDelta.capsule_from_list([OrderBookDelta.clear(instrument_id, 0, 0, 0)])
    vec = _CVec.from_address(_capsule_get(capsule, None))
    return np.frombuffer(ctypes.string_at(vec.ptr, 16), "<u8").copy()


def _from_struct_array(arr: np.ndarray) -> list:
    """Python ``OrderBookDelta`` objects copied from ``arr`` (:data:`DELTA_DTYPE`)."""
    from nautilus_trader.model.data import OrderBookDelta

    if not len(arr):
        return []
    arr = np.ascontiguousarray(arr)
    vec = _CVec(arr.ctypes.data, len(arr), len(arr))
    capsule = _capsule_new(ctypes.addressof(vec), None, None)
    # `vec` and `arr` stay referenced until the copy returns: the capsule borrows them.
    out = OrderBookDelta.list_from_capsule(capsule)
    del capsule, vec
    return out


def _check_layout(instrument_id, price_precision: int, size_precision: int) -> None:
    """Compare the fast path with ``OrderBookDelta.from_raw`` on sample rows, once per process."""
    global _layout_checked
    if _layout_checked:
        return
    from nautilus_trader.model.data import OrderBookDelta
    from nautilus_trader.model.objects import HIGH_PRECISION

    if not HIGH_PRECISION:
        raise RuntimeError("nautilus_book expects NautilusTrader's high-precision build (128-bit prices, scale 1e16)")
    samples = [  # action, side, price ticks, size ticks, order id, flags, sequence, ts_event, ts_init
        (1, 1, 6_543_210_987, 12_345, 0, 0, 7, 1_700_000_000_000_000_001, 1_700_000_000_000_000_002),
        (2, 2, 10_001, 1, 99, NT_F_LAST, 2**40, 3, 4),
        # (a price of at most 987,654,321,012 ticks: within NautilusTrader's PRICE_MAX (~1.7e13) at
        # any price precision, a value past it panics in Rust; still > 2**64 once scaled to 1e16)
        (3, 1, 987_654_321_012, 987_654_321, 2**63 + 5, NT_F_LAST | NT_F_SNAPSHOT, 0, 5, 6),
        (4, 0, 0, 0, 0, NT_F_LAST, 1, 7, 8),
    ]
    arr = np.zeros(len(samples), DELTA_DTYPE)
    words = _instrument_id_words(instrument_id)
    arr["iid0"], arr["iid1"] = words[0], words[1]
    cols = list(zip(*samples))
    arr["action"], arr["side"] = cols[0], cols[1]
    arr["px_lo"], arr["px_hi"] = _mul128(np.array(cols[2], np.int64), 10 ** (FIXED_PRECISION - price_precision))
    arr["sz_lo"], arr["sz_hi"] = _mul128(np.array(cols[3], np.int64), 10 ** (FIXED_PRECISION - size_precision))
    arr["px_prec"], arr["sz_prec"] = price_precision, size_precision
    arr["order_id"], arr["flags"] = np.array(cols[4], np.uint64), cols[5]
    arr["sequence"], arr["ts_event"], arr["ts_init"] = cols[6], cols[7], cols[8]
    fast = _from_struct_array(arr)

    def fields(d) -> tuple:
        o = d.order
        return (int(d.action), str(d.instrument_id), int(o.side), o.price.raw, o.price.precision, o.size.raw,
                o.size.precision, o.order_id, d.flags, d.sequence, d.ts_event, d.ts_init)

    for got, s in zip(fast, samples):
        want = OrderBookDelta.from_raw(
            instrument_id, s[0], s[1], s[2] * 10 ** (FIXED_PRECISION - price_precision), price_precision,
            s[3] * 10 ** (FIXED_PRECISION - size_precision), size_precision, s[4], s[5], s[6], s[7], s[8],
        )
        if fields(got) != fields(want):
            raise RuntimeError(f"OrderBookDelta_t layout differs from nautilus_book.DELTA_DTYPE: built {fields(got)}, "
                               f"NautilusTrader says {fields(want)}")
    _layout_checked = True


@dataclass
class BookStats:
    """What the book stream fed: deltas (rows), messages, day files, the last message's
    ``ts_recv`` (ns), and the sizes it had to adjust (see the module docstring)."""

    level: str
    deltas: int = 0
    messages: int = 0
    days: int = 0
    last_ts: int = 0
    sizes_rounded: int = 0
    zero_sizes_deleted: int = 0
    files: list[str] = field(default_factory=list)


def _fail(path: Path, row: int, what: str) -> BacktestInputError:
    return BacktestInputError(f"{path}: row {row}: {what}")


def deltas_from_frame(df: pl.DataFrame, instrument, l3: bool, path: Path, first_row: int, stats: BookStats,
                      prev_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """``OrderBookDeltas`` (one per message, an object array) and their receive times (int64 ns)
    from whole messages ``df`` of BOOK_SCHEMA rows. ``first_row``: 1-based row of ``df``'s first
    row in ``path`` (for errors); ``prev_ts``: the last ``ts_recv`` fed before (ns)."""
    from nautilus_trader.model.data import OrderBookDeltas

    if df.height == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    deltas, msg_ts, ends = delta_objects(df, instrument, l3, path, first_row, stats, prev_ts)
    starts = np.r_[0, ends[:-1]]
    iid = instrument.id
    msgs = np.fromiter((OrderBookDeltas(iid, deltas[a:b]) for a, b in zip(starts.tolist(), ends.tolist())),
                       dtype=object, count=len(ends))
    stats.deltas += len(deltas)
    stats.messages += len(ends)
    stats.last_ts = int(msg_ts[-1])
    return msgs, msg_ts


def delta_objects(df: pl.DataFrame, instrument, l3: bool, path: Path, first_row: int, stats: BookStats,
                  prev_ts: int) -> tuple[list, np.ndarray, np.ndarray]:
    """The rows of ``df`` (whole messages, at least one row) checked and converted: (the
    ``OrderBookDelta`` objects, each message's ``ts_recv`` in ns, each message's end row,
    exclusive). Arguments as :func:`deltas_from_frame`."""
    n = df.height
    iid = instrument.id
    pp, sp = instrument.price_precision, instrument.size_precision
    _check_layout(iid, pp, sp)
    ts_recv = df["ts_recv"].to_numpy()
    back = np.flatnonzero(np.diff(ts_recv, prepend=prev_ts) < 0)
    if len(back):
        i = int(back[0])
        raise _fail(path, first_row + i, f"ts_recv {int(ts_recv[i])} goes back in time (after {int(ts_recv[i - 1]) if i else prev_ts}); "
                                         "a book is fed in receive-time order")
    action = df["action"].to_physical().to_numpy().astype(np.int64)  # add 0, update 1, delete 2, clear 3
    side = df["side"].fill_null(0).to_numpy().astype(np.int64)
    is_clear = action == 3
    bad = np.flatnonzero(is_clear & (side != 0))
    if len(bad):
        raise _fail(path, first_row + int(bad[0]), "a clear of one side: NautilusTrader 1.221 clears the whole book on "
                                                   "CLEAR, so a one-sided clear cannot be replayed")
    bad = np.flatnonzero(~is_clear & ~np.isin(side, (1, -1)))
    if len(bad):
        raise _fail(path, first_row + int(bad[0]), f"side {int(side[bad[0]])}, expected +1 (bid) or -1 (ask)")
    price = df["price"].fill_null(0.0).to_numpy()
    size = df["size"].fill_null(0.0).to_numpy()
    tick = instrument.price_increment.as_double()
    steps = price / tick
    bad = np.flatnonzero(~is_clear & ((price <= 0) | ~np.isfinite(price) | (np.abs(steps - np.rint(steps)) > 1e-6)))
    if len(bad):
        raise _fail(path, first_row + int(bad[0]), f"price {float(price[bad[0]])!r} is not a positive multiple of the tick size {tick:g}")
    bad = np.flatnonzero(~is_clear & ((size < 0) | ~np.isfinite(size)))
    if len(bad):
        raise _fail(path, first_row + int(bad[0]), f"size {float(size[bad[0]])!r}, expected >= 0")
    px_ticks = np.where(is_clear, 0, np.rint(price * 10.0**pp)).astype(np.int64)
    scaled = size * 10.0**sp
    sz_ticks = np.where(is_clear, 0, np.rint(scaled)).astype(np.int64)
    stats.sizes_rounded += int(np.count_nonzero(~is_clear & (np.abs(scaled - sz_ticks) > 1e-6)))
    emptied = (action <= 1) & (sz_ticks == 0)
    stats.zero_sizes_deleted += int(np.count_nonzero(emptied))
    action = np.where(emptied, 2, action)

    last = (df["flags"].to_numpy() & F_LAST) != 0
    if not last[-1]:
        raise ValueError(f"{path}: deltas_from_frame takes whole messages; row {first_row + n - 1} is not a message's last")
    ends = np.flatnonzero(last) + 1
    starts = np.r_[0, ends[:-1]]
    sizes = ends - starts
    msg_ts = ts_recv[ends - 1]

    arr = _buffer(n)
    words = _instrument_id_words(iid)
    arr["iid0"], arr["iid1"] = words[0], words[1]
    arr["action"] = action + 1  # BookAction: ADD 1, UPDATE 2, DELETE 3, CLEAR 4
    arr["side"] = np.where(side > 0, 1, np.where(side < 0, 2, 0))  # OrderSide: BUY 1, SELL 2
    arr["px_lo"], arr["px_hi"] = _mul128(px_ticks, 10 ** (FIXED_PRECISION - pp))
    arr["sz_lo"], arr["sz_hi"] = _mul128(sz_ticks, 10 ** (FIXED_PRECISION - sp))
    arr["px_prec"], arr["sz_prec"] = pp, sp
    if l3:
        # An L3 book keys its orders by id: a row without one would merge unrelated orders.
        bad = np.flatnonzero(~is_clear & df["order_id"].is_null().to_numpy())
        if len(bad):
            raise _fail(path, first_row + int(bad[0]), f"{df['action'][int(bad[0])]} without an order_id on a depth-L3 book")
    arr["order_id"] = df["order_id"].fill_null(0).to_numpy() if l3 else 0
    arr["flags"] = np.where(last, NT_F_LAST, 0) | np.where(df["is_snapshot"].fill_null(False).to_numpy(), NT_F_SNAPSHOT, 0)
    arr["sequence"] = df["seq"].fill_null(0).to_numpy().astype(np.uint64)
    arr["ts_event"] = df["ts_event"].fill_null(0).to_numpy().astype(np.uint64)
    arr["ts_init"] = np.repeat(msg_ts, sizes).astype(np.uint64)
    return _from_struct_array(arr), msg_ts, ends


def book_parts(days: Iterable[Path], instrument, level: str, stats: BookStats,
               rows: int = BOOK_BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(messages, their ts_recv) of the day files in order, read ``rows`` rows at a time and cut
    at message boundaries; each file is checked to start with a snapshot and end on an F_LAST row."""
    import pyarrow.parquet as pq

    l3 = level == DEPTH_L3
    for path in days:
        pf = pq.ParquetFile(path)
        missing = [c for c in BOOK_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise BacktestInputError(f"{path}: not a book day file: missing column(s) {', '.join(missing)}")
        stats.days += 1
        stats.files.append(str(path))
        carry: pl.DataFrame | None = None
        row = 1  # 1-based row of the next frame's first row in the file
        first = True
        for batch in pf.iter_batches(batch_size=rows, columns=BOOK_COLUMNS):
            df = pl.from_arrow(batch)
            if first and df.height:
                first = False
                if not (df["action"][0] == "clear" and bool(df["is_snapshot"][0])):
                    raise _fail(path, 1, f"a day file starts with its snapshot (a clear row with is_snapshot); found "
                                         f"{df['action'][0]} (is_snapshot={df['is_snapshot'][0]})")
            if carry is not None and carry.height:
                df = pl.concat([carry, df], how="vertical_relaxed")
            last = np.flatnonzero((df["flags"].to_numpy() & F_LAST) != 0)
            cut = int(last[-1]) + 1 if len(last) else 0
            carry = df.slice(cut)
            if cut:
                yield deltas_from_frame(df.slice(0, cut), instrument, l3, path, row, stats, stats.last_ts)
                row += cut
        if first:
            raise _fail(path, 1, "the file has no rows; a day file starts with its snapshot (a clear row with is_snapshot)")
        if carry is not None and carry.height:
            raise _fail(path, row + carry.height - 1, "the file ends inside a message (its last row has no F_LAST flag)")


def merge_by_time(book: Iterable[tuple[np.ndarray, np.ndarray]], ticks: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[list]:
    """Lists of data points from the ``book`` and ``ticks`` streams (each of (objects, ts)
    parts, ns, non-decreasing) in ``ts`` order, the book first at equal ``ts``. Rows are released
    only once no later part of a live stream can precede them, so each list holds about a part
    of each stream."""
    its = [iter(book), iter(ticks)]
    objs = [np.empty(0, dtype=object), np.empty(0, dtype=object)]
    ts = [np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)]
    live = [True, True]

    def pull(k: int) -> None:
        part = next(its[k], None)
        if part is None:
            live[k] = False
            return
        objs[k] = np.concatenate([objs[k], part[0]])
        ts[k] = np.concatenate([ts[k], np.asarray(part[1], dtype=np.int64)])

    while True:
        for k in (0, 1):
            while live[k] and not len(ts[k]):
                pull(k)
        horizon = min((int(ts[k][-1]) for k in (0, 1) if live[k]), default=None)
        cut = [len(ts[k]) if horizon is None else int(np.searchsorted(ts[k], horizon, "left")) for k in (0, 1)]
        if not cut[0] and not cut[1]:
            if horizon is None:
                return
            for k in (0, 1):
                if live[k] and ts[k][-1] == horizon:
                    pull(k)
            continue
        o = np.concatenate([objs[0][:cut[0]], objs[1][:cut[1]]])
        t = np.concatenate([ts[0][:cut[0]], ts[1][:cut[1]]])
        src = np.r_[np.zeros(cut[0], np.int8), np.ones(cut[1], np.int8)]
        yield o[np.lexsort((src, t))].tolist()  # stable: each stream keeps its own order
        for k in (0, 1):
            objs[k], ts[k] = objs[k][cut[k]:], ts[k][cut[k]:]


def notes(stats: BookStats, book_type_name: str, prob_slippage: float) -> list[str]:
    """What a run on depth says about the book it was fed."""
    out = [f"order-book depth ({stats.level}): {stats.deltas:,} deltas in {stats.messages:,} messages from "
           f"{stats.days} day file(s) on a NautilusTrader {book_type_name} book; market orders and triggered stops "
           "walk its levels; the strategy's signal, bars and marks come from the ticks' quotes; our fills do not "
           "remove the book's liquidity"]
    if prob_slippage > 0:
        out.append(f"the venue profile's prob_slippage {prob_slippage:g} is not applied on a depth book: fills take the book's prices")
    if stats.sizes_rounded:
        out.append(f"{stats.sizes_rounded:,} book size(s) finer than the instrument's size precision rounded to it")
    if stats.zero_sizes_deleted:
        out.append(f"{stats.zero_sizes_deleted:,} book add/update row(s) whose size rounds to 0 fed as deletes")
    return out
