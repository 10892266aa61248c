"""Cross-sectional factor analysis: one month × one universe, judged by alphalens as designed.

:mod:`quant_assets.research.factors` runs alphalens per symbol as a time series. Here the
cross-section is what alphalens was built for: at each sample time, each strategy's signal is
computed for every member of a universe (a list of partition symbols), ranked across the
members, and judged against the members' forward returns:

- **information coefficient** (``ic.parquet``): per sample time, the Spearman correlation across
  members of the signal with the forward return over each horizon; the report gives its mean,
  spread, ratio and t-statistic over the month's sample times;
- **quantile returns** (``quantile_returns.parquet``): the mean forward return of each
  cross-sectional quantile, demeaned across the members at each time (alphalens's default), in
  bps, and the top-minus-bottom spread;
- **turnover** (``turnover.parquet``): alphalens's quantile turnover (share of a quantile's
  members that were not in it ``p`` samples earlier) and factor-rank autocorrelation (Spearman
  of the members' ranks now against ``p`` samples earlier), by horizon.

**Sample times.** A month's common grid is every ``sample`` boundary inside it (UTC, ns): the
grid time ``g`` closes the interval ``(g - sample, g]``. A member's value at ``g`` is the signal
and mid of its last bar with a quote that closes in that interval (:func:`factors.samples`, the
same sampling, warm-up and signal definitions as the per-symbol analysis). A member with no such
bar is missing at ``g``: never carried from an earlier interval. So the staleness of a value is
below one sample interval, and ``sample`` must be a whole multiple of the bar interval.

**Forward returns** are alphalens's (:func:`alphalens.utils.compute_forward_returns` on the grid
of member mids, cumulative over ``p`` samples), with one limit added: alphalens forward-fills a
missing price without bound; here a forward return counts only where the member has its own
sample at ``g + p`` (or within ``fill_limit`` samples before it; 0 by default: no filling).

**Month end.** Only the month's own bars (and, for warm-up, the previous month's) are read,
never the next month's: a sample time whose horizon ``g + p × sample`` runs past the month's
last grid time has no forward return for that horizon and is left out of that horizon's IC,
quantile returns and turnover. The month's numbers therefore never change when a later month
arrives (tested), at the cost of the last ``p`` samples of each horizon.

**Quantiles** are formed at each sample time across the members that have a signal there
(alphalens's :func:`~alphalens.utils.quantize_factor`, its default cross-sectional binning),
never across time. They are *not* formed with :func:`~alphalens.utils.get_clean_factor`: that
first drops the members lacking any horizon's forward return, so whether a member trades at
``g + 15`` samples would decide the bins at ``g`` (the set ranked would depend on later data).
Why not :func:`~alphalens.utils.get_clean_factor_and_forward_returns` in one call: it is
:func:`compute_forward_returns` (unbounded forward fill) followed by ``get_clean_factor``; this
module calls the same two steps' alphalens functions with the fill limit and the binning above
in between, and alphalens's own IC, quantile-return and turnover functions after.

**Null with a reason**: fewer than 2 members with bars in the month, fewer members than
``quantiles × min_per_quantile``, or fewer than ``min_times`` sample times where that many
members have a signal. Sample times with fewer members present are left out (counted in the
report).

**Lengths** (EMA periods, z-score window) are each member's own, from the strategy's current
parameters, converted point in time by :func:`factors.point_in_time_lengths` where they count
quote updates (reading the ``quotes`` column of the member's months up to and including this
one, never later ones). A custom :class:`~quant_assets.research.factors.SignalDef` with no
lengths (tests plant look-ahead signals this way) is used as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research.bars import parse_interval
from quant_assets.research.factors import (
    BPS, SignalDef, converted, horizon_label, point_in_time_lengths, samples,
)
from quant_assets.strategies.spec import StrategySpec

XS_VERSION = "1"
_UNIVERSE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for missing or non-finite values."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class CrossSectionInputError(ValueError):
    """Bad settings or inputs (not: too little data, which is a null result with its reason)."""


@dataclass(frozen=True)
class CrossSectionSettings:
    """``sample``: grid step (a whole multiple of the bar interval); ``periods``: forward-return
    horizons, in samples; ``quantiles``: cross-sectional bins at each time; ``min_per_quantile``:
    members each bin needs, so a time counts when ``max(2, quantiles × min_per_quantile)``
    members have a signal; ``fill_limit``: samples a forward price may be carried from the
    member's last sample (0: none); ``min_times``: fewest counted sample times for a result.

    Hourly samples by default, as the per-symbol analysis: alphalens computes the IC, the bins
    and the turnover with Python calls per sample time, so a month × 10 members of 1m bars costs
    ~125 s with every bar a sample against ~7 s hourly (``bench/xsection_bench.py``);
    ``sample="1m", periods=(1, 5, 15)`` asks for bar horizons."""

    sample: str = "1h"
    periods: tuple[int, ...] = (1, 4, 24)
    quantiles: int = 5
    min_per_quantile: int = 1
    fill_limit: int = 0
    min_times: int = 30

    @property
    def min_members(self) -> int:
        return max(2, self.quantiles * self.min_per_quantile)


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of a ``YYYY-MM`` month, ns since epoch (UTC)."""
    try:
        d = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise CrossSectionInputError(f"month {month!r}: expected YYYY-MM") from None
    nxt = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    ns = lambda x: int(datetime(x.year, x.month, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000  # noqa: E731
    return ns(d), ns(nxt)


def month_grid(month: str, sample_ns: int) -> np.ndarray:
    """The month's common sample times (ns): every ``sample_ns`` boundary in (start, end]."""
    start, end = month_bounds(month)
    return np.arange(start + sample_ns, end + 1, sample_ns, dtype=np.int64)


@dataclass(frozen=True)
class MemberSamples:
    """One member's samples of a month: (``time``: grid time ns, ``mid``, ``signal``: null where
    the signal is not defined yet), or none with ``reason``; ``info``: what they were built from (lengths, files and their hashes)."""

    symbol: str
    frame: pl.DataFrame | None
    info: dict[str, Any]
    reason: str | None = None


def member_samples(lake: Lake, spec: StrategySpec, signal: SignalDef, symbol: str, month: str,
                   interval: str, sample_ns: int) -> MemberSamples:
    """Signal samples of one member on the month's grid (see the module docstring). Reads the
    month's bars, the previous month's (warm-up) and, for lengths counted in quote updates, the
    ``ts``/``quotes`` columns of the member's months up to this one; never a later month."""
    from quant_assets.engines.warmup import previous_month

    path = lake.bars_path(interval, symbol, month)
    if not path.exists():
        return MemberSamples(symbol, None, {}, f"no {interval} bars for {month} ({lake.relative(path)})")
    bars = pl.read_parquet(path, columns=["ts", "mid_close", "quotes"])
    prev_path = lake.bars_path(interval, symbol, previous_month(month))
    history = pl.read_parquet(prev_path, columns=["ts", "mid_close"]) if prev_path.exists() else None
    files = {lake.relative(path): file_sha256(path)}
    if history is not None:
        files[lake.relative(prev_path)] = file_sha256(prev_path)
    if converted(spec, signal):
        # Point-in-time conversion of lengths in quote updates: this month and the ones before.
        root = path.parent.parent
        months = {p.parent.name.removeprefix("month="): p for p in root.glob("month=*/part-0.parquet")}
        known = {m: (bars if m == month else pl.read_parquet(p, columns=["ts", "quotes"]))
                 for m, p in months.items() if m <= month}
    else:
        known = {month: bars}
    lengths = point_in_time_lengths(spec, signal, known)[month]
    sig = samples(bars, signal, lengths.lengths, sample_ns, history)
    if lengths.from_ts is not None:
        sig = sig.filter(pl.col("ts") >= lengths.from_ts)
    # The grid time closing the interval that holds the sampled bar's start: bar starts are on
    # the bar grid and ``sample`` is a multiple of the bar interval, so the bar closes by it.
    grid_time = (pl.col("ts") // sample_ns + 1) * sample_ns
    # The member's price at each grid time is its last quote bar's mid in the interval whether
    # or not the signal is defined there (warm-up, the end of a look-ahead): a forward return
    # ends on a price, not on a signal. The same rule as ``samples``' sampling.
    mids = (bars.filter(pl.col("mid_close").is_not_null()).group_by(time=grid_time, maintain_order=True)
            .agg(mid=pl.col("mid_close").last()))
    frame = mids.join(sig.select(time=grid_time, signal="signal"), on="time", how="left").sort("time")
    info = {"lengths_bars": lengths.lengths, "quotes_per_bar": lengths.quotes_per_bar, "lengths_from": lengths.source,
            "warmup_history": history is not None, "price_samples": frame.height, "signal_samples": int(frame["signal"].is_finite().sum()), "bars": files}
    return MemberSamples(symbol, frame, info)


@dataclass(frozen=True)
class CrossSectionResult:
    """The month × universe analysis. ``report``: settings, inputs, per-horizon numbers, and
    ``reason`` (None when computed); ``ic``: per sample time (``time`` ns) the IC of each
    horizon; ``quantile_returns``: quantile × horizon, demeaned mean forward return and its
    standard error (bps); ``turnover``: (metric, quantile, horizon) means over the month."""

    report: dict[str, Any]
    ic: pl.DataFrame
    quantile_returns: pl.DataFrame
    turnover: pl.DataFrame
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The key numbers with their units, for a reader (the critic) in a few lines."""
        r = self.report
        out: dict[str, Any] = {
            "strategy": r.get("strategy"), "universe": r.get("universe"), "month": r.get("month"),
            "members_used": r.get("members_used"), "sample_times": r.get("sample_times_used"),
            "sample": r.get("sample"), "reason": self.reason,
        }
        for label, p in (r.get("periods") or {}).items():
            out[f"ic_mean_{label}"] = p["ic_mean"]
            out[f"ic_t_{label}"] = p["ic_t"]
            out[f"top_minus_bottom_bps_{label}"] = p["top_minus_bottom_bps"]
            out[f"turnover_top_{label}"] = p["turnover_top"]
            out[f"rank_autocorrelation_{label}"] = p["rank_autocorrelation"]
        out["units"] = {
            "ic_mean": "Spearman rank correlation across members at each sample time, averaged over the month (-1..1)",
            "ic_t": "t-statistic of the per-time IC against 0",
            "top_minus_bottom_bps": "mean forward return of the top quantile minus the bottom, demeaned across members, bps",
            "turnover_top": "share of the top quantile's members new to it since the horizon ago (0..1)",
            "rank_autocorrelation": "Spearman of the members' signal ranks now vs the horizon ago (-1..1)",
            "horizons": f"in samples of {r.get('sample')}, labelled by the time they span",
        }
        return out


def _empty(labels: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ic = pl.DataFrame(schema={"time": pl.Int64, **{label: pl.Float64 for label in labels}})
    qr = pl.DataFrame(schema={"quantile": pl.Int64, **{label: pl.Float64 for label in labels},
                              **{f"{label}_stderr": pl.Float64 for label in labels}})
    to = pl.DataFrame(schema={"metric": pl.String, "quantile": pl.Int64, "horizon": pl.String,
                              "samples_ahead": pl.Int64, "mean": pl.Float64, "observations": pl.Int64})
    return ic, qr, to


def null_result(report: dict[str, Any], reason: str, labels: list[str]) -> CrossSectionResult:
    """An explained empty result: every number null, ``reason`` says why."""
    return CrossSectionResult({**report, "reason": reason, "periods": None}, *_empty(labels), reason=reason)


def analyse(members: dict[str, pl.DataFrame], month: str, settings: CrossSectionSettings = CrossSectionSettings(),
            base: dict[str, Any] | None = None) -> CrossSectionResult:
    """alphalens on the members' (``time``, ``mid``, ``signal``) samples of one month (see the
    module docstring). ``members`` maps symbol to samples (members without bars left out by the
    caller); ``base``: report fields to carry (strategy, universe, inputs)."""
    sample_ns = parse_interval(settings.sample)
    labels = [horizon_label(p, settings.sample) for p in settings.periods]
    report: dict[str, Any] = {**(base or {}), "month": month, "sample": settings.sample, "quantiles": settings.quantiles,
                              "min_per_quantile": settings.min_per_quantile, "min_members_per_time": settings.min_members,
                              "fill_limit_samples": settings.fill_limit, "horizons_samples": dict(zip(labels, settings.periods)),
                              "xs_version": XS_VERSION, "members_used": sorted(members), "month_end": (
                                  "only the month's bars: a sample time whose horizon runs past the month's last grid "
                                  "time has no forward return for that horizon (left out); the next month is never read")}
    if len(members) < 2:
        return null_result(report, f"{len(members)} member(s) with bars in {month}; a cross-section needs at least 2", labels)
    if len(members) < settings.min_members:
        return null_result(report, f"{len(members)} members with bars in {month} cannot fill {settings.quantiles} quantiles "
                                   f"with {settings.min_per_quantile} each (need {settings.min_members}); use fewer quantiles",
                           labels)
    grid = month_grid(month, sample_ns)
    long = pl.concat([f.select("time", "mid", "signal").with_columns(asset=pl.lit(s)) for s, f in sorted(members.items())])
    long = long.filter(pl.col("time").is_in(grid) & pl.col("mid").is_finite())
    per_time = long.filter(pl.col("signal").is_finite()).group_by("time").len()
    kept_times = per_time.filter(pl.col("len") >= settings.min_members)["time"]
    report["sample_times_grid"] = int(len(grid))
    report["sample_times_with_any_member"] = per_time.height
    report["sample_times_used"] = kept_times.len()
    report["sample_times_too_few_members"] = per_time.height - kept_times.len()
    if kept_times.len() < settings.min_times:
        return null_result(report, f"{kept_times.len()} sample times have {settings.min_members} or more members with a signal; "
                                   f"the analysis needs at least {settings.min_times}", labels)
    # Forward prices use every member sample (a member's price at g+p counts even where too few
    # members had a signal at g+p); factor rows only the times that count.
    factor_rows = long.filter(pl.col("time").is_in(kept_times) & pl.col("signal").is_finite()).sort("time", "asset")
    return _alphalens(report, long, factor_rows, grid, sample_ns, labels, settings)


def _alphalens(report: dict[str, Any], long: pl.DataFrame, factor_rows: pl.DataFrame, grid: np.ndarray, sample_ns: int,
               labels: list[str], settings: CrossSectionSettings) -> CrossSectionResult:
    import alphalens as al
    import pandas as pd
    from scipy import stats

    assets = sorted(set(long["asset"].to_list()))
    # The date level carries the grid's frequency, so alphalens's turnover and rank
    # autocorrelation lag by p grid steps (not p observed dates) and see gaps as gaps.
    dates = pd.DatetimeIndex(pd.to_datetime(grid, unit="ns", utc=True), freq=pd.Timedelta(sample_ns, "ns"))
    pos = np.searchsorted(grid, factor_rows["time"].to_numpy())
    apos = np.searchsorted(np.array(assets), factor_rows["asset"].to_numpy())
    index = pd.MultiIndex(levels=[dates, pd.Index(assets)], codes=[pos, apos], names=["date", "asset"])
    factor = pd.Series(factor_rows["signal"].to_numpy(), index=index, name="factor")
    wide = long.pivot(on="asset", index="time", values="mid").sort("time")
    prices = (pd.DataFrame({a: wide[a].to_numpy() if a in wide.columns else np.nan for a in assets},
                           index=pd.DatetimeIndex(pd.to_datetime(wide["time"].to_numpy(), unit="ns", utc=True)))
              .reindex(dates))
    # Whether each (time, member) has a price it may use: its own sample, or one within the limit.
    usable = prices.ffill(limit=settings.fill_limit).notna() if settings.fill_limit else prices.notna()
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), np.errstate(all="ignore"):
        # Intraday grids never fit alphalens's inferred business-day calendar; it warns and keeps
        # the observed spacing; Spearman of a constant column warns and gives NaN (left out).
        warnings.simplefilter("ignore")
        fwd = al.utils.compute_forward_returns(factor, prices, periods=settings.periods, cumulative_returns=True)
        fwd.columns = labels  # alphalens names horizons by the time spanned; name them as asked
        fwd = fwd.reindex(factor.index)
        for label, p in zip(labels, settings.periods, strict=True):
            # alphalens forward-fills missing prices without bound: keep a forward return only
            # where the member's price at g + p is usable; past the month's last grid time none is.
            ok = usable.shift(-p, fill_value=False).stack(future_stack=True).reindex(factor.index).to_numpy(dtype=bool)
            fwd.loc[~ok, label] = np.nan
        data = fwd.copy()
        data["factor"] = factor.to_numpy()
        # Cross-sectional bins at each time over the members with a signal there (see the docstring).
        quant = al.utils.quantize_factor(data[["factor"]], quantiles=settings.quantiles, no_raise=True)
        data["factor_quantile"] = quant.reindex(data.index)
        binned = data[data["factor_quantile"].notna()].astype({"factor_quantile": "int64"})
        times_unbinned = int(data.index.get_level_values("date").nunique() - binned.index.get_level_values("date").nunique())
        ic_cols, per_period = {}, {}
        if len(binned):
            mean_q, err_q = al.performance.mean_return_by_quantile(binned, by_date=False, demeaned=True)
            mean_q = mean_q.reindex(range(1, settings.quantiles + 1))
            err_q = err_q.reindex(range(1, settings.quantiles + 1))
        turnover_rows: list[dict[str, Any]] = []
        for label, p in zip(labels, settings.periods, strict=True):
            rows = data[[label, "factor"]].dropna()
            ic = (al.performance.factor_information_coefficient(rows)[label].dropna() if len(rows)
                  else pd.Series(dtype="float64"))
            ic_cols[label] = ic
            n = len(ic)
            sd = float(ic.std(ddof=1)) if n > 1 else None
            t = stats.ttest_1samp(ic, 0.0) if n > 1 and sd and sd > 0 else None
            # Turnover and rank autocorrelation compare the bins / ranks at g with those at
            # g - p (p grid steps, both inside the month), counted at g: no forward data.
            ranks = al.performance.factor_rank_autocorrelation(data, period=p).dropna()
            qt = {q: al.performance.quantile_turnover(binned["factor_quantile"], q, period=p).dropna()
                  for q in range(1, settings.quantiles + 1)} if len(binned) else {}
            turnover_rows.append({"metric": "rank_autocorrelation", "quantile": None, "horizon": label, "samples_ahead": p,
                                  "mean": _num(ranks.mean()) if len(ranks) else None, "observations": len(ranks)})
            turnover_rows += [{"metric": "quantile_turnover", "quantile": q, "horizon": label, "samples_ahead": p,
                               "mean": _num(s.mean()) if len(s) else None, "observations": len(s)} for q, s in qt.items()]
            top = mean_q.loc[settings.quantiles, label] if len(binned) else np.nan
            bottom = mean_q.loc[1, label] if len(binned) else np.nan
            per_period[label] = {
                "samples_ahead": p,
                "ic_mean": _num(ic.mean()) if n else None,
                "ic_std": _num(sd),
                "ic_ir": _num(ic.mean() / sd) if sd else None,
                "ic_t": _num(t.statistic) if t is not None else None,
                "ic_p": _num(t.pvalue) if t is not None else None,
                "ic_times": n,
                "forward_returns": int(data[label].notna().sum()),
                "quantile_mean_bps": [_num(v * BPS) for v in mean_q[label]] if len(binned) else None,
                "top_minus_bottom_bps": _num((top - bottom) * BPS),
                "turnover_top": _num(qt[settings.quantiles].mean()) if qt and len(qt[settings.quantiles]) else None,
                "turnover_bottom": _num(qt[1].mean()) if qt and len(qt[1]) else None,
                "rank_autocorrelation": _num(ranks.mean()) if len(ranks) else None,
            }
    report.update({"periods": per_period, "reason": None, "factor_rows": len(data), "binned_rows": len(binned),
                   "sample_times_without_quantiles": times_unbinned,
                   "members_per_time_mean": _num(len(data) / max(1, data.index.get_level_values("date").nunique()))})
    ic_times = sorted({int(d.value) for s in ic_cols.values() for d in s.index})
    ic_frame = pl.DataFrame({"time": np.array(ic_times, dtype=np.int64),
                             **{label: s.set_axis([int(d.value) for d in s.index]).reindex(ic_times).to_numpy(dtype=np.float64)
                                for label, s in ic_cols.items()}}) if ic_times else _empty(labels)[0]
    if len(binned):
        qr = pl.DataFrame({"quantile": np.arange(1, settings.quantiles + 1, dtype=np.int64),
                           **{label: mean_q[label].to_numpy(dtype=np.float64) * BPS for label in labels},
                           **{f"{label}_stderr": err_q[label].to_numpy(dtype=np.float64) * BPS for label in labels}})
    else:
        qr = _empty(labels)[1]
    turnover = pl.DataFrame(turnover_rows, schema=_empty(labels)[2].schema)
    return CrossSectionResult(report, ic_frame, qr, turnover)


@dataclass(frozen=True)
class CrossSectionOutput:
    directory: Path
    result: CrossSectionResult
    data_version: str
    members: dict[str, Any] = field(default_factory=dict)


def cross_section(lake: Lake, spec: StrategySpec, signal: SignalDef, universe: str, members: list[str], month: str,
                  interval: str = "1m", settings: CrossSectionSettings = CrossSectionSettings()) -> CrossSectionResult:
    """The analysis of ``spec``'s ``signal`` across ``members`` in ``month`` (no writing)."""
    if not _UNIVERSE.match(universe):
        raise CrossSectionInputError(f"universe {universe!r}: expected letters, digits, '_', '-' or '.'")
    if not settings.periods or any(int(p) < 1 for p in settings.periods):
        raise CrossSectionInputError(f"periods {settings.periods!r}: expected horizons of 1 sample or more")
    if settings.quantiles < 1 or settings.min_per_quantile < 1 or settings.fill_limit < 0:
        raise CrossSectionInputError(f"quantiles {settings.quantiles}, min_per_quantile {settings.min_per_quantile}, "
                                     f"fill_limit {settings.fill_limit}: expected >= 1, >= 1, >= 0")
    sample_ns, bar_ns = parse_interval(settings.sample), parse_interval(interval)
    if sample_ns % bar_ns:
        raise CrossSectionInputError(f"sample {settings.sample!r} is not a whole multiple of the bar interval {interval!r}")
    if len(set(members)) != len(members):
        raise CrossSectionInputError(f"universe {universe}: members listed twice: {sorted({m for m in members if members.count(m) > 1})}")
    got = [member_samples(lake, spec, signal, s, month, interval, sample_ns) for s in members]
    present = {m.symbol: m.frame for m in got if m.frame is not None and m.frame["signal"].is_finite().any()}
    base = {"strategy": spec.name, "signal": signal.name, "signal_description": signal.description, "universe": universe,
            "members": list(members), "bar_interval": interval,
            "members_missing": {m.symbol: m.reason or "no sample with a finite signal" for m in got if m.symbol not in present},
            "inputs": {m.symbol: m.info for m in got if m.info}}
    return analyse(present, month, settings, base)


def write(lake: Lake, result: CrossSectionResult) -> CrossSectionOutput:
    """Publish ``result`` to ``factors_xs/strategy=X/universe=U/month=M/`` (ic.parquet,
    quantile_returns.parquet, turnover.parquet, report.json with the summary; manifest.json
    last, naming the files' hashes)."""
    r = result.report
    final = lake.factor_xs_dir(r["strategy"], r["universe"], r["month"])
    with lake.lock(f"factors_xs-{r['strategy']}-{r['universe']}-{r['month']}"), atomic_dir(final, "factors_xs") as out:
        lake.write_parquet(result.ic, out / "ic.parquet")
        lake.write_parquet(result.quantile_returns, out / "quantile_returns.parquet")
        lake.write_parquet(result.turnover, out / "turnover.parquet")
        lake.write_json({**r, "summary": result.summary()}, out / "report.json")
        names = ["ic.parquet", "quantile_returns.parquet", "turnover.parquet", "report.json"]
        hashes = {n: file_sha256(out / n) for n in names}
        lake.write_json({"strategy": r["strategy"], "universe": r["universe"], "month": r["month"], "files": hashes},
                        out / "manifest.json")
    return CrossSectionOutput(final, result, hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24])


def run_cross_section(lake: Lake, spec: StrategySpec, signal: SignalDef, universe: str, members: list[str], month: str,
                      interval: str = "1m", settings: CrossSectionSettings = CrossSectionSettings()) -> CrossSectionOutput:
    """:func:`cross_section` then :func:`write`."""
    return write(lake, cross_section(lake, spec, signal, universe, members, month, interval, settings))
