"""Cross-sectional factor analysis at size: one month × a universe of 10 members of 1m bars.

    uv run python bench/xsection_bench.py [members] [--no-write]   # writes bench/RESULTS.md

A throw-away lake under /tmp holds ``members`` (default 10) months of 1-minute bars (44,640
each, a random walk, every 13th bar absent) plus the month before (warm-up, quotes per bar).
Each measurement runs ``run_cross_section`` (read, signal per member, alphalens, write) in a
fresh interpreter for its peak RSS, with the default settings (every bar a sample, horizons 1,
5 and 15 bars, quintiles) and with hourly samples, for ``ema_cross`` (lengths in bars) and
``mean_reversion`` (a window in quote updates: converted with the months up to this one).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import child_main, emit, machine, machine_line, run_child  # noqa: E402

SECTION = "## Cross-sectional factors: a 10-member universe × one month of 1m bars (issue 24)"
MONTH, PREV = "2024-03", "2024-02"
MINUTE = 60_000_000_000


def _lake(root: Path, members: int) -> None:
    from quant_assets.lake.store import Lake
    from quant_assets.research.bars import BAR_SCHEMA
    from quant_assets.research.cross_section import month_bounds

    lake = Lake.at(root)
    for i in range(members):
        for month in (PREV, MONTH):
            start, end = month_bounds(month)
            ts = np.arange(start, end, MINUTE, dtype=np.int64)
            keep = np.arange(len(ts)) % 13 != 7
            rng = np.random.default_rng(i * 100 + int(month[-2:]))
            mid = (100.0 * np.exp(np.cumsum(rng.normal(0.0, 5e-4, len(ts)))))[keep]
            n = len(mid)
            cols = {"ts": ts[keep], "mid_close": mid, "open": mid, "high": mid, "low": mid, "close": mid,
                    "volume": np.zeros(n), "trades": np.zeros(n, dtype=np.uint32),
                    "quotes": rng.integers(1, 20, n).astype(np.uint32), "source": ["mid"] * n}
            frame = pl.DataFrame({k: cols.get(k, pl.Series([None] * n, dtype=t)) for k, t in BAR_SCHEMA.items()})
            lake.write_parquet(frame.cast(BAR_SCHEMA), lake.bars_path("1m", f"SYM{i:02d}USDT", month))


def child_run(root: str, members: int, strategy: str, sample: str, periods: list[int]) -> dict:
    t0 = time.perf_counter()
    from quant_assets.lake.store import Lake
    from quant_assets.research.cross_section import CrossSectionSettings, run_cross_section
    from quant_assets.research.factors import SIGNAL_DEFS
    from quant_assets.strategies.registry import BUILTIN, FACTOR_SIGNALS

    t_import = time.perf_counter() - t0
    spec = next(s for s in BUILTIN if s.name == strategy)
    t1 = time.perf_counter()
    out = run_cross_section(Lake.at(root), spec, SIGNAL_DEFS[FACTOR_SIGNALS[strategy]], "bench",
                            [f"SYM{i:02d}USDT" for i in range(members)], MONTH,
                            settings=CrossSectionSettings(sample=sample, periods=tuple(periods)))
    r = out.result.report
    return {"seconds": time.perf_counter() - t1, "import_s": t_import, "times": r.get("sample_times_used"),
            "rows": r.get("factor_rows"), "reason": r.get("reason"),
            "ic": {k: v["ic_mean"] for k, v in (r.get("periods") or {}).items()}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child_main({"run": child_run}, argv[1], argv[2])
    write = "--no-write" not in argv
    args = [a for a in argv if not a.startswith("--")]
    members = int(args[0]) if args else 10
    mach = machine(("polars", "pandas", "alphalens-reloaded"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="xs-bench-") as tmp:
        t0 = time.perf_counter()
        _lake(Path(tmp), members)
        build_s = time.perf_counter() - t0
        for strategy in ("ema_cross", "mean_reversion"):
            for sample, periods in (("1m", [1, 5, 15]), ("1h", [1, 4, 24])):
                res = run_child(__file__, "run", root=tmp, members=members, strategy=strategy, sample=sample, periods=periods)
                rows.append((strategy, sample, periods, res))
    lines = [SECTION, "", f"`uv run python bench/xsection_bench.py {members}` (one run each, fresh interpreter)", "",
             machine_line(mach),
             f"- data: {members} members × one month ({MONTH}) of 1m bars (41,206 each: every 13th absent) plus "
             f"{PREV} for warm-up; written in {build_s:.1f} s",
             "- timed: `run_cross_section` (read bars, each member's signal, alphalens forward returns, bins, IC, "
             "quantile returns, turnover and rank autocorrelation, write the folder); import time apart", "",
             "| strategy | sample | horizons (samples) | sample times | (time, member) rows | seconds | peak RSS MiB | mean IC by horizon |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for strategy, sample, periods, r in rows:
        ic = ", ".join(f"{k} {v:+.3f}" if v is not None else f"{k} null" for k, v in r["ic"].items()) or r["reason"]
        lines.append(f"| {strategy} | {sample} | {', '.join(map(str, periods))} | {r['times']:,} | {r['rows']:,} | "
                     f"{r['seconds']:.1f} | {r['maxrss_kib'] / 1024:.0f} | {ic} |")
    lines += ["", "The cost follows sample times × members: alphalens groups by sample time (Spearman per time and "
              "horizon, `qcut` per time, a set per time and quantile for turnover). A random walk has no edge: "
              "the ICs are noise around 0."]
    emit(SECTION, lines, write=write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
