"""Period metrics of a return series, from ``quantstats.stats`` (never the rounded
``reports.metrics`` table), with every undefined value made explicit.

Units: returns and drawdowns are fractions (0.05 = 5%); ``volatility``, ``sharpe``,
``sortino``, ``cagr`` and ``calmar`` are annualised with the series' ``periods_per_year``;
``var_95``/``cvar_95`` are per period (historical: the 5% quantile of the returns and the mean
of the returns at or below it); ``max_drawdown_duration_s`` is the longest time under water,
in seconds; ``win_rate`` and ``profit_factor`` are over periods (trade-level ones live in
:mod:`quant_assets.analytics.trades`); ``exposure`` is quantstats' share of periods with a
non-zero return; ``psr`` is the probability that the true Sharpe ratio is above zero.

A metric that is undefined for the data (no variance, no losing period, fewer than two
returns, ...) is ``None`` with a reason in :attr:`MetricSet.reasons`; a NaN or an infinity from
a library never passes as a number.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quant_assets.analytics.returns import NS_PER_S, ReturnSeries

#: The period metrics, in the order they are stored.
PERIOD_METRICS = (
    "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_duration_s", "var_95", "cvar_95", "omega", "tail_ratio", "win_rate",
    "profit_factor", "exposure", "psr", "skew", "kurtosis",
)


@dataclass
class MetricSet:
    """Named numbers (``None`` when undefined) and, for each ``None``, why."""

    values: dict[str, float | int | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def put(self, name: str, value: object, reason_if_undefined: str = "") -> None:
        """Store ``value`` if it is a finite number, else ``None`` with a reason."""
        if value is None:
            self.values[name] = None
            self.reasons[name] = reason_if_undefined or "undefined"
            return
        v = float(value)
        if math.isfinite(v):
            self.values[name] = int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else v
        else:
            self.values[name] = None
            self.reasons[name] = reason_if_undefined or f"undefined for this data (the library returned {v})"

    def undefined(self, names: tuple[str, ...] | list[str], reason: str) -> None:
        for n in names:
            self.values[n] = None
            self.reasons[n] = reason

    def update(self, other: MetricSet) -> None:
        self.values.update(other.values)
        self.reasons.update(other.reasons)


def drawdown_stats(returns: pd.Series) -> tuple[float, float]:
    """(maximum drawdown as a fraction <= 0, longest time under water in seconds) of the
    compounded curve from a start at 1.

    The maximum drawdown is quantstats' definition (``stats.max_drawdown``: the curve against
    its running peak, with the starting level as the first peak), computed here in one numpy
    pass because quantstats inserts a phantom row into the index and re-sorts it, ~0.5 s per
    call on a month of 1-second returns; the tests check both against empyrical. The time under
    water runs from the last time at the peak to the period that regains it (or the end);
    quantstats' ``drawdown_details`` counts whole days, which says nothing for an intraday month.
    """
    if len(returns) == 0:
        return 0.0, 0.0
    wealth = np.cumprod(1.0 + returns.to_numpy())
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    max_dd = float(min((wealth / peak).min() - 1.0, 0.0))
    under = wealth < peak * (1 - 1e-12)
    if not under.any():
        return max_dd, 0.0
    ts = returns.index.asi8
    edges = np.diff(np.concatenate(([0], under.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # A run starting at period i began at the end of period i-1 (the last time at the peak).
    t_start = np.where(starts > 0, ts[np.maximum(starts - 1, 0)], ts[0])
    t_end = ts[np.minimum(ends, len(ts) - 1)]
    return max_dd, float((t_end - t_start).max()) / NS_PER_S


def period_metrics(rs: ReturnSeries) -> MetricSet:
    """The quantstats metric set of ``rs`` (see the module docstring)."""
    import quantstats as qs

    m = MetricSet()
    r = rs.returns.astype("float64")
    n = len(r)
    ppy = rs.periods_per_year
    if n < 2:
        m.undefined(PERIOD_METRICS, f"{n} return period(s): at least 2 are needed")
        if n == 1:
            m.put("total_return", float(r.iloc[0]))
            m.reasons.pop("total_return", None)
        return m
    std = float(r.std())
    has_losses = bool((r < 0).any())
    flat = std == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantstats warns on edge cases we report ourselves
        with np.errstate(all="ignore"):
            total = float(qs.stats.comp(r))
            m.put("total_return", total)
            m.put("cagr", qs.stats.cagr(r, periods=ppy), "the account was wiped out" if total <= -1 else "")
            max_dd, underwater_s = drawdown_stats(r)
            m.put("max_drawdown", max_dd)
            m.put("max_drawdown_duration_s", underwater_s)
            m.put("exposure", qs.stats.exposure(r, prepare_returns=False))
            nonzero = bool((r != 0).any())
            if flat:
                m.put("volatility", 0.0)
                m.undefined(("sharpe", "sortino", "psr", "skew", "kurtosis"),
                            "returns have no variance (no position, or a flat curve)")
            else:
                m.put("volatility", qs.stats.volatility(r, periods=ppy, prepare_returns=False))
                m.put("sharpe", qs.stats.sharpe(r, periods=ppy))
                m.put("psr", qs.stats.probabilistic_sharpe_ratio(r, periods=ppy))
                m.put("skew", qs.stats.skew(r, prepare_returns=False))
                m.put("kurtosis", qs.stats.kurtosis(r, prepare_returns=False))
                if has_losses:
                    m.put("sortino", qs.stats.sortino(r, periods=ppy))
                else:
                    m.undefined(("sortino",), "no losing period: downside deviation is 0")
            dd = m.values["max_drawdown"]
            if dd is None or dd == 0:
                m.undefined(("calmar",), "no drawdown: Calmar divides by the maximum drawdown")
            else:
                # quantstats' calmar is cagr / |max drawdown|; both are already computed above.
                cagr = m.values["cagr"]
                m.put("calmar", None if cagr is None else cagr / abs(dd), "CAGR is undefined")
            q05 = float(r.quantile(0.05))
            m.put("var_95", q05)
            m.put("cvar_95", qs.stats.cvar(r, confidence=0.95, prepare_returns=False, method="historical"))
            if not has_losses:
                m.undefined(("omega", "profit_factor"), "no losing period: the ratio divides by the losses")
            else:
                m.put("omega", qs.stats.omega(r, periods=ppy))
                m.put("profit_factor", qs.stats.profit_factor(r, prepare_returns=False))
            if q05 == 0:
                m.undefined(("tail_ratio",), "the 5% quantile of returns is 0 (too few non-zero periods)")
            else:
                m.put("tail_ratio", qs.stats.tail_ratio(r, prepare_returns=False))
            if nonzero:
                m.put("win_rate", qs.stats.win_rate(r, prepare_returns=False))
            else:
                m.undefined(("win_rate",), "no period with a non-zero return")
    return m
