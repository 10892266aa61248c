"""``ema_cross`` on NautilusTrader: see the spec in :mod:`quant_assets.strategies.registry`."""

from __future__ import annotations

from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, PriceType

from quant_assets.strategies.nautilus_base import RecordedStrategy, RecordedStrategyConfig


class EmaCross(RecordedStrategy):
    """Target position +notional when EMA_fast(mid) > EMA_slow(mid), -notional when below,
    reached with market orders (taker). Signals start once the slow EMA has seen
    ``slow_period`` quotes."""

    def __init__(self, config: RecordedStrategyConfig) -> None:
        super().__init__(config)
        self.fast = ExponentialMovingAverage(self.params["fast_period"], PriceType.MID)
        self.slow = ExponentialMovingAverage(self.params["slow_period"], PriceType.MID)
        self.target = 0  # -1 short, 0 flat, +1 long

    def pending_qty(self) -> float:
        """Signed base quantity of this instrument's orders not yet filled: in flight (sent, not
        yet at the venue) or working there."""
        orders = {o.client_order_id: o for o in self.cache.orders_inflight(instrument_id=self.instrument_id)}
        orders.update({o.client_order_id: o for o in self.cache.orders_open(instrument_id=self.instrument_id)})
        return sum(o.leaves_qty.as_double() * (1 if o.side == OrderSide.BUY else -1) for o in orders.values())

    def on_signal_tick(self, tick: QuoteTick, mid: float) -> None:
        self.fast.handle_quote_tick(tick)
        self.slow.handle_quote_tick(tick)
        if not self.slow.initialized:
            return
        want = 1 if self.fast.value > self.slow.value else -1 if self.fast.value < self.slow.value else self.target
        if want == self.target:
            return
        self.target = want
        position = self.position_qty()
        qty = self.qty_for(self.params["notional"], mid).as_double()
        # The current position is closed and the new one opened in one order, counting what the
        # orders still on their way to the venue (order latency) will add.
        delta = want * qty - position - self.pending_qty()
        if abs(delta) > 0:
            order = self.order_factory.market(
                self.instrument_id,
                OrderSide.BUY if delta > 0 else OrderSide.SELL,
                self.instrument.make_qty(abs(delta)),
            )
            if not self.submit_guarded(order, mid) and position != 0:
                # The account cannot carry the new position: at least leave the old one, whose
                # signal has just reversed.
                self.submit_guarded(self.order_factory.market(
                    self.instrument_id, OrderSide.SELL if position > 0 else OrderSide.BUY,
                    self.instrument.make_qty(abs(position)), reduce_only=True,
                ), mid)
