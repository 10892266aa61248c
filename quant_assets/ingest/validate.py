"""Row rules: every parsed row gets ``reject_reason`` (null when the row is good).

Rules apply in order and the first broken one names the row's reason. Bounds are in ns.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from quant_assets.ingest.timeunits import now_ns
from quant_assets.settings import START_MONTH_ENV

#: 1990-01-01T00:00:00Z in ns: anything earlier is a unit mistake, not market data.
MIN_TS_NS = 631_152_000 * 1_000_000_000
#: Tolerated clock skew into the future.
FUTURE_SLACK_NS = 86_400 * 1_000_000_000


def month_start_ns(month: str) -> int:
    """First ns of ``YYYY-MM`` (UTC)."""
    y, m = (int(x) for x in month.split("-"))
    return int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000


def next_month(month: str) -> str:
    y, m = (int(x) for x in month.split("-"))
    return f"{y + (m == 12)}-{(m % 12) + 1:02d}"


def _bad(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | c.is_finite().not_()


def reject_reason(start_month: str, now: int | None = None) -> pl.Expr:
    """Expression giving the first rule a row breaks, or null for a good row."""
    ts = pl.col("ts_event")
    hi = (now or now_ns()) + FUTURE_SLACK_NS
    start = month_start_ns(start_month)
    quote = pl.col("kind") == "quote"
    trade = pl.col("kind") == "trade"
    bid, ask, bsz, asz = (pl.col(c) for c in ("bid_px", "ask_px", "bid_sz", "ask_sz"))
    px, sz = pl.col("price"), pl.col("size")
    bad_size = lambda c: c.is_not_null() & (c.is_finite().not_() | (c <= 0))  # noqa: E731
    return (
        pl.when(pl.col("kind").is_null()).then(pl.lit("unknown kind (expected quote or trade)"))
        .when(ts.is_null()).then(pl.lit("missing or unparseable timestamp"))
        .when(ts < MIN_TS_NS).then(pl.lit("timestamp before 1990 (wrong unit?)"))
        .when(ts > hi).then(pl.lit("timestamp in the future"))
        .when(ts < start).then(pl.lit(f"before {START_MONTH_ENV}={start_month}"))
        .when(quote & (_bad("bid_px") | _bad("ask_px"))).then(pl.lit("missing, unparseable or NaN bid/ask price"))
        .when(quote & ((bid <= 0) | (ask <= 0))).then(pl.lit("non-positive bid/ask price"))
        .when(quote & (bid > ask)).then(pl.lit("crossed quote (bid > ask)"))
        .when(quote & (bad_size(bsz) | bad_size(asz))).then(pl.lit("zero, negative or NaN bid/ask size"))
        .when(trade & _bad("price")).then(pl.lit("missing, unparseable or NaN price"))
        .when(trade & (px <= 0)).then(pl.lit("non-positive price"))
        .when(trade & (_bad("size") | (sz <= 0))).then(pl.lit("missing, zero, negative or NaN size"))
        .when(trade & pl.col("side").is_in([-1, 0, 1]).not_().fill_null(True))
        .then(pl.lit("missing or unparseable aggressor side (expected buy/sell, or 0 for unknown)"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("reject_reason")
    )


def ts_in_range(start_month: str, now: int | None = None) -> pl.Expr:
    """True where ``ts_event`` is a plausible time at or after the start month.

    The months a file "touches" are those of such rows, whatever their other faults: the
    probe (timestamps only) and the full staging agree on them.
    """
    ts = pl.col("ts_event")
    lo = max(MIN_TS_NS, month_start_ns(start_month))
    return ts.is_not_null() & (ts >= lo) & (ts <= (now or now_ns()) + FUTURE_SLACK_NS)


def with_reasons(parsed: pl.LazyFrame, start_month: str, now: int | None = None) -> pl.LazyFrame:
    """``parsed`` plus ``reject_reason``; a missing ``ts_recv`` takes ``ts_event``."""
    return parsed.with_columns(pl.col("ts_recv").fill_null(pl.col("ts_event"))).with_columns(
        reject_reason(start_month, now)
    )
