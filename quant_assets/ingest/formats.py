"""The parser interface every source format implements, and helpers they share.

A format turns one plain-text (already decompressed) landing file into a *parsed* LazyFrame:
the canonical tick columns (see ``quant_assets.lake.schema``) plus ``src_line`` (1-based line
in the source file). Values that fail to parse are null; ``validate`` turns nulls and rule
breaks into reject reasons. Nothing is collected here: the frame streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from quant_assets.ingest.sample import Sample
from quant_assets.lake.schema import KIND, TICK_SCHEMA


@dataclass(frozen=True)
class SourceFormat:
    """A landing-file format: how to recognise it and how to read it."""

    name: str
    layout: str  # column layout, as shown to users when nothing matches
    matches: Callable[[Sample], bool]
    scan: Callable[[Sample], pl.LazyFrame]


def scan_fields(sample: Sample, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """Scan ``sample.text_path`` as CSV with positional ``schema`` (names are ours, not the
    header's); unparseable values become null; ``src_line`` counts source lines from 1."""
    has_header = sample.header is not None
    n_fields = len(sample.data_row)
    # Files of one family differ in trailing columns (spot trades add is_best_match):
    # read only as many fields as the file has, pad the rest with nulls.
    names = list(schema)[:n_fields] if n_fields else list(schema)
    lf = pl.scan_csv(
        sample.text_path,
        has_header=False,
        skip_rows=1 if has_header else 0,
        schema={n: schema[n] for n in names},
        ignore_errors=True,
        row_index_name="src_line",
        row_index_offset=2 if has_header else 1,
        truncate_ragged_lines=False,
    )
    missing = [n for n in schema if n not in names]
    if missing:
        lf = lf.with_columns([pl.lit(None, dtype=schema[n]).alias(n) for n in missing])
    return lf


def to_canonical(lf: pl.LazyFrame, kind: str, **exprs: pl.Expr) -> pl.LazyFrame:
    """Select the canonical columns from ``exprs`` (missing ones are null) plus ``src_line``.

    ``ts_recv`` defaults to ``ts_event`` when a source has one time only.
    """
    if "ts_recv" not in exprs:
        exprs["ts_recv"] = exprs["ts_event"]
    cols: list[pl.Expr] = []
    for name, dtype in TICK_SCHEMA.items():
        if name == "kind":
            cols.append(pl.lit(kind).cast(KIND).alias("kind"))
        elif name in exprs:
            cols.append(exprs[name].cast(dtype, strict=False).alias(name))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    cols.append(pl.col("src_line").cast(pl.Int64))
    return lf.select(cols)


def first_int(sample: Sample, index: int, where: str) -> int:
    """The integer in field ``index`` of the first data row (for epoch-unit inference)."""
    row = sample.data_row
    if not row:
        raise ValueError(f"{where}: no data rows (only a header)")
    try:
        return int(float(row[index]))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{where}: expected an integer timestamp in field {index + 1} of the first data row, got {row!r}") from exc
