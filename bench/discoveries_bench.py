"""The false-discovery ledger at scale (issue 20): 400 symbols × 84 months × 3 strategies.

    uv run python bench/discoveries_bench.py            # writes bench/RESULTS.md
    uv run python bench/discoveries_bench.py --no-results

A synthetic ledger with the real file formats: one ``validation.parquet`` per strategy × symbol
× month (3 suggestions each: 100,800 files, 302,400 tests) and one ``handoff.parquet`` per symbol
× month of the swept strategy (3 candidates each: 33,600 files, 100,800 tests), p-values
uniform. Each measurement runs in a fresh interpreter (peak RSS from ``os.wait4``):
- the first run of ``run_discoveries`` (every file read);
- a run with nothing new (list and stat only);
- a run after one new month of every symbol (1,600 files rewritten);
- DuckDB: the ``suggestions`` view (each slice's figures joined with the verdict), counted.
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
WORK = HERE / "_work" / "discoveries_bench"
SECTION = "## False-discovery ledger at 400 symbols × 84 months (issue 20)"
COMMAND = "uv run python bench/discoveries_bench.py"
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")


def _months(n: int) -> list[str]:
    return [f"{2019 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]


def _write(root: str, symbols: int, months: list[str], seed: int) -> int:
    """Validation and hand-off files of ``months`` (plain writes: the generator is not measured)."""
    import numpy as np
    import polars as pl

    from quant_assets.critique.oos import SCHEMA as OOS
    from quant_assets.critique.oos import next_month
    from quant_assets.lake.store import Lake
    from quant_assets.research.handoff import SCHEMA as HANDOFF

    lake = Lake.at(root)
    rng = np.random.default_rng(seed)
    n = 0

    def frame(schema, rows):
        return pl.DataFrame([{**{c: None for c in schema}, **r} for r in rows], schema=schema)

    for m in months:
        oos = next_month(m)
        for s in range(symbols):
            sym = f"SYM{s:04d}"
            for strategy in STRATEGIES:
                p = rng.random(3)
                rows = [{"strategy": strategy, "symbol": sym, "critique_month": m, "oos_month": oos, "critic": "rules",
                         "name": "fast_period", "value": str(10 + k), "hypothesis": "trade less: fees exceed the gross PnL",
                         "suggestion_index": k, "tested": True, "n_tested": 3, "p_value": float(p[k]), "local_bar": 0.05 / 3,
                         "clears_local_bar": bool(p[k] <= 0.05 / 3), "reason": "synthetic"} for k in range(3)]
                d = lake.oos_dir(strategy, sym, m)
                d.mkdir(parents=True, exist_ok=True)
                frame(OOS, rows).write_parquet(d / "validation.parquet", compression="zstd", compression_level=1)
                n += 1
            p = rng.random(3)
            rows = [{"strategy": "ema_cross", "symbol": sym, "sweep_month": m, "oos_month": oos, "sweep_rank": k + 1,
                     "event_params": '{"fast_period": 400, "slow_period": 6000}', "tested": True, "n_tested": 3,
                     "p_value": float(p[k]), "local_bar": 0.05 / 3, "clears_local_bar": bool(p[k] <= 0.05 / 3),
                     "reason": "synthetic"} for k in range(3)]
            d = lake.handoff_dir("ema_cross", sym, m)
            d.mkdir(parents=True, exist_ok=True)
            frame(HANDOFF, rows).write_parquet(d / "handoff.parquet", compression="zstd", compression_level=1)
            n += 1
    return n


def child_generate(root: str, symbols: int, months: int) -> dict:
    t0 = time.perf_counter()
    n = _write(root, symbols, _months(months), seed=0)
    return {"files": n, "seconds": time.perf_counter() - t0}


def child_ledger(root: str) -> dict:
    from quant_assets.analytics.discoveries import run_discoveries
    from quant_assets.lake.store import Lake

    t0 = time.perf_counter()
    out = run_discoveries(Lake.at(root), 0.10)
    return {"seconds": time.perf_counter() - t0, "summary": out.summary,
            **{k: out.manifest[k] for k in ("files_read", "files_carried_over", "tested", "source_files")}}


def child_new_month(root: str, symbols: int, months: int) -> dict:
    """Rewrite the last month of every symbol (new p-values), then run the ledger."""
    t0 = time.perf_counter()
    n = _write(root, symbols, _months(months)[-1:], seed=1)
    written = time.perf_counter() - t0
    return {"rewritten": n, "write_seconds": written, **child_ledger(root)}


def child_view(root: str) -> dict:
    from quant_assets.lake import duck
    from quant_assets.lake.store import Lake

    t0 = time.perf_counter()
    con = duck.connect(Lake.at(root))
    connected = time.perf_counter() - t0
    t1 = time.perf_counter()
    n, k = con.sql("SELECT count(*), count(*) FILTER (WHERE improved) FROM suggestions").fetchall()[0]
    return {"connect_seconds": connected, "query_seconds": time.perf_counter() - t1, "rows": n, "improved": k}


CHILDREN = {"generate": child_generate, "ledger": child_ledger, "new_month": child_new_month, "view": child_view}


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
        first = run_child(__file__, "ledger", root=str(root))
        again = run_child(__file__, "ledger", root=str(root))
        month = run_child(__file__, "new_month", root=str(root), symbols=args.symbols, months=args.months)
        view = run_child(__file__, "view", root=str(root))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    mib = lambda r: r["maxrss_kib"] / 1024  # noqa: E731
    lines = [
        SECTION, "",
        f"`{COMMAND}` (synthetic ledger with the real file formats: {args.symbols} symbols × {args.months} months; 3 "
        f"strategies' validations and 1 strategy's hand-offs, 3 tests each: {gen['files']:,} files, {first['tested']:,} tests)",
        "",
        machine_line(machine(("polars", "duckdb", "statsmodels"))),
        "",
        "| run | files read | files carried over | time | peak RSS |",
        "|---|---:|---:|---:|---:|",
        f"| first run (every file) | {first['files_read']:,} | {first['files_carried_over']:,} | {first['seconds']:.1f} s | {mib(first):,.0f} MiB |",
        f"| nothing new (list + stat) | {again['files_read']:,} | {again['files_carried_over']:,} | {again['seconds']:.1f} s | {mib(again):,.0f} MiB |",
        f"| one new month of every symbol | {month['files_read']:,} | {month['files_carried_over']:,} | {month['seconds']:.1f} s | {mib(month):,.0f} MiB |",
        "",
        f"- verdict: {first['summary']} (p-values uniform: every test is noise, and BH keeps it so)",
        f"- DuckDB `suggestions` view (every slice joined with the verdict): connect {view['connect_seconds']:.1f} s, "
        f"count {view['query_seconds']:.1f} s ({view['rows']:,} rows, {view['improved']:,} improved), peak RSS {mib(view):,.0f} MiB",
    ]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
