"""Venue cost settings: fee schedules (venue × kind × tier, with effective dates) and margin
settings (venue × kind), from ``instruments.toml`` with built-in defaults.

Fees are fractions of traded notional, charged in the quote currency (0.001 = 10 bps = 0.1%);
a negative maker fee is a rebate paid to the maker. ``instruments.toml``::

    [[fees]]                 # one row per schedule period
    venue = "BINANCE"
    kind = "perpetual"       # spot | perpetual | future | fx
    tier = "VIP0"            # optional, default VIP0
    from = "2020-01-01"      # first day in effect (UTC); a TOML date works too
    until = "2024-01-01"     # optional: first day no longer in effect (else: the next row's from)
    maker = -0.0001          # rebate
    taker = 0.0005

    [[margin]]               # one row per venue × kind
    venue = "BINANCE"
    kind = "perpetual"
    max_leverage = 20        # ≥ 1
    maintenance_margin = 0.004   # fraction of position notional, in [0, 1)

Rows given for a venue × kind × tier replace the built-in rows of that key (so a schedule is
always stated whole in one place). A row is in effect from its ``from`` until its ``until`` or
the next row's ``from``; two rows of one key in effect on the same day are an error, as are
fees with ``|fee| > 5%``, unknown kinds and fields, and leverage below 1. Errors name the file
and the row. This module is plain Python (no Dagster, no engine).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from quant_assets.lake.identity import KINDS, check_kind
from quant_assets.settings import REPO_ROOT

CONFIG_ENV = "QUANT_INSTRUMENTS"
#: Largest |fee| accepted, as a fraction of notional: above 5% a value is a unit mistake
#: (bps or percent typed as a fraction), not a fee.
MAX_ABS_FEE = 0.05
DEFAULT_TIER = "VIP0"
#: Top-level keys of ``instruments.toml`` that are not symbols (symbol tables are upper case).
RESERVED_KEYS = ("fees", "margin")
_FEE_FIELDS = {"venue", "kind", "tier", "from", "until", "maker", "taker"}
_MARGIN_FIELDS = {"venue", "kind", "max_leverage", "maintenance_margin"}


@dataclass(frozen=True)
class FeeRow:
    """One period of a venue's fee schedule: ``maker``/``taker`` fractions of notional (quote
    currency; negative = rebate) in effect from ``start`` (inclusive) to ``end`` (exclusive, or
    open-ended when None)."""

    venue: str
    kind: str
    tier: str
    start: date
    end: date | None
    maker: float
    taker: float
    source: str  # "built-in" or "<file> [[fees]] row N"


@dataclass(frozen=True)
class MarginRow:
    """Margin settings of a venue × kind: ``max_leverage`` (≥ 1; 1 = fully funded, no leverage)
    and ``maintenance_margin`` (fraction of position notional below which a position is liquidated)."""

    venue: str
    kind: str
    max_leverage: float
    maintenance_margin: float
    source: str


def builtin_fees() -> list[FeeRow]:
    # Binance's published VIP 0 rates: spot 0.1% / 0.1%, USD-M futures (perpetual and
    # delivery) 0.02% maker / 0.05% taker. FX feeds (TrueFX, Dukascopy) carry the cost in the spread.
    rows = [
        ("BINANCE", "spot", date(2017, 7, 1), 0.001, 0.001),
        ("BINANCE", "perpetual", date(2019, 9, 1), 0.0002, 0.0005),
        ("BINANCE", "future", date(2020, 8, 1), 0.0002, 0.0005),
        ("FX", "fx", date(1990, 1, 1), 0.0, 0.0),
    ]
    return [FeeRow(v, k, DEFAULT_TIER, d, None, m, t, "built-in") for v, k, d, m, t in rows]


def builtin_margin() -> dict[tuple[str, str], MarginRow]:
    # Spot is fully funded (1×, nothing to liquidate); perpetuals and dated futures default to
    # 20× with a 0.4% maintenance margin (Binance's lowest bracket for BTCUSDT).
    out = {}
    for kind, lev, mm in (("spot", 1.0, 0.0), ("fx", 1.0, 0.0), ("perpetual", 20.0, 0.004), ("future", 20.0, 0.004)):
        out[("*", kind)] = MarginRow("*", kind, lev, mm, "built-in")
    return out


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "instruments.toml")


def load_config(path: Path | None = None) -> tuple[Path, dict]:
    """The parsed ``instruments.toml`` (``{}`` when there is none), with the path it came from."""
    path = path or config_path()
    if not path.exists():
        return path, {}
    try:
        return path, tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc


def _day(value: object, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where}: expected a date like 2024-01-01, got {value!r}") from None


def check_fee(value: object, where: str) -> float:
    """``value`` as a fee fraction, or a ValueError naming ``where`` when it is not a number or
    ``|fee| > MAX_ABS_FEE``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number (fraction of notional, e.g. 0.001 = 0.1%), got {value!r}")
    if not abs(value) <= MAX_ABS_FEE:
        raise ValueError(f"{where}: {value} is outside ±{MAX_ABS_FEE} (fees are fractions of notional: "
                         "0.001 = 0.1% = 10 bps; a rebate is negative)")
    return float(value)


def _rows(data: dict, key: str, path: Path, allowed: set[str], required: set[str]) -> list[tuple[str, dict]]:
    rows = data.get(key, [])
    if not isinstance(rows, list):
        raise ValueError(f"{path}: {key!r} must be an array of tables ([[{key}]])")
    out = []
    for i, row in enumerate(rows, start=1):
        where = f"{path} [[{key}]] row {i}"
        bad, missing = set(row) - allowed, required - set(row)
        if bad:
            raise ValueError(f"{where}: unknown field(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        if missing:
            raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
        check_kind(row["kind"], where)
        out.append((where, row))
    return out


def fee_schedule(path: Path | None = None) -> dict[tuple[str, str, str], list[FeeRow]]:
    """Every fee schedule: (venue, kind, tier) -> rows sorted by start, periods closed (each
    row's ``end`` is its ``until`` or the next row's ``start``). Raises ValueError naming the
    file and row for an unknown field or kind, a fee out of range, or overlapping periods."""
    path, data = load_config(path)
    configured: dict[tuple[str, str, str], list[FeeRow]] = {}
    for where, row in _rows(data, "fees", path, _FEE_FIELDS, {"venue", "kind", "from", "maker", "taker"}):
        start = _day(row["from"], f"{where} from")
        end = _day(row["until"], f"{where} until") if "until" in row else None
        if end is not None and end <= start:
            raise ValueError(f"{where}: until {end} is not after from {start}")
        key = (str(row["venue"]).upper(), row["kind"], str(row.get("tier", DEFAULT_TIER)).upper())
        configured.setdefault(key, []).append(FeeRow(
            *key, start, end, check_fee(row["maker"], f"{where} maker"), check_fee(row["taker"], f"{where} taker"), where,
        ))
    table: dict[tuple[str, str, str], list[FeeRow]] = {}
    for r in builtin_fees():
        table.setdefault((r.venue, r.kind, r.tier), []).append(r)
    table.update(configured)  # a configured key states its whole schedule
    closed = {}
    for key, rows in table.items():
        rows = sorted(rows, key=lambda r: r.start)
        out = []
        for cur, nxt in zip(rows, [*rows[1:], None]):
            if nxt is not None and (cur.start == nxt.start or (cur.end is not None and cur.end > nxt.start)):
                raise ValueError(
                    f"{nxt.source}: overlaps {cur.source} for {' '.join(key)}: {cur.start} to "
                    f"{cur.end or 'open'} and from {nxt.start} (one schedule row in effect per day)"
                )
            end = cur.end if cur.end is not None else (nxt.start if nxt is not None else None)
            out.append(FeeRow(cur.venue, cur.kind, cur.tier, cur.start, end, cur.maker, cur.taker, cur.source))
        closed[key] = out
    return closed


def month_start(month: str) -> date:
    """First day of ``YYYY-MM``."""
    try:
        y, m = (int(x) for x in month.split("-"))
        return date(y, m, 1)
    except ValueError:
        raise ValueError(f"month {month!r}: expected YYYY-MM") from None


def schedule_row(venue: str, kind: str, tier: str, month: str, path: Path | None = None) -> FeeRow | None:
    """The fee row of (venue, kind, tier) in effect on the first day of ``month`` (the backtest
    month: a month is charged one schedule, the one in force when it starts). A month before
    the first row takes the first row; a month in a gap (a row with ``until``, no successor)
    takes the last row before it. None when the venue × kind has no schedule at all; a tier
    the venue × kind does not have is a ValueError (a typo must not silently change fees)."""
    table = fee_schedule(path)
    rows = table.get((venue.upper(), kind, tier.upper()))
    if rows is None:
        tiers = sorted(t for v, k, t in table if (v, k) == (venue.upper(), kind))
        if tiers:
            raise ValueError(f"{config_path() if path is None else path}: no fee schedule for {venue} {kind} tier "
                             f"{tier!r}; schedules exist for tiers {tiers} (add [[fees]] rows for it)")
        return None
    day = month_start(month)
    before = [r for r in rows if r.start <= day]
    return before[-1] if before else rows[0]


def margin_settings(path: Path | None = None) -> dict[tuple[str, str], MarginRow]:
    """(venue, kind) -> margin settings; venue ``*`` holds the built-in defaults per kind.
    Raises ValueError naming the file and row for leverage < 1, a maintenance margin outside
    [0, 1), an unknown kind or field, or a venue × kind given twice."""
    path, data = load_config(path)
    table = builtin_margin()
    seen: dict[tuple[str, str], str] = {}
    for where, row in _rows(data, "margin", path, _MARGIN_FIELDS, {"venue", "kind"}):
        key = (str(row["venue"]).upper(), row["kind"])
        if key in seen:
            raise ValueError(f"{where}: {' '.join(key)} is already set by {seen[key]}")
        seen[key] = where
        default = table[("*", row["kind"])]
        lev, mm = row.get("max_leverage", default.max_leverage), row.get("maintenance_margin", default.maintenance_margin)
        if isinstance(lev, bool) or not isinstance(lev, (int, float)) or not lev >= 1:
            raise ValueError(f"{where}: max_leverage {lev!r} must be a number ≥ 1 (1 = no leverage)")
        if isinstance(mm, bool) or not isinstance(mm, (int, float)) or not 0 <= mm < 1:
            raise ValueError(f"{where}: maintenance_margin {mm!r} must be a fraction of notional in [0, 1)")
        table[key] = MarginRow(key[0], key[1], float(lev), float(mm), where)
    return table


def margin_row(venue: str, kind: str, path: Path | None = None) -> MarginRow:
    """Margin settings of ``venue`` × ``kind``: the configured row, else the kind's default."""
    check_kind(kind, f"{venue} instrument")
    table = margin_settings(path)
    return table.get((venue.upper(), kind)) or table[("*", kind)]


__all__ = ["KINDS", "FeeRow", "MarginRow", "fee_schedule", "schedule_row", "margin_settings", "margin_row",
           "check_fee", "config_path", "load_config", "month_start"]


def settings_digest(path: Path | None = None) -> str:
    """A short hash of every fee schedule row and margin setting in force (built-in and
    configured, without where they were read from): part of the ``venue_profile`` asset's code
    version (:func:`quant_assets.venues.scope.config_digest`), so editing a schedule or a margin
    setting makes every symbol recompute its own venue settings. 12 hex characters."""
    import hashlib

    fees = sorted((r.venue, r.kind, r.tier, r.start.isoformat(), r.end.isoformat() if r.end else "", r.maker, r.taker)
                  for rows in fee_schedule(path).values() for r in rows)
    margin = sorted((r.venue, r.kind, r.max_leverage, r.maintenance_margin) for r in margin_settings(path).values())
    return hashlib.sha256(repr((fees, margin)).encode()).hexdigest()[:12]
