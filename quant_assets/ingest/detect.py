"""Open a landing file (plain, gzip or zip), recognise its format, and hand back its parsed frame."""

from __future__ import annotations

import contextlib
import gzip
import os
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.ingest import binance, canonical, fx, tardis
from quant_assets.ingest.errors import IngestError, UnknownFormatError
from quant_assets.ingest.formats import SourceFormat
from quant_assets.ingest.sample import Sample
from quant_assets.settings import MAX_LANDING_ENV, max_landing_bytes

#: CSV formats, tried in this order; the first whose ``matches`` holds wins.
CSV_FORMATS: tuple[SourceFormat, ...] = (*tardis.FORMATS, *binance.FORMATS, *fx.FORMATS)

#: Decompressed size above which an archive is refused (zip bombs); override with the env var.
MAX_UNPACKED_ENV = "QUANT_MAX_UNPACKED_BYTES"
DEFAULT_MAX_UNPACKED = 32 << 30

_GZIP_MAGIC = b"\x1f\x8b"
#: A local file header, or the end-of-central-directory record that opens an empty archive.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def recognised_formats() -> str:
    lines = [f"  {f.name}: {f.layout}" for f in CSV_FORMATS]
    lines.append(f"  {canonical.NAME}: {canonical.LAYOUT}")
    return "\n".join(lines)


def _max_unpacked() -> int:
    return int(os.environ.get(MAX_UNPACKED_ENV, DEFAULT_MAX_UNPACKED))


def _copy_bounded(src, dst_path: Path, limit: int, source: Path) -> None:
    written = 0
    with open(dst_path, "wb") as dst:
        while block := src.read(1 << 20):
            written += len(block)
            if written > limit:
                raise IngestError(source, f"expands past {limit} bytes ({MAX_UNPACKED_ENV}); refused as a possible zip bomb")
            dst.write(block)


@contextlib.contextmanager
def plain_file(source: Path, scratch: Path) -> Iterator[Path]:
    """The landing file itself, or a decompressed copy in ``scratch`` (deleted afterwards).

    Decompression streams with a size cap, so memory stays bounded and an archive that
    expands without limit is refused before it fills the disk. The source is only read.
    """
    size, limit = source.stat().st_size, max_landing_bytes()
    if size > limit:
        raise IngestError(source, f"{size:,} bytes, over the {limit:,}-byte limit ({MAX_LANDING_ENV}); "
                                  "split the file (e.g. by month) or raise the limit")
    with open(source, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise IngestError(source, "empty file (0 bytes)")
    if not (magic[:2] == _GZIP_MAGIC or magic in _ZIP_MAGICS):
        yield source
        return
    out = scratch / f"{uuid.uuid4().hex}-{source.name}.unpacked"
    limit = _max_unpacked()
    try:
        if magic[:2] == _GZIP_MAGIC:
            try:
                with gzip.open(source, "rb") as src:
                    _copy_bounded(src, out, limit, source)
            except (OSError, EOFError, zlib.error) as exc:
                raise IngestError(source, f"corrupt or truncated gzip ({exc})") from exc
        else:
            try:
                with zipfile.ZipFile(source) as zf:
                    members = [m for m in zf.infolist() if not m.is_dir()]
                    if not members:
                        raise IngestError(source, "zip holds no file (expected exactly one)")
                    if len(members) != 1:
                        names = [m.filename for m in members][:5]
                        raise IngestError(source, f"zip must hold exactly one file, holds {len(members)} {names}")
                    if members[0].file_size > limit:
                        raise IngestError(source, f"zip member declares {members[0].file_size} bytes, over {limit} ({MAX_UNPACKED_ENV})")
                    with zf.open(members[0]) as src:
                        _copy_bounded(src, out, limit, source)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise IngestError(source, f"corrupt zip ({exc})") from exc
        yield out
    finally:
        if out.exists():
            out.unlink()


@dataclass(frozen=True)
class Detected:
    """A recognised landing file: its format and (for CSV) the sample it was judged on."""

    format_name: str
    sample: Sample | None
    text_path: Path


def detect(source: Path, text_path: Path) -> Detected:
    """Recognise ``text_path`` (the decompressed content of ``source``) or raise with the list
    of formats we know."""
    with open(text_path, "rb") as f:
        magic = f.read(4)
    if magic == canonical.PARQUET_MAGIC:
        return Detected(canonical.NAME, None, text_path)
    try:
        sample = Sample.read(source, text_path)
    except ValueError as exc:
        raise IngestError(source, str(exc)) from exc
    if not sample.lines:
        raise IngestError(source, "no lines of text")
    for fmt in CSV_FORMATS:
        if fmt.matches(sample):
            return Detected(fmt.name, sample, text_path)
    raise UnknownFormatError(
        source, f"unknown tick format: {sample.describe()}; recognised formats:\n{recognised_formats()}"
    )


def scan_detected(d: Detected) -> pl.LazyFrame:
    """The parsed frame of a detected file (canonical columns + ``src_line``)."""
    if d.format_name == canonical.NAME:
        return canonical.scan(d.text_path)
    fmt = next(f for f in CSV_FORMATS if f.name == d.format_name)
    assert d.sample is not None
    try:
        return fmt.scan(d.sample)
    except ValueError as exc:
        raise IngestError(d.sample.source, str(exc)) from exc


def symbol_hints(source: Path, d: Detected) -> dict[str, str]:
    """Symbols the file's name or content claim, by where the claim comes from."""
    hints: dict[str, str] = {}
    if name_sym := binance.symbol_from_name(source.name):
        hints["file name"] = name_sym
    if d.sample is not None:
        if content := tardis.symbol_in_content(d.sample):
            hints["symbol column"] = content
        if pair := fx.pair_in_content(d.sample):
            hints["pair column"] = pair
    return hints
