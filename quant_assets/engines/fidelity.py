"""Data fidelity: what a slice's market data holds, and which strategies can run on it.

``quotes+trades``  L1 quotes and trades (Binance bookTicker + trades, Tardis quotes + trades,
                   synthetic); ``quotes-only`` (FX quote files); ``trades-only`` (Binance spot
                   trades/aggTrades, Tardis trades: the most common free crypto data).
``depth-L2`` / ``depth-L3``  the slice also has a ``book`` partition (market-by-price or
                   market-by-order deltas, :mod:`quant_assets.book`): what an engine reads for a
                   strategy that uses depth (the market maker's queue position, NautilusTrader's
                   book matching for a strategy that declares depth).

On trades-only data the NautilusTrader strategies run on a quote **made from each trade**: the
mid is the trade price and the touch is ±:data:`TRADES_ONLY_HALF_SPREAD_BPS` around it (at least
one tick), rounded outwards to the tick grid. It is a declared assumption, not an observation,
and every result built on it says so. A strategy whose logic needs a real book (the market
maker: queue position, the touch's size) is **not applicable** there: it does not run, and the
slice says why.
"""

from __future__ import annotations

QUOTES_AND_TRADES = "quotes+trades"
QUOTES_ONLY = "quotes-only"
TRADES_ONLY = "trades-only"
EMPTY = "empty"
DEPTH_L2 = "depth-L2"
DEPTH_L3 = "depth-L3"
DEPTH = (DEPTH_L2, DEPTH_L3)
#: The label of an hftbacktest result built on L1 quotes alone: queue positions are not
#: observed, so the conservative queue model runs and the result says so.
L1_APPROXIMATE = "L1-approximate"

#: Half-spread (bps of the trade price) of the quotes made from trades on trades-only data.
#: Binance's BTCUSDT spot book is usually one tick wide (far under 1 bp); 1 bp per side is a
#: cautious default for less liquid pairs and is charged on every taker fill.
TRADES_ONLY_HALF_SPREAD_BPS = 1.0


def fidelity_of(quotes: int, trades: int) -> str:
    """The fidelity of a slice with ``quotes`` L1 quotes and ``trades`` trades."""
    if quotes >= 2:
        return QUOTES_AND_TRADES if trades else QUOTES_ONLY
    if trades >= 2:
        return TRADES_ONLY
    return EMPTY


def assumption(fidelity: str) -> str | None:
    """What a result on ``fidelity`` assumes beyond the data, for its manifest and metrics."""
    if fidelity == TRADES_ONLY:
        return f"quotes made from trades: mid = trade price, touch = mid +/- {TRADES_ONLY_HALF_SPREAD_BPS:g} bp (at least one tick); no observed spread or depth"
    return None


#: Fidelities each engine's strategies need; a strategy on another fidelity is not applicable.
NEEDS: dict[str, frozenset[str]] = {
    "nautilus": frozenset({QUOTES_AND_TRADES, QUOTES_ONLY, TRADES_ONLY}),
    "hftbacktest": frozenset({QUOTES_AND_TRADES, QUOTES_ONLY}),
}


def not_applicable(engine: str, fidelity: str, depth: str = "none") -> str | None:
    """Why a strategy on ``engine`` (using depth ``depth``: ``none``, ``optional`` or
    ``required``, :attr:`~quant_assets.strategies.spec.StrategySpec.depth`) cannot run on a
    slice of ``fidelity`` (its L1 fidelity, or ``depth-L2``/``depth-L3`` when it has a book;
    None: it can)."""
    if fidelity in DEPTH:
        return None
    if depth == "required":
        return f"not applicable on {fidelity} data: the strategy needs order-book depth (a book partition)"
    if fidelity in NEEDS.get(engine, frozenset()):
        return None
    if fidelity == TRADES_ONLY:
        return "not applicable on trades-only data: the market maker needs an observed book (quotes with sizes) for its queue position and fills"
    if fidelity == EMPTY:
        return None  # not a fidelity question: the backtest fails and names the partition
    return f"not applicable on {fidelity} data"
