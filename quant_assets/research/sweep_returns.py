"""A sweep's trial returns, kept compactly beside its grid: what the roll-ups' deflated Sharpe
(the observed variance of Sharpe across trials) and a walk-forward optimisation read.

``sweeps/strategy=X/symbol=S/month=M/returns.parquet``, one row per (combination, hour), sorted
by ``combo`` then ``ts``:

==========  =======  ====================================================================
column      type     meaning
==========  =======  ====================================================================
``combo``   Int32    the combination's index in the grid (``combo`` of ``grid.parquet``)
``ts``      Int64    start of the UTC hour, ns since the epoch
``return``  Float32  simple return (a fraction) of the combination's portfolio over that
                     hour: its value (quote currency, after fees and half spreads) at the
                     hour's last bar over its value at the previous hour's last bar; the
                     slice's first hour is over the starting cash
==========  =======  ====================================================================

Every combination has the same hours (those with at least one bar), so a slice holds hours ×
combinations rows: 744 × 100 = 74,400 for a month of the default 10 × 10 grid, about 0.3 MB.
float32 keeps 7 significant digits, ample for hourly returns whose Sharpe ratios are compared
to a few decimals (the SPA test and the ranking in ``summary.json`` use the float64 values).

Months are independent runs that each start from the starting cash, so concatenating their
hourly returns in time order chains them (a month's result reinvested in the next), as the
roll-ups chain the backtests' months.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake

FILE = "returns.parquet"
SCHEMA: dict[str, pl.DataType] = {"combo": pl.Int32(), "ts": pl.Int64(), "return": pl.Float32()}


class SweepReturnsError(ValueError):
    """A returns file that does not match its grid or the other months; the message names it."""


def returns_frame(hours: np.ndarray, hourly: np.ndarray) -> pl.DataFrame:
    """The long table of a sweep's ``hourly`` returns (hours × combinations, columns in grid
    order) labelled by ``hours`` (start of each UTC hour, int64 ns)."""
    n_hours, n_combos = hourly.shape
    if len(hours) != n_hours:
        raise ValueError(f"{len(hours)} hour labels for {n_hours} rows of hourly returns")
    return pl.DataFrame({
        "combo": np.repeat(np.arange(n_combos, dtype=np.int32), n_hours),
        "ts": np.tile(np.asarray(hours, dtype=np.int64), n_combos),
        "return": np.asarray(hourly, dtype=np.float32).T.reshape(-1),  # column by column: combo-major
    }, schema=SCHEMA)


@dataclass(frozen=True)
class SweepReturns:
    """Hourly returns of every combination of one grid over several months of a symbol.

    ``combos``: one row per combination in grid order (``combo`` and the grid's axes, lengths in
    bars). ``ts``: start of each hour (int64 ns, increasing across the months read). ``returns``:
    float64 array hours × combinations (column j is ``combos`` row j), simple returns per hour.
    ``months``: the months read, in order; ``missing``: month -> why it has no returns (no sweep
    slice, a sweep that ranked nothing, a slice written before returns were kept)."""

    combos: pl.DataFrame
    ts: np.ndarray
    returns: np.ndarray
    months: list[str]
    missing: dict[str, str] = field(default_factory=dict)

    def daily(self) -> tuple[np.ndarray, np.ndarray]:
        """(UTC days as int64 days since the epoch, returns days × combinations): the hours of
        each UTC day compounded."""
        if not len(self.ts):
            return np.empty(0, np.int64), np.empty((0, self.returns.shape[1]))
        day = self.ts // (86_400 * 1_000_000_000)
        starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
        log = np.log1p(self.returns)
        return day[starts], np.expm1(np.add.reduceat(log, starts, axis=0))


def _axes(summary_path) -> list[str]:
    return [a["name"] for a in json.loads(summary_path.read_text())["axes"]]


def read_sweep_returns(lake: Lake, strategy: str, symbol: str, months: list[str]) -> SweepReturns:
    """The hourly returns of every combination of ``strategy``'s sweeps of ``symbol`` over
    ``months`` (read in time order; months without returns are listed in ``missing``, not
    filled). Raises :class:`SweepReturnsError` naming the file when a returns file does not
    match its grid, or when the months were swept with different grids."""
    combos: pl.DataFrame | None = None
    first = ""
    ts_parts: list[np.ndarray] = []
    ret_parts: list[np.ndarray] = []
    read: list[str] = []
    missing: dict[str, str] = {}
    for month in sorted(months):
        d = lake.sweep_dir(strategy, symbol, month)
        path = d / FILE
        if not (d / "manifest.json").exists():
            missing[month] = f"no sweep_{strategy} slice for {month}|{symbol}"
            continue
        if not path.exists():
            summary = json.loads((d / "summary.json").read_text())
            missing[month] = (f"the sweep ranked nothing: {summary['reason']}" if summary.get("reason")
                              else f"{d}: written before the sweeps kept their returns (re-materialise sweep_{strategy})")
            continue
        names = _axes(d / "summary.json")
        grid = pl.read_parquet(d / "grid.parquet").select("combo", *names).sort("combo")
        if combos is None:
            combos, first = grid, month
        elif not grid.equals(combos):
            raise SweepReturnsError(f"{d / 'grid.parquet'}: its grid differs from {first}'s; read months swept with one grid")
        df = pl.read_parquet(path)
        if dict(df.schema) != SCHEMA:
            raise SweepReturnsError(f"{path}: columns {dict(df.schema)}, expected {SCHEMA}")
        n = grid.height
        if n == 0 or df.height % n:
            raise SweepReturnsError(f"{path}: {df.height} rows is not a whole number of hours for {n} combinations")
        df = df.sort("combo", "ts")
        combo = df["combo"].to_numpy().reshape(n, -1)
        ts = df["ts"].to_numpy().reshape(n, -1)
        if not (combo == np.arange(n)[:, None]).all() or not (ts == ts[0]).all():
            raise SweepReturnsError(f"{path}: every combination 0..{n - 1} must have the same hours")
        if ts_parts and len(ts[0]) and ts[0][0] <= ts_parts[-1][-1]:
            raise SweepReturnsError(f"{path}: its hours overlap the previous month's")
        ts_parts.append(ts[0])
        ret_parts.append(df["return"].to_numpy().reshape(n, -1).T.astype(np.float64))
        read.append(month)
    if combos is None:
        return SweepReturns(pl.DataFrame(schema={"combo": pl.Int64}), np.empty(0, np.int64), np.empty((0, 0)), [], missing)
    return SweepReturns(combos, np.concatenate(ts_parts), np.vstack(ret_parts), read, missing)
