"""``critic_scorecard``: the judge against a null critic (unpartitioned).

It reads every out-of-sample validation (``oos_validation_<strategy>``), incrementally, and for
every critic (the rule critic, each Anthropic model) compares the share of its tested
suggestions that beat the baseline's Sharpe on the next month with the share of the null
critic's random changes on the same slices (one-sided Fisher exact p-value). The work is
:func:`quant_assets.analytics.scorecard.run_scorecard`; DuckDB views ``scorecard`` and
``scorecard_tests``.
"""

import dagster as dg

from quant_assets.analytics.scorecard import IMPROVED, SCORECARD_VERSION, ScorecardError, run_scorecard
from quant_assets.automation import rebuild_ledger
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource


def _table_md(table) -> str:  # noqa: ANN001 - a polars DataFrame
    if not table.height:
        return "no critic has a tested suggestion with a null arm yet"
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    lines = ["| critic | slices | critic improved | null improved | difference | p (one-sided) |", "|---|---:|---:|---:|---:|---:|"]
    for r in table.iter_rows(named=True):
        lines.append(f"| {r['critic']} | {r['slices']} | {r['critic_improved']}/{r['critic_tested']} ({pct(r['critic_share'])}) | "
                     f"{r['null_improved']}/{r['null_tested']} ({pct(r['null_share'])}) | {pct(r['share_difference'])} | "
                     f"{'-' if r['p_value'] is None else format(r['p_value'], '.3g')} |")
    return "\n".join(lines)


def scorecard_asset(specs: dict[str, StrategySpec]) -> dg.AssetsDefinition:
    @dg.asset(
        name="critic_scorecard",
        deps=[f"oos_validation_{name}" for name in specs],
        code_version=f"scorecard-v{SCORECARD_VERSION}",
        group_name="ledgers",
        kinds={"scipy", "parquet"},
        description=(
            "The judge's scorecard: for every critic (rules; each Anthropic model), the share of its tested suggestions "
            f"that improved out of sample ({IMPROVED}) against the null critic's random changes of the same parameters, "
            "as many, on the same slices and months; one-sided Fisher exact p-value of 'better than random'. "
            "Incremental: reads only new or changed validations. Output: `scorecard/scorecard.parquet`, "
            "`scorecard/scorecard.png`; DuckDB views `scorecard` and `scorecard_tests`."
        ),
        automation_condition=rebuild_ledger(),
    )
    def critic_scorecard(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from quant_assets.analytics.plots import markdown_image

        try:
            out = run_scorecard(lake.lake())
        except ScorecardError as exc:
            raise dg.Failure(description=f"critic_scorecard: {exc}", allow_retries=False) from None
        m = out.manifest
        context.log.info(f"{out.summary} ({m['files_read']} files read, {m['files_carried_over']} carried over)")
        png = out.directory / "scorecard.png"
        return dg.MaterializeResult(
            metadata={
                "summary": out.summary,
                "critics": dg.MetadataValue.int(out.table.height),
                "critic_tested": dg.MetadataValue.int(m["tested"]["critic"]),
                "null_tested": dg.MetadataValue.int(m["tested"]["null"]),
                "improved": IMPROVED,
                "test": m["test"],
                "scorecard": dg.MetadataValue.md(_table_md(out.table)),
                "plot": dg.MetadataValue.md(markdown_image(png.read_bytes(), "critic vs null critic") if png.exists()
                                            else "no plot: nothing to compare yet"),
                "files_read": dg.MetadataValue.int(m["files_read"]),
                "files_carried_over": dg.MetadataValue.int(m["files_carried_over"]),
                "files_before_null_critic": dg.MetadataValue.int(m["files_before_null_critic"]),
                "seconds": dg.MetadataValue.float(m["seconds"]),
                "path": dg.MetadataValue.path(str(out.directory / "scorecard.parquet")),
            },
            data_version=dg.DataVersion(out.data_version),
        )

    return critic_scorecard
