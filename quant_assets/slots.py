"""Pool slots of runs that have ended (Dagster layer).

A step killed together with its process (a Celery worker lost to SIGKILL or the OOM killer)
never reports its end, so its slot in the ``engines`` pool can stay claimed and the pool's next
step waits for it forever. The Dagster daemon frees such slots itself
(``run_monitoring.free_slots_after_run_end_seconds`` in dagster.yaml); this is the same storage
call for deployments without a daemon (``quant-assets free-slots``).
"""

from __future__ import annotations

import dagster as dg

ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def free_ended_run_slots(instance: dg.DagsterInstance) -> list[tuple[str, str, int]]:
    """Release every pool slot (and queued claim) of runs that have ended; (run id, status,
    slots it held) per run that held or queued any."""
    storage = instance.event_log_storage
    run_ids = list(storage.get_concurrency_run_ids())
    if not run_ids:
        return []
    held: dict[str, int] = {}
    for key in storage.get_concurrency_keys():
        for claim in storage.get_concurrency_info(key).claimed_slots:
            held[claim.run_id] = held.get(claim.run_id, 0) + 1
    freed = []
    for rec in instance.get_run_records(dg.RunsFilter(run_ids=run_ids, statuses=ENDED)):
        run_id = rec.dagster_run.run_id
        storage.free_concurrency_slots_for_run(run_id)  # returns nothing in Dagster 1.13: count first
        freed.append((run_id, rec.dagster_run.status.value, held.get(run_id, 0)))
    return freed
