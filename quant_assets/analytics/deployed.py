"""Returns and drawdowns on the capital actually at risk, beside the account-level figures.

The account-level metrics divide PnL by the whole account's equity, so a strategy that holds a
10,000 position on 100,000 of cash and loses 1,000 reports -1%: ten times less risk than it
took. These figures divide by what was deployed instead.

Definitions (quote currency; the equity curve's grid as in :mod:`~quant_assets.analytics.returns`):

* **Deployed capital** of a grid period ``(t-1, t]``: the largest gross notional the strategy
  held during it: ``|position| × mid`` at its start (the grid sample that closes ``t-1``), and
  ``|position after the fill| × fill price`` at each fill inside it (so a round trip within
  one period still counts). Gross notional, not margin: the loss of a position follows its
  notional whatever margin the venue asks for; a return on margin would multiply the same loss
  by the leverage the venue allows, a setting of the simulated market, not of the strategy.
* **Period return on deployed capital**: the equity change over the period (PnL net of fees,
  funding included) over the deployed capital, only over periods in the market (deployed
  capital > 0). Flat periods change no equity (no position, no fee); a cash flow that does
  anyway (an insurance payment after a liquidation) is left out and noted.
* ``return_on_deployed``: those returns compounded. The notional of a position of fixed size
  moves with the price, so compounding is exact for it: a long of ``q`` entered at ``p0`` and
  closed at ``p1`` without fees returns ``p1 / p0 - 1``, whatever cash sits beside it.
* ``max_drawdown_on_deployed``: the compounded curve of those returns against its running peak
  (from 1), as the account's ``max_drawdown`` (:func:`~quant_assets.analytics.periods.drawdown_stats`).
* ``deployed_avg`` / ``deployed_peak``: the mean (over the periods in the market) and the
  largest deployed capital, quote currency.

All are null with a reason when the strategy was never in the market. A period whose loss
exceeds its deployed capital (possible for a short, or a reversal inside the period) ends the
series at -100%, as a wiped-out account ends :func:`~quant_assets.analytics.returns.sample_returns`.

No library computes this: quantstats and vectorbt take returns on an account value (vectorbt's
exposure is a share of that value), so the per-period denominators are built here with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl

from quant_assets.analytics.periods import MetricSet, drawdown_stats
from quant_assets.analytics.returns import _on_grid

#: The stored figures, in order (see the module docstring for units).
DEPLOYED_METRICS = ("deployed_avg", "deployed_peak", "return_on_deployed", "max_drawdown_on_deployed")
#: Equity change (quote currency) outside the market below this is float dust, not a cash flow.
DUST = 1e-6


@dataclass(frozen=True)
class DeployedSeries:
    """Per period in the market: the return on deployed capital (``returns``, indexed by the
    period's end, tz-naive UTC) and the deployed capital (``deployed``, quote currency)."""

    returns: pd.Series
    deployed: np.ndarray
    notes: list[str] = field(default_factory=list)
    reason: str | None = None  # why there is no return at all (never in the market, empty curve)


def _empty(reason: str) -> DeployedSeries:
    return DeployedSeries(pd.Series([], dtype="float64", index=pd.DatetimeIndex([])), np.zeros(0), reason=reason)


def deployed_returns(equity: pl.DataFrame, fills: pl.DataFrame, interval_s: float) -> DeployedSeries:
    """Returns on deployed capital of one slice (see the module docstring). ``equity`` and
    ``fills`` are the stored tables of :mod:`quant_assets.engines.result`."""
    if len(equity) < 2:
        return _empty("empty equity curve" if not len(equity) else "one equity sample: no period")
    grid = _on_grid(equity.select("ts", "equity", "position", "mid"), interval_s)
    ts = grid["ts"].to_numpy()
    eq = grid["equity"].to_numpy().astype(np.float64)
    start_notional = np.abs(grid["position"].to_numpy() * grid["mid"].to_numpy())[:-1]
    deployed = start_notional.copy()
    if len(fills):
        f_ts = fills["ts"].to_numpy()
        # Period k (1-based) is (ts[k-1], ts[k]]: a fill at a sample's ns is done by that sample.
        k = np.searchsorted(ts, f_ts, side="left")
        inside = (k >= 1) & (k < len(ts))
        notional = np.abs(fills["position"].to_numpy() * fills["price"].to_numpy())
        np.maximum.at(deployed, k[inside] - 1, notional[inside])
    change = np.diff(eq)
    in_market = deployed > 0
    notes: list[str] = []
    outside = float(change[~in_market].sum())
    if abs(outside) > DUST:
        notes.append(f"{outside:+.6g} quote currency of equity change fell in periods with no position (a cash flow); "
                     "not counted in the returns on deployed capital")
    if not in_market.any():
        return DeployedSeries(pd.Series([], dtype="float64", index=pd.DatetimeIndex([])), np.zeros(0), notes,
                              "never in the market this month: no capital was deployed")
    r = change[in_market] / deployed[in_market]
    end_ts = ts[1:][in_market]
    dep = deployed[in_market]
    bust = np.flatnonzero(r <= -1.0)
    if len(bust):
        b = int(bust[0])
        r, end_ts, dep = r[: b + 1], end_ts[: b + 1], dep[: b + 1]
        r[b] = -1.0
        notes.append("one period lost all of its deployed capital: the series on deployed capital stops there (-100%)")
    return DeployedSeries(pd.Series(r, index=pd.DatetimeIndex(end_ts.astype("datetime64[ns]")), name="returns_on_deployed"),
                          dep, notes)


def deployed_metrics(ds: DeployedSeries) -> MetricSet:
    """The :data:`DEPLOYED_METRICS` of ``ds`` (null with its reason when nothing was deployed)."""
    m = MetricSet()
    if ds.reason is not None or len(ds.returns) == 0:
        m.undefined(DEPLOYED_METRICS, ds.reason or "no period in the market")
        return m
    m.put("deployed_avg", float(ds.deployed.mean()))
    m.put("deployed_peak", float(ds.deployed.max()))
    m.put("return_on_deployed", float(np.prod(1.0 + ds.returns.to_numpy()) - 1.0))
    m.put("max_drawdown_on_deployed", drawdown_stats(ds.returns)[0])
    return m


def stitch_deployed(series: list[DeployedSeries]) -> DeployedSeries:
    """Months as one series on deployed capital (each month's returns chain, as the account's
    do in :func:`~quant_assets.analytics.returns.stitch`); months never in the market add nothing."""
    used = [s for s in series if s.reason is None and len(s.returns)]
    notes = [n for s in series for n in s.notes]
    if not used:
        return DeployedSeries(pd.Series([], dtype="float64", index=pd.DatetimeIndex([])), np.zeros(0), notes,
                              "never in the market in any month: no capital was deployed")
    return DeployedSeries(pd.concat([s.returns for s in used]).sort_index(), np.concatenate([s.deployed for s in used]), notes)
