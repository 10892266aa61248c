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
    from quant_assets.ingest.build import NoDataError, build_partition
    from quant_assets.ingest.landing import survey, table_of, tables_of

    land(lake, SYM, Script().snapshot(BIDS, ASKS, seq=1).frame())
    (rec,) = survey(lake, SYM, table=None)
    assert (rec.format, rec.status, rec.months, table_of(rec), tables_of(rec)) == (
        "canonical_book_parquet", "staged", [MONTH], "book", ("book",))
    assert survey(lake, SYM) == []  # not a ticks file
    with pytest.raises(NoDataError):  # its rows are not ticks (and it has no top changes: one snapshot)
        build_partition(lake, SYM, MONTH)


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
