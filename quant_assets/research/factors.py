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
signal predicts returns in the direction the strategy trades.

alphalens is built for cross-sections: many assets per date. Here there is one symbol, so the
analysis is a time series; for the IC and the quintile means the date level is the *month* and
the asset level the sample time (alphalens correlates and averages within each month, across its
samples). alphalens's turnover counts assets entering a quintile between dates, which is
undefined for one asset; :func:`quintile_turnover` is its time-series analogue.

**No look-ahead** (nothing about a sample or a month depends on a later one; a test appends a
month and checks every earlier month's part is unchanged):

- *Quintiles are trailing*: a sample's quintile ranks its signal against the
  ``quantile_window`` samples before it (across months of the same symbol), never against the
  rest of its month: :func:`trailing_quantiles`. Until ``quantile_min_history`` samples precede
  it (the symbol's first days: the cold start) a sample has no quintile (null) and enters only
  the IC. alphalens's own binning (``get_clean_factor``) bins within each date, which here
  would let a month's later samples decide its first ones' quintiles, so the quintiles are
  computed here and handed to alphalens's IC and quantile-return functions.
- *Forward returns stay in their month*: a sample's return over ``p`` samples counts only when
  the ``p``-th sample lies in the same month; the last ``p`` samples of a month have none. The
  IC of month M is then what was known at the end of M (a forward return reaching into M+1
  would change M's IC when M+1 arrives).
- *Lengths are converted point in time*: a strategy length counted in quote updates (unit
  ``ticks``: ``mean_reversion``'s ``window``) becomes bars by the mean quotes per bar of the
  symbol's months *before* the month (bar-weighted), not of all months. The symbol's first
  month has no earlier month: it converts with the mean of its own first
  :data:`CALIBRATION_NS` of bars and leaves out its samples before the end of that day (the
  lengths were not known yet). A length already counted in bars is used as it is.

*Warm-up, as the strategies have it*: a month's signal runs over the previous month's last
bars first (the strategy's warm-up, :func:`warmup_bars`: three slow lengths for the EMA spread,
the window for the z-score) and is sampled from the month's first bar; where the previous
month is absent (or shorter), samples wait until the signal has seen its warm-up, as the
strategy waits before it trades. Signals run on the bars that hold a quote (the mid bars the
event-driven strategies see).
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research.bars import parse_interval
from quant_assets.strategies.spec import StrategySpec

FACTOR_VERSION = "2"  # 2: trailing quintiles, forward returns within the month, point-in-time lengths, warm-up
BPS = 1e4
#: The first month's lengths are converted with its first day of bars (see the module docstring).
CALIBRATION_NS = 86_400 * 1_000_000_000
#: Units of lengths counted in quote updates (converted to bars); any other unit is bars already.
QUOTE_UPDATE_UNITS = ("ticks",)


def _num(x: float | None) -> float | None:
    """A JSON-safe float: None for missing or non-finite values."""
    return float(x) if x is not None and math.isfinite(x) else None


class FactorInputError(ValueError):
    """No usable bars or too few samples; the message says which and what is needed."""


@dataclass(frozen=True)
class FactorSettings:
    """``sample``: signal sampling interval; ``periods``: forward-return horizons, in samples;
    ``quantiles``: signal bins; ``min_samples``: fewest usable samples for an analysis;
    ``quantile_window``: past samples a sample's quintile is ranked against (720 hourly samples:
    30 days); ``quantile_min_history``: fewest past samples before a sample gets a quintile."""

    sample: str = "1h"
    periods: tuple[int, ...] = (1, 4, 24)
    quantiles: int = 5
    min_samples: int = 100
    quantile_window: int = 720
    quantile_min_history: int = 100


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


def converted(spec: StrategySpec, signal: SignalDef) -> tuple[str, ...]:
    """The signal's lengths that the strategy counts in quote updates (to convert to bars)."""
    return tuple(k for k in signal.lengths if spec.param(k).unit in QUOTE_UPDATE_UNITS)


def bar_lengths(spec: StrategySpec, signal: SignalDef, quotes_per_bar: float | None) -> dict[str, int]:
    """The signal's lengths in bars: a length in quote updates / quotes per bar (at least 2), a
    length already in bars as it is."""
    values = spec.resolved()
    convert = converted(spec, signal)
    if convert and quotes_per_bar is None:
        raise ValueError(f"{spec.name}: {', '.join(convert)} count quote updates; converting them needs a quotes-per-bar figure")
    return {k: max(2, int(round(values[k] / max(quotes_per_bar or 1.0, 1e-9)))) if k in convert else int(values[k])
            for k in signal.lengths}


@dataclass(frozen=True)
class MonthLengths:
    """What one month's signal runs with: ``lengths`` in bars, the ``quotes_per_bar`` that
    converted them (None when nothing needed converting), where that figure came from
    (``source``), and ``from_ts`` (ns): samples before it are left out (the first month's
    calibration day), None when every sample counts."""

    lengths: dict[str, int]
    quotes_per_bar: float | None
    source: str
    from_ts: int | None = None


def point_in_time_lengths(spec: StrategySpec, signal: SignalDef, months: dict[str, pl.DataFrame]) -> dict[str, MonthLengths]:
    """Each month's lengths from what was known before it (see the module docstring): ``months``
    maps ``YYYY-MM`` to its bars (``ts``, ``quotes``), in any order."""
    out: dict[str, MonthLengths] = {}
    if not converted(spec, signal):
        lengths = bar_lengths(spec, signal, None)
        return {m: MonthLengths(lengths, None, "lengths counted in bars: no conversion") for m in sorted(months)}
    quotes = bars = 0
    for month in sorted(months):
        frame = months[month]
        if bars:
            qpb = quotes / bars
            earlier = sorted(m for m in months if m < month)
            out[month] = MonthLengths(bar_lengths(spec, signal, qpb), qpb, f"mean of {earlier[0]}..{earlier[-1]}" if len(earlier) > 1
                                      else f"mean of {earlier[0]}")
        else:
            start = int(frame["ts"].min()) if frame.height else 0
            day = frame.filter(pl.col("ts") < start + CALIBRATION_NS)
            qpb = float(day["quotes"].sum()) / day.height if day.height else 1.0
            until = datetime.fromtimestamp((start + CALIBRATION_NS) / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
            out[month] = MonthLengths(bar_lengths(spec, signal, qpb), qpb,
                                      f"first month: its own first day of bars (its samples before {until} UTC left out)",
                                      start + CALIBRATION_NS)
        quotes += int(frame["quotes"].sum())
        bars += frame.height
    return out


def trailing_quantiles(signal: np.ndarray, quantiles: int, window: int, min_history: int) -> np.ndarray:
    """Quantile bin (1..``quantiles``, 0 = none yet) of each value against the ``window`` values
    before it: bin k when the share of those strictly below it lies in [(k-1)/q, k/q). Values
    with fewer than ``min_history`` predecessors get 0 (the cold start). Ranks from pandas'
    rolling rank (a skip list: O(n log window))."""
    import pandas as pd

    s = pd.Series(signal, dtype="float64")
    roll = s.rolling(window + 1, min_periods=min_history + 1)
    below = roll.rank(method="min").to_numpy() - 1.0  # predecessors strictly below (ties: none of them)
    past = roll.count().to_numpy() - 1.0
    ok = np.isfinite(below) & (past >= min_history)
    out = np.zeros(len(s), dtype=np.int64)
    out[ok] = np.minimum(np.floor(below[ok] / past[ok] * quantiles).astype(np.int64) + 1, quantiles)
    return out


def warmup_bars(signal: SignalDef, lengths: dict[str, int]) -> int:
    """Bars the signal needs before it is sampled: what the strategy waits before it trades
    (three lengths of the slow EMA: :data:`~quant_assets.strategies.registry.EMA_WARMUP_LENGTHS`;
    a full window for a rolling z-score)."""
    from quant_assets.strategies.registry import EMA_WARMUP_LENGTHS

    if "slow_period" in lengths:
        return EMA_WARMUP_LENGTHS * int(lengths["slow_period"])
    return max(int(v) for v in lengths.values()) if lengths else 0


def samples(bars: pl.DataFrame, signal: SignalDef, lengths: dict[str, int], sample_ns: int,
            history: pl.DataFrame | None = None) -> pl.DataFrame:
    """(ts ns, mid, signal) at the last bar of each ``sample_ns`` interval of one month's bars
    (those with a quote), the signal run over ``history`` (the previous month's bars) first;
    samples before the signal has seen its :func:`warmup_bars` are dropped."""
    quote_bars = lambda f: f.select("ts", "mid_close").filter(pl.col("mid_close").is_not_null())  # noqa: E731
    month = quote_bars(bars)
    warm = warmup_bars(signal, lengths)
    hist = quote_bars(history).tail(warm) if history is not None and warm else month.clear()
    start = int(month["ts"].min()) if month.height else 0
    df = pl.concat([hist, month]).with_columns(signal=signal.expr(lengths), seen=pl.int_range(1, pl.len() + 1))
    df = df.filter((pl.col("ts") >= start) & (pl.col("seen") >= warm)).with_columns(bucket=pl.col("ts") // sample_ns)
    out = df.group_by("bucket", maintain_order=True).agg(pl.col("ts").last(), pl.col("mid_close").last().alias("mid"),
                                                          pl.col("signal").last())
    return out.drop("bucket").filter(pl.col("signal").is_finite())


def quintile_turnover(quantile: np.ndarray, month: np.ndarray, q: int, period: int) -> float | None:
    """Among samples in bin ``q``, the share that were in another bin ``period`` samples
    earlier in the same month (alphalens's quantile turnover, for one asset over time). Bin 0
    (no quintile yet) is no bin: such pairs are left out."""
    now, before = quantile[period:], quantile[:-period]
    same_month = month[period:] == month[:-period]
    mask = (now == q) & same_month & (before > 0)
    return float(np.mean(before[mask] != q)) if mask.any() else None


@dataclass(frozen=True)
class FactorResult:
    report: dict[str, Any]
    ic: pl.DataFrame  # month × period
    quantile_returns: pl.DataFrame  # quantile × period, bps
    png: bytes | None
    samples: pl.DataFrame | None = None  # per sample: signal, trailing quintile, forward returns (samples.parquet)


def analyse(frame: pl.DataFrame, symbol: str, settings: FactorSettings = FactorSettings()) -> FactorResult:
    """alphalens on (ts ns, month, mid, signal) samples of one symbol (see the module docstring)."""
    import alphalens as al
    import pandas as pd
    from scipy import stats

    if frame.height < settings.min_samples:
        raise FactorInputError(f"{symbol}: {frame.height} signal samples; the analysis needs at least {settings.min_samples}")
    frame = frame.sort("ts")
    labels = [horizon_label(p, settings.sample) for p in settings.periods]
    idx = pd.DatetimeIndex(pd.to_datetime(frame["ts"].to_numpy(), unit="ns", utc=True))
    prices = pd.DataFrame({symbol: frame["mid"].to_numpy()}, index=idx)
    factor = pd.Series(frame["signal"].to_numpy(), index=pd.MultiIndex.from_arrays([idx, [symbol] * len(idx)],
                                                                                   names=["date", "asset"]))
    month = frame["month"].to_numpy()
    quintile = trailing_quantiles(frame["signal"].to_numpy(), settings.quantiles, settings.quantile_window,
                                  settings.quantile_min_history)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        # Intraday samples never fit alphalens's inferred business-day calendar; it says so and
        # keeps the observed spacing, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        fwd = al.utils.compute_forward_returns(factor, prices, periods=settings.periods, cumulative_returns=True)
        # alphalens names horizons by the time they span in the data (1h2m for a 1-sample
        # horizon of irregular samples); name them by the horizon asked for instead.
        fwd.columns = labels
        fwd = fwd.reindex(factor.index)
        for label, p in zip(labels, settings.periods, strict=True):
            # A forward return counts only inside its month: the p-th sample ahead is in it.
            inside = np.zeros(len(month), dtype=bool)
            inside[:-p] = month[p:] == month[:-p]
            fwd.loc[~inside, label] = np.nan
        months = pd.to_datetime(frame["month"].to_list()).tz_localize("UTC")
        by_month = pd.MultiIndex.from_arrays([months, idx], names=["date", "asset"])
        data = fwd.set_axis(by_month)
        data["factor"] = factor.to_numpy()
        data["factor_quantile"] = np.where(quintile > 0, quintile, np.nan)
        # alphalens's own functions on the point-in-time quintiles (see the module docstring):
        # the IC of each horizon over the samples that have its forward return, quantile means
        # over the samples that have a quintile (a missing forward return is skipped).
        ic = pd.concat([_ic(data, label) for label in labels], axis=1)
        binned = data[data["factor_quantile"].notna()].astype({"factor_quantile": "int64"})
        if len(binned) == 0:
            raise FactorInputError(f"{symbol}: no sample has {settings.quantile_min_history} samples before it to rank against")
        mean_q, err_q = al.performance.mean_return_by_quantile(binned, by_date=False, demeaned=False)
    mean_q = mean_q.reindex(range(1, settings.quantiles + 1))
    err_q = err_q.reindex(range(1, settings.quantiles + 1))
    per_period: dict[str, Any] = {}
    for label, p in zip(labels, settings.periods, strict=True):
        col = ic[label].dropna()
        n = len(col)
        sd = float(col.std(ddof=1)) if n > 1 else None
        t = stats.ttest_1samp(col, 0.0) if n > 1 and sd and sd > 0 else None
        top, bottom = mean_q.loc[settings.quantiles, label], mean_q.loc[1, label]
        per_period[label] = {
            "samples_ahead": p,
            "ic_mean": _num(col.mean()) if n else None,
            "ic_std": _num(sd),
            "ic_ir": _num(col.mean() / sd) if sd else None,
            "ic_t": _num(t.statistic) if t is not None else None,
            "ic_p": _num(t.pvalue) if t is not None else None,
            "months": n,
            "ic_samples": int(data[label].notna().sum()),
            "quantile_mean_bps": [_num(float(v) * BPS) for v in mean_q[label]],
            "top_minus_bottom_bps": _num(float(top - bottom) * BPS),
            "turnover_top": quintile_turnover(quintile, month, settings.quantiles, p),
            "turnover_bottom": quintile_turnover(quintile, month, 1, p),
        }
    ic_frame = pl.DataFrame({"month": [d.strftime("%Y-%m") for d in ic.index],
                             **{label: ic[label].to_numpy().astype(np.float64) for label in labels}})
    qr = pl.DataFrame({"quantile": np.arange(1, settings.quantiles + 1, dtype=np.int64),
                       **{label: mean_q[label].to_numpy() * BPS for label in labels},
                       **{f"{label}_stderr": err_q[label].to_numpy() * BPS for label in labels}})
    per_sample = frame.select("ts", "month", "mid", "signal").with_columns(
        quantile=pl.when(pl.lit(pl.Series(quintile)) > 0).then(pl.lit(pl.Series(quintile))).cast(pl.Int8),
        **{f"fwd_{label}": pl.Series(data[label].to_numpy(), dtype=pl.Float64).fill_nan(None) for label in labels},
    )
    kept = len(binned)
    report = {"symbol": symbol, "samples": len(frame), "kept": kept, "kept_fraction": kept / len(frame), "periods": per_period,
              "quantiles": settings.quantiles, "sample": settings.sample,
              "quantile_window": settings.quantile_window, "quantile_min_history": settings.quantile_min_history,
              "quantile_cold_start": len(frame) - kept,
              "months": sorted(set(frame["month"].to_list()))}
    return FactorResult(report, ic_frame, qr, _png(mean_q, ic, labels, symbol), per_sample)


def _ic(data, label: str):
    """alphalens's IC by month of one horizon, over the samples that have its forward return
    (one column, NaN where a month has none)."""
    import alphalens as al
    import pandas as pd

    rows = data[[label, "factor"]].dropna()
    if len(rows) == 0:
        return pd.DataFrame({label: pd.Series(dtype="float64")})
    return al.performance.factor_information_coefficient(rows)[[label]]


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
    samples.parquet: each sample's signal, trailing quintile and forward returns, factor.png,
    manifest.json)."""
    paths = sorted(lake.bars_path(interval, symbol, "*").parent.parent.glob("month=*/part-0.parquet"))
    if not paths:
        raise FactorInputError(f"{symbol}: no {interval} bars in the lake (materialise bars_{interval} first)")
    months = {p.parent.name.removeprefix("month="): pl.read_parquet(p, columns=["ts", "mid_close", "quotes"]) for p in paths}
    # Each month's lengths from the months before it only (see the module docstring).
    per_month = point_in_time_lengths(spec, signal, months)
    sample_ns = parse_interval(settings.sample)
    from quant_assets.engines.warmup import previous_month

    frame = pl.concat([samples(bars, signal, per_month[month].lengths, sample_ns, months.get(previous_month(month)))
                       .filter(pl.col("ts") >= (per_month[month].from_ts or 0)).with_columns(month=pl.lit(month))
                       for month, bars in months.items()])
    try:
        result = analyse(frame, symbol, settings)
    except FactorInputError as exc:
        # Too little data to judge a signal: an explained empty report (as a sweep of too few
        # bars gives an explained empty grid) rather than a failed roll-up.
        result = FactorResult({"symbol": symbol, "samples": frame.height, "kept": 0, "periods": {}, "reason": str(exc),
                               "quantiles": settings.quantiles, "sample": settings.sample, "months": sorted(months)},
                              pl.DataFrame(schema={"month": pl.String}), pl.DataFrame(schema={"quantile": pl.Int64}), None)
    result.report.update({"strategy": spec.name, "signal": signal.name, "signal_description": signal.description,
                          "lengths_bars": {m: v.lengths for m, v in per_month.items()},
                          "quotes_per_bar": {m: {"value": v.quotes_per_bar, "from": v.source} for m, v in per_month.items()},
                          "bar_interval": interval, "factor_version": FACTOR_VERSION,
                          "bars_sha256": {p.parent.name: file_sha256(p) for p in paths}})
    final = lake.factor_dir(spec.name, symbol)
    with lake.lock(f"factors-{spec.name}-{symbol}"), atomic_dir(final, "factors") as out:
        lake.write_json(result.report, out / "report.json")
        lake.write_parquet(result.ic, out / "ic.parquet")
        lake.write_parquet(result.quantile_returns, out / "quantile_returns.parquet")
        names = ["report.json", "ic.parquet", "quantile_returns.parquet"]
        if result.samples is not None:
            lake.write_parquet(result.samples, out / "samples.parquet")
            names.append("samples.parquet")
        if result.png:
            (out / "factor.png").write_bytes(result.png)
        hashes = {n: file_sha256(out / n) for n in names}
        lake.write_json({"strategy": spec.name, "symbol": symbol, "files": hashes}, out / "manifest.json")
    return FactorOutput(final, result, hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24])
