"""Shared fixtures: a fresh lake per test and a throw-away Dagster instance."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from quant_assets.lake.store import Lake


@pytest.fixture
def lake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    monkeypatch.setenv("QUANT_LAKE", str(root))
    # No repository overrides unless a test asks for them.
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(tmp_path / "no-instruments.toml"))
    monkeypatch.setenv("QUANT_VENUES", str(tmp_path / "no-venues.toml"))
    return root


@pytest.fixture
def lake(lake_root: Path) -> Lake:
    return Lake.at(lake_root)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3-compatible endpoint on 127.0.0.1: ``$QUANT_TEST_S3_ENDPOINT`` when ``.ci/run``
    started one, else moto's standalone server, started here for the session."""
    given = os.environ.get("QUANT_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    from quant_assets_tests.servers import start_moto, stop

    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield endpoint
    finally:
        stop(proc)



@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis server on 127.0.0.1 (``redis://host:port``): ``$QUANT_TEST_REDIS_URL`` when
    ``.ci/run`` started one, else Debian's redis-server, started here for the session."""
    given = os.environ.get("QUANT_TEST_REDIS_URL")
    if given:
        yield given.rstrip("/")
        return
    from quant_assets_tests.servers import start_redis, stop

    proc, port = start_redis(tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


_REDIS_DBS = iter(range(0, 16, 2))


@pytest.fixture
def celery_urls(redis_server) -> tuple[str, str]:
    """(broker, backend) URLs on two emptied databases of their own, so a task one test left in
    a queue (a killed worker's) can never reach another test's workers."""
    import redis

    db = next(_REDIS_DBS)
    for n in (db, db + 1):
        redis.Redis.from_url(f"{redis_server}/{n}").flushdb()
    return f"{redis_server}/{db}", f"{redis_server}/{db + 1}"
