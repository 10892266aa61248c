"""Several instruments in ONE NautilusTrader 1.221 ``BacktestEngine`` and one account per venue.

A universe's members (partition symbols, each with its ``ticks`` month from the lake) are added
to one engine; each member's ticks are streamed from its Parquet in chunks (the single-instrument
adapter's :func:`~quant_assets.engines.nautilus._chunks`) and the streams are merged by ``ts_recv``
(:func:`merge_streams`: a k-way merge that releases a row only once no live stream can still
precede it, so memory holds about one chunk per member whatever the month's size; by default a
member's chunk is the single adapter's ``CHUNK_ROWS`` divided among the members, at least
:data:`MIN_CHUNK_ROWS`).

Accounts: NautilusTrader keeps ONE account per simulated venue (``add_venue(account_type=...)``);
every instrument of that venue trades through it. Our venue is a MARGIN account holding only the
quote currency (as in the single-instrument adapter), so a spot ``CurrencyPair`` (margin 0) and a
linear ``CryptoPerpetual`` (initial margin 1 / max leverage) of the same venue share one
cross-margined account: PnL, fees and margin of both legs net in one balance. That is more
generous than Binance, whose spot wallet and USD-M futures wallet are separate accounts
(collateral must be moved between them), and it lets the spot leg go short without a borrow
cost (a spot short is a margin loan at a real venue): the basis strategy's reverse side is
optimistic by that borrow rate. Members on different venues get one account each (the notes and
``counters["accounts"]`` say so); cash and PnL are then summed in our result layer.

Two ways to run strategies:

* a multi-instrument strategy (a :class:`~quant_assets.strategies.nautilus_multi.MultiRecordedStrategy`
  subclass, e.g. the basis strategy) gets every member;
* a single-instrument strategy (a :class:`~quant_assets.strategies.nautilus_base.RecordedStrategy`
  subclass, e.g. ``ema_cross``) gets one instance per member named in ``trade`` (default: all),
  each with its own fills and account guard, all trading through the venue's one account.

Results: per member an :class:`~quant_assets.engines.result.EngineRun` (its fills and mid samples),
finalised and funding-settled exactly as the single-instrument path (:mod:`quant_assets.funding.settle`),
then stacked with an ``instrument`` column (:func:`finalize_multi`). A member's equity is the
account's starting cash plus that member's own PnL (as if it alone traded the account), so a
member traded alone equals its single-instrument run; the account's equity (``instrument =``
:data:`ACCOUNT`) is the starting cash plus the sum of the members' PnL at every sample time.

Limits: no warm-up feed from the previous month (a strategy waits its own inputs), no order-book
depth (L1 books of the quotes), one latency and fill model per venue (the venue profile of the
venue's first member; the notes name it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import polars as pl

from quant_assets.engines.account import AccountRules
from quant_assets.engines.fidelity import TRADES_ONLY
from quant_assets.engines.inputs import BacktestInputError, inspect_ticks
from quant_assets.engines.result import (
    CASHFLOW_SCHEMA, EQUITY_SCHEMA, FILL_SCHEMA, EngineRun, annotate_fills, finalize_with_flows, raw_fills,
)
from quant_assets.lake.instruments import Instrument
from quant_assets.venues import latency as venue_latency
from quant_assets.venues import profile as venue_profiles
from quant_assets.venues.profile import VenueProfile

#: The ``instrument`` value of the account's rows in the stacked equity.
ACCOUNT = "ACCOUNT"
#: Smallest default chunk per member (rows): below it the per-chunk overhead shows.
MIN_CHUNK_ROWS = 25_000


@dataclass(frozen=True)
class Member:
    """One instrument of a multi-instrument run: its record (fees of the month applied), its
    ``ticks`` month and, for a perpetual, the month's funding rows (None: spot, or missing)."""

    instrument: Instrument
    ticks_path: Path
    funding: pl.DataFrame | None = None

    @property
    def symbol(self) -> str:
        return self.instrument.symbol


@dataclass
class MultiRun:
    """What one multi-instrument engine run reports: per member symbol an :class:`EngineRun`
    (fills, samples; ``events`` its ticks), and for the whole run the events fed, wall time,
    account-level events and counters, notes."""

    runs: dict[str, EngineRun]
    events: int
    wall_s: float
    engine_version: str
    starting_cash: float
    quote_currency: str
    notes: list[str] = field(default_factory=list)
    account_events: list[dict] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def merge_streams(streams: list[Iterable[tuple[list, np.ndarray]]]) -> Iterator[list]:
    """Lists of data points from ``streams`` (each yields (objects, ts ns non-decreasing) parts)
    in ``ts`` order; at equal ``ts`` the earlier stream first, each stream keeping its own order.
    A row is released only once every live stream has a part reaching past it (the k-way form
    of :func:`quant_assets.engines.nautilus_book.merge_by_time`)."""
    k = len(streams)
    its = [iter(s) for s in streams]
    objs = [np.empty(0, dtype=object) for _ in range(k)]
    ts = [np.empty(0, dtype=np.int64) for _ in range(k)]
    live = [True] * k

    def pull(i: int) -> None:
        part = next(its[i], None)
        if part is None:
            live[i] = False
            return
        data = np.empty(len(part[0]), dtype=object)
        data[:] = part[0]
        objs[i] = np.concatenate([objs[i], data])
        ts[i] = np.concatenate([ts[i], np.asarray(part[1], dtype=np.int64)])

    while True:
        for i in range(k):
            while live[i] and not len(ts[i]):
                pull(i)
        horizon = min((int(ts[i][-1]) for i in range(k) if live[i]), default=None)
        cut = [len(ts[i]) if horizon is None else int(np.searchsorted(ts[i], horizon, "left")) for i in range(k)]
        if not any(cut):
            if horizon is None:
                return
            for i in range(k):
                if live[i] and ts[i][-1] == horizon:
                    pull(i)
            continue
        o = np.concatenate([objs[i][:cut[i]] for i in range(k)])
        t = np.concatenate([ts[i][:cut[i]] for i in range(k)])
        src = np.concatenate([np.full(cut[i], i, np.int16) for i in range(k)])
        yield o[np.lexsort((src, t))].tolist()
        for i in range(k):
            objs[i], ts[i] = objs[i][cut[i]:], ts[i][cut[i]:]


#: The process's multi-instrument engines, keyed by (venues, quote currencies, cash, latencies):
#: reused with ``reset()`` (a fresh engine per run leaks a few MB, ../shared/STACK.md).
_engines: dict[tuple, tuple[Any, dict[str, Any]]] = {}


def _engine(venues: dict[str, tuple[Any, int]], starting_cash: float):
    """(engine, {venue: SimulatedExchange}) with one MARGIN account per venue (``venues``: venue
    name -> (quote Currency, order latency ns))."""
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.backtest.models import FillModel, LatencyModel, MakerTakerFeeModel
    from nautilus_trader.model.enums import AccountType, BookType, OmsType
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money

    from quant_assets.engines.nautilus import engine_config
    from quant_assets.engines.nautilus_fills import ExchangeHandle

    key = (tuple(sorted((v, q.code, lat > 0) for v, (q, lat) in venues.items())), starting_cash)
    cached = _engines.get(key)
    if cached is not None:
        engine, exchanges = cached
        engine.reset()
        engine.clear_strategies()
        engine.clear_data()
    else:
        engine = BacktestEngine(engine_config())
        exchanges = {}
        for name, (quote, lat) in sorted(venues.items()):
            engine.add_venue(
                venue=Venue(name), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN, base_currency=quote,
                starting_balances=[Money(starting_cash, quote)], fill_model=FillModel(), fee_model=MakerTakerFeeModel(),
                latency_model=LatencyModel(base_latency_nanos=lat) if lat > 0 else None, book_type=BookType.L1_MBP,
                modules=[handle := ExchangeHandle()], trade_execution=True,
            )
            exchanges[name] = handle.exchange
            handle.exchange.modules.remove(handle)
        _engines[key] = (engine, exchanges)
    for name, (_, lat) in venues.items():
        if lat > 0:
            exchanges[name].set_latency_model(LatencyModel(base_latency_nanos=lat))
    return engine, exchanges


def run_multi(
    members: list[Member], impl: str, params: dict[str, Any], starting_cash: float = 100_000.0,
    rules: AccountRules | None = None, profiles: dict[str, VenueProfile] | None = None,
    trade: list[str] | None = None, chunk_rows: int | None = None,
) -> MultiRun:
    """Backtest ``members`` in one engine with the strategy class named by ``impl`` and its
    resolved ``params``. ``rules``: the account's leverage and maintenance margin (default 1x);
    ``profiles``: venue name -> venue profile (default frictionless for the venue's first
    member); ``trade``: for a single-instrument strategy, the member symbols it trades (one
    instance each; default every member; the others only stream their data). Raises
    :class:`BacktestInputError` for a member that cannot be backtested or a universe that
    mixes quote currencies on one venue."""
    import nautilus_trader

    from quant_assets.engines import nautilus as na
    from quant_assets.engines.nautilus_fills import VenueFillModel
    from quant_assets.strategies.nautilus_base import RecordedStrategy, RecordedStrategyConfig
    from quant_assets.strategies.nautilus_multi import MultiRecordedStrategy, MultiStrategyConfig

    if not members:
        raise BacktestInputError("a multi-instrument run needs at least one member")
    symbols = [m.symbol for m in members]
    if len(set(symbols)) != len(symbols):
        raise BacktestInputError(f"members {symbols}: a symbol appears twice")
    # The merge holds about one chunk per member: split the single adapter's chunk between the
    # members so the ticks in flight stay near one chunk whatever the universe's size.
    chunk_rows = chunk_rows or max(MIN_CHUNK_ROWS, na.CHUNK_ROWS // len(members))
    rules = rules or AccountRules(starting_cash)
    stats = {m.symbol: inspect_ticks(m.ticks_path, m.instrument, engine="nautilus") for m in members}
    nt = {m.symbol: na.nautilus_instrument(m.instrument) for m in members}
    profiles = dict(profiles or {})
    venues: dict[str, tuple[Any, int]] = {}
    notes: list[str] = []
    for m in members:
        v = m.instrument.venue
        prof = profiles.setdefault(v, venue_profiles.frictionless(v, m.instrument.kind))
        if v in venues:
            if venues[v][0] != nt[m.symbol].quote_currency:
                raise BacktestInputError(f"{m.symbol}: quote currency {nt[m.symbol].quote_currency.code} differs from "
                                         f"{venues[v][0].code} of the other members on {v}: one account holds one currency")
            continue
        lat, lat_note = venue_latency.nautilus_entry_ns(prof)
        venues[v] = (nt[m.symbol].quote_currency, lat)
        if lat_note:
            notes.append(f"{v}: {lat_note}")
    cls = na.load_strategy_class(impl)
    t0 = time.perf_counter()
    engine, exchanges = _engine(venues, starting_cash)
    for m in members:
        engine.add_instrument(nt[m.symbol])
    fill_models = {}
    for v, exchange in exchanges.items():
        if v not in venues:
            continue
        p = profiles[v]
        fill_models[v] = VenueFillModel(p.prob_fill_on_limit, p.prob_slippage, p.fill_seed,
                                        next_touch=p.stop_fill == "next_touch", exchange=exchange)
        from nautilus_trader.model.identifiers import Venue

        engine.change_fill_model(Venue(v), fill_models[v])
    interval_ns = int(float(params.get("equity_interval_s", 60.0)) * 1e9)
    first_ts = min(int(s.first_ts) for s in stats.values())
    multi = issubclass(cls, MultiRecordedStrategy)
    if multi:
        funding = {}
        for m in members:
            if m.funding is not None and len(m.funding):
                f = m.funding.sort("ts")
                funding[nt[m.symbol].id.value] = [[int(t), float(r), None if h is None else float(h)]
                                                  for t, r, h in f.select("ts", "rate", "interval_h").iter_rows()]
        strategies = [cls(MultiStrategyConfig(
            instrument_ids=[nt[s].id for s in symbols], params=params,
            flatten_at_ns=min(int(s.last_signal_ts) for s in stats.values()), equity_interval_ns=interval_ns,
            starting_cash=float(starting_cash), max_leverage=float(rules.max_leverage),
            maintenance_margin=float(rules.maintenance_margin), trade_from_ns=first_ts, funding=funding,
        ))]
    elif issubclass(cls, RecordedStrategy):
        chosen = trade if trade is not None else symbols
        unknown = sorted(set(chosen) - set(symbols))
        if unknown:
            raise BacktestInputError(f"trade {unknown}: not members of {symbols}")
        strategies = [cls(RecordedStrategyConfig(
            instrument_id=nt[s].id, params=params, flatten_at_ns=int(stats[s].last_signal_ts),
            equity_interval_ns=interval_ns, starting_cash=float(starting_cash), max_leverage=float(rules.max_leverage),
            maintenance_margin=float(rules.maintenance_margin), trade_from_ns=int(stats[s].first_ts),
            order_id_tag=f"{i:03d}",
        )) for i, s in enumerate(chosen)]
    else:
        raise BacktestInputError(f"{impl}: neither a MultiRecordedStrategy nor a RecordedStrategy")
    for s in strategies:
        engine.add_strategy(s)

    infos = {s: na._SliceInfo() for s in symbols}
    profile_of = {m.symbol: profiles[m.instrument.venue] for m in members}

    def stream(m: Member):
        trades_only = stats[m.symbol].fidelity == TRADES_ONLY
        for data, _, ts in na._chunks(m.ticks_path, nt[m.symbol], chunk_rows, trades_only, profile_of[m.symbol], infos[m.symbol]):
            yield data, ts

    events = 0
    try:
        for data in merge_streams([stream(m) for m in members]):
            engine.add_data(data, validate=False, sort=False)
            engine.run(streaming=True)
            engine.clear_data()
            events += len(data)
        # With latency the closing orders need quotes after the data (see nautilus.END_MARKERS).
        markers = []
        for m in members:
            lat = venues[m.instrument.venue][1]
            info = infos[m.symbol]
            if lat > 0 and info.last_quote is not None:
                markers += na.end_markers(info.last_quote, max(i.last_ts for i in infos.values()), lat)
        if markers:
            markers.sort(key=lambda q: q.ts_init)
            engine.add_data(markers, validate=False, sort=False)
            engine.run(streaming=True)
            engine.clear_data()
        engine.end()
    except BaseException:
        _drop(engine)
        raise
    wall = time.perf_counter() - t0

    runs: dict[str, EngineRun] = {}
    account_events: list[dict] = []
    counters = {"accounts": len(venues), "members": len(members), "orders_refused_leverage": 0, "liquidations": 0}
    version = nautilus_trader.__version__
    ticks_of = {s: stats[s].events for s in symbols}
    if multi:
        st = strategies[0]
        fills_all = pl.DataFrame(st.fill_rows, schema={"instrument": pl.String(), **_raw_schema()})
        samples_all = pl.DataFrame(st.sample_rows, schema={"instrument": pl.String(), "ts": pl.Int64(), "mid": pl.Float64()})
        for s in symbols:
            iid = nt[s].id.value
            runs[s] = EngineRun(fills=fills_all.filter(pl.col("instrument") == iid).drop("instrument").sort("ts", maintain_order=True),
                                samples=samples_all.filter(pl.col("instrument") == iid).drop("instrument"),
                                engine="nautilus_trader", engine_version=version, events=ticks_of[s], wall_s=wall,
                                starting_cash=starting_cash, quote_currency=nt[s].quote_currency.code,
                                fidelity=stats[s].fidelity)
        account_events = list(st.account_events)
        counters["orders_refused_leverage"] = int(st.orders_refused)
        counters["liquidations"] = len(account_events)
        st.release_records()
    else:
        by_id = {st.instrument_id.value: st for st in strategies}
        for s in symbols:
            st = by_id.get(nt[s].id.value)
            samples = (pl.DataFrame({"ts": st.sample_ts, "mid": st.sample_mid}, schema={"ts": pl.Int64(), "mid": pl.Float64()})
                       if st is not None else pl.DataFrame(schema={"ts": pl.Int64(), "mid": pl.Float64()}))
            runs[s] = EngineRun(fills=raw_fills(st.fill_rows) if st is not None else raw_fills(), samples=samples,
                                engine="nautilus_trader", engine_version=version, events=ticks_of[s], wall_s=wall,
                                starting_cash=starting_cash, quote_currency=nt[s].quote_currency.code,
                                fidelity=stats[s].fidelity, account_events=list(st.account_events) if st else [],
                                counters={"orders_refused_leverage": int(st.orders_refused)} if st else {})
            if st is not None:
                account_events += [{**e, "instrument": s} for e in st.account_events]
                counters["orders_refused_leverage"] += int(st.orders_refused)
                st.release_records()
        counters["liquidations"] = len(account_events)
    for v in venues:
        p = profiles[v]
        notes.append(f"{v}: one NautilusTrader MARGIN account (cross-margined) for "
                     f"{', '.join(s for s in symbols if profile_of[s] is p)}; venue profile {p.label}")
    if len(venues) > 1:
        notes.append(f"{len(venues)} venues: NautilusTrader keeps one account per venue; the account result sums them")
    kinds = {m.instrument.kind for m in members}
    if "spot" in kinds and kinds & {"perpetual", "future"}:
        notes.append("spot and derivatives share one margin account: a real venue keeps spot and futures wallets apart, "
                     "and a spot short would pay a borrow rate this simulation does not charge")
    return MultiRun(runs, events, wall, version, starting_cash, nt[symbols[0]].quote_currency.code, notes,
                    account_events, counters)


def _raw_schema() -> dict[str, pl.DataType]:
    from quant_assets.engines.result import RAW_FILL_SCHEMA

    return {**RAW_FILL_SCHEMA, "reason": pl.String()}


def _drop(engine) -> None:
    """Forget an engine a run left in an unknown state."""
    for key, (cached, _) in list(_engines.items()):
        if cached is engine:
            del _engines[key]
    engine.dispose()


@dataclass(frozen=True)
class MultiResult:
    """The stored tables of a multi-instrument run, each with an ``instrument`` column first:
    ``fills`` (:data:`~quant_assets.engines.result.FILL_SCHEMA`), ``equity``
    (:data:`~quant_assets.engines.result.EQUITY_SCHEMA`; members' rows and the account's rows
    under :data:`ACCOUNT`, whose ``position`` and ``mid`` are null: base units of different
    instruments do not add), ``cashflows`` (funding, insurance), ``funding`` (the settlement of
    each perpetual member, :data:`~quant_assets.funding.settle.SETTLEMENT_SCHEMA`), and per member
    its funding summary (:func:`~quant_assets.funding.settle.funding_summary`)."""

    fills: pl.DataFrame
    equity: pl.DataFrame
    cashflows: pl.DataFrame
    funding: pl.DataFrame
    funding_summary: dict[str, dict[str, Any]]

    def member(self, symbol: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(fills, equity, cashflows) of one member in the single-instrument format."""
        pick = lambda df: df.filter(pl.col("instrument") == symbol).drop("instrument")  # noqa: E731
        return pick(self.fills), pick(self.equity), pick(self.cashflows)


def finalize_multi(run: MultiRun, members: list[Member]) -> MultiResult:
    """Settle each perpetual member's funding on its own fills and samples and finalise it as the
    single-instrument runner does (:func:`quant_assets.engines.runner.simulate`), then stack the
    members and add the account's equity: starting cash + the sum of the members' PnL (equity -
    starting cash), each member's taken at its last sample at or before the account's sample time
    (0 before its first: it starts flat)."""
    from quant_assets.funding.schema import is_perpetual
    from quant_assets.funding.settle import SETTLEMENT_SCHEMA, funding_summary, settle_funding

    fills, equities, flows, settlements, summaries = [], [], [], [], {}
    for m in members:
        r = run.runs[m.symbol]
        rows = m.funding if is_perpetual(m.symbol) else None
        annotated = annotate_fills(r.fills)
        settlement = settle_funding(annotated, r.samples, rows)
        summaries[m.symbol] = funding_summary(m.symbol, settlement, rows)
        cash = settlement.select("ts", kind=pl.lit("funding"), amount=pl.col("amount").fill_null(0.0))
        f, e, c = finalize_with_flows(r, cash, annotated)
        tag = lambda df: df.select(pl.lit(m.symbol).alias("instrument"), pl.all())  # noqa: E731
        fills.append(tag(f))
        equities.append(tag(e))
        flows.append(tag(c))
        if is_perpetual(m.symbol):
            settlements.append(tag(settlement))
    start = run.starting_cash
    member_eq = pl.concat(equities)
    grid = member_eq.select(pl.col("ts").unique().sort())
    pnl = grid.with_columns(pnl=pl.lit(0.0), cash=pl.lit(0.0))
    for e in equities:
        joined = grid.join_asof(e.select("ts", "equity", "cash").sort("ts"), on="ts", strategy="backward")
        pnl = pnl.with_columns(pnl=pl.col("pnl") + (joined["equity"] - start).fill_null(0.0),
                               cash=pl.col("cash") + (joined["cash"] - start).fill_null(0.0))
    account = pnl.select(
        instrument=pl.lit(ACCOUNT), ts="ts", equity=start + pl.col("pnl"), position=pl.lit(None, pl.Float64()),
        mid=pl.lit(None, pl.Float64()), cash=start + pl.col("cash"),
    )
    equity = pl.concat([member_eq, account]).cast({"instrument": pl.String(), **EQUITY_SCHEMA})
    return MultiResult(
        fills=pl.concat(fills).cast({"instrument": pl.String(), **FILL_SCHEMA}),
        equity=equity,
        cashflows=pl.concat(flows).cast({"instrument": pl.String(), **CASHFLOW_SCHEMA}),
        funding=(pl.concat(settlements) if settlements
                 else pl.DataFrame(schema={"instrument": pl.String(), **SETTLEMENT_SCHEMA})),
        funding_summary=summaries,
    )
