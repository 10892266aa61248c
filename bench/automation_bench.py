"""Benchmark of incremental rebuilds through the real daemon (issue 6).

Usage (from the repository root)::

    uv run python bench/automation_bench.py                 # writes bench/RESULTS.md
    uv run python bench/automation_bench.py --quick --no-results

Two lakes, each built beforehand with ``quant-assets sync`` (untimed): a small one (1 symbol ×
1 month) and a large one (4 symbols × 12 months), synthetic months of ``--events`` ticks. For
each, ``dagster dev`` (webserver + daemon, sensors every 5 s) is started on it and left to
settle (it must launch nothing: the lake is up to date), then the file of one new month of one
symbol is dropped into the landing zone. Measured: the seconds from the drop until every asset
it should rebuild is materialised and no run is left queued or running, the runs and steps
launched, and every (asset, partition) materialised meanwhile, which must be exactly: the new
month's ``ticks`` and its backtests, metric sets and critiques, the out-of-sample validations of
the month before (now testable) and the symbol's roll-ups.

Target: the large lake's time within 1.5× of the small one's, the same steps, nothing else
rebuilt (how the steps group into runs depends on the automation ticks: reported, not a target).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, machine, machine_line, write_results  # noqa: E402

sys.path.insert(0, str(REPO))
WORK = REPO / "bench" / "_work" / "automation_bench"
SECTION = "## Incremental rebuilds through the daemon (issue 6)"
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")
TARGET = 1.5


def _env(lake: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "QUANT_LAKE": str(lake), "DAGSTER_HOME": str(home), "QUANT_SENSOR_INTERVAL_S": "5"}
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def build(name: str, symbols: list[str], months: list[str], events: int) -> tuple[Path, Path, float]:
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake
    from quant_assets.settings import _DAGSTER_YAML

    lake, home = WORK / name / "lake", WORK / name / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    for i, symbol in enumerate(symbols):
        for j, month in enumerate(months):
            write_landing(Lake.at(lake), SyntheticSpec(symbol, month, seed=100 * i + j, events=events))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "quant_assets.cli", "sync"], cwd=REPO, env=_env(lake, home),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"sync of the {name} lake failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return lake, home, time.perf_counter() - t0


def _materializations(server) -> set[tuple[str, str, int]]:
    """(asset, partition, timestamp) of every materialization the instance holds."""
    data = server.graphql("{ assetsOrError { ... on AssetConnection { nodes { key { path } "
                          "assetMaterializations(limit: 10000) { partition timestamp } } } } }")
    return {(n["key"]["path"][-1], m["partition"], int(m["timestamp"]))
            for n in data["assetsOrError"]["nodes"] for m in n["assetMaterializations"]}


def measure(name: str, lake: Path, home: Path, symbol: str, new_month: str, prev_month: str, events: int) -> dict:
    from quant_assets.devserver import DevServer
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake

    server = DevServer(_env(lake, home), WORK / name / "dagster-dev.log")
    try:
        server.wait_loaded()
        time.sleep(20)  # a few sensor ticks on an up-to-date lake
        built_by_sync = [r for r in server.runs() if {"key": "quant_assets/trigger", "value": "sync"} in r["tags"]]
        launched = [r for r in server.runs() if r not in built_by_sync]
        assert not launched, f"{name}: the daemon launched {len(launched)} run(s) on an up-to-date lake"
        known = {r["runId"] for r in built_by_sync}
        before = _materializations(server)
        expected = {("ticks", f"{new_month}|{symbol}")}
        expected |= {(f"{stage}_{s}", f"{new_month}|{symbol}") for s in STRATEGIES for stage in ("backtest", "metrics", "critique")}
        expected |= {(f"oos_validation_{s}", f"{prev_month}|{symbol}") for s in STRATEGIES}
        expected |= {(f"report_{s}", symbol) for s in STRATEGIES}

        t0 = time.perf_counter()
        write_landing(Lake.at(lake), SyntheticSpec(symbol, new_month, seed=999, events=events))

        def done():
            if not all(server.materialized(a, p) for a, p in expected):
                return False
            return all(r["status"] not in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED") for r in server.runs()
                       if r["runId"] not in known)

        server.wait(f"{name}: the rebuild of {new_month}|{symbol}", done, 1_800, poll_s=1.0)
        seconds = time.perf_counter() - t0
        time.sleep(15)  # and nothing else follows
        runs = [r for r in server.runs() if r["runId"] not in known]
        new = {(a, p) for a, p, _ in _materializations(server) - before}
        return {"seconds": seconds, "runs": len(runs), "steps": sum(len(r["stepStats"]) for r in runs),
                "failed_runs": sum(r["status"] == "FAILURE" for r in runs),
                "rebuilt": sorted(new), "expected": sorted(expected), "extra": sorted(new - expected),
                "missing": sorted(expected - new)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000, help="ticks per synthetic month")
    ap.add_argument("--quick", action="store_true", help="2 symbols × 2 months for the large lake")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    big_symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"][: 2 if args.quick else 4]
    big_months = [f"2023-{m:02d}" for m in range(1, (3 if args.quick else 13))]
    try:
        print("building the small lake (1 x 1) ...", flush=True)
        small_lake, small_home, small_build = build("small", ["BTCUSDT"], ["2023-12"], args.events)
        print(f"building the large lake ({len(big_symbols)} x {len(big_months)}) ...", flush=True)
        big_lake, big_home, big_build = build("large", big_symbols, big_months, args.events)
        print("small lake: drop 2024-01 ...", flush=True)
        small = measure("small", small_lake, small_home, "BTCUSDT", "2024-01", "2023-12", args.events)
        prev = big_months[-1]
        new_month = f"{int(prev[:4]) + (prev[5:] == '12')}-{int(prev[5:]) % 12 + 1:02d}"
        print(f"large lake: drop {new_month} ...", flush=True)
        big = measure("large", big_lake, big_home, "BTCUSDT", new_month, prev, args.events)
    finally:
        pass
    ratio = big["seconds"] / small["seconds"]
    # The work is the steps; how they split into runs depends on which automation tick first
    # sees each input (a validation and the roll-ups may share a run or not), so runs are reported.
    ok = {"time": ratio <= TARGET, "same_work": big["steps"] == small["steps"],
          "exact": not big["extra"] and not big["missing"] and not small["extra"] and not small["missing"]}
    verdict = lambda v: "PASS" if v else "FAIL"  # noqa: E731
    mach = machine(("dagster", "polars"))
    lines = [
        SECTION, "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        machine_line(mach),
        "- command: `uv run python bench/automation_bench.py`" + (" (this run: `--quick`)" if args.quick else ""),
        f"- lakes built with `quant-assets sync` (untimed: small {small_build:.0f} s, large {big_build:.0f} s), "
        f"synthetic months of {args.events:,} ticks, three strategies, the offline critic; `dagster dev` with sensors "
        "every 5 s, 2 runs at a time, the in-process executor per run.",
        "",
        "| lake | drop → all rebuilt (s) | runs | steps | materialised meanwhile | failed runs |",
        "|---|---:|---:|---:|---:|---:|",
        f"| 1 symbol × 1 month | {small['seconds']:.1f} | {small['runs']} | {small['steps']} | {len(small['rebuilt'])} | {small['failed_runs']} |",
        f"| {len(big_symbols)} symbols × {len(big_months)} months | {big['seconds']:.1f} | {big['runs']} | {big['steps']} | {len(big['rebuilt'])} | {big['failed_runs']} |",
        "",
        "| target | value | result |",
        "|---|---:|---|",
        f"| large / small time <= {TARGET} | {ratio:.2f} | {verdict(ok['time'])} |",
        f"| same steps (the work; runs: {big['runs']} vs {small['runs']}) | {big['steps']} vs {small['steps']} | {verdict(ok['same_work'])} |",
        f"| exactly the expected {len(big['expected'])} (asset, partition) rebuilt, nothing else | "
        f"extra {len(big['extra'])}, missing {len(big['missing'])} | {verdict(ok['exact'])} |",
        "",
        "Rebuilt on the large lake: " + ", ".join(f"{a} {p}" for a, p in big["rebuilt"]) + ".",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if big["extra"] or small["extra"]:
        print("EXTRA:", big["extra"], small["extra"])
    if not args.no_results:
        write_results(RESULTS, SECTION, section)
        print(f"wrote section {SECTION!r} of {RESULTS}")
    shutil.rmtree(WORK, ignore_errors=True)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
