"""hftbacktest on order-book depth: the conversion of book day files, streaming by day, queue
positions that mean what they say (and the L1-approximate path beside them), L3 FIFO, the
depth market maker and the label reaching the manifest, metrics and critic.

Every book is scripted in code, so each fill time is known in advance: the comments work out
the queue ahead of our order event by event. Book day files are written here in
``quant_assets.book.schema.BOOK_SCHEMA`` (each day starting with a snapshot: a clear and its
adds), with a ``manifest.json`` naming the level, as the book builder publishes them.
"""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_assets.book.read import BookSlice, book_slice
from quant_assets.book.schema import BOOK_SCHEMA, DEPTH_L2, DEPTH_L3, F_LAST
from quant_assets.engines import hft_depth
from quant_assets.engines.fidelity import L1_APPROXIMATE
from quant_assets.engines.hft import run_hftbacktest, run_hftbacktest_with_state
from quant_assets.engines.hft_depth import day_events, read_day, write_feed
from quant_assets.engines.hft_events import BUY_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT, TRADE_EVENT
from quant_assets.engines.inputs import BacktestInputError, NotApplicableError
from quant_assets.lake.instruments import Instrument
from quant_assets.lake.schema import TICK_SCHEMA
from quant_assets.strategies.spec import ParamError
from quant_assets.venues.profile import frictionless

S = 1_000_000_000
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
DAY = 86_400 * S
MONTH = "2024-01"
EX_LOCAL = EXCH_EVENT | LOCAL_EVENT

#: Prices on a 0.01 grid, whole lots, no fees: queue arithmetic in lots.
Q = Instrument("QUEUEUSD", "SIM", "Q", "USD", 2, 0, 0.01, 1.0, 0.0, 0.0)
#: One lot at 99.99 and one at 100.02 around the first mid 100.005 (half spread 1.5 ticks:
#: floor(10000.5 - 1.5) = 9999, ceil(10000.5 + 1.5) = 10002), no inventory skew; a decision
#: interval of a minute, so the scripted seconds pass without a re-quote.
MM = {"half_spread_ticks": 1.5, "skew_ticks": 0.0, "order_notional": 100.0, "max_position_orders": 5,
      "interval_ms": 60_000.0, "equity_interval_s": 60.0}
#: No latency (1 ns), hftbacktest's power-3 probabilistic queue (the built-in default).
VENUE = frictionless("SIM", Q.kind)


# --- scripted books ----------------------------------------------------------------------------


def ts(t: float) -> int:
    return T0 + int(round(t * S))


def row(t: float, side: int, price: float | None, size: float, action: str, snap: bool = False, oid: int | None = None,
        seq: int = 0) -> dict:
    return dict(ts_event=ts(t), ts_recv=ts(t), seq=seq, side=side, price=price, size=size, action=action,
                is_snapshot=snap, order_id=oid, flags=0)


def snapshot(t: float, bids: list, asks: list) -> list[dict]:
    """A clear and one add per level ``(price, size)`` (L2) or order ``(price, size, oid)`` (L3)."""
    out = [row(t, 0, None, 0.0, "clear", snap=True)]
    for side, levels in ((1, bids), (-1, asks)):
        for lv in levels:
            out.append(row(t, side, lv[0], lv[1], "add", snap=True, oid=lv[2] if len(lv) > 2 else None))
    return out


def book_frame(rows: list[dict]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={k: v for k, v in BOOK_SCHEMA.items()})
    # seq per message: rows sharing a timestamp are one message here; F_LAST on its last row.
    seq = df["ts_recv"].rank("dense").cast(pl.Int64)
    last = pl.Series(np.r_[df["ts_recv"].to_numpy()[1:] != df["ts_recv"].to_numpy()[:-1], True])
    return df.with_columns(seq=seq, flags=pl.when(last).then(F_LAST).otherwise(0).cast(pl.UInt8))


def write_book(root: Path, days: dict[str, list[dict]], level: str = DEPTH_L2) -> BookSlice:
    """Day files under ``root/book/symbol=QUEUEUSD/month=2024-01`` and the month's manifest."""
    month_dir = root / "book" / f"symbol={Q.symbol}" / f"month={MONTH}"
    paths = []
    for dd, rows in days.items():
        path = month_dir / f"day={dd}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        book_frame(rows).write_parquet(path)
        paths.append(path)
    (month_dir / "manifest.json").write_text(json.dumps({"level": level, "files": [str(p.relative_to(month_dir)) for p in paths]}))
    return BookSlice(level, tuple(paths))


def l1_quotes(rows: list[dict]) -> list[dict]:
    """The L1 quotes of a scripted book: its top after each message that changed it (what
    ``ticks`` holds for the same market), replaying L2 levels or L3 orders."""
    book: dict[tuple, tuple] = {}  # key -> (side, price, size)
    out, last = [], None
    for i, r in enumerate(rows):
        key = r["order_id"] if r["order_id"] is not None else (r["side"], r["price"])
        if r["action"] == "clear":
            book.clear()
        elif r["action"] == "delete":
            book.pop(key, None)
        else:
            book[key] = (r["side"], r["price"], r["size"])
        if i + 1 < len(rows) and rows[i + 1]["ts_recv"] == r["ts_recv"]:
            continue  # the message is not over
        top = []
        for side in (1, -1):
            levels: dict[float, float] = {}
            for s, p, q in book.values():
                if s == side:
                    levels[p] = levels.get(p, 0.0) + q
            best = (max if side == 1 else min)(levels) if levels else None
            top += [best, levels.get(best)]
        if top != last and None not in top:
            out.append(dict(ts_event=r["ts_event"], ts_recv=r["ts_recv"], kind="quote", bid_px=top[0], bid_sz=top[1],
                            ask_px=top[2], ask_sz=top[3]))
            last = top
    return out


def trade(t: float, price: float, size: float, side: int) -> dict:
    return dict(ts_event=ts(t), ts_recv=ts(t), kind="trade", price=price, size=size, side=side, trade_id=f"t{t}")


def write_ticks(path: Path, book_rows: list[dict], trades: list[dict]) -> Path:
    """The slice's ticks: the book's L1 quotes and the trades, in receive order (a trade before
    the quote its book change made, at the same time)."""
    rows = sorted([(r["ts_recv"], 0, r) for r in trades] + [(r["ts_recv"], 1, r) for r in l1_quotes(book_rows)],
                  key=lambda x: (x[0], x[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([{**r, "seq": i} for i, (_, _, r) in enumerate(rows)], schema=TICK_SCHEMA).write_parquet(path)
    return path


#: The book of the issue's example: 10 lots bid at 99.99 ahead of our order when it joins at
#: t=0 (the touch is 100.00, 5 lots); 5 lots join behind it at t=2; the touch is sold out at
#: t=3; then 4, 4 and 3 lots trade at 99.99, the last trade taking the 2 lots still ahead of us
#: and (in the real market) ours.
SNAP = snapshot(0, bids=[(100.00, 5), (99.99, 10), (99.98, 20)], asks=[(100.01, 5), (100.02, 10)])
QUEUE_ROWS = SNAP + [
    row(2, 1, 99.99, 15, "update"),
    row(3, 1, 100.00, 0, "delete"),
    row(4, 1, 99.99, 11, "update"),
    row(5, 1, 99.99, 7, "update"),
    row(6, 1, 99.99, 4, "update"),
    row(8, -1, 100.01, 6, "update"),  # later activity: the month goes on past the last trade
]
QUEUE_TRADES = [trade(3, 100.00, 5, -1), trade(4, 99.99, 4, -1), trade(5, 99.99, 4, -1), trade(6, 99.99, 3, -1)]


def maker_fills(run) -> list[tuple[int, int, float, str]]:
    """(seconds after T0 in ns, side, price, liquidity) of the run's fills."""
    f = run.fills
    return list(zip((f["ts"] - T0).to_list(), f["side"].to_list(), f["price"].to_list(), f["liquidity"].cast(pl.String).to_list()))


@pytest.fixture
def queue_slice(tmp_path):
    book = write_book(tmp_path, {"01": QUEUE_ROWS})
    ticks = write_ticks(tmp_path / "ticks.parquet", QUEUE_ROWS, QUEUE_TRADES)
    return ticks, book


# --- the queue: depth versus L1-approximate ------------------------------------------------------


def test_an_order_behind_a_known_queue_fills_only_after_that_queue_has_traded(queue_slice, tmp_path):
    ticks, book = queue_slice
    depth = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=tmp_path)
    # Ahead of our bid at 99.99: 10 lots. 4 + 4 trade (2 left ahead); the third trade of 3 takes
    # those 2 and 1 of ours: the fill is at t=6 exactly, at our price, as a maker. The month
    # closes the lot at t=8 with an IOC at the touch (99.99).
    assert maker_fills(depth)[0] == (6 * S, 1, 99.99, "maker")
    assert [f[1:] for f in maker_fills(depth)] == [(1, 99.99, "maker"), (-1, 99.99, "taker")]
    assert depth.fidelity == DEPTH_L2
    assert any("queue model power_prob(3)" in n for n in depth.notes)

    l1 = run_hftbacktest(ticks, Q, MM, profile=VENUE)
    # The same market as L1 quotes: at t=0 the one-level book shows nothing at 99.99, so the
    # order starts at the head of the queue and fills at the first trade there (t=4), two
    # trades early: the direction queue position implies. The result says what it is.
    assert maker_fills(l1)[0] == (4 * S, 1, 99.99, "maker")
    assert l1.fidelity == L1_APPROXIMATE
    assert any("queue model risk_adverse" in n for n in l1.notes)
    assert any("instead of the profile's power_prob(3)" in n for n in l1.notes)


def test_when_the_queue_is_visible_at_the_touch_both_paths_agree(tmp_path):
    # Our bid joins at the touch (99.99, 10 lots, visible on L1 too): 4, 4, 3 trade; both paths
    # fill at the third trade.
    rows = snapshot(0, bids=[(99.99, 10), (99.98, 20)], asks=[(100.00, 5), (100.01, 10)]) + [
        row(2, 1, 99.99, 15, "update"), row(4, 1, 99.99, 11, "update"), row(5, 1, 99.99, 7, "update"),
        row(6, 1, 99.99, 4, "update"), row(8, -1, 100.00, 6, "update"),
    ]
    trades = [trade(4, 99.99, 4, -1), trade(5, 99.99, 4, -1), trade(6, 99.99, 3, -1)]
    book = write_book(tmp_path, {"01": rows})
    ticks = write_ticks(tmp_path / "ticks.parquet", rows, trades)
    params = {**MM, "half_spread_ticks": 0.5}  # mid 99.995: bid floor(9999.5 - 0.5) = 9999 (the touch), ask 10000
    depth = run_hftbacktest(ticks, Q, params, profile=VENUE, book=book, tmp_dir=tmp_path)
    l1 = run_hftbacktest(ticks, Q, params, profile=VENUE)
    assert maker_fills(depth)[0] == maker_fills(l1)[0] == (6 * S, 1, 99.99, "maker")


#: Scenario B: as the issue's book, but 6 lots are cancelled at 99.99 at t=3.5 (no trade), and
#: the trades are 4, 4 then 2 (the last one takes the 1 lot left of the others and ours).
CANCEL_ROWS = SNAP + [
    row(2, 1, 99.99, 15, "update"), row(3, 1, 100.00, 0, "delete"), row(3.5, 1, 99.99, 9, "update"),
    row(4, 1, 99.99, 5, "update"), row(5, 1, 99.99, 1, "update"), row(6, 1, 99.99, 0, "delete"),
    row(8, -1, 100.01, 6, "update"),
]
CANCEL_TRADES = [trade(3, 100.00, 5, -1), trade(4, 99.99, 4, -1), trade(5, 99.99, 4, -1), trade(6, 99.99, 2, -1)]


@pytest.mark.parametrize("model,fill_s", [
    # Ahead 10, behind 5 when 6 are cancelled. The probability p that a cancel was behind us:
    # power_prob  p = b³/(b³+f³) = 1/9: ahead 10 - (8/9)·6 = 4.67 → 0.67 → -3.33 (fills at t=5)
    ("power_prob", 5),
    # power_prob2 p = b³/(b+f)³ = 0.037: ahead 4.22 → 0.22 → -3.78 (t=5)
    ("power_prob2", 5),
    # power_prob3 p = 1 - (f/(f+b))³ = 0.70: ahead 8.22 → 4.22 → 0.22 → -1.78 (t=6)
    ("power_prob3", 6),
    # log_prob    p = ln6/(ln6+ln11) = 0.43: ahead 6.57 → 2.57 → -1.43 (t=5)
    ("log_prob", 5),
    # log_prob2   p = ln6/ln16 = 0.65: ahead 7.88 → 3.88 → -0.12 (rounds to 0 lots) → -2.12 (t=6)
    ("log_prob2", 6),
    # risk_adverse: a cancel never advances the queue (ahead min(10, 9) = 9 → 5 → 1 → -1: t=6)
    ("risk_adverse", 6),
])
def test_on_depth_the_profiles_queue_model_decides_how_cancels_advance_the_queue(tmp_path, model, fill_s):
    book = write_book(tmp_path, {"01": CANCEL_ROWS})
    ticks = write_ticks(tmp_path / "ticks.parquet", CANCEL_ROWS, CANCEL_TRADES)
    run = run_hftbacktest(ticks, Q, MM, profile=replace(VENUE, queue_model=model), book=book, tmp_dir=tmp_path)
    assert maker_fills(run)[0] == (fill_s * S, 1, 99.99, "maker")
    assert any(f"queue model {model}" in n for n in run.notes)
    # On L1 the profile's model does not apply: the conservative one runs, and the empty level
    # at 99.99 puts the order first: it fills at the first trade there.
    l1 = run_hftbacktest(ticks, Q, MM, profile=replace(VENUE, queue_model=model))
    assert maker_fills(l1)[0] == (4 * S, 1, 99.99, "maker")


# --- L3: FIFO on the orders ----------------------------------------------------------------------


#: The issue's book order by order: o2, o3, o4 (4 + 4 + 2) ahead of us at 99.99, o5 (5) joins
#: behind at t=2. Each trade's book change is the orders it hit shrinking or leaving.
L3_SNAP = snapshot(0, bids=[(100.00, 5, 1), (99.99, 4, 2), (99.99, 4, 3), (99.99, 2, 4), (99.98, 20, 6)],
                   asks=[(100.01, 5, 10), (100.02, 10, 11)])
L3_ROWS = L3_SNAP + [
    row(2, 1, 99.99, 5, "add", oid=5),
    row(3, 1, 100.00, 0, "delete", oid=1),
    row(4, 1, 99.99, 0, "delete", oid=2),
    row(5, 1, 99.99, 0, "delete", oid=3),
    row(6, 1, 99.99, 0, "delete", oid=4), row(6, 1, 99.99, 4, "update", oid=5),
    row(8, -1, 100.01, 6, "update", oid=10),
]


def test_l3_fifo_fills_our_order_when_the_order_behind_it_trades(tmp_path):
    book = write_book(tmp_path, {"01": L3_ROWS}, DEPTH_L3)
    ticks = write_ticks(tmp_path / "ticks.parquet", L3_ROWS, QUEUE_TRADES)
    run = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=tmp_path)
    # o2, o3, o4 leave as 4 + 4 + 2 of the trades: fills; at t=6 o5, which joined behind us,
    # loses 1 lot to the trade: in FIFO we were filled first.
    assert maker_fills(run)[0] == (6 * S, 1, 99.99, "maker")
    assert run.fidelity == DEPTH_L3
    assert any("queue model l3_fifo" in n for n in run.notes)
    assert any("16 of 16 traded (100.0%)" in n for n in run.notes)


def test_l3_a_cancel_behind_us_is_not_a_fill(tmp_path):
    # The same book, but o5 shrinks at t=7 with no trade then: nothing behind us traded.
    rows = L3_ROWS[:-3] + [row(6, 1, 99.99, 0, "delete", oid=4), row(7, 1, 99.99, 4, "update", oid=5), L3_ROWS[-1]]
    trades = QUEUE_TRADES[:-1] + [trade(6, 99.99, 2, -1)]
    book = write_book(tmp_path, {"01": rows}, DEPTH_L3)
    ticks = write_ticks(tmp_path / "ticks.parquet", rows, trades)
    run = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert not [f for f in maker_fills(run) if f[3] == "maker"]


def test_l3_fills_are_inferred_only_from_trades_at_the_same_time_price_and_side():
    day = hft_depth.BookDay(
        Path("x/month=2024-01/day=01/part-0.parquet"),
        ts_event=np.array([0, 0, 0, 5, 5, 6, 7], np.int64) + T0, ts_recv=np.array([0, 0, 0, 5, 5, 6, 7], np.int64) + T0,
        side=np.array([0, 1, 1, 1, 1, 1, 1], np.int8), price=np.array([np.nan, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0]),
        size=np.array([0, 3, 4, 0, 1, 2, 0.0]), action=np.array([3, 0, 0, 2, 1, 1, 2], np.uint8),
        is_snapshot=np.array([1, 1, 1, 0, 0, 0, 0], bool), order_id=np.array([0, 1, 2, 1, 2, 2, 2], np.uint64),
    )
    # At 5 a sale of 5 at 10.0: o1 leaves (a cut of 3: filled 3) and o2 shrinks 4 -> 1 (a cut
    # of 3, of which 2 are left of the trade: filled 2). At 6 o2 grows to 2 (no cut); at 7 it
    # leaves with no trade then: a cancel.
    trades = hft_depth.Trades(np.array([5 + T0]), np.array([5 + T0]), np.array([10.0]), np.array([5.0]), np.array([-1], np.int8))
    fills, matched, traded = hft_depth.infer_fills(day, np.arange(len(day)), trades, 0.01)
    assert fills.tolist() == [0, 0, 0, 3, 2, 0, 0] and (matched, traded) == (5.0, 5.0)
    # A buy (the ask side's queue) at the same time and price matches nothing on the bid side.
    buy = replace(trades, side=np.array([1], np.int8))
    assert hft_depth.infer_fills(day, np.arange(len(day)), buy, 0.01)[0].tolist() == [0] * 7


# --- streaming by day --------------------------------------------------------------------------


def test_a_month_streams_one_day_file_at_a_time_and_the_day_boundary_keeps_the_queue(tmp_path, monkeypatch):
    # Day 1: our bid joins behind 10 lots; 4 and 4 trade. Day 2 opens with its snapshot (the
    # same book: 2 ahead + 5 behind = 7 at 99.99) and 3 trade at 00:00:01: the fill is then, so
    # the snapshot did not push the order back in the queue.
    d2 = 1.0 * DAY / S
    # (The 100.01 offer leaves with the 100.00 bid, so the mid stays 100.005 and the decisions
    # every minute in between keep the order where it is.)
    day1 = SNAP + [row(2, 1, 99.99, 15, "update"), row(3, 1, 100.00, 0, "delete"), row(3, -1, 100.01, 0, "delete"),
                   row(4, 1, 99.99, 11, "update"), row(5, 1, 99.99, 7, "update")]
    day2 = snapshot(d2 + 1, bids=[(99.99, 7), (99.98, 20)], asks=[(100.02, 10)]) + [
        row(d2 + 1, 1, 99.99, 4, "update"), row(d2 + 3, -1, 100.02, 11, "update")]
    day3 = snapshot(2 * d2 + 1, bids=[(99.99, 4), (99.98, 20)], asks=[(100.02, 11)]) + [
        row(2 * d2 + 2, -1, 100.02, 12, "update")]
    # (and a trade on the 4th, a day without a book file: counted, not replayed)
    trades = QUEUE_TRADES[:3] + [trade(d2 + 1, 99.99, 3, -1), trade(3 * d2 + 5, 99.99, 1, -1)]
    book = write_book(tmp_path, {"01": day1, "02": day2, "03": day3})
    ticks = write_ticks(tmp_path / "ticks.parquet", day1 + day2 + day3, trades)

    alive: list[int] = []
    reads: list[str] = []
    written: list[Path] = []

    def watched_read(path, tick_size, level):
        gc.collect()
        alive.append(len(live))
        reads.append(path.parent.name)
        day = read_day(path, tick_size, level)
        live.add(id(day))
        weakref.finalize(day, live.discard, id(day))
        return day

    def watched_write(path, events):
        written.append(path)
        hft_depth.np.save(path, events, allow_pickle=False)

    live: set[int] = set()
    monkeypatch.setattr(hft_depth, "read_day", watched_read)
    monkeypatch.setattr(hft_depth, "write_day", watched_write)
    work = tmp_path / "work"
    work.mkdir()
    run = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=work)

    assert maker_fills(run)[0] == (int(d2 + 1) * S, 1, 99.99, "maker")
    # Each day file read once, in order, with no earlier day still in memory.
    assert reads == ["day=01", "day=02", "day=03"] and alive == [0, 0, 0]
    # The first day in memory, one event file per later day (hftbacktest loads them lazily),
    # all gone after the run.
    assert [p.name for p in written] == ["day-02.npy", "day-03.npy"]
    assert not any(work.iterdir())
    assert any("3 day file(s) streamed by day" in n for n in run.notes)
    assert any("1 trade(s) of the month fell on days without a book file" in n for n in run.notes)


def test_l3_day_boundary_is_a_diff_so_our_resting_order_survives(tmp_path):
    d2 = 1.0 * DAY / S
    # Up to o3 leaving at t=5; the 100.01 offer (o10) leaves with o1, so the mid stays put.
    day1 = L3_ROWS[:-7] + [row(2, 1, 99.99, 5, "add", oid=5), row(3, 1, 100.00, 0, "delete", oid=1),
                           row(3, -1, 100.01, 0, "delete", oid=10), row(4, 1, 99.99, 0, "delete", oid=2),
                           row(5, 1, 99.99, 0, "delete", oid=3)]
    # Day 2's snapshot: the book as day 1 left it (o4 2, o5 5 at 99.99, o6 at 99.98, o11).
    day2 = snapshot(d2 + 1, bids=[(99.99, 2, 4), (99.99, 5, 5), (99.98, 20, 6)], asks=[(100.02, 10, 11)]) + [
        row(d2 + 1, 1, 99.99, 0, "delete", oid=4), row(d2 + 1, 1, 99.99, 4, "update", oid=5),
        row(d2 + 3, -1, 100.02, 11, "update", oid=11)]
    trades = QUEUE_TRADES[:3] + [trade(d2 + 1, 99.99, 3, -1)]
    book = write_book(tmp_path, {"01": day1, "02": day2}, DEPTH_L3)
    ticks = write_ticks(tmp_path / "ticks.parquet", day1 + day2, trades)
    run = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert maker_fills(run)[0] == (int(d2 + 1) * S, 1, 99.99, "maker")
    assert any("day(s) 02: the starting snapshot was applied as a diff" in n for n in run.notes)


# --- the conversion ----------------------------------------------------------------------------


def test_book_rows_and_trades_become_hftbacktest_events_trades_first_at_equal_times(tmp_path):
    import hftbacktest as hbt

    assert (hft_depth.DEPTH_CLEAR_EVENT, hft_depth.DEPTH_SNAPSHOT_EVENT, hft_depth.ADD_ORDER_EVENT, hft_depth.CANCEL_ORDER_EVENT,
            hft_depth.MODIFY_ORDER_EVENT, hft_depth.FILL_EVENT) == (
        hbt.DEPTH_CLEAR_EVENT, hbt.DEPTH_SNAPSHOT_EVENT, hbt.ADD_ORDER_EVENT, hbt.CANCEL_ORDER_EVENT,
        hbt.MODIFY_ORDER_EVENT, hbt.FILL_EVENT)
    rows = snapshot(0, bids=[(100.00, 5)], asks=[(100.01, 5)]) + [row(3, 1, 100.00, 0, "delete"), row(4, -1, None, 0, "clear")]
    book = write_book(tmp_path, {"01": rows})
    ticks = write_ticks(tmp_path / "t.parquet", rows, [trade(3, 100.00, 5, -1), trade(3.5, 100.01, 1, 0)])
    day = read_day(book.days[0], 0.01, DEPTH_L2)
    events, stats = day_events(day, hft_depth.read_trades(ticks, T0, T0 + DAY, 0.01), 0.01, DEPTH_L2)
    got = [(int(e["ev"]), int(e["local_ts"] - T0), None if np.isnan(e["px"]) else float(e["px"]), float(e["qty"])) for e in events]
    assert got == [
        (hft_depth.DEPTH_CLEAR_EVENT | EX_LOCAL, 0, None, 0.0),
        (hft_depth.DEPTH_SNAPSHOT_EVENT | BUY_EVENT | EX_LOCAL, 0, 100.00, 5.0),
        (hft_depth.DEPTH_SNAPSHOT_EVENT | SELL_EVENT | EX_LOCAL, 0, 100.01, 5.0),
        (TRADE_EVENT | SELL_EVENT | EX_LOCAL, 3 * S, 100.00, 5.0),  # the trade before the book change it made
        (DEPTH_EVENT | BUY_EVENT | EX_LOCAL, 3 * S, 100.00, 0.0),  # a delete: the level's size is 0
        # side 0 at 100.01, above the mid of the ticks' last quote (100.005): a buyer
        (TRADE_EVENT | BUY_EVENT | EX_LOCAL, int(3.5 * S), 100.01, 1.0),
        (hft_depth.DEPTH_CLEAR_EVENT | SELL_EVENT | EX_LOCAL, 4 * S, None, 0.0),  # a one-sided clear
    ]
    assert stats.event_rows == 7 and not stats.reordered


def test_exchange_times_out_of_receive_order_are_split_per_processor(tmp_path):
    from hftbacktest.data import validate_event_order

    rows = snapshot(0, bids=[(100.00, 5)], asks=[(100.01, 5)]) + [row(2, 1, 100.00, 6, "update"), row(3, 1, 100.00, 7, "update")]
    rows[-2] = {**rows[-2], "ts_event": ts(2.5)}  # received at 2, stamped 2.5 by the venue
    rows[-1] = {**rows[-1], "ts_event": ts(2.2)}  # received at 3, stamped 2.2: out of order
    book = write_book(tmp_path, {"01": rows})
    day = read_day(book.days[0], 0.01, DEPTH_L2)
    empty = hft_depth.Trades(*(np.zeros(0, np.int64),) * 2, *(np.zeros(0),) * 2, np.zeros(0, np.int8))
    events, stats = day_events(day, empty, 0.01, DEPTH_L2)
    validate_event_order(events)  # raises when either processor's times go backwards
    # The row the venue stamped out of order exists once per processor; the other has both flags.
    assert stats.reordered and len(events) == len(rows) + 1
    exch = events[(events["ev"] & EXCH_EVENT) != 0]
    assert [float(q) for q in exch["qty"][-2:]] == [7.0, 6.0]  # the exchange applies them in its own order


def _bad(rows, **change):
    out = [dict(r) for r in rows]
    i = change.pop("at")
    out[i].update(change)
    return out


BASE = snapshot(0, bids=[(100.00, 5)], asks=[(100.01, 5)]) + [row(2, 1, 100.00, 6, "update")]


@pytest.mark.parametrize("rows,level,expected", [
    (BASE[1:], DEPTH_L2, "row 0: a day file must start with a snapshot"),
    (_bad(BASE, at=3, ts_recv=ts(-1), ts_event=ts(-1)), DEPTH_L2, "row 3: ts_recv"),
    (_bad(BASE, at=3, side=2), DEPTH_L2, "row 3: side 2"),
    (_bad(BASE, at=3, side=0), DEPTH_L2, "row 3: side 0"),
    (_bad(BASE, at=3, size=-1.0), DEPTH_L2, "row 3: size -1.0"),
    (_bad(BASE, at=3, price=100.005), DEPTH_L2, "row 3: price 100.005 is not a multiple of the tick size 0.01"),
    (BASE, DEPTH_L3, "row 1: a depth-L3 book row without order_id"),
], ids=["no-snapshot", "unsorted", "side", "side-0", "negative", "off-grid", "l3-no-order-id"])
def test_a_bad_day_file_is_an_error_naming_the_file_and_row(tmp_path, rows, level, expected):
    book = write_book(tmp_path, {"01": rows}, level)
    with pytest.raises(BacktestInputError, match=expected) as err:
        read_day(book.days[0], 0.01, level)
    assert "day=01/part-0.parquet" in str(err.value)


def test_a_day_file_without_a_column_or_a_first_snapshot_side_is_an_error(tmp_path):
    book = write_book(tmp_path, {"01": BASE})
    pl.read_parquet(book.days[0]).drop("action").write_parquet(book.days[0])
    with pytest.raises(BacktestInputError, match="cannot read the book day file's columns"):
        read_day(book.days[0], 0.01, DEPTH_L2)
    one_sided = write_book(tmp_path / "b", {"01": snapshot(0, bids=[(100.0, 5)], asks=[])})
    ticks = write_ticks(tmp_path / "t.parquet", BASE, [trade(1, 100.0, 1, -1)])
    with pytest.raises(BacktestInputError, match="first snapshot has 1 bid and 0 ask"):
        write_feed(one_sided.days, ticks, 0.01, DEPTH_L2, tmp_path)
    assert not list(tmp_path.glob("hft-depth-*"))  # a failed conversion leaves no files


# --- the depth market maker and its registration ------------------------------------------------


def test_the_depth_market_maker_leans_its_quotes_on_the_book_imbalance(tmp_path):
    # 90 lots bid at 100.00 against 10 offered at 100.01: imbalance (90-10)/100 = 0.8, times
    # 2 ticks = 1.6 ticks up: the bid moves from 99.99 to the touch 100.00 (floor(10002.1 -
    # 1.5) = 10000). A sale of 100 lots at 100.00 then fills it (90 ahead); the plain market
    # maker's bid at 99.99 sees no trade.
    rows = snapshot(0, bids=[(100.00, 90), (99.98, 50)], asks=[(100.01, 10), (100.02, 10)]) + [
        row(3, 1, 100.00, 0, "delete"), row(8, -1, 100.01, 11, "update")]
    trades = [trade(3, 100.00, 100, -1)]
    book = write_book(tmp_path, {"01": rows})
    ticks = write_ticks(tmp_path / "ticks.parquet", rows, trades)
    depth_mm = {**MM, "imbalance_levels": 1, "imbalance_skew_ticks": 2.0}
    run = run_hftbacktest(ticks, Q, depth_mm, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert maker_fills(run)[0] == (3 * S, 1, 100.00, "maker")
    assert any("order-book imbalance over 1 level(s)" in n for n in run.notes)
    plain = run_hftbacktest(ticks, Q, MM, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert not [f for f in maker_fills(plain) if f[3] == "maker"]
    # Over two levels the imbalance is (140-20)/160 = 0.75: 1.5 ticks, still the touch.
    two = run_hftbacktest(ticks, Q, {**depth_mm, "imbalance_levels": 2}, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert maker_fills(two)[0] == (3 * S, 1, 100.00, "maker")
    # A skew of 1 tick (0.8 ticks up: floor(10001.3 - 1.5) = 9999) leaves the bid at 99.99.
    weak = run_hftbacktest(ticks, Q, {**depth_mm, "imbalance_skew_ticks": 1.0}, profile=VENUE, book=book, tmp_dir=tmp_path)
    assert not [f for f in maker_fills(weak) if f[3] == "maker"]


def test_the_imbalance_skew_is_not_applicable_without_a_book(queue_slice, tmp_path):
    from quant_assets.strategies import registry

    ticks, _ = queue_slice
    with pytest.raises(NotApplicableError, match="imbalance_levels = 3: needs order-book depth"):
        run_hftbacktest(ticks, Q, {**MM, "imbalance_levels": 3}, profile=VENUE)
    # Off (the default) it runs on L1, L1-approximate.
    assert run_hftbacktest(ticks, Q, {**MM, "imbalance_levels": 0}, profile=VENUE).fidelity == L1_APPROXIMATE
    assert registry.load(tmp_path / "none.toml")["market_maker"].depth == "optional"
    cfg = tmp_path / "strategies.toml"
    cfg.write_text("[market_maker]\nimbalance_levels = -1\n")
    with pytest.raises(ParamError, match="imbalance_levels = -1: out of range"):
        registry.load(cfg)


# --- end to end: the lake, the manifest, the metrics and the critic ------------------------------


def _lake_slice(lake, rows, trades, with_book: bool):
    from quant_assets.lake import instruments as inst_mod

    write_ticks(lake.ticks_path(Q.symbol, MONTH), rows, trades)
    inst_mod.record_inferred(lake, Q, MONTH)
    if with_book:
        write_book(lake.root, {"01": rows})


def test_the_runner_feeds_the_book_and_labels_each_result(lake):
    from quant_assets.analytics.slice_metrics import BacktestSlice, _account_facts
    from quant_assets.critique.prompt import MonthPosition, slice_data, strategy_dictionary
    from quant_assets.engines.runner import run_backtest
    from quant_assets.strategies import registry

    specs = registry.load()
    mm = specs["market_maker"].with_values({k: v for k, v in MM.items()})
    _lake_slice(lake, QUEUE_ROWS, QUEUE_TRADES, with_book=False)
    depth_mm = mm.with_values({"imbalance_levels": 5})
    # No book: the imbalance skew is not applicable, the market maker is L1-approximate.
    with pytest.raises(NotApplicableError, match="needs order-book depth"):
        run_backtest(lake, depth_mm, Q.symbol, MONTH)
    l1 = run_backtest(lake, mm, Q.symbol, MONTH)
    assert l1.manifest["fidelity"] == L1_APPROXIMATE
    assert "conservative risk_adverse queue model" in l1.manifest["fidelity_assumption"]
    facts = _account_facts(BacktestSlice(pl.DataFrame(), pl.DataFrame(), l1.manifest, l1.directory))
    assert facts["fidelity"] == L1_APPROXIMATE
    row = {**facts, "null_reasons": "{}", "start_ts": T0, "end_ts": T0 + 8 * S}
    no_trades = pl.DataFrame(schema={"pnl": pl.Float64, "return": pl.Float64, "return_on_equity": pl.Float64})
    data = slice_data(mm, row, no_trades, pl.DataFrame(), Q.symbol, MonthPosition(1, 1))
    assert data["market_data"]["fidelity"] == L1_APPROXIMATE
    assert "queue positions are not observed" in data["market_data"]["fidelity_note"]
    # The critic reads the queue model that ran, and no parameter it could not run here.
    words = strategy_dictionary(mm, l1.manifest["venue_profile"], L1_APPROXIMATE)
    assert "risk_adverse queue model instead of the profile's power_prob" in words and "- imbalance_levels (" not in words

    write_book(lake.root, {"01": QUEUE_ROWS})
    assert book_slice(lake, Q.symbol, MONTH) is not None
    deep = run_backtest(lake, mm, Q.symbol, MONTH)
    assert deep.manifest["fidelity"] == DEPTH_L2 and deep.manifest["fidelity_assumption"] is None
    fills = pl.read_parquet(deep.directory / "fills.parquet")
    assert fills["ts"][0] == T0 + 6 * S
    facts = _account_facts(BacktestSlice(pl.DataFrame(), pl.DataFrame(), deep.manifest, deep.directory))
    assert facts["fidelity"] == DEPTH_L2
    words = strategy_dictionary(mm, deep.manifest["venue_profile"], DEPTH_L2)
    assert "queue position by power_prob (n = 3)" in words and "- imbalance_levels (" in words
    dmm = run_backtest(lake, depth_mm, Q.symbol, MONTH)
    assert dmm.manifest["fidelity"] == DEPTH_L2 and dmm.manifest["params"]["imbalance_levels"] == 5
