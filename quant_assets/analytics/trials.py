"""The trials ledger: every parameter set each strategy implementation has been run with.

A deflated Sharpe ratio needs the number of parameter sets tried before this one was kept;
forgetting the failed tries is how backtests overfit. A *distinct trial* is one parameter set of
one implementation, whatever data it ran on: running the same set on another month or symbol
evaluates the same try on more data, it is not another try. Each backtest records its (strategy
implementation, parameter values) here, once per distinct set, so tuning ``ema_cross`` three
times and adding a variant of it count four trials for the ``ema_cross`` family (variants share
the implementation); the out-of-sample re-tests of critiques' suggestions and of sweep
hand-offs record theirs the same way.

A parameter sweep records its whole grid as one row with ``n_sets`` = its number of
combinations (:func:`quant_assets.research.run.grid_trial`: the axes, the bar interval and the
parameters the grid does not vary), once per grid: every slice of every symbol sweeps the same
grid, so re-running or adding slices adds nothing, and changing the grid adds the new grid's
full size. The counting errs on the side of more trials, never fewer: two grids that overlap
count their shared combinations twice, and a hand-off's event-driven re-test of a grid
combination is its own parameter set (lengths in quote updates, not bars).

Each row says what kind of trial it is: ``parameters`` (a parameter set the strategy was run
with: what the deflated Sharpe counts), ``venue_sensitivity`` (a slice re-run under a scaled
venue profile or fees by the realism sensitivity: the same strategy in a harsher market, not a
new parameter set, so it is recorded but never counted as a trial of the strategy) or
``null_critic`` (a random change run as the control arm of the judge's scorecard,
:mod:`quant_assets.critique.null_critic`: never a candidate anyone selects or adopts, so it is
recorded but not counted; a search that later runs the same set records it as ``parameters``).

Stored at ``<lake>/trials/trials.parquet`` (read-modify-write under the lake lock, renamed
into place like every lake file). It only grows: removing a variant does not un-try it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping

import polars as pl

from quant_assets.lake.store import Lake

SCHEMA: dict[str, pl.DataType] = {
    "impl": pl.String(), "strategy": pl.String(), "params_hash": pl.String(), "params": pl.String(),
    "n_sets": pl.Int64(), "first_seen_ns": pl.Int64(), "kind": pl.String(),
}
#: The kind of trial the deflated Sharpe counts.
PARAMETERS = "parameters"
VENUE_SENSITIVITY = "venue_sensitivity"
NULL_CRITIC = "null_critic"


def params_hash(params: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:16]


def read(lake: Lake) -> pl.DataFrame:
    if not lake.trials_path.exists():
        return pl.DataFrame(schema=SCHEMA)
    table = pl.read_parquet(lake.trials_path)
    if "kind" not in table.columns:  # a ledger written before trials had kinds: all parameter sets
        table = table.with_columns(kind=pl.lit(PARAMETERS))
    # Rows of such a ledger merged with a newer one (lake.remote) have no kind: parameter sets too.
    table = table.with_columns(pl.col("kind").fill_null(PARAMETERS))
    return table.select(list(SCHEMA)).cast(SCHEMA)


def record(lake: Lake, impl: str, strategy: str, params: Mapping[str, object], n_sets: int = 1, kind: str = PARAMETERS) -> bool:
    """Add (impl, params, kind) unless already there; True when it was new."""
    h = params_hash(params)
    with lake.lock("trials"):
        table = read(lake)
        if len(table.filter((pl.col("impl") == impl) & (pl.col("params_hash") == h) & (pl.col("kind") == kind))):
            return False
        row = pl.DataFrame(
            [{"impl": impl, "strategy": strategy, "params_hash": h, "params": json.dumps(dict(params), sort_keys=True, default=str),
              "n_sets": int(n_sets), "first_seen_ns": time.time_ns(), "kind": kind}],
            schema=SCHEMA,
        )
        lake.write_parquet(pl.concat([table, row]), lake.trials_path)
        return True


def count(lake: Lake, impl: str) -> int:
    """Parameter sets tried for the implementation ``impl`` (at least 1); venue-sensitivity
    re-runs and the null critic's control runs are not tries of the search and do not count."""
    table = read(lake).filter((pl.col("impl") == impl) & (pl.col("kind") == PARAMETERS))
    return max(1, int(table["n_sets"].sum()) if len(table) else 0)
