"""Process-wide settings read from the environment: lake root, start month, Dagster home.

Everything a user may move lives behind one environment variable so that the CLI, the
Dagster code location and the tests agree without passing paths around.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: The repository root when running from a checkout (editable install), else the cwd.
_PKG_PARENT = Path(__file__).resolve().parents[1]
REPO_ROOT = _PKG_PARENT if (_PKG_PARENT / "pyproject.toml").exists() else Path.cwd()

LAKE_ENV = "QUANT_LAKE"
START_MONTH_ENV = "QUANT_START_MONTH"
DEFAULT_START_MONTH = "2020-01"

_DAGSTER_YAML = """\
# Written by quant-assets on first use; safe to edit.
telemetry:
  enabled: false
# Runs launched by sensors, schedules, automation and backfills wait in a queue; two at a time
# fit a 2-core, 16 GB workstation. Steps in the "engines" pool (backtests, out-of-sample
# re-tests) hold a month of ticks in an engine: at most default_limit at once across all runs.
# Raise both on a bigger machine.
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    default_limit: 2
# A step killed with its process (OOM killer, a lost Celery worker) never releases its pool
# slot; the daemon frees the slots of ended runs after this delay (without a daemon:
# `quant-assets free-slots`).
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 30
"""


def lake_root() -> str:
    """The lake root: ``$QUANT_LAKE`` or ``<repo>/data_lake``."""
    return os.environ.get(LAKE_ENV) or str(REPO_ROOT / "data_lake")


def start_month() -> str:
    """First month (``YYYY-MM``) of the month partitions: ``$QUANT_START_MONTH`` or 2020-01."""
    value = os.environ.get(START_MONTH_ENV) or DEFAULT_START_MONTH
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise ValueError(f"{START_MONTH_ENV}={value!r}: expected a month like 2020-01")
    return value


MAX_LANDING_ENV = "QUANT_MAX_LANDING_BYTES"
DEFAULT_MAX_LANDING = 64 << 30
MEMORY_BUDGET_ENV = "QUANT_MEMORY_BUDGET_MB"


def _positive_int(env: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{env}={value!r}: expected a whole number >= 1")
    return int(value)


def max_landing_bytes() -> int:
    """Largest landing file ingested (bytes): ``$QUANT_MAX_LANDING_BYTES`` or 64 GiB. Ingest
    streams, so this guards against a wrong drop (a disk image, a whole archive), not memory."""
    value = os.environ.get(MAX_LANDING_ENV)
    return _positive_int(MAX_LANDING_ENV, value) if value else DEFAULT_MAX_LANDING


def memory_budget_bytes() -> int:
    """Memory a step that must hold a whole month may plan to use (bytes):
    ``$QUANT_MEMORY_BUDGET_MB``, or 75% of the memory available when asked."""
    value = os.environ.get(MEMORY_BUDGET_ENV)
    if value:
        return _positive_int(MEMORY_BUDGET_ENV, value) << 20
    import psutil

    return int(psutil.virtual_memory().available * 0.75)


BAR_INTERVALS_ENV = "QUANT_BAR_INTERVALS"


def bar_intervals() -> tuple[str, ...]:
    """Bar sizes built from ticks, one ``bars_<size>`` asset each: ``$QUANT_BAR_INTERVALS``
    (comma-separated, like ``1m,5m,1h``) or ``1m``. The sweeps run on the first."""
    from quant_assets.research.bars import parse_interval

    value = os.environ.get(BAR_INTERVALS_ENV) or "1m"
    sizes = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not sizes:
        raise ValueError(f"{BAR_INTERVALS_ENV}={value!r}: expected bar sizes like 1m,5m,1h")
    for size in sizes:
        try:
            parse_interval(size)
        except ValueError as exc:
            raise ValueError(f"{BAR_INTERVALS_ENV}={value!r}: {exc}") from None
    return sizes


AGREEMENT_TOLERANCE_ENV = "QUANT_AGREEMENT_TOLERANCE"
DEFAULT_AGREEMENT_TOLERANCE = 0.10


def agreement_tolerance() -> float:
    """Largest share of the scale (the larger |PnL| or fee bill) the cash of unmatched orders
    may carry between the vectorised and the event-driven run of the same strategy before the
    ``engines_agree`` check fails (see :mod:`quant_assets.research.agreement`):
    ``$QUANT_AGREEMENT_TOLERANCE`` or 0.10 (a fraction)."""
    value = os.environ.get(AGREEMENT_TOLERANCE_ENV)
    if not value:
        return DEFAULT_AGREEMENT_TOLERANCE
    try:
        tol = float(value)
    except ValueError:
        tol = -1.0
    if not tol >= 0.0:
        raise ValueError(f"{AGREEMENT_TOLERANCE_ENV}={value!r}: expected a fraction >= 0 (0.10 = 10%)")
    return tol


EXECUTOR_ENV = "QUANT_EXECUTOR"
CELERY_BROKER_ENV = "QUANT_CELERY_BROKER"
CELERY_BACKEND_ENV = "QUANT_CELERY_BACKEND"
EXECUTOR_PROFILES = ("in_process", "celery")


def executor_profile() -> str:
    """Where a run's steps execute: ``$QUANT_EXECUTOR`` = ``in_process`` (default: one process
    per run, on this machine) or ``celery`` (each step a task on the Celery workers of
    ``$QUANT_CELERY_BROKER``, on any machine that shares the lake and the Dagster instance)."""
    value = os.environ.get(EXECUTOR_ENV) or "in_process"
    if value not in EXECUTOR_PROFILES:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: expected one of {', '.join(EXECUTOR_PROFILES)}")
    return value


CELERY_REDELIVER_ENV = "QUANT_CELERY_REDELIVER_S"
DEFAULT_CELERY_REDELIVER_S = 6 * 3600


def celery_config() -> dict[str, object]:
    """Celery settings shared by the launcher (the executor's config) and the workers (celery_app).

    A step's task is acknowledged when it ends, not when a worker takes it (``task_acks_late``):
    if the worker's whole machine is lost, the broker hands the task to another worker after
    ``$QUANT_CELERY_REDELIVER_S`` seconds (Redis's visibility timeout; default 6 h, longer than
    any step should take, since a task still running past it would be handed out twice)."""
    value = os.environ.get(CELERY_REDELIVER_ENV) or str(DEFAULT_CELERY_REDELIVER_S)
    try:
        redeliver_s = int(value)
        if redeliver_s <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{CELERY_REDELIVER_ENV}={value!r}: expected a whole number of seconds > 0") from None
    return {
        # One step at a time per worker process: a step holds a month of ticks in an engine.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "broker_transport_options": {"visibility_timeout": redeliver_s},
        "result_backend_transport_options": {"visibility_timeout": redeliver_s},
    }


def celery_broker() -> str:
    """The Celery broker of the ``celery`` profile: ``$QUANT_CELERY_BROKER`` or Redis on
    127.0.0.1:6379, database 0."""
    return os.environ.get(CELERY_BROKER_ENV) or "redis://127.0.0.1:6379/0"


def celery_backend() -> str:
    """Where Celery keeps step results: ``$QUANT_CELERY_BACKEND`` or the same Redis, database 1."""
    return os.environ.get(CELERY_BACKEND_ENV) or "redis://127.0.0.1:6379/1"


SENSOR_INTERVAL_ENV = "QUANT_SENSOR_INTERVAL_S"


def sensor_interval_s() -> int:
    """Seconds between ticks of the landing and automation sensors: ``$QUANT_SENSOR_INTERVAL_S`` or 30."""
    value = os.environ.get(SENSOR_INTERVAL_ENV) or "30"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={value!r}: expected a whole number of seconds >= 1")
    return int(value)


PARTITIONS_PER_RUN_ENV = "QUANT_BACKFILL_PARTITIONS_PER_RUN"
DEFAULT_PARTITIONS_PER_RUN = 500


def backfill_partitions_per_run() -> int:
    """Most partitions one backfill run builds (read when the definitions load):
    ``$QUANT_BACKFILL_PARTITIONS_PER_RUN`` or 500 (quant_assets/batching.py says why). Lower
    it to spread a one-month backfill over more runs (more of the run queue's slots at once, more
    runs); 1 is one run per slice."""
    value = os.environ.get(PARTITIONS_PER_RUN_ENV)
    return _positive_int(PARTITIONS_PER_RUN_ENV, value) if value else DEFAULT_PARTITIONS_PER_RUN


def ensure_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at ``<repo>/.dagster_home`` unless set; create it with telemetry off."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(_DAGSTER_YAML)
    return home


FDR_Q_ENV = "QUANT_FDR_Q"
DEFAULT_FDR_Q = 0.10


def fdr_q() -> float:
    """Level of the false-discovery control over every tested change (critiques' suggestions and
    sweep hand-offs; :mod:`quant_assets.analytics.discoveries`): ``$QUANT_FDR_Q`` or 0.10, i.e.
    at most 10% of the changes called improvements are expected to be noise. Read when the
    definitions load (it is part of the ``discoveries`` asset's code version)."""
    value = os.environ.get(FDR_Q_ENV)
    if not value:
        return DEFAULT_FDR_Q
    try:
        q = float(value)
    except ValueError:
        q = -1.0
    if not 0.0 < q < 1.0:
        raise ValueError(f"{FDR_Q_ENV}={value!r}: expected a level strictly between 0 and 1 (0.10 = 10%)")
    return q


PROMOTE_ENV = "QUANT_PROMOTE"
DEFAULT_PROMOTE = (2, 3)


def promotion_k_of_n() -> tuple[int, int]:
    """The promotion rule (:mod:`quant_assets.critique.promotion`): a suggestion that survived the
    false-discovery control is promoted once it beat its baseline on k of the next n months:
    ``$QUANT_PROMOTE`` as ``k/n`` (default ``2/3``). Read when the definitions load (part of the
    ``promotions`` asset's code version)."""
    value = os.environ.get(PROMOTE_ENV)
    if not value:
        return DEFAULT_PROMOTE
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n <= 12:
        raise ValueError(f"{PROMOTE_ENV}={value!r}: expected k/n with 1 <= k <= n <= 12, e.g. 2/3")
    return k, n


CRITIC_BUDGET_DAY_ENV = "QUANT_CRITIC_BUDGET_USD_DAY"
CRITIC_BUDGET_RUN_ENV = "QUANT_CRITIC_BUDGET_USD_RUN"


def _usd(env: str) -> float:
    value = os.environ.get(env)
    if not value:
        return 0.0
    try:
        usd = float(value)
    except ValueError:
        usd = -1.0
    if not 0.0 <= usd < float("inf"):
        raise ValueError(f"{env}={value!r}: expected an amount in USD >= 0 (0 or unset: no limit)")
    return usd


def critic_budget_usd() -> tuple[float, float]:
    """The Anthropic critic's spending limits in USD, (per UTC day, per run):
    ``$QUANT_CRITIC_BUDGET_USD_DAY`` and ``$QUANT_CRITIC_BUDGET_USD_RUN``; 0 or unset is no limit
    (:mod:`quant_assets.critique.budget`). Read when the definitions load (the ``critic``
    resource's defaults) and by ``quant-assets status``."""
    return _usd(CRITIC_BUDGET_DAY_ENV), _usd(CRITIC_BUDGET_RUN_ENV)


GAPS_ENV = "QUANT_GAPS"
GAPS_MODES = ("warn", "block")


def gaps_mode() -> str:
    """What the ``ticks`` check ``calendar_complete`` does with a month that has holes (missing
    days, a kind that stopped, fewer days than its calendar; :mod:`quant_assets.ingest.coverage`):
    ``$QUANT_GAPS`` = ``warn`` (default: the check fails with severity WARN, downstream slices
    still run) or ``block`` (severity ERROR: the check is blocking, so the month's backtests and
    everything else downstream do not run on the hole). Read when each slice is built."""
    value = (os.environ.get(GAPS_ENV) or "warn").strip().lower()
    if value not in GAPS_MODES:
        raise ValueError(f"{GAPS_ENV}={value!r}: expected one of {', '.join(GAPS_MODES)}")
    return value
