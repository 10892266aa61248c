"""``dagster dev`` as a managed child process, and its GraphQL API: what the end-to-end test and
the automation benchmark share.

The server runs in its own process group on 127.0.0.1 with the caller's ``DAGSTER_HOME`` and
lake; :meth:`DevServer.stop` ends the whole group (webserver, daemon, code server, runs), first
politely, then by force.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from quant_assets.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        exe = Path(sys.executable).with_name("dagster")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(exe), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", str(REPO_ROOT / "workspace.yaml")],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str) -> dict:
        req = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["data"]

    def wait(self, what: str, predicate: Callable[[], object], timeout_s: float, poll_s: float = 2.0) -> object:
        """Poll ``predicate`` until it is truthy; fail with the log's tail on timeout or if the
        server exits."""
        deadline = time.time() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dagster dev exited ({self.proc.returncode}) while waiting for {what}:\n{self.tail()}")
            try:
                value = predicate()
                if value:
                    return value
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; dagster dev log tail:\n{self.tail()}")
            time.sleep(poll_s)

    def tail(self, chars: int = 4_000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_loaded(self, timeout_s: float = 180) -> None:
        def loaded():
            entries = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")[
                "workspaceOrError"]["locationEntries"]
            return entries and all(e["loadStatus"] == "LOADED" for e in entries)

        self.wait("the code location to load", loaded, timeout_s)

    def materialized(self, asset: str, partition: str) -> bool:
        data = self.graphql('{ assetOrError(assetKey: {path: ["%s"]}) { ... on Asset { assetMaterializations(partitions: ["%s"], limit: 1) { partition } } } }'
                            % (asset, partition))
        return bool((data["assetOrError"] or {}).get("assetMaterializations"))

    def runs(self) -> list[dict]:
        return self.graphql("{ runsOrError { ... on Runs { results { runId status startTime endTime "
                            "stepStats { stepKey } tags { key value } } } } }")["runsOrError"]["results"]

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
