"""The ``book`` table: staged depth rows -> day files each starting with a full snapshot, the
month's manifest, the blocking rules and the gap rule (scripted canonical book Parquet landing
files, ``quant_assets_tests/book_builders.py``)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from quant_assets.book.build import BookBlocked, build_book, gap_spans
from quant_assets.book.read import book_slice
from quant_assets.book.replay import replay
from quant_assets.book.schema import BOOK_SCHEMA, DEPTH_L2, DEPTH_L3, F_GAP_RESET
from quant_assets_tests.book_builders import DAY_NS, JAN_NS, Script, land

SYM, MONTH = "BTCUSDT", "2024-01"
BIDS = {100.0: 1.0, 99.0: 2.0}
ASKS = {101.0: 1.5, 102.0: 3.0}


def _manifest(lake) -> dict:
    return json.loads((lake.book_month_dir(SYM, MONTH) / "manifest.json").read_text())


def _quarantine(lake) -> pl.DataFrame:
    return pl.read_parquet(lake.book_month_quarantine_path(SYM, MONTH))


def _check(b, name):
    return next(o for o in b.outcomes if o.name == name)


def test_days_start_with_a_snapshot_and_replay_alone(lake):
    s = Script().snapshot(BIDS, ASKS, seq=10)
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    s.update([(-1, 101.0, 0.0)], seq=12, first=12)
    s.update([(1, 99.5, 1.0), (-1, 101.5, 0.5)], seq=13, first=13, t=JAN_NS + DAY_NS + 5)  # the 2nd
    land(lake, SYM, s.frame())

    b = build_book(lake, SYM, MONTH)
    assert (b.status, b.level, [d["day"] for d in b.days]) == ("applied", DEPTH_L2, ["01", "02"])
    assert b.gaps == [] and all(o.passed for o in b.outcomes)
    m = _manifest(lake)
    assert m["level"] == DEPTH_L2 and m["files"] == ["day=01/part-0.parquet", "day=02/part-0.parquet"]
    sl = book_slice(lake, SYM, MONTH)
    assert sl is not None and sl.level == DEPTH_L2 and len(sl.days) == 2

    day2 = pl.read_parquet(sl.days[1])
    assert day2.schema == pl.Schema(BOOK_SCHEMA)
    first = day2.row(0, named=True)
    assert (first["action"], first["side"], first["is_snapshot"]) == ("clear", 0, True)
    # the opening snapshot of the 2nd is the book at the end of the 1st, stamped with its first delta
    snap = day2.filter(pl.col("is_snapshot"))
    assert snap["ts_recv"].unique().to_list() == [JAN_NS + DAY_NS + 5]
    assert dict(zip(snap.filter(pl.col("side") == 1)["price"], snap.filter(pl.col("side") == 1)["size"])) == \
        {100.0: 2.0, 99.0: 2.0}
    assert snap.filter(pl.col("side") == -1)["price"].to_list() == [102.0]
    # the 2nd replays alone to the book the whole month ends with
    alone, whole = replay([sl.days[1]]), replay(list(sl.days))
    assert alone.as_dict() == whole.as_dict() == {
        "bids": {100.0: 2.0, 99.5: 1.0, 99.0: 2.0}, "asks": {101.5: 0.5, 102.0: 3.0}}

    again = build_book(lake, SYM, MONTH)  # same sources, same code: not rebuilt
    assert again.status == "reused" and again.sha256 == b.sha256


def test_l3_month_is_labelled_depth_l3(lake):
    orders = [(1, 1, 100.0, 1.0), (2, 1, 100.0, 0.5), (3, -1, 101.0, 2.0)]
    s = Script().snapshot({}, {}, seq=1, orders=orders)
    s.update([("delete", 1, 100.0, 0.0, 1), ("add", -1, 101.0, 1.0, 4)], seq=2)
    land(lake, SYM, s.frame())
    b = build_book(lake, SYM, MONTH)
    assert b.level == DEPTH_L3 and _manifest(lake)["level"] == DEPTH_L3
    book = replay(list(book_slice(lake, SYM, MONTH).days))
    assert book.orders() == {2: (1, 100.0, 0.5), 3: (-1, 101.0, 2.0), 4: (-1, 101.0, 1.0)}


def test_updates_before_the_first_snapshot_are_quarantined_then_the_book_starts(lake):
    s = Script()
    s.update([(1, 100.0, 9.0)], seq=5)  # no continuity fields: Tardis-like, nothing to reach back to
    s.update([(1, 98.0, 9.0)], seq=6)
    s.snapshot(BIDS, ASKS, seq=7)
    s.update([(1, 100.0, 3.0)], seq=8)
    land(lake, SYM, s.frame())
    b = build_book(lake, SYM, MONTH)
    assert _check(b, "book_starts_with_snapshot").passed
    q = _quarantine(lake)
    assert q.height == 2 and q["reject_reason"].str.contains("before the first snapshot").all()
    assert q["src_line"].to_list() == [1, 2] and q["source"].str.ends_with("depth.parquet").all()
    day = pl.read_parquet(lake.book_days(SYM, MONTH)[0])
    assert day["is_snapshot"][0] and 98.0 not in day["price"].to_list()
    assert replay([day]).as_dict()["bids"] == {100.0: 3.0, 99.0: 2.0}


def test_updates_without_any_snapshot_block(lake):
    s = Script().update([(1, 100.0, 1.0)], seq=1).update([(-1, 101.0, 1.0)], seq=2)
    land(lake, SYM, s.frame())
    with pytest.raises(BookBlocked, match="book_starts_with_snapshot") as err:
        build_book(lake, SYM, MONTH)
    assert not _check_of(err.value, "book_starts_with_snapshot").passed
    assert not lake.book_month_dir(SYM, MONTH).exists()


def _check_of(exc: BookBlocked, name: str):
    return next(o for o in exc.outcomes if o.name == name)


def _published_state(lake) -> dict:
    d = lake.book_month_dir(SYM, MONTH)
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad, check", [
    ([(1, 101.5, 1.0)], "book_not_crossed"),        # a bid above the best ask: crossed after the update
    ([(-1, 103.0, -2.0)], "book_sizes_non_negative"),
])
def test_blocking_failure_keeps_the_published_partition(lake, bad, check):
    s = Script().snapshot(BIDS, ASKS, seq=10).update([(1, 100.0, 2.0)], seq=11, first=11)
    land(lake, SYM, s.frame(), "a.parquet")
    build_book(lake, SYM, MONTH)
    before = _published_state(lake)

    later = Script(t0=JAN_NS + 3 * DAY_NS).update(bad, seq=12, first=12)
    land(lake, SYM, later.frame(), "b.parquet")
    with pytest.raises(BookBlocked, match=check) as err:
        build_book(lake, SYM, MONTH)
    detail = _check_of(err.value, check).detail
    assert "b.parquet line 1" in detail
    assert _published_state(lake) == before  # never replaced on a blocking failure
    q = _quarantine(lake)
    assert q["source"].to_list() == ["landing/BTCUSDT/b.parquet"] and q["reject_reason"][0].startswith("blocking: ")


def test_sequence_gap_resets_at_the_next_snapshot_and_is_recorded(lake):
    s = Script().snapshot(BIDS, ASKS, seq=10)
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    s.update([(1, 99.0, 5.0)], seq=15, first=14)       # U=14, expected 12: a gap (12..13 lost)
    s.update([(-1, 101.0, 7.0)], seq=16, first=16)     # held back for the next snapshot, which holds it
    s.snapshot({100.0: 4.0}, {101.0: 1.0}, seq=20)     # the book resets here
    s.update([(1, 100.0, 6.0)], seq=21, first=21)
    land(lake, SYM, s.frame())

    b = build_book(lake, SYM, MONTH)
    assert _check(b, "book_gaps_recovered").passed and not _check(b, "book_gaps").passed
    (gap,) = b.gaps
    assert gap["kind"] == "sequence gap" and gap["recovered"] and gap["rows"] == 1  # 15: lost (16 is in the snapshot)
    assert (gap["last_seq"], gap["expected"], gap["got"]) == (11, 12, 14)
    t_gap, t_snap = JAN_NS + 3_000_000, JAN_NS + 5_000_000
    assert (gap["start_ns"], gap["end_ns"]) == (t_gap, t_snap)
    assert _manifest(lake)["gaps"] == b.gaps and gap_spans(lake, SYM, MONTH) == [(t_gap, t_snap)]

    q = _quarantine(lake).sort("src_line")
    assert q.height == 2
    assert q["reject_reason"][0].startswith("sequence gap: expected 12, got 14")
    # Binance's procedure: updates held back during the gap that the snapshot already holds are dropped
    assert q["reject_reason"][1] == "already in the snapshot (snapshot seq 20, this message 16)"

    day = pl.read_parquet(lake.book_days(SYM, MONTH)[0])
    resets = day.filter((pl.col("flags") & F_GAP_RESET) > 0)
    assert resets.height == 1 and resets["action"][0] == "clear" and resets["ts_recv"][0] == t_snap
    assert not {5.0, 7.0} & set(day["size"].to_list())  # never papered over
    assert replay([day]).as_dict() == {"bids": {100.0: 6.0}, "asks": {101.0: 1.0}}
    from quant_assets.lake.duck import connect

    con = connect(lake)  # the views: the book's rows, its quarantine beside the ticks'
    assert con.sql("SELECT count(*) FROM book WHERE day = '01'").fetchall()[0][0] == day.height
    assert con.sql("SELECT count(*) FROM quarantine WHERE \"table\" = 'book'").fetchall()[0][0] == 2


def test_futures_pu_continuity(lake):
    s = Script().snapshot(BIDS, ASKS, seq=100)
    s.update([(1, 100.0, 2.0)], seq=105, first=95, prev=99)    # straddles the snapshot (U <= L <= u)
    s.update([(1, 100.0, 3.0)], seq=110, first=106, prev=105)  # pu = previous u: fine
    s.update([(1, 100.0, 4.0)], seq=120, first=115, prev=112)  # pu 112 != 110: a gap
    land(lake, SYM, s.frame())
    with pytest.raises(BookBlocked, match="book_gaps_recovered"):  # no snapshot after it this month
        build_book(lake, SYM, MONTH)
    q = _quarantine(lake)
    assert q.height == 1 and q["reject_reason"][0].startswith("sequence gap: expected 110, got 112")


def test_snapshot_older_than_the_updates_that_follow(lake):
    s = Script().snapshot(BIDS, ASKS, seq=10)
    s.update([(1, 100.0, 2.0)], seq=30, first=25)  # U=25 > L+1=11: the snapshot is too old for it
    s.update([(1, 100.0, 3.0)], seq=31, first=31)
    s.snapshot({100.0: 1.0}, {101.0: 1.0}, seq=40)
    s.update([(1, 100.0, 8.0)], seq=41, first=41)
    land(lake, SYM, s.frame())
    b = build_book(lake, SYM, MONTH)
    (gap,) = b.gaps
    assert gap["kind"] == "snapshot older than the updates that follow" and gap["recovered"]
    q = _quarantine(lake).sort("src_line")
    assert q["reject_reason"][0].startswith("snapshot older than the updates that follow: snapshot seq 10, "
                                            "the next update starts at 25")
    assert q.height == 2
    assert replay(list(book_slice(lake, SYM, MONTH).days)).as_dict() == {"bids": {100.0: 8.0}, "asks": {101.0: 1.0}}


def test_snapshot_older_than_applied_updates_is_skipped(lake):
    s = Script().snapshot(BIDS, ASKS, seq=10)
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    s.snapshot({100.0: 9.0}, {101.0: 9.0}, seq=5)  # a stale snapshot arriving late
    s.update([(1, 100.0, 3.0)], seq=12, first=12)
    land(lake, SYM, s.frame())
    build_book(lake, SYM, MONTH)
    q = _quarantine(lake)
    assert q.height == 3 and q["reject_reason"].str.contains("snapshot older than the updates already applied").all()
    assert replay(list(book_slice(lake, SYM, MONTH).days)).as_dict() == {
        "bids": {100.0: 3.0, 99.0: 2.0}, "asks": ASKS}


def test_landing_routes_a_book_parquet_to_the_book_table(lake):
    from quant_assets.ingest.build import build_partition
    from quant_assets.ingest.landing import survey, table_of, tables_of

    land(lake, SYM, Script().snapshot(BIDS, ASKS, seq=1).frame())
    (rec,) = survey(lake, SYM, table=None)
    assert (rec.format, rec.status, rec.months, table_of(rec), tables_of(rec)) == (
        "canonical_book_parquet", "staged", [MONTH], "book", ("book",))
    assert survey(lake, SYM) == []  # not a ticks file
    r = build_partition(lake, SYM, MONTH)  # its rows are not ticks: the ticks' one quote is the book's top
    assert (r.quotes, r.trades, r.quotes_from_book["rows"]) == (1, 0, 1)


def _materialize_book(instance):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from resources import CriticResource, LakeResource

    instance.add_dynamic_partitions("symbols", [SYM])
    return dg.materialize(ASSETS, selection=["book"], partition_key=f"{MONTH}|{SYM}", instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


def test_book_asset_reports_level_gaps_and_blocking_checks(lake, instance):
    s = Script().snapshot(BIDS, ASKS, seq=10).update([(1, 100.0, 2.0)], seq=11, first=11)
    s.update([(1, 99.0, 5.0)], seq=15, first=14)
    s.snapshot({100.0: 4.0}, {101.0: 1.0}, seq=20)
    land(lake, SYM, s.frame(), "a.parquet")
    res = _materialize_book(instance)
    assert res.success
    (mat,) = res.asset_materializations_for_node("book")
    md = mat.metadata
    assert md["level"].value == DEPTH_L2 and md["days"].value == 1 and md["quarantined_rows"].value == 1
    assert mat.tags["dagster/code_version"].startswith("book-v")
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert all(checks[n].passed for n in checks if n != "book_gaps")
    assert checks["book_gaps"].passed is False and checks["book_gaps"].severity.value == "WARN"
    assert checks["book_gaps"].metadata["gaps"].value[0]["kind"] == "sequence gap"
    published = _published_state(lake)

    land(lake, SYM, Script(t0=JAN_NS + 2 * DAY_NS).update([(-1, 99.0, 1.0)], seq=21, first=21).frame(), "b.parquet")
    res = _materialize_book(instance)
    assert not res.success
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert checks["book_not_crossed"].passed is False and "b.parquet line 1" in checks["book_not_crossed"].metadata["detail"].value
    assert _published_state(lake) == published


def _top_script() -> Script:
    """Tops after each message: (100 x 1 | 101 x 1.5), (100 x 2 | 101 x 1.5), (100 x 2 | 102 x 3)."""
    s = Script().snapshot(BIDS, ASKS, seq=10)
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    s.update([(1, 99.0, 2.5)], seq=12, first=12)   # below the top: no quote
    s.update([(-1, 101.0, 0.0)], seq=13, first=13)
    return s


def test_ticks_quotes_derived_from_the_book_when_no_quote_file(lake):
    from quant_assets.ingest.build import build_partition, expected_fingerprint
    from quant_assets_tests import builders as tb

    land(lake, SYM, _top_script().frame())
    tb.write(lake.landing_dir(SYM) / "trades.csv", tb.binance_trades_csv(3, t0_ms=JAN_NS // 1_000_000 + 10))
    r = build_partition(lake, SYM, MONTH)
    assert (r.quotes, r.trades) == (3, 3)
    assert r.quotes_from_book["rows"] == 3 and r.quotes_from_book["level"] == DEPTH_L2
    assert [x.path for x in r.book_sources] == ["landing/BTCUSDT/depth.parquet"]
    q = pl.read_parquet(r.path).filter(pl.col("kind") == "quote")
    assert q.select("bid_px", "bid_sz", "ask_px", "ask_sz").rows() == [
        (100.0, 1.0, 101.0, 1.5), (100.0, 2.0, 101.0, 1.5), (100.0, 2.0, 102.0, 3.0)]
    assert q["ts_recv"].to_list() == [JAN_NS + 1_000_000, JAN_NS + 2_000_000, JAN_NS + 4_000_000]
    # the depth file is an input of the ticks: sync and the sensor see the same fingerprint
    assert expected_fingerprint(lake, SYM, MONTH) == r.source_fingerprint


def test_quote_file_compared_with_the_book_top(lake):
    from quant_assets.book.l1 import compare_quotes, quotes_vs_book
    from quant_assets.ingest.build import build_partition
    from quant_assets_tests import builders as tb

    land(lake, SYM, _top_script().frame())
    ms = JAN_NS // 1_000_000
    quotes = [(1, "100.00", "1.0", "101.00", "1.5"), (2, "100.00", "2.0", "101.00", "1.5"),
              (4, "100.01", "2.0", "102.00", "3.0"),   # within a tick: agrees
              (5, "100.00", "2.0", "105.00", "1.0")]   # 3 away from the book's ask: disagrees
    text = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n" + "".join(
        f"{9000 + i},{b},{bq},{a},{aq},{ms + t},{ms + t}\n" for i, (t, b, bq, a, aq) in enumerate(quotes))
    tb.write(lake.landing_dir(SYM) / "BTCUSDT-bookTicker-2024-01.csv", text)
    r = build_partition(lake, SYM, MONTH)
    assert r.quotes == 4 and r.quotes_from_book is None  # a quote file: nothing derived
    out = quotes_vs_book(lake, SYM, MONTH, r.path, 0.01)
    assert (out["compared"], out["agree"], out["share"]) == (4, 3, 0.75)
    assert compare_quotes(lake, SYM, MONTH, r.path, None)["share"] is None  # unknown tick size: null, with reason


def test_ticks_asset_compares_quotes_with_the_book(lake, instance):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from resources import CriticResource, LakeResource
    from quant_assets_tests import builders as tb

    land(lake, SYM, _top_script().frame())
    ms = JAN_NS // 1_000_000
    tb.write(lake.landing_dir(SYM) / "BTCUSDT-bookTicker-2024-01.csv",
             "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"
             f"9000,100.00,1.0,101.00,1.5,{ms + 1},{ms + 1}\n9001,100.00,2.0,105.00,1.0,{ms + 2},{ms + 2}\n")
    instance.add_dynamic_partitions("symbols", [SYM])
    res = dg.materialize(ASSETS, selection=["ticks"], partition_key=f"{MONTH}|{SYM}", instance=instance,
                         resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    assert res.success  # the comparison does not block
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    cmp = checks["quotes_match_book"]
    assert cmp.passed is False and cmp.severity.value == "WARN"
    assert (cmp.metadata["compared"].value, cmp.metadata["agree"].value, cmp.metadata["share"].value) == (2, 1, 0.5)
    assert all(checks[n].passed for n in checks if n not in ("quotes_match_book", "calendar_complete"))  # (one day of data)


def test_sync_runs_book_beside_ticks_every_month(lake, instance):
    from quant_assets import sync
    from quant_assets_tests import builders as tb

    land(lake, SYM, _top_script().frame())  # January: depth only (its quotes come from the book)
    tb.write(lake.landing_dir(SYM) / "BTCUSDT-bookTicker-2024-02.csv", tb.binance_bookticker_csv(4, t0_ms=tb.FEB_START_MS))
    ingest = {"ticks", "funding", "book"}
    slices = sync.discover(lake, instance)
    assert slices == [("2024-01", SYM), ("2024-02", SYM)]

    def plan() -> dict:
        return {(s.asset.path[-1], s.month): s.state
                for s in sync.plan(lake, instance, slices, assets=lambda k: k.path[-1] in ingest)}

    before = plan()
    assert before[("book", "2024-01")] == before[("book", "2024-02")] == "missing"
    for month, _symbol, result in sync.run_slices(instance, sync.plan(lake, instance, slices,
                                                                     assets=lambda k: k.path[-1] in ingest)):
        assert result.success, month
    after = plan()
    assert after[("book", "2024-01")] == after[("ticks", "2024-01")] == "materialized"
    # February has no depth file: its book partition records "none" (L1 only), as funding
    # records "not applicable" for spot, so backtests that read the book never wait for it.
    assert after[("book", "2024-02")] == "materialized"
    assert lake.book_days(SYM, "2024-01") and lake.ticks_path(SYM, "2024-01").exists()


def test_bars_carry_book_features_null_with_the_reason(lake):
    import numpy as np

    from quant_assets.book.features import book_features
    from quant_assets.research.run import run_bars
    from quant_assets_tests import builders as tb

    minute = 60_000_000_000
    s = Script().snapshot({100.0: 3.0, 99.0: 1.0}, {101.0: 1.0, 102.0: 1.0}, seq=10)  # minute 0
    s.update([(1, 100.0, 1.0), (1, 99.0, 3.0)], seq=11, first=11, t=JAN_NS + minute + 5)  # minute 1
    s.update([(1, 100.0, 2.0)], seq=15, first=14, t=JAN_NS + 2 * minute + 5)  # minute 2: a gap
    s.snapshot({100.0: 1.0}, {100.5: 1.0}, seq=20, t=JAN_NS + 3 * minute + 5)  # minute 3: reset
    land(lake, SYM, s.frame())
    ms = JAN_NS // 1_000_000
    tb.write(lake.landing_dir(SYM) / "trades.csv", tb.binance_trades_csv(4, t0_ms=ms + 10, step_ms=60_000))
    from quant_assets.ingest.build import build_partition

    build_partition(lake, SYM, MONTH)
    bars = run_bars(lake, SYM, MONTH, "1m").bars.sort("ts")
    assert bars["ts"].to_list() == [JAN_NS + k * minute for k in range(4)]
    b0, b1, b2, b3 = bars.iter_rows(named=True)
    # minute 0 closes on the snapshot: 5 levels each side; bid depth 4, ask depth 2
    assert b0["book_reason"] is None and b0["book_imbalance"] == pytest.approx((4 - 2) / 6)
    assert b0["microprice"] == pytest.approx((100.0 * 1.0 + 101.0 * 3.0) / 4.0)
    assert (b0["depth_bid_bps"], b0["depth_ask_bps"]) == (0.0, 0.0)  # mid 100.5 +- 10 bps: 100.3995..100.6005
    wide = book_features(lake, SYM, MONTH, np.array([JAN_NS + minute]), JAN_NS + 5 * minute, bps=100.0)
    assert wide.select("depth_bid_bps", "depth_ask_bps").row(0) == (3.0, 1.0)  # 99.495..101.505
    assert b1["book_imbalance"] == pytest.approx((4 - 2) / 6) and b1["microprice"] == pytest.approx(100.5)  # top sizes now equal
    assert b2["book_reason"].startswith("inside a gap of the book") and b2["microprice"] is None
    assert b3["book_reason"] is None and b3["microprice"] == pytest.approx(100.25)

    # a month without a book: every feature null, with the reason
    tb.write(lake.landing_dir(SYM) / "feb.csv", tb.binance_trades_csv(2, t0_ms=tb.FEB_START_MS, start_id=90))
    build_partition(lake, SYM, "2024-02")
    feb = run_bars(lake, SYM, "2024-02", "1m").bars
    assert feb["book_reason"].unique().to_list() == ["no book for the month"] and feb["microprice"].null_count() == feb.height


def test_databento_sequence_holes_are_normal_a_bad_row_is_a_gap(lake, monkeypatch):
    # Databento's per-channel sequence ("increasing" continuity): holes are normal; a decrease is
    # a duplicate; a message with a rejected row (a venue's bad-book flag) makes the book unknown.
    from quant_assets.book import staging

    monkeypatch.setattr(staging, "continuity_of", lambda fmt, facts: "increasing")
    s = Script().snapshot(BIDS, ASKS, seq=100)
    s.update([(1, 100.0, 2.0)], seq=105)            # a hole: fine
    s.update([(1, 100.0, 9.0)], seq=103)            # not above 105: a duplicate, no gap
    s.update([(1, 99.0, 4.0)], seq=110)
    s.update([(-1, 101.0, 3.0)], seq=111)           # its action is made unreadable below
    s.update([(-1, 102.0, 5.0)], seq=112)           # unknown book
    s.snapshot({100.0: 1.0}, {101.0: 1.0}, seq=120)
    frame = s.frame().with_columns(pl.col("action").cast(pl.String))
    frame = frame.with_columns(pl.when(pl.col("seq") == 111).then(pl.lit("modify?")).otherwise(pl.col("action")).alias("action"))
    land(lake, SYM, frame)
    b = build_book(lake, SYM, MONTH)
    (gap,) = b.gaps
    assert gap["kind"] == "unreadable row in a stream without sequence numbers" and gap["recovered"]
    q = _quarantine(lake).sort("src_line")
    reasons = dict(zip(q["src_line"].to_list(), q["reject_reason"].to_list()))
    assert reasons[7].startswith("duplicate or out of order: seq 103 not above the last applied 105")
    assert "inside a gap" in reasons[10]
    assert replay(list(book_slice(lake, SYM, MONTH).days)).as_dict() == {"bids": {100.0: 1.0}, "asks": {101.0: 1.0}}


def test_landing_sensor_runs_book_beside_ticks_for_a_depth_file(lake, instance):
    import os
    import time

    import dagster as dg

    from quant_assets.definitions import defs
    from quant_assets.sensors import landing_sensor
    from resources import CriticResource, LakeResource

    path = land(lake, SYM, _top_script().frame())
    old = time.time() - 60
    os.utime(path, (old, old))  # settled: the sensor takes it
    def evaluate(cursor=None):
        with dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, cursor=cursor,
                                     resources={"lake": LakeResource(), "critic": CriticResource()}) as ctx:
            return landing_sensor(ctx)

    res = evaluate()
    (req,) = res.run_requests
    assert str(req.partition_key) == f"{MONTH}|{SYM}" and req.run_key.startswith("book:")
    assert sorted(k.to_user_string() for k in req.asset_selection) == ["book", "funding", "ticks"]

    # a quote file: its run builds the book too (every slice has one: "none" without depth files)
    from quant_assets_tests import builders as tb

    for name, t0 in (("jan.csv", tb.JAN_MS), ("feb.csv", tb.FEB_START_MS)):
        p = tb.write(lake.landing_dir(SYM) / name, tb.binance_bookticker_csv(2, t0_ms=t0))
        os.utime(p, (old, old))
    sel = {str(r.partition_key): sorted(k.to_user_string() for k in r.asset_selection)
           for r in evaluate(res.cursor).run_requests}
    assert sel == {f"{MONTH}|{SYM}": ["book", "funding", "ticks"], f"2024-02|{SYM}": ["book", "funding", "ticks"]}


def test_a_month_starts_from_the_book_carried_over_from_the_snapshot_before_it(lake):
    feb = JAN_NS + 31 * DAY_NS
    s = Script(t0=feb - 10 * DAY_NS).snapshot(BIDS, ASKS, seq=10)   # January 22nd
    s.update([(1, 100.0, 2.0)], seq=11, first=11)
    s.update([(-1, 101.0, 0.0)], seq=12, first=12, t=feb + 5)      # February 1st: no snapshot in February
    land(lake, SYM, s.frame())
    b = build_book(lake, SYM, "2024-02")
    assert [w.path for w in b.warmup] == [] and [r.path for r in b.sources] == ["landing/BTCUSDT/depth.parquet"]
    (day,) = b.days
    assert (day["day"], day["opening"]) == ("01", "carried")
    rows = pl.read_parquet(lake.book_days(SYM, "2024-02")[0])
    assert rows["is_snapshot"][0] and rows["ts_recv"].min() == feb + 5  # nothing of January is published in February
    assert replay([rows]).as_dict() == {"bids": {100.0: 2.0, 99.0: 2.0}, "asks": {102.0: 3.0}}


def test_warm_up_reads_the_previous_months_file(lake):
    feb = JAN_NS + 31 * DAY_NS
    land(lake, SYM, Script(t0=feb - DAY_NS).snapshot(BIDS, ASKS, seq=10).update([(1, 100.0, 2.0)], seq=11, first=11).frame(),
         "jan.parquet")
    land(lake, SYM, Script(t0=feb + 5).update([(-1, 101.0, 0.0)], seq=12, first=12, t=feb + 5).frame(), "feb.parquet")
    b = build_book(lake, SYM, "2024-02")
    assert [w.path for w in b.warmup] == ["landing/BTCUSDT/jan.parquet"] and b.gaps == []
    assert replay(list(book_slice(lake, SYM, "2024-02").days)).as_dict() == {
        "bids": {100.0: 2.0, 99.0: 2.0}, "asks": {102.0: 3.0}}
    assert _manifest_of(lake, "2024-02")["warmup"][0]["path"] == "landing/BTCUSDT/jan.parquet"


def _manifest_of(lake, month: str) -> dict:
    return json.loads((lake.book_month_dir(SYM, month) / "manifest.json").read_text())


def test_another_instruments_rows_are_left_out_of_the_book_not_a_gap(lake):
    # A DBN file holds records of several instruments (a parent-symbol request): the one of
    # instrument 43 is not this book's (its sequence is another channel's), so it is kept in the
    # staging quarantine with its reason and never starts a gap (with Databento's "increasing"
    # continuity a wholly rejected message of this book would).
    from quant_assets_tests import builders as tb

    tb.write(lake.landing_dir("ESH4") / "glbx-mbp10.dbn", tb.dbn_file("mbp-10", tb.dbn_mbp10_records()))
    b = build_book(lake, "ESH4", MONTH)
    assert b.level == DEPTH_L2 and b.gaps == [] and all(o.passed for o in b.outcomes)
    assert replay(list(book_slice(lake, "ESH4", MONTH).days)).as_dict() == {"bids": {100.0: 3.0}, "asks": {100.25: 7.0}}
    (q,) = lake.root.glob("quarantine/symbol=ESH4/book-src=*.parquet")
    assert pl.read_parquet(q)["reject_reason"].to_list() == ["record of instrument 43 (?), not the landing folder's ESH4"]


_FORMAT_FILES = {  # format -> (landing folder, file name, content builder, level)
    "binance capture, futures (pu)": ("BTCUSDT-PERP", "btcusdt_20240101.txt", lambda tb: tb.binance_capture(n=8, levels=2, futures=True), DEPTH_L2),
    "binance capture, spot (U/u)": ("BTCUSDT", "btcusdt_20240101.txt", lambda tb: tb.binance_capture(n=8, levels=2, futures=False), DEPTH_L2),
    "binance depth csv": ("BTCUSDT-PERP", "BTCUSDT_T_DEPTH_2024-01-01.csv", lambda tb: tb.binance_depth_csv(futures=True), DEPTH_L2),
    "tardis incremental_book_L2": ("BTCUSDT-PERP", "binance-futures_incremental_book_L2_2024-01-01_BTCUSDT.csv",
                                   lambda tb: tb.tardis_incremental_l2_csv(), DEPTH_L2),
    "tardis book_snapshot_25": ("BTCUSDT-PERP", "binance-futures_book_snapshot_25_2024-01-01_BTCUSDT.csv",
                                lambda tb: tb.tardis_book_snapshot_csv(depth=25), DEPTH_L2),
    "databento mbp-10": ("ESH4", "glbx-mbp10.dbn", lambda tb: tb.dbn_file("mbp-10", tb.dbn_mbp10_records()), DEPTH_L2),
    # (the records before the deliberately unknown order's cancel: a clean file)
    "databento mbo": ("ESH4", "glbx-mbo.dbn.zst", lambda tb: tb.dbn_file("mbo", tb.dbn_mbo_records()[:7], zstd=True), DEPTH_L3),
}


@pytest.mark.parametrize("name", list(_FORMAT_FILES))
def test_each_source_format_lands_validates_and_publishes_a_book(lake, name):
    # A landing file of every source format, recognised by content, staged, built: every blocking
    # check passes, no gap, and the published days replay alone to the stream's final book.
    from quant_assets_tests import builders as tb

    folder, file_name, content, level = _FORMAT_FILES[name]
    tb.write(lake.landing_dir(folder) / file_name, content(tb))
    b = build_book(lake, folder, MONTH)
    assert b.status == "applied" and b.level == level and b.gaps == [], (b.gaps, b.outcomes)
    assert all(o.passed for o in b.outcomes), [o for o in b.outcomes if not o.passed]
    got = book_slice(lake, folder, MONTH)
    assert got is not None and got.level == level
    final = replay(list(got.days)).as_dict()
    assert final["bids"] or final["asks"]
    assert not (final["bids"] and final["asks"]) or max(final["bids"]) < min(final["asks"])


def test_a_websocket_capture_backtests_on_both_engines_on_its_own_depth(lake):
    # One hftbacktest-collector capture feeds both tables (its bookTicker and trade messages are
    # the ticks, its depth diffs the book); hftbacktest's market maker queues on that book and
    # NautilusTrader's ema_cross (depth "optional") matches against it: both say depth-L2 and
    # name the book they read.
    from quant_assets.engines.runner import run_backtest
    from quant_assets.ingest.build import build_partition
    from quant_assets.strategies.registry import EMA_CROSS, MARKET_MAKER
    from quant_assets_tests import builders as tb

    perp = "BTCUSDT-PERP"
    tb.write(lake.landing_dir(perp) / "btcusdt_20240101.txt", tb.binance_capture(n=600, levels=5, futures=True))
    from quant_assets.lake import instruments as inst_mod

    inferred = []
    # as the ticks asset does: the month's instrument record is inferred from the candidate
    ticks = build_partition(lake, perp, MONTH, check=lambda candidate, sources: inferred.append(
        inst_mod.for_candidate(lake, perp, MONTH, candidate, [r.format for r in sources])[0]))
    inst_mod.record_inferred(lake, inferred[-1], MONTH)
    assert ticks.quotes > 0 and ticks.trades > 0
    assert build_book(lake, perp, MONTH).gaps == []
    runs = {
        "hftbacktest": run_backtest(lake, MARKET_MAKER, perp, MONTH),
        "nautilus": run_backtest(lake, EMA_CROSS.with_values({"fast_period": 2, "slow_period": 4, "bar_s": 0, "notional": 100.0}),
                                 perp, MONTH),
    }
    for engine, out in runs.items():
        m = out.manifest
        assert m["engine"].startswith(engine) and m["fidelity"] == "depth-L2", (engine, m["fidelity"])
        assert m["book"]["level"] == "depth-L2" and m["book"]["days"] == ["book/symbol=BTCUSDT-PERP/month=2024-01/day=01/part-0.parquet"]
        assert all(c["passed"] for c in m["checks"].values()), m["checks"]
    assert runs["nautilus"].manifest["counters"]["book_deltas"] > 0
