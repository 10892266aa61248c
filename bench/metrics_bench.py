"""Benchmark of the metric sets and roll-ups (issue 4).

Usage (from the repository root)::

    uv run python bench/metrics_bench.py                 # full run, writes bench/RESULTS.md
    uv run python bench/metrics_bench.py --quick --no-results

Measured in one run, each part in its own child process (peak RSS from ``os.wait4``):

1. One slice of a month of 1-second equity: a real ``ema_cross`` backtest of a synthetic
   month (~1.4M ticks, ``equity_interval_s = 1``: ~2.7M equity samples) is made first, then
   ``run_metrics`` (read the backtest, quantstats + vectorbt + market context from the ticks,
   write) is timed in a fresh process: the first call (cold: imports and vectorbt's numba
   compiles included, timed from the child's start) and the best of the next three (warm).
   Target: warm < 2 s.
2. A roll-up of 24 months: 24 synthetic months, each backtested (``ema_cross``, the default
   60 s equity grid) and given its metric set, then ``run_report`` (stitching, the metric
   set, bootstrap, Monte Carlo, deflated Sharpe, walk-forward, the quantstats tearsheet) timed
   cold and warm in a fresh process, and the tearsheet alone. Target: < 30 s.
3. ``python -c "import quant_assets.definitions"`` in a fresh interpreter (best of 3), and
   whether it imported vectorbt, quantstats, nautilus_trader or hftbacktest. Target: < 3 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

_T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, child_main, machine, machine_line, run_child, write_results  # noqa: E402

WORK = REPO / "bench" / "_work" / "metrics_bench"
SECTION = "## Metrics and roll-ups (issue 4)"
COMMAND = "uv run python bench/metrics_bench.py"
SYMBOL = "BTCUSDT"
TARGET_WARM_S = 2.0
TARGET_ROLLUP_S = 30.0
TARGET_IMPORT_S = 3.0
HEAVY = ("vectorbt", "quantstats", "nautilus_trader", "hftbacktest", "arch")


#: Slow EMAs for the 1-second month: the default ones on 1.4M ticks pay ~1,300 % of the cash in
#: fees and wipe the account out on day 20, which would cut the series measured here short.
SLICE_PARAMS = {"fast_period": 500, "slow_period": 5_000}


def child_gen(lake_root: str, months: list[str], events: int, equity_interval_s: float, params: dict | None = None) -> dict:
    """Synthetic ticks -> partitions and instruments -> ema_cross backtests (untimed setup)."""
    import polars as pl

    from quant_assets.engines.runner import run_backtest
    from quant_assets.ingest.build import build_partition
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import instruments as inst_mod
    from quant_assets.lake.store import Lake
    from quant_assets.strategies.registry import EMA_CROSS

    lake = Lake.at(lake_root)
    spec = EMA_CROSS.with_values({"equity_interval_s": equity_interval_s, **(params or {})})
    samples = fills = 0
    for i, month in enumerate(months):
        write_landing(lake, SyntheticSpec(SYMBOL, month, seed=10 + i, events=events))
        built = build_partition(lake, SYMBOL, month)
        inst_mod.record_inferred(lake, inst_mod.infer(SYMBOL, pl.scan_parquet(built.path), "BINANCE"), month)
        out = run_backtest(lake, spec, SYMBOL, month)
        samples += out.manifest["summary"]["equity_samples"]
        fills += out.manifest["summary"]["fills"]
    return {"samples": samples, "fills": fills}


def child_slice(lake_root: str, month: str, repeats: int) -> dict:
    """run_metrics cold (from the interpreter's start) and warm (best of ``repeats``)."""
    from quant_assets.analytics.slice_metrics import run_metrics
    from quant_assets.lake.store import Lake

    lake = Lake.at(lake_root)
    out = run_metrics(lake, "ema_cross", SYMBOL, month, 365)
    cold = time.perf_counter() - _T_START
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_metrics(lake, "ema_cross", SYMBOL, month, 365)
        warm.append(time.perf_counter() - t0)
    return {"cold_s": cold, "warm_s": warm, "periods": out.slice.row["periods"], "trades": out.slice.row["trades"]}


def child_metrics_all(lake_root: str, months: list[str]) -> dict:
    from quant_assets.analytics.slice_metrics import run_metrics
    from quant_assets.lake.store import Lake

    lake = Lake.at(lake_root)
    per = []
    for month in months:
        t0 = time.perf_counter()
        run_metrics(lake, "ema_cross", SYMBOL, month, 365)
        per.append(time.perf_counter() - t0)
    return {"per_month_s": per}


def child_rollup(lake_root: str, repeats: int) -> dict:
    from quant_assets.analytics.rollup import run_report
    from quant_assets.analytics.tearsheet import write_tearsheet
    from quant_assets.lake.store import Lake

    lake = Lake.at(lake_root)
    out = run_report(lake, "ema_cross", SYMBOL, 365, 1)
    cold = time.perf_counter() - _T_START
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run_report(lake, "ema_cross", SYMBOL, 365, 1)
        warm.append(time.perf_counter() - t0)
    import pandas as pd

    day = pd.Series(out.daily["return"].to_numpy(), index=pd.DatetimeIndex(out.daily["date"].cast(str).to_list()))
    t0 = time.perf_counter()
    write_tearsheet(day, WORK / "tearsheet-alone.html", "bench", 365)
    tear = time.perf_counter() - t0
    r = out.report
    return {"cold_s": cold, "warm_s": warm, "tearsheet_s": tear, "months": len(r["months"]),
            "periods": r["returns"]["periods"], "days": r["returns"]["days"], "trades": r["metrics"]["trades"]}


CHILDREN = {"gen": child_gen, "slice": child_slice, "metrics_all": child_metrics_all, "rollup": child_rollup}


def import_time(repeats: int = 3) -> dict:
    code = ("import time, sys; t=time.perf_counter(); import quant_assets.definitions; "
            "print(time.perf_counter()-t, ','.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    walls, inner, heavy = [], [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        walls.append(time.perf_counter() - t0)
        inner.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else ""
    return {"wall_s": walls, "import_s": inner, "heavy": heavy}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slice-events", type=int, default=1_430_000, help="ticks of the 1-second-equity month")
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--month-events", type=int, default=100_000, help="ticks per month of the roll-up")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    if args.quick:
        args.slice_events, args.months, args.month_events = 100_000, 3, 20_000
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    months = [f"{2022 + i // 12}-{i % 12 + 1:02d}" for i in range(args.months)]
    try:
        mach = machine(("quantstats", "vectorbt", "arch", "pandas", "polars", "dagster"))
        print("definitions import ...", flush=True)
        imp = import_time()
        slice_lake, roll_lake = str(WORK / "slice"), str(WORK / "rollup")
        print(f"backtest of {args.slice_events:,} ticks with 1-second equity ...", flush=True)
        gen1 = run_child(__file__, "gen", lake_root=slice_lake, months=["2024-01"], events=args.slice_events,
                         equity_interval_s=1.0, params=SLICE_PARAMS)
        print("metric set of the slice, cold and warm ...", flush=True)
        sl = run_child(__file__, "slice", lake_root=slice_lake, month="2024-01", repeats=args.repeat)
        print(f"{args.months} months x {args.month_events:,} ticks: backtests ...", flush=True)
        gen2 = run_child(__file__, "gen", lake_root=roll_lake, months=months, events=args.month_events, equity_interval_s=60.0)
        print("metric sets of every month ...", flush=True)
        per = run_child(__file__, "metrics_all", lake_root=roll_lake, months=months)
        print("roll-up, cold and warm ...", flush=True)
        ru = run_child(__file__, "rollup", lake_root=roll_lake, repeats=args.repeat)
        section, ok = render(args, mach, imp, gen1, sl, gen2, per, ru)
        print()
        print(section)
        if not args.no_results:
            write_results(RESULTS, SECTION, section)
            print(f"wrote section {SECTION!r} of {RESULTS}")
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return 0 if ok else 1


def render(args, mach, imp, gen1, sl, gen2, per, ru) -> tuple[str, bool]:
    warm = min(sl["warm_s"])
    roll = min(ru["warm_s"])
    imp_s = min(imp["wall_s"])
    verdict = {"warm": warm < TARGET_WARM_S, "rollup": max(ru["cold_s"], roll) < TARGET_ROLLUP_S,
               "import": imp_s < TARGET_IMPORT_S and not imp["heavy"]}
    ok = lambda v: "PASS" if v else "FAIL"  # noqa: E731
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    lines = [
        SECTION, "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        machine_line(mach),
        f"- command: `{COMMAND}`" + (" (this run: `--quick`)" if args.quick else ""),
        f"- slice: a real `ema_cross` backtest ({SLICE_PARAMS}) of a synthetic month ({args.slice_events:,} ticks) sampled every second: "
        f"{sl['periods']:,} return periods, {sl['trades']:,} trades; the ticks partition is read for the spreads at entry.",
        f"- roll-up: {ru['months']} months x {args.month_events:,} ticks, `ema_cross` on the default 60 s grid: "
        f"{ru['periods']:,} periods, {ru['days']:,} days, {ru['trades']:,} trades; bootstrap {1000} resamples, Monte Carlo {1000} reshuffles.",
        "",
        "| measurement | seconds | peak RSS (MiB) |",
        "|---|---:|---:|",
        f"| metric set of the 1-second slice, cold (fresh process: imports + numba compiles + first call) | {sl['cold_s']:.2f} | {sl['maxrss_kib'] / 1024:.0f} |",
        f"| metric set of the 1-second slice, warm (best of {len(sl['warm_s'])}: {fmt(sl['warm_s'])}) | {warm:.2f} | |",
        f"| metric set per month of the roll-up lake (60 s grid, warm after the first; all: {fmt(per['per_month_s'])}) | "
        f"{sorted(per['per_month_s'])[len(per['per_month_s']) // 2]:.2f} (median) | {per['maxrss_kib'] / 1024:.0f} |",
        f"| roll-up of {ru['months']} months, cold (fresh process) | {ru['cold_s']:.2f} | {ru['maxrss_kib'] / 1024:.0f} |",
        f"| roll-up of {ru['months']} months, warm (best of {len(ru['warm_s'])}: {fmt(ru['warm_s'])}) | {roll:.2f} | |",
        f"| of which the quantstats tearsheet alone ({ru['days']} daily returns) | {ru['tearsheet_s']:.2f} | |",
        f"| `import quant_assets.definitions` in a fresh interpreter (wall, best of 3: {fmt(imp['wall_s'])}; import alone {min(imp['import_s']):.2f}) | {imp_s:.2f} | |",
        "",
        "| target | value | result |",
        "|---|---:|---|",
        f"| warm metric set of a 1-second month < {TARGET_WARM_S:g} s | {warm:.2f} s | {ok(verdict['warm'])} |",
        f"| roll-up tearsheet of 24 months < {TARGET_ROLLUP_S:g} s (cold and warm) | {max(ru['cold_s'], roll):.2f} s | {ok(verdict['rollup'])} |",
        f"| definitions load < {TARGET_IMPORT_S:g} s without {', '.join(HEAVY)} | {imp_s:.2f} s, heavy imported: {imp['heavy'] or 'none'} | {ok(verdict['import'])} |",
        "",
    ]
    return "\n".join(lines), all(verdict.values())


if __name__ == "__main__":
    sys.exit(main())
