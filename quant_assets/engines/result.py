"""The one result format of every engine, and how it is derived from what an engine reports.

An adapter returns an :class:`EngineRun`: the raw fills it observed and mid-price samples taken
on a timer. :func:`finalize` turns those into the two stored tables, computing position,
realised PnL, cash and equity the same way for every engine:

``fills``  (one row per execution, in time order)
    ts (int64 ns UTC, exchange time of the fill), side (int8: +1 buy, -1 sell), qty (base units,
    > 0), price (quote currency), fee (quote currency, >= 0 is a cost), liquidity (maker|taker),
    order_id, position (base units after the fill), realized_pnl (quote currency, gross of fees,
    realised by this fill against the average entry price).

``equity`` (one row per sample, in time order)
    ts (int64 ns), equity = cash + position * mid (quote currency), position (base units),
    mid (quote currency), cash (quote currency: starting cash - signed notional - fees).

Invariants: a month starts flat and ends flat (the adapter closes any position at the last
tick, at the touch), so the last equity equals starting cash + sum(realized_pnl) - sum(fee).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

LIQUIDITY = pl.Enum(["maker", "taker"])

RAW_FILL_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(), "side": pl.Int8(), "qty": pl.Float64(), "price": pl.Float64(),
    "fee": pl.Float64(), "liquidity": LIQUIDITY, "order_id": pl.String(),
}
FILL_SCHEMA: dict[str, pl.DataType] = {**RAW_FILL_SCHEMA, "position": pl.Float64(), "realized_pnl": pl.Float64()}
SAMPLE_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Int64(), "mid": pl.Float64()}
EQUITY_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(), "equity": pl.Float64(), "position": pl.Float64(), "mid": pl.Float64(), "cash": pl.Float64(),
}

#: Positions smaller than this (base units) count as flat: float sums of fills leave dust.
FLAT_EPS = 1e-9


@dataclass
class EngineRun:
    """What one engine run reports, before :func:`finalize`.

    ``fills`` follow :data:`RAW_FILL_SCHEMA`; ``samples`` follow :data:`SAMPLE_SCHEMA` (the mid
    price on the sampling timer). ``events`` counts market events fed to the engine.
    """

    fills: pl.DataFrame
    samples: pl.DataFrame
    engine: str
    engine_version: str
    events: int
    wall_s: float
    starting_cash: float
    quote_currency: str
    notes: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def raw_fills(rows: dict[str, list] | None = None) -> pl.DataFrame:
    """A raw-fills frame from column lists (empty when ``rows`` is None), sorted by time."""
    if not rows or not rows.get("ts"):
        return pl.DataFrame(schema=RAW_FILL_SCHEMA)
    return pl.DataFrame(rows, schema=RAW_FILL_SCHEMA).sort("ts", maintain_order=True)


def annotate_fills(fills: pl.DataFrame) -> pl.DataFrame:
    """Add position after each fill and the PnL it realises (average-cost method, gross of fees)."""
    side = fills["side"].to_numpy().astype(np.float64)
    qty = fills["qty"].to_numpy()
    price = fills["price"].to_numpy()
    position = np.empty(len(fills))
    realized = np.zeros(len(fills))
    pos = 0.0
    avg = 0.0
    # A sequential recurrence (each fill depends on the average price left by the previous
    # ones); a few hundred thousand fills at most per month, so a plain loop is fast enough.
    for i in range(len(fills)):
        signed = side[i] * qty[i]
        if pos == 0.0 or np.sign(pos) == np.sign(signed):
            avg = (avg * abs(pos) + price[i] * qty[i]) / (abs(pos) + qty[i])
            pos += signed
        else:
            closing = min(qty[i], abs(pos))
            realized[i] = closing * (price[i] - avg) * np.sign(pos)
            pos += signed
            if abs(pos) <= FLAT_EPS:
                pos, avg = 0.0, 0.0
            elif np.sign(pos) == np.sign(signed):  # flipped through zero: the rest opens at this price
                avg = price[i]
        position[i] = pos
    return fills.with_columns(position=pl.Series(position), realized_pnl=pl.Series(realized)).select(list(FILL_SCHEMA))


def equity_curve(fills: pl.DataFrame, samples: pl.DataFrame, starting_cash: float) -> pl.DataFrame:
    """Mark-to-market equity at every sample: cash and position as of the sample time
    (fills at the same ns count as done), times the sampled mid."""
    flows = fills.select(
        "ts",
        cash=starting_cash + (-(pl.col("side").cast(pl.Float64) * pl.col("qty") * pl.col("price")) - pl.col("fee")).cum_sum(),
        position=pl.col("position"),
    ).unique("ts", keep="last", maintain_order=True)
    curve = samples.sort("ts").join_asof(flows, on="ts", strategy="backward")
    return curve.select(
        "ts",
        equity=pl.col("cash").fill_null(starting_cash) + pl.col("position").fill_null(0.0) * pl.col("mid"),
        position=pl.col("position").fill_null(0.0),
        mid="mid",
        cash=pl.col("cash").fill_null(starting_cash),
    ).cast(EQUITY_SCHEMA)


def finalize(run: EngineRun) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fills, equity) in the stored format; checks that the run ended flat."""
    fills = annotate_fills(run.fills)
    if len(fills) and abs(fills["position"][-1]) > FLAT_EPS:
        raise RuntimeError(f"{run.engine} run ended with position {fills['position'][-1]}: adapters must flatten at the last tick")
    samples = run.samples.sort("ts")
    if len(fills) and len(samples) and fills["ts"][-1] > samples["ts"][-1]:
        # One last sample after the closing fill, so the curve ends at the month's final cash.
        samples = pl.concat([samples, pl.DataFrame({"ts": [fills["ts"][-1]], "mid": [samples["mid"][-1]]}, schema=SAMPLE_SCHEMA)])
    return fills, equity_curve(fills, samples, run.starting_cash)


def summary(fills: pl.DataFrame, equity: pl.DataFrame, starting_cash: float) -> dict[str, float | int]:
    """Headline numbers for asset metadata: PnL net of fees, fees, fills, turnover (quote ccy)."""
    fees = float(fills["fee"].sum()) if len(fills) else 0.0
    gross = float(fills["realized_pnl"].sum()) if len(fills) else 0.0
    turnover = float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0
    eq = equity["equity"]
    drawdown = float((eq / eq.cum_max() - 1.0).min()) if len(eq) else 0.0
    return {
        "pnl": gross - fees,
        "gross_pnl": gross,
        "fees": fees,
        "fills": len(fills),
        "maker_fills": int((fills["liquidity"] == "maker").sum()) if len(fills) else 0,
        "turnover": turnover,
        "return_pct": 100.0 * (gross - fees) / starting_cash,
        "max_drawdown_pct": 100.0 * drawdown,
        "equity_samples": len(equity),
    }
