"""The venue settings one symbol's backtests read, and their version.

A backtest of symbol S runs under S's venue × kind: its venue profile (``venues.toml``), the fee
schedule rows of its fee tier and its margin row (``[[fees]]``, ``[[margin]]`` in
``instruments.toml``), and S's own table there (fee overrides, venue, kind). Their digest is the
data version of S's ``venue_profile`` partition, so editing one venue's settings gives new data
versions to the symbols on that venue only, and only their backtests become stale. The digest of
*all* settings (:func:`config_digest`) is the asset's code version: any edit asks every symbol to
recompute its own, which is cheap (no data is read), and the symbols whose digest did not move
stay as they were downstream.

Plain Python: no Dagster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from quant_assets.lake import fees as fee_mod
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.identity import parse_symbol
from quant_assets.lake.store import Lake
from quant_assets.venues import profile as venue_profiles

#: Bump when what a symbol's venue settings include changes.
SCOPE_VERSION = 1


class UnknownVenueError(ValueError):
    """The symbol has neither an instrument record, a table in instruments.toml nor landing files
    a venue can be read from."""


@dataclass(frozen=True)
class SymbolVenue:
    """What a symbol's backtests take from its venue. ``venue_from`` says how the venue × kind
    was found (the instrument record, instruments.toml, or the landing files' formats before the
    first ingest). ``version``: 16 hex characters over ``settings`` (not over where they were read)."""

    symbol: str
    venue: str
    kind: str
    fee_tier: str
    venue_from: str
    profile: dict[str, object]
    fees: list[dict[str, object]]
    margin: dict[str, object]
    overrides: dict[str, object] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, object]:
        profile = {k: v for k, v in self.profile.items() if k not in ("source", "label", "latency_file")}
        return {"scope": SCOPE_VERSION, "venue": self.venue, "kind": self.kind, "fee_tier": self.fee_tier,
                "profile": profile, "fees": self.fees, "margin": self.margin, "overrides": self.overrides}

    @property
    def version(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _venue_kind(lake: Lake, symbol: str, instruments: Path | None) -> tuple[str, str, str, str]:
    """(venue, kind, fee tier, where from) of ``symbol``: its instrument record (inferred at
    ingest, with instruments.toml applied), else its instruments.toml table, else the venue
    implied by its landing files' formats (a symbol whose ticks were never ingested)."""
    # Venue and kind are per symbol, not per month: every record of the symbol.
    inst = inst_mod.resolve(lake, symbol, instruments, month=None)
    if inst is not None:
        return inst.venue, str(inst.kind), inst.fee_tier, "instrument record" if "inferred" in inst.source else "instruments.toml"
    from quant_assets.ingest.landing import survey

    formats = [r.format for r in survey(lake, symbol, table=None) if r.status != "failed"]
    if not formats:
        raise UnknownVenueError(f"{symbol}: no instrument record, no [{symbol}] table in "
                                f"{instruments or fee_mod.config_path()} and no landing files in landing/{symbol}/ to read a venue from")
    venue = inst_mod.venue_of(formats)
    kind = parse_symbol(symbol, venue)[1]
    return venue, kind, fee_mod.DEFAULT_TIER, "landing formats"


def symbol_venue(lake: Lake, symbol: str, instruments: Path | None = None, venues: Path | None = None) -> SymbolVenue:
    """Every venue setting a backtest of ``symbol`` reads (see the module docstring). Raises
    :class:`UnknownVenueError` for a symbol with no venue to be found, and ValueError (naming the
    file and setting) for a bad config."""
    venue, kind, tier, venue_from = _venue_kind(lake, symbol, instruments)
    prof = venue_profiles.profile_for(venue, kind, venues)
    rows = fee_mod.fee_schedule(instruments).get((venue.upper(), kind, tier.upper()), [])
    fees = [{"from": r.start.isoformat(), "until": r.end.isoformat() if r.end else None, "maker": r.maker, "taker": r.taker}
            for r in rows]
    m = fee_mod.margin_row(venue, kind, instruments)
    margin = {"max_leverage": m.max_leverage, "maintenance_margin": m.maintenance_margin}
    over = inst_mod.overrides(instruments).get(symbol, {})
    return SymbolVenue(symbol, venue, kind, tier, venue_from, prof.describe(), fees, margin, dict(sorted(over.items())))


def config_digest(instruments: Path | None = None, venues: Path | None = None) -> str:
    """12 hex characters over every venue setting in force: every profile, fee row, margin row and
    symbol table (see the module docstring: the ``venue_profile`` asset's code version)."""
    over = inst_mod.overrides(instruments)
    parts = (SCOPE_VERSION, venue_profiles.digest(venues), fee_mod.settings_digest(instruments),
             json.dumps(over, sort_keys=True, default=str))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
