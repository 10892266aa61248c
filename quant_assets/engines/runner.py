"""One backtest slice, end to end, engine-agnostic: instrument → engine → result format → lake.

Output at ``<lake>/backtests/strategy=X/symbol=S/month=M/``: ``fills.parquet``,
``equity.parquet``, ``cashflows.parquet`` (funding, insurance; see
:mod:`quant_assets.engines.result`), ``events.parquet`` (liquidations) and, for a perpetual,
``funding.parquet`` (each funding time: position, mark, rate, amount received), then
``manifest.json`` last, which names the files' SHA-256: a reader that trusts the manifest never
sees a mixed slice.

``run.json`` holds what the run that made the folder measured about itself (wall times,
events per second, peak RSS): facts about that process, not about the data, which differ
between two runs of the same inputs. They are kept out of ``manifest.json`` so that the same
data, code and parameters give byte-identical published files (the no-look-ahead test compares
them); ``run.json`` is not in the manifest's file list nor in the data version.
"""

from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from quant_assets.analytics import trials
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.book.read import BookSlice, book_slice
from quant_assets.engines.inputs import BacktestInputError, NotApplicableError
from quant_assets.engines.fidelity import assumption
from quant_assets.engines.invariants import Outcome, check_backtest
from quant_assets.engines.account import AccountRules, max_notional
from quant_assets.engines.result import EngineRun, annotate_fills, finalize_with_flows, summary
from quant_assets.engines.warmup import WarmupFeed, plan_warmup
from quant_assets.funding.build import load_funding
from quant_assets.funding.schema import is_perpetual
from quant_assets.funding.settle import funding_summary, settle_funding
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import ParamError, StrategySpec
from quant_assets.venues import feed as feed_latency
from quant_assets.venues import profile as venue_profiles
from quant_assets.venues.profile import VenueProfile

#: ``events.parquet``: what the account guard did (liquidations), one row per event.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(), "kind": pl.String(), "equity": pl.Float64(), "position": pl.Float64(), "mark": pl.Float64(), "detail": pl.String(),
}

#: Cash each month starts with, in the instrument's quote currency; every month starts flat.
STARTING_CASH = 100_000.0


@dataclass(frozen=True)
class BacktestOutput:
    directory: Path
    manifest: dict[str, Any]
    summary: dict[str, float | int]
    equity: pl.DataFrame
    data_version: str  # hash of the result files
    checks: list[Outcome] = field(default_factory=list)  # the result's invariants (engines.invariants)
    run: dict[str, Any] = field(default_factory=dict)  # run.json: wall times, events/s, peak RSS of this run


#: ``run.json`` of a result folder: facts about the run that made it (see the module docstring).
RUN_FACTS = "run.json"


#: Parameters that size a strategy's position (quote currency), checked against the account.
SIZE_PARAMS = ("notional", "order_notional")


def account_rules(instrument: inst_mod.Instrument, starting_cash: float = STARTING_CASH) -> AccountRules:
    """The account a backtest of ``instrument`` trades through: leverage and maintenance margin
    of its venue and kind (``[[margin]]`` in instruments.toml; see
    :mod:`quant_assets.engines.account`)."""
    max_leverage, maintenance_margin = inst_mod.margin_for(instrument)
    return AccountRules(starting_cash, max_leverage, maintenance_margin)


def instrument_kind(instrument: inst_mod.Instrument) -> str:
    return str(instrument.kind)


def check_sizes(spec: StrategySpec, params: dict[str, Any], rules: AccountRules, what: str) -> None:
    """A size the account could never carry is an error before the engine starts."""
    for name in SIZE_PARAMS:
        if name in params and float(params[name]) > max_notional(rules):
            raise ParamError(
                f"{what}: {spec.name}.{name} = {params[name]:,} is more than the account can carry "
                f"({rules.starting_cash:,.0f} at {rules.max_leverage:g}x = {max_notional(rules):,.0f} quote currency); "
                "lower it in strategies.toml or raise the venue's max_leverage"
            )


def venue_profile(instrument: inst_mod.Instrument) -> VenueProfile:
    """The venue profile a backtest of ``instrument`` runs under (its venue × kind)."""
    return venue_profiles.profile_for(instrument.venue, instrument.kind)


def used_book(spec: StrategySpec, book: BookSlice | None) -> BookSlice | None:
    """The depth an engine run of ``spec`` reads: hftbacktest's always (queue positions),
    NautilusTrader's only for a strategy that declares depth (``spec.depth``)."""
    if book is None or (spec.engine == "nautilus" and spec.depth == "none"):
        return None
    return book


def book_provenance(lake: Lake, book: BookSlice | None) -> dict[str, Any] | None:
    """What a run read of the book: its level, day files (lake-relative) and the partition's
    data version (the SHA-256 of its ``manifest.json``, which names every day file's hash)."""
    if book is None:
        return None
    manifest = book.days[0].parent.parent / "manifest.json"
    return {"level": book.level, "days": [lake.relative(p) for p in book.days],
            "manifest_sha256": file_sha256(manifest) if manifest.exists() else None}


def run_engine(spec: StrategySpec, ticks_path: Path, instrument: inst_mod.Instrument, params: dict[str, Any],
               starting_cash: float = STARTING_CASH, rules: AccountRules | None = None,
               profile: VenueProfile | None = None, warmup: WarmupFeed | None = None,
               book: BookSlice | None = None) -> EngineRun:
    """Dispatch to the spec's engine (imported here, never at module load) under the venue
    ``profile`` (default: the instrument's venue × kind profile), after the ``warmup`` feed,
    with the slice's order-book depth ``book`` where the strategy uses depth (``spec.depth``;
    hftbacktest's market maker always: its queue positions)."""
    rules = rules or account_rules(instrument, starting_cash)
    profile = profile or venue_profile(instrument)
    if spec.engine == "nautilus":
        from quant_assets.engines.nautilus import run_nautilus

        return run_nautilus(ticks_path, instrument, spec.impl, params, starting_cash, rules=rules, profile=profile,
                            warmup=warmup, book=used_book(spec, book))
    if spec.engine == "hftbacktest":
        if warmup is not None and warmup.status != "none":
            # No strategy of this engine keeps indicators across ticks; one that did would need it.
            raise ParamError(f"{spec.name}: declares a warm-up, which the hftbacktest adapter does not feed")
        from quant_assets.engines.hft import run_hftbacktest

        return run_hftbacktest(ticks_path, instrument, params, starting_cash, rules=rules, profile=profile, book=book)
    raise ValueError(f"{spec.name}: unknown engine {spec.engine!r}")


@dataclass(frozen=True)
class SliceSetup:
    """What a backtest of one slice runs with: the resolved parameters, the ticks file, the
    instrument with the month's fees applied, the account rules, the venue profile and the
    warm-up feed (the previous month's end; :mod:`quant_assets.engines.warmup`) and the
    slice's order-book depth (None: L1 only; :mod:`quant_assets.book.read`)."""

    params: dict[str, Any]
    ticks_path: Path
    instrument: inst_mod.Instrument
    fees: inst_mod.FeeChoice
    rules: AccountRules
    profile: VenueProfile
    warmup: WarmupFeed
    book: BookSlice | None = None


def setup_slice(lake: Lake, spec: StrategySpec, symbol: str, month: str, starting_cash: float = STARTING_CASH) -> SliceSetup:
    """Resolve everything a backtest of (month, symbol) needs, validating it before any engine
    starts: a missing instrument record or a size the account cannot carry raises, naming the
    slice and the setting."""
    params = spec.resolved()
    ticks_path = lake.ticks_path(symbol, month)
    # The instrument as known in this month: its records up to the month, never a later one's.
    instrument = inst_mod.resolve(lake, symbol, month=month)
    if instrument is None:
        raise BacktestInputError(f"{symbol} {month}: no instrument record (materialise `ticks` for it or add [{symbol}] to instruments.toml)")
    # The month is charged the fee schedule in force when it starts (per-symbol overrides win);
    # the account trades under the venue kind's margin settings.
    fees = inst_mod.fee_choice(instrument, month)
    instrument = replace(instrument, maker_fee=fees.maker, taker_fee=fees.taker)
    rules = account_rules(instrument, starting_cash)
    check_sizes(spec, params, rules, f"{symbol} {month}")
    warmup = plan_warmup(lambda m: lake.ticks_path(symbol, m), month, spec.warmup(params))
    book = book_slice(lake, symbol, month)
    if book is None and spec.depth == "required":
        raise NotApplicableError(f"{symbol} {month}: {spec.name} needs order-book depth and the slice has no book partition")
    return SliceSetup(params, ticks_path, instrument, fees, rules, venue_profile(instrument), warmup, book)


@dataclass(frozen=True)
class Simulated:
    """One engine run of a slice with its funding settled and its result finalised (fills,
    equity, cash flows: see :mod:`quant_assets.engines.result`)."""

    run: EngineRun
    fills: pl.DataFrame
    equity: pl.DataFrame
    flows: pl.DataFrame
    settlement: pl.DataFrame
    funding: dict[str, Any]
    funding_rows: pl.DataFrame | None


def simulate(lake: Lake, spec: StrategySpec, setup: SliceSetup, symbol: str, month: str, starting_cash: float = STARTING_CASH,
             profile: VenueProfile | None = None, instrument: inst_mod.Instrument | None = None) -> Simulated:
    """Run the engine on the slice under ``profile`` and ``instrument`` (default: the setup's;
    the realism sensitivity passes scaled ones) and settle its funding."""
    run = run_engine(spec, setup.ticks_path, instrument or setup.instrument, setup.params, starting_cash, setup.rules,
                     profile or setup.profile, setup.warmup, setup.book)
    # Funding is settled on the run's own fills and samples (engine-agnostic): a perpetual pays or
    # receives position x mark x rate at each funding time; a month without funding data says
    # "missing" and books nothing, it is never a silent zero.
    funding_rows = load_funding(lake, symbol, month) if is_perpetual(symbol) else None
    annotated = annotate_fills(run.fills)
    settlement = settle_funding(annotated, run.samples, funding_rows)
    funding = funding_summary(symbol, settlement, funding_rows)
    cashflows = settlement.select("ts", kind=pl.lit("funding"), amount=pl.col("amount").fill_null(0.0))
    fills, equity, flows = finalize_with_flows(run, cashflows, annotated)
    return Simulated(run, fills, equity, flows, settlement, funding, funding_rows)


def run_backtest(
    lake: Lake, spec: StrategySpec, symbol: str, month: str,
    ticks_version: str | None = None, code_version: str | None = None, starting_cash: float = STARTING_CASH,
    out_dir: Path | None = None, trial_kind: str = trials.PARAMETERS,
) -> BacktestOutput:
    """Backtest ``spec`` on the ``ticks`` partition (month, symbol) and publish the result.

    Parameters are validated before the engine starts; an unusable partition raises
    :class:`BacktestInputError` naming it. The previous result stays in place until the new
    one is complete. ``out_dir`` puts the result elsewhere than the strategy's backtest slice
    (the out-of-sample re-tests of suggested parameters use it). ``trial_kind``: how the run
    enters the trials ledger (:mod:`quant_assets.analytics.trials`; the null critic's control
    runs are not counted).
    """
    setup = setup_slice(lake, spec, symbol, month, starting_cash)
    params, ticks_path, instrument, fees, rules, profile = (
        setup.params, setup.ticks_path, setup.instrument, setup.fees, setup.rules, setup.profile)
    rss_before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    sim = simulate(lake, spec, setup, symbol, month, starting_cash)
    run, fills, equity, flows = sim.run, sim.fills, sim.equity, sim.flows
    settlement, funding, funding_rows = sim.settlement, sim.funding, sim.funding_rows
    feed = feed_latency.measure(ticks_path)
    checks = check_backtest(fills, equity, flows, starting_cash, params)
    events = pl.DataFrame(run.account_events, schema=EVENT_SCHEMA) if run.account_events else pl.DataFrame(schema=EVENT_SCHEMA)
    out = out_dir or lake.backtest_dir(spec.name, symbol, month)
    lock = lake.lock(f"backtest-{spec.name}-{symbol}-{month}" if out_dir is None else "run-" + hashlib.sha256(str(out).encode()).hexdigest()[:16])
    with lock, atomic_dir(out, "backtest") as new:
        lake.write_parquet(fills, new / "fills.parquet")
        lake.write_parquet(equity, new / "equity.parquet")
        lake.write_parquet(flows, new / "cashflows.parquet")
        lake.write_parquet(events, new / "events.parquet")
        names = ["fills.parquet", "equity.parquet", "cashflows.parquet", "events.parquet"]
        if is_perpetual(symbol):
            lake.write_parquet(settlement, new / "funding.parquet")
            names.append("funding.parquet")
        hashes = {name: file_sha256(new / name) for name in names}
        wall = time.perf_counter() - t0
        head = summary(fills, equity, starting_cash, flows)
        manifest = {
            "strategy": spec.name,
            "symbol": symbol,
            "month": month,
            "params": params,
            "engine": run.engine,
            "engine_version": run.engine_version,
            "adapter_version": ADAPTER_VERSIONS[spec.engine],
            "code_version": code_version or spec.code_version(ADAPTER_VERSIONS[spec.engine]),
            "ticks_data_version": ticks_version,
            "ticks_path": lake.relative(ticks_path),
            "instrument": instrument.__dict__,
            "instrument_kind": instrument_kind(instrument),
            "fidelity": run.fidelity,
            "fidelity_assumption": assumption(run.fidelity),
            # The order-book depth the engine read (None: L1 only), so a result names its book.
            "book": book_provenance(lake, used_book(spec, setup.book)),
            "funding": {"status": funding["funding_status"], "funding_pnl": funding["funding_pnl"],
                        "events": funding["funding_events"],
                        "source": lake.relative(lake.funding_path(symbol, month)) if funding_rows is not None else None},
            "fee_schedule": {**asdict(fees), "label": fees.label()},
            # The simulated venue: order latency, fills, queue, depth of size-less quotes.
            "venue_profile": profile.describe(),
            "feed_latency": feed,
            # What the indicators were warmed on before the month (the previous month's end).
            "warmup": setup.warmup.describe(),
            "account": {"starting_cash": rules.starting_cash, "max_leverage": rules.max_leverage,
                        "maintenance_margin": rules.maintenance_margin, "ruin_floor": rules.ruin_floor},
            "counters": run.counters,
            "account_events": run.account_events,
            "starting_cash": starting_cash,
            "quote_currency": run.quote_currency,
            "events": run.events,
            "files": hashes,
            "summary": head,
            "checks": {c.name: {"passed": c.passed, "detail": c.detail} for c in checks},
            "notes": run.notes,
        }
        run_facts = {
            "engine_wall_s": round(run.wall_s, 4),
            "wall_s": round(wall, 4),
            "events_per_s": round(run.events_per_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_growth_mb": round((psutil.Process().memory_info().rss - rss_before) / 2**20, 1),
        }
        lake.write_json(run_facts, new / RUN_FACTS)
        lake.write_json(manifest, new / "manifest.json")
    # The deflated Sharpe of the roll-ups needs every parameter set this implementation was run with.
    trials.record(lake, spec.impl, spec.name, params, kind=trial_kind)
    version = hashlib.sha256("|".join(hashes[k] for k in sorted(hashes)).encode()).hexdigest()[:24]
    return BacktestOutput(out, manifest, head, equity, version, checks, run_facts)
