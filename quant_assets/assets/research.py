"""``bars_1m`` and ``sweep_<strategy>``: the vectorised research layer, month × symbol.

The work is in :mod:`quant_assets.research.run`; this module wires it to Dagster (partitions,
automation, metadata with the sweep's heat map and its top candidates).
"""

import dagster as dg

from quant_assets.analytics.plots import markdown_image
from quant_assets.automation import ENGINE_POOL, rebuild_stale_slices
from quant_assets.engines.runner import STARTING_CASH
from quant_assets.lake import instruments as inst_mod
from quant_assets.partitions import month_symbol_partitions, split_key
from quant_assets.research.run import RESEARCH_VERSION, ResearchInputError, run_bars, run_sweep_slice
from quant_assets.research.sweep import GRIDS
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource

TICKS = dg.AssetKey("ticks")
BAR_INTERVAL = "1m"
BARS = dg.AssetKey(f"bars_{BAR_INTERVAL}")


@dg.asset(
    name=f"bars_{BAR_INTERVAL}",
    partitions_def=month_symbol_partitions,
    deps=[TICKS],
    code_version=f"bars-v{RESEARCH_VERSION}",
    group_name="research",
    kinds={"polars", "parquet"},
    description=(
        "1-minute bars of each ticks partition: OHLC from trades where the minute has trades, else from mid "
        "quotes (`source`), volume and trade count, the last bid/ask/mid and the spread. Minutes without ticks "
        f"are absent. Output: `bars/interval={BAR_INTERVAL}/symbol=S/month=M/part-0.parquet`."
    ),
    automation_condition=rebuild_stale_slices(),
)
def bars_1m(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    month, symbol = split_key(context.partition_key)
    try:
        out = run_bars(lake.lake(), symbol, month, BAR_INTERVAL)
    except ResearchInputError as exc:
        raise dg.Failure(description=f"bars_{BAR_INTERVAL} {context.partition_key}: {exc}", allow_retries=False) from exc
    b = out.bars
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": b.height,
            "bars_from_trades": int((b["source"] == "trades").sum()),
            "bars_from_mids": int((b["source"] == "mid").sum()),
            "path": dg.MetadataValue.path(str(out.path)),
        },
        data_version=dg.DataVersion(out.data_version),
    )


def sweep_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"sweep_{spec.name}"
    axes = GRIDS[spec.name]

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[BARS],
        code_version=f"sweep-v{RESEARCH_VERSION}-" + "-".join(f"{a.name}:{a.start}:{a.stop}:{a.step}" for a in axes),
        group_name="research",
        kinds={"vectorbt", "parquet"},
        description=(
            f"Every combination of {spec.name}'s sweep grid ("
            + ", ".join(f"`{a.name}` {a.start:g} to {a.stop:g} by {a.step:g}" for a in axes)
            + f", lengths in {BAR_INTERVAL} bars) run with vectorbt on `bars_{BAR_INTERVAL}`, taker fees and the half "
            "spread paid on every switch; ranked by Sharpe with the deflated Sharpe of the top combinations "
            "(number of trials = grid size) and Hansen's SPA p-value of the best against staying flat. Output: "
            f"`sweeps/strategy={spec.name}/symbol=S/month=M/` (grid.parquet, summary.json, heatmap.png, manifest.json)."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
    )
    def _sweep(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        month, symbol = split_key(context.partition_key)
        the_lake = lake.lake()
        instrument = inst_mod.resolve(the_lake, symbol)
        if instrument is None:
            raise dg.Failure(description=f"{name} {context.partition_key}: no instrument record for {symbol}", allow_retries=False)
        try:
            out = run_sweep_slice(the_lake, spec, symbol, month, instrument.taker_fee, instrument.trading_days, STARTING_CASH, BAR_INTERVAL)
        except (ResearchInputError, ValueError) as exc:
            raise dg.Failure(description=f"{name} {context.partition_key}: {exc}", allow_retries=False) from exc
        s = out.summary
        best = s["top"][0] if s["top"] else {}
        metadata: dict[str, object] = {
            "combinations": s["combinations"],
            "bars": s["bars"],
            "best_sharpe": dg.MetadataValue.float(float(best["sharpe"])) if best.get("sharpe") is not None else dg.MetadataValue.null(),
            "best_params": dg.MetadataValue.json({a.name: best.get(a.name) for a in axes}),
            "best_deflated_sharpe": (dg.MetadataValue.float(best["deflated_sharpe"]) if best.get("deflated_sharpe") is not None
                                     else dg.MetadataValue.null()),
            "spa_pvalue": dg.MetadataValue.float(s["spa_pvalue"]) if s["spa_pvalue"] is not None else dg.MetadataValue.null(),
            "top": dg.MetadataValue.json(s["top"]),
            "reason": s.get("reason") or "",
            "path": dg.MetadataValue.path(str(out.directory)),
        }
        if out.heatmap:
            metadata["heatmap"] = dg.MetadataValue.md(markdown_image(out.heatmap, "Sharpe over the grid"))
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(out.data_version))

    return _sweep


def research_assets(specs: dict[str, StrategySpec]) -> list[dg.AssetsDefinition]:
    """``bars_1m`` and one sweep per registered strategy that has a sweep grid."""
    return [bars_1m, *(sweep_asset(s) for name, s in specs.items() if name in GRIDS)]
