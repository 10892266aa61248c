"""``basis`` on NautilusTrader (several instruments in one engine): see
:mod:`quant_assets.strategies.basis` for the spec and the signal."""

from __future__ import annotations

import bisect

from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.instruments import CryptoPerpetual

from quant_assets.strategies.basis import carry_apr, target_side
from quant_assets.strategies.nautilus_multi import MultiRecordedStrategy, MultiStrategyConfig


class Basis(MultiRecordedStrategy):
    """One spot member and one perpetual member; decides on every quote of either once both
    have a mid and a funding rate is known, never while an order of the pair is in flight."""

    def __init__(self, config: MultiStrategyConfig) -> None:
        super().__init__(config)
        self.side = 0
        self.spot = self.perp = None
        self.fund_ts: list[int] = []
        self.fund_rows: list[list] = []
        self.decisions_without_rate = 0

    def on_start(self) -> None:
        super().on_start()
        perps = [i for i, inst in self.instruments.items() if isinstance(inst, CryptoPerpetual)]
        spots = [i for i in self.instruments if i not in perps]
        if len(perps) != 1 or len(spots) != 1:
            raise ValueError(f"basis needs one spot and one perpetual member, got {sorted(self.instruments)}")
        self.perp, self.spot = perps[0], spots[0]
        self.fund_rows = sorted(self.config.funding.get(self.perp, []))
        self.fund_ts = [int(r[0]) for r in self.fund_rows]

    def expected_funding(self, now: int) -> tuple[float, float] | None:
        """(rate per interval, interval_h) of the last funding settled at or before ``now``."""
        k = bisect.bisect_right(self.fund_ts, now) - 1
        if k < 0:
            return None
        ts, rate, interval = self.fund_rows[k]
        if interval is None:
            interval = (ts - self.fund_ts[k - 1]) / 3.6e12 if k > 0 else self.params["funding_interval_h"]
        return float(rate), float(interval)

    def on_signal_quote(self, tick: QuoteTick, iid: str, mid: float) -> None:
        if self.spot not in self.mids or self.perp not in self.mids or self.in_flight():
            return
        funding = self.expected_funding(tick.ts_init)
        if funding is None:
            self.decisions_without_rate += 1
            return
        p = self.params
        carry = carry_apr(self.mids[self.perp], self.mids[self.spot], funding[0], funding[1], p["horizon_h"])
        want = target_side(self.side, carry, p["entry_apr"], p["exit_apr"], p["allow_reverse"])
        if want == self.side:
            return
        spot_mid = self.mids[self.spot]
        if want == 0:
            sent = self._trade(-self.pos[self.spot], -self.pos[self.perp], reduce=True)
        else:
            qty = float(self.common_qty(p["notional"], spot_mid, [self.spot, self.perp]))
            # +1: long spot, short perp; -1: the reverse. Equal base quantity on both legs.
            sent = self._trade(want * qty, -want * qty, reduce=False)
        if sent:
            self.side = want

    def _trade(self, spot_delta: float, perp_delta: float, reduce: bool) -> bool:
        """Send both legs, or neither: a pair must not be left half open, so an entry the
        account cannot carry (gross exposure of both legs over max_leverage x equity) is refused
        whole and counted."""
        legs = [(iid, d) for iid, d in ((self.spot, spot_delta), (self.perp, perp_delta)) if abs(d) > 0]
        if not reduce:
            gross = self.gross() + sum(abs(d) * self.mids[iid] for iid, d in legs)
            if gross > self.rules.capacity(self.equity()) * (1 + 1e-9):
                self.orders_refused += len(legs)
                return False
        for iid, delta in legs:
            inst = self.instruments[iid]
            order = self.order_factory.market(inst.id, OrderSide.BUY if delta > 0 else OrderSide.SELL,
                                              inst.make_qty(abs(delta)), time_in_force=TimeInForce.GTC, reduce_only=reduce)
            self.submit_guarded(order, self.mids[iid], reason="exit" if reduce else "entry")
        return True
