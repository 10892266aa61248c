"""The lake and DuckDB as Dagster ``ConfigurableResource``s.

The lake root defaults to ``$QUANT_LAKE`` or ``<repo>/data_lake``; set ``root`` in run config
(or the environment) to move it.
"""

from __future__ import annotations

import dagster as dg
import duckdb
from pydantic import Field

from quant_assets.lake import duck
from quant_assets.lake.store import Lake
from quant_assets.settings import lake_root


_ROOT_DOC = "Lake root folder; empty means $QUANT_LAKE, else <repo>/data_lake (read when used)."


class LakeResource(dg.ConfigurableResource):
    """Where the Parquet lake lives."""

    root: str = Field(default="", description=_ROOT_DOC)

    def lake(self) -> Lake:
        return Lake.at(self.root or lake_root())


class DuckDBResource(dg.ConfigurableResource):
    """An in-memory DuckDB with one view per lake table (``ticks``, ``manifest``, ...)."""

    root: str = Field(default="", description=_ROOT_DOC)

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duck.connect(Lake.at(self.root or lake_root()))
