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


#: Fewer bars than this (a day of minutes) and a slice is not swept: nothing could be ranked.
MIN_BARS = 1_440


@dataclass(frozen=True)
class SweepSettings:
    """``chunk`` combinations per vectorbt call; ``top_k`` candidates kept; SPA bootstrap
    ``spa_reps`` and ``seed``."""

    chunk: int = 100
    top_k: int = 3
    spa_reps: int = 500
    seed: int = 0


@dataclass
class SweepResult:
    table: pl.DataFrame  # one row per combination, ranked
    summary: dict[str, Any]
    hourly: np.ndarray = field(repr=False)  # hours × combinations, returns (for the SPA test)


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


def ema_cross_orders(close: np.ndarray, half: np.ndarray, fast: np.ndarray, slow: np.ndarray, notional: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Target amounts and fill prices (bars × combinations) of EMA crosses: +1 when the fast EMA
    is above the slow one, -1 below, unchanged when equal; no position until the slow EMA has
    ``slow_period`` bars. Amounts are NaN (no order) except where the target changes."""
    diff = fast - slow
    target = np.sign(diff)
    target[(diff == 0) | np.isnan(diff)] = np.nan
    # Equal EMAs keep the previous side: carry the last side forward.
    idx = np.where(np.isnan(target), 0, np.arange(len(target))[:, None])
    np.maximum.accumulate(idx, axis=0, out=idx)
    target = np.take_along_axis(target, idx, axis=0)
    prev = np.vstack([np.full((1, target.shape[1]), np.nan), target[:-1]])
    change = ~np.isnan(target) & ((target != prev) | np.isnan(prev))
    amount = np.where(change, target * notional / close[:, None], np.nan)
    price = close[:, None] + np.nan_to_num(target) * half[:, None]
    return amount, price


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
    ema_f = vbt.MA.run(close_s, window=fasts, ewm=True).ma.to_numpy()
    ema_s = vbt.MA.run(close_s, window=slows, ewm=True).ma.to_numpy()
    fi = np.array([fasts.index(c["fast_period"]) for c in combos])
    si = np.array([slows.index(c["slow_period"]) for c in combos])
    freq = pd.Timedelta(seconds=interval_s)
    cols: dict[str, list] = {k: [] for k in ("total_return", "sharpe", "max_drawdown", "trades", "orders", "fees")}
    hourly_parts = []
    ann_factor = trading_days * 86_400.0 / interval_s
    for part in _chunks(len(combos), settings.chunk):
        amount, price = ema_cross_orders(close, half, ema_f[:, fi[part]], ema_s[:, si[part]], float(combos[0]["notional"]))
        n_cols = amount.shape[1]
        pf = vbt.Portfolio.from_orders(
            close=close_s, size=pd.DataFrame(amount, index=index), size_type="targetamount", price=price, fees=fee,
            init_cash=starting_cash, freq=freq,
            # Order records sized to the orders there are (the default is one per cell: GBs).
            max_orders=max(1, int(np.isfinite(amount).sum())), max_logs=0,
        )
        # Metrics from vectorbt's numba kernels on the value array: its pandas wrappers
        # (pf.returns(), .sharpe_ratio()) cost more than the simulation itself.
        value = pf.value().to_numpy()
        rets = vbt.returns.nb.returns_nb(value, np.full(n_cols, starting_cash))
        cols["total_return"] += list(value[-1] / starting_cash - 1.0)
        cols["sharpe"] += list(vbt.returns.nb.sharpe_ratio_nb(rets, ann_factor))
        cols["max_drawdown"] += list(vbt.returns.nb.max_drawdown_nb(rets))
        cols["trades"] += list(pf.trades.count().to_numpy())
        cols["orders"] += list(pf.orders.count().to_numpy())
        cols["fees"] += list(pf.orders.fees.sum().to_numpy())
        hours = pd.DataFrame(rets, index=index)
        hourly_parts.append((1.0 + hours).resample("1h").prod().to_numpy() - 1.0)
        del pf, value, rets, hours, amount, price
        gc.collect()  # vectorbt's objects form cycles: without this a long sweep keeps every chunk
    hourly = np.hstack(hourly_parts)
    table = pl.DataFrame({"combo": np.arange(len(combos)), **{a.name: [c[a.name] for c in combos] for a in axes}, **cols})
    table = table.with_columns(pl.col("sharpe").fill_nan(None)).with_columns(
        pl.col("sharpe").rank("ordinal", descending=True).alias("rank")
    ).sort("rank", nulls_last=True)
    summary = _ranking_tests(table, hourly, trading_days, settings, [a.name for a in axes])
    summary.update({"combinations": len(combos), "bars": len(close), "interval_s": interval_s, "fee": fee,
                    "axes": [a.__dict__ for a in axes], "notional": float(combos[0]["notional"]),
                    "starting_cash": starting_cash})
    return SweepResult(table, summary, hourly)


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
    valid = ~np.isnan(hourly).any(axis=1)
    if valid.sum() > 10:
        spa = SPA(np.zeros(int(valid.sum())), -hourly[valid], reps=settings.spa_reps, block_size=24, seed=settings.seed)
        spa.compute()
        spa_p = float(spa.pvalues["consistent"])
    return {"top": top, "n_trials": n, "var_sharpe_annual": var_sharpe, "spa_pvalue": spa_p,
            "spa_benchmark": "flat (zero returns)", "ranking_returns": "hourly, compounded from bar returns"}

