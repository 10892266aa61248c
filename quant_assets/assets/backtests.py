"""``backtest_<strategy>``: one asset per registered strategy, partitioned like ``ticks``.

The factory is the only Dagster code here; the work is :func:`quant_assets.engines.runner.run_backtest`.
Each asset's ``code_version`` comes from its spec (source version, engine adapter version and
parameter values), so tuning one strategy makes only that strategy's slices stale.
"""

import dagster as dg

from quant_assets.analytics.plots import equity_png, markdown_image
from quant_assets.automation import ENGINE_POOL, rebuild_stale_slices
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines.runner import run_backtest
from quant_assets.partitions import month_symbol_partitions, split_key
from quant_assets.strategies import registry
from quant_assets.strategies.spec import ParamError, StrategySpec
from resources import LakeResource

TICKS = dg.AssetKey("ticks")


def _ticks_data_version(instance: dg.DagsterInstance, partition_key: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TICKS, asset_partitions=[partition_key]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization.tags.get("dagster/data_version")


def _description(spec: StrategySpec) -> str:
    rows = "\n".join(
        f"| `{d['name']}` | {d['value']} | {d['unit']} | [{d['lo']}, {d['hi']}] | {d['doc']} |" for d in spec.docs()
    )
    return (
        f"{spec.description}\n\nEngine: **{spec.engine}**. Each month starts flat with fixed cash and is closed "
        f"out at its last quote. Output: `backtests/strategy={spec.name}/symbol=S/month=M/` "
        "(fills.parquet, equity.parquet, manifest.json).\n\n"
        f"| parameter | value | unit | range | meaning |\n|---|---|---|---|---|\n{rows}"
    )


def backtest_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    code_version = spec.code_version(ADAPTER_VERSIONS[spec.engine])

    @dg.asset(
        name=f"backtest_{spec.name}",
        partitions_def=month_symbol_partitions,
        deps=[TICKS],
        code_version=code_version,
        group_name="backtests",
        kinds={spec.engine, "parquet"},
        description=_description(spec),
        metadata={"strategy": spec.name, "engine": spec.engine, "params": dg.MetadataValue.json(spec.resolved())},
        tags={"quant_assets/engine": spec.engine},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
    )
    def _backtest(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        month, symbol = split_key(context.partition_key)
        pk = str(context.partition_key)
        try:
            out = run_backtest(
                lake.lake(), spec, symbol, month,
                ticks_version=_ticks_data_version(context.instance, pk), code_version=code_version,
            )
        except (BacktestInputError, ParamError) as exc:
            raise dg.Failure(description=f"backtest_{spec.name} {pk}: {exc}", allow_retries=False) from exc
        s, m = out.summary, out.manifest
        png = equity_png(out.equity, f"{spec.name} {symbol} {month}")
        return dg.MaterializeResult(
            metadata={
                "pnl": dg.MetadataValue.float(s["pnl"]),
                "return_pct": dg.MetadataValue.float(s["return_pct"]),
                "max_drawdown_pct": dg.MetadataValue.float(s["max_drawdown_pct"]),
                "fills": dg.MetadataValue.int(s["fills"]),
                "maker_fills": dg.MetadataValue.int(s["maker_fills"]),
                "turnover": dg.MetadataValue.float(s["turnover"]),
                "fees": dg.MetadataValue.float(s["fees"]),
                "events": dg.MetadataValue.int(m["events"]),
                "events_per_s": dg.MetadataValue.float(m["events_per_s"]),
                "engine_wall_s": dg.MetadataValue.float(m["engine_wall_s"]),
                "peak_rss_mb": dg.MetadataValue.float(m["peak_rss_mb"]),
                "quote_currency": m["quote_currency"],
                "ticks_data_version": str(m["ticks_data_version"]),
                "path": dg.MetadataValue.path(str(out.directory)),
                "equity_curve": dg.MetadataValue.md(markdown_image(png, "equity and drawdown")),
            },
            data_version=dg.DataVersion(out.data_version),
        )

    return _backtest


def backtest_assets(specs: dict[str, StrategySpec] | None = None) -> list[dg.AssetsDefinition]:
    """One asset per registered strategy (``strategies.toml`` applied)."""
    return [backtest_asset(s) for s in (specs or registry.load()).values()]
