"""``wf_fold_<strategy>`` (month × symbol) and ``walkforward_<strategy>`` (per symbol): the
walk-forward optimisation as incremental assets.

The work is in :mod:`quant_assets.research.walkforward`; this module wires it to Dagster. A fold
of month M reads the sweeps of the months before it (``months_window(-reach, -1)``: a new sweep
makes exactly the folds whose window holds it stale) and M's ticks with M−1's (the event-driven
run is warmed like every backtest); the per-symbol report stitches the folds.
"""

import json

import dagster as dg

from quant_assets.assets.reports import BY_SYMBOL
from quant_assets.assets.venues import venue_dep
from quant_assets.automation import ENGINE_POOL, rebuild_rollups, rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, NotBuilt, build_slices
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.inputs import BacktestInputError, NotApplicableError
from quant_assets.lake import instruments as inst_mod
from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions, months_window, split_key, symbol_partitions
from quant_assets.research.walkforward import WF_VERSION, NoInSample, WalkForwardSettings, run_fold, run_walkforward
from quant_assets.strategies.spec import ParamError, StrategySpec
from resources import LakeResource


def _f(v) -> dg.MetadataValue:  # noqa: ANN001
    return dg.MetadataValue.null() if v is None else dg.MetadataValue.float(float(v))


def fold_asset(spec: StrategySpec, settings: WalkForwardSettings) -> dg.AssetsDefinition:
    name = f"wf_fold_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[dg.AssetDep(f"sweep_{spec.name}", partition_mapping=months_window(-settings.reach, -1)),
              dg.AssetDep("ticks", partition_mapping=WITH_PREVIOUS_MONTH), dg.AssetKey("funding"), venue_dep()],
        code_version=f"wf-fold-v{WF_VERSION}-{settings.mode}-{spec.code_version(ADAPTER_VERSIONS[spec.engine])}",
        group_name="research",
        kinds={"vectorbt", spec.engine, "parquet"},
        description=(
            f"One fold of the walk-forward optimisation of `{spec.name}`: the combination of `sweep_{spec.name}`'s grid "
            f"with the highest deflated Sharpe over the sweeps of the months before M ({settings.mode}; "
            "`$QUANT_WALKFORWARD`), run event-driven on M (warmed on M−1, under the venue profile). A new month adds one "
            f"fold. Output: `wf_folds/strategy={spec.name}/symbol=S/month=M/` (fold.parquet, oos/); DuckDB view `wf_folds`."
        ),
        metadata={"strategy": spec.name, "in_sample": settings.mode},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
        pool=ENGINE_POOL,
        output_required=False,
    )
    def _fold(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            try:
                out = run_fold(the_lake, spec, symbol, month, inst_mod.trading_days_of(the_lake, symbol, month=month), settings)
            except NoInSample as exc:
                return NotBuilt(f"{name} {pk}: {exc}")
            except NotApplicableError as exc:
                return NotBuilt(f"{name} {pk}: n/a: {exc}", observation={"not_applicable": str(exc)})
            except (BacktestInputError, ParamError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            r = out.row
            return Built(
                metadata={
                    "in_sample": r["in_sample"], "params_bars": dg.MetadataValue.json(json.loads(r["params_bars"])),
                    "is_sharpe": _f(r["is_sharpe"]), "is_deflated_sharpe": _f(r["is_deflated_sharpe"]),
                    "oos_sharpe": _f(r["oos_sharpe"]), "oos_return": _f(r["oos_return"]), "wfe": _f(r["wfe"]),
                    "reason": r["reason"] or "", "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _fold


def walkforward_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"walkforward_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=symbol_partitions,
        deps=[dg.AssetDep(f"wf_fold_{spec.name}", partition_mapping=BY_SYMBOL)],
        code_version=f"walkforward-v{WF_VERSION}",
        group_name="research",
        kinds={"parquet"},
        description=(
            f"The walk-forward optimisation of `{spec.name}` on one symbol: its folds' out-of-sample months stitched, "
            "their metric set, the walk-forward efficiency (stitched OOS Sharpe / mean IS Sharpe of the choices) and "
            f"the parameter path. Output: `walkforward/strategy={spec.name}/symbol=S/` (report.json, folds.parquet, daily.parquet)."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_rollups(),
        backfill_policy=BACKFILL_POLICY,
        output_required=False,
    )
    def _walkforward(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(symbol: str) -> Built | NotBuilt:
            try:
                out = run_walkforward(the_lake, spec.name, symbol, inst_mod.trading_days_of(the_lake, symbol, month=None))
            except NoInSample as exc:
                return NotBuilt(f"{name} {symbol}: {exc}")
            r = out.report
            return Built(
                metadata={
                    "folds": dg.MetadataValue.int(r["folds"]),
                    "oos_sharpe": _f(r.get("oos_sharpe_hourly")), "is_sharpe_mean": _f(r.get("is_sharpe_mean")),
                    "walk_forward_efficiency": _f(r.get("walk_forward_efficiency")),
                    "parameter_path": dg.MetadataValue.md(
                        "| OOS month | params (bars) |\n|---|---|\n"
                        + "\n".join(f"| {p['oos_month']} | `{p['params_bars']}` |" for p in r.get("parameter_path", []))),
                    "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _walkforward


def walkforward_assets(specs: dict[str, StrategySpec], settings: WalkForwardSettings | None = None) -> list[dg.AssetsDefinition]:
    """Per strategy with a sweep grid: its folds and its stitched walk-forward report."""
    from quant_assets.research.sweep import GRIDS

    settings = settings or WalkForwardSettings.from_env()
    swept = [s for name, s in specs.items() if name in GRIDS]
    return [*(fold_asset(s, settings) for s in swept), *(walkforward_asset(s) for s in swept)]
