"""The NautilusTrader fill model of a venue profile: probabilistic limit fills and slippage, and
gapped stops filled at the next touch instead of at their trigger.

Why our own class: on an L1 book NautilusTrader 1.221 fills a triggered stop-market order at
its *trigger price*, whatever the market did. ``OrderMatchingEngine.determine_market_price_and_volume``
(backtest/engine.pyx, around line 5070) takes the fills from the book, then overrides their price
with ``order.get_triggered_price_c()``, which the matching core set to the trigger price when the
stop triggered. A stop at 99.39 that the bid gapped through from 99.80 to 99.30 is therefore
filled at 99.39: better than any price the market offered, flattering every stop-loss by the
gap. The engine asks the fill model first, though: when ``get_orderbook_for_fill_simulation``
returns a book, that book's ``simulate_fills`` gives the fills and the override is skipped. So
with ``stop_fill = "next_touch"`` this model returns, for a triggered order with no limit price
(stop-market, market-if-touched, trailing-stop-market), a book holding the current best bid and
ask (the touch of the quote or trade that triggered it, at the engine's own L1 sizes): the stop
fills where a market order sent at that moment would. Every other order gets None, i.e.
NautilusTrader's standard logic, so ordinary limit and market fills are unchanged.

Slippage: NautilusTrader draws ``is_slipped()`` for *every* fill on an L1 book, a resting limit's
maker fill included, which would fill a limit one tick beyond its own price. The profile's
``prob_slippage`` is "the chance a market order fills one tick worse", so this model slips only
fills of orders without a limit price (the engine asks for the simulated book just before
applying each order's fills, which is where the order is known).

Randomness: NautilusTrader's ``FillModel`` draws from Python's global ``random`` module, seeded
in its constructor. The adapter builds a new model per run with ``random_seed = fill_seed``, so
a run's draws depend only on the profile and the data.

Imports nautilus_trader at module load: the adapter imports this module inside its functions.
"""

from __future__ import annotations

from typing import Any

from nautilus_trader.backtest.config import SimulationModuleConfig
from nautilus_trader.backtest.models import FillModel
from nautilus_trader.backtest.modules import SimulationModule
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import BookOrder
from nautilus_trader.model.enums import BookType, LiquiditySide, OrderSide
from nautilus_trader.model.objects import Quantity


class VenueFillModel(FillModel):
    """``FillModel(prob_fill_on_limit, 1.0, prob_slippage, fill_seed)`` of a venue profile, with
    gapped stops at the next touch when ``next_touch`` (see the module docstring).
    ``exchange`` (the ``SimulatedExchange``, optional) supplies the L1 sizes at the touch; without
    it the touch is as deep as the order. On a ``depth`` venue (L2_MBP/L3_MBO book) it leaves every
    order to NautilusTrader's standard logic: a triggered stop walks the real book there (the
    trigger-price override applies to L1 books only), and the engine slips no fill on a depth book.
    """

    def __init__(self, prob_fill_on_limit: float, prob_slippage: float, fill_seed: int, next_touch: bool,
                 exchange: Any = None, depth: bool = False) -> None:
        super().__init__(prob_fill_on_limit=prob_fill_on_limit, prob_fill_on_stop=1.0, prob_slippage=prob_slippage,
                         random_seed=int(fill_seed))
        self.next_touch = bool(next_touch)
        self.exchange = exchange
        self.stops_at_touch = 0  # triggered orders given the touch instead of their trigger price
        self.depth = bool(depth)
        self._slippable = False  # the order whose fills are being applied has no limit price

    def get_orderbook_for_fill_simulation(self, instrument, order, best_bid, best_ask) -> OrderBook | None:
        self._slippable = not order.has_price
        if self.depth or not (self.next_touch and self._slippable and order.has_trigger_price
                and order.liquidity_side == LiquiditySide.TAKER):
            return None
        leaves = order.leaves_qty.as_double()
        bid_size = ask_size = leaves
        if self.exchange is not None:
            book = self.exchange.get_book(instrument.id)
            if book is not None:
                bid_size = _size(book.best_bid_size(), leaves)
                ask_size = _size(book.best_ask_size(), leaves)
        sim = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
        precision = instrument.size_precision
        sim.add(BookOrder(OrderSide.BUY, best_bid, Quantity(bid_size, precision), 1), 0, 0)
        sim.add(BookOrder(OrderSide.SELL, best_ask, Quantity(ask_size, precision), 2), 0, 0)
        self.stops_at_touch += 1
        return sim

    def is_slipped(self) -> bool:
        # Drawn (from the seeded global random) only for orders without a limit price.
        return self._slippable and FillModel.is_slipped(self)


def _size(size, fallback: float) -> float:
    """The L1 size at a side, or ``fallback`` when the side has none."""
    value = size.as_double() if size is not None else 0.0
    return value if value > 0 else fallback


class ExchangeHandle(SimulationModule):
    """A simulation module that does nothing but receive its ``SimulatedExchange``:
    ``register_venue`` is the one public hook NautilusTrader 1.221 gives to a venue's exchange
    (``BacktestEngine`` keeps its exchanges in a private dict and offers ``change_fill_model``
    but no way to change the latency model). The adapter passes one to ``add_venue`` and keeps
    ``handle.exchange``, whose ``set_latency_model`` and ``get_book`` it then calls."""

    def __init__(self) -> None:
        super().__init__(SimulationModuleConfig())

    def process(self, ts_now: int) -> None:  # called after every data point: nothing to do
        pass

    def reset(self) -> None:
        pass

    def log_diagnostics(self, logger) -> None:
        pass
