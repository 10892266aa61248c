"""hftbacktest 2.4.4 adapter: a canonical ticks partition in, :class:`EngineRun` out.

The partition is read once (the needed columns), converted to hftbacktest events
(:mod:`quant_assets.engines.hft_events`: L1 quotes as depth events on a one-level book, trades
with their aggressor side), and replayed through ``HashMapMarketDepthBacktest`` with one asset:

* ``linear_asset(1.0)``: PnL in the quote currency, one unit of base per unit of qty;
* the order latency of the venue profile (:mod:`quant_assets.venues.profile`): a constant one
  as ``constant_order_latency(entry, response)`` (ns), a lognormal or recorded one as
  ``intp_order_latency`` over the table :func:`quant_assets.venues.latency.hft_rows` builds
  for the slice (kept alive, like the event array, until ``close()``: hftbacktest reads it in
  place);
* the profile's queue model (``risk_adverse``, ``power_prob``/``2``/``3`` with
  ``queue_power``, ``log_prob``/``2``) with ``partial_fill_exchange``;
* ``tick_size``/``lot_size`` and ``trading_value_fee_model(maker_fee, taker_fee)`` from the
  instrument (fees as fractions of traded value, in the quote currency);
* no ``last_trades_capacity``: the strategy does not read market trades (they still fill its
  orders in the exchange model).

The event array gets an end-marker row at least one hour (and 1000 of the profile's longest
order round trips) after the last tick, so the close-out at the last tick runs at real
timestamps (hftbacktest stops its clock when the data runs out). A quote side without a size
(FX feeds) gets the profile's ``synthetic_depth`` (quote currency) in base units at the first
mid (:mod:`quant_assets.engines.depth`). No profile means
:func:`~quant_assets.venues.profile.frictionless` for the instrument's venue × kind (no
latency); the runner always passes the slice's own profile.

The strategy is the numba loop :func:`quant_assets.strategies.market_maker.market_maker_loop`;
its fills (with fee = maker or taker fee × price × qty) and mid samples become the
:class:`EngineRun`. The month ends flat: at the last event the loop cancels its orders and
closes any inventory with an IOC at the touch; what the touch cannot absorb is a synthetic taker
fill at the touch with order id ``flatten-eod`` (see the loop's docstring).

Input errors (all :class:`~quant_assets.engines.inputs.BacktestInputError`, a ``ValueError``
naming the file and the reason, raised before the engine starts): the file is missing; it has
fewer than two quotes (no ticks at all, a single tick, only trades); a price is off the
instrument's tick grid (by more than 1e-6 tick). A valid partition on which the strategy never
trades returns an empty fills frame and its equity samples: that is an honest result.

hftbacktest and numba are imported inside the functions, so importing this module stays cheap.
The numba functions are module-level in their own modules, so they compile once per process
and later runs reuse them: ~9-11 s on the development VM, mostly the strategy loop and
hftbacktest's jitclasses, which numba cannot cache on disk (they call hftbacktest through
ctypes pointers); the conversion kernel is cached.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from quant_assets.engines.account import REASON_FLATTEN, REASON_LIQUIDATION, AccountRules
from quant_assets.engines.inputs import BacktestInputError, check_memory, inspect_ticks
from quant_assets.engines.result import RAW_FILL_SCHEMA, SAMPLE_SCHEMA, EngineRun
from quant_assets.engines import depth
from quant_assets.lake.instruments import Instrument
from quant_assets.venues import latency as venue_latency
from quant_assets.venues import profile as venue_profiles
from quant_assets.venues.profile import VenueProfile

if TYPE_CHECKING:
    from quant_assets.book.read import BookSlice

ENGINE = "hftbacktest"
ENGINE_VERSION = "2.4.4"
#: Peak memory of a run per tick of the month (its columns, the local and exchange event
#: arrays, hftbacktest's copies) and fixed (numba code, the engine): measured with
#: bench/hardening_bench.py at about 370 B/tick over ~250 MiB; rounded up for margin.
HFT_BYTES_PER_TICK = 450
HFT_FIXED_BYTES = 300 << 20
#: Order id of the synthetic closing fill in the result.
FLATTEN_ORDER_ID = "flatten-eod"
NS_PER_MS = 1_000_000
#: Smallest constant order latency given to hftbacktest (see build_backtest).
MIN_LATENCY_NS = 1
NS_PER_S = 1_000_000_000
#: Initial fill buffer of the loop (it doubles as needed).
FILL_CAPACITY = 1 << 14
#: ``VenueProfile.queue_model`` -> the ``BacktestAsset`` method that sets it (hftbacktest 2.4.4);
#: those :data:`~quant_assets.venues.profile.QUEUE_MODELS` marks take ``queue_power``.
QUEUE_METHODS = {
    "risk_adverse": "risk_adverse_queue_model", "power_prob": "power_prob_queue_model",
    "power_prob2": "power_prob_queue_model2", "power_prob3": "power_prob_queue_model3",
    "log_prob": "log_prob_queue_model", "log_prob2": "log_prob_queue_model2",
}


@dataclass(frozen=True)
class EngineState:
    """What hftbacktest itself reports at the end of a run, next to the recorded fills.

    ``position`` (base units) and ``balance``/``fee`` (quote currency; balance is the cash flow
    of trades, fees excluded) are hftbacktest's *local* state before any synthetic fill. In
    2.4.4 they miss partial fills (only an order's last execution is applied, when it
    completes), so they agree with the recorded fills only when every order filled at once.
    """

    position: float
    balance: float
    fee: float
    num_trades: int
    ioc_qty: float  # closed by the closing IOC at the touch, base units
    synthetic_qty: float  # closed by the synthetic flatten-eod fill, base units
    orders_sent: int
    steps: int
    event_rows: int  # rows of the hftbacktest event array (with the end marker)
    order_qty: float  # quote size, base units


def _resolve(params: dict[str, Any]) -> dict[str, Any]:
    from quant_assets.strategies.registry import MARKET_MAKER

    return MARKET_MAKER.resolved(params)


def order_quantity(order_notional: float, mid: float, lot_size: float, size_precision: int) -> float:
    """``order_notional`` (quote currency) at ``mid`` in base units, rounded down to the lot size,
    at least one lot."""
    lots = max(1, math.floor(order_notional / mid / lot_size + 1e-9))
    return round(lots * lot_size, max(size_precision, 0) + 2)


def _first_mid(ticks: pl.DataFrame, path: Path) -> float:
    first = ticks.filter((pl.col("kind") == "quote") & pl.col("bid_px").is_not_null() & pl.col("ask_px").is_not_null()).head(1)
    if first.height == 0:
        raise BacktestInputError(f"{path}: no quote with both a bid and an ask; the market maker needs a mid price")
    return float((first["bid_px"][0] + first["ask_px"][0]) / 2.0)


def _profile(profile: VenueProfile | None, instrument: Instrument) -> VenueProfile:
    """``profile``, or the frictionless one of the instrument's venue × kind (no latency)."""
    return profile if profile is not None else venue_profiles.frictionless(instrument.venue, instrument.kind)


def latency_rows(profile: VenueProfile, first_local_ts: int, last_local_ts: int) -> np.ndarray | None:
    """The ``IntpOrderLatency`` table of a slice whose events' local times span
    [first_local_ts, last_local_ts] (ns); None for a constant latency."""
    return venue_latency.hft_rows(profile, int(first_local_ts), int(last_local_ts))


def build_backtest(events: np.ndarray, instrument: Instrument, profile: VenueProfile | None = None,
                   rows: np.ndarray | None = None):
    """The ``HashMapMarketDepthBacktest`` for ``events`` under the venue ``profile`` (default:
    frictionless). ``rows`` is the profile's latency table for this slice
    (:func:`latency_rows`), required unless the latency is constant. The caller keeps
    ``events`` and ``rows`` alive until ``close()``: ``BacktestAsset.data`` and
    ``intp_order_latency`` read them in place, without a copy."""
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    profile = _profile(profile, instrument)
    asset = BacktestAsset().data(events).linear_asset(1.0)
    fixed = venue_latency.constant_ns(profile)
    if fixed is not None:
        # At exactly 0 ns the loop's close-out waits on a response that hftbacktest delivers at
        # the same timestamp and never advances (the realism sensitivity's latency x0 hung);
        # 1 ns is zero latency for every purpose of the data (timestamps in ns, quotes ms apart).
        asset = asset.constant_order_latency(max(fixed[0], MIN_LATENCY_NS), max(fixed[1], MIN_LATENCY_NS))
    else:
        if rows is None:
            raise ValueError(f"{profile.label}: a {profile.latency_model} latency needs its table (latency_rows)")
        if rows.dtype != venue_latency.LATENCY_DTYPE or not rows.flags.c_contiguous:
            # A converted copy would be freed while hftbacktest still reads it.
            raise ValueError("latency rows must be a C-contiguous array of LATENCY_DTYPE")
        asset = asset.intp_order_latency(rows)
    model = profile.queue_model
    if model not in QUEUE_METHODS:
        raise ValueError(f"{profile.label}: queue_model {model!r} is not one of {', '.join(QUEUE_METHODS)}")
    method = getattr(asset, QUEUE_METHODS[model])
    asset = method(float(profile.queue_power)) if venue_profiles.QUEUE_MODELS[model] else method()
    asset = (
        asset.partial_fill_exchange()
        .trading_value_fee_model(instrument.maker_fee, instrument.taker_fee)
        .tick_size(instrument.tick_size)
        .lot_size(instrument.lot_size)
    )
    return HashMapMarketDepthBacktest([asset])


def max_round_trip_ns(profile: VenueProfile, rows: np.ndarray | None = None) -> int:
    """The longest order round trip (entry + response, ns) the profile can give this slice:
    the constant one, or the largest ``resp_ts − req_ts`` of its latency table."""
    fixed = venue_latency.constant_ns(profile)
    if fixed is not None:
        return fixed[0] + fixed[1]
    if rows is None or len(rows) == 0:
        raise ValueError(f"{profile.label}: a {profile.latency_model} latency needs its table (latency_rows)")
    return int((rows["resp_ts"] - rows["req_ts"]).max())


def end_marker_pad_ns(profile: VenueProfile, rows: np.ndarray | None = None) -> int:
    """How far past the last event the end marker sits (ns): well beyond the close-out's few
    order round trips, at the longest round trip the profile gives the slice."""
    return max(3600 * NS_PER_S, 1000 * max_round_trip_ns(profile, rows))


def latency_notes(profile: VenueProfile, rows: np.ndarray | None, first_local_ts: int, last_local_ts: int) -> list[str]:
    """What the run note says about the order latency: the model, and for a recorded file a
    slice outside the recorded times (hftbacktest then holds the first or last row's latency)."""
    fixed = venue_latency.constant_ns(profile)
    if fixed is not None:
        return [f"order latency {fixed[0] / NS_PER_MS:g} ms entry, {fixed[1] / NS_PER_MS:g} ms response "
                f"(constant; venue profile {profile.label}); queue model {_queue_label(profile)}"]
    out = [f"order latency: {profile.latency_model} (median {profile.entry_latency_ms * profile.latency_scale:g} ms entry) "
           f"through hftbacktest's IntpOrderLatency (venue profile {profile.label}); queue model {_queue_label(profile)}"]
    if profile.latency_model == "recorded" and rows is not None:
        lo, hi = int(rows["req_ts"][0]), int(rows["req_ts"][-1])
        if first_local_ts < lo or last_local_ts > hi:
            out.append(f"the recorded latency file covers req_ts {lo}..{hi} ns, the slice {first_local_ts}..{last_local_ts}: "
                       "outside it hftbacktest uses the first or last row's latency")
    return out


def _queue_label(profile: VenueProfile) -> str:
    takes_power = venue_profiles.QUEUE_MODELS.get(profile.queue_model, False)
    return f"{profile.queue_model}({profile.queue_power:g})" if takes_power else profile.queue_model


def run_loop(hbt, events: np.ndarray, end_ts: int, instrument: Instrument, p: dict[str, Any], order_qty: float,
             skip_idle: bool = True, rules: AccountRules | None = None):
    """Run :func:`market_maker_loop` on ``hbt`` with the resolved params ``p`` under the
    account ``rules`` (default 1x from 100,000); returns its raw output (see the loop).
    ``end_ts`` is the last real event's ``local_ts`` (ns)."""
    from quant_assets.strategies.market_maker import market_maker_loop

    rules = rules or AccountRules(100_000.0)

    interval_ns = int(round(p["interval_ms"] * NS_PER_MS))
    equity_ns = int(round(p["equity_interval_s"] * NS_PER_S))
    start = int(events["local_ts"][0])
    duration = max(end_ts - start, 0)
    sample_capacity = duration // max(interval_ns, equity_ns) + 16
    return market_maker_loop(
        hbt, instrument.tick_size, instrument.lot_size, int(round(order_qty / instrument.lot_size)),
        float(p["half_spread_ticks"]), float(p["skew_ticks"]), int(p["max_position_orders"]),
        interval_ns, equity_ns, int(end_ts), FILL_CAPACITY, int(sample_capacity), skip_idle,
        float(rules.starting_cash), float(rules.max_leverage), float(rules.maintenance_margin), float(rules.ruin_floor),
        float(instrument.maker_fee), float(instrument.taker_fee),
    )


def _fills_frame(raw: np.ndarray, instrument: Instrument, close_oid: int = -1, close_reason: str = REASON_FLATTEN) -> pl.DataFrame:
    """The loop's int64 fill buffer as a raw-fills frame, sorted by time then order id (the
    synthetic close last); prices and quantities rounded to the instrument's precisions so
    float noise of ``ticks * tick_size`` does not leak into the stored values."""
    from quant_assets.strategies.market_maker import SYNTHETIC_ORDER_ID

    schema = {**RAW_FILL_SCHEMA, "reason": pl.String()}
    if len(raw) == 0:
        return pl.DataFrame(schema=schema)
    ts, side, lots, px_tick, maker, oid = (raw[:, i] for i in range(6))
    synthetic = oid == SYNTHETIC_ORDER_ID
    order = np.lexsort((oid, synthetic, ts))
    maker = maker[order] == 1
    price = np.round(px_tick[order] * instrument.tick_size, instrument.price_precision)
    qty = np.round(lots[order] * instrument.lot_size, max(instrument.size_precision, 0) + 2)
    order_id = pl.Series("order_id", oid[order]).cast(pl.String)
    if synthetic.any():
        order_id = order_id.scatter(np.flatnonzero(synthetic[order]), FLATTEN_ORDER_ID)
    return pl.DataFrame(
        {
            "ts": ts[order],
            "side": side[order].astype(np.int8),
            "qty": qty,
            "price": price,
            "fee": np.where(maker, instrument.maker_fee, instrument.taker_fee) * price * qty,
            "liquidity": pl.Series(maker).replace_strict({True: "maker", False: "taker"}, return_dtype=RAW_FILL_SCHEMA["liquidity"]),
            "order_id": order_id,
            # The closing IOC and the synthetic close: the month's end, or a liquidation.
            "reason": pl.Series([close_reason if c else None for c in (synthetic[order] | (oid[order] == close_oid))], dtype=pl.String()),
        },
        schema=schema,
    )


def run_hftbacktest_with_state(
    ticks_path: Path, instrument: Instrument, params: dict[str, Any], starting_cash: float = 100_000.0,
    skip_idle: bool = True, rules: AccountRules | None = None, profile: VenueProfile | None = None,
) -> tuple[EngineRun, EngineState]:
    """:func:`run_hftbacktest`, plus hftbacktest's own end-of-run state (for reconciliation).
    ``skip_idle=False`` steps the loop through every decision point (the reference behaviour)."""
    import hftbacktest

    from quant_assets.engines.hft_events import read_ticks, to_events
    from quant_assets.strategies.market_maker import INFO_FIELDS

    ticks_path = Path(ticks_path)
    p = _resolve(params)
    stats = inspect_ticks(ticks_path, instrument, engine="hftbacktest")
    check_memory(ticks_path, "hftbacktest", stats.quotes + stats.trades, HFT_BYTES_PER_TICK, HFT_FIXED_BYTES)
    if hftbacktest.__version__ != ENGINE_VERSION:
        raise RuntimeError(f"hftbacktest {hftbacktest.__version__} installed; this adapter is written for {ENGINE_VERSION}")

    rules = rules or AccountRules(starting_cash)
    profile = _profile(profile, instrument)
    t0 = time.perf_counter()
    ticks = read_ticks(ticks_path)
    first_mid = _first_mid(ticks, ticks_path)
    order_qty = order_quantity(p["order_notional"], first_mid, instrument.lot_size, instrument.size_precision)
    first_local, last_local = int(ticks["ts_recv"].min()), int(ticks["ts_recv"].max())
    rows = latency_rows(profile, first_local, last_local)
    missing = ticks.select((pl.col("kind") == "quote") & (pl.col("bid_sz").is_null() | pl.col("ask_sz").is_null())).sum().item()
    missing_qty = depth.synthetic_qty(profile, first_mid, instrument.lot_size, instrument.size_precision)
    # The end marker row lets the close-out after the last event run at real timestamps.
    events = to_events(ticks, instrument.tick_size, missing_qty=missing_qty, end_marker_ns=end_marker_pad_ns(profile, rows))
    n_ticks = ticks.height
    # hftbacktest deletes a level whose size rounds to 0 lots: such quotes empty that side.
    sub_lot = int(ticks.select(((pl.col("bid_sz") < instrument.lot_size / 2) | (pl.col("ask_sz") < instrument.lot_size / 2)).sum()).item() or 0)
    del ticks
    end_ts = int(events["local_ts"][:-1].max())
    event_rows = len(events)
    hbt = build_backtest(events, instrument, profile, rows)
    try:
        raw, sample_ts, sample_mid, info_arr = run_loop(hbt, events, end_ts, instrument, p, order_qty, skip_idle, rules)
    finally:
        hbt.close()
    info = dict(zip(INFO_FIELDS, info_arr.tolist()))
    halted = bool(info["halted"])
    fills = _fills_frame(raw, instrument, int(info["close_oid"]), REASON_LIQUIDATION if halted else REASON_FLATTEN)
    samples = pl.DataFrame({"ts": sample_ts, "mid": sample_mid}, schema=SAMPLE_SCHEMA)
    wall = time.perf_counter() - t0
    del events  # only now: hftbacktest read it (and the latency rows) in place until close()

    lot = instrument.lot_size
    state = EngineState(
        position=info["engine_position"], balance=info["engine_balance"], fee=info["engine_fee"],
        num_trades=int(info["engine_num_trades"]), ioc_qty=info["ioc_lots"] * lot,
        synthetic_qty=info["synthetic_lots"] * lot, orders_sent=int(info["orders_sent"]), steps=int(info["steps"]),
        event_rows=event_rows, order_qty=order_qty,
    )
    notes = [f"order_qty {order_qty} {instrument.base_currency} ({p['order_notional']} {instrument.quote_currency} at the first mid)"]
    notes += latency_notes(profile, rows, first_local, last_local)
    if missing:
        notes.append(depth.note(missing_qty, profile, first_mid, instrument.base_currency, instrument.quote_currency,
                                f"{missing} quote(s) without a size on a side"))
    if sub_lot:
        notes.append(f"{sub_lot} quote(s) with a size under half a lot ({instrument.lot_size}): hftbacktest treats them as an empty side")
    if info["untracked_orders"]:
        notes.append(f"{int(info['untracked_orders'])} order observation(s) did not fit the fill tracker: fills may be missing")
    if state.ioc_qty:
        notes.append(f"closed {state.ioc_qty:.10g} at the last tick with an IOC at the touch")
    if state.synthetic_qty:
        notes.append(f"closed {state.synthetic_qty:.10g} at the touch by a synthetic taker fill ({FLATTEN_ORDER_ID}): more than the touch's size")
    engine_fills = fills.filter(pl.col("order_id") != FLATTEN_ORDER_ID)
    recorded = float((engine_fills["side"].cast(pl.Float64) * engine_fills["qty"]).sum())
    if abs(recorded - state.position) > lot / 2:
        notes.append(
            f"hftbacktest's own position {state.position:.10g} differs from the recorded fills' {recorded:.10g}: "
            "2.4.4 applies only the last execution of a partially filled order to its state"
        )
    account_events = []
    if halted:
        account_events.append({
            "ts": int(info["halt_ts"]), "kind": REASON_LIQUIDATION, "equity": float(info["halt_equity"]),
            "position": float(info["halt_position_lots"]) * lot, "mark": float(info["halt_mid"]),
            "detail": f"equity {info['halt_equity']:.2f} at or below maintenance {rules.maintenance_margin:g} x |position| x mid "
                      f"or the ruin floor {rules.ruin_floor:g}; closed at the touch, no quoting for the rest of the month",
        })
        notes.append(account_events[-1]["detail"])
    counters = {"orders_refused_leverage": int(info["quotes_refused_leverage"]), "liquidations": len(account_events)}
    run = EngineRun(
        fills=fills, samples=samples, engine=ENGINE, engine_version=ENGINE_VERSION, events=n_ticks, wall_s=wall,
        starting_cash=starting_cash, quote_currency=instrument.quote_currency, notes=notes,
        account_events=account_events, counters=counters, fidelity=stats.fidelity,
    )
    return run, state


def run_hftbacktest(ticks_path: Path, instrument: Instrument, params: dict[str, Any], starting_cash: float = 100_000.0,
                    rules: AccountRules | None = None, profile: VenueProfile | None = None,
                    book: BookSlice | None = None) -> EngineRun:
    """Backtest the ``market_maker`` strategy with ``params`` (validated against its spec;
    missing ones take their defaults) on one canonical ticks partition, under the venue
    ``profile`` (order latency, queue model, synthetic depth; default: frictionless for the
    instrument's venue × kind, i.e. no order latency).

    ``events`` in the result counts canonical ticks (quotes + trades); ``wall_s`` covers the
    Parquet read, the conversion, the replay and building the result (not the input checks).
    Raises :class:`~quant_assets.engines.inputs.BacktestInputError` for an unusable partition
    and :class:`~quant_assets.strategies.spec.ParamError` for bad parameters.
    """
    return run_hftbacktest_with_state(ticks_path, instrument, params, starting_cash, rules=rules, profile=profile)[0]
