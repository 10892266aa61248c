"""Quality rules for a canonical ticks file: the logic behind the ``ticks`` asset checks.

Each rule counts offending rows over the whole file (streaming); a rule passes with zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.lake.instruments import Instrument
from quant_assets.lake.schema import DEDUPE_COLUMNS


@dataclass(frozen=True)
class RuleOutcome:
    name: str
    passed: bool
    offending_rows: int
    description: str


DEDUPE = DEDUPE_COLUMNS

#: Rule name -> what it asserts (the asset checks of ``ticks`` carry these names).
RULES = {
    "timestamps_non_decreasing": "ts_recv never decreases",
    "no_duplicates": "no two rows equal in every column but seq",
    "no_crossed_quotes": "bid_px <= ask_px on every quote",
    "positive_prices_and_sizes": "prices > 0 and known sizes > 0",
    "precision_matches_instrument": "prices are multiples of the instrument's tick size",
}


def _off_grid(col: str, step: float) -> pl.Expr:
    """True where ``col`` is not a whole multiple of ``step`` (relative tolerance 1e-6)."""
    units = pl.col(col) / step
    return pl.col(col).is_not_null() & ((units - units.round()).abs() > 1e-6)


def evaluate(path: Path, instrument: Instrument | None) -> list[RuleOutcome]:
    """All rules on the ticks file at ``path``; precision rules only when ``instrument`` is known."""
    lf = pl.scan_parquet(path)
    quote = pl.col("kind") == "quote"
    exprs = {
        "timestamps_non_decreasing": (pl.col("ts_recv").diff() < 0).sum(),
        "no_crossed_quotes": (quote & (pl.col("bid_px") > pl.col("ask_px"))).sum(),
        "positive_prices_and_sizes": (
            quote & ((pl.col("bid_px") <= 0) | (pl.col("ask_px") <= 0) | (pl.col("bid_sz") <= 0) | (pl.col("ask_sz") <= 0))
            | (~quote & ((pl.col("price") <= 0) | (pl.col("size") <= 0)))
        ).sum(),
    }
    if instrument is not None:
        exprs["precision_matches_instrument"] = (
            _off_grid("bid_px", instrument.tick_size) | _off_grid("ask_px", instrument.tick_size)
            | _off_grid("price", instrument.tick_size)
        ).sum()
    counts = lf.select(**{k: v.fill_null(0) for k, v in exprs.items()}).collect(engine="streaming").row(0, named=True)
    # Duplicates share ts_recv, and ts_recv is sorted (checked above): only rows in runs of
    # equal ts_recv need comparing, which keeps this cheap on a month of ticks.
    r = pl.col("ts_recv")
    tie = ((r == r.shift(1)) | (r == r.shift(-1))).fill_null(False)
    counts["no_duplicates"] = (
        lf.filter(tie).select(pl.struct(DEDUPE).is_first_distinct().not_().sum())
        .collect(engine="streaming").item()
    )
    return [RuleOutcome(k, int(v) == 0, int(v), RULES[k]) for k, v in counts.items()]
