"""Benchmark of issue 19's second target: the realism sensitivity of a slice (four re-runs:
latency × 0, × 2, × 5, costs × 1.5) costs at most 4.5× one backtest of the same slice.

Usage (from the repository root)::

    uv run python bench/sensitivity_bench.py                 # full run, writes bench/RESULTS.md
    uv run python bench/sensitivity_bench.py --events 200000 --no-results   # a quick look

Each engine runs in its own child process on a lake of one synthetic BTCUSDT month (1.43M
events by default) under the built-in BINANCE spot venue profile: a warm-up backtest of a
20,000-event month first (numba compiles, the NautilusTrader engine's construction, imports:
paid once per process, outside the timing), then ``run_backtest`` of the month (timed: what the
``backtest_<strategy>`` asset does, writing included) and ``run_sensitivity`` of the same slice
(timed: what ``sensitivity_<strategy>`` does). Best of ``--repeats`` processes per engine.
Target: sensitivity / backtest <= 4.5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_main, emit, machine, machine_line, run_child  # noqa: E402

WORK = REPO / "bench" / "_work" / "sensitivity_bench"
SECTION = "## Realism sensitivity (issue 19)"
COMMAND = "uv run python bench/sensitivity_bench.py"
TARGET = 4.5
STRATEGIES = {"nautilus": "ema_cross", "hft": "market_maker"}


def _lake_with(root: Path, data: Path, symbol: str, month: str):
    """A lake holding ``data`` as the ticks partition (symbol, month) and its instrument record."""
    import shutil

    import polars as pl

    from quant_assets.lake import instruments as inst_mod
    from quant_assets.lake.store import Lake

    lake = Lake.at(root)
    path = lake.ticks_path(symbol, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data, path)
    inst_mod.record_inferred(lake, inst_mod.infer(symbol, pl.scan_parquet(path), "BINANCE"), month)
    return lake


def child_gen(path: str, events: int) -> dict:
    from quant_assets.ingest.synthetic import SyntheticSpec, generate

    df = generate(SyntheticSpec("BTCUSDT", "2024-01", events=events)).sort("ts_recv", "seq")
    df.write_parquet(path)
    return {"rows": df.height}


def child_run(engine: str, path: str, warmup: str) -> dict:
    import os

    from quant_assets.engines.runner import run_backtest
    from quant_assets.strategies import registry
    from quant_assets.venues.sensitivity import run_sensitivity

    os.environ["QUANT_VENUES"] = str(Path(tempfile.gettempdir()) / "no-venues.toml")  # the built-in profiles
    os.environ["QUANT_INSTRUMENTS"] = str(Path(tempfile.gettempdir()) / "no-instruments.toml")
    spec = registry.load()[STRATEGIES[engine]]
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        warm = _lake_with(Path(tmp) / "warm", Path(warmup), "BTCUSDT", "2023-12")
        run_backtest(warm, spec, "BTCUSDT", "2023-12")
        lake = _lake_with(Path(tmp) / "lake", Path(path), "BTCUSDT", "2024-01")
        t0 = time.perf_counter()
        bt = run_backtest(lake, spec, "BTCUSDT", "2024-01")
        t_bt = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_sensitivity(lake, spec, "BTCUSDT", "2024-01")
        t_sens = time.perf_counter() - t0
    return {"backtest_s": t_bt, "sensitivity_s": t_sens, "events": bt.manifest["events"], "profile": bt.manifest["venue_profile"]["label"],
            "rows": [{k: r[k] for k in ("scenario", "pnl", "sharpe", "fills")} for r in out.rows], "fragile": out.fragile,
            "reason": out.reason, "walls": out.run["wall_s"]}


CHILDREN = {"gen": child_gen, "run": child_run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--events", type=int, default=1_430_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    data, warm = WORK / f"ticks-{args.events}.parquet", WORK / "ticks-warmup.parquet"
    if not data.exists():
        run_child(__file__, "gen", path=str(data), events=args.events)
    if not warm.exists():
        run_child(__file__, "gen", path=str(warm), events=20_000)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for engine in STRATEGIES:
            r = run_child(__file__, "run", engine=engine, path=str(data), warmup=str(warm))
            r["ratio"] = r["sensitivity_s"] / r["backtest_s"]
            print(f"{engine:8s} backtest {r['backtest_s']:.2f} s, sensitivity {r['sensitivity_s']:.2f} s: {r['ratio']:.2f}x")
            if engine not in best or r["ratio"] < best[engine]["ratio"]:
                best[engine] = r

    mach = machine(("nautilus_trader", "hftbacktest", "polars"))
    lines = [SECTION, "", f"`{COMMAND}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}):", "", machine_line(mach),
             f"- data: one synthetic BTCUSDT month of {best['nautilus']['events']:,} events in a lake of its own, the built-in "
             f"venue profile {best['nautilus']['profile']}; each engine in its own process after a warm-up backtest of 20,000 events "
             f"(numba compiles, engine construction and imports excluded); best of {args.repeats}.",
             "- backtest = `run_backtest` (the `backtest_<strategy>` asset's work, files written); sensitivity = `run_sensitivity` "
             "(four re-runs: latency × 0, × 2, × 5, costs × 1.5, and its report).", "",
             "| strategy (engine) | backtest (s) | sensitivity (s) | ratio | target | |", "|---|---:|---:|---:|---:|---|"]
    for engine, strategy in STRATEGIES.items():
        r = best[engine]
        lines.append(f"| {strategy} ({engine}) | {r['backtest_s']:.2f} | {r['sensitivity_s']:.2f} | {r['ratio']:.2f} | <= {TARGET} | "
                     f"{'PASS' if r['ratio'] <= TARGET else 'MISS'} |")
    lines.append("")
    for engine, strategy in STRATEGIES.items():
        r = best[engine]
        said = ", ".join(f"{x['scenario']} {x['pnl']:+,.0f} ({x['fills']:,} fills)" for x in r["rows"])
        lines.append(f"- {strategy}: {said}; fragile: {r['fragile']} ({r['reason']}); re-run walls {r['walls']}.")
    lines.append("")
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
