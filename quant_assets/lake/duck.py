"""DuckDB over the lake: views on the hive layout, so plain SQL works without our code.

    SELECT count(*) FROM ticks WHERE symbol = 'BTCUSDT'
    SELECT strategy, month, sum(fee) FROM fills GROUP BY ALL

On a lake in an object store (``Lake.url``) the views read the store itself, through the
store's fsspec filesystem registered with DuckDB (no DuckDB extension to download), so SQL
sees what every machine has pushed, not this machine's working copy.

Views are created only for tables that have files (DuckDB refuses a glob that matches
nothing). Hive keys that are also columns of the files (``metrics`` stores strategy, symbol
and month in its row) are read from the files.
"""

from __future__ import annotations

import fnmatch

import duckdb

from quant_assets.lake.store import Lake

#: view name -> (glob under the lake root, hive partition keys)
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ticks": ("ticks/symbol=*/month=*/*.parquet", ("symbol", "month")),
    "funding": ("funding/symbol=*/month=*/*.parquet", ("symbol", "month")),
    "quarantine": ("quarantine/symbol=*/*.parquet", ("symbol",)),
    "manifest": ("manifest/landing.parquet", ()),
    "instruments": ("instruments/instruments.parquet", ()),
    "fills": ("backtests/strategy=*/symbol=*/month=*/fills.parquet", ("strategy", "symbol", "month")),
    "equity": ("backtests/strategy=*/symbol=*/month=*/equity.parquet", ("strategy", "symbol", "month")),
    "cashflows": ("backtests/strategy=*/symbol=*/month=*/cashflows.parquet", ("strategy", "symbol", "month")),
    "account_events": ("backtests/strategy=*/symbol=*/month=*/events.parquet", ("strategy", "symbol", "month")),
    "metrics": ("metrics/strategy=*/symbol=*/month=*/metrics.parquet", ("strategy", "symbol", "month")),
    "trades": ("metrics/strategy=*/symbol=*/month=*/trades.parquet", ("strategy", "symbol", "month")),
    "regimes": ("metrics/strategy=*/symbol=*/month=*/regimes.parquet", ("strategy", "symbol", "month")),
    "walk_forward": ("reports/strategy=*/symbol=*/walk_forward.parquet", ("strategy", "symbol")),
    "trials": ("trials/trials.parquet", ()),
    "sensitivity": ("sensitivity/strategy=*/symbol=*/month=*/sensitivity.parquet", ("strategy", "symbol", "month")),
    "suggestions": ("oos/strategy=*/symbol=*/month=*/validation.parquet", ("strategy", "symbol", "month")),
    "bars": ("bars/interval=*/symbol=*/month=*/*.parquet", ("interval", "symbol", "month")),
    "sweeps": ("sweeps/strategy=*/symbol=*/month=*/grid.parquet", ("strategy", "symbol", "month")),
    "handoffs": ("handoffs/strategy=*/symbol=*/month=*/handoff.parquet", ("strategy", "symbol", "month")),
    "factor_ic": ("factors/strategy=*/symbol=*/ic.parquet", ("strategy", "symbol")),
    "factor_samples": ("factors/strategy=*/symbol=*/samples.parquet", ("strategy", "symbol")),
    "agreements": ("agreements/strategy=*/symbol=*/month=*/agreement.parquet", ("strategy", "symbol", "month")),
    "wf_folds": ("wf_folds/strategy=*/symbol=*/month=*/fold.parquet", ("strategy", "symbol", "month")),
}


def connect(lake: Lake, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table that exists."""
    con = duckdb.connect(database)
    remote = lake.remote
    if remote is not None:
        remote.check()  # a misspelt bucket is named, not shown as a lake without tables
        con.register_filesystem(remote.fs)
        stored = list(remote.files())  # one listing for every view
    for name, (glob, keys) in VIEWS.items():
        if remote is not None:
            if not fnmatch.filter(stored, glob):
                continue
            pattern = remote.url_of(glob).replace("'", "''")
        else:
            if not any(lake.root.glob(glob)):
                continue
            pattern = str(lake.root / glob).replace("'", "''")
        if keys:
            types = ", ".join(f"'{k}': VARCHAR" for k in keys)
            # union_by_name: slices written by an older version lack newer columns (fills.reason).
            src = f"read_parquet('{pattern}', hive_partitioning = true, hive_types = {{{types}}}, union_by_name = true)"
        else:
            src = f"read_parquet('{pattern}')"
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {src}")
    return con
