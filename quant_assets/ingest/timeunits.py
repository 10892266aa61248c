"""Timestamps: integer epochs of unknown unit, and the text formats FX exports use."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

#: Multiplier to nanoseconds for each integer epoch unit.
TO_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

# An epoch in each unit lands between 1990 and 2100 only in a band of magnitudes:
# seconds ~1e9, ms ~1e12, µs ~1e15, ns ~1e18. The bands do not overlap.
_BANDS = [("s", 6.3e8, 4.2e9), ("ms", 6.3e11, 4.2e12), ("us", 6.3e14, 4.2e15), ("ns", 6.3e17, 4.2e18)]


def infer_epoch_unit(value: int | float, allowed: tuple[str, ...], where: str) -> str:
    """The unit of an integer epoch ``value`` judged by its magnitude (1990-2100 bands).

    Raises ValueError naming ``where`` when the magnitude fits no band, or fits a unit that
    the format does not use (seconds in a Binance file: the implied date range is wrong).
    """
    for unit, lo, hi in _BANDS:
        if lo <= abs(value) < hi:
            if unit not in allowed:
                raise ValueError(
                    f"{where}: timestamp {value} looks like {unit} since epoch, "
                    f"but this format uses {' or '.join(allowed)}"
                )
            return unit
    raise ValueError(
        f"{where}: timestamp {value} is not an epoch in {' or '.join(allowed)} between 1990 and 2100"
    )


def epoch_to_ns(col: str, unit: str) -> pl.Expr:
    """Integer epoch column in ``unit`` -> int64 ns."""
    return (pl.col(col).cast(pl.Int64, strict=False) * TO_NS[unit]).alias(col)


# (python strptime format, polars chrono format) pairs for text timestamps, most specific first.
TEXT_FORMATS: list[tuple[str, str]] = [
    ("%Y%m%d %H:%M:%S.%f", "%Y%m%d %H:%M:%S%.f"),  # TrueFX
    ("%Y%m%d %H:%M:%S", "%Y%m%d %H:%M:%S"),
    ("%d.%m.%Y %H:%M:%S.%f", "%d.%m.%Y %H:%M:%S%.f"),  # Dukascopy
    ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S"),
    ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S%.f"),  # ISO 8601
    ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
    ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S%.f"),
    ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"),
]


def _strip_zone(text: str) -> str:
    t = text.strip()
    for suffix in ("Z", " UTC", " GMT", " GMT+0000", "+00:00"):
        if t.endswith(suffix):
            return t[: -len(suffix)]
    return t


def infer_text_format(sample: str, where: str) -> str:
    """The polars format string that parses ``sample`` (a UTC timestamp in text)."""
    text = _strip_zone(sample)
    for py_fmt, pl_fmt in TEXT_FORMATS:
        try:
            datetime.strptime(text, py_fmt)
        except ValueError:
            continue
        return pl_fmt
    known = ", ".join(p for p, _ in TEXT_FORMATS)
    raise ValueError(f"{where}: timestamp {sample!r} matches no known format (tried {known}, epochs)")


def text_to_ns(col: str, pl_fmt: str) -> pl.Expr:
    """UTC text timestamps -> int64 ns (null where unparseable)."""
    cleaned = pl.col(col).str.strip_chars().str.replace(r"(Z| UTC| GMT(\+0000)?|\+00:00)$", "")
    return (
        cleaned.str.to_datetime(format=pl_fmt, time_unit="ns", strict=False)
        .cast(pl.Int64)
        .alias(col)
    )


def now_ns() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1e9)
