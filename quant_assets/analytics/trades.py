"""Trades of a backtest slice, from vectorbt 1.0, with the market context of each entry.

:func:`portfolio` replays the stored fills through ``vbt.Portfolio.from_orders``: one order per
fill (signed size in base units, the fill price, the fee in quote currency as a fixed fee),
valued at the sampled mid, starting from the slice's starting cash. vectorbt pairs entries with
exits (its *exit trades*: each reducing fill closes part of the position against the average
entry price, a reversal is split into an exit and an entry, fees are shared pro rata), and
:func:`trade_table` turns its records into a table with real timestamps.

Trade PnL is net of fees, in quote currency; ``return`` is vectorbt's PnL over the entry
notional; ``return_on_equity`` is PnL over the account's equity at entry (what a trade did to
the account: the Monte Carlo reshuffle of the roll-up compounds these). Holding times are
measured on timestamps (ns), not on vectorbt's bar counts, as the index is irregular.

:func:`market_context` adds, per trade: UTC hour and weekday of the entry, the quoted spread at
entry (quote currency and bps of the mid, from the ``ticks`` partition), the realised volatility
of the mid over the hour before entry (annualised) and its regime (low / normal / high).
:func:`regime_summary` gives the month's time, PnL and trades per regime.

**No look-ahead in the regimes.** A sample's regime compares its volatility with tercile cut
points computed only from the volatility *before* it in the same month (an expanding window:
each month is its own run, started flat, so its history starts with it). The cut points are
refreshed every :data:`REGIME_GRID_S` from the volatility sampled on that grid (the last sample
of each step: a month of 1-second equity keeps the cost of a month of minutes), and a sample
uses those of the last grid point at or before it, which read grid points strictly before that
one. Until :data:`REGIME_MIN_HISTORY_S` of volatility history exists (the first day of each
month, cold start) a sample's regime is null, counted as ``unknown``: no regime is invented
from data that lies ahead. Whole-month terciles would have labelled the first hours of a month
by how volatile its last weeks turned out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from quant_assets.analytics.periods import MetricSet
from quant_assets.analytics.returns import NS_PER_S

#: Window of the realised volatility that sets the regime at each sample.
VOL_WINDOW_S = 3_600
#: Volatility history (seconds) a month needs before a sample gets a regime (the cold start).
REGIME_MIN_HISTORY_S = 86_400
#: How often the regimes' tercile cut points are refreshed from the past (seconds).
REGIME_GRID_S = 60
REGIMES = ("low", "normal", "high")

TRADE_STATS = ("trades", "trade_win_rate", "expectancy", "avg_win", "avg_loss", "avg_holding_s", "best_trade", "worst_trade")

TRADE_SCHEMA: dict[str, pl.DataType] = {
    "trade_id": pl.Int64(), "direction": pl.Int8(), "size": pl.Float64(),
    "entry_ts": pl.Int64(), "exit_ts": pl.Int64(), "duration_s": pl.Float64(),
    "entry_price": pl.Float64(), "exit_price": pl.Float64(), "fees": pl.Float64(),
    "pnl": pl.Float64(), "return": pl.Float64(),
}


def _order_index(fills: pl.DataFrame, equity: pl.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """The portfolio's index (the fills, plus the first and last equity samples, unique and
    sorted), the row of each fill in it, and the mid at each row (last sample at or before,
    else the first). Trades need only the fill rows (they use fill prices); the last sample
    values the (flat) account at the end. Leaving the other samples out keeps a month of
    1-second equity from costing vectorbt millions of rows."""
    fill_ts = fills["ts"].to_numpy()
    # Partial fills share a timestamp; vectorbt takes one order per row, so the k-th fill of a
    # nanosecond moves k ns later (invisible at any holding time we report).
    rank = fills.select(pl.int_range(pl.len()).over("ts")).to_series().to_numpy()
    fill_ts = fill_ts + rank
    sample_ts = equity["ts"].to_numpy()
    index = np.union1d(sample_ts[[0, -1]], fill_ts)
    rows = np.searchsorted(index, fill_ts)
    src = np.searchsorted(sample_ts, index, side="right") - 1
    mid = equity["mid"].to_numpy()[np.maximum(src, 0)]
    return pd.DatetimeIndex(index.astype("datetime64[ns]")), rows, mid


def portfolio(fills: pl.DataFrame, equity: pl.DataFrame, starting_cash: float, interval_s: float):
    """``vbt.Portfolio.from_orders`` over the fills (see the module docstring)."""
    import vectorbt as vbt

    index, rows, mid = _order_index(fills, equity)
    n = len(index)
    size = np.full(n, np.nan)
    price = np.full(n, np.nan)
    fixed = np.zeros(n)
    size[rows] = fills["side"].cast(pl.Float64).to_numpy() * fills["qty"].to_numpy()
    price[rows] = fills["price"].to_numpy()
    fixed[rows] = fills["fee"].to_numpy()
    close = pd.Series(mid, index=index)
    return vbt.Portfolio.from_orders(
        close, size=size, price=price, fixed_fees=fixed, size_type="amount", direction="both",
        init_cash=starting_cash, freq=pd.Timedelta(seconds=interval_s), max_orders=len(fills) + 1,
    )


def trade_table(pf) -> pl.DataFrame:
    """Closed exit trades of ``pf`` as a :data:`TRADE_SCHEMA` frame, in entry order."""
    rec = pf.trades.values
    rec = rec[rec["status"] == 1]  # 1 = closed; a month ends flat, so this drops nothing
    ts = pf.wrapper.index.asi8
    entry_ts, exit_ts = ts[rec["entry_idx"]], ts[rec["exit_idx"]]
    return pl.DataFrame(
        {
            "trade_id": rec["id"].astype(np.int64),
            "direction": np.where(rec["direction"] == 0, 1, -1).astype(np.int8),  # 0 long, 1 short
            "size": rec["size"],
            "entry_ts": entry_ts,
            "exit_ts": exit_ts,
            "duration_s": (exit_ts - entry_ts) / NS_PER_S,
            "entry_price": rec["entry_price"],
            "exit_price": rec["exit_price"],
            "fees": rec["entry_fees"] + rec["exit_fees"],
            "pnl": rec["pnl"],
            "return": rec["return"],
        },
        schema=TRADE_SCHEMA,
    ).sort("entry_ts", "trade_id")


def vectorbt_trade_stats(pf, table: pl.DataFrame) -> MetricSet:
    """Trade statistics from vectorbt's own methods (PnL in quote currency, net of fees)."""
    m = MetricSet()
    trades = pf.trades.closed
    n = int(trades.count())
    m.put("trades", n)
    if n == 0:
        m.undefined(TRADE_STATS[1:], "no closed trade")
        return m
    m.put("trade_win_rate", trades.win_rate())
    m.put("expectancy", trades.expectancy())
    wins, losses = trades.winning, trades.losing
    if wins.count():
        m.put("avg_win", wins.pnl.mean())
    else:
        m.undefined(("avg_win",), "no winning trade")
    if losses.count():
        m.put("avg_loss", losses.pnl.mean())
    else:
        m.undefined(("avg_loss",), "no losing trade")
    m.put("best_trade", trades.pnl.max())
    m.put("worst_trade", trades.pnl.min())
    m.put("avg_holding_s", float(table["duration_s"].mean()))
    return m


def table_trade_stats(table: pl.DataFrame) -> MetricSet:
    """The same statistics from a trade table (e.g. all months of a roll-up): the definitions
    of :func:`vectorbt_trade_stats` (win: PnL > 0, loss: PnL < 0; expectancy: mean PnL)."""
    m = MetricSet()
    n = len(table)
    m.put("trades", n)
    if n == 0:
        m.undefined(TRADE_STATS[1:], "no closed trade")
        return m
    pnl = table["pnl"]
    wins, losses = pnl.filter(pnl > 0), pnl.filter(pnl < 0)
    m.put("trade_win_rate", len(wins) / n)
    m.put("expectancy", float(pnl.mean()))
    m.put("avg_win", float(wins.mean()) if len(wins) else None, "no winning trade")
    m.put("avg_loss", float(losses.mean()) if len(losses) else None, "no losing trade")
    m.put("best_trade", float(pnl.max()))
    m.put("worst_trade", float(pnl.min()))
    m.put("avg_holding_s", float(table["duration_s"].mean()))
    return m


def sample_regimes(equity: pl.DataFrame, interval_s: float, periods_per_year: float) -> pl.DataFrame:
    """Per equity sample: ``ts``, ``mid``, ``vol`` (annualised realised volatility of the mid's
    log returns over the preceding :data:`VOL_WINDOW_S`, null until the window has two returns),
    ``vol_lo``/``vol_hi`` (the tercile cut points from the volatility before the sample, see the
    module docstring; null during the cold start) and ``regime`` (``low`` at or below ``vol_lo``,
    ``high`` at or above ``vol_hi``, else ``normal``; null where ``vol`` or a cut point is)."""
    import pandas as pd

    window = max(2, int(round(VOL_WINDOW_S / interval_s)))
    df = equity.select("ts", "mid").with_columns(
        vol=(pl.col("mid").log().diff().rolling_std(window, min_samples=2) * float(np.sqrt(periods_per_year)))
    )
    if df.height == 0:
        return df.with_columns(vol_lo=pl.lit(None, pl.Float64), vol_hi=pl.lit(None, pl.Float64), regime=pl.lit(None, pl.String))
    grid_ns = int(max(REGIME_GRID_S, interval_s) * NS_PER_S)
    step = pl.col("ts") // grid_ns
    ordered = df if df["ts"].is_sorted() else df.sort("ts", maintain_order=True)
    grid = ordered.filter(step != step.shift(-1, fill_value=-1)).select("ts", "vol")  # the last sample of each grid step
    past = pd.Series(grid["vol"].fill_nan(None).to_numpy(), dtype="float64").shift(1)  # strictly before each grid point
    need = max(1, int(np.ceil(REGIME_MIN_HISTORY_S / max(REGIME_GRID_S, interval_s))))
    # pandas' expanding quantile (a skip list) over at most one value per grid step; "lower"
    # keeps each cut point an observed volatility, as polars' whole-month quantile did.
    cuts = grid.select("ts").with_columns(
        vol_lo=pl.Series(past.expanding(min_periods=need).quantile(1 / 3, interpolation="lower").to_numpy()).fill_nan(None),
        vol_hi=pl.Series(past.expanding(min_periods=need).quantile(2 / 3, interpolation="lower").to_numpy()).fill_nan(None),
    )
    out = df.with_row_index("_i").sort("ts").join_asof(cuts, on="ts", strategy="backward").sort("_i").drop("_i")
    bad = pl.col("vol").is_null() | pl.col("vol").is_nan() | pl.col("vol_lo").is_null()
    return out.with_columns(
        regime=pl.when(bad).then(None)
        .when(pl.col("vol") <= pl.col("vol_lo")).then(pl.lit("low"))
        .when(pl.col("vol") >= pl.col("vol_hi")).then(pl.lit("high"))
        .otherwise(pl.lit("normal"))
    )


def market_context(table: pl.DataFrame, equity: pl.DataFrame, regimes: pl.DataFrame, quotes: pl.LazyFrame | None) -> pl.DataFrame:
    """``table`` with the entry's context (see the module docstring). ``quotes``: the ticks
    partition (``ts_recv``, ``kind``, ``bid_px``, ``ask_px``), or None when it is gone (the
    spread columns are then null)."""
    t = table.sort("entry_ts")
    eq = equity.select(pl.col("ts").alias("entry_ts"), equity_at_entry="equity")
    rg = regimes.select(pl.col("ts").alias("entry_ts"), vol_at_entry="vol", vol_regime="regime")
    out = t.join_asof(eq, on="entry_ts", strategy="backward").join_asof(rg, on="entry_ts", strategy="backward")
    if quotes is not None and len(t):
        lo, hi = int(t["entry_ts"].min()) - 3_600 * NS_PER_S, int(t["entry_ts"].max())
        q = (
            quotes.filter((pl.col("kind") == "quote") & pl.col("ts_recv").is_between(lo, hi))
            .select(pl.col("ts_recv").alias("entry_ts"), spread_at_entry=pl.col("ask_px") - pl.col("bid_px"),
                    spread_bps=1e4 * (pl.col("ask_px") - pl.col("bid_px")) / ((pl.col("ask_px") + pl.col("bid_px")) / 2))
            .collect()
            .sort("entry_ts")
        )
        out = out.join_asof(q, on="entry_ts", strategy="backward")
    else:
        out = out.with_columns(spread_at_entry=pl.lit(None, pl.Float64), spread_bps=pl.lit(None, pl.Float64))
    entry = pl.from_epoch("entry_ts", time_unit="ns")
    return out.with_columns(
        entry_hour_utc=entry.dt.hour().cast(pl.Int8),
        entry_weekday=entry.dt.weekday().cast(pl.Int8),  # 1 Monday .. 7 Sunday
        # undefined on a wiped-out account (equity <= 0 at entry)
        return_on_equity=pl.when(pl.col("equity_at_entry") > 0).then(pl.col("pnl") / pl.col("equity_at_entry")),
    ).sort("trade_id")


def regime_summary(equity: pl.DataFrame, regimes: pl.DataFrame, trades: pl.DataFrame) -> pl.DataFrame:
    """Per volatility regime: share of the month's samples, PnL earned while in it (equity
    change over each sample interval, by the regime at its start), trades entered, their
    PnL and win rate. Quote currency; shares are fractions."""
    # ``regimes`` is row-aligned with ``equity`` (made from it by sample_regimes).
    per_sample = equity.select(pnl=pl.col("equity").diff().shift(-1).fill_null(0.0)).with_columns(
        regime=regimes["regime"].fill_null("unknown")
    )
    time = per_sample.group_by("regime").agg(samples=pl.len(), pnl=pl.col("pnl").sum())
    tr = trades.with_columns(pl.col("vol_regime").fill_null("unknown").alias("regime")).group_by("regime").agg(
        trades=pl.len(), trade_pnl=pl.col("pnl").sum(), trade_win_rate=(pl.col("pnl") > 0).mean()
    )
    out = time.join(tr, on="regime", how="full", coalesce=True).with_columns(
        pl.col("samples", "trades").fill_null(0), pl.col("pnl", "trade_pnl").fill_null(0.0),
    )
    total = max(int(out["samples"].sum()), 1)
    order = {r: i for i, r in enumerate((*REGIMES, "unknown"))}
    return out.with_columns(time_share=pl.col("samples") / total).sort(pl.col("regime").replace_strict(order, default=9))


def trade_summary(table: pl.DataFrame) -> dict[str, Any]:
    """Counts for logs and metadata."""
    return {"trades": len(table), "pnl": float(table["pnl"].sum()) if len(table) else 0.0}
