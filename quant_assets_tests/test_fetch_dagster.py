"""Fetching as Dagster work, against a local fake Binance-public-data server: ``quant-assets
fetch`` fills the landing zone and the pipeline builds from it; the daily schedule requests
exactly the files published since the last fetch; a re-upload lands as a new version."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest

from quant_assets import cli
from quant_assets.definitions import ASSETS
from quant_assets.lake import versions
from quant_assets.lake.manifest import read_manifest
from quant_assets.schedules import FETCH_SCHEDULES, fetch_requests
from quant_assets.sources import config as sconfig
from quant_assets.sources import ledger
from quant_assets.sources.fetch import fetch
from quant_assets_tests.fake_sources import FakeSources, binance_path, binance_zip, publish_binance
from resources import CriticResource, LakeResource

SYMBOL = "BTCUSDT-PERP"
PK = "2024-02|BTCUSDT-PERP"
RESOURCES = {"lake": LakeResource(), "critic": CriticResource()}


@pytest.fixture
def fake():
    with FakeSources() as f:
        yield f


def _sources(tmp_path, monkeypatch, url: str, entry: str):
    path = tmp_path / "sources.toml"
    path.write_text(f'[binance]\nbase_url = "{url}"\nrate_per_s = 1000.0\ntimeout_s = 5.0\nretries = 2\n'
                    f'backoff_s = 0.01\nrecheck_days = 0\n\n[[binance.fetch]]\ninstruments = ["{SYMBOL}"]\n{entry}')
    monkeypatch.setenv("QUANT_SOURCES", str(path))
    return sconfig.load(path)


def test_cli_fetch_fills_landing_and_the_pipeline_builds_from_it(lake, instance, fake, tmp_path, monkeypatch, capsys):
    publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-02", "2024-03"], rows=20)
    publish_binance(fake, "um", "fundingRate", "BTCUSDT", ["2024-03"])
    _sources(tmp_path, monkeypatch, fake.url, 'datasets = ["trades", "fundingRate"]\nstart = "2024-02"\nend = "2024-03"\n')

    assert cli.main(["fetch", "binance", SYMBOL, "2024-03"]) == 0  # one month asked: only its files
    landed = sorted(p.name for p in lake.landing_dir(SYMBOL).iterdir() if not p.name.startswith("."))
    assert landed == ["BTCUSDT-fundingRate-2024-03.zip", "BTCUSDT-trades-2024-03.zip"]
    assert not fake.hits("2024-02")
    # recorded in the instance as the fetch asset's slice, with what landed
    (mat,) = [e.asset_materialization for e in instance.fetch_materializations(dg.AssetKey("fetch"), limit=10).records]
    assert mat.partition == "2024-03|BTCUSDT-PERP" and mat.metadata["landed"].value == 2
    assert len(mat.tags["dagster/data_version"]) == 24

    # the pipeline builds from the fetched files: ticks and funding of the month
    res = dg.materialize(ASSETS, selection=["ticks", "funding"], partition_key="2024-03|BTCUSDT-PERP", instance=instance,
                         resources=RESOURCES)
    ticks = {m.asset_key.path[-1]: m for m in res.get_asset_materialization_events()}
    assert ticks["ticks"].materialization.metadata["trades"].value == 20
    assert ticks["funding"].materialization.metadata["dagster/row_count"].value == 31 * 3  # 8-hourly settlements

    # lineage walks the month's ticks back to the landed files and the URLs they came from
    capsys.readouterr()
    assert cli.main(["lineage", "ticks", "2024-03|BTCUSDT-PERP"]) == 0
    out = capsys.readouterr().out
    assert f"fetched from {fake.url}{binance_path('um', 'monthly', 'trades', 'BTCUSDT', '2024-03')}" in out

    # again: nothing new is downloaded, nothing re-lands
    before = len(fake.hits(".zip"))
    assert cli.main(["fetch", "binance", SYMBOL, "2024-03"]) == 0
    assert len(fake.hits(".zip")) == before


def test_the_schedule_requests_exactly_the_new_files_and_its_run_fetches_them(lake, instance, fake, tmp_path, monkeypatch):
    days = [f"2024-03-{d:02d}" for d in range(1, 10)]
    publish_binance(fake, "um", "trades", "BTCUSDT", days, rows=5)
    cfg = _sources(tmp_path, monkeypatch, fake.url, 'datasets = ["trades"]\nstart = "2024-03"\n')
    # yesterday's fetch (2024-03-09 after 06:00 UTC) landed March 1-8
    report = fetch(lake, cfg, now=datetime(2024, 3, 9, 7, 0, tzinfo=timezone.utc))
    assert sorted(r["period"] for r in report.rows if r["status"] == "landed") == days[:8]

    at = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)  # the schedule's tick: 9 March is out
    symbols, requests = fetch_requests(lake, "binance", at, cfg)
    assert symbols == [SYMBOL]
    (req,) = requests
    assert req.partition_key == "2024-03|BTCUSDT-PERP"
    assert req.run_config["ops"]["fetch"]["config"]["names"] == ["BTCUSDT-trades-2024-03-09.zip"]

    # the schedule as the daemon evaluates it (registers the symbol, same request)
    (sched,) = [s for s in FETCH_SCHEDULES if s.name == "fetch_binance"]
    assert sched.cron_schedule == "0 6 * * *"  # publish_utc's default
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   resources={"lake": LakeResource()}) as ctx:
        result = sched(ctx)
    assert [r.partition_key for r in result] == ["2024-03|BTCUSDT-PERP"]
    assert SYMBOL in instance.get_dynamic_partitions("symbols")

    # its run fetches exactly that file (the clock is past March: the rest is long out)
    before = len(fake.hits(".zip"))
    res = dg.materialize(ASSETS, selection=["fetch"], partition_key=req.partition_key, instance=instance,
                         resources=RESOURCES, run_config=req.run_config)
    assert res.success
    zips = [h for h in fake.hits(".zip")[before:] if not h.path.endswith(".CHECKSUM")]
    assert [h.path for h in zips] == [binance_path("um", "daily", "trades", "BTCUSDT", "2024-03-09")]
    (mat,) = res.asset_materializations_for_node("fetch")
    assert mat.metadata["landed"].value == 1
    # an evaluation after it asks for nothing
    assert fetch_requests(lake, "binance", at, cfg)[1] == []


def test_a_reupload_lands_as_a_new_version_and_a_new_data_version(lake, instance, fake, tmp_path, monkeypatch):
    publish_binance(fake, "um", "trades", "BTCUSDT", ["2024-02"], rows=10, seed=1)
    _sources(tmp_path, monkeypatch, fake.url, 'datasets = ["trades"]\nstart = "2024-02"\nend = "2024-02"\n')
    assert cli.main(["fetch", "binance"]) == 0
    v1 = lake.landing_dir(SYMBOL) / "BTCUSDT-trades-2024-02.zip"
    v1_bytes = v1.read_bytes()

    def build_ticks() -> str:
        res = dg.materialize(ASSETS, selection=["ticks"], partition_key=PK, instance=instance, resources=RESOURCES)
        return res.asset_materializations_for_node("ticks")[0].tags["dagster/data_version"]

    first = build_ticks()
    first_rows = pl.read_parquet(lake.ticks_path(SYMBOL, "2024-02"))
    fake.put(binance_path("um", "monthly", "trades", "BTCUSDT", "2024-02"), binance_zip("BTCUSDT", "trades", "2024-02", 10, seed=2))
    assert cli.main(["fetch", "binance", "--recheck"]) == 0
    v2 = lake.landing_dir(SYMBOL) / "BTCUSDT-trades-2024-02~v2.zip"
    assert v2.exists() and v1.read_bytes() == v1_bytes
    second = build_ticks()  # built from v2 alone: a new data version
    assert read_manifest(lake)[lake.relative(v1)].status == "superseded"
    assert second != first and not pl.read_parquet(lake.ticks_path(SYMBOL, "2024-02")).equals(first_rows)
    # the month as it was: by the first data version, the exact rows built from v1
    old = versions.resolve(lake, "ticks", (SYMBOL, "2024-02"), first)
    assert versions.scan(lake, old).collect().equals(first_rows)
    assert cli.main(["asof", "ticks", PK, first, "--out", str(tmp_path / "out")]) == 0
    assert pl.read_parquet(tmp_path / "out" / "part-0.parquet").equals(first_rows)
    fetched = [m.asset_materialization.tags["dagster/data_version"]
                for m in instance.fetch_materializations(dg.AssetKey("fetch"), limit=10).records]
    assert len(fetched) == 2 and fetched[0] != fetched[1]
    st = ledger.state(lake)
    assert st["landed_version"].to_list() == [2]
