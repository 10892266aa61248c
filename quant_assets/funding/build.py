"""Build one ``funding`` partition (symbol × month) from the funding files in the landing zone.

The partition is a pure function of the landing folder's funding files now: every file whose
funding times touch the month is read again (funding files are small), its rows of that month
are kept (rows of other months go to their own month's partition), and rows are sorted by
``ts``. Rows with the same ``ts`` from several files (overlapping downloads, a re-uploaded
file, Binance and Tardis for one venue) must agree on ``rate`` (within ``RATE_TOLERANCE``)
and on ``interval_h`` where both know it: then one is kept, completed with any file's interval
and mark; if they disagree the build fails naming both files and lines. A failed funding file of the symbol fails every month's build (its months are unknown):
the published partition is only ever replaced by a complete one, atomically.

Outcomes (:attr:`FundingBuild.status`): ``applied`` (a partition was written), ``missing`` (a
perpetual month without funding data: nothing is written, and settlement must say so rather
than count zero), ``not applicable`` (a spot instrument: no funding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.funding import parse as funding_parse
from quant_assets.funding.schema import FUNDING_COLUMNS, FUNDING_SCHEMA, is_perpetual
from quant_assets.ingest.build import sources_fingerprint
from quant_assets.ingest.detect import plain_file
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.landing import survey
from quant_assets.ingest.validate import month_start_ns, next_month
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.store import Lake, file_sha256, sweep_debris
from quant_assets.lake.symbols import normalise_symbol

APPLIED, MISSING, NOT_APPLICABLE = "applied", "missing", "not applicable"


class FundingError(ValueError):
    """A funding partition that cannot be built; the published partition is unchanged."""


@dataclass
class FundingBuild:
    """What a funding build did; everything the Dagster layer reports as metadata."""

    symbol: str
    month: str
    status: str  # applied | missing | not applicable
    path: Path | None = None
    rows: int = 0
    rate_sum: float = 0.0  # sum of rates (fractions per interval) of the month
    intervals_h: list[float] = field(default_factory=list)  # distinct known intervals, hours
    duplicates: int = 0  # rows dropped as identical repeats of another file's rows
    sha256: str | None = None  # of the published file: the partition's data version
    sources: list[FileRecord] = field(default_factory=list)

    @property
    def source_fingerprint(self) -> str:
        return sources_fingerprint(self.sources)


def funding_records(lake: Lake, symbol: str) -> list[FileRecord]:
    """The manifest records of ``symbol``'s funding files (surveying the folder first: new
    files are probed), failed ones included."""
    return [r for r in survey(lake, symbol, table="funding") if r.format in funding_parse.FUNDING_FORMATS]


def expected_fingerprint(lake: Lake, symbol: str, month: str) -> str:
    """Fingerprint of the funding files that would feed (symbol, month) now. Unlike ticks, a
    slice with no funding file still has one (of the empty set): the asset materialises it as
    ``missing`` / ``not applicable`` with that fingerprint, and a file landing later changes it."""
    return expected_fingerprints(lake, symbol).get(month, NO_SOURCES)


#: The fingerprint of a month no funding file touches (of the empty set).
NO_SOURCES = sources_fingerprint([])


def expected_fingerprints(lake: Lake, symbol: str, surveyed: list[FileRecord] | None = None) -> dict[str, str]:
    """:func:`expected_fingerprint` of every month some funding file of ``symbol`` touches, from
    one survey instead of one per month (any other month has :data:`NO_SOURCES`). ``surveyed``:
    the records of ``survey(lake, symbol, table=None)`` when the caller already has them."""
    records = funding_records(lake, symbol) if surveyed is None else surveyed
    by_month: dict[str, list[FileRecord]] = {}
    for rec in records:
        if rec.status != "failed" and rec.format in funding_parse.FUNDING_FORMATS:
            for month in set(rec.months):
                by_month.setdefault(month, []).append(rec)
    return {month: sources_fingerprint(recs) for month, recs in by_month.items()}


def read_source(lake: Lake, rec: FileRecord) -> pl.DataFrame:
    """The canonical rows of one recorded funding file (``source`` = its lake-relative path)."""
    path = lake.root / rec.path
    with plain_file(path, lake.scratch_dir()) as text_path:
        found = funding_parse.sniff(path, text_path)
        if found is None:  # replaced by something else since it was recorded
            raise IngestError(path, "no longer a funding file (expected " + "; ".join(f.layout for f in funding_parse.FORMATS) + ")")
        return funding_parse.read(*found, source_name=rec.path)


#: Two sources agree on a rate when they differ by at most this (fraction per interval):
#: Binance files print 8 decimals, Tardis relays the venue's full-precision value.
RATE_TOLERANCE = 1e-8


def dedupe(rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``rows`` sorted by ``ts`` with repeated funding times kept once; (frame, rows dropped).

    Rows of one ``ts`` agree when their rates are within :data:`RATE_TOLERANCE` and their known
    intervals are equal (a null interval or mark is unknown, not different): the first row by
    (source path, line) is kept, with the first known interval and mark of any of them. Raises
    :class:`FundingError` when they disagree, naming both sources and lines."""
    rows = rows.sort("ts", "source", "src_line")
    rate, iv = pl.col("rate"), pl.col("interval_h")
    clash = ((rate.max() - rate.min()).over("ts") > RATE_TOLERANCE) | (iv.drop_nulls().n_unique().over("ts") > 1)
    conflicts = rows.filter(clash)
    if len(conflicts):
        first_ts = conflicts["ts"][0]
        group = conflicts.filter(pl.col("ts") == first_ts)
        a = group.row(0, named=True)
        b = next(r for r in group.iter_rows(named=True)
                 if abs(r["rate"] - a["rate"]) > RATE_TOLERANCE or None not in (r["interval_h"], a["interval_h"]) and r["interval_h"] != a["interval_h"])
        n_ts = conflicts["ts"].n_unique()
        raise FundingError(
            f"conflicting funding at ts={first_ts} ns: {a['source']} line {a['src_line']} says rate {a['rate']!r} "
            f"(interval {a['interval_h']} h), {b['source']} line {b['src_line']} says rate {b['rate']!r} "
            f"(interval {b['interval_h']} h); expected equal values for one funding time ({n_ts} funding times conflict)"
        )
    out = rows.group_by("ts", maintain_order=True).agg(
        pl.col("rate").first(), pl.col("interval_h").drop_nulls().first(),
        pl.col("mark_px").drop_nulls().first(), pl.col("source").first(), pl.col("src_line").first(),
    )
    return out.select(FUNDING_COLUMNS).cast(FUNDING_SCHEMA), len(rows) - len(out)  # type: ignore[arg-type]


def month_rows(lake: Lake, sources: list[FileRecord], month: str) -> tuple[pl.DataFrame, int]:
    """The de-duplicated rows of ``month`` from ``sources``; (frame, duplicates dropped)."""
    lo, hi = month_start_ns(month), month_start_ns(next_month(month))
    frames = [read_source(lake, r).filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)) for r in sources]
    return dedupe(pl.concat(frames) if frames else pl.DataFrame(schema=FUNDING_SCHEMA))


def build_funding(lake: Lake, symbol: str, month: str) -> FundingBuild:
    """(Re)write ``funding/symbol=S/month=M/part-0.parquet`` from the landing zone.

    Raises :class:`FundingError` (or :class:`IngestError`) when a funding file is bad, sits in
    a spot folder, or conflicts with another; the published partition is then unchanged."""
    symbol = normalise_symbol(symbol)
    with lake.lock(f"funding-{symbol}-{month}"):
        records = funding_records(lake, symbol)
        failed = [r for r in records if r.status == "failed"]
        if not is_perpetual(symbol):
            if records:
                raise FundingError(f"{symbol} is not a perpetual but its landing folder holds funding files: "
                                   + "; ".join(f"{r.path}: {r.error or 'a funding file'}" for r in records))
            return FundingBuild(symbol, month, NOT_APPLICABLE)
        if failed:
            raise FundingError(f"{symbol} {month}: funding files failed (fix or remove them; nothing was published): "
                               + "; ".join(f"{r.path}: {r.error}" for r in failed))
        sources = [r for r in records if month in r.months]
        if not sources:
            published = lake.funding_path(symbol, month)
            if published.exists():
                # Its files were removed from the landing zone: say so rather than keep serving
                # rows nothing backs any more, or delete published data on our own.
                raise FundingError(f"{symbol} {month}: no funding file in {lake.landing_dir(symbol)} touches the month "
                                   f"but {published} was published from earlier files; restore them, or delete it to mark the month missing")
            return FundingBuild(symbol, month, MISSING)
        rows, dropped = month_rows(lake, sources, month)
        final = lake.funding_path(symbol, month)
        sweep_debris(final.parent, final.name)  # what a killed earlier build left (we hold its lock)
        lake.write_parquet(rows, final)
        intervals = sorted(float(v) for v in rows["interval_h"].drop_nulls().unique().to_list())
        return FundingBuild(
            symbol, month, APPLIED, path=final, rows=len(rows), rate_sum=float(rows["rate"].sum()),
            intervals_h=intervals, duplicates=dropped, sha256=file_sha256(final), sources=sources,
        )


def load_funding(lake: Lake, symbol: str, month: str) -> pl.DataFrame | None:
    """The published funding rows of (symbol, month), or None when there are none (a spot
    instrument, or a perpetual month whose funding is missing: see ``settle.funding_summary``)."""
    path = lake.funding_path(symbol, month)
    return pl.read_parquet(path) if path.exists() else None
