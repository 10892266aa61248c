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
    extra = sorted(k for k in config if k != SECTION)
    if extra:
        raise UniverseError(f"{path}: unknown table(s) {', '.join(repr(k) for k in extra)}; "
                            f"universes are declared under [{SECTION}] as name = [\"SYMBOL\", ...]")
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
    return Universes(path, sets, {s: tuple(sorted(names)) for s, names in by_symbol.items()})


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


__all__ = ["CONFIG_ENV", "UniverseError", "Universes", "config_path", "load", "loads", "members", "universes_of"]
