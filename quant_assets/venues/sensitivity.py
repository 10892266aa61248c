"""Realism sensitivity: how much a slice's result depends on the venue assumptions.

The slice is re-run (never replacing its own backtest) under :data:`SCENARIOS`: every order
latency × 0, × 2 and × 5, and costs × 1.5 (fees paid × 1.5, a maker rebate received ÷ 1.5:
always 50% harsher, never kinder). Each row has the PnL (quote currency) and Sharpe
(annualised like the metric sets: simple returns on the equity grid, ``mean / std(ddof=1) ×
sqrt(periods_per_year)``, null with its reason when undefined) of one scenario, beside the
published backtest's own (``baseline``).

``fragile`` is True when the sign of the PnL depends on the assumptions: some scenario's PnL
has the other sign than the baseline's (|PnL| under :data:`FLAT_PNL` quote currency counts as
flat, of no sign). A slice that never trades in any scenario is not fragile but says so.

The re-runs enter the trials ledger as ``venue_sensitivity`` trials (what they are), never as
parameter sets. Output at ``<lake>/sensitivity/strategy=X/symbol=S/month=M/``:
``sensitivity.parquet`` (one row per scenario, baseline first), ``run.json`` (each scenario's
wall time: a fact about the run, kept out of the manifest so the same inputs publish the same
bytes) and ``manifest.json`` last.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.analytics import trials
from quant_assets.analytics.returns import sample_returns
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import StrategySpec

#: Bump when scenarios or the stored format change: every sensitivity slice becomes stale.
SENSITIVITY_VERSION = "1"
#: (name, latency factor, cost factor).
SCENARIOS: tuple[tuple[str, float, float], ...] = (
    ("latency_x0", 0.0, 1.0), ("latency_x2", 2.0, 1.0), ("latency_x5", 5.0, 1.0), ("fees_x1.5", 1.0, 1.5),
)
#: |PnL| below this (quote currency) has no sign: a month of rounding, not a result.
FLAT_PNL = 1e-6
SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(), "latency_factor": pl.Float64(), "fee_factor": pl.Float64(), "venue_profile": pl.String(),
    "maker_fee": pl.Float64(), "taker_fee": pl.Float64(), "pnl": pl.Float64(), "return_pct": pl.Float64(),
    "sharpe": pl.Float64(), "sharpe_null_reason": pl.String(), "fills": pl.Int64(), "fees": pl.Float64(),
}


def harsher_fee(fee: float, factor: float) -> float:
    """A fee fraction made ``factor`` times harsher: a cost × factor, a rebate (negative) ÷ factor."""
    return fee * factor if fee >= 0 else fee / factor


def sharpe(equity: pl.DataFrame, interval_s: float, trading_days: int) -> tuple[float | None, str | None]:
    """(annualised Sharpe, None) of an equity curve, or (None, why it is undefined)."""
    rs = sample_returns(equity, interval_s, trading_days)
    r = rs.returns.to_numpy(dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return None, f"{len(r)} return period(s): a Sharpe ratio needs two"
    sd = float(np.std(r, ddof=1))
    if sd == 0.0:
        return None, "returns have no variance (flat equity)"
    return float(np.mean(r) / sd * math.sqrt(rs.periods_per_year)), None


def _sign(pnl: float | None) -> int:
    return 0 if pnl is None or abs(pnl) < FLAT_PNL else (1 if pnl > 0 else -1)


def judge(rows: list[dict[str, Any]]) -> tuple[bool, str]:
    """(fragile, why) from the scenario rows (baseline first; see the module docstring)."""
    base = rows[0]
    b = _sign(base["pnl"])
    if all(r["fills"] == 0 for r in rows):
        return False, "the strategy never trades in any scenario: nothing depends on the venue"
    flips = [r for r in rows[1:] if _sign(r["pnl"]) != b]
    if not flips:
        return False, f"the PnL keeps its sign ({'+' if b > 0 else '-' if b < 0 else 'flat'}) in every scenario"
    said = ", ".join(f"{r['scenario']} {r['pnl']:+,.2f}" for r in flips)
    return True, f"PnL {base['pnl']:+,.2f} under the venue profile changes sign under {said}"


@dataclass(frozen=True)
class SensitivityOutput:
    directory: Path
    rows: list[dict[str, Any]]
    fragile: bool
    reason: str
    manifest: dict[str, Any]
    data_version: str
    run: dict[str, Any] = field(default_factory=dict)  # run.json: each scenario's wall time (s)


def run_sensitivity(lake: Lake, spec: StrategySpec, symbol: str, month: str) -> SensitivityOutput:
    """Re-run the published backtest slice of ``spec`` under every scenario and publish the
    report. Raises what :func:`~quant_assets.engines.runner.setup_slice` and the engines raise
    (a slice that cannot be backtested, or whose strategy does not apply to its data), and a
    :class:`FileNotFoundError` naming the backtest when it has not been published."""
    from quant_assets.analytics.slice_metrics import backtest_data_version
    from quant_assets.engines.result import summary
    from quant_assets.engines.runner import STARTING_CASH, setup_slice, simulate

    bt_dir = lake.backtest_dir(spec.name, symbol, month)
    if not (bt_dir / "manifest.json").exists():
        raise FileNotFoundError(f"{bt_dir}: no backtest slice (materialise backtest_{spec.name} for {month}|{symbol} first)")
    manifest = json.loads((bt_dir / "manifest.json").read_text())
    setup = setup_slice(lake, spec, symbol, month, STARTING_CASH)
    interval_s = float(setup.params.get("equity_interval_s", 60.0))
    days = setup.instrument.trading_days
    equity = pl.read_parquet(bt_dir / "equity.parquet")
    fills = pl.read_parquet(bt_dir / "fills.parquet")
    s, why = sharpe(equity, interval_s, days)
    base_summary = manifest["summary"]
    rows = [{
        "scenario": "baseline", "latency_factor": 1.0, "fee_factor": 1.0,
        "venue_profile": (manifest.get("venue_profile") or {}).get("label"),
        "maker_fee": setup.instrument.maker_fee, "taker_fee": setup.instrument.taker_fee,
        "pnl": float(base_summary["pnl"]), "return_pct": float(base_summary["return_pct"]),
        "sharpe": s, "sharpe_null_reason": why, "fills": len(fills), "fees": float(fills["fee"].sum()) if len(fills) else 0.0,
    }]
    walls: dict[str, float] = {}
    for name, lat, fee in SCENARIOS:
        profile = setup.profile.scaled(lat)
        inst = replace(setup.instrument, maker_fee=harsher_fee(setup.instrument.maker_fee, fee),
                       taker_fee=harsher_fee(setup.instrument.taker_fee, fee))
        t0 = time.perf_counter()
        sim = simulate(lake, spec, setup, symbol, month, STARTING_CASH, profile=profile, instrument=inst)
        head = summary(sim.fills, sim.equity, STARTING_CASH, sim.flows)
        s, why = sharpe(sim.equity, interval_s, days)
        rows.append({
            "scenario": name, "latency_factor": lat, "fee_factor": fee, "venue_profile": profile.label,
            "maker_fee": inst.maker_fee, "taker_fee": inst.taker_fee, "pnl": float(head["pnl"]),
            "return_pct": float(head["return_pct"]), "sharpe": s, "sharpe_null_reason": why,
            "fills": int(head["fills"]), "fees": float(head["fees"]),
        })
        walls[name] = round(time.perf_counter() - t0, 4)
        trials.record(lake, spec.impl, spec.name, {**setup.params, "_scenario": name, "_venue_profile": profile.label},
                      kind=trials.VENUE_SENSITIVITY)
    fragile, reason = judge(rows)
    table = pl.DataFrame(rows, schema=SCHEMA)
    out = lake.sensitivity_dir(spec.name, symbol, month)
    with lake.lock(f"sensitivity-{spec.name}-{symbol}-{month}"), atomic_dir(out, "sensitivity") as new:
        lake.write_parquet(table, new / "sensitivity.parquet")
        report = {
            "strategy": spec.name, "symbol": symbol, "month": month, "sensitivity_version": SENSITIVITY_VERSION,
            "venue_profile": (manifest.get("venue_profile") or {}).get("label"),
            "backtest_data_version": backtest_data_version(manifest), "backtest_code_version": manifest.get("code_version"),
            "backtest_files": manifest.get("files", {}), "fragile": fragile, "reason": reason,
            "scenarios": [list(s) for s in SCENARIOS], "flat_pnl": FLAT_PNL,
            "files": {"sensitivity.parquet": file_sha256(new / "sensitivity.parquet")},
        }
        run_facts = {"wall_s": walls}
        lake.write_json(run_facts, new / "run.json")
        lake.write_json(report, new / "manifest.json")
    version = hashlib.sha256(json.dumps([rows, fragile], sort_keys=True, default=str).encode()).hexdigest()[:24]
    return SensitivityOutput(out, rows, fragile, reason, report, version, run_facts)


def read_report(lake: Lake, strategy: str, symbol: str, month: str) -> dict[str, Any] | None:
    """The published sensitivity of a slice, condensed for a reader (the critic, ``status``):
    ``{"fragile", "reason", "scenarios": [{scenario, pnl, sharpe}]}``, or None when absent."""
    d = lake.sensitivity_dir(strategy, symbol, month)
    if not (d / "manifest.json").exists():
        return None
    man = json.loads((d / "manifest.json").read_text())
    table = pl.read_parquet(d / "sensitivity.parquet")
    return {"fragile": man["fragile"], "reason": man["reason"],
            "scenarios": table.select("scenario", "pnl", "sharpe", "fills").to_dicts()}
