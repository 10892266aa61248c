"""NautilusTrader on order-book depth: on a scripted L2/L3 book a market order larger than the touch
fills across the book's levels at its prices; the same strategy on the L1 slice fills at the touch;
a day's snapshot does not disturb the book; strategies without depth run as before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from quant_assets.book.schema import BID, DEPTH_L3
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines import nautilus
from quant_assets.engines.nautilus import run_nautilus
from quant_assets.engines.result import finalize
from quant_assets.engines.runner import run_backtest
from quant_assets.lake import instruments as inst_mod
from quant_assets.strategies.registry import EMA_CROSS, MEAN_REVERSION
from quant_assets.venues.profile import frictionless
from quant_assets_tests.book_days import message, move, snapshot, write_book
from quant_assets_tests.scripted import INSTRUMENT, STEP, T0, quotes, trades, write

EMA = "quant_assets.strategies.ema_cross:EmaCross"
EMA_PARAMS = {"fast_period": 2, "slow_period": 3, "notional": 1000.0, "equity_interval_s": 1.0}
#: The book around mid 100, then around mid 101 (bids, asks; best first; sizes in base units).
B100 = ([(99.99, 2.0), (99.98, 3.0), (99.90, 50.0)], [(100.01, 2.0), (100.02, 3.0), (100.10, 50.0)])
B101 = ([(100.99, 5.0), (100.98, 2.0), (100.90, 50.0)], [(101.01, 3.0), (101.02, 4.0), (101.05, 100.0)])
#: ema_cross's long (9.9 = 1000 / 101 in lots of 0.01) and the flatten at the month's last quote,
#: walking B101: (side, qty, price).
WALKED = [(1, 3.0, 101.01), (1, 4.0, 101.02), (1, 2.9, 101.05), (-1, 5.0, 100.99), (-1, 2.0, 100.98), (-1, 2.9, 100.90)]


def _top_quotes(t0: int = T0) -> pl.DataFrame:
    """The L1 view of the scripted book: five quotes at B100's top, then five at B101's, one a
    second, with the top's sizes."""
    df = quotes([99.99] * 5 + [100.99] * 5, [100.01] * 5 + [101.01] * 5, t0=t0)
    return df.with_columns(bid_sz=pl.Series([2.0] * 5 + [5.0] * 5), ask_sz=pl.Series([2.0] * 5 + [3.0] * 5))


def _fills(run) -> list[tuple]:
    return finalize(run)[0].select("side", "qty", "price").rows()


def test_a_market_order_larger_than_the_touch_walks_the_book_where_l1_fills_at_the_touch(tmp_path: Path) -> None:
    path = write(_top_quotes(), tmp_path / "t.parquet")
    # The book moves to B101 at 5 s, the very time of the first quote at 101: the message is fed
    # first, so the order sent on that quote meets the book the quote shows.
    book = write_book(tmp_path / "book", {"01": [snapshot(T0, 1, *B100), move(T0 + 5 * STEP, 2, B100, B101)]})
    depth = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=book)
    assert _fills(depth) == WALKED
    assert finalize(depth)[0]["ts"].to_list() == [T0 + 5 * STEP] * 3 + [T0 + 9 * STEP] * 3
    assert depth.fidelity == "depth-L2"
    assert (depth.counters["book_deltas"], depth.counters["book_messages"], depth.counters["book_days"]) == (7 + 12, 2, 1)
    assert depth.events == 10 + 19
    assert any("depth-L2" in n and "L2_MBP book" in n for n in depth.notes)

    # The L1 slice of the same data knows only the touch: 3 at 101.01 and, NautilusTrader's L1
    # rule for an exhausted touch, the rest one tick beyond; the book had only 4 there.
    l1 = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS)
    assert _fills(l1) == [(1, 3.0, 101.01), (1, 6.9, 101.02), (-1, 5.0, 100.99), (-1, 4.9, 100.98)]
    assert l1.fidelity == "quotes-only" and "book_deltas" not in l1.counters


def test_trades_are_still_fed_beside_the_book(tmp_path: Path) -> None:
    # Three trades between the quotes: they reach the venue (NautilusTrader's cache of the depth
    # engine holds them) and do not move the L2 book, so the walk is the same.
    ticks = pl.concat([_top_quotes(), trades([100.01, 99.99, 101.01], [1, -1, 1], t0=T0 + STEP // 2, step=3 * STEP)])
    path = write(ticks, tmp_path / "t.parquet")
    book = write_book(tmp_path / "book", {"01": [snapshot(T0, 1, *B100), move(T0 + 5 * STEP, 2, B100, B101)]})
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=book)
    assert _fills(run) == WALKED and run.events == 13 + 19
    engine, _ = nautilus._engines[(INSTRUMENT.venue, INSTRUMENT.quote_currency, 100_000.0, False, 2)]  # 2: L2_MBP
    iid = next(iter(engine.cache.instrument_ids()))
    assert (engine.cache.trade_tick_count(iid), engine.cache.quote_tick_count(iid)) == (3, 10)


def test_the_rest_of_a_market_order_the_book_cannot_fill_is_cancelled_not_left_open(tmp_path: Path) -> None:
    # The long wants 9.9 and the book offers 5 (3 + 2): the rest is cancelled, as a venue's market
    # order is. On the reversal the strategy sells its real 5 plus the short's 10.1 = 15.1; had the
    # rest stayed open (NautilusTrader's default on an L2 book: it never fills), the strategy would
    # have counted it and sold 20, ending 15 short.
    thin = ([(100.99, 5.0)], [(101.01, 3.0), (101.02, 2.0)])
    deep = ([(98.99, 30.0)], [(99.01, 30.0)])
    path = write(quotes([99.99] * 5 + [100.99] * 3 + [98.99] * 3, [100.01] * 5 + [101.01] * 3 + [99.01] * 3), tmp_path / "t.parquet")
    book = write_book(tmp_path / "book", {"01": [snapshot(T0, 1, *B100), move(T0 + 5 * STEP, 2, B100, thin),
                                                 move(T0 + 8 * STEP, 3, thin, deep)]})
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=book)
    fills, _ = finalize(run)
    assert fills.select("side", "qty", "price", "position").rows() == [
        (1, 3.0, 101.01, 3.0), (1, 2.0, 101.02, 5.0), (-1, 15.1, 98.99, -10.1), (1, 10.1, 99.01, 0.0)]
    assert run.counters["market_rests_cancelled"] == 1
    assert any("the rest was cancelled" in n for n in run.notes)


def test_the_next_days_snapshot_does_not_disturb_the_book(tmp_path: Path) -> None:
    # Quotes from 5 s before midnight; the long is decided on the quote at midnight and, with 2 s
    # of order latency, reaches the venue at 00:00:02: exactly when day 2's file starts with its
    # snapshot (clear, then the levels). The snapshot is applied whole before the order meets the
    # book, so it fills as it would on the same deltas in one file (fed row by row, the order
    # would meet the cleared, empty book and be rejected).
    midnight = T0 + 86_400 * STEP
    path = write(_top_quotes(midnight - 5 * STEP), tmp_path / "t.parquet")
    late = replace(frictionless(INSTRUMENT.venue, INSTRUMENT.kind), entry_latency_ms=2_000.0)
    day1 = [snapshot(midnight - 5 * STEP, 1, *B100), move(midnight - STEP // 2, 2, B100, B101)]
    later = message(midnight + 2 * STEP, 3, [(BID, 100.80, 1.0, "add")])
    split = write_book(tmp_path / "split", {"01": day1, "02": [snapshot(midnight + 2 * STEP, 3, *B101), later]})
    whole = write_book(tmp_path / "whole", {"01": [*day1, later]})

    runs = [run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=b, profile=late) for b in (split, whole)]
    assert _fills(runs[0]) == _fills(runs[1]) == WALKED
    assert finalize(runs[0])[0]["ts"].to_list() == [midnight + 2 * STEP] * 3 + [midnight + 6 * STEP] * 3
    assert runs[0].counters["book_days"] == 2


def test_an_l3_book_is_walked_order_by_order_at_full_price_precision(tmp_path: Path) -> None:
    # BTC-like prices: 65000.01 is 6.5e20 in NautilusTrader's 1e16 fixed point, past 64 bits.
    inst = replace(INSTRUMENT, symbol="BTCUSDT", base_currency="BTC")
    path = write(quotes([64989.99] * 5 + [64999.99] * 5, [64990.01] * 5 + [65000.01] * 5), tmp_path / "t.parquet")
    bids = [(64999.99, 0.6), (64999.98, 1.0), (64999.98, 5.0)]
    asks = [(65000.01, 0.5), (65000.01, 0.3), (65000.02, 0.4), (65000.50, 10.0)]
    book = write_book(tmp_path / "l3", {"01": [snapshot(T0, 1, bids, asks, order_ids=[1, 2, 3, 11, 12, 13, 14])]}, level=DEPTH_L3)
    run = run_nautilus(path, inst, EMA, {**EMA_PARAMS, "notional": 90_000.0}, book=book)
    # 1.38 BTC (90,000 / 65,000 in lots of 0.01): two orders at 65000.01, then the next levels.
    # (NautilusTrader's Price.as_double of 65000.01 is 65000.009999999995: compared to 1e-12.)
    want = [(1, 0.5, 65000.01), (1, 0.3, 65000.01), (1, 0.4, 65000.02), (1, 0.18, 65000.50), (-1, 0.6, 64999.99), (-1, 0.78, 64999.98)]
    got = _fills(run)
    assert [f[:2] for f in got] == [w[:2] for w in want]
    assert [f[2] for f in got] == pytest.approx([w[2] for w in want], rel=1e-12, abs=0)
    assert run.fidelity == "depth-L3" and any("L3_MBO book" in n for n in run.notes)


def test_depth_is_used_only_by_strategies_that_declare_it_and_the_manifest_says_so(lake, tmp_path: Path) -> None:
    # 12 quotes at mid 100 (ema_cross's warm-up: 3 x slow_period inputs), then 5 at 101.
    write(quotes([99.99] * 12 + [100.99] * 5, [100.01] * 12 + [101.01] * 5), lake.ticks_path("TESTUSDT", "2024-01"))
    inst_mod.record_inferred(lake, INSTRUMENT, "2024-01")
    month = lake.book_month_dir("TESTUSDT", "2024-01")
    write_book(month, {"01": [snapshot(T0, 1, *B100), move(T0 + 12 * STEP, 2, B100, B101)]})

    ema = EMA_CROSS.with_values({"fast_period": 2, "slow_period": 3, "bar_s": 0, "notional": 1000.0})
    mr = MEAN_REVERSION.with_values({"window": 10})
    assert ema.depth == "optional" and mr.depth == "none"
    out = run_backtest(lake, ema, "TESTUSDT", "2024-01")
    assert out.manifest["fidelity"] == "depth-L2" and out.manifest["counters"]["book_deltas"] == 19
    assert pl.read_parquet(out.directory / "fills.parquet").select("side", "qty", "price").rows() == WALKED
    # The result names the book it read: level, day files and the partition's manifest hash.
    assert out.manifest["book"]["level"] == "depth-L2" and out.manifest["book"]["days"]
    assert all(d.startswith("book/") for d in out.manifest["book"]["days"]) and out.manifest["book"]["manifest_sha256"]
    mr_book = run_backtest(lake, mr, "TESTUSDT", "2024-01")

    # Without the book partition: ema_cross is back on the quotes; mean_reversion, which declares
    # no depth, wrote the same files with the book as without it.
    (month / "manifest.json").unlink()
    l1 = run_backtest(lake, ema, "TESTUSDT", "2024-01", out_dir=tmp_path / "ema-l1")
    assert l1.manifest["fidelity"] == "quotes-only" and "book_deltas" not in l1.manifest["counters"]
    assert pl.read_parquet(l1.directory / "fills.parquet").select("side", "qty", "price").rows() == [
        (1, 9.9, 101.01), (-1, 9.9, 100.99)]
    mr_l1 = run_backtest(lake, mr, "TESTUSDT", "2024-01", out_dir=tmp_path / "mr-l1")
    assert mr_book.manifest["fidelity"] == mr_l1.manifest["fidelity"] == "quotes-only"
    assert mr_book.manifest["book"] is None and l1.manifest["book"] is None
    assert mr_book.manifest["files"] == mr_l1.manifest["files"]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (lambda: [move(T0, 1, B100, B101)], "row 1: a day file starts with its snapshot"),
        (lambda: [snapshot(T0, 1, *B100), message(T0 + STEP, 2, [(BID, 99.97, 1.0, "add")]).with_columns(flags=pl.lit(0, pl.UInt8))],
         "row 8: the file ends inside a message"),
        (lambda: [snapshot(T0, 1, *B100), message(T0 + STEP, 2, [(BID, 0.0, 0.0, "clear")])], "row 8: a clear of one side"),
        (lambda: [snapshot(T0 + STEP, 1, *B100), message(T0, 2, [(BID, 99.97, 1.0, "add")])], "row 8: ts_recv .* goes back in time"),
        (lambda: [snapshot(T0, 1, *B100), message(T0 + STEP, 2, [(BID, 99.975, 1.0, "add")])], "row 8: price 99.975 is not a positive multiple"),
        (lambda: [snapshot(T0, 1, *B100).clear()], "row 1: the file has no rows"),
    ],
    ids=["no-snapshot", "no-f-last", "one-sided-clear", "time-goes-back", "off-grid-price", "empty"],
)
def test_a_malformed_day_file_fails_naming_the_file_and_row(tmp_path: Path, frames, message: str) -> None:
    path = write(_top_quotes(), tmp_path / "t.parquet")
    book = write_book(tmp_path / "book", {"01": frames()})
    with pytest.raises(BacktestInputError, match=message) as err:
        run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=book)
    assert str(book.days[0]) in str(err.value)
    # The engine the failed run left mid-stream is not reused: the next depth run is sound.
    good = write_book(tmp_path / "good", {"01": [snapshot(T0, 1, *B100), move(T0 + 5 * STEP, 2, B100, B101)]})
    assert _fills(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=good)) == WALKED


def test_an_l3_row_without_an_order_id_fails(tmp_path: Path) -> None:
    path = write(_top_quotes(), tmp_path / "t.parquet")
    book = write_book(tmp_path / "l3", {"01": [snapshot(T0, 1, *B100, order_ids=[1, 2, 3, 4, 5, 6]),
                                               message(T0 + STEP, 2, [(BID, 99.97, 1.0, "add")])]}, level=DEPTH_L3)
    with pytest.raises(BacktestInputError, match="row 8: add without an order_id on a depth-L3 book"):
        run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, book=book)
