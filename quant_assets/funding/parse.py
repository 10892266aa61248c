"""Funding files, recognised by content (plain, .gz or .zip like the tick formats).

- ``binance_funding``: Binance USD-M / COIN-M monthly ``fundingRate`` files
  (``BTCUSDT-fundingRate-2024-03.zip``), header ``calc_time,funding_interval_hours,last_funding_rate``;
  ``calc_time`` in ms since the epoch (µs accepted, judged by magnitude), intervals of 8, 4 or 1 h.
  No mark price (``mark_px`` null). An optional fourth column ``mark_price`` (quote currency) is
  our extension, used by the synthetic feed so its marks travel through the same parser.
- ``tardis_derivative_ticker``: Tardis ``derivative_ticker`` CSV (µs), one row per ticker
  update. A funding *event* is each distinct ``funding_timestamp`` F; its rate is the last
  ``funding_rate`` published (``timestamp`` order) by a row with ``funding_timestamp == F`` and
  ``timestamp < F`` (what the exchange had announced when F came); its mark is the last
  ``mark_price`` at or before F. An event is kept only when the file reaches within
  ``FINAL_WINDOW_NS`` of F (a daily file ends just before midnight, so the midnight event
  belongs to the file of the day before); an event the file stops short of is provisional
  (the rate may still change) and is left out. ``interval_h`` is the gap to the previous
  event of the same file (null for the first).

Bad rows are never dropped one by one: a funding event missing from the table would settle as
zero, silently. A file with any unparseable row, a rate outside ``±MAX_ABS_RATE`` or an
impossible interval or mark fails as a whole (:class:`IngestError` naming the file, the line,
the value and what was expected); nothing published changes because of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_assets.funding.schema import FUNDING_COLUMNS, FUNDING_SCHEMA, MAX_ABS_RATE
from quant_assets.ingest.canonical import PARQUET_MAGIC
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.sample import Sample
from quant_assets.ingest.timeunits import TO_NS, infer_epoch_unit
from quant_assets.ingest.validate import FUTURE_SLACK_NS, MIN_TS_NS
from quant_assets.ingest.timeunits import now_ns

BINANCE_NAME = "binance_funding"
TARDIS_NAME = "tardis_derivative_ticker"
FUNDING_FORMATS = frozenset({BINANCE_NAME, TARDIS_NAME})

#: ``BTCUSDT-fundingRate-2024-03.zip`` -> BTCUSDT.
FILE_NAME_RE = re.compile(r"^([A-Za-z0-9]+)-fundingRate-\d{4}-\d{2}")

_BINANCE_HEADER = ["calc_time", "funding_interval_hours", "last_funding_rate"]
_TARDIS_HEADER = [
    "exchange", "symbol", "timestamp", "local_timestamp", "funding_timestamp", "funding_rate",
    "predicted_funding_rate", "open_interest", "last_price", "index_price", "mark_price",
]
#: A Tardis funding event counts as final when the file reaches this close to it (ns).
FINAL_WINDOW_NS = 60 * 1_000_000_000
NS_PER_H = 3_600 * 1_000_000_000


@dataclass(frozen=True)
class FundingFormat:
    """A funding-file format: how to recognise it and how to read it into the canonical table."""

    name: str
    layout: str
    matches: Callable[[Sample], bool]
    read: Callable[[Sample, str], pl.DataFrame]  # (sample, source name) -> canonical frame


def _read_strings(sample: Sample, names: list[str]) -> pl.DataFrame:
    """The whole file as strings (funding files are small: ~100 rows a month for Binance), so
    an error can quote the raw value; ``src_line`` is the 1-based line in the file."""
    try:
        df = pl.read_csv(
            sample.text_path, has_header=True, new_columns=names, infer_schema=False,
            truncate_ragged_lines=False,
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise IngestError(sample.source, f"could not parse as {','.join(names)} ({type(exc).__name__}: {first})") from exc
    return df.with_columns(pl.col(pl.String).str.strip_chars()).with_row_index("src_line", offset=2).with_columns(
        pl.col("src_line").cast(pl.Int64)
    )


def _epoch_ns(col: str, unit: str) -> pl.Expr:
    return pl.col(col).cast(pl.Int64, strict=False) * TO_NS[unit]


def _first_bad(df: pl.DataFrame, source: Path, checks: list[tuple[pl.Expr, str]], raw: list[str]) -> None:
    """Raise naming the first row that breaks a check (each check is a condition every good
    row meets, in order; null counts as broken), how many rows break it, the raw row and what
    was expected."""
    for good, expected in checks:
        hits = df.filter(good.fill_null(False).not_())
        if len(hits):
            row = hits.row(0, named=True)
            shown = ",".join("" if row[c] is None else str(row[c]) for c in raw)
            more = f" ({len(hits)} rows like it)" if len(hits) > 1 else ""
            raise IngestError(
                source, f"line {row['src_line']}: {expected}; got {shown!r}{more}. "
                "The whole file is refused: a skipped funding row would settle as zero"
            )


def _range_checks(ts_unit: str) -> list[tuple[pl.Expr, str]]:
    ts, rate, iv, mark = (pl.col(c) for c in ("ts", "rate", "interval_h", "mark_px"))
    return [
        (ts.is_not_null(), f"unparseable funding time (expected an integer epoch in {ts_unit})"),
        ((ts >= MIN_TS_NS) & (ts <= now_ns() + FUTURE_SLACK_NS), f"funding time before 1990 or in the future (expected {ts_unit} since the epoch)"),
        (rate.is_not_null() & rate.is_finite(), "unparseable funding rate (expected a number, a fraction per interval)"),
        (rate.abs() <= MAX_ABS_RATE, f"funding rate outside ±{MAX_ABS_RATE:g} per interval (expected a fraction, e.g. 0.0001 for 0.01%; a percentage?)"),
        (iv.is_null() | (iv.is_finite() & (iv > 0) & (iv <= 24)), "funding interval not in (0, 24] hours (expected 8, 4 or 1)"),
        (mark.is_null() | (mark.is_finite() & (mark > 0)), "mark price not a positive number (quote currency)"),
    ]


def _canonical(df: pl.DataFrame, source_name: str) -> pl.DataFrame:
    return df.with_columns(source=pl.lit(source_name)).select(FUNDING_COLUMNS).cast(FUNDING_SCHEMA).sort("ts", "src_line")  # type: ignore[arg-type]


def _unit_of_first(sample: Sample, index: int, allowed: tuple[str, ...]) -> str:
    row = sample.data_row
    if not row:
        raise IngestError(sample.source, "no data rows (only a header)")
    try:
        return infer_epoch_unit(int(float(row[index])), allowed, str(sample.source))
    except (IndexError, ValueError) as exc:
        raise IngestError(sample.source, f"line 2: {exc}" if "epoch" in str(exc) else
                          f"line 2: expected an integer epoch in field {index + 1}, got {row!r}") from exc


# ---- Binance fundingRate ------------------------------------------------------------------
def _match_binance(s: Sample) -> bool:
    h = s.header
    return h is not None and (h == _BINANCE_HEADER or h == [*_BINANCE_HEADER, "mark_price"])


def _read_binance(s: Sample, source_name: str) -> pl.DataFrame:
    names = list(s.header or [])
    unit = _unit_of_first(s, 0, ("ms", "us"))
    raw = _read_strings(s, names)
    has_mark = "mark_price" in names
    df = raw.with_columns(
        ts=_epoch_ns("calc_time", unit),
        rate=pl.col("last_funding_rate").cast(pl.Float64, strict=False),
        interval_h=pl.col("funding_interval_hours").cast(pl.Float64, strict=False),
        mark_px=pl.col("mark_price").cast(pl.Float64, strict=False) if has_mark else pl.lit(None, pl.Float64),
    )
    checks = _range_checks(unit)
    # The interval is a required column in these files: empty or unparseable is a bad row.
    checks.insert(4, (pl.col("interval_h").is_not_null(), "unparseable funding_interval_hours (expected hours: 8, 4 or 1)"))
    if has_mark:
        checks.append((pl.col("mark_price").is_null() | pl.col("mark_px").is_not_null(), "unparseable mark_price (expected a number)"))
    _first_bad(df, s.source, checks, names)
    return _canonical(df, source_name)


# ---- Tardis derivative_ticker ---------------------------------------------------------------
def _read_tardis(s: Sample, source_name: str) -> pl.DataFrame:
    raw = _read_strings(s, _TARDIS_HEADER)
    rows = raw.with_columns(
        t=_epoch_ns("timestamp", "us"),
        f=_epoch_ns("funding_timestamp", "us"),
        fr=pl.col("funding_rate").cast(pl.Float64, strict=False),
        mk=pl.col("mark_price").cast(pl.Float64, strict=False),
    )
    unparsed = lambda col, parsed: pl.col(col).is_null() | pl.col(parsed).is_not_null()  # noqa: E731
    _first_bad(rows, s.source, [
        (pl.col("t").is_not_null(), "unparseable timestamp (expected µs since the epoch)"),
        (unparsed("funding_timestamp", "f"), "unparseable funding_timestamp (expected µs since the epoch, or empty)"),
        (unparsed("funding_rate", "fr"), "unparseable funding_rate (expected a number, or empty)"),
        (unparsed("mark_price", "mk"), "unparseable mark_price (expected a number, or empty)"),
    ], _TARDIS_HEADER)
    if rows.is_empty():
        return _canonical(rows.select(ts=pl.lit(None, pl.Int64), rate=pl.lit(None, pl.Float64),
                                      interval_h=pl.lit(None, pl.Float64), mark_px=pl.lit(None, pl.Float64), src_line="src_line"), source_name)
    # Tardis orders rows by local (receive) time; the rules below are in exchange time.
    rows = rows.sort("t", "src_line")
    file_end = rows["t"].max()
    events = (
        rows.filter(pl.col("f").is_not_null() & pl.col("fr").is_not_null() & (pl.col("t") < pl.col("f")))
        .group_by("f", maintain_order=True)
        .agg(rate=pl.col("fr").last(), src_line=pl.col("src_line").last())
        .filter(pl.col("f") <= file_end + FINAL_WINDOW_NS)  # provisional events left out
        .sort("f")
        .rename({"f": "ts"})
    )
    marks = rows.filter(pl.col("mk").is_not_null()).select(ts="t", mark_px="mk").unique("ts", keep="last", maintain_order=True)
    events = events.join_asof(marks, on="ts", strategy="backward").with_columns(
        interval_h=pl.col("ts").diff().cast(pl.Float64) / NS_PER_H,
    ).with_columns(
        # A gap of more than a day is missing data between events, not an interval.
        interval_h=pl.when(pl.col("interval_h") <= 24).then(pl.col("interval_h")),
    )
    # Messages quote the row the event's rate came from.
    shown = events.join(raw, on="src_line", how="left")
    _first_bad(shown, s.source, _range_checks("µs"), _TARDIS_HEADER)
    return _canonical(events, source_name)


BINANCE = FundingFormat(BINANCE_NAME, ",".join(_BINANCE_HEADER) + " (Binance fundingRate; ms)", _match_binance, _read_binance)
TARDIS = FundingFormat(TARDIS_NAME, ",".join(_TARDIS_HEADER) + " (Tardis derivative_ticker; µs)",
                       lambda s: s.header == _TARDIS_HEADER, _read_tardis)
FORMATS: tuple[FundingFormat, ...] = (BINANCE, TARDIS)


def sniff(source: Path, text_path: Path) -> tuple[FundingFormat, Sample] | None:
    """The funding format of ``text_path`` (the decompressed content of ``source``), or None
    when it is not a funding file (then it is for the tick formats to judge)."""
    with open(text_path, "rb") as f:
        if f.read(4) == PARQUET_MAGIC:
            return None
    try:
        sample = Sample.read(source, text_path)
    except ValueError:
        return None  # not text: the tick detection names the problem
    for fmt in FORMATS:
        if fmt.matches(sample):
            return fmt, sample
    return None


def symbol_claims(source: Path, fmt: FundingFormat, sample: Sample) -> dict[str, str]:
    """Symbols the file's name or content claim (the venue's symbol, e.g. ``BTCUSDT``)."""
    claims: dict[str, str] = {}
    if m := FILE_NAME_RE.match(source.name):
        claims["file name"] = m.group(1).upper()
    row = sample.data_row
    if fmt is TARDIS and len(row) > 1 and row[1]:
        claims["symbol column"] = row[1].upper()
    return claims


def read(fmt: FundingFormat, sample: Sample, source_name: str | None = None) -> pl.DataFrame:
    """The canonical funding rows of a sniffed file (raises :class:`IngestError` on any bad row)."""
    return fmt.read(sample, source_name or sample.source.name)
