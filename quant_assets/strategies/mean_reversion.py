"""``mean_reversion`` on NautilusTrader: see the spec in :mod:`quant_assets.strategies.registry`."""

from __future__ import annotations

import math
from collections import deque
from datetime import timedelta

from nautilus_trader.core.datetime import unix_nanos_to_dt
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, OrderType, TimeInForce

from quant_assets.strategies.nautilus_base import RecordedStrategy, RecordedStrategyConfig


class MeanReversion(RecordedStrategy):
    """While flat with no working order: if z = (mid - mean) / std over the last ``window``
    quotes is below -entry_z, submit a bracket that buys with a limit at the bid (sells with a
    limit at the ask when z > entry_z); its children are a stop-market ``stop_bps`` and a
    take-profit limit ``take_bps`` away from the entry price (one cancels the other). The entry
    expires (GTD) after ``entry_timeout_s``."""

    def __init__(self, config: RecordedStrategyConfig) -> None:
        super().__init__(config)
        self.window: deque[float] = deque(maxlen=self.params["window"])
        # Running sums give the rolling mean/std in O(1) per tick; nautilus' BollingerBands
        # works on the bar "typical price", not on a quote mid, so it does not fit here.
        self.sum = 0.0
        self.sum_sq = 0.0

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

    def on_signal_tick(self, tick: QuoteTick, mid: float) -> None:
        self._push(mid)
        z = self.zscore(mid)
        if z is None or abs(z) < self.params["entry_z"]:
            return
        if self.position_qty() != 0 or self.cache.orders_open_count(instrument_id=self.instrument_id) > 0:
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
        self.submit_order_list(bracket)
