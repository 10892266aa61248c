"""The one ``Definitions`` object of quant_assets: ``dagster dev`` and the CLI load this.

Heavy libraries (nautilus_trader, vectorbt, quantstats, hftbacktest) are imported inside the
asset bodies that need them, never here, so loading the definitions stays fast.
"""

from __future__ import annotations

import dagster as dg

from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.metrics import metrics_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.ticks import ticks
from quant_assets.strategies import registry
from quant_assets.sensors import ingest_job, landing_sensor
from resources import DuckDBResource, LakeResource

SPECS = registry.load()
ASSETS = [
    ticks,
    *backtest_assets(SPECS),
    *(metrics_asset(s) for s in SPECS.values()),
    *(report_asset(s) for s in SPECS.values()),
]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[ingest_job],
    sensors=[landing_sensor],
    resources={"lake": LakeResource(), "duckdb": DuckDBResource()},
)
