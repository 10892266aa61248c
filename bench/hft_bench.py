"""Benchmark of the hftbacktest adapter: our full path vs a bare hftbacktest script.

Usage (from the repository root)::

    .venv/bin/python bench/hft_bench.py                    # 1.4M ticks (~1M quotes + trades)
    .venv/bin/python bench/hft_bench.py --events 200000    # quick smoke run

On one synthetic BTCUSDT month (``generate(SyntheticSpec("BTCUSDT", "2024-01", events=n,
trade_share=0.3))``, written to ``bench/_work/hft_bench/``), in one process:

0. warm-up: one ``run_hftbacktest`` on a small month, twice; the difference is the one-off
   numba compile of the process (the strategy loop and hftbacktest's jitclasses), reported
   separately and excluded from (a) and (b);
1. (a) ours: ``run_hftbacktest(path, instrument, params, profile=...)``: Parquet read,
   conversion to events, the replay, building the :class:`EngineRun`; under the built-in venue
   profile of the instrument (5 ms constant entry and response latency: what the market
   maker's former ``order_latency_ms`` default was); on these L1 ticks the adapter runs
   ``risk_adverse`` whatever the profile's queue model (``L1-approximate``), and so does (b);
2. (b) bare: what a script using hftbacktest directly does with data prepared for it: the
   month's event array saved once (untimed) as hftbacktest's native ``.npz``, then
   ``BacktestAsset().data("month.npz")`` (hftbacktest loads the file itself) →
   ``HashMapMarketDepthBacktest`` → ``market_maker_loop`` → ``close()``, with the same strategy
   loop and parameters; no conversion and no result building.
3. (c) loop only: as (b) but on the event array already in memory (nothing loaded), for reference.

Throughput is ticks (canonical rows) per second. Target: ours / bare (b) wall time ≤ 1.15; the
ratio to the loop alone (c) is reported beside it. Since the strategy loop skips the decision
grid's idle points (it waits for the next event), a month costs time in proportion to its events,
and our fixed cost (reading Parquet and building the array, ~0.9 s for 1.4M ticks, half of it the
first touch of 280 MB of fresh memory in this VM) weighs more against the loop alone.
The runs alternate ``repeats`` times and the best of each is kept (the machine is shared and
noisy). Nothing is written to ``bench/RESULTS.md``: :func:`measure` returns the figures for the
combined bench.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "hft_bench"
sys.path.insert(0, str(REPO))

SYMBOL = "BTCUSDT"
MONTH = "2024-01"
DEFAULT_EVENTS = 1_400_000
WARMUP_EVENTS = 20_000
TARGET_RATIO = 1.15


def _month(n_events: int) -> Path:
    """The synthetic month as canonical Parquet (generated once per size)."""
    from quant_assets.ingest.synthetic import SyntheticSpec, generate

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{SYMBOL}-{MONTH}-n{n_events}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        generate(SyntheticSpec(SYMBOL, MONTH, events=n_events, trade_share=0.3)).write_parquet(tmp)
        tmp.replace(path)
    return path


def _instrument(path: Path):
    """The instrument as the lake would infer it from the data (tick 0.01, lot 1e-4, SIM fees)."""
    import polars as pl

    from quant_assets.lake.instruments import infer

    return infer(SYMBOL, pl.scan_parquet(path), "SIM")


def _bare(events, end_ts: int, instrument, p: dict[str, Any], order_qty: float, profile) -> float:
    """(b)/(c): hftbacktest driven by hand on an ``.npz`` path or a ready event array, with the
    venue ``profile``'s constant latency and the queue model the adapter runs on L1 data
    (``risk_adverse``); returns the wall seconds."""
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    from quant_assets.strategies.market_maker import market_maker_loop
    from quant_assets.venues.latency import constant_ns

    t0 = time.perf_counter()
    entry_ns, resp_ns = constant_ns(profile)
    asset = (
        BacktestAsset()
        .data(events)
        .linear_asset(1.0)
        .constant_order_latency(entry_ns, resp_ns)
        .risk_adverse_queue_model()  # what hft.queue_choice gives L1 data
        .partial_fill_exchange()
        .trading_value_fee_model(instrument.maker_fee, instrument.taker_fee)
        .tick_size(instrument.tick_size)
        .lot_size(instrument.lot_size)
    )
    hbt = HashMapMarketDepthBacktest([asset])
    market_maker_loop(
        hbt, instrument.tick_size, instrument.lot_size, int(round(order_qty / instrument.lot_size)),
        p["half_spread_ticks"], p["skew_ticks"], p["max_position_orders"],
        int(p["interval_ms"] * 1_000_000), int(p["equity_interval_s"] * 1_000_000_000), end_ts, 1 << 14, 1 << 16,
        True,  # skip_idle, as the adapter runs it (passed explicitly: same numba specialisation)
    )
    hbt.close()
    return time.perf_counter() - t0


def measure(n_events: int = DEFAULT_EVENTS, repeats: int = 2) -> dict[str, Any]:
    """Run the benchmark on a synthetic month of ``n_events`` ticks; returns the figures
    (seconds, ticks/s, the ratio ours/bare and whether it meets :data:`TARGET_RATIO`)."""
    import hftbacktest
    import polars as pl

    from quant_assets.engines import hft
    from quant_assets.engines.hft_events import read_ticks, to_events
    from quant_assets.engines.result import finalize
    from quant_assets.strategies.registry import MARKET_MAKER
    from quant_assets.venues.profile import builtin

    params = MARKET_MAKER.resolved()
    path = _month(n_events)
    instrument = _instrument(path)
    profile = builtin(instrument.venue, instrument.kind)
    assert profile.latency_model == "constant" and profile.queue_model == "power_prob"

    # 0. warm-up: the first call compiles, the second shows what is left without compiling
    small = _month(WARMUP_EVENTS)
    t0 = time.perf_counter()
    hft.run_hftbacktest(small, instrument, params, profile=profile)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    hft.run_hftbacktest(small, instrument, params, profile=profile)
    compile_s = first - (time.perf_counter() - t0)

    # The array (b) replays, built untimed: the same one the adapter feeds (end marker included).
    read_convert = []
    for _ in range(2):  # the second pass shows the work without the first touch of its memory
        t0 = time.perf_counter()
        ticks = read_ticks(path)
        # the synthetic month has sizes everywhere: missing_qty is never used
        events = to_events(ticks, instrument.tick_size, missing_qty=instrument.lot_size,
                           end_marker_ns=hft.end_marker_pad_ns(profile))
        read_convert.append(time.perf_counter() - t0)
    read_convert_s = min(read_convert)
    end_ts = int(events["local_ts"][:-1].max())
    first_quote = ticks.filter(pl.col("kind") == "quote").row(0, named=True)
    order_qty = hft.order_quantity(params["order_notional"], (first_quote["bid_px"] + first_quote["ask_px"]) / 2,
                                   instrument.lot_size, instrument.size_precision)

    # (a) and (b) alternate, so both meet the same machine state (the first touch of fresh
    # memory is slow in a VM); the best of each is kept.
    import numpy as np

    npz = WORK / f"{SYMBOL}-{MONTH}-n{n_events}.npz"
    np.savez(npz, data=events)  # hftbacktest's native format, written once (untimed)
    ours, bare, loop = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run, state = hft.run_hftbacktest_with_state(path, instrument, params, profile=profile)
        ours.append(time.perf_counter() - t0)
        bare.append(_bare(str(npz), end_ts, instrument, params, order_qty, profile))
        loop.append(_bare(events, end_ts, instrument, params, order_qty, profile))
    fills, equity = finalize(run)
    npz.unlink()

    ours_s, bare_s, loop_s = min(ours), min(bare), min(loop)
    n_ticks = run.events
    return {
        "ticks": n_ticks,
        "quotes": int((ticks["kind"] == "quote").sum()),
        "event_rows": state.event_rows,
        "loop_steps": state.steps,
        "fills": len(fills),
        "equity_samples": len(equity),
        "compile_s": round(compile_s, 2),
        "read_convert_s": round(read_convert_s, 3),
        "ours_s": round(ours_s, 3),
        "bare_s": round(bare_s, 3),
        "ours_ticks_per_s": round(n_ticks / ours_s),
        "bare_ticks_per_s": round(n_ticks / bare_s),
        "ratio": round(ours_s / bare_s, 3),
        "loop_s": round(loop_s, 3),
        "loop_ticks_per_s": round(n_ticks / loop_s),
        "ratio_to_loop": round(ours_s / loop_s, 3),
        "runs_loop_s": [round(x, 3) for x in loop],
        "target_ratio": TARGET_RATIO,
        "meets_target": ours_s / bare_s <= TARGET_RATIO,
        "runs_ours_s": [round(x, 3) for x in ours],
        "runs_bare_s": [round(x, 3) for x in bare],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hftbacktest": hftbacktest.__version__,
        "params": params,
        "venue_profile": profile.label,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="ticks in the synthetic month")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement (best is kept)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    r = measure(args.events, args.repeats)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"hftbacktest {r['hftbacktest']}: {r['ticks']:,} ticks ({r['quotes']:,} quotes), {r['event_rows']:,} event rows, "
          f"{r['loop_steps']:,} loop steps, {r['fills']:,} fills")
    print(f"numba compile (once per process): {r['compile_s']:.2f} s")
    print(f"(a) ours  run_hftbacktest (read + convert + replay + result): {r['ours_s']:.3f} s  {r['ours_ticks_per_s']:,} ticks/s")
    print(f"(b) bare  hftbacktest loading its .npz + the same loop:       {r['bare_s']:.3f} s  {r['bare_ticks_per_s']:,} ticks/s")
    print(f"(c) loop  the same loop on an event array already in memory:  {r['loop_s']:.3f} s  {r['loop_ticks_per_s']:,} ticks/s")
    print(f"    (Parquet read + to_events alone: {r['read_convert_s']:.3f} s)")
    verdict = "meets" if r["meets_target"] else "MISSES"
    print(f"ratio ours/bare: {r['ratio']:.3f} ({verdict} the target <= {r['target_ratio']}); ours/loop only: {r['ratio_to_loop']:.3f}")
    return 0 if r["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
