"""Canonical Parquet drops: files already in the tick schema (the synthetic feed writes these).

Required columns: ``ts_event`` (int64 ns) and ``kind`` (quote/trade); the rest of the
canonical columns are optional (null when absent), ``ts_recv`` defaults to ``ts_event`` and
``seq`` to the row number. ``src_line`` is the 1-based row number in the file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quant_assets.ingest.errors import IngestError
from quant_assets.lake.schema import KIND, TICK_SCHEMA

NAME = "canonical_parquet"
LAYOUT = "Parquet with the canonical tick columns (ts_event int64 ns, kind, ...)"
PARQUET_MAGIC = b"PAR1"


def scan(path: Path) -> pl.LazyFrame:
    """Parsed frame (canonical columns + ``src_line``) from a canonical Parquet file."""
    try:
        lf = pl.scan_parquet(path)
        schema = lf.collect_schema()
    except Exception as exc:  # polars raises several types for a broken footer
        raise IngestError(path, f"unreadable Parquet ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("ts_event", "kind") if c not in schema]
    if missing:
        raise IngestError(path, f"Parquet lacks required column(s) {missing}; expected {LAYOUT}; found {list(schema)}")
    for name, dtype in schema.items():
        want = TICK_SCHEMA.get(name)
        if want is None or name in ("kind", "trade_id"):
            continue
        if not dtype.is_numeric():
            raise IngestError(path, f"column {name!r} has type {dtype}, expected {want} (numeric)")
    kind_dtype = schema["kind"]
    if not (kind_dtype == pl.String or isinstance(kind_dtype, (pl.Enum, pl.Categorical))):
        raise IngestError(path, f"column 'kind' has type {kind_dtype}, expected text 'quote'/'trade'")
    lf = lf.with_row_index("src_line", offset=1)
    cols: list[pl.Expr] = []
    for name, dtype in TICK_SCHEMA.items():
        if name == "kind":
            cols.append(pl.col("kind").cast(pl.String).cast(KIND, strict=False))
        elif name in schema:
            cols.append(pl.col(name).cast(dtype, strict=False))
        elif name == "ts_recv":
            cols.append(pl.col("ts_event").cast(pl.Int64).alias("ts_recv"))
        elif name == "seq":
            cols.append(pl.col("src_line").cast(pl.Int64).alias("seq"))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    cols.append(pl.col("src_line").cast(pl.Int64))
    return lf.select(cols)
