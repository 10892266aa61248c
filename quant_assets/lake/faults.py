"""Named crash points for the fault-injection tests.

``crash_point("replace:part-0.parquet")`` kills the current process with SIGKILL (no cleanup,
no ``finally``, as an OOM kill or a power cut would) when ``$QUANT_CRASH_AT`` names that point.
Unset, it costs one dictionary lookup. The tests run a pipeline step in a subprocess with the
variable set and then check what a reader sees.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "QUANT_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process if ``$QUANT_CRASH_AT`` equals ``name``; with ``group:<name>``, its
    whole process group (a Celery worker with its pool: a lost machine, nothing left to report)."""
    value = os.environ.get(CRASH_ENV)
    if value == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif value == f"group:{name}":
        os.killpg(os.getpgid(0), signal.SIGKILL)
