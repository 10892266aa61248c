"""Factor analysis of the strategies' signals with alphalens-reloaded, per symbol across months.

A strategy that exposes a signal (:data:`quant_assets.strategies.registry.FACTOR_SIGNALS`)
gets it computed on each month's bars with its current parameters, sampled once per
``sample`` (the last bar of each hour by default), and judged by alphalens against the
forward returns of the mid over ``periods`` samples:

- **information coefficient**: Spearman correlation of the signal with the forward return,
  per month (``ic.parquet``), and its mean, spread, ratio and t-test across months;
- **quantile returns**: the mean forward return of each signal quintile (in bps), and the
  spread of the top over the bottom quintile;
- **turnover**: how often the signal leaves its top or bottom quintile ``p`` samples later.

Signals are signed so that positive means "the strategy leans long": a positive IC says the
signal predicts returns in the direction the strategy trades. Signal lengths are the
strategy's, converted from quote updates to bars by the symbol's mean quotes per bar.

alphalens is built for cross-sections: many assets per date. Here there is one symbol, so the
analysis is a time series; two things follow:

- Forward returns are computed by alphalens on the sample timeline (date = sample time). For
  the IC and the quintiles the date level becomes the *month* and the asset level the sample
  time: alphalens then correlates and bins within each month, across its samples.
- alphalens's turnover counts assets entering a quintile between dates, which is undefined for
  one asset; :func:`quintile_turnover` is its time-series analogue (a few lines, kept here).

Every month's signal restarts from its first bar, as the backtests do (each month starts flat).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research.bars import parse_interval
from quant_assets.research.run import quotes_per_bar
from quant_assets.strategies.spec import StrategySpec

FACTOR_VERSION = "1"
BPS = 1e4


def _num(x: float | None) -> float | None:
    """A JSON-safe float: None for missing or non-finite values."""
    return float(x) if x is not None and math.isfinite(x) else None


class FactorInputError(ValueError):
    """No usable bars or too few samples; the message says which and what is needed."""


@dataclass(frozen=True)
class FactorSettings:
    """``sample``: signal sampling interval; ``periods``: forward-return horizons, in samples;
    ``quantiles``: bins per month; ``min_samples``: fewest usable samples for an analysis."""

    sample: str = "1h"
    periods: tuple[int, ...] = (1, 4, 24)
    quantiles: int = 5
    min_samples: int = 100


def _ema(mid: pl.Expr, n: int) -> pl.Expr:
    # The strategies' EMA: alpha = 2 / (n + 1), seeded with the first value, defined from the n-th.
    return mid.ewm_mean(alpha=2.0 / (n + 1), adjust=False, min_samples=n)


def ema_spread(params: dict[str, int]) -> pl.Expr:
    """(EMA_fast - EMA_slow) / mid of the bars' mid closes: > 0 when ``ema_cross`` is long."""
    mid = pl.col("mid_close")
    return (_ema(mid, params["fast_period"]) - _ema(mid, params["slow_period"])) / mid


def zscore_reversion(params: dict[str, int]) -> pl.Expr:
    """-(mid - mean) / std over ``window`` bars: > 0 when ``mean_reversion`` leans long (the
    mid is below its mean)."""
    mid, n = pl.col("mid_close"), params["window"]
    return -(mid - mid.rolling_mean(n)) / mid.rolling_std(n)


@dataclass(frozen=True)
class SignalDef:
    """A strategy's signal: its expression on bars and the parameters it reads (lengths in
    quote updates, converted to bars)."""

    name: str
    expr: Callable[[dict[str, int]], pl.Expr]
    lengths: tuple[str, ...]
    description: str


SIGNAL_DEFS: dict[str, SignalDef] = {
    "ema_spread": SignalDef("ema_spread", ema_spread, ("fast_period", "slow_period"),
                            "(EMA fast - EMA slow) / mid: ema_cross is long when positive"),
    "zscore_reversion": SignalDef("zscore_reversion", zscore_reversion, ("window",),
                                  "-(mid - rolling mean) / rolling std: mean_reversion leans long when positive"),
}


def horizon_label(samples_ahead: int, sample: str) -> str:
    """``4`` samples of ``"1h"`` -> ``"4h"``."""
    return f"{samples_ahead * int(sample[:-1])}{sample[-1]}"


def bar_lengths(spec: StrategySpec, signal: SignalDef, quotes_per_bar: float) -> dict[str, int]:
    """The signal's lengths in bars: the strategy's (in quote updates) / quotes per bar, at least 2."""
    values = spec.resolved()
    return {k: max(2, int(round(values[k] / max(quotes_per_bar, 1e-9)))) for k in signal.lengths}


def samples(bars: pl.DataFrame, signal: SignalDef, lengths: dict[str, int], sample_ns: int) -> pl.DataFrame:
    """(ts ns, mid, signal) at the last bar of each ``sample_ns`` interval of one month's bars;
    samples before the signal is defined are dropped."""
    df = bars.select("ts", pl.col("mid_close").forward_fill()).filter(pl.col("mid_close").is_not_null())
    df = df.with_columns(signal=signal.expr(lengths)).with_columns(bucket=pl.col("ts") // sample_ns)
    out = df.group_by("bucket", maintain_order=True).agg(pl.col("ts").last(), pl.col("mid_close").last().alias("mid"),
                                                          pl.col("signal").last())
    return out.drop("bucket").filter(pl.col("signal").is_finite())


def quintile_turnover(quantile: np.ndarray, month: np.ndarray, q: int, period: int) -> float | None:
    """Among samples in bin ``q``, the share that were in another bin ``period`` samples
    earlier in the same month (alphalens's quantile turnover, for one asset over time)."""
    now, before = quantile[period:], quantile[:-period]
    same_month = month[period:] == month[:-period]
    mask = (now == q) & same_month
    return float(np.mean(before[mask] != q)) if mask.any() else None


@dataclass(frozen=True)
class FactorResult:
    report: dict[str, Any]
    ic: pl.DataFrame  # month × period
    quantile_returns: pl.DataFrame  # quantile × period, bps
    png: bytes | None


def analyse(frame: pl.DataFrame, symbol: str, settings: FactorSettings = FactorSettings()) -> FactorResult:
    """alphalens on (ts ns, month, mid, signal) samples of one symbol (see the module docstring)."""
    import alphalens as al
    import pandas as pd
    from scipy import stats

    if frame.height < settings.min_samples:
        raise FactorInputError(f"{symbol}: {frame.height} signal samples; the analysis needs at least {settings.min_samples}")
    frame = frame.sort("ts")
    idx = pd.DatetimeIndex(pd.to_datetime(frame["ts"].to_numpy(), unit="ns", utc=True))
    prices = pd.DataFrame({symbol: frame["mid"].to_numpy()}, index=idx)
    factor = pd.Series(frame["signal"].to_numpy(), index=pd.MultiIndex.from_arrays([idx, [symbol] * len(idx)],
                                                                                   names=["date", "asset"]))
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        # Intraday samples never fit alphalens's inferred business-day calendar; it says so and
        # keeps the observed spacing, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        fwd = al.utils.compute_forward_returns(factor, prices, periods=settings.periods, cumulative_returns=True)
        # alphalens names horizons by the time they span in the data (1h2m for a 1-sample
        # horizon of irregular samples); name them by the horizon asked for instead.
        fwd.columns = [horizon_label(p, settings.sample) for p in settings.periods]
        months = pd.to_datetime(frame["month"].to_list()).tz_localize("UTC")
        by_month = pd.MultiIndex.from_arrays([months, idx], names=["date", "asset"])
        factor_m = pd.Series(factor.to_numpy(), index=by_month)
        fwd_m = fwd.reindex(factor.index)
        fwd_m.index = by_month
        try:
            clean = al.utils.get_clean_factor(factor_m, fwd_m, quantiles=settings.quantiles, max_loss=0.5)
        except al.utils.MaxLossExceededError as exc:
            raise FactorInputError(f"{symbol}: alphalens dropped too many samples ({exc})") from None
        ic = al.performance.factor_information_coefficient(clean)
        mean_q, err_q = al.performance.mean_return_by_quantile(clean, by_date=False, demeaned=False)
    labels = list(fwd.columns)
    kept = len(clean) / len(frame)
    q = clean["factor_quantile"].to_numpy()
    month_of = clean.index.get_level_values("date").to_numpy()
    per_period: dict[str, Any] = {}
    for label, p in zip(labels, settings.periods, strict=True):
        col = ic[label].dropna()
        n = len(col)
        sd = float(col.std(ddof=1)) if n > 1 else None
        t = stats.ttest_1samp(col, 0.0) if n > 1 and sd and sd > 0 else None
        top, bottom = float(mean_q.loc[settings.quantiles, label]), float(mean_q.loc[1, label])
        per_period[label] = {
            "samples_ahead": p,
            "ic_mean": _num(col.mean()) if n else None,
            "ic_std": _num(sd),
            "ic_ir": _num(col.mean() / sd) if sd else None,
            "ic_t": _num(t.statistic) if t is not None else None,
            "ic_p": _num(t.pvalue) if t is not None else None,
            "months": n,
            "quantile_mean_bps": [_num(float(v) * BPS) for v in mean_q[label]],
            "top_minus_bottom_bps": _num((top - bottom) * BPS),
            "turnover_top": quintile_turnover(q, month_of, settings.quantiles, p),
            "turnover_bottom": quintile_turnover(q, month_of, 1, p),
        }
    ic_frame = pl.DataFrame({"month": [d.strftime("%Y-%m") for d in ic.index],
                             **{label: ic[label].to_numpy() for label in labels}})
    qr = pl.DataFrame({"quantile": mean_q.index.to_numpy().astype(np.int64),
                       **{label: mean_q[label].to_numpy() * BPS for label in labels},
                       **{f"{label}_stderr": err_q[label].to_numpy() * BPS for label in labels}})
    report = {"symbol": symbol, "samples": len(frame), "kept": len(clean), "kept_fraction": kept, "periods": per_period,
              "quantiles": settings.quantiles, "sample": settings.sample,
              "months": sorted({d.strftime("%Y-%m") for d in ic.index})}
    return FactorResult(report, ic_frame, qr, _png(mean_q, ic, labels, symbol))


def _png(mean_q, ic, labels: list[str], title: str) -> bytes | None:
    import alphalens as al
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quant_assets.analytics.plots import _png as to_png

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    al.plotting.plot_quantile_returns_bar(mean_q, ax=ax1)
    ax1.set_title(f"{title}: mean forward return by quintile (bps)")
    ic[labels].set_axis([d.strftime("%Y-%m") for d in ic.index]).plot.bar(ax=ax2)
    ax2.axhline(0.0, color="black", lw=0.8)
    ax2.set_title("information coefficient by month")
    fig.tight_layout()
    return to_png(fig)


@dataclass(frozen=True)
class FactorOutput:
    directory: Path
    result: FactorResult
    data_version: str


def run_factors(lake: Lake, spec: StrategySpec, signal: SignalDef, symbol: str, interval: str = "1m",
                settings: FactorSettings = FactorSettings()) -> FactorOutput:
    """The factor analysis of ``spec``'s signal on every month of bars of ``symbol``, published to
    ``factors/strategy=X/symbol=S/`` (report.json, ic.parquet, quantile_returns.parquet,
    factor.png, manifest.json)."""
    paths = sorted(lake.bars_path(interval, symbol, "*").parent.parent.glob("month=*/part-0.parquet"))
    if not paths:
        raise FactorInputError(f"{symbol}: no {interval} bars in the lake (materialise bars_{interval} first)")
    months = {p.parent.name.removeprefix("month="): pl.read_parquet(p, columns=["ts", "mid_close", "quotes"]) for p in paths}
    qpb = quotes_per_bar(pl.concat(months.values()))
    lengths = bar_lengths(spec, signal, qpb)
    sample_ns = parse_interval(settings.sample)
    frame = pl.concat([samples(bars, signal, lengths, sample_ns).with_columns(month=pl.lit(month))
                       for month, bars in months.items()])
    try:
        result = analyse(frame, symbol, settings)
    except FactorInputError as exc:
        # Too little data to judge a signal: an explained empty report (as a sweep of too few
        # bars gives an explained empty grid) rather than a failed roll-up.
        result = FactorResult({"symbol": symbol, "samples": frame.height, "kept": 0, "periods": {}, "reason": str(exc),
                               "quantiles": settings.quantiles, "sample": settings.sample,
                               "months": sorted(set(frame["month"].to_list()))},
                              pl.DataFrame(schema={"month": pl.String}), pl.DataFrame(schema={"quantile": pl.Int64}), None)
    result.report.update({"strategy": spec.name, "signal": signal.name, "signal_description": signal.description,
                          "lengths_bars": lengths, "quotes_per_bar": qpb, "bar_interval": interval,
                          "factor_version": FACTOR_VERSION,
                          "bars_sha256": {p.parent.name: file_sha256(p) for p in paths}})
    final = lake.factor_dir(spec.name, symbol)
    with lake.lock(f"factors-{spec.name}-{symbol}"), atomic_dir(final, "factors") as out:
        lake.write_json(result.report, out / "report.json")
        lake.write_parquet(result.ic, out / "ic.parquet")
        lake.write_parquet(result.quantile_returns, out / "quantile_returns.parquet")
        if result.png:
            (out / "factor.png").write_bytes(result.png)
        hashes = {n: file_sha256(out / n) for n in ("report.json", "ic.parquet", "quantile_returns.parquet")}
        lake.write_json({"strategy": spec.name, "symbol": symbol, "files": hashes}, out / "manifest.json")
    return FactorOutput(final, result, hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24])
