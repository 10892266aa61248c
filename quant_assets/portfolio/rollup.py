"""The roll-up of a portfolio: several strategy × instrument *lines* combined into one book.

**Lines.** A line is one strategy on one instrument (``ema_cross:BTCUSDT``). Its daily returns
are made exactly as a single-symbol report makes them (:mod:`quant_assets.analytics.rollup`):
each month's backtest ``equity.parquet`` is put on its equity grid
(:func:`~quant_assets.analytics.returns.sample_returns`) and compounded by UTC day
(:func:`~quant_assets.analytics.returns.daily`). Months are independent runs from the same cash,
so chaining them reinvests each month's result; a month that wiped the account out ends the
line (nothing is left to reinvest). A line with no return on a day is **null with its reason**
(no backtest slice for that month, an unreadable slice, the account wiped out earlier, no
equity sample that day, e.g. a closed FX day), never a zero.

**Weights.** Target weights per line and day, non-negative, summing to 1:

* ``fixed``: given weights (default equal), normalised to sum to 1;
* ``inverse_vol``: proportional to 1 / the standard deviation of the line's daily returns over
  the ``window_days`` calendar days **before** day t (never t itself or later: a weight is known
  at the start of its day; nothing about a month depends on a later month). A line with fewer
  than ``min_days`` returns in that window, or none that vary, has no weight that day (null,
  with the reason).

The book is **rebalanced daily** to those targets (a constant-mix portfolio; a buy-and-hold mix
would drift with the lines' returns). On a day where some lines have no return or no weight,
the targets of the lines that have both are renormalised to sum to 1 and the others are listed
in the day's ``reason``: the capital meant for a missing line is put in the others, not assumed
to earn nothing. A day where no line has both is null for the portfolio, with the reason, and
left out of its returns (its equity carries over).

**Equity** is a multiple of the starting capital (1.0 at the start), ``E_t = E_{t-1} (1 + r_t)``
with ``r_t = Σ_i w_i,t r_i,t``.

**Contribution to return**: line i's profit in units of the starting capital,
``Σ_t E_{t-1} w_i,t r_i,t``. The lines' contributions add up exactly to the portfolio's total
return ``E_T - 1`` (each day's profit ``E_{t-1} r_t`` is split by line).

**Contribution to drawdown**: over the portfolio's worst peak-to-trough episode (peak: the
highest equity before the trough, the start counting as 1.0; trough: where ``E_t / max_{s<=t}
E_s - 1`` is lowest), line i's profit during the episode over the peak equity,
``Σ_{peak<t<=trough} E_{t-1} w_i,t r_i,t / E_peak``. They add up exactly to the max drawdown
(a negative fraction; a line with a positive contribution cushioned it).

**Correlation** of the lines' daily returns: Pearson, pairwise over the days both lines have a
return (at least :data:`MIN_CORRELATION_DAYS`), null with the reason otherwise.

**Deflated Sharpe**: :func:`quant_assets.analytics.robustness.deflated_sharpe` on the
portfolio's daily returns with N = **every line tried**: each parameter set tried for each of
the portfolio's strategy implementations (the trials ledger,
:func:`quant_assets.analytics.trials.count`) could have been a line on each member of the
universe, so ``N = Σ_impl count(impl) × members``. This counts lines, not portfolios: sets and
weightings tried before this one are not in the ledger and not counted. The variance of Sharpe
is the observed variance of the lines' own annualised daily Sharpe ratios over the portfolio's
days (single lines disperse more than books of them, so the bar errs high), else the
estimator's, with the reason.

Output (:func:`write`) at ``<lake>/portfolios/universe=U/set=P/``: ``daily.parquet`` (date,
return, equity, drawdown, lines used, reason), ``lines.parquet`` (date × line: return, target
and applied weight, reason), ``correlation.parquet``, ``contributions.parquet``,
``portfolio.json`` (metrics with null reasons, deflated Sharpe, drawdown episode, what each
line is missing), ``tearsheet.html`` (quantstats, daily returns) and ``manifest.json`` (inputs:
each line-month's backtest data version; files), written last.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from quant_assets.analytics.returns import SECONDS_PER_DAY, ReturnSeries, daily, sample_returns
from quant_assets.analytics.trial_sharpes import TrialSharpes
from quant_assets.lake.store import Lake, atomic_dir, file_sha256

#: Bump when a definition here changes (weights, contributions, the trial count).
PORTFOLIO_VERSION = "1"
FIXED, INVERSE_VOL = "fixed", "inverse_vol"
#: Fewest common days for a correlation worth stating.
MIN_CORRELATION_DAYS = 5
#: Fewest days for a line's Sharpe ratio in the observed variance (as trial_sharpes.MIN_DAYS).
MIN_SHARPE_DAYS = 10


class PortfolioError(ValueError):
    """A portfolio that cannot be built as asked; the message says what is wrong."""


@dataclass(frozen=True, order=True)
class Line:
    """One strategy on one instrument (partition symbol)."""

    strategy: str
    symbol: str

    @property
    def label(self) -> str:
        return f"{self.strategy}:{self.symbol}"


@dataclass(frozen=True)
class LineReturns:
    """A line's daily simple returns (``returns``: tz-naive UTC dates at midnight, days with a
    return only) and the days known to be missing with why (``missing``: date -> reason).
    ``inputs``: what they were read from (month -> backtest data version or the reason)."""

    line: Line
    returns: pd.Series
    missing: Mapping[pd.Timestamp, str] = field(default_factory=dict)
    trading_days: int = 365
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Weighting:
    """How lines are weighted: ``fixed`` (``weights`` by line label, default equal) or
    ``inverse_vol`` (trailing ``window_days`` calendar days before each day, at least
    ``min_days`` returns in them)."""

    kind: str = FIXED
    weights: Mapping[str, float] | None = None
    window_days: int = 20
    min_days: int = 10

    def describe(self) -> dict[str, Any]:
        if self.kind == FIXED:
            return {"kind": FIXED, "weights": dict(self.weights) if self.weights else "equal"}
        return {"kind": INVERSE_VOL, "window_days": self.window_days, "min_days": self.min_days,
                "definition": "1 / std of the line's daily returns over the window_days calendar days before the day"}


@dataclass(frozen=True)
class PortfolioResult:
    """A portfolio roll-up (see the module docstring for every definition)."""

    universe: str
    name: str
    lines: list[Line]
    weighting: Weighting
    trading_days: int
    daily: pl.DataFrame          # date, return, equity, drawdown, lines_used, reason
    line_table: pl.DataFrame     # date, line, strategy, symbol, return, target_weight, weight, reason
    correlation: pl.DataFrame    # line_a, line_b, correlation, days, reason
    contributions: pl.DataFrame  # line, strategy, symbol, days, days_missing, return_contribution, drawdown_contribution, mean_weight
    report: dict[str, Any]
    inputs: dict[str, dict[str, str]]

    @property
    def returns(self) -> pd.Series:
        """The portfolio's daily returns (days with a return only)."""
        d = self.daily.filter(pl.col("return").is_not_null())
        return pd.Series(d["return"].to_numpy(), index=pd.DatetimeIndex(d["date"].cast(pl.Datetime("ns")).to_numpy()),
                         name="returns", dtype="float64")


# ---- lines from the lake --------------------------------------------------------------

def _month_days(month: str) -> pd.DatetimeIndex:
    start = pd.Timestamp(f"{month}-01")
    return pd.date_range(start, start + pd.offsets.MonthEnd(0), freq="D")


def backtest_months(lake: Lake, line: Line) -> list[str]:
    """Months with a published backtest slice (its manifest exists) of ``line``."""
    root = lake.backtest_dir(line.strategy, line.symbol, "x").parent
    if not root.is_dir():
        return []
    return sorted(p.name.removeprefix("month=") for p in root.glob("month=*") if (p / "manifest.json").exists())


def line_returns(lake: Lake, line: Line, months: Sequence[str], trading_days: int) -> LineReturns:
    """``line``'s daily returns over ``months`` from its backtests' equity curves, each missing
    day with its reason (see the module docstring). Reads one equity curve per month."""
    from quant_assets.analytics.slice_metrics import BacktestSliceError, backtest_data_version, read_backtest

    parts: list[pd.Series] = []
    why: dict[str, str] = {}  # month -> why it has no returns (absent: it has a backtest)
    inputs: dict[str, str] = {}
    wiped: str | None = None
    for month in sorted(months):
        if wiped is not None:
            why[month] = f"the account was wiped out in {wiped}: nothing left to reinvest in later months"
        elif not (lake.backtest_dir(line.strategy, line.symbol, month) / "manifest.json").exists():
            why[month] = f"no backtest slice for {month} (materialise backtest_{line.strategy} for {month}|{line.symbol})"
        else:
            try:
                bt = read_backtest(lake, line.strategy, line.symbol, month)
            except BacktestSliceError as exc:
                why[month] = f"backtest slice of {month} unreadable: {exc}"
            else:
                inputs[month] = backtest_data_version(bt.manifest)
                rs = sample_returns(bt.equity, bt.interval_s, trading_days)
                parts.append(rs.returns)
                wiped = month if rs.wiped_out else None
        inputs.setdefault(month, why.get(month, ""))
    # Compounded by day over all months at once, as the report does (daily(stitch(...))): a
    # month's closing sample can fall just past its end, on the first day of the next month.
    grid = pd.concat(parts).sort_index(kind="stable") if parts else pd.Series([], dtype="float64", index=pd.DatetimeIndex([]))
    returns = daily(grid)
    missing: dict[pd.Timestamp, str] = {}
    for month in sorted(months):
        for d in _month_days(month).difference(returns.index):
            missing[d] = why.get(month, f"no return sampled on this day of {month} (no equity sample, or a closed market)")
    return LineReturns(line, returns.astype("float64"), missing, trading_days, inputs)


def lines_tried(lake: Lake, impls: Sequence[str], n_members: int) -> int:
    """N for the deflated Sharpe: every parameter set tried of each distinct implementation,
    each a possible line on each of ``n_members`` instruments (see the module docstring)."""
    from quant_assets.analytics import trials

    return max(1, sum(trials.count(lake, impl) for impl in sorted(set(impls))) * max(1, n_members))


def build(lake: Lake, universe: str, name: str, strategies: Sequence[str], weighting: Weighting = Weighting(),
          months: Sequence[str] | None = None, universes_path: Path | None = None,
          impls: Mapping[str, str] | None = None) -> PortfolioResult:
    """The portfolio of ``strategies`` × the members of ``universe``, over ``months`` (default:
    every month any line has a backtest for). ``impls``: strategy -> implementation, for the
    trial count (default: the strategy registry's)."""
    from quant_assets.lake.instruments import trading_days_of
    from quant_assets.portfolio.universes import members

    symbols = members(universe, universes_path)
    lines = [Line(s, m) for s in strategies for m in symbols]
    if not lines:
        raise PortfolioError(f"portfolio {name!r} of universe {universe!r}: no strategy given")
    if months is None:
        months = sorted({m for line in lines for m in backtest_months(lake, line)})
    if not months:
        raise PortfolioError(f"portfolio {name!r} of universe {universe!r}: no line has a backtest slice yet "
                             f"({', '.join(line.label for line in lines)})")
    per_line = [line_returns(lake, line, months, trading_days_of(lake, line.symbol, month=None)) for line in lines]
    if impls is None:
        from quant_assets.strategies.registry import load as load_specs

        specs = load_specs()
        unknown = [s for s in strategies if s not in specs]
        if unknown:
            raise PortfolioError(f"portfolio {name!r}: unknown strategies {unknown} (registered: {', '.join(specs)})")
        impls = {s: specs[s].impl for s in strategies}
    n_trials = lines_tried(lake, [impls[s] for s in strategies], len(symbols))
    return combine(per_line, weighting, universe=universe, name=name, n_trials=n_trials, months=list(months))


# ---- the combination (pure: data in, data out) -----------------------------------------

def _target_weights(rets: pd.DataFrame, weighting: Weighting) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target weights, reasons where a weight is null): calendar × line."""
    labels = list(rets.columns)
    reasons = pd.DataFrame(None, index=rets.index, columns=labels, dtype=object)
    if weighting.kind == FIXED:
        given = dict(weighting.weights) if weighting.weights else {lab: 1.0 for lab in labels}
        unknown = sorted(set(given) - set(labels))
        if unknown:
            raise PortfolioError(f"fixed weights name lines that are not in the portfolio: {unknown} (lines: {labels})")
        w = np.array([float(given.get(lab, 0.0)) for lab in labels])
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise PortfolioError(f"fixed weights must be finite, non-negative and not all zero: {given}")
        target = pd.DataFrame(np.tile(w / w.sum(), (len(rets), 1)), index=rets.index, columns=labels)
        return target.where(target > 0), reasons.where(target > 0, "fixed weight 0")
    if weighting.kind != INVERSE_VOL:
        raise PortfolioError(f"unknown weighting {weighting.kind!r}: expected {FIXED!r} or {INVERSE_VOL!r}")
    if weighting.window_days < 2 or not 2 <= weighting.min_days <= weighting.window_days:
        raise PortfolioError(f"inverse_vol needs 2 <= min_days <= window_days (got {weighting.min_days}, {weighting.window_days})")
    # shift(1): the window of day t ends at t-1, so a weight never sees its own day or later.
    past = rets.shift(1).rolling(weighting.window_days, min_periods=1)
    sd, n = past.std(ddof=1), past.count()
    enough = n >= weighting.min_days
    varies = sd > 0
    inv = (1.0 / sd).where(enough & varies)
    target = inv.div(inv.sum(axis=1), axis=0)
    reasons = reasons.mask(~enough, f"fewer than {weighting.min_days} daily returns in the {weighting.window_days} days before")
    reasons = reasons.mask(enough & ~varies, f"no variance in the {weighting.window_days} days before: inverse volatility undefined")
    return target, reasons


def _drawdown_episode(equity: np.ndarray) -> tuple[int, int, float]:
    """(peak index, trough index, max drawdown) of an equity path whose element 0 is the start."""
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1.0
    q = int(np.argmin(dd))
    p = int(np.argmax(equity[: q + 1]))
    return p, q, float(dd[q])


def _correlation(rets: pd.DataFrame) -> tuple[pl.DataFrame, dict[str, dict[str, float | None]]]:
    labels = list(rets.columns)
    present = rets.notna().astype(np.int64)
    common = present.T @ present
    corr = rets.corr(method="pearson", min_periods=MIN_CORRELATION_DAYS)
    rows, matrix = [], {a: {} for a in labels}
    for a in labels:
        for b in labels:
            days = int(common.loc[a, b])
            c = corr.loc[a, b]
            value = float(c) if pd.notna(c) and math.isfinite(c) else None
            reason = None
            if value is None:
                reason = (f"{days} common day(s) of returns: at least {MIN_CORRELATION_DAYS} are needed" if days < MIN_CORRELATION_DAYS
                          else "a line's returns have no variance over the common days")
            matrix[a][b] = value
            rows.append({"line_a": a, "line_b": b, "correlation": value, "days": days, "reason": reason})
    schema = {"line_a": pl.String, "line_b": pl.String, "correlation": pl.Float64, "days": pl.Int64, "reason": pl.String}
    return pl.DataFrame(rows, schema=schema), matrix


def _lines_sharpe_variance(rets: pd.DataFrame, trading_days: int) -> TrialSharpes:
    """The observed variance of the lines' annualised daily Sharpe ratios over the portfolio's days."""
    sharpes = []
    for lab in rets.columns:
        x = rets[lab].dropna()
        if len(x) >= MIN_SHARPE_DAYS and float(x.std(ddof=1)) > 0:
            sharpes.append(float(x.mean() / x.std(ddof=1)) * math.sqrt(trading_days))
    source = "the portfolio's own lines (annualised daily Sharpe over the portfolio's days)"
    if len(sharpes) < 2:
        return TrialSharpes(None, len(sharpes), days=len(rets), source=source,
                            reason=f"{len(sharpes)} line(s) with a Sharpe ratio over at least {MIN_SHARPE_DAYS} days: a variance needs 2")
    return TrialSharpes(float(np.var(sharpes, ddof=1)), len(sharpes), days=len(rets), source=source)


def _missing_summary(lr: LineReturns, calendar: pd.DatetimeIndex) -> list[dict[str, Any]]:
    """A line's missing days grouped by reason: count, first and last day."""
    out: dict[str, list[pd.Timestamp]] = {}
    have = set(lr.returns.index)
    for d in calendar:
        if d not in have:
            out.setdefault(lr.missing.get(d, "no return on this day (outside the line's data)"), []).append(d)
    return [{"reason": r, "days": len(ds), "first": str(ds[0].date()), "last": str(ds[-1].date())} for r, ds in out.items()]


def combine(lines: Sequence[LineReturns], weighting: Weighting = Weighting(), *, universe: str, name: str,
            n_trials: int = 1, months: list[str] | None = None, trading_days: int | None = None) -> PortfolioResult:
    """Combine the lines' daily returns into the portfolio (see the module docstring).
    ``trading_days``: the annualisation (default: the lines', when they agree; 365 otherwise)."""
    from quant_assets.analytics.periods import period_metrics
    from quant_assets.analytics.robustness import deflated_sharpe

    if not lines:
        raise PortfolioError(f"portfolio {name!r} of universe {universe!r}: no line")
    labels = [lr.line.label for lr in lines]
    if len(set(labels)) != len(labels):
        raise PortfolioError(f"portfolio {name!r}: a line is listed twice ({labels})")
    notes: list[str] = []
    if trading_days is None:
        days_set = sorted({lr.trading_days for lr in lines})
        trading_days = days_set[0] if len(days_set) == 1 else 365
        if len(days_set) > 1:
            notes.append(f"the lines disagree on trading days per year ({days_set}): the book's days are the calendar "
                         "days of any line, annualised with 365")
    known = set().union(*(set(lr.returns.index) | set(lr.missing) for lr in lines))
    if not known:
        raise PortfolioError(f"portfolio {name!r} of universe {universe!r}: no line has a day of data")
    # Every calendar day from the first to the last: the inverse-vol window counts days, not rows.
    calendar = pd.date_range(min(known), max(known), freq="D")
    rets = pd.DataFrame({lr.line.label: lr.returns.reindex(calendar) for lr in lines}, index=calendar, dtype="float64")
    ret_reason = pd.DataFrame({lr.line.label: [None if pd.notna(v) else lr.missing.get(d, "no return on this day (outside the line's data)")
                                               for d, v in zip(calendar, rets[lr.line.label])] for lr in lines},
                              index=calendar, dtype=object)
    target, weight_reason = _target_weights(rets, weighting)
    usable = rets.notna() & target.notna()
    applied = target.where(usable)
    applied = applied.div(applied.sum(axis=1), axis=0)
    port = (applied * rets).sum(axis=1, min_count=1).where(usable.any(axis=1))

    # Equity with the start as element 0; null days carry the equity over.
    r = port.fillna(0.0).to_numpy()
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    prev = equity[:-1]
    pnl = applied.fillna(0.0).mul(prev, axis=0).mul(rets.fillna(0.0))  # E_{t-1} w_i,t r_i,t
    peak_i, trough_i, max_dd = _drawdown_episode(equity)
    running_peak = np.maximum.accumulate(equity)[1:]

    day_reasons = []
    for i, d in enumerate(calendar):
        out = [f"{lab}: {ret_reason.iat[i, j] or weight_reason.iat[i, j]}" for j, lab in enumerate(labels) if not usable.iat[i, j]]
        if not usable.iloc[i].any():
            day_reasons.append("no line has both a return and a weight: " + "; ".join(out))
        else:
            day_reasons.append(("left out, the others' weights renormalised: " + "; ".join(out)) if out else None)
    dates = pl.Series("date", calendar.to_numpy().astype("datetime64[D]")).cast(pl.Date)
    daily_df = pl.DataFrame({
        "date": dates, "return": pl.Series(port.to_numpy(), dtype=pl.Float64, nan_to_null=True),
        "equity": equity[1:], "drawdown": equity[1:] / running_peak - 1.0,
        "lines_used": usable.sum(axis=1).to_numpy().astype(np.int64), "reason": pl.Series(day_reasons, dtype=pl.String),
    })
    line_rows = []
    for j, lr in enumerate(lines):
        line_rows.append(pl.DataFrame({
            "date": dates, "line": lr.line.label, "strategy": lr.line.strategy, "symbol": lr.line.symbol,
            "return": pl.Series(rets.iloc[:, j].to_numpy(), dtype=pl.Float64, nan_to_null=True),
            "target_weight": pl.Series(target.iloc[:, j].to_numpy(), dtype=pl.Float64, nan_to_null=True),
            "weight": pl.Series(applied.iloc[:, j].to_numpy(), dtype=pl.Float64, nan_to_null=True),
            "reason": pl.Series([ret_reason.iat[i, j] or weight_reason.iat[i, j] if not usable.iat[i, j] else None
                                 for i in range(len(calendar))], dtype=pl.String),
        }))
    line_table = pl.concat(line_rows)

    correlation, matrix = _correlation(rets)
    episode = slice(peak_i, trough_i)  # pnl rows t with peak < t <= trough (pnl row k is day k+1 of equity)
    dd_contrib = (pnl.iloc[episode].sum(axis=0) / equity[peak_i]) if max_dd < 0 else None
    contributions = pl.DataFrame({
        "line": labels, "strategy": [lr.line.strategy for lr in lines], "symbol": [lr.line.symbol for lr in lines],
        "days": [int(rets[lab].notna().sum()) for lab in labels],
        "days_used": [int(usable[lab].sum()) for lab in labels],
        "days_missing": [int(rets[lab].isna().sum()) for lab in labels],
        "return_contribution": [float(pnl[lab].sum()) for lab in labels],
        "drawdown_contribution": [float(dd_contrib[lab]) if dd_contrib is not None else None for lab in labels],
        "mean_weight": [float(applied[lab].mean()) if usable[lab].any() else None for lab in labels],
    }, schema_overrides={"drawdown_contribution": pl.Float64, "mean_weight": pl.Float64})

    returns = port.dropna()
    final = float(equity[-1])
    metrics = period_metrics(ReturnSeries(returns.rename("returns"), float(SECONDS_PER_DAY), trading_days, 1.0, final))
    report: dict[str, Any] = {
        "universe": universe, "set": name, "portfolio_version": PORTFOLIO_VERSION,
        "lines": labels, "months": months, "weighting": weighting.describe(), "rebalancing": "daily, to the target weights",
        "trading_days": trading_days, "days": len(calendar), "days_with_return": len(returns),
        "total_return": final - 1.0,
        "metrics": metrics.values, "null_reasons": metrics.reasons,
        "max_drawdown": {"value": max_dd if max_dd < 0 else 0.0,
                         "peak": str(calendar[peak_i - 1].date()) if peak_i > 0 else "start",
                         "trough": str(calendar[trough_i - 1].date()) if trough_i > 0 else None,
                         "definition": "lowest equity / running peak - 1 (the start counts as a peak)"},
        "contributions": {
            "return": dict(zip(labels, contributions["return_contribution"].to_list())),
            "drawdown": dict(zip(labels, contributions["drawdown_contribution"].to_list())),
            "drawdown_reason": None if max_dd < 0 else "the portfolio never drew down",
            "definition": ("return: the line's daily profit E_{t-1} w_i r_i summed, in units of the starting capital (they add "
                           "up to the total return); drawdown: the same over the worst peak-to-trough episode, over the peak "
                           "equity (they add up to the max drawdown)"),
        },
        "correlation": matrix,
        "deflated_sharpe": deflated_sharpe(returns, trading_days, n_trials, _lines_sharpe_variance(rets, trading_days)),
        "n_trials_definition": "every line tried: parameter sets tried per strategy implementation x members of the universe",
        "missing": {lr.line.label: _missing_summary(lr, calendar) for lr in lines},
        "notes": notes,
    }
    return PortfolioResult(universe, name, [lr.line for lr in lines], weighting, trading_days, daily_df, line_table,
                           correlation, contributions, report, {lr.line.label: dict(lr.inputs) for lr in lines})


# ---- output ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortfolioOutput:
    directory: Path
    data_version: str
    tearsheet: Path | None


def write(lake: Lake, result: PortfolioResult, tearsheet: bool = True) -> PortfolioOutput:
    """Publish ``result`` at ``<lake>/portfolios/universe=U/set=P/`` (one folder, swapped in
    whole; ``manifest.json`` last). The data version hashes the Parquet and JSON files (the
    tearsheet carries the time it was made)."""
    out = lake.portfolio_dir(result.universe, result.name)
    files = {"daily.parquet": result.daily, "lines.parquet": result.line_table,
             "correlation.parquet": result.correlation, "contributions.parquet": result.contributions}
    returns = result.returns
    with lake.lock(f"portfolio-{result.universe}-{result.name}"), atomic_dir(out, "portfolio") as new:
        for fname, df in files.items():
            lake.write_parquet(df, new / fname)
        lake.write_json(result.report, new / "portfolio.json")
        hashes = {f: file_sha256(new / f) for f in (*files, "portfolio.json")}
        sheet = None
        if tearsheet and len(returns):
            from quant_assets.analytics.tearsheet import write_tearsheet

            write_tearsheet(returns, new / "tearsheet.html",
                            f"portfolio {result.name} on {result.universe} ({len(result.lines)} lines)", result.trading_days)
            sheet = "tearsheet.html"
        lake.write_json({"universe": result.universe, "set": result.name, "portfolio_version": PORTFOLIO_VERSION,
                         "inputs": result.inputs, "files": hashes, "tearsheet": sheet}, new / "manifest.json")
    version = hashlib.sha256("|".join(hashes[k] for k in sorted(hashes)).encode()).hexdigest()[:24]
    return PortfolioOutput(out, version, out / sheet if sheet else None)


def read_report(lake: Lake, universe: str, name: str) -> dict[str, Any]:
    """The published ``portfolio.json`` of a set."""
    return json.loads((lake.portfolio_dir(universe, name) / "portfolio.json").read_text())


__all__ = ["FIXED", "INVERSE_VOL", "Line", "LineReturns", "PortfolioError", "PortfolioResult", "Weighting",
           "build", "combine", "line_returns", "lines_tried", "write"]
