"""Returns and drawdowns on the capital actually at risk, beside the account-level figures.

The account-level metrics divide PnL by the whole account's equity, so a strategy that holds a
10,000 position on 100,000 of cash and loses 1,000 reports -1%: ten times less risk than it
took. These figures divide by the capital it deployed instead.

Definitions (quote currency; the equity curve's grid as in :mod:`~quant_assets.analytics.returns`):

* **Deployed capital** of a grid period ``(t-1, t]``: the largest gross notional the strategy
  held during it: ``|position| × mid`` at its start (the grid sample that closes ``t-1``), and
  ``|position after the fill| × fill price`` at each fill inside it (so a round trip within
  one period still counts). Gross notional, not margin: the loss of a position follows its
  notional whatever margin the venue asks for; a return on margin would multiply the same loss
  by the leverage the venue allows, a setting of the simulated market, not of the strategy.
* ``deployed_peak``: the largest deployed capital of the month, the capital the strategy
  needed to trade as it did; ``deployed_avg``: its mean over the periods in the market.
* ``return_on_deployed``: the month's PnL (equity change, net of fees, funding included) over
  ``deployed_peak``. A 10,000 position losing 1,000 gives -10% whatever cash sits beside it.
* ``max_drawdown_on_deployed``: the largest fall of the month's cumulative PnL from its running
  peak (the start counts as a peak) over ``deployed_peak``.

Why over the peak and not compounded per-period returns: our strategies trade fixed notionals,
so a loss does not shrink the next position; compounding per-period returns on a strategy that
loses many times its notional (a market maker paying fees on a small inventory) saturates at
-100% and hides how much it lost. Over the peak, -5.8 means it lost 5.8 times the largest
capital it ever had at risk. All are null with a reason when the strategy was never in the
market. Limits: the notional is read at grid samples and fills, so a peak of the price between
them is missed; a long and a short of the same notional are the same capital at risk.

No library computes this: quantstats and vectorbt take returns on an account value (vectorbt's
exposure is a share of that value), so the per-period notionals are built here with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.analytics.periods import MetricSet
from quant_assets.analytics.returns import _on_grid

#: The stored figures, in order (see the module docstring for units).
DEPLOYED_METRICS = ("deployed_avg", "deployed_peak", "return_on_deployed", "max_drawdown_on_deployed")


@dataclass(frozen=True)
class DeployedCapital:
    """One slice (or months chained) on deployed capital: ``deployed`` per grid period in the
    market and ``pnl``, the cumulative equity change from the start at each grid point (from 0),
    both quote currency; ``reason`` says why nothing was deployed."""

    deployed: np.ndarray
    pnl: np.ndarray
    reason: str | None = None


def deployed_capital(equity: pl.DataFrame, fills: pl.DataFrame, interval_s: float,
                     starting_equity: float | None = None) -> DeployedCapital:
    """The deployed capital and PnL path of one slice (see the module docstring). ``equity``
    and ``fills`` are the stored tables of :mod:`quant_assets.engines.result`; PnL is measured
    from ``starting_equity`` (the starting cash; default: the first sample's equity)."""
    if len(equity) < 2:
        return DeployedCapital(np.zeros(0), np.zeros(0), "empty equity curve" if not len(equity) else "one equity sample: no period")
    grid = _on_grid(equity.select("ts", "equity", "position", "mid"), interval_s)
    ts = grid["ts"].to_numpy()
    eq = grid["equity"].to_numpy().astype(np.float64)
    deployed = np.abs(grid["position"].to_numpy() * grid["mid"].to_numpy())[:-1]
    if len(fills):
        f_ts = fills["ts"].to_numpy()
        # Period k (1-based) is (ts[k-1], ts[k]]: a fill at a sample's ns is done by that sample.
        k = np.searchsorted(ts, f_ts, side="left")
        inside = (k >= 1) & (k < len(ts))
        notional = np.abs(fills["position"].to_numpy() * fills["price"].to_numpy())
        np.maximum.at(deployed, k[inside] - 1, notional[inside])
    pnl = eq - (eq[0] if starting_equity is None else starting_equity)
    in_market = deployed > 0
    if not in_market.any():
        return DeployedCapital(np.zeros(0), pnl, "never in the market this month: no capital was deployed")
    return DeployedCapital(deployed[in_market], pnl)


def deployed_metrics(dc: DeployedCapital) -> MetricSet:
    """The :data:`DEPLOYED_METRICS` of ``dc`` (null with its reason when nothing was deployed)."""
    m = MetricSet()
    if dc.reason is not None or len(dc.deployed) == 0:
        m.undefined(DEPLOYED_METRICS, dc.reason or "no period in the market")
        return m
    peak = float(dc.deployed.max())
    high = np.maximum.accumulate(np.maximum(dc.pnl, 0.0))  # the start (PnL 0) is the first peak
    m.put("deployed_avg", float(dc.deployed.mean()))
    m.put("deployed_peak", peak)
    m.put("return_on_deployed", float(dc.pnl[-1]) / peak)
    m.put("max_drawdown_on_deployed", min(float((dc.pnl - high).min()), 0.0) / peak)
    return m


def stitch_deployed(months: list[DeployedCapital]) -> DeployedCapital:
    """Months as one path: each month is an independent run from the same cash trading fixed
    notionals, so their PnL paths add up end to end (a month's loss does not shrink the next
    month's positions); the deployed capital of every period in the market of any month."""
    paths, offset = [], 0.0
    for mo in months:
        if len(mo.pnl):
            paths.append(mo.pnl + offset)
            offset += float(mo.pnl[-1])
    used = [mo.deployed for mo in months if mo.reason is None and len(mo.deployed)]
    pnl = np.concatenate(paths) if paths else np.zeros(0)
    if not used:
        return DeployedCapital(np.zeros(0), pnl, "never in the market in any month: no capital was deployed")
    return DeployedCapital(np.concatenate(used), pnl)
