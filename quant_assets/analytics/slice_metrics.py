"""The metric set of one backtest slice, end to end: read the backtest, compute, write.

Output at ``<lake>/metrics/strategy=X/symbol=S/month=M/``:

``metrics.parquet``  one row, typed columns (:data:`METRICS_SCHEMA`): the slice's identity, the
    return grid and its annualisation, money totals (quote currency), the quantstats period
    metrics (:mod:`~quant_assets.analytics.periods`), the vectorbt trade statistics
    (:mod:`~quant_assets.analytics.trades`), vectorbt's own figures for the quantities both
    libraries compute (``vbt_*``: they must agree), and ``null_reasons`` (JSON: metric → why it
    is null).
``trades.parquet``   every closed trade with its market context at entry.
``regimes.parquet``  the month by volatility regime: time share, PnL, trades.

Beside the account-level figures, the row carries the same month on the capital actually at
risk (:mod:`~quant_assets.analytics.deployed`: ``deployed_avg``, ``deployed_peak``,
``return_on_deployed``, ``max_drawdown_on_deployed``).
``manifest.json``    inputs (the backtest's data version and files), analytics version, the
    files' SHA-256; written last.

No Dagster here; the asset in ``quant_assets.assets.metrics`` calls :func:`run_metrics`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.analytics.deployed import DEPLOYED_METRICS, deployed_capital, deployed_metrics
from quant_assets.analytics.periods import PERIOD_METRICS, MetricSet, period_metrics
from quant_assets.analytics.returns import ReturnSeries, sample_returns
from quant_assets.analytics.trades import (
    TRADE_SCHEMA, TRADE_STATS, market_context, portfolio, regime_summary, sample_regimes, trade_table, vectorbt_trade_stats,
)
from quant_assets.engines.result import empty_cashflows
from quant_assets.lake.store import Lake, atomic_dir, file_sha256

#: Bump when the definition of a stored metric changes: every metrics slice and every roll-up
#: becomes stale, backtests do not.
ANALYTICS_VERSION = "4"  # 4: capital at risk (analytics.deployed); volatility regimes from the past only (analytics.trades)

AGREEMENT = ("vbt_total_return", "vbt_sharpe", "vbt_max_drawdown")

METRICS_SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "month": pl.String(),
    "start_ts": pl.Int64(), "end_ts": pl.Int64(),
    "interval_s": pl.Float64(), "trading_days": pl.Int64(), "periods_per_year": pl.Float64(), "periods": pl.Int64(),
    "starting_equity": pl.Float64(), "final_equity": pl.Float64(), "pnl": pl.Float64(), "gross_pnl": pl.Float64(),
    "fees": pl.Float64(), "turnover": pl.Float64(), "fills": pl.Int64(), "time_in_market": pl.Float64(),
    # What the result was built from and what the account did (see engines.account, the manifest).
    "instrument_kind": pl.String(), "fidelity": pl.String(), "funding_status": pl.String(), "funding_pnl": pl.Float64(),
    "liquidated": pl.Boolean(), "liquidated_at": pl.Int64(), "orders_refused": pl.Int64(),
    # The simulated venue it ran under (venues.profile: ``VENUE.kind@version``) and the feed
    # latency of its data ("measured" or "unknown").
    "venue_profile": pl.String(), "feed_latency": pl.String(),
    **{name: pl.Float64() for name in PERIOD_METRICS},
    **{name: (pl.Int64() if name == "trades" else pl.Float64()) for name in TRADE_STATS},
    **{name: pl.Float64() for name in AGREEMENT},
    # Risk on the capital actually deployed (quote currency; returns and drawdowns: fractions).
    **{name: pl.Float64() for name in DEPLOYED_METRICS},
    "null_reasons": pl.String(),
}


class BacktestSliceError(ValueError):
    """The backtest slice is missing or inconsistent; the message names it."""


@dataclass(frozen=True)
class BacktestSlice:
    fills: pl.DataFrame
    equity: pl.DataFrame
    manifest: dict[str, Any]
    directory: Path
    cashflows: pl.DataFrame | None = None  # funding and insurance (quote currency, received positive)

    @property
    def interval_s(self) -> float:
        return float(self.manifest["params"].get("equity_interval_s", 60.0))

    @property
    def starting_cash(self) -> float:
        return float(self.manifest["starting_cash"])


def read_backtest(lake: Lake, strategy: str, symbol: str, month: str) -> BacktestSlice:
    """The stored backtest slice, checked against its manifest (the commit mark)."""
    d = lake.backtest_dir(strategy, symbol, month)
    mpath = d / "manifest.json"
    if not mpath.exists():
        raise BacktestSliceError(f"{d}: no manifest.json (materialise backtest_{strategy} for {month}|{symbol} first)")
    manifest = json.loads(mpath.read_text())
    check_files(d, manifest, BacktestSliceError)
    flows = pl.read_parquet(d / "cashflows.parquet") if (d / "cashflows.parquet").exists() else empty_cashflows()
    return BacktestSlice(pl.read_parquet(d / "fills.parquet"), pl.read_parquet(d / "equity.parquet"), manifest, d, flows)


def check_files(d: Path, manifest: dict[str, Any], error: type[Exception]) -> None:
    """Every file ``manifest`` names exists in ``d`` with its SHA-256, else ``error`` naming it."""
    for name, digest in manifest.get("files", {}).items():
        if not (d / name).exists() or file_sha256(d / name) != digest:
            raise error(f"{d / name}: does not match the hash in manifest.json (a write was interrupted or the file was edited); re-materialise the backtest")


def backtest_data_version(manifest: dict[str, Any]) -> str:
    """The backtest slice's data version, as its asset reports it (hash of its file hashes)."""
    files = manifest.get("files", {})
    return hashlib.sha256("|".join(files[k] for k in sorted(files)).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SliceMetrics:
    row: dict[str, Any]
    metrics: MetricSet
    returns: ReturnSeries
    trades: pl.DataFrame
    regimes: pl.DataFrame
    equity: pl.DataFrame


def _agreement(rs: ReturnSeries, pf, other_flows: float = 0.0, starting_cash: float = 1.0) -> MetricSet:
    """vectorbt's figures for quantities quantstats computes too (same series, same annualisation).
    ``other_flows`` (quote currency: funding, insurance) are cash vectorbt's order replay cannot
    book; they are added to its final value, so its total return stays comparable."""
    import pandas as pd
    import vectorbt  # noqa: F401  registers the ``.vbt`` accessor: a flat month builds no portfolio that would import it

    m = MetricSet()
    if pf is not None:
        m.put("vbt_total_return", pf.total_return() + other_flows / starting_cash)
    if len(rs.returns) < 2:
        m.undefined(("vbt_sharpe", "vbt_max_drawdown") + (() if pf is not None else ("vbt_total_return",)),
                    f"{len(rs.returns)} return period(s)")
        return m
    acc = rs.returns.vbt.returns(freq=pd.Timedelta(seconds=rs.interval_s), year_freq=pd.Timedelta(days=rs.trading_days))
    if pf is None:
        m.put("vbt_total_return", acc.total())
    m.put("vbt_max_drawdown", acc.max_drawdown())
    if float(rs.returns.std()) > 0:
        m.put("vbt_sharpe", acc.sharpe_ratio())
    else:
        m.undefined(("vbt_sharpe",), "returns have no variance")
    return m


def compute(bt: BacktestSlice, trading_days: int, quotes: pl.LazyFrame | None, strategy: str, symbol: str, month: str) -> SliceMetrics:
    """Every number of the slice (see the module docstring)."""
    fills, equity = bt.fills, bt.equity
    rs = sample_returns(equity, bt.interval_s, trading_days)
    m = period_metrics(rs)
    pf = None
    if len(fills) and len(equity):
        pf = portfolio(fills, equity, bt.starting_cash, bt.interval_s)
        table = trade_table(pf)
        m.update(vectorbt_trade_stats(pf, table))
    else:
        table = pl.DataFrame(schema=TRADE_SCHEMA)
        m.put("trades", 0)
        m.undefined(TRADE_STATS[1:], "no fills: the strategy never traded this month" if len(equity) else "empty equity curve")
    flows = bt.cashflows if bt.cashflows is not None else empty_cashflows()
    m.update(_agreement(rs, pf, float(flows["amount"].sum()) if len(flows) else 0.0, bt.starting_cash))
    m.update(deployed_metrics(deployed_capital(equity, fills, bt.interval_s, bt.starting_cash)))
    regimes = sample_regimes(equity, bt.interval_s, rs.periods_per_year) if len(equity) else pl.DataFrame(
        schema={"ts": pl.Int64(), "mid": pl.Float64(), "vol": pl.Float64(), "vol_lo": pl.Float64(), "vol_hi": pl.Float64(),
                "regime": pl.String()})
    trades = market_context(table, equity, regimes, quotes)
    regime_table = regime_summary(equity, regimes, trades)
    pos = equity["position"].to_numpy() if len(equity) else np.zeros(0)
    row: dict[str, Any] = {
        "strategy": strategy, "symbol": symbol, "month": month,
        "start_ts": int(equity["ts"][0]) if len(equity) else None,
        "end_ts": int(equity["ts"][-1]) if len(equity) else None,
        "interval_s": rs.interval_s, "trading_days": trading_days, "periods_per_year": rs.periods_per_year,
        "periods": len(rs),
        "starting_equity": bt.starting_cash,
        "final_equity": float(equity["equity"][-1]) if len(equity) else None,
        "pnl": float(equity["equity"][-1]) - bt.starting_cash if len(equity) else None,
        "gross_pnl": float(fills["realized_pnl"].sum()) if len(fills) else 0.0,
        "fees": float(fills["fee"].sum()) if len(fills) else 0.0,
        "turnover": float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0,
        "fills": len(fills),
        "time_in_market": float(np.mean(pos != 0)) if len(pos) else None,
        **m.values,
        **_account_facts(bt),
    }
    reasons = dict(m.reasons)
    if row["funding_pnl"] is None:
        reasons["funding_pnl"] = f"funding {row['funding_status']} ({row['instrument_kind']})"
    if row["venue_profile"] is None:
        reasons["venue_profile"] = "the backtest's manifest names no venue profile (it predates them)"
    if rs.notes:
        reasons["_notes"] = "; ".join(rs.notes)
    row["null_reasons"] = json.dumps(reasons, sort_keys=True)
    return SliceMetrics(row, m, rs, trades, regime_table, equity)


def _account_facts(bt: BacktestSlice) -> dict[str, Any]:
    """Kind, fidelity, funding and liquidation of the slice, from its manifest and cash flows."""
    man = bt.manifest
    flows = bt.cashflows if bt.cashflows is not None else empty_cashflows()
    funding = flows.filter(pl.col("kind") == "funding")
    events = man.get("account_events") or []
    liq = [e for e in events if e.get("kind") == "liquidation"]
    return {
        "instrument_kind": man.get("instrument_kind", "spot"),
        "fidelity": man.get("fidelity", "quotes+trades"),
        "funding_status": (man.get("funding") or {}).get("status", "not applicable"),
        "funding_pnl": float(funding["amount"].sum()) if len(funding) else (0.0 if (man.get("funding") or {}).get("status") == "applied" else None),
        "liquidated": bool(liq),
        "liquidated_at": int(liq[0]["ts"]) if liq else None,
        "orders_refused": int((man.get("counters") or {}).get("orders_refused_leverage", 0)),
        "venue_profile": (man.get("venue_profile") or {}).get("label"),
        "feed_latency": (man.get("feed_latency") or {}).get("status"),
    }


def metrics_frame(row: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([{k: row.get(k) for k in METRICS_SCHEMA}], schema=METRICS_SCHEMA)


@dataclass(frozen=True)
class MetricsOutput:
    directory: Path
    slice: SliceMetrics
    manifest: dict[str, Any]
    data_version: str


def run_metrics(lake: Lake, strategy: str, symbol: str, month: str, trading_days: int) -> MetricsOutput:
    """Read the backtest slice (and the ticks partition for spreads), compute, publish."""
    bt = read_backtest(lake, strategy, symbol, month)
    ticks = lake.ticks_path(symbol, month)
    quotes = pl.scan_parquet(ticks).select("ts_recv", "kind", "bid_px", "ask_px") if ticks.exists() else None
    sm = compute(bt, trading_days, quotes, strategy, symbol, month)
    out = lake.metrics_dir(strategy, symbol, month)
    with lake.lock(f"metrics-{strategy}-{symbol}-{month}"), atomic_dir(out, "metrics") as new:
        files = {
            "metrics.parquet": metrics_frame(sm.row),
            "trades.parquet": sm.trades,
            "regimes.parquet": sm.regimes,
        }
        for name, df in files.items():
            lake.write_parquet(df, new / name)
        hashes = {name: file_sha256(new / name) for name in files}
        manifest = {
            "strategy": strategy, "symbol": symbol, "month": month,
            "analytics_version": ANALYTICS_VERSION,
            "backtest_data_version": backtest_data_version(bt.manifest),
            "backtest_code_version": bt.manifest.get("code_version"),
            "backtest_path": lake.relative(bt.directory),
            "ticks_path": lake.relative(ticks) if quotes is not None else None,
            "trading_days": trading_days,
            "venue_profile": bt.manifest.get("venue_profile"),
            "feed_latency": bt.manifest.get("feed_latency"),
            "files": hashes,
            "null_reasons": sm.metrics.reasons,
            "notes": sm.returns.notes,
        }
        lake.write_json(manifest, new / "manifest.json")
    version = hashlib.sha256("|".join(hashes[k] for k in sorted(hashes)).encode()).hexdigest()[:24]
    return MetricsOutput(out, sm, manifest, version)
