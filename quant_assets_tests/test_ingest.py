"""Merging, validation, quarantine, failure and atomicity of the ingest path."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from quant_assets.ingest import build as build_mod
from quant_assets.ingest.build import NoDataError, build_partition
from quant_assets.ingest.landing import survey
from quant_assets.lake import duck
from quant_assets.lake.manifest import read_manifest
from quant_assets_tests import builders as b


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_file_twice_and_overlapping_files_give_the_same_partition(lake):
    sym = "BTCUSDT"
    b.write(lake.landing_dir(sym) / "a.csv", b.binance_trades_csv(10))
    build_partition(lake, sym, "2024-01")
    first = _sha(lake.ticks_path(sym, "2024-01"))
    build_partition(lake, sym, "2024-01")  # again: nothing changes
    assert _sha(lake.ticks_path(sym, "2024-01")) == first
    # an exact copy under another name, and an overlapping file (rows 6..15)
    b.write(lake.landing_dir(sym) / "copy.csv", b.binance_trades_csv(10))
    overlap = b.binance_trades_csv(15).splitlines()[5:]
    b.write(lake.landing_dir(sym) / "overlap.csv", "\n".join(overlap) + "\n")
    res = build_partition(lake, sym, "2024-01")
    df = b.read_ticks(lake.root, sym, "2024-01")
    assert res.rows == df.height == 15
    assert df["trade_id"].to_list() == [str(i) for i in range(1, 16)]
    # the result does not depend on which files arrived first
    for p in list(lake.landing_dir(sym).iterdir()):
        if p.name != "overlap.csv":
            p.unlink()
    b.write(lake.landing_dir(sym) / "z.csv", b.binance_trades_csv(10))
    build_partition(lake, sym, "2024-01")
    assert b.read_ticks(lake.root, sym, "2024-01").equals(df)


def test_file_spanning_two_months_feeds_both(lake):
    sym = "BTCUSDT"
    text = b.binance_trades_csv(2, t0_ms=b.JAN_END_MS, step_ms=2000)
    b.write(lake.landing_dir(sym) / "span.csv", text)
    (rec,) = survey(lake, sym)
    assert rec.months == ["2024-01", "2024-02"]
    assert build_partition(lake, sym, "2024-01").rows == 1
    assert build_partition(lake, sym, "2024-02").rows == 1


def test_bad_rows_go_to_quarantine_with_reason_file_and_line(lake):
    sym = "BTCUSDT"
    lines = b.binance_trades_csv(6).splitlines()
    lines[1] = lines[1].replace("42000.50", "-1")  # line 2: negative price
    lines[2] = lines[2].replace("42001.00", "nan")  # line 3: NaN
    lines[3] = lines[3].replace("0.00400", "0")  # line 4: zero size
    lines[4] = lines[4].replace(str(b.JAN_MS + 4000), "notatime")  # line 5: bad timestamp
    raw = "\n".join(lines) + "\n"
    path = b.write(lake.landing_dir(sym) / "BTCUSDT-trades-2024-01.csv", raw)
    res = build_partition(lake, sym, "2024-01")
    assert res.rows == 2 and res.rejected == 3  # the bad timestamp has no month
    q = pl.read_parquet(lake.quarantine_path(sym, _sha(path))).sort("src_line")
    assert q["src_line"].to_list() == [2, 3, 4, 5]
    assert q["reject_reason"].to_list() == [
        "non-positive price",
        "missing, unparseable or NaN price",
        "missing, zero, negative or NaN size",
        "missing or unparseable timestamp",
    ]
    assert set(q["source"]) == {"landing/BTCUSDT/BTCUSDT-trades-2024-01.csv"}
    assert path.read_text() == raw  # raw file untouched
    rec = read_manifest(lake)["landing/BTCUSDT/BTCUSDT-trades-2024-01.csv"]
    assert (rec.rows_accepted, rec.rows_rejected, rec.status) == (2, 4, "staged")


def test_crossed_quotes_are_rejected(lake):
    text = b.binance_bookticker_csv(3).replace("42000.10,1.5,42000.11", "42000.20,1.5,42000.11")
    b.write(lake.landing_dir("BTCUSDT") / "bt.csv", text)
    res = build_partition(lake, "BTCUSDT", "2024-01")
    assert res.rows == 2 and res.rejected == 1
    con = duck.connect(lake)
    assert con.sql("select reject_reason from quarantine").fetchall() == [("crossed quote (bid > ask)",)]


def test_unparseable_file_is_recorded_failed_and_changes_no_partition(lake):
    sym = "BTCUSDT"
    b.write(lake.landing_dir(sym) / "good.csv", b.binance_trades_csv(3))
    build_partition(lake, sym, "2024-01")
    before = _sha(lake.ticks_path(sym, "2024-01"))
    b.write(lake.landing_dir(sym) / "junk.csv", "hello;world\n\x01\x02\n")
    res = build_partition(lake, sym, "2024-01")
    assert _sha(lake.ticks_path(sym, "2024-01")) == before
    assert [r.path for r in res.failed] == ["landing/BTCUSDT/junk.csv"]
    rec = read_manifest(lake)["landing/BTCUSDT/junk.csv"]
    assert rec.status == "failed" and "unknown tick format" in rec.error


def test_data_before_start_month_is_refused_naming_the_variable(lake, monkeypatch):
    monkeypatch.setenv("QUANT_START_MONTH", "2024-02")
    b.write(lake.landing_dir("BTCUSDT") / "old.csv", b.binance_trades_csv(2))
    (rec,) = survey(lake, "BTCUSDT")
    assert rec.months == []
    with pytest.raises(NoDataError):
        build_partition(lake, "BTCUSDT", "2024-01")
    from quant_assets.ingest.landing import stage

    staged = stage(lake, "BTCUSDT", rec)
    q = pl.read_parquet(lake.quarantine_path("BTCUSDT", staged.sha256))
    assert set(q["reject_reason"]) == {"before QUANT_START_MONTH=2024-02"}


def test_a_write_that_dies_midway_leaves_the_old_partition(lake, monkeypatch):
    sym = "BTCUSDT"
    b.write(lake.landing_dir(sym) / "a.csv", b.binance_trades_csv(5))
    build_partition(lake, sym, "2024-01")
    target = lake.ticks_path(sym, "2024-01")
    before = _sha(target)
    b.write(lake.landing_dir(sym) / "b.csv", b.binance_trades_csv(5, start_id=100, t0_ms=b.JAN_MS + 10_000))
    from quant_assets.ingest.landing import stage

    for rec in survey(lake, sym):
        stage(lake, sym, rec)  # staged; only the partition write below dies

    def dying_sink(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk died")

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", dying_sink)
    with pytest.raises(OSError, match="disk died"):
        build_mod.build_partition(lake, sym, "2024-01")
    monkeypatch.undo()
    assert _sha(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["part-0.parquet"]  # no debris
    assert build_partition(lake, sym, "2024-01").rows == 10  # the next run completes


def test_staging_that_dies_midway_leaves_nothing_and_is_retried(lake, monkeypatch):
    sym = "BTCUSDT"
    b.write(lake.landing_dir(sym) / "a.csv", b.binance_trades_csv(5))

    def dying_collect_all(frames, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl, "collect_all", dying_collect_all)
    with pytest.raises(OSError, match="disk full"):
        build_partition(lake, sym, "2024-01")
    monkeypatch.undo()
    assert not (lake.root / "staging" / "symbol=BTCUSDT").exists() or not any((lake.root / "staging" / "symbol=BTCUSDT").iterdir())
    rec = read_manifest(lake).get("landing/BTCUSDT/a.csv")
    assert rec is None or rec.status != "failed"
    assert build_partition(lake, sym, "2024-01").rows == 5


def test_no_data_for_a_month_is_a_clear_error(lake):
    b.write(lake.landing_dir("BTCUSDT") / "a.csv", b.binance_trades_csv(2))
    with pytest.raises(NoDataError, match="no valid ticks for BTCUSDT 2024-05"):
        build_partition(lake, "BTCUSDT", "2024-05")
    assert not lake.ticks_path("BTCUSDT", "2024-05").exists()


def test_duckdb_views_over_the_lake(lake):
    b.write(lake.landing_dir("BTCUSDT") / "a.csv", b.binance_trades_csv(7))
    b.write(lake.landing_dir("ETHUSDT") / "ETHUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(3))
    build_partition(lake, "BTCUSDT", "2024-01")
    build_partition(lake, "ETHUSDT", "2024-01")
    con = duck.connect(lake)
    assert con.sql("SELECT count(*) FROM ticks WHERE symbol='BTCUSDT'").fetchall() == [(7,)]
    assert con.sql("SELECT symbol, month, count(*) FROM ticks GROUP BY ALL ORDER BY 1").fetchall() == [
        ("BTCUSDT", "2024-01", 7), ("ETHUSDT", "2024-01", 3)
    ]
    assert con.sql("SELECT count(*) FROM manifest").fetchall() == [(2,)]
    # Polars reads the same hive layout without our code
    assert pl.scan_parquet(lake.root / "ticks", hive_partitioning=True).select(pl.len()).collect().item() == 10


def test_streamed_and_sorted_paths_agree(lake, monkeypatch):
    """Ordered, non-overlapping files stream without a sort; the result equals the sort path's."""
    sym = "BTCUSDT"
    b.write(lake.landing_dir(sym) / "a.csv", b.binance_trades_csv(5))
    b.write(lake.landing_dir(sym) / "b.csv", b.binance_trades_csv(5, start_id=6, t0_ms=b.JAN_MS + 5000))
    res = build_partition(lake, sym, "2024-01")
    assert build_mod.streamable(res.sources)
    streamed = b.read_ticks(lake.root, sym, "2024-01")
    monkeypatch.setattr(build_mod, "streamable", lambda sources: False)
    build_partition(lake, sym, "2024-01")
    assert b.read_ticks(lake.root, sym, "2024-01").equals(streamed)
    assert streamed["trade_id"].to_list() == [str(i) for i in range(1, 11)]


def test_unordered_file_is_sorted(lake):
    sym = "BTCUSDT"
    lines = b.binance_trades_csv(6).splitlines()
    b.write(lake.landing_dir(sym) / "shuffled.csv", "\n".join(lines[::-1]) + "\n")
    res = build_partition(lake, sym, "2024-01")
    assert res.sources[0].ordered is False
    df = b.read_ticks(lake.root, sym, "2024-01")
    assert df["ts_recv"].is_sorted() and df["trade_id"].to_list() == [str(i) for i in range(1, 7)]


def test_duplicates_inside_one_file_are_kept_once(lake):
    sym = "BTCUSDT"
    lines = b.tardis_quotes_csv(n=3).splitlines()
    b.write(lake.landing_dir(sym) / "dups.csv", "\n".join([*lines, lines[2], lines[3]]) + "\n")
    res = build_partition(lake, sym, "2024-01")
    assert res.sources[0].ordered is False and res.rows == 3


def test_quality_rules_catch_unsorted_duplicated_and_crossed_rows(tmp_path):
    from quant_assets.lake.quality import evaluate
    from quant_assets.lake.schema import TICK_SCHEMA

    rows = [
        dict(ts_event=3, ts_recv=3, seq=1, kind="quote", bid_px=10.0, bid_sz=1.0, ask_px=10.5, ask_sz=1.0),
        dict(ts_event=3, ts_recv=3, seq=2, kind="quote", bid_px=10.0, bid_sz=1.0, ask_px=10.5, ask_sz=1.0),
        dict(ts_event=2, ts_recv=2, seq=3, kind="quote", bid_px=11.0, bid_sz=1.0, ask_px=10.5, ask_sz=1.0),
        dict(ts_event=4, ts_recv=4, seq=4, kind="trade", price=10.25, size=0.0, side=1, trade_id="x"),
    ]
    path = tmp_path / "bad.parquet"
    pl.DataFrame(rows, schema=TICK_SCHEMA).write_parquet(path)
    from quant_assets.lake.instruments import Instrument

    inst = Instrument("X", "SIM", "X", "USD", 1, 0, 0.1, 1.0, 0.0, 0.0)
    got = {o.name: o.offending_rows for o in evaluate(path, inst)}
    assert got == {
        "timestamps_non_decreasing": 1, "no_crossed_quotes": 1, "positive_prices_and_sizes": 1,
        "precision_matches_instrument": 1, "no_duplicates": 1,
    }


def test_binance_files_named_like_spot_files_land_in_a_perpetual_folder(lake):
    # Binance names USD-M perpetual files exactly like spot files: in landing/BTCUSDT-PERP/ they
    # are checked against the raw symbol BTCUSDT and build the BTCUSDT-PERP partition.
    perp = "BTCUSDT-PERP"
    b.write(lake.landing_dir(perp) / "BTCUSDT-bookTicker-2024-01-01.csv", b.binance_bookticker_csv(4))
    b.write(lake.landing_dir(perp) / "BTCUSDT-trades-2024-01.zip", b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(3, header=True)))
    b.write(lake.landing_dir(perp) / "binance-futures_quotes_2024-01-01_BTCUSDT.csv", b.tardis_quotes_csv("BTCUSDT", 2, t0_us=(b.JAN_MS + 5_000) * 1000))
    records = survey(lake, perp)
    assert [(r.status, r.error) for r in records] == [("probed", None)] * 3
    res = build_partition(lake, perp, "2024-01")
    assert res.rows == 4 + 3 + 2
    assert b.read_ticks(lake.root, perp, "2024-01").height == 9
    # the same files are still refused where the raw symbol differs
    b.write(lake.landing_dir("ETHUSDT-PERP") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(3))
    (rec,) = survey(lake, "ETHUSDT-PERP")
    assert rec.status == "failed"
    assert "says 'BTCUSDT'" in rec.error and "perpetual instrument whose files should say 'ETHUSDT'" in rec.error


def test_a_file_dated_after_the_running_month_is_failed_with_a_reason_on_both_paths(lake):
    """Rows all in 2100 touch no buildable month: the probe (sensor) and a direct staging
    (``sync``, which stages unprobed files) both record the file as failed, saying why; staging
    keeps its rows in quarantine with their own reason."""
    from quant_assets.ingest.landing import stage

    path = b.write(lake.landing_dir("BTCUSDT") / "late.csv", b.binance_trades_csv(3, t0_ms=4_102_444_800_000))
    (probed,) = survey(lake, "BTCUSDT")
    assert probed.status == "failed" and probed.months == []
    assert probed.path.endswith("landing/BTCUSDT/late.csv") and "late.csv" in probed.error
    assert "timestamps run from 2100-01-01T00:00:00Z to 2100-01-01T00:00:02Z" in probed.error
    assert "expected rows from QUANT_START_MONTH=" in probed.error
    assert read_manifest(lake)[probed.path].status == "failed"

    b.write(lake.landing_dir("ETHUSDT") / "late.csv", b.binance_trades_csv(3, t0_ms=4_102_444_800_000))
    (unprobed,) = survey(lake, "ETHUSDT", probe_new=False)
    assert unprobed.status == "seen"
    staged = stage(lake, "ETHUSDT", unprobed)
    assert staged.status == "failed" and "timestamps run from 2100-01-01" in staged.error
    assert read_manifest(lake)[staged.path].status == "failed"
    assert not lake.staging_path("ETHUSDT", staged.sha256).exists()
    q = pl.read_parquet(lake.quarantine_path("ETHUSDT", staged.sha256))
    assert q.height == 3 and set(q["reject_reason"]) == {"timestamp in the future"}


def test_a_republished_file_lands_as_a_new_version_and_only_the_newest_is_built(lake):
    """Binance re-uploads an archive with corrected rows: the new bytes land beside the old as
    ``~v2`` (quant_assets.ingest.versions); the partition is rebuilt from v2 alone, v1 stays
    in landing byte for byte and in the manifest as superseded; a daily file of the month is
    superseded by the month's archive."""
    sym = "BTCUSDT"
    d = lake.landing_dir(sym)
    v1 = b.write(d / "BTCUSDT-trades-2024-01.zip", b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(10)))
    v1_bytes = v1.read_bytes()
    assert build_partition(lake, sym, "2024-01").rows == 10
    first = _sha(lake.ticks_path(sym, "2024-01"))
    corrected = b.binance_trades_csv(10).replace("42000.50", "42000.75")
    b.write(d / "BTCUSDT-trades-2024-01~v2.zip", b.zipped("BTCUSDT-trades-2024-01.csv", corrected))
    b.write(d / "BTCUSDT-trades-2024-01-01.zip", b.zipped("BTCUSDT-trades-2024-01-01.csv", b.binance_trades_csv(12)))
    current = survey(lake, sym)
    assert [r.path for r in current] == ["landing/BTCUSDT/BTCUSDT-trades-2024-01~v2.zip"]
    res = build_partition(lake, sym, "2024-01")
    df = b.read_ticks(lake.root, sym, "2024-01")
    assert res.rows == df.height == 10 and 42000.75 in df["price"].to_list() and 42000.50 not in df["price"].to_list()
    assert _sha(lake.ticks_path(sym, "2024-01")) != first
    assert v1.read_bytes() == v1_bytes
    manifest = read_manifest(lake)
    old = manifest["landing/BTCUSDT/BTCUSDT-trades-2024-01.zip"]
    daily = manifest["landing/BTCUSDT/BTCUSDT-trades-2024-01-01.zip"]
    assert old.status == daily.status == "superseded"
    assert old.error == daily.error == "superseded by BTCUSDT-trades-2024-01~v2.zip"
    # the replacement removed by hand: v1 is current again and the partition is v1's again
    (d / "BTCUSDT-trades-2024-01~v2.zip").unlink()
    (d / "BTCUSDT-trades-2024-01-01.zip").unlink()
    build_partition(lake, sym, "2024-01")
    assert _sha(lake.ticks_path(sym, "2024-01")) == first


def test_a_coin_m_file_is_refused_with_the_reason_not_parsed_as_linear(lake):
    """COIN-M trade files have the spot layout's column types (qty in contracts, base_qty in
    coin): parsed as a linear instrument they would give wrong sizes, so they fail, saying why."""
    text = b.binance_trades_csv(5)
    b.write(lake.landing_dir("BTCUSD-PERP") / "BTCUSD_PERP-trades-2024-01.zip", b.zipped("BTCUSD_PERP-trades-2024-01.csv", text))
    (rec,) = survey(lake, "BTCUSD-PERP")
    assert rec.status == "failed" and "COIN-M (inverse)" in rec.error and "not ingested" in rec.error
