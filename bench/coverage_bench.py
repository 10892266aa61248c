"""Availability checks at size: the coverage pass over one large ticks month, and what
``quant-assets status`` reads to show gaps at 400 symbols × 84 months.

    uv run python bench/coverage_bench.py [rows]      # writes bench/RESULTS.md

(a) ``coverage.day_counts`` + ``compute`` over one month of ``rows`` ticks (default 20M; a
    Parquet file of ``ts_event`` and ``kind`` with the lake's writer), warm page cache;
(b) ``coverage.read_all`` over 33,600 ``coverage.json`` files (2% with gaps), as ``status`` does.
A throw-away lake under /tmp. Memory: the RSS the pass leaves behind (psutil); its peak is not sampled.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, machine_line  # noqa: E402

from quant_assets.ingest import coverage  # noqa: E402
from quant_assets.lake.store import Lake  # noqa: E402

SECTION = "## Availability checks at size (issue 23)"
MONTH = "2024-03"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def big_month(lake: Lake, rows: int) -> Path:
    """A ticks month of ``rows`` rows spread over every day (ts_event sorted, half quotes)."""
    rng = np.random.default_rng(1)
    t0 = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp() * 1e9)
    ts = np.sort(t0 + rng.integers(0, 31 * 86_400 * 10**9, rows, dtype=np.int64))
    df = pl.DataFrame({"ts_event": ts, "kind": np.where(rng.random(rows) < 0.5, "quote", "trade")})
    path = lake.ticks_path("BTCUSDT", MONTH)
    lake.write_parquet(df, path)
    return path


def many_coverages(lake: Lake, symbols: int, months: int) -> None:
    """One coverage.json per slice; every 50th with a missing day."""
    ok = coverage.compute(pl.DataFrame({"kind": ["quote"] * 31, "day": list(range(1, 32)), "rows": [10] * 31},
                                       schema={"kind": pl.String, "day": pl.Int32, "rows": pl.UInt32}),
                          "X", MONTH, "crypto", now=NOW)
    hole = coverage.compute(pl.DataFrame({"kind": ["quote"] * 30, "day": [d for d in range(1, 32) if d != 7], "rows": [10] * 30},
                                         schema={"kind": pl.String, "day": pl.Int32, "rows": pl.UInt32}),
                            "X", MONTH, "crypto", now=NOW)
    i = 0
    for s in range(symbols):
        for m in range(months):
            month = f"{2018 + m // 12}-{m % 12 + 1:02d}"
            cov = hole if i % 50 == 0 else ok
            cov.symbol, cov.month = f"S{s:03d}USDT", month
            coverage.write(lake, cov)
            i += 1


def main(rows: int = 20_000_000) -> None:
    root = Path(tempfile.mkdtemp(prefix="coverage-bench-"))
    lake = Lake.at(root)
    lines = []
    try:
        path = big_month(lake, rows)
        coverage.day_counts(path, MONTH)  # warm the page cache
        base = _rss()
        t0 = time.perf_counter()
        cov = coverage.compute(coverage.day_counts(path, MONTH), "BTCUSDT", MONTH, "crypto", now=NOW)
        took = time.perf_counter() - t0
        lines.append(f"- one month of {rows:,} ticks ({path.stat().st_size / 2**20:.0f} MiB Parquet): coverage pass "
                     f"{took:.2f} s, RSS retained after it {max(0, _rss() - base) / 2**20:.0f} MiB (peak not sampled); gaps: {cov.gaps}")
        shutil.rmtree(lake.ticks_root)
        t0 = time.perf_counter()
        many_coverages(lake, 400, 84)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        judged, bad = coverage.read_all(lake)
        read_s = time.perf_counter() - t0
        lines.append(f"- `status`'s gap table at 400 symbols × 84 months: {judged:,} coverage.json read, {len(bad):,} with gaps, "
                     f"in {read_s:.2f} s (page cache warm from writing them in {write_s:.1f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emit(SECTION, [SECTION, "", f"`uv run python bench/coverage_bench.py {rows}` (one run)", "",
                   machine_line(machine()), "", *lines])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000)
