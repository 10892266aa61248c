"""The bad-input corpus: every case is built in code, dropped into the landing zone of a lake
that already holds good partitions, and ingested. Each must give a clear error naming the file
(and the line or field where it applies), keep rejected rows with their reason, leave every raw
file and every existing partition byte-identical, and let the good files beside it through."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import polars as pl
import pytest

from quant_assets.ingest.build import build_partition
from quant_assets.ingest.landing import survey
from quant_assets.lake.manifest import read_manifest
from quant_assets.lake.schema import TICK_SCHEMA
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets_tests import builders as b

JAN = b.JAN_MS


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every visible file of the lake's partitions and landing zone."""
    return {p.relative_to(root).as_posix(): _sha(p) for sub in ("ticks", "landing") for p in sorted((root / sub).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _ingest(lake, symbol: str) -> list:
    """What `sync` does for ticks: survey (probe) every file, then rebuild the touched months."""
    records = survey(lake, symbol)
    months = sorted({m for r in records if r.status != "failed" for m in r.months})
    for month in months:
        build_partition(lake, symbol, month)
    return records


@pytest.fixture
def good_lake(lake):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(20))
    b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(6))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        _ingest(lake, symbol)
    assert (lake.ticks_path("BTCUSDT", "2024-01")).exists() and (lake.ticks_path("ETHUSDT", "2024-01")).exists()
    return lake


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _parquet(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


GOOD = b.binance_trades_csv(5, t0_ms=JAN + 3_600_000, start_id=500)
#: (case, landing file name, content, what must be said): whole files that must be refused
FILE_CASES = [
    ("empty file", "BTCUSDT-trades-2024-01-empty.csv", b"", "empty"),
    ("header only", "BTCUSDT-trades-2024-01-hdr.csv", b"id,price,qty,quote_qty,time,is_buyer_maker\n", "no data rows"),
    ("wrong delimiter", "BTCUSDT-trades-2024-01-semi.csv", GOOD.replace(",", ";").encode(), "unknown tick format"),
    ("missing columns", "BTCUSDT-trades-2024-01-short.csv",
     "\n".join(",".join(line.split(",")[:4]) for line in GOOD.splitlines()).encode(), "unknown tick format"),
    ("extra columns", "BTCUSDT-trades-2024-01-wide.csv",
     "\n".join(line + ",x,y,z" for line in GOOD.splitlines()).encode(), "unknown tick format"),
    ("non-UTF-8 bytes near the top", "BTCUSDT-trades-2024-01-latin1.csv",
     GOOD.encode().replace(b"\n", b"\n7,42000.5,0.1,4.2,1704070800000,\xe9t\xe9,True\n", 1), "line 2, byte"),
    ("truncated gzip", "BTCUSDT-trades-2024-01.csv.gz", gzip.compress(GOOD.encode())[:-20], "gzip"),
    ("corrupt zip", "BTCUSDT-trades-2024-01-bad.zip", b"PK\x03\x04" + b"\x00" * 40 + b"garbage", "zip"),
    ("zip with several members", "BTCUSDT-trades-2024-01-two.zip", _zip({"a.csv": GOOD.encode(), "b.csv": GOOD.encode()}), "exactly one file, holds 2"),
    ("zip with no member", "BTCUSDT-trades-2024-01-none.zip", _zip({}), "no file"),
    ("seconds where ms are expected", "BTCUSDT-trades-2024-01-sec.csv", b.binance_trades_csv(5, t0_ms=JAN // 1000, step_ms=1).encode(), "looks like s since epoch"),
    ("symbol in the file name disagrees with the folder", "ETHUSDT-trades-2024-01.csv", GOOD.encode(), "'ETHUSDT'"),
    ("symbol in the content disagrees with the folder", "binance_quotes_2024-01-01.csv", b.tardis_quotes_csv("ETHUSDT", 3).encode(), "'ETHUSDT'"),
    ("every row after the running month (year 2100)", "BTCUSDT-trades-2100-01.csv",
     b.binance_trades_csv(5, t0_ms=4_102_444_800_000).encode(), "timestamps run from 2100-01-01T00:00:00Z"),
    ("symbol in the file name names another perpetual's raw symbol", "BTCUSDTM-trades-2024-01.csv", GOOD.encode(), "'BTCUSDTM'"),
    ("0-byte Parquet", "ticks-2024-01.parquet", b"", "empty"),
    ("Parquet with the right columns and wrong types", "ticks-2024-01-types.parquet",
     _parquet(pl.DataFrame({c: ["x"] for c in TICK_SCHEMA})), "ts_event"),
]


@pytest.mark.parametrize(("case", "name", "content", "said"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_bad_file_is_refused_by_name_and_changes_nothing(good_lake, case, name, content, said):
    lake = good_lake
    before = _snapshot(lake.root)
    path = b.write(lake.landing_dir("BTCUSDT") / name, content)
    raw = _sha(path)
    records = _ingest(lake, "BTCUSDT")
    (rec,) = [r for r in records if r.path.endswith(name)]
    assert rec.status == "failed", f"{case}: {rec}"
    assert said.lower() in (rec.error or "").lower(), f"{case}: {rec.error}"
    assert name in rec.path  # the failure is recorded against that file
    assert read_manifest(lake)[rec.path].error == rec.error  # and kept in the manifest
    assert _sha(path) == raw  # the raw file is never modified
    assert _snapshot(lake.root) == {**before, path.relative_to(lake.root).as_posix(): raw}  # nothing else moved
    assert not list(lake.root.glob("**/.tmp-*"))  # no debris left behind


#: (case, rows as Binance spot trades lines, the reason each row must carry)
ROW_CASES = [
    ("timestamps before 1990", [f"1,42000.5,0.1,4.2,{631_152_000_000 - 5_000},true,True"], "before 1990"),
    ("timestamps in the future", ["2,42000.5,0.1,4.2,4102444800000,true,True"], "future"),
    ("NaN price", ["3,NaN,0.1,4.2,1704070800000,true,True"], "price"),
    ("negative price", ["4,-42000.5,0.1,4.2,1704070800000,true,True"], "non-positive price"),
    ("zero price", ["5,0,0.1,0,1704070800000,true,True"], "non-positive price"),
    ("zero size", ["6,42000.5,0,0,1704070800000,true,True"], "size"),
    ("an unparseable aggressor side", ["7,42000.5,0.1,4.2,1704070800000,maybe,True"], "aggressor side"),
    ("unparseable timestamp", ["9,42000.5,0.1,4.2,17040x0800000,true,True"], "timestamp"),
    ("a row with too few fields", ["10,42000.5,0.1"], "timestamp"),
]


@pytest.mark.parametrize(("case", "lines", "reason"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rows_are_quarantined_with_file_line_and_reason_and_good_rows_go_through(good_lake, case, lines, reason):
    lake = good_lake
    before = _snapshot(lake.root)
    name = "BTCUSDT-trades-2024-01-rows.csv"
    good = [line.encode() for line in b.binance_trades_csv(3, t0_ms=JAN + 7_200_000, start_id=900).splitlines()]
    rows = [line if isinstance(line, bytes) else line.encode() for line in lines]
    content = b"\n".join([good[0], *rows, *good[1:]]) + b"\n"
    path = b.write(lake.landing_dir("BTCUSDT") / name, content)
    records = _ingest(lake, "BTCUSDT")
    (rec,) = [r for r in records if r.path.endswith(name)]
    rec = read_manifest(lake)[rec.path]
    assert rec.status == "staged" and rec.rows_rejected == len(lines) and rec.rows_accepted == 3, f"{case}: {rec}"
    q = pl.read_parquet(lake.quarantine_path("BTCUSDT", rec.sha256))
    assert q["source"].to_list() == [rec.path] * len(lines)
    assert q["src_line"].to_list() == list(range(2, 2 + len(lines)))  # 1-based lines of the file
    assert all(reason in r for r in q["reject_reason"].to_list()), q["reject_reason"].to_list()
    ticks = pl.read_parquet(lake.ticks_path("BTCUSDT", "2024-01"))
    assert ticks.filter(pl.col("trade_id").is_in(["900", "901", "902"])).height == 3  # the good rows went in
    assert all(v == _snapshot(lake.root).get(k) for k, v in before.items() if k.startswith("landing/"))
    assert path.read_bytes() == content  # the raw file is never modified


def test_non_utf8_bytes_deep_in_a_file_quarantine_only_their_rows(good_lake):
    """The format is judged on the file's first 16 KiB; bad bytes further down are bad rows."""
    lake = good_lake
    lines = [line.encode() for line in b.binance_trades_csv(1000, t0_ms=JAN + 7_200_000, start_id=2000).splitlines()]
    bad = [b"1,42\xff00.5,0.1,4.2,1704070800000,true,True", b"2,42000.5,0.1,4.2,1704070800000,\xe9t\xe9,True"]
    content = b"\n".join([*lines[:900], *bad, *lines[900:]]) + b"\n"
    assert len(b"\n".join(lines[:900])) > 16384
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01-deep.csv", content)
    rec = next(r for r in _ingest(lake, "BTCUSDT") if r.path.endswith("deep.csv"))
    rec = read_manifest(lake)[rec.path]
    assert rec.status == "staged" and (rec.rows_accepted, rec.rows_rejected) == (1000, 2)
    q = pl.read_parquet(lake.quarantine_path("BTCUSDT", rec.sha256))
    assert q["src_line"].to_list() == [901, 902]
    assert q["reject_reason"].to_list() == ["missing, unparseable or NaN price", "missing or unparseable aggressor side (expected buy/sell, or 0 for unknown)"]


def test_duplicate_and_unordered_rows_give_the_same_partition_as_clean_ones(good_lake):
    lake = good_lake
    clean = pl.read_parquet(lake.ticks_path("BTCUSDT", "2024-01"))
    lines = b.binance_trades_csv(20).splitlines()
    messy = "\n".join(list(reversed(lines)) + lines[:7]) + "\n"  # every row reversed, seven twice
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01-again.csv", messy)
    _ingest(lake, "BTCUSDT")
    assert pl.read_parquet(lake.ticks_path("BTCUSDT", "2024-01")).equals(clean)


def test_crossed_quotes_are_quarantined(good_lake):
    lake = good_lake
    crossed = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n" \
              f"1,42001.0,1.0,42000.0,1.0,{JAN + 1},{JAN + 2}\n"
    b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-bookTicker-2024-01-crossed.csv", crossed)
    rec = next(r for r in _ingest(lake, "ETHUSDT") if r.path.endswith("crossed.csv"))
    q = pl.read_parquet(lake.quarantine_path("ETHUSDT", read_manifest(lake)[rec.path].sha256))
    assert q["reject_reason"].to_list() == ["crossed quote (bid > ask)"]


@pytest.mark.parametrize("folder", ["..", "BTC USDT", "btc/../../etc", "$(rm)", ""])
def test_symbol_folders_with_path_characters_are_refused(folder):
    with pytest.raises(InvalidSymbolError):
        normalise_symbol(folder)


def test_a_zip_bomb_is_refused_before_it_fills_the_disk(good_lake, monkeypatch):
    lake = good_lake
    monkeypatch.setenv("QUANT_MAX_UNPACKED_BYTES", str(1 << 20))
    bomb = _zip({"BTCUSDT-trades-2024-01.csv": b"0" * (64 << 20)})  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 200_000
    before = _snapshot(lake.root)
    path = b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01-bomb.zip", bomb)
    rec = next(r for r in _ingest(lake, "BTCUSDT") if r.path.endswith("bomb.zip"))
    assert rec.status == "failed" and "QUANT_MAX_UNPACKED_BYTES" in rec.error
    assert _snapshot(lake.root) == {**before, path.relative_to(lake.root).as_posix(): _sha(path)}
    assert sum(f.stat().st_size for f in lake.scratch_dir().rglob("*") if f.is_file()) == 0
