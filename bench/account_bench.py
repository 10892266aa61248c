"""Benchmark of issue 17's target: backtest throughput with funding and margin on, against the
code before it, on the same 1.43M events.

Usage (from the repository root)::

    uv run python bench/account_bench.py                  # full run, writes bench/RESULTS.md
    uv run python bench/account_bench.py --events 200000 --no-results   # a quick look

"Before" is the commit named by ``--base`` (default: the last one before issue 17), checked out
as a detached git worktree under ``bench/_work/`` and imported from there (``PYTHONPATH``); "after"
is this checkout. Each measurement runs in its own child process, alternating before / after
``--repeats`` times (the best of each is kept: the machine is noisy):

* NautilusTrader: ``run_nautilus`` with ``ema_cross`` + ``finalize`` on a spot instrument
  (before) vs on the perpetual (after: CryptoPerpetual, the 20x account guard, funding settled
  every 8 h and booked into the equity).
* hftbacktest: ``run_hftbacktest`` with the market maker + ``finalize`` (numba compiled on a small
  warm-up first, excluded from both), same pairing.

Target: after / before <= 1.10 for each engine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_tree, REPO, RESULTS, child_main, emit, machine, machine_line, run_child  # noqa: E402

WORK = REPO / "bench" / "_work" / "account_bench"
SECTION = "## Money: funding and margin (issue 17)"
COMMAND = "uv run python bench/account_bench.py"
BASE = "62edea87390d8117aa7305aebc69f5231a39f389"
TARGET = 1.10
EMA = {"fast_period": 50, "slow_period": 200, "notional": 10_000.0, "equity_interval_s": 60.0}
EIGHT_H_NS = 8 * 3600 * 10**9
#: The market maker's starting cash in the bench: at 100,000 its losses on the synthetic month
#: liquidate it before the month ends, and a halted loop does less work than the baseline.
HFT_CASH = 10_000_000.0


# ---------------------------------------------------------------------------------------
# children (run with either code base on the path)
# ---------------------------------------------------------------------------------------
def child_gen(path: str, events: int) -> dict:
    from quant_assets.ingest.synthetic import SyntheticSpec, generate

    df = generate(SyntheticSpec("BTCUSDT", "2024-01", events=events)).sort("ts_recv", "seq")
    df.write_parquet(path)
    return {"rows": df.height, "quotes": int((df["kind"] == "quote").sum())}


def _instrument(path: str, after: bool):
    import polars as pl

    from quant_assets.lake import instruments as inst_mod

    symbol = "BTCUSDT-PERP" if after else "BTCUSDT"
    inst = inst_mod.infer(symbol, pl.scan_parquet(path), "BINANCE")
    # Same fees on both sides, so only the code differs: the perpetual's VIP 0 rates.
    from dataclasses import replace

    return replace(inst, maker_fee=0.0002, taker_fee=0.0005)


def _funding(samples_ts_min: int, samples_ts_max: int):
    import polars as pl

    from quant_assets.funding.schema import FUNDING_SCHEMA

    first = (samples_ts_min // EIGHT_H_NS + 1) * EIGHT_H_NS
    ts = list(range(first, samples_ts_max, EIGHT_H_NS))
    return pl.DataFrame({"ts": ts, "rate": [0.0001] * len(ts), "interval_h": [8.0] * len(ts), "mark_px": [None] * len(ts),
                         "source": ["bench"] * len(ts), "src_line": list(range(1, len(ts) + 1))}, schema=FUNDING_SCHEMA)


def child_run(engine: str, path: str, after: bool, warmup: str | None = None) -> dict:
    """One backtest of the 1.43M-event month; ``after`` selects the new code's perpetual path."""
    import polars as pl

    import quant_assets

    if after:  # imported before the clock starts, like the engines
        from quant_assets.engines.result import annotate_fills, finalize_with_flows
        from quant_assets.funding.settle import settle_funding
    inst = _instrument(path, after)
    if engine == "hft":
        from quant_assets.engines.hft import run_hftbacktest
        from quant_assets.strategies.registry import MARKET_MAKER

        params = MARKET_MAKER.resolved()
        kwargs = {}
        if after:
            from quant_assets.engines.runner import account_rules

            kwargs["rules"] = account_rules(inst, HFT_CASH)
        if warmup:  # numba compiles on first use: pay them outside the timing
            run_hftbacktest(Path(warmup), _instrument(warmup, after), params, HFT_CASH, **kwargs)
        t0 = time.perf_counter()
        # Cash enough that the guard never stops the loop: both sides do the same work.
        run = run_hftbacktest(Path(path), inst, params, HFT_CASH, **kwargs)
    else:
        from quant_assets.engines.nautilus import run_nautilus

        kwargs = {}
        if after:
            from quant_assets.engines.runner import account_rules

            kwargs["rules"] = account_rules(inst, 100_000.0)
        if warmup:  # imports, the engine's construction (reused across runs): outside the timing
            run_nautilus(Path(warmup), _instrument(warmup, after), "quant_assets.strategies.ema_cross:EmaCross", EMA, **kwargs)
        t0 = time.perf_counter()
        run = run_nautilus(Path(path), inst, "quant_assets.strategies.ema_cross:EmaCross", EMA, **kwargs)
    if after:
        funding = _funding(int(run.samples["ts"].min()), int(run.samples["ts"].max()))
        # as engines.runner.run_backtest does it
        annotated = annotate_fills(run.fills)
        settlement = settle_funding(annotated, run.samples, funding)
        flows = settlement.select("ts", kind=pl.lit("funding"), amount=pl.col("amount").fill_null(0.0))
        fills, equity, flows = finalize_with_flows(run, flows, annotated)
        extra = {"funding_events": len(settlement), "funding_pnl": float(flows["amount"].sum()), "counters": run.counters}
    else:
        from quant_assets.engines.result import finalize

        fills, equity = finalize(run)
        extra = {}
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "events": run.events, "fills": len(fills), "code": str(Path(quant_assets.__file__).parent.parent), **extra}


CHILDREN = {"gen": child_gen, "run": child_run}


# ---------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------
def _base_tree(commit: str) -> Path:
    return base_tree(WORK, commit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--events", type=int, default=1_430_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    base = _base_tree(args.base)
    data = WORK / f"ticks-{args.events}.parquet"
    warm = WORK / "ticks-warmup.parquet"
    if not data.exists():
        gen = run_child(__file__, "gen", path=str(data), events=args.events)
        print(f"generated {gen['rows']:,} events ({gen['quotes']:,} quotes)")
    if not warm.exists():
        run_child(__file__, "gen", path=str(warm), events=20_000)
    env_before = {"PYTHONPATH": str(base) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    best: dict[tuple[str, bool], dict] = {}
    for _ in range(args.repeats):
        for engine in ("nautilus", "hft"):
            for after in (False, True):
                r = run_child(__file__, "run", env=None if after else env_before, engine=engine, path=str(data), after=after,
                              warmup=str(warm))
                expect = str(REPO) if after else str(base)
                assert r["code"] == expect, f"child imported {r['code']}, expected {expect}"
                key = (engine, after)
                if key not in best or r["wall_s"] < best[key]["wall_s"]:
                    best[key] = r
                print(f"{engine:8s} {'after ' if after else 'before'} {r['wall_s']:.2f} s {r['events'] / r['wall_s']:,.0f} events/s")

    mach = machine(("nautilus_trader", "hftbacktest", "polars"))
    lines = [SECTION, "", f"`{COMMAND}` ({time.strftime('%Y-%m-%d')}):", "",
             machine_line(mach),
             f"- data: synthetic BTCUSDT month, {best[('nautilus', False)]['events']:,} events; before = commit {args.base[:12]} "
             f"(spot instrument, no account guard, no funding), after = this checkout (the perpetual: CryptoPerpetual, "
             f"20x account guard with liquidation check on every quote/step, funding every 8 h settled and booked into the equity); "
             f"same fees on both (2 / 5 bps); the market maker starts with {HFT_CASH:,.0f} on both sides so that no liquidation shortens its month; best of {args.repeats} alternating runs, each in its own process; hftbacktest's numba "
             "compile, imports and the NautilusTrader engine's construction excluded (a warm-up run on 20,000 events first, in the same process).",
             "", "| engine | before (s) | after (s) | after events/s | after / before | target | |", "|---|---:|---:|---:|---:|---:|---|"]
    for engine, label in (("nautilus", "NautilusTrader ema_cross"), ("hft", "hftbacktest market_maker")):
        b, a = best[(engine, False)], best[(engine, True)]
        ratio = a["wall_s"] / b["wall_s"]
        lines.append(f"| {label} | {b['wall_s']:.2f} | {a['wall_s']:.2f} | {a['events'] / a['wall_s']:,.0f} | {ratio:.3f} | "
                     f"<= {TARGET:.2f} | {'PASS' if ratio <= TARGET else 'MISS'} |")
    a = best[("nautilus", True)]
    h = best[("hft", True)]
    lines += ["", f"After: ema_cross {a['fills']:,} fills, {a['funding_events']} funding events ({a['funding_pnl']:,.2f} quote), "
                  f"counters {a['counters']}; market_maker {h['fills']:,} fills, {h['funding_events']} funding events "
                  f"({h['funding_pnl']:,.2f}), counters {h['counters']}.", ""]
    emit(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
