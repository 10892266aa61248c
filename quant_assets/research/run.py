"""Entry points of the research layer: build a bars slice, sweep a strategy on it, publish both.

Bars: ``bars/interval=I/symbol=S/month=M/part-0.parquet`` (one atomic file). Sweeps:
``sweeps/strategy=X/symbol=S/month=M/`` with ``grid.parquet`` (every combination, ranked),
``returns.parquet`` (every combination's hourly returns: :mod:`quant_assets.research.sweep_returns`),
``summary.json`` (top candidates, deflated Sharpe, SPA p-value), ``heatmap.png`` and
``manifest.json``, published as one folder.

A sweep records its grid in the trials ledger (:mod:`quant_assets.analytics.trials`) as one
trial row with ``n_sets`` = its number of combinations, keyed by the implementation, the grid's
axes, the bar interval and the parameters the grid does not vary: sweeping another month or
symbol, or re-running a slice, tries no new parameter set and adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.analytics import trials
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research import sweep_returns
from quant_assets.research.bars import build_bars, parse_interval
from quant_assets.research.sweep import GRIDS, SweepSettings, history_needed, quote_bars, run_sweep
from quant_assets.strategies.spec import Axis, StrategySpec

#: 2: bars on the receive clock, left-open, with their first quote; sweeps execute at the next
#: bar's first quote, in whole lots, after a warm-up on the previous month's last bars.
RESEARCH_VERSION = "2"
#: Bump when a sweep slice's stored outputs change (bars are not affected): 2 adds returns.parquet.
SWEEP_VERSION = "2"


class ResearchInputError(ValueError):
    """A research step's input is missing or unusable; the message names it."""


@dataclass(frozen=True)
class BarsOutput:
    path: Path
    bars: pl.DataFrame
    data_version: str


@dataclass(frozen=True)
class SweepOutput:
    directory: Path
    table: pl.DataFrame
    summary: dict[str, Any]
    heatmap: bytes | None
    data_version: str


def run_bars(lake: Lake, symbol: str, month: str, interval: str = "1m") -> BarsOutput:
    """Bars of the ``ticks`` partition (month, symbol), written to the lake."""
    ticks = lake.ticks_path(symbol, month)
    if not ticks.exists():
        raise ResearchInputError(f"{ticks}: no ticks partition (materialise `ticks` for {month}|{symbol} first)")
    out = lake.bars_path(interval, symbol, month)
    with lake.lock(f"bars-{interval}-{symbol}-{month}"):
        from quant_assets.book.features import book_features  # numba: only when bars are built

        frame = build_bars(ticks, out, parse_interval(interval), lake.write_parquet,
                           features=lambda closes: book_features(lake, symbol, month, closes, int(closes.max(initial=0)) + 1))
        digest = file_sha256(out)
    return BarsOutput(out, frame, digest[:24])


def read_bars(lake: Lake, interval: str, symbol: str, month: str) -> tuple[Path, pl.DataFrame]:
    """(path, frame) of a published bars slice; a missing one is named."""
    path = lake.bars_path(interval, symbol, month)
    if not path.exists():
        raise ResearchInputError(f"{path}: no bars (materialise `bars_{interval}` for {month}|{symbol} first)")
    return path, pl.read_parquet(path)


def read_sweep(lake: Lake, strategy: str, symbol: str, month: str) -> tuple[Path, dict[str, Any], pl.DataFrame]:
    """(summary path, summary, bars) of a published sweep slice: what the hand-off and the
    agreement start from."""
    summary_path = lake.sweep_dir(strategy, symbol, month) / "summary.json"
    if not summary_path.exists():
        raise ResearchInputError(f"{summary_path}: no sweep (materialise sweep_{strategy} for {month}|{symbol} first)")
    summary = json.loads(summary_path.read_text())
    _, bars = read_bars(lake, summary.get("interval", "1m"), symbol, month)
    return summary_path, summary, bars


def quotes_per_bar(bars: pl.DataFrame) -> float:
    """Mean quote updates per bar: converts lengths in bars to the event-driven quote updates."""
    return float(bars["quotes"].mean() or 1.0)


def history_bars(lake: Lake, interval: str, symbol: str, month: str, count: int) -> tuple[pl.DataFrame | None, dict[str, Any]]:
    """The last ``count`` quote bars of the month before ``month`` (the warm-up of a vectorised
    strategy) and what was found: ``{"from_month", "bars", "status", "sha256"}``."""
    from quant_assets.engines.warmup import previous_month

    prev = previous_month(month)
    path = lake.bars_path(interval, symbol, prev)
    if count <= 0:
        return None, {"from_month": prev, "bars": 0, "status": "none"}
    if not path.exists():
        return None, {"from_month": prev, "bars": 0, "status": "cold", "reason": f"no {interval} bars for {prev}: cold start"}
    tail = quote_bars(pl.read_parquet(path)).tail(count)
    status = "warm" if tail.height >= count else "partial"
    return tail, {"from_month": prev, "bars": tail.height, "status": status, "wanted": count, "sha256": file_sha256(path)}


def grid_trial(spec: StrategySpec, axes: tuple[Axis, ...], interval: str) -> dict[str, Any]:
    """The trials-ledger identity of a sweep grid: its axes (lengths in bars of ``interval``)
    and the values of the parameters it does not vary. Two sweeps with the same identity try
    the same parameter sets, whatever month or symbol they run on."""
    names = {a.name for a in axes}
    return {"sweep_grid": [{"name": a.name, "start": a.start, "stop": a.stop, "step": a.step} for a in axes],
            "bar_interval": interval, "fixed": {k: v for k, v in spec.resolved().items() if k not in names}}


def run_sweep_slice(lake: Lake, spec: StrategySpec, symbol: str, month: str, fee: float, trading_days: int,
                    starting_cash: float, interval: str = "1m", settings: SweepSettings = SweepSettings(),
                    lot: float | None = None) -> SweepOutput:
    """Sweep ``spec``'s grid on the bars slice, warmed on the previous month's last bars, and
    publish the ranked grid and its tests. ``lot``: the instrument's lot (orders in whole lots)."""
    from quant_assets.analytics.plots import heatmap_png

    if spec.name not in GRIDS:
        raise ResearchInputError(f"{spec.name}: no vectorised form (strategies with a sweep grid: {', '.join(GRIDS)})")
    path, bars = read_bars(lake, interval, symbol, month)
    interval_s = parse_interval(interval) / 1e9
    history, warm = history_bars(lake, interval, symbol, month, history_needed(spec, GRIDS[spec.name], interval_s))
    result = run_sweep(bars, spec, fee, trading_days, starting_cash, interval_s, settings, history=history, lot=lot)
    axes = [a["name"] for a in result.summary["axes"]]
    png = (heatmap_png(result.table, axes[0], axes[1], "sharpe", f"{spec.name} {symbol} {month}: Sharpe over the grid")
           if len(axes) == 2 and result.table.height else None)
    summary = {**result.summary, "strategy": spec.name, "symbol": symbol, "month": month, "interval": interval,
               "bars_sha256": file_sha256(path), "research_version": RESEARCH_VERSION, "history": warm}
    out = lake.sweep_dir(spec.name, symbol, month)
    files = ["grid.parquet", "summary.json"]
    with lake.lock(f"sweep-{spec.name}-{symbol}-{month}"), atomic_dir(out, "sweep") as new:
        lake.write_parquet(result.table, new / "grid.parquet")
        lake.write_json(summary, new / "summary.json")
        if result.summary["combinations"]:  # a slice too short to rank has no returns to keep
            lake.write_parquet(sweep_returns.returns_frame(result.hours, result.hourly), new / sweep_returns.FILE)
            files.append(sweep_returns.FILE)
        if png:
            (new / "heatmap.png").write_bytes(png)
        hashes = {n: file_sha256(new / n) for n in files}
        lake.write_json({"strategy": spec.name, "symbol": symbol, "month": month, "files": hashes,
                         "bars_path": lake.relative(path), "sweep_version": SWEEP_VERSION}, new / "manifest.json")
    if result.summary["combinations"]:
        # After the publish: a sweep that failed to publish tried nothing anyone can see.
        trials.record(lake, spec.impl, spec.name, grid_trial(spec, GRIDS[spec.name], interval),
                      n_sets=int(result.summary["combinations"]))
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24]
    return SweepOutput(out, result.table, summary, png, version)
