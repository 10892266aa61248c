"""Benchmark of issue 19's first target: NautilusTrader with the venue profile's latency model
and fill model on costs at most 1.10× the code before venue profiles, on the same 1.43M events.

Usage (from the repository root)::

    uv run python bench/venue_bench.py                  # full run, writes bench/RESULTS.md
    uv run python bench/venue_bench.py --events 200000 --no-results   # a quick look

"Before" is the commit named by ``--base`` (default: the last one before issue 19), checked out
as a detached git worktree under ``bench/_work/`` and imported from there (``PYTHONPATH``);
"after" is this checkout. Both run ``run_nautilus`` with ``ema_cross`` + ``finalize`` on the same
spot instrument, fees and account; "after" passes the built-in BINANCE spot profile (5 ms order
entry latency: a ``LatencyModel`` on submit, modify and cancel) with probabilistic slippage on
(``prob_slippage`` 0.2, seeded) and gapped stops filled at the next touch (the ``VenueFillModel``
subclass). Each measurement runs in its own child process after a warm-up backtest of 20,000
events (imports and the engine's construction excluded), alternating before / after
``--repeats`` times; the best of each is kept (the machine is noisy). Target: after / before
<= 1.10.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, base_tree, child_main, emit, machine, machine_line, run_child  # noqa: E402

WORK = REPO / "bench" / "_work" / "venue_bench"
SECTION = "## Venue profiles: NautilusTrader with latency and fill models (issue 19)"
COMMAND = "uv run python bench/venue_bench.py"
#: The last commit before venue profiles (issue 19).
BASE = "cd1136b39cf88d7f633d49e1f072865589ff179b"
TARGET = 1.10
EMA = {"fast_period": 50, "slow_period": 200, "notional": 10_000.0, "equity_interval_s": 60.0}
IMPL = "quant_assets.strategies.ema_cross:EmaCross"
PROB_SLIPPAGE = 0.2


def child_gen(path: str, events: int) -> dict:
    from quant_assets.ingest.synthetic import SyntheticSpec, generate

    df = generate(SyntheticSpec("BTCUSDT", "2024-01", events=events)).sort("ts_recv", "seq")
    df.write_parquet(path)
    return {"rows": df.height, "quotes": int((df["kind"] == "quote").sum())}


def _instrument(path: str):
    from dataclasses import replace

    import polars as pl

    from quant_assets.lake import instruments as inst_mod

    # Same fees on both sides, so only the code differs.
    return replace(inst_mod.infer("BTCUSDT", pl.scan_parquet(path), "BINANCE"), maker_fee=0.001, taker_fee=0.001)


def child_run(path: str, after: bool, warmup: str) -> dict:
    """One ema_cross backtest of the month; ``after`` runs it under the venue profile."""
    import quant_assets
    from quant_assets.engines.nautilus import run_nautilus
    from quant_assets.engines.result import finalize

    kwargs: dict = {}
    label = "none (code before venue profiles)"
    if after:
        from dataclasses import replace

        from quant_assets.venues.profile import builtin

        profile = replace(builtin("BINANCE", "spot"), prob_slippage=PROB_SLIPPAGE)
        kwargs["profile"] = profile
        label = f"{profile.label} (entry latency {profile.entry_latency_ms:g} ms, prob_slippage {PROB_SLIPPAGE}, stop_fill {profile.stop_fill})"
    # imports, the engine's construction (reused across runs): outside the timing
    run_nautilus(Path(warmup), _instrument(warmup), IMPL, EMA, **kwargs)
    inst = _instrument(path)
    t0 = time.perf_counter()
    run = run_nautilus(Path(path), inst, IMPL, EMA, **kwargs)
    fills, equity = finalize(run)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "events": run.events, "fills": len(fills), "profile": label,
            "code": str(Path(quant_assets.__file__).parent.parent)}


CHILDREN = {"gen": child_gen, "run": child_run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--events", type=int, default=1_430_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    base = base_tree(WORK, args.base)
    data, warm = WORK / f"ticks-{args.events}.parquet", WORK / "ticks-warmup.parquet"
    if not data.exists():
        gen = run_child(__file__, "gen", path=str(data), events=args.events)
        print(f"generated {gen['rows']:,} events ({gen['quotes']:,} quotes)")
    if not warm.exists():
        run_child(__file__, "gen", path=str(warm), events=20_000)
    env_before = {"PYTHONPATH": str(base) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    best: dict[bool, dict] = {}
    for _ in range(args.repeats):
        for after in (False, True):
            r = run_child(__file__, "run", env=None if after else env_before, path=str(data), after=after, warmup=str(warm))
            expect = str(REPO) if after else str(base)
            assert r["code"] == expect, f"child imported {r['code']}, expected {expect}"
            if after not in best or r["wall_s"] < best[after]["wall_s"]:
                best[after] = r
            print(f"{'after ' if after else 'before'} {r['wall_s']:.2f} s {r['events'] / r['wall_s']:,.0f} events/s, {r['fills']:,} fills")

    b, a = best[False], best[True]
    ratio = a["wall_s"] / b["wall_s"]
    mach = machine(("nautilus_trader", "polars"))
    lines = [SECTION, "", f"`{COMMAND}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}):", "", machine_line(mach),
             f"- data: synthetic BTCUSDT month, {b['events']:,} events; `run_nautilus` with ema_cross + `finalize`, same spot "
             f"instrument and fees (10 / 10 bps) on both sides; before = commit {args.base[:12]} (no latency model, NautilusTrader's "
             f"default `FillModel()`), after = this checkout under {a['profile']}; best of {args.repeats} alternating runs, each in "
             "its own process after a warm-up backtest of 20,000 events (imports, engine construction excluded).",
             "", "| | before (s) | after (s) | after events/s | after / before | target | |", "|---|---:|---:|---:|---:|---:|---|",
             f"| NautilusTrader ema_cross | {b['wall_s']:.2f} | {a['wall_s']:.2f} | {a['events'] / a['wall_s']:,.0f} | {ratio:.3f} | "
             f"<= {TARGET:.2f} | {'PASS' if ratio <= TARGET else 'MISS'} |",
             "", f"Fills: before {b['fills']:,}, after {a['fills']:,} (latency and slippage change what fills, so the counts differ).", ""]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
