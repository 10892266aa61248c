"""``bars_<interval>``, ``sweep_<strategy>``, ``agreement_<strategy>`` and
``sweep_oos_<strategy>``: the vectorised research layer, month × symbol.

The work is in :mod:`quant_assets.research`; this module wires it to Dagster (partitions,
automation, metadata with the sweep's heat map and its top candidates, the engines' agreement
as an asset check).
"""

import dagster as dg
from pydantic import Field

from quant_assets.analytics.plots import markdown_image
from quant_assets.analytics.slice_metrics import BacktestSliceError
from quant_assets.assets.backtests import BOOK
from quant_assets.assets.critiques import NEXT_MONTH
from quant_assets.assets.reports import BY_SYMBOL
from quant_assets.automation import ENGINE_POOL, rebuild_rollups, rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, NotBuilt, build_slices
from quant_assets.critique.oos import WaitingForNextMonth
from quant_assets.engines.runner import STARTING_CASH
from quant_assets.lake import instruments as inst_mod
from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions, split_key, symbol_partitions
from quant_assets.research.agreement import AGREEMENT_VERSION, run_agreement
from quant_assets.research.factors import FACTOR_VERSION, SIGNAL_DEFS, FactorInputError, FactorSettings, run_factors
from quant_assets.research.handoff import HANDOFF_VERSION, run_handoff
from quant_assets.research.run import RESEARCH_VERSION, SWEEP_VERSION, ResearchInputError, run_bars, run_sweep_slice
from quant_assets.research.sweep import GRIDS, SweepSettings
from quant_assets.settings import AGREEMENT_TOLERANCE_ENV, agreement_tolerance, bar_intervals
from quant_assets.strategies.registry import FACTOR_SIGNALS
from quant_assets.strategies.spec import StrategySpec
from quant_assets.book.features import FEATURES_VERSION
from resources import LakeResource

TICKS = dg.AssetKey("ticks")



def bars_asset(interval: str) -> dg.AssetsDefinition:
    """``bars_<interval>`` (month × symbol) from ``ticks``; sizes from ``$QUANT_BAR_INTERVALS``."""
    name = f"bars_{interval}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[TICKS, BOOK],  # BOOK: the bars' book features (null with the reason on L1-only months)
        # the book features' version too: they are columns of the bars (quant_assets.book.features)
        code_version=f"bars-v{RESEARCH_VERSION}.book{FEATURES_VERSION}",
        group_name="research",
        kinds={"polars", "parquet"},
        description=(
            f"{interval} bars of each ticks partition: OHLC from trades where the bar has trades, else from mid "
            "quotes (`source`), volume and trade count, the last bid/ask/mid and the spread; the book at the close "
            "(`book_imbalance`, `microprice`, `depth_bid_bps`/`depth_ask_bps`; null with `book_reason` without depth). Bars without ticks "
            f"are absent. Output: `bars/interval={interval}/symbol=S/month=M/part-0.parquet`; DuckDB view `bars`."
        ),
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _bars(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, symbol = split_key(pk)
            try:
                out = run_bars(the_lake, symbol, month, interval)
            except ResearchInputError as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            b = out.bars
            return Built(
                metadata={
                    "dagster/row_count": b.height,
                    "bars_from_trades": int((b["source"] == "trades").sum()),
                    "bars_from_mids": int((b["source"] == "mid").sum()),
                    # bars whose book features are known (the others say why in book_reason)
                    "bars_with_book": int(b["book_reason"].is_null().sum()),
                    "path": dg.MetadataValue.path(str(out.path)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _bars


class SweepConfig(dg.Config):
    """Settings of a sweep (the launchpad shows them)."""

    top_k: int = Field(default=3, ge=1, description="best combinations kept as candidates (deflated Sharpe, hand-off)")
    spa_reps: int = Field(default=500, ge=10, description="bootstrap resamples of Hansen's SPA test")
    seed: int = Field(default=0, description="random seed of the SPA bootstrap")


def sweep_asset(spec: StrategySpec, interval: str) -> dg.AssetsDefinition:
    name = f"sweep_{spec.name}"
    axes = GRIDS[spec.name]

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[dg.AssetDep(f"bars_{interval}", partition_mapping=WITH_PREVIOUS_MONTH)],  # M−1's bars warm the sweep
        code_version=f"sweep-v{RESEARCH_VERSION}.{SWEEP_VERSION}-{interval}-" + "-".join(f"{a.name}:{a.start}:{a.stop}:{a.step}" for a in axes),
        group_name="research",
        kinds={"vectorbt", "parquet"},
        description=(
            f"Every combination of {spec.name}'s sweep grid ("
            + ", ".join(f"`{a.name}` {a.start:g} to {a.stop:g} by {a.step:g}" for a in axes)
            + f", lengths in {interval} bars) run with vectorbt on `bars_{interval}`, taker fees and the half "
            "spread paid on every switch; ranked by Sharpe with the deflated Sharpe of the top combinations "
            "(number of trials = grid size) and Hansen's SPA p-value of the best against staying flat. The grid enters "
            "the trials ledger once (n_sets = its combinations) and every combination's hourly returns are kept "
            "(returns.parquet) for the roll-ups' deflated Sharpe. Output: "
            f"`sweeps/strategy={spec.name}/symbol=S/month=M/` (grid.parquet, returns.parquet, summary.json, heatmap.png, "
            "manifest.json)."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
        pool=ENGINE_POOL,
    )
    def _sweep(context: dg.AssetExecutionContext, config: SweepConfig, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, symbol = split_key(pk)
            instrument = inst_mod.resolve(the_lake, symbol, month=month)
            if instrument is None:
                raise dg.Failure(description=f"{name} {pk}: no instrument record for {symbol}", allow_retries=False)
            try:
                settings = SweepSettings(top_k=config.top_k, spa_reps=config.spa_reps, seed=config.seed)
                # the month's fee schedule, as the engine backtests are charged (a switch pays the taker fee)
                taker_fee = inst_mod.fees_for(instrument, month)[1]
                out = run_sweep_slice(the_lake, spec, symbol, month, taker_fee, instrument.trading_days, STARTING_CASH,
                                      interval, settings, lot=instrument.lot_size)
            except (ResearchInputError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
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
            return Built(metadata=metadata, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _sweep


def _handoff_md(t) -> str:
    lines = ["| sweep rank | params (bars) | event-driven params | sweep Sharpe | OOS Sharpe | baseline OOS Sharpe | p | clears own bar |",
             "|---:|---|---|---:|---:|---:|---:|---|"]
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in t.iter_rows(named=True):
        lines.append(f"| {r['sweep_rank']} | `{r['sweep_params_bars']}` | `{r['event_params']}` | {f(r['sweep_sharpe'])} | "
                     f"{f(r['oos_candidate_sharpe'])} | {f(r['oos_baseline_sharpe'])} | {f(r['p_value'])} | {r['clears_local_bar']} |")
    return "\n".join(lines)


def handoff_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"sweep_oos_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[
            dg.AssetKey(f"sweep_{spec.name}"),
            dg.AssetDep(f"metrics_{spec.name}", partition_mapping=NEXT_MONTH),
            dg.AssetDep("ticks", partition_mapping=NEXT_MONTH),
        ],
        code_version=f"handoff-v{HANDOFF_VERSION}",
        group_name="research",
        kinds={spec.engine, "parquet"},
        output_required=False,
        description=(
            f"The top combinations of `sweep_{spec.name}` for month M, re-tested event-driven on M+1 (and on M for "
            "reference) against the current parameters on M+1, each one test like a critique's suggestion (one-sided "
            "p-value, the slice's own bar; improved = survives the FDR control in `discoveries`); lengths in bars "
            "become quote updates by month M's quotes per bar. Waits "
            f"(materialises nothing) until M+1 exists. Output: `handoffs/strategy={spec.name}/symbol=S/month=M/`; "
            "DuckDB view `handoffs`."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
        pool=ENGINE_POOL,
    )
    def _handoff(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built | NotBuilt:
            month, symbol = split_key(pk)
            trading_days = inst_mod.trading_days_of(the_lake, symbol, month=month)
            try:
                out = run_handoff(the_lake, spec, symbol, month, trading_days)
            except WaitingForNextMonth as exc:
                return NotBuilt(str(exc))
            except (ResearchInputError, BacktestSliceError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from None
            t = out.table
            return Built(
                metadata={
                    "oos_month": out.manifest["oos_month"],
                    "candidates": dg.MetadataValue.int(len(t)),
                    # local figures only: whether a candidate improved is the FDR ledger's verdict (discoveries)
                    "clear_local_bar": dg.MetadataValue.int(int(t["clears_local_bar"].sum()) if len(t) else 0),
                    "quotes_per_bar": dg.MetadataValue.float(out.manifest["quotes_per_bar"]),
                    "results": dg.MetadataValue.md(_handoff_md(t)),
                    "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
            )

        yield from build_slices(context, build_one)

    return _handoff


def _agreement_md(t) -> str:
    lines = ["| sweep rank | params (bars) | orders vector / event | PnL vector / event | gap: latency / spread / size / fees / unmatched | agree |",
             "|---:|---|---|---|---|---|"]
    for r in t.iter_rows(named=True):
        if r["vector_orders"] is None:
            lines.append(f"| {r['sweep_rank']} | `{r['params_bars']}` | - | - | - | {r['reason']} |")
            continue
        parts = " / ".join(f"{r[f'gap_{c}']:+,.2f}" for c in ("latency", "spread", "size", "fees", "unmatched"))
        lines.append(f"| {r['sweep_rank']} | `{r['params_bars']}` | {r['vector_orders']} / {r['event_orders']} | "
                     f"{r['vector_pnl']:,.2f} / {r['event_pnl']:,.2f} | {parts} | {r['agree']} |")
    return "\n".join(lines)


def agreement_asset(spec: StrategySpec) -> dg.AssetsDefinition:
    name = f"agreement_{spec.name}"

    @dg.asset(
        name=name,
        partitions_def=month_symbol_partitions,
        deps=[dg.AssetKey(f"sweep_{spec.name}"), TICKS],
        code_version=f"agreement-v{AGREEMENT_VERSION}",
        group_name="research",
        kinds={"vectorbt", spec.engine, "parquet"},
        description=(
            f"The best combination of `sweep_{spec.name}`, the same strategy run both ways on the same slice: vectorised "
            "on bars (the sweep's own simulation, closed at the last quote) and event-driven on ticks with its signal on "
            "NautilusTrader's bars of the same interval, under the venue profile. Orders side by side and the PnL gap "
            "split into latency, spread, size, fees and unmatched orders; the `engines_agree` check warns when the "
            "legs trade different signals (order counts apart, opposite sides, or unmatched cash past "
            f"`${AGREEMENT_TOLERANCE_ENV}`, default 0.10 of the scale). Output: "
            f"`agreements/strategy={spec.name}/symbol=S/month=M/`; DuckDB view `agreements`."
        ),
        metadata={"strategy": spec.name},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
        pool=ENGINE_POOL,
        check_specs=[dg.AssetCheckSpec(
            "engines_agree", asset=name,
            description="The vectorised sweep and the event-driven engine agree on orders, fees and PnL within the "
                        "tolerance: where they do not, the bar approximation misleads and the sweep's ranking needs the "
                        "event-driven re-test.",
        )],
    )
    def _agreement(context: dg.AssetExecutionContext, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, symbol = split_key(pk)
            try:
                tolerance = agreement_tolerance()
                out = run_agreement(the_lake, spec, symbol, month, tolerance)
            except (ResearchInputError, BacktestSliceError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from None
            t = out.table
            compared = t.filter(t["vector_orders"].is_not_null())
            worst = ({"unmatched_share": float(compared["unmatched_share"].max()),
                      "orders_apart": float((compared["event_orders"] - compared["vector_orders"]).abs().max())}
                     if len(compared) else {})
            check_md: dict[str, object] = {"tolerance": tolerance, **{f"worst_{k}": dg.MetadataValue.float(v) for k, v in worst.items()}}
            if not len(t):
                description = f"nothing to compare: {out.manifest['reason']}"
            elif out.agree:
                description = (f"both legs trade the same signal (orders within {out.manifest['order_slack']}, unmatched cash "
                               f"within {tolerance:.0%}); the PnL gap is execution: " + "; ".join(
                                   f"rank {r['sweep_rank']}: {r['reason']}" for r in t.iter_rows(named=True)))
            else:
                description = "; ".join(f"rank {r['sweep_rank']}: {r['reason']}" for r in t.iter_rows(named=True) if not r["agree"])
            return Built(
                metadata={
                    "compared": dg.MetadataValue.int(len(t)),
                    "agree": out.agree,
                    "comparison": dg.MetadataValue.md(_agreement_md(t)) if len(t) else out.manifest["reason"],
                    "path": dg.MetadataValue.path(str(out.directory)),
                },
                data_version=out.data_version,
                checks=[dg.AssetCheckResult(check_name="engines_agree", passed=out.agree, severity=dg.AssetCheckSeverity.WARN,
                                            description=description, metadata=check_md)],
            )

        yield from build_slices(context, build_one)

    return _agreement


class FactorConfig(dg.Config):
    """Settings of a factor analysis (the launchpad shows them)."""

    sample: str = Field(default="1h", description="signal sampling interval (s, m or h), like 1h")
    periods: list[int] = Field(default=[1, 4, 24], description="forward-return horizons, in samples")
    quantiles: int = Field(default=5, description="signal bins, each sample ranked against the samples before it")
    quantile_window: int = Field(default=720, ge=2, description="past samples a sample's quintile is ranked against")
    quantile_min_history: int = Field(default=100, ge=1, description="fewest past samples before a sample gets a quintile")


def factors_asset(spec: StrategySpec, interval: str) -> dg.AssetsDefinition:
    name = f"factors_{spec.name}"
    signal = SIGNAL_DEFS[FACTOR_SIGNALS[spec.name]]

    @dg.asset(
        name=name,
        partitions_def=symbol_partitions,
        deps=[dg.AssetDep(f"bars_{interval}", partition_mapping=BY_SYMBOL)],
        code_version=f"factors-v{FACTOR_VERSION}-{interval}-{spec.code_version('factors')}",
        group_name="research",
        kinds={"alphalens", "parquet"},
        description=(
            f"alphalens-reloaded factor analysis of `{spec.name}`'s signal `{signal.name}` ({signal.description}) on "
            f"one symbol across all its months of `bars_{interval}`, with the strategy's current lengths: information "
            "coefficient per month, mean forward return by quintile, quintile turnover. No look-ahead: each sample's "
            "quintile ranks it against the samples before it, forward returns stay inside their month, lengths in quote "
            "updates are converted with the months before. Output: "
            f"`factors/strategy={spec.name}/symbol=S/` (report.json, ic.parquet, quantile_returns.parquet, samples.parquet, "
            "factor.png); DuckDB views `factor_ic`, `factor_samples`."
        ),
        metadata={"strategy": spec.name, "signal": signal.name},
        automation_condition=rebuild_rollups(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _factors(context: dg.AssetExecutionContext, config: FactorConfig, lake: LakeResource):
        the_lake = lake.lake()

        def build_one(symbol: str) -> Built:
            try:
                settings = FactorSettings(config.sample, tuple(config.periods), config.quantiles,
                                          quantile_window=config.quantile_window, quantile_min_history=config.quantile_min_history)
                out = run_factors(the_lake, spec, signal, symbol, interval, settings)
            except (FactorInputError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {symbol}: {exc}", allow_retries=False) from None
            r = out.result.report
            periods = sorted(r["periods"].items(), key=lambda kv: kv[1]["samples_ahead"])
            first = periods[0] if periods else ("-", {"top_minus_bottom_bps": None})
            metadata: dict[str, object] = {
                "reason": r.get("reason", ""),
                "signal": signal.name,
                "months": dg.MetadataValue.int(len(r["months"])),
                "samples": dg.MetadataValue.int(r["kept"]),
                "lengths_bars": dg.MetadataValue.json(r["lengths_bars"]),
                **{f"ic_mean_{label}": (dg.MetadataValue.float(v["ic_mean"]) if v["ic_mean"] is not None else dg.MetadataValue.null())
                   for label, v in periods},
                "top_minus_bottom_bps": (dg.MetadataValue.float(first[1]["top_minus_bottom_bps"])
                                         if first[1]["top_minus_bottom_bps"] is not None else dg.MetadataValue.null()),
                "path": dg.MetadataValue.path(str(out.directory / "report.json")),
            }
            if out.result.png:
                metadata["plot"] = dg.MetadataValue.md(markdown_image(out.result.png, "quintile returns and IC by month"))
            return Built(metadata=metadata, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _factors


def research_assets(specs: dict[str, StrategySpec], intervals: tuple[str, ...] | None = None) -> list[dg.AssetsDefinition]:
    """``bars_<size>`` per bar size (``$QUANT_BAR_INTERVALS``, default ``1m``); per registered
    strategy with a sweep grid its sweep (on the first size), agreement and hand-off; per
    strategy with a signal its factor analysis (per symbol, on the first size)."""
    intervals = intervals or bar_intervals()
    swept = [s for name, s in specs.items() if name in GRIDS]
    with_signal = [s for name, s in specs.items() if name in FACTOR_SIGNALS]
    return [*(bars_asset(i) for i in intervals), *(sweep_asset(s, intervals[0]) for s in swept),
            *(agreement_asset(s) for s in swept), *(handoff_asset(s) for s in swept),
            *(factors_asset(s, intervals[0]) for s in with_signal)]
