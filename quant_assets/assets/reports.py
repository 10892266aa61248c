"""``report_<strategy>``: the roll-up of a strategy on one symbol across all its months.

Partitioned by symbol only; it depends on every month of that symbol of ``metrics_<strategy>``
and ``backtest_<strategy>`` through ``MultiToSingleDimensionPartitionMapping``, so a new or
changed month slice makes the symbol's report stale. The work is
:func:`quant_assets.analytics.rollup.run_report`.
"""

import warnings

import dagster as dg
import polars as pl
from pydantic import Field

from quant_assets.analytics import trials
from quant_assets.analytics.plots import equity_png, markdown_image
from quant_assets.automation import rebuild_rollups
from quant_assets.batching import BACKFILL_POLICY, Built, build_slices
from quant_assets.analytics.rollup import ROLLUP_VERSION, RollupError, RollupSettings, run_report
from quant_assets.analytics.slice_metrics import ANALYTICS_VERSION, BacktestSliceError
from quant_assets.lake import instruments as inst_mod
from quant_assets.partitions import symbol_partitions
from quant_assets.strategies.registry import SWEEP_GRIDS
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource

REPORT_CODE_VERSION = f"report-v{ANALYTICS_VERSION}.{ROLLUP_VERSION}"
with warnings.catch_warnings():
    # Beta in Dagster 1.13 but the documented way to map month × symbol onto symbol.
    warnings.simplefilter("ignore", dg.BetaWarning)
    BY_SYMBOL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="symbol")


class ReportConfig(dg.Config):
    """Robustness settings of a roll-up (the launchpad shows them)."""

    bootstrap_reps: int = Field(default=1000, description="stationary-bootstrap resamples of the daily returns")
    monte_carlo_sims: int = Field(default=1000, description="reshuffles of the trade sequence")
    in_sample_months: int = Field(default=3, description="months in sample per walk-forward window")
    seed: int = Field(default=0, description="random seed of the bootstrap and the reshuffles")


def _num(value: object) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))  # type: ignore[arg-type]


def report_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"report_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=symbol_partitions,
        deps=[
            dg.AssetDep(f"metrics_{spec.name}", partition_mapping=BY_SYMBOL),
            dg.AssetDep(f"backtest_{spec.name}", partition_mapping=BY_SYMBOL),
            # the sweep's kept trial returns give the deflated Sharpe its cross-trial variance
            *([dg.AssetDep(f"sweep_{spec.name}", partition_mapping=BY_SYMBOL)] if spec.name in SWEEP_GRIDS else []),
        ],
        code_version=REPORT_CODE_VERSION,
        group_name="reports",
        kinds={"quantstats", "arch", "html"},
        description=(
            f"`{spec.name}` on one symbol across all its months: stitched equity, the full metric set, a quantstats "
            "tearsheet, stationary-bootstrap intervals of Sharpe and CAGR, a Monte Carlo reshuffle of the trades' "
            "drawdowns, the deflated Sharpe ratio given the parameter sets tried (with the variance of Sharpe observed "
            "across the sweep's trials where their returns are kept), and walk-forward in/out-of-sample "
            f"windows. Output: `reports/strategy={spec.name}/symbol=S/`."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_rollups(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _report(context: dg.AssetExecutionContext, config: ReportConfig, lake: LakeResource):
        the_lake = lake.lake()
        settings = RollupSettings(config.bootstrap_reps, config.monte_carlo_sims, config.in_sample_months, config.seed)

        def build_one(symbol: str) -> Built:
            trading_days = inst_mod.trading_days_of(the_lake, symbol, month=None)
            n_trials = trials.count(the_lake, spec.impl)
            try:
                out = run_report(the_lake, spec.name, symbol, trading_days, n_trials, settings=settings)
            except (RollupError, BacktestSliceError) as exc:
                raise dg.Failure(description=f"{name} {symbol}: {exc}", allow_retries=False) from exc
            r = out.report
            m, g = r["metrics"], r["metrics_grid"]
            bs, mc, dsr, wf = r["bootstrap"], r["monte_carlo"], r["deflated_sharpe"], r["walk_forward"]
            d = r["deployed"]["metrics"]  # risk on the capital actually deployed
            metadata: dict[str, object] = {
                "months": dg.MetadataValue.json(r["months"]),
                "total_return_pct": _num(None if m.get("total_return") is None else 100 * m["total_return"]),
                "sharpe": _num(m.get("sharpe")),  # daily returns, like its interval below
                "sharpe_ci_lo": _num((bs.get("sharpe") or {}).get("lo")),
                "sharpe_ci_hi": _num((bs.get("sharpe") or {}).get("hi")),
                "cagr_ci_lo_pct": _num(None if not bs.get("cagr") else 100 * bs["cagr"]["lo"]),
                "cagr_ci_hi_pct": _num(None if not bs.get("cagr") else 100 * bs["cagr"]["hi"]),
                "max_drawdown_pct": _num(None if g.get("max_drawdown") is None else 100 * g["max_drawdown"]),
                "sharpe_grid": _num(g.get("sharpe")),
                "return_on_deployed_pct": _num(None if d.get("return_on_deployed") is None
                                               else 100 * d["return_on_deployed"]),
                "max_drawdown_on_deployed_pct": _num(None if d.get("max_drawdown_on_deployed") is None
                                                     else 100 * d["max_drawdown_on_deployed"]),
                "mc_max_drawdown_p05_pct": _num(None if mc.get("p05") is None else 100 * mc["p05"]),
                "deflated_sharpe": _num(dsr.get("dsr")),
                "parameter_sets_tried": dg.MetadataValue.int(n_trials),
                "deflated_sharpe_variance": (
                    f"observed across {dsr['trials_observed']} trials" if dsr.get("var_sharpe_source") == "observed"
                    else f"the Sharpe estimator's ({dsr['var_sharpe_reason']})" if dsr.get("var_sharpe_source")
                    else dsr.get("method") or dsr.get("reason", "")),
                "oos_sharpe_mean": _num(wf.get("oos_sharpe_mean")),
                "is_sharpe_mean": _num(wf.get("is_sharpe_mean")),
                "trades": dg.MetadataValue.int(int(m.get("trades") or 0)),
                "tearsheet": (dg.MetadataValue.path(str(out.tearsheet)) if out.tearsheet
                              else dg.MetadataValue.text("none: no daily return to report")),
                "path": dg.MetadataValue.path(str(out.directory)),
                "null_reasons": dg.MetadataValue.json(r["null_reasons"]),
            }
            if len(out.daily):
                curve = out.daily.select(ts=pl.col("date").cast(pl.Datetime("ns")).cast(pl.Int64), equity="equity")
                metadata["equity_curve"] = dg.MetadataValue.md(markdown_image(equity_png(curve, f"{spec.name} {symbol} (daily, stitched)"), "stitched equity"))
            return Built(metadata=metadata, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _report
