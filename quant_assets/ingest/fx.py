"""FX quote CSVs: a timestamp, a bid and an ask, optionally sizes (volumes).

Recognised shapes:
- with a header naming a time column (timestamp, time, datetime, date, gmt time, local time,
  utc) and ``bid``/``ask`` columns, optionally ``bid volume``/``ask volume`` (Dukascopy
  exports; ``BidVolume`` and ``bid_size`` spellings too), in any order;
- TrueFX, no header: ``EUR/USD,20240102 00:00:00.138,1.10426,1.10441``;
- no header: ``timestamp,bid,ask[,bid_size,ask_size]`` with an epoch or text timestamp.

Timestamps are UTC; epochs may be s, ms, µs or ns (inferred from magnitude). Volumes are
taken as sizes in base units when present, else sizes are null (unknown).
"""

from __future__ import annotations

import re

import polars as pl

from quant_assets.ingest.formats import SourceFormat, to_canonical
from quant_assets.ingest.sample import Sample, kind_of
from quant_assets.ingest.timeunits import epoch_to_ns, infer_epoch_unit, infer_text_format, text_to_ns

_TIME_NAMES = {"timestamp", "time", "datetime", "date", "gmt time", "local time", "utc", "ts", "date_time"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_ROLE_NAMES = {
    "bid": {"bid", "bidprice", "bidpx"},
    "ask": {"ask", "askprice", "askpx", "offer"},
    "bid_sz": {"bidvolume", "bidsize", "bidsz", "bidqty", "bidamount"},
    "ask_sz": {"askvolume", "asksize", "asksz", "askqty", "askamount"},
}


def _roles(sample: Sample) -> dict[str, int] | None:
    """Column index of each role (time, bid, ask[, sizes]) or None if this is not FX-shaped."""
    header = sample.header
    if header is not None:
        roles: dict[str, int] = {}
        for i, name in enumerate(header):
            if name.strip() in _TIME_NAMES or _norm(name) in {_norm(t) for t in _TIME_NAMES}:
                roles.setdefault("time", i)
            for role, names in _ROLE_NAMES.items():
                if _norm(name) in names:
                    roles.setdefault(role, i)
        return roles if {"time", "bid", "ask"} <= roles.keys() else None
    kinds = sample.kinds()
    row = sample.data_row
    if len(kinds) == 4 and kinds[0] == "str" and "/" in row[0] and all(k in ("float", "int") for k in kinds[2:]):
        return {"pair": 0, "time": 1, "bid": 2, "ask": 3}  # TrueFX
    if len(kinds) in (3, 5) and all(k in ("float", "int") for k in kinds[1:]) and kinds[0] in ("str", "int"):
        if kinds[0] == "str" or "." in "".join(row[1:3]):
            roles = {"time": 0, "bid": 1, "ask": 2}
            if len(kinds) == 5:
                roles |= {"bid_sz": 3, "ask_sz": 4}
            return roles
    return None


def _matches(sample: Sample) -> bool:
    return _roles(sample) is not None


def _scan(sample: Sample) -> pl.LazyFrame:
    roles = _roles(sample)
    assert roles is not None
    n = len(sample.data_row)
    names = [f"f{i}" for i in range(n)]
    time_raw = sample.data_row[roles["time"]]
    where = f"{sample.source} (column {roles['time'] + 1})"
    if kind_of(time_raw) == "int":
        unit = infer_epoch_unit(int(time_raw), ("s", "ms", "us", "ns"), where)
        ts = epoch_to_ns(names[roles["time"]], unit)
    else:
        ts = text_to_ns(names[roles["time"]], infer_text_format(time_raw, where))
    schema = {name: pl.String() for name in names}
    for role in ("bid", "ask", "bid_sz", "ask_sz"):
        if role in roles:
            schema[names[roles[role]]] = pl.Float64()
    lf = pl.scan_csv(
        sample.text_path, has_header=False, skip_rows=1 if sample.header is not None else 0,
        schema=schema, ignore_errors=True, row_index_name="src_line",
        row_index_offset=2 if sample.header is not None else 1,
    )
    col = lambda role: pl.col(names[roles[role]]) if role in roles else pl.lit(None, dtype=pl.Float64)  # noqa: E731
    return to_canonical(
        lf, "quote", ts_event=ts, seq=pl.col("src_line"),
        bid_px=col("bid"), ask_px=col("ask"), bid_sz=col("bid_sz"), ask_sz=col("ask_sz"),
    )


QUOTES = SourceFormat(
    "fx_quotes",
    "timestamp,bid,ask[,bid_volume,ask_volume] with a header naming them (Dukascopy style), "
    "or TrueFX pair,timestamp,bid,ask without a header",
    _matches,
    _scan,
)
FORMATS = (QUOTES,)


def pair_in_content(sample: Sample) -> str | None:
    """The currency pair of a TrueFX row (``EUR/USD`` -> ``EURUSD``)."""
    roles = _roles(sample)
    if roles and "pair" in roles:
        return re.sub(r"[^A-Z0-9]", "", sample.data_row[roles["pair"]].upper())
    return None
