"""Small landing files of every supported format, built in code (deterministic)."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import polars as pl

from quant_assets.ingest.synthetic import SyntheticSpec, generate

# 2024-01-31T23:59:59Z and 2024-02-01T00:00:01Z in ms: a file spanning two months.
JAN_END_MS = 1_706_745_599_000
FEB_START_MS = 1_706_745_601_000
JAN_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def binance_trades_csv(n: int = 5, t0_ms: int = JAN_MS, step_ms: int = 1000, header: bool = False, start_id: int = 1) -> str:
    lines = ["id,price,qty,quote_qty,time,is_buyer_maker"] if header else []
    for i in range(n):
        px, qty = 42000.0 + i * 0.5, 0.001 * (i + 1)
        tail = "" if header else ",True"
        lines.append(f"{start_id + i},{px:.2f},{qty:.5f},{px * qty:.8f},{t0_ms + i * step_ms},{'true' if i % 2 else 'false'}{tail}")
    return "\n".join(lines) + "\n"


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text)
    return buf.getvalue()


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def binance_aggtrades_csv(n: int = 4, t0_ms: int = JAN_MS) -> str:
    lines = []
    for i in range(n):
        lines.append(f"{100 + i},2300.{i:02d},0.5,{10 + 2 * i},{11 + 2 * i},{t0_ms + i * 500},{'true' if i % 2 else 'false'},true")
    return "\n".join(lines) + "\n"


def binance_bookticker_csv(n: int = 4, t0_ms: int = JAN_MS, header: bool = True) -> str:
    lines = ["update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"] if header else []
    for i in range(n):
        lines.append(f"{9000 + i},42000.{i}0,1.5,42000.{i}1,2.0,{t0_ms + i * 100},{t0_ms + i * 100 + 3}")
    return "\n".join(lines) + "\n"


def tardis_quotes_csv(symbol: str = "BTCUSDT", n: int = 4, t0_us: int = JAN_MS * 1000) -> str:
    lines = ["exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"]
    for i in range(n):
        lines.append(f"binance,{symbol},{t0_us + i * 1000},{t0_us + i * 1000 + 250},0.8,42001.{i},42000.{i},1.2")
    return "\n".join(lines) + "\n"


def tardis_trades_csv(symbol: str = "BTCUSDT", n: int = 4, t0_us: int = JAN_MS * 1000) -> str:
    lines = ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount"]
    for i in range(n):
        lines.append(f"binance,{symbol},{t0_us + i * 1000},{t0_us + i * 1000 + 250},t{i},{'buy' if i % 2 else 'sell'},42000.{i},0.01")
    return "\n".join(lines) + "\n"


def fx_dukascopy_csv(n: int = 4) -> str:
    lines = ["Gmt time,Ask,Bid,AskVolume,BidVolume"]
    for i in range(n):
        lines.append(f"02.01.2024 08:00:0{i}.250,1.0951{i},1.0950{i},1.5,2.25")
    return "\n".join(lines) + "\n"


def fx_truefx_csv(n: int = 4) -> str:
    return "".join(f"EUR/USD,20240102 08:00:0{i}.125,1.0950{i},1.0951{i}\n" for i in range(n))


def synthetic_parquet(path: Path, symbol: str, month: str, events: int = 5_000, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    generate(SyntheticSpec(symbol, month, seed=seed, events=events)).write_parquet(path)
    return path


def read_ticks(lake_root: Path, symbol: str, month: str) -> pl.DataFrame:
    return pl.read_parquet(lake_root / "ticks" / f"symbol={symbol}" / f"month={month}" / "part-0.parquet")


# ---- funding files (perpetuals) ---------------------------------------------------------------
MAR_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
H8_MS = 8 * 3_600_000


def binance_funding_csv(rates: list[float], t0_ms: int = MAR_MS, interval_h: int = 8, marks: list[float] | None = None) -> str:
    """A Binance ``fundingRate`` CSV: one row per rate, ``interval_h`` apart from ``t0_ms``."""
    head = "calc_time,funding_interval_hours,last_funding_rate" + (",mark_price" if marks is not None else "")
    lines = [head]
    for i, r in enumerate(rates):
        tail = f",{marks[i]}" if marks is not None else ""
        lines.append(f"{t0_ms + i * interval_h * 3_600_000},{interval_h},{r:.8f}{tail}")
    return "\n".join(lines) + "\n"


TARDIS_DT_HEADER = ("exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
                    "predicted_funding_rate,open_interest,last_price,index_price,mark_price")


def tardis_derivative_ticker_csv(rows: list[tuple[int, int | None, float | None, float | None]], symbol: str = "BTCUSDT") -> str:
    """Tardis ``derivative_ticker`` rows from (timestamp µs, funding_timestamp µs, funding_rate, mark_price)."""
    def f(v: object) -> str:
        return "" if v is None else str(v)
    lines = [TARDIS_DT_HEADER]
    for ts, fts, rate, mark in rows:
        lines.append(f"binance-futures,{symbol},{ts},{ts + 150},{f(fts)},{f(rate)},,1000.5,{f(mark)},{f(mark)},{f(mark)}")
    return "\n".join(lines) + "\n"


# ---- order-book depth files (quant_assets.book.parse) -----------------------------------------
JAN_NS = JAN_MS * 1_000_000


def binance_capture(n: int = 12, symbol: str = "BTCUSDT", futures: bool = True, t0_ns: int = JAN_NS,
                    levels: int = 3, seed: int = 1, snapshot: bool = True) -> str:
    """A hftbacktest-collector capture (``<local_ns> <json>`` lines of a combined stream): a REST
    snapshot line (``lastUpdateId`` 1000 spot, 1001 futures), then ``n`` messages cycling depth diff, bookTicker,
    depth diff, trade. Diffs chain (``U`` = previous ``u`` + 1; futures add ``pu``); each carries
    ``levels`` bid and ``levels`` ask pairs (every 5th pair a ``0`` removal). Deterministic in
    ``seed``; also the bench's generator (1M messages in a few seconds)."""
    import json
    import random

    rng = random.Random(seed)
    s = symbol.lower()
    out: list[str] = []
    t = t0_ns
    u = 1000
    # Binance's sync rule: the first diff after a snapshot of lastUpdateId L has U <= L + 1 <= u
    # (spot) or U <= L <= u (futures, whose ids are not contiguous): L = 1000 or 1001 here.
    snap_id = u + 1 if futures else u
    if snapshot:
        body = {"lastUpdateId": snap_id, "bids": [[f"{42000 - i * 0.5:.1f}", f"{1 + i:.3f}"] for i in range(levels)],
                "asks": [[f"{42000.5 + i * 0.5:.1f}", f"{1 + i:.3f}"] for i in range(levels)]}
        if futures:
            body = {"lastUpdateId": snap_id, "E": t // 1_000_000 - 5, "T": t // 1_000_000 - 6, "bids": body["bids"], "asks": body["asks"]}
        out.append(f"{t} " + json.dumps(body, separators=(",", ":")))
    pu, trade_id = u, 500
    for i in range(n):
        t += 1_000_000 + rng.randrange(1_000_000)
        e_ms = t // 1_000_000 - 2
        kind = i % 4
        if kind in (0, 2):
            first, last = u + 1, u + 1 + rng.randrange(3)
            pairs = lambda base, sign: [  # noqa: E731
                [f"{base + sign * (rng.randrange(20) * 0.5):.1f}", "0" if (j % 5 == 4) else f"{rng.randrange(1, 5000) / 1000:.3f}"]
                for j in range(levels)]
            data = {"e": "depthUpdate", "E": e_ms, "T": e_ms - 1, "s": symbol, "U": first, "u": last, "pu": pu,
                    "b": pairs(41999.5, -1), "a": pairs(42000.5, 1)}
            if not futures:
                data = {"e": "depthUpdate", "E": e_ms, "s": symbol, "U": first, "u": last, "b": data["b"], "a": data["a"]}
            msg = {"stream": f"{s}@depth@{'0ms' if futures else '100ms'}", "data": data}
            pu, u = last, last
        elif kind == 1:
            data = {"e": "bookTicker", "u": u, "s": symbol, "b": "41999.5", "B": "1.250", "a": "42000.5", "A": "0.750",
                    "T": e_ms - 1, "E": e_ms}
            if not futures:
                data = {"u": u, "s": symbol, "b": "41999.5", "B": "1.250", "a": "42000.5", "A": "0.750"}
            msg = {"stream": f"{s}@bookTicker", "data": data}
        else:
            trade_id += 1
            data = {"e": "trade", "E": e_ms, "T": e_ms - 1, "s": symbol, "t": trade_id, "p": "42000.5",
                    "q": f"{rng.randrange(1, 100) / 1000:.3f}", "X": "MARKET", "m": bool(trade_id % 2)}
            if not futures:
                data = {"e": "trade", "E": e_ms, "s": symbol, "t": trade_id, "p": "42000.5", "q": data["q"],
                        "T": e_ms - 1, "m": bool(trade_id % 2), "M": True}
            msg = {"stream": f"{s}@trade", "data": data}
        out.append(f"{t} " + json.dumps(msg, separators=(",", ":")))
    return "\n".join(out) + "\n"


def binance_depth_csv(futures: bool = True, symbol: str = "BTCUSDT", t0_ms: int = JAN_MS) -> str:
    """A Binance T_DEPTH-style CSV: a 2+2-level snapshot (``snap`` rows, last_update_id 1000 spot,
    1001 futures: inside the first update's [first, last] as Binance's sync rule wants),
    then two ``set`` messages (1001-1003: bid 41999.5 -> 0.7, ask 42001.0 removed; 1004-1004:
    bid 42000.0 -> 2.5), futures with ``pu``."""
    head = "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty" + (",pu" if futures else "")
    L = 1001 if futures else 1000
    rows = [
        (t0_ms, 990, L, "b", "snap", "42000.0", "1.0", -1), (t0_ms, 990, L, "b", "snap", "41999.5", "2.0", -1),
        (t0_ms, 990, L, "a", "snap", "42000.5", "1.5", -1), (t0_ms, 990, L, "a", "snap", "42001.0", "3.0", -1),
        (t0_ms + 10, 1001, 1003, "b", "set", "41999.5", "0.7", 1000), (t0_ms + 10, 1001, 1003, "a", "set", "42001.0", "0", 1000),
        (t0_ms + 20, 1004, 1004, "b", "set", "42000.0", "2.5", 1003),
    ]
    out = [head]
    for ts, first, last, side, kind, px, qty, pu in rows:
        out.append(f"{symbol},{ts},{first},{last},{side},{kind},{px},{qty}" + (f",{pu}" if futures else ""))
    return "\n".join(out) + "\n"


JAN_US = JAN_MS * 1000


def tardis_incremental_l2_csv(symbol: str = "BTCUSDT", t0_us: int = JAN_US) -> str:
    """Tardis incremental_book_L2: a 2+1-level start-of-day snapshot (lines 2-4), a message of two
    rows at t0+100 µs (lines 5-6: bid 41999.5 -> 0.5, ask 42000.5 removed), one row at t0+200
    (line 7: ask 42001.0 -> 1.0), then a new snapshot run of one level (line 8)."""
    rows = [(0, 5, "true", "bid", "42000.0", "1.0"), (0, 5, "true", "bid", "41999.5", "2.0"), (0, 5, "true", "ask", "42000.5", "1.5"),
            (100, 130, "false", "bid", "41999.5", "0.5"), (100, 130, "false", "ask", "42000.5", "0"),
            (200, 230, "false", "ask", "42001.0", "1.0"), (300, 330, "true", "bid", "41990.0", "4.0")]
    out = ["exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"]
    out += [f"binance-futures,{symbol},{t0_us + ts},{t0_us + loc},{snap},{side},{px},{amt}" for ts, loc, snap, side, px, amt in rows]
    return "\n".join(out) + "\n"


def tardis_book_snapshot_csv(depth: int = 5, symbol: str = "BTCUSDT", t0_us: int = JAN_US) -> str:
    """Tardis book_snapshot_<depth>: two rows; the first has every level (bid 42000 - 0.5 i, ask
    42000.5 + 0.5 i, amounts i + 1), the second only its best bid and ask (the rest empty)."""
    head = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for i in range(depth):
        head += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    out = [",".join(head)]
    for r in range(2):
        cells = ["binance-futures", symbol, str(t0_us + r * 1000), str(t0_us + r * 1000 + 50)]
        for i in range(depth):
            if r == 1 and i > 0:
                cells += ["", "", "", ""]
            else:
                cells += [f"{42000.5 + 0.5 * i}", f"{i + 1}", f"{42000.0 - 0.5 * i}", f"{i + 1}"]
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def dbn_file(schema: str, records: list, symbol: str = "ESH4", instrument_id: int = 42, zstd: bool = False,
             ts_out: bool = False) -> bytes:
    """A Databento DBN file encoded by ``databento_dbn`` itself: metadata of ``schema``
    (``"mbp-10"``, ``"mbo"``, ``"ohlcv-1m"``) mapping ``symbol`` to ``instrument_id``, then
    ``records`` (the library's record objects, built with ``ts_out=`` when ``ts_out``: then each
    carries Databento's send time); zstd-compressed with its Transcoder when ``zstd``."""
    import datetime as dt
    import io
    from types import SimpleNamespace as NS

    import databento_dbn as dbn

    day = dt.date(2024, 1, 1)
    meta = dbn.Metadata(
        dataset="GLBX.MDP3", start=JAN_NS, end=JAN_NS + 86_400 * 10**9, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.from_str(schema), symbols=[symbol],
        mappings=[NS(raw_symbol=symbol, intervals=[NS(start_date=day, end_date=day + dt.timedelta(days=1), symbol=str(instrument_id))])],
        ts_out=ts_out,
    )
    raw = meta.encode() + b"".join(bytes(r) for r in records)
    if not zstd:
        return raw
    buf = io.BytesIO()
    enc = dbn.Transcoder(buf, dbn.Encoding.DBN, dbn.Compression.ZSTD)
    enc.write(raw)
    enc.finish()
    return buf.getvalue()


DBN_PX = 1_000_000_000  # DBN prices are fixed-point 1e-9


def dbn_mbp10_records(instrument_id: int = 42) -> list:
    """MBP-10 records (ts JAN_NS + 0, 1, 1, 2, 3, 4 µs): 1 add bid 100.00x5 -> book b 100.00x5 / a
    100.25x7 (F_LAST, seq 10); 2 add ask 100.50x2 (no F_LAST, seq 11); 3 cancel 2 of the bid -> b
    100.00x3 (F_LAST, seq 11); 4 a trade, book unchanged (seq 12); 5 cancel the ask 100.50 (seq 13);
    6 another instrument (43)."""
    import databento_dbn as dbn

    def book(bids: list[tuple[float, int]], asks: list[tuple[float, int]]) -> list:
        out = []
        for i in range(10):
            b = bids[i] if i < len(bids) else None
            a = asks[i] if i < len(asks) else None
            out.append(dbn.BidAskPair(bid_px=int(b[0] * DBN_PX) if b else dbn.UNDEF_PRICE, ask_px=int(a[0] * DBN_PX) if a else dbn.UNDEF_PRICE,
                                      bid_sz=b[1] if b else 0, ask_sz=a[1] if a else 0, bid_ct=1 if b else 0, ask_ct=1 if a else 0))
        return out

    spec = [  # (action, side, price, size, flags, seq, bids, asks, instrument)
        (dbn.Action.ADD, dbn.Side.BID, 100.0, 5, 0x80, 10, [(100.0, 5)], [(100.25, 7)], instrument_id),
        (dbn.Action.ADD, dbn.Side.ASK, 100.5, 2, 0x00, 11, [(100.0, 5)], [(100.25, 7), (100.5, 2)], instrument_id),
        (dbn.Action.CANCEL, dbn.Side.BID, 100.0, 2, 0x80, 11, [(100.0, 3)], [(100.25, 7), (100.5, 2)], instrument_id),
        (dbn.Action.TRADE, dbn.Side.ASK, 100.25, 1, 0x80, 12, [(100.0, 3)], [(100.25, 7), (100.5, 2)], instrument_id),
        (dbn.Action.CANCEL, dbn.Side.ASK, 100.5, 2, 0x80, 13, [(100.0, 3)], [(100.25, 7)], instrument_id),
        (dbn.Action.ADD, dbn.Side.BID, 50.0, 1, 0x80, 14, [(50.0, 1)], [], 43),
    ]
    tick = [0, 1, 1, 2, 3, 4]  # records 2 and 3 are one event: one time
    return [dbn.MBP10Msg(1, iid, JAN_NS + tick[i] * 1000, int(px * DBN_PX), sz, act, side, 0, JAN_NS + tick[i] * 1000 + 7, flags=fl,
                         sequence=seq, levels=book(b, a))
            for i, (act, side, px, sz, fl, seq, b, a, iid) in enumerate(spec)]


def dbn_mbo_records(instrument_id: int = 42, ts_out: bool = False) -> list:
    """MBO records (ts JAN_NS + i µs): a snapshot (1 R clear, 2 add bid #1 100.00x5, 3 add ask
    #2 100.25x7, F_SNAPSHOT, seq 0), 4 cancel 2 of #1 (seq 20), 5 a fill of #2 (no F_LAST), 6 cancel
    7 of #2 (seq 21), 7 modify #1 to 99.75x4 (seq 22), 8 cancel of unknown #99 (seq 23)."""
    import databento_dbn as dbn

    und = dbn.UNDEF_PRICE
    spec = [  # (action, side, order, price, size, flags, seq)
        (dbn.Action.CLEAR, dbn.Side.NONE, 0, None, 0, 0x20, 0), (dbn.Action.ADD, dbn.Side.BID, 1, 100.0, 5, 0x20, 0),
        (dbn.Action.ADD, dbn.Side.ASK, 2, 100.25, 7, 0xA0, 0), (dbn.Action.CANCEL, dbn.Side.BID, 1, 100.0, 2, 0x80, 20),
        (dbn.Action.FILL, dbn.Side.ASK, 2, 100.25, 7, 0x00, 21), (dbn.Action.CANCEL, dbn.Side.ASK, 2, 100.25, 7, 0x80, 21),
        (dbn.Action.MODIFY, dbn.Side.BID, 1, 99.75, 4, 0x80, 22), (dbn.Action.CANCEL, dbn.Side.BID, 99, 100.0, 1, 0x80, 23),
    ]
    out = {"ts_out": JAN_NS + 10**9} if ts_out else {}
    return [dbn.MBOMsg(1, instrument_id, JAN_NS + i * 1000, oid, und if px is None else int(px * DBN_PX), sz, act, side,
                       JAN_NS + i * 1000 + 7, flags=fl, sequence=seq, **out)
            for i, (act, side, oid, px, sz, fl, seq) in enumerate(spec)]


def dbn_ohlcv_records(instrument_id: int = 42) -> list:
    import databento_dbn as dbn

    return [dbn.OHLCVMsg(dbn.RType.OHLCV_1M, 1, instrument_id, JAN_NS, 100 * DBN_PX, 101 * DBN_PX, 99 * DBN_PX, 100 * DBN_PX, 10)]
