"""Real servers the distributed tests start on 127.0.0.1: Debian's ``redis-server`` (the Celery
broker), moto's standalone S3 server (the object-store lake) and Celery workers
(``quant-assets worker``), each torn down by its caller."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from quant_assets.devserver import free_port


def celery_worker_of(event) -> str | None:
    """The worker name (before ``@host``) that a dagster-celery "executing steps in celery
    worker" engine event names, or None for any other event (or None)."""
    if event is None or "in celery worker" not in (event.message or ""):
        return None
    return event.engine_event_data.metadata["Celery worker"].value.split("@")[0]


def _wait_port(proc: subprocess.Popen, port: int, log: Path, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{what} exited:\n" + log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start:\n" + log.read_text()[-3000:]
            time.sleep(0.2)


def start_redis(log: Path) -> tuple[subprocess.Popen, int]:
    """Debian's redis-server on a free port (no persistence); CI requires it, elsewhere the test skips."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("QUANT_REQUIRE_E2E"):
            pytest.fail("redis-server is required here (CI installs Debian's redis-server)")
        pytest.skip("redis-server not installed (apt install redis-server)")
    port = free_port()
    proc = subprocess.Popen([path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    _wait_port(proc, port, log, "redis-server")
    return proc, port


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    """moto's standalone S3-compatible server on a free port; returns (process, endpoint URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    _wait_port(proc, port, log, "moto server")
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def s3_env(endpoint: str) -> dict[str, str]:
    """The AWS variables that point s3fs, Polars and DuckDB (through fsspec) at ``endpoint``."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint}


def make_bucket(endpoint: str) -> str:
    """A fresh bucket at ``endpoint``; returns the lake URL ``s3://<bucket>/lake``."""
    import s3fs

    env = s3_env(endpoint)
    name = f"quant-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                      endpoint_url=endpoint, skip_instance_cache=True).mkdir(name)
    return f"s3://{name}/lake"


class Workers:
    """Celery worker processes (each in its own process group, so its pool dies with it)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, **extra_env: str) -> None:
        log = self.logs / f"{name}.log"
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "quant_assets.cli", "worker", "--name", name],
            env={**self.env, **extra_env}, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while f"{name}@" not in log.read_text() or " ready." not in log.read_text():
            assert self.procs[name].poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"worker {name} not ready:\n" + log.read_text()[-3000:]
            time.sleep(0.3)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs = {}
