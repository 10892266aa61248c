"""One critique slice end to end: read the metric set, build the prompt, ask (or reuse), check,
write.

Output at ``<lake>/critiques/strategy=X/symbol=S/month=M/``: ``prompt.json`` (exactly what the
critic read: no calendar date, no price level), ``critique.json`` (the validated answer, the
accepted and the rejected suggestions with their reasons, the critic and model, token usage and
cost of the call that produced the answer, the calendar month and the month's index as the
prompt gave it, and the model's training cutoff with ``data_before_training_cutoff``:
:mod:`quant_assets.critique.cutoffs`), ``run.json`` (whether this run took the answer from the
cache: a fact about the run, kept out of critique.json so the same prompt and answer publish the
same bytes) and ``manifest.json`` last (inputs and file hashes).

The cache (``<lake>/critiques/_cache/<model>/<prompt sha>.json``) keys answers by the prompt's
digest and the model: re-materialising an unchanged slice never pays for a second call. Only
valid answers are cached; a failure is never cached, so a retry asks again.

A paid critic's call is checked against its budget and recorded in the spend ledger when a
:class:`~quant_assets.critique.budget.SpendLedger` is given (:mod:`quant_assets.critique.budget`);
an answer from the cache costs nothing and needs no budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.analytics.slice_metrics import BacktestSliceError
from quant_assets.critique.budget import SpendLedger, critique_within_budget
from quant_assets.critique.critics import Critic, CriticAnswer
from quant_assets.critique.cross_section_context import cross_section_context
from quant_assets.critique.cutoffs import cutoff_record
from quant_assets.critique.memory import month_number, recall
from quant_assets.critique.prompt import MonthPosition, build_prompt
from quant_assets.critique.rounds import MAX_ROUNDS, history_digest, in_sample, same_suggestions
from quant_assets.critique.schema import Critique, check_suggestions
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import StrategySpec

#: Bump when prompts, rules or the stored format change: every critique becomes stale.
#: 4: the critic's memory of earlier suggestions (critique.memory) in the prompt and the record.
CRITIQUE_VERSION = "4"


def read_metric_set(lake: Lake, strategy: str, symbol: str, month: str) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, dict]:
    """(metrics row, trades, regimes, manifest) of a published metric set."""
    d = lake.metrics_dir(strategy, symbol, month)
    if not (d / "manifest.json").exists():
        raise BacktestSliceError(f"{d}: no metric set (materialise metrics_{strategy} for {month}|{symbol} first)")
    manifest = json.loads((d / "manifest.json").read_text())
    row = pl.read_parquet(d / "metrics.parquet").row(0, named=True)
    return row, pl.read_parquet(d / "trades.parquet"), pl.read_parquet(d / "regimes.parquet"), manifest


def month_position(lake: Lake, symbol: str, month: str) -> MonthPosition:
    """Where ``month`` sits in ``symbol``'s history in the lake: counted from the symbol's first
    month with ticks, among months up to and including ``month`` only (``month`` itself counts:
    its metric set exists, so it had data). A later month never changes the answer; an earlier
    month ingested later does (the prompt, and so the cache key, of the months after it change)."""
    root = lake.ticks_path(symbol, month).parent.parent
    months = {p.parent.name.removeprefix("month=") for p in root.glob("month=*/part-0.parquet")} if root.is_dir() else set()
    known = {m for m in months if m <= month} | {month}
    return MonthPosition(index=month_number(month) - month_number(min(known)) + 1, months_with_data=len(known))


def _price_range(lake: Lake, strategy: str, symbol: str, month: str) -> tuple[float, float] | None:
    """The lowest and highest sampled mid of the slice's backtest (quote currency), or None."""
    path = lake.backtest_dir(strategy, symbol, month) / "equity.parquet"
    if not path.exists():
        return None
    lo, hi = pl.scan_parquet(path).select(lo=pl.col("mid").min(), hi=pl.col("mid").max()).collect().row(0)
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def _cached(lake: Lake, critic: Critic, digest: str) -> CriticAnswer | None:
    """The answer stored for (model, ``digest``): a prompt's, or a later round's (the prompt and
    the rounds before it: :func:`quant_assets.critique.rounds.history_digest`)."""
    path = lake.critique_cache_path(critic.model, digest)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return CriticAnswer(Critique.model_validate(raw["critique"]), raw["critic"], raw["model"], raw["usage"],
                        raw["cost_usd"], raw["attempts"], raw.get("notes", []))


def _store(lake: Lake, digest: str, answer: CriticAnswer) -> None:
    lake.write_json({"critique": answer.critique.model_dump(), "critic": answer.critic, "model": answer.model,
                     "usage": answer.usage, "cost_usd": answer.cost_usd, "attempts": answer.attempts,
                     "notes": answer.notes}, lake.critique_cache_path(answer.model, digest))


@dataclass(frozen=True)
class CritiqueOutput:
    directory: Path
    record: dict[str, Any]  # critique.json
    data_version: str
    cached: bool = False  # this run took the answer from the cache (run.json)


def run_critique(lake: Lake, spec: StrategySpec, symbol: str, month: str, critic: Critic,
                 reveal_symbol: bool = False, max_rounds: int = 1, trading_days: int | None = None,
                 spend: SpendLedger | None = None) -> CritiqueOutput:
    """Critique the metric set of (month, symbol) for ``spec`` and publish it. Raises
    :class:`~quant_assets.critique.critics.CritiqueFailed` when the critic cannot answer, and
    :class:`~quant_assets.critique.budget.BudgetExhausted` (nothing sent, nothing written) when
    ``spend``'s budget cannot cover a call. ``max_rounds`` > 1: the critic refines its
    suggestions on their in-sample results (:mod:`quant_assets.critique.rounds`;
    ``trading_days`` is then required)."""
    from quant_assets.venues.sensitivity import read_report

    if not 1 <= max_rounds <= MAX_ROUNDS:
        raise ValueError(f"max_rounds must be within [1, {MAX_ROUNDS}], got {max_rounds}")
    if max_rounds > 1 and trading_days is None:
        raise ValueError("max_rounds > 1 backtests the suggestions in sample: trading_days is required")
    row, trades, regimes, metrics_manifest = read_metric_set(lake, spec.name, symbol, month)
    venue = metrics_manifest.get("venue_profile")
    position = month_position(lake, symbol, month)
    memory = recall(lake, spec.name, symbol, month, baseline=spec.resolved())
    xs = cross_section_context(lake, spec.name, symbol, month)
    prompt = build_prompt(spec, row, trades, regimes, symbol, position, reveal_symbol, venue=venue,
                          sensitivity=read_report(lake, spec.name, symbol, month),
                          price_range=_price_range(lake, spec.name, symbol, month), memory=memory.as_prompt(),
                          cross_section=xs.as_prompt())
    venue_label = (venue or {}).get("label")
    out = lake.critique_dir(spec.name, symbol, month)
    with lake.lock(f"critique-{spec.name}-{symbol}-{month}"), atomic_dir(out, "critique") as new:
        answer = _cached(lake, critic, prompt.digest)
        cached = answer is not None
        if answer is None:
            answer = (critique_within_budget(spend, critic, prompt, spec, symbol, month) if spend is not None
                      else critic.critique(prompt, spec))
            _store(lake, prompt.digest, answer)
        accepted, rejected = check_suggestions(answer.critique, spec, venue_label)
        rounds: list[dict[str, Any]] = [_round_record(1, answer, accepted, rejected, cached)]
        usage, cost, attempts, notes = _usage(answer.usage), answer.cost_usd, answer.attempts, list(answer.notes)
        history: list[dict[str, Any]] = []
        while len(rounds) < max_rounds and accepted:
            results = in_sample(lake, spec, symbol, month, [s.model_dump() for s in accepted], new / "rounds",
                                len(rounds), trading_days)  # type: ignore[arg-type]
            rounds[-1]["in_sample"] = results
            history.append({"critique": answer.critique.model_dump(), "in_sample": results})
            key = history_digest(prompt.digest, history)
            later = _cached(lake, critic, key)
            from_cache = later is not None
            if later is None:
                later = (critique_within_budget(spend, critic, prompt, spec, symbol, month, history=history)
                         if spend is not None else critic.refine(prompt, spec, history))
                _store(lake, key, later)
            cached = cached and from_cache  # the run paid for nothing only if every round was cached
            previous, answer = accepted, later
            accepted, rejected = check_suggestions(answer.critique, spec, venue_label)
            rounds.append(_round_record(len(rounds) + 1, answer, accepted, rejected, from_cache))
            for k, v in _usage(answer.usage).items():
                usage[k] = usage.get(k, 0) + v
            cost = None if cost is None or answer.cost_usd is None else cost + answer.cost_usd
            attempts += answer.attempts
            notes += answer.notes
            if same_suggestions(previous, accepted):
                break
        record = {
            "strategy": spec.name, "symbol": symbol, "month": month,
            # what the prompt said instead of the calendar month
            "month_index": position.index, "months_with_data": position.months_with_data,
            "critic": answer.critic, "model": answer.model, "rule_based": answer.critic == "rules",
            "training_cutoff": cutoff_record(answer.critic, answer.model, month),
            "critique": answer.critique.model_dump(),  # the final round's
            "accepted_suggestions": [s.model_dump() for s in accepted],
            "rejected_suggestions": [r.model_dump() for r in rejected],
            "params": spec.resolved(),
            "venue_profile": venue_label,
            "usage": usage, "cost_usd": cost, "attempts": attempts,
            "notes": notes,
            "prompt_sha256": prompt.digest,
            # what the critic remembered (the prompt's "memory") and the files it came from
            "memory": {"tests_seen": memory.tests_seen, "shown": len(memory.recent), "condensed": len(memory.older),
                       "sources": memory.sources},
            # the cross-sectional analyses shown (the prompt's "cross_section"), the files read and the
            # universes skipped with why; only for a symbol in a universe, so other records are unchanged
            **({"cross_section": xs_record} if (xs_record := xs.record()) else {}),
            "max_rounds": max_rounds,
            "rounds": [{k: v for k, v in r.items() if k != "from_cache"} for r in rounds],
        }
        lake.write_json(prompt.as_json(), new / "prompt.json")
        lake.write_json(record, new / "critique.json")
        lake.write_json({"cached": cached, "rounds_from_cache": [r["from_cache"] for r in rounds]}, new / "run.json")
        hashes = {n: file_sha256(new / n) for n in ("prompt.json", "critique.json")}
        lake.write_json({"strategy": spec.name, "symbol": symbol, "month": month, "critique_version": CRITIQUE_VERSION,
                         "month_index": position.index, "training_cutoff": record["training_cutoff"],
                         "metrics_files": metrics_manifest.get("files", {}), "files": hashes}, new / "manifest.json")
    # Whether the answer came from the cache is not in the record: same answer, same data version.
    version = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return CritiqueOutput(out, record, version, cached)


def _usage(usage: dict[str, int] | None) -> dict[str, int]:
    return {k: int(v) for k, v in (usage or {}).items()}


def _round_record(n: int, answer: CriticAnswer, accepted: list, rejected: list, from_cache: bool) -> dict[str, Any]:
    return {"round": n, "verdict": answer.critique.verdict, "accepted_suggestions": [s.model_dump() for s in accepted],
            "rejected_suggestions": [r.model_dump() for r in rejected], "cost_usd": answer.cost_usd, "from_cache": from_cache}
