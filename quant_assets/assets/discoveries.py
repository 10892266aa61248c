"""``discoveries``: the false-discovery control over every tested change (unpartitioned).

It reads every out-of-sample validation of critiques' suggestions (``oos_validation_<strategy>``)
and every sweep hand-off (``sweep_oos_<strategy>``), incrementally, and adjusts their p-values
with Benjamini–Hochberg at ``$QUANT_FDR_Q`` (default 0.10): ``improved`` = survives. The work
is :func:`quant_assets.analytics.discoveries.run_discoveries`; the DuckDB views ``suggestions``
and ``handoffs`` show its verdict beside each slice's own figures.
"""

import dagster as dg

from quant_assets.analytics.discoveries import DISCOVERIES_VERSION, DiscoveriesError, run_discoveries
from quant_assets.automation import rebuild_ledger
from quant_assets.settings import FDR_Q_ENV, fdr_q
from quant_assets.strategies.registry import SWEEP_GRIDS
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource

#: Survivors listed in the metadata (all of them are in discoveries.parquet).
SHOWN = 20


def _survivors_md(table) -> str:  # noqa: ANN001 - a polars DataFrame
    survivors = table.filter(table["improved"]).sort("p_adjusted").head(SHOWN)
    if not survivors.height:
        return "no tested change survives"
    lines = ["| kind | strategy | symbol | month | out-of-sample | change | p | adjusted p |", "|---|---|---|---|---|---|---:|---:|"]
    for r in survivors.iter_rows(named=True):
        lines.append(f"| {r['kind']} | {r['strategy']} | {r['symbol']} | {r['month']} | {r['oos_month']} | `{r['change']}` | "
                     f"{r['p_value']:.2g} | {r['p_adjusted']:.2g} |")
    return "\n".join(lines)


def discoveries_asset(specs: dict[str, StrategySpec]) -> dg.AssetsDefinition:
    q = fdr_q()
    deps = [*(f"oos_validation_{name}" for name in specs), *(f"sweep_oos_{name}" for name in specs if name in SWEEP_GRIDS)]

    @dg.asset(
        name="discoveries",
        deps=deps,
        code_version=f"discoveries-v{DISCOVERIES_VERSION}-q{q:g}",
        # its own group: the nightly job selects the "critiques" group, partitioned by month × symbol
        group_name="ledgers",
        kinds={"statsmodels", "parquet"},
        description=(
            "Which tested changes improved: every critique suggestion validated out of sample and every sweep "
            "hand-off is one test (one-sided p of 'beats its baseline on the next month'); Benjamini-Hochberg over "
            f"the whole ledger at q = {q:g} (`${FDR_Q_ENV}`) decides `improved`, ledger-wide and point in time "
            "(among tests whose out-of-sample month ended no later). Incremental: reads only new or changed "
            "slices. Output: `discoveries/discoveries.parquet`; the DuckDB views `suggestions` and `handoffs` "
            "show its verdict."
        ),
        automation_condition=rebuild_ledger(),
    )
    def discoveries(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        try:
            out = run_discoveries(lake.lake(), q)
        except DiscoveriesError as exc:
            raise dg.Failure(description=f"discoveries: {exc}", allow_retries=False) from None
        m = out.manifest
        context.log.info(f"{out.summary} ({m['files_read']} files read, {m['files_carried_over']} carried over)")
        return dg.MaterializeResult(
            metadata={
                "summary": out.summary,
                "tested": dg.MetadataValue.int(m["tested"]),
                "survivors": dg.MetadataValue.int(m["survivors"]),
                "survivors_point_in_time": dg.MetadataValue.int(m["survivors_point_in_time"]),
                "q": dg.MetadataValue.float(q),
                "by_kind": dg.MetadataValue.json(m["by_kind"]),
                "undefined_p_counted_as_1": dg.MetadataValue.int(m["undefined_p_counted_as_1"]),
                "not_tested": dg.MetadataValue.int(m["not_tested"]),
                "files_read": dg.MetadataValue.int(m["files_read"]),
                "files_carried_over": dg.MetadataValue.int(m["files_carried_over"]),
                "files_before_fdr": dg.MetadataValue.int(m["files_before_fdr"]),
                "seconds": dg.MetadataValue.float(m["seconds"]),
                "survivors_table": dg.MetadataValue.md(_survivors_md(out.table)),
                "path": dg.MetadataValue.path(str(out.directory / "discoveries.parquet")),
            },
            data_version=dg.DataVersion(out.data_version),
        )

    return discoveries
