"""Benchmark of the critic's memory (issue 22): what recalling earlier suggestions costs a
critique on a lake of 400 symbols × 84 months.

Usage (from the repository root)::

    uv run python bench/memory_bench.py                # writes bench/RESULTS.md
    uv run python bench/memory_bench.py --no-results   # print only

A lake is written in code under ``bench/_work/memory_bench/`` (git-ignored, deleted after): the
false-discovery ledger of 400 symbols × 84 months × 3 strategies × 4 suggestions (403,200 tested
changes, as ``discoveries`` writes it) and one symbol's 83 validation files (the critic's arm and
the null critic's). :func:`quant_assets.critique.memory.recall` is timed (best and median of 7)
for the critique of the last month (every earlier test qualifies: the most to read) and of the
second month, with the serialised memory's size and the process's peak RSS. No target is named
by the issue; the figure to watch is recall's share of a critique (a rule critique takes about a
second, an Anthropic one ten).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, machine_line, self_maxrss_kib  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "memory_bench"
SECTION = "## Critic memory at 400 symbols x 84 months (issue 22)"
COMMAND = "uv run python bench/memory_bench.py"


def _lake(root: Path, months: list[str], symbols: list[str]):
    import numpy as np
    import polars as pl

    from quant_assets.analytics.discoveries import SCHEMA as LEDGER
    from quant_assets.critique.oos import SCHEMA as OOS
    from quant_assets.lake.store import Lake

    lake = Lake.at(root)
    per = 4  # suggestions per critique
    n = len(months) * len(symbols) * 3 * per
    rng = np.random.default_rng(0)
    mi = np.tile(np.repeat(np.arange(len(months)), per), len(symbols) * 3)
    given = {
        "kind": np.array(["suggestion"] * n),
        "strategy": np.repeat(np.array(["ema_cross", "mean_reversion", "market_maker"]), len(symbols) * len(months) * per),
        "symbol": np.tile(np.repeat(np.array(symbols), len(months) * per), 3),
        "month": np.array(months)[mi], "oos_month": np.array([*months[1:], "2025-01"])[mi],
        "test_index": np.tile(np.arange(per), n // per), "tested": np.ones(n, bool), "p_value": rng.random(n),
        "clears_local_bar": rng.random(n) < 0.05,
        "change": np.array(["fast_period=60", "slow_period=240", "fast_period=15", "slow_period=60"])[np.tile(np.arange(per), n // per)],
    }
    ledger = pl.DataFrame(given).with_columns(
        [pl.lit(None, dtype).alias(c) for c, dtype in LEDGER.items() if c not in given]).select(list(LEDGER))
    lake.discoveries_dir.mkdir(parents=True, exist_ok=True)
    ledger.write_parquet(lake.discoveries_dir / "discoveries.parquet")
    symbol = symbols[7]
    for i, month in enumerate(months[:-1]):
        base = {c: None for c in OOS} | {
            "strategy": "ema_cross", "symbol": symbol, "critique_month": month, "oos_month": months[i + 1], "critic": "rules",
            "tested": True, "p_value": float(rng.random()), "clears_local_bar": False, "oos_delta_sharpe": -0.1}
        rows = [base | {"arm": arm, "suggestion_index": k, "name": name, "value": value, "baseline_value": was}
                for arm in ("critic", "null") for k, (name, value, was) in enumerate((("fast_period", "60", "30"),
                                                                                     ("slow_period", "240", "120")))]
        d = lake.oos_dir("ema_cross", symbol, month)
        d.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=OOS).write_parquet(d / "validation.parquet")
    return lake, symbol, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from quant_assets.critique import memory
    from quant_assets.strategies.registry import EMA_CROSS

    months = [f"{y}-{m:02d}" for y in range(2018, 2025) for m in range(1, 13)]
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    shutil.rmtree(WORK, ignore_errors=True)
    t0 = time.perf_counter()
    lake, symbol, n = _lake(WORK / "lake", months, symbols)
    built = time.perf_counter() - t0
    rows = []
    for label, month in (("last month (every earlier test qualifies)", months[-1]), ("second month", months[1])):
        times, m = [], None
        for _ in range(7):
            t = time.perf_counter()
            m = memory.recall(lake, "ema_cross", symbol, month, baseline=EMA_CROSS.resolved())
            times.append(time.perf_counter() - t)
        size = len(json.dumps(m.as_prompt() or {}, separators=(",", ":")))
        rows.append(f"| {label} | {min(times) * 1e3:.0f} | {statistics.median(times) * 1e3:.0f} | {m.tests_seen:,} | "
                    f"{len(m.recent)} | {len(m.older)} | {size:,} |")
    out = [
        SECTION, "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        machine_line(machine(("polars",))),
        f"- command: `{COMMAND}`",
        f"- lake: a ledger of {n:,} tested changes ({args.symbols} symbols x 84 months x 3 strategies x 4), one symbol's "
        f"83 validation files (both arms); written in {built:.1f} s",
        "",
        "| critique of | recall best (ms) | median (ms) | tests seen | shown in detail | condensed rows | memory (chars, compact JSON) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- peak RSS of the process (lake writing included): {self_maxrss_kib() / 1024:.0f} MiB",
        "- other instruments' tests are counted by Polars from the ledger (one file); this instrument's validation "
        "files are read in one scan; the memory is bounded at 2,000 characters whatever the history.",
    ]
    emit(SECTION, out, write=not args.no_results)
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
