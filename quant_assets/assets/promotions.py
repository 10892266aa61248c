"""``promotions``: critics' suggestions that kept beating their baseline out of sample become
strategy variants (unpartitioned; the work is :func:`quant_assets.critique.promotion.run_promotions`).

It reads the false-discovery ledger (``discoveries``) for survivors and the strategies' metric
sets (a promoted variant's own months, to flag one that fails them). A newly promoted variant
is written to the lake's generated variants; its ``backtest_<variant>`` chain appears when the
definitions reload (the UI's "Reload definitions", or the next CLI command).
"""

import dagster as dg

from quant_assets.automation import ENGINE_POOL, rebuild_ledger
from quant_assets.critique.promotion import PROMOTION_VERSION, Rule, run_promotions
from quant_assets.lake import instruments as inst_mod
from quant_assets.settings import PROMOTE_ENV, promotion_k_of_n
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource


def _table_md(table) -> str:  # noqa: ANN001 - a polars DataFrame
    if not len(table):
        return "no suggestion has survived the false-discovery control yet"
    lines = ["| strategy | symbol | month | change | months beaten | status | variant |", "|---|---|---|---|---:|---|---|"]
    for r in table.head(30).iter_rows(named=True):
        lines.append(f"| {r['strategy']} | {r['symbol']} | {r['month']} | `{r['change']}` | "
                     f"{r['months_beaten']} of {r['months_tested']} | {r['status']}{': ' + r['reason'] if r['reason'] and r['status'] != 'promoted' else ''} | "
                     f"{r['variant'] or '-'} |")
    return "\n".join(lines)


def promotions_asset(specs: dict[str, StrategySpec]) -> dg.AssetsDefinition:
    k, n = promotion_k_of_n()
    rule = Rule(k, n)

    @dg.asset(
        name="promotions",
        deps=["discoveries", *(f"metrics_{name}" for name in specs)],
        code_version=f"promotions-v{PROMOTION_VERSION}-{k}of{n}",
        group_name="ledgers",
        kinds={"parquet", "toml"},
        description=(
            f"Suggestions that survived the false-discovery control and then {rule.describe()} "
            f"(`${PROMOTE_ENV}` = k/n) become strategy variants `<strategy>_<parameter>_<value>`, written to "
            "`<lake>/strategies/promoted.toml` (never to strategies.toml) with their lineage in promoted.json; "
            "their own chains appear when the definitions reload. A promoted variant that fails its own later "
            "months against its base is flagged. `quant-assets promoted` lists them, `quant-assets retire` removes one. "
            "Output: `promotions/candidates.parquet`."
        ),
        automation_condition=rebuild_ledger(),
        pool=ENGINE_POOL,  # a candidate is backtested on its months after the first
    )
    def promotions(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        out = run_promotions(the_lake, specs, rule,
                             lambda symbol, month: inst_mod.trading_days_of(the_lake, symbol, month=month))
        m = out.manifest
        if out.newly_promoted:
            context.log.info(f"promoted {', '.join(out.newly_promoted)}: reload the definitions to see their assets")
        return dg.MaterializeResult(
            metadata={
                "rule": m["rule"]["text"],
                "candidates": dg.MetadataValue.int(m["candidates"]),
                "by_status": dg.MetadataValue.json(m["by_status"]),
                "newly_promoted": dg.MetadataValue.json(out.newly_promoted),
                "active_variants": dg.MetadataValue.json(m["active"]),
                "flagged": dg.MetadataValue.json(out.flagged),
                "candidates_table": dg.MetadataValue.md(_table_md(out.table)),
                "path": dg.MetadataValue.path(str(out.directory / "candidates.parquet")),
            },
            data_version=dg.DataVersion(out.data_version),
        )

    return promotions
