"""What every NautilusTrader strategy of ours shares: fill recording, the equity sampling
timer, the account guard (leverage and liquidation, see :mod:`quant_assets.engines.account`)
and flattening at the end of the month. Imports nautilus_trader: load it lazily (the registry
names implementations by import path)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import LiquiditySide, OrderSide, OrderType, TimeInForce
from nautilus_trader.model.events import OrderCanceled, OrderFilled
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

from quant_assets.engines.account import REASON_FLATTEN, REASON_LIQUIDATION, AccountRules


def append_fill(rows: dict[str, list], event: OrderFilled, side: int, qty: float, price: float, fee: float,
                reasons: dict[str, str]) -> None:
    """One fill's row (quote currency, side +1 buy / -1 sell, base units) into ``rows``: shared by
    the single- and multi-instrument recorders, so both stored tables have the same columns."""
    rows["ts"].append(event.ts_event)
    rows["side"].append(side)
    rows["qty"].append(qty)
    rows["price"].append(price)
    rows["fee"].append(fee)
    rows["liquidity"].append("maker" if event.liquidity_side == LiquiditySide.MAKER else "taker")
    rows["order_id"].append(event.client_order_id.value)
    rows["reason"].append(reasons.get(event.client_order_id.value))


class RecordedStrategyConfig(StrategyConfig, frozen=True):
    """``params``: the spec's resolved values; ``flatten_at_ns``: ts_init (ns) of the month's
    last quote, at which every position is closed; ``equity_interval_ns``: sampling period;
    ``starting_cash`` (quote currency), ``max_leverage`` and ``maintenance_margin`` (fraction of
    notional): the account rules of the venue. ``trade_from_ns``: ts_init (ns) of the month's
    first tick; data before it is the previous month's end, fed to warm the indicators (see
    :meth:`RecordedStrategy.on_warmup_tick`), never traded. ``warmup_inputs``: how many signal
    inputs (bars or quote updates, :class:`~quant_assets.strategies.spec.Warmup`) the strategy
    must have seen before it trades (0: as soon as its indicators are defined). ``depth``: the
    venue matches against an order-book depth (L2/L3) book, where market orders are sent
    immediate-or-cancel (see :attr:`RecordedStrategy.market_tif`)."""

    instrument_id: InstrumentId
    params: dict
    flatten_at_ns: int
    equity_interval_ns: int
    starting_cash: float = 100_000.0
    max_leverage: float = 1.0
    maintenance_margin: float = 0.0
    trade_from_ns: int = 0
    warmup_inputs: int = 0
    depth: bool = False


class RecordedStrategy(Strategy):
    """Base class: subclasses implement :meth:`on_signal_tick` (called for each quote before
    the month's last one, while the account is not halted) and send orders through
    :meth:`submit_guarded` so the leverage limit applies; they may use ``self.params``,
    ``self.instrument`` and :meth:`qty_for`.

    The guard keeps its own cash and position from the fills it records (quote currency, base
    units), marks the position at each quote's mid, and liquidates (closes at the touch and
    halts for the rest of the month) when equity reaches the maintenance margin.

    Once stopped (flattened at the month's last quote, or halted by a liquidation) the strategy
    takes no new exposure, and any fill that still leaves a position open (an order whose
    cancel had not gone through, a closing order racing another) is answered at once with a
    reduce-only market close tagged like the stop (REASON_FLATTEN or REASON_LIQUIDATION); each later
    quote checks again, so a run always ends flat."""

    def __init__(self, config: RecordedStrategyConfig) -> None:
        super().__init__(config)
        self.params = dict(config.params)
        self.instrument_id = config.instrument_id
        self.instrument = None
        self.flattened = False
        self.halted = False
        self.rules = AccountRules(config.starting_cash, config.max_leverage, config.maintenance_margin)
        # The per-quote check reads plain floats: a method call per quote costs ~1 s a month.
        self._ruin_floor = self.rules.ruin_floor
        self._maintenance = self.rules.maintenance_margin
        self.cash = float(config.starting_cash)
        self.pos = 0.0
        self.fill_rows: dict[str, list] = {k: [] for k in ("ts", "side", "qty", "price", "fee", "liquidity", "order_id", "reason")}
        self.order_reasons: dict[str, str] = {}
        self.account_events: list[dict] = []
        self.orders_refused = 0
        self.sample_ts: list[int] = []
        self.sample_mid: list[float] = []
        self.last_mid = float("nan")
        self._timer_started = False
        self._stop_close_id = None  # the reduce-only close in flight after the flatten or halt
        # Market orders on a depth book are immediate-or-cancel, as at a real venue: what the
        # visible book cannot fill is cancelled. NautilusTrader 1.221 otherwise leaves the rest of
        # a market order that emptied the book's side open for ever (it never rests, never
        # fills), and a strategy counting its open orders would trade against a phantom. On an
        # L1 book the default (GTC) is kept: there the engine fills the rest one tick beyond.
        self.market_tif = TimeInForce.IOC if config.depth else TimeInForce.GTC
        self.market_rests_cancelled = 0  # market orders whose rest the book could not fill

    # ---- lifecycle -----------------------------------------------------------------
    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.instrument_id)
        self.subscribe_quote_ticks(self.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        mid = (tick.bid_price.as_double() + tick.ask_price.as_double()) / 2.0
        self.last_mid = mid
        if tick.ts_init < self.config.trade_from_ns:
            # The previous month's end: indicators only. No sample, no order, no account check.
            self.on_warmup_tick(tick, mid)
            return
        if not self._timer_started:
            self._timer_started = True
            self.sample_ts.append(tick.ts_init)
            self.sample_mid.append(mid)
            self.clock.set_timer(
                "equity", timedelta(microseconds=self.config.equity_interval_ns / 1_000), callback=self._on_sample,
            )
        if self.flattened or self.halted:
            self._close_after_stop()
            return
        if tick.ts_init >= self.config.flatten_at_ns:
            self.flatten()
            return
        pos = self.pos
        equity = self.cash + pos * mid
        # AccountRules.must_liquidate, inlined (the same rule; tested against it)
        if equity <= self._ruin_floor or (pos != 0.0 and equity <= self._maintenance * abs(pos) * mid):
            self.liquidate(tick.ts_init, mid, equity)
            return
        self.on_signal_tick(tick, mid)

    def on_signal_tick(self, tick: QuoteTick, mid: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_warmup_tick(self, tick: QuoteTick, mid: float) -> None:
        """A quote of the warm-up (before ``trade_from_ns``): update the indicators, never trade.
        Strategies whose signal runs on bars get their warm-up bars in ``on_bar`` and may leave
        this empty."""

    def trading(self, ts: int) -> bool:
        """Whether a signal computed at ``ts`` (ns, the engine's clock) may trade: the month has
        begun (not the warm-up) and the strategy has not stopped."""
        return ts >= self.config.trade_from_ns and not self.stopped

    def flatten(self) -> None:
        """Cancel resting orders and close the position with a market order at the touch."""
        self.flattened = True
        self.cancel_all_orders(self.instrument_id)
        self._stop_close_id = self.close_at_market(REASON_FLATTEN)

    def liquidate(self, ts: int, mid: float, equity: float) -> None:
        """Equity reached the maintenance margin (or the ruin floor): close at the touch and
        halt for the rest of the month; the event is kept for the result."""
        self.halted = True
        self.account_events.append({
            "ts": int(ts), "kind": REASON_LIQUIDATION, "equity": float(equity), "position": float(self.pos),
            "mark": float(mid),
            "detail": f"equity {equity:.2f} at or below maintenance {self.rules.maintenance_margin:g} x |{self.pos:g}| x {mid:g} "
                      f"or the ruin floor {self.rules.ruin_floor:g}",
        })
        self.cancel_all_orders(self.instrument_id)
        self._stop_close_id = self.close_at_market(REASON_LIQUIDATION)

    @property
    def stopped(self) -> bool:
        """Flattened at the month's end or halted by a liquidation: no new exposure."""
        return self.flattened or self.halted

    def _close_after_stop(self) -> None:
        """After the flatten or a liquidation: a position still open (a fill that raced the
        cancels or the close) gets the resting orders cancelled and a reduce-only market close,
        unless such a close is already in flight. Reads the position this strategy recorded
        from its fills (the portfolio may not have applied a fill yet inside its handler)."""
        if abs(self.pos) < self.instrument.size_increment.as_double() / 2:
            return
        if self._stop_close_id is not None:
            order = self.cache.order(self._stop_close_id)
            if order is not None and not order.is_closed:
                return
        self.cancel_all_orders(self.instrument_id)
        self._stop_close_id = self.close_at_market(REASON_FLATTEN if self.flattened else REASON_LIQUIDATION, self.pos)

    def close_at_market(self, reason: str, pos: float | None = None):
        """Close the whole position (``pos``, base units; default: the portfolio's) with a
        reduce-only market order tagged with ``reason``; returns the order's client id (None
        when already flat)."""
        pos = self.position_qty() if pos is None else pos
        if abs(pos) <= 0:
            return None
        order = self.order_factory.market(
            self.instrument_id, OrderSide.SELL if pos > 0 else OrderSide.BUY,
            self.instrument.make_qty(abs(pos)), time_in_force=self.market_tif, reduce_only=True,
        )
        self.order_reasons[order.client_order_id.value] = reason
        self.submit_order(order)
        return order.client_order_id

    def submit_guarded(self, order, price: float, reason: str | None = None) -> bool:
        """Submit ``order`` unless it would take the exposure past the leverage limit at
        ``price`` (quote currency); refused orders are counted. Returns whether it went out."""
        if self.stopped and not order.is_reduce_only:
            self.orders_refused += 1
            return False
        signed = order.quantity.as_double() * (1 if order.side == OrderSide.BUY else -1)
        equity = self.cash + self.pos * (self.last_mid if self.last_mid == self.last_mid else price)
        if not self.rules.allows(self.position_qty(), signed, price, equity):
            self.orders_refused += 1
            return False
        if reason:
            self.order_reasons[order.client_order_id.value] = reason
        self.submit_order(order)
        return True

    # ---- recording -----------------------------------------------------------------
    def _on_sample(self, event) -> None:
        self.sample_ts.append(event.ts_event)
        self.sample_mid.append(self.last_mid)
        # NautilusTrader keeps every closed order and account state in its cache, and some of
        # its per-order work scans them: without purging, a high-turnover month got slower with
        # every fill (a 4M-tick ema_cross month: 2 s per 250k-tick chunk at the start, 8 s at
        # the end). Fills are recorded above, so nothing we report needs the closed orders.
        self.cache.purge_closed_orders(event.ts_event, buffer_secs=0)
        self.cache.purge_account_events(event.ts_event, lookback_secs=0)

    def on_order_filled(self, event: OrderFilled) -> None:
        price = event.last_px.as_double()
        fee = event.commission.as_double()
        if event.commission.currency != self.instrument.quote_currency:
            fee *= price  # charged in the base currency: value it in quote currency
        side = 1 if event.order_side == OrderSide.BUY else -1
        qty = event.last_qty.as_double()
        self.cash -= side * qty * price + fee
        self.pos += side * qty
        append_fill(self.fill_rows, event, side, qty, price, fee, self.order_reasons)
        if self.flattened or self.halted:
            self._close_after_stop()

    def on_order_canceled(self, event: OrderCanceled) -> None:
        order = self.cache.order(event.client_order_id)
        if order is not None and order.order_type == OrderType.MARKET and order.time_in_force == TimeInForce.IOC:
            self.market_rests_cancelled += 1

    def release_records(self) -> None:
        """Forget the recorded fills and samples (after the adapter has copied them)."""
        self.fill_rows = {k: [] for k in self.fill_rows}
        self.sample_ts, self.sample_mid = [], []
        self.account_events = []

    # ---- helpers -------------------------------------------------------------------
    def position_qty(self) -> float:
        """Net position in base units (positive long)."""
        return float(self.portfolio.net_position(self.instrument_id))

    def qty_for(self, notional: float, price: float):
        """Order quantity for a quote-currency notional at ``price``, rounded down to the lot
        (at least one lot)."""
        step = self.instrument.size_increment.as_double()
        lots = max(1, int(notional / price / step))
        return self.instrument.make_qty(Decimal(lots) * Decimal(str(step)))
