"""Instrument metadata per symbol: venue, currencies, precisions, tick/lot size, fees.

Inferred from the data (precisions from the decimals actually used) with venue-based fee
defaults, stored at ``<lake>/instruments/instruments.parquet``, and overridden field by field
by ``instruments.toml`` in the repository (or the file named by ``$QUANT_INSTRUMENTS``)::

    [BTCUSDT]
    venue = "BINANCE"
    taker_fee = 0.0004   # fraction of notional

Fees are fractions of traded notional (0.001 = 10 bps), charged in the quote currency.
``trading_days`` is the instrument's trading days per year, the annualisation of every metric
(crypto trades every day: 365; FX about 260; a stock exchange 252).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.lake.store import Lake
from quant_assets.settings import REPO_ROOT

CONFIG_ENV = "QUANT_INSTRUMENTS"
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "GBP", "JPY", "TRY", "BTC", "ETH", "BNB", "CHF", "AUD", "CAD")
#: (maker, taker) fee fractions by venue when nothing better is known.
VENUE_FEES = {"BINANCE": (0.001, 0.001), "FX": (0.0, 0.0), "SIM": (0.0002, 0.0005)}
DEFAULT_FEES = (0.0002, 0.0005)
#: Trading days per year by venue (the annualisation of metrics); crypto venues trade daily.
VENUE_TRADING_DAYS = {"BINANCE": 365, "TARDIS": 365, "SIM": 365, "FX": 260}
DEFAULT_TRADING_DAYS = 365
VENUE_BY_FORMAT = {"binance": "BINANCE", "tardis": "TARDIS", "fx": "FX", "canonical": "SIM"}


@dataclass(frozen=True)
class Instrument:
    """One tradable symbol. Prices in ``quote_currency``; sizes in ``base_currency`` units."""

    symbol: str
    venue: str
    base_currency: str
    quote_currency: str
    price_precision: int  # decimals of prices
    size_precision: int  # decimals of sizes
    tick_size: float  # smallest price increment, quote currency
    lot_size: float  # smallest size increment, base units
    maker_fee: float  # fraction of notional
    taker_fee: float  # fraction of notional
    trading_days: int = DEFAULT_TRADING_DAYS  # per year: the annualisation of metrics
    source: str = "inferred"  # inferred | config | inferred+config


SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "venue": pl.String(), "base_currency": pl.String(), "quote_currency": pl.String(),
    "price_precision": pl.Int64(), "size_precision": pl.Int64(), "tick_size": pl.Float64(),
    "lot_size": pl.Float64(), "maker_fee": pl.Float64(), "taker_fee": pl.Float64(), "trading_days": pl.Int64(),
    "source": pl.String(),
}


def split_currencies(symbol: str) -> tuple[str, str]:
    """(base, quote) from a symbol like BTCUSDT or EURUSD; ('?', '?') when unknown."""
    s = symbol.replace("-", "").replace("_", "").replace(".", "").replace("/", "")
    for q in _QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)], q
    return s, "?"


def decimals(values: np.ndarray, max_decimals: int = 10) -> int:
    """Fewest decimals that represent every value (to 1e-6 of a unit in the last place)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0
    for d in range(max_decimals + 1):
        scaled = v * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled) * 1e-9)):
            return d
    return max_decimals


def infer(symbol: str, ticks: pl.LazyFrame, venue: str, sample_rows: int = 200_000) -> Instrument:
    """Infer an instrument from (a sample of) its canonical ticks."""
    sample = ticks.select("bid_px", "ask_px", "price", "bid_sz", "ask_sz", "size").head(sample_rows).collect()
    prices = np.concatenate([sample[c].drop_nulls().to_numpy() for c in ("bid_px", "ask_px", "price")])
    sizes = np.concatenate([sample[c].drop_nulls().to_numpy() for c in ("bid_sz", "ask_sz", "size")])
    p_dec, s_dec = decimals(prices), decimals(sizes)
    base, quote = split_currencies(symbol)
    maker, taker = VENUE_FEES.get(venue, DEFAULT_FEES)
    return Instrument(symbol, venue, base, quote, p_dec, s_dec, 10.0**-p_dec, 10.0**-s_dec, maker, taker,
                      trading_days=VENUE_TRADING_DAYS.get(venue, DEFAULT_TRADING_DAYS))


def merge_inferred(old: Instrument | None, new: Instrument) -> Instrument:
    """Months disagree on precision when a venue changes tick size: keep the finer one."""
    if old is None:
        return new
    p, s = max(old.price_precision, new.price_precision), max(old.size_precision, new.size_precision)
    return replace(new, price_precision=p, size_precision=s, tick_size=10.0**-p, lot_size=10.0**-s)


def read_inferred(lake: Lake) -> dict[str, Instrument]:
    if not lake.instruments_path.exists():
        return {}
    return {r["symbol"]: Instrument(**r) for r in pl.read_parquet(lake.instruments_path).iter_rows(named=True)}


def record_inferred(lake: Lake, inst: Instrument) -> None:
    """Store ``inst`` (merged with what was inferred before) in the lake's table."""
    with lake.lock("instruments"):
        table = read_inferred(lake)
        table[inst.symbol] = merge_inferred(table.get(inst.symbol), inst)
        rows = [asdict(i) for _, i in sorted(table.items())]
        lake.write_parquet(pl.DataFrame(rows, schema=SCHEMA), lake.instruments_path)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "instruments.toml")


def overrides(path: Path | None = None) -> dict[str, dict[str, object]]:
    """The override table: symbol -> {field: value}. Unknown fields are an error naming them."""
    path = path or config_path()
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    valid = {f.name for f in fields(Instrument)} - {"symbol", "source"}
    for sym, values in data.items():
        bad = set(values) - valid
        if bad:
            raise ValueError(f"{path}: [{sym}] has unknown field(s) {sorted(bad)}; allowed: {sorted(valid)}")
    return {sym.upper(): values for sym, values in data.items()}


def apply_overrides(symbol: str, inferred: Instrument | None, over: dict[str, object] | None) -> Instrument | None:
    """``inferred`` with the config's fields for ``symbol`` applied (precision implies tick/lot)."""
    if inferred is None and not over:
        return None
    source = "inferred+config" if inferred is not None else "config"
    if inferred is None:
        base, quote = split_currencies(symbol)
        inferred = Instrument(symbol, "SIM", base, quote, 2, 4, 0.01, 0.0001, *DEFAULT_FEES)
    if not over:
        return inferred
    inst = replace(inferred, **over, source=source)  # type: ignore[arg-type]
    if "price_precision" in over and "tick_size" not in over:
        inst = replace(inst, tick_size=10.0 ** -int(over["price_precision"]))  # type: ignore[arg-type]
    if "venue" in over and "trading_days" not in over:
        inst = replace(inst, trading_days=VENUE_TRADING_DAYS.get(str(over["venue"]), DEFAULT_TRADING_DAYS))
    if "size_precision" in over and "lot_size" not in over:
        inst = replace(inst, lot_size=10.0 ** -int(over["size_precision"]))  # type: ignore[arg-type]
    return inst


def resolve(lake: Lake, symbol: str, config: Path | None = None) -> Instrument | None:
    """The instrument for ``symbol``: inferred values with the config's overrides applied."""
    return apply_overrides(symbol, read_inferred(lake).get(symbol), overrides(config).get(symbol))


def trading_days_of(lake: Lake, symbol: str) -> int:
    """Trading days per year of ``symbol`` (the annualisation of its metrics); the default when
    it has no instrument record."""
    inst = resolve(lake, symbol)
    return inst.trading_days if inst else DEFAULT_TRADING_DAYS


def venue_of(formats: list[str | None]) -> str:
    """Venue implied by the source formats of a partition (``binance_trades`` -> BINANCE)."""
    for fmt in sorted(f for f in formats if f):
        venue = VENUE_BY_FORMAT.get(fmt.split("_")[0])
        if venue:
            return venue
    return "SIM"


def for_candidate(lake: Lake, symbol: str, candidate: Path, formats: list[str | None]) -> tuple[Instrument, Instrument]:
    """(inferred, resolved) instrument for a candidate ticks file before it is published:
    inferred from the file merged with earlier months, resolved with the config applied."""
    inferred = merge_inferred(read_inferred(lake).get(symbol), infer(symbol, pl.scan_parquet(candidate), venue_of(formats)))
    resolved = apply_overrides(symbol, inferred, overrides().get(symbol))
    assert resolved is not None
    return inferred, resolved
