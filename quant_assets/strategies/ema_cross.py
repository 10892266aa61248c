"""``ema_cross`` on NautilusTrader: see the spec in :mod:`quant_assets.strategies.registry`."""

from __future__ import annotations

from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.data import Bar, BarType, QuoteTick
from nautilus_trader.model.enums import OrderSide, PriceType

from quant_assets.strategies.nautilus_base import RecordedStrategy, RecordedStrategyConfig


class EmaCross(RecordedStrategy):
    """Target position +notional when EMA_fast(mid) > EMA_slow(mid), -notional when below,
    reached with market orders (taker).

    The EMAs run on the closes of NautilusTrader's own time bars of the mid (``bar_s`` seconds,
    ``<instrument>-<bar_s>-SECOND-MID-INTERNAL``, left-open and stamped at their close on the
    engine's receive clock: the research layer's bars, :mod:`quant_assets.research.bars`), or on
    every quote update when ``bar_s`` is 0 or absent. A decision is taken at a bar's close and
    its order meets the first quote after the order latency. Signals start once the slow EMA is
    initialised and ``warmup_inputs`` inputs have been seen (the previous month's end counts:
    it is fed before the month with trading off)."""

    def __init__(self, config: RecordedStrategyConfig) -> None:
        super().__init__(config)
        self.fast = ExponentialMovingAverage(self.params["fast_period"], PriceType.MID)
        self.slow = ExponentialMovingAverage(self.params["slow_period"], PriceType.MID)
        self.bar_s = int(self.params.get("bar_s", 0) or 0)
        self.inputs = 0  # bars (or quote updates) the EMAs have seen, warm-up included
        self.target = 0  # -1 short, 0 flat, +1 long

    def on_start(self) -> None:
        super().on_start()
        if self.bar_s:
            self.subscribe_bars(BarType.from_str(f"{self.instrument_id}-{self.bar_s}-SECOND-MID-INTERNAL"))

    def pending_qty(self) -> float:
        """Signed base quantity of this instrument's orders not yet filled: in flight (sent, not
        yet at the venue) or working there."""
        orders = {o.client_order_id: o for o in self.cache.orders_inflight(instrument_id=self.instrument_id)}
        orders.update({o.client_order_id: o for o in self.cache.orders_open(instrument_id=self.instrument_id)})
        return sum(o.leaves_qty.as_double() * (1 if o.side == OrderSide.BUY else -1) for o in orders.values())

    # ---- inputs ------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> None:
        self.fast.handle_bar(bar)
        self.slow.handle_bar(bar)
        self.inputs += 1
        # A bar that closed in the warm-up (before the month's first tick) only warms the EMAs.
        if self.trading(bar.ts_event):
            self.decide(bar.close.as_double())

    def on_warmup_tick(self, tick: QuoteTick, mid: float) -> None:
        if not self.bar_s:
            self.fast.handle_quote_tick(tick)
            self.slow.handle_quote_tick(tick)
            self.inputs += 1

    def on_signal_tick(self, tick: QuoteTick, mid: float) -> None:
        if self.bar_s:
            return  # decisions come with the bars
        self.fast.handle_quote_tick(tick)
        self.slow.handle_quote_tick(tick)
        self.inputs += 1
        self.decide(mid)

    # ---- decision ----------------------------------------------------------------------
    def decide(self, mid: float) -> None:
        """Move to the side the EMAs give, sized at ``mid`` (quote currency)."""
        if not self.slow.initialized or self.inputs < self.config.warmup_inputs:
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
                time_in_force=self.market_tif,
            )
            if not self.submit_guarded(order, mid) and position != 0:
                # The account cannot carry the new position: at least leave the old one, whose
                # signal has just reversed.
                self.submit_guarded(self.order_factory.market(
                    self.instrument_id, OrderSide.SELL if position > 0 else OrderSide.BUY,
                    self.instrument.make_qty(abs(position)), time_in_force=self.market_tif, reduce_only=True,
                ), mid)
