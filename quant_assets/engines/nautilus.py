"""NautilusTrader 1.221 adapter: canonical ticks in, :class:`EngineRun` out.

The low-level ``BacktestEngine`` is fed straight from the partition's Parquet in chunks of
``chunk_rows`` rows (``add_data`` → ``run(streaming=True)`` → ``clear_data``, then ``end``), so
memory stays bounded whatever the month's size. Ticks are built with
``QuoteTick/TradeTick.from_raw_arrays_to_list`` (vectorised; no per-row Python), with
``ts_event`` = exchange time and ``ts_init`` = ``ts_recv`` (the engine's clock). One engine per
process is reused with ``reset()`` across slices: a fresh engine per run costs start-up time
and leaks a few MB.

The venue: one simulated exchange per instrument venue, NETTING OMS, a MARGIN account holding
only the quote currency (so cash and PnL are in quote currency), an L1 book from the quotes,
resting limit orders also filled by trades (``trade_execution=True``), maker/taker fees from
the instrument. Strategies close out at the month's last quote (see ``nautilus_base``).

The venue profile (:mod:`quant_assets.venues.profile`; None means
:func:`~quant_assets.venues.profile.frictionless` for the instrument's venue × kind, the runner
always passes the slice's own) sets, before each run of the cached engine:

* the order entry latency as a ``LatencyModel(base_latency_nanos=entry)``: NautilusTrader adds
  the base to its insert, update and cancel latencies (each 0 here), so submit, modify and
  cancel all take the entry latency. A command sent at ``t`` reaches the matching engine when
  the engine's clock first reaches ``t + latency`` (the next data point or timer at or after
  it), so a market order fills at the first quote at or after ``t + latency``. There is no
  response latency in 1.221 (fills reach the strategy at once): the notes say so. A zero
  latency runs with no latency model at all, on an engine of its own: NautilusTrader has no way
  to remove one, and a zero-latency model still defers a command sent while another is being
  processed (an exit sent from a fill handler) to the next data point, unlike no model.
  With latency, copies of the last quote follow the data at ``k × latency`` (k = 1..
  :data:`END_MARKERS`) so the month's closing orders still reach the book (at the last touch);
* the fill model (:class:`~quant_assets.engines.nautilus_fills.VenueFillModel`): limit fills at
  the touch with ``prob_fill_on_limit``, slippage of market-type orders with ``prob_slippage``,
  both seeded by ``fill_seed``, and a stop the market gapped through filled at the next touch
  (``stop_fill = "next_touch"``) instead of at its trigger;
* the size of a quote without sizes (FX files, quotes made from trades): the profile's
  ``synthetic_depth`` (quote currency) in base units at the slice's first price, at least a lot
  (:mod:`quant_assets.engines.depth`), instead of an infinitely deep touch.
"""

from __future__ import annotations

import importlib
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from quant_assets.engines import depth
from quant_assets.engines.account import AccountRules
from quant_assets.engines.fidelity import TRADES_ONLY, TRADES_ONLY_HALF_SPREAD_BPS, assumption
from quant_assets.engines.inputs import inspect_ticks
from quant_assets.engines.result import EngineRun, raw_fills
from quant_assets.engines.warmup import WarmupFeed

if TYPE_CHECKING:
    from quant_assets.book.read import BookSlice
from quant_assets.lake.instruments import Instrument
from quant_assets.venues import latency as venue_latency
from quant_assets.venues import profile as venue_profiles
from quant_assets.venues.profile import VenueProfile

#: Rows per chunk fed to the engine: ~250k ticks keeps the engine's working set near 0.5 GB
#: (measured in ../shared/STACK.md) while the per-chunk overhead stays negligible.
CHUNK_ROWS = 250_000
COLUMNS = ["ts_event", "ts_recv", "kind", "bid_px", "bid_sz", "ask_px", "ask_sz", "price", "size", "side", "trade_id"]

#: Copies of the last quote fed after the data when orders have latency: the flatten's cancel
#: and close, and up to two closes answering fills that raced them, reach the book.
END_MARKERS = 3
#: At most this many closing rounds after the data on a depth book (see run_nautilus).
DEPTH_END_MARKERS = 32

#: The process's engines: (venue, quote currency, starting cash, with a latency model, book type:
#: 1 L1_MBP, 2 L2_MBP, 3 L3_MBO) -> (BacktestEngine, its SimulatedExchange). A venue's book type is
#: fixed when it is added, so a depth run gets an engine of its own.
_engines: dict[tuple[str, str, float, bool, int], tuple[Any, Any]] = {}


def _currency(code: str):
    from nautilus_trader.model.currencies import Currency
    from nautilus_trader.model.enums import CurrencyType

    known = Currency.from_str(code, strict=True) if code.isalnum() else None
    if known is not None:
        return known
    # Unknown codes (a synthetic or exotic symbol) get a crypto-style currency of 8 decimals.
    return Currency(code, 8, 0, code, CurrencyType.CRYPTO)


def nautilus_instrument(inst: Instrument):
    """The NautilusTrader instrument for our record (fees as fractions of notional; a negative
    maker fee is a rebate, which ``MakerTakerFeeModel`` turns into a negative commission).

    ``spot``/``fx`` -> ``CurrencyPair``; ``perpetual`` -> ``CryptoPerpetual`` (linear: settled in
    the quote currency, ``is_inverse=False``, as Binance USD-M); ``future`` -> ``CryptoFuture``
    expiring at 08:00 UTC of its date (Binance's delivery time). The instrument id is the
    partition symbol at the venue (``BTCUSDT-PERP.BINANCE``), ``raw_symbol`` the venue's name
    (``BTCUSDT``). Derivatives carry margin from the venue × kind settings: initial margin
    1 / max_leverage, maintenance the configured rate (fractions of notional); spot and FX keep
    none, so their results are unchanged by margin settings."""
    from datetime import datetime, time as dtime, timezone

    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
    from nautilus_trader.model.instruments import CryptoFuture, CryptoPerpetual, CurrencyPair
    from nautilus_trader.model.objects import Price, Quantity

    from quant_assets.lake.identity import expiry_of, pair_of
    from quant_assets.lake.instruments import margin_for

    iid = InstrumentId(Symbol(inst.symbol), Venue(inst.venue))
    base = _currency(inst.base_currency if inst.base_currency != "?" else pair_of(inst.symbol)[:3])
    quote = _currency(inst.quote_currency if inst.quote_currency != "?" else "USD")
    common = dict(
        instrument_id=iid,
        raw_symbol=Symbol(inst.raw_symbol),
        quote_currency=quote,
        price_precision=inst.price_precision,
        size_precision=inst.size_precision,
        price_increment=Price(inst.tick_size, inst.price_precision),
        size_increment=Quantity(inst.lot_size, inst.size_precision),
        ts_event=0,
        ts_init=0,
        maker_fee=Decimal(str(inst.maker_fee)),
        taker_fee=Decimal(str(inst.taker_fee)),
    )
    if inst.kind in ("spot", "fx"):
        return CurrencyPair(base_currency=base, margin_init=Decimal("0"), margin_maint=Decimal("0"), **common)
    leverage, maintenance = margin_for(inst)
    margin = dict(margin_init=Decimal(str(round(1.0 / leverage, 10))), margin_maint=Decimal(str(maintenance)))
    if inst.kind == "perpetual":
        return CryptoPerpetual(base_currency=base, settlement_currency=quote, is_inverse=False, **margin, **common)
    expiry = expiry_of(inst.symbol) or expiry_of(inst.raw_symbol)
    if expiry is None:
        raise ValueError(f"{inst.symbol}: a future needs an expiry in its symbol (<pair>-YYMMDD)")
    expiration_ns = int(datetime.combine(expiry, dtime(8), tzinfo=timezone.utc).timestamp()) * 1_000_000_000
    return CryptoFuture(underlying=base, settlement_currency=quote, is_inverse=False, activation_ns=0,
                        expiration_ns=expiration_ns, **margin, **common)


def engine_config():
    """The ``BacktestEngineConfig`` of every engine of ours (single- and multi-instrument runs
    alike, so a member of a multi-instrument run sees the same engine settings)."""
    from nautilus_trader.cache.config import CacheConfig
    from nautilus_trader.config import BacktestEngineConfig, DataEngineConfig, LoggingConfig, RiskEngineConfig

    return BacktestEngineConfig(
        logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
        cache=CacheConfig(drop_instruments_on_reset=True, tick_capacity=1_000, bar_capacity=10),
        # Our strategies size every order themselves; the default 100 orders/s throttle
        # would reject legitimate bursts of a fast strategy on busy seconds.
        risk_engine=RiskEngineConfig(bypass=True),
        # Time bars as the research layer builds them (quant_assets.research.bars): left-open
        # (a tick on a boundary is processed before the boundary's timer), stamped at their
        # close, and absent where no quote arrived (no bar repeating the last close).
        data_engine=DataEngineConfig(time_bars_interval_type="left-open", time_bars_timestamp_on_close=True,
                                     time_bars_build_with_no_updates=False),
        run_analysis=False,
    )


def _engine(instrument, starting_cash: float, latency_ns: int = 0, book_type: Any = None):
    """(engine, exchange): the process's engine for this venue, quote currency, cash and
    ``book_type`` (NautilusTrader ``BookType``; default L1_MBP), reset for a new run, with the
    order latency ``latency_ns`` (ns; 0: no latency model, on an engine of its own, see the module
    docstring)."""
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.backtest.models import FillModel, LatencyModel, MakerTakerFeeModel
    from nautilus_trader.model.enums import AccountType, BookType, OmsType
    from nautilus_trader.model.objects import Money

    from quant_assets.engines.nautilus_fills import ExchangeHandle

    book_type = BookType.L1_MBP if book_type is None else book_type
    venue = instrument.id.venue
    key = (venue.value, instrument.quote_currency.code, starting_cash, latency_ns > 0, int(book_type))
    cached = _engines.get(key)
    if cached is not None:
        engine, exchange = cached
        engine.reset()
        engine.clear_strategies()
        engine.clear_data()
    else:
        engine = BacktestEngine(engine_config())
        engine.add_venue(
            venue=venue,
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            base_currency=instrument.quote_currency,
            starting_balances=[Money(starting_cash, instrument.quote_currency)],
            fill_model=FillModel(),  # replaced by the profile's before each run
            fee_model=MakerTakerFeeModel(),
            latency_model=LatencyModel(base_latency_nanos=latency_ns) if latency_ns > 0 else None,
            book_type=book_type,
            modules=[handle := ExchangeHandle()],
            trade_execution=True,
        )
        exchange = handle.exchange
        # The handle has done its job: out of the module list, it costs no call per data point.
        exchange.modules.remove(handle)
        _engines[key] = (engine, exchange)
    if latency_ns > 0:
        exchange.set_latency_model(LatencyModel(base_latency_nanos=latency_ns))
    engine.add_instrument(instrument)
    return engine, exchange


def _discard(engine) -> None:
    """Forget ``engine`` (an engine a run left in an unknown state) and release it."""
    for key, (cached, _) in list(_engines.items()):
        if cached is engine:
            del _engines[key]
    engine.dispose()


def trade_quotes(price: np.ndarray, tick: float, half_spread_bps: float = TRADES_ONLY_HALF_SPREAD_BPS) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) made from trade prices on trades-only data: ± ``half_spread_bps`` of the price,
    at least one tick, rounded outwards to the tick grid (quote currency)."""
    h = np.maximum(price * half_spread_bps / 1e4, tick)
    bid = np.floor((price - h) / tick + 1e-9) * tick
    ask = np.ceil((price + h) / tick - 1e-9) * tick
    return bid, ask


class _SliceInfo:
    """What :func:`_chunks` learns while it reads the slice: the first price (quote currency;
    the first quote's mid, or the first trade's price on trades-only data), the synthetic depth
    it gave size-less quotes (base units), how many quote sides had no size, and the last quote
    fed to the engine (for the end markers)."""

    def __init__(self) -> None:
        self.first_price: float | None = None
        self.synthetic_qty: float | None = None
        self.sizeless_quotes = 0
        self.made_quotes = 0
        self.last_quote = None
        self.last_ts = 0  # ts_init (ns) of the last data point fed


def _first_price(df: pl.DataFrame) -> float | None:
    q = df.filter((pl.col("kind") == "quote") & pl.col("bid_px").is_not_null() & pl.col("ask_px").is_not_null()).head(1)
    if q.height:
        return float((q["bid_px"][0] + q["ask_px"][0]) / 2.0)
    t = df.filter((pl.col("kind") == "trade") & pl.col("price").is_not_null()).head(1)
    return float(t["price"][0]) if t.height else None


def _chunks(path: Path, instrument, chunk_rows: int, trades_only: bool = False, profile: VenueProfile | None = None,
            info: _SliceInfo | None = None, from_ts: int | None = None):
    """Yield (data list in file order, events, each data point's ts_init in ns) per chunk; quotes
    and trades interleaved as in
    the file, so ``add_data(..., sort=False)`` keeps the canonical (ts_recv, seq) order. With
    ``trades_only`` each trade is followed by a quote made from it (:func:`trade_quotes`) at the
    same timestamps: the strategies' only view of the market. A quote side without a size (and
    every made quote) shows the ``profile``'s synthetic depth (base units at the slice's first
    price, recorded in ``info``). ``from_ts``: only ticks with ``ts_recv >= from_ts`` (ns; the
    warm-up tail of the previous month), reading only the row groups that can hold them."""
    import pyarrow.parquet as pq
    from nautilus_trader.model.data import QuoteTick, TradeTick

    info = info if info is not None else _SliceInfo()
    profile = profile or venue_profiles.frictionless(instrument.id.venue.value, "spot")
    iid = instrument.id
    pp, sp = instrument.price_precision, instrument.size_precision
    lot = instrument.size_increment.as_double()
    pf = pq.ParquetFile(path)
    groups = None
    if from_ts is not None:
        col = pf.schema_arrow.get_field_index("ts_recv")
        groups = [i for i in range(pf.num_row_groups)
                  if (st := pf.metadata.row_group(i).column(col).statistics) is None or not st.has_min_max or st.max >= from_ts]
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=COLUMNS, row_groups=groups):
        df = pl.from_arrow(batch)
        if from_ts is not None:
            df = df.filter(pl.col("ts_recv") >= from_ts)
            if not df.height:
                continue
        info.last_ts = max(info.last_ts, int(df["ts_recv"].max()))
        if info.first_price is None:
            info.first_price = _first_price(df)
            if info.first_price is not None:
                info.synthetic_qty = depth.synthetic_qty(profile, info.first_price, lot, sp)
        is_quote = (df["kind"] == "quote").to_numpy()
        out = np.empty(len(df), dtype=object)
        q = df.filter(pl.Series(is_quote))
        if len(q):
            sizeless = q.select(pl.col("bid_sz").is_null().sum() + pl.col("ask_sz").is_null().sum()).item()
            if sizeless:
                # FX quote feeds often carry no sizes: the touch shows the declared depth.
                info.sizeless_quotes += int(sizeless)
                q = q.with_columns(pl.col("bid_sz", "ask_sz").fill_null(info.synthetic_qty))
            out[is_quote] = QuoteTick.from_raw_arrays_to_list(
                iid, pp, sp,
                q["bid_px"].to_numpy(writable=True), q["ask_px"].to_numpy(writable=True),
                q["bid_sz"].to_numpy(writable=True), q["ask_sz"].to_numpy(writable=True),
                q["ts_event"].to_numpy().astype(np.uint64), q["ts_recv"].to_numpy().astype(np.uint64),
            )
            info.last_quote = out[np.flatnonzero(is_quote)[-1]]
        t = df.filter(~pl.Series(is_quote))
        made = None
        if trades_only and len(t):
            bid, ask = trade_quotes(t["price"].to_numpy(), instrument.price_increment.as_double())
            deep = np.full(len(t), info.synthetic_qty)
            made = QuoteTick.from_raw_arrays_to_list(
                iid, pp, sp, bid, ask, deep, deep.copy(),
                t["ts_event"].to_numpy().astype(np.uint64), t["ts_recv"].to_numpy().astype(np.uint64),
            )
            info.made_quotes += len(made)
            info.last_quote = made[-1]
        if len(t):
            # AggressorSide: 1 buyer, 2 seller, 0 none; our side is +1 / -1 / null.
            aggressor = t["side"].fill_null(0).to_numpy().astype(np.int64)
            aggressor = np.where(aggressor > 0, 1, np.where(aggressor < 0, 2, 0)).astype(np.uint8)
            ids = t.select(
                pl.when(pl.col("trade_id").is_null() | (pl.col("trade_id") == ""))
                .then(pl.lit("T") + pl.col("ts_recv").cast(pl.String))
                .otherwise(pl.col("trade_id").str.slice(0, 36))  # TradeId allows at most 36 chars
            ).to_series().to_list()
            out[~is_quote] = TradeTick.from_raw_arrays_to_list(
                iid, pp, sp,
                t["price"].to_numpy(writable=True), t["size"].to_numpy(writable=True),
                aggressor, ids,
                t["ts_event"].to_numpy().astype(np.uint64), t["ts_recv"].to_numpy().astype(np.uint64),
            )
        if made is not None:
            # The trade first, then the quote it implies: a strategy never sees a price before it traded.
            trade_rows = out[~is_quote].tolist()
            merged = [x for pair in zip(trade_rows, made) for x in pair]
            yield merged, len(df), np.repeat(t["ts_recv"].to_numpy(), 2)
            continue
        yield out.tolist(), len(df), df["ts_recv"].to_numpy()


def end_markers(last_quote, last_ts: int, latency_ns: int, n: int = END_MARKERS) -> list:
    """``n`` copies of ``last_quote`` at ``last_ts + k × latency_ns`` (k = 1..n; ns): after the
    data the market stays at its last touch while the month's closing orders are in flight."""
    from nautilus_trader.model.data import QuoteTick

    q = last_quote
    return [
        QuoteTick(q.instrument_id, q.bid_price, q.ask_price, q.bid_size, q.ask_size, last_ts + k * latency_ns, last_ts + k * latency_ns)
        for k in range(1, n + 1)
    ]


def load_strategy_class(impl: str):
    module, _, attr = impl.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_nautilus(
    ticks_path: Path,
    instrument: Instrument,
    impl: str,
    params: dict[str, Any],
    starting_cash: float = 100_000.0,
    chunk_rows: int = CHUNK_ROWS,
    rules: AccountRules | None = None,
    profile: VenueProfile | None = None,
    warmup: WarmupFeed | None = None,
    trade_from_ns: int | None = None,
    book: BookSlice | None = None,
) -> EngineRun:
    """Backtest one partition with the strategy class named by ``impl`` and its resolved
    ``params`` under the account ``rules`` (default: 1x, no maintenance margin) and the venue
    ``profile`` (order latency, fill model, synthetic depth; default:
    :func:`~quant_assets.venues.profile.frictionless` for the instrument's venue × kind, i.e.
    no latency), after the ``warmup`` feed (the previous month's end, indicators only; the
    strategy then waits until it has seen the declared count of inputs; default: none). Data
    before ``trade_from_ns`` (default: the file's first tick) only warms the indicators. With a
    ``book`` (the slice's depth, passed for strategies that declare depth) the venue's book is
    L2_MBP (L3_MBO for depth-L3) built from the book's day files, streamed and merged with the
    ticks (:mod:`quant_assets.engines.nautilus_book`); without one, the L1 book of the quotes.
    Raises :class:`~quant_assets.engines.inputs.BacktestInputError` for a partition that cannot be
    backtested (no quotes, off-grid prices, a malformed book day file)."""
    import nautilus_trader

    from quant_assets.engines import nautilus_book
    from quant_assets.engines.nautilus_fills import VenueFillModel
    from quant_assets.strategies.nautilus_base import RecordedStrategyConfig

    rules = rules or AccountRules(starting_cash)
    profile = profile if profile is not None else venue_profiles.frictionless(instrument.venue, instrument.kind)

    stats = inspect_ticks(ticks_path, instrument, engine="nautilus")
    trades_only = stats.fidelity == TRADES_ONLY
    latency_ns, latency_note = venue_latency.nautilus_entry_ns(profile)
    t0 = time.perf_counter()
    nt_inst = nautilus_instrument(instrument)
    book_type = nautilus_book.book_type_of(book.level) if book is not None else None
    engine, exchange = _engine(nt_inst, starting_cash, latency_ns, book_type)
    cls = load_strategy_class(impl)
    strategy = cls(
        RecordedStrategyConfig(
            instrument_id=nt_inst.id,
            params=params,
            flatten_at_ns=int(stats.last_signal_ts),
            equity_interval_ns=int(float(params.get("equity_interval_s", 60.0)) * 1e9),
            starting_cash=float(starting_cash),
            max_leverage=float(rules.max_leverage),
            maintenance_margin=float(rules.maintenance_margin),
            trade_from_ns=int(stats.first_ts if trade_from_ns is None else trade_from_ns),
            warmup_inputs=int(warmup.declared.count) if warmup is not None else 0,
            depth=book is not None,
        )
    )
    engine.add_strategy(strategy)
    # Built per run: its constructor seeds the random draws (FillModel uses the global `random`).
    fills_model = VenueFillModel(profile.prob_fill_on_limit, profile.prob_slippage, profile.fill_seed,
                                 next_touch=profile.stop_fill == "next_touch", exchange=exchange, depth=book is not None)
    engine.change_fill_model(nt_inst.id.venue, fills_model)
    if warmup is not None and warmup.feeds:
        # The previous month's end: its own slice info, so nothing of the month (first price,
        # synthetic depth, last quote) comes from it.
        for data, _, _ in _chunks(warmup.path, nt_inst, chunk_rows, trades_only, profile, _SliceInfo(), from_ts=warmup.from_ts):
            engine.add_data(data, validate=False, sort=False)
            engine.run(streaming=True)
            engine.clear_data()
    events = 0
    info = _SliceInfo()
    ticks = _chunks(ticks_path, nt_inst, chunk_rows, trades_only, profile, info)
    book_stats = None
    if book is None:
        for data, n, _ in ticks:
            engine.add_data(data, validate=False, sort=False)
            engine.run(streaming=True)
            engine.clear_data()
            events += n
    else:
        book_stats = nautilus_book.BookStats(book.level)
        tick_rows = [0]

        def tick_parts():
            for data, n, ts in ticks:
                tick_rows[0] += n
                yield np.fromiter(data, dtype=object, count=len(data)), ts

        parts = nautilus_book.book_parts(book.days, nt_inst, book.level, book_stats, rows=chunk_rows)
        try:
            for data in nautilus_book.merge_by_time(parts, tick_parts()):
                engine.add_data(data, validate=False, sort=False)
                engine.run(streaming=True)
                engine.clear_data()
        except BaseException:
            # A malformed day file is found while the run streams: this engine stopped mid-run,
            # so it is not reused (the next run of the key builds a fresh one).
            _discard(engine)
            raise
        events = tick_rows[0] + book_stats.deltas
        # The end markers follow the last data point, book messages included.
        info.last_ts = max(info.last_ts, book_stats.last_ts)
    end_rounds = 0
    if book is not None and info.last_quote is not None:
        # On a depth book the month's closing market order (immediate-or-cancel) fills only what
        # the recorded levels hold; what is left is closed again at each marker, one order
        # latency (at least 1 ns) apart, against the book as the data left it (NautilusTrader's
        # L2 matching does not remove our fills from the recorded book), until flat.
        step = max(latency_ns, 1)
        for k in range(DEPTH_END_MARKERS):
            if abs(strategy.position_qty()) < nt_inst.size_increment.as_double() / 2:
                break
            engine.add_data(end_markers(info.last_quote, info.last_ts + k * step, step, n=1), validate=False, sort=False)
            engine.run(streaming=True)
            engine.clear_data()
            end_rounds = k + 1
    elif latency_ns > 0 and info.last_quote is not None:
        engine.add_data(end_markers(info.last_quote, info.last_ts, latency_ns), validate=False, sort=False)
        engine.run(streaming=True)
        engine.clear_data()
    engine.end()
    wall = time.perf_counter() - t0

    notes = []
    fills = raw_fills(strategy.fill_rows)
    samples = pl.DataFrame({"ts": strategy.sample_ts, "mid": strategy.sample_mid}, schema={"ts": pl.Int64(), "mid": pl.Float64()})
    left = strategy.position_qty()
    account_events = list(strategy.account_events)
    counters = {"orders_refused_leverage": int(strategy.orders_refused), "liquidations": len(account_events)}
    for name in ("protective_exits", "max_hold_exits"):
        if hasattr(strategy, name):
            counters[name] = int(getattr(strategy, name))
    # The engine keeps references to strategies it ran even after clear_strategies(); drop the
    # recorded lists so a process running many slices does not keep every month's samples.
    strategy.release_records()
    notes += venue_notes(profile, latency_ns, latency_note, fills_model.stops_at_touch, depth=book is not None)
    if book_stats is not None:
        notes += nautilus_book.notes(book_stats, book_type.name, profile.prob_slippage)
        counters["book_deltas"] = book_stats.deltas
        counters["book_messages"] = book_stats.messages
        counters["book_days"] = book_stats.days
        counters["market_rests_cancelled"] = int(strategy.market_rests_cancelled)
        counters["end_close_rounds"] = end_rounds
        if strategy.market_rests_cancelled:
            notes.append(f"{strategy.market_rests_cancelled} market order(s) met a book side too thin for them: "
                         "the rest was cancelled (market orders are immediate-or-cancel on a depth book)")
    if warmup is not None and warmup.status != "none":
        notes.append(f"warm-up ({warmup.declared.describe()}): {warmup.reason}")
    base, quote = nt_inst.base_currency.code, nt_inst.quote_currency.code
    if trades_only:
        notes.append(assumption(TRADES_ONLY))
    if info.synthetic_qty is not None and (info.sizeless_quotes or info.made_quotes):
        what = (f"{info.made_quotes} quote(s) made from trades" if info.made_quotes
                else f"{info.sizeless_quotes} quote side(s) without a size")
        notes.append(depth.note(info.synthetic_qty, profile, float(info.first_price), base, quote, what))
    if abs(left) > 0:
        notes.append(f"position {left} left after the last quote; closed by the adapter at the last touch")
    return EngineRun(
        fills=fills, samples=samples, engine="nautilus_trader", engine_version=nautilus_trader.__version__,
        events=events, wall_s=wall, starting_cash=starting_cash, quote_currency=nt_inst.quote_currency.code, notes=notes,
        account_events=account_events, counters=counters, fidelity=book.level if book is not None else stats.fidelity,
    )


def venue_notes(profile: VenueProfile, latency_ns: int, latency_note: str | None, stops_at_touch: int,
                depth: bool = False) -> list[str]:
    """What a run's notes say about the venue profile it ran under (``depth``: on a depth book,
    where triggered stops walk the book and ``stop_fill`` does not apply)."""
    out = []
    if latency_ns > 0:
        out.append(f"order entry latency {latency_ns / 1e6:g} ms on submit, modify and cancel "
                   f"(NautilusTrader LatencyModel; venue profile {profile.label})")
    if latency_note:
        out.append(latency_note)
    if profile.response_latency_ms * profile.latency_scale > 0:
        out.append(f"NautilusTrader 1.221 has no response latency: fills and acknowledgements reach the strategy at once "
                   f"(the profile's {profile.response_latency_ms * profile.latency_scale:g} ms response latency is not modelled)")
    if stops_at_touch:
        out.append(f"{stops_at_touch} triggered stop(s) filled at the touch of the quote or trade that triggered them "
                   "(stop_fill = next_touch), not at their trigger price")
    if profile.stop_fill == "trigger" and not depth:
        out.append("stops fill at their trigger price (stop_fill = trigger): optimistic by any gap the market jumped")
    return out
