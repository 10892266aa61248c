"""hftbacktest adapter: tick → event conversion, the market maker loop, the result format.

Every scenario is built in code and deterministic. hftbacktest and numba are imported by the
adapter on first use: the first engine run of the session pays the numba compile (~10 s).
"""

from __future__ import annotations

from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_assets.engines.hft import FLATTEN_ORDER_ID, run_hftbacktest, run_hftbacktest_with_state
from quant_assets.engines.hft_events import (
    BUY_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT, TRADE_EVENT, to_events,
)
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines.result import finalize, summary
from quant_assets.ingest.synthetic import SyntheticSpec, generate
from quant_assets.lake.instruments import Instrument
from quant_assets.lake.schema import TICK_SCHEMA
from quant_assets.venues.profile import builtin, frictionless

S = 1_000_000_000  # ns per second
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
EX_LOCAL = EXCH_EVENT | LOCAL_EVENT

#: A toy instrument: prices on a 1.0 grid, sizes in 0.1 lots, 2 bps maker / 5 bps taker.
TOY = Instrument("TOYUSD", "SIM", "TOY", "USD", 0, 1, 1.0, 0.1, 0.0002, 0.0005)
BTC = Instrument("BTCUSDT", "SIM", "BTC", "USDT", 2, 4, 0.01, 0.0001, 0.0002, 0.0005)

#: Quotes of 10.0 TOY (1000 USD at the first mid of 100) one tick from the mid, no skew.
TOY_PARAMS = {
    "half_spread_ticks": 1.0, "skew_ticks": 0.0, "order_notional": 1000.0, "max_position_orders": 5,
    "interval_ms": 100.0, "equity_interval_s": 1.0,
}
#: The venue the scripted scenarios run on: 1 ms order entry and response, power-3 queue.
TOY_VENUE = replace(frictionless("SIM", TOY.kind), entry_latency_ms=1.0, response_latency_ms=1.0)
#: The built-in 5 ms venue (what a backtest of a SIM spot pair runs under).
BTC_VENUE = builtin("SIM", BTC.kind)


def quote(t: float, bid: float, bid_sz: float | None, ask: float, ask_sz: float | None, recv_lag_ns: int = 0) -> dict:
    ts = T0 + int(round(t * S))
    return dict(ts_event=ts, ts_recv=ts + recv_lag_ns, kind="quote", bid_px=bid, bid_sz=bid_sz, ask_px=ask, ask_sz=ask_sz)


def trade(t: float, price: float, size: float, side: int, recv_lag_ns: int = 0) -> dict:
    ts = T0 + int(round(t * S))
    return dict(ts_event=ts, ts_recv=ts + recv_lag_ns, kind="trade", price=price, size=size, side=side, trade_id=f"t{ts}")


def ticks(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame([{**r, "seq": i} for i, r in enumerate(rows)], schema=TICK_SCHEMA)


def write(tmp_path: Path, df: pl.DataFrame, name: str = "ticks.parquet") -> Path:
    path = tmp_path / name
    df.write_parquet(path)
    return path


def rows(events: np.ndarray) -> list[tuple]:
    return [(int(e["ev"]), int(e["exch_ts"] - T0), int(e["local_ts"] - T0), float(e["px"]), float(e["qty"])) for e in events]


# --- conversion -------------------------------------------------------------------------------


def test_quotes_and_trades_become_depth_and_trade_events():
    df = ticks(
        quote(0, 99.0, 1.0, 101.0, 2.0),
        quote(1, 99.0, 1.5, 101.0, 2.0),  # bid size only: one bid event, nothing for the ask
        trade(2, 101.0, 0.5, +1),
        quote(3, 98.0, 1.0, 100.0, 3.0),  # both prices move: clear the old level, set the new one
        trade(4, 98.0, 0.2, -1),
        quote(5, 98.0, 1.0, 100.0, 3.0),  # no change at all: no event
    )
    bid, ask = DEPTH_EVENT | BUY_EVENT | EX_LOCAL, DEPTH_EVENT | SELL_EVENT | EX_LOCAL
    assert rows(to_events(df, 1.0)) == [
        (bid, 0, 0, 99.0, 1.0), (ask, 0, 0, 101.0, 2.0),
        (bid, S, S, 99.0, 1.5),
        (TRADE_EVENT | BUY_EVENT | EX_LOCAL, 2 * S, 2 * S, 101.0, 0.5),
        (bid, 3 * S, 3 * S, 99.0, 0.0), (bid, 3 * S, 3 * S, 98.0, 1.0),
        (ask, 3 * S, 3 * S, 101.0, 0.0), (ask, 3 * S, 3 * S, 100.0, 3.0),
        (TRADE_EVENT | SELL_EVENT | EX_LOCAL, 4 * S, 4 * S, 98.0, 0.2),
    ]


def test_flags_and_dtype_match_hftbacktest():
    import hftbacktest.types as t

    from quant_assets.engines.hft_events import EVENT_DTYPE

    assert (t.DEPTH_EVENT, t.TRADE_EVENT, t.EXCH_EVENT, t.LOCAL_EVENT, t.BUY_EVENT, t.SELL_EVENT) == (
        DEPTH_EVENT, TRADE_EVENT, EXCH_EVENT, LOCAL_EVENT, BUY_EVENT, SELL_EVENT)
    assert t.event_dtype == EVENT_DTYPE


def test_quotes_out_of_exchange_order_get_deltas_per_processor():
    from hftbacktest.data import validate_event_order

    # The venue printed 98/101 (at 2 s) before 100/102 (at 3 s), but we received it last.
    df = ticks(quote(1, 99.0, 1.0, 101.0, 1.0), quote(3, 100.0, 1.0, 102.0, 1.0, recv_lag_ns=S),
               quote(2, 98.0, 1.0, 101.0, 1.0, recv_lag_ns=3 * S))
    out = to_events(df, 1.0)
    validate_event_order(out)
    bid, ask = DEPTH_EVENT | BUY_EVENT, DEPTH_EVENT | SELL_EVENT
    L, E = LOCAL_EVENT, EXCH_EVENT
    assert rows(out) == [
        # the first quote: one row for both processors
        (bid | L | E, S, S, 99.0, 1.0), (ask | L | E, S, S, 101.0, 1.0),
        # local order: 99/101 → 100/102 → 98/101
        (bid | L, 3 * S, 4 * S, 99.0, 0.0), (bid | L, 3 * S, 4 * S, 100.0, 1.0),
        (ask | L, 3 * S, 4 * S, 101.0, 0.0), (ask | L, 3 * S, 4 * S, 102.0, 1.0),
        # exchange order: 99/101 → 98/101 (the ask did not change) → 100/102
        (bid | E, 2 * S, 5 * S, 99.0, 0.0), (bid | E, 2 * S, 5 * S, 98.0, 1.0),
        (bid | L, 2 * S, 5 * S, 100.0, 0.0), (bid | L, 2 * S, 5 * S, 98.0, 1.0),
        (ask | L, 2 * S, 5 * S, 102.0, 0.0), (ask | L, 2 * S, 5 * S, 101.0, 1.0),
        (bid | E, 3 * S, 4 * S, 98.0, 0.0), (bid | E, 3 * S, 4 * S, 100.0, 1.0),
        (ask | E, 3 * S, 4 * S, 101.0, 0.0), (ask | E, 3 * S, 4 * S, 102.0, 1.0),
    ]


def books_stay_one_level(events: np.ndarray, flag: int) -> None:
    """Replayed in the processor's own order, every clear hits the level that side last set:
    no stale level is ever left in that processor's book."""
    rows_ = events[((events["ev"] & np.uint64(flag)) != 0) & ((events["ev"] & np.uint64(0xFF)) == DEPTH_EVENT)]
    for side in (BUY_EVENT, SELL_EVENT):
        r = rows_[(rows_["ev"] & np.uint64(side)) != 0]
        df = pl.DataFrame({"px": r["px"], "clear": r["qty"] == 0})
        df = df.with_columns(last_set=pl.when(~pl.col("clear")).then(pl.col("px")).forward_fill().shift(1))
        bad = df.filter(pl.col("clear") & (pl.col("px") != pl.col("last_set")))
        assert bad.height == 0, bad


def test_unknown_trade_side_is_inferred_from_the_mid_and_missing_sizes_are_filled():
    df = ticks(quote(0, 99.0, None, 101.0, None), trade(1, 101.0, 0.1, 0), trade(2, 99.0, 0.1, 0), trade(3, 100.0, 0.1, 0))
    out = to_events(df, 1.0, missing_qty=7.0)
    assert list(out["qty"][:2]) == [7.0, 7.0]
    flags = [int(e) & (BUY_EVENT | SELL_EVENT) for e in out["ev"][2:]]
    assert flags == [BUY_EVENT, SELL_EVENT, 0]


def test_conversion_of_a_synthetic_month_is_valid_for_hftbacktest():
    from hftbacktest.data import validate_event_order

    df = generate(SyntheticSpec("BTCUSDT", "2024-01", events=200_000))
    ts_event = df["ts_event"].to_numpy()
    assert (ts_event[1:] < ts_event[:-1]).any()  # the feed has venue times out of receive order
    out = to_events(df, 0.01)
    validate_event_order(out)
    books_stay_one_level(out, EXCH_EVENT)
    books_stay_one_level(out, LOCAL_EVENT)
    n_trades = int((df["kind"] == "trade").sum())
    trades = out[(out["ev"] & np.uint64(0xFF)) == TRADE_EVENT]
    # each trade once per processor: as one row with both flags, or as two rows
    assert int(((trades["ev"] & EXCH_EVENT) != 0).sum()) == n_trades
    assert int(((trades["ev"] & LOCAL_EVENT) != 0).sum()) == n_trades


# --- scripted market-making scenarios ---------------------------------------------------------


def sweep_scenario(final_bid_size: float = 50.0, second_sweep: bool = False) -> pl.DataFrame:
    """The maker joins 99 / 101 (10.0 each, 5.0 ahead in each queue); a sell sweep at 98
    trades through the bid; the market then moves up to 100 / 102 and stays there."""
    events = [
        quote(0, 99.0, 5.0, 101.0, 5.0),
        trade(1, 98.0, 20.0, -1),
        quote(1.000001, 98.0, 5.0, 101.0, 5.0),
    ]
    if second_sweep:  # the maker re-joined the bid at 98: sweep it again at 97
        events += [trade(2, 97.0, 20.0, -1), quote(2.000001, 97.0, 5.0, 101.0, 5.0)]
    events += [quote(3, 100.0, final_bid_size, 102.0, 5.0), quote(4, 100.0, final_bid_size, 102.0, 6.0)]
    return ticks(*events)


def test_a_sweep_through_the_bid_fills_the_maker_and_the_month_ends_flat(tmp_path):
    run, state = run_hftbacktest_with_state(write(tmp_path, sweep_scenario()), TOY, TOY_PARAMS, profile=TOY_VENUE)
    fills, equity = finalize(run)
    assert fills.select("side", "qty", "price", "liquidity", "order_id").rows() == [
        (1, 10.0, 99.0, "maker", "1"),  # the first bid, filled by the sweep at its own price
        (-1, 10.0, 100.0, "taker", fills["order_id"][1]),  # the closing IOC at the final bid
    ]
    assert fills["ts"][0] == T0 + S  # the trade's exchange time
    assert fills["ts"][1] > T0 + 4 * S  # after the last event
    assert fills["fee"].to_list() == pytest.approx([0.0002 * 99.0 * 10.0, 0.0005 * 100.0 * 10.0])
    assert fills["position"].to_list() == pytest.approx([10.0, 0.0])
    assert fills["realized_pnl"].to_list() == pytest.approx([0.0, 10.0])
    head = summary(fills, equity, run.starting_cash)
    assert head["pnl"] == pytest.approx(10.0 - 0.198 - 0.5)
    assert equity["equity"][-1] == pytest.approx(100_000.0 + 10.0 - 0.198 - 0.5)
    assert equity["position"][-1] == 0.0
    assert state.ioc_qty == pytest.approx(10.0) and state.synthetic_qty == 0.0
    assert run.engine == "hftbacktest" and run.engine_version == "2.4.4" and run.events == 5


def test_zero_latency_runs_to_the_end_of_the_month(tmp_path):
    # A constant latency of exactly 0 ns (the realism sensitivity's latency x0) once left the
    # close-out waiting forever on a same-timestamp response; it now ends flat like any other.
    zero = replace(TOY_VENUE, entry_latency_ms=0.0, response_latency_ms=0.0)
    fills, _ = finalize(run_hftbacktest(write(tmp_path, sweep_scenario()), TOY, TOY_PARAMS, profile=zero))
    assert fills["position"][-1] == 0.0 and fills["side"].to_list()[0] == 1


def test_engine_state_agrees_with_finalize_when_orders_fill_at_once(tmp_path):
    run, state = run_hftbacktest_with_state(write(tmp_path, sweep_scenario()), TOY, TOY_PARAMS, profile=TOY_VENUE)
    fills, equity = finalize(run)
    # hftbacktest's balance is the trades' cash flow without fees; finalize's cash includes them
    assert state.position == pytest.approx(fills["position"][-1], abs=1e-9)
    assert state.balance - state.fee == pytest.approx(equity["cash"][-1] - run.starting_cash, abs=1e-9)
    assert state.fee == pytest.approx(fills["fee"].sum(), rel=1e-12)
    assert state.num_trades == len(fills)
    assert not any("differs" in n for n in run.notes)


def test_what_the_touch_cannot_absorb_is_closed_by_a_synthetic_taker_fill(tmp_path):
    run, state = run_hftbacktest_with_state(write(tmp_path, sweep_scenario(final_bid_size=3.0)), TOY, TOY_PARAMS, profile=TOY_VENUE)
    fills, equity = finalize(run)
    assert fills.select("side", "qty", "price", "liquidity").rows() == [
        (1, 10.0, 99.0, "maker"), (-1, 3.0, 100.0, "taker"), (-1, 7.0, 100.0, "taker"),
    ]
    assert fills["order_id"][-1] == FLATTEN_ORDER_ID
    assert fills["fee"][-1] == pytest.approx(0.0005 * 100.0 * 7.0)
    assert fills["position"][-1] == 0.0 and equity["position"][-1] == 0.0
    assert equity["equity"][-1] == pytest.approx(100_000.0 + 10.0 - 0.198 - 0.5)
    # hftbacktest 2.4.4 never applies a partially executed order to its own state: the IOC's 3.0
    # are missing there, and the adapter says so
    assert state.position == pytest.approx(10.0)
    assert any("differs" in n for n in run.notes)


def test_partial_fills_are_recorded_from_the_queue(tmp_path):
    # 5.0 ahead of the maker's 10.0 at 99: a sell of 8.0 at 99 leaves 3.0 for it
    df = ticks(quote(0, 99.0, 5.0, 101.0, 5.0), trade(1, 99.0, 8.0, -1), quote(2, 99.0, 50.0, 101.0, 5.0),
               quote(3, 99.0, 50.0, 101.0, 6.0))
    run = run_hftbacktest(write(tmp_path, df), TOY, TOY_PARAMS, profile=TOY_VENUE)
    fills, _ = finalize(run)
    assert fills.select("side", "qty", "price", "liquidity").rows() == [(1, 3.0, 99.0, "maker"), (-1, 3.0, 99.0, "taker")]


def test_inventory_limit_stops_the_bid(tmp_path):
    path = write(tmp_path, sweep_scenario(second_sweep=True))
    one = finalize(run_hftbacktest(path, TOY, {**TOY_PARAMS, "max_position_orders": 1}, profile=TOY_VENUE))[0]
    five = finalize(run_hftbacktest(path, TOY, {**TOY_PARAMS, "max_position_orders": 5}, profile=TOY_VENUE))[0]
    assert one.filter(pl.col("liquidity") == "maker").select("side", "qty", "price").rows() == [(1, 10.0, 99.0)]
    assert five.filter(pl.col("liquidity") == "maker").select("side", "qty", "price").rows() == [(1, 10.0, 99.0), (1, 10.0, 98.0)]
    assert five["position"][-1] == 0.0


def test_inventory_skews_the_quotes(tmp_path):
    # Quotes 3 ticks from the mid of 99 / 101: bid 97, ask 103. A sell sweep at 96 fills the bid
    # (long 10.0 = one order). With a skew of 2 ticks per order the reservation price drops to 98
    # and the ask to 101, the touch, where a buy of 20.0 (5.0 ahead in the queue) lifts it;
    # without skew the ask stays at 103 and the position is closed at the end by the IOC.
    df = ticks(quote(0, 99.0, 5.0, 101.0, 5.0), trade(1, 96.0, 20.0, -1), trade(2, 101.0, 20.0, +1),
               quote(3, 99.0, 50.0, 101.0, 6.0))
    path = write(tmp_path, df)
    params = {**TOY_PARAMS, "half_spread_ticks": 3.0}
    skewed = finalize(run_hftbacktest(path, TOY, {**params, "skew_ticks": 2.0}, profile=TOY_VENUE))[0]
    plain = finalize(run_hftbacktest(path, TOY, {**params, "skew_ticks": 0.0}, profile=TOY_VENUE))[0]
    assert skewed.select("side", "price", "liquidity").rows() == [(1, 97.0, "maker"), (-1, 101.0, "maker")]
    assert plain.select("side", "price", "liquidity").rows() == [(1, 97.0, "maker"), (-1, 99.0, "taker")]


def test_same_input_same_fills_and_one_compile(tmp_path):
    from quant_assets.engines import hft_events
    from quant_assets.strategies.market_maker import market_maker_loop

    path = write(tmp_path, generate(SyntheticSpec("BTCUSDT", "2024-01", events=20_000)))
    params = {"interval_ms": 1000.0}
    a, b = run_hftbacktest(path, BTC, params, profile=BTC_VENUE), run_hftbacktest(path, BTC, params, profile=BTC_VENUE)
    assert len(a.fills) > 0
    assert a.fills.equals(b.fills) and a.samples.equals(b.samples)
    # compiled once per process, whatever the data (nulls or not, reordered or not)
    assert len(market_maker_loop.signatures) == 1
    assert len(hft_events._kernel().signatures) == 1


def test_skipping_idle_decision_points_changes_nothing(tmp_path):
    # A random walk of quotes at irregular times with trades on both sides, 20 minutes; a
    # decision grid (37 ms) that neither the equity timer (7 s) nor the latency (20 ms) divides.
    rng = np.random.default_rng(4)
    rows, t, mid = [], 0.0, 100.0
    while t < 1_200:
        t += float(rng.exponential(0.8))
        mid += float(rng.choice([-1.0, 0.0, 1.0], p=[0.3, 0.4, 0.3]))
        if rng.random() < 0.7:
            rows.append(quote(t, mid - 1, float(rng.integers(1, 50)), mid + 1, float(rng.integers(1, 50))))
        else:
            side = 1 if rng.random() < 0.5 else -1
            rows.append(trade(t, mid + side, float(rng.integers(1, 30)), side))
    path = write(tmp_path, ticks(*rows))
    params = {**TOY_PARAMS, "interval_ms": 37.0, "equity_interval_s": 7.0, "skew_ticks": 0.5}
    venue = replace(TOY_VENUE, entry_latency_ms=20.0, response_latency_ms=20.0)
    fast, fast_state = run_hftbacktest_with_state(path, TOY, params, profile=venue)
    ref, ref_state = run_hftbacktest_with_state(path, TOY, params, skip_idle=False, profile=venue)
    assert len(ref.fills) > 20
    assert fast.fills.equals(ref.fills) and fast.samples.equals(ref.samples)
    assert fast_state.orders_sent == ref_state.orders_sent
    assert fast_state.steps < ref_state.steps / 5  # 1,200 s / 37 ms = 32k points; far fewer events


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "reason"),
    [
        (ticks(), "no ticks"),
        (ticks(quote(0, 99.0, 1.0, 101.0, 1.0)), "1 quote"),
        (ticks(trade(0, 100.0, 1.0, 1), trade(1, 100.0, 1.0, -1)), "only trades"),
        (ticks(quote(0, 99.0, 1.0, 101.0, 1.0), quote(1, 99.5, 1.0, 101.0, 1.0)), "not multiples of the instrument's tick size"),
    ],
)
def test_unusable_partitions_raise_clear_errors(tmp_path, df, reason):
    path = write(tmp_path, df)
    with pytest.raises(BacktestInputError, match=reason) as err:
        run_hftbacktest(path, TOY, TOY_PARAMS, profile=TOY_VENUE)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_partition_raises(tmp_path):
    with pytest.raises(BacktestInputError, match="no ticks partition"):
        run_hftbacktest(tmp_path / "nope.parquet", TOY, TOY_PARAMS, profile=TOY_VENUE)


def test_prices_within_grid_tolerance_are_accepted(tmp_path):
    df = ticks(quote(0, 99.0 + 1e-9, 5.0, 101.0, 5.0), quote(1, 99.0, 5.0, 101.0 - 1e-9, 6.0))
    run = run_hftbacktest(write(tmp_path, df), TOY, TOY_PARAMS, profile=TOY_VENUE)
    fills, equity = finalize(run)
    assert len(fills) == 0 and len(equity) > 0


def test_bad_parameters_raise_before_the_engine_starts(tmp_path):
    from quant_assets.strategies.spec import ParamError

    with pytest.raises(ParamError, match="interval_ms"):
        run_hftbacktest(write(tmp_path, sweep_scenario()), TOY, {"interval_ms": 0.0})


# --- a synthetic month ------------------------------------------------------------------------


def test_a_synthetic_month_produces_fills_and_an_equity_curve(tmp_path):
    path = write(tmp_path, generate(SyntheticSpec("BTCUSDT", "2024-01", events=50_000)))
    run = run_hftbacktest(path, BTC, {}, profile=BTC_VENUE)  # the registry defaults: 100 ms decisions
    fills, equity = finalize(run)
    assert run.events == 50_000
    assert len(fills) > 100 and (fills["liquidity"] == "maker").mean() > 0.9
    assert fills["ts"].is_sorted() and fills["position"][-1] == 0.0
    assert fills["qty"].min() > 0 and (fills["fee"] > 0).all()
    # equity sampled every 60 s over the month, ending flat at the final cash
    assert len(equity) > 30 * 24 * 60 * 0.9
    assert equity["position"][-1] == 0.0
    head = summary(fills, equity, run.starting_cash)
    assert equity["equity"][-1] == pytest.approx(run.starting_cash + head["pnl"], abs=1e-6)


def test_importing_the_adapter_does_not_load_the_engine():
    code = "import sys, quant_assets.engines.hft; print(sorted(m for m in ('hftbacktest', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_negative_maker_fee_is_a_rebate_in_hftbacktest(tmp_path):
    # maker_fee = -0.0001 reaches trading_value_fee_model: hftbacktest's own fee total is the
    # rebate on the maker fill (-0.0001 × 99 × 10) plus the taker fee of the close (0.0005 × 100 × 10).
    rebate = replace(TOY, maker_fee=-0.0001)
    run, state = run_hftbacktest_with_state(write(tmp_path, sweep_scenario()), rebate, TOY_PARAMS, profile=TOY_VENUE)
    fills, equity = finalize(run)
    assert fills["liquidity"].to_list() == ["maker", "taker"]
    assert fills["fee"].to_list() == pytest.approx([-0.0001 * 99.0 * 10.0, 0.0005 * 100.0 * 10.0])
    assert state.fee == pytest.approx(-0.099 + 0.5, rel=1e-12)  # the engine's own accounting
    assert equity["equity"][-1] == pytest.approx(100_000.0 + 10.0 + 0.099 - 0.5)


# --- the venue profile: order latency and queue model -----------------------------------------


def test_an_order_reaches_the_book_only_after_the_entry_latency(tmp_path):
    # The maker's first bid (99) is sent at t=0; the sell sweep through it trades at t=1 s. An
    # entry latency just under 1 s puts the bid in the book before the sweep; just over, after.
    path = write(tmp_path, sweep_scenario())
    early = finalize(run_hftbacktest(path, TOY, TOY_PARAMS, profile=replace(TOY_VENUE, entry_latency_ms=999.0)))[0]
    late = finalize(run_hftbacktest(path, TOY, TOY_PARAMS, profile=replace(TOY_VENUE, entry_latency_ms=1001.0)))[0]
    assert early.select("ts", "side", "price", "liquidity").rows()[0] == (T0 + S, 1, 99.0, "maker")
    assert late.is_empty()


def test_the_close_out_pays_entry_and_response_latency(tmp_path):
    # After the last event (t=4 s) the loop cancels its quotes (entry latency to the venue,
    # response latency back) and only then sends the closing IOC (entry latency again): the
    # closing fill's exchange time is 4 s + 2 x entry + response.
    path = write(tmp_path, sweep_scenario())
    venue = replace(TOY_VENUE, entry_latency_ms=500.0, response_latency_ms=250.0)
    run = run_hftbacktest(path, TOY, TOY_PARAMS, profile=venue)
    fills, _ = finalize(run)
    assert fills.select("side", "price", "liquidity").rows() == [(1, 99.0, "maker"), (-1, 100.0, "taker")]
    assert fills["ts"][1] == T0 + 4 * S + 2 * 500_000_000 + 250_000_000
    assert any("500 ms entry, 250 ms response" in n and venue.label in n for n in run.notes)


@pytest.fixture(scope="module")
def btc_month(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lat") / "t.parquet"
    generate(SyntheticSpec("BTCUSDT", "2024-01", events=20_000)).write_parquet(path)
    return path


def _mm_fills(path: Path, venue) -> pl.DataFrame:
    return run_hftbacktest(path, BTC, {"interval_ms": 1000.0}, profile=venue).fills


def test_a_lognormal_latency_is_deterministic_and_differs_from_a_constant_one(btc_month):
    constant = replace(BTC_VENUE, entry_latency_ms=50.0, response_latency_ms=50.0)
    lognormal = replace(constant, latency_model="lognormal", latency_sigma=1.0, latency_seed=7)
    a, b = _mm_fills(btc_month, lognormal), _mm_fills(btc_month, lognormal)
    c = _mm_fills(btc_month, constant)
    assert len(a) > 10 and a.equals(b)
    assert not a.equals(c)
    assert not a.equals(_mm_fills(btc_month, replace(lognormal, latency_seed=8)))


def test_a_recorded_latency_file_runs_and_a_flat_one_equals_the_constant_latency(btc_month, tmp_path):
    from quant_assets.venues.latency import LATENCY_DTYPE

    ts = pl.scan_parquet(btc_month).select(lo=pl.col("ts_recv").min(), hi=pl.col("ts_recv").max()).collect().row(0)
    req = np.arange(ts[0] - S, ts[1] + 3600 * S, 3600 * S, dtype=np.int64)  # one row an hour
    flat = np.zeros(len(req), LATENCY_DTYPE)
    flat["req_ts"], flat["exch_ts"], flat["resp_ts"] = req, req + 50_000_000, req + 80_000_000
    np.savez(tmp_path / "flat.npz", data=flat)
    varying = flat.copy()
    varying["exch_ts"] = req + np.where(np.arange(len(req)) % 2 == 0, 5_000_000, 400_000_000)
    varying["resp_ts"] = varying["exch_ts"] + 30_000_000
    np.savez(tmp_path / "varying.npz", data=varying)

    recorded = replace(BTC_VENUE, latency_model="recorded", latency_file=str(tmp_path / "flat.npz"))
    constant = replace(BTC_VENUE, entry_latency_ms=50.0, response_latency_ms=30.0)
    flat_fills = _mm_fills(btc_month, recorded)
    assert len(flat_fills) > 10
    assert flat_fills.equals(_mm_fills(btc_month, constant))  # interpolating a flat table is exact
    assert not _mm_fills(btc_month, replace(recorded, latency_file=str(tmp_path / "varying.npz"))).equals(flat_fills)


@pytest.mark.parametrize("model", ["risk_adverse", "power_prob2", "power_prob3", "log_prob", "log_prob2"])
def test_on_l1_every_queue_model_of_the_profile_gives_way_to_risk_adverse(tmp_path, model):
    # The sweep trades 20.0 through the bid (5.0 ahead of the maker): it fills. Without a book
    # the profile's model is not what runs (test_hft_depth runs each one on depth): the
    # conservative one does, and the result is L1-approximate.
    run = run_hftbacktest(write(tmp_path, sweep_scenario()), TOY, TOY_PARAMS, profile=replace(TOY_VENUE, queue_model=model))
    fills, _ = finalize(run)
    assert fills.select("side", "price", "liquidity").rows() == [(1, 99.0, "maker"), (-1, 100.0, "taker")]
    assert any("queue model risk_adverse" in n for n in run.notes) and run.fidelity == "L1-approximate"
    assert any(f"instead of the profile's {model}" in n for n in run.notes)


def test_size_less_quotes_get_the_declared_depth_at_the_first_mid(tmp_path):
    # No sizes: each side shows synthetic_depth 1,000 USD at the first mid 100 = 10.0 TOY. The
    # maker buys 10.0 from the sweep; the close-out's IOC at the bid finds all 10.0 in the
    # declared depth. At 400 USD (4.0 TOY) deep it takes 4.0, the rest is the synthetic close.
    df = ticks(quote(0, 99.0, None, 101.0, None), trade(1, 98.0, 20.0, -1), quote(2, 99.0, None, 101.0, None))
    run, state = run_hftbacktest_with_state(write(tmp_path, df), TOY, TOY_PARAMS, profile=replace(TOY_VENUE, synthetic_depth=1_000.0))
    assert any("each side taken as 10 TOY deep" in n and "synthetic_depth 1,000 USD" in n for n in run.notes)
    thin, thin_state = run_hftbacktest_with_state(write(tmp_path, df, "thin.parquet"), TOY, TOY_PARAMS,
                                                  profile=replace(TOY_VENUE, synthetic_depth=400.0))
    assert state.ioc_qty == pytest.approx(10.0) and state.synthetic_qty == 0.0
    assert thin_state.ioc_qty == pytest.approx(4.0) and thin_state.synthetic_qty == pytest.approx(6.0)
