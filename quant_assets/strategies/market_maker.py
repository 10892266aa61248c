"""The ``market_maker`` strategy: a numba loop over an hftbacktest 2.4.4 backtest.

On the decision grid (every ``interval_ns`` from the first event) the loop (1) records the fills
it has been told about, (2) samples the mid for the equity curve, (3) re-quotes one bid and one
ask. Between two grid points where no market feed and no order response arrives the decision
cannot change, so by default (``skip_idle``) the loop waits for the next event or timed duty
(``wait_next_feed``) and resumes on the first grid point after it: the same decisions at the
same times as stepping through every point (``skip_idle=False``, kept as the reference and
tested against), at a cost proportional to the events instead of the month's length (a month
of 100 ms decisions is 26.8M points):

* reservation price ``r = mid - skew_ticks * tick * (position / order_qty)`` (shifted against
  the inventory, a linear GLFT-style skew), plus, on order-book depth
  (``imbalance_levels > 0``), ``imbalance_skew_ticks * tick * I`` with the order-book imbalance
  ``I = (B - A) / (B + A)`` in [-1, 1], where B and A are the sizes of the first
  ``imbalance_levels`` non-empty price levels of each side of hftbacktest's own depth at the
  decision time (the local book, after feed latency: point in time), scanning at most
  :data:`IMBALANCE_MAX_SCAN_TICKS` ticks from the touch per side; more resting bids than asks
  (buying pressure) shift both quotes up;
* bid at ``floor(r / tick - half_spread_ticks)`` ticks, ask at ``ceil(r / tick + half_spread_ticks)``,
  clamped so they never improve on the touch (bid ≤ best bid, ask ≥ best ask), sent post-only
  (GTX: if the market moved during the order latency and the quote would cross, the exchange
  expires it instead of taking liquidity);
* a working order whose price differs is cancelled and replaced; no bid while
  position ≥ ``max_position_orders * order_qty`` (a resting bid is pulled), no ask while
  position ≤ minus that.

Inventory is the loop's own sum of the fills it recorded, not ``hbt.position``: hftbacktest
2.4.4's local state applies only the *last* execution of an order when it completes
(``Local::process_recv_order_`` applies fills on ``status == Filled`` with ``exec_qty``), so it
misses every partial fill of ``partial_fill_exchange``.

Fills are recorded by polling the local order book each step: the executed quantity of an order
is ``qty - leaves_qty`` (``exec_qty`` is only the last execution); when it grows, one fill row is
emitted with the delta, the order's ``exch_timestamp`` (ns), side, ``exec_price_tick``, maker flag
and order id. Several executions of one order between two polls become one row (same price for
a maker order; the time of the last one; if the order's cancel was acknowledged in the same
interval, the time is the cancel's, as hftbacktest keeps one timestamp per order). Rows are
recorded before ``clear_inactive_orders`` forgets completed orders. The buffers are sized by the
caller and doubled as needed, so they never overflow.

At the month's last event (``end_ts``) the loop cancels every working order, waits for the
acknowledgements (fills that raced the cancels are recorded), then closes any inventory with an
IOC limit order at the touch (a taker fill). hftbacktest fills it only up to the touch's size (L1
book); any rest is returned as a synthetic taker fill at the touch with order id 0
(:data:`SYNTHETIC_ORDER_ID`), so the month always ends flat. The events array must continue
past ``end_ts`` (an end-marker row: ``hft_events.to_events(..., end_marker_ns=...)``) so these
round trips happen at real timestamps.

All times are int64 ns on hftbacktest's clock (``local_ts`` for the strategy, ``exch_ts`` for
fills), prices in ticks inside the loop, quantities in lots inside the loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# hftbacktest 2.4.4 constants (hftbacktest.order), repeated so the loop compiles them as literals.
_BUY, _SELL = 1, -1
_ST_NONE, _ST_NEW, _ST_EXPIRED, _ST_FILLED, _ST_CANCELED, _ST_PARTIAL = 0, 1, 2, 3, 4, 5
_REQ_NONE, _REQ_NEW, _REQ_CANCEL = 0, 1, 4
_GTX, _IOC, _LIMIT = 1, 3, 0

#: Order id of the synthetic end-of-month closing fill (real orders count up from 1).
SYNTHETIC_ORDER_ID = 0

#: How far from the touch (ticks) the imbalance looks for its levels on each side: a sparse book
#: cannot make one decision scan the whole price range (levels beyond it are not counted).
IMBALANCE_MAX_SCAN_TICKS = 1000

#: Orders the loop tracks at once (working bid/ask, cancels in flight, the closing order).
_TRACK = 64

#: Columns of the fill buffer (int64): exchange ns, side ±1, lots, price ticks, maker 0/1, order id.
FILL_COLUMNS = ("ts", "side", "lots", "px_tick", "maker", "order_id")
_N_FILL_COLUMNS = 6

#: Layout of the ``info`` array the loop returns.
INFO_FIELDS = (
    "n_fills", "n_samples", "orders_sent", "steps", "engine_position", "engine_balance", "engine_fee",
    "engine_num_trades", "ioc_lots", "synthetic_lots", "end_ts", "untracked_orders",
    "halted", "halt_ts", "halt_equity", "halt_position_lots", "halt_mid", "close_oid", "quotes_refused_leverage",
)


@njit(cache=False)
def _grow(a, n):
    """A copy of 1-d ``a`` with room for ``n`` elements (numba arrays cannot be resized in place)."""
    b = np.empty(n, a.dtype)
    for i in range(a.shape[0]):  # an explicit loop: slice assignment costs seconds of compile time
        b[i] = a[i]
    return b


@njit(cache=False)
def _grid_ceil(t, grid0, step):
    """The first point of the grid ``grid0 + k * step`` at or after ``t`` (ns)."""
    if t <= grid0:
        return grid0
    return grid0 + ((t - grid0 + step - 1) // step) * step


@njit(cache=False)
def _push_fill(fills, n, ts, side, lots, px_tick, maker, oid):
    """Append one row at ``n``; returns the buffer, doubled when it was full (numba arrays
    cannot be resized in place, so the caller keeps the returned one)."""
    if n == fills.shape[0]:
        grown = np.empty((2 * fills.shape[0] + 16, fills.shape[1]), np.int64)
        for i in range(n):  # explicit loops: slice assignment costs seconds of compile time
            for j in range(fills.shape[1]):
                grown[i, j] = fills[i, j]
        fills = grown
    fills[n, 0] = ts
    fills[n, 1] = side
    fills[n, 2] = lots
    fills[n, 3] = px_tick
    fills[n, 4] = 1 if maker else 0
    fills[n, 5] = oid
    return fills


@njit(cache=False)
def _alive(status, req):
    """Working at the exchange, or a new-order request in flight."""
    return status == _ST_NEW or status == _ST_PARTIAL or (status == _ST_NONE and req == _REQ_NEW)


@njit(cache=False)
def _scan_orders(hbt, fills, n, tr_id, tr_cum, tr_used, lot_size, live):
    """One pass over the local order book: record executions since the last pass, and
    snapshot the orders into ``live`` (rows: order id, side, price tick, status, req).

    The executed lots of an order are ``round((qty - leaves_qty) / lot)``; a growth is a fill
    row. Orders that completed (expired, filled, cancelled) leave the tracking table, as
    ``clear_inactive_orders`` is about to drop them. This is the loop's only iteration over
    hftbacktest's orders: each such site costs about a second of numba compile time.

    Returns ``(fills, n, signed lots filled, orders not tracked, rows of live)``.
    """
    moved = 0
    untracked = 0
    n_live = 0
    values = hbt.orders(0).values()
    while values.has_next():
        r = values.get().arr[0]  # the order record itself: cheaper to compile than the properties
        oid = r.order_id
        slot = -1
        free = -1
        for k in range(tr_id.shape[0]):
            if tr_used[k] and tr_id[k] == oid:
                slot = k
                break
            if free < 0 and not tr_used[k]:
                free = k
        if slot < 0:
            if free < 0:
                untracked += 1  # more orders than the table holds: reported by the caller
                continue
            slot = free
            tr_used[slot] = True
            tr_id[slot] = oid
            tr_cum[slot] = 0
        cum = np.int64(round((r.qty - r.leaves_qty) / lot_size))
        delta = cum - tr_cum[slot]
        if delta > 0:
            fills = _push_fill(fills, n, r.exch_timestamp, r.side, delta, r.exec_price_tick, r.maker, oid)
            n += 1
            tr_cum[slot] = cum
            moved += r.side * delta
        st = r.status
        if st == _ST_EXPIRED or st == _ST_FILLED or st == _ST_CANCELED:
            tr_used[slot] = False
        live[n_live, 0] = oid
        live[n_live, 1] = r.side
        live[n_live, 2] = r.price_tick
        live[n_live, 3] = st
        live[n_live, 4] = r.req
        n_live += 1
    return fills, n, moved, untracked, n_live


@njit(cache=False)
def book_imbalance(depth, levels, max_scan):
    """``(B - A) / (B + A)`` over the first ``levels`` non-empty price levels of each side of
    ``depth`` (an hftbacktest market depth), scanning at most ``max_scan`` ticks from the touch
    per side; 0 when both sides are empty."""
    bid_qty = 0.0
    found = 0
    t = depth.best_bid_tick
    for _ in range(max_scan):
        if found >= levels:
            break
        q = depth.bid_qty_at_tick(t)
        if q > 0.0:
            bid_qty += q
            found += 1
        t -= 1
    ask_qty = 0.0
    found = 0
    t = depth.best_ask_tick
    for _ in range(max_scan):
        if found >= levels:
            break
        q = depth.ask_qty_at_tick(t)
        if q > 0.0:
            ask_qty += q
            found += 1
        t += 1
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total > 0.0 else 0.0


# Phases of the loop.
_QUOTING, _CANCELLING, _CLOSING, _DONE = 0, 1, 2, 3


@njit(cache=False)
def market_maker_loop(
    hbt,
    tick_size: float,
    lot_size: float,
    order_lots: int,
    half_spread_ticks: float,
    skew_ticks: float,
    max_position_orders: int,
    interval_ns: int,
    equity_interval_ns: int,
    end_ts: int,
    fill_capacity: int,
    sample_capacity: int,
    skip_idle: bool = True,
    starting_cash: float = 100_000.0,
    max_leverage: float = 1.0,
    maintenance_margin: float = 0.0,
    ruin_floor: float = 1_000.0,
    maker_fee: float = 0.0,
    taker_fee: float = 0.0,
    imbalance_levels: int = 0,
    imbalance_skew_ticks: float = 0.0,
):
    """Run the market maker on asset 0 of ``hbt`` (a ``HashMapMarketDepthBacktest``) until
    ``end_ts`` (ns, the last real event's ``local_ts``), then close out.

    Units: ``tick_size`` quote currency, ``lot_size`` base units, ``order_lots`` the quote size
    in lots (≥ 1), ``half_spread_ticks`` ticks, ``skew_ticks`` ticks per ``order_lots`` of
    inventory, ``max_position_orders`` orders, ``interval_ns``/``equity_interval_ns``/``end_ts``
    ns. ``fill_capacity``/``sample_capacity`` are initial buffer sizes (they double as needed).
    ``skip_idle`` (default True) jumps over grid points where nothing can change (see the
    module docstring); False steps through every one. ``imbalance_levels`` (levels per side,
    0: off) and ``imbalance_skew_ticks`` (ticks at full imbalance) shift the reservation price
    by the order-book imbalance (see the module docstring; meaningful on depth only).

    The account (quote currency; see :mod:`quant_assets.engines.account`): cash starts at
    ``starting_cash`` and moves with every recorded fill and its fee (``maker_fee``/``taker_fee``,
    fractions of notional); a quote that would take ``|position| × mid`` past ``max_leverage ×
    equity`` is not sent (counted); when equity reaches ``maintenance_margin × |position| × mid``
    or ``ruin_floor`` the loop liquidates: the close-out runs at once and the month ends there
    for the strategy (``halted``).

    Returns ``(fills, sample_ts, sample_mid, info)``: ``fills`` an int64 array with the columns
    of :data:`FILL_COLUMNS` (order id 0 is the synthetic close), the mid samples (ns, quote
    currency), and ``info`` in the order of :data:`INFO_FIELDS` (``engine_*`` are hftbacktest's
    own local state values at the end, before any synthetic fill).
    """
    fills = np.empty((max(fill_capacity, 16), _N_FILL_COLUMNS), np.int64)
    n_fills = 0
    sample_ts = np.empty(max(sample_capacity, 16), np.int64)
    sample_mid = np.empty(max(sample_capacity, 16), np.float64)
    n_samples = 0
    # Executed lots seen so far per order id, for the orders still in the local book.
    tr_id = np.zeros(_TRACK, np.uint64)
    tr_cum = np.zeros(_TRACK, np.int64)
    tr_used = np.zeros(_TRACK, np.bool_)
    live = np.zeros((_TRACK, 5), np.int64)
    untracked = 0

    pos_lots = 0  # inventory from recorded fills: an exact integer number of lots
    limit_lots = max_position_orders * order_lots
    order_qty = order_lots * lot_size
    next_oid = 1
    orders_sent = 0
    steps = 0
    next_sample = np.int64(-1)
    ioc_lots = 0
    pos_before_ioc = 0
    synthetic_lots = 0
    phase = _QUOTING
    cash = starting_cash
    halted = 0
    halt_ts = 0
    halt_equity = 0.0
    halt_pos = 0
    halt_mid = 0.0
    close_oid = -1
    refused = 0  # times a side that was quoting had to stop for the leverage limit
    bid_refused = False
    ask_refused = False

    # The first elapse only sets the clock to the first event, the origin of the decision grid.
    if hbt.elapse(0) != 0:
        phase = _DONE
    grid0 = hbt.current_timestamp
    while True:
        # 1. fills since the last step, before clear_inactive_orders drops completed orders
        n_before = n_fills
        fills, n_fills, moved, lost, n_live = _scan_orders(hbt, fills, n_fills, tr_id, tr_cum, tr_used, lot_size, live)
        pos_lots += moved
        untracked += lost
        for i in range(n_before, n_fills):
            notional = fills[i, 2] * lot_size * fills[i, 3] * tick_size
            cash -= fills[i, 1] * notional + (maker_fee if fills[i, 4] == 1 else taker_fee) * notional
        hbt.clear_inactive_orders(0)

        now = hbt.current_timestamp
        depth = hbt.depth(0)
        best_bid = depth.best_bid_tick
        best_ask = depth.best_ask_tick
        valid = np.isfinite(depth.best_bid) and np.isfinite(depth.best_ask)

        if phase == _QUOTING:
            # 2. the equity sample: the mid on the sampling timer
            if valid and now >= next_sample:
                if n_samples == sample_ts.shape[0]:
                    sample_ts = _grow(sample_ts, 2 * n_samples + 16)
                    sample_mid = _grow(sample_mid, 2 * n_samples + 16)
                sample_ts[n_samples] = now
                sample_mid[n_samples] = (depth.best_bid + depth.best_ask) / 2.0
                n_samples += 1
                if next_sample < 0:
                    next_sample = now
                while next_sample <= now:
                    next_sample += equity_interval_ns
            mid_px = (depth.best_bid + depth.best_ask) / 2.0 if valid else 0.0
            equity = cash + pos_lots * lot_size * mid_px
            if now >= end_ts:
                phase = _CANCELLING
            elif valid and (equity <= ruin_floor or (pos_lots != 0 and equity <= maintenance_margin * abs(pos_lots) * lot_size * mid_px)):
                # Liquidation: the close-out runs now and the strategy is done for the month.
                halted = 1
                halt_ts = now
                halt_equity = equity
                halt_pos = pos_lots
                halt_mid = mid_px
                phase = _CANCELLING
            elif valid:
                # 3. quotes
                res_tick = (best_bid + best_ask) / 2.0 - skew_ticks * (pos_lots / order_lots)
                if imbalance_levels > 0:
                    res_tick += imbalance_skew_ticks * book_imbalance(depth, imbalance_levels, IMBALANCE_MAX_SCAN_TICKS)
                # 1e-9 tick of slack: a skewed price that is an integer up to float noise stays one.
                bid_tick = min(np.int64(np.floor(res_tick - half_spread_ticks + 1e-9)), best_bid)
                ask_tick = max(np.int64(np.ceil(res_tick + half_spread_ticks - 1e-9)), best_ask)
                allow_bid = pos_lots < limit_lots
                allow_ask = pos_lots > -limit_lots
                capacity = max(equity, 0.0) * max_leverage
                over_bid = allow_bid and pos_lots >= 0 and (pos_lots + order_lots) * lot_size * mid_px > capacity
                over_ask = allow_ask and pos_lots <= 0 and (order_lots - pos_lots) * lot_size * mid_px > capacity
                if over_bid and not bid_refused:
                    refused += 1
                if over_ask and not ask_refused:
                    refused += 1
                bid_refused = over_bid
                ask_refused = over_ask
                allow_bid = allow_bid and not over_bid
                allow_ask = allow_ask and not over_ask
                have_bid = False
                have_ask = False
                for i in range(n_live):
                    oid, side, price_tick, st, req = live[i, 0], live[i, 1], live[i, 2], live[i, 3], live[i, 4]
                    if not _alive(st, req) or req == _REQ_CANCEL:
                        continue
                    if side == _BUY:
                        if allow_bid and price_tick == bid_tick and not have_bid:
                            have_bid = True
                        elif req == _REQ_NONE:
                            hbt.cancel(0, oid, False)
                        else:
                            have_bid = True  # a new order in flight: decided once it is acknowledged
                    else:
                        if allow_ask and price_tick == ask_tick and not have_ask:
                            have_ask = True
                        elif req == _REQ_NONE:
                            hbt.cancel(0, oid, False)
                        else:
                            have_ask = True
                if allow_bid and not have_bid:
                    hbt.submit_buy_order(0, next_oid, bid_tick * tick_size, order_qty, _GTX, _LIMIT, False)
                    next_oid += 1
                    orders_sent += 1
                if allow_ask and not have_ask:
                    hbt.submit_sell_order(0, next_oid, ask_tick * tick_size, order_qty, _GTX, _LIMIT, False)
                    next_oid += 1
                    orders_sent += 1

        # 5. close-out at end_ts: cancel everything and wait for the acknowledgements (fills that
        # raced the cancels are recorded by the scans), then one IOC at the touch.
        pending = -1
        if phase == _CANCELLING or phase == _CLOSING:
            for i in range(n_live):
                oid, st, req = live[i, 0], live[i, 3], live[i, 4]
                if _alive(st, req) or req != _REQ_NONE:
                    pending = oid
                    if req == _REQ_NONE:
                        hbt.cancel(0, oid, False)
            if pending < 0:
                if phase == _CLOSING:
                    ioc_lots = abs(pos_before_ioc) - abs(pos_lots)
                    phase = _DONE
                elif pos_lots != 0 and valid:
                    pos_before_ioc = pos_lots
                    qty = abs(pos_lots) * lot_size
                    if pos_lots > 0:
                        hbt.submit_sell_order(0, next_oid, depth.best_bid, qty, _IOC, _LIMIT, False)
                    else:
                        hbt.submit_buy_order(0, next_oid, depth.best_ask, qty, _IOC, _LIMIT, False)
                    pending = next_oid
                    close_oid = next_oid
                    next_oid += 1
                    orders_sent += 1
                    phase = _CLOSING
                else:
                    phase = _DONE
        if phase == _DONE:
            break

        # 4. advance: one interval while quoting (the last step lands exactly on end_ts), until
        # the next order response while closing out
        steps += 1
        if phase == _QUOTING and not skip_idle:
            # The reference behaviour: a step on every point of the decision grid.
            ended = hbt.elapse(min(interval_ns, end_ts - now)) != 0
        elif phase == _QUOTING:
            # Decisions fall on the grid grid0 + k * interval_ns. Between two grid points where
            # nothing arrives (no market feed, no order response) the decision cannot change,
            # so instead of stepping through them we wait for the next event or the next
            # timed duty (an equity sample, end_ts) and resume at the first grid point at or
            # after it: the same decisions at the same times as stepping every interval, at
            # the cost of the events rather than of the month's length.
            duty = end_ts if next_sample < 0 else min(end_ts, _grid_ceil(next_sample, grid0, interval_ns))
            if duty <= now:
                duty = min(now + interval_ns, end_ts)
            code = hbt.wait_next_feed(True, duty - now)
            if code == 1:
                ended = True
            elif code == 0:
                ended = False
            elif code == 2 or code == 3:
                at = hbt.current_timestamp
                resume = min(end_ts, _grid_ceil(at, grid0, interval_ns))
                ended = resume > at and hbt.elapse(resume - at) != 0
            else:
                ended = True  # an engine error: stop with what was recorded
        elif pending >= 0:
            ended = hbt.wait_order_response(0, pending, 3600 * 1_000_000_000) != 0
        else:
            ended = hbt.elapse(interval_ns) != 0
        if ended:
            # The data ran out (no end marker, or the close-out outlived it): one last scan.
            fills, n_fills, moved, lost, n_live = _scan_orders(hbt, fills, n_fills, tr_id, tr_cum, tr_used, lot_size, live)
            pos_lots += moved
            untracked += lost
            if phase == _CLOSING:
                ioc_lots = abs(pos_before_ioc) - abs(pos_lots)
            break

    sv = hbt.state_values(0)
    engine_position = sv.position
    engine_balance = sv.balance
    engine_fee = sv.fee
    engine_trades = sv.num_trades
    now = hbt.current_timestamp
    depth = hbt.depth(0)
    if pos_lots != 0:
        # What the touch could not absorb is closed at the touch by decree: the month ends flat.
        last_ts = now
        for i in range(n_fills):
            last_ts = max(last_ts, fills[i, 0])
        touch = depth.best_bid_tick if pos_lots > 0 else depth.best_ask_tick
        fills = _push_fill(fills, n_fills, last_ts, -1 if pos_lots > 0 else 1, abs(pos_lots), touch, False, SYNTHETIC_ORDER_ID)
        n_fills += 1
        synthetic_lots = abs(pos_lots)
        pos_lots = 0
    if np.isfinite(depth.best_bid) and np.isfinite(depth.best_ask):
        if n_samples == sample_ts.shape[0]:
            sample_ts = _grow(sample_ts, n_samples + 1)
            sample_mid = _grow(sample_mid, n_samples + 1)
        sample_ts[n_samples] = now
        sample_mid[n_samples] = (depth.best_bid + depth.best_ask) / 2.0
        n_samples += 1

    info = np.empty(len(INFO_FIELDS), np.float64)
    info[0] = n_fills
    info[1] = n_samples
    info[2] = orders_sent
    info[3] = steps
    info[4] = engine_position
    info[5] = engine_balance
    info[6] = engine_fee
    info[7] = engine_trades
    info[8] = ioc_lots
    info[9] = synthetic_lots
    info[10] = end_ts
    info[11] = untracked
    info[12] = halted
    info[13] = halt_ts
    info[14] = halt_equity
    info[15] = halt_pos
    info[16] = halt_mid
    info[17] = close_oid
    info[18] = refused
    return fills[:n_fills], sample_ts[:n_samples], sample_mid[:n_samples], info
