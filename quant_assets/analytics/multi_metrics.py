"""The metric set of one multi-instrument backtest (month × universe): the account's, and each
member's, with the PnL split of :mod:`quant_assets.analytics.basis_pnl`.

Read from a published ``backtests_multi/strategy=X/universe=U/month=M/`` slice
(:mod:`quant_assets.engines.multi_runner`), checked against its manifest's hashes:

* **account**: the quantstats period metrics (:func:`~quant_assets.analytics.periods.period_metrics`:
  total return, Sharpe, Sortino, max drawdown, volatility, ...) of the account's equity curve
  (the ``ACCOUNT`` rows: starting cash + every member's PnL), sampled on the run's equity grid
  and annualised with the members' trading days (the largest: a spot + perpetual pair trades
  every day); fills, turnover (quote currency), fees, funding, time in market (share of
  samples with any member position open);
* **split** (quote currency): basis convergence, funding, fees, other, summing to the account's
  PnL (checked when the run was published; recomputed here from the stored tables);
* **members**: per member its PnL, fills, fees, funding (null with the reason for a spot
  member: funding does not apply; for a perpetual with no funding rows: missing) and holding
  time of its positions (mean seconds, from the position column of its equity samples).

A metric that cannot be computed is null with its reason (``null_reasons``), never 0.
Output: ``metrics_multi/strategy=X/universe=U/month=M/`` (``metrics.json``, ``members.parquet``,
``manifest.json`` last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.analytics.basis_pnl import pnl_split
from quant_assets.analytics.periods import period_metrics
from quant_assets.analytics.returns import sample_returns
from quant_assets.analytics.slice_metrics import backtest_data_version, check_files
from quant_assets.lake.store import Lake, atomic_dir, file_sha256

MULTI_METRICS_VERSION = "1"
ACCOUNT = "ACCOUNT"


class MultiSliceError(ValueError):
    """The multi-instrument backtest slice is missing or does not match its manifest."""


@dataclass(frozen=True)
class MultiMetricsOutput:
    directory: Path
    metrics: dict[str, Any]
    members: pl.DataFrame
    data_version: str


def read_multi(lake: Lake, strategy: str, universe: str, month: str) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """(manifest, tables) of a published multi slice, every file checked against the manifest."""
    d = lake.backtest_multi_dir(strategy, universe, month)
    mpath = d / "manifest.json"
    if not mpath.exists():
        raise MultiSliceError(f"{d}: no manifest.json (materialise the multi backtest of {strategy} on {universe} for {month} first)")
    manifest = json.loads(mpath.read_text())
    check_files(d, manifest, MultiSliceError)
    return manifest, {name.removesuffix(".parquet"): pl.read_parquet(d / name) for name in manifest["files"]}


def _holding_s(equity: pl.DataFrame) -> float | None:
    """Mean time (s) a position stayed open: runs of equity samples with a non-zero position."""
    if len(equity) < 2:
        return None
    pos = equity["position"].fill_null(0.0).to_numpy() != 0
    ts = equity["ts"].to_numpy()
    spans, start = [], None
    for i, open_ in enumerate(pos):
        if open_ and start is None:
            start = ts[i]
        elif not open_ and start is not None:
            spans.append((ts[i] - start) / 1e9)
            start = None
    if start is not None:
        spans.append((ts[-1] - start) / 1e9)
    return float(np.mean(spans)) if spans else None


def compute(manifest: dict[str, Any], tables: dict[str, pl.DataFrame], trading_days: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """(account metrics with the split and null reasons, one row per member)."""
    fills, equity, flows = tables["fills"], tables["equity"], tables["cashflows"]
    start = float(manifest["account"]["starting_cash"])
    interval = float(manifest["params"].get("equity_interval_s", 60.0))
    acct = equity.filter(pl.col("instrument") == ACCOUNT).drop("instrument").sort("ts")
    # The account has no mid of its own (units of different instruments do not add); the
    # closed-day rule of sample_returns (a day whose mid never moved) reads the first member's.
    first = equity.filter(pl.col("instrument") == manifest["members"][0]["symbol"]).select("ts", "mid").sort("ts")
    rs = sample_returns(acct.drop("mid").join_asof(first, on="ts", strategy="backward"), interval, trading_days)
    m = period_metrics(rs)
    reasons: dict[str, str] = dict(m.reasons)
    split = pnl_split(fills, flows, equity, start, ACCOUNT)
    members_eq = equity.filter(pl.col("instrument") != ACCOUNT)
    open_any = (members_eq.with_columns(open=pl.col("position").fill_null(0.0) != 0).group_by("ts").agg(pl.col("open").any())
                if len(members_eq) else None)
    rows = []
    for mem in manifest["members"]:
        s = mem["symbol"]
        f = fills.filter(pl.col("instrument") == s)
        e = equity.filter(pl.col("instrument") == s).sort("ts")
        fund = mem["funding"]
        applies = fund["status"] == "applied"
        rows.append({
            "symbol": s, "kind": mem["kind"], "fidelity": mem["fidelity"],
            "pnl": float(e["equity"][-1]) - start if len(e) else None,
            "fills": len(f), "fees": float(f["fee"].sum()) if len(f) else 0.0,
            "turnover": float((f["qty"] * f["price"]).sum()) if len(f) else 0.0,
            "funding_pnl": float(fund["funding_pnl"]) if applies and fund["funding_pnl"] is not None else None,
            "funding_status": fund["status"],
            "holding_s_mean": _holding_s(e),
            "null_reasons": json.dumps({
                **({} if applies else {"funding_pnl": f"funding {fund['status']} ({mem['kind']})"}),
                **({} if len(f) else {"holding_s_mean": "no fills this month"}),
            }, sort_keys=True),
        })
    member_df = pl.DataFrame(rows, schema={"symbol": pl.String(), "kind": pl.String(), "fidelity": pl.String(), "pnl": pl.Float64(),
                                           "fills": pl.Int64(), "fees": pl.Float64(), "turnover": pl.Float64(),
                                           "funding_pnl": pl.Float64(), "funding_status": pl.String(),
                                           "holding_s_mean": pl.Float64(), "null_reasons": pl.String()})
    if split["funding_share"] is None:
        reasons["funding_share"] = "the account's PnL is exactly zero"
    if rs.notes:
        reasons["_notes"] = "; ".join(rs.notes)
    metrics = {
        "strategy": manifest["strategy"], "universe": manifest["universe"], "month": manifest["month"],
        "members": [r["symbol"] for r in rows], "fidelity": {r["symbol"]: r["fidelity"] for r in rows},
        "starting_cash": start, "quote_currency": manifest["account"].get("quote_currency"),
        "final_equity": float(acct["equity"][-1]) if len(acct) else None,
        "pnl": split["total_pnl"], "split": split,
        "fills": len(fills), "fees": float(fills["fee"].sum()) if len(fills) else 0.0,
        "turnover": float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0,
        "time_in_market": float(open_any["open"].mean()) if open_any is not None and len(open_any) else None,
        "interval_s": rs.interval_s, "trading_days": trading_days, "periods": len(rs),
        **m.values,
        "liquidated": any(e.get("kind") == "liquidation" for e in manifest.get("account_events") or []),
        "null_reasons": reasons,
    }
    return metrics, member_df


def run_multi_metrics(lake: Lake, strategy: str, universe: str, month: str, trading_days: int) -> MultiMetricsOutput:
    """Read the multi slice, compute, publish (see the module docstring)."""
    manifest, tables = read_multi(lake, strategy, universe, month)
    metrics, members = compute(manifest, tables, trading_days)
    out = lake.root / "metrics_multi" / f"strategy={strategy}" / f"universe={universe}" / f"month={month}"
    with lake.lock(f"metrics-multi-{strategy}-{universe}-{month}"), atomic_dir(out, "metrics") as new:
        lake.write_json(metrics, new / "metrics.json")
        lake.write_parquet(members, new / "members.parquet")
        hashes = {n: file_sha256(new / n) for n in ("metrics.json", "members.parquet")}
        lake.write_json({"strategy": strategy, "universe": universe, "month": month,
                         "analytics_version": MULTI_METRICS_VERSION, "backtest_data_version": backtest_data_version(manifest),
                         "backtest_path": lake.relative(lake.backtest_multi_dir(strategy, universe, month)),
                         "files": hashes}, new / "manifest.json")
    return MultiMetricsOutput(out, metrics, members, backtest_data_version({"files": hashes}))
