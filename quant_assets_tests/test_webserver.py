"""The real Dagster webserver loads the code location and shows the ticks partitions, a
backtest with its plot, a metric set and a roll-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from quant_assets.cli import main
from quant_assets_tests import builders as b

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def test_webserver_shows_assets_partitions_and_running_sensor(lake, instance, tmp_path):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4))
    assert main(["sync"]) == 0
    port = _free_port()
    log = open(tmp_path / "webserver.log", "wb")
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "webserver.log").read_text()[-3000:])
                time.sleep(0.5)
        data = _graphql(port, """{
          assetOrError(assetKey: {path: ["ticks"]}) {
            ... on Asset { assetMaterializations(limit: 10) { partition } definition { groupName partitionKeysByDimension { name partitionKeys } } }
          }
          backtest: assetOrError(assetKey: {path: ["backtest_ema_cross"]}) {
            ... on Asset {
              definition { groupName }
              assetMaterializations(limit: 1) {
                partition
                metadataEntries { label ... on MarkdownMetadataEntry { mdStr } ... on FloatMetadataEntry { floatValue } }
              }
            }
          }
          metrics: assetOrError(assetKey: {path: ["metrics_ema_cross"]}) {
            ... on Asset { definition { groupName } assetMaterializations(limit: 1) { partition metadataEntries { label } } }
          }
          report: assetOrError(assetKey: {path: ["report_ema_cross"]}) {
            ... on Asset { definition { groupName } assetMaterializations(limit: 1) { partition metadataEntries { label } } }
          }
          sensorsOrError(repositorySelector: {repositoryLocationName: "quant_assets.definitions", repositoryName: "__repository__"}) {
            ... on Sensors { results { name sensorState { status } } }
          }
        }""")
        asset = data["assetOrError"]
        assert [m["partition"] for m in asset["assetMaterializations"]] == ["2024-01|BTCUSDT"]
        dims = {d["name"]: d["partitionKeys"] for d in asset["definition"]["partitionKeysByDimension"]}
        assert dims["symbol"] == ["BTCUSDT"] and "2024-01" in dims["month"]
        assert asset["definition"]["groupName"] == "ingest"
        backtest = data["backtest"]
        assert backtest["definition"]["groupName"] == "backtests"
        (bt_mat,) = backtest["assetMaterializations"]
        assert bt_mat["partition"] == "2024-01|BTCUSDT"
        entries = {e["label"]: e for e in bt_mat["metadataEntries"]}
        assert entries["equity_curve"]["mdStr"].startswith("![equity and drawdown](data:image/png;base64,")
        assert entries["pnl"]["floatValue"] == 0.0  # 4 quotes: too few for the slow EMA, no trade
        metrics, report = data["metrics"], data["report"]
        assert metrics["definition"]["groupName"] == "metrics" and report["definition"]["groupName"] == "reports"
        assert metrics["assetMaterializations"][0]["partition"] == "2024-01|BTCUSDT"
        assert {"sharpe", "total_return_pct", "null_reasons"} <= {e["label"] for e in metrics["assetMaterializations"][0]["metadataEntries"]}
        assert report["assetMaterializations"][0]["partition"] == "BTCUSDT"  # one roll-up per symbol
        assert {"tearsheet", "deflated_sharpe", "months"} <= {e["label"] for e in report["assetMaterializations"][0]["metadataEntries"]}
        sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
        assert sensors == {"landing_sensor": "RUNNING", "automation_sensor": "RUNNING"}
        # the UI's HTML is served too
        assert b"<html" in urllib.request.urlopen(f"http://127.0.0.1:{port}/assets/ticks", timeout=10).read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
