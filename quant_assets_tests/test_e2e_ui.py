"""End to end against the real servers: ``dagster dev`` (webserver + daemon) on 127.0.0.1 with a
temporary instance and lake; a file dropped into the landing zone is picked up by the landing
sensor, automation builds every downstream slice of its partition and the symbol's roll-ups,
checked through the GraphQL API; then headless Chromium (Debian's, driven by Playwright) renders
the asset graph and a backtest partition's equity plot. Screenshots are kept in
``test-artifacts/`` (or ``$QUANT_TEST_ARTIFACTS``).

Run it alone with ``uv run pytest -m e2e``. It needs ``/usr/bin/chromium`` (``.ci/run`` installs
Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quant_assets.devserver import DevServer
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake.store import Lake
from quant_assets.settings import _DAGSTER_YAML

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("QUANT_TEST_ARTIFACTS") or REPO / "test-artifacts")
PARTITION = "2024-01|BTCUSDT"
STRATEGIES = ("ema_cross", "mean_reversion", "market_maker")
SLICE_ASSETS = ["ticks", *(f"{stage}_{s}" for stage in ("backtest", "metrics", "critique") for s in STRATEGIES)]
ROLLUPS = [f"report_{s}" for s in STRATEGIES]
#: Chromium flags for a headless run on a machine with no network but the package registries.
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; CI (``QUANT_REQUIRE_E2E=1``) fails without it, elsewhere the test skips."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium and chromium-driver (.ci/run does)"
        if os.environ.get("QUANT_REQUIRE_E2E"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def dagster_dev(tmp_path):
    """``dagster dev`` in its own process group, torn down even when the test fails."""
    home, lake = tmp_path / "home", tmp_path / "lake"
    home.mkdir()
    lake.mkdir()
    (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUANT_LAKE": str(lake), "QUANT_SENSOR_INTERVAL_S": "5",
           "QUANT_INSTRUMENTS": str(tmp_path / "no-instruments.toml")}
    env.pop("ANTHROPIC_API_KEY", None)  # the offline critic
    server = DevServer(env, tmp_path / "dagster-dev.log")
    try:
        server.wait_loaded()
        yield server, Lake.at(lake)
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_dropped_file_is_built_end_to_end_and_the_ui_renders_it(chromium, dagster_dev):
    server, lake = dagster_dev
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=5_000))

    # the landing sensor and the automation sensor do the rest, through the daemon's runs
    server.wait("every slice asset of 2024-01|BTCUSDT", lambda: all(server.materialized(a, PARTITION) for a in SLICE_ASSETS), 900, 3)
    server.wait("the BTCUSDT roll-ups", lambda: all(server.materialized(a, "BTCUSDT") for a in ROLLUPS), 600, 3)
    runs = server.runs()
    assert runs and all(r["status"] in ("SUCCESS", "STARTED", "QUEUED", "STARTING") for r in runs), runs
    # nothing for the validation of January yet: February does not exist
    assert not server.materialized("oos_validation_ema_cross", PARTITION)

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = server.url
    pk = PARTITION.replace("|", "%7C")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # The UI's first-visit newsletter dialog may open at any time after a page loads (later
            # on a loaded machine): Playwright dismisses it whenever it covers the next action.
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

            def open_page(path: str) -> None:
                page.goto(base + path, wait_until="networkidle", timeout=120_000)

            # the asset graph: a critique's upstream lineage down to ticks
            open_page("/assets/critique_ema_cross?view=lineage&lineageScope=upstream&lineageDepth=4")
            for name in ("ticks", "backtest_ema_cross", "metrics_ema_cross", "critique_ema_cross"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "asset-graph.png"))

            # a backtest partition's metadata: the equity + drawdown plot renders as an image
            open_page(f"/assets/backtest_ema_cross?view=partitions&partition={pk}")
            page.get_by_text(PARTITION, exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("Show Markdown").first.click()
            plot = page.locator("img[src^='data:image/png']").first
            plot.wait_for(state="visible", timeout=60_000)
            box = plot.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 100
            assert page.evaluate("img => img.naturalWidth", plot.element_handle()) > 0  # decoded, not a broken image
            page.screenshot(path=str(ARTIFACTS / "backtest-partition.png"))

            # a critique partition: the offline critic's verdict and text
            open_page(f"/assets/critique_ema_cross?view=partitions&partition={pk}")
            page.get_by_text("rules (offline)", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("Rule-based (offline) critique").first.wait_for(timeout=60_000)  # the markdown, inline
            page.screenshot(path=str(ARTIFACTS / "critique-partition.png"))
        finally:
            browser.close()
    for name in ("asset-graph.png", "backtest-partition.png", "critique-partition.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000, name
