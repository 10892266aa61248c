"""Each landing format becomes correct canonical ticks."""

from __future__ import annotations

import polars as pl
import pytest

from quant_assets.ingest.build import build_partition
from quant_assets.ingest.detect import detect, plain_file
from quant_assets.ingest.errors import IngestError, UnknownFormatError
from quant_assets_tests import builders as b

MS = 1_000_000
JAN_NS = b.JAN_MS * MS


def _ingest(lake, symbol: str, name: str, content, month: str = "2024-01") -> pl.DataFrame:
    b.write(lake.landing_dir(symbol) / name, content)
    build_partition(lake, symbol, month)
    return b.read_ticks(lake.root, symbol, month)


def _format_of(lake, path):
    with plain_file(path, lake.scratch_dir()) as text:
        return detect(path, text).format_name


def test_binance_spot_trades_zip(lake):
    df = _ingest(lake, "BTCUSDT", "BTCUSDT-trades-2024-01.zip", b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(4)))
    assert df.height == 4
    assert df["kind"].to_list() == ["trade"] * 4
    assert df["ts_event"].to_list() == [JAN_NS + i * 1000 * MS for i in range(4)]
    assert df["ts_recv"].to_list() == df["ts_event"].to_list()
    # is_buyer_maker=true -> the seller hit the bid -> side -1
    assert df["side"].to_list() == [1, -1, 1, -1]
    assert df["trade_id"].to_list() == ["1", "2", "3", "4"]
    assert df["seq"].to_list() == [1, 2, 3, 4]
    assert df["price"].to_list() == [42000.0, 42000.5, 42001.0, 42001.5]
    assert df["bid_px"].null_count() == 4


def test_binance_usdm_trades_with_header_gz(lake):
    path = b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-trades-2024-01.csv.gz", b.gzipped(b.binance_trades_csv(3, header=True)))
    assert _format_of(lake, path) == "binance_trades"
    build_partition(lake, "ETHUSDT", "2024-01")
    assert b.read_ticks(lake.root, "ETHUSDT", "2024-01").height == 3


def test_binance_microsecond_timestamps(lake):
    text = b.binance_trades_csv(2).replace(str(b.JAN_MS), str(b.JAN_MS * 1000)).replace(str(b.JAN_MS + 1000), str((b.JAN_MS + 1000) * 1000))
    df = _ingest(lake, "BTCUSDT", "BTCUSDT-trades-2024-01.csv", text)
    assert df["ts_event"].to_list() == [JAN_NS, JAN_NS + 1000 * MS]


def test_binance_aggtrades(lake):
    path = b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-aggTrades-2024-01.csv", b.binance_aggtrades_csv(4))
    assert _format_of(lake, path) == "binance_aggtrades"
    build_partition(lake, "ETHUSDT", "2024-01")
    df = b.read_ticks(lake.root, "ETHUSDT", "2024-01")
    assert df["trade_id"].to_list() == ["100", "101", "102", "103"]
    assert df["side"].to_list() == [1, -1, 1, -1]
    assert df["ts_event"][1] - df["ts_event"][0] == 500 * MS


@pytest.mark.parametrize("header", [True, False])
def test_binance_bookticker(lake, header):
    df = _ingest(lake, "BTCUSDT", "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4, header=header))
    assert df["kind"].to_list() == ["quote"] * 4
    assert df["bid_px"].to_list() == [42000.0, 42000.1, 42000.2, 42000.3]
    assert df["ask_px"].to_list() == [42000.01, 42000.11, 42000.21, 42000.31]
    assert df["bid_sz"].to_list() == [1.5] * 4 and df["ask_sz"].to_list() == [2.0] * 4
    assert (df["ts_recv"] - df["ts_event"]).to_list() == [3 * MS] * 4  # event_time vs transaction_time
    assert df["seq"].to_list() == [9000, 9001, 9002, 9003]


def test_tardis_quotes_and_trades(lake):
    b.write(lake.landing_dir("BTCUSDT") / "binance_quotes_2024-01-01_BTCUSDT.csv", b.tardis_quotes_csv())
    b.write(lake.landing_dir("BTCUSDT") / "binance_trades_2024-01-01_BTCUSDT.csv", b.tardis_trades_csv())
    build_partition(lake, "BTCUSDT", "2024-01")
    df = b.read_ticks(lake.root, "BTCUSDT", "2024-01")
    quotes, trades = df.filter(pl.col("kind") == "quote"), df.filter(pl.col("kind") == "trade")
    assert quotes.height == 4 and trades.height == 4
    assert quotes["ts_event"][0] == JAN_NS and quotes["ts_recv"][0] == JAN_NS + 250_000
    assert quotes["bid_px"][0] == 42000.0 and quotes["ask_px"][0] == 42001.0 and quotes["ask_sz"][0] == 0.8
    assert trades["side"].to_list() == [-1, 1, -1, 1]
    assert trades["trade_id"].to_list() == ["t0", "t1", "t2", "t3"]
    # merged and sorted by ts_recv across both files
    assert df["ts_recv"].is_sorted()


def test_fx_dukascopy_header(lake):
    df = _ingest(lake, "EURUSD", "EURUSD_Ticks_02.01.2024.csv", b.fx_dukascopy_csv(3))
    jan2_8h = 1_704_182_400 * 10**9
    assert df["ts_event"].to_list() == [jan2_8h + i * 10**9 + 250 * MS for i in range(3)]
    # Dukascopy puts Ask before Bid: columns are matched by name, not position
    assert df["bid_px"].to_list() == [1.095, 1.09501, 1.09502]
    assert df["ask_px"].to_list() == [1.0951, 1.09511, 1.09512]
    assert df["bid_sz"].to_list() == [2.25] * 3


def test_fx_truefx_no_header(lake):
    df = _ingest(lake, "EURUSD", "EURUSD-2024-01.csv", b.fx_truefx_csv(3))
    assert df.height == 3
    assert df["bid_sz"].null_count() == 3  # TrueFX has no sizes: unknown, not zero
    assert df["ts_event"][0] == 1_704_182_400 * 10**9 + 125 * MS


def test_fx_epoch_no_header(lake):
    text = "".join(f"{b.JAN_MS + i},1.1000{i},1.1001{i}\n" for i in range(3))
    df = _ingest(lake, "EURUSD", "ticks.csv", text)
    assert df["ts_event"].to_list() == [JAN_NS + i * MS for i in range(3)]


def test_canonical_parquet(lake):
    b.synthetic_parquet(lake.landing_dir("SOLUSDT") / "feed.parquet", "SOLUSDT", "2024-03", events=2_000)
    build_partition(lake, "SOLUSDT", "2024-03")
    df = b.read_ticks(lake.root, "SOLUSDT", "2024-03")
    assert df.height == 2_000
    assert df.schema["ts_event"] == pl.Int64 and df.schema["side"] == pl.Int8


def test_unknown_format_lists_what_is_recognised(lake):
    path = b.write(lake.landing_dir("BTCUSDT") / "mystery.csv", "a;b;c\n1;2;3\n")
    with pytest.raises(UnknownFormatError) as err:
        _format_of(lake, path)
    msg = str(err.value)
    assert "mystery.csv" in msg and "binance_trades" in msg and "tardis_quotes" in msg and "fx_quotes" in msg


def test_symbol_folder_must_agree_with_file_name(lake):
    b.write(lake.landing_dir("ETHUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(2))
    from quant_assets.ingest.landing import survey

    (rec,) = survey(lake, "ETHUSDT")
    assert rec.status == "failed"
    assert "BTCUSDT" in rec.error and "ETHUSDT" in rec.error


def test_seconds_where_ms_expected_is_refused(lake):
    text = b.binance_trades_csv(2).replace(str(b.JAN_MS), str(b.JAN_MS // 1000))
    path = b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", text)
    from quant_assets.ingest.landing import survey

    (rec,) = survey(lake, "BTCUSDT")
    assert rec.status == "failed" and "looks like s since epoch" in rec.error and path.name in str(lake.root / rec.path)


def test_corrupt_zip_is_a_clear_error(lake):
    path = b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.zip", b"PK\x03\x04garbage")
    with pytest.raises(IngestError, match="corrupt zip"):
        _format_of(lake, path)


def test_empty_file_multi_member_zip_and_zip_bomb_are_clear_errors(lake, monkeypatch):
    import io
    import zipfile

    empty = b.write(lake.landing_dir("BTCUSDT") / "empty.csv", b"")
    with pytest.raises(IngestError, match="empty file"):
        _format_of(lake, empty)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.csv", b.binance_trades_csv(2))
        zf.writestr("b.csv", b.binance_trades_csv(2))
    two = b.write(lake.landing_dir("BTCUSDT") / "two.zip", buf.getvalue())
    with pytest.raises(IngestError, match="exactly one file, holds 2"):
        _format_of(lake, two)
    monkeypatch.setenv("QUANT_MAX_UNPACKED_BYTES", "1000")
    bomb = b.write(lake.landing_dir("BTCUSDT") / "bomb.csv.gz", b.gzipped("1" * 100_000))
    with pytest.raises(IngestError, match="zip bomb"):
        _format_of(lake, bomb)
    assert not any(lake.scratch_dir().iterdir())  # nothing left behind
