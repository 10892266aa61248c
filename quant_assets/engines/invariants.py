"""What every backtest result must satisfy before metrics and critiques read it.

Checked on the stored tables (fills, equity, cash flows; see :mod:`quant_assets.engines.result`),
so the same rules hold for every engine and every strategy:

* ``equity_consistent``: each equity sample equals starting cash + the cash flows of the fills
  (−side × qty × price − fee) and of ``cashflows`` (funding, insurance) up to it + position ×
  mid; the month's change equals realised PnL − fees + cash flows; equity never below zero.
* ``exits_always_working``: for strategies that protect their positions with exit orders
  (their parameters declare ``max_hold_s``), every position is closed by one of its exits (stop,
  take-profit, the protective exit after a rejected child, max-hold) or by the month's end or a
  liquidation, never by something else.
* ``holding_within_limits``: no such position is held past ``max_hold_s`` (plus
  :data:`HOLD_GRACE_S`: the exit goes out on the first quote after the limit).

Amounts in quote currency, times in ns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quant_assets.engines.account import REASON_FLATTEN, REASON_LIQUIDATION, REASON_MAX_HOLD, REASON_PROTECTIVE
from quant_assets.engines.result import FLAT_EPS, equity_curve

#: Slack on the holding limit: the exit is sent on the first quote after it (s).
HOLD_GRACE_S = 300.0
#: Reasons a protected position may be closed for.
EXIT_REASONS = frozenset({"stop", "take-profit", REASON_PROTECTIVE, REASON_MAX_HOLD, REASON_FLATTEN, REASON_LIQUIDATION})

CHECKS = {
    "equity_consistent": "equity = cash + position x mid at every sample, the month's change = realised PnL - fees + cash flows, never below zero",
    "exits_always_working": "every position a bracket strategy opens is closed by its stop, take-profit, protective exit, max-hold, the month's end or a liquidation",
    "holding_within_limits": "no position outlives the strategy's max_hold_s (+ grace)",
}


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str
    figures: dict = field(default_factory=dict)


def round_trips(fills: pl.DataFrame) -> pl.DataFrame:
    """One row per position from open to flat (or to a flip): ``open_ts``, ``close_ts`` (ns),
    ``hold_s``, ``close_reason`` (the reason of the fill that closed it; null: the signal)."""
    pos = fills["position"].to_numpy() if len(fills) else np.zeros(0)
    ts = fills["ts"].to_numpy() if len(fills) else np.zeros(0, np.int64)
    reasons = fills["reason"].to_list() if len(fills) and "reason" in fills.columns else [None] * len(fills)
    rows = []
    prev = 0.0
    open_ts = None
    for i in range(len(pos)):
        now = pos[i]
        if open_ts is None and abs(now) > FLAT_EPS:
            open_ts = ts[i]
        elif open_ts is not None and (abs(now) <= FLAT_EPS or np.sign(now) != np.sign(prev)):
            rows.append((int(open_ts), int(ts[i]), (ts[i] - open_ts) / 1e9, reasons[i]))
            open_ts = ts[i] if abs(now) > FLAT_EPS else None
        prev = now
    return pl.DataFrame(rows, schema={"open_ts": pl.Int64(), "close_ts": pl.Int64(), "hold_s": pl.Float64(), "close_reason": pl.String()}, orient="row")


def check_backtest(fills: pl.DataFrame, equity: pl.DataFrame, cashflows: pl.DataFrame, starting_cash: float,
                   params: dict) -> list[Outcome]:
    """The outcomes of :data:`CHECKS` for one stored result (``params``: the strategy's)."""
    out = []
    tol = 1e-6 * max(starting_cash, 1.0)
    rebuilt = equity_curve(fills, equity.select("ts", "mid"), starting_cash, cashflows)
    gap = float((rebuilt["equity"] - equity["equity"]).abs().max()) if len(equity) else 0.0
    flows = float(cashflows["amount"].sum()) if len(cashflows) else 0.0
    change = (float(equity["equity"][-1]) - starting_cash) if len(equity) else 0.0
    expected = (float(fills["realized_pnl"].sum() - fills["fee"].sum()) if len(fills) else 0.0) + flows
    low = float(equity["equity"].min()) if len(equity) else starting_cash
    problems = []
    if gap > tol:
        problems.append(f"a sample's equity differs from cash + position x mid by {gap:.6g}")
    if abs(change - expected) > tol:
        problems.append(f"equity changed by {change:.6g} but realised PnL - fees + cash flows is {expected:.6g}")
    if low < -tol:
        problems.append(f"equity went down to {low:.6g} (below zero)")
    out.append(Outcome("equity_consistent", not problems, "; ".join(problems) or "equity reconciles with the cash flows and stays >= 0",
                       {"max_gap": gap, "equity_change": change, "cash_flows": expected, "min_equity": low}))

    trips = round_trips(fills)
    max_hold = params.get("max_hold_s")
    if max_hold is None:
        out.append(Outcome("exits_always_working", True, "the strategy holds positions until its signal reverses (no protective exits)"))
        out.append(Outcome("holding_within_limits", True, "the strategy declares no holding limit", {"max_hold_s_seen": float(trips["hold_s"].max() or 0.0) if len(trips) else 0.0}))
        return out
    bad = trips.filter(~pl.col("close_reason").is_in(list(EXIT_REASONS)) | pl.col("close_reason").is_null())
    out.append(Outcome(
        "exits_always_working", bad.height == 0,
        f"{bad.height} of {trips.height} positions closed by something other than their exits (first at ts {bad['close_ts'][0]})" if bad.height
        else f"all {trips.height} positions closed by their exits",
        {"positions": trips.height, "not_by_exit": bad.height},
    ))
    limit = float(max_hold) + HOLD_GRACE_S
    long_ = trips.filter(pl.col("hold_s") > limit)
    longest = float(trips["hold_s"].max() or 0.0) if len(trips) else 0.0
    out.append(Outcome(
        "holding_within_limits", long_.height == 0,
        f"{long_.height} position(s) held past max_hold_s {max_hold} s (+{HOLD_GRACE_S:g} s), longest {longest:.0f} s" if long_.height
        else f"longest hold {longest:.0f} s within max_hold_s {max_hold} s",
        {"max_hold_s_seen": longest, "over_limit": long_.height},
    ))
    return out
