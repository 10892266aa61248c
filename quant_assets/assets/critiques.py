"""``critique_<strategy>`` and ``oos_validation_<strategy>`` (month × symbol).

The critique reads the slice's metric set (:func:`quant_assets.critique.run.run_critique`) with
the critic chosen by the ``critic`` resource; a paid critic's call that its budget cannot cover
is not made and the slice waits (materialises nothing, says why: "budget exhausted: ...";
:mod:`quant_assets.critique.budget`). The validation re-tests the critique's accepted
suggestions on the next month (:func:`quant_assets.critique.oos.run_oos`); it depends on that
month's ``ticks`` and ``metrics_<strategy>`` through a partition mapping one month ahead, and
while they do not exist the step materialises nothing (it waits; it does not fail).
"""

import warnings

import dagster as dg
from pydantic import Field

from quant_assets.analytics.slice_metrics import BacktestSliceError
from quant_assets.automation import ENGINE_POOL, rebuild_critiques, rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, NotBuilt, build_slices
from quant_assets.critique.budget import BudgetExhausted
from quant_assets.critique.critics import CritiqueFailed
from quant_assets.critique.null_critic import NullCriticError
from quant_assets.critique.oos import CRITIC_ARM, NULL_ARM, OOS_VERSION, WaitingForNextMonth, run_oos
from quant_assets.critique.rounds import MAX_ROUNDS
from quant_assets.critique.run import CRITIQUE_VERSION, run_critique
from quant_assets.lake import instruments as inst_mod
from quant_assets.partitions import month_symbol_partitions, split_key
from quant_assets.strategies.spec import StrategySpec
from resources import CriticResource, LakeResource

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    #: (month M, symbol S) -> (M+1, S); the running month has no next month yet.
    NEXT_MONTH = dg.MultiPartitionMapping({
        "month": dg.DimensionPartitionMapping(
            "month", dg.TimeWindowPartitionMapping(start_offset=1, end_offset=1, allow_nonexistent_upstream_partitions=True)),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    })


def _summary_md(record: dict) -> str:
    c = record["critique"]
    lines = [f"**{c['verdict']}** ({'rule-based' if record['rule_based'] else record['model']})", "", c["diagnosis"], "",
             "Risks:", *[f"- {r}" for r in c["risks"]]]
    if (warning := record["training_cutoff"].get("warning")):
        lines = [f"> Warning: {warning}.", "", *lines]
    if record["accepted_suggestions"]:
        lines += ["", "Suggestions to test out of sample:",
                  *[f"- `{s['name']}` = {s['value']}: {s['hypothesis']}" for s in record["accepted_suggestions"]]]
    if record["rejected_suggestions"]:
        lines += ["", "Rejected suggestions:", *[f"- `{s['name']}` = {s['value']}: {s['reason']}" for s in record["rejected_suggestions"]]]
    return "\n".join(lines)


def _cutoff_metadata(tc: dict) -> dict:
    """What the model may already know of the month (:mod:`quant_assets.critique.cutoffs`)."""
    missing = "unknown" if tc["applicable"] else "not applicable (rule-based critic)"
    flag = tc["data_before_training_cutoff"]
    return {"training_cutoff": tc["training_data_cutoff"] or missing,
            "data_before_training_cutoff": dg.MetadataValue.bool(flag) if flag is not None else dg.MetadataValue.text(missing)}


def _results_md(t) -> str:
    if not len(t):
        return "no accepted suggestion to test"
    cols = ("arm", "name", "value", "is_candidate_sharpe", "oos_baseline_sharpe", "oos_candidate_sharpe", "p_value", "local_bar",
            "clears_local_bar")
    fmt = lambda v: "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [" | ".join(fmt(r[c]) for c in cols) for r in t.iter_rows(named=True)]
    return "\n".join([" | ".join(cols), " | ".join("---" for _ in cols), *rows])


class CritiqueConfig(dg.Config):
    """How a critique runs (the launchpad shows it)."""

    max_rounds: int = Field(default=1, ge=1, le=MAX_ROUNDS, description=(
        "rounds of propose -> backtest in sample -> refine (1: the critic answers once); only the last round's "
        "suggestions are tested out of sample, every round's candidates enter the trials ledger"))


def critique_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"critique_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        # The realism sensitivity is part of what the critic reads (is the sign of the result an
        # artefact of latency or fees?).
        deps=[dg.AssetKey(f"metrics_{spec.name}"), dg.AssetKey(f"sensitivity_{spec.name}")],
        code_version=f"critique-v{CRITIQUE_VERSION}",
        group_name="critiques",
        kinds={"anthropic", "json"},
        output_required=False,  # a slice waiting for the critic's budget materialises nothing
        description=(
            f"A risk manager's critique of each `metrics_{spec.name}` slice: diagnosis, regime dependence, risks, a "
            "verdict and parameter suggestions (only existing parameters within their ranges; others are rejected "
            "and recorded). Anthropic when ANTHROPIC_API_KEY is set, else the offline rule critic. Output: "
            f"`critiques/strategy={spec.name}/symbol=S/month=M/` (prompt.json, critique.json)."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_critiques(spec.name),
        backfill_policy=BACKFILL_POLICY,
    )
    def _critique(context: dg.AssetExecutionContext, config: CritiqueConfig, lake: LakeResource, critic: CriticResource):
        the_lake = lake.lake()
        record = context.instance.get_run_record_by_id(context.run_id)
        spend = critic.spend_ledger(the_lake, context.run_id, record.start_time if record is not None else None)

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            days = inst_mod.trading_days_of(the_lake, symbol, month=month) if config.max_rounds > 1 else None
            try:
                out = run_critique(the_lake, spec, symbol, month, critic.critic(), reveal_symbol=critic.reveal_symbol,
                                   max_rounds=config.max_rounds, trading_days=days, spend=spend)
            except BudgetExhausted as exc:  # nothing was sent: the slice waits, it has not failed
                return NotBuilt(f"{name} {pk}: {exc}", observation={**exc.metadata(), "reason": str(exc)})
            except (CritiqueFailed, BacktestSliceError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from None
            r = out.record
            usage = r["usage"] or {}
            return Built(
                metadata={
                    "verdict": r["critique"]["verdict"],
                    "critic": "rules (offline)" if r["rule_based"] else f"anthropic {r['model']}",
                    "suggestions_accepted": dg.MetadataValue.int(len(r["accepted_suggestions"])),
                    "suggestions_rejected": dg.MetadataValue.int(len(r["rejected_suggestions"])),
                    "input_tokens": dg.MetadataValue.int(int(usage.get("input_tokens", 0))),
                    "output_tokens": dg.MetadataValue.int(int(usage.get("output_tokens", 0))),
                    "cache_write_tokens": dg.MetadataValue.int(int(usage.get("cache_creation_input_tokens", 0))),
                    "cache_read_tokens": dg.MetadataValue.int(int(usage.get("cache_read_input_tokens", 0))),
                    # A cached answer cost nothing now; the first call's cost is in critique.json.
                    "cost_usd": dg.MetadataValue.float(0.0 if out.cached else float(r["cost_usd"] or 0.0)),
                    "from_cache": dg.MetadataValue.bool(out.cached),
                    "attempts": dg.MetadataValue.int(int(r["attempts"])),
                    "prompt_sha256": r["prompt_sha256"],
                    "month_index": dg.MetadataValue.int(int(r["month_index"])),
                    "rounds": dg.MetadataValue.int(len(r["rounds"])),
                    "memory_tests_seen": dg.MetadataValue.int(int(r["memory"]["tests_seen"])),
                    **_cutoff_metadata(r["training_cutoff"]),
                    "critique": dg.MetadataValue.md(_summary_md(r)),
                    "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _critique


def oos_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"oos_validation_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[
            dg.AssetKey(f"critique_{spec.name}"),
            dg.AssetDep(f"metrics_{spec.name}", partition_mapping=NEXT_MONTH),
            dg.AssetDep("ticks", partition_mapping=NEXT_MONTH),
        ],
        code_version=f"oos-v{OOS_VERSION}",
        group_name="critiques",
        kinds={"nautilus", "hftbacktest", "parquet"},
        output_required=False,
        description=(
            f"Out-of-sample test of the suggestions in `critique_{spec.name}` for month M: each is backtested on "
            "M+1 (and on M for reference) and compared with the baseline on M+1: a one-sided p-value of 'beats the "
            "baseline' (Ledoit-Wolf Sharpe difference) and the slice's own bar (Bonferroni over its suggestions). "
            "Beside them, as many random changes by the null critic (`arm` = null, on M+1 only), for `critic_scorecard`. "
            "Whether a suggestion improved is decided by the FDR control over every tested change (`discoveries`). "
            "Waits (materialises nothing) until M+1 exists. Output: "
            f"`oos/strategy={spec.name}/symbol=S/month=M/validation.parquet`; DuckDB view `suggestions`."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
        backfill_policy=BACKFILL_POLICY,
    )
    def _oos(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            trading_days = inst_mod.trading_days_of(the_lake, symbol, month=month)
            try:
                out = run_oos(the_lake, spec, symbol, month, trading_days)
            except WaitingForNextMonth as exc:
                return NotBuilt(str(exc))
            except (FileNotFoundError, BacktestSliceError, NullCriticError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from None
            t = out.table
            critic, null = t.filter(t["arm"] == CRITIC_ARM), t.filter(t["arm"] == NULL_ARM)
            return Built(
                metadata={
                    "oos_month": out.manifest["oos_month"],
                    "suggestions_tested": dg.MetadataValue.int(len(critic)),
                    # local figures only: whether a suggestion improved is the FDR ledger's verdict (discoveries)
                    "clear_local_bar": dg.MetadataValue.int(int(critic["clears_local_bar"].sum()) if len(critic) else 0),
                    # the control arm (critic_scorecard compares the two)
                    "null_changes_tested": dg.MetadataValue.int(len(null)),
                    "results": dg.MetadataValue.md(_results_md(t)),
                    "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _oos
