"""Calendar coverage of ticks partitions (quant_assets.ingest.coverage), the ``calendar_complete``
check on ``ticks`` (warn by default, block with QUANT_GAPS=block) and the gaps in ``status``.
Tiny partitions made in code: one quote and one trade at noon UTC of each listed day."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl
import pytest

from quant_assets.assets.ticks import CALENDAR_COMPLETE
from quant_assets.cli import main
from quant_assets.definitions import ASSETS
from quant_assets.ingest import coverage as cov
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.ingest.validate import month_start_ns
from quant_assets.lake.schema import TICK_SCHEMA
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource

NOON = 12 * 3600 * 1_000_000_000
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # every month of these tests is long over


def _write(lake, symbol: str, month: str, days: dict[str, list[int]]):
    """A ticks partition with one row of each kind at noon of each of its days."""
    t0 = month_start_ns(month)
    rows = [(t0 + (d - 1) * cov.NS_PER_DAY + NOON + i, kind) for kind, ds in days.items() for i, d in enumerate(ds)]
    rows.sort()
    frame = pl.DataFrame({"ts_event": [t for t, _ in rows], "kind": [k for _, k in rows]}).with_columns(
        ts_recv=pl.col("ts_event"), seq=pl.int_range(pl.len()), bid_px=1.0, bid_sz=1.0, ask_px=1.1, ask_sz=1.0,
        price=1.05, size=1.0, side=1, trade_id=pl.lit("t"),
    ).select(list(TICK_SCHEMA)).cast(TICK_SCHEMA)  # type: ignore[arg-type]
    lake.write_parquet(frame, lake.ticks_path(symbol, month))


def _coverage(lake, symbol, month, calendar="crypto", now=LATER, days=None):
    if days is not None:
        _write(lake, symbol, month, days)
    return cov.of_partition(lake, symbol, month, calendar, now=now)


def test_a_missing_day_is_reported_per_kind_and_as_an_empty_day(lake):
    every = [d for d in range(1, 32) if d != 10]
    c = _coverage(lake, "BTCUSDT", "2024-03", days={"quote": every, "trade": every})
    assert c.gaps and not c.in_progress and c.judged_through == "2024-03-31"
    assert c.missing == {"quote": [10], "trade": [10]} and c.empty_days == [10] and c.stopped == {}
    assert c.days_covered == every and c.kinds["trade"]["rows"] == 30
    assert "quote missing on day 10" in c.summary() and "no row at all on days 10" in c.summary()
    # the whole month covered: no gap
    full = _coverage(lake, "BTCUSDT", "2024-04", days={"quote": list(range(1, 31)), "trade": list(range(1, 31))})
    assert not full.gaps and full.missing == {} and "every expected day covered" in full.summary()


def test_a_quote_stream_that_stops_mid_month_while_trades_go_on(lake):
    # Binance's USD-M bookTicker stopped being published while its trades continue
    c = _coverage(lake, "BTCUSDT-PERP", "2024-03", days={"quote": list(range(1, 15)), "trade": list(range(1, 32))})
    assert c.gaps and c.stopped == {"quote": {"last_day": 14, "expected_days_after": 17, "others": "trade", "others_last_day": 31}}
    assert c.missing == {"quote": list(range(15, 32))} and c.empty_days == []
    assert c.summary() == "BTCUSDT-PERP 2024-03 (crypto calendar): quote stopped after day 14 (trade continue to day 31)"
    # one last day without quotes is a missing day, not a stopped stream
    one = _coverage(lake, "BTCUSDT-PERP", "2024-04", days={"quote": list(range(1, 30)), "trade": list(range(1, 31))})
    assert one.missing == {"quote": [30]} and one.stopped == {}


def test_an_fx_month_with_empty_weekends_has_no_gap_and_a_missing_weekday_is_one(lake):
    # March 2024: Saturdays 2, 9, 16, 23, 30; Sundays 3, 10, 17, 24, 31
    weekdays = [d for d in range(1, 32) if dt.date(2024, 3, d).weekday() < 5]
    assert cov.calendar_of("fx") == "fx" and cov.calendar_of("spot", "BINANCE") == "crypto"
    assert cov.calendar_of("future", "GLBX") == "exchange" and cov.calendar_of("future", "SIM", ["databento_dbn_mbp10"]) == "exchange"
    c = _coverage(lake, "EURUSD", "2024-03", "fx", days={"quote": weekdays})
    assert not c.gaps and c.expected_days == weekdays and "Sun 22:00 -> Fri 22:00 UTC" in c.rule
    # the same weekends on the crypto calendar are holes
    assert _coverage(lake, "EURUSD", "2024-03", "crypto").empty_days == [2, 3, 9, 10, 16, 17, 23, 24, 30, 31]
    # a Sunday evening's ticks (the week's open) count as covered, never as expected
    with_sunday = _coverage(lake, "EURUSD", "2024-03", "fx", days={"quote": [*weekdays, 10]})
    assert not with_sunday.gaps and 10 in with_sunday.days_covered
    # a missing Wednesday is a gap
    hole = _coverage(lake, "EURUSD", "2024-03", "fx", days={"quote": [d for d in weekdays if d != 13]})
    assert hole.missing == {"quote": [13]}


def test_the_current_month_is_judged_up_to_a_day_before_now_and_says_it_is_in_progress(lake):
    now = dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC)  # day 14 is over at 15 00:00, within a day of now
    c = _coverage(lake, "BTCUSDT", "2024-03", now=now, days={"quote": list(range(1, 14)), "trade": list(range(1, 16))})
    assert c.in_progress and c.judged_through == "2024-03-13" and c.expected_days == list(range(1, 14))
    assert not c.gaps  # the days after the 13th are not over yet: never missing
    # quotes ending two days before the trades do is a stop, even within the current month
    stop = _coverage(lake, "BTCUSDT", "2024-03", now=now, days={"quote": list(range(1, 13)), "trade": list(range(1, 16))})
    assert stop.missing == {"quote": [13]} and stop.stopped["quote"]["last_day"] == 12
    # nothing about a past month depends on when it is judged
    past = {"quote": list(range(1, 30)), "trade": list(range(1, 30))}
    feb = [_coverage(lake, "BTCUSDT", "2024-02", now=t, days=past).to_json() for t in (now, LATER)]
    assert feb[0] == feb[1] and not feb[0]["in_progress"]  # (the same bytes: a rebuild rewrites the same coverage.json)
    # a month none of whose days is over yet
    future = _coverage(lake, "BTCUSDT", "2024-04", now=now, days={"trade": [1]})
    assert future.in_progress and future.judged_through is None and not future.gaps


def test_book_days_are_compared_with_tick_days_as_coverage(lake):
    _write(lake, "BTCUSDT", "2024-03", {"trade": list(range(1, 32))})
    for day in ("01", "02", "05"):  # depth on three days
        lake.write_parquet(pl.DataFrame({"x": [1]}), lake.book_day_path("BTCUSDT", "2024-03", day))
    lake.write_json({}, lake.book_month_dir("BTCUSDT", "2024-03") / "manifest.json")
    c = cov.of_partition(lake, "BTCUSDT", "2024-03", "crypto", now=LATER)
    assert c.book == {"days": [1, 2, 5], "book_only": [], "ticks_only": [d for d in range(1, 32) if d not in (1, 2, 5)]}
    assert not c.gaps  # depth on fewer days is coverage, not a gap


PK = "2024-01|BTCUSDT"


def _materialize(instance, selection):
    return dg.materialize(ASSETS, selection=selection, partition_key=PK, instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


@pytest.mark.parametrize("mode", ["warn", "block"])
def test_calendar_complete_warns_by_default_and_blocks_the_backtest_with_quant_gaps_block(lake, instance, monkeypatch, mode):
    if mode == "block":
        monkeypatch.setenv("QUANT_GAPS", "block")
    # trades of January 1st only: the other 30 days of the month have none
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(400))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = _materialize(instance, ["ticks", "backtest_ema_cross"])
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CALENDAR_COMPLETE]
    assert not check.passed and check.blocking
    assert check.metadata["missing_days"].value == {"trade": "2-31"} and check.metadata["days_covered"].value == {"trade": "1"}
    assert result.asset_materializations_for_node("ticks")  # the data is published either way
    saved = json.loads(lake.ticks_coverage_path("BTCUSDT", "2024-01").read_text())
    assert saved["missing"] == {"trade": list(range(2, 32))} and saved["calendar"] == "crypto"
    if mode == "warn":
        assert check.severity == dg.AssetCheckSeverity.WARN and result.success
        assert result.asset_materializations_for_node("backtest_ema_cross")
    else:
        assert check.severity == dg.AssetCheckSeverity.ERROR and not result.success
        assert not result.asset_materializations_for_node("backtest_ema_cross")
        assert not lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01").exists()


def test_a_synthetic_demo_month_has_no_gap(lake, instance):
    # what `quant-assets demo` lands (here 5,000 events a month, as the CLI test's demo): every day covered
    for symbol in ("BTCUSDT", "EURUSD"):
        write_landing(lake, SyntheticSpec(symbol, "2024-01", seed=3, events=5_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT", "EURUSD"])
    for symbol in ("BTCUSDT", "EURUSD"):
        res = dg.materialize(ASSETS, selection=["ticks"], partition_key=f"2024-01|{symbol}", instance=instance,
                             resources={"lake": LakeResource(), "critic": CriticResource()})
        (check,) = [e for e in res.get_asset_check_evaluations() if e.check_name == CALENDAR_COMPLETE]
        assert check.passed, check.description


def test_status_lists_the_slices_with_gaps_from_the_lake_alone(lake, instance, capsys):
    every = [d for d in range(1, 32) if d not in (10, 11, 12, 20)]
    for symbol, days in (("BTCUSDT", {"quote": list(range(1, 15)), "trade": every}), ("ETHUSDT", {"trade": list(range(1, 32))})):
        _write(lake, symbol, "2024-03", days)
        cov.write(lake, cov.of_partition(lake, symbol, "2024-03", "crypto", now=LATER))
    main(["status"])
    out = capsys.readouterr().out
    assert "calendar gaps: 1 of 2 ticks slice(s)" in out and "QUANT_GAPS=warn" in out
    rows = [line for line in out.splitlines() if "2024-03|BTCUSDT" in line and "crypto" in line]
    assert any("quote" in r and "15-31" in r and "14" in r for r in rows), out
    assert any("(any)" in r and "20" in r for r in rows), out
    assert any("trade" in r and "10-12, 20" in r for r in rows), out
    assert not any("ETHUSDT" in r and "crypto" in r for r in out.splitlines())
    from quant_assets.cli import _print_gaps

    _print_gaps(lake, ["ethusdt"], None)  # (what `status --symbol ethusdt` adds to its tables)
    assert "calendar coverage: 1 ticks slice(s) judged, no gaps" in capsys.readouterr().out
