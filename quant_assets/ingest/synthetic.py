"""The built-in synthetic market feed: deterministic L1 quotes and trades for (symbol, month, seed).

The model, chosen so that naive strategies do not print money yet the data looks like a market:
- mid price: a driftless geometric random walk in event time whose volatility follows a
  two-state regime (calm / stressed, switching at random every few hours) times a slow
  log-normal (Ornstein-Uhlenbeck) stochastic-volatility factor;
- activity: event times drawn from an intensity with intraday seasonality (busiest around
  14:00 UTC) that rises in the stressed regime;
- bid/ask: a spread of at least one tick that widens with volatility; sizes log-normal;
- trades: Poisson arrivals (a fixed share of events), buyer or seller aggressor with equal
  odds, printed at the prevailing ask or bid;
- ``ts_recv = ts_event + latency`` with an exponential network delay (mean ~1.5 ms).

Prices are in quote currency, sizes in base units, times int64 ns UTC.

A perpetual (``-PERP`` symbol) trades at its spot's price times a premium: its mid at each of
its own events is the mid of the spot the same (symbol, month, seed, events) spec would generate,
as of that time, times ``exp(basis)``, where the basis follows a mean-reverting
(Ornstein-Uhlenbeck) process per minute around :data:`BASIS_MEAN_BPS` (stationary deviation
:data:`BASIS_SD_BPS`, half-life :data:`BASIS_HALF_LIFE_MIN`): the perpetual cannot drift away from
its spot, as it cannot on a venue (arbitrage and funding hold it), so a spot–perpetual basis
trade on the synthetic pair sees a basis that converges and not two unrelated random walks.
Its event times, spreads, sizes and trades are its own.

For a perpetual the feed also lands a funding file: a Binance-style
``fundingRate`` CSV (ms times, 8 h interval from the month's first instant, rates around
0.01% per interval with seeded noise) with our optional ``mark_price`` column holding the
mid at each funding time, so synthetic funding goes through the same parser as real files.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.funding.schema import is_perpetual, underlying_symbol
from quant_assets.ingest.validate import month_start_ns, next_month
from quant_assets.lake.schema import KIND, TICK_SCHEMA
from quant_assets.lake.store import Lake, atomic_target

_KNOWN_PRICES = {"BTCUSDT": 42_000.0, "ETHUSDT": 2_300.0, "SOLUSDT": 95.0, "EURUSD": 1.09, "GBPUSD": 1.27, "USDJPY": 148.0}
_FX = {"EUR", "USD", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK"}

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of one synthetic symbol-month. ``events`` counts quotes + trades."""

    symbol: str
    month: str  # YYYY-MM
    seed: int = 42
    events: int = 200_000
    trade_share: float = 0.3
    annual_vol: float | None = None  # calm-regime annualised vol of the mid; None: 0.6 crypto, 0.08 FX


def is_fx(symbol: str) -> bool:
    return len(symbol) == 6 and symbol[:3] in _FX and symbol[3:] in _FX


def base_price(symbol: str) -> float:
    symbol = underlying_symbol(symbol)  # a perpetual trades near its spot
    if symbol in _KNOWN_PRICES:
        return _KNOWN_PRICES[symbol]
    h = int(hashlib.sha256(symbol.encode()).hexdigest()[:8], 16)
    return float(10 ** (1 + 3 * (h / 0xFFFFFFFF)))


def tick_size(symbol: str, price: float) -> float:
    """Price increment in quote currency: 1e-5 for FX (1e-3 for JPY quotes), else by magnitude."""
    if is_fx(symbol):
        return 0.001 if symbol.endswith("JPY") else 0.00001
    return 0.01 if price >= 10 else 0.0001 if price >= 0.1 else 1e-7


def _rng(spec: SyntheticSpec) -> np.random.Generator:
    digest = hashlib.sha256(f"{spec.symbol}|{spec.month}|{spec.seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


#: The synthetic perpetual's premium over its spot: mean and stationary deviation (bps of the
#: spot mid), and the half-life of a deviation (minutes). A few bps, mean-reverting over hours,
#: as a major's perpetual trades against its spot on a calm day.
BASIS_MEAN_BPS = 2.0
BASIS_SD_BPS = 6.0
BASIS_HALF_LIFE_MIN = 120.0


def _basis_bps(spec: SyntheticSpec, ts_event: np.ndarray, t0: int, minutes: int) -> np.ndarray:
    """The perpetual's premium over its spot at ``ts_event`` (bps): an OU process per minute
    around :data:`BASIS_MEAN_BPS`, seeded apart from everything else."""
    digest = hashlib.sha256(f"{spec.symbol}|{spec.month}|{spec.seed}|basis".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    phi = 0.5 ** (1.0 / BASIS_HALF_LIFE_MIN)
    shocks = rng.standard_normal(minutes) * BASIS_SD_BPS * math.sqrt(1 - phi * phi)
    basis = np.empty(minutes)
    x = rng.standard_normal() * BASIS_SD_BPS
    for i in range(minutes):  # ~44k steps, as the volatility factor
        x = phi * x + shocks[i]
        basis[i] = x
    minute = ((ts_event - t0) // (60 * NS_PER_S)).clip(0, minutes - 1)
    return BASIS_MEAN_BPS + basis[minute]


def generate(spec: SyntheticSpec) -> pl.DataFrame:
    """Canonical ticks for one symbol-month, sorted by ``ts_recv``; identical for identical specs."""
    from dataclasses import replace

    perp = is_perpetual(spec.symbol)
    # A perpetual draws its market (event times, volatility, price path, which events trade and
    # their aggressor side) from its spot's stream, so both quote at the same instants on the
    # same path, then its own latency and sizes from its own: two unrelated quote clocks would
    # make a stale quote look like a basis (a spot jump not yet on the perpetual's book) and a
    # basis trade would "earn" it.
    own = _rng(spec)
    rng = _rng(replace(spec, symbol=underlying_symbol(spec.symbol))) if perp else own
    t0, t1 = month_start_ns(spec.month), month_start_ns(next_month(spec.month))
    minutes = (t1 - t0) // (60 * NS_PER_S)

    # Regimes switch on an hourly grid: calm (1x vol) or stressed (2.5x vol, 1.8x activity).
    hours = math.ceil(minutes / 60)
    stressed = np.zeros(hours, dtype=bool)
    state = False
    for h in range(hours):  # a 2-state Markov chain; hours ~ 744, a loop is fine
        if rng.random() < (0.15 if state else 0.03):
            state = not state
        stressed[h] = state
    hour_of_minute = np.arange(minutes) // 60
    hour_of_day = (np.arange(minutes) // 60) % 24
    seasonal = 1.0 + 0.6 * np.cos(2 * np.pi * (hour_of_day - 14) / 24)
    intensity = seasonal * np.where(stressed[hour_of_minute], 1.8, 1.0)
    minute_idx = np.sort(rng.choice(minutes, size=spec.events, p=intensity / intensity.sum()))
    ts_event = t0 + minute_idx * 60 * NS_PER_S + rng.integers(0, 60 * NS_PER_S, size=spec.events)
    ts_event.sort()

    # Volatility: regime factor times a slow OU log-vol factor (per minute), applied per event.
    ou = np.empty(minutes)
    x, theta, eta = 0.0, 1 / 720, 0.02
    shocks = rng.standard_normal(minutes)
    for i in range(minutes):  # ~44k steps; numpy has no vectorised AR(1) without scipy
        x += -theta * x + eta * shocks[i]
        ou[i] = x
    annual_vol = spec.annual_vol or (0.08 if is_fx(spec.symbol) else 0.6)
    sigma_min = annual_vol / math.sqrt(365 * 24 * 60) * np.exp(ou) * np.where(stressed[hour_of_minute], 2.5, 1.0)
    ev_minute = ((ts_event - t0) // (60 * NS_PER_S)).clip(0, minutes - 1)
    dt_min = np.diff(ts_event, prepend=t0) / (60 * NS_PER_S)
    sigma = sigma_min[ev_minute]
    log_ret = sigma * np.sqrt(dt_min) * rng.standard_normal(spec.events) - 0.5 * sigma**2 * dt_min
    start_px = base_price(spec.symbol) * math.exp(rng.normal(0, 0.05))
    mid = start_px * np.exp(np.cumsum(log_ret))
    if perp:
        mid = mid * np.exp(_basis_bps(spec, ts_event, t0, minutes) / 1e4)

    tick = tick_size(spec.symbol, start_px)
    half_spread = np.maximum(tick, mid * sigma * 0.1)
    bid = np.floor((mid - half_spread) / tick) * tick
    ask = np.ceil((mid + half_spread) / tick) * tick
    ask = np.where(ask <= bid, bid + tick, ask)
    decimals = max(0, -int(math.floor(math.log10(tick) + 1e-9)))
    bid, ask = np.round(bid, decimals), np.round(ask, decimals)

    lot = 1000.0 if is_fx(spec.symbol) else 10 ** -round(max(0, math.log10(start_px)))
    lot_dec = max(0, -int(math.floor(math.log10(lot) + 1e-9)))
    notional = 2_000.0 if not is_fx(spec.symbol) else 500_000.0
    def sizes() -> np.ndarray:
        raw = notional / start_px * own.lognormal(0.0, 1.0, spec.events)
        return np.maximum(lot, np.round(np.round(raw / lot) * lot, lot_dec))

    is_trade = rng.random(spec.events) < spec.trade_share
    side = np.where(rng.random(spec.events) < 0.5, 1, -1).astype(np.int8)
    latency = (500_000 + own.exponential(1_000_000, spec.events)).astype(np.int64)
    bid_sz, ask_sz, trade_sz = sizes(), sizes(), sizes()
    df = pl.DataFrame(
        {
            "ts_event": ts_event.astype(np.int64),
            "ts_recv": ts_event.astype(np.int64) + latency,
            "seq": np.arange(spec.events, dtype=np.int64),
            "kind": np.where(is_trade, "trade", "quote"),
            "bid_px": np.where(is_trade, np.nan, bid),
            "bid_sz": np.where(is_trade, np.nan, bid_sz),
            "ask_px": np.where(is_trade, np.nan, ask),
            "ask_sz": np.where(is_trade, np.nan, ask_sz),
            "price": np.where(is_trade, np.where(side > 0, ask, bid), np.nan),
            "size": np.where(is_trade, trade_sz, np.nan),
            "side": np.where(is_trade, side, 0).astype(np.int8),
            "trade_id": np.where(is_trade, np.char.add(f"{spec.symbol[:3]}-", np.arange(spec.events).astype(str)), ""),
        }
    )
    quote_cols = ["bid_px", "bid_sz", "ask_px", "ask_sz"]
    trade_cols = ["price", "size", "side", "trade_id"]
    return (
        df.with_columns(
            pl.col("kind").cast(KIND),
            *[pl.when(pl.col("kind") == "quote").then(pl.col(c)) for c in quote_cols],
            *[pl.when(pl.col("kind") == "trade").then(pl.col(c)).alias(c) for c in trade_cols],
        )
        .cast(TICK_SCHEMA)  # type: ignore[arg-type]
        .sort("ts_recv", "seq")
    )


def landing_name(spec: SyntheticSpec) -> str:
    return f"synthetic-{spec.symbol}-{spec.month}-seed{spec.seed}-n{spec.events}.parquet"


#: Synthetic funding: interval (hours), mean rate and noise (fractions per interval).
FUNDING_INTERVAL_H = 8
FUNDING_MEAN_RATE = 0.0001
FUNDING_RATE_SD = 0.00005


def generate_funding(spec: SyntheticSpec, ticks: pl.DataFrame) -> pl.DataFrame:
    """Funding events of the spec's month: ``calc_time`` (ms), ``funding_interval_hours``,
    ``last_funding_rate`` (fraction per interval), ``mark_price`` (the quote mid at or before the
    funding time, else the first mid; quote currency). Seeded apart from the ticks, so adding
    funding never changes the tick stream."""
    digest = hashlib.sha256(f"{spec.symbol}|{spec.month}|{spec.seed}|funding".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    t0, t1 = month_start_ns(spec.month), month_start_ns(next_month(spec.month))
    step = FUNDING_INTERVAL_H * 3600 * NS_PER_S
    times = np.arange(t0, t1, step, dtype=np.int64)
    rates = np.round(FUNDING_MEAN_RATE + FUNDING_RATE_SD * rng.standard_normal(len(times)), 8)
    mids = (
        ticks.filter(pl.col("kind") == "quote")
        .select(ts="ts_event", mid=(pl.col("bid_px") + pl.col("ask_px")) / 2).sort("ts")
    )
    events = pl.DataFrame({"ts": times}).join_asof(mids, on="ts", strategy="backward").with_columns(
        pl.col("mid").fill_null(mids["mid"][0] if len(mids) else None)
    )
    return pl.DataFrame({
        "calc_time": times // 1_000_000,
        "funding_interval_hours": np.full(len(times), FUNDING_INTERVAL_H, dtype=np.int64),
        "last_funding_rate": rates,
        "mark_price": events["mid"].round(8),
    })


def funding_landing_name(spec: SyntheticSpec) -> str:
    return f"synthetic-{spec.symbol}-{spec.month}-seed{spec.seed}-n{spec.events}-fundingRate.csv"


def write_landing(lake: Lake, spec: SyntheticSpec) -> Path:
    """Write the spec's ticks as canonical Parquet into ``landing/<SYMBOL>/`` (atomically, so the
    sensor never sees half a file) and return the path. Ingest then treats it like any drop.
    For a perpetual, the month's funding CSV lands beside it (:func:`write_funding_landing`)."""
    path = lake.landing_dir(spec.symbol) / landing_name(spec)
    ticks = None
    if not path.exists():
        ticks = generate(spec)
        lake.write_parquet(ticks, path)
    if is_perpetual(spec.symbol):
        write_funding_landing(lake, spec, ticks)
    return path


def write_funding_landing(lake: Lake, spec: SyntheticSpec, ticks: pl.DataFrame | None = None) -> Path | None:
    """Write the spec's funding as a Binance-style ``fundingRate`` CSV into ``landing/<SYMBOL>/``
    (atomically); None for a spot symbol. ``ticks`` saves regenerating the spec's ticks."""
    if not is_perpetual(spec.symbol):
        return None
    path = lake.landing_dir(spec.symbol) / funding_landing_name(spec)
    if not path.exists():
        frame = generate_funding(spec, ticks if ticks is not None else generate(spec))
        with atomic_target(path) as tmp:
            frame.write_csv(tmp)
    return path
