"""``metrics_<strategy>``: the metric set of each backtest slice (month × symbol).

The work is :func:`quant_assets.analytics.slice_metrics.run_metrics`; this module wires it to
Dagster: the partition, the instrument's annualisation, metadata (the headline numbers, so the
UI plots them across partitions, and an equity + drawdown PNG), a data version and one asset
check computed in the same step: quantstats and vectorbt agree where they compute the same
quantity (total return, Sharpe, maximum drawdown) on the same returns.
"""

import math

import dagster as dg

from quant_assets.analytics.plots import equity_png, markdown_image
from quant_assets.automation import rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, build_slices
from quant_assets.analytics.slice_metrics import ANALYTICS_VERSION, BacktestSliceError, run_metrics
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake import versions
from quant_assets.partitions import month_symbol_partitions, split_key
from quant_assets.strategies.spec import StrategySpec
from resources import LakeResource

TICKS = dg.AssetKey("ticks")
METRICS_CODE_VERSION = f"metrics-v{ANALYTICS_VERSION}"
AGREEMENT_CHECK = "quantstats_and_vectorbt_agree"
#: Relative tolerance of the agreement check (both libraries compute in float64 on one series).
AGREEMENT_RTOL = 1e-9

#: (metadata label, metric name, scale): what the UI plots over partitions.
HEADLINE = (
    ("total_return_pct", "total_return", 100.0), ("sharpe", "sharpe", 1.0), ("sortino", "sortino", 1.0),
    ("max_drawdown_pct", "max_drawdown", 100.0), ("volatility_pct", "volatility", 100.0),
    ("cagr_pct", "cagr", 100.0), ("psr", "psr", 1.0), ("profit_factor", "profit_factor", 1.0),
    ("trade_win_rate_pct", "trade_win_rate", 100.0), ("expectancy", "expectancy", 1.0),
    ("pnl", "pnl", 1.0), ("fees", "fees", 1.0),
    # the same month on the capital actually at risk (analytics.deployed)
    ("return_on_deployed_pct", "return_on_deployed", 100.0), ("max_drawdown_on_deployed_pct", "max_drawdown_on_deployed", 100.0),
)


def _float(value: float | int | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))


def _agreement(row: dict) -> dg.AssetCheckResult:
    pairs = {"total_return": "vbt_total_return", "sharpe": "vbt_sharpe", "max_drawdown": "vbt_max_drawdown"}
    diffs, compared = {}, []
    for qs_name, vbt_name in pairs.items():
        a, b = row.get(qs_name), row.get(vbt_name)
        if a is None or b is None:
            continue
        compared.append(qs_name)
        diffs[qs_name] = abs(a - b)
        if not math.isclose(a, b, rel_tol=AGREEMENT_RTOL, abs_tol=1e-12):
            diffs[qs_name + "_MISMATCH"] = f"quantstats {a!r} vs vectorbt {b!r}"
    passed = not any(k.endswith("_MISMATCH") for k in diffs)
    return dg.AssetCheckResult(
        check_name=AGREEMENT_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"compared": ", ".join(compared) or "nothing (undefined)", "abs_differences": dg.MetadataValue.json(diffs)},
    )


def metrics_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"metrics_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[dg.AssetKey(f"backtest_{spec.name}"), TICKS],
        code_version=METRICS_CODE_VERSION,
        group_name="metrics",
        kinds={"quantstats", "vectorbt", "parquet"},
        check_specs=[dg.AssetCheckSpec(AGREEMENT_CHECK, asset=name,
                                       description="quantstats and vectorbt give the same total return, Sharpe and max drawdown")],
        description=(
            f"Metric set of each `backtest_{spec.name}` slice: quantstats period metrics on the equity curve's "
            "grid returns (annualised with the instrument's trading days), vectorbt trade statistics, the trades "
            "with their market context and the month by volatility regime. Output: "
            f"`metrics/strategy={spec.name}/symbol=S/month=M/` (metrics.parquet, trades.parquet, regimes.parquet, manifest.json)."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _metrics(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, symbol = split_key(pk)
            trading_days = inst_mod.trading_days_of(the_lake, symbol, month=month)
            try:
                out = run_metrics(the_lake, spec.name, symbol, month, trading_days)
            except BacktestSliceError as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            row = out.slice.row
            # Kept beside its predecessors (lake.versions): `quant-assets asof` reads it once replaced.
            kept = versions.record(the_lake, "metrics", (symbol, month, spec.name), out.data_version)
            png = equity_png(out.slice.equity, f"{spec.name} {symbol} {month}") if len(out.slice.equity) else None
            metadata: dict[str, object] = {label: _float(None if row.get(k) is None else row[k] * scale) for label, k, scale in HEADLINE}
            metadata.update({
                "trades": dg.MetadataValue.int(int(row["trades"] or 0)),
                "periods": dg.MetadataValue.int(int(row["periods"])),
                "annualisation": f"{row['periods_per_year']:,.0f} periods/year ({row['interval_s']:g} s grid, {trading_days} trading days)",
                "null_reasons": dg.MetadataValue.json(out.slice.metrics.reasons),
                "backtest_data_version": out.manifest["backtest_data_version"],
                "venue_profile": str(row.get("venue_profile")),
                "feed_latency": str(row.get("feed_latency")),
                "path": dg.MetadataValue.path(str(out.directory)),
                "version_files": dg.MetadataValue.json(kept.describe()),
            })
            if png:
                metadata["equity_curve"] = dg.MetadataValue.md(markdown_image(png, "equity and drawdown"))
            return Built(metadata=metadata, data_version=out.data_version, checks=[_agreement(row)])

        yield from build_slices(context, build_one)

    return _metrics
