"""Binance websocket captures as hftbacktest's collector writes them, and REST depth snapshots.

**Capture** (``<symbol>_<YYYYMMDD>.gz``): one line per message, ``<local_ts> <json>``, where
``local_ts`` is the receive time (ns in hftbacktest's Rust collector, µs in its older Python
one: the unit is judged from the first line) and ``json`` the message as received, usually of a
combined stream, ``{"stream": "btcusdt@depth@0ms", "data": {...}}`` (a raw stream's payload
alone is read too). Messages, by what they carry:

- ``depthUpdate`` (diff depth, ``<s>@depth``, ``@depth@100ms``, ``@depth@0ms``):
  ``E`` event time (ms), ``T`` transaction time (ms, futures only), ``s`` symbol, ``U`` first and
  ``u`` last update id, ``pu`` the previous message's ``u`` (futures only), ``b``/``a`` lists of
  ``[price, qty]`` text pairs: a level's new absolute size, ``0`` removing it.
  -> one row per pair, bids then asks in message order: ``update`` (``delete`` for size 0),
  ``seq = u``, ``seq_first = U``, ``seq_prev = pu``, ``ts_event`` = ``T`` if present else ``E``
  (the matching engine's time of the message's last change; ``E`` is when it was pushed),
  ``ts_recv`` = the line's local time, :data:`F_LAST` on the message's last row.
  A message with no pairs changes nothing but continues the id chain: its ``U``/``pu`` are
  carried to the next depth message (``seq_first``/``seq_prev``), so the chain stays checkable.
- REST depth snapshot (``GET /api/v3/depth`` or ``/fapi/v1/depth``; the collector writes the
  response body on its own line when it detects a gap or starts): ``{"lastUpdateId", "bids",
  "asks"}`` (+ ``E``/``T`` on futures) -> a snapshot: one ``clear`` row (side 0, price null,
  size 0) then one ``add`` row per level, bids then asks, all ``is_snapshot``, ``seq =
  lastUpdateId``, ``seq_first``/``seq_prev`` null, ``ts_event`` = ``T``/``E`` if present else the
  local time. Partial-depth streams (``@depth5``/``10``/``20``: top-N books, spot as
  ``lastUpdateId`` bodies, futures as ``depthUpdate``) are top-N snapshots the same way.
  A REST error body (``{"code", "msg"}``) keeps its line with the error as the reason.
- ``bookTicker`` and ``trade``/``aggTrade`` are L1 quotes and trades: :func:`scan_ticks`
  gives them as canonical tick rows (trade side from ``m``, buyer is maker -> seller
  aggressor -1; ``seq`` = ``u`` / trade id). A futures trade whose ``X`` is not ``MARKET``
  (insurance fund, ADL) did not trade against the book: it keeps its line with a reason here
  and is not a tick (hftbacktest's converter drops them too).

Lines that cannot be used keep a staged row with a reason naming what was wrong: JSON that does
not decode (a truncated line), a missing or unparseable receive time, a message of another
symbol than the landing folder's, a price or quantity that is not a number (the whole message
is rejected: applying part of it would corrupt the book), an unknown message. Blank lines are
not messages and are skipped.

A **separate REST snapshot file** (the response body alone, ``{"lastUpdateId", "bids",
"asks", "E"?, "T"?}``) is its own format: the futures body's ``T`` (else ``E``) is its time; a
spot body carries no time at all and is refused (store it as a capture line ``<recv_ns> <json>``
instead, which the capture format reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quant_assets.book.formats import BookFormat, conform, head_lines, register, split_capture_line
from quant_assets.book.parse.common import (
    batched_lazy, json_decode_isolating, line_chunks, lines_frame, lines_lazy, pick, prefetched,
)
from quant_assets.book.schema import DEPTH_L2, F_LAST, STAGED_SCHEMA
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.timeunits import TO_NS, infer_epoch_unit
from quant_assets.lake.identity import claims_match
from quant_assets.lake.schema import KIND, TICK_SCHEMA

NAME = "binance_ws_capture"
LAYOUT = ('hftbacktest collector capture: "<local_ts_ns> <json>" lines of a Binance combined stream '
          '(depthUpdate, REST depth snapshot, bookTicker, trade/aggTrade)')
SNAPSHOT_NAME = "binance_rest_depth_snapshot"
SNAPSHOT_LAYOUT = 'Binance REST depth snapshot body {"lastUpdateId", "bids", "asks", "E"?, "T"?} (futures: it carries its time)'

_PAIRS = pl.List(pl.List(pl.String()))
_DEPTH_FIELDS = {
    "e": pl.String(), "E": pl.Int64(), "T": pl.Int64(), "s": pl.String(),
    "U": pl.Int64(), "u": pl.Int64(), "pu": pl.Int64(), "b": _PAIRS, "a": _PAIRS,
}
_SNAP_FIELDS = {"lastUpdateId": pl.Int64(), "E": pl.Int64(), "T": pl.Int64(), "bids": _PAIRS, "asks": _PAIRS,
                "code": pl.Int64(), "msg": pl.String()}
_TICKER_FIELDS = {"e": pl.String(), "E": pl.Int64(), "T": pl.Int64(), "s": pl.String(), "u": pl.Int64(),
                  "b": pl.String(), "B": pl.String(), "a": pl.String(), "A": pl.String()}
_TRADE_FIELDS = {"e": pl.String(), "E": pl.Int64(), "T": pl.Int64(), "s": pl.String(), "t": pl.Int64(),
                 "p": pl.String(), "q": pl.String(), "m": pl.Boolean(), "X": pl.String()}
_AGG_FIELDS = {"e": pl.String(), "E": pl.Int64(), "T": pl.Int64(), "s": pl.String(), "a": pl.Int64(),
               "p": pl.String(), "q": pl.String(), "m": pl.Boolean()}


def _wrapped(fields: dict[str, pl.DataType]) -> pl.Struct:
    """A combined-stream message (``stream`` + ``data``) or a raw-stream payload at the top."""
    return pl.Struct({"stream": pl.String(), "data": pl.Struct(fields), **fields})


_DEPTH = _wrapped(_DEPTH_FIELDS)
_SNAP = _wrapped(_SNAP_FIELDS)
_TICKER = _wrapped(_TICKER_FIELDS)
_TRADE = _wrapped(_TRADE_FIELDS)
_AGG = _wrapped(_AGG_FIELDS)
_SRC = ("data", "top")

#: Message kinds, judged from literal markers (cheap substring tests; the decode confirms).
_KINDS = ("depth", "snapshot", "ticker", "trade", "agg", "error", "other")


def _kind(body: pl.Expr) -> pl.Expr:
    has = lambda s: body.str.contains(s, literal=True)  # noqa: E731
    return (
        pl.when(body.is_null()).then(pl.lit("other"))
        .when(has("depthUpdate")).then(pl.lit("depth"))
        .when(has("lastUpdateId")).then(pl.lit("snapshot"))
        .when(has("bookTicker") | (has('"B":') & has('"A":') & has('"e":').not_())).then(pl.lit("ticker"))
        .when(has("aggTrade")).then(pl.lit("agg"))
        .when(has('"trade"')).then(pl.lit("trade"))
        .when(has('"code"') & has('"msg"')).then(pl.lit("error"))
        .otherwise(pl.lit("other"))
    )


def _decode_kind(df: pl.DataFrame, kinds: list[str], fields: dict[str, pl.DataType], prefix: str, raw_first: bool = False) -> pl.DataFrame:
    """Decode the lines of ``kinds`` into flat columns ``<prefix><field>`` (null elsewhere) plus
    ``<prefix>stream`` and ``<prefix>jerr`` (the decoder's error, the line kept for its reason).

    A combined-stream message nests its payload in ``data``; a raw-stream one (and a REST body)
    has it at the top: the common shape is decoded first, the other only for the lines whose
    first decode found no payload (none, in a normal capture: no double cost)."""
    wrapped = pl.Struct({"stream": pl.String(), "data": pl.Struct(fields)})
    raw = pl.Struct(fields)
    mine = pl.col("kind").is_in(kinds)
    texts = df.select(pl.when(mine).then(pl.col("body"))).to_series()
    first, second = (raw, wrapped) if raw_first else (wrapped, raw)
    dec, err = json_decode_isolating(texts, first)
    payload = dec if raw_first else dec.struct.field("data")
    stream = pl.Series([None] * df.height, dtype=pl.String) if raw_first else dec.struct.field("stream")
    key = next(iter(fields))  # a field every message of the kind has (its first)
    missing = df.select(mine & pl.lit(err).is_null() & pl.lit(payload).struct.field(key).is_null()).to_series()
    if missing.any():
        dec2, err2 = json_decode_isolating(texts.zip_with(missing, pl.Series([None] * df.height, dtype=pl.String)), second)
        payload2 = dec2.struct.field("data") if raw_first else dec2
        use2 = missing & err2.is_null()
        payload = payload.zip_with(use2.not_(), payload2)
        if raw_first:
            stream = stream.zip_with(use2.not_(), dec2.struct.field("stream"))
    cols = [payload.struct.field(f).alias(prefix + f) for f in fields]
    return df.with_columns(*cols, stream.alias(prefix + "stream"), err.alias(prefix + "jerr"))


@dataclass
class _Carry:
    """State carried across batches: the id range of trailing empty depth messages, and the
    symbols already judged against the landing folder's."""

    first_u: int | None = None
    prev_u: int | None = None
    symbols: dict[str, bool] = field(default_factory=dict)


def _symbol_ok(values: pl.Series, symbol: str, cache: dict[str, bool]) -> dict[str, bool]:
    for v in values.drop_nulls().unique().to_list():
        if v not in cache:
            cache[v] = claims_match(v, symbol)
    return cache


def _split(df: pl.DataFrame | pl.LazyFrame, ts_mul: int) -> pl.DataFrame | pl.LazyFrame:
    """Lines -> ``local`` (receive time, ns), ``body`` (JSON text), ``kind``; blank lines dropped."""
    df = df.filter(pl.col("line").is_not_null() & (pl.col("line").str.strip_chars() != ""))
    parts = pl.col("line").str.splitn(" ", 2)
    df = df.with_columns(ts_txt=parts.struct.field("field_0"), body=parts.struct.field("field_1")).drop("line")
    return df.with_columns(
        local=pl.col("ts_txt").str.strip_chars().cast(pl.Int64, strict=False) * ts_mul,
        kind=_kind(pl.col("body")),
    )


_DEPTH_KEYS = {"u": pl.Int64(), **{k: v for k, v in _DEPTH_FIELDS.items() if k != "u"}}
_SNAP_KEYS = _SNAP_FIELDS
_TICK_KEYS = {"s": pl.String(), "e": pl.String(), "X": pl.String()}
_STAGED_ROW = [*STAGED_SCHEMA]


#: (prefix, kinds, fields, wrapped first) of each decoded message family: see :func:`_decode_kind`.
_FAMILIES = (
    ("d_", ("depth",), _DEPTH_KEYS, True),
    ("s_", ("snapshot",), _SNAP_KEYS, False),
    ("t_", ("ticker", "trade", "agg"), _TICK_KEYS, True),
)


def _decoded_at_once(lines: pl.DataFrame | pl.LazyFrame, ts_mul: int) -> pl.DataFrame | None:
    """:func:`_decoded` as one streaming query (split, kind and every family's decode in
    parallel morsels, as a bare parse runs), or None when the batch needs the careful path: a
    line that does not decode (Polars fails the whole query), or a payload not in its
    family's usual shape (a raw-stream message, a combined-stream snapshot)."""
    k = pl.col("kind")
    decode, fields_out, missing = [], [], []
    for prefix, kinds, fields, wrapped in _FAMILIES:
        dtype = pl.Struct({"stream": pl.String(), "data": pl.Struct(fields)}) if wrapped else pl.Struct(fields)
        decode.append(pl.when(k.is_in(kinds)).then(pl.col("body")).str.json_decode(dtype).alias(prefix))
        payload = pl.col(prefix).struct.field("data") if wrapped else pl.col(prefix)
        fields_out += [payload.struct.field(f).alias(prefix + f) for f in fields]
        stream = pl.col(prefix).struct.field("stream") if wrapped else pl.lit(None, pl.String)
        fields_out += [stream.alias(prefix + "stream"), pl.lit(None, pl.String).alias(prefix + "jerr")]
        missing.append(k.is_in(kinds) & payload.struct.field(next(iter(fields))).is_null())
    try:
        df = (_split(lines.lazy(), ts_mul).with_columns(decode)
              .with_columns(_missing=pl.any_horizontal(missing))
              .with_columns(fields_out).drop([f[0] for f in _FAMILIES])
              .collect(engine="streaming"))
    except pl.exceptions.PolarsError:
        return None
    if df["_missing"].any():
        return None
    return df.drop("_missing")


def _decoded_chunk(first_line: int, chunk: bytes, ts_mul: int) -> pl.DataFrame:
    """:func:`_decoded` of a chunk of the file's bytes (:func:`line_chunks`), scanned lazily
    by the fast path, read whole for the careful one."""
    fast = _decoded_at_once(lines_lazy(chunk, first_line), ts_mul)
    return fast if fast is not None else _decoded(lines_frame(chunk, first_line), ts_mul)


def _decoded(lines: pl.DataFrame, ts_mul: int) -> pl.DataFrame:
    """One batch of capture lines split and JSON-decoded (the costly, state-free half of the
    parse: batches can be decoded ahead, in another thread, see :func:`parse`). The careful
    path: a line that does not decode keeps its error (:func:`json_decode_isolating`), a raw
    stream's payload is found at the top."""
    df = _split(lines, ts_mul)
    if df.height == 0:
        return df
    df = _decode_kind(df, ["depth"], _DEPTH_KEYS, "d_")
    df = _decode_kind(df, ["snapshot"], _SNAP_KEYS, "s_", raw_first=True)
    # Tickers and trades are ticks (scan_ticks); here only whether they decode, their symbol
    # and a trade's X (their reasons are reported in this, the book staging).
    return _decode_kind(df, ["ticker", "trade", "agg"], _TICK_KEYS, "t_")


def _book_batch(lines: pl.DataFrame, ts_mul: int, symbol: str, carry: _Carry) -> pl.DataFrame:
    """Staged rows of one batch of capture lines (see the module docstring), in file order."""
    return _book_rows(_decoded(lines, ts_mul), symbol, carry)


def _book_rows(df: pl.DataFrame, symbol: str, carry: _Carry) -> pl.DataFrame:
    """Staged rows of a decoded batch (:func:`_decoded`); ``carry`` links it to the batch before."""
    if df.height == 0:
        return pl.DataFrame(schema=STAGED_SCHEMA)

    k = pl.col("kind")
    depth, snap = k == "depth", k == "snapshot"
    df = df.with_columns(sym=pl.coalesce(pl.col("d_s"), pl.col("t_s")))
    ok = _symbol_ok(df["sym"], symbol, carry.symbols)
    bad_syms = [v for v, good in ok.items() if not good]
    jerr = pl.coalesce(pl.col("d_jerr"), pl.col("s_jerr"), pl.col("t_jerr"))
    depth_t = pl.coalesce(pl.col("d_T"), pl.col("d_E"))
    other_symbol = pl.col("sym").is_in(bad_syms)
    x = pl.col("t_X")
    not_market = (k == "trade") & x.is_not_null() & (x != "MARKET")
    # Polars computes every branch of a when-chain for every row: the reason texts are built only
    # when some line has one (the usual batch has none)
    any_bad = (
        jerr.is_not_null() | pl.col("local").is_null() | k.is_in(["error", "other"]) | other_symbol
        | (snap & (pl.col("s_code").is_not_null() | pl.col("s_lastUpdateId").is_null()))
        | (depth & (pl.col("d_u").is_null() | pl.col("d_U").is_null() | depth_t.is_null())) | not_market
    )
    has_bad = bool(df.select(any_bad.any()).item())
    reason = pl.lit(None, pl.String) if not has_bad else (
        pl.when(jerr.is_not_null()).then(pl.lit("JSON does not decode (truncated or malformed line): ") + jerr)
        .when(pl.col("local").is_null()).then(
            pl.lit("missing or unparseable receive time '") + pl.col("ts_txt").str.slice(0, 30) + pl.lit("' (expected <local_ts_ns> <json>)"))
        .when(k == "error").then(pl.lit("REST error response: ") + pl.col("body").str.slice(0, 200))
        .when(k == "other").then(pl.lit("not a Binance depth, snapshot, bookTicker or trade message: ") + pl.col("body").str.slice(0, 80))
        .when(other_symbol).then(pl.lit("message of symbol ") + pl.col("sym") + pl.lit(f", not the landing folder's {symbol}"))
        .when(snap & pl.col("s_code").is_not_null()).then(pl.lit("REST error response: ") + pl.col("body").str.slice(0, 200))
        .when(snap & pl.col("s_lastUpdateId").is_null()).then(pl.lit("snapshot without an integer lastUpdateId"))
        .when(depth & (pl.col("d_u").is_null() | pl.col("d_U").is_null())).then(pl.lit("depthUpdate without integer U/u update ids"))
        .when(depth & depth_t.is_null()).then(pl.lit("depthUpdate without an integer event time E/T"))
        .when(not_market).then(pl.lit("trade with X=") + x + pl.lit(" is not a market trade (insurance fund/ADL): not a tick"))
    )
    partial = pl.coalesce(pl.col("d_stream"), pl.col("s_stream")).str.contains(r"@depth\d").fill_null(False)
    df = df.with_columns(
        reason=reason,
        ts_event=pl.when(depth).then(depth_t).when(snap).then(pl.coalesce(pl.col("s_T"), pl.col("s_E"))) * TO_NS["ms"],
        # another symbol's ids belong to another chain: not this book's sequence
        seq=pl.when(other_symbol).then(None).when(depth).then(pl.col("d_u")).when(snap).then(pl.col("s_lastUpdateId")),
        snap=snap | (depth & partial),
    )
    rejected = df.filter(pl.col("reason").is_not_null()).select(
        "src_line", ts_event=pl.coalesce(pl.col("ts_event"), pl.col("local")), ts_recv=pl.col("local"), seq="seq", reason="reason")
    # only the columns the rows need ride through the filters (the line texts and tick fields do not)
    good = df.select("src_line", "local", "ts_event", "seq", "snap", "reason", "kind", "d_U", "d_pu", "d_b", "d_a",
                     "s_bids", "s_asks").filter(pl.col("reason").is_null() & k.is_in(["depth", "snapshot"]))
    if good["snap"].any():
        diffs = _diff_rows(good.filter(pl.col("snap").not_()), carry)
        snaps = _snapshot_rows(good.filter(pl.col("snap")))
    else:
        diffs, snaps = _diff_rows(good, carry), pl.DataFrame(schema=STAGED_SCHEMA)
    parts = [f for f in (diffs, snaps, _rejected_rows(rejected)) if f.height]
    if not parts:
        return pl.DataFrame(schema=STAGED_SCHEMA)
    out = parts[0]
    for f in parts[1:]:
        out = out.merge_sorted(f, key="src_line")
    return out


def _level_rows(df: pl.DataFrame, pairs: pl.Expr, n_bid_rows: pl.Expr, has_clear: bool) -> pl.DataFrame:
    """Explode each message's ``pairs`` (``[price, qty]`` text pairs: its bids then its asks,
    after a leading clear pair when ``has_clear``) into rows with ``side`` (+1 for the first
    ``n_bid_rows`` after the clear, else -1; 0 for the clear), ``price`` and ``size``."""
    # only flat columns ride along the explode (gathering the nested b/a lists is what costs)
    df = df.with_columns(pairs=pairs, nb=n_bid_rows).drop("b", "a").with_columns(n=pl.col("pairs").list.len())
    df = df.with_columns(start=pl.col("n").cum_sum() - pl.col("n"))
    rows = df.explode("pairs")
    pos = pl.int_range(pl.len(), dtype=pl.Int64) - pl.col("start")
    c = 1 if has_clear else 0
    side = pl.when(pos < c).then(0).when(pos < c + pl.col("nb")).then(1).otherwise(-1).cast(pl.Int8)
    return rows.with_columns(
        side=side, is_clear=(pos < c),
        px_txt=pl.col("pairs").list.get(0, null_on_oob=True), qty_txt=pl.col("pairs").list.get(1, null_on_oob=True),
        level_pos=pos - c,
    ).with_columns(
        price=pl.col("px_txt").cast(pl.Float64, strict=False),
        size=pl.when(pl.col("is_clear")).then(0.0).otherwise(pl.col("qty_txt").cast(pl.Float64, strict=False)),
    )


def _finish(rows: pl.DataFrame, snapshot: bool) -> pl.DataFrame:
    """Staged columns of level rows: numbers that do not parse reject their whole message
    (applying part of it would corrupt the book; one row keeps the reason), actions, flags."""
    good = lambda c: pl.col(c).is_not_null() & pl.col(c).is_finite()  # noqa: E731
    bad_row = pl.col("is_clear").not_() & (good("price").not_() | good("size").not_())
    rows = rows.with_columns(reason=pl.lit(None, pl.String))
    if rows.select(bad_row.any()).item():
        rows = _reject_bad_numbers(rows, bad_row, snapshot)
    qty = pl.col("size")
    last = (pl.col("src_line") != pl.col("src_line").shift(-1)).fill_null(True)
    rejected = pl.col("reason").is_not_null()
    return rows.lazy().select(
        ts_event=pl.coalesce(pl.col("ts_event"), pl.col("local")),
        ts_recv=pl.col("local"),
        seq=pl.col("seq"),
        side=pl.when(rejected).then(None).otherwise(pl.col("side")),
        price=pl.col("price"),
        size=qty,
        action=pl.when(rejected).then(pl.lit(None, pl.String))
        .when(pl.col("is_clear")).then(pl.lit("clear"))
        .when(qty == 0).then(pl.lit("delete"))
        .otherwise(pl.lit("add" if snapshot else "update")),
        is_snapshot=pl.lit(snapshot) & rejected.not_(),
        order_id=pl.lit(None, pl.UInt64),
        flags=pl.when(last).then(pl.lit(F_LAST)).otherwise(pl.lit(0)).cast(pl.UInt8),
        src_line=pl.col("src_line"),
        seq_first=pl.col("seq_first") if not snapshot else pl.lit(None, pl.Int64),
        seq_prev=pl.col("seq_prev") if not snapshot else pl.lit(None, pl.Int64),
        reason=pl.col("reason"),
    ).pipe(conform).collect()


def _diff_rows(good: pl.DataFrame, carry: _Carry) -> pl.DataFrame:
    """Rows of the diff messages: one per ``[price, qty]`` pair, bids then asks."""
    df = good.select("src_line", "local", "ts_event", "seq", U="d_U", pu="d_pu", b="d_b", a="d_a")
    df = df.with_columns(empty=(pl.col("b").list.len().fill_null(0) + pl.col("a").list.len().fill_null(0)) == 0)
    if df["empty"].any() or carry.first_u is not None:
        df = _merge_empty(df, carry)
    else:
        df = df.with_columns(seq_first=pl.col("U"), seq_prev=pl.col("pu"))
    df = df.filter(pl.col("empty").not_())
    if df.height == 0:
        return pl.DataFrame(schema=STAGED_SCHEMA)
    fast = _diff_rows_at_once(df)
    if fast is not None:
        return fast
    pairs = pl.concat_list(pl.col("b").fill_null([]), pl.col("a").fill_null([]))
    rows = _level_rows(df, pairs, pl.col("b").list.len().fill_null(0), has_clear=False)
    return _finish(rows, snapshot=False)


def _diff_rows_at_once(df: pl.DataFrame) -> pl.DataFrame | None:
    """:func:`_diff_rows`' rows as one streaming query (the explode and the casts in parallel
    morsels; each row's place in its message from ``int_ranges``, exploded beside its pair, so
    no step needs the whole batch), or None when a price or quantity is not a number: that
    message is rejected whole by the careful path (:func:`_level_rows`, :func:`_finish`)."""
    pair = pl.col("pair")
    price = pair.list.get(0, null_on_oob=True).cast(pl.Float64, strict=False)
    size = pair.list.get(1, null_on_oob=True).cast(pl.Float64, strict=False)
    good = lambda c: c.is_not_null() & c.is_finite()  # noqa: E731
    out = (
        df.lazy()
        .with_columns(nb=pl.col("b").list.len().fill_null(0),
                      pair=pl.concat_list(pl.col("b").fill_null([]), pl.col("a").fill_null([])))
        .with_columns(n=pl.col("pair").list.len())
        .with_columns(pos=pl.int_ranges(0, pl.col("n"), dtype=pl.Int64))
        .explode(["pair", "pos"])
        .select(
            ts_event=pl.coalesce(pl.col("ts_event"), pl.col("local")), ts_recv=pl.col("local"), seq=pl.col("seq"),
            side=pl.when(pl.col("pos") < pl.col("nb")).then(1).otherwise(-1).cast(pl.Int8),
            price=price, size=size,
            action=pl.when(size == 0).then(pl.lit("delete")).otherwise(pl.lit("update")),
            is_snapshot=pl.lit(False), order_id=pl.lit(None, pl.UInt64),
            flags=pl.when(pl.col("pos") == pl.col("n") - 1).then(pl.lit(F_LAST)).otherwise(pl.lit(0)).cast(pl.UInt8),
            src_line=pl.col("src_line"), seq_first=pl.col("seq_first"), seq_prev=pl.col("seq_prev"),
            reason=pl.lit(None, pl.String), _bad=(good(price) & good(size)).not_(),
        )
        .collect(engine="streaming")
    )
    if out["_bad"].any():
        return None
    return conform(out.drop("_bad")).collect()


def _snapshot_rows(good: pl.DataFrame) -> pl.DataFrame:
    """Rows of the snapshots (REST bodies, partial-depth top-N books): a clear, then one add
    per level, bids then asks."""
    if good.height == 0:
        return pl.DataFrame(schema=STAGED_SCHEMA)
    df = good.select("src_line", "local", "ts_event", "seq",
                     b=pl.coalesce(pl.col("s_bids"), pl.col("d_b")), a=pl.coalesce(pl.col("s_asks"), pl.col("d_a")))
    clear = pl.lit([[None, "0"]], dtype=_PAIRS)
    pairs = pl.concat_list(clear, pl.col("b").fill_null([]), pl.col("a").fill_null([]))
    rows = _level_rows(df, pairs, pl.col("b").list.len().fill_null(0), has_clear=True)
    return _finish(rows.with_columns(seq_first=pl.lit(None, pl.Int64), seq_prev=pl.lit(None, pl.Int64)), snapshot=True)


def _rejected_rows(rej: pl.DataFrame) -> pl.DataFrame:
    return conform(rej.with_columns(
        side=pl.lit(None, pl.Int8), price=pl.lit(None, pl.Float64), size=pl.lit(None, pl.Float64),
        action=pl.lit(None, pl.String), flags=pl.lit(F_LAST, pl.UInt8),
    )).collect()


def _reject_bad_numbers(rows: pl.DataFrame, bad_row: pl.Expr, snapshot: bool) -> pl.DataFrame:
    """A message with a price or quantity that is not a number is rejected whole: one row for
    it, the reason naming the first bad value and where it is in the message."""
    names = ("bids", "asks") if snapshot else ("b", "a")
    where = (pl.when(pl.col("side") == 1).then(pl.lit(names[0] + "[") + pl.col("level_pos").cast(pl.String))
             .otherwise(pl.lit(names[1] + "[") + (pl.col("level_pos") - pl.col("nb")).cast(pl.String)) + pl.lit("]"))
    desc = (pl.when(pl.col("price").is_null() | pl.col("price").is_finite().not_())
            .then(pl.lit("price '") + pl.col("px_txt").fill_null("<missing>"))
            .otherwise(pl.lit("quantity '") + pl.col("qty_txt").fill_null("<missing>"))
            + pl.lit("' at ") + where)
    rows = rows.with_columns(bad_desc=pl.when(bad_row).then(desc))
    rows = rows.with_columns(bad_desc=pl.col("bad_desc").drop_nulls().first().over("src_line"))
    rejected = pl.col("bad_desc").is_not_null()
    first_of_line = (pl.col("src_line") != pl.col("src_line").shift(1)).fill_null(True)
    rows = rows.filter(rejected.not_() | first_of_line)
    return rows.with_columns(
        reason=pl.when(rejected).then(pl.lit("not a number: ") + pl.col("bad_desc") + pl.lit(" (message rejected whole)")),
        price=pl.when(rejected).then(None).otherwise(pl.col("price")),
        size=pl.when(rejected).then(None).otherwise(pl.col("size")),
    ).drop("bad_desc")


def _merge_empty(df: pl.DataFrame, carry: _Carry) -> pl.DataFrame:
    """``seq_first``/``seq_prev`` of each diff message: its own ``U``/``pu``, or those of the
    run of empty diff messages just before it (the carry from the previous batch first)."""
    cols = df.select("src_line", "U", "pu", "empty")
    if carry.first_u is not None:
        head = pl.DataFrame({"src_line": [0], "U": [carry.first_u], "pu": [carry.prev_u], "empty": [True]},
                            schema={"src_line": pl.Int64, "U": pl.Int64, "pu": pl.Int64, "empty": pl.Boolean})
        cols = pl.concat([head, cols])
    nonempty = pl.col("empty").not_().cast(pl.Int64)
    cols = cols.with_columns(grp=nonempty.cum_sum() - nonempty)
    cols = cols.with_columns(seq_first=pl.col("U").first().over("grp"), seq_prev=pl.col("pu").first().over("grp"))
    tail = cols.filter(pl.col("grp") == cols["grp"].max())
    if tail.height and tail["empty"].all():  # the batch ends with empty messages: carry them
        carry.first_u, carry.prev_u = tail["U"][0], tail["pu"][0]
    else:
        carry.first_u = carry.prev_u = None
    return df.join(cols.select("src_line", "seq_first", "seq_prev"), on="src_line", how="left", maintain_order="left")


# ---- the format's entry points -----------------------------------------------------------------

_MARKERS = ("depthUpdate", "lastUpdateId", "bookTicker", '"trade"', "aggTrade")


def matches(landing: Path, plain: Path) -> bool:
    """Capture lines: ``<16-20 digit local time> {json}`` carrying a Binance stream marker."""
    lines = head_lines(plain, max_lines=50)
    good = [split_capture_line(ln) for ln in lines]
    good = [g for g in good if g is not None]
    return bool(good) and any(m in g[1] for g in good for m in _MARKERS)


def _ts_multiplier(landing: Path, plain: Path) -> int:
    for ln in head_lines(plain, max_lines=50):
        if (got := split_capture_line(ln)) is not None:
            try:
                return TO_NS[infer_epoch_unit(got[0], ("us", "ns"), f"{landing}: receive time of the first line")]
            except ValueError as exc:
                raise IngestError(landing, str(exc)) from exc
    raise IngestError(landing, f"no line of the form <local_ts_ns> <json> in the head; expected {LAYOUT}")


def _check_nonempty(landing: Path, plain: Path) -> None:
    if plain.stat().st_size == 0 or not head_lines(plain, max_lines=1):
        raise IngestError(landing, f"empty file (no lines); expected {LAYOUT}")


def parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    """Staged book rows of a capture (module docstring), streamed batch by batch."""
    _check_nonempty(landing, plain)
    mul = _ts_multiplier(landing, plain)

    def batches() -> Iterator[pl.DataFrame]:
        carry = _Carry()
        decoded = prefetched(line_chunks(plain), lambda fc: _decoded_chunk(*fc, mul))
        for df in decoded:
            yield _book_rows(df, symbol, carry)

    return batched_lazy(batches, STAGED_SCHEMA, NAME)


def _ticks_batch(lines: pl.DataFrame, ts_mul: int, symbol: str, cache: dict[str, bool]) -> pl.DataFrame:
    df = _split(lines, ts_mul).filter(pl.col("kind").is_in(["ticker", "trade", "agg"]))
    frames = []
    for kind, dtype in (("ticker", _TICKER), ("trade", _TRADE), ("agg", _AGG)):
        sub = df.filter(pl.col("kind") == kind)
        if sub.height == 0:
            continue
        dec, err = json_decode_isolating(sub["body"], dtype)
        sub = sub.with_columns(data=dec.struct.field("data"), top=dec, jerr=err).filter(pl.col("jerr").is_null())
        src = ("data", "top")
        sym = pick(src, "s", pl.String())
        sub = sub.with_columns(sym=sym)
        ok = _symbol_ok(sub["sym"], symbol, cache)
        sub = sub.filter(pl.col("sym").replace_strict(ok, default=True, return_dtype=pl.Boolean))
        t = pl.coalesce(pick(src, "T", pl.Int64()), pick(src, "E", pl.Int64())) * TO_NS["ms"]
        ts_event = pl.coalesce(t, pl.col("local"))
        if kind == "ticker":
            sub = sub.select(
                ts_event=ts_event, ts_recv=pl.col("local"), seq=pick(src, "u", pl.Int64()), kind=pl.lit("quote"),
                bid_px=pick(src, "b", pl.String()).cast(pl.Float64, strict=False), bid_sz=pick(src, "B", pl.String()).cast(pl.Float64, strict=False),
                ask_px=pick(src, "a", pl.String()).cast(pl.Float64, strict=False), ask_sz=pick(src, "A", pl.String()).cast(pl.Float64, strict=False),
                src_line=pl.col("src_line"),
            )
        else:
            tid = pick(src, "t" if kind == "trade" else "a", pl.Int64())
            m = pick(src, "m", pl.Boolean())
            if kind == "trade":  # insurance-fund/ADL prints are not market trades (see parse)
                x = pick(src, "X", pl.String())
                sub = sub.filter(x.is_null() | (x == "MARKET"))
            sub = sub.select(
                ts_event=ts_event, ts_recv=pl.col("local"), seq=tid, kind=pl.lit("trade"),
                price=pick(src, "p", pl.String()).cast(pl.Float64, strict=False),
                size=pick(src, "q", pl.String()).cast(pl.Float64, strict=False),
                side=pl.when(m).then(-1).when(m.not_()).then(1), trade_id=tid.cast(pl.String),
                src_line=pl.col("src_line"),
            )
        frames.append(sub)
    cols = [*TICK_SCHEMA, "src_line"]
    schema = {**TICK_SCHEMA, "src_line": pl.Int64()}
    if not frames:
        return pl.DataFrame(schema=schema)
    out = pl.concat(frames, how="diagonal_relaxed").sort("src_line")
    return out.select([
        (pl.col(c).cast(pl.String).cast(KIND) if c == "kind" else pl.col(c).cast(schema[c], strict=False)) if c in out.columns
        else pl.lit(None, schema[c]).alias(c) for c in cols
    ])


def scan_ticks(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    """The capture's ``bookTicker`` quotes and ``trade``/``aggTrade`` trades as canonical tick
    rows (``TICK_SCHEMA`` + ``src_line``), in file order. Lines that do not decode, messages of
    another symbol and non-market trades are reported with reasons by :func:`parse` (the book
    staging), not here; a price or size that is not a number is null, which the tick row rules
    reject with their reason."""
    _check_nonempty(landing, plain)
    mul = _ts_multiplier(landing, plain)

    def batches() -> Iterator[pl.DataFrame]:
        cache: dict[str, bool] = {}
        for first, chunk in line_chunks(plain):
            yield _ticks_batch(lines_frame(chunk, first), mul, symbol, cache)

    return batched_lazy(batches, {**TICK_SCHEMA, "src_line": pl.Int64()}, NAME + "_ticks")


# ---- a REST snapshot saved as its own JSON file -----------------------------------------------

def snapshot_matches(landing: Path, plain: Path) -> bool:
    lines = head_lines(plain, max_lines=1)
    return bool(lines) and lines[0].lstrip().startswith("{") and '"lastUpdateId"' in lines[0] and '"bids"' in lines[0]


def snapshot_parse(landing: Path, plain: Path, symbol: str) -> pl.DataFrame:
    """A REST depth snapshot body as a snapshot (clear + one add per level). The body's ``T``
    (else ``E``) is its time (ms; ``ts_recv`` = ``ts_event``: the body has no receive time)."""
    try:
        body = json.loads(plain.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(landing, f"REST depth snapshot does not decode as JSON ({exc}); expected {SNAPSHOT_LAYOUT}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("lastUpdateId"), int):
        raise IngestError(landing, f"no integer lastUpdateId; expected {SNAPSHOT_LAYOUT}")
    t = body.get("T", body.get("E"))
    if not isinstance(t, int):
        raise IngestError(landing, "REST depth snapshot has no time (a spot body carries neither T nor E): "
                                   "save it as a capture line '<recv_ts_ns> <json>' so it can be placed in time")
    line = f"{t * TO_NS['ms']} " + json.dumps(body, separators=(",", ":"))
    lines = pl.DataFrame({"src_line": [1], "line": [line]}, schema={"src_line": pl.Int64, "line": pl.String})
    out = _book_batch(lines, 1, symbol, _Carry())
    return out.with_columns(ts_recv=pl.col("ts_event"))


CAPTURE = register(BookFormat(name=NAME, layout=LAYOUT, matches=matches, parse=parse, level=DEPTH_L2, ticks=scan_ticks))
REST_SNAPSHOT = register(BookFormat(name=SNAPSHOT_NAME, layout=SNAPSHOT_LAYOUT, matches=snapshot_matches,
                                    parse=snapshot_parse, level=DEPTH_L2))
