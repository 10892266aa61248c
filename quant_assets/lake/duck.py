"""DuckDB over the lake: views on the hive layout, so plain SQL works without our code.

    SELECT count(*) FROM ticks WHERE symbol = 'BTCUSDT'
    SELECT strategy, month, sum(fee) FROM fills GROUP BY ALL

On a lake in an object store (``Lake.url``) the views read the store itself, through the
store's fsspec filesystem registered with DuckDB (no DuckDB extension to download), so SQL
sees what every machine has pushed, not this machine's working copy.

Views are created only for tables that have files (DuckDB refuses a glob that matches
nothing). Hive keys that are also columns of the files (``metrics`` stores strategy, symbol
and month in its row) are read from the files.

``suggestions`` and ``handoffs`` are each slice's own figures (p-value, local bar) joined with
the verdict of the false-discovery ledger (``discoveries``): ``improved`` = survives FDR at q
over every tested change, with ``p_adjusted``, the point-in-time verdict and ``fdr_status``. A
row the ledger has not judged yet (``discoveries`` not materialised since the slice was
written) has ``improved`` null and says so in ``fdr_status``; nothing defaults to false. The
join is in the view's one query: the slices' files are bound once, as for any other view (a
view over a view would read every file's schema again: ~25 s at 100,000 files). ``suggestions``
shows the critic's arm only: a validation's null-critic rows are the judge's control group, in
``scorecard_tests`` beside the critic's, and ``scorecard`` compares the two per critic
(:mod:`quant_assets.analytics.scorecard`).
"""

from __future__ import annotations

import fnmatch

import duckdb

from quant_assets.lake.store import Lake

#: view name -> (glob under the lake root, hive partition keys)
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ticks": ("ticks/symbol=*/month=*/*.parquet", ("symbol", "month")),
    "funding": ("funding/symbol=*/month=*/*.parquet", ("symbol", "month")),
    "book": ("book/symbol=*/month=*/day=*/*.parquet", ("symbol", "month", "day")),
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
    "sweep_returns": ("sweeps/strategy=*/symbol=*/month=*/returns.parquet", ("strategy", "symbol", "month")),
    "handoffs": ("handoffs/strategy=*/symbol=*/month=*/handoff.parquet", ("strategy", "symbol", "month")),
    "discoveries": ("discoveries/discoveries.parquet", ()),
    "scorecard": ("scorecard/scorecard.parquet", ()),
    "scorecard_tests": ("scorecard/tests.parquet", ()),
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
    judged: dict[str, str] = {}
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
        if name in JUDGED:
            judged[name] = src  # made below, once it is known whether the ledger exists
            continue
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {src}")
    for name, src in judged.items():
        _judged_view(con, name, src, ledger="discoveries" in made(con))
    return con


def made(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The views created on ``con``."""
    return {r[0] for r in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


#: view -> (the kind of its tests in ``discoveries``, slice column -> ledger column)
JUDGED: dict[str, tuple[str, dict[str, str]]] = {
    "suggestions": ("suggestion", {"strategy": "strategy", "symbol": "symbol", "critique_month": "month",
                                   "suggestion_index": "test_index"}),
    "handoffs": ("handoff", {"strategy": "strategy", "symbol": "symbol", "sweep_month": "month", "sweep_rank": "test_index"}),
}
#: view -> which of its slices' rows it shows: ``suggestions``, the critic's arm (a slice written
#: before the null critic has no ``arm``: all its rows are the critic's).
ROWS: dict[str, str] = {"suggestions": "arm IS NULL OR arm = 'critic'"}
#: The ledger's columns shown beside a slice's own (the FDR verdict).
VERDICT: dict[str, str] = {"improved": "BOOLEAN", "p_adjusted": "DOUBLE", "improved_point_in_time": "BOOLEAN",
                           "p_adjusted_point_in_time": "DOUBLE", "family_size": "BIGINT", "q": "DOUBLE"}


def _judged_view(con: duckdb.DuckDBPyConnection, name: str, src: str, ledger: bool) -> None:
    """``suggestions`` or ``handoffs``: the slices' rows (those of :data:`ROWS`) with the FDR
    ledger's verdict (see the module docstring)."""
    where = ROWS.get(name)
    try:
        _make_judged_view(con, name, src, ledger, where)
    except duckdb.BinderException:
        if where is None:
            raise
        # No slice has an ``arm`` yet (all written before the null critic): every row is the critic's.
        _make_judged_view(con, name, src, ledger, None)


def _make_judged_view(con: duckdb.DuckDBPyConnection, name: str, src: str, ledger: bool, where: str | None) -> None:
    """The view of :func:`_judged_view`, its rows filtered by ``where``. The join also matches the
    p-value, so a slice re-run since the ledger's last run is shown as not judged yet rather
    than with its previous verdict. Slices written before the ledger carry their own (old)
    ``improved``: the ledger's replaces it."""
    kind, keys = JUDGED[name]
    local = (f"(SELECT COLUMNS(lambda c: c NOT IN ({', '.join(repr(c) for c in VERDICT)})) FROM {src}"
             f"{f' WHERE {where}' if where else ''}) s")
    nulls = ", ".join(f"NULL::{t} AS {c}" for c, t in VERDICT.items())
    waiting = "'not judged yet: materialise discoveries'"
    if ledger:
        on = " AND ".join(f"s.{a} = d.{b}" for a, b in keys.items())
        try:
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT s.*, {', '.join(f'd.{c}' for c in VERDICT)}, "
                f"CASE WHEN d.kind IS NULL THEN {waiting} WHEN NOT d.in_family THEN 'not tested (the candidate could not run)' "
                f"ELSE 'judged' END AS fdr_status FROM {local} "
                f"LEFT JOIN (SELECT * FROM discoveries WHERE kind = '{kind}') d ON {on} AND s.p_value IS NOT DISTINCT FROM d.p_value")
            return
        except duckdb.BinderException:
            pass  # every slice predates the ledger (no test index, no p-value): nothing to join on
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT s.*, {nulls}, {waiting} AS fdr_status FROM {local}")


def asof(con: duckdb.DuckDBPyConnection, lake: Lake, asset: str, partition: str, at: str,
         file: str | None = None, view: str | None = None):
    """Register a view of one slice as it was (:mod:`quant_assets.lake.versions`): ``asset``
    (``ticks``, ``book``, ``backtest_<strategy>``, ``metrics_<strategy>``), ``partition``
    ``YYYY-MM|SYMBOL``, ``at`` an ISO time or a data version (or its first characters).
    ``file``: which Parquet file of the slice (default: all of them, e.g. a book's days in order).
    The view (default ``<asset>_asof``) reads the stored objects; returns the ``Version``.

        v = duck.asof(con, lake, "ticks", "2024-03|BTCUSDT", "2024-04-01T00:00Z")
        con.sql("SELECT count(*) FROM ticks_asof")
    """
    from quant_assets.lake import versions

    v = versions.resolve(lake, "", versions.Slice.of_asset(asset, partition), at)
    names = [file] if file else [n for n in sorted(v.files) if n.endswith(".parquet")]
    paths = ", ".join("'" + str(versions.object_path(lake, v.files[n]["sha256"])).replace("'", "''") + "'"
                      for n in names if n in v.files)
    if not paths:
        raise versions.VersionNotFound(f"{v.slice} version {v.data_version}: no file {file or '*.parquet'}; it has {sorted(v.files)}")
    name = view or f"{asset}_asof"
    if not name.isidentifier():
        raise ValueError(f"view name {name!r}: expected an identifier")
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{paths}])")
    return v
