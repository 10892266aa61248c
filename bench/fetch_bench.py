"""Benchmark of the fetch planner at 400 symbols × 84 months (issue 23).

Usage (from the repository root)::

    uv run python bench/fetch_bench.py                 # writes bench/RESULTS.md
    uv run python bench/fetch_bench.py --no-results    # a quick look

A synthetic Binance fetch ledger is written straight to ``<lake>/fetch/binance.jsonl`` (the
format ``quant_assets.sources.ledger.append`` writes, without its per-line fsync): every
monthly file of 400 USD-M perpetuals × 83 past months × 3 datasets (trades, bookTicker,
fundingRate) landed, and the running month's daily files up to yesterday, each with
``history`` rows (re-checks recorded ``unchanged``). Then, in a fresh process each, it
measures ``ledger.state`` (the Polars read) and ``fetch.plan`` (the Binance plan of every entry
joined with that state): what a daily scheduled fetch pays before its first request. The
figure to watch is how many files are left to ask about: only the new day's files and the
recent ones re-checked for re-uploads, never one request per past file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import child_main, emit, machine, machine_line, run_child  # noqa: E402

SECTION = "## Fetch planning at 400 symbols × 84 months (issue 23)"
COMMAND = "uv run python bench/fetch_bench.py"
NOW = datetime(2026, 12, 10, 12, 0, tzinfo=timezone.utc)
DATASETS = ("trades", "bookTicker", "fundingRate")


def _months(n: int, now: datetime) -> list[str]:
    y, m = now.year, now.month
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return out[::-1]


def _symbols(n: int) -> list[str]:
    return [f"C{i:03d}USDT-PERP" for i in range(n)]


def child_write(root: str, symbols: int, months: int, history: int) -> dict:
    months_l = _months(months, NOW)
    current = months_l[-1]
    days = [f"{current}-{d:02d}" for d in range(1, NOW.day - 1)]  # yesterday's files are the new ones
    path = Path(root) / "fetch" / "binance.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = 0
    with open(path, "w") as f:
        for sym in _symbols(symbols):
            raw = sym.removesuffix("-PERP")
            for ds in DATASETS:
                periods = months_l[:-1] + ([] if ds == "fundingRate" else days)
                for p in periods:
                    gran = "daily" if len(p) == 10 else "monthly"
                    name = f"{raw}-{ds}-{p}.zip"
                    base = {"source": "binance", "dataset": ds, "symbol": sym, "period": p,
                            "url": f"https://data.binance.vision/data/futures/um/{gran}/{ds}/{raw}/{name}", "name": name,
                            "landing": f"landing/{sym}/{name}", "version": 1, "sha256": "ab" * 32, "size": 123456,
                            "reason": None}
                    for h in range(history):
                        row = {"at": f"2026-01-01T00:00:{h:02d}.000000Z", **base, "status": "landed" if h == 0 else "unchanged"}
                        f.write(json.dumps(row, separators=(",", ":")) + "\n")
                        n += 1
    return {"rows": n, "bytes": path.stat().st_size, "write_s": time.perf_counter() - t0}


def _config(symbols: int, months: int):
    from quant_assets.sources import config

    start = _months(months, NOW)[0]
    insts = json.dumps(_symbols(symbols))
    text = (f'[binance]\nbase_url = "https://data.binance.vision"\n[[binance.fetch]]\ninstruments = {insts}\n'
            f'datasets = {json.dumps(list(DATASETS))}\nstart = "{start}"\n')
    return config.loads(text)


def child_plan(root: str, symbols: int, months: int, repeats: int) -> dict:
    from quant_assets.lake.store import Lake
    from quant_assets.sources import ledger, make_source
    from quant_assets.sources.fetch import plan

    lake = Lake.at(root)
    src = make_source(_config(symbols, months).get("binance"))
    best_state = best_plan = best_gen = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        st = ledger.state(lake, ["binance"])
        t1 = time.perf_counter()
        files = [rf for e in src.config.entries for rf in src.plan(e, NOW)]
        t2 = time.perf_counter()
        todo, again, skipped = plan(lake, src, now=NOW, state=st)
        t3 = time.perf_counter()
        best_state, best_gen, best_plan = min(best_state, t1 - t0), min(best_gen, t2 - t1), min(best_plan, t3 - t2)
    return {"state_rows": st.height, "planned": len(files), "to_fetch": len(todo), "to_recheck": len(again),
            "skipped": skipped, "state_s": best_state, "gen_s": best_gen, "plan_s": best_plan}


CHILDREN = {"write": child_write, "plan": child_plan}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--months", type=int, default=84)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)
    rows = []
    for history in (1, 10):
        with tempfile.TemporaryDirectory() as tmp:
            w = run_child(__file__, "write", root=tmp, symbols=args.symbols, months=args.months, history=history)
            p = run_child(__file__, "plan", root=tmp, symbols=args.symbols, months=args.months, repeats=args.repeats)
            rows.append((history, w, p))
    mach = machine(("polars",))
    lines = [
        SECTION, "",
        f"`{COMMAND}` (a synthetic Binance ledger: {args.symbols} USD-M perpetuals × {args.months} months × "
        f"{len(DATASETS)} datasets, every past monthly file and this month's days but yesterday's landed; plan at {NOW:%Y-%m-%d %H:%M} UTC, "
        f"recheck_days = 2; best of {args.repeats})", "",
        machine_line(mach), "",
        "| ledger rows | ledger size | `ledger.state` | Binance plan (files generated) | plan ∖ ledger (join) | "
        "files left to ask | of which re-checks | skipped without a request | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for history, w, p in rows:
        lines.append(
            f"| {w['rows']:,} ({history} per file) | {w['bytes'] / 2**20:,.0f} MiB | {p['state_s']:.2f} s | "
            f"{p['gen_s']:.2f} s ({p['planned']:,}) | {p['plan_s']:.2f} s | {p['to_fetch']:,} | {p['to_recheck']:,} | "
            f"{p['skipped']:,} | {p['maxrss_kib'] / 1024:,.0f} MiB |")
    lines += ["", "- `plan ∖ ledger` includes generating the plan again (it calls the source's plan) and the Polars "
              "join; `ledger.state` is one scan of the JSON lines (a torn last line skipped), grouped per file.",
              "- left to ask: the new day's files (1 per symbol and daily dataset) and the files re-checked for "
              "re-uploads (periods ending within `recheck_days`): one `.CHECKSUM` request each, never the zip "
              "when unchanged."]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
