"""What a backtest needs to know about a ``ticks`` partition before an engine starts, and the
input errors both adapters raise. Reads only the columns it needs, lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.engines.fidelity import EMPTY, TRADES_ONLY, fidelity_of, not_applicable
from quant_assets.lake.instruments import Instrument


class BacktestInputError(ValueError):
    """The partition cannot be backtested as it is; the message names the file and why."""


class NotApplicableError(BacktestInputError):
    """The strategy cannot run on this slice's data fidelity (the market maker on trades-only
    data): not a failure of the slice, which says ``n/a`` with this reason."""


class MemoryBudgetError(BacktestInputError):
    """The run would need more memory than the budget allows: refused before it starts."""


def check_memory(path: Path, engine: str, rows: int, bytes_per_row: int, fixed_bytes: int = 0, budget_bytes: int | None = None) -> int:
    """Refuse a run whose estimated memory (``rows`` × ``bytes_per_row`` + ``fixed_bytes``)
    exceeds the budget (``$QUANT_MEMORY_BUDGET_MB``, default 75% of available memory), so a
    month too large for the machine fails with a message instead of an OOM kill. Returns the
    estimate in bytes."""
    from quant_assets.settings import MEMORY_BUDGET_ENV, memory_budget_bytes

    need = rows * bytes_per_row + fixed_bytes
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    if need > budget:
        raise MemoryBudgetError(
            f"{path}: {engine} holds the whole month in memory: {rows:,} ticks need about {need / 2**30:.2f} GiB "
            f"({bytes_per_row} B/tick), over the {budget / 2**30:.2f} GiB budget ({MEMORY_BUDGET_ENV}). "
            "Raise the budget on a larger machine, or backtest this month on the nautilus engine, which streams"
        )
    return need


@dataclass(frozen=True)
class TickStats:
    """Counts and bounds of one partition. Times int64 ns (``ts_recv``, the engines' clock)."""

    path: Path
    quotes: int
    trades: int
    first_ts: int | None
    last_quote_ts: int | None
    off_grid_prices: int
    last_trade_ts: int | None = None

    @property
    def events(self) -> int:
        return self.quotes + self.trades

    @property
    def fidelity(self) -> str:
        return fidelity_of(self.quotes, self.trades)

    @property
    def last_signal_ts(self) -> int | None:
        """ts_recv (ns) of the month's last quote, or of its last trade on trades-only data:
        where the strategies flatten."""
        return self.last_quote_ts if self.fidelity != TRADES_ONLY else self.last_trade_ts


def inspect_ticks(path: Path, instrument: Instrument, grid_tolerance: float = 1e-6, engine: str = "nautilus",
                  book_level: str | None = None) -> TickStats:
    """Check a partition for a backtest on ``engine``: it exists, has at least two quotes (a mid
    and a change of it) or, where the engine's strategies can run on trades alone (see
    :mod:`quant_assets.engines.fidelity`), two trades, and every price lies on the instrument's
    tick grid (within ``grid_tolerance`` ticks). Raises :class:`NotApplicableError` when the
    data's fidelity does not suit the engine, :class:`BacktestInputError` otherwise.
    ``book_level`` (``depth-L2``/``depth-L3``): the slice has a book, which carries the quotes:
    the ticks then only need to exist (their trades are read beside the book)."""
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
            last_trade_ts=pl.col("ts_recv").filter(pl.col("kind") == "trade").max(),
            off_grid=off("bid_px") + off("ask_px") + off("price"),
        )
        .collect()
        .row(0, named=True)
    )
    stats = TickStats(path, int(row["quotes"]), int(row["trades"]), row["first_ts"], row["last_quote_ts"], int(row["off_grid"] or 0),
                      row["last_trade_ts"])
    if book_level is None:
        reason = not_applicable(engine, stats.fidelity)
        if reason is not None:
            raise NotApplicableError(f"{path}: {stats.quotes} quote(s) and {stats.trades} trade(s) (only trades): {reason}")
        if stats.fidelity == EMPTY:
            what = "only trades" if stats.trades else "no ticks"
            raise BacktestInputError(
                f"{path}: {stats.quotes} quote(s) and {stats.trades} trade(s) ({what}); the strategies need "
                "at least two L1 quotes (a mid price and a change of it), or two trades on trades-only data"
            )
    if stats.off_grid_prices:
        raise BacktestInputError(
            f"{path}: {stats.off_grid_prices} price(s) are not multiples of the instrument's tick size "
            f"{tick} ({instrument.symbol}, price_precision {instrument.price_precision}); fix the instrument "
            "in instruments.toml or the data"
        )
    return stats
