"""Build one ``ticks`` partition (symbol × month) from the staged landing files.

The partition is a pure function of the landing files present now: every file of the
symbol that touches the month contributes its accepted rows; rows are sorted by
(``ts_recv``, ``seq``) and exact duplicates (same values in every column but ``seq``) are
kept once, the one with the lowest ``seq``. Ingesting a file twice, or two overlapping files,
therefore gives the same partition.

The new partition is written to a temporary file, checked, and only then renamed over the
old one: a failure at any point (a crash, a failed blocking check) leaves the previous
partition untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.ingest.landing import stage, survey
from quant_assets.ingest.validate import month_start_ns, next_month
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.schema import TICK_COLUMNS
from quant_assets.lake.store import ROW_GROUP_ROWS, Lake, atomic_target, file_sha256
from quant_assets.lake.symbols import normalise_symbol

DEDUPE_COLUMNS = [c for c in TICK_COLUMNS if c != "seq"]
SORT_COLUMNS = ["ts_recv", "seq", *[c for c in DEDUPE_COLUMNS if c != "ts_recv"]]


class NoDataError(ValueError):
    """No landing file has valid ticks for the requested partition."""


@dataclass
class BuildResult:
    """What a partition build did; everything the Dagster layer reports as metadata."""

    symbol: str
    month: str
    path: Path
    rows: int
    quotes: int
    trades: int
    ts_min: int  # ns
    ts_max: int  # ns
    rejected: int  # rows of this month rejected by the row rules
    sha256: str  # of the published file: the partition's data version
    sources: list[FileRecord] = field(default_factory=list)
    failed: list[FileRecord] = field(default_factory=list)

    @property
    def source_fingerprint(self) -> str:
        """Hash of the contributing files' content hashes (what the partition was built from)."""
        return sources_fingerprint(self.sources)


def sources_fingerprint(records: list[FileRecord]) -> str:
    return hashlib.sha256(",".join(sorted(r.sha256 for r in records)).encode()).hexdigest()[:20]


def month_frame(lake: Lake, staged: list[Path], month: str, accepted: bool = True) -> pl.LazyFrame:
    """Rows of ``month`` from staged files (accepted or rejected ones); filtering on
    ``ts_event`` lets Parquet statistics skip row groups of other months."""
    lo, hi = month_start_ns(month), month_start_ns(next_month(month))
    ok = pl.col("reject_reason").is_null() if accepted else pl.col("reject_reason").is_not_null()
    return pl.scan_parquet(staged).filter((pl.col("ts_event") >= lo) & (pl.col("ts_event") < hi) & ok)


def canonical_month(lake: Lake, staged: list[Path], month: str) -> pl.LazyFrame:
    """The sorted, de-duplicated canonical ticks of ``month``."""
    return (
        month_frame(lake, staged, month).select(TICK_COLUMNS)
        .sort(SORT_COLUMNS)
        .unique(subset=DEDUPE_COLUMNS, keep="first", maintain_order=True)
    )


def build_partition(
    lake: Lake,
    symbol: str,
    month: str,
    check: Callable[[Path, list[FileRecord]], None] | None = None,
) -> BuildResult:
    """Stage what is needed and (re)write ``ticks/symbol=S/month=M/part-0.parquet``.

    ``check(candidate, sources)`` is called on the candidate file before it replaces the
    published one; it raises to stop publication (blocking checks).
    """
    symbol = normalise_symbol(symbol)
    # Two runs of one partition (the sensor's and a manual one) must not interleave.
    with lake.lock(f"ticks-{symbol}-{month}"):
        return _build_locked(lake, symbol, month, check)


def _build_locked(lake: Lake, symbol: str, month: str, check: Callable[[Path, list[FileRecord]], None] | None) -> BuildResult:
    records = [
        stage(lake, symbol, r) if r.status != "failed" and month in r.months else r
        for r in survey(lake, symbol)
    ]
    failed = [r for r in records if r.status == "failed"]
    sources = [r for r in records if r.status == "staged" and month in r.months]
    staged = [lake.staging_path(symbol, r.sha256) for r in sources]
    rejected_sources = [lake.staging_path(symbol, r.sha256) for r in records if r.status == "staged" and r.rows_rejected]
    rejected = 0
    if rejected_sources:
        rejected = month_frame(lake, rejected_sources, month, accepted=False).select(pl.len()).collect().item()
    if not staged:
        detail = f"; {rejected} rows of that month were rejected (see {lake.root / 'quarantine'})" if rejected else ""
        broken = f"; failed files: {[f'{r.path}: {r.error}' for r in failed]}" if failed else ""
        raise NoDataError(f"no valid ticks for {symbol} {month} in {lake.landing_dir(symbol)}{detail}{broken}")

    final = lake.ticks_path(symbol, month)
    with atomic_target(final) as tmp:
        canonical_month(lake, staged, month).sink_parquet(tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        stats = (
            pl.scan_parquet(tmp)
            .select(
                pl.len().alias("rows"),
                (pl.col("kind") == "quote").sum().alias("quotes"),
                (pl.col("kind") == "trade").sum().alias("trades"),
                pl.col("ts_event").min().alias("ts_min"),
                pl.col("ts_event").max().alias("ts_max"),
            )
            .collect()
            .row(0, named=True)
        )
        if stats["rows"] == 0:
            raise NoDataError(f"no valid ticks for {symbol} {month}: all {rejected} rows were rejected (see {lake.root / 'quarantine'})")
        if check is not None:
            check(tmp, sources)
        sha = file_sha256(tmp)
    return BuildResult(
        symbol=symbol, month=month, path=final, rejected=rejected, sha256=sha,
        sources=sources, failed=failed, **{k: int(v) for k, v in stats.items()},
    )


def expected_fingerprint(lake: Lake, symbol: str, month: str) -> str | None:
    """Fingerprint of the files that would feed (symbol, month) now, from the manifest
    (after a ``survey``); None when no file touches it."""
    records = [r for r in survey(lake, symbol) if r.status != "failed" and month in r.months]
    return sources_fingerprint(records) if records else None
