"""A strategy for the flatten regression test (imports nautilus_trader: load it by import path,
as the engine does)."""

from __future__ import annotations

from nautilus_trader.model.enums import OrderSide

from quant_assets.strategies.mean_reversion import MeanReversion


class EntryRacingTheFlatten(MeanReversion):
    """MeanReversion whose entry reaches the venue after the flatten's cancel and close: a
    market buy submitted straight after the flatten, past every guard, so it fills after it."""

    def flatten(self) -> None:
        super().flatten()
        order = self.order_factory.market(self.instrument_id, OrderSide.BUY, self.instrument.make_qty(5.0))
        self.order_reasons[order.client_order_id.value] = "entry"
        self.submit_order(order)
