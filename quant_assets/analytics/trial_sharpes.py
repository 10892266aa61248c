"""The observed dispersion of Sharpe ratios across the recorded trials of a strategy on a symbol:
what the deflated Sharpe ratio's expected maximum of N tries is scaled by.

Which trials: the combinations of the strategy's sweep grid, whose hourly returns every sweep
slice keeps (:mod:`quant_assets.research.sweep_returns`). They are the only trials with returns
over the same months as the roll-up's headline; the event-driven trials (the out-of-sample
re-tests of suggestions and hand-offs) ran on one or two months each, and a Sharpe ratio over a
shorter period has a larger sampling variance, so mixing them in would measure their shortness,
not the dispersion of the family. They still count in N (the trials ledger).

How: each combination's hourly returns over the roll-up's months are compounded by UTC day, its
Sharpe ratio is taken on those daily returns and annualised with the instrument's trading days,
exactly as the roll-up's headline Sharpe; the variance is across combinations (ddof 1). Months
the sweeps did not cover are listed; the variance is then measured on the months they did
cover: a shorter period's Sharpe ratios disperse more, so the bar errs high, never low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from quant_assets.lake.store import Lake

#: Fewest days of trial returns for a Sharpe ratio worth comparing (as the headline's).
MIN_DAYS = 10


@dataclass(frozen=True)
class TrialSharpes:
    """``var_annual``: variance across trials of their annualised daily Sharpe ratios (None when
    it cannot be observed, ``reason`` says why); ``trials``: trials with a defined Sharpe;
    ``months``: the months it was measured on; ``days``: UTC days of returns; ``missing``:
    months of the roll-up without trial returns, with why."""

    var_annual: float | None
    trials: int = 0
    months: list[str] = field(default_factory=list)
    days: int = 0
    missing: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    source: str = "sweep grid combinations (sweeps/.../returns.parquet)"


def observed(lake: Lake, strategy: str, symbol: str, months: list[str], trading_days: int) -> TrialSharpes:
    """The trials' Sharpe dispersion for ``strategy`` on ``symbol`` over ``months`` (see the
    module docstring)."""
    from quant_assets.research.sweep_returns import SweepReturnsError, read_sweep_returns
    from quant_assets.strategies.registry import SWEEP_GRIDS

    if strategy not in SWEEP_GRIDS:
        return TrialSharpes(None, reason=f"{strategy} has no sweep grid: no trial returns are kept for it")
    try:
        sr = read_sweep_returns(lake, strategy, symbol, months)
    except SweepReturnsError as exc:
        return TrialSharpes(None, reason=f"trial returns unreadable: {exc}")
    if not sr.months:
        why = "; ".join(f"{m}: {w}" for m, w in sr.missing.items())
        return TrialSharpes(None, missing=sr.missing, reason=f"no sweep returns for any month of the roll-up ({why})")
    _, daily = sr.daily()
    base = {"months": sr.months, "days": len(daily), "missing": sr.missing}
    if len(daily) < MIN_DAYS:
        return TrialSharpes(None, **base, reason=f"{len(daily)} days of trial returns: at least {MIN_DAYS} are needed")
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = daily.std(axis=0, ddof=1)
        sharpe = np.where(sd > 0, daily.mean(axis=0) / sd * math.sqrt(trading_days), np.nan)
    finite = sharpe[np.isfinite(sharpe)]
    if len(finite) < 2:
        return TrialSharpes(None, int(len(finite)), **base,
                            reason=f"{len(finite)} trial(s) with a defined Sharpe ratio: a variance needs 2")
    return TrialSharpes(float(np.var(finite, ddof=1)), int(len(finite)), **base)
