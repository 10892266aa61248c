"""The lake and DuckDB as Dagster ``ConfigurableResource``s.

The lake root defaults to ``$QUANT_LAKE`` or ``<repo>/data_lake``; set ``root`` in run config
(or the environment) to move it. A root that is an object-store URL (``s3://bucket/prefix``)
makes every step pull its symbol's files into this machine's working copy before it runs and
push what it wrote after (``quant_assets.lake.remote``), so steps on other machines, such as
Celery workers, share one lake.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import duckdb
from pydantic import Field

from quant_assets.lake import duck
from quant_assets.lake.store import Lake
from quant_assets.settings import lake_root


_ROOT_DOC = ("Lake root folder or object-store URL (s3://bucket/prefix); empty means $QUANT_LAKE, "
             "else <repo>/data_lake (read when used).")


def _run_symbol(context: dg.InitResourceContext) -> str | None:
    """The symbol of the run's partition, when it has exactly one (None: every symbol)."""
    run = context.dagster_run
    if run is None:
        return None
    tags = run.tags
    if "dagster/partition/symbol" in tags:
        return tags["dagster/partition/symbol"]
    key = tags.get("dagster/partition")
    # A symbol-only partition (reports, factors); month keys and multi keys ("M|S") are not one.
    if key and "|" not in key and not key[:4].isdigit():
        return key
    # A batched backfill run (quant_assets/batching.py) over one symbol's months; a range over
    # several symbols (one month of every symbol) needs them all.
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        first, last = (k.rpartition("|")[2] for k in (start, end))
        if first == last and not first[:4].isdigit():
            return first
    return None


class LakeResource(dg.ConfigurableResource):
    """Where the Parquet lake lives."""

    root: str = Field(default="", description=_ROOT_DOC)

    def lake(self) -> Lake:
        return Lake.at(self.root or lake_root())

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["LakeResource"]:
        remote = self.lake().remote
        if remote is None:
            yield self
            return
        log = context.log
        symbol = _run_symbol(context)
        # Outside a run (the landing sensor) only the landing zone and its ledgers are read.
        prefixes = ("",) if context.dagster_run is not None else ("landing/", "manifest/", "instruments/")
        stats = remote.pull(symbol, prefixes)
        if log is not None:
            log.info(f"lake {remote.url}: pulled {'all symbols' if symbol is None else symbol} into {remote.local}: {stats.summary()}")
        # Each file or folder a step publishes is pushed at once, inside the step, so a failed
        # upload fails the step that wrote it (Dagster only logs a failed resource teardown).
        remote.attach()
        try:
            yield self
        finally:
            remote.detach()
            # A last sweep for anything written outside the atomic writers. Also after a failed
            # step: what it published locally is whole; a killed step never gets here.
            stats = remote.push()
            if log is not None:
                log.info(f"lake {remote.url}: pushed {stats.summary()}")


class DuckDBResource(dg.ConfigurableResource):
    """An in-memory DuckDB with one view per lake table (``ticks``, ``manifest``, ...)."""

    root: str = Field(default="", description=_ROOT_DOC)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """Views over the lake's folder, or over the object store itself for a URL root."""
        return duck.connect(Lake.at(self.root or lake_root()))
