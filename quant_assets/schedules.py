"""``nightly_rebacktest``: every night, re-run the backtest → metrics → critique chain where data
keeps landing (the running and the previous month of every symbol) and wherever a slice was
left stale or failed.

Only slices whose ``ticks`` partition exists are requested. Run keys are
``nightly:<date>:<partition>``: a tick evaluated twice (a daemon restart) requests nothing new.
The cron is ``$QUANT_NIGHTLY_CRON`` (default ``0 2 * * *``, UTC).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import dagster as dg

from quant_assets.partitions import month_symbol_partitions, partition_key, split_key, symbol_partitions
from resources import LakeResource

CRON_ENV = "QUANT_NIGHTLY_CRON"
DEFAULT_CRON = "0 2 * * *"
TICKS = dg.AssetKey("ticks")

#: The chain re-run each night: backtests, metric sets and critiques (out-of-sample validations
#: and roll-ups follow by automation when their inputs change).
CHAIN = dg.AssetSelection.groups("backtests", "metrics", "critiques") - dg.AssetSelection.key_substring("oos_validation_")

nightly_job = dg.define_asset_job(
    "nightly_rebacktest",
    selection=CHAIN,
    partitions_def=month_symbol_partitions,
    description="Backtests, metric sets and critiques of one month × symbol slice.",
    tags={"quant_assets/trigger": "nightly"},
)


def recent_months(at: datetime) -> tuple[str, str]:
    """(previous month, running month) at ``at``, as YYYY-MM."""
    first = at.replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m"), first.strftime("%Y-%m")


def nightly_partitions(instance: dg.DagsterInstance, lake, at: datetime) -> list[str]:
    """The partition keys the schedule requests at ``at`` (sorted): recent months with ticks,
    plus every slice with ticks whose chain has a missing (failed or never run) or stale asset."""
    from quant_assets import sync

    with_ticks = set(instance.get_materialized_partitions(TICKS))
    symbols = instance.get_dynamic_partitions(symbol_partitions.name)
    wanted = {str(partition_key(m, s)) for s in symbols for m in recent_months(at)} & with_ticks
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
