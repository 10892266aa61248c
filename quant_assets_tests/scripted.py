"""Hand-scripted tick partitions for engine tests: known quotes give known fills."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.lake.instruments import Instrument
from quant_assets.lake.schema import KIND, TICK_SCHEMA

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z in ns
STEP = 1_000_000_000  # one second between ticks

INSTRUMENT = Instrument("TESTUSDT", "BINANCE", "TEST", "USDT", 2, 2, 0.01, 0.01, 0.0005, 0.001)


def quotes(bids: list[float], asks: list[float], size: float = 1_000.0, t0: int = T0, step: int = STEP) -> pl.DataFrame:
    """One quote per second with the given touch prices, in the canonical schema."""
    n = len(bids)
    ts = t0 + np.arange(n, dtype=np.int64) * step
    return pl.DataFrame(
        {
            "ts_event": ts, "ts_recv": ts, "seq": np.arange(n, dtype=np.int64), "kind": ["quote"] * n,
            "bid_px": bids, "bid_sz": [size] * n, "ask_px": asks, "ask_sz": [size] * n,
            "price": [None] * n, "size": [None] * n, "side": [None] * n, "trade_id": [None] * n,
        },
        schema_overrides={"kind": KIND},
    ).cast(TICK_SCHEMA)


def around(mids: list[float], half_spread: float = 0.01, **kw) -> pl.DataFrame:
    """Quotes with bid = mid - half_spread and ask = mid + half_spread."""
    return quotes([round(m - half_spread, 2) for m in mids], [round(m + half_spread, 2) for m in mids], **kw)


def trades(prices: list[float], sides: list[int], t0: int, size: float = 1.0, step: int = STEP) -> pl.DataFrame:
    n = len(prices)
    ts = t0 + np.arange(n, dtype=np.int64) * step
    return pl.DataFrame(
        {
            "ts_event": ts, "ts_recv": ts, "seq": 1_000_000 + np.arange(n, dtype=np.int64), "kind": ["trade"] * n,
            "bid_px": [None] * n, "bid_sz": [None] * n, "ask_px": [None] * n, "ask_sz": [None] * n,
            "price": prices, "size": [size] * n, "side": sides, "trade_id": [f"t{i}" for i in range(n)],
        },
        schema_overrides={"kind": KIND},
    ).cast(TICK_SCHEMA)


def write(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.sort("ts_recv", "seq").write_parquet(path)
    return path
