"""Universes: named sets of instruments, declared in ``universes.toml`` at the repository root
(or the file named by ``$QUANT_UNIVERSES``)::

    [universes]
    majors = ["BTCUSDT", "ETHUSDT"]
    btc_basis = ["BTCUSDT", "BTCUSDT-PERP"]

Each member is a **partition symbol** (:mod:`quant_assets.lake.identity`): the name of its
``symbol=`` partition, so ``BTCUSDT-PERP`` is the USD-M perpetual and ``BTCUSDT`` the spot pair.
Members are normalised like every symbol (:func:`quant_assets.lake.symbols.normalise_symbol`:
upper case, ``[A-Z0-9._-]``) and must be written in their canonical spelling
(``BTCUSDT-250328``, not the venue's raw ``BTCUSDT_250328``), or they would name a partition
that no data lands in. A universe name becomes a Dagster partition key (month × universe) and a
lake folder (``universe=U``), so it is ``[a-z0-9_-]``, starting with a letter or digit, at most
64 characters: no ``|`` (Dagster's multi-partition separator), no ``,`` or brackets (Dagster's
key ranges), no path separator. Every error names the file, the universe and the member.

The same file says what runs on each universe (every table optional)::

    [backtests]                  # multi-instrument backtests, one engine run per month
    basis = ["btc_basis"]        # strategy = [universes]

    [cross_sections]             # cross-sectional factor analysis of the strategy's signal
    ema_cross = ["majors"]

    [portfolios.trend]           # a portfolio set: strategies x the universe's members
    universe = "majors"
    strategies = ["ema_cross", "mean_reversion"]
    weighting = "inverse_vol"    # or "fixed" (with weights = {"ema_cross:BTCUSDT" = 0.5, ...}, default equal)
    window_days = 20             # inverse_vol: trailing window, calendar days
    min_days = 10                # inverse_vol: fewest returns in the window for a weight

Strategy names are checked against the registry by :func:`check_strategies` (the Dagster
definitions call it), so a typo stops loading with the file and the table named.

A missing file is no universe (an empty mapping), as a missing ``strategies.toml`` is no
variant. The file is tiny, but :func:`universes_of` is asked once per partition key by the
partition mapping (400 symbols × 84 months), so a parsed file is cached by its path, size and
modification time: a stat per call, one parse per edit.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quant_assets.lake.identity import parse_symbol, symbol_for
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol

CONFIG_ENV = "QUANT_UNIVERSES"
REPO_ROOT = Path(__file__).resolve().parents[2]
SECTION = "universes"
RUN_SECTIONS = ("backtests", "cross_sections")
PORTFOLIOS = "portfolios"
WEIGHTINGS = ("fixed", "inverse_vol")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class UniverseError(ValueError):
    """A universe file, universe or member that is not valid; the message names which."""


def config_path() -> Path:
    """``$QUANT_UNIVERSES`` or ``<repo>/universes.toml``."""
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "universes.toml")


@dataclass(frozen=True)
class Universes:
    """The universes of one file: name -> members (partition symbols, in the file's order),
    and the inverse index symbol -> names of the universes holding it (sorted)."""

    path: Path
    sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    by_symbol: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: strategy -> universes it is backtested on as one multi-instrument run ([backtests])
    backtests: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: strategy -> universes its signal is analysed across ([cross_sections])
    cross_sections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: set name -> its declaration ([portfolios.<name>])
    portfolios: Mapping[str, "PortfolioSet"] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.sets)

    def members(self, name: str) -> tuple[str, ...]:
        """The members of universe ``name``; an error naming the file and the known universes."""
        try:
            return self.sets[name]
        except KeyError:
            known = ", ".join(self.names) or ("none: the file does not exist" if not self.path.exists() else "none")
            raise UniverseError(f"{self.path}: no universe {name!r} (known: {known})") from None

    def universes_of(self, symbol: str) -> tuple[str, ...]:
        """Names of the universes ``symbol`` belongs to (sorted; empty for none). ``symbol`` is
        normalised first, so ``btcusdt`` finds ``BTCUSDT``'s; an invalid symbol belongs to none."""
        try:
            return self.by_symbol.get(normalise_symbol(symbol), ())
        except InvalidSymbolError:
            return ()


@dataclass(frozen=True)
class PortfolioSet:
    """A declared portfolio: ``strategies`` (single-instrument strategies) × the members of
    ``universe``, weighted ``weighting`` (``fixed``: ``weights`` by line label
    ``strategy:SYMBOL``, default equal; ``inverse_vol``: trailing ``window_days`` calendar days,
    at least ``min_days`` returns)."""

    name: str
    universe: str
    strategies: tuple[str, ...]
    weighting: str = "fixed"
    weights: Mapping[str, float] | None = None
    window_days: int = 20
    min_days: int = 10


def check_name(name: object, path: Path) -> str:
    """``name`` if it is a valid universe name (see the module docstring), else an error."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UniverseError(
            f"{path}: universe {name!r}: a universe name is 1-64 characters from a-z 0-9 _ - starting with a letter "
            "or digit (it becomes a Dagster partition key and a lake folder: no '|', ',', brackets, '/', or upper case)")
    return name


def check_member(member: object, name: str, path: Path) -> str:
    """The canonical partition symbol of ``member`` of universe ``name``, else an error naming both."""
    if not isinstance(member, str):
        raise UniverseError(f"{path}: universe {name!r}: member {member!r} is not a string; expected a partition symbol")
    try:
        sym = normalise_symbol(member)
    except InvalidSymbolError as exc:
        raise UniverseError(f"{path}: universe {name!r}: member {member!r}: {exc}") from None
    canonical = symbol_for(*parse_symbol(sym))
    if canonical != sym:
        raise UniverseError(f"{path}: universe {name!r}: member {member!r} is a venue's raw symbol, not a partition "
                            f"symbol: write it as {canonical!r} (see quant_assets/lake/identity.py)")
    return sym


def parse(config: Mapping[str, object], path: Path) -> Universes:
    """Universes of a parsed TOML document (``path`` names it in errors)."""
    extra = sorted(k for k in config if k not in (SECTION, *RUN_SECTIONS, PORTFOLIOS))
    if extra:
        raise UniverseError(f"{path}: unknown table(s) {', '.join(repr(k) for k in extra)}; expected [{SECTION}] "
                            f"(name = [\"SYMBOL\", ...]), {', '.join(f'[{t}]' for t in RUN_SECTIONS)} "
                            f"(strategy = [\"universe\", ...]) and [{PORTFOLIOS}.<name>]")
    table = config.get(SECTION, {})
    if not isinstance(table, Mapping):
        raise UniverseError(f"{path}: [{SECTION}] must be a table of name = [\"SYMBOL\", ...]")
    sets: dict[str, tuple[str, ...]] = {}
    by_symbol: dict[str, list[str]] = {}
    for name, members in table.items():
        check_name(name, path)
        if not isinstance(members, list) or not members:
            raise UniverseError(f"{path}: universe {name!r}: expected a non-empty list of partition symbols, got {members!r}")
        seen: list[str] = []
        for member in members:
            sym = check_member(member, name, path)
            if sym in seen:
                raise UniverseError(f"{path}: universe {name!r}: member {member!r} is listed twice")
            seen.append(sym)
            by_symbol.setdefault(sym, []).append(name)
        sets[name] = tuple(seen)
    runs = {t: _runs(config.get(t, {}), t, sets, path) for t in RUN_SECTIONS}
    portfolios = _portfolios(config.get(PORTFOLIOS, {}), sets, path)
    return Universes(path, sets, {s: tuple(sorted(names)) for s, names in by_symbol.items()},
                     runs["backtests"], runs["cross_sections"], portfolios)


def _known(universe: object, sets: Mapping[str, tuple[str, ...]], where: str, path: Path) -> str:
    if universe not in sets:
        raise UniverseError(f"{path}: {where}: no universe {universe!r} (declared: {', '.join(sorted(sets)) or 'none'})")
    return str(universe)


def _runs(table: object, section: str, sets: Mapping[str, tuple[str, ...]], path: Path) -> dict[str, tuple[str, ...]]:
    """``[backtests]`` / ``[cross_sections]``: strategy = [universes]."""
    if not isinstance(table, Mapping):
        raise UniverseError(f"{path}: [{section}] must be a table of strategy = [\"universe\", ...]")
    out: dict[str, tuple[str, ...]] = {}
    for strategy, names in table.items():
        if not isinstance(names, list) or not names:
            raise UniverseError(f"{path}: [{section}] {strategy}: expected a non-empty list of universe names, got {names!r}")
        if len(set(names)) != len(names):
            raise UniverseError(f"{path}: [{section}] {strategy}: a universe is listed twice in {names!r}")
        out[str(strategy)] = tuple(_known(u, sets, f"[{section}] {strategy}", path) for u in names)
    return out


def _portfolios(table: object, sets: Mapping[str, tuple[str, ...]], path: Path) -> dict[str, PortfolioSet]:
    """``[portfolios.<name>]``: universe, strategies, weighting (and its settings)."""
    if not isinstance(table, Mapping):
        raise UniverseError(f"{path}: [{PORTFOLIOS}] must hold tables [{PORTFOLIOS}.<name>]")
    out: dict[str, PortfolioSet] = {}
    keys = {"universe", "strategies", "weighting", "weights", "window_days", "min_days"}
    for name, t in table.items():
        where = f"[{PORTFOLIOS}.{name}]"
        check_name(name, path)
        if not isinstance(t, Mapping):
            raise UniverseError(f"{path}: {where} must be a table")
        unknown = sorted(set(t) - keys)
        if unknown:
            raise UniverseError(f"{path}: {where}: unknown setting(s) {unknown}; expected {sorted(keys)}")
        universe = _known(t.get("universe"), sets, where, path)
        strategies = t.get("strategies")
        if not isinstance(strategies, list) or not strategies or not all(isinstance(s, str) for s in strategies):
            raise UniverseError(f"{path}: {where}: strategies: expected a non-empty list of strategy names, got {strategies!r}")
        weighting = t.get("weighting", "fixed")
        if weighting not in WEIGHTINGS:
            raise UniverseError(f"{path}: {where}: weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
        weights = t.get("weights")
        if weights is not None:
            lines = {f"{s}:{m}" for s in strategies for m in sets[universe]}
            if weighting != "fixed" or not isinstance(weights, Mapping) or not weights or any(
                    k not in lines or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for k, v in weights.items()):
                raise UniverseError(f"{path}: {where}: weights: expected, with weighting = \"fixed\", a table of "
                                    f"line = non-negative number over the lines {sorted(lines)}; got {weights!r}")
            weights = {str(k): float(v) for k, v in weights.items()}
        ints = {}
        for key, default in (("window_days", 20), ("min_days", 10)):
            v = t.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise UniverseError(f"{path}: {where}: {key} {v!r}: expected a whole number of days >= 2")
            ints[key] = v
        if ints["min_days"] > ints["window_days"]:
            raise UniverseError(f"{path}: {where}: min_days {ints['min_days']} exceeds window_days {ints['window_days']}")
        out[str(name)] = PortfolioSet(str(name), universe, tuple(strategies), weighting, weights, **ints)
    return out


def check_strategies(universes: Universes, symbol_strategies: Mapping[str, object],
                     universe_strategies: Mapping[str, object]) -> None:
    """Every strategy the file names is registered, and where it may run: ``[backtests]`` any
    NautilusTrader strategy (the universe ones and the single-instrument ones, run on every
    member in one account); ``[cross_sections]`` and portfolios single-instrument strategies
    (a signal per member; lines are single-instrument backtests)."""
    p = universes.path
    for strategy in universes.backtests:
        if strategy not in symbol_strategies and strategy not in universe_strategies:
            raise UniverseError(f"{p}: [backtests] {strategy}: no such strategy (registered: "
                                f"{', '.join(sorted({*symbol_strategies, *universe_strategies}))})")
    for strategy in universes.cross_sections:
        if strategy not in symbol_strategies:
            raise UniverseError(f"{p}: [cross_sections] {strategy}: not a single-instrument strategy (expected one of "
                                f"{', '.join(sorted(symbol_strategies))})")
    for ps in universes.portfolios.values():
        bad = [s for s in ps.strategies if s not in symbol_strategies]
        if bad:
            raise UniverseError(f"{p}: [{PORTFOLIOS}.{ps.name}] strategies {bad}: not single-instrument strategies "
                                f"(expected from {', '.join(sorted(symbol_strategies))})")


def loads(text: str, path: Path = Path("<string>")) -> Universes:
    """Universes of TOML ``text`` (``path`` names it in errors)."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UniverseError(f"{path}: not valid TOML: {exc}") from exc
    return parse(config, path)


_CACHE: dict[Path, tuple[tuple[int, int], Universes]] = {}


def load(path: Path | None = None) -> Universes:
    """The universes of ``path`` (default :func:`config_path`); none when the file does not exist."""
    path = Path(path or config_path())
    try:
        st = path.stat()
    except FileNotFoundError:
        _CACHE.pop(path, None)
        return Universes(path)
    key = (st.st_size, st.st_mtime_ns)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    universes = loads(path.read_text(encoding="utf-8"), path)
    _CACHE[path] = (key, universes)
    return universes


def members(name: str, path: Path | None = None) -> tuple[str, ...]:
    """The members (partition symbols) of universe ``name``."""
    return load(path).members(name)


def universes_of(symbol: str, path: Path | None = None) -> tuple[str, ...]:
    """The names of the universes ``symbol`` belongs to (sorted): what a partition mapping from
    ``month × symbol`` to ``month × universe`` needs."""
    return load(path).universes_of(symbol)


__all__ = ["CONFIG_ENV", "PortfolioSet", "UniverseError", "Universes", "check_strategies", "config_path", "load", "loads", "members", "universes_of"]
