"""Book (depth) source formats (quant_assets.book.parse): tiny files made in code, each parsed into
staged rows (STAGED_SCHEMA) with the values the file implies, and the bad inputs with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from quant_assets.book import formats
from quant_assets.book.parse import binance_csv, binance_ws, databento, tardis
from quant_assets.book.schema import DEPTH_L2, DEPTH_L3, F_LAST, STAGED_SCHEMA
from quant_assets.ingest.detect import plain_file
from quant_assets.ingest.errors import IngestError
from quant_assets_tests.builders import (
    JAN_NS, binance_capture, binance_depth_csv, dbn_file, dbn_mbo_records, dbn_mbp10_records, dbn_ohlcv_records, gzipped, tardis_book_snapshot_csv, tardis_incremental_l2_csv, write, zipped,
)

PERP = "BTCUSDT-PERP"


def staged(fmt: formats.BookFormat, path: Path, symbol: str, scratch: Path) -> tuple[formats.BookFormat, pl.DataFrame]:
    """The format sniffed for ``path`` (plain, .gz or .zip) and its staged rows."""
    with plain_file(path, scratch) as plain:
        found = formats.sniff(path, plain)
        assert found is not None and found.name == fmt.name, (found, fmt.name)
        df = found.parse(path, plain, symbol).lazy().collect()
    assert df.schema == pl.Schema(STAGED_SCHEMA)
    return found, df


def cols(df: pl.DataFrame, *names: str) -> list[tuple]:
    return df.select(names).rows()


# ---- Binance websocket capture ---------------------------------------------------------------

@pytest.mark.parametrize("wrap", ["plain", "gz", "zip"])
def test_binance_futures_capture(tmp_path: Path, wrap: str) -> None:
    text = binance_capture(n=4, levels=2, futures=True)
    lines = text.splitlines()
    name = "btcusdt_20240101"
    path = {"plain": lambda: write(tmp_path / f"{name}.txt", text),
            "gz": lambda: write(tmp_path / f"{name}.gz", gzipped(text)),
            "zip": lambda: write(tmp_path / f"{name}.zip", zipped(f"{name}.txt", text))}[wrap]()
    fmt, df = staged(binance_ws.CAPTURE, path, PERP, tmp_path)
    assert fmt.ticks is not None and df["reason"].null_count() == df.height
    snap = json.loads(lines[0].split(" ", 1)[1])
    d1 = json.loads(lines[1].split(" ", 1)[1])["data"]
    d2 = json.loads(lines[3].split(" ", 1)[1])["data"]
    # the REST snapshot: clear + 2 bids + 2 asks at lastUpdateId, stamped with T (ms -> ns)
    head = df.filter(pl.col("src_line") == 1)
    assert cols(head, "action", "side", "is_snapshot", "seq") == [
        ("clear", 0, True, 1001), ("add", 1, True, 1001), ("add", 1, True, 1001), ("add", -1, True, 1001), ("add", -1, True, 1001)]
    assert head["price"].to_list()[1:] == [float(p) for p, _ in snap["bids"] + snap["asks"]]
    assert head["ts_event"].unique().to_list() == [snap["T"] * 1_000_000]
    assert head["ts_recv"].unique().to_list() == [JAN_NS]
    assert head["flags"].to_list() == [0, 0, 0, 0, F_LAST]
    # the two depth diffs: one row per pair, bids then asks; seq = u, seq_first = U, seq_prev = pu
    for line_no, d in ((2, d1), (4, d2)):
        rows = df.filter(pl.col("src_line") == line_no)
        pairs = d["b"] + d["a"]
        assert rows["price"].to_list() == [float(p) for p, _ in pairs]
        assert rows["size"].to_list() == [float(q) for _, q in pairs]
        assert rows["side"].to_list() == [1] * len(d["b"]) + [-1] * len(d["a"])
        assert rows["action"].to_list() == ["delete" if float(q) == 0 else "update" for _, q in pairs]
        assert set(cols(rows, "seq", "seq_first", "seq_prev", "ts_event", "is_snapshot")) == {
            (d["u"], d["U"], d["pu"], d["T"] * 1_000_000, False)}
        assert rows["ts_recv"].unique().to_list() == [int(lines[line_no - 1].split(" ")[0])]
        assert rows["flags"].to_list()[-1] == F_LAST and set(rows["flags"].to_list()[:-1]) == {0}
    assert sorted(df["src_line"].unique().to_list()) == [1, 2, 4]  # bookTicker/trade lines are ticks
    # bookTicker and trade lines as canonical ticks
    with plain_file(path, tmp_path) as plain:
        ticks = fmt.ticks(path, plain, PERP).collect()
    q = json.loads(lines[2].split(" ", 1)[1])["data"]
    t = json.loads(lines[4].split(" ", 1)[1])["data"]
    assert ticks["src_line"].to_list() == [3, 5]
    r0, r1 = ticks.row(0, named=True), ticks.row(1, named=True)
    assert (r0["kind"], r0["seq"], r0["bid_px"], r0["bid_sz"], r0["ask_px"], r0["ask_sz"], r0["ts_event"]) == (
        "quote", q["u"], float(q["b"]), float(q["B"]), float(q["a"]), float(q["A"]), q["T"] * 1_000_000)
    assert (r1["kind"], r1["price"], r1["size"], r1["side"], r1["trade_id"]) == (
        "trade", float(t["p"]), float(t["q"]), -1 if t["m"] else 1, str(t["t"]))


def test_binance_capture_fast_path_equals_the_careful_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean capture is decoded and exploded by single streaming queries (the speed target);
    the careful batch path, taken when a line is bad, gives the very same rows."""
    path = write(tmp_path / "btcusdt_20240101.txt", binance_capture(n=400, levels=3, futures=True, seed=5))
    took: list[bool] = []  # per call of a fast path: did it give the rows (or hand over)?
    for name in ("_decoded_at_once", "_diff_rows_at_once"):
        fn = getattr(binance_ws, name)
        monkeypatch.setattr(binance_ws, name, lambda *a, _fn=fn: (out := _fn(*a), took.append(out is not None))[0])
    fast = binance_ws.parse(path, path, PERP).collect()
    assert took and all(took) and fast.height > 400
    monkeypatch.setattr(binance_ws, "_decoded_at_once", lambda lines, mul: None)
    monkeypatch.setattr(binance_ws, "_diff_rows_at_once", lambda df: None)
    slow = binance_ws.parse(path, path, PERP).collect()
    assert fast.equals(slow)


def test_binance_spot_capture_continuity(tmp_path: Path) -> None:
    """Spot diffs carry U/u but no pu (the builder checks U = previous u + 1) and only E."""
    text = binance_capture(n=3, levels=1, futures=False)
    path = write(tmp_path / "btcusdt_20240101.txt", text)
    _, df = staged(binance_ws.CAPTURE, path, "BTCUSDT", tmp_path)
    d = json.loads(text.splitlines()[1].split(" ", 1)[1])["data"]
    rows = df.filter(pl.col("src_line") == 2)
    assert set(cols(rows, "seq", "seq_first", "seq_prev", "ts_event")) == {(d["u"], d["U"], None, d["E"] * 1_000_000)}
    snap = df.filter(pl.col("src_line") == 1)
    assert snap["ts_event"].unique().to_list() == [JAN_NS]  # a spot REST body has no time: the receive time


def test_binance_capture_bad_lines(tmp_path: Path) -> None:
    """A truncated line, another symbol's depth, a quantity that is not a number, an unknown message:
    each keeps one row with its src_line and a reason; the good lines around them still parse."""
    lines = binance_capture(n=4, levels=2, futures=True).splitlines()
    eth = lines[1].replace("btcusdt", "ethusdt").replace('"s":"BTCUSDT"', '"s":"ETHUSDT"')
    badq = lines[3].replace('"b":[["', '"b":[["x', 1)
    err = f'{JAN_NS + 6} {{"code":-1003,"msg":"Too many requests"}}'
    text = "\n".join([lines[0], lines[1][:-25], eth, lines[1], badq, f"{JAN_NS + 5} {{\"result\":null,\"id\":1}}", err, ""]) + "\n"
    path = write(tmp_path / "btcusdt_20240101.txt", text)
    _, df = staged(binance_ws.CAPTURE, path, PERP, tmp_path)
    why = {r["src_line"]: r["reason"] for r in df.filter(pl.col("reason").is_not_null()).iter_rows(named=True)}
    assert set(why) == {2, 3, 5, 6, 7}
    assert why[7] == 'REST error response: {"code":-1003,"msg":"Too many requests"}'
    assert why[2].startswith("JSON does not decode (truncated or malformed line)")
    assert why[3] == f"message of symbol ETHUSDT, not the landing folder's {PERP}"
    assert why[5].startswith("not a number: price 'x") and "b[0]" in why[5]
    assert why[6].startswith("not a Binance depth")
    assert df.filter(pl.col("src_line").is_in([2, 3, 5, 6]))["seq"].null_count() >= 2  # no ids from rejected lines
    assert df.filter(pl.col("src_line") == 4)["reason"].null_count() == 4  # the good diff: 4 rows
    empty = write(tmp_path / "empty.txt", "\n")
    with pytest.raises(IngestError, match="empty file"):
        binance_ws.parse(empty, empty, PERP)


def test_binance_rest_snapshot_file(tmp_path: Path) -> None:
    body = {"lastUpdateId": 77, "E": 1704067200100, "T": 1704067200099, "bids": [["42000.0", "1.5"]], "asks": [["42000.5", "2.5"]]}
    path = write(tmp_path / "BTCUSDT_depth_20240101.json", json.dumps(body))
    fmt, df = staged(binance_ws.REST_SNAPSHOT, path, PERP, tmp_path)
    assert cols(df, "action", "side", "price", "size", "seq", "is_snapshot", "ts_event", "ts_recv") == [
        ("clear", 0, None, 0.0, 77, True, 1704067200099_000_000, 1704067200099_000_000),
        ("add", 1, 42000.0, 1.5, 77, True, 1704067200099_000_000, 1704067200099_000_000),
        ("add", -1, 42000.5, 2.5, 77, True, 1704067200099_000_000, 1704067200099_000_000)]
    spot = write(tmp_path / "spot.json", json.dumps({k: body[k] for k in ("lastUpdateId", "bids", "asks")}))
    with pytest.raises(IngestError, match="no time"):
        fmt.parse(spot, spot, "BTCUSDT")


# ---- Binance depth CSVs ----------------------------------------------------------------------

@pytest.mark.parametrize("futures", [True, False])
def test_binance_depth_csv(tmp_path: Path, futures: bool) -> None:
    path = write(tmp_path / "BTCUSDT_T_DEPTH_2024-01-01.csv.gz", gzipped(binance_depth_csv(futures=futures)))
    _, df = staged(binance_csv.FORMAT, path, PERP if futures else "BTCUSDT", tmp_path)
    ms = 1_000_000
    pu = (lambda v: v) if futures else (lambda v: None)
    L = 1001 if futures else 1000  # the snapshot's last_update_id
    assert cols(df, "src_line", "action", "side", "price", "size", "seq", "seq_first", "seq_prev", "is_snapshot", "flags", "ts_event") == [
        (2, "clear", 0, None, 0.0, L, None, None, True, 0, JAN_NS),
        (2, "add", 1, 42000.0, 1.0, L, None, None, True, 0, JAN_NS),
        (3, "add", 1, 41999.5, 2.0, L, None, None, True, 0, JAN_NS),
        (4, "add", -1, 42000.5, 1.5, L, None, None, True, 0, JAN_NS),
        (5, "add", -1, 42001.0, 3.0, L, None, None, True, F_LAST, JAN_NS),
        (6, "update", 1, 41999.5, 0.7, 1003, 1001, pu(1000), False, 0, JAN_NS + 10 * ms),
        (7, "delete", -1, 42001.0, 0.0, 1003, 1001, pu(1000), False, F_LAST, JAN_NS + 10 * ms),
        (8, "update", 1, 42000.0, 2.5, 1004, 1004, pu(1003), False, F_LAST, JAN_NS + 20 * ms),
    ]
    assert df["reason"].null_count() == df.height and df["ts_recv"].to_list() == df["ts_event"].to_list()


def test_binance_depth_csv_bad_rows(tmp_path: Path) -> None:
    lines = binance_depth_csv().splitlines()
    lines[6] = lines[6].replace(",a,set,", ",x,set,")
    lines[7] = lines[7].replace("BTCUSDT", "ETHUSDT")
    lines.append(lines[7].replace("ETHUSDT", "BTCUSDT").replace(",2.5,", ",abc,"))
    path = write(tmp_path / "depth_update.csv", "\n".join(lines) + "\n")
    _, df = staged(binance_csv.FORMAT, path, PERP, tmp_path)
    why = {r["src_line"]: r["reason"] for r in df.filter(pl.col("reason").is_not_null()).iter_rows(named=True)}
    assert why == {7: "side 'x' is not b (bid) or a (ask)", 8: f"row of symbol ETHUSDT, not the landing folder's {PERP}",
                   9: "qty 'abc' is not a number"}
    assert df.filter(pl.col("reason").is_not_null())["action"].null_count() == 3


# ---- Tardis ----------------------------------------------------------------------------------

def test_tardis_incremental_l2(tmp_path: Path) -> None:
    path = write(tmp_path / "binance-futures_incremental_book_L2_2024-01-01_BTCUSDT.csv.zip",
                 zipped("x.csv", tardis_incremental_l2_csv()))
    _, df = staged(tardis.INCREMENTAL, path, PERP, tmp_path)
    us = 1000
    assert cols(df, "src_line", "action", "side", "price", "size", "seq", "is_snapshot", "flags", "ts_event", "ts_recv") == [
        (2, "clear", 0, None, 0.0, 2, True, 0, JAN_NS, JAN_NS + 5 * us),
        (2, "add", 1, 42000.0, 1.0, 2, True, 0, JAN_NS, JAN_NS + 5 * us),
        (3, "add", 1, 41999.5, 2.0, 2, True, 0, JAN_NS, JAN_NS + 5 * us),
        (4, "add", -1, 42000.5, 1.5, 2, True, F_LAST, JAN_NS, JAN_NS + 5 * us),
        (5, "update", 1, 41999.5, 0.5, 5, False, 0, JAN_NS + 100 * us, JAN_NS + 130 * us),
        (6, "delete", -1, 42000.5, 0.0, 5, False, F_LAST, JAN_NS + 100 * us, JAN_NS + 130 * us),
        (7, "update", -1, 42001.0, 1.0, 7, False, F_LAST, JAN_NS + 200 * us, JAN_NS + 230 * us),
        (8, "clear", 0, None, 0.0, 8, True, 0, JAN_NS + 300 * us, JAN_NS + 330 * us),
        (8, "add", 1, 41990.0, 4.0, 8, True, F_LAST, JAN_NS + 300 * us, JAN_NS + 330 * us),
    ]
    assert df["reason"].null_count() == df.height and df["seq_first"].null_count() == df.height


def test_tardis_incremental_bad_rows(tmp_path: Path) -> None:
    lines = tardis_incremental_l2_csv().splitlines()
    lines[5] = lines[5].replace(",ask,", ",middle,")
    lines[6] = lines[6].replace("BTCUSDT", "ETHUSDT")
    path = write(tmp_path / "l2.csv", "\n".join(lines) + "\n")
    _, df = staged(tardis.INCREMENTAL, path, PERP, tmp_path)
    why = {r["src_line"]: r["reason"] for r in df.filter(pl.col("reason").is_not_null()).iter_rows(named=True)}
    assert why == {6: "side 'middle' is not bid or ask", 7: f"row of symbol ETHUSDT, not the landing folder's {PERP}"}
    assert df.filter(pl.col("src_line") == 6)["seq"].to_list() == [5]  # the message knows it lost a row


@pytest.mark.parametrize("depth", [5, 25])
def test_tardis_book_snapshot(tmp_path: Path, depth: int) -> None:
    path = write(tmp_path / f"book_snapshot_{depth}.csv", tardis_book_snapshot_csv(depth))
    _, df = staged(tardis.SNAPSHOT, path, PERP, tmp_path)
    first = df.filter(pl.col("src_line") == 2)
    assert first["action"].to_list() == ["clear"] + ["add"] * (2 * depth)
    assert first["side"].to_list() == [0] + [1] * depth + [-1] * depth
    assert first["price"].to_list()[1:] == [42000.0 - 0.5 * i for i in range(depth)] + [42000.5 + 0.5 * i for i in range(depth)]
    assert first["size"].to_list()[1:] == [float(i + 1) for i in range(depth)] * 2
    assert first["is_snapshot"].all() and first["flags"].to_list() == [0] * (2 * depth) + [F_LAST]
    assert set(first["ts_recv"].to_list()) == {JAN_NS + 50_000}
    second = df.filter(pl.col("src_line") == 3)  # empty cells are absent levels, not rows
    assert cols(second, "action", "side", "price", "size", "seq") == [
        ("clear", 0, None, 0.0, 3), ("add", 1, 42000.0, 1.0, 3), ("add", -1, 42000.5, 1.0, 3)]
    assert df["reason"].null_count() == df.height


def test_tardis_book_snapshot_bad_level(tmp_path: Path) -> None:
    text = tardis_book_snapshot_csv(5).replace(",2,41999.5,2,", ",2,41999.5,two,", 1)
    path = write(tmp_path / "snap.csv", text)
    _, df = staged(tardis.SNAPSHOT, path, PERP, tmp_path)
    assert df.filter(pl.col("reason").is_not_null()).select("src_line", "reason").rows() == [(2, "bids[1].amount 'two' is not a number")]


# ---- Databento DBN ---------------------------------------------------------------------------

@pytest.mark.parametrize("zstd,read_bytes", [(False, 1 << 20), (True, 1 << 20), (False, 500)])
def test_dbn_mbp10(tmp_path: Path, zstd: bool, read_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain and zstd; in 500-byte reads the records come in several batches (the previous
    record's book carried across them)."""
    monkeypatch.setattr(databento, "READ_BYTES", read_bytes)
    path = write(tmp_path / ("glbx_mbp10.dbn.zst" if zstd else "glbx_mbp10.dbn"), dbn_file("mbp-10", dbn_mbp10_records(), zstd=zstd))
    fmt, df = staged(databento.MBP10, path, "ESH4", tmp_path)
    assert fmt.level == DEPTH_L2 and fmt.continuity == "increasing"
    t = lambda i: JAN_NS + i * 1000  # noqa: E731
    assert cols(df, "src_line", "action", "side", "price", "size", "seq", "seq_first", "is_snapshot", "flags", "ts_event", "ts_recv") == [
        (1, "clear", 0, None, 0.0, 10, None, True, 0, t(0), t(0) + 7),
        (1, "add", 1, 100.0, 5.0, 10, None, True, 0, t(0), t(0) + 7),
        (1, "add", -1, 100.25, 7.0, 10, None, True, F_LAST, t(0), t(0) + 7),
        (2, "add", -1, 100.5, 2.0, 11, 11, False, 0, t(1), t(1) + 7),     # message 11 ends at record 3
        (3, "update", 1, 100.0, 3.0, 11, 11, False, F_LAST, t(1), t(1) + 7),
        (5, "delete", -1, 100.5, 0.0, 13, 13, False, F_LAST, t(3), t(3) + 7),  # record 4 (a trade) changes nothing
        (6, None, None, None, None, None, None, False, F_LAST, t(4), t(4) + 7),
    ]
    assert df["reason"].to_list()[:6] == [None] * 6
    assert df["reason"][6] == "record of instrument 43 (?), not the landing folder's ESH4"
    assert df["order_id"].null_count() == df.height


@pytest.mark.parametrize("read_bytes,ts_out", [(1 << 20, False), (120, False), (1 << 20, True)])
def test_dbn_mbo(tmp_path: Path, read_bytes: int, ts_out: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """zstd; in 120-byte reads (the live orders carried across batches); a file with ts_out
    (each record 8 bytes longer)."""
    monkeypatch.setattr(databento, "READ_BYTES", read_bytes)
    path = write(tmp_path / "glbx_mbo.dbn.zst", dbn_file("mbo", dbn_mbo_records(ts_out=ts_out), zstd=True, ts_out=ts_out))
    fmt, df = staged(databento.MBO, path, "ESH4", tmp_path)
    assert fmt.level == DEPTH_L3
    assert cols(df, "src_line", "action", "side", "price", "size", "order_id", "seq", "is_snapshot", "flags") == [
        (1, "clear", 0, None, 0.0, None, 0, True, 0),
        (2, "add", 1, 100.0, 5.0, 1, 0, True, 0),
        (3, "add", -1, 100.25, 7.0, 2, 0, True, F_LAST),
        (4, "update", 1, 100.0, 3.0, 1, 20, False, F_LAST),   # cancel 2 of 5: 3 remain
        (6, "delete", -1, 100.25, 0.0, 2, 21, False, F_LAST),  # the fill (5) changes nothing; cancel 7 of 7
        (7, "update", 1, 99.75, 4.0, 1, 22, False, F_LAST),
        (8, None, None, None, None, 99, 23, False, F_LAST),
    ]
    assert df["reason"].to_list() == [None] * 6 + ["cancel of order 99, which was never added (no snapshot or add before it)"]


def test_dbn_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "glbx_ohlcv.dbn", dbn_file("ohlcv-1m", dbn_ohlcv_records()))
    fmt = formats.sniff(path, path)
    assert fmt is databento.OTHER  # a DBN file is a book file, so its schema is reported, not a tick-format miss
    with pytest.raises(IngestError, match="DBN schema ohlcv-1m: the book reads only DBN files of schema mbp-10"):
        fmt.parse(path, path, "ESH4")
    with pytest.raises(IngestError, match="DBN schema ohlcv-1m"):
        databento.MBP10.parse(path, path, "ESH4")


def test_dbn_trades_as_ticks(tmp_path: Path) -> None:
    path = write(tmp_path / "glbx_mbp10.dbn", dbn_file("mbp-10", dbn_mbp10_records()))
    ticks = databento.MBP10.ticks(path, path, "ESH4").collect()
    assert ticks.select("src_line", "kind", "price", "size", "side", "seq", "trade_id", "ts_event").rows() == [
        (4, "trade", 100.25, 1.0, -1, 12, f"{JAN_NS + 2000 + 7}:12:0", JAN_NS + 2000)]  # the ask-side aggressor sold
    path = write(tmp_path / "glbx_mbo.dbn", dbn_file("mbo", dbn_mbo_records()))
    assert databento.MBO.ticks(path, path, "ESH4").collect().height == 0  # a fill (F) is not a trade print
