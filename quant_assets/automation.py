"""Named automation conditions: which slices Dagster rebuilds on its own, and when.

``rebuild_stale_slices`` (every month × symbol asset downstream of ``ticks``): request a slice
when it became missing, when an upstream slice has a new data version (or will be requested on
the same tick), or when the asset's code version changed, remembered until the slice is
requested (``since_last_handled``: a slice that fails is not retried on every tick); then only
if every upstream slice exists (or is being requested), none is in progress, and every blocking
check upstream passed. Unlike ``AutomationCondition.eager()`` this covers every month, not only
the latest time window: history matters for research (new data lands in old months too).

``rebuild_rollups`` (per-symbol roll-ups over all months): the same triggers, but a roll-up
needs only some of its months (most months of 2020 have no data), so it waits for at least one
upstream month to exist and for none to be in progress.

``ticks`` has none: the landing sensor requests it, as only it knows when files land.
"""

from __future__ import annotations

import dagster as dg

AC = dg.AutomationCondition

#: The Dagster concurrency pool of the steps that run an engine (backtests, out-of-sample
#: re-tests): a month of 10M ticks peaks near 1 GB in NautilusTrader and 2.5-3 GB in
#: hftbacktest, so the limit (``concurrency.pools.default_limit`` in dagster.yaml, 2 as written
#: by quant-assets) keeps a backfill of hundreds of slices inside a 16 GB workstation.
ENGINE_POOL = "engines"


def any_dep_new_data_version() -> dg.AutomationCondition:
    """An upstream partition has a new *data version* since the last tick (not merely a new
    materialization: a nightly re-run or a re-ingest that reproduces the same bytes triggers
    nothing downstream), or will be requested on this tick. Updates made by a run that also
    materialised this asset are ignored, as in ``any_deps_updated``."""
    return AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()).with_label("new_data_version_without_root")
        | AC.will_be_requested()
    ).with_label("any_dep_new_data_version")


def _triggers() -> dg.AutomationCondition:
    return (AC.newly_missing() | any_dep_new_data_version() | AC.code_version_changed()).since_last_handled()


def rebuild_stale_slices() -> dg.AutomationCondition:
    return (
        _triggers()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    ).with_label("rebuild_stale_slices")


def rebuild_rollups() -> dg.AutomationCondition:
    return (
        _triggers()
        & AC.any_deps_match(~AC.missing())
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("rebuild_rollups")
