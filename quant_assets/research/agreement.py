"""Engine agreement: the sweep's best combination, vectorised on bars and event-driven on ticks.

The sweep ranks combinations with a bar approximation: one decision per bar at the bar's last
mid, filled at that mid ± half the bar's last spread. The event-driven engine decides on every
quote and fills at the touch. For the same strategy and parameters on the same slice, this
module runs both and compares orders, fees and PnL (quote currency). A large gap means the bar
approximation misleads for that strategy and slice: the sweep's ranking should not be trusted
there without the event-driven re-test.

Both legs follow the same rules where the approximation allows: the vectorised leg is the
sweep's own simulation of that combination (:mod:`quant_assets.research.sweep`) plus a closing
order at the last bar, because the event-driven strategies flatten at the month's last quote
(where they take no signal). Lengths in bars become quote updates as in the hand-off
(:func:`quant_assets.research.handoff.to_event_params`). On a slice with exactly one quote per
bar, on a venue without order latency, the two legs see the same prices at the same times and
must agree exactly (the tests check this on a scripted path). The event-driven leg runs under
the slice's venue profile like any backtest: its order latency (the bar approximation has none)
fills each order at the first quote after it, a real part of the gap this check reports.

Gaps are relative, so one tolerance serves every symbol and size:

- orders: |e - v| / max(e, v, 1);
- fees: |e - v| / max(e, v) (0 when neither pays a fee);
- PnL: |e - v| / max(|e|, |v|, fees_e, fees_v): scaled by the larger PnL or fee bill, so a PnL
  near zero does not turn a small difference into a huge ratio.
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
from quant_assets.research.run import quotes_per_bar, read_sweep
from quant_assets.research.sweep import bar_inputs, ema_cross_orders, order_prices
from quant_assets.strategies.spec import ParamError, StrategySpec

AGREEMENT_VERSION = "1"

FILL_SCHEMA: dict[str, pl.DataType] = {
    "sweep_rank": pl.Int64(), "ts": pl.Int64(), "side": pl.Int8(), "qty": pl.Float64(), "price": pl.Float64(),
    "fee": pl.Float64(),
}

SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "month": pl.String(), "sweep_rank": pl.Int64(),
    "params_bars": pl.String(), "event_params": pl.String(), "quotes_per_bar": pl.Float64(),
    "vector_orders": pl.Int64(), "event_orders": pl.Int64(), "vector_fees": pl.Float64(), "event_fees": pl.Float64(),
    "vector_pnl": pl.Float64(), "event_pnl": pl.Float64(), "orders_gap": pl.Float64(), "fees_gap": pl.Float64(),
    "pnl_gap": pl.Float64(), "tolerance": pl.Float64(), "agree": pl.Boolean(), "reason": pl.String(),
}


@dataclass(frozen=True)
class VectorRun:
    """The vectorised leg: ``fills`` (ts ns, side ±1, qty base units, price and fee in quote
    currency), ``orders``, ``fees`` and ``pnl`` (net of fees, quote currency; flat at the end)."""

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


def vector_run(bars: pl.DataFrame, params: dict[str, Any], fee: float, starting_cash: float) -> VectorRun:
    """``ema_cross`` vectorised on ``bars`` for one parameter set (lengths in bars), exactly as
    the sweep simulates it, then closed at the last bar's taker price."""
    import pandas as pd
    import vectorbt as vbt

    ts, close, half = bar_inputs(bars)
    series = pd.Series(close)
    ema_f = vbt.MA.run(series, window=int(params["fast_period"]), ewm=True).ma.to_numpy()[:, None]
    ema_s = vbt.MA.run(series, window=int(params["slow_period"]), ewm=True).ma.to_numpy()[:, None]
    amount, _ = ema_cross_orders(close, ema_f, ema_s, float(params["notional"]))
    # The last bar takes no signal: the event-driven strategies close the position at the
    # month's last quote instead (appended below).
    amount[-1, 0] = np.nan
    pf = vbt.Portfolio.from_orders(close=close[:, None], size=amount, size_type="targetamount",
                                   price=order_prices(amount, close, half), fees=fee, init_cash=starting_cash, max_logs=0)
    rec = pf.orders.values
    side = np.where(rec["side"] == 0, 1, -1).astype(np.int8)  # OrderSide.Buy = 0
    fills = pl.DataFrame({"ts": ts[rec["idx"]], "side": side, "qty": rec["size"], "price": rec["price"], "fee": rec["fees"]})
    position = float(np.sum(side * rec["size"]))
    if position:
        # The closing order at the last bar's taker price (plain arithmetic: one fill, no choice).
        px = float(close[-1] - np.sign(position) * half[-1])
        fills = pl.concat([fills, pl.DataFrame({"ts": [ts[-1]], "side": [-int(np.sign(position))], "qty": [abs(position)],
                                                "price": [px], "fee": [abs(position) * px * fee]}, schema=fills.schema)])
    pnl = float((-fills["side"].cast(pl.Float64) * fills["qty"] * fills["price"]).sum() - fills["fee"].sum())
    return VectorRun(fills, pnl)


def gaps(v_orders: int, e_orders: int, v_fees: float, e_fees: float, v_pnl: float, e_pnl: float) -> dict[str, float]:
    """Relative gaps between the two legs (see the module docstring)."""
    fee_scale = max(v_fees, e_fees)
    pnl_scale = max(abs(v_pnl), abs(e_pnl), v_fees, e_fees)
    return {
        "orders_gap": abs(e_orders - v_orders) / max(e_orders, v_orders, 1),
        "fees_gap": abs(e_fees - v_fees) / fee_scale if fee_scale > 0 else 0.0,
        "pnl_gap": abs(e_pnl - v_pnl) / pnl_scale if pnl_scale > 0 else 0.0,
    }


def run_agreement(lake: Lake, spec: StrategySpec, symbol: str, month: str, tolerance: float, top: int = 1) -> AgreementOutput:
    """Compare the sweep's ``top`` best combinations of (month, symbol) on both engines; publish
    ``agreements/strategy=X/symbol=S/month=M/``."""
    from quant_assets.engines.runner import run_backtest

    summary_path, summary, bars = read_sweep(lake, spec.name, symbol, month)
    qpb = quotes_per_bar(bars)
    names = [a["name"] for a in summary["axes"]]
    rows, vector_fills = [], []
    final = lake.agreement_dir(spec.name, symbol, month)
    with lake.lock(f"agreement-{spec.name}-{symbol}-{month}"), atomic_dir(final, "agreement") as out:
        for cand in summary["top"][:top]:
            bar_params = {k: cand[k] for k in names}
            event = to_event_params(spec, bar_params, qpb)
            row: dict[str, Any] = {"strategy": spec.name, "symbol": symbol, "month": month, "sweep_rank": cand["rank"],
                                   "params_bars": json.dumps(bar_params), "event_params": json.dumps(event),
                                   "quotes_per_bar": qpb, "tolerance": tolerance}
            try:
                candidate = spec.with_values(event)
            except ParamError as exc:
                rows.append({**row, "agree": False, "reason": f"not a valid event-driven parameter set: {exc}"})
                continue
            # The sweep's own notional, fee and cash: the vectorised leg is that combination as swept.
            v = vector_run(bars, {**bar_params, "notional": summary["notional"]}, float(summary["fee"]),
                           float(summary["starting_cash"]))
            vector_fills.append(v.fills.with_columns(sweep_rank=pl.lit(cand["rank"])))
            bt = run_backtest(lake, candidate, symbol, month, out_dir=out / "runs" / f"rank{cand['rank']}")
            fills = pl.read_parquet(bt.directory / "fills.parquet")
            e_orders = fills["order_id"].n_unique() if len(fills) else 0
            e_fees, e_pnl = float(bt.summary["fees"]), float(bt.summary["pnl"])
            g = gaps(v.orders, e_orders, v.fees, e_fees, v.pnl, e_pnl)
            worst = max(g, key=g.get)
            agree = g[worst] <= tolerance
            rows.append({**row, "vector_orders": v.orders, "event_orders": e_orders, "vector_fees": v.fees,
                         "event_fees": e_fees, "vector_pnl": v.pnl, "event_pnl": e_pnl, **g, "agree": agree,
                         "reason": (f"every gap within {tolerance:.0%}" if agree else
                                    f"{worst.removesuffix('_gap')} differ by {g[worst]:.0%} > {tolerance:.0%}: the bar "
                                    "approximation misleads here; trust the event-driven result")})
        table = pl.DataFrame(rows, schema=SCHEMA)
        lake.write_parquet(table, out / "agreement.parquet")
        fills_all = pl.concat(vector_fills).select(list(FILL_SCHEMA)).cast(FILL_SCHEMA) if vector_fills else pl.DataFrame(schema=FILL_SCHEMA)
        lake.write_parquet(fills_all, out / "vector_fills.parquet")
        hashes = {n: file_sha256(out / n) for n in ("agreement.parquet", "vector_fills.parquet")}
        manifest = {"strategy": spec.name, "symbol": symbol, "month": month, "agreement_version": AGREEMENT_VERSION,
                    "tolerance": tolerance, "quotes_per_bar": qpb, "sweep_summary_sha256": file_sha256(summary_path),
                    "reason": summary.get("reason") or ("" if rows else "the sweep ranked no combination"), "files": hashes}
        lake.write_json(manifest, out / "manifest.json")
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:24]
    return AgreementOutput(final, table, manifest, version)
