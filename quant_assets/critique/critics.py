"""The two critics behind one interface: :class:`RuleCritic` (offline, deterministic) and
:class:`AnthropicCritic` (the official SDK). Both read the same :class:`~quant_assets.critique.prompt.Prompt`
and answer a validated :class:`~quant_assets.critique.schema.Critique`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from quant_assets.critique.prompt import Prompt
from quant_assets.critique.schema import Critique, Suggestion
from quant_assets.strategies.spec import StrategySpec

#: Fewer closed trades than this and nothing about the month is significant.
MIN_TRADES = 30
#: Share of the losses in one volatility regime that counts as concentrated.
CONCENTRATED = 0.6
#: A drawdown on the deployed capital at least this deep is named as a risk (fraction).
DEEP_DEPLOYED_DRAWDOWN = -0.10
#: |t| of a negative mean cross-sectional IC from which the signal counts as ranking against
#: the members' forward returns (about a two-sided 5% level).
XS_IC_T = 2.0


class CritiqueFailed(RuntimeError):
    """The critic could not produce a valid critique; the message says why (never the API key).

    What the failed critique cost, for the spend ledger (:mod:`quant_assets.critique.budget`):
    ``usage`` summed over the replies that arrived and ``cost_usd`` its price (None: no price
    for the model); ``billing_unknown`` when a request may have been billed without its usage
    reaching us (a timeout, a dropped connection, an unreadable reply)."""

    def __init__(self, message: str, usage: dict[str, int] | None = None, cost_usd: float | None = None,
                 billing_unknown: bool = False) -> None:
        super().__init__(message)
        self.usage = dict(usage or {})
        self.cost_usd = cost_usd
        self.billing_unknown = billing_unknown


@dataclass
class CriticAnswer:
    critique: Critique
    critic: str  # "rules" | "anthropic"
    model: str
    usage: dict[str, int] = field(default_factory=dict)  # input/output/cache tokens
    cost_usd: float | None = None
    attempts: int = 1
    notes: list[str] = field(default_factory=list)


class Critic(Protocol):
    kind: str
    model: str

    def critique(self, prompt: Prompt, spec: StrategySpec) -> CriticAnswer: ...

    def refine(self, prompt: Prompt, spec: StrategySpec, history: list[dict[str, Any]]) -> CriticAnswer:
        """A later round (:mod:`quant_assets.critique.rounds`): ``history`` holds each earlier
        round's ``critique`` (its answer) and ``in_sample`` results; the answer is a complete
        critique whose suggestions replace the last round's."""
        ...


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _failed_here(data: dict[str, Any]) -> set[tuple[str, Any]]:
    """(parameter, value) changes the prompt's memory (:mod:`quant_assets.critique.memory`) shows
    as tested on this instrument without beating the baseline."""
    recent = (data.get("memory") or {}).get("recent", [])
    return {(e["parameter"], e["to"]) for e in recent
            if e.get("instrument") == "this" and e.get("tested") and e.get("beat_baseline") is False}


def _inverse_cross_section(data: dict[str, Any]) -> list[str]:
    """Per universe in the prompt's ``cross_section`` (:mod:`quant_assets.critique.cross_section_context`),
    the horizons where the strategy's signal ranked the members against their forward returns this
    month: mean IC below 0 with a t-statistic of -:data:`XS_IC_T` or lower."""
    out = []
    for u in (data.get("cross_section") or {}).get("universes", []):
        bad = [(k.removeprefix("ic_t_"), u.get("ic_mean_" + k.removeprefix("ic_t_")), t) for k, t in u.items()
               if k.startswith("ic_t_") and isinstance(t, (int, float)) and t <= -XS_IC_T]
        bad = [(h, ic, t) for h, ic, t in bad if isinstance(ic, (int, float)) and ic < 0]
        if bad:
            out.append(f"universe {u.get('universe')} ({u.get('members_used')} members): "
                       + ", ".join(f"{h} mean IC {ic} (t {t})" for h, ic, t in bad))
    return out


class RuleCritic:
    """Deterministic findings from the report, in the critique schema, labelled rule-based.

    Rules (on the prompt's data): too few trades or periods → insufficient-data; fees larger
    than the gross PnL → trade less (each parameter whose ``fewer_trades`` hint says so moves by
    ``step`` × in that direction, clamped to its range); profit from one or two trades →
    overfit-suspect; losses concentrated in one volatility regime or UTC hour → named as the
    regime dependence; a negative or insignificant Sharpe (PSR < 0.9) → fragile; otherwise robust.
    The month on the capital actually deployed is stated, and a drawdown on it of 10% or more
    is named as a risk (the account's figures dilute it by the idle cash). A cross-sectional
    analysis of the month where the strategy's signal ranked the universe's members against their
    forward returns (negative mean IC, t <= -2) is named as a risk and makes a robust month
    fragile: the edge is not a property of the signal across instruments. With memory, a change
    that was tested on this instrument and did not clear its significance bar out of sample is not
    proposed again (it is named instead).
    """

    kind = "rules"
    model = "rules-v1"

    def __init__(self, step: float = 2.0) -> None:
        self.step = step

    def critique(self, prompt: Prompt, spec: StrategySpec) -> CriticAnswer:
        d = prompt.data
        m, conc = d["metrics"], d["concentration"]
        trades = int(m.get("trades") or 0)
        periods = int(m.get("periods") or 0)
        findings: list[str] = []
        risks: list[str] = []
        suggestions: list[Suggestion] = []
        verdict = "robust"

        if trades < MIN_TRADES or periods < 100:
            verdict = "insufficient-data"
            risks.append(f"only {trades} closed trades and {periods} return periods: nothing here is statistically significant")
        fees_ratio = conc.get("fees_over_abs_gross_pnl")
        gross = m.get("gross_pnl") or 0.0
        if fees_ratio is not None and (fees_ratio >= 1.0 or (gross <= 0 and (m.get("fees") or 0) > 0)):
            findings.append(f"fees ({m.get('fees')}) are {fees_ratio:.2f}x the gross PnL ({gross}): the edge per trade does not pay for trading")
            risks.append("costs: the strategy trades more often than its edge can pay for")
            proposed = self._trade_less(spec, "fees exceed the gross PnL; trading less often should cut fees faster than it cuts the edge")
            failed = _failed_here(d)
            suggestions += [s for s in proposed if (s.name, s.value) not in failed]
            if (dropped := [s for s in proposed if (s.name, s.value) in failed]):
                findings.append("not proposed again, as they were tested out of sample before on this instrument and did "
                                "not clear their significance bar: " + ", ".join(f"{s.name} = {s.value}" for s in dropped))
            if verdict == "robust":
                verdict = "fragile"
        top2 = conc.get("top2_trades_share_of_net_trade_pnl")
        if top2 is not None and top2 >= 1.0 and trades >= 2:
            findings.append(f"the two best trades make {top2:.0%} of the net trade PnL: the rest lose money together")
            risks.append("profit comes from one or two trades; one missed fill erases the month")
            if verdict in ("robust", "fragile"):
                verdict = "overfit-suspect"
        regime_text = self._regimes(d)
        if regime_text["concentrated"]:
            risks.append(regime_text["risk"])
            if verdict == "robust":
                verdict = "fragile"
        realism = d.get("realism_sensitivity") or {}
        if realism.get("fragile"):
            findings.append(f"the sign of the result depends on the venue assumptions: {realism['reason']}")
            risks.append("the result is an artefact of latency or fees: it does not survive a harsher (realistic) venue")
            if verdict == "robust":
                verdict = "fragile"
        cap = d.get("capital_at_risk") or {}
        if cap.get("return_on_deployed") is not None:
            findings.append(f"On the capital actually deployed (on average {_pct(cap.get('deployed_avg_over_starting_equity'))} "
                            f"of the starting equity, at most {_pct(cap.get('deployed_peak_over_starting_equity'))}) the "
                            f"month's PnL was {_pct(cap['return_on_deployed'])} of the peak, with a maximum drawdown of "
                            f"{_pct(cap.get('max_drawdown_on_deployed'))} of it")
            dd = cap.get("max_drawdown_on_deployed")
            if dd is not None and dd <= DEEP_DEPLOYED_DRAWDOWN:
                risks.append(f"a drawdown of {_pct(dd)} on the capital deployed, against {_pct(m.get('max_drawdown'))} on the "
                             "account: the account's figures understate the risk taken by the idle cash beside it")
        if (inverse := _inverse_cross_section(d)):
            risks.append("across the universe(s) holding this instrument, this month, the strategy's signal ranked the "
                         "members against their forward returns (" + "; ".join(inverse) + "): what it earned here is "
                         "not a property of the signal across instruments")
            if verdict == "robust":
                verdict = "fragile"
        psr, sharpe = m.get("psr"), m.get("sharpe")
        if verdict == "robust" and (sharpe is None or sharpe <= 0 or psr is None or psr < 0.9):
            verdict = "fragile"
            risks.append(f"Sharpe {sharpe} with probabilistic Sharpe {psr}: not reliably above zero")
        diagnosis = (
            f"Rule-based (offline) critique. Net return {_pct(m.get('total_return'))}, Sharpe {sharpe}, max drawdown "
            f"{_pct(m.get('max_drawdown'))}, {trades} trades with win rate {_pct(m.get('trade_win_rate'))}. "
            + ((". ".join(findings) + ".") if findings else "No rule fired beyond the headline figures.")
        )
        if not risks:
            risks.append("no rule-based risk found; this is not evidence of robustness beyond the rules checked")
        critique = Critique(
            diagnosis=diagnosis[:2_000], regime_dependence=regime_text["text"][:1_000], risks=risks[:8],
            verdict=verdict, suggestions=suggestions[:5],
        )
        return CriticAnswer(critique, self.kind, self.model, notes=["rule-based critic: deterministic, no model call"])

    def refine(self, prompt: Prompt, spec: StrategySpec, history: list[dict[str, Any]]) -> CriticAnswer:
        """Keep the last round's suggestions that raised the in-sample Sharpe, drop the others
        (and say so); propose nothing new, so the rounds stop here."""
        last = history[-1]
        previous = Critique.model_validate(last["critique"])
        by_change = {(r["name"], json.dumps(r["value"])): r for r in last["in_sample"]}
        kept, dropped = [], []
        for s in previous.suggestions:
            r = by_change.get((s.name, json.dumps(s.value)))
            better = r is not None and r.get("ran") and r.get("delta_sharpe") is not None and r["delta_sharpe"] > 0
            (kept if better else dropped).append((s, r))
        parts = [f"{s.name} = {s.value} kept (in-sample Sharpe change {r['delta_sharpe']})" for s, r in kept]
        for s, r in dropped:
            why = f"in-sample Sharpe change {r.get('delta_sharpe')}" if r and r.get("ran") else (r or {}).get("reason", "not run")
            parts.append(f"{s.name} = {s.value} dropped ({why})")
        note = f" Round {len(history) + 1}: " + "; ".join(parts) + "."
        critique = previous.model_copy(update={"diagnosis": (previous.diagnosis + note)[:2_000],
                                               "suggestions": [s for s, _ in kept]})
        return CriticAnswer(critique, self.kind, self.model, notes=["rule-based refinement: keep what raised the in-sample Sharpe"])

    def _trade_less(self, spec: StrategySpec, why: str) -> list[Suggestion]:
        values = spec.resolved()
        out = []
        for p in spec.params:
            if not p.tunable or p.fewer_trades == 0 or p.type is bool:
                continue
            v = values[p.name]
            new = v * self.step if p.fewer_trades > 0 else v / self.step
            if p.lo is not None:
                new = max(new, p.lo)
            if p.hi is not None:
                new = min(new, p.hi)
            new = int(round(new)) if p.type is int else round(float(new), 10)
            if new == v:
                continue
            try:
                spec.resolved({p.name: new})
            except ValueError:
                continue
            out.append(Suggestion(name=p.name, value=new, hypothesis=f"{p.name} {v} -> {new}: {why}"))
        return out

    @staticmethod
    def _regimes(d: dict[str, Any]) -> dict[str, Any]:
        rows = [r for r in d.get("by_volatility_regime", []) if r.get("regime") != "unknown"]
        losses = {r["regime"]: -(r.get("pnl") or 0.0) for r in rows if (r.get("pnl") or 0.0) < 0}
        total_loss = sum(losses.values())
        parts = [f"{r['regime']}: PnL {r.get('pnl')} over {_pct(r.get('time_share'))} of the time, {r.get('trades')} trades"
                 for r in rows]
        hours = sorted(d.get("by_hour_utc", []), key=lambda r: r.get("pnl") or 0.0)
        worst_hour = hours[0] if hours else None
        text = "By volatility regime: " + ("; ".join(parts) if parts else "no regime data") + "."
        if worst_hour is not None and (worst_hour.get("pnl") or 0) < 0:
            text += f" Worst UTC hour of entry: {worst_hour.get('entry_hour_utc')}h (PnL {worst_hour.get('pnl')}, {worst_hour.get('trades')} trades)."
        if total_loss > 0:
            regime, loss = max(losses.items(), key=lambda kv: kv[1])
            if loss / total_loss >= CONCENTRATED and len(rows) > 1:
                return {"text": text, "concentrated": True,
                        "risk": f"{loss / total_loss:.0%} of the losing regimes' losses come from the {regime}-volatility regime"}
        return {"text": text, "concentrated": False, "risk": ""}
