"""Robustness evidence for a strategy × symbol across its months, with well-kept libraries:

* :func:`bootstrap_ci`: stationary-bootstrap confidence intervals of the annualised Sharpe
  ratio and CAGR of the daily returns (``arch``; block length from ``optimal_block_length``).
* :func:`monte_carlo_drawdown`: the distribution of the maximum drawdown when the order of the
  trades is reshuffled (``quantstats.stats.montecarlo`` on trade returns on equity). A
  permutation cannot change the total return, so only path statistics are reported.
* :func:`deflated_sharpe`: the probability that the true Sharpe ratio is above the best one
  expected from ``n_trials`` tries of noise, scaled by the observed dispersion of Sharpe across
  the trials where their returns are kept (vectorbt's returns accessor; with one trial it is
  the probabilistic Sharpe ratio against 0, from quantstats).
* :func:`walk_forward`: rolling in-sample / out-of-sample windows of whole months with the
  parameters fixed: how the next month compares with the months before it.

Every function returns plain numbers (``None`` where undefined, with the reason), so callers
store them as JSON without NaN or infinity. Randomness is seeded: same inputs, same output.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from quant_assets.analytics.returns import ReturnSeries, stitch
from quant_assets.analytics.trial_sharpes import TrialSharpes

#: Fewest daily returns for a bootstrap or a deflated Sharpe worth stating.
MIN_DAYS = 10
#: Cells (trades × simulations) per Monte Carlo chunk: bounds memory at ~100 MB whatever the
#: trade count (quantstats holds every path of a call in memory).
MC_CHUNK_CELLS = 4_000_000


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ann_sharpe(x: np.ndarray, trading_days: int) -> float:
    sd = x.std(ddof=1)
    return float(x.mean() / sd * math.sqrt(trading_days)) if sd > 0 else float("nan")


def _cagr(x: np.ndarray, trading_days: int) -> float:
    wealth = float(np.prod(1.0 + x))
    return wealth ** (trading_days / len(x)) - 1.0 if wealth > 0 else -1.0


def bootstrap_ci(daily: pd.Series, trading_days: int, reps: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Percentile intervals of Sharpe (annualised) and CAGR over ``reps`` stationary-bootstrap
    resamples of the daily returns. Resamples with no variance have no Sharpe; they are counted,
    not drawn as numbers."""
    from arch.bootstrap import StationaryBootstrap, optimal_block_length

    x = daily.dropna().to_numpy(dtype=np.float64)
    out: dict[str, Any] = {"method": "stationary bootstrap (arch), percentile interval", "reps": reps, "level": level,
                           "days": len(x)}
    if len(x) < MIN_DAYS or x.std() == 0:
        reason = f"{len(x)} daily returns: at least {MIN_DAYS} are needed" if len(x) < MIN_DAYS else "daily returns have no variance"
        return {**out, "sharpe": None, "cagr": None, "reason": reason}
    block = _finite(optimal_block_length(x)["stationary"].iloc[0]) or 1.0
    bs = StationaryBootstrap(max(1.0, block), x, seed=seed)
    draws = bs.apply(lambda r: np.array([_ann_sharpe(r, trading_days), _cagr(r, trading_days)]), reps=reps)
    alpha = (1 - level) / 2
    result = {**out, "block_length_days": round(max(1.0, block), 3)}
    for j, name in enumerate(("sharpe", "cagr")):
        col = draws[:, j]
        ok = col[np.isfinite(col)]
        result[name] = ({"lo": float(np.quantile(ok, alpha)), "hi": float(np.quantile(ok, 1 - alpha)),
                         "median": float(np.median(ok)), "undefined_resamples": int(len(col) - len(ok))}
                        if len(ok) >= reps // 2 else None)
    return result


def _max_drawdowns(paths: np.ndarray) -> np.ndarray:
    """Max drawdown (fraction, <= 0) of each column of cumulative returns, from a start at 1."""
    wealth = 1.0 + paths
    peak = np.maximum.accumulate(np.vstack([np.ones((1, wealth.shape[1])), wealth]), axis=0)[1:]
    return (wealth / peak - 1.0).min(axis=0)


def monte_carlo_drawdown(trade_returns: pd.Series, sims: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Max-drawdown distribution over ``sims`` reshuffles of the trade sequence.

    ``trade_returns``: each trade's PnL over the account equity at its entry, in trade order.
    Trades that overlap in time are compounded one after another: a simplification that keeps
    their sizes. Reported: the observed path's max drawdown, percentiles of the reshuffled
    ones, and the share of reshuffles that draw down deeper than observed.
    """
    import quantstats as qs

    # Trades entered on a wiped-out account have no return on equity (null); a trade cannot
    # lose more than the whole account.
    r = trade_returns.dropna().clip(lower=-1.0)
    n = len(r)
    base = {"method": "quantstats montecarlo: reshuffled trade returns on equity", "sims": sims, "trades": n}
    if n < 2:
        return {**base, "observed_max_drawdown": None, "reason": f"{n} trade(s): nothing to reshuffle"}
    per_chunk = max(2, MC_CHUNK_CELLS // n)
    dds: list[np.ndarray] = []
    done, chunk = 0, 0
    observed = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while done < sims:
            k = min(per_chunk, sims - done)
            # quantstats puts the original order in column 0 of every call: keep it once.
            mc = qs.stats.montecarlo(r, sims=k + 1, seed=seed + chunk)
            dd = _max_drawdowns(mc.data.to_numpy())
            if observed is None:
                observed = float(dd[0])
            dds.append(dd[1:])
            done += k
            chunk += 1
            del mc
    sim = np.concatenate(dds)
    return {
        **base,
        "observed_max_drawdown": observed,
        "p05": float(np.quantile(sim, 0.05)), "p50": float(np.quantile(sim, 0.5)), "p95": float(np.quantile(sim, 0.95)),
        "worst": float(sim.min()),
        "share_deeper_than_observed": float(np.mean(sim < observed)),
    }


def deflated_sharpe(daily: pd.Series, trading_days: int, n_trials: int,
                    trial_sharpes: TrialSharpes | None = None) -> dict[str, Any]:
    """Deflated Sharpe ratio of the daily returns given ``n_trials`` parameter sets tried.

    The bar is the expected maximum Sharpe ratio of ``n_trials`` tries of noise, scaled by the
    standard deviation of Sharpe ratios across trials (Bailey & López de Prado). That variance
    is the **observed** one where the trials' returns are kept (``trial_sharpes``, annualised
    daily Sharpe ratios over the same months: :mod:`quant_assets.analytics.trial_sharpes`);
    otherwise the Sharpe estimator's own variance under these returns stands in for it,
    ``(1 - skew*SR + (kurt-1)/4*SR^2) / (T-1)`` per period, and the output says so and why
    (``var_sharpe_source`` = ``observed`` or ``estimator``, ``var_sharpe_reason``). Units: the
    variance is of annualised Sharpe ratios, as vectorbt expects.
    """
    import quantstats as qs
    import vectorbt as vbt  # noqa: F401  (registers the .vbt accessor)

    x = daily.dropna()
    out: dict[str, Any] = {"n_trials": n_trials, "days": len(x)}
    if len(x) < MIN_DAYS or float(x.std()) == 0:
        reason = f"{len(x)} daily returns: at least {MIN_DAYS} are needed" if len(x) < MIN_DAYS else "daily returns have no variance"
        return {**out, "dsr": None, "reason": reason}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_trials <= 1:
            psr = _finite(qs.stats.probabilistic_sharpe_ratio(x, periods=trading_days))
            return {**out, "dsr": psr, "method": "one trial: probabilistic Sharpe ratio against 0 (quantstats)"}
        acc = x.vbt.returns(freq=pd.Timedelta(days=1), year_freq=pd.Timedelta(days=trading_days))
        if trial_sharpes is not None and trial_sharpes.var_annual is not None:
            var_annual = trial_sharpes.var_annual
            source = {"var_sharpe_source": "observed", "trials_observed": trial_sharpes.trials,
                      "trials_observed_from": trial_sharpes.source, "trials_observed_months": trial_sharpes.months,
                      "trials_observed_days": trial_sharpes.days,
                      "months_without_trial_returns": trial_sharpes.missing,
                      "method": (f"vectorbt deflated_sharpe_ratio, var_sharpe = the observed variance of the annualised "
                                 f"daily Sharpe ratio across {trial_sharpes.trials} trials ({trial_sharpes.source}) "
                                 f"over {len(trial_sharpes.months)} of the months")}
        else:
            sr_p = float(x.mean() / x.std())
            skew, kurt = float(x.skew()), float(x.kurt()) + 3.0
            var_annual = (1 - skew * sr_p + (kurt - 1) / 4 * sr_p**2) / (len(x) - 1) * trading_days
            source = {"var_sharpe_source": "estimator",
                      "var_sharpe_reason": (trial_sharpes.reason if trial_sharpes is not None
                                            else "no trial returns were given"),
                      "method": ("vectorbt deflated_sharpe_ratio, var_sharpe = the Sharpe estimator's variance "
                                 "(the cross-trial variance is not observed)")}
        dsr = acc.deflated_sharpe_ratio(nb_trials=n_trials, var_sharpe=var_annual)
    result = {**out, "dsr": _finite(dsr), "var_sharpe_annual": _finite(var_annual), **source}
    if result["dsr"] is None:
        result["reason"] = ("undefined for these returns: with their skew and kurtosis the Sharpe estimator's "
                            "variance formula is not positive (vectorbt returned NaN)")
    return result


WALK_FORWARD_SCHEMA: dict[str, pl.DataType] = {
    "window": pl.Int64(), "in_sample": pl.String(), "out_of_sample": pl.String(),
    "is_return": pl.Float64(), "oos_return": pl.Float64(), "is_sharpe": pl.Float64(), "oos_sharpe": pl.Float64(),
    "is_max_drawdown": pl.Float64(), "oos_max_drawdown": pl.Float64(),
}


def walk_forward(months: list[tuple[str, ReturnSeries]], in_sample_months: int = 3) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rolling windows over consecutive months: ``in_sample_months`` (fewer while history is
    short, at least 1) in sample, the next month out of sample, parameters unchanged.
    Returns the windows and a summary (mean IS and OOS Sharpe, their ratio, the share of
    windows whose OOS month made money)."""
    from quant_assets.analytics.periods import period_metrics

    months = sorted(months, key=lambda m: m[0])
    rows = []
    for i in range(1, len(months)):
        window = months[max(0, i - in_sample_months):i]
        is_rs = stitch([rs for _, rs in window])
        oos_rs = months[i][1]
        im, om = period_metrics(is_rs), period_metrics(oos_rs)
        rows.append({
            "window": i, "in_sample": ",".join(m for m, _ in window), "out_of_sample": months[i][0],
            "is_return": im.values.get("total_return"), "oos_return": om.values.get("total_return"),
            "is_sharpe": im.values.get("sharpe"), "oos_sharpe": om.values.get("sharpe"),
            "is_max_drawdown": im.values.get("max_drawdown"), "oos_max_drawdown": om.values.get("max_drawdown"),
        })
    table = pl.DataFrame(rows, schema=WALK_FORWARD_SCHEMA)
    if not rows:
        return table, {"windows": 0, "in_sample_months": in_sample_months,
                       "reason": f"{len(months)} month(s): walk-forward needs at least 2"}
    is_s, oos_s = table["is_sharpe"].drop_nulls(), table["oos_sharpe"].drop_nulls()
    is_mean = float(is_s.mean()) if len(is_s) else None
    oos_mean = float(oos_s.mean()) if len(oos_s) else None
    oos_ret = table["oos_return"].drop_nulls()
    return table, {
        "windows": len(rows), "in_sample_months": in_sample_months,
        "is_sharpe_mean": is_mean, "oos_sharpe_mean": oos_mean,
        "oos_over_is_sharpe": (oos_mean / is_mean) if (is_mean and oos_mean is not None and is_mean > 0) else None,
        "oos_positive_share": float((oos_ret > 0).mean()) if len(oos_ret) else None,
    }
