"""Funding of perpetuals: parsers, landing routing, the funding table, bad input, settlement."""

from __future__ import annotations

import hashlib
import re

import dagster as dg
import polars as pl
import pytest

from quant_assets.definitions import ASSETS
from quant_assets.engines.result import EQUITY_SCHEMA, FILL_SCHEMA
from quant_assets.funding import parse
from quant_assets.funding.build import FundingError, build_funding, expected_fingerprint, load_funding
from quant_assets.funding.schema import FUNDING_SCHEMA, is_perpetual
from quant_assets.funding.settle import apply_funding, funding_summary, settle_funding, settle_run
from quant_assets.ingest.build import build_partition
from quant_assets.ingest.build import expected_fingerprint as ticks_fingerprint
from quant_assets.ingest.detect import plain_file
from quant_assets.ingest.errors import IngestError
from quant_assets.ingest.landing import survey
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake.duck import connect
from quant_assets.lake.manifest import read_manifest
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource

PERP = "BTCUSDT-PERP"
MAR_NS = b.MAR_MS * 1_000_000
H8_NS = 8 * 3_600 * 1_000_000_000
US = b.MAR_MS * 1000  # 2024-03-01T00:00Z in µs
H8_US = 8 * 3_600 * 1_000_000


def _read(path):
    with plain_file(path, path.parent) as text:
        found = parse.sniff(path, text)
        assert found is not None, path
        return found[0].name, parse.read(*found)


def _funding_file(lake, name: str, text: str | bytes, symbol: str = PERP):
    return b.write(lake.landing_dir(symbol) / name, text)


# ---- parsers ---------------------------------------------------------------------------------
def test_is_perpetual():
    assert is_perpetual("BTCUSDT-PERP") and is_perpetual("ethusdt-perp")
    assert not is_perpetual("BTCUSDT") and not is_perpetual("PERPUSDT")


@pytest.mark.parametrize("packing", ["plain", "zip", "gz"])
def test_binance_funding_rate_file(lake, packing):
    text = b.binance_funding_csv([0.0001, -0.00025, 0.0003], interval_h=4)
    data = {"plain": text, "zip": b.zipped("BTCUSDT-fundingRate-2024-03.csv", text), "gz": b.gzipped(text)}[packing]
    suffix = {"plain": ".csv", "zip": ".zip", "gz": ".csv.gz"}[packing]
    path = _funding_file(lake, f"BTCUSDT-fundingRate-2024-03{suffix}", data)
    (rec,) = survey(lake, PERP, table="funding")
    assert (rec.format, rec.status, rec.months, rec.rows_accepted) == ("binance_funding", "probed", ["2024-03"], 3)
    result = build_funding(lake, PERP, "2024-03")
    df = pl.read_parquet(result.path)
    assert dict(df.schema) == FUNDING_SCHEMA
    assert df["ts"].to_list() == [MAR_NS, MAR_NS + H8_NS // 2, MAR_NS + H8_NS]  # ms -> ns, 4 h apart
    assert df["rate"].to_list() == [0.0001, -0.00025, 0.0003]
    assert df["interval_h"].to_list() == [4.0] * 3
    assert df["mark_px"].null_count() == 3  # Binance files carry no mark
    assert df["source"].to_list() == [lake.relative(path)] * 3 and df["src_line"].to_list() == [2, 3, 4]
    assert (result.status, result.rows, result.intervals_h) == ("applied", 3, [4.0])
    assert result.rate_sum == pytest.approx(0.00015)


def test_tardis_derivative_ticker_events(tmp_path):
    rows = [
        (US - 2_000_000, US, 0.0001, 100.0),
        (US - 1_000, US, 0.0002, 101.0),         # the last rate before F=US: this event's rate
        (US + 500, US + H8_US, 0.0009, 102.0),   # after F: a rate for the next funding time
        (US - 500, US, 0.0007, None),            # exchange time before F but received late: counts, it is later
        (US + H8_US - 10, US + H8_US, 0.0004, 103.0),
        (US + H8_US + 20, US + 2 * H8_US, 0.0005, 104.0),  # file ends long before 2*H8: provisional, left out
        (US + H8_US + 30, None, None, 105.0),    # a row without funding fields is fine
    ]
    path = b.write(tmp_path / "binance-futures_derivative_ticker_2024-03-01_BTCUSDT.csv.gz", b.gzipped(b.tardis_derivative_ticker_csv(rows)))
    name, df = _read(path)
    assert name == "tardis_derivative_ticker"
    assert df["ts"].to_list() == [MAR_NS, MAR_NS + H8_NS]
    assert df["rate"].to_list() == [0.0007, 0.0004]
    # mark: the last mark_price at or before F (the row at US - 500 has none, US - 1000 has 101)
    assert df["mark_px"].to_list() == [101.0, 103.0]
    assert df["interval_h"].to_list() == [None, 8.0]
    assert df["src_line"].to_list() == [5, 6]


def test_tardis_event_at_midnight_comes_from_the_day_before(tmp_path):
    # a daily file ending just before its next funding time still settles it
    rows = [(US - 3_000_000, US, 0.0001, 100.0), (US - 100, US, 0.00012, 100.5)]
    name, df = _read(b.write(tmp_path / "t.csv", b.tardis_derivative_ticker_csv(rows)))
    assert df["ts"].to_list() == [MAR_NS] and df["rate"].to_list() == [0.00012] and df["mark_px"].to_list() == [100.5]


# ---- landing routing ---------------------------------------------------------------------------
def test_funding_file_beside_ticks_feeds_funding_not_ticks(lake):
    b.synthetic_parquet(lake.landing_dir(PERP) / "ticks.parquet", PERP, "2024-03", events=2_000)
    before = build_partition(lake, PERP, "2024-03")
    ticks_before = lake.ticks_path(PERP, "2024-03").read_bytes()
    fp_before = ticks_fingerprint(lake, PERP, "2024-03")
    path = _funding_file(lake, "BTCUSDT-fundingRate-2024-03.zip",
                         b.zipped("BTCUSDT-fundingRate-2024-03.csv", b.binance_funding_csv([0.0001] * 6)))
    after = build_partition(lake, PERP, "2024-03")  # stages new files: must leave the funding file alone
    assert lake.ticks_path(PERP, "2024-03").read_bytes() == ticks_before
    assert after.sha256 == before.sha256 and [r.path for r in after.sources] == [r.path for r in before.sources]
    assert ticks_fingerprint(lake, PERP, "2024-03") == fp_before  # sync sees no new tick source
    assert [r.path for r in survey(lake, PERP)] == [r.path for r in before.sources]  # the ticks view
    rec = read_manifest(lake)[lake.relative(path)]
    assert (rec.format, rec.status, rec.months) == ("binance_funding", "probed", ["2024-03"])
    assert not lake.staging_path(PERP, rec.sha256).exists()
    res = build_funding(lake, PERP, "2024-03")
    assert res.rows == 6 and [r.path for r in res.sources] == [lake.relative(path)]
    assert connect(lake).sql("SELECT symbol, month, count(*) FROM funding GROUP BY ALL").fetchall() == [(PERP, "2024-03", 6)]


def test_rows_of_other_months_go_to_their_month(lake):
    feb_end = b.MAR_MS - 8 * 3_600_000  # 2024-02-29T16:00Z
    _funding_file(lake, "f.csv", b.binance_funding_csv([0.0001, 0.0002, 0.0003], t0_ms=feb_end))
    (rec,) = survey(lake, PERP, table="funding")
    assert rec.months == ["2024-02", "2024-03"]
    feb, mar = build_funding(lake, PERP, "2024-02"), build_funding(lake, PERP, "2024-03")
    assert pl.read_parquet(feb.path)["rate"].to_list() == [0.0001]
    assert pl.read_parquet(mar.path)["rate"].to_list() == [0.0002, 0.0003]


def test_identical_duplicates_kept_once_conflicts_fail(lake):
    _funding_file(lake, "a.csv", b.binance_funding_csv([0.0001, 0.0002]))
    _funding_file(lake, "b.csv", b.binance_funding_csv([0.0002, 0.0003], t0_ms=b.MAR_MS + b.H8_MS))
    res = build_funding(lake, PERP, "2024-03")
    assert pl.read_parquet(res.path)["rate"].to_list() == [0.0001, 0.0002, 0.0003] and res.duplicates == 1
    published = res.path.read_bytes()
    _funding_file(lake, "c.csv", b.binance_funding_csv([0.0001, 0.0009]))  # line 3 disagrees with a.csv line 3
    with pytest.raises(FundingError, match=r"landing/BTCUSDT-PERP/a.csv line 3 says rate 0.0002.*c.csv line 3 says rate 0.0009"):
        build_funding(lake, PERP, "2024-03")
    assert res.path.read_bytes() == published


# ---- bad input -----------------------------------------------------------------------------------
def test_funding_file_in_a_spot_folder_is_refused(lake):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-03.csv", b.binance_trades_csv(3, t0_ms=b.MAR_MS))
    build_partition(lake, "BTCUSDT", "2024-03")
    ticks = lake.ticks_path("BTCUSDT", "2024-03").read_bytes()
    _funding_file(lake, "BTCUSDT-fundingRate-2024-03.csv", b.binance_funding_csv([0.0001]), symbol="BTCUSDT")
    recs = {r.path: r for r in survey(lake, "BTCUSDT")}
    bad = recs["landing/BTCUSDT/BTCUSDT-fundingRate-2024-03.csv"]
    assert bad.status == "failed" and bad.format == "binance_funding"
    assert "not a perpetual" in bad.error and "landing/BTCUSDT-PERP/" in bad.error
    with pytest.raises(FundingError, match=r"BTCUSDT is not a perpetual.*BTCUSDT-fundingRate-2024-03.csv"):
        build_funding(lake, "BTCUSDT", "2024-03")
    build_partition(lake, "BTCUSDT", "2024-03")
    assert lake.ticks_path("BTCUSDT", "2024-03").read_bytes() == ticks
    assert not lake.funding_root.exists()


def test_spot_without_funding_files_is_not_applicable(lake):
    assert build_funding(lake, "BTCUSDT", "2024-03").status == "not applicable"


def test_rate_out_of_range_fails_the_file_and_keeps_the_published_month(lake):
    _funding_file(lake, "a.csv", b.binance_funding_csv([0.0001, 0.0002]))
    res = build_funding(lake, PERP, "2024-03")
    published = res.path.read_bytes()
    _funding_file(lake, "b.csv", b.binance_funding_csv([0.0001, 0.0002, 0.07], t0_ms=b.MAR_MS + 2 * b.H8_MS))
    (rec,) = [r for r in survey(lake, PERP, table="funding") if r.path.endswith("b.csv")]
    assert rec.status == "failed"
    assert "line 4: funding rate outside ±0.05 per interval" in rec.error and "0.07" in rec.error
    with pytest.raises(FundingError, match=r"b.csv: line 4: funding rate outside"):
        build_funding(lake, PERP, "2024-03")
    assert res.path.read_bytes() == published


@pytest.mark.parametrize(("line", "expected"), [
    ("oops,8,0.0001", "unparseable funding time"),
    ("1709280000000,8,abc", "unparseable funding rate"),
    ("1709280000000,,0.0001", "unparseable funding_interval_hours"),
    ("1709280000000,30,0.0001", "funding interval not in (0, 24]"),
])
def test_unparseable_rows_name_file_and_line(tmp_path, line, expected):
    text = b.binance_funding_csv([0.0001]) + line + "\n"
    path = b.write(tmp_path / "BTCUSDT-fundingRate-2024-03.csv", text)
    with pytest.raises(IngestError, match=rf"BTCUSDT-fundingRate-2024-03.csv: line 3: {re.escape(expected)}.*got '{re.escape(line)}'"):
        _read(path)


def test_tardis_unparseable_row(tmp_path):
    text = b.tardis_derivative_ticker_csv([(US - 100, US, 0.0001, 100.0), (US + 10, US + H8_US, None, 101.0)])
    text = text.replace(f",{US + H8_US},,", f",{US + H8_US},x1,")
    with pytest.raises(IngestError, match=r"line 3: unparseable funding_rate"):
        _read(b.write(tmp_path / "t.csv", text))


def test_symbol_in_file_name_must_match_folder(lake):
    _funding_file(lake, "ETHUSDT-fundingRate-2024-03.csv", b.binance_funding_csv([0.0001]))
    (rec,) = survey(lake, PERP, table="funding")
    assert rec.status == "failed" and "file name says 'ETHUSDT'" in rec.error


# ---- the Dagster asset and the synthetic feed ------------------------------------------------------
def _materialize(instance, symbol: str, month: str = "2024-03"):
    instance.add_dynamic_partitions("symbols", [symbol])
    return dg.materialize(ASSETS, selection=["funding"], partition_key=f"{month}|{symbol}", instance=instance,
                          resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


def test_asset_metadata_and_data_version(lake, instance):
    write_landing(lake, SyntheticSpec(PERP, "2024-03", events=2_000))
    res = _materialize(instance, PERP)
    assert res.success
    (mat,) = res.asset_materializations_for_node("funding")
    md = mat.metadata
    assert md["funding_status"].value == "applied" and md["dagster/row_count"].value == 93  # 31 days x 3
    assert md["intervals_h"].value == [8.0]
    df = pl.read_parquet(lake.funding_path(PERP, "2024-03"))
    assert md["rate_sum"].value == pytest.approx(df["rate"].sum())
    assert abs(df["rate"].mean() - 0.0001) < 0.00003 and df["mark_px"].null_count() == 0
    assert mat.tags["dagster/data_version"] == hashlib.sha256(lake.funding_path(PERP, "2024-03").read_bytes()).hexdigest()[:24]
    assert md["source_fingerprint"].value == expected_fingerprint(lake, PERP, "2024-03")


def test_asset_missing_and_failure(lake, instance):
    b.synthetic_parquet(lake.landing_dir(PERP) / "ticks.parquet", PERP, "2024-03", events=500)
    res = _materialize(instance, PERP)
    (mat,) = res.asset_materializations_for_node("funding")
    assert mat.metadata["funding_status"].value == "missing" and load_funding(lake, PERP, "2024-03") is None
    _funding_file(lake, "bad.csv", b.binance_funding_csv([0.2]))
    res = _materialize(instance, PERP)
    assert not res.success


def test_synthetic_feed_lands_funding_only_for_perpetuals(lake):
    write_landing(lake, SyntheticSpec("ETHUSDT", "2024-03", events=500))
    write_landing(lake, SyntheticSpec("ETHUSDT-PERP", "2024-03", events=500))
    assert [p.name for p in lake.landing_files("ETHUSDT")] == ["synthetic-ETHUSDT-2024-03-seed42-n500.parquet"]
    names = [p.name for p in lake.landing_files("ETHUSDT-PERP")]
    assert names == ["synthetic-ETHUSDT-PERP-2024-03-seed42-n500-fundingRate.csv", "synthetic-ETHUSDT-PERP-2024-03-seed42-n500.parquet"]
    (rec,) = survey(lake, "ETHUSDT-PERP", table="funding")
    assert rec.format == "binance_funding" and rec.months == ["2024-03"]


# ---- settlement ------------------------------------------------------------------------------------
def _fills(rows: list[tuple[int, float]]) -> pl.DataFrame:
    """Stored fills from (ts, position after the fill); other columns are not used."""
    n = len(rows)
    return pl.DataFrame({
        "ts": [t for t, _ in rows], "side": [1] * n, "qty": [1.0] * n, "price": [100.0] * n, "fee": [0.0] * n,
        "liquidity": ["taker"] * n, "order_id": ["o"] * n, "position": [p for _, p in rows], "realized_pnl": [0.0] * n,
        "reason": [None] * n,
    }, schema=FILL_SCHEMA)


def _samples(rows: list[tuple[int, float]]) -> pl.DataFrame:
    return pl.DataFrame({"ts": [t for t, _ in rows], "mid": [m for _, m in rows]}, schema={"ts": pl.Int64, "mid": pl.Float64})


def _funding(rows: list[tuple[int, float, float | None]]) -> pl.DataFrame:
    return pl.DataFrame({
        "ts": [t for t, _, _ in rows], "rate": [r for _, r, _ in rows], "interval_h": [8.0] * len(rows),
        "mark_px": [m for _, _, m in rows], "source": ["f"] * len(rows), "src_line": list(range(2, 2 + len(rows))),
    }, schema=FUNDING_SCHEMA)


T = 1_000_000_000_000_000_000  # a round ns origin


def test_long_pays_positive_rate_short_receives_flat_pays_nothing():
    fills = _fills([(T + 10, 2.0), (T + 30, 0.0), (T + 50, -3.0), (T + 70, 0.0)])
    samples = _samples([(T, 100.0), (T + 35, 110.0), (T + 80, 120.0)])
    funding = _funding([(T + 20, 0.001, 50.0), (T + 40, 0.001, None), (T + 60, 0.002, None)])
    out = settle_funding(fills, samples, funding)
    assert out["position"].to_list() == [2.0, 0.0, -3.0]
    assert out["mark_px"].to_list() == [50.0, 110.0, 110.0]
    assert out["mark_source"].to_list() == ["funding", "mid", "mid"]
    # long 2 at 50, rate 0.1%: pays 0.1; flat: exactly 0; short 3 at 110, rate 0.2%: receives 0.66
    assert out["amount"].to_list() == pytest.approx([-0.1, 0.0, 0.66])
    assert out["amount"][1] == 0.0


def test_fill_exactly_at_funding_time_counts_as_done_before():
    samples = _samples([(T, 100.0), (T + 100, 100.0)])
    funding = _funding([(T + 50, 0.001, 100.0)])
    opened_at = settle_funding(_fills([(T + 50, 1.0), (T + 90, 0.0)]), samples, funding)
    assert opened_at["position"].to_list() == [1.0] and opened_at["amount"].to_list() == pytest.approx([-0.1])
    closed_at = settle_funding(_fills([(T + 10, 1.0), (T + 50, 0.0)]), samples, funding)
    assert closed_at["position"].to_list() == [0.0] and closed_at["amount"].to_list() == [0.0]
    # two fills in the same ns: the position after the last one
    both = settle_funding(_fills([(T + 50, 1.0), (T + 50, 4.0), (T + 90, 0.0)]), samples, funding)
    assert both["position"].to_list() == [4.0]


def test_only_funding_times_inside_the_run():
    samples = _samples([(T + 10, 100.0), (T + 100, 100.0)])
    funding = _funding([(T, 0.001, None), (T + 10, 0.001, None), (T + 100, 0.001, None), (T + 101, 0.001, None)])
    assert settle_funding(_fills([]), samples, funding)["ts"].to_list() == [T + 10, T + 100]


def test_equity_and_cash_include_funding_received_up_to_each_sample():
    fills = _fills([(T + 5, -1.0), (T + 95, 0.0)])
    equity = pl.DataFrame({
        "ts": [T, T + 20, T + 40, T + 100], "equity": [1000.0] * 4, "position": [0.0, -1.0, -1.0, 0.0],
        "mid": [100.0] * 4, "cash": [1000.0, 1100.0, 1100.0, 1000.0],
    }, schema=EQUITY_SCHEMA)
    frame, eq, summary = settle_run(PERP, fills, equity, _funding([(T + 20, 0.001, 100.0), (T + 50, 0.002, 100.0)]))
    assert frame["amount"].to_list() == pytest.approx([0.1, 0.2])  # a short receives a positive rate
    assert eq["equity"].to_list() == pytest.approx([1000.0, 1000.1, 1000.1, 1000.3])  # at T+20 included
    assert eq["cash"].to_list() == pytest.approx([1000.0, 1100.1, 1100.1, 1000.3])
    assert eq.columns == equity.columns and eq["position"].to_list() == equity["position"].to_list()
    assert summary == {"funding_status": "applied", "funding_pnl": pytest.approx(0.3), "funding_events": 2}
    assert apply_funding(equity, frame.clear()).equals(equity)


def test_missing_funding_is_labelled_never_zero():
    fills, samples = _fills([(T + 5, 1.0), (T + 95, 0.0)]), _samples([(T, 100.0), (T + 100, 100.0)])
    frame, eq, summary = settle_run(PERP, fills, samples.with_columns(equity=1.0, position=0.0, cash=1.0), None)
    assert summary == {"funding_status": "missing", "funding_pnl": None, "funding_events": 0}
    assert frame.is_empty()
    assert funding_summary("BTCUSDT", frame, None) == {"funding_status": "not applicable", "funding_pnl": 0.0, "funding_events": 0}
    # spot never settles funding, even if rows were handed in
    frame, _, summary = settle_run("BTCUSDT", fills, samples.with_columns(equity=1.0, position=0.0, cash=1.0),
                                   _funding([(T + 50, 0.001, 100.0)]))
    assert frame.is_empty() and summary["funding_status"] == "not applicable"


def test_landing_sensor_requests_funding_runs_for_funding_files(lake, instance):
    import os
    import time

    from quant_assets.definitions import defs
    from quant_assets.sensors import landing_sensor

    tick = b.synthetic_parquet(lake.landing_dir(PERP) / "ticks.parquet", PERP, "2024-03", events=500)
    fund = _funding_file(lake, "BTCUSDT-fundingRate-2024-04.csv", b.binance_funding_csv([0.0001], t0_ms=b.MAR_MS + 31 * 86_400_000))
    spot = _funding_file(lake, "BTCUSDT-fundingRate-2024-03.csv", b.binance_funding_csv([0.0001]), symbol="BTCUSDT")
    old = time.time() - 60
    for p in (tick, fund, spot):
        os.utime(p, (old, old))  # settled: taken at first sight
    with dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                 resources={"lake": LakeResource(), "critic": CriticResource()}) as ctx:
        result = landing_sensor(ctx)
    got = sorted((str(r.partition_key), sorted(k.to_user_string() for k in r.asset_selection)) for r in result.run_requests)
    # a ticks run builds the slice's funding and book too (its backtests depend on them)
    assert got == [("2024-03|BTCUSDT-PERP", ["book", "funding", "ticks"]), ("2024-04|BTCUSDT-PERP", ["funding"])]


def test_binance_and_tardis_of_one_event_agree_and_complete_each_other(lake):
    # Tardis knows the mark but not the first interval; Binance the interval but not the mark.
    _funding_file(lake, "BTCUSDT-fundingRate-2024-03.csv", b.binance_funding_csv([0.0001]))
    _funding_file(lake, "tardis.csv", b.tardis_derivative_ticker_csv([(US - 100, US, 0.000100004, 99.5)]))
    res = build_funding(lake, PERP, "2024-03")
    df = pl.read_parquet(res.path)
    assert df.select("ts", "rate", "interval_h", "mark_px").rows() == [(MAR_NS, 0.0001, 8.0, 99.5)]
    assert res.duplicates == 1


def test_venue_tick_files_named_by_the_underlying_land_in_the_perp_folder(lake):
    # Binance names USD-M files by the pair: BTCUSDT-trades-... belongs in landing/BTCUSDT-PERP/
    b.write(lake.landing_dir(PERP) / "BTCUSDT-trades-2024-03.csv", b.binance_trades_csv(3, t0_ms=b.MAR_MS))
    b.write(lake.landing_dir(PERP) / "ETHUSDT-trades-2024-03.csv", b.binance_trades_csv(3, t0_ms=b.MAR_MS, start_id=9))
    res = build_partition(lake, PERP, "2024-03")
    assert res.rows == 3 and [r.path for r in res.failed] == ["landing/BTCUSDT-PERP/ETHUSDT-trades-2024-03.csv"]


def test_removed_funding_files_are_not_silently_served(lake):
    path = _funding_file(lake, "a.csv", b.binance_funding_csv([0.0001]))
    build_funding(lake, PERP, "2024-03")
    path.unlink()
    with pytest.raises(FundingError, match="no funding file .* touches the month"):
        build_funding(lake, PERP, "2024-03")
    lake.funding_path(PERP, "2024-03").unlink()
    assert build_funding(lake, PERP, "2024-03").status == "missing"
