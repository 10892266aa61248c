"""Critique rounds: the critic proposes, each candidate is backtested in sample, the critic sees
the results and refines or stops.

A critique of month M with ``max_rounds`` = R > 1 runs at most R rounds. After round r (< R)
every accepted suggestion (one parameter changed from the slice's parameters) is backtested on
M itself, with the pipeline's engine and metric set (:func:`quant_assets.critique.oos.run_and_measure`:
the run enters the trials ledger, so the roll-ups' deflated Sharpe counts it), and compared with
the slice's own run: in-sample Sharpe and total return of candidate and baseline on the same
hourly grid, the candidate's trades and maximum drawdown. The critic reads those results
(:func:`feedback`) and answers again: a complete critique whose suggestions replace the
previous ones. It stops when a round's suggestions are empty or the same as the round
before, or at R. Only the final suggestions go to the out-of-sample validation (M+1): the
in-sample figures are what the critic could see and tune to, not evidence.

Everything a round ran is published with the critique (``rounds/<r>-<k>-<name>/``); the record
lists every round's suggestions and results (``rounds`` in critique.json).

Plain Python: no Dagster.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from quant_assets.critique.schema import Suggestion
from quant_assets.engines.inputs import NotApplicableError
from quant_assets.lake.store import Lake
from quant_assets.strategies.spec import ParamError, StrategySpec

#: Most rounds a critique may be configured to run (each round backtests its suggestions).
MAX_ROUNDS = 5

FEEDBACK_INSTRUCTIONS = (
    "In-sample results of your suggestions, each backtested on this same month with one parameter changed "
    "(delta = candidate minus the unchanged parameters, on the same hourly returns). In-sample improvement is "
    "not evidence: the month was seen. Call the tool again with your complete, final critique: keep, change or "
    "drop suggestions (an empty list stops the rounds); they will then be tested on the next month."
)


def in_sample(lake: Lake, spec: StrategySpec, symbol: str, month: str, suggestions: list[dict[str, Any]],
              out: Path, round_no: int, trading_days: int) -> list[dict[str, Any]]:
    """Backtest each suggestion on ``month`` (in sample) into ``out/<round>-<k>-<name>/`` and
    measure it against the slice's own run (see the module docstring). A value the account or
    the month's data cannot run is reported as such (``ran`` false, ``reason``)."""
    from quant_assets.analytics.returns import sample_returns
    from quant_assets.analytics.slice_metrics import read_backtest
    from quant_assets.critique.oos import period_row, run_and_measure

    base_bt = read_backtest(lake, spec.name, symbol, month)
    base = period_row(sample_returns(base_bt.equity, base_bt.interval_s, trading_days))
    results = []
    for k, s in enumerate(suggestions):
        row: dict[str, Any] = {"name": s["name"], "value": s["value"], "baseline_value": spec.resolved().get(s["name"])}
        try:
            sm = run_and_measure(lake, spec.with_values({s["name"]: s["value"]}), symbol, month,
                                 out / f"{round_no}-{k}-{s['name']}", trading_days)
        except (ParamError, NotApplicableError) as exc:
            results.append({**row, "ran": False, "reason": f"cannot be run: {exc}"})
            continue
        c = sm.row
        delta = lambda key: None if c.get(key) is None or base.get(key) is None else _r(c[key] - base[key])  # noqa: E731
        results.append({**row, "ran": True,
                        "sharpe": _r(c.get("sharpe")), "baseline_sharpe": _r(base.get("sharpe")), "delta_sharpe": delta("sharpe"),
                        "total_return": _r(c.get("total_return")), "baseline_total_return": _r(base.get("total_return")),
                        "delta_total_return": delta("total_return"), "trades": c.get("trades"),
                        "max_drawdown": _r(c.get("max_drawdown"))})
    return results


def _r(x: Any) -> Any:
    return None if x is None else float(f"{float(x):.4g}")


def feedback(results: list[dict[str, Any]]) -> str:
    """What the critic reads after a round: the instructions and the results as JSON."""
    return json.dumps({"instructions": FEEDBACK_INSTRUCTIONS, "in_sample_results": results}, sort_keys=True)


def same_suggestions(a: list[Suggestion], b: list[Suggestion]) -> bool:
    return {(s.name, json.dumps(s.value)) for s in a} == {(s.name, json.dumps(s.value)) for s in b}


def history_digest(prompt_digest: str, history: list[dict[str, Any]]) -> str:
    """The cache key of a later round's answer: the prompt and every earlier round's critique and results."""
    canonical = json.dumps({"prompt": prompt_digest, "history": history}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
