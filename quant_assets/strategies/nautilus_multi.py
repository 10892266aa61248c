"""What every multi-instrument NautilusTrader strategy of ours shares (the several-instrument
counterpart of :mod:`quant_assets.strategies.nautilus_base`): fills recorded per instrument,
mids of every member sampled on one timer, one account guard over all legs, and flattening of
every leg once the first member's data ends. Imports nautilus_trader: load it lazily.

Units: prices and cash in the quote currency the members share, positions in base units of
each instrument, times int64 ns (the engine's ``ts_init`` clock).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

from quant_assets.engines.account import REASON_FLATTEN, REASON_LIQUIDATION, AccountRules
from quant_assets.strategies.nautilus_base import append_fill


class MultiStrategyConfig(StrategyConfig, frozen=True):
    """``instrument_ids``: the members, in the universe's order; ``params``: the spec's resolved
    values; ``flatten_at_ns``: ts_init (ns) at which every leg is closed (the earliest of the
    members' last quotes: a hedge is unwound while both legs still quote); ``trade_from_ns``:
    the first tick of the month (ns); ``equity_interval_ns``: sampling period; ``starting_cash``
    (quote currency), ``max_leverage`` and ``maintenance_margin`` (fraction of notional): the one
    cross-margined account's rules. ``funding``: per instrument id, the month's funding events as
    ``[ts ns, rate per interval, interval_h or None]`` rows; a strategy may read only rows with
    ``ts`` at or before its clock (the engine cannot enforce that: the strategy's code does)."""

    instrument_ids: list[InstrumentId]
    params: dict
    flatten_at_ns: int
    equity_interval_ns: int
    starting_cash: float = 100_000.0
    max_leverage: float = 1.0
    maintenance_margin: float = 0.0
    trade_from_ns: int = 0
    funding: dict = {}


class MultiRecordedStrategy(Strategy):
    """Base class: subclasses implement :meth:`on_signal_quote` (called for each quote of any
    member while the account trades) and send orders through :meth:`submit_guarded`.

    The guard keeps one cash balance and a position per instrument from the fills it records,
    marks every leg at its last mid, and liquidates all legs (closing at the touch, then halting)
    when the account's equity reaches the maintenance margin of its gross exposure or the ruin
    floor. After the flatten or a liquidation any leg still open is closed again at each quote
    of it, so a run ends flat on every member."""

    def __init__(self, config: MultiStrategyConfig) -> None:
        super().__init__(config)
        self.params = dict(config.params)
        self.ids = list(config.instrument_ids)
        self.instruments: dict[str, object] = {}
        self.rules = AccountRules(config.starting_cash, config.max_leverage, config.maintenance_margin)
        self.cash = float(config.starting_cash)
        self.pos: dict[str, float] = {i.value: 0.0 for i in self.ids}
        self.mids: dict[str, float] = {}
        self.flattened = False
        self.halted = False
        self.fill_rows: dict[str, list] = {k: [] for k in ("instrument", "ts", "side", "qty", "price", "fee", "liquidity",
                                                           "order_id", "reason")}
        self.order_reasons: dict[str, str] = {}
        self.account_events: list[dict] = []
        self.orders_refused = 0
        self.sample_rows: dict[str, list] = {"instrument": [], "ts": [], "mid": []}
        self._timer_started = False
        self._closing: dict[str, object] = {}  # instrument id -> client id of its close in flight

    # ---- lifecycle -----------------------------------------------------------------
    def on_start(self) -> None:
        for iid in self.ids:
            self.instruments[iid.value] = self.cache.instrument(iid)
            self.subscribe_quote_ticks(iid)

    @property
    def stopped(self) -> bool:
        return self.flattened or self.halted

    def equity(self) -> float:
        """Cash plus every leg marked at its last mid (quote currency)."""
        return self.cash + sum(p * self.mids.get(i, 0.0) for i, p in self.pos.items() if p)

    def gross(self) -> float:
        """Gross exposure: sum of |position| x mid over the legs (quote currency)."""
        return sum(abs(p) * self.mids.get(i, 0.0) for i, p in self.pos.items() if p)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        iid = tick.instrument_id.value
        mid = (tick.bid_price.as_double() + tick.ask_price.as_double()) / 2.0
        first = iid not in self.mids
        self.mids[iid] = mid
        if first and self._timer_started:
            # A member whose first quote comes after the timer started: sampled at once, so its
            # curve (and its funding's run span) starts at its first quote, not a period later.
            self._sample_one(iid, tick.ts_init)
        if not self._timer_started and tick.ts_init >= self.config.trade_from_ns:
            self._timer_started = True
            self._sample(tick.ts_init)
            self.clock.set_timer("equity", timedelta(microseconds=self.config.equity_interval_ns / 1_000),
                                 callback=lambda e: self._sample(e.ts_event))
        if self.stopped:
            self._close_open_legs()
            return
        if tick.ts_init >= self.config.flatten_at_ns:
            self.flattened = True
            self._close_open_legs()
            return
        equity = self.equity()
        if equity <= self.rules.ruin_floor or (self.gross() and equity <= self.rules.maintenance_margin * self.gross()):
            self.halted = True
            self.account_events.append({
                "ts": int(tick.ts_init), "kind": REASON_LIQUIDATION, "equity": float(equity), "position": float("nan"),
                "mark": float("nan"),
                "detail": f"account equity {equity:.2f} at or below maintenance {self.rules.maintenance_margin:g} x gross "
                          f"{self.gross():.2f} or the ruin floor {self.rules.ruin_floor:g}",
            })
            self._close_open_legs()
            return
        self.on_signal_quote(tick, iid, mid)

    def on_signal_quote(self, tick: QuoteTick, iid: str, mid: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, ts: int) -> None:
        for iid in self.pos:
            if iid in self.mids:
                self._sample_one(iid, ts)

    def _sample_one(self, iid: str, ts: int) -> None:
        self.sample_rows["instrument"].append(iid)
        self.sample_rows["ts"].append(int(ts))
        self.sample_rows["mid"].append(self.mids[iid])

    def _close_open_legs(self) -> None:
        reason = REASON_LIQUIDATION if self.halted else REASON_FLATTEN
        for iid, p in self.pos.items():
            inst = self.instruments[iid]
            if abs(p) < inst.size_increment.as_double() / 2:
                continue
            cid = self._closing.get(iid)
            if cid is not None:
                order = self.cache.order(cid)
                if order is not None and not order.is_closed:
                    continue
            self.cancel_all_orders(inst.id)
            order = self.order_factory.market(inst.id, OrderSide.SELL if p > 0 else OrderSide.BUY, inst.make_qty(abs(p)),
                                              time_in_force=TimeInForce.GTC, reduce_only=True)
            self.order_reasons[order.client_order_id.value] = reason
            self._closing[iid] = order.client_order_id
            self.submit_order(order)

    # ---- orders ----------------------------------------------------------------------
    def submit_guarded(self, order, price: float, reason: str | None = None) -> bool:
        """Submit ``order`` unless the account would carry more gross exposure than
        ``max_leverage x equity`` after it (at ``price``, quote currency); reducing orders
        always go out. Refused orders are counted."""
        iid = order.instrument_id.value
        if self.stopped and not order.is_reduce_only:
            self.orders_refused += 1
            return False
        signed = order.quantity.as_double() * (1 if order.side == OrderSide.BUY else -1)
        pos = self.pos[iid]
        after = pos + signed
        if not (abs(after) <= abs(pos) and after * pos >= 0):
            gross_after = self.gross() - abs(pos) * self.mids.get(iid, price) + abs(after) * price
            if gross_after > self.rules.capacity(self.equity()) * (1 + 1e-9):
                self.orders_refused += 1
                return False
        if reason:
            self.order_reasons[order.client_order_id.value] = reason
        self.submit_order(order)
        return True

    def in_flight(self) -> bool:
        """Any order of any member not yet filled or cancelled."""
        return any(self.cache.orders_inflight(instrument_id=i) or self.cache.orders_open(instrument_id=i) for i in self.ids)

    def on_order_filled(self, event: OrderFilled) -> None:
        iid = event.instrument_id.value
        inst = self.instruments[iid]
        price = event.last_px.as_double()
        fee = event.commission.as_double()
        if event.commission.currency != inst.quote_currency:
            fee *= price  # charged in the base currency: value it in quote currency
        side = 1 if event.order_side == OrderSide.BUY else -1
        qty = event.last_qty.as_double()
        self.cash -= side * qty * price + fee
        self.pos[iid] += side * qty
        self.fill_rows["instrument"].append(iid)
        append_fill(self.fill_rows, event, side, qty, price, fee, self.order_reasons)

    def release_records(self) -> None:
        self.fill_rows = {k: [] for k in self.fill_rows}
        self.sample_rows = {k: [] for k in self.sample_rows}
        self.account_events = []

    # ---- helpers -------------------------------------------------------------------
    def common_qty(self, notional: float, price: float, iids: list[str]) -> Decimal:
        """One base quantity for every leg in ``iids``: ``notional`` / ``price`` rounded down to
        the coarsest lot of the legs (at least one lot), so every leg can trade it exactly."""
        lots = [Decimal(str(self.instruments[i].size_increment.as_double())) for i in iids]
        step = max(lots)
        if any(step % lot for lot in lots):
            raise ValueError(f"lots {', '.join(map(str, lots))}: the coarsest is not a multiple of the others")
        n = max(1, int(Decimal(str(notional)) / Decimal(str(price)) / step))
        return n * step
