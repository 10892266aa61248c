"""The judge's scorecard at scale (issue 22): 400 symbols × 84 months × 3 strategies.

    uv run python bench/scorecard_bench.py            # writes bench/RESULTS.md
    uv run python bench/scorecard_bench.py --no-results

A synthetic lake of validations with the real file format: one ``validation.parquet`` per
strategy × symbol × month (100,800 files), each with 3 critic suggestions and 3 null-critic
changes (604,800 proposals), the Sharpe differences normal with mean 0 for both arms (a critic
no better than random). Each measurement runs in a fresh interpreter (peak RSS from
``os.wait4``):
- the first run of ``run_scorecard`` (every file read);
- a run with nothing new (list and stat only);
- a run after one new month of every symbol (1,200 files rewritten);
- DuckDB: the ``scorecard`` view (one file).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import child_main, emit, machine, machine_line, run_child  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "scorecard_bench"
SECTION = "## The judge's scorecard at 400 symbols × 84 months (issue 22)"
COMMAND = "uv run python bench/scorecard_bench.py"
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")


def _months(n: int) -> list[str]:
    return [f"{2019 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]


def _write(root: str, symbols: int, months: list[str], seed: int) -> int:
    """Validation files of ``months`` (plain writes: the generator is not measured)."""
    import numpy as np
    import polars as pl

    from quant_assets.critique.oos import SCHEMA as OOS
    from quant_assets.critique.oos import next_month
    from quant_assets.lake.store import Lake

    lake = Lake.at(root)
    rng = np.random.default_rng(seed)
    n = 0
    for m in months:
        oos = next_month(m)
        for s in range(symbols):
            sym = f"SYM{s:04d}"
            for strategy in STRATEGIES:
                delta = rng.normal(0.0, 1.0, 6)
                critic, model = ("rules", "rules-v1") if s % 2 else ("anthropic", "claude-sonnet-4-6")
                rows = [{**{c: None for c in OOS}, "strategy": strategy, "symbol": sym, "critique_month": m, "oos_month": oos,
                         "critic": critic, "model": model, "arm": "critic" if j < 3 else "null", "name": "fast_period",
                         "value": str(10 + j), "hypothesis": "synthetic", "suggestion_index": j % 3, "tested": True,
                         "n_tested": 3, "oos_delta_sharpe": float(delta[j]), "p_value": 0.5, "reason": "synthetic"}
                        for j in range(6)]
                d = lake.oos_dir(strategy, sym, m)
                d.mkdir(parents=True, exist_ok=True)
                pl.DataFrame(rows, schema=OOS).write_parquet(d / "validation.parquet", compression="zstd", compression_level=1)
                n += 1
    return n


def child_generate(root: str, symbols: int, months: int) -> dict:
    t0 = time.perf_counter()
    n = _write(root, symbols, _months(months), seed=0)
    return {"files": n, "seconds": time.perf_counter() - t0}


def child_scorecard(root: str) -> dict:
    from quant_assets.analytics.scorecard import run_scorecard
    from quant_assets.lake.store import Lake

    t0 = time.perf_counter()
    out = run_scorecard(Lake.at(root))
    return {"seconds": time.perf_counter() - t0, "summary": out.summary, "proposals": out.manifest["proposals"],
            **{k: out.manifest[k] for k in ("files_read", "files_carried_over", "source_files")}}


def child_new_month(root: str, symbols: int, months: int) -> dict:
    """Rewrite the last month of every symbol, then run the scorecard."""
    t0 = time.perf_counter()
    n = _write(root, symbols, _months(months)[-1:], seed=1)
    written = time.perf_counter() - t0
    return {"rewritten": n, "write_seconds": written, **child_scorecard(root)}


def child_view(root: str) -> dict:
    from quant_assets.lake import duck
    from quant_assets.lake.store import Lake

    t0 = time.perf_counter()
    con = duck.connect(Lake.at(root))
    connected = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = con.sql("SELECT critic, critic_tested, null_tested FROM scorecard ORDER BY critic").fetchall()
    return {"connect_seconds": connected, "query_seconds": time.perf_counter() - t1, "rows": rows}


CHILDREN = {"generate": child_generate, "scorecard": child_scorecard, "new_month": child_new_month, "view": child_view}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--months", type=int, default=84)
    ap.add_argument("--no-results", action="store_true", help="print only; do not update bench/RESULTS.md")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    root = WORK / "lake"
    shutil.rmtree(WORK, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        gen = run_child(__file__, "generate", root=str(root), symbols=args.symbols, months=args.months)
        first = run_child(__file__, "scorecard", root=str(root))
        again = run_child(__file__, "scorecard", root=str(root))
        month = run_child(__file__, "new_month", root=str(root), symbols=args.symbols, months=args.months)
        view = run_child(__file__, "view", root=str(root))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    mib = lambda r: r["maxrss_kib"] / 1024  # noqa: E731
    lines = [
        SECTION, "",
        f"`{COMMAND}` (synthetic validations with the real file format: {args.symbols} symbols × {args.months} months × 3 "
        f"strategies, 3 critic suggestions and 3 null-critic changes each: {gen['files']:,} files, {first['proposals']:,} "
        "proposals)",
        "",
        machine_line(machine(("polars", "duckdb", "scipy"))),
        "",
        "| run | files read | files carried over | time | peak RSS |",
        "|---|---:|---:|---:|---:|",
        f"| first run (every file) | {first['files_read']:,} | {first['files_carried_over']:,} | {first['seconds']:.1f} s | {mib(first):,.0f} MiB |",
        f"| nothing new (list + stat) | {again['files_read']:,} | {again['files_carried_over']:,} | {again['seconds']:.1f} s | {mib(again):,.0f} MiB |",
        f"| one new month of every symbol | {month['files_read']:,} | {month['files_carried_over']:,} | {month['seconds']:.1f} s | {mib(month):,.0f} MiB |",
        "",
        f"- scorecard: {first['summary']} (both arms drawn alike: no critic should beat random)",
        f"- DuckDB `scorecard` view (one file): query {view['query_seconds']:.2f} s; connecting binds every view of the "
        f"lake, the `suggestions` view over every validation file most of it: {view['connect_seconds']:.1f} s, "
        f"peak RSS {mib(view):,.0f} MiB",
    ]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
