"""Hand-off: the sweep's top combinations, re-tested event-driven on the next month.

The sweep of month M ranks its grid on bars; its top K combinations become parameter sets of
the event-driven strategy and are backtested on M+1 (out of sample) with the real engine, and
on M for reference, next to the strategy's current parameters on M+1 (the baseline). Each
candidate is one test, as a critique's suggestion is: the one-sided p-value of "its Sharpe on
M+1 beats the baseline's" (:mod:`quant_assets.analytics.sharpe_test`), with the slice's local
bar (``alpha / K``, Bonferroni over its K candidates) beside it. "Improved" is decided by the
false-discovery control over the whole ledger of tests (asset ``discoveries``), which the
DuckDB view ``handoffs`` joins back; this file never changes when later tests arrive.

Units: the vectorised form counts EMA lengths in bars of the sweep's interval. An event-driven
strategy whose signal runs on time bars of the same interval (``ema_cross`` with ``bar_s`` =
60, the default) takes the same lengths: the candidate re-tested is the strategy the sweep
ranked. Bars of another interval are converted by the ratio of the intervals; a strategy on
quote updates (``bar_s = 0``) gets round(L × q) updates, q = month M's mean quotes per bar
(known at the end of M, before the out-of-sample month M+1), clipped to the parameter's range.
The table shows both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.analytics.returns import sample_returns
from quant_assets.analytics.slice_metrics import read_backtest
from quant_assets.analytics.sharpe_test import METHOD, sharpe_difference
from quant_assets.critique.oos import LOCAL_ALPHA, local_verdict, period_row, require_next_month, run_and_measure
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research.run import quotes_per_bar, read_sweep
from quant_assets.strategies.spec import ParamError, StrategySpec

#: 2: a one-sided p-value per candidate and the local bar ("improved" moved to the FDR ledger);
#: lengths taken as they are for a strategy that signals on bars of the sweep's interval.
HANDOFF_VERSION = "2"
#: Parameters the vectorised form counts in bars and the event-driven strategy in quote updates.
BAR_LENGTH_PARAMS = ("fast_period", "slow_period")

SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "sweep_month": pl.String(), "oos_month": pl.String(),
    "sweep_rank": pl.Int64(), "sweep_params_bars": pl.String(), "event_params": pl.String(),
    "sweep_sharpe": pl.Float64(), "sweep_deflated_sharpe": pl.Float64(), "is_event_sharpe": pl.Float64(),
    "oos_baseline_sharpe": pl.Float64(), "oos_candidate_sharpe": pl.Float64(), "oos_candidate_return": pl.Float64(),
    "oos_candidate_trades": pl.Int64(), "tested": pl.Boolean(), "n_tested": pl.Int64(), "p_value": pl.Float64(),
    "local_bar": pl.Float64(), "clears_local_bar": pl.Boolean(), "reason": pl.String(),
}


@dataclass(frozen=True)
class HandoffOutput:
    directory: Path
    table: pl.DataFrame
    manifest: dict[str, Any]
    data_version: str


def to_event_params(spec: StrategySpec, bar_params: dict[str, Any], quotes_per_bar: float,
                    interval_s: float = 60.0) -> dict[str, Any]:
    """Event-driven parameters for a sweep combination (lengths in bars of ``interval_s``
    seconds; see the module docstring)."""
    bar_s = int(spec.resolved().get("bar_s", 0) or 0)
    factor = interval_s / bar_s if bar_s else quotes_per_bar
    out = {}
    for name, value in bar_params.items():
        if name in BAR_LENGTH_PARAMS and factor != 1.0:
            p = spec.param(name)
            value = int(round(value * factor))
            value = int(min(max(value, p.lo if p.lo is not None else value), p.hi if p.hi is not None else value))
        out[name] = int(value) if name in BAR_LENGTH_PARAMS else value
    return out


def run_handoff(lake: Lake, spec: StrategySpec, symbol: str, month: str, trading_days: int,
                alpha: float = LOCAL_ALPHA) -> HandoffOutput:
    """Re-test the top combinations of the sweep of (month, symbol) on the next month."""
    summary_path, summary, bars = read_sweep(lake, spec.name, symbol, month)
    oos_month = require_next_month(lake, spec.name, symbol, month, "the hand-off")
    qpb = quotes_per_bar(bars)
    names = [a["name"] for a in summary["axes"]]
    top = summary["top"]
    n = len(top)
    oos_bt = read_backtest(lake, spec.name, symbol, oos_month)
    base_rs = sample_returns(oos_bt.equity, oos_bt.interval_s, trading_days)
    base = period_row(base_rs)
    final = lake.handoff_dir(spec.name, symbol, month)
    rows = []
    with lake.lock(f"handoff-{spec.name}-{symbol}-{month}"), atomic_dir(final, "handoff") as out:
        for cand in top:
            bar_params = {k: cand[k] for k in names}
            event = to_event_params(spec, bar_params, qpb, float(summary.get("interval_s", 60.0)))
            row: dict[str, Any] = {
                "strategy": spec.name, "symbol": symbol, "sweep_month": month, "oos_month": oos_month,
                "sweep_rank": cand["rank"], "sweep_params_bars": json.dumps(bar_params), "event_params": json.dumps(event),
                "sweep_sharpe": cand["sharpe"], "sweep_deflated_sharpe": cand["deflated_sharpe"],
                "oos_baseline_sharpe": base["sharpe"], "n_tested": n,
            }
            try:
                candidate = spec.with_values(event)
            except ParamError as exc:
                rows.append({**row, "tested": False, "local_bar": alpha / max(1, n), "clears_local_bar": False,
                             "reason": f"not a valid event-driven parameter set: {exc}"})
                continue
            tag = f"rank{cand['rank']}"
            is_sm = run_and_measure(lake, candidate, symbol, month, out / "runs" / tag / month, trading_days)
            oos_sm = run_and_measure(lake, candidate, symbol, oos_month, out / "runs" / tag / oos_month, trading_days)
            test = sharpe_difference(oos_sm.returns, base_rs)
            rows.append({
                **row, "is_event_sharpe": is_sm.row["sharpe"], "oos_candidate_sharpe": oos_sm.row["sharpe"],
                "oos_candidate_return": oos_sm.row["total_return"], "oos_candidate_trades": oos_sm.row["trades"],
                "tested": True, **local_verdict(test, n, alpha),
            })
        table = pl.DataFrame(rows, schema=SCHEMA)
        lake.write_parquet(table, out / "handoff.parquet")
        digest = file_sha256(out / "handoff.parquet")
        manifest = {"strategy": spec.name, "symbol": symbol, "sweep_month": month, "oos_month": oos_month,
                    "handoff_version": HANDOFF_VERSION, "quotes_per_bar": qpb, "test": METHOD, "local_alpha": alpha,
                    "sweep_summary_sha256": file_sha256(summary_path), "files": {"handoff.parquet": digest}}
        lake.write_json(manifest, out / "manifest.json")
    return HandoffOutput(final, table, manifest, hashlib.sha256(digest.encode()).hexdigest()[:24])
