"""``backtest_<strategy>``: one asset per registered strategy, partitioned like ``ticks``.

The factory is the only Dagster code here; the work is :func:`quant_assets.engines.runner.run_backtest`.
Each asset's ``code_version`` comes from its spec (source version, engine adapter version and
parameter values), so tuning one strategy makes only that strategy's slices stale.
"""

import dagster as dg

from quant_assets.assets.venues import venue_dep
from quant_assets.analytics.plots import equity_png, markdown_image
from quant_assets.batching import BACKFILL_POLICY, Built, NotBuilt, build_slices
from quant_assets.automation import ENGINE_POOL, rebuild_stale_slices
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.inputs import BacktestInputError, NotApplicableError
from quant_assets.engines.invariants import CHECKS
from quant_assets.engines.runner import run_backtest
from quant_assets.lake import versions
from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions, split_key
from quant_assets.strategies import registry
from quant_assets.strategies.spec import ParamError, StrategySpec
from resources import LakeResource

TICKS = dg.AssetKey("ticks")
#: A perpetual's funding enters its backtests: new funding data makes them stale. Every slice has
#: a funding partition (a spot one says "not applicable"), built beside its ticks.
FUNDING = dg.AssetKey("funding")
#: The slice's order-book depth, for the strategies whose engine reads it (hftbacktest's queue
#: positions; NautilusTrader's book matching for a strategy that declares depth): a depth file
#: landing makes them stale. Every slice has a book partition ("none" where it has no depth).
BOOK = dg.AssetKey("book")


def book_deps(spec: StrategySpec) -> list[dg.AssetKey]:
    """``[BOOK]`` when a backtest of ``spec`` reads the slice's book (as ``runner.used_book``)."""
    return [BOOK] if spec.engine == "hftbacktest" or spec.depth != "none" else []


def _ticks_data_version(instance: dg.DagsterInstance, partition_key: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TICKS, asset_partitions=[partition_key]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization.tags.get("dagster/data_version")


def _funding_pnl(funding: dict) -> dg.MetadataValue:
    """Funding received (quote currency); null when it could not be booked (missing data, spot)."""
    value = funding.get("funding_pnl")
    return dg.MetadataValue.null() if value is None or funding.get("status") != "applied" else dg.MetadataValue.float(float(value))


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
    # The venue's settings (profile, fees, margin) enter through the venue_profile dependency,
    # per symbol: editing one venue makes only its symbols' backtests stale.
    code_version = spec.code_version(ADAPTER_VERSIONS[spec.engine])

    @dg.asset(
        name=f"backtest_{spec.name}",
        partitions_def=month_symbol_partitions,
        # ticks of M−1 and M: the previous month's tail warms the indicators (a change to it makes M stale)
        deps=[dg.AssetDep(TICKS, partition_mapping=WITH_PREVIOUS_MONTH), FUNDING, venue_dep(), *book_deps(spec)],
        code_version=code_version,
        group_name="backtests",
        kinds={spec.engine, "parquet"},
        description=_description(spec),
        metadata={"strategy": spec.name, "engine": spec.engine, "params": dg.MetadataValue.json(spec.resolved())},
        tags={"quant_assets/engine": spec.engine},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
        backfill_policy=BACKFILL_POLICY,
        # Not applicable on a slice's fidelity (the market maker on trades-only data): the step
        # succeeds, materialises nothing and records why (an observation), and downstream skips
        # (in a batched run, that slice only: quant_assets/batching.py).
        output_required=False,
        check_specs=[dg.AssetCheckSpec(name, asset=f"backtest_{spec.name}", blocking=True, description=d) for name, d in CHECKS.items()],
    )
    def _backtest(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            ticks_version = _ticks_data_version(context.instance, pk)
            try:
                out = run_backtest(the_lake, spec, symbol, month, ticks_version=ticks_version, code_version=code_version)
            except NotApplicableError as exc:
                return NotBuilt(
                    f"backtest_{spec.name} {pk}: n/a: {exc}",
                    observation={"not_applicable": str(exc), "ticks_data_version": str(ticks_version)},
                    checks=[dg.AssetCheckResult(check_name=name, passed=True, description=f"not applicable: {exc}",
                                                metadata={"not_applicable": True}) for name in CHECKS],
                )
            except (BacktestInputError, ParamError) as exc:
                raise dg.Failure(description=f"backtest_{spec.name} {pk}: {exc}", allow_retries=False) from exc
            s, m = out.summary, out.manifest
            # Kept beside its predecessors (lake.versions): `quant-assets asof` reads it once replaced.
            kept = versions.record(the_lake, "backtests", (symbol, month, spec.name), out.data_version)
            png = equity_png(out.equity, f"{spec.name} {symbol} {month}")
            return Built(
                metadata={
                    "fidelity": m["fidelity"],
                    **({"fidelity_assumption": m["fidelity_assumption"]} if m.get("fidelity_assumption") else {}),
                    "pnl": dg.MetadataValue.float(s["pnl"]),
                    "return_pct": dg.MetadataValue.float(s["return_pct"]),
                    "max_drawdown_pct": dg.MetadataValue.float(s["max_drawdown_pct"]),
                    "fills": dg.MetadataValue.int(s["fills"]),
                    "maker_fills": dg.MetadataValue.int(s["maker_fills"]),
                    "turnover": dg.MetadataValue.float(s["turnover"]),
                    "fees": dg.MetadataValue.float(s["fees"]),
                    "funding": m["funding"]["status"],
                    "funding_pnl": _funding_pnl(m["funding"]),
                    "liquidated": dg.MetadataValue.bool(bool(s["liquidated"])),
                    "instrument_kind": m["instrument_kind"],
                    "venue_profile": m["venue_profile"]["label"],
                    "feed_latency": m["feed_latency"]["status"],
                    "account": dg.MetadataValue.json(m["account"]),
                    "counters": dg.MetadataValue.json(m["counters"]),
                    "events": dg.MetadataValue.int(m["events"]),
                    # run.json: facts about this run, not the data (kept out of the manifest)
                    "events_per_s": dg.MetadataValue.float(out.run["events_per_s"]),
                    "engine_wall_s": dg.MetadataValue.float(out.run["engine_wall_s"]),
                    "peak_rss_mb": dg.MetadataValue.float(out.run["peak_rss_mb"]),
                    "quote_currency": m["quote_currency"],
                    "ticks_data_version": str(m["ticks_data_version"]),
                    "path": dg.MetadataValue.path(str(out.directory)),
                    "equity_curve": dg.MetadataValue.md(markdown_image(png, "equity and drawdown")),
                    "version_files": dg.MetadataValue.json(kept.describe()),
                },
                data_version=out.data_version,
                # Blocking: a result that breaks an invariant is kept for inspection, but metrics and
                # critiques do not read it.
                checks=[
                    dg.AssetCheckResult(check_name=c.name, passed=c.passed, description=c.detail,
                                        metadata={k: dg.MetadataValue.float(float(v)) for k, v in c.figures.items()})
                    for c in out.checks
                ],
            )

        yield from build_slices(context, build_one)

    return _backtest


def backtest_assets(specs: dict[str, StrategySpec] | None = None) -> list[dg.AssetsDefinition]:
    """One asset per registered strategy (``strategies.toml`` applied)."""
    return [backtest_asset(s) for s in (specs or registry.load()).values()]
