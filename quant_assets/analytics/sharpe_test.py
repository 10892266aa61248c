"""Does a candidate beat its baseline out of sample? A one-sided p-value for one test.

The candidate (a critique's suggestion, a sweep's hand-off) and the baseline run on the same
out-of-sample month, so their returns are paired and strongly correlated, and both Sharpe
ratios are estimates. The test is Ledoit & Wolf's (2008) for the difference of two Sharpe
ratios on paired returns: the delta method on the first two moments of both series, with a
heteroskedasticity- and autocorrelation-consistent (HAC, Newey–West/Bartlett) covariance of
those moments (statsmodels' ``S_hac_simple``), so it holds for fat-tailed, volatility-clustered
returns, and accounts for the baseline's estimation error and the pairing.

    H0: Sharpe(candidate) <= Sharpe(baseline)    H1: Sharpe(candidate) > Sharpe(baseline)
    p = 1 - Phi((SR_c - SR_b) / se)

Returns are compared **hourly** (each hour's grid returns compounded, hours labelled by their
end; only hours both series have): minute returns of two strategies that hold positions for
hours are dependent far beyond a few lags, hourly ones over about a day, so the HAC window is
:data:`HAC_LAGS` = 24 hours; a month gives ~720 pairs, plenty for the asymptotics.

This p-value is for one test alone. It carries no allowance for how many tests were run: the
false-discovery control over the whole ledger of tests does that
(:mod:`quant_assets.analytics.discoveries`); a bar raised for the number of tries here as
well would count the same multiplicity twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quant_assets.analytics.returns import ReturnSeries

#: Bartlett kernel lags of the HAC covariance, in hours (a day: the cycle of intraday volatility).
HAC_LAGS = 24
#: Fewest common hours for a test worth stating (two days).
MIN_HOURS = 48
METHOD = ("Ledoit-Wolf (2008) test of Sharpe(candidate) > Sharpe(baseline) on paired hourly returns, "
          f"HAC (Bartlett, {HAC_LAGS} lags) covariance of the moments; one-sided, unadjusted")


@dataclass(frozen=True)
class SharpeTest:
    """``p_value``: one-sided p of "the candidate's Sharpe beats the baseline's" (None when
    undefined, ``reason`` says why); ``delta``: hourly Sharpe difference (candidate minus
    baseline, per hour, not annualised); ``se``: its standard error; ``hours``: pairs used."""

    p_value: float | None
    delta: float | None = None
    se: float | None = None
    hours: int = 0
    reason: str | None = None


def hourly(rs: ReturnSeries) -> pd.Series:
    """The series' returns compounded by UTC hour, labelled by the hour's end."""
    r = rs.returns.dropna()
    if not len(r):
        return r
    return np.expm1(np.log1p(r.clip(lower=-1 + 1e-12)).groupby(r.index.ceil("h")).sum())


def sharpe_difference(candidate: ReturnSeries, baseline: ReturnSeries, lags: int = HAC_LAGS) -> SharpeTest:
    """One-sided test that ``candidate``'s Sharpe ratio beats ``baseline``'s on the same period
    (see the module docstring)."""
    from scipy.stats import norm
    from statsmodels.stats.sandwich_covariance import S_hac_simple

    if candidate.wiped_out:
        return SharpeTest(None, reason="the candidate's account was wiped out: its returns stop there")
    pair = pd.concat({"c": hourly(candidate), "b": hourly(baseline)}, axis=1, join="inner").dropna()
    n = len(pair)
    if n < MIN_HOURS:
        return SharpeTest(None, hours=n, reason=f"{n} common hours of returns: the test needs at least {MIN_HOURS}")
    x = pair.to_numpy(dtype=np.float64)
    if np.array_equal(x[:, 0], x[:, 1]):
        return SharpeTest(None, hours=n, reason="the candidate's returns equal the baseline's: nothing to test")
    x = x / x.std()  # a common scale: the Sharpe ratios are unchanged, the moments well conditioned
    mu = x.mean(axis=0)
    m2 = (x**2).mean(axis=0)
    var = m2 - mu**2
    if (var <= 1e-300).any():
        which = "candidate" if var[0] <= 1e-300 else "baseline"
        return SharpeTest(None, hours=n, reason=f"the {which}'s returns have no variance (it never held a position)")
    delta = float(mu[0] / math.sqrt(var[0]) - mu[1] / math.sqrt(var[1]))
    moments = np.column_stack([x[:, 0] - mu[0], x[:, 1] - mu[1], x[:, 0] ** 2 - m2[0], x[:, 1] ** 2 - m2[1]])
    psi = S_hac_simple(moments, nlags=min(lags, n - 1)) / n
    grad = np.array([m2[0] / var[0] ** 1.5, -m2[1] / var[1] ** 1.5, -mu[0] / (2 * var[0] ** 1.5), mu[1] / (2 * var[1] ** 1.5)])
    v = float(grad @ psi @ grad) / n
    if not v > 0:
        return SharpeTest(None, delta, hours=n, reason="the difference has no estimated variance")
    se = math.sqrt(v)
    return SharpeTest(float(norm.sf(delta / se)), delta, se, n)
