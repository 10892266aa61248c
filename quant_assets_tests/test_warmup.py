"""Warm-up: a backtest of month M fed the end of M−1 with trading off equals a run on M−1's
tail + M with trading disabled during the tail; without M−1 the strategy waits its warm-up in M."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from quant_assets.engines.nautilus import run_nautilus
from quant_assets.engines.result import finalize
from quant_assets.engines.runner import account_rules, run_backtest, venue_profile
from quant_assets.engines.warmup import WarmupFeed, plan_warmup, previous_month
from quant_assets.lake import instruments as inst_mod
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets.strategies.spec import Warmup
from quant_assets_tests.scripted import INSTRUMENT, around, write

JAN = 1_704_067_200_000_000_000  # 2024-01-01 UTC, ns
DEC_END = JAN  # December ends where January starts
S = 1_000_000_000
SPEC = EMA_CROSS.with_values({"fast_period": 3, "slow_period": 8, "notional": 1_000.0})  # 1-minute bars, warm-up 24 bars


def _walk(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.round(100.0 + np.cumsum(rng.normal(0.0, 0.05, n)), 2))


def _months(lake, with_december: bool = True):
    """December's last 2 hours and January's first 6 hours, a quote every 10 s (3.5 s past)."""
    if with_december:
        write(around(_walk(720, 1), t0=DEC_END - 720 * 10 * S + int(3.5 * S), step=10 * S), lake.ticks_path("TESTUSDT", "2023-12"))
    write(around(_walk(2_160, 2), t0=JAN + int(3.5 * S), step=10 * S), lake.ticks_path("TESTUSDT", "2024-01"))
    for month in ("2023-12", "2024-01") if with_december else ("2024-01",):
        inst_mod.record_inferred(lake, INSTRUMENT, month)


def test_previous_month_wraps_the_year():
    assert previous_month("2024-01") == "2023-12" and previous_month("2024-03") == "2024-02"


def test_the_tail_holds_exactly_the_declared_bars_or_quotes(lake):
    _months(lake)
    at = lambda m: lake.ticks_path("TESTUSDT", m)  # noqa: E731
    bars = plan_warmup(at, "2024-01", Warmup(24, "bars", 60 * S))
    # 24 whole one-minute bars before January: ticks after the start of the 24th-last bar
    assert bars.status == "warm" and bars.inputs == 24 and bars.from_ts == DEC_END - 24 * 60 * S + 1
    quotes = plan_warmup(at, "2024-01", Warmup(50, "quotes"))
    tail = pl.read_parquet(at("2023-12")).filter(pl.col("ts_recv") >= quotes.from_ts)
    assert quotes.status == "warm" and tail.height == 50
    partial = plan_warmup(at, "2024-01", Warmup(1_000, "quotes"))
    assert partial.status == "partial" and partial.inputs == 720 and "holds 720 of the 1,000 quote updates" in partial.reason
    cold = plan_warmup(at, "2023-12", Warmup(24, "bars", 60 * S))
    assert cold.status == "cold" and not cold.feeds and "no ticks for 2023-11" in cold.reason


def test_a_warmed_month_equals_the_tail_and_the_month_run_with_trading_off_during_the_tail(lake, tmp_path):
    _months(lake)
    out = run_backtest(lake, SPEC, "TESTUSDT", "2024-01")
    warm = out.manifest["warmup"]
    assert warm["status"] == "warm" and warm["inputs"] == 24 and warm["from_month"] == "2023-12"
    fills = pl.read_parquet(out.directory / "fills.parquet")
    equity = pl.read_parquet(out.directory / "equity.parquet")
    # The same tail and month in one file, run cold with trading disabled before January.
    tail = pl.read_parquet(lake.ticks_path("TESTUSDT", "2023-12")).filter(pl.col("ts_recv") >= warm["from_ts"])
    both = write(pl.concat([tail, pl.read_parquet(lake.ticks_path("TESTUSDT", "2024-01"))]), tmp_path / "both.parquet")
    inst = replace(INSTRUMENT, maker_fee=out.manifest["instrument"]["maker_fee"], taker_fee=out.manifest["instrument"]["taker_fee"])
    ref = run_nautilus(both, inst, SPEC.impl, SPEC.resolved(), rules=account_rules(inst), profile=venue_profile(inst),
                       trade_from_ns=JAN + int(3.5 * S), warmup=WarmupFeed(SPEC.warmup(), "cold"))
    ref_fills, ref_equity = finalize(ref)
    assert len(fills) >= 4
    assert fills.select("ts", "side", "qty", "price", "fee").rows() == ref_fills.select("ts", "side", "qty", "price", "fee").rows()
    assert equity["ts"].to_list() == ref_equity["ts"].to_list() and equity["ts"][0] >= JAN
    np.testing.assert_allclose(equity["equity"].to_numpy(), ref_equity["equity"].to_numpy(), rtol=1e-12)
    # Warm, the first decision is at January's first bar close; nothing before January.
    assert fills["ts"][0] < JAN + 3 * 60 * S


def test_without_the_previous_month_the_strategy_waits_its_warm_up(lake):
    _months(lake, with_december=False)
    out = run_backtest(lake, SPEC, "TESTUSDT", "2024-01")
    assert out.manifest["warmup"]["status"] == "cold"
    assert any("cold start" in n for n in out.manifest["notes"])
    fills = pl.read_parquet(out.directory / "fills.parquet")
    # 24 one-minute bars seen before the first decision (the 24th closes at 00:24)
    assert fills["ts"][0] > JAN + 24 * 60 * S
    assert fills["ts"][0] == pytest.approx(JAN + 24 * 60 * S + 3.5 * S, abs=1e8)
