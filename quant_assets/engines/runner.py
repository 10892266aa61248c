"""One backtest slice, end to end, engine-agnostic: instrument → engine → result format → lake.

Output at ``<lake>/backtests/strategy=X/symbol=S/month=M/``: ``fills.parquet`` and
``equity.parquet`` (see :mod:`quant_assets.engines.result`), then ``manifest.json`` last, which
names the two files' SHA-256: a reader that trusts the manifest never sees a mixed slice.
"""

from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from quant_assets.analytics import trials
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines.result import EngineRun, finalize, summary
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import StrategySpec

#: Cash each month starts with, in the instrument's quote currency; every month starts flat.
STARTING_CASH = 100_000.0


@dataclass(frozen=True)
class BacktestOutput:
    directory: Path
    manifest: dict[str, Any]
    summary: dict[str, float | int]
    equity: pl.DataFrame
    data_version: str  # hash of the fills and equity files


def run_engine(spec: StrategySpec, ticks_path: Path, instrument: inst_mod.Instrument, params: dict[str, Any],
               starting_cash: float = STARTING_CASH) -> EngineRun:
    """Dispatch to the spec's engine (imported here, never at module load)."""
    if spec.engine == "nautilus":
        from quant_assets.engines.nautilus import run_nautilus

        return run_nautilus(ticks_path, instrument, spec.impl, params, starting_cash)
    if spec.engine == "hftbacktest":
        from quant_assets.engines.hft import run_hftbacktest

        return run_hftbacktest(ticks_path, instrument, params, starting_cash)
    raise ValueError(f"{spec.name}: unknown engine {spec.engine!r}")


def run_backtest(
    lake: Lake, spec: StrategySpec, symbol: str, month: str,
    ticks_version: str | None = None, code_version: str | None = None, starting_cash: float = STARTING_CASH,
    out_dir: Path | None = None,
) -> BacktestOutput:
    """Backtest ``spec`` on the ``ticks`` partition (month, symbol) and publish the result.

    Parameters are validated before the engine starts; an unusable partition raises
    :class:`BacktestInputError` naming it. The previous result stays in place until the new
    one is complete. ``out_dir`` puts the result elsewhere than the strategy's backtest slice
    (the out-of-sample re-tests of suggested parameters use it).
    """
    params = spec.resolved()
    ticks_path = lake.ticks_path(symbol, month)
    instrument = inst_mod.resolve(lake, symbol)
    if instrument is None:
        raise BacktestInputError(f"{symbol} {month}: no instrument record (materialise `ticks` for it or add [{symbol}] to instruments.toml)")
    # The month is charged the fee schedule in force when it starts (per-symbol overrides win);
    # the margin settings are recorded for the result layer (liquidation) to use.
    fees = inst_mod.fee_choice(instrument, month)
    instrument = replace(instrument, maker_fee=fees.maker, taker_fee=fees.taker)
    max_leverage, maintenance_margin = inst_mod.margin_for(instrument)
    rss_before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    run = run_engine(spec, ticks_path, instrument, params, starting_cash)
    fills, equity = finalize(run)
    out = out_dir or lake.backtest_dir(spec.name, symbol, month)
    lock = lake.lock(f"backtest-{spec.name}-{symbol}-{month}" if out_dir is None else "run-" + hashlib.sha256(str(out).encode()).hexdigest()[:16])
    with lock, atomic_dir(out, "backtest") as new:
        lake.write_parquet(fills, new / "fills.parquet")
        lake.write_parquet(equity, new / "equity.parquet")
        hashes = {name: file_sha256(new / name) for name in ("fills.parquet", "equity.parquet")}
        wall = time.perf_counter() - t0
        head = summary(fills, equity, starting_cash)
        manifest = {
            "strategy": spec.name,
            "symbol": symbol,
            "month": month,
            "params": params,
            "engine": run.engine,
            "engine_version": run.engine_version,
            "adapter_version": ADAPTER_VERSIONS[spec.engine],
            "code_version": code_version or spec.code_version(ADAPTER_VERSIONS[spec.engine]),
            "ticks_data_version": ticks_version,
            "ticks_path": lake.relative(ticks_path),
            "instrument": instrument.__dict__,
            "fee_schedule": {**asdict(fees), "label": fees.label()},
            "margin": {"max_leverage": max_leverage, "maintenance_margin": maintenance_margin},
            "starting_cash": starting_cash,
            "quote_currency": run.quote_currency,
            "events": run.events,
            "engine_wall_s": round(run.wall_s, 4),
            "wall_s": round(wall, 4),
            "events_per_s": round(run.events_per_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_growth_mb": round((psutil.Process().memory_info().rss - rss_before) / 2**20, 1),
            "files": hashes,
            "summary": head,
            "notes": run.notes,
        }
        lake.write_json(manifest, new / "manifest.json")
    # The deflated Sharpe of the roll-ups needs every parameter set this implementation was run with.
    trials.record(lake, spec.impl, spec.name, params)
    version = hashlib.sha256("|".join(hashes[k] for k in sorted(hashes)).encode()).hexdigest()[:24]
    return BacktestOutput(out, manifest, head, equity, version)
