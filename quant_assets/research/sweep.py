"""Vectorised parameter sweeps on bars (vectorbt 1.0), ranked with multiple testing in mind.

A sweep runs every combination of a strategy's declared grid (:data:`GRIDS`, beside the
registry's parameters) on one slice of bars, in chunks of columns so memory stays bounded
(vectorbt objects form reference cycles: ``gc.collect()`` after each chunk). Per combination:
total return, Sharpe, maximum drawdown, trades, fees. Then, because the best of N tries is
biased upwards:

- the deflated Sharpe ratio (Bailey & López de Prado, vectorbt's implementation) of the top
  combinations, with N = the number of combinations and the variance of the Sharpe ratio
  observed across them;
- Hansen's SPA test (``arch``) of "the best combination beats staying flat", on hourly returns,
  its p-value reported with the ranking.

Units: the vectorised form of ``ema_cross`` reads its EMA lengths in **bars** (1 bar = the bar
interval) where the event-driven strategy reads quote updates; the bar slice's quotes per bar
converts one into the other when candidates are handed to the event-driven engine. Fills are
taken at the bar's last mid ± half its last spread (the taker price), with the instrument's
taker fee; the position is ``notional`` quote currency at each switch, as in the event-driven
strategy.
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_assets.strategies.registry import SWEEP_GRIDS as GRIDS
from quant_assets.strategies.spec import Axis, ParamError, StrategySpec


#: Most periods the SPA test bootstraps (about a month of hours).
MAX_SPA_PERIODS = 1_000
#: Fewer bars than this (a day of minutes) and a slice is not swept: nothing could be ranked.
MIN_BARS = 1_440


@dataclass(frozen=True)
class SweepSettings:
    """Combinations per vectorbt call: as many as fit ``chunk_cells`` bars × combinations (about
    8 bytes × a few arrays each: 5M cells keep a chunk near 200 MB whatever the slice's length),
    at most ``chunk``; ``top_k`` candidates kept; SPA bootstrap ``spa_reps`` and ``seed``."""

    chunk: int = 100
    chunk_cells: int = 5_000_000
    top_k: int = 3
    spa_reps: int = 500
    seed: int = 0


@dataclass
class SweepResult:
    table: pl.DataFrame  # one row per combination, ranked
    summary: dict[str, Any]
    hourly: np.ndarray = field(repr=False)  # hours × combinations, returns (for the SPA test)
    #: Start of each row's UTC hour (int64 ns): ``hourly[i]`` is the return over hour ``hours[i]``
    #: (value at its last bar over the value at the previous hour's last bar; the first hour
    #: over the starting cash). Hours without a bar have no row.
    hours: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)


def combinations(spec: StrategySpec, axes: tuple[Axis, ...]) -> list[dict[str, Any]]:
    """Every grid point that the strategy's parameter rules accept (types, ranges, constraints)."""
    out = []
    for values in itertools.product(*(a.values() for a in axes)):
        params = {a.name: v for a, v in zip(axes, values, strict=True)}
        try:
            out.append({**spec.resolved(params), **{k: spec.param(k).coerce(spec.name, v) for k, v in params.items()}})
        except ParamError:
            continue
    return out


def bar_inputs(bars: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts ns, mid close, half spread) from bars, carried forward over bars without a quote;
    bars before the first quote are dropped."""
    df = bars.select("ts", pl.col("mid_close").forward_fill(), (pl.col("spread_close").forward_fill() / 2).alias("half"))
    df = df.filter(pl.col("mid_close").is_not_null()).with_columns(pl.col("half").fill_null(0.0))
    return df["ts"].to_numpy(), df["mid_close"].to_numpy(), df["half"].to_numpy()


def ema_cross_orders(close: np.ndarray, fast: np.ndarray, slow: np.ndarray, notional: float) -> tuple[np.ndarray, np.ndarray]:
    """Target amounts (bars × combinations, base units) of EMA crosses: +1 × notional / mid when
    the fast EMA is above the slow one, -1 × when below, unchanged when equal; no position until
    the slow EMA has ``slow_period`` bars (it is NaN before). NaN (no order) except where the
    target changes. The fill price of an order is the mid plus half the spread in the order's
    direction, the sign of its amount (see :func:`order_prices`). Also returns the indices of
    the bars where any column has an order."""
    # Column-major (Fortran) arrays: every kernel here and in vectorbt walks one column at a
    # time, so a column must be contiguous in memory.
    amount = np.full(fast.shape, np.nan, order="F")
    has_order = np.zeros(len(close), dtype=np.bool_)
    _orders_kernel()(close, np.asfortranarray(fast), np.asfortranarray(slow), notional, amount, has_order)
    return amount, np.flatnonzero(has_order)


def order_prices(amount: np.ndarray, close: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Taker fill prices of ``amount``'s orders: mid ± half spread (NaN where there is no order)."""
    return close[:, None] + np.sign(amount) * half[:, None]


_KERNEL = None


def _orders_kernel():
    """The per-bar rule as a numba loop (compiled once per process): a plain loop over bars is
    what the rule is, and numpy's vectorised form of "keep the previous side" costs more than
    the simulation."""
    global _KERNEL
    if _KERNEL is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def kernel(close, fast, slow, notional, amount, has_order):  # pragma: no cover - numba
            n, m = fast.shape
            for j in range(m):
                side = 0.0
                for i in range(n):
                    d = fast[i, j] - slow[i, j]
                    if d != d:  # NaN: the slow EMA is not ready yet
                        continue
                    want = 1.0 if d > 0 else (-1.0 if d < 0 else side)
                    if want != side and want != 0.0:
                        amount[i, j] = want * notional / close[i]
                        has_order[i] = True
                        side = want

        _KERNEL = kernel
    return _KERNEL


_METRICS = None


def value_metrics(value: np.ndarray, cash0: float, ann_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """(Sharpe, max drawdown) per column of a value array (bars × combinations, quote currency),
    the definitions of vectorbt's ``returns_nb`` + ``sharpe_ratio_nb`` (ddof 1, annualised by
    ``ann_factor``) and ``max_drawdown_nb``, fused into one pass per column: the three library
    kernels each walk the whole array, which costs more than the simulation. The tests pin the
    results to vectorbt's. A column whose returns have no variance has no Sharpe (NaN, where
    vectorbt returns infinity)."""
    global _METRICS
    if _METRICS is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def kernel(value, cash0, ann_factor, sharpe, mdd):  # pragma: no cover - numba
            n, m = value.shape
            for j in range(m):
                prev, s1, s2, peak, worst = cash0, 0.0, 0.0, value[0, j], 0.0
                for i in range(n):
                    v = value[i, j]
                    r = v / prev - 1.0
                    prev = v
                    s1 += r
                    s2 += r * r
                    if v > peak:
                        peak = v
                    dd = v / peak - 1.0
                    if dd < worst:
                        worst = dd
                mean = s1 / n
                var = (s2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
                sharpe[j] = mean / np.sqrt(var) * np.sqrt(ann_factor) if var > 1e-30 else np.nan
                mdd[j] = worst

        _METRICS = kernel
    sharpe = np.empty(value.shape[1])
    mdd = np.empty(value.shape[1])
    _METRICS(np.asfortranarray(value), cash0, ann_factor, sharpe, mdd)
    return sharpe, mdd


def _value_from_orders(records: np.ndarray, close: np.ndarray, n_cols: int, cash0: float) -> np.ndarray:
    """Portfolio value (bars × columns) from vectorbt's order records: cash and position change
    only at orders, so a cumulative sum of the changes, marked at ``close``, is the value
    vectorbt's ``Portfolio.value()`` computes (at a fraction of its cost for wide sweeps)."""
    d_pos = np.zeros((len(close), n_cols), order="F")
    d_cash = np.zeros((len(close), n_cols), order="F")
    sign = np.where(records["side"] == 0, 1.0, -1.0)  # OrderSide.Buy = 0
    np.add.at(d_pos, (records["idx"], records["col"]), sign * records["size"])
    np.add.at(d_cash, (records["idx"], records["col"]), -sign * records["size"] * records["price"] - records["fees"])
    np.cumsum(d_cash, axis=0, out=d_cash)
    np.cumsum(d_pos, axis=0, out=d_pos)
    d_pos *= close[:, None]
    d_pos += d_cash
    d_pos += cash0
    return d_pos


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def run_sweep(bars: pl.DataFrame, spec: StrategySpec, fee: float, trading_days: int, starting_cash: float,
              interval_s: float = 60.0, settings: SweepSettings = SweepSettings(), axes: tuple[Axis, ...] | None = None
              ) -> SweepResult:
    """Sweep ``spec``'s grid on ``bars`` (see the module docstring)."""
    import pandas as pd
    import vectorbt as vbt

    axes = axes or GRIDS[spec.name]
    combos = combinations(spec, axes)
    if not combos:
        raise ValueError(f"{spec.name}: no grid combination passes the parameter rules")
    ts, close, half = bar_inputs(bars)
    if len(close) < MIN_BARS:
        # Too little data to rank anything: an empty, explained result rather than a failed run.
        empty = pl.DataFrame(schema={"combo": pl.Int64, **{a.name: pl.Float64 for a in axes}, "total_return": pl.Float64,
                                     "sharpe": pl.Float64, "max_drawdown": pl.Float64, "trades": pl.Int64,
                                     "orders": pl.Int64, "fees": pl.Float64, "rank": pl.UInt32})
        reason = f"{len(close)} bars with a quote: a sweep needs at least {MIN_BARS}"
        return SweepResult(empty, {"top": [], "n_trials": 0, "var_sharpe_annual": None, "spa_pvalue": None, "reason": reason,
                                   "combinations": 0, "bars": len(close), "interval_s": interval_s, "fee": fee,
                                   "axes": [a.__dict__ for a in axes], "starting_cash": starting_cash}, np.empty((0, 0)))
    # tz-naive UTC: a tz-aware index makes vectorbt convert it to objects on every wrap.
    index = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns"))
    close_s = pd.Series(close, index=index)
    fasts = sorted({c["fast_period"] for c in combos})
    slows = sorted({c["slow_period"] for c in combos})
    # Stored one EMA per row: taking a chunk's rows and transposing gives column-major
    # (bars × combinations) arrays without a copy.
    ema_f = np.ascontiguousarray(vbt.MA.run(close_s, window=fasts, ewm=True).ma.to_numpy().T)
    ema_s = np.ascontiguousarray(vbt.MA.run(close_s, window=slows, ewm=True).ma.to_numpy().T)
    fi = np.array([fasts.index(c["fast_period"]) for c in combos])
    si = np.array([slows.index(c["slow_period"]) for c in combos])
    freq = pd.Timedelta(seconds=interval_s)
    cols: dict[str, list] = {k: [] for k in ("total_return", "sharpe", "max_drawdown", "trades", "orders", "fees")}
    ann_factor = trading_days * 86_400.0 / interval_s
    # Everything alive now (libraries, the bars) is moved out of the collector's sight, so the
    # collection after each chunk scans only that chunk's objects.
    gc.freeze()
    try:
        hourly_parts = _sweep_chunks(combos, fi, si, ema_f, ema_s, close, half, index, freq, fee, starting_cash,
                                     ann_factor, settings, cols)
    finally:
        gc.unfreeze()
    hourly = np.hstack(hourly_parts)
    table = pl.DataFrame({"combo": np.arange(len(combos)), **{a.name: [c[a.name] for c in combos] for a in axes}, **cols})
    table = table.with_columns(pl.col("sharpe").fill_nan(None)).with_columns(
        pl.col("sharpe").rank("ordinal", descending=True).alias("rank")
    ).sort("rank", nulls_last=True)
    summary = _ranking_tests(table, hourly, trading_days, settings, [a.name for a in axes])
    summary.update({"combinations": len(combos), "bars": len(close), "interval_s": interval_s, "fee": fee,
                    "axes": [a.__dict__ for a in axes], "notional": float(combos[0]["notional"]),
                    "starting_cash": starting_cash})
    hours = np.unique(index.to_numpy().astype("datetime64[h]")).astype("datetime64[ns]").astype(np.int64)
    return SweepResult(table, summary, hourly, hours)


def _sweep_chunks(combos, fi, si, ema_f, ema_s, close, half, index, freq, fee, starting_cash, ann_factor,
                  settings, cols) -> list[np.ndarray]:
    """Simulate the combinations chunk by chunk; fills ``cols``; returns hourly returns per chunk."""
    import vectorbt as vbt

    hour = index.to_numpy().astype("datetime64[h]")
    hour_ends = np.flatnonzero(np.append(hour[1:] != hour[:-1], True))
    hourly_parts = []
    per_chunk = max(1, min(settings.chunk, settings.chunk_cells // max(1, len(close))))
    for part in _chunks(len(combos), per_chunk):
        amount, rows = ema_cross_orders(close, ema_f[fi[part]].T, ema_s[si[part]].T, float(combos[0]["notional"]))
        n_cols = amount.shape[1]
        # vectorbt simulates only the bars where some column of the chunk trades: with target
        # amounts, an order depends on the cash and position left by the previous orders, never
        # on the bars between them, so the fills are the same as on every bar (the tests check
        # this against a plain loop) at a fraction of the cells.
        sub = amount[rows]
        pf = vbt.Portfolio.from_orders(
            close=close[rows][:, None], size=sub, size_type="targetamount", price=order_prices(sub, close[rows], half[rows]),
            fees=fee, init_cash=starting_cash, freq=freq,
            # Order records sized to the orders there are (the default is one per cell: GBs).
            max_orders=max(1, int(np.count_nonzero(sub == sub))), max_logs=0,
        )
        # The value array from the order records, and the metrics in one pass over it: vectorbt's
        # pandas wrappers (pf.value(), pf.returns(), .sharpe_ratio()) cost more than the simulation.
        records = pf.orders.values.copy()
        records["idx"] = rows[records["idx"]]
        value = _value_from_orders(records, close, n_cols, starting_cash)
        sharpe, mdd = value_metrics(value, starting_cash, ann_factor)
        cols["total_return"] += list(value[-1] / starting_cash - 1.0)
        cols["sharpe"] += list(sharpe)
        cols["max_drawdown"] += list(mdd)
        orders = np.bincount(records["col"], minlength=n_cols)
        # Each order after the first closes the open trade and opens the next (always in the market).
        cols["trades"] += list(orders)
        cols["orders"] += list(orders)
        cols["fees"] += list(np.bincount(records["col"], weights=records["fees"], minlength=n_cols))
        # Hourly returns compounded from the bars' = value at each hour's last bar over the previous one.
        marks = value[hour_ends]
        hourly_parts.append(np.vstack([marks[:1] / starting_cash, marks[1:] / marks[:-1]]) - 1.0)
        del pf, records, value, amount, sub
        gc.collect()  # vectorbt's objects form cycles: without this a long sweep keeps every chunk
    return hourly_parts


def _ranking_tests(table: pl.DataFrame, hourly: np.ndarray, trading_days: int, settings: SweepSettings,
                   names: list[str]) -> dict[str, Any]:
    """Deflated Sharpe of the top combinations and Hansen's SPA p-value of the best."""
    import pandas as pd
    import vectorbt as vbt  # noqa: F401  (the .vbt accessor)
    from arch.bootstrap import SPA

    n = table.height
    per_year = 24 * trading_days
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = hourly.std(axis=0, ddof=1)
        sharpe_h = np.where(sd > 0, hourly.mean(axis=0) / sd * math.sqrt(per_year), np.nan)
    finite = sharpe_h[np.isfinite(sharpe_h)]
    var_sharpe = float(np.var(finite, ddof=1)) if len(finite) > 1 else None
    top = []
    for row in table.head(settings.top_k).iter_rows(named=True):
        col = row["combo"]  # ``hourly`` columns are in grid order
        x = pd.Series(hourly[:, col]).dropna()
        dsr = None
        if var_sharpe and len(x) > 2 and float(x.std()) > 0 and n > 1:
            acc = x.vbt.returns(freq=pd.Timedelta(hours=1), year_freq=pd.Timedelta(days=trading_days))
            value = float(acc.deflated_sharpe_ratio(nb_trials=n, var_sharpe=var_sharpe))
            dsr = value if math.isfinite(value) else None
        top.append({**{k: row[k] for k in names}, "rank": row["rank"], "sharpe": row["sharpe"],
                    "total_return": row["total_return"], "trades": row["trades"], "deflated_sharpe": dsr,
                    "hourly_sharpe": float(sharpe_h[col]) if math.isfinite(sharpe_h[col]) else None})
    spa_p = None
    valid = hourly[~np.isnan(hourly).any(axis=1)]
    # The SPA bootstrap costs periods × combinations × reps: past MAX_SPA_PERIODS hours the
    # hourly returns are compounded into periods of several hours (12 months: 9 h periods).
    hours_per = max(1, math.ceil(len(valid) / MAX_SPA_PERIODS))
    if hours_per > 1:
        cut = len(valid) // hours_per * hours_per
        valid = np.prod(1.0 + valid[:cut].reshape(-1, hours_per, valid.shape[1]), axis=1) - 1.0
    if len(valid) > 10:
        spa = SPA(np.zeros(len(valid)), -valid, reps=settings.spa_reps, block_size=max(1, 24 // hours_per), seed=settings.seed)
        spa.compute()
        spa_p = float(spa.pvalues["consistent"])
    return {"top": top, "n_trials": n, "var_sharpe_annual": var_sharpe, "spa_pvalue": spa_p, "spa_period_hours": hours_per,
            "spa_benchmark": "flat (zero returns)", "ranking_returns": "hourly, compounded from bar returns"}

