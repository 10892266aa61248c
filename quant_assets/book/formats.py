"""Book (depth) landing formats: the :class:`BookFormat` interface, the registry, and the sniffing
and framing helpers the parsers share.

A book format turns one landing file (already decompressed when it was ``.gz``/``.zip``; a
``.dbn.zst`` is handed over as it is, its reader decompresses) into **staged rows**
(:data:`quant_assets.book.schema.STAGED_SCHEMA`): the canonical ``book`` columns plus ``src_line``
(1-based line or record of the landing file), the message's continuity fields ``seq_first`` /
``seq_prev`` and ``reason`` (null: accepted). Parsers are row-wise faithful: they keep the
file's order, never reorder across messages, never apply deltas, never drop a row they cannot
use (it keeps its ``src_line`` with ``reason`` set). Continuity, snapshots, crossed books and
sizes are judged afterwards on the staged rows by :mod:`quant_assets.book.validate` /
:mod:`quant_assets.book.build`.

Registry and routing. :func:`registry` lists every format in check order: the canonical book
Parquet first (cheap and unambiguous), then the parser package's (``quant_assets.book.parse``;
its modules call :func:`register` when imported, in the order they should be tried). The landing
zone asks :func:`sniff` before the tick formats (a file a book format recognises is a book file;
``quant_assets.ingest.landing.table_of`` routes it to ``book``). :func:`is_book_format` answers
from a manifest record's format name without opening anything.

Heavy readers (``databento_dbn``) must be imported inside ``matches``/``parse``, never at module
level: the registry is imported whenever the landing zone is surveyed.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.book.schema import ACTION, BOOK_SCHEMA, DEPTH_L2, DEPTH_L3, F_LAST, STAGED_SCHEMA
from quant_assets.ingest.errors import IngestError


@dataclass(frozen=True)
class BookFormat:
    """A depth landing-file format: how to recognise it and how to read it into staged rows.

    - ``matches(landing_path, plain_path)``: True when the file is this format. ``plain_path`` is
      the decompressed content (the landing file itself when it was not gzip/zip). Must be cheap
      (read a head), must not raise on a file of another format (return False).
    - ``parse(landing_path, plain_path, symbol)``: the staged rows (``STAGED_SCHEMA``, in file
      order; :func:`conform` casts and orders the columns) of the file, for the instrument of the
      landing folder ``symbol`` (a message of another symbol keeps its row with a ``reason``).
      A file it cannot read at all raises :class:`~quant_assets.ingest.errors.IngestError`
      naming the file and what was expected.
    - ``level``: :data:`~quant_assets.book.schema.DEPTH_L2` or ``DEPTH_L3``.
    - ``ticks(landing_path, plain_path, symbol)``: optional; the file's L1 quotes and trades as
      canonical tick rows (``quant_assets.lake.schema.TICK_SCHEMA`` + ``src_line``, values that
      fail to parse null: the tick row rules give them their reasons), for a capture that
      interleaves ``bookTicker``/``trade`` messages with the depth: one file then feeds both
      the ``book`` and the ``ticks`` tables.
    - ``continuity``: how the builder checks the sequence between messages
      (:mod:`quant_assets.book.validate`): ``"next"`` (``seq_first == previous seq + 1``: Binance
      spot ``U``/``u``), ``"prev"`` (``seq_prev == previous seq``: Binance futures ``pu``),
      ``"increasing"`` (``seq`` only increases, holes are normal: Databento ``sequence``, which a
      venue numbers per channel; its bad-book flag must come as a row ``reason``), ``"none"``
      (nothing to check: Tardis, whose ``seq`` is the line) or ``"auto"`` (from the staged rows:
      ``prev`` when any ``seq_prev`` is set, else ``next`` when any ``seq_first`` is, else ``none``).
    """

    name: str
    layout: str
    matches: Callable[[Path, Path], bool]
    parse: Callable[[Path, Path, str], pl.LazyFrame | pl.DataFrame]
    level: str
    ticks: Callable[[Path, Path, str], pl.LazyFrame] | None = None
    continuity: str = "auto"

    def __post_init__(self) -> None:
        if self.level not in (DEPTH_L2, DEPTH_L3):
            raise ValueError(f"BookFormat {self.name!r}: level {self.level!r}, expected {DEPTH_L2!r} or {DEPTH_L3!r}")
        if self.continuity not in CONTINUITY:
            raise ValueError(f"BookFormat {self.name!r}: continuity {self.continuity!r}, expected one of {CONTINUITY}")


#: :attr:`BookFormat.continuity` values.
CONTINUITY = ("auto", "next", "prev", "increasing", "none")


#: Formats of the parser package, in check order (filled by :func:`register`).
FORMATS: list[BookFormat] = []

#: The package whose modules register the source formats (another helper's; absent is fine).
PARSE_PACKAGE = "quant_assets.book.parse"


def register(fmt: BookFormat) -> BookFormat:
    """Append ``fmt`` to :data:`FORMATS` (a second registration of the same object is a no-op;
    another format under a taken name is an error). Returns ``fmt`` (usable as a module-level
    ``FORMAT = register(BookFormat(...))``)."""
    for known in FORMATS:
        if known.name == fmt.name:
            if known is not fmt and known != fmt:
                raise ValueError(f"two book formats named {fmt.name!r}")
            return known
    if fmt.name == CANONICAL_NAME:
        raise ValueError(f"{CANONICAL_NAME!r} is the canonical book Parquet's name")
    FORMATS.append(fmt)
    registry.cache_clear()
    return fmt


@functools.cache
def registry() -> tuple[BookFormat, ...]:
    """Every book format in check order: the canonical book Parquet, then the parser package's."""
    try:
        importlib.import_module(PARSE_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name != PARSE_PACKAGE:  # the package exists but one of its imports is missing
            raise
    return (CANONICAL, *FORMATS)


def format_names() -> frozenset[str]:
    return frozenset(f.name for f in registry())


#: The marker of a row that belongs to another instrument than the landing folder's (a multi-
#: instrument DBN or Tardis file, another symbol's messages in a combined capture): parsers put
#: it in the row's ``reason`` (", not the landing folder's <SYMBOL>"). Such rows stay in the
#: staging quarantine with their reason and are kept out of the book's stream: they are not a
#: lost update of this book (its continuity is judged on its own sequence).
FOREIGN_MARK = "not the landing folder's"


def foreign(reason: pl.Expr) -> pl.Expr:
    """True for a staged row of another instrument (see :data:`FOREIGN_MARK`)."""
    return reason.str.contains(FOREIGN_MARK, literal=True).fill_null(False)


def is_book_format(name: str | None) -> bool:
    """Whether a manifest record's ``format`` is a book format (no file is opened)."""
    return name is not None and name in format_names()


def by_name(name: str) -> BookFormat:
    for fmt in registry():
        if fmt.name == name:
            return fmt
    raise KeyError(f"no book format named {name!r}; known: {sorted(format_names())}")


def sniff(landing: Path, plain: Path) -> BookFormat | None:
    """The first registered format whose ``matches`` holds for the file, or None (not a book file:
    the tick and funding formats are tried next)."""
    for fmt in registry():
        try:
            if fmt.matches(landing, plain):
                return fmt
        except (ValueError, OSError):  # a matcher must not raise; a file it cannot read is not its format
            continue
    return None


def recognised() -> str:
    """The formats we know, one per line, for an error message."""
    return "\n".join(f"  {f.name} ({f.level}): {f.layout}" for f in registry())


# ---- helpers the parsers share ---------------------------------------------------------------

PARQUET_MAGIC = b"PAR1"
#: A Databento DBN file starts with ``DBN`` and its version byte (zstd-compressed ones with the
#: zstd frame magic).
DBN_MAGIC = b"DBN"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: One line of a websocket capture as hftbacktest's collector writes it: ``<local_ts_ns> <json>``.
CAPTURE_LINE = re.compile(r"^(\d{16,20}) (\{.*)$")


def head_bytes(plain: Path, n: int = 4) -> bytes:
    with open(plain, "rb") as f:
        return f.read(n)


def head_lines(plain: Path, max_lines: int = 20, max_bytes: int = 65536) -> list[str]:
    """The first complete lines of a text file (at most ``max_lines``, from the first
    ``max_bytes``; a line cut by the limit is left out; blank lines skipped). Undecodable bytes
    are replaced: a binary file simply matches no text pattern."""
    with open(plain, "rb") as f:
        head = f.read(max_bytes)
    lines = head.decode("utf-8", errors="replace").split("\n")
    if len(head) == max_bytes:
        lines = lines[:-1]
    return [ln.rstrip("\r") for ln in lines if ln.strip()][:max_lines]


def split_capture_line(line: str) -> tuple[int, str] | None:
    """``(local_ts_ns, json_text)`` of a capture line, or None when the line is not one."""
    m = CAPTURE_LINE.match(line)
    return (int(m.group(1)), m.group(2)) if m else None


def last_of_message() -> pl.Expr:
    """``flags`` with :data:`F_LAST` on the last row of each message, in file order: a row whose
    ``seq`` differs from the next row's (rows of one message share ``seq`` and are contiguous)."""
    seq = pl.col("seq")
    return pl.when((seq != seq.shift(-1)).fill_null(True)).then(pl.lit(F_LAST)).otherwise(pl.lit(0)).cast(pl.UInt8)


def conform(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """``frame`` as staged rows: the :data:`STAGED_SCHEMA` columns in order, cast (a value that
    does not cast becomes null, and the builder rejects nulls where a value is required); absent
    optional columns null (``order_id``, ``seq_first``, ``seq_prev``, ``reason``), ``ts_recv``
    defaulting to ``ts_event``, ``is_snapshot`` to False and ``flags`` to :func:`last_of_message`.
    Raises ValueError when a required column is missing (a parser bug, not a file problem)."""
    lf = frame.lazy()
    have = set(lf.collect_schema())
    missing = [c for c in ("ts_event", "seq", "side", "price", "size", "action", "src_line") if c not in have]
    if missing:
        raise ValueError(f"staged rows lack column(s) {missing}; expected {list(STAGED_SCHEMA)}")
    cols: list[pl.Expr] = []
    for name, dtype in STAGED_SCHEMA.items():
        if name in have:
            expr = pl.col(name)
            if name == "action":
                expr = expr.cast(pl.String).cast(ACTION, strict=False)
            cols.append(expr.cast(dtype, strict=False).alias(name))
        elif name == "ts_recv":
            cols.append(pl.col("ts_event").cast(pl.Int64, strict=False).alias(name))
        elif name == "is_snapshot":
            cols.append(pl.lit(False).alias(name))
        elif name == "flags":
            cols.append(last_of_message().alias(name))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return lf.select(cols)


# ---- the canonical book Parquet ------------------------------------------------------------

CANONICAL_NAME = "canonical_book_parquet"
CANONICAL_LAYOUT = (
    "Parquet with the book's columns (ts_event int64 ns, side +1/-1/0, price, size, action "
    "add/update/delete/clear; optional ts_recv, seq, is_snapshot, order_id, flags, seq_first, seq_prev)"
)
_CANONICAL_REQUIRED = ("ts_event", "side", "price", "size", "action")


def _canonical_matches(landing: Path, plain: Path) -> bool:
    """A Parquet file with an ``action`` column and no ``kind`` (a tick Parquet has ``kind``)."""
    if head_bytes(plain) != PARQUET_MAGIC:
        return False
    try:
        names = pl.read_parquet_schema(plain)
    except Exception:  # noqa: BLE001 - a broken footer: the tick format reports it
        return False
    return "action" in names and "kind" not in names


def _canonical_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    """Staged rows of a canonical book Parquet: ``src_line`` is the 1-based row; ``seq``
    defaults to it (each row its own message), ``ts_recv`` to ``ts_event``, ``flags`` to
    :data:`F_LAST` on the last row of each ``seq`` run. An ``action`` that is not one of
    add/update/delete/clear keeps its row with a reason; the builder judges the rest."""
    try:
        lf = pl.scan_parquet(plain)
        schema = lf.collect_schema()
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a broken footer
        raise IngestError(landing, f"unreadable Parquet ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in _CANONICAL_REQUIRED if c not in schema]
    if missing:
        raise IngestError(landing, f"book Parquet lacks column(s) {missing}; expected {CANONICAL_LAYOUT}; found {list(schema)}")
    for name, dtype in schema.items():
        if name in BOOK_SCHEMA and name not in ("action", "is_snapshot") and not dtype.is_numeric():
            raise IngestError(landing, f"column {name!r} has type {dtype}, expected {BOOK_SCHEMA[name]} (numeric)")
    if not (schema["action"] == pl.String or isinstance(schema["action"], (pl.Enum, pl.Categorical))):
        raise IngestError(landing, f"column 'action' has type {schema['action']}, expected text add/update/delete/clear")
    keep = [c for c in schema if c in STAGED_SCHEMA and c not in ("src_line", "reason")]
    lf = lf.select(keep).with_row_index("src_line", offset=1).with_columns(pl.col("src_line").cast(pl.Int64))
    if "seq" not in schema:
        lf = lf.with_columns(pl.col("src_line").alias("seq"))
    action = pl.col("action").cast(pl.String)
    lf = lf.with_columns(
        reason=pl.when(action.cast(ACTION, strict=False).is_null())
        .then(pl.lit("action ") + action.fill_null("null") + pl.lit(" is not add/update/delete/clear"))
    )
    return conform(lf)


#: ``level`` says L2; a canonical file whose rows carry ``order_id`` is L3 (the builder labels a
#: partition from its rows: any ``order_id`` makes it ``depth-L3``).
CANONICAL = BookFormat(
    name=CANONICAL_NAME, layout=CANONICAL_LAYOUT, matches=_canonical_matches, parse=_canonical_parse, level=DEPTH_L2,
)
