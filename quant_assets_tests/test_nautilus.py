"""The NautilusTrader adapter and its two strategies on scripted quotes: known quotes give
known fills, prices and PnL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from quant_assets.engines.account import REASON_FLATTEN
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines.nautilus import run_nautilus
from quant_assets.engines.result import finalize, summary
from quant_assets.ingest.synthetic import SyntheticSpec, generate
from quant_assets.venues.profile import frictionless
from quant_assets_tests.scripted import INSTRUMENT, STEP, T0, around, quotes, trades, write

EMA = "quant_assets.strategies.ema_cross:EmaCross"
MR = "quant_assets.strategies.mean_reversion:MeanReversion"
EMA_PARAMS = {"fast_period": 2, "slow_period": 3, "notional": 1000.0, "equity_interval_s": 1.0}
MR_PARAMS = {"window": 10, "entry_z": 2.0, "stop_bps": 50.0, "take_bps": 15.0, "entry_timeout_s": 30.0,
             "notional": 1000.0, "equity_interval_s": 1.0}
CALM_BIDS = [99.99, 100.01] * 5
#: What run_nautilus runs under without a profile: no latency, no slippage, stops at the next touch.
FRICTIONLESS = frictionless(INSTRUMENT.venue, INSTRUMENT.kind)
CALM_ASKS = [100.01, 100.03] * 5


def test_ema_cross_trades_exactly_at_each_cross_and_closes_at_the_last_quote(tmp_path: Path) -> None:
    # Mid 100 (warm-up), then 101 (fast above slow: long), 99 (short), 101 (long); flat at the end.
    path = write(around([100.0] * 5 + [101.0] * 5 + [99.0] * 5 + [101.0] * 5), tmp_path / "t.parquet")
    fills, equity = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS))

    assert fills["side"].to_list() == [1, -1, 1, -1]
    assert fills["qty"].to_list() == [9.9, 20.0, 20.0, 9.9]  # 1000/101 and 1000/99 rounded down to 0.01 lots
    assert fills["price"].to_list() == [101.01, 98.99, 101.01, 100.99]  # at the touch: ask to buy, bid to sell
    assert fills["liquidity"].to_list() == ["taker"] * 4
    assert fills["position"].to_list() == pytest.approx([9.9, -10.1, 9.9, 0.0])
    assert fills["realized_pnl"].to_list() == pytest.approx([0.0, 9.9 * -2.02, 10.1 * -2.02, 9.9 * -0.02])
    assert fills["fee"].to_list() == pytest.approx((fills["qty"] * fills["price"] * 0.001).to_list(), rel=1e-5)
    # one second between ticks: the signal's tick times are the fill times
    t0 = 1_704_067_200_000_000_000
    assert fills["ts"].to_list() == [t0 + s * 10**9 for s in (5, 10, 15, 19)]

    s = summary(fills, equity, 100_000.0)
    assert s["pnl"] == pytest.approx(s["gross_pnl"] - s["fees"])
    assert equity["equity"][-1] == pytest.approx(100_000.0 + s["pnl"])
    assert equity["position"][-1] == 0.0
    assert equity["ts"].is_sorted() and len(equity) == 20  # one sample per second of data


def test_mean_reversion_enters_with_a_limit_at_the_bid_and_exits_at_the_take_profit(tmp_path: Path) -> None:
    # Calm window around 100.01, then the mid drops (z << -2): a buy limit rests at the bid
    # 99.89; the ask falls through it (maker fill at 99.89); the bid rises past the
    # take-profit 99.89 * 1.0015 = 100.04 (maker fill there).
    bids = CALM_BIDS + [99.89, 99.80, 99.85, 100.05, 100.05, 100.05]
    asks = CALM_ASKS + [99.91, 99.85, 99.87, 100.07, 100.07, 100.07]
    fills, equity = finalize(run_nautilus(write(quotes(bids, asks), tmp_path / "t.parquet"), INSTRUMENT, MR, MR_PARAMS))

    assert fills.select("side", "qty", "price", "liquidity").rows() == [(1, 10.01, 99.89, "maker"), (-1, 10.01, 100.04, "maker")]
    assert fills["fee"].to_list() == pytest.approx([10.01 * 99.89 * 0.0005, 10.01 * 100.04 * 0.0005])
    assert fills["realized_pnl"][-1] == pytest.approx(10.01 * 0.15)
    assert equity["equity"][-1] == pytest.approx(100_000.0 + 10.01 * 0.15 - fills["fee"].sum())


def test_mean_reversion_stop_loss_exits_as_a_taker_at_the_next_touch(tmp_path: Path) -> None:
    # After the entry at 99.89 the bid gaps below the stop 99.89 * 0.995 = 99.39 to 99.30. The
    # stop-market triggers and fills as a taker at the bid that triggered it, 99.30: the
    # profile's default stop_fill = "next_touch". NautilusTrader 1.221's own L1 matching fills a
    # stop the market gapped through at its trigger price, 99.39 (optimistic by the gap): what
    # stop_fill = "trigger" keeps.
    bids = CALM_BIDS + [99.89, 99.80, 99.30, 99.30, 99.30]
    asks = CALM_ASKS + [99.91, 99.85, 99.32, 99.32, 99.32]
    path = write(quotes(bids, asks), tmp_path / "t.parquet")
    run = run_nautilus(path, INSTRUMENT, MR, MR_PARAMS)
    fills, _ = finalize(run)
    assert fills.select("side", "price", "liquidity").rows() == [(1, 99.89, "maker"), (-1, 99.30, "taker")]
    assert fills["realized_pnl"][-1] == pytest.approx(10.01 * (99.30 - 99.89))
    assert any("1 triggered stop(s) filled at the touch" in n for n in run.notes)

    at_trigger = run_nautilus(path, INSTRUMENT, MR, MR_PARAMS, profile=replace(FRICTIONLESS, stop_fill="trigger"))
    fills, _ = finalize(at_trigger)
    assert fills.select("side", "price", "liquidity").rows() == [(1, 99.89, "maker"), (-1, 99.39, "taker")]
    assert any("stop_fill = trigger" in n for n in at_trigger.notes)


def test_mean_reversion_entry_expires_unfilled_after_its_timeout(tmp_path: Path) -> None:
    # The signal fires at t=10 s (buy limit at 99.89); the ask only falls through it at t=19 s.
    bids = CALM_BIDS + [99.89] + [99.95] * 8 + [99.80, 99.80]
    asks = CALM_ASKS + [99.91] + [99.97] * 8 + [99.85, 99.85]
    path = write(quotes(bids, asks), tmp_path / "t.parquet")
    patient, _ = finalize(run_nautilus(path, INSTRUMENT, MR, {**MR_PARAMS, "entry_timeout_s": 30.0}))
    impatient, _ = finalize(run_nautilus(path, INSTRUMENT, MR, {**MR_PARAMS, "entry_timeout_s": 5.0}))
    assert patient.select("side", "price").rows()[0] == (1, 99.89)  # still resting at t=19 s: filled
    assert impatient.is_empty()  # cancelled at t=15 s; the new signal's order is cancelled at the close


def test_results_are_deterministic_and_the_engine_is_reused(tmp_path: Path) -> None:
    from quant_assets.engines import nautilus

    df = generate(SyntheticSpec("BTCUSDT", "2024-01", seed=7, events=30_000))
    path = write(df, tmp_path / "t.parquet")
    inst = replace(INSTRUMENT, symbol="BTCUSDT", base_currency="BTC", size_precision=4, lot_size=0.0001)
    params = {"fast_period": 20, "slow_period": 80, "notional": 10_000.0, "equity_interval_s": 60.0}
    first = finalize(run_nautilus(path, inst, EMA, params, chunk_rows=7_000))  # several chunks
    engines = dict(nautilus._engines)
    second = finalize(run_nautilus(path, inst, EMA, params))
    assert nautilus._engines == engines  # same engine object, reset between runs
    assert len(first[0]) > 10
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    assert first[0]["position"][-1] == 0.0


def test_fx_quotes_without_sizes_are_backtested_with_the_declared_depth(tmp_path: Path) -> None:
    df = around([1.1] * 5 + [1.2] * 5).with_columns(pl.lit(None, pl.Float64).alias("bid_sz"), pl.lit(None, pl.Float64).alias("ask_sz"))
    inst = replace(INSTRUMENT, symbol="EURUSD", venue="FX", base_currency="EUR", quote_currency="USD",
                   price_precision=2, size_precision=0, lot_size=1.0, kind="", raw_symbol="")
    path = write(df, tmp_path / "t.parquet")
    # The fx default: 1,000,000 USD a side = 909,090 EUR at the first price 1.1: the 833 EUR
    # (1,000 USD at 1.2) trade at the touch.
    run = run_nautilus(path, inst, EMA, EMA_PARAMS)
    fills, _ = finalize(run)
    assert fills.select("side", "qty", "price").rows() == [(1, 833.0, 1.21), (-1, 833.0, 1.19)]
    assert any("each side taken as 909090 EUR deep" in n and "1,000,000 USD" in n for n in run.notes)
    # Declared 500 USD a side = 454 EUR at 1.1: the rest of each order fills one tick further
    # (NautilusTrader's L1 book walks one tick past an exhausted touch).
    thin = run_nautilus(path, inst, EMA, EMA_PARAMS, profile=replace(frictionless("FX", "fx"), synthetic_depth=500.0))
    fills, _ = finalize(thin)
    assert fills.select("side", "qty", "price").rows() == [(1, 454.0, 1.21), (1, 379.0, 1.22), (-1, 454.0, 1.19), (-1, 379.0, 1.18)]
    assert any("each side taken as 454 EUR deep" in n for n in thin.notes)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (lambda: trades([100.0], [1], t0=1_704_067_200_000_000_000), "1 trade"),
        (lambda: around([100.0]), "1 quote(s)"),
        (lambda: quotes([100.0, 100.0, 100.005], [100.02, 100.02, 100.02]), "not multiples of the instrument's tick size 0.01"),
    ],
    ids=["single-trade", "single-tick", "off-grid-price"],
)
def test_unusable_partitions_fail_clearly_before_the_engine_starts(tmp_path: Path, frame, message: str) -> None:
    path = write(frame(), tmp_path / "month=2024-01" / "part-0.parquet")
    with pytest.raises(BacktestInputError, match=message) as err:
        run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS)
    assert str(path) in str(err.value)


def test_a_missing_partition_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(BacktestInputError, match="no ticks partition"):
        run_nautilus(tmp_path / "nope.parquet", INSTRUMENT, EMA, EMA_PARAMS)


# ---- mean_reversion: every bracket leg, rejections, partial fills, the holding limit -------------
MR_CALM = (CALM_BIDS, CALM_ASKS)


def _mr(tmp_path: Path, bids: list[float], asks: list[float], params: dict | None = None, ask_sz=None, bid_sz=None,
        profile=None):
    df = quotes(bids, asks)
    if ask_sz is not None:
        df = df.with_columns(ask_sz=pl.Series(ask_sz, dtype=pl.Float64), bid_sz=pl.Series(bid_sz, dtype=pl.Float64))
    p = {**MR_PARAMS, **(params or {})}
    run = run_nautilus(write(df, tmp_path / "t.parquet"), INSTRUMENT, MR, p, profile=profile)
    from quant_assets.engines.invariants import check_backtest
    from quant_assets.engines.result import finalize_with_flows

    fills, equity, flows = finalize_with_flows(run)
    checks = {c.name: c.passed for c in check_backtest(fills, equity, flows, 100_000.0, {"max_hold_s": 14_400.0, **p})}
    return run, fills, checks


def test_mean_reversion_stop_loss_fires_when_the_market_falls_through_it(tmp_path: Path) -> None:
    # Entry at 99.89; stop 50 bps below = 99.39; the bid falls from 99.60 to 99.30, where the
    # stop fills (the next touch; NautilusTrader alone would say 99.39).
    run, fills, checks = _mr(tmp_path, CALM_BIDS + [99.89, 99.80, 99.85, 99.60, 99.30, 99.30, 99.30],
                             CALM_ASKS + [99.91, 99.85, 99.87, 99.62, 99.32, 99.32, 99.32])
    assert fills.select("side", "price", "reason").rows() == [(1, 99.89, "entry"), (-1, 99.30, "stop")]
    assert all(checks.values()), checks


def test_mean_reversion_exits_at_once_when_the_venue_rejects_its_stop(tmp_path: Path) -> None:
    # The ask gaps from 99.91 to 99.00 in one tick: the buy limit at 99.89 fills, but the stop
    # (99.39) is already in the market (bid 98.98): the venue rejects it, the take-profit goes
    # with it (one cancels the other), and the strategy closes at market on that very tick
    # instead of holding a naked position for the rest of the month.
    run, fills, checks = _mr(tmp_path, CALM_BIDS + [99.89, 98.98, 98.98, 98.98, 98.98],
                             CALM_ASKS + [99.91, 99.00, 99.00, 99.00, 99.00])
    assert fills.select("side", "price", "reason").rows() == [(1, 99.89, "entry"), (-1, 98.98, "protective-exit")]
    assert fills["ts"][0] == fills["ts"][1]
    assert run.counters["protective_exits"] == 1
    assert all(checks.values()), checks


def test_mean_reversion_closes_a_position_held_past_max_hold_s(tmp_path: Path) -> None:
    run, fills, checks = _mr(tmp_path, CALM_BIDS + [99.89, 99.80] + [99.85] * 7, CALM_ASKS + [99.91, 99.85] + [99.87] * 7,
                             {"max_hold_s": 3.0})
    assert fills["reason"].to_list() == ["entry", "max-hold"]
    assert (fills["ts"][1] - fills["ts"][0]) / 1e9 == pytest.approx(3.0)
    assert run.counters["max_hold_exits"] == 1 and all(checks.values()), checks


def test_mean_reversion_bracket_with_partial_fills_closes_the_whole_position(tmp_path: Path) -> None:
    # Only 5 of the 10.01 are offered when the ask crosses the entry; the take-profit is then
    # hit by a bid of 3 lots: every part of the position leaves through its exits.
    sizes = [1_000.0] * 10
    run, fills, checks = _mr(
        tmp_path, CALM_BIDS + [99.89, 99.80, 99.85] + [100.05] * 5, CALM_ASKS + [99.91, 99.85, 99.87] + [100.07] * 5,
        ask_sz=sizes + [1_000.0, 5.0] + [1_000.0] * 6, bid_sz=sizes + [1_000.0] * 3 + [3.0] * 5,
    )
    assert fills["reason"].to_list()[:1] == ["entry"] and fills["qty"][0] == 5.0
    assert set(fills["reason"].to_list()) == {"entry", "take-profit"}
    assert fills["position"][-1] == 0.0 and all(checks.values()), checks


def test_trades_only_data_runs_on_quotes_made_from_trades_and_says_so(tmp_path: Path) -> None:
    # Prices 100 (warm-up), 101, 99: the made touch is ±1 bp (at least a tick) around each trade.
    t0 = 1_704_067_200_000_000_000
    prices = [100.0] * 5 + [101.0] * 5 + [99.0] * 5
    path = write(trades(prices, [1, -1] * 7 + [1], t0=t0), tmp_path / "t.parquet")
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS)
    fills, _ = finalize(run)
    assert run.fidelity == "trades-only"
    assert any("quotes made from trades" in n for n in run.notes)
    assert fills["side"].to_list() == [1, -1, 1]
    assert fills["price"].to_list() == [101.02, 98.99, 99.01]  # 101 + max(1 bp, 1 tick) rounded up; 99 - 0.0099 down
    # the made quotes show the declared depth (100,000 USDT at the first trade price 100 = 1,000 TEST)
    assert any("quote(s) made from trades: each side taken as 1000 TEST deep" in n for n in run.notes)


PERP = replace(INSTRUMENT, symbol="TESTUSDT-PERP", kind="", raw_symbol="")


def test_ema_cross_runs_on_a_perpetual_as_a_crypto_perpetual(tmp_path: Path) -> None:
    from nautilus_trader.model.instruments import CryptoPerpetual

    from quant_assets.engines.nautilus import nautilus_instrument

    assert PERP.kind == "perpetual" and PERP.raw_symbol == "TESTUSDT"
    nt = nautilus_instrument(PERP)
    assert isinstance(nt, CryptoPerpetual) and str(nt.id) == "TESTUSDT-PERP.BINANCE"
    path = write(around([100.0] * 5 + [101.0] * 5 + [99.0] * 5 + [101.0] * 5), tmp_path / "t.parquet")
    fills, equity = finalize(run_nautilus(path, PERP, EMA, EMA_PARAMS))
    # the same crosses as on the spot pair: long, short, long, flat at the end, taker fees
    assert fills["side"].to_list() == [1, -1, 1, -1]
    assert fills["position"].to_list() == pytest.approx([9.9, -10.1, 9.9, 0.0])
    assert fills["fee"].to_list() == pytest.approx((fills["qty"] * fills["price"] * 0.001).to_list(), rel=1e-5)
    assert equity["position"][-1] == 0.0


def test_a_negative_maker_fee_is_a_rebate_in_nautilus(tmp_path: Path) -> None:
    # The take-profit scenario: both fills are maker fills; with maker_fee = -0.0001 the engine's
    # MakerTakerFeeModel pays the maker (negative commission) and equity gains the rebate.
    bids = CALM_BIDS + [99.89, 99.80, 99.85, 100.05, 100.05, 100.05]
    asks = CALM_ASKS + [99.91, 99.85, 99.87, 100.07, 100.07, 100.07]
    rebate = replace(PERP, maker_fee=-0.0001)
    fills, equity = finalize(run_nautilus(write(quotes(bids, asks), tmp_path / "t.parquet"), rebate, MR, MR_PARAMS))
    assert fills["liquidity"].to_list() == ["maker", "maker"]
    assert fills["fee"].to_list() == pytest.approx([-0.0001 * 10.01 * 99.89, -0.0001 * 10.01 * 100.04])
    assert equity["equity"][-1] == pytest.approx(100_000.0 + 10.01 * 0.15 - fills["fee"].sum())
    assert equity["equity"][-1] > 100_000.0 + 10.01 * 0.15  # the rebate adds to the PnL


def test_a_fill_after_the_flatten_is_closed_at_once_and_the_run_ends_flat(tmp_path: Path) -> None:
    # The race behind "run ended with position ...: adapters must flatten at the last tick": an
    # order that fills after the flatten's cancel and close (see quant_assets_tests/racing.py).
    path = write(quotes(CALM_BIDS + [100.00] * 3, CALM_ASKS + [100.02] * 3), tmp_path / "t.parquet")
    fills, equity = finalize(run_nautilus(path, INSTRUMENT, "quant_assets_tests.racing:EntryRacingTheFlatten", MR_PARAMS))
    # The late entry fills at the last quote's ask; the strategy answers it with a reduce-only
    # market close tagged REASON_FLATTEN at the bid, so the month still ends flat.
    assert fills.select("side", "qty", "price", "reason").rows() == [(1, 5.0, 100.02, "entry"), (-1, 5.0, 100.0, REASON_FLATTEN)]
    assert fills["position"][-1] == 0.0
    assert equity["position"][-1] == 0.0


# ---- the venue profile: order latency, slippage, the engine cache ---------------------------------
#: The mid rises after the first cross and falls after the second: where a late order fills shows.
MOVING = [100.0] * 5 + [101.0, 101.5, 102.0, 102.5, 103.0] + [99.0, 98.5, 98.0, 97.5, 97.0] + [101.0, 101.5, 102.0, 102.5, 103.0]


def _at(seconds: float) -> int:
    return T0 + int(round(seconds * STEP))


@pytest.mark.parametrize(("latency_s", "fill_s"), [
    (0.0, (5, 10, 15, 19)),  # at the signal's own quote
    (0.999, (6, 11, 16, 19.999)),  # the next quote; the close after the last quote meets the first end marker
    (1.0, (6, 11, 16, 20)),
    (1.5, (7, 12, 17, 20.5)),
])
def test_an_ema_cross_signal_at_t_fills_at_the_first_quote_at_or_after_t_plus_the_latency(tmp_path, latency_s, fill_s) -> None:
    # Quotes one second apart; crosses at 5 s (long), 10 s (short), 15 s (long); the flatten at
    # the last quote (19 s) reaches the book at 19 s + latency, where the market is still at the
    # last touch (the end markers).
    path = write(around(MOVING), tmp_path / "t.parquet")
    profile = replace(FRICTIONLESS, entry_latency_ms=latency_s * 1000)
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=profile)
    fills, equity = finalize(run)
    assert fills["ts"].to_list() == [_at(s) for s in fill_s]
    assert fills["side"].to_list() == [1, -1, 1, -1]
    assert fills["qty"].to_list() == [9.9, 20.0, 20.0, 9.9]  # sized at the signal's mid
    # ask to buy, bid to sell, of the quote each order met (mid ± 0.01)
    mid = lambda s: MOVING[min(int(s), len(MOVING) - 1)]  # noqa: E731
    expected = [round(mid(s) + side * 0.01, 2) for s, side in zip(fill_s, (1, -1, 1, -1))]
    assert fills["price"].to_list() == expected
    assert equity["position"][-1] == 0.0
    if latency_s:
        assert any(f"order entry latency {latency_s * 1000:g} ms on submit, modify and cancel" in n for n in run.notes)
    else:
        assert run.notes == []


def test_the_entry_latency_applies_to_submit_modify_and_cancel(tmp_path: Path) -> None:
    from quant_assets.engines import nautilus

    path = write(around(MOVING), tmp_path / "t.parquet")
    run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=replace(FRICTIONLESS, entry_latency_ms=250.0))
    _, exchange = nautilus._engines[(INSTRUMENT.venue, INSTRUMENT.quote_currency, 100_000.0, True, 1)]  # 1: L1_MBP
    model = exchange.latency_model
    # LatencyModel adds its base to each command type's own latency (0 here)
    assert (model.base_latency_nanos, model.insert_latency_nanos, model.update_latency_nanos, model.cancel_latency_nanos) == (
        250_000_000, 250_000_000, 250_000_000, 250_000_000)


def test_prob_slippage_one_fills_every_market_order_one_tick_worse_and_no_limit(tmp_path: Path) -> None:
    path = write(around(MOVING), tmp_path / "t.parquet")
    slippy = replace(FRICTIONLESS, prob_slippage=1.0)
    fills, _ = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=slippy))
    assert fills["price"].to_list() == [101.02, 98.98, 101.02, 102.98]  # the touch ± one tick
    # a resting limit's maker fill never slips past its own price; the take-profit (a limit) neither
    bids = CALM_BIDS + [99.89, 99.80, 99.85, 100.05, 100.05, 100.05]
    asks = CALM_ASKS + [99.91, 99.85, 99.87, 100.07, 100.07, 100.07]
    mr, _ = finalize(run_nautilus(write(quotes(bids, asks), tmp_path / "mr.parquet"), INSTRUMENT, MR, MR_PARAMS, profile=slippy))
    assert mr.select("side", "price", "liquidity").rows() == [(1, 99.89, "maker"), (-1, 100.04, "maker")]


def test_probabilistic_slippage_is_deterministic_given_the_fill_seed(tmp_path: Path) -> None:
    df = generate(SyntheticSpec("BTCUSDT", "2024-01", seed=7, events=30_000))
    path = write(df, tmp_path / "t.parquet")
    inst = replace(INSTRUMENT, symbol="BTCUSDT", base_currency="BTC", size_precision=4, lot_size=0.0001)
    params = {"fast_period": 20, "slow_period": 80, "notional": 10_000.0, "equity_interval_s": 60.0}
    half = replace(FRICTIONLESS, prob_slippage=0.5, fill_seed=11)
    a = run_nautilus(path, inst, EMA, params, profile=half).fills
    b = run_nautilus(path, inst, EMA, params, profile=half).fills
    other = run_nautilus(path, inst, EMA, params, profile=replace(half, fill_seed=12)).fills
    none = run_nautilus(path, inst, EMA, params).fills
    assert len(a) > 10 and a.equals(b)
    assert not a.equals(other)
    slipped = (a["price"] != none["price"]).mean()
    assert 0.3 < slipped < 0.7  # about half the market orders slipped one tick


def test_runs_with_and_without_latency_share_the_process_and_keep_their_own_results(tmp_path: Path) -> None:
    from quant_assets.engines import nautilus

    path = write(around(MOVING), tmp_path / "t.parquet")
    late = replace(FRICTIONLESS, entry_latency_ms=1_500.0)
    first = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS))[0]
    delayed = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=late))[0]
    other = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=replace(late, entry_latency_ms=1_000.0)))[0]
    again = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS))[0]
    assert first.equals(again) and not first.equals(delayed) and not delayed.equals(other)
    assert first["ts"][0] == _at(5) and delayed["ts"][0] == _at(7) and other["ts"][0] == _at(6)
    keys = [k for k in nautilus._engines if k[0] == INSTRUMENT.venue and k[1] == INSTRUMENT.quote_currency and k[4] == 1]
    assert sorted(k[3] for k in keys if k[2] == 100_000.0) == [False, True]  # one engine with a latency model, one without


def test_ema_cross_counts_the_order_still_in_flight_when_the_signal_flips(tmp_path: Path) -> None:
    # Long at 5 s, short at 6 s; with 1.5 s of latency the buy (sent at 5 s) has not filled when
    # the short is decided: the sell must cover it too (20.0, not 10.1), or the position ends
    # near flat instead of short.
    path = write(around([100.0] * 5 + [101.0] + [99.0] * 6), tmp_path / "t.parquet")
    fills, _ = finalize(run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, profile=replace(FRICTIONLESS, entry_latency_ms=1_500.0)))
    assert fills.select("ts", "side", "qty", "price").rows() == [
        (_at(7), 1, 9.9, 99.01), (_at(8), -1, 20.0, 98.99), (_at(12.5), 1, 10.1, 99.01)]
    assert fills["position"].to_list() == pytest.approx([9.9, -10.1, 0.0])


def test_mean_reversion_sends_no_second_bracket_while_the_first_is_in_flight(tmp_path: Path) -> None:
    # The entry (sent at 10 s with 5 ms latency) meets the gapped ask 99.00 at 11 s and fills as a
    # taker; its stop 99.39 is then in the market (bid 98.98) and rejected: the strategy exits at
    # the next quote. Counting only open orders, it sent a second bracket at 11 s (the first was
    # still in flight), lost the first one's exits and held the position naked to the month's end.
    run, fills, checks = _mr(tmp_path, CALM_BIDS + [99.89, 98.98, 98.98, 98.98, 98.98], CALM_ASKS + [99.91, 99.00, 99.00, 99.00, 99.00],
                             profile=replace(FRICTIONLESS, entry_latency_ms=5.0))
    assert fills.select("ts", "side", "price", "liquidity", "reason").rows() == [
        (_at(11), 1, 99.00, "taker", "entry"), (_at(12), -1, 98.98, "taker", "protective-exit")]
    assert run.counters["protective_exits"] == 1 and all(checks.values()), checks
