"""``sensitivity_<strategy>``: the realism sensitivity of each backtest slice (month × symbol).

The work is :func:`quant_assets.venues.sensitivity.run_sensitivity` (the slice re-run at
latency × 0, × 2, × 5 and costs × 1.5, its own backtest untouched); this module wires it to
Dagster: metadata with each scenario's PnL and Sharpe and the ``fragile`` flag (so the UI
plots them across partitions), a data version, and a WARN check ``sign_robust_to_venue`` that
fails on a fragile slice (a warning, not a block: a fragile result is a finding, not an error).
"""

import dagster as dg

from quant_assets.assets.backtests import book_deps
from quant_assets.assets.venues import venue_dep
from quant_assets.automation import ENGINE_POOL, rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, NotBuilt, build_slices
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.inputs import BacktestInputError, NotApplicableError
from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions, split_key
from quant_assets.strategies.spec import ParamError, StrategySpec
from quant_assets.venues.sensitivity import SCENARIOS, SENSITIVITY_VERSION, run_sensitivity
from resources import LakeResource

TICKS = dg.AssetKey("ticks")
ROBUST_CHECK = "sign_robust_to_venue"


def _float(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))


def sensitivity_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"sensitivity_{spec.name}"
    # The re-runs run the strategy itself: its parameters and engine adapter are part of this
    # asset's code, as they are of the backtest's.
    code_version = f"sensitivity-v{SENSITIVITY_VERSION}-{spec.code_version(ADAPTER_VERSIONS[spec.engine])}"
    scenarios = ", ".join(n for n, _, _ in SCENARIOS)

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[dg.AssetKey(f"backtest_{spec.name}"), dg.AssetDep(TICKS, partition_mapping=WITH_PREVIOUS_MONTH), venue_dep(),
              *book_deps(spec)],
        code_version=code_version,
        group_name="sensitivity",
        kinds={spec.engine, "parquet"},
        description=(
            f"Realism sensitivity of each `backtest_{spec.name}` slice: the slice re-run under harsher venue "
            f"assumptions ({scenarios}; costs × 1.5 means fees paid × 1.5 and rebates ÷ 1.5), with the PnL and Sharpe "
            "of each beside the backtest's own. `fragile` when the sign of the PnL depends on them. The re-runs never "
            "replace the backtest and enter the trials ledger as venue-sensitivity trials, not parameter sets. "
            f"Output: `sensitivity/strategy={spec.name}/symbol=S/month=M/` (sensitivity.parquet, manifest.json)."
        ),
        metadata={"strategy": spec.name, "scenarios": scenarios},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
        backfill_policy=BACKFILL_POLICY,
        output_required=False,
        check_specs=[dg.AssetCheckSpec(ROBUST_CHECK, asset=name,
                                       description="the sign of the slice's PnL does not depend on latency or fees")],
    )
    def _sensitivity(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            try:
                out = run_sensitivity(the_lake, spec, symbol, month)
            except NotApplicableError as exc:
                return NotBuilt(f"{name} {pk}: n/a: {exc}", observation={"not_applicable": str(exc)},
                                checks=[dg.AssetCheckResult(check_name=ROBUST_CHECK, passed=True,
                                                            description=f"not applicable: {exc}", metadata={"not_applicable": True})])
            except (BacktestInputError, ParamError, FileNotFoundError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            metadata: dict[str, object] = {
                "fragile": dg.MetadataValue.bool(out.fragile),
                "reason": out.reason,
                "venue_profile": str(out.manifest["venue_profile"]),
                "path": dg.MetadataValue.path(str(out.directory)),
            }
            for r in out.rows:
                metadata[f"pnl_{r['scenario']}"] = _float(r["pnl"])
                metadata[f"sharpe_{r['scenario']}"] = _float(r["sharpe"])
            metadata["table"] = dg.MetadataValue.md(
                "| scenario | latency × | costs × | PnL | Sharpe | fills |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(
                    f"| {r['scenario']} | {r['latency_factor']:g} | {r['fee_factor']:g} | {r['pnl']:,.2f} | "
                    f"{'null' if r['sharpe'] is None else format(r['sharpe'], '.3f')} | {r['fills']} |" for r in out.rows))
            check = dg.AssetCheckResult(check_name=ROBUST_CHECK, passed=not out.fragile, severity=dg.AssetCheckSeverity.WARN,
                                        description=out.reason)
            return Built(metadata=metadata, data_version=out.data_version, checks=[check])

        yield from build_slices(context, build_one)

    return _sensitivity
