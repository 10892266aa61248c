"""Engine agreement: the sweep's best combination, vectorised on bars and event-driven on ticks.

Both legs run the *same* strategy: ``ema_cross`` decides on the close of time bars of the mid
(the research layer's bars; NautilusTrader builds the same ones from the ticks, see
:mod:`quant_assets.research.bars`) with the same lengths, warm-up and sizing in whole lots. They
differ only in execution: the vectorised leg fills each decision at the next bar's first
quote and closes at the last bar's last quote; the event-driven leg runs under the slice's
venue profile, so an order meets the first quote at or after its decision plus the order
latency, may slip (``prob_slippage``) and pays the fees of the fills it really got.

Orders are matched one to one in sequence, and the PnL gap (event − vectorised, quote currency)
is split exactly into what execution explains:

- ``latency``: −Σ side × qty × (mid at the event fill − mid at the vectorised fill): where the
  market moved while the order was in flight;
- ``spread``: −Σ qty × (half spread paid by the event fill − by the vectorised fill), slippage
  included (a taker pays price − mid = side × half spread);
- ``size``: −Σ side × (qty_e − qty_v) × price_v (lot rounding at another mid);
- ``fees``: −(fees_e − fees_v);
- ``unmatched``: the cash of orders one leg has and the other has not.

Latency, spread, size and fees are execution; ``unmatched`` is a different signal. The two
legs **agree** when the order counts differ by at most :data:`ORDER_SLACK` (plus 1% of the
orders: a decision whose order the venue's latency pushes past the month's end, a flatten
racing a reversal), every matched pair has the same side, and the unmatched cash is within
``tolerance`` of the scale (the larger |PnL| or fee bill). On a scripted path whose quotes
arrive later than the order latency after each bar's close the legs agree exactly (the tests
check it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.research.handoff import to_event_params
from quant_assets.research.run import history_bars, quotes_per_bar, read_sweep
from quant_assets.research.sweep import (
    BarPath, bar_path, ema_columns, ema_cross_orders, history_needed, order_prices, warm_plan,
)
from quant_assets.strategies.spec import ParamError, StrategySpec

AGREEMENT_VERSION = "2"
#: Orders one leg may have more than the other and still agree (see the module docstring).
ORDER_SLACK = 2

FILL_SCHEMA: dict[str, pl.DataType] = {
    "sweep_rank": pl.Int64(), "ts": pl.Int64(), "side": pl.Int8(), "qty": pl.Float64(), "price": pl.Float64(),
    "fee": pl.Float64(), "mid": pl.Float64(),
}

COMPONENTS = ("latency", "spread", "size", "fees", "unmatched")

SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "month": pl.String(), "sweep_rank": pl.Int64(),
    "params_bars": pl.String(), "event_params": pl.String(), "quotes_per_bar": pl.Float64(),
    "vector_orders": pl.Int64(), "event_orders": pl.Int64(), "matched_orders": pl.Int64(), "side_mismatches": pl.Int64(),
    "vector_fees": pl.Float64(), "event_fees": pl.Float64(), "vector_pnl": pl.Float64(), "event_pnl": pl.Float64(),
    "pnl_gap": pl.Float64(), **{f"gap_{c}": pl.Float64() for c in COMPONENTS}, "unmatched_share": pl.Float64(),
    "max_fill_delay_s": pl.Float64(), "tolerance": pl.Float64(), "agree": pl.Boolean(), "reason": pl.String(),
}


@dataclass(frozen=True)
class VectorRun:
    """The vectorised leg: ``fills`` (ts ns of the quote met, side ±1, qty base units, price,
    fee and mid in quote currency), and ``pnl`` (net of fees, quote currency; flat at the end)."""

    fills: pl.DataFrame
    pnl: float

    @property
    def orders(self) -> int:
        return len(self.fills)

    @property
    def fees(self) -> float:
        return float(self.fills["fee"].sum())


@dataclass(frozen=True)
class AgreementOutput:
    directory: Path
    table: pl.DataFrame
    manifest: dict[str, Any]
    data_version: str

    @property
    def agree(self) -> bool:
        return bool(self.table["agree"].all()) if len(self.table) else True


def vector_run(spec: StrategySpec, path: BarPath, params: dict[str, Any], fee: float, starting_cash: float,
               interval_s: float = 60.0, lot: float | None = None) -> VectorRun:
    """``ema_cross`` vectorised on ``path`` for one parameter set (lengths in bars), exactly as
    the sweep simulates it, then closed at the last bar's last quote (where the event-driven
    strategy flattens)."""
    import vectorbt as vbt

    first_input, start = warm_plan(spec, [params], path.history, interval_s)
    ema_f = ema_columns(path.close, np.array([int(params["fast_period"])]), first_input)
    ema_s = ema_columns(path.close, np.array([int(params["slow_period"])]), first_input)
    amount, _ = ema_cross_orders(path, ema_f, ema_s, start, float(params["notional"]), lot)
    month = path.month()
    amount = amount[path.history:]
    pf = vbt.Portfolio.from_orders(close=month.close[:, None], size=amount, size_type="targetamount",
                                   price=order_prices(amount, month.bid_open, month.ask_open), fees=fee,
                                   init_cash=starting_cash, max_logs=0)
    rec = pf.orders.values
    side = np.where(rec["side"] == 0, 1, -1).astype(np.int8)  # OrderSide.Buy = 0
    idx = rec["idx"]
    mid = (month.bid_open[idx] + month.ask_open[idx]) / 2.0
    fills = pl.DataFrame({"ts": month.open_ts[idx], "side": side, "qty": rec["size"], "price": rec["price"], "fee": rec["fees"],
                          "mid": mid}, schema={k: v for k, v in FILL_SCHEMA.items() if k != "sweep_rank"})
    position = float(np.sum(side * rec["size"]))
    if position:
        # The closing order at the last quote (plain arithmetic: one fill, no choice).
        sell = position > 0
        px = float(month.bid_close[-1] if sell else month.ask_close[-1])
        close_mid = float((month.bid_close[-1] + month.ask_close[-1]) / 2.0)
        fills = pl.concat([fills, pl.DataFrame({"ts": [int(month.open_ts[-1])], "side": [-1 if sell else 1],
                                                "qty": [abs(position)], "price": [px], "fee": [abs(position) * px * fee],
                                                "mid": [close_mid]}, schema=fills.schema)])
    pnl = float((-fills["side"].cast(pl.Float64) * fills["qty"] * fills["price"]).sum() - fills["fee"].sum())
    return VectorRun(fills, pnl)


def event_orders(fills: pl.DataFrame, ticks: Path) -> pl.DataFrame:
    """The event-driven fills grouped by order (ts of the first fill, side, qty, vwap price, fee)
    with the mid of the quote each order met (the last quote received at or before its fill)."""
    if fills.is_empty():
        return pl.DataFrame(schema={k: v for k, v in FILL_SCHEMA.items() if k != "sweep_rank"})
    orders = (fills.group_by("order_id", maintain_order=True)
              .agg(pl.col("ts").first(), pl.col("side").first().cast(pl.Int8), pl.col("qty").sum(),
                   ((pl.col("qty") * pl.col("price")).sum() / pl.col("qty").sum()).alias("price"), pl.col("fee").sum())
              .drop("order_id").sort("ts", maintain_order=True))
    lo, hi = int(orders["ts"].min()), int(orders["ts"].max())
    quotes = (pl.scan_parquet(ticks).filter((pl.col("kind") == "quote") & (pl.col("ts_recv") <= hi))
              .select(pl.col("ts_recv").alias("ts"), mid=(pl.col("bid_px") + pl.col("ask_px")) / 2.0)
              .filter(pl.col("ts") >= lo - 86_400_000_000_000).collect().sort("ts"))
    return orders.join_asof(quotes, on="ts", strategy="backward")


def decompose(v: pl.DataFrame, e: pl.DataFrame) -> dict[str, Any]:
    """The PnL gap (event − vectorised, quote currency) split into execution components (see
    the module docstring), orders matched in sequence."""
    n = min(len(v), len(e))
    vs, es = v.head(n), e.head(n)
    side = es["side"].cast(pl.Float64).to_numpy()
    qv, qe = vs["qty"].to_numpy(), es["qty"].to_numpy()
    pv, pe = vs["price"].to_numpy(), es["price"].to_numpy()
    mv, me = vs["mid"].to_numpy(), es["mid"].fill_null(np.nan).to_numpy()
    me = np.where(np.isfinite(me), me, pe)  # no quote before the fill (cannot happen after the first quote)
    half_v, half_e = side * (pv - mv), side * (pe - me)
    cash = lambda df: float((-df["side"].cast(pl.Float64) * df["qty"] * df["price"]).sum())  # noqa: E731
    parts = {
        "latency": float(np.sum(-side * qe * (me - mv))),
        "spread": float(np.sum(-qe * (half_e - half_v))),
        "size": float(np.sum(-side * (qe - qv) * pv)),
        "fees": -(float(e["fee"].sum()) - float(v["fee"].sum())),
        "unmatched": cash(e.tail(len(e) - n)) - cash(v.tail(len(v) - n)),
    }
    delay = (es["ts"].to_numpy() - vs["ts"].to_numpy()) / 1e9 if n else np.zeros(0)
    return {"components": parts, "matched": n, "side_mismatches": int(np.sum(vs["side"].to_numpy() != es["side"].to_numpy())),
            "max_fill_delay_s": float(np.max(delay)) if n else None}


def verdict(vector_orders: int, event_orders: int, side_mismatches: int, unmatched_share: float, tolerance: float) -> list[str]:
    """Why the two legs do not trade the same signal (empty: they agree; see the module docstring)."""
    slack = ORDER_SLACK + int(0.01 * max(vector_orders, event_orders))
    problems = []
    if abs(event_orders - vector_orders) > slack:
        problems.append(f"orders {vector_orders} vectorised vs {event_orders} event-driven (more than {slack} apart)")
    if side_mismatches:
        problems.append(f"{side_mismatches} matched order(s) of opposite sides")
    if unmatched_share > tolerance:
        problems.append(f"unmatched orders carry {unmatched_share:.0%} of the scale > {tolerance:.0%}")
    return problems


def run_agreement(lake: Lake, spec: StrategySpec, symbol: str, month: str, tolerance: float, top: int = 1,
                  lot: float | None = None) -> AgreementOutput:
    """Compare the sweep's ``top`` best combinations of (month, symbol) on both engines; publish
    ``agreements/strategy=X/symbol=S/month=M/``."""
    from quant_assets.engines.runner import run_backtest
    from quant_assets.lake import instruments as inst_mod

    summary_path, summary, bars = read_sweep(lake, spec.name, symbol, month)
    interval_s = float(summary.get("interval_s", 60.0))
    interval = summary.get("interval", "1m")
    qpb = quotes_per_bar(bars)
    names = [a["name"] for a in summary["axes"]]
    if lot is None:
        inst = inst_mod.resolve(lake, symbol, month=month)
        lot = inst.lot_size if inst is not None else None
    history, _ = history_bars(lake, interval, symbol, month, history_needed(spec, tuple(_axes(summary)), interval_s))
    path = bar_path(bars, history)
    rows, vector_fills = [], []
    final = lake.agreement_dir(spec.name, symbol, month)
    with lake.lock(f"agreement-{spec.name}-{symbol}-{month}"), atomic_dir(final, "agreement") as out:
        for cand in summary["top"][:top]:
            bar_params = {k: cand[k] for k in names}
            event = to_event_params(spec, bar_params, qpb, interval_s)
            row: dict[str, Any] = {"strategy": spec.name, "symbol": symbol, "month": month, "sweep_rank": cand["rank"],
                                   "params_bars": json.dumps(bar_params), "event_params": json.dumps(event),
                                   "quotes_per_bar": qpb, "tolerance": tolerance}
            try:
                candidate = spec.with_values(event)
            except ParamError as exc:
                rows.append({**row, "agree": False, "reason": f"not a valid event-driven parameter set: {exc}"})
                continue
            # The sweep's own notional, fee and cash: the vectorised leg is that combination as swept.
            v = vector_run(spec, path, {**candidate.resolved(), **bar_params, "notional": summary["notional"]},
                           float(summary["fee"]), float(summary["starting_cash"]), interval_s, lot)
            vector_fills.append(v.fills.with_columns(sweep_rank=pl.lit(cand["rank"])))
            bt = run_backtest(lake, candidate, symbol, month, out_dir=out / "runs" / f"rank{cand['rank']}")
            e = event_orders(pl.read_parquet(bt.directory / "fills.parquet"), lake.ticks_path(symbol, month))
            e_fees, e_pnl = float(bt.summary["fees"]), float(bt.summary["pnl"])
            d = decompose(v.fills, e)
            gap = e_pnl - v.pnl
            scale = max(abs(v.pnl), abs(e_pnl), v.fees, e_fees, 1e-12)
            unmatched_share = abs(d["components"]["unmatched"]) / scale
            problems = verdict(v.orders, len(e), d["side_mismatches"], unmatched_share, tolerance)
            agree = not problems
            explained = ", ".join(f"{k} {d['components'][k]:+,.2f}" for k in COMPONENTS)
            rows.append({**row, "vector_orders": v.orders, "event_orders": len(e), "matched_orders": d["matched"],
                         "side_mismatches": d["side_mismatches"], "vector_fees": v.fees, "event_fees": e_fees,
                         "vector_pnl": v.pnl, "event_pnl": e_pnl, "pnl_gap": gap,
                         **{f"gap_{k}": d["components"][k] for k in COMPONENTS}, "unmatched_share": unmatched_share,
                         "max_fill_delay_s": d["max_fill_delay_s"], "agree": agree,
                         "reason": (f"same signal: PnL gap {gap:+,.2f} = {explained}" if agree else
                                    "; ".join(problems) + ": the two legs do not trade the same signal here; trust the "
                                    "event-driven result")})
        table = pl.DataFrame(rows, schema=SCHEMA)
        lake.write_parquet(table, out / "agreement.parquet")
        fills_all = pl.concat(vector_fills).select(list(FILL_SCHEMA)).cast(FILL_SCHEMA) if vector_fills else pl.DataFrame(schema=FILL_SCHEMA)
        lake.write_parquet(fills_all, out / "vector_fills.parquet")
        hashes = {n: file_sha256(out / n) for n in ("agreement.parquet", "vector_fills.parquet")}
        manifest = {"strategy": spec.name, "symbol": symbol, "month": month, "agreement_version": AGREEMENT_VERSION,
                    "tolerance": tolerance, "order_slack": ORDER_SLACK, "quotes_per_bar": qpb, "lot": lot,
                    "history_bars": path.history, "sweep_summary_sha256": file_sha256(summary_path),
                    "reason": summary.get("reason") or ("" if rows else "the sweep ranked no combination"), "files": hashes}
        lake.write_json(manifest, out / "manifest.json")
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24]
    return AgreementOutput(final, table, manifest, version)


def _axes(summary: dict[str, Any]):
    from quant_assets.strategies.spec import Axis

    return [Axis(a["name"], a["start"], a["stop"], a["step"]) for a in summary["axes"]]
