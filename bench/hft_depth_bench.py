"""Benchmark of hftbacktest on order-book depth (issue 21): one day against a bare script, and
the peak memory of a month streamed by day.

Usage (from the repository root)::

    .venv/bin/python bench/hft_depth_bench.py                     # (a) and (b), 50M-delta month
    .venv/bin/python bench/hft_depth_bench.py --part a            # only the one-day comparison
    .venv/bin/python bench/hft_depth_bench.py --part b --deltas 10000000   # a smaller month

The data is a synthetic L2 book written with numpy + Polars directly in
:data:`quant_assets.book.schema.BOOK_SCHEMA` under ``bench/_work/hft_depth_bench/`` (one day
file per UTC day, each starting with a full snapshot: a clear and 20 levels per side), with
the month's trades in a canonical ``ticks`` file. The book moves like a market: a mid on a
random walk (a move: the vacated ask (or bid) level deleted, a new touch added on the other
side, the far levels rolled), trades at the touch each followed by the level's decrease (the
trade before the book change, at the same time), and size updates elsewhere, mostly near the
touch. BTCUSDT-like: tick 0.01, lot 0.001, mid about 50,000 USDT.

(a) **one day** of depth (~1.6M deltas: the 50M month's average day), best of ``repeats``
    alternating runs after a warm-up (numba compiles excluded):

    * ours: ``run_hftbacktest(ticks, instrument, market_maker params, profile, book=...)`` on
      the one-day slice: the day file read and checked, its trades read from the ticks file,
      the conversion (numba kernels) into an event array (the first day of a month stays in
      memory; later days go through ``.npy`` files), the replay, the result;
    * bare: what a script using hftbacktest directly does with data prepared for it: the same
      converted events (end marker included) saved once, untimed, as hftbacktest's native
      ``.npz``; ``BacktestAsset().data([npz])`` with the same latency, queue model and fees,
      ``HashMapMarketDepthBacktest``, the same strategy loop (``hft.run_loop``), ``close()``.

    Target: ours / bare ≤ 1.15.

(b) **a month** of ``--deltas`` book rows (default 50M) through ``run_hftbacktest`` in its own
    process; its peak RSS (``os.wait4``) must stay < 3 GB: the month is converted and replayed
    one day at a time (the day files on disk, 64 bytes per event, until the run ends).

Figures are printed and written to the "hftbacktest on order-book depth (issue 21)" section of
``bench/RESULTS.md`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "hft_depth_bench"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from _common import child_main, emit, machine, machine_line, run_child  # noqa: E402

SYMBOL = "BTCUSDT"
MONTH = "2024-01"
DAYS = 31
DEFAULT_DELTAS = 50_000_000
LEVELS = 20
TICK = 0.01
LOT = 0.001
TARGET_RATIO = 1.15
TARGET_RSS_GB = 3.0
SECTION = "## hftbacktest on order-book depth (issue 21)"
NS_PER_DAY = 86_400 * 1_000_000_000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000


def _instrument():
    from quant_assets.lake.instruments import Instrument

    # Binance spot BTCUSDT-like: 0.01 USDT tick, 0.001 BTC lot, 1 bp fees.
    return Instrument(SYMBOL, "SIM", "BTC", "USDT", 2, 3, TICK, LOT, 0.0001, 0.0001)


def _gen_kernel(seed, t_start, n_rows, mid_tick, bid_sz, ask_sz,
                ts, side, tick_px, size, action, snap, tr_ts, tr_px, tr_sz, tr_side):  # pragma: no cover - numba
    """Fill one day's book rows (a snapshot, then moves, trades and updates) and its trades.
    Sizes in lots. ``bid_sz``/``ask_sz`` (levels 1..LEVELS from the mid, index 0 unused) carry the
    book over to the next day. Returns (rows, trades, mid tick)."""
    np.random.seed(seed)
    K = bid_sz.shape[0] - 1
    r = 0
    # the snapshot: clear, then the levels
    ts[r] = t_start; side[r] = 0; tick_px[r] = 0; size[r] = 0.0; action[r] = 3; snap[r] = True; r += 1
    for k in range(1, K + 1):
        ts[r] = t_start; side[r] = 1; tick_px[r] = mid_tick - k; size[r] = bid_sz[k]; action[r] = 0; snap[r] = True; r += 1
    for k in range(1, K + 1):
        ts[r] = t_start; side[r] = -1; tick_px[r] = mid_tick + k; size[r] = ask_sz[k]; action[r] = 0; snap[r] = True; r += 1
    dt = 86_400_000_000_000 // n_rows
    t = t_start
    nt = 0
    while r < n_rows - 4:
        t += 1 + int(np.random.exponential(dt))
        u = np.random.random()
        if u < 0.03:  # the mid moves one tick: 4 rows
            up = np.random.random() < 0.5
            if up:
                ts[r] = t; side[r] = -1; tick_px[r] = mid_tick + 1; size[r] = 0.0; action[r] = 2; snap[r] = False; r += 1
                ts[r] = t; side[r] = 1; tick_px[r] = mid_tick - K; size[r] = 0.0; action[r] = 2; snap[r] = False; r += 1
                for k in range(K, 1, -1):
                    bid_sz[k] = bid_sz[k - 1]
                for k in range(1, K):
                    ask_sz[k] = ask_sz[k + 1]
                mid_tick += 1
                bid_sz[1] = 1.0 + np.floor(np.random.exponential(20.0))
                ask_sz[K] = 1.0 + np.floor(np.random.exponential(60.0))
                ts[r] = t; side[r] = 1; tick_px[r] = mid_tick - 1; size[r] = bid_sz[1]; action[r] = 0; snap[r] = False; r += 1
                ts[r] = t; side[r] = -1; tick_px[r] = mid_tick + K; size[r] = ask_sz[K]; action[r] = 0; snap[r] = False; r += 1
            else:
                ts[r] = t; side[r] = 1; tick_px[r] = mid_tick - 1; size[r] = 0.0; action[r] = 2; snap[r] = False; r += 1
                ts[r] = t; side[r] = -1; tick_px[r] = mid_tick + K; size[r] = 0.0; action[r] = 2; snap[r] = False; r += 1
                for k in range(K, 1, -1):
                    ask_sz[k] = ask_sz[k - 1]
                for k in range(1, K):
                    bid_sz[k] = bid_sz[k + 1]
                mid_tick -= 1
                ask_sz[1] = 1.0 + np.floor(np.random.exponential(20.0))
                bid_sz[K] = 1.0 + np.floor(np.random.exponential(60.0))
                ts[r] = t; side[r] = -1; tick_px[r] = mid_tick + 1; size[r] = ask_sz[1]; action[r] = 0; snap[r] = False; r += 1
                ts[r] = t; side[r] = 1; tick_px[r] = mid_tick - K; size[r] = bid_sz[K]; action[r] = 0; snap[r] = False; r += 1
        elif u < 0.15:  # a trade at the touch, then the level's decrease (refilled when taken)
            buy = np.random.random() < 0.5
            level = ask_sz if buy else bid_sz
            q = min(level[1], 1.0 + np.floor(np.random.exponential(5.0)))
            tr_ts[nt] = t; tr_px[nt] = mid_tick + 1 if buy else mid_tick - 1; tr_sz[nt] = q; tr_side[nt] = 1 if buy else -1; nt += 1
            level[1] -= q
            if level[1] <= 0.0:
                level[1] = 1.0 + np.floor(np.random.exponential(20.0))  # a new order joins the emptied touch
            # a buy takes from the asks
            ts[r] = t; side[r] = -1 if buy else 1
            tick_px[r] = mid_tick + 1 if buy else mid_tick - 1
            size[r] = level[1]; action[r] = 1; snap[r] = False; r += 1
        else:  # a size update, mostly near the touch
            k = min(K, 1 + int(np.random.exponential(3.0)))
            if np.random.random() < 0.5:
                bid_sz[k] = max(1.0, bid_sz[k] + np.floor(np.random.normal(0.0, 5.0)))
                ts[r] = t; side[r] = 1; tick_px[r] = mid_tick - k; size[r] = bid_sz[k]
            else:
                ask_sz[k] = max(1.0, ask_sz[k] + np.floor(np.random.normal(0.0, 5.0)))
                ts[r] = t; side[r] = -1; tick_px[r] = mid_tick + k; size[r] = ask_sz[k]
            action[r] = 1; snap[r] = False; r += 1
    return r, nt, mid_tick


_kernel = None


def _gen():
    global _kernel
    if _kernel is None:
        from numba import njit

        _kernel = njit(cache=True)(_gen_kernel)
    return _kernel


def write_month(n_deltas: int, days: int = DAYS, folder: Path | None = None) -> tuple[Path, list[Path]]:
    """The synthetic book month (``days`` day files, ``n_deltas`` rows in all) and its ticks
    file (the trades); made once per size under ``bench/_work``. Returns (ticks, day files)."""
    import numpy as np
    import polars as pl

    from quant_assets.book.schema import ACTION, BOOK_SCHEMA, F_LAST
    from quant_assets.lake.schema import TICK_SCHEMA

    folder = folder or WORK / f"m{n_deltas}-d{days}"
    month_dir = folder / "book" / f"symbol={SYMBOL}" / f"month={MONTH}"
    ticks_path = folder / "ticks" / f"{SYMBOL}-{MONTH}.parquet"
    paths = [month_dir / f"day={d:02d}" / "part-0.parquet" for d in range(1, days + 1)]
    if ticks_path.exists() and all(p.exists() for p in paths):
        return ticks_path, paths
    shutil.rmtree(folder, ignore_errors=True)
    per_day = n_deltas // days
    rng_bid = np.r_[0.0, 1.0 + np.floor(np.random.default_rng(1).exponential(40.0, LEVELS))]
    rng_ask = np.r_[0.0, 1.0 + np.floor(np.random.default_rng(2).exponential(40.0, LEVELS))]
    mid_tick = 5_000_000  # 50,000.00
    categories = np.array(ACTION.categories)
    trade_parts = []
    for d, path in enumerate(paths):
        n = per_day
        cols = dict(ts=np.zeros(n, np.int64), side=np.zeros(n, np.int8), tick_px=np.zeros(n, np.int64), size=np.zeros(n),
                    action=np.zeros(n, np.uint8), snap=np.zeros(n, np.bool_))
        tr = dict(ts=np.zeros(n // 4, np.int64), px=np.zeros(n // 4, np.int64), sz=np.zeros(n // 4), side=np.zeros(n // 4, np.int8))
        rows, nt, mid_tick = _gen()(d + 7, T0 + d * NS_PER_DAY, n, mid_tick, rng_bid, rng_ask, cols["ts"], cols["side"],
                                    cols["tick_px"], cols["size"], cols["action"], cols["snap"], tr["ts"], tr["px"], tr["sz"], tr["side"])
        ts = cols["ts"][:rows]
        clear = cols["action"][:rows] == 3
        df = pl.DataFrame({
            "ts_event": ts, "ts_recv": ts + 1_000_000,  # received 1 ms after the venue's stamp
            "seq": np.arange(rows, dtype=np.int64), "side": cols["side"][:rows],
            "price": np.where(clear, np.nan, cols["tick_px"][:rows] * TICK), "size": cols["size"][:rows] * LOT,
            "action": pl.Series(categories[cols["action"][:rows]]).cast(ACTION),
            "is_snapshot": cols["snap"][:rows], "order_id": pl.Series([None] * rows, dtype=pl.UInt64),
            "flags": np.full(rows, F_LAST, np.uint8),
        }, schema=BOOK_SCHEMA).with_columns(price=pl.when(pl.col("action") == "clear").then(None).otherwise(pl.col("price")))
        path.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(path)
        del df, cols
        tts = tr["ts"][:nt]
        trade_parts.append(pl.DataFrame({
            "ts_event": tts, "ts_recv": tts + 1_000_000, "kind": pl.Series(["trade"] * nt).cast(TICK_SCHEMA["kind"]),
            "price": tr["px"][:nt] * TICK, "size": tr["sz"][:nt] * LOT, "side": tr["side"][:nt],
        }))
    import json

    (month_dir / "manifest.json").write_text(json.dumps({"level": "depth-L2", "files": [str(p.relative_to(month_dir)) for p in paths]}))
    trades = pl.concat(trade_parts)
    ticks = trades.with_columns(seq=pl.int_range(pl.len(), dtype=pl.Int64), trade_id=pl.int_range(pl.len()).cast(pl.String),
                                **{c: pl.lit(None, TICK_SCHEMA[c]) for c in ("bid_px", "bid_sz", "ask_px", "ask_sz")})
    ticks_path.parent.mkdir(parents=True, exist_ok=True)
    ticks.select([pl.col(c).cast(t) for c, t in TICK_SCHEMA.items()]).write_parquet(ticks_path, row_group_size=256_000)
    return ticks_path, paths


def _params() -> dict[str, Any]:
    from quant_assets.strategies.registry import MARKET_MAKER

    return MARKET_MAKER.resolved()


def _profile():
    from quant_assets.venues.profile import builtin

    return builtin("SIM", "spot")  # 5 ms constant latency, power_prob(3)


def _bare(npz: str, start_ts: int, end_ts: int, instrument, p: dict[str, Any], order_qty: float, profile) -> float:
    """hftbacktest driven by hand on its own ``.npz`` with the profile's latency and queue
    model and the same strategy loop; returns the wall seconds."""
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    from quant_assets.engines import hft
    from quant_assets.venues.latency import constant_ns

    t0 = time.perf_counter()
    entry_ns, resp_ns = constant_ns(profile)
    asset = (
        BacktestAsset().data([npz]).linear_asset(1.0)
        .constant_order_latency(entry_ns, resp_ns)
        .power_prob_queue_model(profile.queue_power)
        .partial_fill_exchange()
        .trading_value_fee_model(instrument.maker_fee, instrument.taker_fee)
        .tick_size(instrument.tick_size)
        .lot_size(instrument.lot_size)
    )
    hbt = HashMapMarketDepthBacktest([asset])
    hft.run_loop(hbt, start_ts, end_ts, instrument, p, order_qty, True)
    hbt.close()
    return time.perf_counter() - t0


def one_day(deltas_per_day: int, repeats: int) -> dict[str, Any]:
    """(a): ours vs bare on one day of depth."""
    import numpy as np

    from quant_assets.book.read import BookSlice
    from quant_assets.engines import hft
    from quant_assets.engines.hft_depth import write_feed

    inst, p, profile = _instrument(), _params(), _profile()
    ticks, days = write_month(deltas_per_day, 1, WORK / f"day{deltas_per_day}")
    small_ticks, small_days = write_month(20_000, 1, WORK / "day-warmup")
    book, small = BookSlice("depth-L2", tuple(days)), BookSlice("depth-L2", tuple(small_days))
    tmp = WORK / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # warm-up: numba compiles (the strategy loop, hftbacktest's jitclasses, our kernel)
    t0 = time.perf_counter()
    hft.run_hftbacktest(small_ticks, inst, p, profile=profile, book=small, tmp_dir=tmp)
    warm_s = time.perf_counter() - t0

    # The bare script's input: the same events our path feeds, as hftbacktest's native .npz.
    feed = write_feed(book.days, ticks, inst.tick_size, book.level, tmp)
    feed.add_end_marker(hft.end_marker_pad_ns(profile))
    events = np.concatenate([feed.first] + [np.load(f) for f in feed.files])
    start_ts, end_ts = feed.first_local, feed.last_local
    order_qty = hft.order_quantity(p["order_notional"], feed.first_mid, inst.lot_size, inst.size_precision)
    feed.close()
    npz = WORK / "day.npz"
    np.savez(npz, data=events)
    n_events = len(events)
    del events
    hft_small = WORK / "day-warmup.npz"
    small_feed = write_feed(small.days, small_ticks, inst.tick_size, small.level, tmp)
    np.savez(hft_small, data=np.concatenate([small_feed.first] + [np.load(f) for f in small_feed.files]))
    _bare(str(hft_small), small_feed.first_local, small_feed.last_local, inst, p, order_qty, profile)
    small_feed.close()

    ours, bare = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run, state = hft.run_hftbacktest_with_state(ticks, inst, p, profile=profile, book=book, tmp_dir=tmp)
        ours.append(time.perf_counter() - t0)
        bare.append(_bare(str(npz), start_ts, end_ts, inst, p, order_qty, profile))
    npz.unlink()
    ours_s, bare_s = min(ours), min(bare)
    return {
        "book_rows": run.events, "event_rows": n_events, "loop_steps": state.steps, "fills": len(run.fills),
        "warmup_s": round(warm_s, 2), "ours_s": round(ours_s, 3), "bare_s": round(bare_s, 3), "ratio": round(ours_s / bare_s, 3),
        "runs_ours_s": [round(x, 3) for x in ours], "runs_bare_s": [round(x, 3) for x in bare],
        "rows_per_s": round(run.events / ours_s), "meets_target": ours_s / bare_s <= TARGET_RATIO,
    }


def month_child(n_deltas: int) -> dict[str, Any]:
    """(b), in its own process: the month through ``run_hftbacktest``."""
    from quant_assets.book.read import BookSlice
    from quant_assets.engines import hft

    ticks, days = write_month(n_deltas)
    tmp = WORK / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = hft.run_hftbacktest(ticks, _instrument(), _params(), profile=_profile(), book=BookSlice("depth-L2", tuple(days)), tmp_dir=tmp)
    wall = time.perf_counter() - t0
    return {"rows": run.events, "wall_s": round(wall, 1), "fills": len(run.fills), "notes": run.notes[:4]}


def month_data_child(n_deltas: int) -> dict[str, Any]:
    folder = WORK / f"m{n_deltas}-d{DAYS}"
    cached = (folder / "ticks" / f"{SYMBOL}-{MONTH}.parquet").exists()
    t0 = time.perf_counter()
    ticks, days = write_month(n_deltas)
    size = sum(p.stat().st_size for p in days)
    return {"write_s": "cached" if cached else round(time.perf_counter() - t0, 1), "book_mb": round(size / 2**20, 1),
            "ticks_mb": round(ticks.stat().st_size / 2**20, 1)}


CHILDREN = {"day": one_day, "month": month_child, "month_data": month_data_child}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["a", "b", "ab"], default="ab")
    parser.add_argument("--deltas", type=int, default=DEFAULT_DELTAS, help="book rows of the month (b)")
    parser.add_argument("--day-deltas", type=int, default=DEFAULT_DELTAS // DAYS, help="book rows of the day (a)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    mach = machine(("hftbacktest", "numba", "polars"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "", f"`uv run python bench/hft_depth_bench.py --part {args.part}` ({when}):", "", machine_line(mach)]
    ok = True
    if "a" in args.part:
        a = run_child(__file__, "day", deltas_per_day=args.day_deltas, repeats=args.repeats)
        ok &= a["meets_target"]
        lines += [
            f"- (a) one day of synthetic L2 depth: {a['book_rows']:,} book rows + trades, {a['event_rows']:,} hftbacktest events, "
            f"market_maker (registry defaults) under SIM.spot's built-in profile (5 ms constant latency, power_prob(3)), "
            f"{a['fills']:,} fills; best of {args.repeats} alternating runs after a warm-up (numba compiles, {a['warmup_s']} s, excluded).",
            "",
            "| path | time (s) | rows/s | ratio | target | |",
            "|---|---:|---:|---:|---:|---|",
            f"| ours: run_hftbacktest(book=...) (read + check + convert + replay + result) | {a['ours_s']:.3f} | {a['rows_per_s']:,} | "
            f"{a['ratio']:.3f} | <= {TARGET_RATIO} | {'PASS' if a['meets_target'] else 'FAIL'} |",
            f"| bare: hftbacktest loading its own .npz of the same day + the same loop | {a['bare_s']:.3f} | | | | |",
            "",
            f"  runs ours {a['runs_ours_s']}, bare {a['runs_bare_s']}; peak RSS of that process {a['maxrss_kib'] / 2**20:.2f} GiB.",
        ]
    if "b" in args.part:
        data = run_child(__file__, "month_data", n_deltas=args.deltas)
        b = run_child(__file__, "month", n_deltas=args.deltas)
        rss_gb = b["maxrss_kib"] * 1024 / 1e9
        written = "by an earlier run" if data["write_s"] == "cached" else f"in {data['write_s']} s"
        ok &= rss_gb < TARGET_RSS_GB
        lines += [
            f"- (b) a synthetic month of {b['rows']:,} book rows + trades ({args.deltas:,} deltas requested over {DAYS} day files, "
            f"{data['book_mb']} MiB of Parquet, ticks {data['ticks_mb']} MiB; written {written}) through "
            f"run_hftbacktest in its own process: wall {b['wall_s']} s, {b['fills']:,} fills, peak RSS "
            f"**{rss_gb:.2f} GB** (target < {TARGET_RSS_GB:g} GB: {'PASS' if rss_gb < TARGET_RSS_GB else 'FAIL'}).",
            f"  Notes: {'; '.join(b['notes'])}",
        ]
    emit(SECTION, lines, write=not args.no_write)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
