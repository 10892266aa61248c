"""Strategy specs: a name, an engine, typed parameters with units and ranges, and a code version.

A spec is plain data (no engine imports), so the Dagster definitions can list every strategy
without loading NautilusTrader or hftbacktest. The implementation is named by an import path
(``module:attribute``) that the engine adapter loads when a backtest actually runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

Engine = Literal["nautilus", "hftbacktest"]


class ParamError(ValueError):
    """A strategy parameter is unknown, of the wrong type or outside its range."""


@dataclass(frozen=True)
class Axis:
    """One axis of a parameter sweep grid: ``start`` to ``stop`` inclusive by ``step``, in the
    unit of the strategy's vectorised form (see ``quant_assets.research.sweep``)."""

    name: str
    start: float
    stop: float
    step: float

    def values(self) -> list[float]:
        n = int((self.stop - self.start) / self.step + 1e-9) + 1
        return [self.start + i * self.step for i in range(n)]


@dataclass(frozen=True)
class Param:
    """One tunable parameter. ``lo``/``hi`` are inclusive bounds in ``unit``."""

    name: str
    type: type  # int | float | bool
    default: int | float | bool
    doc: str
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    #: +1 if raising the value makes the strategy trade less often, -1 if lowering it does, 0
    #: if neither (the offline critic's hint when fees eat the edge).
    fewer_trades: int = 0
    #: False for settings that do not change what the strategy does (e.g. sampling): a critic
    #: may not suggest changing them.
    tunable: bool = True

    def coerce(self, strategy: str, value: object) -> int | float | bool:
        """``value`` as this parameter's type, or :class:`ParamError` naming the strategy,
        the parameter, the value and what was expected."""
        expected = f"{self.type.__name__}" + (f" in [{self.lo}, {self.hi}]" if self.lo is not None or self.hi is not None else "")
        where = f"{strategy}.{self.name}"
        if self.type is bool:
            if not isinstance(value, bool):
                raise ParamError(f"{where} = {value!r}: expected a bool")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{where} = {value!r}: expected {expected}")
        if self.type is int:
            if float(value) != int(value):
                raise ParamError(f"{where} = {value!r}: expected an integer")
            value = int(value)
        else:
            value = float(value)
        if value != value or (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ParamError(f"{where} = {value!r}: out of range, expected {expected} ({self.unit or 'no unit'})")
        return value


@dataclass(frozen=True)
class Warmup:
    """The history a strategy's indicators need before it may trade: ``count`` inputs of its
    signal, each a time bar of ``bar_ns`` ns (``unit="bars"``) or a quote update
    (``unit="quotes"``). ``count == 0``: nothing to warm. A backtest of month M reads that much
    of M−1's end and feeds it to the strategy with trading disabled; in a month without a
    previous one the strategy waits the same count of M's own inputs (it never trades on
    indicators that still weigh their seed)."""

    count: int = 0
    unit: Literal["bars", "quotes"] = "quotes"
    bar_ns: int = 0

    def __post_init__(self) -> None:
        if self.count < 0 or (self.unit == "bars" and self.count and self.bar_ns <= 0):
            raise ValueError(f"warm-up of {self.count} {self.unit} (bar {self.bar_ns} ns): expected a count >= 0 and bars > 0 ns")

    @property
    def duration_ns(self) -> int | None:
        """Time the warm-up spans (bars only; a count of quotes has no fixed duration)."""
        return self.count * self.bar_ns if self.unit == "bars" else None

    def describe(self) -> str:
        if not self.count:
            return "none"
        if self.unit == "bars":
            return f"{self.count:,} bars of {self.bar_ns / 1e9:g} s"
        return f"{self.count:,} quote updates"


NO_WARMUP = Warmup()


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    ``version`` is the strategy's source version: bump it whenever the implementation's
    behaviour changes. ``code_version`` combines it with the engine adapter's version and the
    parameter values, so changing one parameter makes exactly this strategy's slices stale.
    """

    name: str
    engine: Engine
    impl: str  # "package.module:attribute", loaded lazily by the engine adapter
    description: str
    params: tuple[Param, ...]
    version: str = "1"
    values: Mapping[str, int | float | bool] = field(default_factory=dict)
    #: Invariants between parameters: (predicate on the resolved values, what is expected).
    constraints: tuple[tuple[Callable[[dict], bool], str], ...] = ()
    #: The warm-up its indicators need, from its resolved parameters (:class:`Warmup`); part of
    #: the strategy's code: bump ``version`` when it changes.
    warmup_rule: Callable[[dict], Warmup] | None = None
    #: Order-book depth: ``none`` (L1 quotes and trades only), ``optional`` (the engine reads the
    #: slice's ``book`` where it has one: queue positions, book matching), ``required`` (not
    #: applicable on a slice without depth).
    depth: Literal["none", "optional", "required"] = "none"

    def __post_init__(self) -> None:
        # Latency, queue, fills and fees belong to the venue (quant_assets.venues): a strategy
        # parameter of that name would let a tuner, or a critic, change the market itself.
        from quant_assets.venues.profile import VENUE_SETTINGS

        clash = sorted(p.name for p in self.params if p.name in VENUE_SETTINGS)
        if clash:
            raise ParamError(f"{self.name}: {', '.join(clash)} is a venue setting, not a strategy parameter: "
                             "set it in the venue profile (venues.toml)")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParamError(f"{self.name}: unknown parameter {name!r}; known: {', '.join(p.name for p in self.params)}")

    def resolved(self, overrides: Mapping[str, object] | None = None) -> dict[str, int | float | bool]:
        """Defaults, then this spec's values, then ``overrides``; every value checked."""
        out: dict[str, int | float | bool] = {p.name: p.default for p in self.params}
        for source in (self.values, overrides or {}):
            for name, value in source.items():
                out[name] = self.param(name).coerce(self.name, value)
        for holds, message in self.constraints:
            if not holds(out):
                raise ParamError(f"{self.name}: {message} (got {', '.join(f'{k}={v}' for k, v in out.items())})")
        return out

    def with_values(self, values: Mapping[str, object]) -> StrategySpec:
        """This spec with parameter values set (validated now, not at run time)."""
        merged = {**self.values, **values}
        spec = replace(self, values=merged)
        spec.resolved()
        return spec

    def warmup(self, overrides: Mapping[str, object] | None = None) -> Warmup:
        """The warm-up of this spec's parameters (with ``overrides``)."""
        return self.warmup_rule(self.resolved(overrides)) if self.warmup_rule is not None else NO_WARMUP

    def code_version(self, adapter_version: str) -> str:
        params = json.dumps(self.resolved(), sort_keys=True)
        digest = hashlib.sha256(f"{self.engine}|{adapter_version}|{self.impl}|{params}".encode()).hexdigest()[:12]
        return f"{self.name}-v{self.version}-{digest}"

    def docs(self) -> list[dict[str, object]]:
        """The parameter dictionary: name, type, default, current value, unit, range, meaning."""
        values = self.resolved()
        return [
            {"name": p.name, "type": p.type.__name__, "default": p.default, "value": values[p.name],
             "unit": p.unit, "lo": p.lo, "hi": p.hi, "doc": p.doc}
            for p in self.params
        ]
