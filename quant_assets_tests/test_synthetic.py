"""The synthetic feed: deterministic, well-formed, and not a money printer."""

from __future__ import annotations

import numpy as np
import polars as pl

from quant_assets.ingest.synthetic import SyntheticSpec, generate


def test_deterministic_for_symbol_month_seed():
    a = generate(SyntheticSpec("BTCUSDT", "2024-01", seed=1, events=20_000))
    assert a.equals(generate(SyntheticSpec("BTCUSDT", "2024-01", seed=1, events=20_000)))
    assert not a.equals(generate(SyntheticSpec("BTCUSDT", "2024-01", seed=2, events=20_000)))
    assert not a.equals(generate(SyntheticSpec("BTCUSDT", "2024-02", seed=1, events=20_000)))


def test_well_formed_ticks():
    df = generate(SyntheticSpec("ETHUSDT", "2024-02", events=50_000))
    assert df.height == 50_000 and df["ts_recv"].is_sorted()
    assert df["ts_event"].min() >= 1_706_745_600 * 10**9  # 2024-02-01
    assert (df["ts_recv"] - df["ts_event"]).min() > 0  # receive latency
    q, t = df.filter(pl.col("kind") == "quote"), df.filter(pl.col("kind") == "trade")
    assert (q["ask_px"] > q["bid_px"]).all() and (q["bid_sz"] > 0).all()
    assert 0.25 < t.height / df.height < 0.35
    assert set(t["side"].unique()) == {-1, 1}
    # trades print at the touch: buys at an ask-like price, sells at a bid-like one
    assert (t["price"] > 0).all()


def test_activity_is_seasonal_and_spread_widens_with_volatility():
    df = generate(SyntheticSpec("BTCUSDT", "2024-01", events=200_000))
    hours = pl.from_epoch(df["ts_event"], time_unit="ns").dt.hour()
    by_hour = hours.value_counts().sort("ts_event")["count"].to_numpy()
    assert by_hour[14] > 1.5 * by_hour[2]  # busier at 14:00 UTC than at 02:00
    q = df.filter(pl.col("kind") == "quote").with_columns(mid=(pl.col("bid_px") + pl.col("ask_px")) / 2)
    minute = (q.with_columns(m=pl.col("ts_event") // (60 * 10**9))
              .group_by("m").agg(ret=pl.col("mid").log().diff().abs().sum(), spread=((pl.col("ask_px") - pl.col("bid_px")) / pl.col("mid")).mean())
              .drop_nulls())
    corr = np.corrcoef(minute["ret"].to_numpy(), minute["spread"].to_numpy())[0, 1]
    assert corr > 0.3


def test_a_naive_momentum_strategy_does_not_print_money():
    """Buy after an up-minute, sell after a down-minute, crossing the spread: it must not win."""
    pnl = []
    for seed in range(3):
        q = generate(SyntheticSpec("BTCUSDT", "2024-01", seed=seed, events=100_000)).filter(pl.col("kind") == "quote")
        bars = (q.with_columns(m=pl.col("ts_event") // (60 * 10**9)).group_by("m", maintain_order=True)
                .agg(bid=pl.col("bid_px").last(), ask=pl.col("ask_px").last()))
        mid = ((bars["bid"] + bars["ask"]) / 2).to_numpy()
        half_spread = ((bars["ask"] - bars["bid"]) / 2).to_numpy()
        signal = np.sign(np.diff(mid))[:-1]
        gross = signal * np.diff(mid)[1:]
        pnl.append(float(np.sum(gross - 2 * half_spread[1:-1] * (signal != 0))))
    assert max(pnl) < 0
