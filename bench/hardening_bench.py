"""Hardening (issue 7): peak memory on very large input, and the memory estimates behind the budget.

    uv run python bench/hardening_bench.py               # 50M-row file; writes bench/RESULTS.md
    uv run python bench/hardening_bench.py --rows 5000000 --no-results   # a quick look

Measured, each step in a fresh interpreter (peak RSS from ``os.wait4``):

1. Ingest of one 50M-row Binance trades CSV (ordered: the streaming path). Target: peak RSS
   under 2 GiB.
2. A month of 50M rows from two overlapping 25M-row files (the sorting path) under a 1.5 GiB
   memory budget (``QUANT_MEMORY_BUDGET_MB=1536``): it must run in time slices and stay near
   the budget, where an unsliced sort would need about 12 GB.
3. The per-row memory of the unsliced sort and of an hftbacktest run at two sizes (the slope of
   peak memory between them), against the constants the budget checks use
   (``ingest.build.SORT_BYTES_PER_ROW``, ``engines.hft.HFT_BYTES_PER_TICK``): each constant
   must be at least the measured slope.
4. The hardening suite's size: bad-input cases, crash points, LLM fault kinds, resource
   bounds, counted from pytest's collection of the test modules.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import child_main, emit, machine, machine_line, run_child  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "hardening_bench"
INGEST = HERE / "ingest_bench.py"
SECTION = "## Hardening (issue 7)"
COMMAND = "uv run python bench/hardening_bench.py"
SYMBOL, MONTH = "BTCUSDT", "2024-01"
TARGET_RSS_KIB = 2 * 1024 * 1024
SLICED_BUDGET_MB = 1536


def _hwm_kib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


# ---- children ----------------------------------------------------------------------------
def child_build(lake_root: str) -> dict:
    """``build_partition`` on a fresh lake (stages its files, then writes the month)."""
    from quant_assets.ingest.build import build_partition
    from quant_assets.lake.store import Lake

    before = _hwm_kib()
    t0 = time.perf_counter()
    res = build_partition(Lake.at(lake_root), SYMBOL, MONTH)
    return {"seconds": time.perf_counter() - t0, "rows": res.rows, "slices": res.sort_slices,
            "hwm_before_kib": before, "hwm_kib": _hwm_kib()}


def child_sort_slope(lake_root: str) -> dict:
    """Peak memory of the unsliced sorting build over a lake whose two files are staged."""
    from quant_assets.ingest.build import build_partition
    from quant_assets.lake.store import Lake

    before = _hwm_kib()
    res = build_partition(Lake.at(lake_root), SYMBOL, MONTH)
    assert res.sort_slices == 1
    return {"rows": res.rows, "hwm_before_kib": before, "hwm_kib": _hwm_kib()}


def child_synth(lake_root: str, events: int, overlapping: bool) -> dict:
    """A synthetic month: one file (published, with its instrument) or two overlapping, staged."""
    import polars as pl

    from quant_assets.ingest.build import build_partition
    from quant_assets.ingest.landing import stage, survey
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import instruments
    from quant_assets.lake.store import Lake

    lake = Lake.at(lake_root)
    if overlapping:
        for seed in (1, 2):
            p = write_landing(lake, SyntheticSpec(SYMBOL, MONTH, seed=seed, events=events // 2))
            p.rename(p.with_name(f"s{seed}-{p.name}"))
        for rec in survey(lake, SYMBOL):
            stage(lake, SYMBOL, rec)
        return {}
    write_landing(lake, SyntheticSpec(SYMBOL, MONTH, seed=1, events=events))
    survey(lake, SYMBOL)
    path = build_partition(lake, SYMBOL, MONTH).path
    instruments.record_inferred(lake, instruments.infer(SYMBOL, pl.scan_parquet(path), "BINANCE"), MONTH)
    return {}


def child_hft(lake_root: str) -> dict:
    """Peak memory of one hftbacktest run (the market maker) on the lake's month."""
    import hftbacktest  # noqa: F401  (imported before the baseline: not per-tick memory)

    from quant_assets.engines import hft  # noqa: F401
    from quant_assets.engines.runner import run_engine
    from quant_assets.lake import instruments
    from quant_assets.lake.store import Lake
    from quant_assets.strategies import registry

    lake = Lake.at(lake_root)
    spec = registry.load()["market_maker"]
    path = lake.ticks_path(SYMBOL, MONTH)
    before = _hwm_kib()
    run = run_engine(spec, path, instruments.resolve(lake, SYMBOL, month=MONTH), spec.resolved())
    return {"ticks": run.events, "hwm_before_kib": before, "hwm_kib": _hwm_kib()}


CHILDREN = {"build": child_build, "sort_slope": child_sort_slope, "synth": child_synth, "hft": child_hft}


# ---- parent ------------------------------------------------------------------------------
def fresh(name: str) -> Path:
    root = WORK / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return root


def place(csv: Path, root: Path, name: str) -> None:
    dest = root / "landing" / SYMBOL / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.link(csv, dest)


def mib(kib: int) -> float:
    return kib / 1024


def slope(small: dict, big: dict, key: str) -> float:
    """Bytes of peak memory per extra row between two runs."""
    return (big["hwm_kib"] - small["hwm_kib"]) * 1024 / (big[key] - small[key])


def suite_counts() -> dict[str, int]:
    """Test cases per hardening concern, from pytest's collection (no test is run)."""
    files = ["test_hostile_input.py", "test_crashes.py", "test_critique.py", "test_resource_bounds.py", "test_sensor.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *[f"quant_assets_tests/{f}" for f in files]],
                         cwd=REPO, capture_output=True, text=True).stdout
    ids = [ln for ln in out.splitlines() if "::" in ln]

    def count(pattern: str) -> int:
        return sum(1 for i in ids if re.search(pattern, i))

    return {
        "bad whole files": count(r"test_a_bad_file_is_refused"),
        "bad rows": count(r"test_bad_rows_are_quarantined") + count(r"non_utf8_bytes_deep") + count(r"crossed_quotes"),
        "other input cases (duplicates/order, symbol paths, zip bomb, file being written)":
            count(r"duplicate_and_unordered") + count(r"symbol_folders_with_path") + count(r"zip_bomb") + count(r"still_being_written"),
        "crash points (SIGKILL)": count(r"test_a_kill_mid_publish"),
        "concurrent writers": count(r"do_not_interleave"),
        "LLM fault kinds": count(r"test_each_fault_kind") + count(r"timeout_fails") + count(r"server_errors") + count(r"malformed_reply")
        + count(r"injection"),
        "resource bounds": count(r"test_resource_bounds"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000_000, help="rows of the large file (default 50,000,000)")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the working files")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    rows = args.rows
    print(f"generating {rows:,} ordered rows and two overlapping files of {rows // 2:,} ...", flush=True)
    big = WORK / f"{SYMBOL}-trades-{MONTH}.csv"
    halves = [WORK / f"{SYMBOL}-trades-{MONTH}-{k}.csv" for k in ("a", "b")]
    gen = run_child(INGEST, "gen", path=str(big), rows=rows, seed=1, chunk=2_000_000)
    for k, half in enumerate(halves):
        run_child(INGEST, "gen", path=str(half), rows=rows // 2, seed=10 + k, chunk=2_000_000)

    print("[1] ingest of the ordered file ...", flush=True)
    root = fresh("ordered")
    place(big, root, big.name)
    ordered = run_child(__file__, "build", lake_root=str(root))
    shutil.rmtree(root)

    print(f"[2] the overlapping month under a {SLICED_BUDGET_MB} MiB budget ...", flush=True)
    root = fresh("overlap")
    for half in halves:
        place(half, root, half.name)
    sliced = run_child(__file__, "build", env={"QUANT_MEMORY_BUDGET_MB": str(SLICED_BUDGET_MB)}, lake_root=str(root))
    shutil.rmtree(root)

    print("[3] per-row memory of the sort and of hftbacktest ...", flush=True)
    sort_runs, hft_runs = [], []
    for n in (2_000_000, 6_000_000):
        root = fresh(f"sort-{n}")
        run_child(__file__, "synth", lake_root=str(root), events=n, overlapping=True)
        sort_runs.append(run_child(__file__, "sort_slope", env={"QUANT_MEMORY_BUDGET_MB": "100000"}, lake_root=str(root)))
        shutil.rmtree(root)
    for n in (500_000, 2_000_000):
        root = fresh(f"hft-{n}")
        run_child(__file__, "synth", lake_root=str(root), events=n, overlapping=False)
        hft_runs.append(run_child(__file__, "hft", env={"QUANT_MEMORY_BUDGET_MB": "100000"}, lake_root=str(root)))
        shutil.rmtree(root)
    from quant_assets.engines.hft import HFT_BYTES_PER_TICK
    from quant_assets.ingest.build import SORT_BYTES_PER_ROW

    sort_slope, hft_slope = slope(*sort_runs, key="rows"), slope(*hft_runs, key="ticks")
    counts = suite_counts()
    if not args.keep:
        shutil.rmtree(WORK)

    rss_ok = ordered["maxrss_kib"] < TARGET_RSS_KIB
    mach = machine(("polars", "hftbacktest"))
    lines = [
        SECTION, "",
        f"- command: `{COMMAND}`" + (f" (this run: `--rows {rows}`)" if rows != 50_000_000 else ""),
        machine_line(mach),
        f"- date: {time.strftime('%Y-%m-%d')}",
        "",
        "| measurement | value | target / constant | result |",
        "|---|---:|---|---|",
        f"| ingest of one ordered {rows:,}-row CSV ({gen['bytes'] / 1e9:.1f} GB): peak RSS | {mib(ordered['maxrss_kib']):.0f} MiB "
        f"({ordered['seconds']:.1f} s) | < 2 GiB | {'PASS' if rss_ok else 'FAIL'} |",
        f"| {sliced['rows']:,}-row month from two overlapping files, budget {SLICED_BUDGET_MB} MiB: peak RSS | "
        f"{mib(sliced['maxrss_kib']):.0f} MiB in {sliced['slices']} slices ({sliced['seconds']:.1f} s) | "
        f"unsliced would need ~{sliced['rows'] * SORT_BYTES_PER_ROW / 2**30:.1f} GiB | "
        f"{'PASS' if sliced['maxrss_kib'] < TARGET_RSS_KIB else 'FAIL'} (< 2 GiB) |",
        f"| unsliced sort, peak memory per row ({sort_runs[0]['rows']:,} to {sort_runs[1]['rows']:,} rows) | {sort_slope:.0f} B/row | "
        f"`SORT_BYTES_PER_ROW` = {SORT_BYTES_PER_ROW} | {'PASS' if SORT_BYTES_PER_ROW >= sort_slope else 'FAIL'} |",
        f"| hftbacktest run, peak memory per tick ({hft_runs[0]['ticks']:,} to {hft_runs[1]['ticks']:,} ticks) | {hft_slope:.0f} B/tick | "
        f"`HFT_BYTES_PER_TICK` = {HFT_BYTES_PER_TICK} | {'PASS' if HFT_BYTES_PER_TICK >= hft_slope else 'FAIL'} |",
        "",
        "What the hardening suite tries (`bash .ci/run` runs all of it; each case leaves every published partition "
        "byte-identical or, after a commit point, whole and new, and keeps rejected rows with their reason):",
        "",
        "| concern | cases |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
        "",
        "Peak RSS is the child's `ru_maxrss` (rows 1-2) or the growth of `VmHWM` across the step (rows 3-4). "
        "The slopes are what the budget checks multiply by a month's row count before they start.",
        "",
    ]
    emit(SECTION, lines, write=not args.no_results)
    return 0 if rss_ok and sliced["maxrss_kib"] < TARGET_RSS_KIB else 1


if __name__ == "__main__":
    raise SystemExit(main())
