"""``nightly_rebacktest``: every night, re-run the backtest → metrics → critique chain where data
keeps landing (the running and the previous month of every symbol) and wherever a slice was
left stale or failed.

Only slices whose ``ticks`` partition exists are requested. Run keys are
``nightly:<date>:<partition>``: a tick evaluated twice (a daemon restart) requests nothing new.
The cron is ``$QUANT_NIGHTLY_CRON`` (default ``0 2 * * *``, UTC).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta

import dagster as dg

from quant_assets.partitions import month_symbol_partitions, partition_key, split_key, symbol_partitions
from resources import LakeResource

CRON_ENV = "QUANT_NIGHTLY_CRON"
DEFAULT_CRON = "0 2 * * *"
TICKS = dg.AssetKey("ticks")

#: The chain re-run each night: backtests, metric sets and critiques (out-of-sample validations
#: and roll-ups follow by automation when their inputs change).
CHAIN = dg.AssetSelection.groups("backtests", "sensitivity", "metrics", "critiques") - dg.AssetSelection.key_substring("oos_validation_")

nightly_job = dg.define_asset_job(
    "nightly_rebacktest",
    selection=CHAIN,
    partitions_def=month_symbol_partitions,
    description="Backtests, realism sensitivity, metric sets and critiques of one month × symbol slice.",
    tags={"quant_assets/trigger": "nightly"},
)


def recent_months(at: datetime) -> tuple[str, str]:
    """(previous month, running month) at ``at``, as YYYY-MM."""
    first = at.replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m"), first.strftime("%Y-%m")


#: Seconds one evaluation may spend building the plan's cache where it has none (an instance
#: that predates it, or a deleted cache): the build keeps what it did asset by asset, so it
#: completes over a few nights and no evaluation nears the schedule's 60 s gRPC timeout.
WARM_BUDGET_S = 20.0

log = logging.getLogger(__name__)


def nightly_partitions(instance: dg.DagsterInstance, lake, at: datetime) -> list[str]:
    """The partition keys the schedule requests at ``at`` (sorted): recent months with ticks,
    plus every slice with ticks whose chain has a missing (failed or never run) or stale asset.
    While the plan's cache is still being built (see :data:`WARM_BUDGET_S`), missing slices
    only: staleness is judged once it is complete."""
    from quant_assets import latest, sync
    from quant_assets.definitions import defs

    with_ticks = set(instance.get_materialized_partitions(TICKS))
    symbols = instance.get_dynamic_partitions(symbol_partitions.name)
    wanted = {str(partition_key(m, s)) for s in symbols for m in recent_months(at)} & with_ticks
    chain = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if _in_chain(k)]
    cold = latest.missing_from_cache(instance, chain)
    t0 = time.monotonic()
    while cold and time.monotonic() - t0 < WARM_BUDGET_S:
        latest.load(instance, [cold.pop(0)])
    if cold:
        log.warning("nightly: the plan's cache lacks %d asset(s) (built over the next evaluations, or now by "
                    "`quant-assets status`); tonight's request covers recent months and missing slices only", len(cold))
        for key in chain:
            wanted |= with_ticks - {str(pk) for pk in instance.get_materialized_partitions(key)}
        return sorted(wanted)
    slices = sorted(split_key(pk) for pk in with_ticks)
    # The bulk plan of the chain's assets only: no landing survey (that is for ticks and
    # funding), a query per asset; it fits the schedule's 60 s gRPC budget at 400 x 84.
    for state in sync.plan(lake, instance, slices, assets=_in_chain):
        if state.needs_run and not state.is_rollup:
            wanted.add(str(partition_key(state.month, state.symbol)))
    return sorted(wanted)


def _in_chain(key: dg.AssetKey) -> bool:
    """An asset of the chain whose missing, failed or stale slices the schedule re-runs."""
    return key.path[-1].startswith(("backtest_", "metrics_", "critique_"))


@dg.schedule(
    job=nightly_job,
    cron_schedule=os.environ.get(CRON_ENV) or DEFAULT_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly re-backtests of the running and previous month, and of any stale or failed slice.",
)
def nightly_rebacktest(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    at = context.scheduled_execution_time
    for pk in nightly_partitions(context.instance, lake.lake(), at):
        yield dg.RunRequest(run_key=f"nightly:{at:%Y-%m-%d}:{pk}", partition_key=pk)


# ---- fetch: a daily schedule per source ----------------------------------------------------

FETCH = dg.AssetKey("fetch")

fetch_job = dg.define_asset_job(
    "fetch_sources",
    selection=dg.AssetSelection.assets(FETCH),
    partitions_def=month_symbol_partitions,
    description="Download a month × symbol's raw files from the sources in sources.toml into landing/.",
    tags={"quant_assets/trigger": "fetch"},
)


def fetch_requests(lake, source: str, at: datetime, cfg=None) -> tuple[list[str], list[dg.RunRequest]]:
    """What the ``fetch_<source>`` schedule asks for at ``at``: one run per slice (month ×
    landing symbol) that has files due and not landed yet (``quant_assets.sources.fetch.due``:
    published by ``at`` by the source's own availability, and not in the fetch ledger), each
    run naming exactly those files. Returns the slices' symbols too (to register as partitions).
    Run keys ``fetch:<source>:<at>:<partition>``: an evaluation repeated asks for nothing new."""
    from quant_assets.sources import config as src_config
    from quant_assets.sources import fetch as src_fetch

    cfg = src_config.load() if cfg is None else cfg
    by_slice: dict[str, set[str]] = {}
    symbols: set[str] = set()
    for rf in src_fetch.due(lake, cfg, source, at):
        for month in rf.months:
            by_slice.setdefault(str(partition_key(month, rf.symbol)), set()).add(rf.name)
        symbols.add(rf.symbol)
    stamp = at.strftime("%Y-%m-%dT%H:%M")
    requests = [
        dg.RunRequest(
            run_key=f"fetch:{source}:{stamp}:{pk}", partition_key=pk,
            run_config={"ops": {"fetch": {"config": {"sources": [source], "names": sorted(names), "as_of": at.isoformat()}}}},
            tags={"quant_assets/fetch_source": source},
        )
        for pk, names in sorted(by_slice.items())
    ]
    return sorted(symbols), requests


def _fetch_schedule(source: str) -> dg.ScheduleDefinition:
    from quant_assets.sources import config as src_config

    hh, mm = src_config.publish_time(source)

    @dg.schedule(
        name=f"fetch_{source}", job=fetch_job, cron_schedule=f"{mm} {hh} * * *", execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily after {source}'s publication time ({hh:02d}:{mm:02d} UTC, publish_utc in sources.toml): "
                    f"fetch the files it has published since the last fetch (nothing when sources.toml has no {source} entry).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        at = context.scheduled_execution_time
        symbols, requests = fetch_requests(lake.lake(), source, at)
        if not requests:
            return dg.SkipReason(f"{source}: nothing due at {at:%Y-%m-%d %H:%M} UTC that is not landed already")
        known = set(context.instance.get_dynamic_partitions(symbol_partitions.name))
        if new := [s for s in symbols if s not in known]:
            context.instance.add_dynamic_partitions(symbol_partitions.name, new)
        return requests

    return _schedule


FETCH_SCHEDULES = [_fetch_schedule(s) for s in ("binance", "tardis", "databento")]
