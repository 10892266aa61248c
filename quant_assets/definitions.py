"""The one ``Definitions`` object of quant_assets: ``dagster dev`` and the CLI load this.

Heavy libraries (nautilus_trader, vectorbt, quantstats, hftbacktest) are imported inside the
asset bodies that need them, never here, so loading the definitions stays fast.
"""

from __future__ import annotations

import os

import dagster as dg

from quant_assets.assets.backtests import backtest_assets
from quant_assets.assets.book import book
from quant_assets.assets.fetch import fetch
from quant_assets.assets.funding import funding
from quant_assets.assets.critiques import critique_asset, oos_asset
from quant_assets.assets.discoveries import discoveries_asset
from quant_assets.assets.promotions import promotions_asset
from quant_assets.assets.metrics import metrics_asset
from quant_assets.assets.reports import report_asset
from quant_assets.assets.scorecard import scorecard_asset
from quant_assets.assets.sensitivity import sensitivity_asset
from quant_assets.assets.research import research_assets
from quant_assets.assets.ticks import ticks
from quant_assets.assets.venues import venue_profile_asset
from quant_assets.assets.universes import universe_assets
from quant_assets.assets.walkforward import walkforward_assets
from quant_assets.lake import instruments as inst_mod
from quant_assets.portfolio import universes as universes_mod
from quant_assets.venues import profile as venue_profiles
from quant_assets.strategies import registry
from quant_assets.schedules import FETCH_SCHEDULES, fetch_job, nightly_job, nightly_rebacktest
from quant_assets.sensors import ingest_job, landing_sensor
from quant_assets.settings import (bar_intervals, celery_backend, celery_broker, celery_config, critic_budget_usd, executor_profile,
                                  sensor_interval_s)
from resources import CriticResource, DuckDBResource, LakeResource

SPECS = registry.load()
#: Universes and what runs on them (universes.toml): multi-instrument backtests, cross-sections,
#: portfolios; a strategy the file names that is not registered stops loading, file and table named.
UNIVERSES = universes_mod.load()
UNIVERSE_SPECS = registry.load_universe()
universes_mod.check_strategies(UNIVERSES, SPECS, UNIVERSE_SPECS)
inst_mod.validate_config()  # a bad instruments.toml stops loading with the file and row named
venue_profiles.validate_config()  # likewise venues.toml, naming the file, table and setting
ASSETS = [
    fetch,
    ticks,
    funding,
    book,
    venue_profile_asset(),
    *backtest_assets(SPECS),
    *(sensitivity_asset(s) for s in SPECS.values()),
    *(metrics_asset(s) for s in SPECS.values()),
    *(report_asset(s) for s in SPECS.values()),
    *(critique_asset(s) for s in SPECS.values()),
    *(oos_asset(s) for s in SPECS.values()),
    *research_assets(SPECS),
    *walkforward_assets(SPECS),
    discoveries_asset(SPECS),
    promotions_asset(SPECS),
    scorecard_asset(SPECS),
    *universe_assets(UNIVERSES, SPECS, UNIVERSE_SPECS, bar_intervals()[0]),
]

#: Anthropic when ANTHROPIC_API_KEY is set, the offline rule critic otherwise. EnvVar keeps the
#: key's value out of run configs, the UI and the event log (they show the variable's name).
#: Its spending limits come from QUANT_CRITIC_BUDGET_USD_DAY and QUANT_CRITIC_BUDGET_USD_RUN.
_BUDGET = dict(zip(("budget_usd_per_day", "budget_usd_per_run"), critic_budget_usd(), strict=True))
CRITIC = (CriticResource(api_key=dg.EnvVar("ANTHROPIC_API_KEY"), **_BUDGET) if os.environ.get("ANTHROPIC_API_KEY")
          else CriticResource(**_BUDGET))

#: Evaluates every asset's automation condition (quant_assets/automation.py) and launches the
#: slices they request; starts RUNNING like the landing sensor and the nightly schedule.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_s(),
    description="Rebuilds the slices whose inputs or code changed, for every month.",
    # The conditions include a custom one (automation.AnyDepMatchesDownward), which only the
    # code server can evaluate: the daemon cannot load user classes.
    use_user_code_server=True,
)


def _executor() -> dg.ExecutorDefinition:
    """The execution profile (``$QUANT_EXECUTOR``). ``in_process``: one process per run, so a
    slice's dozen steps share one import of the engines and analytics libraries and one numba
    compile instead of a process (and ~10 s of imports) per step; runs still go two at a time
    (dagster.yaml), so both cores stay busy. ``celery``: every step is a task for the Celery
    workers (``quant-assets worker``), on this machine or others."""
    if executor_profile() == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": celery_broker(), "backend": celery_backend(),
                                           "config_source": celery_config()}, name="celery")
    return dg.in_process_executor


defs = dg.Definitions(
    assets=ASSETS,
    executor=_executor(),
    jobs=[ingest_job, nightly_job, fetch_job],
    sensors=[landing_sensor, automation_sensor],
    schedules=[nightly_rebacktest, *FETCH_SCHEDULES],
    resources={"lake": LakeResource(), "duckdb": DuckDBResource(), "critic": CRITIC},
)
