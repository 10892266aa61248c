"""Returns from a backtest's mark-to-market equity curve, on a regular time grid.

The equity curve (``ts`` int64 ns, ``equity`` in quote currency, ``mid``) is sampled on the
strategy's timer every ``interval_s`` seconds, plus one last sample after the closing fill.
:func:`sample_returns` puts it on that grid (the last sample of each interval wins, so the
closing sample becomes the final equity) and takes simple returns between consecutive grid
points. Annualisation: ``periods_per_year = trading_days * 86_400 / interval_s``, with the
instrument's ``trading_days`` (365 for crypto).

Closed days: the strategy's timer keeps sampling when the market is shut (an FX weekend), which
would count hours with no market as zero-return periods. A UTC day on which the sampled mid
never moves is treated as closed and its samples are dropped, so the count of periods matches
``trading_days``. Crypto markets have no such day.

The series stops at the first sample whose equity is at or below zero: returns past a wiped-out
account are undefined (the return into it is clipped to -100%), and the reason is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl

NS_PER_S = 1_000_000_000
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ReturnSeries:
    """Simple returns per grid period (``returns``: float64, tz-naive UTC DatetimeIndex at the
    end of each period), with how they were made."""

    returns: pd.Series
    interval_s: float
    trading_days: int
    start_equity: float
    final_equity: float
    closed_days: int = 0
    notes: list[str] = field(default_factory=list)
    wiped_out: bool = False  # equity reached zero: the series ends there

    @property
    def periods_per_year(self) -> float:
        return self.trading_days * SECONDS_PER_DAY / self.interval_s

    def __len__(self) -> int:
        return len(self.returns)


def _on_grid(equity: pl.DataFrame, interval_s: float) -> pl.DataFrame:
    """Last sample per grid interval (ts floored to the grid from the first sample)."""
    step = int(round(interval_s * NS_PER_S))
    df = equity if equity["ts"].is_sorted() else equity.sort("ts", maintain_order=True)
    t0 = int(df["ts"][0])
    bucket = (pl.col("ts") - t0) // step
    # Sorted, so the last row of a bucket is the one whose successor is in another bucket
    # (cheaper than a group_by on millions of samples).
    return df.filter(bucket != bucket.shift(-1, fill_value=-1))


def _closed_day_mask(grid: pl.DataFrame) -> tuple[np.ndarray, int]:
    """(keep mask, number of closed days): samples of UTC days whose mid never moves are dropped."""
    day = (grid["ts"] // (SECONDS_PER_DAY * NS_PER_S)).alias("day")
    per_day = grid.select(day, "mid").group_by("day").agg(moves=pl.col("mid").n_unique() > 1)
    if len(per_day) <= 1 or per_day["moves"].all():
        return np.ones(len(grid), bool), 0
    closed = per_day.filter(~pl.col("moves"))["day"]
    keep = ~day.is_in(closed.implode()).to_numpy()
    return keep, len(closed)


def sample_returns(equity: pl.DataFrame, interval_s: float, trading_days: int) -> ReturnSeries:
    """Grid returns of one equity curve (see the module docstring). An empty curve gives an
    empty series; a curve of one sample gives no returns."""
    notes: list[str] = []
    if len(equity) == 0:
        return ReturnSeries(pd.Series([], dtype="float64", index=pd.DatetimeIndex([])), interval_s, trading_days,
                            float("nan"), float("nan"), notes=["empty equity curve"])
    grid = _on_grid(equity.select("ts", "equity", "mid"), interval_s)
    keep, closed = _closed_day_mask(grid)
    eq = grid["equity"].to_numpy().astype(np.float64)
    ts = grid["ts"].to_numpy()
    start, final = float(eq[0]), float(eq[-1])
    if start <= 0:
        return ReturnSeries(pd.Series([], dtype="float64", index=pd.DatetimeIndex([])), interval_s, trading_days,
                            start, final, notes=[f"starting equity {start} is not positive: returns are undefined"])
    ret = np.empty(len(eq))
    ret[0] = np.nan
    ret[1:] = eq[1:] / eq[:-1] - 1.0
    bust = np.flatnonzero(eq <= 0)
    if len(bust):
        b = int(bust[0])
        ret = ret[: b + 1]
        ret[b] = -1.0
        ts, keep = ts[: b + 1], keep[: b + 1]
        notes.append(f"equity reached {eq[b]:.6g} (<= 0) at {pd.Timestamp(int(ts[b]))}: the series stops there (return -100%)")
    # The first grid point is the starting level, not a return; closed days are dropped after
    # the returns are taken, so a return across a closed weekend stays whole.
    keep = keep.copy()
    keep[0] = False
    series = pd.Series(ret[keep], index=pd.DatetimeIndex(ts[keep].astype("datetime64[ns]")), name="returns")
    if closed:
        notes.append(f"{closed} closed day(s) (mid never moved) left out of the periods")
    return ReturnSeries(series, interval_s, trading_days, start, max(final, 0.0) if len(bust) else final, closed, notes,
                        wiped_out=bool(len(bust)))


def daily(returns: pd.Series) -> pd.Series:
    """Compound returns into UTC calendar days (days without any period are left out)."""
    if len(returns) == 0:
        return returns.copy()
    return (1.0 + returns).groupby(returns.index.normalize()).prod() - 1.0


def stitch(series: list[ReturnSeries]) -> ReturnSeries:
    """Months as one series: each month is an independent run from the same starting cash, so
    their returns chain (compounding them is reinvesting each month's result). All must share
    the grid interval and trading days. A month that wiped the account out ends the chain:
    nothing is left to reinvest in the months after it."""
    if not series:
        raise ValueError("nothing to stitch")
    intervals = {s.interval_s for s in series}
    days = {s.trading_days for s in series}
    if len(intervals) > 1 or len(days) > 1:
        raise ValueError(f"months disagree on the grid ({sorted(intervals)} s) or trading days ({sorted(days)})")
    cut = next((i for i, s in enumerate(series) if s.wiped_out), None)
    if cut is not None and cut < len(series) - 1:
        series = [*series[: cut + 1]]
        dropped = True
    else:
        dropped = False
    parts = [s.returns for s in series if len(s.returns)]
    returns = pd.concat(parts).sort_index() if parts else series[0].returns
    growth = float(np.prod([1.0 + (s.final_equity / s.start_equity - 1.0) for s in series if s.start_equity > 0]))
    start = series[0].start_equity
    notes = [n for s in series for n in s.notes]
    if dropped:
        notes.append("the account was wiped out: later months are left out of the stitched curve")
    return ReturnSeries(returns, series[0].interval_s, series[0].trading_days, start, max(start * growth, 0.0),
                        sum(s.closed_days for s in series), notes, wiped_out=cut is not None)
