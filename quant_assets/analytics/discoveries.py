"""False-discovery control over every tested change: which suggestions and hand-offs *improved*.

A test is one candidate (a critique's suggestion, a sweep's hand-off candidate) run out of
sample against its baseline; its p-value is the one-sided, unadjusted p of "the candidate's
Sharpe on the next month beats the baseline's" (:mod:`quant_assets.analytics.sharpe_test`),
stored in the slice that ran it:

* ``oos/strategy=X/symbol=S/month=M/validation.parquet`` (``kind`` = ``suggestion``, ``test_index``
  = ``suggestion_index``, ``change`` = ``name=value``);
* ``handoffs/strategy=X/symbol=S/month=M/handoff.parquet`` (``kind`` = ``handoff``, ``test_index``
  = ``sweep_rank``, ``change`` = the event-driven parameters).

About 5% of tests of changes that do nothing clear p <= 0.05, so with thousands of tests a
per-test bar calls hundreds of noise changes improvements. Benjamini–Hochberg (statsmodels'
``multipletests``, ``fdr_bh``) over **all** tests of the ledger at level ``q`` keeps the
expected share of noise among the changes called improvements at most ``q`` (valid for
independent or positively dependent tests, as tests sharing a baseline or a market are):
``improved`` = survives. Two verdicts per test:

* ledger-wide (``p_adjusted``, ``improved``): among every test in the ledger now; it can
  change as tests arrive (a larger family raises the bar), which is why it lives here and not
  in the slices: a slice's own file never changes when later tests arrive;
* point in time (``p_adjusted_point_in_time``, ``improved_point_in_time``): among the tests
  whose out-of-sample month ended no later than this one's, i.e. what could have been
  concluded at the end of that month (it still moves if a test of an earlier month is added
  later, e.g. a new symbol backfilled).

The family: every test whose candidate ran (``tested``), of the critic's arm only: a
validation's null-critic rows (``arm`` = ``null``, the scorecard's control arm) are random
changes nobody would adopt, not tests of a change; they are never read here. Slices written
before the arms existed have no ``arm``: all their rows are the critic's. A test whose p-value
is undefined (a candidate that never held a position, a wiped-out account) ran and showed no
evidence: it counts with p = 1 (it can never be a discovery, and it is not dropped from the
denominator, which would flatter the others). A suggestion the account could not run was never
tested: it is listed with ``in_family`` false and is not an improvement.

Output in ``<lake>/discoveries/`` (one folder, published whole): ``discoveries.parquet`` (one
row per test, columns in :data:`SCHEMA`), ``manifest.json`` (q, method, counts, what was read)
and ``sources.parquet`` (private: each source file's path and stat signature). Cost follows
the new tests: each run lists the source files and stats them (metadata only), reads only the
files that are new or changed since the last run, and carries the other rows over from the
previous ``discoveries.parquet``; the adjustment itself is a sort of N p-values.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake, atomic_dir, file_sha256

#: Bump when the collected columns or the adjustment change (the next run re-reads every file).
DISCOVERIES_VERSION = "1"
METHOD = "Benjamini-Hochberg (statsmodels multipletests, fdr_bh) over every tested change"

#: kind -> (glob under the lake root, the file's column for each collected column)
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "suggestion": ("oos/strategy=*/symbol=*/month=*/validation.parquet",
                   {"month": "critique_month", "test_index": "suggestion_index"}),
    "handoff": ("handoffs/strategy=*/symbol=*/month=*/handoff.parquet",
                {"month": "sweep_month", "test_index": "sweep_rank"}),
}

#: What is read from each source file (by its own column names: see :data:`SOURCES`).
_READ: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "month": pl.String(), "oos_month": pl.String(),
    "test_index": pl.Int64(), "tested": pl.Boolean(), "p_value": pl.Float64(), "local_bar": pl.Float64(),
    "clears_local_bar": pl.Boolean(),
}
COLLECTED: dict[str, pl.DataType] = {"kind": pl.String(), **_READ, "change": pl.String(), "source": pl.String()}
SCHEMA: dict[str, pl.DataType] = {
    **{k: v for k, v in COLLECTED.items() if k != "source"},
    "in_family": pl.Boolean(), "p_used": pl.Float64(),
    "family_size": pl.Int64(), "p_adjusted": pl.Float64(), "improved": pl.Boolean(),
    "family_size_point_in_time": pl.Int64(), "p_adjusted_point_in_time": pl.Float64(),
    "improved_point_in_time": pl.Boolean(), "q": pl.Float64(), "source": pl.String(),
}
_SOURCES_SCHEMA: dict[str, pl.DataType] = {"source": pl.String(), "kind": pl.String(), "signature": pl.String()}
#: Source files read per scan (bounds the memory of a first run over a whole lake).
READ_CHUNK = 10_000
#: Source paths a manifest lists by name (the count is always given).
SHOWN_SOURCES = 20


class DiscoveriesError(ValueError):
    """A source file that cannot be read as a test table; the message names it."""


@dataclass(frozen=True)
class DiscoveriesOutput:
    directory: Path
    table: pl.DataFrame
    manifest: dict[str, Any]
    data_version: str

    @property
    def summary(self) -> str:
        """``k of N tested changes survive FDR at q`` (the UI's headline)."""
        m = self.manifest
        return f"{m['survivors']} of {m['tested']} tested changes survive FDR at q={m['q']:g}"


def _signature(path: str) -> str:
    """What changes when a lake file is replaced (they are only ever replaced by rename)."""
    st = os.stat(path)
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


def _files(base: str, pattern: str) -> list[str]:
    """Paths matching ``pattern`` (``a=*/b=*/c=*/file``) under ``base``, hidden folders (a writer's
    unpublished ``.tmp-`` folder) skipped, as glob does; a walk of the folders and one ``stat``
    of the file per leaf, instead of glob's extra ``lstat`` and path joins (1.5 s at 134,400)."""
    *levels, name = pattern.split("/")
    dirs = [base]
    for level in levels:
        prefix = level.removesuffix("*")
        found = []
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    found += [e.path for e in it if e.name.startswith(prefix) and not e.name.startswith(".")
                              and e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                continue
        dirs = sorted(found)
    return [f"{d}{os.sep}{name}" for d in dirs]


def _list_sources(lake: Lake) -> pl.DataFrame:
    root = str(lake.root)
    cut = len(root) + 1  # relative paths by slicing: os.path.relpath costs more than the stat here
    rows = []
    for kind, (pattern, _) in SOURCES.items():
        for path in _files(root, pattern):
            try:
                rows.append((path[cut:], kind, _signature(path)))
            except FileNotFoundError:  # no such file in this folder, or replaced since: read next run
                continue
    return pl.DataFrame(rows, schema=_SOURCES_SCHEMA, orient="row")


def _read_kind(lake: Lake, kind: str, sources: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """The tests in ``sources`` (relative paths of one kind), and the sources written before the
    tests carried a p-value (their rows have no ``tested``; they wait to be re-materialised)."""
    pattern, renames = SOURCES[kind]
    own = {renames.get(k, k): v for k, v in _READ.items()}
    own["name"] = own["value"] = own["event_params"] = own["arm"] = pl.String()
    root = str(lake.root) + os.sep
    change = (pl.col("name") + "=" + pl.col("value")) if kind == "suggestion" else pl.col("event_params")
    parts, old = [pl.DataFrame(schema=COLLECTED)], []
    # In chunks: one scan of 100,000 small files holds every file's buffers at once (3 GB).
    for i in range(0, len(sources), READ_CHUNK):
        paths = [root + s for s in sources[i:i + READ_CHUNK]]
        try:
            raw = pl.scan_parquet(paths, schema=own, missing_columns="insert", extra_columns="ignore",
                                  include_file_paths="_path", hive_partitioning=False, glob=False).collect()
        except Exception as exc:  # noqa: BLE001 - polars names the file; say what was expected of it
            raise DiscoveriesError(f"{kind} tables ({pattern}): {exc}; expected the columns {sorted(own)}") from exc
        # Only the critic's arm is a test (a hand-off or an older slice has no arm: all its rows are).
        raw = raw.filter(pl.col("arm").is_null() | (pl.col("arm") == "critic"))
        table = raw.rename({v: k for k, v in renames.items()}).with_columns(
            kind=pl.lit(kind), change=change, source=pl.col("_path").str.strip_prefix(root))
        old += table.filter(pl.col("tested").is_null())["source"].unique().to_list()
        parts.append(table.filter(pl.col("tested").is_not_null()).select(list(COLLECTED)).cast(COLLECTED))
    return pl.concat(parts), old


def _previous(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(collected rows, source signatures) of the last run, empty when there is none or it was
    made by another version."""
    d = lake.discoveries_dir
    empty = pl.DataFrame(schema=COLLECTED), pl.DataFrame(schema=_SOURCES_SCHEMA)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        if manifest.get("discoveries_version") != DISCOVERIES_VERSION:
            return empty
        rows = pl.read_parquet(d / "discoveries.parquet").select(list(COLLECTED)).cast(COLLECTED)
        return rows, pl.read_parquet(d / "sources.parquet").cast(_SOURCES_SCHEMA)
    except (FileNotFoundError, pl.exceptions.PolarsError, KeyError, json.JSONDecodeError):
        return empty


def adjust(tests: pl.DataFrame, q: float) -> pl.DataFrame:
    """The verdicts of ``tests`` (:data:`COLLECTED` columns) at level ``q``: ledger-wide and point
    in time (see the module docstring); columns of :data:`SCHEMA`, sorted by kind, strategy,
    symbol, month and test_index."""
    from statsmodels.stats.multitest import multipletests

    t = tests.sort("kind", "strategy", "symbol", "month", "test_index").with_columns(
        in_family=pl.col("tested").fill_null(False),
    ).with_columns(p_used=pl.when(pl.col("in_family")).then(pl.col("p_value").fill_null(1.0)))
    fam = t["in_family"].to_numpy()
    p = t["p_used"].to_numpy().astype(np.float64)
    oos = t["oos_month"].str.replace("-", "", literal=True).cast(pl.Int64).to_numpy()  # 2024-02 -> 202402: cheap to compare
    n = len(t)
    p_adj = np.full(n, np.nan)
    improved = np.zeros(n, dtype=bool)
    pit_adj = np.full(n, np.nan)
    pit_improved = np.zeros(n, dtype=bool)
    pit_size = np.zeros(n, dtype=np.int64)
    if fam.any():
        reject, adjusted, _, _ = multipletests(p[fam], alpha=q, method="fdr_bh")
        p_adj[fam], improved[fam] = adjusted, reject
        # Point in time: one family per out-of-sample month. Sorted by p once; each month's
        # family is a subsequence of that order, so statsmodels need not sort it again.
        order = np.flatnonzero(fam)[np.argsort(p[fam], kind="stable")]
        p_sorted, oos_sorted = p[order], oos[order]
        for month in np.unique(oos_sorted):
            members = oos_sorted <= month
            reject, adjusted, _, _ = multipletests(p_sorted[members], alpha=q, method="fdr_bh", is_sorted=True)
            these = oos_sorted[members] == month
            idx = order[members][these]
            pit_adj[idx], pit_improved[idx], pit_size[idx] = adjusted[these], reject[these], int(members.sum())
    out = t.with_columns(
        family_size=pl.when(pl.col("in_family")).then(pl.lit(int(fam.sum()), dtype=pl.Int64)),
        p_adjusted=pl.Series(p_adj).fill_nan(None),
        improved=pl.Series(improved),
        family_size_point_in_time=pl.when(pl.col("in_family")).then(pl.Series(pit_size)),
        p_adjusted_point_in_time=pl.Series(pit_adj).fill_nan(None),
        improved_point_in_time=pl.Series(pit_improved),
        q=pl.lit(q),
    )
    return out.select(list(SCHEMA)).cast(SCHEMA)


def run_discoveries(lake: Lake, q: float) -> DiscoveriesOutput:
    """Collect every test of the lake (incrementally: see the module docstring), adjust them at
    level ``q`` and publish ``<lake>/discoveries/``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q={q!r}: the false-discovery level must be strictly between 0 and 1")
    t0 = time.perf_counter()
    with lake.lock("discoveries"):
        listed = _list_sources(lake)
        rows, known = _previous(lake)
        same = listed.join(known, on=["source", "kind", "signature"], how="semi")
        fresh = listed.join(same, on="source", how="anti")
        kept = rows.join(same.select("source"), on="source", how="semi")
        parts, before_fdr = [kept], []
        for kind in SOURCES:
            table, old = _read_kind(lake, kind, fresh.filter(pl.col("kind") == kind)["source"].to_list())
            parts.append(table)
            before_fdr += old
        tests = pl.concat(parts)
        table = adjust(tests, q)
        fam = table.filter(pl.col("in_family"))
        manifest: dict[str, Any] = {
            "discoveries_version": DISCOVERIES_VERSION, "method": METHOD, "q": q,
            "tested": fam.height, "survivors": int(fam["improved"].sum()),
            "survivors_point_in_time": int(fam["improved_point_in_time"].sum()),
            "by_kind": {k: {"tested": int((fam["kind"] == k).sum()), "survivors": int(fam.filter(pl.col("kind") == k)["improved"].sum())}
                        for k in SOURCES},
            "undefined_p_counted_as_1": int(fam["p_value"].is_null().sum()),
            "not_tested": table.height - fam.height,
            "source_files": listed.height, "files_read": fresh.height, "files_carried_over": same.height,
            # slices written before the tests had p-values (after a version bump: every one, once)
            "files_before_fdr": len(before_fdr), "files_before_fdr_first": sorted(before_fdr)[:SHOWN_SOURCES],
            "oos_months": sorted(set(fam["oos_month"].to_list())),
        }
        out = lake.discoveries_dir
        with atomic_dir(out, "discoveries") as new:
            lake.write_parquet(table, new / "discoveries.parquet")
            # Only sources whose rows were collected are remembered: one written before the FDR
            # is read again next run (it may have been re-materialised by then).
            lake.write_parquet(listed.filter(~pl.col("source").is_in(before_fdr)), new / "sources.parquet")
            digest = file_sha256(new / "discoveries.parquet")
            manifest["files"] = {"discoveries.parquet": digest}
            lake.write_json(manifest, new / "manifest.json")
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    return DiscoveriesOutput(out, table, manifest, hashlib.sha256(f"{digest}{q}".encode()).hexdigest()[:24])


def read(lake: Lake) -> pl.DataFrame | None:
    """The published ledger of tests with their verdicts, or None before the first run."""
    path = lake.discoveries_dir / "discoveries.parquet"
    return pl.read_parquet(path) if path.exists() else None


def read_manifest(lake: Lake) -> dict[str, Any] | None:
    path = lake.discoveries_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None
