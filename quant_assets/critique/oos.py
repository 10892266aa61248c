"""Out-of-sample validation of a critique's suggestions: nothing is an improvement until the
next month, which the critic never saw, says so.

For the critique of month M (symbol S), each accepted suggestion (one parameter changed from
the baseline) is backtested on M+1, and on M for reference (the in-sample effect the critic
could have seen), with the same engine and metric set as the pipeline. The baseline on M+1 is
the published ``metrics_<strategy>`` slice of M+1 when it was run with the critique's parameters
(else the baseline is re-run here). Candidate runs live under
``<lake>/oos/strategy=X/symbol=S/month=M/runs/`` and never touch the strategy's own slices.

Each suggestion is one test of "the candidate beats its baseline out of sample": its
``p_value`` is the one-sided p of Ledoit & Wolf's test of Sharpe(candidate) > Sharpe(baseline)
on M+1's paired hourly returns (:mod:`quant_assets.analytics.sharpe_test`), unadjusted. ``tested`` is
false for a suggestion the account could not run (no p-value: it was never tested). The
slice keeps its local figures: ``local_bar`` = ``alpha / n_tested`` (Bonferroni over the
critique's own ``n_tested`` suggestions, ``alpha`` = 0.05) and ``clears_local_bar``. Whether a
suggestion *improved* is not decided here: it is whether it survives the false-discovery
control over the whole ledger of tests (:mod:`quant_assets.analytics.discoveries`, asset
``discoveries``), which the DuckDB view ``suggestions`` joins back. So this file never changes
when later tests arrive. Every tested parameter set also enters the trials ledger, so the
roll-ups' deflated Sharpe counts them.

**Two arms.** Beside the critic's suggestions (``arm`` = ``critic``), the slice tests as many
random one-parameter changes of the same baseline by the null critic
(:mod:`quant_assets.critique.null_critic`, ``arm`` = ``null``), drawn from the parameters the
critic's data dictionary offered and seeded by (strategy, symbol, month, index), so a slice
always tests the same ones. They run with the same engine on M+1 against the same baseline;
their in-sample run on M is skipped (the scorecard compares out-of-sample results only:
``is_candidate_sharpe`` is null for them, and their ``reason`` says so). They are a control
group, never a change anyone would adopt: the false-discovery ledger and the DuckDB view
``suggestions`` leave them out, and the trials ledger records them as ``null_critic``, a kind
the deflated Sharpe does not count (see :func:`run_oos`). The judge's scorecard
(:mod:`quant_assets.analytics.scorecard`) compares the arms. Each arm's ``n_tested`` and local
bar count its own proposals only.

Output: ``validation.parquet`` (one row per proposal of each arm) and ``manifest.json`` (with
the null critic's proposals and seeds) in ``<lake>/oos/strategy=X/symbol=S/month=M/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.analytics import trials
from quant_assets.analytics.sharpe_test import METHOD, SharpeTest, sharpe_difference
from quant_assets.analytics.returns import ReturnSeries, sample_returns
from quant_assets.analytics.slice_metrics import compute, read_backtest
from quant_assets.critique.null_critic import DESCRIPTION as NULL_DESCRIPTION
from quant_assets.critique.null_critic import NULL_CRITIC_VERSION, null_suggestions
from quant_assets.engines.inputs import NotApplicableError
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import ParamError, StrategySpec

#: Bump when the validation procedure changes: every OOS slice becomes stale.
#: 2: a one-sided p-value per test (Ledoit-Wolf), the local bar beside it, no ``improved``
#: (the false-discovery control over the ledger decides it).
#: 3: the null critic's arm (``arm``: critic | null) and the critique's ``model``.
OOS_VERSION = f"3-null{NULL_CRITIC_VERSION}"
#: The two arms of a validation: the critic's suggestions and the null critic's random changes.
CRITIC_ARM, NULL_ARM = "critic", "null"
#: Family-wise level of a slice's local bar (Bonferroni over its own suggestions).
LOCAL_ALPHA = 0.05

SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "critique_month": pl.String(), "oos_month": pl.String(),
    "critic": pl.String(), "model": pl.String(), "arm": pl.String(), "name": pl.String(), "value": pl.String(),
    "baseline_value": pl.String(), "hypothesis": pl.String(),
    "is_baseline_sharpe": pl.Float64(), "is_candidate_sharpe": pl.Float64(),
    "oos_baseline_sharpe": pl.Float64(), "oos_candidate_sharpe": pl.Float64(), "oos_delta_sharpe": pl.Float64(),
    "oos_baseline_return": pl.Float64(), "oos_candidate_return": pl.Float64(), "oos_delta_return": pl.Float64(),
    "oos_candidate_trades": pl.Int64(), "oos_candidate_max_drawdown": pl.Float64(),
    "suggestion_index": pl.Int64(), "tested": pl.Boolean(), "n_tested": pl.Int64(), "p_value": pl.Float64(), "local_bar": pl.Float64(),
    "clears_local_bar": pl.Boolean(), "reason": pl.String(),
}


def next_month(month: str) -> str:
    d = date.fromisoformat(f"{month}-01")
    return f"{d.year + d.month // 12}-{d.month % 12 + 1:02d}"


def next_month_ready(lake: Lake, strategy: str, symbol: str, month: str) -> bool:
    """Whether month+1 has its ticks and the strategy's metric set: what every out-of-sample
    test of ``month`` (a critique's, a sweep's) needs before it can run."""
    oos_month = next_month(month)
    return lake.ticks_path(symbol, oos_month).exists() and (lake.metrics_dir(strategy, symbol, oos_month) / "manifest.json").exists()


def require_next_month(lake: Lake, strategy: str, symbol: str, month: str, what: str) -> str:
    """month+1, or :class:`WaitingForNextMonth` naming ``what`` waits for it."""
    oos_month = next_month(month)
    if not next_month_ready(lake, strategy, symbol, month):
        raise WaitingForNextMonth(f"{strategy} {symbol}: {oos_month} has no ticks or no metric set yet; {what} of {month} waits for it")
    return oos_month


def local_verdict(test: SharpeTest, n_tested: int, alpha: float = LOCAL_ALPHA) -> dict[str, Any]:
    """A test's local figures: its p-value, the slice's own bar (``alpha / n_tested``), whether
    it clears it, and why in words."""
    bar = alpha / max(1, n_tested)
    if test.p_value is None:
        return {"p_value": None, "local_bar": bar, "clears_local_bar": False, "reason": f"no p-value: {test.reason}"}
    clears = test.p_value <= bar
    return {"p_value": test.p_value, "local_bar": bar, "clears_local_bar": clears,
            "reason": (f"p={test.p_value:.4f} {'<=' if clears else '>'} {bar:.4f} (alpha {alpha} over {n_tested} "
                       f"tries); improved = survives the ledger's FDR control (see discoveries)")}


def _fmt(v: Any) -> str:
    return json.dumps(v)


@dataclass(frozen=True)
class OosOutput:
    directory: Path
    table: pl.DataFrame
    manifest: dict[str, Any]
    data_version: str


class WaitingForNextMonth(Exception):
    """M+1 has no ticks or no baseline metric set yet: the validation waits (it is not a failure)."""


def run_and_measure(lake: Lake, spec: StrategySpec, symbol: str, month: str, out: Path, trading_days: int,
                    trial_kind: str = trials.PARAMETERS):
    from quant_assets.engines.runner import run_backtest

    run_backtest(lake, spec, symbol, month, out_dir=out, trial_kind=trial_kind)
    bt = read_backtest_dir(out)
    sm = compute(bt, trading_days, None, spec.name, symbol, month)
    return sm


def read_backtest_dir(directory: Path):
    """A backtest result stored anywhere (checked against its manifest like a slice)."""
    from quant_assets.analytics.slice_metrics import BacktestSlice, BacktestSliceError

    manifest = json.loads((directory / "manifest.json").read_text())
    for name, digest in manifest.get("files", {}).items():
        if file_sha256(directory / name) != digest:
            raise BacktestSliceError(f"{directory / name}: does not match manifest.json")
    flows = directory / "cashflows.parquet"
    return BacktestSlice(pl.read_parquet(directory / "fills.parquet"), pl.read_parquet(directory / "equity.parquet"),
                         manifest, directory, pl.read_parquet(flows) if flows.exists() else None)


def run_oos(lake: Lake, spec: StrategySpec, symbol: str, month: str, trading_days: int,
            alpha: float = LOCAL_ALPHA) -> OosOutput:
    """Validate the critique of (month, symbol) on the next month (see the module docstring).
    Raises :class:`WaitingForNextMonth` when M+1 is not there yet."""
    crit_path = lake.critique_dir(spec.name, symbol, month) / "critique.json"
    if not crit_path.exists():
        raise FileNotFoundError(f"{crit_path}: no critique (materialise critique_{spec.name} for {month}|{symbol} first)")
    critique = json.loads(crit_path.read_text())
    oos_month = require_next_month(lake, spec.name, symbol, month, "the validation")
    baseline_params = critique["params"]
    base_spec = spec.with_values(baseline_params)
    final = lake.oos_dir(spec.name, symbol, month)
    # The whole folder (candidate runs, table, manifest) is published at once; the lock keeps
    # a second run of this slice from building beside it.
    with lake.lock(f"oos-{spec.name}-{symbol}-{month}"), atomic_dir(final, "oos") as out:
        suggestions = critique["accepted_suggestions"]
        n = len(suggestions)
        rows = []

        is_base = read_backtest(lake, spec.name, symbol, month)
        is_base_rs = sample_returns(is_base.equity, is_base.interval_s, trading_days)
        oos_bt = read_backtest(lake, spec.name, symbol, oos_month)
        if oos_bt.manifest.get("params") != baseline_params:
            # The published M+1 slice ran other parameters than the critique saw: re-run the baseline.
            run_and_measure(lake, base_spec, symbol, oos_month, out / "runs" / "baseline" / oos_month, trading_days)
            oos_bt = read_backtest_dir(out / "runs" / "baseline" / oos_month)
        oos_base_rs = sample_returns(oos_bt.equity, oos_bt.interval_s, trading_days)
        oos_base = period_row(oos_base_rs)
        is_base_sharpe = period_row(is_base_rs)["sharpe"]
        slice_cols = {"strategy": spec.name, "symbol": symbol, "critique_month": month, "oos_month": oos_month,
                      "critic": critique["critic"], "model": critique.get("model")}
        # As many random changes as the critic made, from the parameters its dictionary offered
        # on this slice's data (the fidelity of M, as the prompt's).
        nulls = null_suggestions(spec, baseline_params, symbol, month, n, is_base.manifest.get("fidelity"))
        for arm, proposals in ((CRITIC_ARM, suggestions), (NULL_ARM, [x.as_dict() for x in nulls])):
            for k, s in enumerate(proposals):
                cand = base_spec.with_values({s["name"]: s["value"]})
                row = {**slice_cols, "arm": arm, "name": s["name"], "value": _fmt(s["value"]),
                       "baseline_value": _fmt(baseline_params.get(s["name"])), "hypothesis": s["hypothesis"],
                       "suggestion_index": k, "n_tested": n}
                tag = f"{k}-{s['name']}" if arm == CRITIC_ARM else f"null-{k}-{s['name']}"
                try:
                    # The null arm is a control group, never a candidate anyone would select or
                    # adopt: its runs enter the trials ledger as kind null_critic, which the
                    # deflated Sharpe does not count (it deflates for the tries made in search
                    # of a strategy; these were not). Its in-sample run on M is skipped: the
                    # scorecard compares out-of-sample results only.
                    is_sm = (run_and_measure(lake, cand, symbol, month, out / "runs" / tag / month, trading_days)
                             if arm == CRITIC_ARM else None)
                    oos_sm = run_and_measure(lake, cand, symbol, oos_month, out / "runs" / tag / oos_month, trading_days,
                                             trial_kind=trials.PARAMETERS if arm == CRITIC_ARM else trials.NULL_CRITIC)
                except (ParamError, NotApplicableError) as exc:
                    # A value inside the parameter's range that this account cannot carry (a notional
                    # past its leverage), or that the month's data cannot run (the market maker's
                    # imbalance_levels on a month without order-book depth): the suggestion is
                    # tested as impossible, not as a failure.
                    rows.append(_untestable_row(row, n, alpha, str(exc)))
                    continue
                test = sharpe_difference(oos_sm.returns, oos_base_rs)
                c_sharpe, b_sharpe = oos_sm.row["sharpe"], oos_base["sharpe"]
                verdict = local_verdict(test, n, alpha)
                if is_sm is None:  # (the FDR ledger never judges a control change)
                    verdict["reason"] = (f"null critic, control arm: in-sample run on {month} skipped, no FDR verdict; "
                                         + verdict["reason"].split("; improved = ")[0])
                rows.append({
                    **row,
                    "is_baseline_sharpe": is_base_sharpe, "is_candidate_sharpe": None if is_sm is None else is_sm.row["sharpe"],
                    "oos_baseline_sharpe": b_sharpe, "oos_candidate_sharpe": c_sharpe,
                    "oos_delta_sharpe": None if c_sharpe is None or b_sharpe is None else c_sharpe - b_sharpe,
                    "oos_baseline_return": oos_base["total_return"], "oos_candidate_return": oos_sm.row["total_return"],
                    "oos_delta_return": (None if oos_sm.row["total_return"] is None or oos_base["total_return"] is None
                                         else oos_sm.row["total_return"] - oos_base["total_return"]),
                    "oos_candidate_trades": oos_sm.row["trades"], "oos_candidate_max_drawdown": oos_sm.row["max_drawdown"],
                    "tested": True, **verdict,
                })
        table = pl.DataFrame(rows, schema=SCHEMA)
        lake.write_parquet(table, out / "validation.parquet")
        digest = file_sha256(out / "validation.parquet")
        manifest = {"strategy": spec.name, "symbol": symbol, "critique_month": month, "oos_month": oos_month,
                    "oos_version": OOS_VERSION, "test": METHOD, "local_alpha": alpha, "suggestions": n,
                    "null_critic": {"method": NULL_DESCRIPTION, "suggestions": [x.as_dict() for x in nulls]},
                    "critique_sha256": file_sha256(crit_path), "baseline_backtest": lake.relative(_published(oos_bt.directory, out, final)),
                    "oos_ticks": lake.relative(lake.ticks_path(symbol, oos_month)),
                    "files": {"validation.parquet": digest}}
        lake.write_json(manifest, out / "manifest.json")
    version = hashlib.sha256(digest.encode()).hexdigest()[:24]
    return OosOutput(final, table, manifest, version)


def _untestable_row(row: dict[str, Any], n: int, alpha: float, why: str) -> dict[str, Any]:
    """The validation row of a proposal the account could not run (``row``: its slice and
    proposal columns): no figures, no p-value (it was proposed, never tested: the
    false-discovery control and the scorecard leave it out)."""
    out: dict[str, Any] = {c: None for c in SCHEMA}
    out.update(row)
    out.update({"tested": False, "local_bar": alpha / max(1, n), "clears_local_bar": False, "reason": f"cannot be run: {why}"})
    return out


def _published(path: Path, building: Path, final: Path) -> Path:
    """Where ``path``, inside the folder being built, will be once it is published."""
    return final / path.relative_to(building) if path.is_relative_to(building) else path


def period_row(rs: ReturnSeries) -> dict[str, Any]:
    from quant_assets.analytics.periods import period_metrics

    return period_metrics(rs).values


def summary(lake: Lake) -> pl.DataFrame:
    """Every tested proposal across the lake (both arms: see ``arm``): the in-sample claim next to the
    out-of-sample result."""
    files = sorted(lake.root.glob("oos/strategy=*/symbol=*/month=*/validation.parquet"))
    if not files:
        return pl.DataFrame(schema=SCHEMA)
    return pl.concat([pl.read_parquet(f) for f in files]).sort("strategy", "symbol", "critique_month")
