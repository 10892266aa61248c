"""Databento DBN files (``.dbn`` or zstd-compressed ``.dbn.zst``) of schema MBP-10 (L2, top ten
levels) and MBO (L3, market by order), read offline with ``databento_dbn`` (no API key, no
network). The file's metadata names its schema: any other (OHLCV, trades, MBP-1, ...) is refused
with an :class:`~quant_assets.ingest.errors.IngestError` naming it.

Common to both: prices are fixed-point 1e-9 (``UNDEF_PRICE`` = no level), times ns since epoch
(``ts_event`` the venue's, ``ts_recv`` Databento's capture); a **message** is a run of records
ending with one flagged ``F_LAST`` (a venue event can produce several records; the book is
consistent only after the last), ``seq`` = the ``sequence`` of that last record (Databento's
venue sequence: increasing with holes, continuity ``increasing``), ``seq_first`` = each record's
own ``sequence``; ``src_line`` = the 1-based record number. A record flagged
``F_MAYBE_BAD_BOOK`` keeps its rows with that reason (the venue's book may be wrong there), and a
record of another instrument than the landing folder's (by the metadata's symbol mappings) keeps
one row with a reason.

**MBP-10** records carry the whole top-10 book after each event. The first record becomes a
snapshot (``clear`` + one ``add`` per level, ``is_snapshot``); each later record becomes the
difference of its top 10 from the previous record's: ``add`` for a new price, ``update`` for a
new size, ``delete`` for a price gone from the top ten (deleted or pushed below level ten: the
table holds the top-10 view the file has, nothing deeper). A record that changes nothing in the
top ten (a trade, a change below level ten) gives no row.

**MBO** records are order events: ``R`` (clear the book) -> ``clear``; ``A`` -> ``add`` (the
order's size, ``is_snapshot`` when flagged ``F_SNAPSHOT``); ``M`` -> ``update`` (its new price
and size); ``C`` (cancel ``size`` of the order) -> ``update`` with the remaining size, ``delete``
when none remains. The remaining size needs the order's current size, so the parser carries a
table of live orders (not a book: prices are not aggregated, nothing is checked); a cancel or
modify of an order it never saw added keeps its row with a reason. ``T`` (trade), ``F`` (fill)
and ``N`` change nothing on an MBO book (Databento's own book example ignores them) and give no
row.

**Trades**: both formats' ``ticks`` give the ``T`` (trade) records of the folder's instrument as
canonical trade ticks (aggressor side, ``trade_id`` made from the packet: see
:func:`_ticks_batch`), so a DBN file feeds the ``ticks`` table's trades as a capture does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.book.formats import DBN_MAGIC, ZSTD_MAGIC, BookFormat, conform, head_bytes, register
from quant_assets.book.parse.common import batched_lazy
from quant_assets.book.schema import DEPTH_L2, DEPTH_L3, STAGED_SCHEMA
from quant_assets.ingest.errors import IngestError
from quant_assets.lake.identity import claims_match
from quant_assets.lake.schema import KIND, TICK_SCHEMA

MBP_NAME = "databento_dbn_mbp10"
MBP_LAYOUT = "Databento DBN (.dbn or .dbn.zst) of schema mbp-10"
MBO_NAME = "databento_dbn_mbo"
MBO_LAYOUT = "Databento DBN (.dbn or .dbn.zst) of schema mbo"

#: Compressed input bytes fed to the decoder per batch (records out: a few hundred thousand).
READ_BYTES = 8 << 20
_PX = 1e-9
_F_LAST, _F_SNAPSHOT, _F_BAD_BOOK = 0x80, 0x20, 0x04
_UNDEF_PRICE = 2**63 - 1


def _decoder(plain: Path):  # noqa: ANN202 - databento_dbn is imported lazily
    import databento_dbn as dbn

    zst = head_bytes(plain, 4) == ZSTD_MAGIC
    return dbn.DBNDecoder(compression=dbn.Compression.ZSTD if zst else dbn.Compression.NONE)


def _metadata(plain: Path):  # noqa: ANN202
    """The file's DBN metadata, or None when the file is not DBN (reads a bounded head)."""
    import databento_dbn as dbn

    if head_bytes(plain, 3) != DBN_MAGIC and head_bytes(plain, 4) != ZSTD_MAGIC:
        return None
    dec = _decoder(plain)
    with open(plain, "rb") as f:
        for _ in range(64):  # the metadata is at most a few MB (symbol mappings)
            block = f.read(1 << 16)
            if not block:
                return None
            dec.write(block)
            try:
                out = dec.decode()
            except dbn.DBNError:
                return None
            if out:
                return out[0] if isinstance(out[0], dbn.Metadata) else None
    return None


def _schema_name(meta) -> str | None:  # noqa: ANN001
    return None if meta.schema is None else str(meta.schema.value if hasattr(meta.schema, "value") else meta.schema)


def _records(landing: Path, plain: Path) -> Iterator[list]:
    """The file's records (metadata left out) in decoded batches."""
    import databento_dbn as dbn

    dec = _decoder(plain)
    first = True
    with open(plain, "rb") as f:
        while block := f.read(READ_BYTES):
            dec.write(block)
            try:
                recs = dec.decode()
            except dbn.DBNError as exc:
                raise IngestError(landing, f"DBN does not decode ({exc})") from exc
            if first and recs:
                recs, first = recs[1:], False
            if recs:
                yield recs


def _instruments(meta, symbol: str) -> tuple[set[int], dict[int, str]]:  # noqa: ANN001
    """Instrument ids of the landing folder's symbol and every id's raw symbol, from the
    metadata's mappings (empty when the file maps nothing: then every record is ours)."""
    ours: set[int] = set()
    names: dict[int, str] = {}
    for raw, intervals in (meta.mappings or {}).items():
        for iv in intervals:
            try:
                iid = int(iv["symbol"] if isinstance(iv, dict) else iv.symbol)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            names[iid] = raw
            if claims_match(raw, symbol):
                ours.add(iid)
    return ours, names


def _check_schema(landing: Path, plain: Path, want: str) -> object:
    meta = _metadata(plain)
    if meta is None:
        raise IngestError(landing, "not a readable DBN file (no DBN metadata)")
    got = _schema_name(meta)
    if got != want:
        raise IngestError(landing, f"DBN schema {got or 'mixed (none in the metadata)'}: the book reads only "
                                   "DBN files of schema mbp-10 (L2) or mbo (L3)")
    return meta


def _array(recs: list, cls: type) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The records of class ``cls`` as a structured array (their raw bytes read with the
    library's own dtype), their positions in ``recs``, and the positions of the others."""
    pos = [i for i, r in enumerate(recs) if isinstance(r, cls)]
    others = [i for i, r in enumerate(recs) if not isinstance(r, cls)]
    raw = b"".join(bytes(recs[i]) for i in pos)
    dtype = np.dtype(cls._dtypes)
    if pos and len(raw) != len(pos) * dtype.itemsize:
        # a file written with ts_out carries Databento's send time after each record
        with_out = np.dtype([*cls._dtypes, ("ts_out", "u8")])
        if len(raw) != len(pos) * with_out.itemsize:
            raise ValueError(f"{cls.__name__} records of {len(raw) // len(pos)} bytes, expected {dtype.itemsize} (or {with_out.itemsize} with ts_out)")
        dtype = with_out
    arr = np.frombuffer(raw, dtype=dtype) if raw else np.zeros(0, dtype=dtype)
    return arr, np.asarray(pos, dtype=np.int64), others


def _base_frame(arr: np.ndarray, rec_no: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({
        "src_line": rec_no.astype(np.int64), "ts_event": arr["ts_event"].astype(np.int64),
        "ts_recv": arr["ts_recv"].astype(np.int64), "seq_first": arr["sequence"].astype(np.int64),
        "rflags": arr["flags"].astype(np.uint8), "iid": arr["instrument_id"].astype(np.int64),
    })


def _message_seq(df: pl.DataFrame) -> pl.DataFrame:
    """``seq`` of each record: the ``sequence`` of the ``F_LAST`` record ending its message (a
    batch's trailing records without one take the last record's own: their message continues
    in the next batch, whose rows the builder sees after them)."""
    last = (pl.col("rflags") & _F_LAST) != 0
    return df.with_columns(seq=pl.when(last).then(pl.col("seq_first")).backward_fill().fill_null(pl.col("seq_first")))


def _reasons(df: pl.DataFrame, ours: set[int], names: dict[int, str], symbol: str) -> pl.DataFrame:
    other = pl.col("iid").is_in(list(ours)).not_() if ours else pl.lit(False)
    name = pl.col("iid").replace_strict(names, default=None, return_dtype=pl.String) if names else pl.lit(None, pl.String)
    # another instrument's sequence belongs to another book: not this one's
    df = df.with_columns(seq=pl.when(other).then(None).otherwise(pl.col("seq")),
                         seq_first=pl.when(other).then(None).otherwise(pl.col("seq_first")))
    return df.with_columns(reason=pl.when(other).then(
        pl.lit("record of instrument ") + pl.col("iid").cast(pl.String) + pl.lit(" (") + name.fill_null("?")
        + pl.lit(f"), not the landing folder's {symbol}"))
        .when((pl.col("rflags") & _F_BAD_BOOK) != 0).then(pl.lit("Databento flags the book as possibly wrong here (F_MAYBE_BAD_BOOK)")))


def _other_rows(others: list[int], rec_no0: int, recs: list) -> pl.DataFrame:
    """One row per record of another record type than the schema's, with a reason."""
    if not others:
        return pl.DataFrame(schema=STAGED_SCHEMA)
    return conform(pl.DataFrame({
        "src_line": [rec_no0 + i for i in others], "ts_event": [int(getattr(recs[i], "ts_event", 0) or 0) for i in others],
        "seq": [None] * len(others), "side": [None] * len(others), "price": [None] * len(others),
        "size": [None] * len(others), "action": [None] * len(others),
        "reason": [f"record type {type(recs[i]).__name__} in a file of this schema" for i in others],
    }, schema_overrides={"seq": pl.Int64, "side": pl.Int8, "price": pl.Float64, "size": pl.Float64, "action": pl.String})).collect()


# ---- MBP-10 ----------------------------------------------------------------------------------

def _mbp_batch(recs: list, rec_no0: int, ours: set[int], names: dict[int, str], symbol: str, carry: dict) -> pl.DataFrame:
    import databento_dbn as dbn

    arr, positions, others = _array(recs, dbn.MBP10Msg)
    out = [_other_rows(others, rec_no0, recs)]
    if len(arr):
        df = _reasons(_message_seq(_base_frame(arr, rec_no0 + positions)), ours, names, symbol)
        ok = df["reason"].is_null().to_numpy()
        rejected = df.filter(~pl.Series(ok)).select("src_line", "ts_event", "ts_recv", "seq", "seq_first", "reason")
        good_idx = np.nonzero(ok)[0]
        if len(good_idx):
            out.append(_mbp_diffs(arr[good_idx], df.filter(pl.Series(ok)), carry))
        if rejected.height:
            out.append(conform(rejected.with_columns(side=pl.lit(None, pl.Int8), price=pl.lit(None, pl.Float64),
                                                     size=pl.lit(None, pl.Float64), action=pl.lit(None, pl.String))).collect())
    frames = [f for f in out if f.height]
    return pl.concat(frames).sort("src_line", maintain_order=True) if frames else pl.DataFrame(schema=STAGED_SCHEMA)


#: The 20 level columns of an MBP-10 record, bids then asks, best first: (side, prefix, level).
_LEVELS = [(1, "bid", lv) for lv in range(10)] + [(-1, "ask", lv) for lv in range(10)]
_LV_SIDE = np.array([sd for sd, _, _ in _LEVELS], dtype=np.int8)
_LV_ORDER = np.array([lv for _, _, lv in _LEVELS], dtype=np.int8)
_ROWS_SCHEMA = {"k": pl.Int64, "side": pl.Int8, "px": pl.Int64, "size": pl.Float64, "action": pl.String,
                "snap": pl.Boolean, "clear": pl.Boolean, "order": pl.Int8}


def _level_frame(k: np.ndarray, px: np.ndarray, sz: np.ndarray, **const: object) -> pl.DataFrame:
    """Rows (k, side, px, size, order) of the levels ``px``/``sz`` (one row of 20 per ``k``),
    levels without a price left out."""
    keep = px != _UNDEF_PRICE
    kk = np.broadcast_to(k[:, None], px.shape)[keep]
    cols = np.broadcast_to(np.arange(20), px.shape)[keep]
    df = pl.DataFrame({"k": kk.astype(np.int64), "side": _LV_SIDE[cols], "px": px[keep], "size": sz[keep], "order": _LV_ORDER[cols]})
    return df.with_columns(**{name: pl.lit(v) for name, v in const.items()}) if const else df


def _mbp_diffs(arr: np.ndarray, meta: pl.DataFrame, carry: dict) -> pl.DataFrame:
    """Rows of the records' top-10 books, each against the previous record's (the carry holds
    the last book of the previous batch; none: the first record is a snapshot).

    Most records change sizes at the prices the previous record had: those are compared level
    by level (vectorised); the records whose prices moved (a level added, removed or shifted)
    are matched by price (a join)."""
    n = len(arr)
    px = np.stack([arr[f"{s}_px_{lv:02d}"].astype(np.int64) for _, s, lv in _LEVELS], axis=1)
    sz = np.stack([arr[f"{s}_sz_{lv:02d}"].astype(np.float64) for _, s, lv in _LEVELS], axis=1)
    last = carry.get("mbp_last")
    carry["mbp_last"] = (px[-1].copy(), sz[-1].copy())
    head_px, head_sz = (px[:1], sz[:1]) if last is None else (last[0][None, :], last[1][None, :])
    prev_px, prev_sz = np.vstack([head_px, px[:-1]]), np.vstack([head_sz, sz[:-1]])
    has_prev = np.arange(n) >= (1 if last is None else 0)
    same = (px == prev_px).all(axis=1) & has_prev
    kk, cc = np.nonzero(same[:, None] & (sz != prev_sz) & (px != _UNDEF_PRICE))
    parts = [pl.DataFrame({"k": kk.astype(np.int64), "side": _LV_SIDE[cc], "px": px[kk, cc], "size": sz[kk, cc],
                           "order": _LV_ORDER[cc]}).with_columns(action=pl.lit("update"), snap=pl.lit(False), clear=pl.lit(False))]
    moved = np.nonzero(~same & has_prev)[0]
    if len(moved):
        cur = _level_frame(moved, px[moved], sz[moved])
        prev = _level_frame(moved, prev_px[moved], prev_sz[moved])
        diff = cur.join(prev, on=["k", "side", "px"], how="full", coalesce=True, suffix="_prev")
        diff = diff.filter(pl.col("size").is_null() | pl.col("size_prev").is_null() | (pl.col("size") != pl.col("size_prev")))
        parts.append(diff.select(
            "k", "side", "px", size=pl.col("size").fill_null(0.0), order=pl.col("order").fill_null(pl.col("order_prev")),
            action=pl.when(pl.col("size").is_null()).then(pl.lit("delete")).when(pl.col("size_prev").is_null()).then(pl.lit("add"))
            .otherwise(pl.lit("update")), snap=pl.lit(False), clear=pl.lit(False),
        ))
    if last is None:  # the file's first record: a snapshot
        clear = pl.DataFrame({"k": [0], "side": [0], "px": [None], "size": [0.0], "order": [-1], "action": ["clear"], "snap": [True],
                              "clear": [True]}, schema=_ROWS_SCHEMA)
        first = _level_frame(np.zeros(1, np.int64), px[:1], sz[:1], action="add", snap=True, clear=False)
        parts = [clear, first, *parts]
    rows = pl.concat([p.select([pl.col(c).cast(t) for c, t in _ROWS_SCHEMA.items()]) for p in parts])
    # within a record: the clear, then deletes (a level leaving first), then bids and asks by level
    rows = rows.with_columns(rank=pl.when(pl.col("clear")).then(0).when(pl.col("action") == "delete").then(1).otherwise(2))
    rows = rows.sort("k", "rank", "side", "order", descending=[False, False, True, False])
    info = meta.with_row_index("k").with_columns(pl.col("k").cast(pl.Int64))
    rows = rows.join(info, on="k", how="left")
    return conform(rows.select(
        "src_line", "ts_event", "ts_recv", "seq", "side", "reason", "action", "size", price=pl.col("px") * _PX, is_snapshot="snap",
        seq_first=pl.when(pl.col("snap")).then(None).otherwise(pl.col("seq_first")),
    )).collect()


def mbp_matches(landing: Path, plain: Path) -> bool:
    meta = _metadata(plain)
    return meta is not None and _schema_name(meta) == "mbp-10"


def mbp_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    meta = _check_schema(landing, plain, "mbp-10")
    ours, names = _instruments(meta, symbol)

    def batches() -> Iterator[pl.DataFrame]:
        carry: dict = {}
        rec_no = 1
        for recs in _records(landing, plain):
            yield _mbp_batch(recs, rec_no, ours, names, symbol, carry)
            rec_no += len(recs)

    return batched_lazy(batches, STAGED_SCHEMA, MBP_NAME)


# ---- MBO -------------------------------------------------------------------------------------

def _mbo_batch(recs: list, rec_no0: int, ours: set[int], names: dict[int, str], symbol: str, live: dict[int, float]) -> pl.DataFrame:
    import databento_dbn as dbn

    arr, positions, others = _array(recs, dbn.MBOMsg)
    frames = [_other_rows(others, rec_no0, recs)]
    if len(arr):
        df = _reasons(_message_seq(_base_frame(arr, rec_no0 + positions)), ours, names, symbol)
        # The remaining size of a cancelled order needs the order's size: a table of live orders
        # carried across batches (a loop over records: the state is per order and sequential).
        act = arr["action"].tolist()
        oid = arr["order_id"].tolist()
        sz = arr["size"].astype(np.float64).tolist()
        flags = arr["flags"].tolist()
        ok = df["reason"].is_null().to_list()
        action, size, keep, why, snap = [], [], [], [], []
        for i in range(len(arr)):
            a, o = act[i], oid[i]
            r = None
            s = sz[i]
            act_out = None
            if not ok[i]:
                keep.append(True); action.append(None); size.append(None); why.append(None); snap.append(False)  # noqa: E702
                continue
            if a == b"R":
                live.clear()
                act_out, s = "clear", 0.0
            elif a == b"A":
                live[o] = s
                act_out = "add"
            elif a == b"M":
                if o in live:
                    live[o] = s
                    act_out = "update"
                else:
                    r = f"modify of order {o}, which was never added (no snapshot or add before it)"
            elif a == b"C":
                if o in live:
                    s = max(live[o] - s, 0.0)
                    if s > 0:
                        live[o] = s
                        act_out = "update"
                    else:
                        del live[o]
                        act_out = "delete"
                else:
                    r = f"cancel of order {o}, which was never added (no snapshot or add before it)"
            else:  # T, F, N: no change to an MBO book
                keep.append(False); action.append(None); size.append(None); why.append(None); snap.append(False)  # noqa: E702
                continue
            keep.append(True)
            action.append(act_out)
            size.append(s if r is None else None)
            why.append(r)
            snap.append(bool(flags[i] & _F_SNAPSHOT) and r is None)
        side = np.where(arr["side"] == b"B", 1, np.where(arr["side"] == b"A", -1, 0)).astype(np.int8)
        px = arr["price"].astype(np.int64)
        df = df.with_columns(
            action=pl.Series(action, dtype=pl.String), size=pl.Series(size, dtype=pl.Float64),
            reason=pl.coalesce(pl.col("reason"), pl.Series(why, dtype=pl.String)), is_snapshot=pl.Series(snap, dtype=pl.Boolean),
            side=pl.Series(side), order_id=pl.Series(arr["order_id"].astype(np.uint64)),
            price=pl.when(pl.Series(px) == _UNDEF_PRICE).then(None).otherwise(pl.Series(px) * _PX),
        ).filter(pl.Series(keep))
        clear = pl.col("action") == "clear"
        bad = pl.col("reason").is_not_null()
        df = df.with_columns(
            side=pl.when(clear).then(0).when(bad).then(None).otherwise(pl.col("side")).cast(pl.Int8),
            price=pl.when(clear | bad).then(None).otherwise(pl.col("price")),
            order_id=pl.when(clear).then(None).otherwise(pl.col("order_id")),
            # a clear that opens a snapshot belongs to it
            is_snapshot=pl.col("is_snapshot") | (clear & pl.col("is_snapshot").shift(-1).fill_null(False)),
        )
        frames.append(conform(df.drop("rflags", "iid")).collect())
    frames = [f for f in frames if f.height]
    return pl.concat(frames).sort("src_line", maintain_order=True) if frames else pl.DataFrame(schema=STAGED_SCHEMA)


def mbo_matches(landing: Path, plain: Path) -> bool:
    meta = _metadata(plain)
    return meta is not None and _schema_name(meta) == "mbo"


def mbo_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    meta = _check_schema(landing, plain, "mbo")
    ours, names = _instruments(meta, symbol)

    def batches() -> Iterator[pl.DataFrame]:
        live: dict[int, float] = {}
        rec_no = 1
        for recs in _records(landing, plain):
            yield _mbo_batch(recs, rec_no, ours, names, symbol, live)
            rec_no += len(recs)

    return batched_lazy(batches, STAGED_SCHEMA, MBO_NAME)


# ---- trades as ticks -------------------------------------------------------------------------

_TICKS_SCHEMA = {**TICK_SCHEMA, "src_line": pl.Int64()}


def _ticks_batch(recs: list, rec_no0: int, ours: set[int], cls: type, carry: dict) -> pl.DataFrame:
    """Trade ticks of the batch's ``T`` records of the landing folder's instrument: price, size,
    side = the aggressor's (``B`` buy +1, ``A`` sell -1, ``N`` null), ``seq`` = ``sequence``,
    ``trade_id`` = ``<ts_recv>:<sequence>:<n>`` (the n-th trade of that packet: DBN trades carry no
    id, and the tick table de-duplicates rows equal but for ``seq``)."""
    arr, positions, _ = _array(recs, cls)
    if len(arr) == 0:
        return pl.DataFrame(schema=_TICKS_SCHEMA)
    mine = arr["action"] == b"T"
    if ours:
        mine &= np.isin(arr["instrument_id"].astype(np.int64), np.fromiter(ours, dtype=np.int64))
    t, pos = arr[mine], positions[mine]
    df = pl.DataFrame({
        "src_line": (rec_no0 + pos).astype(np.int64), "ts_event": t["ts_event"].astype(np.int64),
        "ts_recv": t["ts_recv"].astype(np.int64), "seq": t["sequence"].astype(np.int64),
        "px": t["price"].astype(np.int64), "size": t["size"].astype(np.float64),
        "side": np.where(t["side"] == b"B", 1, np.where(t["side"] == b"A", -1, 0)).astype(np.int8),
    })
    if df.height == 0:
        return pl.DataFrame(schema=_TICKS_SCHEMA)
    n = pl.int_range(pl.len()).over("ts_recv", "seq")
    prev_recv, prev_seq, prev_n = carry.get("tick_key", (-1, -1, 0))  # a packet's trades continued from the batch before
    head = (pl.col("ts_recv") == prev_recv) & (pl.col("seq") == prev_seq)
    df = df.with_columns(n=n + pl.when(head).then(pl.lit(prev_n)).otherwise(0))
    lastrow = df.row(-1, named=True)
    carry["tick_key"] = (lastrow["ts_recv"], lastrow["seq"], lastrow["n"] + 1)
    return df.select(
        "ts_event", "ts_recv", "seq", kind=pl.lit("trade").cast(KIND),
        bid_px=pl.lit(None, pl.Float64), bid_sz=pl.lit(None, pl.Float64), ask_px=pl.lit(None, pl.Float64), ask_sz=pl.lit(None, pl.Float64),
        price=pl.when(pl.col("px") == _UNDEF_PRICE).then(None).otherwise(pl.col("px") * _PX), size="size",
        side=pl.when(pl.col("side") == 0).then(None).otherwise(pl.col("side")).cast(pl.Int8),
        trade_id=pl.format("{}:{}:{}", "ts_recv", "seq", "n"), src_line="src_line",
    )


def _scan_ticks(schema: str, record: str, name: str):  # noqa: ANN202
    def scan(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
        import databento_dbn as dbn

        meta = _check_schema(landing, plain, schema)
        ours, _ = _instruments(meta, symbol)
        cls = getattr(dbn, record)

        def batches() -> Iterator[pl.DataFrame]:
            carry: dict = {}
            rec_no = 1
            for recs in _records(landing, plain):
                yield _ticks_batch(recs, rec_no, ours, cls, carry)
                rec_no += len(recs)

        return batched_lazy(batches, _TICKS_SCHEMA, name + "_ticks")

    scan.__doc__ = f"The trades (``T`` records) of a DBN {schema} file as canonical tick rows (see :func:`_ticks_batch`)."
    return scan


mbp_ticks = _scan_ticks("mbp-10", "MBP10Msg", MBP_NAME)
mbo_ticks = _scan_ticks("mbo", "MBOMsg", MBO_NAME)


# ---- a DBN of any other schema ---------------------------------------------------------------

OTHER_NAME = "databento_dbn_other_schema"
OTHER_LAYOUT = "Databento DBN of a schema the book does not read (only mbp-10 and mbo)"


def other_matches(landing: Path, plain: Path) -> bool:
    """A DBN file of another schema (OHLCV, trades, MBP-1, ...): claimed so that its schema is
    reported (a failed record with the reason), not passed on to the tick formats."""
    meta = _metadata(plain)
    return meta is not None and _schema_name(meta) not in ("mbp-10", "mbo")


def other_parse(landing: Path, plain: Path, symbol: str) -> pl.LazyFrame:
    _check_schema(landing, plain, "mbp-10")  # raises, naming the schema
    raise IngestError(landing, "not an mbp-10 or mbo DBN file")  # pragma: no cover - _check_schema raised


MBO = register(BookFormat(name=MBO_NAME, layout=MBO_LAYOUT, matches=mbo_matches, parse=mbo_parse, level=DEPTH_L3,
                          ticks=mbo_ticks, continuity="increasing"))
MBP10 = register(BookFormat(name=MBP_NAME, layout=MBP_LAYOUT, matches=mbp_matches, parse=mbp_parse, level=DEPTH_L2,
                            ticks=mbp_ticks, continuity="increasing"))
OTHER = register(BookFormat(name=OTHER_NAME, layout=OTHER_LAYOUT, matches=other_matches, parse=other_parse, level=DEPTH_L2))
