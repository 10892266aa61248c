"""The spot–perpetual basis strategy: its spec (plain data, no engine import) and its signal.

Signal, the **annualised carry** of a short-perpetual / long-spot pair, in percent per year:

    basis      = perp_mid / spot_mid - 1                      (fraction)
    carry_apr  = 100 * (basis * 8760 / horizon_h              (the premium, if it converges
                                                               within horizon_h hours)
                        + rate * 8760 / interval_h)           (the funding the short receives
                                                               at the last settled rate)

``rate`` is the last funding rate settled at or before the decision (fraction per interval,
positive: longs pay shorts), ``interval_h`` its interval in hours (the row's own, else the gap
to the previous funding time, else the declared ``funding_interval_h``). The last settled rate is
the expected funding: the data holds no predicted rate, and no later row is ever read. Before the
month's first funding time no rate is known and the strategy does not enter.

Trading: flat → short perp / long spot when ``carry_apr >= entry_apr``; flat → long perp /
short spot when ``carry_apr <= -entry_apr`` (if ``allow_reverse``); unwound when the carry
converges: ``carry_apr <= exit_apr`` (resp. ``>= -exit_apr``). Both legs trade the same base
quantity (``notional`` / spot mid, rounded down to the coarser lot): delta-neutral. Market
orders (taker), both legs at the same quote. The implementation is
:class:`quant_assets.strategies.basis_nautilus.Basis`, run by :mod:`quant_assets.engines.multi`.
"""

from __future__ import annotations

from quant_assets.strategies.registry import EQUITY_INTERVAL
from quant_assets.strategies.spec import Param, StrategySpec

HOURS_PER_YEAR = 8760.0


def carry_apr(perp_mid: float, spot_mid: float, rate: float, interval_h: float, horizon_h: float) -> float:
    """Annualised carry of short perp / long spot, percent per year (see the module docstring)."""
    basis = perp_mid / spot_mid - 1.0
    return 100.0 * (basis * HOURS_PER_YEAR / horizon_h + rate * HOURS_PER_YEAR / interval_h)


def target_side(state: int, carry: float, entry_apr: float, exit_apr: float, allow_reverse: bool) -> int:
    """The pair's side after seeing ``carry`` (percent per year) from ``state``: +1 short perp /
    long spot, -1 long perp / short spot, 0 flat."""
    if state == 0:
        if carry >= entry_apr:
            return 1
        if allow_reverse and carry <= -entry_apr:
            return -1
        return 0
    if state == 1 and carry <= exit_apr:
        return 0
    if state == -1 and carry >= -exit_apr:
        return 0
    return state


BASIS = StrategySpec(
    name="basis",
    engine="nautilus",
    impl="quant_assets.strategies.basis_nautilus:Basis",
    description=(
        "Spot–perpetual basis (cash-and-carry) on a universe of one spot and one perpetual instrument in one "
        "cross-margined account: short the perpetual and buy the same base quantity of spot when the annualised "
        "basis plus the last settled funding rate (annualised) passes entry_apr; the reverse when it is below "
        "-entry_apr; unwound when it converges past exit_apr. Funding is its main PnL line; its metric set splits "
        "PnL into basis convergence, funding and fees (quant_assets.analytics.basis_pnl)."
    ),
    # Defaults of a carry trade on a major: a round trip costs ~30 bps in taker fees (both legs,
    # in and out), which a basis of a few bps never pays back in a day, so the premium is
    # annualised over a month (horizon_h 720) and funding dominates the signal; entered when the
    # carry passes 20 %/yr and held until it turns negative, not on every wiggle.
    version="2",
    params=(
        Param("entry_apr", float, 20.0, "annualised carry at which the pair is opened", "% per year", 0.0, 10_000.0,
              fewer_trades=1),
        Param("exit_apr", float, 0.0, "annualised carry below which (above minus which, reverse side) the pair is unwound",
              "% per year", -10_000.0, 10_000.0, fewer_trades=-1),
        Param("horizon_h", float, 720.0, "hours over which the premium is expected to converge (annualises the basis)",
              "h", 1.0, 8760.0),
        Param("funding_interval_h", float, 8.0, "funding interval used when the funding rows do not state theirs",
              "h", 1.0, 24.0, tunable=False),
        Param("notional", float, 10_000.0, "spot notional of each leg at entry", "quote currency", 1.0, 1e9),
        Param("allow_reverse", bool, True, "also trade long perp / short spot on a negative carry"),
        EQUITY_INTERVAL,
    ),
    constraints=((lambda v: v["exit_apr"] < v["entry_apr"], "exit_apr must be below entry_apr"),),
)
