"""The canonical funding table and the one place that decides what is a perpetual.

One row per funding event of one instrument:

- ``ts``: int64 ns since the epoch, UTC: the funding time (when the payment is exchanged).
- ``rate``: float64, a fraction per funding interval (0.0001 = 0.01%). Positive means longs pay
  shorts: a position of ``q`` base units marked at ``p`` receives ``-q * p * rate`` quote units.
- ``interval_h``: float64 hours since the previous funding time, null when the source does not
  say (first Tardis event of a file).
- ``mark_px``: float64 mark price at ``ts`` in quote currency, null when the source has none
  (Binance ``fundingRate`` files carry no mark).
- ``source``: the landing file (path relative to the lake root); ``src_line``: 1-based line.

Invariants of a published ``funding/symbol=S/month=M/part-0.parquet``: every ``ts`` lies in
month M, rows are sorted by ``ts`` and ``ts`` is unique, ``|rate| <= MAX_ABS_RATE``,
``interval_h`` is null or in (0, 24], ``mark_px`` is null or > 0.
"""

from __future__ import annotations

import polars as pl

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "rate": pl.Float64(),
    "interval_h": pl.Float64(),
    "mark_px": pl.Float64(),
    "source": pl.String(),
    "src_line": pl.Int64(),
}
FUNDING_COLUMNS = list(FUNDING_SCHEMA)

#: Largest plausible |rate| per interval. Venue caps are far lower (Binance: a few % at most
#: for the most volatile contracts, 0.3-0.75% for majors), so a larger value is a unit mistake
#: (a percentage read as a fraction) or a corrupt row, never a real funding.
MAX_ABS_RATE = 0.05

#: Suffix of the partition symbol of a perpetual swap (``BTCUSDT-PERP``).
PERP_SUFFIX = "-PERP"


def is_perpetual(symbol: str) -> bool:
    """Whether ``symbol`` (a partition symbol) is a perpetual swap, i.e. pays funding.

    The single decision point; the kind comes from the symbol (see
    :func:`quant_assets.lake.identity.parse_symbol`)."""
    from quant_assets.lake.identity import parse_symbol

    return parse_symbol(symbol.upper())[1] == "perpetual"


def underlying_symbol(symbol: str) -> str:
    """The venue's own symbol of a partition symbol: ``BTCUSDT-PERP`` -> ``BTCUSDT``."""
    s = symbol.upper()
    return s[: -len(PERP_SUFFIX)] if s.endswith(PERP_SUFFIX) else s


def empty_funding() -> pl.DataFrame:
    return pl.DataFrame(schema=FUNDING_SCHEMA)
