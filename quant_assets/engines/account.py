"""The simulated account both engines trade through: how much exposure it may carry and when
it is liquidated. Engine-agnostic; no engine is imported here.

Rules (all amounts in the instrument's quote currency, positions in base units):

* **Leverage**: an order that would take the gross exposure ``|position| × price`` above
  ``max_leverage × equity`` is refused (and counted). Orders that only reduce the position are
  always allowed. Spot venues carry 1×: no more than the account's own equity.
* **Liquidation**: when equity falls to the maintenance margin
  ``maintenance_margin × |position| × mark`` (or to the ruin floor, whichever is higher) the
  position is closed at the touch and the strategy halts for the rest of the month. The event
  is recorded in the fills (``reason = "liquidation"``) and in the metric set.
* **No negative equity**: should the closing fill still leave equity below zero (the market
  gapped through the maintenance level), the shortfall is absorbed as on a real venue's
  insurance fund and recorded as its own cash flow (``insurance``), so the account ends at 0,
  never below. A run that needs it says so.

The ruin floor (:data:`RUIN_FLOOR_FRACTION` of the starting cash) is what makes a spot account,
whose maintenance margin is 0, stop before fees or losses take it to zero: below it no order
could be paid for.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Equity (fraction of starting cash) below which a strategy halts even with no position.
RUIN_FLOOR_FRACTION = 0.01

#: Reasons recorded on fills that the strategy's own signal did not ask for.
REASON_LIQUIDATION = "liquidation"
REASON_FLATTEN = "flatten-eod"
REASON_PROTECTIVE = "protective-exit"  # a bracket's stop or take-profit was rejected: exit at once
REASON_MAX_HOLD = "max-hold"


@dataclass(frozen=True)
class AccountRules:
    """``max_leverage`` (≥ 1, gross exposure / equity), ``maintenance_margin`` (fraction of
    notional, 0 ≤ m < 1/max_leverage), ``starting_cash`` (quote currency)."""

    starting_cash: float
    max_leverage: float = 1.0
    maintenance_margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_leverage >= 1.0:
            raise ValueError(f"max_leverage {self.max_leverage}: must be at least 1 (1 = no borrowing)")
        if not 0.0 <= self.maintenance_margin < 1.0 / self.max_leverage:
            raise ValueError(
                f"maintenance_margin {self.maintenance_margin}: must be in [0, 1/max_leverage = {1.0 / self.max_leverage:.4g})"
            )
        if not self.starting_cash > 0:
            raise ValueError(f"starting_cash {self.starting_cash}: must be positive")

    @property
    def ruin_floor(self) -> float:
        """Equity (quote currency) at or below which the account halts whatever its position."""
        return RUIN_FLOOR_FRACTION * self.starting_cash

    def capacity(self, equity: float) -> float:
        """Largest gross exposure (quote currency) the account may carry at ``equity``."""
        return max(equity, 0.0) * self.max_leverage

    def allows(self, position: float, delta: float, price: float, equity: float) -> bool:
        """May an order of signed ``delta`` (base units) at ``price`` go out from ``position``?
        Reducing orders always may; others only within :meth:`capacity`."""
        after = position + delta
        if abs(after) <= abs(position) and after * position >= 0:
            return True
        return abs(after) * price <= self.capacity(equity) * (1 + 1e-9)

    def must_liquidate(self, position: float, mark: float, equity: float) -> bool:
        """Equity at or below the maintenance margin of the position, or at the ruin floor."""
        if equity <= self.ruin_floor:
            return True
        return position != 0.0 and equity <= self.maintenance_margin * abs(position) * mark


def max_notional(rules: AccountRules) -> float:
    """The largest position (quote currency) a strategy may ask for at the start of a month."""
    return rules.starting_cash * rules.max_leverage


def rules_for(kind: str, starting_cash: float) -> AccountRules:
    """The built-in account rules of an instrument ``kind`` (``lake.fees.builtin_margin``, the one
    table of defaults; a venue's ``[[margin]]`` rows are applied by ``engines.runner.account_rules``)."""
    from quant_assets.lake.fees import builtin_margin

    row = builtin_margin()[("*", kind)]
    return AccountRules(starting_cash, row.max_leverage, row.maintenance_margin)
