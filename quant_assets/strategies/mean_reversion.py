"""``mean_reversion`` on NautilusTrader: see the spec in :mod:`quant_assets.strategies.registry`."""

from __future__ import annotations

import math
from collections import deque
from datetime import timedelta

from nautilus_trader.core.datetime import unix_nanos_to_dt
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, OrderType, TimeInForce

from quant_assets.engines.account import REASON_MAX_HOLD, REASON_PROTECTIVE
from quant_assets.strategies.nautilus_base import RecordedStrategy, RecordedStrategyConfig
from quant_assets.strategies.registry import MEAN_REVERSION


class MeanReversion(RecordedStrategy):
    """While flat with no working order: if z = (mid - mean) / std over the last ``window``
    quotes is below -entry_z, submit a bracket that buys with a limit at the bid (sells with a
    limit at the ask when z > entry_z); its children are a stop-market ``stop_bps`` and a
    take-profit limit ``take_bps`` away from the entry price (one cancels the other). The entry
    expires (GTD) after ``entry_timeout_s``.

    Invariant: a position this strategy holds always has a working exit. When the venue
    rejects a child (the entry filled after the market had already crossed the stop: "stop px
    was in the market"), and so the other child too (OUO), or the children are otherwise gone
    while a position is open, the position is closed at market at once (fills tagged
    ``protective-exit``). A position older than ``max_hold_s`` is closed at market (``max-hold``).
    So every holding time is bounded by the stop, the take-profit and the timeout."""

    def __init__(self, config: RecordedStrategyConfig) -> None:
        super().__init__(config)
        self.window: deque[float] = deque(maxlen=self.params["window"])
        # Running sums give the rolling mean/std in O(1) per tick; nautilus' BollingerBands
        # works on the bar "typical price", not on a quote mid, so it does not fit here.
        self.sum = 0.0
        self.sum_sq = 0.0
        self.exit_ids: list = []  # client order ids of the current bracket's stop and take-profit
        self.closing_id = None  # a market exit in flight
        self.opened_ns: int | None = None  # ts_init of the quote on which the position was first seen
        self.protective_exits = 0
        self.max_hold_exits = 0
        # Callers that pass raw parameters (tests, research re-runs) get the spec's default.
        self.max_hold_ns = float(self.params.get("max_hold_s", MEAN_REVERSION.param("max_hold_s").default)) * 1e9

    def _push(self, mid: float) -> None:
        if len(self.window) == self.window.maxlen:
            old = self.window[0]
            self.sum -= old
            self.sum_sq -= old * old
        self.window.append(mid)
        self.sum += mid
        self.sum_sq += mid * mid

    def zscore(self, mid: float) -> float | None:
        n = len(self.window)
        if n < self.window.maxlen:
            return None
        mean = self.sum / n
        var = max(self.sum_sq / n - mean * mean, 0.0)
        # A flat window has no spread to revert across; the tiny floor also absorbs the
        # rounding noise of the running sums.
        if var <= (mean * 1e-12) ** 2:
            return None
        return (mid - mean) / math.sqrt(var)

    def _working(self, client_order_id) -> bool:
        order = self.cache.order(client_order_id) if client_order_id is not None else None
        return order is not None and not order.is_closed

    def _exit_now(self, reason: str) -> None:
        """Cancel what is left of the bracket and close the position at market."""
        for cid in self.exit_ids:
            order = self.cache.order(cid)
            if order is not None and order.is_open:
                self.cancel_order(order)
        self.exit_ids = []
        self.closing_id = self.close_at_market(reason)

    def on_order_filled(self, event) -> None:
        super().on_order_filled(event)
        # The holding clock starts at the fill that opens the position (ns, exchange time).
        if abs(self.pos) <= 1e-12:
            self.opened_ns = None
        elif self.opened_ns is None:
            self.opened_ns = event.ts_event

    def _guard_position(self, ts: int) -> bool:
        """Enforce the exit invariant; True while a position (or its exit) is open."""
        if self.position_qty() == 0:
            return False
        if self.opened_ns is None:
            self.opened_ns = ts
        if self._working(self.closing_id):
            return True
        if not any(self._working(cid) for cid in self.exit_ids):
            self.protective_exits += 1
            self._exit_now(REASON_PROTECTIVE)
        elif ts - self.opened_ns >= self.max_hold_ns:
            self.max_hold_exits += 1
            self._exit_now(REASON_MAX_HOLD)
        return True

    def on_order_rejected(self, event) -> None:
        # A rejected stop or take-profit while a position is open: exit now rather than on the
        # next quote (the position would be naked until then).
        if event.client_order_id in self.exit_ids and self.position_qty() != 0 and not self._working(self.closing_id):
            if not any(self._working(cid) for cid in self.exit_ids):
                self.protective_exits += 1
                self._exit_now(REASON_PROTECTIVE)

    on_order_denied = on_order_rejected

    def on_warmup_tick(self, tick: QuoteTick, mid: float) -> None:
        self._push(mid)  # the previous month's last quotes fill the window

    def on_signal_tick(self, tick: QuoteTick, mid: float) -> None:
        self._push(mid)
        if self._guard_position(tick.ts_init):
            return
        z = self.zscore(mid)
        if z is None or abs(z) < self.params["entry_z"]:
            return
        # An order still on its way to the venue (order latency) is not open yet: counting only
        # open orders would send a second bracket and lose track of the first one's exits.
        if (self.cache.orders_open_count(instrument_id=self.instrument_id) > 0
                or self.cache.orders_inflight_count(instrument_id=self.instrument_id) > 0):
            return
        buy = z < 0
        entry = tick.bid_price if buy else tick.ask_price
        px = entry.as_double()
        stop = px * (1 - self.params["stop_bps"] / 1e4) if buy else px * (1 + self.params["stop_bps"] / 1e4)
        take = px * (1 + self.params["take_bps"] / 1e4) if buy else px * (1 - self.params["take_bps"] / 1e4)
        expire = unix_nanos_to_dt(tick.ts_init) + timedelta(seconds=self.params["entry_timeout_s"])
        bracket = self.order_factory.bracket(
            instrument_id=self.instrument_id,
            order_side=OrderSide.BUY if buy else OrderSide.SELL,
            quantity=self.qty_for(self.params["notional"], px),
            entry_order_type=OrderType.LIMIT,
            entry_price=entry,
            time_in_force=TimeInForce.GTD,
            expire_time=expire,
            sl_trigger_price=self.instrument.make_price(stop),
            tp_price=self.instrument.make_price(take),
        )
        entry_order, sl, tp = bracket.orders
        signed = entry_order.quantity.as_double() * (1 if buy else -1)
        if not self.rules.allows(self.position_qty(), signed, px, self.cash + self.pos * mid):
            self.orders_refused += 1
            return
        self.exit_ids = [sl.client_order_id, tp.client_order_id]
        self.order_reasons[sl.client_order_id.value] = "stop"
        self.order_reasons[tp.client_order_id.value] = "take-profit"
        self.order_reasons[entry_order.client_order_id.value] = "entry"
        self.submit_order_list(bracket)
