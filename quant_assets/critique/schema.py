"""What a critic must answer, and how its parameter suggestions are checked.

:class:`Critique` is the structured answer every critic returns (the Anthropic model through a
forced tool call whose input schema is this model's JSON schema; the offline rules directly).
Suggestions are hypotheses to test out of sample, never changes applied: :func:`check_suggestions`
keeps only those naming a tunable parameter of the strategy with a value of the right type,
inside its range, different from the current value and consistent with the strategy's
constraints; every other one is kept too, in the rejected list, with the reason. A suggestion
naming a venue setting (latency, queue model, slippage, fees, margin:
:data:`~quant_assets.venues.profile.VENUE_SETTINGS`) is refused as such: it would change the
simulated market, not the strategy, and could "pass" out-of-sample validation by doing so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quant_assets.strategies.spec import ParamError, StrategySpec
from quant_assets.venues.profile import VENUE_SETTINGS

Verdict = Literal["robust", "fragile", "overfit-suspect", "insufficient-data"]
#: Suggestions a critique may carry (more are rejected as such, not silently dropped).
MAX_SUGGESTIONS = 5


class Suggestion(BaseModel):
    """One parameter change to test: the parameter's name, the value to try (in the parameter's
    unit), and the hypothesis it tests (what should improve, and why)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="a parameter name from the data dictionary")
    value: float | int | bool = Field(description="the value to test, in the parameter's unit and range")
    hypothesis: str = Field(min_length=1, max_length=600, description="what should improve out of sample, and why")


class Critique(BaseModel):
    """A risk manager's reading of one backtest slice."""

    model_config = ConfigDict(extra="forbid")

    diagnosis: str = Field(min_length=1, max_length=2_000, description="what the strategy's result depends on, in a few sentences")
    regime_dependence: str = Field(min_length=1, max_length=1_000, description="how the result differs across volatility regimes and times of day")
    risks: list[str] = Field(min_length=1, max_length=8, description="where the strategy is fragile, most important first")
    verdict: Verdict = Field(description="robust | fragile | overfit-suspect | insufficient-data")
    suggestions: list[Suggestion] = Field(default_factory=list, max_length=20,
                                          description=f"parameter changes to test out of sample, at most {MAX_SUGGESTIONS}")


class RejectedSuggestion(BaseModel):
    name: str
    value: object
    hypothesis: str
    reason: str


def check_suggestions(critique: Critique, spec: StrategySpec,
                      venue_profile: str | None = None) -> tuple[list[Suggestion], list[RejectedSuggestion]]:
    """(accepted, rejected) suggestions of ``critique`` for ``spec`` (see the module docstring);
    ``venue_profile`` is the label of the profile the slice ran under, named in refusals."""
    accepted: list[Suggestion] = []
    rejected: list[RejectedSuggestion] = []
    current = spec.resolved()
    seen: set[str] = set()
    for i, s in enumerate(critique.suggestions):
        def reject(reason: str) -> None:
            rejected.append(RejectedSuggestion(name=s.name, value=s.value, hypothesis=s.hypothesis, reason=reason))

        if i >= MAX_SUGGESTIONS:
            reject(f"more than {MAX_SUGGESTIONS} suggestions: only the first {MAX_SUGGESTIONS} are tested")
            continue
        if s.name in VENUE_SETTINGS:
            reject(f"{s.name} is a venue setting (venue profile {venue_profile or 'of the slice'}): it changes the simulated "
                   "market, not the strategy; venue profiles are set in venues.toml, never by a critique")
            continue
        try:
            param = spec.param(s.name)
        except ParamError:
            reject(f"{spec.name} has no parameter {s.name!r}; known: {', '.join(p.name for p in spec.params if p.tunable)}")
            continue
        if not param.tunable:
            reject(f"{s.name} does not change what the strategy does (not tunable)")
            continue
        if s.name in seen:
            reject(f"{s.name} is already suggested above: one value per parameter")
            continue
        try:
            value = param.coerce(spec.name, s.value)
        except ParamError as exc:
            reject(str(exc))
            continue
        if value == current[s.name]:
            reject(f"{s.name} is already {value!r}: nothing to test")
            continue
        try:
            spec.resolved({s.name: value})
        except ParamError as exc:
            reject(f"breaks a constraint of {spec.name}: {exc}")
            continue
        seen.add(s.name)
        accepted.append(Suggestion(name=s.name, value=value, hypothesis=s.hypothesis))
    return accepted, rejected
