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

Units: the vectorised form of ``ema_cross`` reads its EMA lengths in **bars** of the bar
interval, as the event-driven strategy does on NautilusTrader's time bars of the same interval
(``bar_s``): one signal in both engines. It runs on the bars that hold a quote (the mid bars
NautilusTrader builds; bars with trades only carry no mid). A decision is taken on a bar's
close (``mid_close``) and **executed at the next bar's first quote** (``ask_open`` to buy,
``bid_open`` to sell): never at the price that produced the signal. The position is
``notional`` quote currency at the decision's mid, rounded down to the instrument's lot (at
least one lot) when ``lot`` is given, as the event-driven strategy sizes it; each order pays
the instrument's taker fee.

Warm-up: the previous month's last bars (``history``) run through the indicators first, and a
combination decides nothing until its slow EMA has seen its declared warm-up
(:meth:`~quant_assets.strategies.spec.StrategySpec.warmup`: three slow lengths): a month without
history waits that long into itself, as the event-driven strategy does.
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


@dataclass(frozen=True)
class BarPath:
    """The bars a vectorised strategy runs on, as aligned arrays (one row per bar with a quote):
    ``ts`` bar start (ns), ``close`` the bar's last mid, ``bid_open``/``ask_open`` its first
    quote, ``bid_close``/``ask_close`` its last (quote currency), ``open_ts`` when its first quote
    arrived (ns). The first ``history`` rows are
    the previous month's end: indicators only, never a decision."""

    ts: np.ndarray
    close: np.ndarray
    bid_open: np.ndarray
    ask_open: np.ndarray
    bid_close: np.ndarray
    ask_close: np.ndarray
    open_ts: np.ndarray
    history: int = 0

    def __len__(self) -> int:
        return len(self.close)

    def month(self) -> BarPath:
        """The month's own rows (without the history)."""
        h = self.history
        return BarPath(self.ts[h:], self.close[h:], self.bid_open[h:], self.ask_open[h:], self.bid_close[h:],
                       self.ask_close[h:], self.open_ts[h:], 0)


def quote_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """The bars that hold a quote (the strategies' mid bars)."""
    return bars.filter(pl.col("mid_close").is_not_null() & pl.col("bid_open").is_not_null() & pl.col("ask_open").is_not_null())


def bar_path(bars: pl.DataFrame, history: pl.DataFrame | None = None) -> BarPath:
    """The month's quote bars, after ``history`` (the previous month's last quote bars, or None)."""
    parts = [quote_bars(history)] if history is not None and history.height else []
    h = parts[0].height if parts else 0
    df = pl.concat([*parts, quote_bars(bars)], how="diagonal_relaxed") if parts else quote_bars(bars)
    col = lambda c: df[c].cast(pl.Float64).to_numpy()  # noqa: E731
    return BarPath(df["ts"].to_numpy(), col("mid_close"), col("bid_open"), col("ask_open"), col("bid_close"),
                   col("ask_close"), df["quote_open_ts"].to_numpy(), h)


def ema_cross_orders(path: BarPath, fast: np.ndarray, slow: np.ndarray, start: np.ndarray, notional: float,
                     lot: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Target amounts (bars × combinations, base units) of EMA crosses on ``path``: at each bar
    ``i >= start[j]`` (column j's first decision: past the history and its warm-up) the side is
    +1 when the fast EMA is above the slow one, -1 when below, unchanged when equal; a change of
    side becomes an order of ``side × notional / close[i]`` (rounded down to ``lot``, at least
    one) **at bar i + 1**, the next bar: NaN (no order) elsewhere. The last bar decides nothing
    (no bar follows it). Also returns the indices of the bars where any column has an order.
    Fill prices: :func:`order_prices`."""
    # Column-major (Fortran) arrays: every kernel here and in vectorbt walks one column at a
    # time, so a column must be contiguous in memory.
    amount = np.full(fast.shape, np.nan, order="F")
    has_order = np.zeros(len(path), dtype=np.bool_)
    _orders_kernel()(path.close, np.asfortranarray(fast), np.asfortranarray(slow), np.asarray(start, dtype=np.int64),
                     notional, float(lot or 0.0), amount, has_order)
    return amount, np.flatnonzero(has_order)


def order_prices(amount: np.ndarray, bid_open: np.ndarray, ask_open: np.ndarray) -> np.ndarray:
    """Taker fill prices of ``amount``'s orders at their bar's first quote: the ask to buy, the
    bid to sell (NaN where there is no order)."""
    return np.where(amount > 0, ask_open[:, None], np.where(amount < 0, bid_open[:, None], np.nan))


def history_needed(spec: StrategySpec, axes: tuple[Axis, ...], interval_s: float) -> int:
    """Bars of the previous month a sweep of ``axes`` reads: the longest warm-up of its grid."""
    combos = combinations(spec, axes)
    return int(warmups(spec, combos, interval_s).max()) if combos else 0


def warmups(spec: StrategySpec, combos: list[dict[str, Any]], interval_s: float) -> np.ndarray:
    """Per combination, the bars its warm-up declares (:meth:`StrategySpec.warmup`, on bars of
    the sweep's interval)."""
    bar_s = {"bar_s": int(interval_s)} if any(p.name == "bar_s" for p in spec.params) else {}
    return np.array([spec.warmup({**c, **bar_s}).count for c in combos], dtype=np.int64)


def warm_plan(spec: StrategySpec, combos: list[dict[str, Any]], history: int, interval_s: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per combination (first input, first decision), bar indices on a path with ``history``
    bars of the previous month: its indicators start at its own warm-up's first bar (the
    event-driven strategy is fed exactly its declared warm-up, so its EMAs start there too), and
    it decides from the month's first bar once it has seen its warm-up, or later in the month."""
    need = warmups(spec, combos, interval_s)
    first_input = np.maximum(0, history - need)
    return first_input, np.maximum(history, first_input + need - 1)


def warm_starts(spec: StrategySpec, combos: list[dict[str, Any]], history: int, interval_s: float) -> np.ndarray:
    """Per combination, the first bar that may decide (see :func:`warm_plan`)."""
    return warm_plan(spec, combos, history, interval_s)[1]


def ema_columns(close: np.ndarray, windows: np.ndarray, first_input: np.ndarray) -> np.ndarray:
    """EMAs (bars × columns) of ``close`` with ``windows[j]`` starting at ``first_input[j]``
    (NaN before): vectorbt's ``MA`` (ewm, the event-driven EMA's definition: alpha 2/(n+1), seeded
    with its first input, defined from the n-th), computed once per distinct (start, window)."""
    import pandas as pd
    import vectorbt as vbt

    out = np.full((len(close), len(windows)), np.nan, order="F")
    for a in np.unique(first_input):
        cols = np.flatnonzero(first_input == a)
        wins = sorted({int(w) for w in windows[cols]})
        ma = vbt.MA.run(pd.Series(close[a:]), window=wins, ewm=True).ma.to_numpy()
        ma = ma.reshape(len(close) - a, len(wins))
        for j in cols:
            out[a:, j] = ma[:, wins.index(int(windows[j]))]
    return out


_KERNEL = None


def _orders_kernel():
    """The per-bar rule as a numba loop (compiled once per process): a plain loop over bars is
    what the rule is, and numpy's vectorised form of "keep the previous side" costs more than
    the simulation."""
    global _KERNEL
    if _KERNEL is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def kernel(close, fast, slow, start, notional, lot, amount, has_order):  # pragma: no cover - numba
            n, m = fast.shape
            for j in range(m):
                side = 0.0
                for i in range(start[j], n - 1):
                    d = fast[i, j] - slow[i, j]
                    if d != d:  # NaN: the slow EMA is not ready yet
                        continue
                    want = 1.0 if d > 0 else (-1.0 if d < 0 else side)
                    if want != side and want != 0.0:
                        q = notional / close[i]
                        if lot > 0.0:
                            # as the event-driven strategy sizes it: whole lots, at least one
                            q = max(1, int(q / lot)) * lot
                        amount[i + 1, j] = want * q
                        has_order[i + 1] = True
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
              interval_s: float = 60.0, settings: SweepSettings = SweepSettings(), axes: tuple[Axis, ...] | None = None,
              history: pl.DataFrame | None = None, lot: float | None = None) -> SweepResult:
    """Sweep ``spec``'s grid on ``bars`` (see the module docstring), after ``history`` (the
    previous month's last bars: warm-up only), sizing orders in whole ``lot`` units when given."""
    import pandas as pd

    axes = axes or GRIDS[spec.name]
    combos = combinations(spec, axes)
    if not combos:
        raise ValueError(f"{spec.name}: no grid combination passes the parameter rules")
    path = bar_path(bars, history)
    month = path.month()
    if len(month) < MIN_BARS:
        # Too little data to rank anything: an empty, explained result rather than a failed run.
        empty = pl.DataFrame(schema={"combo": pl.Int64, **{a.name: pl.Float64 for a in axes}, "total_return": pl.Float64,
                                     "sharpe": pl.Float64, "max_drawdown": pl.Float64, "trades": pl.Int64,
                                     "orders": pl.Int64, "fees": pl.Float64, "rank": pl.UInt32})
        reason = f"{len(month)} bars with a quote: a sweep needs at least {MIN_BARS}"
        return SweepResult(empty, {"top": [], "n_trials": 0, "var_sharpe_annual": None, "spa_pvalue": None, "reason": reason,
                                   "combinations": 0, "bars": len(month), "history_bars": path.history,
                                   "interval_s": interval_s, "fee": fee, "axes": [a.__dict__ for a in axes],
                                   "starting_cash": starting_cash}, np.empty((0, 0)))
    # tz-naive UTC: a tz-aware index makes vectorbt convert it to objects on every wrap.
    index = pd.DatetimeIndex(pd.to_datetime(month.ts, unit="ns"))
    first_input, starts = warm_plan(spec, combos, path.history, interval_s)
    fasts = np.array([c["fast_period"] for c in combos])
    slows = np.array([c["slow_period"] for c in combos])
    freq = pd.Timedelta(seconds=interval_s)
    cols: dict[str, list] = {k: [] for k in ("total_return", "sharpe", "max_drawdown", "trades", "orders", "fees")}
    ann_factor = trading_days * 86_400.0 / interval_s
    # Everything alive now (libraries, the bars) is moved out of the collector's sight, so the
    # collection after each chunk scans only that chunk's objects.
    gc.freeze()
    try:
        hourly_parts = _sweep_chunks(combos, fasts, slows, first_input, starts, path, index, freq, fee, starting_cash,
                                     ann_factor, settings, cols, lot)
    finally:
        gc.unfreeze()
    hourly = np.hstack(hourly_parts)
    table = pl.DataFrame({"combo": np.arange(len(combos)), **{a.name: [c[a.name] for c in combos] for a in axes}, **cols})
    table = table.with_columns(pl.col("sharpe").fill_nan(None)).with_columns(
        pl.col("sharpe").rank("ordinal", descending=True).alias("rank")
    ).sort("rank", nulls_last=True)
    summary = _ranking_tests(table, hourly, trading_days, settings, [a.name for a in axes])
    cold = int(np.count_nonzero(starts > path.history))
    summary.update({"combinations": len(combos), "bars": len(month), "interval_s": interval_s, "fee": fee,
                    "axes": [a.__dict__ for a in axes], "notional": float(combos[0]["notional"]),
                    "starting_cash": starting_cash, "lot": lot, "history_bars": path.history,
                    "execution": "next bar's first quote (ask to buy, bid to sell)",
                    "warmup": {"history_bars": path.history, "combinations_waiting_in_month": cold,
                               "longest_wait_bars": int(max(0, starts.max() - path.history))}})
    # The month's hours only (the history is warm-up, never traded): hours[i] labels hourly[i].
    hours = np.unique(index.to_numpy().astype("datetime64[h]")).astype("datetime64[ns]").astype(np.int64)
    return SweepResult(table, summary, hourly, hours)


def _sweep_chunks(combos, fasts, slows, first_input, starts, path: BarPath, index, freq, fee, starting_cash, ann_factor,
                  settings, cols, lot) -> list[np.ndarray]:
    """Simulate the combinations chunk by chunk; fills ``cols``; returns hourly returns per chunk."""
    import vectorbt as vbt

    month = path.month()
    h = path.history
    hour = index.to_numpy().astype("datetime64[h]")
    hour_ends = np.flatnonzero(np.append(hour[1:] != hour[:-1], True))
    hourly_parts = []
    per_chunk = max(1, min(settings.chunk, settings.chunk_cells // max(1, len(path))))
    for part in _chunks(len(combos), per_chunk):
        ema_f = ema_columns(path.close, fasts[part], first_input[part])
        ema_s = ema_columns(path.close, slows[part], first_input[part])
        amount, rows = ema_cross_orders(path, ema_f, ema_s, starts[part], float(combos[0]["notional"]), lot)
        # Orders come after the history's last bar (decisions start there): the month's rows.
        amount, rows = amount[h:], rows - h
        n_cols = amount.shape[1]
        # vectorbt simulates only the bars where some column of the chunk trades: with target
        # amounts, an order depends on the cash and position left by the previous orders, never
        # on the bars between them, so the fills are the same as on every bar (the tests check
        # this against a plain loop) at a fraction of the cells.
        sub = amount[rows]
        pf = vbt.Portfolio.from_orders(
            close=month.close[rows][:, None], size=sub, size_type="targetamount",
            price=order_prices(sub, month.bid_open[rows], month.ask_open[rows]),
            fees=fee, init_cash=starting_cash, freq=freq,
            # Order records sized to the orders there are (the default is one per cell: GBs).
            max_orders=max(1, int(np.count_nonzero(sub == sub))), max_logs=0,
        )
        # The value array from the order records, and the metrics in one pass over it: vectorbt's
        # pandas wrappers (pf.value(), pf.returns(), .sharpe_ratio()) cost more than the simulation.
        records = pf.orders.values.copy()
        records["idx"] = rows[records["idx"]]
        value = _value_from_orders(records, month.close, n_cols, starting_cash)
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
        del pf, records, value, amount, sub, ema_f, ema_s
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

