"""Walk-forward optimisation, one fold per month, incrementally.

A fold is one out-of-sample month M of one strategy on one symbol:

1. **In sample**: the sweeps of the months before M (the last ``in_sample_months`` for a
   rolling window, or every swept month since the first, up to ``max_anchored_months`` back,
   for an anchored one) have kept every combination's hourly returns
   (:mod:`quant_assets.research.sweep_returns`). Chained over those months, each combination
   gets its Sharpe ratio and its **deflated** Sharpe ratio (vectorbt's, with N = the grid's
   size and the variance of Sharpe observed across the grid: the best of N tries is biased
   upwards); the combination with the highest deflated Sharpe is chosen (ties: the higher
   Sharpe, then the lower index). Nothing of M is read to choose.
2. **Out of sample**: the chosen combination runs event-driven on M with the real engine and
   the slice's venue profile, warmed on M−1 like every backtest
   (:func:`~quant_assets.engines.runner.run_backtest` into the fold's folder; it never touches
   the strategy's own slice, and it enters the trials ledger as the parameter set it is).

Per fold (``fold.parquet``, one row; ``oos/`` the out-of-sample run): the months read, the
choice with its in-sample Sharpe and deflated Sharpe, and the out-of-sample Sharpe (hourly
returns of the equity, annualised like the in-sample ones: ``sqrt(24 × trading_days)``),
return, PnL and trades; the fold's walk-forward efficiency = OOS Sharpe / IS Sharpe, null when the
in-sample Sharpe is below :data:`MIN_IS_SHARPE` (a ratio to a loss, or to a Sharpe near zero,
says nothing: an IS Sharpe of 0.001 turned an OOS Sharpe of -4 into an "efficiency" of -5,000).

:func:`run_walkforward` stitches every fold of a symbol (the out-of-sample curve chained month
to month, as the roll-ups chain backtests): its metric set on daily returns, the walk-forward
efficiency = stitched OOS Sharpe / mean IS Sharpe of the choices, and the parameter path.

A new month adds one fold: its own (the folds before it read only earlier months, and are not
stale); the stitched report is re-made from the fold files (cheap).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import ParamError, StrategySpec

WF_VERSION = "1"
#: Smallest in-sample Sharpe (annualised) a walk-forward efficiency is computed against.
MIN_IS_SHARPE = 0.5
SETTINGS_ENV = "QUANT_WALKFORWARD"

FOLD_SCHEMA: dict[str, pl.DataType] = {
    "oos_month": pl.String(), "mode": pl.String(), "in_sample": pl.String(), "in_sample_months": pl.Int64(),
    "in_sample_hours": pl.Int64(), "missing": pl.String(), "combinations": pl.Int64(), "params_bars": pl.String(),
    "event_params": pl.String(), "is_sharpe": pl.Float64(), "is_deflated_sharpe": pl.Float64(), "is_sharpe_rank": pl.Int64(),
    "var_sharpe_annual": pl.Float64(), "oos_sharpe": pl.Float64(), "oos_return": pl.Float64(), "oos_pnl": pl.Float64(),
    "oos_fills": pl.Int64(), "oos_max_drawdown": pl.Float64(), "wfe": pl.Float64(), "reason": pl.String(),
}


class NoInSample(Exception):
    """No earlier month has sweep returns to choose from: the fold cannot be made (yet)."""


@dataclass(frozen=True)
class WalkForwardSettings:
    """``in_sample_months``: months of a rolling in-sample window; ``anchored``: every swept month
    before the fold instead (reaching at most ``max_anchored_months`` back: the dependency's
    window in Dagster)."""

    in_sample_months: int = 3
    anchored: bool = False
    max_anchored_months: int = 36

    @property
    def reach(self) -> int:
        """Months before the fold a fold may read."""
        return self.max_anchored_months if self.anchored else self.in_sample_months

    @property
    def mode(self) -> str:
        return f"anchored (up to {self.max_anchored_months} months)" if self.anchored else f"rolling {self.in_sample_months} months"

    @classmethod
    def from_env(cls) -> WalkForwardSettings:
        """``$QUANT_WALKFORWARD``: ``rolling:K`` (default ``rolling:3``) or ``anchored[:MAX]``."""
        text = (os.environ.get(SETTINGS_ENV) or "rolling:3").strip()
        kind, _, n = text.partition(":")
        try:
            k = int(n) if n else None
        except ValueError:
            k = -1
        if kind == "rolling" and k is not None and k >= 1:
            return cls(in_sample_months=k)
        if kind == "anchored" and (k is None or k >= 1):
            return cls(anchored=True, max_anchored_months=k or 36)
        raise ValueError(f"{SETTINGS_ENV}={text!r}: expected rolling:K or anchored[:MAX] with whole months >= 1")


def _shift(month: str, k: int) -> str:
    y, m = divmod(int(month[:4]) * 12 + int(month[5:7]) - 1 + k, 12)
    return f"{y:04d}-{m + 1:02d}"


def in_sample_months(lake: Lake, strategy: str, symbol: str, month: str, settings: WalkForwardSettings) -> list[str]:
    """The months before ``month`` in the fold's window whose published sweep kept returns (a
    sweep of too few bars ranks nothing and keeps none)."""
    from quant_assets.research.sweep_returns import FILE

    window = [_shift(month, -k) for k in range(settings.reach, 0, -1)]
    return [m for m in window if (lake.sweep_dir(strategy, symbol, m) / "manifest.json").exists()
            and (lake.sweep_dir(strategy, symbol, m) / FILE).exists()]


@dataclass(frozen=True)
class Choice:
    """The in-sample choice: grid index, Sharpe and deflated Sharpe (annualised, hourly
    returns), rank by Sharpe (1 = best), the grid's size and Sharpe variance."""

    index: int
    sharpe: float | None
    deflated_sharpe: float | None
    sharpe_rank: int
    combinations: int
    var_sharpe: float | None


def choose(returns: np.ndarray, trading_days: int) -> Choice:
    """The combination with the highest deflated Sharpe over ``returns`` (hours × combinations)."""
    import pandas as pd
    import vectorbt as vbt  # noqa: F401  (the .vbt accessor)

    n = returns.shape[1]
    per_year = 24.0 * trading_days
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = returns.std(axis=0, ddof=1)
        sharpe = np.where(sd > 0, returns.mean(axis=0) / sd * math.sqrt(per_year), np.nan)
    finite = sharpe[np.isfinite(sharpe)]
    if not len(finite):
        raise NoInSample("no combination has in-sample returns with variance: nothing to choose from")
    var = float(np.var(finite, ddof=1)) if len(finite) > 1 else None
    dsr = np.full(n, np.nan)
    if var and n > 1:
        acc = pd.DataFrame(returns).vbt.returns(freq=pd.Timedelta(hours=1), year_freq=pd.Timedelta(days=trading_days))
        dsr = np.asarray(acc.deflated_sharpe_ratio(nb_trials=n, var_sharpe=var), dtype=np.float64)
    # Highest deflated Sharpe, then Sharpe, then the lower index (np.lexsort: last key first).
    key_dsr = np.where(np.isfinite(dsr), dsr, -np.inf)
    key_sr = np.where(np.isfinite(sharpe), sharpe, -np.inf)
    best = int(np.lexsort((np.arange(n), -key_sr, -key_dsr))[0])
    rank = int(1 + np.sum(key_sr > key_sr[best]))
    return Choice(best, float(sharpe[best]) if np.isfinite(sharpe[best]) else None,
                  float(dsr[best]) if np.isfinite(dsr[best]) else None, rank, n, var)


def efficiency(oos_sharpe: float | None, is_sharpe: float | None) -> float | None:
    """OOS Sharpe / IS Sharpe, or None where the in-sample Sharpe is below :data:`MIN_IS_SHARPE`."""
    if oos_sharpe is None or is_sharpe is None or is_sharpe < MIN_IS_SHARPE:
        return None
    return oos_sharpe / is_sharpe


def hourly_sharpe(equity: pl.DataFrame, interval_s: float, trading_days: int) -> tuple[float | None, int]:
    """(annualised Sharpe of the equity's hourly returns, hours): the in-sample figures' basis."""
    from quant_assets.analytics.returns import sample_returns

    rs = sample_returns(equity, interval_s, trading_days)
    r = rs.returns
    if not len(r):
        return None, 0
    hourly = ((1.0 + r).groupby(r.index.floor("h")).prod() - 1.0).to_numpy()
    if len(hourly) < 2 or float(np.std(hourly, ddof=1)) == 0.0:
        return None, len(hourly)
    return float(np.mean(hourly) / np.std(hourly, ddof=1) * math.sqrt(24.0 * trading_days)), len(hourly)


@dataclass(frozen=True)
class FoldOutput:
    directory: Path
    row: dict[str, Any]
    data_version: str


def run_fold(lake: Lake, spec: StrategySpec, symbol: str, month: str, trading_days: int,
             settings: WalkForwardSettings = WalkForwardSettings()) -> FoldOutput:
    """The fold whose out-of-sample month is ``month`` (see the module docstring). Raises
    :class:`NoInSample` when no earlier month in the window has sweep returns."""
    from quant_assets.analytics.periods import period_metrics
    from quant_assets.analytics.returns import sample_returns
    from quant_assets.engines.runner import run_backtest
    from quant_assets.research.handoff import to_event_params
    from quant_assets.research.run import quotes_per_bar, read_bars
    from quant_assets.research.sweep_returns import read_sweep_returns

    months = in_sample_months(lake, spec.name, symbol, month, settings)
    if not months:
        raise NoInSample(f"{spec.name} {symbol}: no sweep in the {settings.mode} before {month}: the fold waits for one")
    sr = read_sweep_returns(lake, spec.name, symbol, months)
    if not sr.months or not len(sr.ts):
        raise NoInSample(f"{spec.name} {symbol}: the sweeps before {month} kept no returns ({sr.missing})")
    choice = choose(sr.returns, trading_days)
    names = [c for c in sr.combos.columns if c != "combo"]
    bar_params = {k: sr.combos[k][choice.index] for k in names}
    last = json.loads((lake.sweep_dir(spec.name, symbol, sr.months[-1]) / "summary.json").read_text())
    interval = last.get("interval", "1m")
    _, last_bars = read_bars(lake, interval, symbol, sr.months[-1])
    # Lengths as the event-driven strategy counts them; quotes per bar (for a strategy on quote
    # updates) from the last in-sample month: known before the fold's month.
    event = to_event_params(spec, bar_params, quotes_per_bar(last_bars), float(last.get("interval_s", 60.0)))
    row: dict[str, Any] = {
        "oos_month": month, "mode": settings.mode, "in_sample": ",".join(sr.months), "in_sample_months": len(sr.months),
        "in_sample_hours": len(sr.ts), "missing": json.dumps(sr.missing, sort_keys=True) if sr.missing else None,
        "combinations": choice.combinations, "params_bars": json.dumps(bar_params, sort_keys=True),
        "event_params": json.dumps(event, sort_keys=True), "is_sharpe": choice.sharpe,
        "is_deflated_sharpe": choice.deflated_sharpe, "is_sharpe_rank": choice.sharpe_rank,
        "var_sharpe_annual": choice.var_sharpe,
    }
    final = lake.wf_fold_dir(spec.name, symbol, month)
    with lake.lock(f"wf-fold-{spec.name}-{symbol}-{month}"), atomic_dir(final, "wf-fold") as out:
        try:
            candidate = spec.with_values(event)
        except ParamError as exc:
            row["reason"] = f"the chosen combination is not a valid event-driven parameter set: {exc}"
            candidate = None
        if candidate is not None:
            bt = run_backtest(lake, candidate, symbol, month, out_dir=out / "oos")
            interval_s = float(bt.manifest["params"].get("equity_interval_s", 60.0))
            oos_sharpe, _ = hourly_sharpe(bt.equity, interval_s, trading_days)
            m = period_metrics(sample_returns(bt.equity, interval_s, trading_days)).values
            wfe = efficiency(oos_sharpe, choice.sharpe)
            row.update({"oos_sharpe": oos_sharpe, "oos_return": m.get("total_return"), "oos_pnl": float(bt.summary["pnl"]),
                        "oos_fills": int(bt.summary["fills"]), "oos_max_drawdown": m.get("max_drawdown"), "wfe": wfe,
                        "reason": (f"chose rank {choice.sharpe_rank} of {choice.combinations} by deflated Sharpe on "
                                   f"{len(sr.months)} month(s) before {month}"
                                   + ("" if wfe is not None else f"; no walk-forward efficiency: the in-sample Sharpe is below "
                                                                  f"{MIN_IS_SHARPE} (or the OOS Sharpe is undefined)"))})
        table = pl.DataFrame([row], schema=FOLD_SCHEMA)
        lake.write_parquet(table, out / "fold.parquet")
        files = {"fold.parquet": file_sha256(out / "fold.parquet")}
        inputs = {m: file_sha256(lake.sweep_dir(spec.name, symbol, m) / "returns.parquet") for m in sr.months}
        lake.write_json({"strategy": spec.name, "symbol": symbol, "month": month, "wf_version": WF_VERSION,
                         "settings": settings.__dict__, "in_sample_returns": inputs, "files": files}, out / "manifest.json")
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:24]
    return FoldOutput(final, table.row(0, named=True), version)


def fold_months(lake: Lake, strategy: str, symbol: str) -> list[str]:
    """Months with a published fold for strategy × symbol."""
    root = lake.wf_fold_dir(strategy, symbol, "x").parent
    if not root.is_dir():
        return []
    return sorted(p.name.removeprefix("month=") for p in root.glob("month=*") if (p / "manifest.json").exists())


@dataclass(frozen=True)
class WalkForwardOutput:
    directory: Path
    report: dict[str, Any]
    folds: pl.DataFrame
    data_version: str


def run_walkforward(lake: Lake, strategy: str, symbol: str, trading_days: int) -> WalkForwardOutput:
    """Stitch every fold of strategy × symbol (see the module docstring) and publish
    ``walkforward/strategy=X/symbol=S/`` (report.json, folds.parquet, daily.parquet, manifest.json)."""
    from quant_assets.analytics.periods import period_metrics
    from quant_assets.analytics.returns import SECONDS_PER_DAY, ReturnSeries, daily, sample_returns, stitch
    from quant_assets.critique.oos import read_backtest_dir

    months = fold_months(lake, strategy, symbol)
    if not months:
        raise NoInSample(f"{strategy} {symbol}: no walk-forward fold yet")
    rows, series, hashes = [], [], {}
    for m in months:
        d = lake.wf_fold_dir(strategy, symbol, m)
        rows.append(pl.read_parquet(d / "fold.parquet"))
        hashes[m] = json.loads((d / "manifest.json").read_text())["files"]["fold.parquet"]
        if (d / "oos" / "manifest.json").exists():
            bt = read_backtest_dir(d / "oos")
            series.append(sample_returns(bt.equity, bt.interval_s, trading_days))
    folds = pl.concat(rows)
    report: dict[str, Any] = {"strategy": strategy, "symbol": symbol, "folds": len(months), "months": months,
                              "wf_version": WF_VERSION}
    day = None
    if series:
        stitched = stitch(series)
        day = daily(stitched.returns)
        daily_rs = ReturnSeries(day, float(SECONDS_PER_DAY), trading_days, stitched.start_equity, stitched.final_equity,
                                notes=stitched.notes, wiped_out=stitched.wiped_out)
        m = period_metrics(daily_rs)
        hourly = (1.0 + stitched.returns).groupby(stitched.returns.index.floor("h")).prod() - 1.0
        h = hourly.to_numpy()
        oos_sharpe = (float(h.mean() / h.std(ddof=1) * math.sqrt(24.0 * trading_days))
                      if len(h) > 1 and h.std(ddof=1) > 0 else None)
        is_mean = folds["is_sharpe"].drop_nulls().mean()
        report.update({
            "metrics": m.values, "null_reasons": m.reasons, "oos_sharpe_hourly": oos_sharpe,
            "is_sharpe_mean": is_mean,
            "walk_forward_efficiency": efficiency(oos_sharpe, is_mean),
            "walk_forward_efficiency_reason": (None if efficiency(oos_sharpe, is_mean) is not None else
                                               f"undefined: the mean in-sample Sharpe is below {MIN_IS_SHARPE} or the OOS Sharpe "
                                               "is undefined"),
            "oos_positive_share": float((folds["oos_return"].drop_nulls() > 0).mean()) if folds["oos_return"].drop_nulls().len() else None,
            "parameter_path": folds.select("oos_month", "params_bars").to_dicts(),
            "notes": stitched.notes,
        })
    out_dir = lake.walkforward_dir(strategy, symbol)
    daily_df = (pl.DataFrame({"date": pl.Series(day.index.to_numpy().astype("datetime64[D]")).cast(pl.Date),
                              "return": day.to_numpy()}) if day is not None and len(day) else
                pl.DataFrame(schema={"date": pl.Date, "return": pl.Float64}))
    with lake.lock(f"walkforward-{strategy}-{symbol}"), atomic_dir(out_dir, "walkforward") as new:
        lake.write_parquet(folds, new / "folds.parquet")
        lake.write_parquet(daily_df, new / "daily.parquet")
        lake.write_json(report, new / "report.json")
        files = {n: file_sha256(new / n) for n in ("folds.parquet", "daily.parquet", "report.json")}
        lake.write_json({"strategy": strategy, "symbol": symbol, "fold_files": hashes, "files": files}, new / "manifest.json")
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:24]
    return WalkForwardOutput(out_dir, report, folds, version)
