"""The one ``Definitions`` object of quant_assets: ``dagster dev`` and the CLI load this.

Heavy libraries (nautilus_trader, vectorbt, quantstats, hftbacktest) are imported inside the
asset bodies that need them, never here, so loading the definitions stays fast.
"""

from __future__ import annotations

import os

import dagster as dg

from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.critiques import critique_asset, oos_asset
from quant_assets.assets.metrics import metrics_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.ticks import ticks
from quant_assets.strategies import registry
from quant_assets.sensors import ingest_job, landing_sensor
from resources import CriticResource, DuckDBResource, LakeResource

SPECS = registry.load()
ASSETS = [
    ticks,
    *backtest_assets(SPECS),
    *(metrics_asset(s) for s in SPECS.values()),
    *(report_asset(s) for s in SPECS.values()),
    *(critique_asset(s) for s in SPECS.values()),
    *(oos_asset(s) for s in SPECS.values()),
]

#: Anthropic when ANTHROPIC_API_KEY is set, the offline rule critic otherwise. EnvVar keeps the
#: key's value out of run configs, the UI and the event log (they show the variable's name).
CRITIC = CriticResource(api_key=dg.EnvVar("ANTHROPIC_API_KEY")) if os.environ.get("ANTHROPIC_API_KEY") else CriticResource()

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[ingest_job],
    sensors=[landing_sensor],
    resources={"lake": LakeResource(), "duckdb": DuckDBResource(), "critic": CRITIC},
)
