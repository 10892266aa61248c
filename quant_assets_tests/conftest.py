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

