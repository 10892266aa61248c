"""Time bars from canonical ticks: the input of vectorised research (sweeps, factor analysis).

One row per interval that holds at least one tick (empty intervals are absent, not filled).
Bars are on the **receive clock** (``ts_recv``, the clock both engines run on: what a strategy
could have built at the time) and **left-open**: the bar starting at ``ts`` holds the ticks
received in (``ts``, ``ts + interval``] and closes at ``ts + interval``, as NautilusTrader's
time bars do (a tick stamped exactly on a boundary is processed before the boundary's timer, so
it belongs to the bar that closes there). So the event-driven strategies that signal on bars
built inside NautilusTrader see exactly these bars.

- ``ts``: bar start, ns since epoch (UTC), on the interval grid;
- ``open``/``high``/``low``/``close``: from the bar's trades when it has any, else from its
  mid quotes (``source`` says which), in quote currency;
- ``volume``: traded size (base units), ``trades``: trade count, ``quotes``: quote count;
- ``mid_close``, ``bid_close``, ``ask_close``: the last quote of the bar (null when the bar has
  no quote); ``spread_mean``/``spread_close``: ask - bid, in quote currency;
- ``bid_open``, ``ask_open``, ``quote_open_ts``: the first quote of the bar and when it was
  received (null when the bar has none): where an order decided at the previous bar's close
  meets the market first.

Book features (:mod:`quant_assets.book.features`), the book as it stood at the bar's close
(``ts + interval``): ``book_imbalance`` (depth imbalance over the best 5 levels, [−1, 1]),
``microprice`` (quote currency), ``depth_bid_bps``/``depth_ask_bps`` (base units within ±10 bps
of the mid), and ``book_reason``: null when they are known, else why they are null (the month has
no book, before its first snapshot, inside a gap, a side empty).

Strategies that signal on the mid (every built-in one) use ``mid_close``; a vectorised order
decided at a bar's close fills at the next bar's first quote (``ask_open`` to buy,
``bid_open`` to sell). The ticks partition is ordered by ``ts_recv``, and a bar's first/last
follow that order. The group-by streams (polars), so memory is bounded by the number
of bars, not ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

NS_PER_S = 1_000_000_000

#: Bar schema, in column order.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(), "open": pl.Float64(), "high": pl.Float64(), "low": pl.Float64(), "close": pl.Float64(),
    "volume": pl.Float64(), "trades": pl.UInt32(), "quotes": pl.UInt32(), "source": pl.String(),
    "mid_close": pl.Float64(), "bid_close": pl.Float64(), "ask_close": pl.Float64(),
    "spread_mean": pl.Float64(), "spread_close": pl.Float64(), "bid_open": pl.Float64(), "ask_open": pl.Float64(),
    "quote_open_ts": pl.Int64(),
}


def parse_interval(text: str) -> int:
    """``"1m"`` -> 60_000_000_000 ns (units s, m, h)."""
    units = {"s": 1, "m": 60, "h": 3600}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise ValueError(f"bar interval {text!r}: expected a whole number and a unit, like 1m, 5m, 30s or 1h")
    return int(text[:-1]) * units[text[-1]] * NS_PER_S


def bars(ticks: pl.LazyFrame, interval_ns: int) -> pl.LazyFrame:
    """Bars of ``interval_ns`` from a canonical tick frame (see the module docstring)."""
    trade = pl.col("kind") == "trade"
    quote = pl.col("kind") == "quote"
    mid = ((pl.col("bid_px") + pl.col("ask_px")) / 2).filter(quote)
    spread = (pl.col("ask_px") - pl.col("bid_px")).filter(quote)
    px = pl.col("price").filter(trade)
    agg = (
        # left-open bars on the receive clock: (ts, ts + interval]
        ticks.with_columns((((pl.col("ts_recv") - 1) // interval_ns) * interval_ns).alias("ts"))
        .group_by("ts", maintain_order=True)
        .agg(
            t_open=px.first(), t_high=px.max(), t_low=px.min(), t_close=px.last(),
            m_open=mid.first(), m_high=mid.max(), m_low=mid.min(), m_close=mid.last(),
            volume=pl.col("size").filter(trade).sum(),
            trades=trade.sum().cast(pl.UInt32), quotes=quote.sum().cast(pl.UInt32),
            bid_close=pl.col("bid_px").filter(quote).last(), ask_close=pl.col("ask_px").filter(quote).last(),
            spread_mean=spread.mean(), spread_close=spread.last(),
            bid_open=pl.col("bid_px").filter(quote).first(), ask_open=pl.col("ask_px").filter(quote).first(),
            quote_open_ts=pl.col("ts_recv").filter(quote).first(),
        )
    )
    has_trades = pl.col("trades") > 0
    pick = lambda t, m: pl.when(has_trades).then(pl.col(t)).otherwise(pl.col(m))  # noqa: E731
    return (
        agg.select(
            "ts",
            pick("t_open", "m_open").alias("open"), pick("t_high", "m_high").alias("high"),
            pick("t_low", "m_low").alias("low"), pick("t_close", "m_close").alias("close"),
            pl.col("volume").fill_null(0.0), "trades", "quotes",
            pl.when(has_trades).then(pl.lit("trades")).otherwise(pl.lit("mid")).alias("source"),
            pl.col("m_close").alias("mid_close"), "bid_close", "ask_close", "spread_mean", "spread_close",
            "bid_open", "ask_open", "quote_open_ts",
        )
        .sort("ts")
        .cast(BAR_SCHEMA)  # type: ignore[arg-type]
    )


def build_bars(ticks_path: Path, out: Path, interval_ns: int, writer,
               features: Callable[[np.ndarray], pl.DataFrame] | None = None) -> pl.DataFrame:
    """Bars of one ticks partition written to ``out`` through ``writer(frame, path)`` (the
    lake's atomic Parquet writer); returns them (a month of 1-minute bars is ~45k rows).
    ``features(closes_ns)``: columns to add, one row per bar, from the bars' close times."""
    frame = bars(pl.scan_parquet(ticks_path), interval_ns).collect(engine="streaming")
    if features is not None:
        frame = pl.concat([frame, features((frame["ts"] + interval_ns).to_numpy())], how="horizontal")
    writer(frame, out)
    return frame
