"""Benchmark of issue 20's walk-forward: 12 months × the demo grid, and what a new month costs.

Usage (from the repository root)::

    uv run python bench/walkforward_bench.py                 # full run, writes bench/RESULTS.md
    uv run python bench/walkforward_bench.py --events 50000 --no-results   # a quick look

In one child process (imports and numba compiles paid first, on a small month, outside the
timing), on a lake of synthetic BTCUSDT months of ``--events`` events each (the demo's 200,000):

1. the 12 months' bars and sweeps of ema_cross's demo grid (10 × 10), each warmed on the month
   before, then the walk-forward: a fold per month from the second (rolling 3 months in sample,
   the choice run event-driven on the fold's month) and the stitched report;
2. a thirteenth month lands: its bars, its sweep, its one fold and the stitched report again.

Reported: the times of each part, per fold, and the new month's cost as a share of the whole
walk-forward (the incremental path does one month's work, not twelve).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_main, emit, machine, machine_line, run_child  # noqa: E402

WORK = REPO / "bench" / "_work" / "walkforward_bench"
SECTION = "## Walk-forward optimisation (issue 20)"
COMMAND = "uv run python bench/walkforward_bench.py"
MONTHS = [f"2023-{m:02d}" for m in range(1, 13)] + ["2024-01"]


def child_run(events: int) -> dict:
    import os

    import polars as pl

    from quant_assets.ingest.synthetic import SyntheticSpec, generate
    from quant_assets.lake import instruments as inst_mod
    from quant_assets.lake.store import Lake
    from quant_assets.research.run import run_bars, run_sweep_slice
    from quant_assets.research.walkforward import WalkForwardSettings, run_fold, run_walkforward
    from quant_assets.strategies import registry

    os.environ["QUANT_VENUES"] = str(Path(tempfile.gettempdir()) / "no-venues.toml")
    os.environ["QUANT_INSTRUMENTS"] = str(Path(tempfile.gettempdir()) / "no-instruments.toml")
    spec = registry.load()["ema_cross"]
    settings = WalkForwardSettings()

    def land(lake, month: str, n: int, seed: int) -> None:
        path = lake.ticks_path("BTCUSDT", month)
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(SyntheticSpec("BTCUSDT", month, seed=seed, events=n)).sort("ts_recv", "seq").write_parquet(path)
        inst_mod.record_inferred(lake, inst_mod.infer("BTCUSDT", pl.scan_parquet(path), "BINANCE"), month)

    def research(lake, month: str) -> None:
        inst = inst_mod.resolve(lake, "BTCUSDT", month=month)
        run_bars(lake, "BTCUSDT", month)
        run_sweep_slice(lake, spec, "BTCUSDT", month, inst.taker_fee, inst.trading_days, 100_000.0, lot=inst.lot_size)

    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        # Warm-up of the process: imports, numba compiles, the engine's construction.
        warm = Lake.at(Path(tmp) / "warm")
        for i, m in enumerate(("2022-01", "2022-02")):
            land(warm, m, 20_000, 90 + i)
            research(warm, m)
        run_fold(warm, spec, "BTCUSDT", "2022-02", 365, settings)
        lake = Lake.at(Path(tmp) / "lake")
        for i, m in enumerate(MONTHS):
            land(lake, m, events, 7 + i)
        t0 = time.perf_counter()
        for m in MONTHS[:12]:
            research(lake, m)
        t_sweeps = time.perf_counter() - t0
        t0 = time.perf_counter()
        folds = [run_fold(lake, spec, "BTCUSDT", m, 365, settings) for m in MONTHS[1:12]]
        report = run_walkforward(lake, "ema_cross", "BTCUSDT", 365)
        t_folds = time.perf_counter() - t0
        t0 = time.perf_counter()
        research(lake, MONTHS[12])
        new = run_fold(lake, spec, "BTCUSDT", MONTHS[12], 365, settings)
        report = run_walkforward(lake, "ema_cross", "BTCUSDT", 365)
        t_new = time.perf_counter() - t0
    r = report.report
    return {"sweeps_s": t_sweeps, "folds_s": t_folds, "new_month_s": t_new, "folds": len(folds) + 1,
            "efficiency": r.get("walk_forward_efficiency"), "oos_sharpe": r.get("oos_sharpe_hourly"),
            "is_sharpe_mean": r.get("is_sharpe_mean"), "path": [p["params_bars"] for p in r.get("parameter_path", [])],
            "new_fold": {k: new.row[k] for k in ("in_sample", "params_bars", "is_sharpe", "oos_sharpe")}}


CHILDREN = {"run": child_run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    r = run_child(__file__, "run", events=args.events)
    whole = r["sweeps_s"] + r["folds_s"]
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    mach = machine(("nautilus_trader", "vectorbt", "polars"))
    lines = [SECTION, "", f"`{COMMAND}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}):", "", machine_line(mach),
             f"- data: 13 synthetic BTCUSDT months of {args.events:,} events (the demo's size); ema_cross's demo grid "
             "(10 × 10 = 100 combinations) on 1-minute bars, each sweep warmed on the month before; folds rolling 3 months "
             "in sample, the choice run event-driven on the fold's month (NautilusTrader, built-in venue profile, warmed on "
             "the month before); one process, imports and compiles paid before the timing; peak RSS "
             f"{r['maxrss_kib'] / 1024:,.0f} MB.", "",
             "| part | time (s) | per month (s) |", "|---|---:|---:|",
             f"| 12 months: bars + sweeps | {r['sweeps_s']:.1f} | {r['sweeps_s'] / 12:.2f} |",
             f"| 11 folds + the stitched report | {r['folds_s']:.1f} | {r['folds_s'] / 11:.2f} |",
             f"| the whole walk-forward of 12 months | {whole:.1f} | |",
             f"| a 13th month: its bars, sweep, one fold and the report | {r['new_month_s']:.1f} | |", "",
             f"A new month costs {r['new_month_s'] / whole:.1%} of recomputing the walk-forward ({r['new_month_s']:.1f} s "
             f"against {whole:.1f} s): one month's work, as the assets do it. On this random-walk feed the stitched "
             f"out-of-sample Sharpe over {r['folds']} folds is {f(r['oos_sharpe'])} against a mean in-sample Sharpe of "
             f"{f(r['is_sharpe_mean'])} (efficiency {f(r['efficiency'])}); the thirteenth fold chose "
             f"{r['new_fold']['params_bars']} on {r['new_fold']['in_sample']}.", ""]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
