"""A month of order-book depth → hftbacktest 2.4.4 event files, one UTC day at a time.

hftbacktest's loader takes a *list* of event files and reads them lazily: it loads a file when
the replay reaches it and frees it once both of its processors (exchange and local) have moved
past it. So a month never needs to be in memory: :func:`write_feed` converts the month's book
day files (:mod:`quant_assets.book.schema`) and the trades of the same days (from the ``ticks``
partition) one day at a time into one ``.npy`` event file per day under a temporary folder
(the first day stays in memory as an array: no file round trip for it), and the adapter passes
the list to ``BacktestAsset.data``. At any time the process holds the first day's events, one
day being converted, or up to two days inside hftbacktest; the month's event files are on disk
(64 bytes per event) until the backtest is closed, then removed.

**What hftbacktest gets** (``exch_ts = ts_event``, ``local_ts = ts_recv``, int64 ns; ``px`` in
quote currency, ``qty`` in base units):

* ``depth-L2`` (market-by-price; sizes are absolute, which is what hftbacktest's depth events
  carry): a ``clear`` row becomes ``DEPTH_CLEAR_EVENT`` (both sides for ``side`` 0, else that
  side; ``px`` NaN clears the whole side); ``add``/``update`` become ``DEPTH_EVENT`` with the
  level's new size (``DEPTH_SNAPSHOT_EVENT`` for snapshot rows, which hftbacktest applies the
  same way); ``delete`` a ``DEPTH_EVENT`` with qty 0. Each day's starting snapshot is replayed
  as it is (clear, then the levels): in the L2 exchange a clear does not touch resting orders
  and a re-set level keeps an order's queue estimate (``min(ahead, new size)``), so a
  continuous book's day boundary changes nothing (tested), and a book that did change (a day
  missing in between) is reset to the truth.
* ``depth-L3`` (market-by-order) runs through hftbacktest's ``L3FIFOQueueModel``: ``add`` →
  ``ADD_ORDER_EVENT``, ``update`` → ``MODIFY_ORDER_EVENT`` (a larger size loses its place, as
  hftbacktest models it), ``delete`` → ``CANCEL_ORDER_EVENT``, ``clear`` → ``DEPTH_CLEAR_EVENT``.
  That model fills a resting order of ours only when a market order *behind* it in the queue is
  filled (``FILL_EVENT``), and the book table does not say whether an order shrank because it
  traded or because it was cancelled. So fills are **inferred from the trades**: an order's
  size reduction (``update`` to a smaller size, or ``delete``) at the same exchange time and
  price as a trade whose aggressor is on the other side is a fill, up to the trade's quantity,
  in book order; a ``FILL_EVENT`` for it precedes the row. How much of the traded quantity was
  matched is reported (a venue that stamps its trades and book changes differently would show
  it). hftbacktest clears every resting order of ours on a ``DEPTH_CLEAR_EVENT`` in L3, so a day
  that follows the previous day file gets its snapshot as a *diff* against the book the
  previous day left (cancels, modifies, adds) instead of clear + adds.
* trades (``kind == "trade"`` rows of the ``ticks`` partition received on the day) become
  ``TRADE_EVENT`` with their aggressor side (``BUY_EVENT`` for +1, ``SELL_EVENT`` for -1); a
  side of 0 is inferred against the day's L1 mid where the ticks have quotes (as in
  :mod:`~quant_assets.engines.hft_events`), else left without a flag (hftbacktest's exchange
  then ignores it for fills; counted in the notes).

**Order.** Rows are merged in receive order (``ts_recv``); at the same ``ts_recv`` a trade goes
before the book rows, as the book change it caused follows it (the probabilistic queue models
subtract the traded quantity from the level's next decrease so it is not counted twice; the
other way round it would be). hftbacktest needs rows flagged ``EXCH_EVENT`` non-decreasing in
``exch_ts`` and rows flagged ``LOCAL_EVENT`` in ``local_ts``: when ``ts_event`` is
non-decreasing in receive order every row carries both flags; else hftbacktest's own
``correct_event_order`` splits the rows that differ into an exchange copy and a local copy
(absolute sizes and order ids make each row's effect independent of what the other processor
saw, unlike the L1 conversion's "clear the previous level" rows).

Bad input raises :class:`~quant_assets.engines.inputs.BacktestInputError` naming the day file,
the row (0-based, in the file) and what was expected: a missing column, rows out of
``ts_recv`` order, a day that does not start with a snapshot (``clear`` with ``is_snapshot``), a
side outside {-1, 0, +1} (0 only on ``clear``), a negative or NaN size, a price off the tick
grid, an L3 row without ``order_id``.

The per-row work is two one-pass numba kernels (the checks; the merge into events), compiled
once and cached on disk; Polars reads the day files' needed columns. Nothing here imports hftbacktest except :func:`_correct_order`.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.book.schema import ACTION, ASK, BID, BOTH, DEPTH_L2, DEPTH_L3
from quant_assets.engines.hft_events import (
    BUY_EVENT, DEPTH_EVENT, EVENT_DTYPE, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT, TRADE_EVENT,
)
from quant_assets.engines.inputs import BacktestInputError

# hftbacktest.types (2.4.4), repeated so this module imports without hftbacktest; the tests
# check them against hftbacktest's.
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
ADD_ORDER_EVENT = 10
CANCEL_ORDER_EVENT = 11
MODIFY_ORDER_EVENT = 12
FILL_EVENT = 13

#: ``action`` codes: the physical values of :data:`quant_assets.book.schema.ACTION`.
A_ADD, A_UPDATE, A_DELETE, A_CLEAR = 0, 1, 2, 3
assert list(ACTION.categories) == ["add", "update", "delete", "clear"]

BOOK_COLUMNS = ["ts_event", "ts_recv", "side", "price", "size", "action", "is_snapshot", "order_id"]
TRADE_COLUMNS = ["ts_event", "ts_recv", "price", "size", "side"]
NS_PER_DAY = 86_400 * 1_000_000_000
_DAY_DIR = re.compile(r"^day=(\d{2})$")
_MONTH_DIR = re.compile(r"^month=(\d{4})-(\d{2})$")


def day_bounds(path: Path) -> tuple[int, int]:
    """[start, end) of the UTC day a book day file holds (``.../month=YYYY-MM/day=DD/part-0.parquet``),
    int64 ns."""
    d, m = _DAY_DIR.match(path.parent.name), _MONTH_DIR.match(path.parent.parent.name)
    if not d or not m:
        raise BacktestInputError(f"{path}: not a book day file (expected .../month=YYYY-MM/day=DD/part-0.parquet)")
    try:
        start = datetime(int(m.group(1)), int(m.group(2)), int(d.group(1)), tzinfo=timezone.utc)
    except ValueError as exc:
        raise BacktestInputError(f"{path}: {exc}") from None
    ns = int(start.timestamp()) * 1_000_000_000
    return ns, ns + NS_PER_DAY


def _first_bad(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


@dataclass(frozen=True)
class BookDay:
    """One day file's rows as numpy columns, checked (see the module docstring)."""

    path: Path
    ts_event: np.ndarray
    ts_recv: np.ndarray
    side: np.ndarray  # int8
    price: np.ndarray
    size: np.ndarray
    action: np.ndarray  # uint8 codes A_*
    is_snapshot: np.ndarray
    order_id: np.ndarray  # uint64, 0 where null

    def __len__(self) -> int:
        return len(self.ts_recv)

    def snapshot_end(self) -> int:
        """Rows of the day's starting snapshot (the clear and its adds)."""
        n = len(self)
        if n == 0:
            return 0
        rest = np.flatnonzero(~self.is_snapshot[1:] | (self.action[1:] == A_CLEAR))
        return int(rest[0]) + 1 if rest.size else n


def read_day(path: Path, tick_size: float, level: str) -> BookDay:
    """Read and check one book day file (see the module docstring for what is checked)."""
    try:
        df = pl.read_parquet(path, columns=BOOK_COLUMNS)
    except Exception as exc:  # polars raises several types for a missing column or a bad file
        raise BacktestInputError(f"{path}: cannot read the book day file's columns {', '.join(BOOK_COLUMNS)}: {exc}") from None
    try:
        # The canonical Enum's codes are the A_* codes; any other type (e.g. strings) is cast
        # through the Enum, which refuses a value outside it.
        col = df["action"]
        action = (col if col.dtype == ACTION else col.cast(pl.String).cast(ACTION)).to_physical().to_numpy()
    except Exception as exc:
        raise BacktestInputError(f"{path}: column action: expected one of {', '.join(ACTION.categories)}: {exc}") from None
    day = BookDay(
        path=path,
        ts_event=df["ts_event"].cast(pl.Int64).to_numpy(),
        ts_recv=df["ts_recv"].cast(pl.Int64).to_numpy(),
        side=df["side"].cast(pl.Int8).fill_null(99).to_numpy(),
        price=df["price"].cast(pl.Float64).to_numpy(),
        size=df["size"].cast(pl.Float64).to_numpy(),
        action=action.astype(np.uint8, copy=False),
        is_snapshot=df["is_snapshot"].fill_null(False).to_numpy(),
        order_id=df["order_id"].cast(pl.UInt64).fill_null(0).to_numpy(),
    )
    l3_missing = df["order_id"].is_null().to_numpy() if level == DEPTH_L3 else None
    del df
    _check_day(day, tick_size, level, l3_missing)
    return day


def _check_day(day: BookDay, tick_size: float, level: str, l3_missing: np.ndarray | None) -> None:
    path, n = day.path, len(day)
    if n == 0:
        return
    if day.action[0] != A_CLEAR or not day.is_snapshot[0]:
        raise BacktestInputError(f"{path}: row 0: a day file must start with a snapshot (a clear row with is_snapshot), "
                                 f"got action {ACTION.categories[int(day.action[0])]!r}, is_snapshot {bool(day.is_snapshot[0])}")
    first = np.empty(4, np.int64)
    _kernel("check")(_ro(day.ts_recv), _ro(day.side), _ro(day.size), _ro(day.price), _ro(day.action), float(tick_size), first)
    bad = int(first[0]) if first[0] >= 0 else None
    if bad is not None:
        raise BacktestInputError(f"{path}: row {bad}: ts_recv {day.ts_recv[bad]} is before the previous row's "
                                 f"{day.ts_recv[bad - 1]}: rows must be sorted by ts_recv")
    bad = int(first[1]) if first[1] >= 0 else None
    if bad is not None:
        raise BacktestInputError(f"{path}: row {bad}: side {int(day.side[bad]) if day.side[bad] != 99 else None}: "
                                 "expected +1 (bid) or -1 (ask), or 0 (both) on a clear")
    bad = int(first[2]) if first[2] >= 0 else None
    if bad is not None:
        raise BacktestInputError(f"{path}: row {bad}: size {day.size[bad]}: expected a size >= 0")
    bad = int(first[3]) if first[3] >= 0 else None
    if bad is not None:
        raise BacktestInputError(f"{path}: row {bad}: price {day.price[bad]} is not a multiple of the tick size {tick_size}")
    if l3_missing is not None:
        bad = _first_bad((day.action != A_CLEAR) & l3_missing)
        if bad is not None:
            raise BacktestInputError(f"{path}: row {bad}: a depth-L3 book row without order_id")


@dataclass(frozen=True)
class Trades:
    ts_event: np.ndarray
    ts_recv: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray  # int8: +1 buyer aggressor, -1 seller, 0 unknown

    def __len__(self) -> int:
        return len(self.ts_recv)


def read_trades(ticks_path: Path, start: int, end: int, tick_size: float) -> Trades:
    """The trades of the ``ticks`` partition received in [start, end) (ns), in receive order,
    aggressor sides resolved where the day's quotes allow (see the module docstring)."""
    lf = pl.scan_parquet(ticks_path).filter((pl.col("ts_recv") >= start) & (pl.col("ts_recv") < end))
    df = lf.filter(pl.col("kind") == "trade").select(TRADE_COLUMNS).collect()
    if not df["ts_recv"].is_sorted():
        # Canonical ticks are sorted by ts_recv; a file that is not is put in order, stably.
        df = df.sort("ts_recv", maintain_order=True)
    side = df["side"].fill_null(0).cast(pl.Int8).to_numpy()
    if len(side) and (side == 0).any():
        from quant_assets.engines.hft_events import COLUMNS, _columns

        ticks = lf.select(COLUMNS).collect()
        if ticks["ts_recv"].is_sorted():
            resolved = _columns(ticks, tick_size, 1.0)
            side = resolved.side[~resolved.is_quote].astype(np.int8)
    return Trades(
        ts_event=df["ts_event"].cast(pl.Int64).to_numpy(),
        ts_recv=df["ts_recv"].cast(pl.Int64).to_numpy(),
        price=df["price"].cast(pl.Float64).to_numpy(),
        size=df["size"].cast(pl.Float64).to_numpy(),
        side=side,
    )


# --- the book the previous day left (L3 diffs) -------------------------------------------------


def final_orders(day: BookDay) -> pl.DataFrame:
    """The L3 book at the end of ``day``: one row per resting order (order_id, side, price, size)."""
    n = len(day)
    idx = np.arange(n)
    clear = day.action == A_CLEAR
    last_both = idx[clear & (day.side == BOTH)].max(initial=-1)
    last = {s: max(last_both, idx[clear & (day.side == s)].max(initial=-1)) for s in (BID, ASK)}
    after = ~clear & (((day.side == BID) & (idx > last[BID])) | ((day.side == ASK) & (idx > last[ASK])))
    rows = pl.DataFrame({"order_id": day.order_id[after], "side": day.side[after], "price": day.price[after],
                         "size": day.size[after], "action": day.action[after]})
    return (rows.group_by("order_id", maintain_order=True).last()
            .filter((pl.col("action") != A_DELETE) & (pl.col("size") > 0)).drop("action"))


def _snapshot_diff(day: BookDay, prev: pl.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows that turn ``prev`` (the previous day's final orders) into ``day``'s starting
    snapshot, stamped like it: cancels of orders gone, modifies of orders changed, adds of new
    ones (in the snapshot's order, i.e. queue priority). Returns (rows of the day kept after
    the snapshot, the diff's columns)."""
    end = day.snapshot_end()
    snap = pl.DataFrame({"order_id": day.order_id[1:end], "side": day.side[1:end], "price": day.price[1:end],
                         "size": day.size[1:end]}).with_row_index("pos")
    ts_e, ts_r = day.ts_event[0], day.ts_recv[0]
    gone = prev.join(snap, on="order_id", how="anti")
    both = prev.join(snap, on="order_id", how="inner", suffix="_new")
    changed = both.filter((pl.col("price") != pl.col("price_new")) | (pl.col("size") != pl.col("size_new")) | (pl.col("side") != pl.col("side_new")))
    new = snap.join(prev, on="order_id", how="anti").sort("pos")
    parts = [
        (gone, A_DELETE, "price", "size", "side"),
        (changed, A_UPDATE, "price_new", "size_new", "side_new"),
        (new, A_ADD, "price", "size", "side"),
    ]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("action", "side", "price", "size", "order_id")}
    for frame, action, px, sz, sd in parts:
        cols["action"].append(np.full(frame.height, action, np.uint8))
        cols["side"].append(frame[sd].cast(pl.Int8).to_numpy())
        cols["price"].append(frame[px].to_numpy())
        cols["size"].append(np.where(action == A_DELETE, 0.0, frame[sz].to_numpy()))
        cols["order_id"].append(frame["order_id"].cast(pl.UInt64).to_numpy())
    out = {k: np.concatenate(v) for k, v in cols.items()}
    m = len(out["action"])
    out["ts_event"] = np.full(m, ts_e, np.int64)
    out["ts_recv"] = np.full(m, ts_r, np.int64)
    out["is_snapshot"] = np.zeros(m, np.bool_)
    return np.arange(end, len(day)), out


# --- L3 fills inferred from trades ------------------------------------------------------------


def infer_fills(day: BookDay, rows: np.ndarray, trades: Trades, tick_size: float, start: pl.DataFrame | None = None,
                first: int = 0) -> tuple[np.ndarray, float, float]:
    """Per book row of ``rows`` (indices into ``day``), the quantity of that market order
    filled just before it (0: none), inferred from ``trades`` (see the module docstring).
    ``start`` (order_id, size): the orders resting before the first row (the previous day's
    end, when the day's snapshot is applied as a diff); rows before ``first`` (that diff) are
    never fills. Returns (fill qty per row, traded qty matched, traded qty with a side)."""
    n = len(rows)
    if n == 0 or len(trades) == 0:
        return np.zeros(n), 0.0, float(trades.size[trades.side != 0].sum()) if len(trades) else 0.0
    book = pl.DataFrame({
        "i": np.arange(n), "oid": day.order_id[rows], "side": day.side[rows], "action": day.action[rows],
        "tick": np.round(np.nan_to_num(day.price[rows]) / tick_size).astype(np.int64), "size": day.size[rows], "ts": day.ts_event[rows],
    })
    # The size before each row: the order's previous row in the day (its add or last update),
    # else its size when the rows start.
    prev = pl.col("size").shift(1).over("oid")
    if start is not None and start.height:
        sizes = start.select(oid=pl.col("order_id").cast(pl.UInt64), start_size=pl.col("size"))
        book = book.join(sizes, on="oid", how="left", maintain_order="left")
        prev = prev.fill_null(pl.col("start_size"))
    book = book.with_columns(prev=pl.when(pl.col("action") != A_CLEAR).then(prev))
    red = book.filter(pl.col("action").is_in([A_UPDATE, A_DELETE]) & (pl.col("prev") > pl.col("size")) & (pl.col("i") >= first))
    red = red.with_columns(cut=pl.col("prev") - pl.when(pl.col("action") == A_DELETE).then(0.0).otherwise(pl.col("size")))
    sided = trades.side != 0
    traded = pl.DataFrame({
        "ts": trades.ts_event[sided], "tick": np.round(trades.price[sided] / tick_size).astype(np.int64),
        "side": (-trades.side[sided]).astype(np.int8),  # the passive (book) side
        "qty": trades.size[sided],
    }).group_by("ts", "tick", "side").agg(pl.col("qty").sum())
    matched = (
        red.join(traded, on=["ts", "tick", "side"], how="inner")
        .sort("i")
        .with_columns(before=pl.col("cut").cum_sum().over("ts", "tick", "side") - pl.col("cut"))
        .with_columns(fill=pl.min_horizontal(pl.col("cut"), pl.col("qty") - pl.col("before")).clip(lower_bound=0.0))
        .filter(pl.col("fill") > 0)
    )
    out = np.zeros(n)
    out[matched["i"].to_numpy()] = matched["fill"].to_numpy()
    return out, float(matched["fill"].sum()), float(trades.size[sided].sum())


# --- the kernel --------------------------------------------------------------------------------


def _merge_kernel(b_action, b_side, b_snap, b_exch, b_local, b_px, b_qty, b_oid, b_fill, l3,
                  t_side, t_exch, t_local, t_px, t_qty, flags,
                  ev, exch_ts, local_ts, px, qty, order_id):  # pragma: no cover - compiled by numba
    """Merge book rows and trades (both in receive order) into the event fields, in one pass
    (event codes as in the module docstring): at equal ``local`` a trade first; a book row
    with ``b_fill > 0`` is preceded by a fill event of its market order. Every row gets
    ``flags``. Returns (rows written, whether ``exch_ts`` ever decreased)."""
    i = 0
    j = 0
    r = 0
    nb = b_action.shape[0]
    nt = t_side.shape[0]
    last_exch = np.iinfo(np.int64).min
    reordered = False
    while i < nb or j < nt:
        if j < nt and (i >= nb or t_local[j] <= b_local[i]):
            s = t_side[j]
            ev[r] = TRADE_EVENT | (BUY_EVENT if s > 0 else (SELL_EVENT if s < 0 else 0)) | flags
            exch_ts[r] = t_exch[j]
            local_ts[r] = t_local[j]
            px[r] = t_px[j]
            qty[r] = t_qty[j]
            order_id[r] = 0
            j += 1
        else:
            s = b_side[i]
            side_flag = BUY_EVENT if s > 0 else (SELL_EVENT if s < 0 else 0)
            if b_fill[i] > 0:
                ev[r] = FILL_EVENT | side_flag | flags
                exch_ts[r] = b_exch[i]
                local_ts[r] = b_local[i]
                px[r] = b_px[i]
                qty[r] = b_fill[i]
                order_id[r] = b_oid[i]
                r += 1
            a = b_action[i]
            if l3:
                kind = ADD_ORDER_EVENT if a == A_ADD else (MODIFY_ORDER_EVENT if a == A_UPDATE else (
                    CANCEL_ORDER_EVENT if a == A_DELETE else DEPTH_CLEAR_EVENT))
            else:
                kind = DEPTH_CLEAR_EVENT if a == A_CLEAR else (DEPTH_SNAPSHOT_EVENT if b_snap[i] else DEPTH_EVENT)
            ev[r] = kind | side_flag | flags
            exch_ts[r] = b_exch[i]
            local_ts[r] = b_local[i]
            px[r] = np.nan if a == A_CLEAR else b_px[i]
            qty[r] = 0.0 if (a == A_CLEAR or a == A_DELETE) else b_qty[i]
            order_id[r] = b_oid[i]
            i += 1
        if exch_ts[r] < last_exch:
            reordered = True
        else:
            last_exch = exch_ts[r]
        r += 1
    return r, reordered


def _check_kernel(ts_recv, side, size, price, action, tick_size, first):  # pragma: no cover - compiled by numba
    """One pass over a day's rows: in ``first`` the first row breaking each check (-1: none):
    0 ts_recv decreasing, 1 side, 2 size, 3 price off the tick grid (see :func:`_check_day`)."""
    for k in range(4):
        first[k] = -1
    for i in range(ts_recv.shape[0]):
        clear = action[i] == A_CLEAR
        if first[0] < 0 and i > 0 and ts_recv[i] < ts_recv[i - 1]:
            first[0] = i
        s = side[i]
        if first[1] < 0 and s != 1 and s != -1 and not (clear and s == 0):
            first[1] = i
        if not clear:
            if first[2] < 0 and not (size[i] >= 0.0):
                first[2] = i
            t = price[i] / tick_size
            if first[3] < 0 and not (abs(t - np.round(t)) <= 1e-6):
                first[3] = i


_compiled: dict[str, object] = {}


def _kernel(name: str = "merge"):
    if name not in _compiled:
        from numba import njit

        _compiled[name] = njit(nogil=True, cache=True)(_merge_kernel if name == "merge" else _check_kernel)
    return _compiled[name]


def _ro(x: np.ndarray) -> np.ndarray:
    """``x`` contiguous and read-only: numba types read-only and writable arrays differently and
    Polars hands out either, which would compile the kernel once per combination."""
    x = np.ascontiguousarray(x)
    x.flags.writeable = False
    return x


@dataclass
class DayStats:
    """What converting one day did."""

    day: str  # DD
    book_rows: int
    trades: int
    event_rows: int
    first_local: int | None
    last_local: int | None
    last_exch: int | None
    reordered: bool  # exchange order differed from receive order: rows were split by processor
    unsided_trades: int = 0
    snapshot: str = "replayed"  # replayed | diffed (L3: against the previous day's end)
    fills_inferred: float = 0.0  # L3: traded qty matched to market orders
    traded_qty: float = 0.0  # L3: traded qty with a side


def day_events(day: BookDay, trades: Trades, tick_size: float, level: str,
               prev_orders: pl.DataFrame | None = None) -> tuple[np.ndarray, DayStats]:
    """One day of book rows and trades as an hftbacktest event array (see the module
    docstring); ``prev_orders`` (L3): the previous day's final orders, to diff the snapshot
    against. The array is in memory; :func:`write_day` writes it."""
    stats_snapshot = "replayed"
    cols = {k: getattr(day, k) for k in ("ts_event", "ts_recv", "side", "price", "size", "action", "is_snapshot", "order_id")}
    rows = np.arange(len(day))
    n_diff = 0
    if level == DEPTH_L3 and prev_orders is not None and len(day):
        rows, diff = _snapshot_diff(day, prev_orders)
        n_diff = len(diff["action"])
        cols = {k: np.concatenate([diff[k], cols[k][rows]]) for k in cols}
        rows = np.arange(len(cols["ts_recv"]))
        stats_snapshot = "diffed"
    fills = np.zeros(len(rows))
    matched = traded = 0.0
    if level == DEPTH_L3:
        view = BookDay(day.path, **{k: cols[k] for k in cols})
        fills, matched, traded = infer_fills(view, rows, trades, tick_size, prev_orders if stats_snapshot == "diffed" else None, n_diff)
    n = len(cols["action"]) + len(trades) + int((fills > 0).sum())
    out = np.zeros(n, EVENT_DTYPE)
    written, reordered = _kernel()(
        _ro(cols["action"]), _ro(cols["side"]), _ro(cols["is_snapshot"]), _ro(cols["ts_event"]), _ro(cols["ts_recv"]),
        _ro(cols["price"]), _ro(cols["size"]), _ro(cols["order_id"]), _ro(fills.astype(np.float64)), level == DEPTH_L3,
        _ro(trades.side), _ro(trades.ts_event), _ro(trades.ts_recv), _ro(trades.price), _ro(trades.size),
        EXCH_EVENT | LOCAL_EVENT, out["ev"], out["exch_ts"], out["local_ts"], out["px"], out["qty"], out["order_id"])
    assert written == n
    if reordered:
        out = _correct_order(out)
    stats = DayStats(
        day=day.path.parent.name.removeprefix("day="), book_rows=len(day), trades=len(trades), event_rows=len(out),
        first_local=int(out["local_ts"][0]) if len(out) else None, last_local=int(out["local_ts"][-1]) if len(out) else None,
        last_exch=int(out["exch_ts"].max()) if len(out) else None, reordered=reordered, unsided_trades=int((trades.side == 0).sum()), snapshot=stats_snapshot,
        fills_inferred=matched, traded_qty=traded,
    )
    return out, stats


def _correct_order(out: np.ndarray) -> np.ndarray:
    """Rows whose exchange order differs from their receive order, split into an exchange copy
    and a local copy (hftbacktest's ``correct_event_order``; ``out`` is in receive order)."""
    from hftbacktest.data import correct_event_order

    data = out.copy()
    data["ev"] &= ~np.uint64(EXCH_EVENT | LOCAL_EVENT)
    exch = np.argsort(data["exch_ts"], kind="stable")
    return correct_event_order(data, exch, np.arange(len(data)))


# --- the month ---------------------------------------------------------------------------------


@dataclass
class DepthFeed:
    """A month's depth converted for hftbacktest: the first day's events in memory
    (:attr:`first`), one event file per later day (plus the end marker file once
    :meth:`add_end_marker` ran), in ``folder`` (removed by :meth:`close`). :attr:`data` is what
    ``BacktestAsset.data`` takes; the caller keeps the feed alive until hftbacktest is closed
    (it reads :attr:`first` in place)."""

    level: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    #: The first day's events: handed to hftbacktest as an array, which saves writing and
    #: loading one file per month (what a one-day slice costs most) for one day of memory.
    first: np.ndarray | None = None
    days: list[DayStats] = field(default_factory=list)
    first_bid: float = math.nan
    first_ask: float = math.nan
    trades_outside: int = 0  # trades of the month received on days without a book file

    @property
    def data(self) -> list:
        return ([self.first] if self.first is not None else []) + [str(f) for f in self.files]

    @property
    def first_local(self) -> int:
        return min(d.first_local for d in self.days if d.first_local is not None)

    @property
    def last_local(self) -> int:
        return max(d.last_local for d in self.days if d.last_local is not None)

    @property
    def first_mid(self) -> float:
        return (self.first_bid + self.first_ask) / 2.0

    @property
    def book_rows(self) -> int:
        return sum(d.book_rows for d in self.days)

    @property
    def trades(self) -> int:
        return sum(d.trades for d in self.days)

    @property
    def event_rows(self) -> int:
        return sum(d.event_rows for d in self.days)

    def add_end_marker(self, pad_ns: int) -> None:
        """A one-row file ``pad_ns`` after the month's last event (see
        :func:`quant_assets.engines.hft_events.with_end_marker`)."""
        last = max(self.last_local, max(d.last_exch for d in self.days if d.last_exch is not None))
        marker = np.zeros(1, EVENT_DTYPE)
        marker["ev"] = EXCH_EVENT | LOCAL_EVENT
        marker["exch_ts"] = marker["local_ts"] = last + pad_ns
        marker["px"] = np.nan
        path = self.folder / "end.npy"
        np.save(path, marker)
        self.files.append(path)

    def notes(self) -> list[str]:
        out = [f"{self.level}: {len(self.days)} day file(s) streamed by day ({self.book_rows:,} book rows, "
               f"{self.trades:,} trades, {self.event_rows:,} hftbacktest events)"]
        reordered = [d.day for d in self.days if d.reordered]
        if reordered:
            out.append(f"exchange times out of receive order on day(s) {', '.join(reordered)}: those rows were split "
                       "into exchange and local copies (hftbacktest's correct_event_order)")
        unsided = sum(d.unsided_trades for d in self.days)
        if unsided:
            out.append(f"{unsided} trade(s) without an aggressor side: hftbacktest's exchange ignores them for fills")
        if self.trades_outside:
            out.append(f"{self.trades_outside} trade(s) of the month fell on days without a book file: not replayed")
        if self.level == DEPTH_L3:
            traded = sum(d.traded_qty for d in self.days)
            matched = sum(d.fills_inferred for d in self.days)
            share = f"{matched / traded:.1%}" if traded else "n/a"
            out.append(f"L3 fills inferred from trades: {matched:.10g} of {traded:.10g} traded ({share}) matched to market "
                       "orders' size reductions at the same exchange time and price")
            diffed = [d.day for d in self.days if d.snapshot == "diffed"]
            if diffed:
                out.append(f"day(s) {', '.join(diffed)}: the starting snapshot was applied as a diff against the previous "
                           "day's end (a clear would cancel our resting orders in hftbacktest's L3 exchange)")
        return out

    def close(self) -> None:
        self.first = None
        shutil.rmtree(self.folder, ignore_errors=True)


def write_day(path: Path, events: np.ndarray) -> None:
    """Save one day's events as ``.npy`` (hftbacktest reads ``.npy`` and ``.npz``; ``.npy``
    needs no zip container, so nothing is copied or checksummed on either side)."""
    np.save(path, events, allow_pickle=False)


def write_feed(days: tuple[Path, ...] | list[Path], ticks_path: Path, tick_size: float, level: str,
               tmp_dir: Path | str | None = None, reader=None, total_trades: int | None = None) -> DepthFeed:
    """Convert the book ``days`` (in order) and the trades of ``ticks_path`` on those days into
    one event file per day, one day in memory at a time. ``tmp_dir`` (default: the system's
    temporary folder, ``$TMPDIR``) holds the files until :meth:`DepthFeed.close`; ``reader``
    reads a day file (default :func:`read_day`); ``total_trades``: the partition's trade count
    when the caller has it (else counted here), for the trades on days without a book file."""
    if level not in (DEPTH_L2, DEPTH_L3):
        raise ValueError(f"level {level!r}: expected {DEPTH_L2} or {DEPTH_L3}")
    reader = reader or read_day
    folder = Path(tempfile.mkdtemp(prefix="hft-depth-", dir=tmp_dir))
    feed = DepthFeed(level, folder)
    try:
        prev_orders = None
        prev_end = None
        covered = []
        for i, path in enumerate(days):
            start, end = day_bounds(path)
            covered.append((start, end))
            day = reader(path, tick_size, level)
            if i == 0 and len(day):
                snap = slice(0, day.snapshot_end())
                bids = day.price[snap][(day.side[snap] == BID) & (day.action[snap] != A_CLEAR)]
                asks = day.price[snap][(day.side[snap] == ASK) & (day.action[snap] != A_CLEAR)]
                if not len(bids) or not len(asks):
                    raise BacktestInputError(f"{path}: the month's first snapshot has {len(bids)} bid and {len(asks)} ask "
                                             "row(s): the market maker needs both sides")
                feed.first_bid, feed.first_ask = float(bids.max()), float(asks.min())
            trades = read_trades(ticks_path, start, end, tick_size)
            continuous = prev_end is not None and prev_end == start
            events, stats = day_events(day, trades, tick_size, level, prev_orders if continuous else None)
            if level == DEPTH_L3:
                prev_orders = final_orders(day)
            prev_end = end
            del day, trades
            if i == 0:
                feed.first = events
            else:
                out = folder / f"day-{stats.day}.npy"
                write_day(out, events)
                feed.files.append(out)
            del events
            feed.days.append(stats)
        if not feed.days or all(d.first_local is None for d in feed.days):
            raise BacktestInputError(f"{days[0] if days else 'book'}: the month's book day files hold no rows")
        feed.trades_outside = (total_trades - feed.trades) if total_trades is not None else _trades_outside(ticks_path, covered)
    except BaseException:
        feed.close()
        raise
    return feed


def _trades_outside(ticks_path: Path, covered: list[tuple[int, int]]) -> int:
    """Trades of the partition received outside the days in ``covered``."""
    inside = pl.lit(False)
    for start, end in covered:
        inside = inside | ((pl.col("ts_recv") >= start) & (pl.col("ts_recv") < end))
    return int(pl.scan_parquet(ticks_path).filter((pl.col("kind") == "trade") & ~inside).select(pl.len()).collect().item())
