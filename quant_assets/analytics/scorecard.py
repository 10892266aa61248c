"""The judge's scorecard: does each critic's advice beat random changes out of sample?

Every out-of-sample validation (``oos/strategy=X/symbol=S/month=M/validation.parquet``,
:mod:`quant_assets.critique.oos`) holds two arms on the same slice: the critic's accepted
suggestions (``arm`` = ``critic``) and as many random one-parameter changes of the same
baseline by the null critic (``arm`` = ``null``, :mod:`quant_assets.critique.null_critic`),
run by the same engine on the same next month M+1 against the same baseline run.

A tested proposal **improved** when its Sharpe ratio on M+1 is above the baseline's on M+1
(``oos_delta_sharpe`` > 0, both on the slice's sampled returns, annualised the same way). A
proposal that ran but whose Sharpe (or the baseline's) is undefined (it never held a position)
showed no improvement: it counts as not improved, and the number of such proposals is given
per arm (``*_undefined``). A proposal the account could not run (``tested`` false) is in
neither count: it is listed as ``*_proposed`` only.

One row per critic: ``rules`` for the offline rule critic, the model id for each Anthropic
model (the ``critic`` / ``model`` a critique recorded; null rows carry their slice's critic).
Its columns: the critic's share of tested suggestions that improved, the null critic's share
on the same slices, and the one-sided p-value of "the critic's share is larger" by Fisher's
exact test on the 2×2 table (arm × improved; :func:`scipy.stats.fisher_exact`, ``alternative``
= ``greater``): the probability, were the arms equally good, of the critic doing at least this
much better. Null with its reason when an arm has no tested proposal.

Limits: the test treats proposals as independent draws, but the proposals of one slice share
its baseline and its month, and slices of one month share the market: with few slices the
p-value is too small. Sharpe of one month is noisy: a share is a coarse measure, not the size
of an improvement (``*_mean_delta_sharpe`` gives that). The null critic's changes are local
(within a factor 4, see its module): "better than random" means better than random changes of
that size. The scorecard reads the validations published now: a re-critiqued slice counts
with its latest critic only.

Output in ``<lake>/scorecard/`` (one folder, published whole): ``scorecard.parquet``
(:data:`SCHEMA`), ``scorecard.png`` (the shares side by side), ``tests.parquet`` (every
proposal of both arms with its verdict, :data:`TESTS_SCHEMA`: DuckDB view
``scorecard_tests``), ``manifest.json`` and ``sources.parquet`` (private: each validation
file's stat signature). Cost follows the new validations, as the false-discovery ledger's
(:mod:`quant_assets.analytics.discoveries`): each run stats the validation files (metadata
only), reads only those new or changed since the last run, carries the other rows over from
the previous ``tests.parquet``, and aggregates N rows; when nothing is new, changed or removed
the published scorecard stands as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

# The same walk and stat signature as the false-discovery ledger: one cheap listing per run.
from quant_assets.analytics.discoveries import READ_CHUNK, _files, _signature
from quant_assets.lake.store import Lake, atomic_dir, file_sha256

#: Bump when the collected columns, the definition of improved or the test change.
SCORECARD_VERSION = "1"
PATTERN = "oos/strategy=*/symbol=*/month=*/validation.parquet"
TEST = "Fisher's exact test on arm x improved, one-sided (critic's share > null's): scipy.stats.fisher_exact"
IMPROVED = "out-of-sample Sharpe on M+1 above the baseline's on M+1 (oos_delta_sharpe > 0; undefined counts as not improved)"
CRITIC_ARM, NULL_ARM = "critic", "null"  # as quant_assets.critique.oos (not imported: it loads the engines' analytics)

#: What is read from each validation file.
_READ: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "critique_month": pl.String(), "oos_month": pl.String(),
    "critic": pl.String(), "model": pl.String(), "arm": pl.String(), "suggestion_index": pl.Int64(),
    "name": pl.String(), "value": pl.String(), "tested": pl.Boolean(), "oos_delta_sharpe": pl.Float64(),
}
TESTS_SCHEMA: dict[str, pl.DataType] = {
    "critic_label": pl.String(), "critic": pl.String(), "model": pl.String(), "arm": pl.String(),
    "strategy": pl.String(), "symbol": pl.String(), "critique_month": pl.String(), "oos_month": pl.String(),
    "suggestion_index": pl.Int64(), "change": pl.String(), "tested": pl.Boolean(), "oos_delta_sharpe": pl.Float64(),
    "improved": pl.Boolean(), "source": pl.String(),
}
_ARM_COLUMNS = ("proposed", "tested", "improved", "undefined", "share", "mean_delta_sharpe")
SCHEMA: dict[str, pl.DataType] = {
    "critic": pl.String(), "critic_kind": pl.String(), "model": pl.String(), "slices": pl.Int64(),
    "first_oos_month": pl.String(), "last_oos_month": pl.String(),
    **{f"{arm}_{c}": (pl.Float64() if c in ("share", "mean_delta_sharpe") else pl.Int64())
       for arm in (CRITIC_ARM, NULL_ARM) for c in _ARM_COLUMNS},
    "share_difference": pl.Float64(), "odds_ratio": pl.Float64(), "p_value": pl.Float64(), "reason": pl.String(),
}
_SOURCES_SCHEMA: dict[str, pl.DataType] = {"source": pl.String(), "signature": pl.String(), "before_null_critic": pl.Boolean()}
#: Validation files a manifest names when they predate the null critic (the count is always given).
SHOWN_SOURCES = 20


class ScorecardError(ValueError):
    """A validation file that cannot be read; the message names it and what was expected."""


@dataclass(frozen=True)
class ScorecardOutput:
    directory: Path
    table: pl.DataFrame
    tests: pl.DataFrame
    manifest: dict[str, Any]
    data_version: str

    @property
    def summary(self) -> str:
        """One line per critic: ``rules: 4/10 improved vs null 3/10 (p=0.50)``."""
        if not self.table.height:
            return "no critic has a tested suggestion with a null arm yet"
        return "; ".join(_line(r) for r in self.table.iter_rows(named=True))


def _line(r: dict[str, Any]) -> str:
    p = "p n/a" if r["p_value"] is None else f"p={r['p_value']:.2g}"
    return (f"{r['critic']}: {r['critic_improved']}/{r['critic_tested']} improved vs null "
            f"{r['null_improved']}/{r['null_tested']} ({p})")


def _list_sources(lake: Lake) -> pl.DataFrame:
    root = str(lake.root)
    cut = len(root) + 1
    rows = []
    for path in _files(root, PATTERN):
        try:
            rows.append((path[cut:], _signature(path)))
        except FileNotFoundError:  # no validation in this folder, or replaced since: read next run
            continue
    return pl.DataFrame(rows, schema={"source": pl.String(), "signature": pl.String()}, orient="row")


def label(critic: pl.Expr, model: pl.Expr) -> pl.Expr:
    """A critic's name on the scorecard: ``rules``, or the Anthropic model id."""
    return pl.when(critic == "rules").then(pl.lit("rules")).otherwise(
        pl.coalesce(model, pl.lit("unknown model of ") + critic.fill_null("an unknown critic")))


def collect(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows of validation files (:data:`_READ` columns and ``source``) as :data:`TESTS_SCHEMA`:
    each proposal with its critic's label and whether it improved (see the module docstring)."""
    return raw.with_columns(
        critic_label=label(pl.col("critic"), pl.col("model")),
        change=pl.col("name") + "=" + pl.col("value"),
        improved=pl.when(pl.col("tested")).then(pl.col("oos_delta_sharpe").fill_null(0.0) > 0.0),
    ).select(list(TESTS_SCHEMA)).cast(TESTS_SCHEMA)


def _read(lake: Lake, sources: list[str]) -> tuple[pl.DataFrame, set[str]]:
    """The proposals in ``sources`` and the sources written before the null critic (no ``arm``:
    nothing to compare; they are remembered and read again only when they change)."""
    root = str(lake.root) + os.sep
    parts, before = [pl.DataFrame(schema=TESTS_SCHEMA)], set()
    for i in range(0, len(sources), READ_CHUNK):
        paths = [root + s for s in sources[i:i + READ_CHUNK]]
        try:
            raw = pl.scan_parquet(paths, schema=_READ, missing_columns="insert", extra_columns="ignore",
                                  include_file_paths="_path", hive_partitioning=False, glob=False).collect()
        except Exception as exc:  # noqa: BLE001 - polars names the file; say what was expected of it
            raise ScorecardError(f"validation tables ({PATTERN}): {exc}; expected the columns {sorted(_READ)}") from exc
        raw = raw.with_columns(source=pl.col("_path").str.strip_prefix(root))
        before |= set(raw.filter(pl.col("arm").is_null() | pl.col("tested").is_null())["source"].to_list())
        parts.append(collect(raw.filter(pl.col("arm").is_not_null() & pl.col("tested").is_not_null())))
    return pl.concat(parts), before


def _previous(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any] | None]:
    """(collected rows, source signatures, manifest) of the last run; empty and None when there
    is none or it was made by another version."""
    d = lake.scorecard_dir
    empty = pl.DataFrame(schema=TESTS_SCHEMA), pl.DataFrame(schema=_SOURCES_SCHEMA), None
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        if manifest.get("scorecard_version") != SCORECARD_VERSION:
            return empty
        return (pl.read_parquet(d / "tests.parquet").select(list(TESTS_SCHEMA)).cast(TESTS_SCHEMA),
                pl.read_parquet(d / "sources.parquet").select(list(_SOURCES_SCHEMA)).cast(_SOURCES_SCHEMA), manifest)
    except (FileNotFoundError, pl.exceptions.PolarsError, KeyError, json.JSONDecodeError):
        return empty


def fisher_greater(k_critic: int, n_critic: int, k_null: int, n_null: int) -> tuple[float | None, float | None, str]:
    """(odds ratio, one-sided p, reason) of "the critic's share k/n is larger than the null's" by
    Fisher's exact test; p None when an arm has no tested proposal, the reason says which."""
    if n_critic == 0:
        return None, None, "no tested suggestion of the critic: nothing to compare"
    if n_null == 0:
        return None, None, "no tested null change on the critic's slices: nothing to compare against"
    from scipy.stats import fisher_exact

    res = fisher_exact([[k_critic, n_critic - k_critic], [k_null, n_null - k_null]], alternative="greater")
    odds = float(res.statistic)
    return (odds if odds == odds and odds != float("inf") else None, float(res.pvalue),
            f"{k_critic}/{n_critic} improved vs null {k_null}/{n_null}: one-sided Fisher exact p = "
            f"{float(res.pvalue):.3g} (chance of the critic doing at least this much better were it no better than random)")


def score(tests: pl.DataFrame) -> pl.DataFrame:
    """The scorecard (:data:`SCHEMA`, one row per critic, sorted by name) of collected proposals
    (:data:`TESTS_SCHEMA`)."""
    if not tests.height:
        return pl.DataFrame(schema=SCHEMA)
    tested = pl.col("tested").fill_null(False)
    per_arm = tests.group_by("critic_label", "arm").agg(
        proposed=pl.len(), tested=tested.sum(), improved=pl.col("improved").fill_null(False).sum(),
        undefined=(tested & pl.col("oos_delta_sharpe").is_null()).sum(),
        mean_delta_sharpe=pl.col("oos_delta_sharpe").filter(tested).mean(),
    )
    slices = tests.group_by("critic_label").agg(
        critic_kind=pl.col("critic").first(), model=pl.col("model").first(),
        slices=pl.struct("strategy", "symbol", "critique_month").n_unique(),
        first_oos_month=pl.col("oos_month").min(), last_oos_month=pl.col("oos_month").max(),
    )
    rows = []
    for s in slices.sort("critic_label").iter_rows(named=True):
        row: dict[str, Any] = {"critic": s["critic_label"], "critic_kind": s["critic_kind"], "model": s["model"],
                               "slices": s["slices"], "first_oos_month": s["first_oos_month"],
                               "last_oos_month": s["last_oos_month"]}
        for arm in (CRITIC_ARM, NULL_ARM):
            a = per_arm.filter((pl.col("critic_label") == s["critic_label"]) & (pl.col("arm") == arm))
            r = a.row(0, named=True) if a.height else {"proposed": 0, "tested": 0, "improved": 0, "undefined": 0,
                                                       "mean_delta_sharpe": None}
            row.update({f"{arm}_{c}": r[c] for c in ("proposed", "tested", "improved", "undefined", "mean_delta_sharpe")})
            row[f"{arm}_share"] = r["improved"] / r["tested"] if r["tested"] else None
        odds, p, reason = fisher_greater(row["critic_improved"], row["critic_tested"], row["null_improved"], row["null_tested"])
        both = row["critic_share"] is not None and row["null_share"] is not None
        row.update(share_difference=row["critic_share"] - row["null_share"] if both else None,
                   odds_ratio=odds, p_value=p, reason=reason)
        rows.append(row)
    return pl.DataFrame(rows, schema=SCHEMA)


def run_scorecard(lake: Lake) -> ScorecardOutput:
    """Collect every validation's two arms (incrementally: see the module docstring), score each
    critic against the null critic and publish ``<lake>/scorecard/``."""
    from quant_assets.analytics.plots import scorecard_png

    t0 = time.perf_counter()
    with lake.lock("scorecard"):
        listed = _list_sources(lake)
        rows, known, previous = _previous(lake)
        same = known.join(listed, on=["source", "signature"], how="semi")
        fresh = listed.join(same, on="source", how="anti")
        if previous is not None and not fresh.height and same.height == known.height:
            # Nothing new, changed or removed: the published scorecard stands (no re-plot, no scipy).
            manifest = {**previous, "files_read": 0, "files_carried_over": same.height,
                        "seconds": round(time.perf_counter() - t0, 3)}
            version = hashlib.sha256(previous["files"]["scorecard.parquet"].encode()).hexdigest()[:24]
            return ScorecardOutput(lake.scorecard_dir, pl.read_parquet(lake.scorecard_dir / "scorecard.parquet"), rows,
                                   manifest, version)
        kept = rows.join(same.select("source"), on="source", how="semi")
        read, before = _read(lake, fresh["source"].to_list())
        tests = pl.concat([kept, read]).sort("critic_label", "strategy", "symbol", "critique_month", "arm", "suggestion_index")
        table = score(tests)
        sources = pl.concat([same, fresh.with_columns(before_null_critic=pl.col("source").is_in(sorted(before)))]
                            ).select(list(_SOURCES_SCHEMA)).cast(_SOURCES_SCHEMA)
        old = sorted(sources.filter(pl.col("before_null_critic"))["source"].to_list())
        manifest: dict[str, Any] = {
            "scorecard_version": SCORECARD_VERSION, "improved": IMPROVED, "test": TEST,
            "critics": table["critic"].to_list(), "proposals": tests.height,
            "tested": {arm: tests.filter((pl.col("arm") == arm) & pl.col("tested")).height for arm in (CRITIC_ARM, NULL_ARM)},
            "source_files": listed.height, "files_read": fresh.height, "files_carried_over": same.height,
            # validations written before the null critic: no control arm, left out until re-run
            "files_before_null_critic": len(old), "files_before_null_critic_first": old[:SHOWN_SOURCES],
        }
        out = lake.scorecard_dir
        with atomic_dir(out, "scorecard") as new:
            lake.write_parquet(table, new / "scorecard.parquet")
            lake.write_parquet(tests, new / "tests.parquet")
            lake.write_parquet(sources, new / "sources.parquet")
            files = ["scorecard.parquet", "tests.parquet"]
            if table.height:
                (new / "scorecard.png").write_bytes(scorecard_png(table))
                files.append("scorecard.png")
            manifest["files"] = {name: file_sha256(new / name) for name in files}
            lake.write_json(manifest, new / "manifest.json")
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    version = hashlib.sha256(manifest["files"]["scorecard.parquet"].encode()).hexdigest()[:24]
    return ScorecardOutput(out, table, tests, manifest, version)


def read(lake: Lake) -> pl.DataFrame | None:
    """The published scorecard, or None before the first run."""
    path = lake.scorecard_dir / "scorecard.parquet"
    return pl.read_parquet(path) if path.exists() else None


def read_manifest(lake: Lake) -> dict[str, Any] | None:
    path = lake.scorecard_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None
