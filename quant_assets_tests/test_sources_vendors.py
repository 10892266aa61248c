"""Tardis and Databento sources (quant_assets/sources/tardis.py, databento.py) against the fake
servers of quant_assets_tests/fake_vendors.py: availability from the vendor, what lands and that
the lake reads it, faults (429/5xx retried, truncated gzip and wrong hash refused, a missing day
reported, a job that takes polls), and that no key is left anywhere."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from quant_assets.ingest.landing import survey
from quant_assets.sources import config as sconfig
from quant_assets.sources import ledger
from quant_assets.sources.fetch import fetch
from quant_assets.sources.http import HttpClient
from quant_assets.sources.model import VerifyError
from quant_assets.sources.tardis import TardisSource, parse_exchange, verify_gzip
from quant_assets_tests.fake_sources import FakeSources
from quant_assets_tests.fake_vendors import FakeDatabento, FakeTardis, gz, self_signed, serve_tls, tardis_csv
from quant_assets_tests.secret_scan import assert_no_secret

NOW = dt.datetime(2024, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
TARDIS_KEY = "TD.tardis-test-key-0123456789SECRET"
DATABENTO_KEY = "db-databento-test-key-9876543210SECRET"
FAST = {"rate_per_s": 1000.0, "timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.05}
TYPES = ["trades", "quotes", "incremental_book_L2", "book_snapshot_25", "derivative_ticker"]
#: The lake format each Tardis data type is read as.
LAKE_FORMAT = {"trades": "tardis_trades", "quotes": "tardis_quotes", "incremental_book_L2": "tardis_incremental_book_l2",
               "book_snapshot_25": "tardis_book_snapshot", "derivative_ticker": "tardis_derivative_ticker"}


def _config(table: str, settings: dict, entries: str) -> sconfig.SourcesConfig:
    lines = [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in {**FAST, **settings}.items()]
    return sconfig.loads("\n".join(lines) + "\n" + entries, Path("sources.toml"))


def _quiet(src) -> HttpClient:  # retries without real sleeps; the waits are recorded
    return HttpClient(src.config, auth_headers=src.auth_headers, sleep=lambda s: None)


@pytest.fixture
def tardis():
    with FakeSources() as fake:
        t = FakeTardis(fake, key=TARDIS_KEY, exported_until=dt.date(2024, 3, 6))
        t.add_symbol("binance-futures", "BTCUSDT", "perpetual", TYPES)
        t.add_symbol("binance", "BTCUSDT", "spot", ["trades", "quotes"])
        yield t


def _tardis_cfg(t: FakeTardis, entries: str) -> sconfig.SourcesConfig:
    return _config("tardis", {"base_url": t.api_url, "datasets_url": t.datasets_url}, entries)


def _entry(exchange: str, instruments: list[str], types: list[str], start="2024-03", end="2024-03", extra="") -> str:
    return (f'\n[[tardis.fetch]]\nexchange = "{exchange}"\ninstruments = {json.dumps(instruments)}\n'
            f"datasets = {json.dumps(types)}\nstart = \"{start}\"\nend = \"{end}\"\n{extra}")


# ---- Tardis: availability and names (no download) --------------------------------------

def test_tardis_plans_the_exported_days_of_each_symbol_into_its_landing_folder(tardis):
    tardis.add_symbol("binance-futures", "ETHUSDT", "perpetual", ["trades"], since=dt.date(2024, 3, 3))
    tardis.add_symbol("binance-futures", "XRPUSDT", "perpetual", ["trades"], to=dt.date(2024, 3, 2))
    cfg = _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT-PERP", "ETHUSDT", "XRPUSDT-PERP"], ["trades"])
                      + _entry("binance", ["BTCUSDT"], ["quotes"]))
    src = TardisSource(cfg.get("tardis"))
    files = [rf for e in cfg.get("tardis").entries for rf in src.plan(e, NOW)]
    days = lambda sym: [rf.period for rf in files if rf.symbol == sym]  # noqa: E731
    # exportedUntil 2024-03-06T00:00Z: March 1-5 are whole; the clock (March 10) says more, Tardis does not
    assert days("BTCUSDT-PERP") == [f"2024-03-0{d}" for d in range(1, 6)]
    assert days("ETHUSDT-PERP") == ["2024-03-03", "2024-03-04", "2024-03-05"]  # availableSince; a perpetual by the API's type
    assert days("XRPUSDT-PERP") == ["2024-03-01"]  # availableTo (exclusive)
    assert days("BTCUSDT") == [f"2024-03-0{d}" for d in range(1, 6)]  # binance spot -> the spot folder
    rf = next(f for f in files if f.symbol == "BTCUSDT-PERP" and f.period == "2024-03-04")
    assert rf.name == "binance-futures_trades_2024-03-04_BTCUSDT.csv.gz"
    assert rf.url == f"{tardis.datasets_url}/v1/binance-futures/trades/2024/03/04/BTCUSDT.csv.gz"
    assert rf.months == ("2024-03",) and rf.dataset == "binance-futures_trades"
    over = _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT"], ["trades"], extra='landing = "BTCPERP-TEST"\n'))
    assert {rf.symbol for rf in TardisSource(over.get("tardis")).plan(over.get("tardis").entries[0], NOW)} == {"BTCPERP-TEST"}
    assert len(tardis.fake.hits("/v1/exchanges/")) == 3  # asked once per exchange and source object


@pytest.mark.parametrize("entry, message", [
    (_entry("binance", ["BTCUSDT"], ["derivative_ticker"]), "no derivative_ticker for binance BTCUSDT"),
    (_entry("binance-futures", ["DOGEUSDT"], ["trades"]), "no binance-futures dataset symbol 'DOGEUSDT'"),
    (_entry("binance-futures", ["BTCUSDT"], ["book_snapshot_5"]), "'book_snapshot_5' not fetched from Tardis"),
    (_entry("binance", ["BTCUSDT-PERP"], ["trades"]), "BTCUSDT is a spot, whose landing folder is 'BTCUSDT'"),
    ('\n[[tardis.fetch]]\ninstruments = ["BTCUSDT"]\ndatasets = ["trades"]\nstart = "2024-03"\n', "missing field 'exchange'"),
])
def test_tardis_entry_errors_name_the_entry_and_the_field(tardis, entry, message):
    with pytest.raises(ValueError, match="#1") as err:
        cfg = _tardis_cfg(tardis, entry)
        src = TardisSource(cfg.get("tardis"))
        src.plan(cfg.get("tardis").entries[0], NOW)
    assert message in str(err.value)


def test_tardis_api_answers_are_checked():
    with pytest.raises(ValueError, match=r"http://x/v1/exchanges/ftx: datasets.exportedUntil: expected an ISO-8601 time"):
        parse_exchange({"datasets": {"exportedFrom": "2020-01-01T00:00:00.000Z", "exportedUntil": None, "symbols": []}},
                       "ftx", "http://x/v1/exchanges/ftx")
    with pytest.raises(ValueError, match="no downloadable CSV datasets for 'coinbase'"):
        parse_exchange({"id": "coinbase"}, "coinbase", "http://x/v1/exchanges/coinbase")


def test_gzip_verification_refuses_truncated_corrupt_empty_and_non_csv_files(tmp_path):
    good = gz(tardis_csv("binance", "trades", "BTCUSDT", dt.date(2024, 3, 1)))
    cases = {"whole": good, "truncated": good[:-9], "flipped": good[:20] + bytes([good[20] ^ 0xFF]) + good[21:],
             "empty": gz(""), "html": gz("<html>rate limited</html>")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert verify_gzip(tmp_path / "whole") > 100
    for name, reason in [("truncated", "truncated gzip"), ("flipped", "corrupt gzip"), ("empty", "no rows"),
                         ("html", "not a Tardis CSV")]:
        with pytest.raises(VerifyError, match=reason):
            verify_gzip(tmp_path / name)


# ---- Tardis: fetching against the fake -------------------------------------------------

def test_tardis_fetch_lands_every_data_type_where_the_lake_reads_it(tardis, lake, monkeypatch):
    monkeypatch.setenv("TARDIS_API_KEY", TARDIS_KEY)
    days = [dt.date(2024, 3, d) for d in range(1, 7)]  # the 6th is served but not yet exported
    for data_type in TYPES:
        tardis.publish("binance-futures", data_type, "BTCUSDT", days)
    cfg = _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT-PERP"], TYPES))
    report = fetch(lake, cfg, "tardis", months=["2024-03"], now=NOW, client_for=_quiet)
    assert report.counts == {"landed": 25}, report.rows
    assert not tardis.fake.hits("/2024/03/06/")  # past exportedUntil: never requested
    folder = lake.landing_dir("BTCUSDT-PERP")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))[:2] == [
        "binance-futures_book_snapshot_25_2024-03-01_BTCUSDT.csv.gz", "binance-futures_book_snapshot_25_2024-03-02_BTCUSDT.csv.gz"]
    # the landed bytes are the served bytes, and every file is recognised by the lake's parsers
    assert (folder / "binance-futures_trades_2024-03-02_BTCUSDT.csv.gz").read_bytes() == \
        tardis.files[tardis.path("binance-futures", "trades", dt.date(2024, 3, 2), "BTCUSDT")]
    records = survey(lake, "BTCUSDT-PERP", table=None)
    assert len(records) == 25 and not [(r.path, r.error) for r in records if r.status == "failed"]
    by_type = {t: {r.format for r in records if f"_{t}_" in r.path} for t in TYPES}
    assert by_type == {t: {LAKE_FORMAT[t]} for t in TYPES}
    assert {m for r in records for m in r.months} == {"2024-03"}
    # a second run asks for nothing it has (past the re-check window)
    again = fetch(lake, cfg, "tardis", now=NOW + dt.timedelta(days=5), client_for=_quiet)
    assert again.counts == {"skipped": 25}


def test_tardis_faults_retried_refused_and_a_missing_day_reported(tardis, lake, monkeypatch):
    monkeypatch.setenv("TARDIS_API_KEY", TARDIS_KEY)
    days = [dt.date(2024, 3, d) for d in range(1, 6)]
    tardis.publish("binance-futures", "trades", "BTCUSDT", days)
    p = lambda d: tardis.path("binance-futures", "trades", dt.date(2024, 3, d), "BTCUSDT")  # noqa: E731
    tardis.fake.fault(p(1), (429, {"Retry-After": "0"}))
    tardis.fake.fault(p(2), 503, 502)
    tardis.fake.fault(p(5), "cut")
    good = tardis.files[p(3)]
    tardis.files[p(3)] = good[:-12]  # a truncated export, served whole (its Content-Length matches)
    del tardis.files[p(4)]  # a day Tardis does not have while the 5th exists
    cfg = _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT-PERP"], ["trades"]))
    report = fetch(lake, cfg, "tardis", now=NOW, client_for=_quiet)
    status = {r["period"]: r["status"] for r in report.rows}
    assert status == {"2024-03-01": "landed", "2024-03-02": "landed", "2024-03-03": "refused",
                      "2024-03-04": "missing", "2024-03-05": "landed"}
    assert [s.status for s in tardis.fake.hits(p(2)[-40:])] == [503, 502, 200]
    assert "truncated gzip" in next(r["reason"] for r in report.rows if r["status"] == "refused")
    assert [g["period"] for g in report.gaps] == ["2024-03-04"]
    names = {q.name for q in lake.landing_dir("BTCUSDT-PERP").iterdir()}
    assert "binance-futures_trades_2024-03-03_BTCUSDT.csv.gz" not in names  # refused: nothing renamed into landing
    # the ledger keeps each outcome; the refused day is fetched again once Tardis re-exports it
    tardis.files[p(3)] = good
    again = fetch(lake, cfg, "tardis", now=NOW, client_for=_quiet)
    assert {r["period"]: r["status"] for r in again.rows if r["status"] == "landed"} == {"2024-03-03": "landed"}
    st = ledger.state(lake, ["tardis"])
    assert dict(zip(st["period"], st["status"]))["2024-03-03"] == "landed"


def test_tardis_without_a_key_fetches_only_first_days_and_says_why(tardis, lake, monkeypatch):
    monkeypatch.delenv("TARDIS_API_KEY", raising=False)
    tardis.publish("binance-futures", "trades", "BTCUSDT", [dt.date(2024, 3, d) for d in range(1, 4)])
    cfg = _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT-PERP"], ["trades"]))
    report = fetch(lake, cfg, "tardis", now=NOW, client_for=_quiet)
    status = {r["period"]: (r["status"], r["reason"]) for r in report.rows}
    assert status["2024-03-01"] == ("landed", None)
    assert status["2024-03-02"][0] == "failed" and "TARDIS_API_KEY is not set" in status["2024-03-02"][1]
    assert not tardis.fake.hits("/2024/03/02/")  # refused before any request


# ---- Databento --------------------------------------------------------------------------

@pytest.fixture
def databento(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the official client verifies TLS: trust the fake
    fake = FakeSources()
    url = serve_tls(fake, cert, key)
    with fake:
        yield FakeDatabento(fake, url, DATABENTO_KEY)


DB_ENTRY = """
[[databento.fetch]]
dataset = "GLBX.MDP3"
instruments = ["ESH4"]
datasets = ["mbp-10", "mbo"]
start = "2024-01"
"""


def _db_cfg(db: FakeDatabento, **settings) -> sconfig.SourcesConfig:
    return _config("databento", {"base_url": db.url, "poll_s": 0.01, "max_wait_s": 5.0, **settings}, DB_ENTRY)


def test_databento_batch_jobs_land_whole_months_the_lake_reads(databento, lake, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", DATABENTO_KEY)
    for schema in ("mbp-10", "mbo"):
        for month in ("2024-01", "2024-02"):
            databento.publish(schema, "ESH4", month)
    databento.fake.fault("/v0/batch.list_files", 503)  # a 5xx on the API: retried
    report = fetch(lake, _db_cfg(databento), "databento", now=NOW)
    # the range ends 2024-03-04: January and February are whole, March is not fetched yet
    assert report.counts == {"landed": 4}, report.rows
    assert len(databento.jobs) == 4 and all(j["state"] == "done" for j in databento.jobs.values())
    polls = [h for h in databento.fake.requests if h.path == "/v0/batch.get_job_details"]
    assert len(polls) == 8  # each job took two polls (processing, then done)
    folder = lake.landing_dir("ESH4")
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names == ["glbx-mdp3-mbo-ESH4-2024-01.dbn.zst", "glbx-mdp3-mbo-ESH4-2024-02.dbn.zst",
                     "glbx-mdp3-mbp-10-ESH4-2024-01.dbn.zst", "glbx-mdp3-mbp-10-ESH4-2024-02.dbn.zst"]
    assert (folder / names[2]).read_bytes() == databento.data[("mbp-10", "ESH4", "2024-01")]
    records = survey(lake, "ESH4", table=None)
    assert {r.format for r in records} == {"databento_dbn_mbp10", "databento_dbn_mbo"}
    assert not [r.error for r in records if r.status == "failed"]
    assert not list((folder / ".partial").glob("*"))  # no temporary file left
    # within the re-check window the month is asked about again: its done job's hash says unchanged (no new job, no download)
    downloads = len(databento.fake.hits("/v0/batch/download/"))
    again = fetch(lake, _db_cfg(databento), "databento", now=dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc))
    assert again.counts.get("unchanged") == 2 and len(databento.jobs) == 4
    assert len(databento.fake.hits("/v0/batch/download/")) == downloads


def test_databento_refuses_a_file_that_does_not_match_the_job_hash(databento, lake, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", DATABENTO_KEY)
    databento.publish("mbp-10", "ESH4", "2024-01")
    databento.wrong_hash = True
    cfg = _config("databento", {"base_url": databento.url, "poll_s": 0.01},
                  DB_ENTRY.replace('["mbp-10", "mbo"]', '["mbp-10"]').replace('start = "2024-01"', 'start = "2024-01"\nend = "2024-01"'))
    from databento.common.error import BentoWarning

    with pytest.warns(BentoWarning, match="failed checksum validation"):  # the client itself only warns
        report = fetch(lake, cfg, "databento", now=NOW)
    assert report.counts == {"refused": 1}
    assert "the job's file list" in report.rows[0]["reason"]
    assert [p.name for p in lake.landing_dir("ESH4").iterdir() if not p.name.startswith(".")] == []


def test_databento_trades_schema_is_refused_in_the_config(databento):
    with pytest.raises(ValueError, match="mbp-10 and mbo carry the trades"):
        _config("databento", {"base_url": databento.url}, DB_ENTRY.replace('["mbp-10", "mbo"]', '["trades"]'))


# ---- keys -------------------------------------------------------------------------------

def test_vendor_keys_leave_no_trace_in_the_lake(tardis, databento, lake, monkeypatch, tmp_path):
    """Wrong keys in the environment: both servers answer 401 with the Authorization header
    echoed in the body; the ledger, landing and everything else in the lake stay clean."""
    monkeypatch.setenv("TARDIS_API_KEY", TARDIS_KEY + "-WRONG")
    monkeypatch.setenv("DATABENTO_API_KEY", DATABENTO_KEY + "-WRONG")
    tardis.publish("binance-futures", "trades", "BTCUSDT", [dt.date(2024, 3, d) for d in (1, 2)])
    databento.publish("mbp-10", "ESH4", "2024-01")
    report = fetch(lake, _tardis_cfg(tardis, _entry("binance-futures", ["BTCUSDT-PERP"], ["trades"])), "tardis",
                   now=NOW, client_for=_quiet)
    status = {r["period"]: r["status"] for r in report.rows}
    assert status.pop("2024-03-01") == "landed" and set(status.values()) == {"failed"}  # no key needed on the 1st
    # the server did receive the key (so the scan below can fail)
    assert tardis.fake.hits("/2024/03/02/")[0].headers["Authorization"] == f"Bearer {TARDIS_KEY}-WRONG"
    # Databento refuses the plan's first request (the dataset range): a source-level error of
    # the report (the other sources of a fetch go on), redacted
    refused = fetch(lake, _db_cfg(databento), "databento", now=NOW)
    (err,) = refused.errors
    assert err.startswith("databento: could not plan the fetch") and "Authentication failed" in err
    # what was reported, logged in the ledger, or written anywhere in the lake holds no form of either key
    (tmp_path / "raised.txt").write_text(err + json.dumps(report.rows))
    assert_no_secret([lake.root, tmp_path / "raised.txt"], [TARDIS_KEY + "-WRONG", DATABENTO_KEY + "-WRONG"], min_files=3)
