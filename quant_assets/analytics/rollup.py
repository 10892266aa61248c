"""The roll-up of one strategy on one symbol across all its months.

Months are independent runs (each starts flat with the same cash), so the stitched curve
chains their returns: a month's result is reinvested into the next. The roll-up's headline
metric set is on the stitched **daily** returns (annualised with the instrument's trading days),
the frequency of its tearsheet, bootstrap intervals and deflated Sharpe, so a point estimate
and its interval always describe the same returns; the same set on the equity grid (intraday,
where drawdowns are deeper) is kept beside it as ``metrics_grid``. Trade statistics cover every
month's trades. Robustness: :mod:`quant_assets.analytics.robustness`. Risk on the capital
actually deployed (:mod:`quant_assets.analytics.deployed`) is reported beside the account's
figures (``deployed``): the months' PnL paths end to end over the peak capital at risk.

Output at ``<lake>/reports/strategy=X/symbol=S/``:

``report.json``          metrics (with null reasons), trade stats, bootstrap, Monte Carlo,
                         deflated Sharpe (N = the trials ledger's parameter sets; the variance of
                         Sharpe observed across the sweep's trials over the same months where
                         their returns are kept, else the estimator's, with the reason),
                         walk-forward summary, months used
``monthly.parquet``      one row per month: its headline numbers from its metric set
``daily.parquet``        the stitched curve by UTC day: return, equity (from the starting cash), drawdown
``walk_forward.parquet`` the in-sample / out-of-sample windows
``tearsheet.html``       quantstats' report (daily returns)
``manifest.json``        inputs (each month's metrics and backtest data versions), files, written last

The data version hashes the JSON and Parquet outputs; the HTML is left out as it carries the
time it was made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.analytics import robustness, trial_sharpes
from quant_assets.analytics.deployed import DeployedCapital, deployed_capital, deployed_metrics, stitch_deployed
from quant_assets.analytics.periods import period_metrics
from quant_assets.analytics.returns import SECONDS_PER_DAY, ReturnSeries, daily, sample_returns, stitch
from quant_assets.analytics.slice_metrics import ANALYTICS_VERSION, read_backtest
from quant_assets.analytics.trades import table_trade_stats
from quant_assets.lake.store import Lake, atomic_dir, file_sha256

#: Bump when the roll-up or a robustness method changes (reports become stale, slices do not).
#: 3: capital at risk beside the account figures; the deflated Sharpe uses the observed variance
#: of Sharpe across the sweep's trials.
ROLLUP_VERSION = "3"

MONTHLY_COLUMNS = ("month", "pnl", "fees", "funding_pnl", "funding_status", "fidelity", "liquidated", "total_return", "sharpe",
                   "max_drawdown", "trades", "trade_win_rate", "periods",
                   "return_on_deployed", "max_drawdown_on_deployed", "deployed_avg", "deployed_peak")


def _monthly_row(path: Path) -> pl.DataFrame:
    """A month's headline row; metric sets written before a column existed give it as null."""
    df = pl.read_parquet(path)
    return df.with_columns([pl.lit(None).alias(c) for c in MONTHLY_COLUMNS if c not in df.columns]).select(MONTHLY_COLUMNS)


def money_summary(monthly: pl.DataFrame) -> dict[str, Any]:
    """Funding, fidelity and liquidations over the months: what the roll-up's figures were built
    from. ``funding_pnl`` sums the months where funding was applied (quote currency); months
    whose funding was missing are listed, not counted as zero."""
    if not len(monthly):
        return {}
    status = monthly["funding_status"].cast(pl.String)
    applied = monthly.filter(status == "applied")
    return {
        "funding_pnl": float(applied["funding_pnl"].cast(pl.Float64).sum()) if len(applied) else None,
        "funding_months_applied": applied["month"].to_list(),
        "funding_months_missing": monthly.filter(status == "missing")["month"].to_list(),
        "fidelity_by_month": dict(zip(monthly["month"].to_list(), monthly["fidelity"].cast(pl.String).to_list())),
        "liquidated_months": monthly.filter(pl.col("liquidated").cast(pl.Boolean).fill_null(False))["month"].to_list(),
    }


def _deployed_summary(stitched: DeployedCapital) -> dict[str, Any]:
    """The months on deployed capital (see :mod:`quant_assets.analytics.deployed`): figures,
    their null reasons and the periods in the market."""
    m = deployed_metrics(stitched)
    return {"definition": "PnL and its largest drawdown over the peak gross notional at risk (|position| x mid, or after "
                          "a fill x its price) of all the months; the months' PnL paths added end to end",
            "metrics": m.values, "null_reasons": m.reasons, "periods_in_market": len(stitched.deployed)}


class RollupError(ValueError):
    """Nothing to roll up; the message says what is missing."""


@dataclass(frozen=True)
class RollupSettings:
    """Robustness settings: bootstrap resamples, Monte Carlo reshuffles, months in sample per
    walk-forward window, the random seed."""

    reps: int = 1000
    sims: int = 1000
    in_sample_months: int = 3
    seed: int = 0


@dataclass(frozen=True)
class ReportOutput:
    directory: Path
    report: dict[str, Any]
    daily: pl.DataFrame
    data_version: str

    @property
    def tearsheet(self) -> Path | None:
        """The HTML tearsheet, or None when there was no daily return to report."""
        path = self.directory / "tearsheet.html"
        return path if path.exists() else None


def available_months(lake: Lake, strategy: str, symbol: str) -> list[str]:
    """Months with a published metric set (its manifest exists) for strategy × symbol."""
    root = lake.metrics_dir(strategy, symbol, "x").parent
    if not root.is_dir():
        return []
    return sorted(p.name.removeprefix("month=") for p in root.glob("month=*") if (p / "manifest.json").exists())


def _daily_frame(daily_returns, start_equity: float) -> pl.DataFrame:
    eq = start_equity * np.cumprod(1.0 + daily_returns.to_numpy())
    peak = np.maximum.accumulate(np.maximum(eq, start_equity))
    return pl.DataFrame({
        "date": pl.Series(daily_returns.index.to_numpy().astype("datetime64[D]")).cast(pl.Date),
        "return": daily_returns.to_numpy(),
        "equity": eq,
        "drawdown": eq / peak - 1.0,
    })


def run_report(
    lake: Lake, strategy: str, symbol: str, trading_days: int, n_trials: int,
    months: list[str] | None = None, settings: RollupSettings = RollupSettings(),
) -> ReportOutput:
    """Roll up every month with a metric set (or ``months``) and publish the report."""
    months = months if months is not None else available_months(lake, strategy, symbol)
    if not months:
        raise RollupError(f"{strategy} {symbol}: no month has a metric set yet (materialise metrics_{strategy} first)")
    series, deployed, trades, monthly, inputs = [], [], [], [], {}
    for month in months:
        mdir = lake.metrics_dir(strategy, symbol, month)
        manifest = json.loads((mdir / "manifest.json").read_text())
        bt = read_backtest(lake, strategy, symbol, month)
        rs = sample_returns(bt.equity, bt.interval_s, trading_days)
        series.append((month, rs))
        deployed.append(deployed_capital(bt.equity, bt.fills, bt.interval_s, bt.starting_cash))
        t = pl.read_parquet(mdir / "trades.parquet").with_columns(month=pl.lit(month))
        trades.append(t)
        monthly.append(_monthly_row(mdir / "metrics.parquet"))
        inputs[month] = {"metrics_files": manifest["files"], "backtest_data_version": manifest["backtest_data_version"]}
    stitched = stitch([rs for _, rs in series])
    day = daily(stitched.returns)
    daily_rs = ReturnSeries(day, float(SECONDS_PER_DAY), trading_days, stitched.start_equity, stitched.final_equity,
                            notes=stitched.notes, wiped_out=stitched.wiped_out)
    m = period_metrics(daily_rs)
    grid = period_metrics(stitched)
    all_trades = pl.concat(trades, how="diagonal_relaxed") if trades else pl.DataFrame()
    m.update(table_trade_stats(all_trades))
    trade_returns = all_trades.sort("entry_ts")["return_on_equity"].to_pandas() if len(all_trades) else None
    wf_table, wf_summary = robustness.walk_forward(series, settings.in_sample_months)
    report: dict[str, Any] = {
        "strategy": strategy, "symbol": symbol, "months": months,
        "analytics_version": ANALYTICS_VERSION, "rollup_version": ROLLUP_VERSION,
        "returns": {"headline": "daily returns, annualised with trading_days", "trading_days": trading_days,
                    "days": len(day), "grid_interval_s": stitched.interval_s,
                    "grid_periods_per_year": stitched.periods_per_year, "periods": len(stitched), "notes": stitched.notes},
        "metrics": m.values,
        "null_reasons": m.reasons,
        "metrics_grid": grid.values,
        "null_reasons_grid": grid.reasons,
        "bootstrap": robustness.bootstrap_ci(day, trading_days, settings.reps, seed=settings.seed),
        "monte_carlo": (robustness.monte_carlo_drawdown(trade_returns, settings.sims, seed=settings.seed)
                        if trade_returns is not None else {"observed_max_drawdown": None, "reason": "no trades"}),
        "deflated_sharpe": robustness.deflated_sharpe(day, trading_days, n_trials,
                                                      trial_sharpes.observed(lake, strategy, symbol, months, trading_days)),
        "walk_forward": wf_summary,
        "deployed": _deployed_summary(stitch_deployed(deployed)),
        "money": money_summary(pl.concat(monthly, how="diagonal_relaxed") if monthly else pl.DataFrame()),
    }
    out = lake.report_dir(strategy, symbol)
    daily_df = _daily_frame(day, stitched.start_equity)
    files = {
        "monthly.parquet": pl.concat(monthly, how="diagonal_relaxed") if monthly else pl.DataFrame(),
        "daily.parquet": daily_df,
        "walk_forward.parquet": wf_table,
    }
    with lake.lock(f"report-{strategy}-{symbol}"), atomic_dir(out, "report") as new:
        for name, df in files.items():
            lake.write_parquet(df, new / name)
        lake.write_json(report, new / "report.json")
        hashes = {name: file_sha256(new / name) for name in (*files, "report.json")}
        if len(day):
            from quant_assets.analytics.tearsheet import write_tearsheet

            # No daily return, no tearsheet: the folder is new, so no older one lingers.
            write_tearsheet(day, new / "tearsheet.html", f"{strategy} on {symbol}, {months[0]} to {months[-1]}", trading_days)
        lake.write_json({"strategy": strategy, "symbol": symbol, "inputs": inputs, "files": hashes,
                         "tearsheet": "tearsheet.html" if len(day) else None}, new / "manifest.json")
    version = hashlib.sha256("|".join(hashes[k] for k in sorted(hashes)).encode()).hexdigest()[:24]
    return ReportOutput(out, report, daily_df, version)
