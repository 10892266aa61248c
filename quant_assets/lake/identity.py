"""Instrument identity: venue + raw symbol + kind, and the partition symbol that names it.

A partition symbol (the landing folder and ``symbol=`` partition) follows NautilusTrader's
instrument-id symbols, so one venue symbol can back several instruments:

==================  ============  ==============  =====================================
partition symbol    kind          raw symbol      what it is
==================  ============  ==============  =====================================
``BTCUSDT``         ``spot``      ``BTCUSDT``     spot pair
``BTCUSDT-PERP``    ``perpetual`` ``BTCUSDT``     USD-M perpetual (suffix ``-PERP``)
``BTC-PERPETUAL``   ``perpetual`` ``BTC-PERPETUAL`` Deribit-style perpetual (the name is raw)
``BTCUSDT-250328``  ``future``    ``BTCUSDT_250328`` dated future expiring 2025-03-28
``EURUSD``          ``fx``        ``EURUSD``      FX pair (two fiat codes, or venue FX)
==================  ============  ==============  =====================================

The *raw* symbol is what the venue calls the instrument, and what its files carry in their
names or symbol columns: Binance names spot and USD-M perpetual files alike
(``BTCUSDT-trades-2024-03.zip``), so a file's claim is checked against the raw symbol, never
against the partition symbol. This module is plain Python (no Dagster, no engine).
"""

from __future__ import annotations

import re
from datetime import date

#: Instrument kinds. ``future`` is a dated (expiring) future; ``perpetual`` never expires.
KINDS = ("spot", "perpetual", "future", "fx")
PERP_SUFFIX = "-PERP"
#: ISO codes of fiat currencies: a pair of two of them is an FX pair whatever the venue.
FIAT = frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK", "SGD", "HKD",
                  "MXN", "ZAR", "PLN", "CZK", "HUF", "CNH", "TRY"})
#: ``<pair>-YYMMDD`` (NautilusTrader style) or ``<pair>_YYMMDD`` (Binance delivery contracts).
_DATED = re.compile(r"^(?P<pair>[A-Z0-9]+)[-_](?P<yymmdd>\d{6})$")


def _expiry(yymmdd: str) -> date | None:
    try:
        return date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError:
        return None


def is_fx_pair(pair: str) -> bool:
    """True for six letters made of two fiat codes (``EURUSD``; separators ignored)."""
    s = re.sub(r"[^A-Z]", "", pair.upper())
    return len(s) == 6 and s[:3] in FIAT and s[3:] in FIAT


def parse_symbol(symbol: str, venue: str | None = None) -> tuple[str, str]:
    """``(raw_symbol, kind)`` of a partition symbol (see the module table).

    ``venue="FX"`` makes any non-derivative symbol an ``fx`` pair; without a venue, a pair of
    two fiat codes is ``fx`` and anything else without a derivative suffix is ``spot``.
    Invariant: ``symbol_for(*parse_symbol(s)) == s`` for the canonical spellings.
    """
    s = symbol.strip().upper()
    if s.endswith(PERP_SUFFIX) and len(s) > len(PERP_SUFFIX):
        return s[: -len(PERP_SUFFIX)], "perpetual"
    if s.endswith("-PERPETUAL"):  # Deribit's own perpetual names are their raw symbols
        return s, "perpetual"
    m = _DATED.match(s)
    if m and _expiry(m["yymmdd"]) is not None:
        return f"{m['pair']}_{m['yymmdd']}", "future"
    if venue == "FX" or is_fx_pair(s):
        return s, "fx"
    return s, "spot"


def kind_of(symbol: str, venue: str | None = None) -> str:
    return parse_symbol(symbol, venue)[1]


def raw_symbol_of(symbol: str, venue: str | None = None) -> str:
    return parse_symbol(symbol, venue)[0]


def pair_of(symbol: str) -> str:
    """The currency pair behind a symbol (``BTCUSDT-PERP`` and ``BTCUSDT-250328`` -> ``BTCUSDT``),
    what base and quote currencies are split from."""
    raw, kind = parse_symbol(symbol)
    if kind == "future":
        return raw.rsplit("_", 1)[0]
    if raw.endswith("-PERPETUAL"):
        return raw[: -len("-PERPETUAL")]
    return raw


def expiry_of(symbol: str) -> date | None:
    """Expiry date of a dated future's symbol, else None."""
    m = _DATED.match(symbol.strip().upper())
    return _expiry(m["yymmdd"]) if m else None


def symbol_for(raw_symbol: str, kind: str) -> str:
    """The partition symbol of ``raw_symbol`` of ``kind`` (inverse of :func:`parse_symbol`)."""
    check_kind(kind, "kind")
    raw = raw_symbol.strip().upper()
    if kind == "perpetual":
        return raw if raw.endswith("-PERPETUAL") else raw + PERP_SUFFIX
    if kind == "future":
        m = _DATED.match(raw)
        if not m:
            raise ValueError(f"future {raw_symbol!r}: expected <pair>_YYMMDD")
        return f"{m['pair']}-{m['yymmdd']}"
    return raw


def check_kind(kind: object, where: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a ValueError naming ``where``."""
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return str(kind)


def claims_match(claimed: str, symbol: str) -> bool:
    """True when a file's claimed symbol (its name, a Tardis ``symbol`` or TrueFX pair column)
    names the instrument of partition ``symbol``: its raw symbol, or the partition symbol itself.
    Separators are ignored for FX pairs (``EUR/USD`` in a file, ``EUR.USD`` as a folder)."""
    c, s = claimed.strip().upper(), symbol.strip().upper()
    raw, kind = parse_symbol(s)
    if c in (s, raw):
        return True
    if kind == "fx":
        strip = lambda x: re.sub(r"[^A-Z0-9]", "", x)  # noqa: E731
        return strip(c) == strip(raw)
    return False
