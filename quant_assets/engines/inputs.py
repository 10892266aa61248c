"""What a backtest needs to know about a ``ticks`` partition before an engine starts, and the
input errors both adapters raise. Reads only the columns it needs, lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.lake.instruments import Instrument


class BacktestInputError(ValueError):
    """The partition cannot be backtested as it is; the message names the file and why."""


@dataclass(frozen=True)
class TickStats:
    """Counts and bounds of one partition. Times int64 ns (``ts_recv``, the engines' clock)."""

    path: Path
    quotes: int
    trades: int
    first_ts: int | None
    last_quote_ts: int | None
    off_grid_prices: int

    @property
    def events(self) -> int:
        return self.quotes + self.trades


def inspect_ticks(path: Path, instrument: Instrument, grid_tolerance: float = 1e-6) -> TickStats:
    """Check a partition for a backtest: it exists, has at least two quotes (a mid and a
    change of it), and every price lies on the instrument's tick grid (within
    ``grid_tolerance`` ticks). Raises :class:`BacktestInputError` otherwise."""
    if not path.exists():
        raise BacktestInputError(f"{path}: no ticks partition (materialise `ticks` for it first)")
    tick = instrument.tick_size
    off = lambda c: ((pl.col(c) / tick - (pl.col(c) / tick).round()).abs() > grid_tolerance).sum()  # noqa: E731
    row = (
        pl.scan_parquet(path)
        .select(
            quotes=(pl.col("kind") == "quote").sum(),
            trades=(pl.col("kind") == "trade").sum(),
            first_ts=pl.col("ts_recv").min(),
            last_quote_ts=pl.col("ts_recv").filter(pl.col("kind") == "quote").max(),
            off_grid=off("bid_px") + off("ask_px") + off("price"),
        )
        .collect()
        .row(0, named=True)
    )
    stats = TickStats(path, int(row["quotes"]), int(row["trades"]), row["first_ts"], row["last_quote_ts"], int(row["off_grid"] or 0))
    if stats.quotes < 2:
        what = "only trades" if stats.trades else "no ticks"
        raise BacktestInputError(
            f"{path}: {stats.quotes} quote(s) and {stats.trades} trade(s) ({what}); the strategies need "
            "at least two L1 quotes (a mid price and a change of it)"
        )
    if stats.off_grid_prices:
        raise BacktestInputError(
            f"{path}: {stats.off_grid_prices} price(s) are not multiples of the instrument's tick size "
            f"{tick} ({instrument.symbol}, price_precision {instrument.price_precision}); fix the instrument "
            "in instruments.toml or the data"
        )
    return stats
