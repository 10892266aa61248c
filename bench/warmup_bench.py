"""Benchmark of issue 20's warm-up target: a backtest of month M warmed on the end of M−1 costs
at most 1.2× the same backtest started cold.

Usage (from the repository root)::

    uv run python bench/warmup_bench.py                  # full run, writes bench/RESULTS.md
    uv run python bench/warmup_bench.py --events 200000 --no-results   # a quick look

A lake of two synthetic BTCUSDT months (``--events`` each, 1.43M by default) is made once. Each
measurement runs ``run_backtest`` of ema_cross on 2024-02 in its own child process after a
warm-up backtest of a small month (imports, the engine's construction: outside the timing):
*cold* on a lake without 2024-01 (the strategy waits its warm-up inside February), *warm* on
the lake with it (the tail of January read from its last row groups and fed with trading off).
Both with the registry's parameters and with the sweep grid's slowest EMA (2,400 one-minute
bars: a warm-up of 7,200 bars, five days of January). Alternating, best of ``--repeats``.
Target: warm / cold <= 1.2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_main, emit, machine, machine_line, run_child  # noqa: E402

WORK = REPO / "bench" / "_work" / "warmup_bench"
SECTION = "## Warm-up reads (issue 20)"
COMMAND = "uv run python bench/warmup_bench.py"
TARGET = 1.2
CASES = {"registry parameters": {}, "slowest EMA of the sweep grid": {"fast_period": 100, "slow_period": 2400}}


def child_gen(path: str, month: str, events: int) -> dict:
    from quant_assets.ingest.synthetic import SyntheticSpec, generate

    df = generate(SyntheticSpec("BTCUSDT", month, events=events)).sort("ts_recv", "seq")
    df.write_parquet(path)
    return {"rows": df.height}


def _lake(root: Path, files: dict[str, Path]):
    import polars as pl

    from quant_assets.lake import instruments as inst_mod
    from quant_assets.lake.store import Lake

    lake = Lake.at(root)
    for month, data in files.items():
        path = lake.ticks_path("BTCUSDT", month)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, path)
        inst_mod.record_inferred(lake, inst_mod.infer("BTCUSDT", pl.scan_parquet(path), "BINANCE"), month)
    return lake


def child_run(jan: str, feb: str, small: str, warm: bool, params: dict) -> dict:
    import os

    from quant_assets.engines.runner import run_backtest
    from quant_assets.strategies import registry

    os.environ["QUANT_VENUES"] = str(Path(tempfile.gettempdir()) / "no-venues.toml")
    os.environ["QUANT_INSTRUMENTS"] = str(Path(tempfile.gettempdir()) / "no-instruments.toml")
    spec = registry.load()["ema_cross"].with_values(params)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        first = _lake(Path(tmp) / "first", {"2023-06": Path(small)})
        run_backtest(first, spec, "BTCUSDT", "2023-06")
        lake = _lake(Path(tmp) / "lake", {**({"2024-01": Path(jan)} if warm else {}), "2024-02": Path(feb)})
        t0 = time.perf_counter()
        out = run_backtest(lake, spec, "BTCUSDT", "2024-02")
        wall = time.perf_counter() - t0
    w = out.manifest["warmup"]
    return {"wall_s": wall, "events": out.manifest["events"], "fills": out.summary["fills"], "warmup": w}


CHILDREN = {"gen": child_gen, "run": child_run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--events", type=int, default=1_430_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    jan, feb, small = WORK / f"jan-{args.events}.parquet", WORK / f"feb-{args.events}.parquet", WORK / "small.parquet"
    for path, month, n in ((jan, "2024-01", args.events), (feb, "2024-02", args.events), (small, "2023-06", 20_000)):
        if not path.exists():
            run_child(__file__, "gen", path=str(path), month=month, events=n)
    best: dict[tuple[str, bool], dict] = {}
    for _ in range(args.repeats):
        for case, params in CASES.items():
            for warm in (False, True):
                r = run_child(__file__, "run", jan=str(jan), feb=str(feb), small=str(small), warm=warm, params=params)
                key = (case, warm)
                if key not in best or r["wall_s"] < best[key]["wall_s"]:
                    best[key] = r
                print(f"{case:32s} {'warm' if warm else 'cold'} {r['wall_s']:.2f} s ({r['warmup']['status']}, "
                      f"{r['warmup']['inputs']} inputs) {r['fills']} fills")

    mach = machine(("nautilus_trader", "polars"))
    lines = [SECTION, "", f"`{COMMAND}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}):", "", machine_line(mach),
             f"- data: two synthetic BTCUSDT months of {args.events:,} events each; `run_backtest` of ema_cross on the second, "
             "cold (no previous month in the lake: the strategy waits its warm-up inside the month) and warm (the end of the "
             "previous month read from its last row groups and fed with trading off); each in its own process after a small "
             f"warm-up backtest (imports, engine construction excluded); best of {args.repeats} alternating runs.", "",
             "| parameters | warm-up | cold (s) | warm (s) | warm / cold | target | |", "|---|---|---:|---:|---:|---:|---|"]
    for case in CASES:
        c, w = best[(case, False)], best[(case, True)]
        ratio = w["wall_s"] / c["wall_s"]
        lines.append(f"| {case} | {w['warmup']['declared']} | {c['wall_s']:.2f} | {w['wall_s']:.2f} | {ratio:.3f} | <= {TARGET} | "
                     f"{'PASS' if ratio <= TARGET else 'MISS'} |")
    lines.append("")
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
