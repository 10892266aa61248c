"""The null critic: random in-range changes to the parameters a critic may change, the control
arm of the judge's scorecard (:mod:`quant_assets.analytics.scorecard`).

For a critique slice (strategy, symbol, month M) whose critic made ``n`` accepted suggestions,
the null critic makes ``n`` proposals, each changing one parameter from the critique's baseline
like a real suggestion. Proposal ``k`` draws from its own generator, seeded by
``sha256(strategy | symbol | month | k)``: never by time or process, so the same slice always
gets the same proposals, and proposal ``k`` does not depend on how many others there are.

What it may change is exactly what the critic's data dictionary offered
(:func:`quant_assets.critique.prompt.strategy_dictionary`): the spec's tunable parameters,
without those that need order-book depth (:data:`~quant_assets.strategies.registry.DEPTH_PARAMS`)
on a slice whose fidelity has none. Per draw: a parameter uniformly among them, then a value:

* bool: the other value;
* number: the current value times a factor drawn log-uniformly in [1/:data:`SPAN`, :data:`SPAN`]
  (the current value's sign kept; a current value of 0 is scaled from the parameter's default,
  else from 1), clipped to the parameter's [lo, hi], rounded for an int.

Local, not uniform over the range: the ranges span up to nine orders of magnitude (a notional
in [1, 1e9]), so a uniform draw would be a straw man (half its notionals above 5e8, which no
account carries) and beating it would say nothing; a critic's changes are of this size (the
rule critic doubles or halves). A draw equal to the current value or breaking a constraint of
the strategy (``spec.resolved`` refuses it) is drawn again from the same generator, at most
:data:`MAX_DRAWS` times. Two proposals of one slice may name the same parameter (each is drawn
on its own); a real critic's may not.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from quant_assets.strategies.spec import ParamError, StrategySpec

#: Bump when the drawing rule changes: every validation becomes stale (part of OOS_VERSION).
NULL_CRITIC_VERSION = "1"
#: A numeric proposal lies within a factor SPAN of the current value (log-uniform).
SPAN = 4.0
#: Draws per proposal before giving up (a draw equal to the current value or breaking a
#: constraint is drawn again).
MAX_DRAWS = 200
DESCRIPTION = (f"null critic v{NULL_CRITIC_VERSION}: one tunable parameter uniformly, a value within a factor "
               f"{SPAN:g} of the current one (log-uniform, clipped to the range), seeded by (strategy, symbol, month, index)")


class NullCriticError(ValueError):
    """No valid random change exists (e.g. no tunable parameter): the message names the slice."""


@dataclass(frozen=True)
class NullSuggestion:
    """One random proposal: the parameter, its value (in the parameter's unit), the seed it was
    drawn with and the draw that gave it (1 = first)."""

    name: str
    value: int | float | bool
    hypothesis: str
    seed: int
    draws: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_of(strategy: str, symbol: str, month: str, index: int) -> int:
    """The seed of proposal ``index`` of a slice: 64 bits of sha256 of the four."""
    return int.from_bytes(hashlib.sha256(f"{strategy}|{symbol}|{month}|{index}".encode()).digest()[:8], "big")


def eligible(spec: StrategySpec, fidelity: str | None) -> list[str]:
    """The parameters the critic's data dictionary offered on a slice of ``fidelity``."""
    from quant_assets.engines.fidelity import DEPTH
    from quant_assets.strategies.registry import DEPTH_PARAMS

    no_depth = fidelity is not None and fidelity not in DEPTH
    return [p.name for p in spec.params if p.tunable and not (no_depth and p.name in DEPTH_PARAMS)]


def _draw(spec: StrategySpec, name: str, current: Any, rng: np.random.Generator) -> int | float | bool:
    p = spec.param(name)
    if p.type is bool:
        return not current
    scale = float(current) if current else (float(p.default) if p.default else 1.0)
    value = math.copysign(abs(scale) * SPAN ** rng.uniform(-1.0, 1.0), scale)
    if p.lo is not None:
        value = max(value, p.lo)
    if p.hi is not None:
        value = min(value, p.hi)
    return int(round(value)) if p.type is int else float(f"{value:.6g}")  # 6 digits: as a person would write it


def null_suggestions(spec: StrategySpec, baseline: dict[str, Any], symbol: str, month: str, count: int,
                     fidelity: str | None = None) -> list[NullSuggestion]:
    """``count`` random one-parameter changes of ``baseline`` (``spec``'s resolved values of the
    critique) for (``spec.name``, ``symbol``, ``month``): see the module docstring. Each passes
    ``spec.resolved``; :class:`NullCriticError` when none can be drawn."""
    if count <= 0:
        return []
    base = spec.with_values(baseline)
    current = base.resolved()
    names = eligible(spec, fidelity)
    if not names:
        raise NullCriticError(f"{spec.name} {month}|{symbol}: no tunable parameter the critic could change (fidelity {fidelity})")
    out = []
    for k in range(count):
        seed = seed_of(spec.name, symbol, month, k)
        rng = np.random.default_rng(seed)
        for draw in range(1, MAX_DRAWS + 1):
            name = names[int(rng.integers(len(names)))]
            value = _draw(spec, name, current[name], rng)
            if value == current[name]:
                continue
            try:
                base.resolved({name: value})
            except ParamError:
                continue
            out.append(NullSuggestion(name, value, f"null critic: random change of {name} {current[name]!r} -> {value!r} "
                                                   f"(control arm, not a hypothesis)", seed, draw))
            break
        else:
            raise NullCriticError(f"{spec.name} {month}|{symbol}: no valid random change in {MAX_DRAWS} draws "
                                  f"(proposal {k}, parameters {', '.join(names)})")
    return out
