"""The assets of universes (``universes.toml``): multi-instrument backtests and their metric
sets, cross-sectional factor analyses (month × universe), and portfolio roll-ups.

One asset per (strategy, universe), partitioned month × universe with that universe alone as
the second dimension (:func:`quant_assets.partitions.month_universe_partitions`): its members'
month × symbol slices are read through built-in partition mappings only
(:func:`~quant_assets.partitions.members_of_month`), so one member's new month makes exactly
that month of its universes stale, a non-member's nothing, and the definitions serialise for
the daemon and the UI. The work is domain code: :func:`~quant_assets.engines.multi_runner.run_multi_backtest`,
:func:`~quant_assets.analytics.multi_metrics.run_multi_metrics`,
:func:`~quant_assets.research.cross_section.run_cross_section` and
:mod:`quant_assets.portfolio.rollup`.
"""


import hashlib
import json
import re

import dagster as dg

from quant_assets.assets.backtests import FUNDING, TICKS, _ticks_data_version
from quant_assets.automation import ENGINE_POOL, rebuild_ledger, rebuild_stale_slices
from quant_assets.batching import BACKFILL_POLICY, Built, build_slices
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.partitions import members_of_month, month_universe_partitions, partition_key
from quant_assets.portfolio.universes import PortfolioSet, Universes
from quant_assets.strategies.spec import StrategySpec
from quant_assets.venues.scope import config_digest
from resources import LakeResource

MULTI_GROUP = "universes"


def _ident(name: str) -> str:
    """A universe or set name as part of an asset name (``-`` is not allowed there)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def multi_backtest_key(strategy: str, universe: str) -> str:
    return f"multi_backtest_{strategy}__{_ident(universe)}"


def multi_metrics_key(strategy: str, universe: str) -> str:
    return f"multi_metrics_{strategy}__{_ident(universe)}"


def cross_section_key(strategy: str, universe: str) -> str:
    return f"cross_section_{strategy}__{_ident(universe)}"


def portfolio_key(name: str) -> str:
    return f"portfolio_{_ident(name)}"


def _split(pk: str) -> tuple[str, str]:
    month, universe = str(pk).split("|")
    return month, universe


def _members_digest(members: tuple[str, ...]) -> str:
    """Part of a universe asset's code version: a universe whose members change is another
    computation (the mapping changes too, but Dagster's staleness does not compare mappings)."""
    return hashlib.sha256("|".join(members).encode()).hexdigest()[:8]


def _num(value: object) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))  # type: ignore[arg-type]


def multi_backtest_asset(spec: StrategySpec, universe: str, members: tuple[str, ...]) -> dg.AssetsDefinition:
    """``multi_backtest_<strategy>__<universe>``: every member in one NautilusTrader engine and
    one account per venue, month by month."""
    # The venue settings enter the code version (every member's venue: one edit of venues.toml
    # makes the universe's runs stale): a per-symbol venue_profile dependency cannot be mapped
    # onto a universe with built-in mappings.
    code_version = f"{spec.code_version(ADAPTER_VERSIONS['nautilus'])}-venues-{config_digest()}-m{_members_digest(members)}"
    name = multi_backtest_key(spec.name, universe)
    mapping = members_of_month(list(members))

    @dg.asset(
        name=name,
        partitions_def=month_universe_partitions(universe),
        deps=[dg.AssetDep(TICKS, partition_mapping=mapping), dg.AssetDep(FUNDING, partition_mapping=mapping)],
        code_version=code_version,
        group_name=MULTI_GROUP,
        kinds={"nautilus", "parquet"},
        description=(
            f"`{spec.name}` on universe `{universe}` ({', '.join(members)}): every member in one NautilusTrader engine, "
            "one cross-margined account per venue (the members of one venue share it), month by month from the same "
            "cash, flat at the month's end. Results per instrument and for the account (`instrument = ACCOUNT`), the "
            f"PnL split into basis, funding and fees. Output: `backtests_multi/strategy={spec.name}/universe={universe}/"
            "month=M/` (fills, equity, cashflows, funding, manifest.json). No warm-up from the previous month and no "
            f"order-book depth in multi-instrument runs.\n\n{spec.description}"
        ),
        metadata={"strategy": spec.name, "universe": universe, "members": dg.MetadataValue.json(list(members)),
                  "params": dg.MetadataValue.json(spec.resolved())},
        tags={"quant_assets/engine": "nautilus"},
        automation_condition=rebuild_stale_slices(),
        pool=ENGINE_POOL,
        backfill_policy=BACKFILL_POLICY,
    )
    def _multi(context: dg.AssetExecutionContext, lake: LakeResource):
        from quant_assets.engines.inputs import BacktestInputError
        from quant_assets.engines.multi_runner import run_multi_backtest
        from quant_assets.strategies.spec import ParamError

        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, uni = _split(pk)
            ticks_versions = {s: _ticks_data_version(context.instance, str(partition_key(month, s))) for s in members}
            try:
                out = run_multi_backtest(the_lake, spec, uni, list(members), month, ticks_versions=ticks_versions,
                                         code_version=code_version)
            except (BacktestInputError, ParamError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            m, split = out.manifest, out.manifest["pnl_split"]
            run = json.loads((out.directory / "run.json").read_text()) if (out.directory / "run.json").exists() else {}
            return Built(metadata={
                "members": dg.MetadataValue.json({r["symbol"]: {"kind": r["kind"], "fidelity": r["fidelity"],
                                                                "funding": r["funding"]["status"], "fills": r["summary"]["fills"],
                                                                "pnl": r["summary"]["pnl"]} for r in m["members"]}),
                "pnl": dg.MetadataValue.float(split["total_pnl"]),
                "basis_pnl": dg.MetadataValue.float(split["basis_pnl"]),
                "funding_pnl": dg.MetadataValue.float(split["funding_pnl"]),
                "fees": dg.MetadataValue.float(split["fees"]),
                "round_trips": dg.MetadataValue.int(split["round_trips"]),
                "unhedged_qty_max": dg.MetadataValue.float(split["unhedged_qty_max"]),
                "account": dg.MetadataValue.json(m["account"]),
                "events": dg.MetadataValue.int(m["events"]),
                "events_per_s": _num(run.get("events_per_s")),
                "peak_rss_mb": _num(run.get("peak_rss_mb")),
                "ticks_data_versions": dg.MetadataValue.json(ticks_versions),
                "notes": dg.MetadataValue.json(m["notes"]),
                "path": dg.MetadataValue.path(str(out.directory)),
            }, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _multi


def multi_metrics_asset(spec: StrategySpec, universe: str, members: tuple[str, ...]) -> dg.AssetsDefinition:
    """``multi_metrics_<strategy>__<universe>``: the account's and each member's metric set and the
    PnL split of each month's multi-instrument backtest."""
    from quant_assets.analytics.multi_metrics import MULTI_METRICS_VERSION

    name = multi_metrics_key(spec.name, universe)

    @dg.asset(
        name=name,
        partitions_def=month_universe_partitions(universe),
        deps=[multi_backtest_key(spec.name, universe)],
        code_version=f"multi-metrics-v{MULTI_METRICS_VERSION}-m{_members_digest(members)}",
        group_name=MULTI_GROUP,
        kinds={"quantstats", "parquet"},
        description=(
            f"Metric set of `{spec.name}` on `{universe}` each month: the account's quantstats period metrics (return, "
            "Sharpe, drawdown, ...) on its equity curve, its PnL split into basis convergence, funding and fees (quote "
            "currency, summing to its PnL), and per member PnL, fills, fees, funding and holding time. Output: "
            f"`metrics_multi/strategy={spec.name}/universe={universe}/month=M/` (metrics.json, members.parquet)."
        ),
        metadata={"strategy": spec.name, "universe": universe},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _metrics(context: dg.AssetExecutionContext, lake: LakeResource):
        from quant_assets.analytics.multi_metrics import MultiSliceError, run_multi_metrics
        from quant_assets.lake.instruments import trading_days_of

        the_lake = lake.lake()

        def build_one(pk: str) -> Built:
            month, uni = _split(pk)
            days = max(trading_days_of(the_lake, s, month=month) for s in members)
            try:
                out = run_multi_metrics(the_lake, spec.name, uni, month, days)
            except (MultiSliceError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            mt, split = out.metrics, out.metrics["split"]
            return Built(metadata={
                "total_return_pct": _num(None if mt.get("total_return") is None else 100 * mt["total_return"]),
                "sharpe": _num(mt.get("sharpe")),
                "max_drawdown_pct": _num(None if mt.get("max_drawdown") is None else 100 * mt["max_drawdown"]),
                "pnl": _num(split["total_pnl"]), "basis_pnl": _num(split["basis_pnl"]),
                "funding_pnl": _num(split["funding_pnl"]), "fees": _num(split["fees"]),
                "funding_share": _num(split["funding_share"]),
                "time_in_market": _num(mt.get("time_in_market")),
                "fills": dg.MetadataValue.int(mt["fills"]),
                "members": dg.MetadataValue.md(out.members.drop("null_reasons").to_pandas().to_markdown(index=False)),
                "null_reasons": dg.MetadataValue.json(mt["null_reasons"]),
                "path": dg.MetadataValue.path(str(out.directory)),
            }, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _metrics


def cross_section_asset(spec: StrategySpec, universe: str, members: tuple[str, ...], interval: str) -> dg.AssetsDefinition:
    """``cross_section_<strategy>__<universe>``: the strategy's signal ranked across the members
    at common sample times, judged by alphalens, one month at a time."""
    from quant_assets.research.cross_section import XS_VERSION
    from quant_assets.research.factors import SIGNAL_DEFS
    from quant_assets.strategies.registry import FACTOR_SIGNALS

    name = cross_section_key(spec.name, universe)
    signal = SIGNAL_DEFS[FACTOR_SIGNALS[spec.name]]

    @dg.asset(
        name=name,
        partitions_def=month_universe_partitions(universe),
        # the month's bars and the previous month's (warm-up) of every member
        deps=[dg.AssetDep(f"bars_{interval}", partition_mapping=members_of_month(list(members), previous=True))],
        code_version=f"xs-v{XS_VERSION}-{interval}-{spec.code_version('factors')}-m{_members_digest(members)}",
        group_name=MULTI_GROUP,
        kinds={"alphalens", "parquet"},
        description=(
            f"Cross-sectional factor analysis of `{spec.name}`'s signal `{signal.name}` ({signal.description}) across "
            f"the members of `{universe}` ({', '.join(members)}), one month at a time: at each hourly sample time the "
            "members are ranked by their signal and judged against their forward returns by alphalens: IC by horizon, "
            "quantile returns, turnover. Quantiles are formed across members at each time (never across time); forward "
            "returns stay inside the month. Output: "
            f"`factors_xs/strategy={spec.name}/universe={universe}/month=M/` (report.json, ic.parquet, "
            "quantile_returns.parquet, turnover.parquet)."
        ),
        metadata={"strategy": spec.name, "signal": signal.name, "universe": universe,
                  "members": dg.MetadataValue.json(list(members))},
        automation_condition=rebuild_stale_slices(),
        backfill_policy=BACKFILL_POLICY,
    )
    def _xs(context: dg.AssetExecutionContext, lake: LakeResource):
        from quant_assets.research.cross_section import CrossSectionInputError, CrossSectionSettings, run_cross_section

        the_lake = lake.lake()
        # Fewer members than five quintiles: as many bins as members, at least two (a pair's
        # IC at one time is then +-1: its mean over the month is 2 x the hit rate - 1).
        settings = CrossSectionSettings(quantiles=max(2, min(5, len(members))))

        def build_one(pk: str) -> Built:
            month, uni = _split(pk)
            try:
                out = run_cross_section(the_lake, spec, signal, uni, list(members), month, interval, settings)
            except (CrossSectionInputError, ValueError) as exc:
                raise dg.Failure(description=f"{name} {pk}: {exc}", allow_retries=False) from exc
            s = out.result.summary()
            return Built(metadata={
                "reason": s.get("reason") or "",
                "members_used": dg.MetadataValue.int(len(s.get("members_used") or [])),
                "sample_times": dg.MetadataValue.int(int(s.get("sample_times") or 0)),
                "quantiles": dg.MetadataValue.int(settings.quantiles),
                **{k: _num(v) for k, v in s.items() if k.startswith(("ic_mean_", "ic_t_", "top_minus_bottom_bps_"))},
                "members_missing": dg.MetadataValue.json(out.result.report.get("members_missing") or {}),
                "path": dg.MetadataValue.path(str(out.directory / "report.json")),
            }, data_version=out.data_version)

        yield from build_slices(context, build_one)

    return _xs


def portfolio_asset(ps: PortfolioSet, members: tuple[str, ...]) -> dg.AssetsDefinition:
    """``portfolio_<set>``: the roll-up of a declared portfolio over every month."""
    from quant_assets.portfolio.rollup import PORTFOLIO_VERSION

    name = portfolio_key(ps.name)

    @dg.asset(
        name=name,
        # Every month of the strategies' backtests: a new backtest slice requests the roll-up,
        # whose run reads only its own lines (strategies x members).
        deps=[f"backtest_{s}" for s in ps.strategies],
        code_version=f"portfolio-v{PORTFOLIO_VERSION}-" + hashlib.sha256(repr(
            (ps.weighting, ps.window_days, ps.min_days, sorted((ps.weights or {}).items()), ps.strategies, members)).encode()).hexdigest()[:12],
        group_name=MULTI_GROUP,
        kinds={"quantstats", "parquet"},
        description=(
            f"Portfolio `{ps.name}`: {', '.join(ps.strategies)} on each member of `{ps.universe}` ({', '.join(members)}), "
            f"weighted {ps.weighting} and rebalanced daily: combined equity, correlation of the lines' daily returns, "
            "each line's contribution to return and to the worst drawdown, the deflated Sharpe counting every line "
            f"tried, and the quantstats tearsheet. Output: `portfolios/universe={ps.universe}/set={ps.name}/`."
        ),
        metadata={"universe": ps.universe, "strategies": dg.MetadataValue.json(list(ps.strategies)),
                  "weighting": ps.weighting},
        automation_condition=rebuild_ledger(),
        # Nothing to combine before a line has a backtest slice: the step succeeds and says so.
        output_required=False,
    )
    def _portfolio(context: dg.AssetExecutionContext, lake: LakeResource):
        from quant_assets.portfolio import rollup

        the_lake = lake.lake()
        weighting = rollup.Weighting(ps.weighting, ps.weights, ps.window_days, ps.min_days)
        if not any(rollup.backtest_months(the_lake, rollup.Line(s, m)) for s in ps.strategies for m in members):
            context.log.info(f"{name}: no line ({', '.join(ps.strategies)} x {', '.join(members)}) has a backtest slice yet")
            return
        try:
            result = rollup.build(the_lake, ps.universe, ps.name, list(ps.strategies), weighting)
        except (rollup.PortfolioError, ValueError) as exc:
            raise dg.Failure(description=f"{name}: {exc}", allow_retries=False) from exc
        out = rollup.write(the_lake, result)
        r = result.report
        metrics = r.get("metrics") or {}
        yield dg.MaterializeResult(metadata={
            "lines": dg.MetadataValue.int(len(result.lines)),
            "days": dg.MetadataValue.int(len(result.returns)),
            **{k: _num(metrics.get(k)) for k in ("sharpe", "sortino", "volatility", "cagr")},
            "total_return": _num(r.get("total_return")),
            "max_drawdown": _num((r.get("max_drawdown") or {}).get("value")),
            "deflated_sharpe": _num((r.get("deflated_sharpe") or {}).get("dsr")),
            "deflated_sharpe_reason": str((r.get("deflated_sharpe") or {}).get("reason") or ""),
            "n_trials": dg.MetadataValue.int(int((r.get("deflated_sharpe") or {}).get("n_trials") or 0)),
            "contributions": dg.MetadataValue.md(result.contributions.to_pandas().to_markdown(index=False)),
            "correlation": dg.MetadataValue.md(result.correlation.to_pandas().to_markdown(index=False)),
            "tearsheet": dg.MetadataValue.path(str(out.tearsheet)) if out.tearsheet else dg.MetadataValue.null(),
            "path": dg.MetadataValue.path(str(out.directory)),
        }, data_version=dg.DataVersion(out.data_version))

    return _portfolio


def universe_assets(universes: Universes, symbol_specs: dict[str, StrategySpec],
                    universe_specs: dict[str, StrategySpec], interval: str) -> list[dg.AssetsDefinition]:
    """Every asset ``universes.toml`` declares (see the module docstring)."""
    out: list[dg.AssetsDefinition] = []
    for strategy, names in sorted(universes.backtests.items()):
        spec = universe_specs.get(strategy) or symbol_specs[strategy]
        for u in names:
            out += [multi_backtest_asset(spec, u, universes.members(u)), multi_metrics_asset(spec, u, universes.members(u))]
    for strategy, names in sorted(universes.cross_sections.items()):
        out += [cross_section_asset(symbol_specs[strategy], u, universes.members(u), interval) for u in names]
    out += [portfolio_asset(ps, universes.members(ps.universe)) for ps in universes.portfolios.values()]
    seen: set[str] = set()
    for a in out:
        key = a.key.to_user_string()
        if key in seen:
            raise ValueError(f"{universes.path}: two declarations give the asset {key} (universe names differing only "
                             "in '-' and '_')")
        seen.add(key)
    return out
