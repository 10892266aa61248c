"""The PnL split of a basis (spot–perpetual) backtest: basis convergence, funding, fees.

From the stored tables of a multi-instrument run (:mod:`quant_assets.engines.multi`; every
amount in the quote currency the legs share):

* ``basis_pnl``: the trading PnL of the legs, gross of fees: the sum of ``realized_pnl`` over
  every fill of both legs (average-cost, :func:`quant_assets.engines.result.annotate_fills`).
  Both legs hold the same base quantity ``q`` with opposite signs, so over a round trip this is
  ``q x`` (basis at entry - basis at exit) for the short-perp side, with basis = perp price -
  spot price **at the fill prices**: the convergence of the basis, the spreads crossed included.
  Legs of unequal quantity (a lot mismatch, a partial fill) leave a directional part in it:
  ``unhedged_qty_max`` reports the largest net base position the pair carried (0: fully hedged).
* ``funding_pnl``: the funding the perpetual leg received (negative: paid), the ``funding``
  cash flows.
* ``fees``: minus the commissions of both legs (negative: paid; a maker rebate is positive).
* ``other``: any other cash flow (the ``insurance`` of a liquidation that left the account
  below zero); 0.0 on an ordinary run.

Invariant: ``basis_pnl + funding_pnl + fees + other == total_pnl``, where ``total_pnl`` is the
account's last equity minus its starting cash (the runs end flat); :func:`pnl_split` checks it
to 1e-6 of the quote currency and raises otherwise.
"""

from __future__ import annotations

import polars as pl

#: Largest |split sum - total| (quote currency) accepted: float sums of a month's fills.
TOLERANCE = 1e-6


def pnl_split(fills: pl.DataFrame, cashflows: pl.DataFrame, equity: pl.DataFrame, starting_cash: float,
              account: str = "ACCOUNT") -> dict[str, float | int]:
    """The split of one multi-instrument run. ``fills``, ``cashflows``, ``equity``: the stacked
    tables with an ``instrument`` column (:class:`~quant_assets.engines.multi.MultiResult`);
    ``account``: the ``instrument`` value of the account's equity rows."""
    basis = float(fills["realized_pnl"].sum()) if len(fills) else 0.0
    fees = -float(fills["fee"].sum()) if len(fills) else 0.0
    funding = float(cashflows.filter(pl.col("kind") == "funding")["amount"].sum()) if len(cashflows) else 0.0
    other = float(cashflows.filter(pl.col("kind") != "funding")["amount"].sum()) if len(cashflows) else 0.0
    acct = equity.filter(pl.col("instrument") == account).sort("ts")
    if not len(acct):
        raise ValueError(f"no account equity rows (instrument = {account!r}): not a multi-instrument result")
    total = float(acct["equity"][-1]) - starting_cash
    parts = basis + funding + fees + other
    if abs(parts - total) > TOLERANCE:
        raise ValueError(f"PnL split {parts:.6f} (basis {basis:.6f} + funding {funding:.6f} + fees {fees:.6f} + other "
                         f"{other:.6f}) differs from the account's PnL {total:.6f}")
    net = (fills.sort("ts", maintain_order=True)
           .with_columns(signed=pl.col("side").cast(pl.Float64) * pl.col("qty"))
           .select("ts", net=pl.col("signed").cum_sum())
           .unique("ts", keep="last", maintain_order=True)) if len(fills) else None
    return {
        "total_pnl": total,
        "basis_pnl": basis,
        "funding_pnl": funding,
        "fees": fees,
        "other": other,
        "funding_share": funding / total if total else None,
        "unhedged_qty_max": float(net["net"].abs().max()) if net is not None else 0.0,
        "round_trips": int(fills.filter(pl.col("reason") == "entry")["order_id"].n_unique() // 2) if len(fills) else 0,
    }
