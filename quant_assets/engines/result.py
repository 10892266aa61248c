"""The one result format of every engine, and how it is derived from what an engine reports.

An adapter returns an :class:`EngineRun`: the raw fills it observed and mid-price samples taken
on a timer. :func:`finalize` turns those into the two stored tables, computing position,
realised PnL, cash and equity the same way for every engine:

``fills``  (one row per execution, in time order)
    ts (int64 ns UTC, exchange time of the fill), side (int8: +1 buy, -1 sell), qty (base units,
    > 0), price (quote currency), fee (quote currency, >= 0 is a cost), liquidity (maker|taker),
    order_id, position (base units after the fill), realized_pnl (quote currency, gross of fees,
    realised by this fill against the average entry price), reason (why an order the strategy's
    signal did not ask for was sent: ``liquidation``, ``flatten-eod``, ``protective-exit``,
    ``max-hold``; a bracket's legs say ``entry``, ``stop``, ``take-profit``; else null).

``cashflows`` (one row per cash movement that is not a fill)
    ts (int64 ns), kind (``funding``: a perpetual's funding payment, received positive;
    ``insurance``: the shortfall a venue's insurance fund absorbs when a liquidation fill still
    leaves the account below zero), amount (quote currency, received positive).

``equity`` (one row per sample, in time order)
    ts (int64 ns), equity = cash + position * mid (quote currency), position (base units),
    mid (quote currency), cash (quote currency: starting cash - signed notional - fees + the
    cash flows up to the sample).

Invariants: a month starts flat and ends flat (the adapter closes any position at the last
tick, at the touch), so the last equity equals starting cash + sum(realized_pnl) - sum(fee)
+ sum(cashflows.amount); equity is never below zero (see :mod:`quant_assets.engines.account`).
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
FILL_SCHEMA: dict[str, pl.DataType] = {
    **RAW_FILL_SCHEMA, "position": pl.Float64(), "realized_pnl": pl.Float64(), "reason": pl.String(),
}
CASHFLOW_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Int64(), "kind": pl.String(), "amount": pl.Float64()}
SAMPLE_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Int64(), "mid": pl.Float64()}
EQUITY_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(), "equity": pl.Float64(), "position": pl.Float64(), "mid": pl.Float64(), "cash": pl.Float64(),
}

#: Positions smaller than this (base units) count as flat: float sums of fills leave dust.
FLAT_EPS = 1e-9


@dataclass
class EngineRun:
    """What one engine run reports, before :func:`finalize`.

    ``fills`` follow :data:`RAW_FILL_SCHEMA` (plus an optional ``reason``); ``samples`` follow
    :data:`SAMPLE_SCHEMA` (the mid price on the sampling timer). ``events`` counts market events
    fed to the engine. ``account_events`` are the account guard's liquidations (dicts with ts,
    kind, equity, position, mark, detail); ``counters`` what the run counted (orders refused
    by the leverage limit, protective exits, ...).
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
    account_events: list[dict] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    fidelity: str = "quotes+trades"  # what the market data held (quant_assets.engines.fidelity)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def raw_fills(rows: dict[str, list] | None = None) -> pl.DataFrame:
    """A raw-fills frame from column lists (empty when ``rows`` is None), sorted by time."""
    schema = {**RAW_FILL_SCHEMA, "reason": pl.String()} if rows and "reason" in rows else RAW_FILL_SCHEMA
    if not rows or not rows.get("ts"):
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(rows, schema=schema).sort("ts", maintain_order=True)


def annotate_fills(fills: pl.DataFrame) -> pl.DataFrame:
    """Add position after each fill and the PnL it realises (average-cost method, gross of fees);
    a missing ``reason`` column is added as null."""
    if "reason" not in fills.columns:
        fills = fills.with_columns(reason=pl.lit(None, dtype=pl.String()))
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


def empty_cashflows() -> pl.DataFrame:
    return pl.DataFrame(schema=CASHFLOW_SCHEMA)


def equity_curve(fills: pl.DataFrame, samples: pl.DataFrame, starting_cash: float,
                 cashflows: pl.DataFrame | None = None) -> pl.DataFrame:
    """Mark-to-market equity at every sample: cash and position as of the sample time
    (fills and cash flows at the same ns count as done), times the sampled mid."""
    trades = fills.select(
        "ts", flow=-(pl.col("side").cast(pl.Float64) * pl.col("qty") * pl.col("price")) - pl.col("fee"),
        position=pl.col("position"),
    )
    other = (cashflows if cashflows is not None else empty_cashflows()).select(
        "ts", flow=pl.col("amount"), position=pl.lit(None, dtype=pl.Float64()),
    )
    # Fills first at equal ts: a cash flow at a fill's ns sees the position after the fill.
    flows = (
        pl.concat([trades.with_columns(order=pl.lit(0)), other.with_columns(order=pl.lit(1))])
        .sort("ts", "order", maintain_order=True)
        .select("ts", cash=starting_cash + pl.col("flow").cum_sum(), position=pl.col("position").forward_fill())
        .unique("ts", keep="last", maintain_order=True)
    )
    curve = samples.sort("ts").join_asof(flows, on="ts", strategy="backward")
    return curve.select(
        "ts",
        equity=pl.col("cash").fill_null(starting_cash) + pl.col("position").fill_null(0.0) * pl.col("mid"),
        position=pl.col("position").fill_null(0.0),
        mid="mid",
        cash=pl.col("cash").fill_null(starting_cash),
    ).cast(EQUITY_SCHEMA)


def insurance_flows(fills: pl.DataFrame, starting_cash: float, cashflows: pl.DataFrame | None = None) -> pl.DataFrame:
    """The ``insurance`` cash flow of a liquidation that still left the account below zero:
    at the first fill after which the account is flat with negative cash, the shortfall is
    absorbed (as a venue's insurance fund does) so the account ends at 0. Empty otherwise."""
    if not len(fills):
        return empty_cashflows()
    base = fills.select("ts", "position", flow=-(pl.col("side").cast(pl.Float64) * pl.col("qty") * pl.col("price")) - pl.col("fee"))
    extra = 0.0 if cashflows is None or not len(cashflows) else None
    cash = starting_cash + base["flow"].cum_sum()
    if extra is None:
        # Cash flows (funding) up to each fill count too.
        ts = base["ts"].to_numpy()
        cf = cashflows.sort("ts")
        cum = np.concatenate([[0.0], np.cumsum(cf["amount"].to_numpy())])
        cash = cash + pl.Series(cum[np.searchsorted(cf["ts"].to_numpy(), ts, side="right")])
    flat_negative = (base["position"].abs() <= FLAT_EPS) & (cash < 0)
    if not flat_negative.any():
        return empty_cashflows()
    i = int(flat_negative.arg_max())
    return pl.DataFrame({"ts": [int(base["ts"][i])], "kind": ["insurance"], "amount": [-float(cash[i])]}, schema=CASHFLOW_SCHEMA)


def finalize(run: EngineRun, cashflows: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fills, equity) in the stored format; checks that the run ended flat. ``cashflows``
    (funding) enter the equity; an ``insurance`` flow is added where a liquidation left the
    account below zero (see :func:`insurance_flows`; :func:`finalize_with_flows` returns them)."""
    fills, equity, _ = finalize_with_flows(run, cashflows)
    return fills, equity


def finalize_with_flows(run: EngineRun, cashflows: pl.DataFrame | None = None,
                        annotated: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(fills, equity, cashflows): :func:`finalize` with every non-fill cash flow it applied.
    ``annotated``: ``annotate_fills(run.fills)`` when the caller already has it (its loop is
    the costly part on a market maker's few hundred thousand fills)."""
    fills = annotated if annotated is not None else annotate_fills(run.fills)
    if len(fills) and abs(fills["position"][-1]) > FLAT_EPS:
        raise RuntimeError(f"{run.engine} run ended with position {fills['position'][-1]}: adapters must flatten at the last tick")
    samples = run.samples.sort("ts")
    if len(fills) and len(samples) and fills["ts"][-1] > samples["ts"][-1]:
        # One last sample after the closing fill, so the curve ends at the month's final cash.
        samples = pl.concat([samples, pl.DataFrame({"ts": [fills["ts"][-1]], "mid": [samples["mid"][-1]]}, schema=SAMPLE_SCHEMA)])
    flows = cashflows.select(list(CASHFLOW_SCHEMA)).cast(CASHFLOW_SCHEMA) if cashflows is not None else empty_cashflows()
    insurance = insurance_flows(fills, run.starting_cash, flows)
    if len(insurance):
        flows = pl.concat([flows, insurance]).sort("ts", maintain_order=True)
    return fills, equity_curve(fills, samples, run.starting_cash, flows), flows


def summary(fills: pl.DataFrame, equity: pl.DataFrame, starting_cash: float,
            cashflows: pl.DataFrame | None = None) -> dict[str, float | int]:
    """Headline numbers for asset metadata: PnL net of fees and including funding and any
    insurance flow, fees, funding, fills, turnover (quote currency)."""
    fees = float(fills["fee"].sum()) if len(fills) else 0.0
    gross = float(fills["realized_pnl"].sum()) if len(fills) else 0.0
    flows = cashflows if cashflows is not None else empty_cashflows()
    funding = float(flows.filter(pl.col("kind") == "funding")["amount"].sum()) if len(flows) else 0.0
    insurance = float(flows.filter(pl.col("kind") == "insurance")["amount"].sum()) if len(flows) else 0.0
    turnover = float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0
    eq = equity["equity"]
    drawdown = float((eq / eq.cum_max() - 1.0).min()) if len(eq) else 0.0
    liquidations = int((fills["reason"] == "liquidation").any()) if len(fills) and "reason" in fills.columns else 0
    return {
        "pnl": gross - fees + funding + insurance,
        "gross_pnl": gross,
        "fees": fees,
        "funding_pnl": funding,
        "insurance": insurance,
        "liquidated": liquidations,
        "fills": len(fills),
        "maker_fills": int((fills["liquidity"] == "maker").sum()) if len(fills) else 0,
        "turnover": turnover,
        "return_pct": 100.0 * (gross - fees + funding + insurance) / starting_cash,
        "max_drawdown_pct": 100.0 * drawdown,
        "equity_samples": len(equity),
    }
