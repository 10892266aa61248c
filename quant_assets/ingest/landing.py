"""Landing files -> staged, validated Parquet (one per source file) and the manifest.

Two steps, both cached by the file's SHA-256 so a file is parsed once however often it is
seen:
- ``probe``: recognise the format and find the months the file touches (reads only the
  timestamp column). The landing sensor uses it to request exactly those partitions.
- ``stage``: parse every row once, give each a reject reason or none, and write
  ``staging/symbol=S/src=<hash>.parquet``; rejected rows also go to ``quarantine/`` with the
  source file and line. Partitions are then built from staged files (``ingest.build``).

The landing file itself is only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from quant_assets.ingest.detect import Detected, detect, plain_file, scan_detected, symbol_hints
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.validate import month_of_ns, ts_in_range, with_reasons
from quant_assets.lake.manifest import FileRecord, fingerprint, read_manifest, upsert
from quant_assets.lake.schema import TICK_COLUMNS
from quant_assets.lake.store import Lake
from quant_assets.lake.symbols import normalise_symbol
from quant_assets.settings import start_month


@contextlib.contextmanager
def open_checked(lake: Lake, symbol: str, path: Path) -> Iterator[tuple[Detected, pl.LazyFrame]]:
    """Detect ``path``'s format, cross-check its symbol, and yield its frame with reasons."""
    with plain_file(path, lake.scratch_dir()) as text_path:
        detected = detect(path, text_path)
        for where, claimed in symbol_hints(path, detected).items():
            if claimed != symbol:
                raise IngestError(path, f"the {where} says {claimed!r} but the file is in landing folder {symbol!r}")
        yield detected, scan_detected(detected)


def _fail(rec: FileRecord, exc: Exception) -> FileRecord:
    rec.status, rec.error = "failed", (exc.reason if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}")
    return rec


def _polars_error(path: Path, exc: Exception) -> IngestError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IngestError(path, f"could not parse ({type(exc).__name__}: {first})")


def probe(lake: Lake, symbol: str, path: Path, rec: FileRecord) -> FileRecord:
    """Fill ``rec`` with the format and the months of ``path``'s valid timestamps."""
    try:
        with open_checked(lake, symbol, path) as (detected, lf):
            # Only the timestamp column is read: projection pushdown keeps the probe cheap.
            months = (
                lf.select("ts_event").filter(ts_in_range(start_month())).select(month_of_ns().alias("m")).unique()
                .collect(engine="streaming")["m"].sort().to_list()
            )
    except IngestError as exc:
        return _fail(rec, exc)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return _fail(rec, _polars_error(path, exc))
    rec.format, rec.status, rec.error, rec.months = detected.format_name, "probed", None, months
    return rec


def survey(lake: Lake, symbol: str, settle_s: float = 0.0) -> list[FileRecord]:
    """Fingerprint every landing file of ``symbol``; probe new or changed ones; record them.

    Files modified less than ``settle_s`` seconds ago are skipped: they may still be being
    written (the sensor looks again on its next tick). Returns the current record of each
    file (a failed file is recorded and returned, never raised: one bad file must not hide
    the others).
    """
    symbol = normalise_symbol(symbol)
    known = read_manifest(lake)
    out, changed = [], []
    now = time.time_ns()
    for path in lake.landing_files(symbol):
        if settle_s and now - path.stat().st_mtime_ns < settle_s * 1e9:
            continue
        rec = fingerprint(lake, path, known, symbol)
        if rec.status == "seen":
            rec = probe(lake, symbol, path, rec)
            changed.append(rec)
        out.append(rec)
    upsert(lake, changed)
    return out


def stage(lake: Lake, symbol: str, rec: FileRecord) -> FileRecord:
    """Parse and validate the file behind ``rec`` into its staging file (once per content hash)."""
    staged = lake.staging_path(symbol, rec.sha256)
    if rec.status == "staged" and staged.exists():
        return rec
    path = lake.root / rec.path
    with lake.lock(f"stage-{rec.sha256[:20]}"):
        current = read_manifest(lake).get(rec.path)
        if current is not None and current.sha256 == rec.sha256 and current.status == "staged" and staged.exists():
            return current
        try:
            with open_checked(lake, symbol, path) as (detected, lf):
                lake.write_parquet(with_reasons(lf, start_month()), staged)
            summary = (
                pl.scan_parquet(staged)
                .select(
                    pl.when(ts_in_range(start_month())).then(month_of_ns()).alias("month"),
                    pl.col("reject_reason").is_null().alias("ok"),
                )
                .group_by("month", "ok").len().collect()
            )
            total = int(summary["len"].sum())
            if total == 0:
                staged.unlink()
                raise IngestError(path, "no data rows")
            accepted = int(summary.filter(pl.col("ok"))["len"].sum())
            if accepted < total:
                quarantine = (
                    pl.scan_parquet(staged).filter(pl.col("reject_reason").is_not_null())
                    .select(pl.lit(rec.path).alias("source"), "src_line", "reject_reason", *TICK_COLUMNS)
                )
                lake.write_parquet(quarantine, lake.quarantine_path(symbol, rec.sha256))
        except IngestError as exc:
            rec = _fail(rec, exc)
        except (pl.exceptions.PolarsError, OSError) as exc:
            rec = _fail(rec, _polars_error(path, exc))
        else:
            rec.format, rec.status, rec.error = detected.format_name, "staged", None
            rec.months = sorted(summary["month"].drop_nulls().unique().to_list())
            rec.rows_accepted, rec.rows_rejected = accepted, total - accepted
        upsert(lake, [rec])
        return rec
