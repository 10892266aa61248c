"""The synthetic feed's depth mode: a few price levels per side whose queues are consistent with the
synthetic L1 quotes and trades of the same (symbol, month, seed) (:mod:`quant_assets.ingest.synthetic`).

The model (every number seeded from the spec, apart from the tick stream, so adding depth never
changes the ticks):

- **Levels.** ``levels`` per side: the top, then levels on a grid of ``step`` ticks behind it
  (bids at multiples of ``step`` ticks strictly below the best bid, asks strictly above the best
  ask). The grid is absolute (prices that are multiples of ``step`` ticks), so a level keeps its
  price, and its queue, while the top moves around it; an old best that the top leaves behind on
  the grid stays as a deeper level with its size. ``step`` is half the median move of the best
  bid between consecutive quotes, in ticks (at least 1), so a typical quote keeps about half the
  levels: the synthetic BTCUSDT top moves ~1,200 ticks a quote, SOLUSDT ~2, EURUSD ~4.
- **Quotes.** At each quote the top of each side *is* the quote: its price and size. Levels that
  leave the window are deleted, new ones added with seeded sizes (log-normal around the median
  quote size, growing with distance from the top); one deeper level per side may change its queue
  (a seeded add or a partial cancel).
- **Trades.** A trade prints at the generator's bid or ask *at the trade's own time*, which the
  quote stream never published. Its message pair: first (``seq`` 2k+1, only when the book must
  change) the aggressed side's top moves to the trade price (the level there keeps its queue, or
  gets a seeded one, raised to the traded quantity if it was smaller: that much was resting
  there), and the other side steps back by the last quoted spread if it would cross; then
  (``seq`` 2k+2) the trade depletes that level by exactly the traded quantity (``update``, or
  ``delete`` when it empties).
- The book starts at the month's first quote (trades before it have no book and are left out):
  one snapshot message (``clear`` then an ``add`` per level, ``is_snapshot``).

Rows follow :data:`quant_assets.book.schema.BOOK_SCHEMA`: L2, absolute sizes, in tick receive
order (``ts_recv``, then the ticks' order); the message of the tick at position ``k`` of
:func:`quant_assets.ingest.synthetic.generate`'s frame has ``seq`` 2k+2 (its trade's preceding
move 2k+1), both stamped with the tick's ``ts_event``/``ts_recv`` (ns). Prices in quote currency,
sizes in base units; both are computed on integer ticks and lots, so the top's price and size are
bit-identical to the quote's.

:func:`write_book_landing` writes the rows as a canonical book Parquet into ``landing/<SYMBOL>/``
(:data:`quant_assets.book.formats.CANONICAL`), which the landing zone routes to the ``book``
table like any depth drop.

Why a numba loop: each message depends on the book the previous one left (queues persist, trades
deplete them), a recurrence numpy cannot express; the kernel runs over integer arrays and writes
rows in chunks (a 200k-event month is ~2M rows, ~0.5 s once compiled; ``cache=True`` keeps the
compile on disk). numba is imported at module level, as in :mod:`quant_assets.book.replay`: this
module is imported only by ``quant-assets demo --depth`` and tests, never when the Dagster
definitions load.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np
import polars as pl

from quant_assets.book.schema import ACTION, BOOK_SCHEMA, F_LAST
from quant_assets.ingest import synthetic
from quant_assets.ingest.synthetic import SyntheticSpec
from quant_assets.lake.store import Lake

#: Action codes (the order of :data:`quant_assets.book.schema.ACTION`).
ADD, UPDATE, DELETE, CLEAR = 0, 1, 2, 3
DEFAULT_LEVELS = 5

#: Queue changes at each quote, per side: chance of an add and of a partial cancel on one deeper level.
P_ADD, P_CANCEL = 0.3, 0.3


@dataclass(frozen=True)
class DepthGrid:
    """Units of one symbol-month's book: ``tick`` (quote currency) and its ``decimals``, ``lot``
    (base units) and its ``lot_decimals``, ``step`` (ticks between deeper levels), ``levels`` per side."""

    tick: float
    decimals: int
    lot: float
    lot_decimals: int
    step: int
    levels: int


def _unit(values: np.ndarray, candidates: list[float], what: str) -> tuple[float, int]:
    """The coarsest candidate unit that every value is a whole multiple of, with its decimals.
    The generator rounds prices to the tick and sizes to the lot, so the true unit always fits."""
    for unit in candidates:
        q = values / unit
        if np.all(np.abs(q - np.round(q)) < 1e-6):
            return unit, max(0, -int(math.floor(math.log10(unit) + 1e-9)))
    raise ValueError(f"synthetic depth: {what} are not multiples of any of {candidates}")


def grid_of(ticks: pl.DataFrame, levels: int = DEFAULT_LEVELS, step: int | None = None) -> DepthGrid:
    """The tick, lot and level step of a synthetic tick frame (see the module docstring)."""
    if levels < 1:
        raise ValueError(f"synthetic depth: levels {levels}, expected >= 1")
    q = ticks.filter(pl.col("kind") == "quote")
    if q.height == 0:
        raise ValueError("synthetic depth: the tick frame has no quote to build a book on")
    px = np.concatenate([q["bid_px"].to_numpy(), q["ask_px"].to_numpy()])
    tick, dec = _unit(px, [10.0**-d for d in range(0, 11)], "quote prices")
    sizes = np.concatenate([q["bid_sz"].to_numpy(), q["ask_sz"].to_numpy(),
                            ticks.filter(pl.col("kind") == "trade")["size"].to_numpy()])
    lot, lot_dec = _unit(sizes, [1000.0, 100.0, 10.0] + [10.0**-d for d in range(0, 11)], "sizes")
    if step is None:
        moves = np.abs(np.diff(np.round(q["bid_px"].to_numpy() / tick)))
        step = max(1, math.ceil(float(np.median(moves)) / 2)) if len(moves) else 1
    if step < 1:
        raise ValueError(f"synthetic depth: step {step} ticks, expected >= 1")
    return DepthGrid(tick, dec, lot, lot_dec, int(step), int(levels))


# ---- the kernel -----------------------------------------------------------------------------

@nb.njit(cache=True, inline="always")
def _grid_price(s, top, j, step):
    """Price (ticks) of deeper level ``j`` >= 1 of side ``s`` (0 bid, 1 ask) behind ``top``."""
    if s == 0:
        return ((top - 1) // step) * step - (j - 1) * step
    return -((-(top + 1)) // step) * step + (j - 1) * step


@nb.njit(cache=True, inline="always")
def _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, tick_i, seq, side, px, sz, act):
    o_tick[r] = tick_i
    o_seq[r] = seq
    o_side[r] = side
    o_px[r] = px
    o_sz[r] = sz
    o_act[r] = act
    return r + 1


@nb.njit(cache=True)
def _set_side(lk, lq, n, s, top, top_q, fresh, evo_lvl, evo_kind, evo_amt, step, K,
              o_tick, o_seq, o_side, o_px, o_sz, o_act, r, tick_i, seq):
    """Move side ``s``'s window to ``top`` with size ``top_q`` (lots); deeper levels keep their
    queue when their price stays in the window, new ones take ``fresh[j]``; ``evo_kind`` 1 adds
    ``evo_amt`` lots to deeper level ``evo_lvl``, 2 keeps the fraction ``evo_amt`` of it (a
    persisting level only). Emits deletes, adds and updates; returns the next row."""
    side = 1 if s == 0 else -1
    newk = np.empty(K, np.int64)
    newq = np.empty(K, np.int64)
    old = np.empty(K, np.int64)  # index of the level in the old window, -1: new
    m = n[s]
    for j in range(K):
        p = top if j == 0 else _grid_price(s, top, j, step)
        newk[j] = p
        f = -1
        for o in range(m):
            if lk[s, o] == p:
                f = o
                break
        old[j] = f
        if j == 0:
            newq[j] = top_q
        elif f >= 0:
            newq[j] = lq[s, f]
        else:
            newq[j] = fresh[j]
    if evo_kind != 0 and K > 1 and old[evo_lvl] >= 0:
        if evo_kind == 1:
            newq[evo_lvl] += max(1, int(evo_amt))
        else:
            newq[evo_lvl] = max(1, int(newq[evo_lvl] * evo_amt))
    for o in range(m):
        keep = False
        for j in range(K):
            if newk[j] == lk[s, o]:
                keep = True
                break
        if not keep:
            r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, tick_i, seq, side, lk[s, o], 0, DELETE)
    for j in range(K):
        if old[j] < 0:
            r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, tick_i, seq, side, newk[j], newq[j], ADD)
        elif lq[s, old[j]] != newq[j]:
            r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, tick_i, seq, side, newk[j], newq[j], UPDATE)
    for j in range(K):
        lk[s, j] = newk[j]
        lq[s, j] = newq[j]
    n[s] = K
    return r


@nb.njit(cache=True)
def _find(lk, n, s, p):
    for o in range(n[s]):
        if lk[s, o] == p:
            return o
    return -1


@nb.njit(cache=True)
def _kernel(start, is_quote, bid_k, bid_q, ask_k, ask_q, tr_side, tr_k, tr_q,
            fresh, evo_lvl, evo_kind, evo_amt, step, K, lk, lq, n, meta,
            o_tick, o_seq, o_side, o_px, o_sz, o_act):
    """Ticks from ``start`` into the row buffers until they could overflow. ``meta``: int64
    [book started, last quoted spread (ticks)]. Returns (next tick, rows written)."""
    cap = o_tick.shape[0]
    room = 4 * K + 2 * K + 4  # a trade's two messages (or a snapshot) write at most this many rows
    r = 0
    i = start
    while i < is_quote.shape[0] and r + room <= cap:
        seq = 2 * i + 2
        if is_quote[i]:
            if meta[0] == 0:
                r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, seq, 0, 0, 0, CLEAR)
                meta[0] = 1
            r = _set_side(lk, lq, n, 0, bid_k[i], bid_q[i], fresh[i, 0], evo_lvl[i, 0], evo_kind[i, 0],
                          evo_amt[i, 0], step, K, o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, seq)
            r = _set_side(lk, lq, n, 1, ask_k[i], ask_q[i], fresh[i, 1], evo_lvl[i, 1], evo_kind[i, 1],
                          evo_amt[i, 1], step, K, o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, seq)
            meta[1] = max(1, ask_k[i] - bid_k[i])
        elif meta[0] == 1 and tr_q[i] > 0:
            s = 1 if tr_side[i] > 0 else 0  # a buyer takes the asks
            o = 1 - s
            p, q = tr_k[i], tr_q[i]
            pre = seq - 1
            f = _find(lk, n, s, p)
            if not (f == 0 and lq[s, 0] >= q):
                top_q = max(lq[s, f] if f >= 0 else fresh[i, s, 0], q)
                r = _set_side(lk, lq, n, s, p, top_q, fresh[i, s], 0, 0, 0.0, step, K,
                              o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, pre)
            if n[o] > 0 and ((o == 0 and lk[0, 0] >= p) or (o == 1 and lk[1, 0] <= p)):
                t = p - meta[1] if o == 0 else p + meta[1]
                g = _find(lk, n, o, t)
                r = _set_side(lk, lq, n, o, t, lq[o, g] if g >= 0 else fresh[i, o, 0], fresh[i, o], 0, 0, 0.0,
                              step, K, o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, pre)
            left = lq[s, 0] - q
            side = 1 if s == 0 else -1
            if left > 0:
                lq[s, 0] = left
                r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, seq, side, p, left, UPDATE)
            else:
                r = _emit(o_tick, o_seq, o_side, o_px, o_sz, o_act, r, i, seq, side, p, 0, DELETE)
                for j in range(n[s] - 1):
                    lk[s, j] = lk[s, j + 1]
                    lq[s, j] = lq[s, j + 1]
                n[s] -= 1
        i += 1
    return i, r


# ---- rows -----------------------------------------------------------------------------------

def _rng(spec: SyntheticSpec) -> np.random.Generator:
    digest = hashlib.sha256(f"{spec.symbol}|{spec.month}|{spec.seed}|book".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


#: Rows per kernel call (the buffers are reused: memory stays bounded whatever the month's size).
CHUNK_ROWS = 1 << 20


def book_rows(spec: SyntheticSpec, ticks: pl.DataFrame | None = None, levels: int = DEFAULT_LEVELS,
              step: int | None = None) -> pl.DataFrame:
    """Canonical book rows (:data:`BOOK_SCHEMA`, L2) of the spec's month, consistent with
    ``ticks`` (``synthetic.generate(spec)`` when None; pass it to save regenerating). Identical
    for identical arguments. ``levels`` per side, ``step`` ticks between deeper levels (None: from
    the quotes, see the module docstring)."""
    ticks = synthetic.generate(spec) if ticks is None else ticks
    grid = grid_of(ticks, levels, step)
    K, n = grid.levels, ticks.height
    rng = _rng(spec)

    def lots(col: str) -> np.ndarray:
        return np.round(ticks[col].fill_null(0.0).to_numpy() / grid.lot).astype(np.int64)

    def pticks(col: str) -> np.ndarray:
        return np.round(ticks[col].fill_null(0.0).to_numpy() / grid.tick).astype(np.int64)

    is_quote = (ticks["kind"] == "quote").to_numpy()
    bid_k, ask_k, tr_k = pticks("bid_px"), pticks("ask_px"), pticks("price")
    bid_q, ask_q, tr_q = lots("bid_sz"), lots("ask_sz"), lots("size")
    tr_side = ticks["side"].fill_null(0).to_numpy().astype(np.int8)
    median_q = max(1.0, float(np.median(np.concatenate([bid_q[is_quote], ask_q[is_quote]]))))
    # Fresh queues: log-normal around the median quote size, deeper levels larger (1 + 0.5 j).
    depth_scale = 1.0 + 0.5 * np.arange(K)
    fresh = np.maximum(1, np.round(median_q * depth_scale * rng.lognormal(0.0, 0.8, (n, 2, K)))).astype(np.int64)
    u = rng.random((n, 2))
    evo_kind = np.where(u < P_ADD, 1, np.where(u < P_ADD + P_CANCEL, 2, 0)).astype(np.int8)
    evo_lvl = rng.integers(1, max(K, 2), (n, 2)).astype(np.int64) if K > 1 else np.zeros((n, 2), np.int64)
    add_lots = np.round(0.3 * median_q * rng.lognormal(0.0, 1.0, (n, 2)))
    keep_frac = rng.uniform(0.2, 0.9, (n, 2))
    evo_amt = np.where(evo_kind == 1, add_lots, keep_frac)

    lk = np.zeros((2, K), np.int64)
    lq = np.zeros((2, K), np.int64)
    nlev = np.zeros(2, np.int64)
    meta = np.zeros(2, np.int64)
    cap = max(CHUNK_ROWS, 2 * (6 * K + 4))  # room for a message's rows (see _kernel), so each call progresses
    bufs = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8), np.empty(cap, np.int64),
            np.empty(cap, np.int64), np.empty(cap, np.int8))
    chunks: list[pl.DataFrame] = []
    i = 0
    ts_event, ts_recv = ticks["ts_event"].to_numpy(), ticks["ts_recv"].to_numpy()
    while True:
        i, r = _kernel(i, is_quote, bid_k, bid_q, ask_k, ask_q, tr_side, tr_k, tr_q, fresh, evo_lvl, evo_kind,
                       evo_amt, grid.step, K, lk, lq, nlev, meta, *bufs)
        t, seq, side, pk, q, act = (b[:r] for b in bufs)
        chunks.append(pl.DataFrame({
            "ts_event": ts_event[t], "ts_recv": ts_recv[t], "seq": seq.copy(), "side": side.copy(),
            "price": np.round(pk * grid.tick, grid.decimals), "size": np.round(q * grid.lot, grid.lot_decimals),
            "action": pl.Series(np.asarray(ACTION.categories)[act], dtype=ACTION),
        }))
        if i >= n:
            break
    rows = pl.concat(chunks)
    seq = rows["seq"]
    first = seq[0] if rows.height else None
    last = (seq != seq.shift(-1)).fill_null(True)
    return rows.with_columns(
        is_snapshot=pl.col("seq") == first,
        order_id=pl.lit(None, pl.UInt64),
        flags=pl.when(last).then(pl.lit(F_LAST)).otherwise(pl.lit(0)),
    ).with_columns(pl.when(pl.col("action") == "clear").then(0.0).otherwise(pl.col("price")).alias("price")
    ).select(list(BOOK_SCHEMA)).cast(BOOK_SCHEMA)  # type: ignore[arg-type]


def book_landing_name(spec: SyntheticSpec, levels: int = DEFAULT_LEVELS) -> str:
    return f"synthetic-{spec.symbol}-{spec.month}-seed{spec.seed}-n{spec.events}-book{levels}.parquet"


def write_book_landing(lake: Lake, spec: SyntheticSpec, levels: int = DEFAULT_LEVELS,
                       ticks: pl.DataFrame | None = None) -> Path:
    """Write the spec's book rows (:func:`book_rows`) as a canonical book Parquet into
    ``landing/<SYMBOL>/`` (atomically; kept when already there) and return its path. Pass the
    spec's ``ticks`` to save regenerating them."""
    path = lake.landing_dir(spec.symbol) / book_landing_name(spec, levels)
    if not path.exists():
        lake.write_parquet(book_rows(spec, ticks, levels), path)
    return path
