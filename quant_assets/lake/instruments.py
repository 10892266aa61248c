"""Instrument metadata per symbol: venue, kind, raw symbol, currencies, precisions, tick/lot
size, fees.

Inferred from the data (precisions from the decimals actually used) with venue-based fee
defaults, stored at ``<lake>/instruments/instruments.parquet``, and overridden field by field
by ``instruments.toml`` in the repository (or the file named by ``$QUANT_INSTRUMENTS``)::

    [BTCUSDT]
    venue = "BINANCE"
    taker_fee = 0.0004   # fraction of notional

An instrument is venue + raw symbol + kind (``spot``, ``perpetual``, ``future``, ``fx``); the
partition symbol encodes the kind (``BTCUSDT`` spot, ``BTCUSDT-PERP`` perpetual, see
:mod:`quant_assets.lake.identity`), ``kind = "..."`` in a symbol's table overrides it.

Fees are fractions of traded notional (0.001 = 10 bps), charged in the quote currency; a
negative maker fee is a rebate. A backtest month is charged :func:`fees_for` the month: the
venue × kind × ``fee_tier`` schedule row in effect when it starts (:mod:`quant_assets.lake.fees`),
unless the symbol's table sets ``maker_fee``/``taker_fee``, which win.
``trading_days`` is the instrument's trading days per year, the annualisation of every metric
(crypto trades every day: 365; FX about 260; a stock exchange 252).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.lake import fees as fee_mod
from quant_assets.lake.fees import CONFIG_ENV, DEFAULT_TIER, config_path  # noqa: F401  (re-exported)
from quant_assets.lake.identity import check_kind, pair_of, parse_symbol
from quant_assets.lake.store import Lake

_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "GBP", "JPY", "TRY", "BTC", "ETH", "BNB", "CHF", "AUD", "CAD")
#: (maker, taker) fee fractions by venue when its kind has no fee schedule (see fees.py).
VENUE_FEES = {"BINANCE": (0.001, 0.001), "FX": (0.0, 0.0), "SIM": (0.0002, 0.0005)}
DEFAULT_FEES = (0.0002, 0.0005)
#: Trading days per year by venue (the annualisation of metrics); crypto venues trade daily.
VENUE_TRADING_DAYS = {"BINANCE": 365, "TARDIS": 365, "SIM": 365, "FX": 260}
DEFAULT_TRADING_DAYS = 365
VENUE_BY_FORMAT = {"binance": "BINANCE", "tardis": "TARDIS", "fx": "FX", "canonical": "SIM"}


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument, keyed by its partition ``symbol``. Prices in ``quote_currency``;
    sizes in ``base_currency`` units; fees fractions of notional (negative maker = rebate).

    Identity is ``venue`` + ``raw_symbol`` + ``kind``; left empty they are inferred from
    ``symbol`` (and ``venue`` for fx). Invariant: ``kind`` is one of ``identity.KINDS``.
    ``dataclasses.replace(inst, symbol=...)`` keeps the old kind and raw symbol: pass
    ``kind="", raw_symbol=""`` to infer them again.
    """

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
    # Identity (after the fields above so positional construction keeps working). Empty means
    # "infer from the symbol": BTCUSDT-PERP -> kind perpetual, raw symbol BTCUSDT.
    kind: str = ""  # spot | perpetual | future | fx
    raw_symbol: str = ""  # the venue's own name, what its files carry
    fee_tier: str = DEFAULT_TIER  # the venue fee tier whose schedule applies (VIP0, VIP1, ...)

    def __post_init__(self) -> None:
        raw, kind = parse_symbol(self.symbol, self.venue)
        # frozen: fill the inferred defaults through object.__setattr__ (only when unset)
        if not self.kind:
            object.__setattr__(self, "kind", kind)
        if not self.raw_symbol:
            object.__setattr__(self, "raw_symbol", raw)
        if not self.fee_tier:
            object.__setattr__(self, "fee_tier", DEFAULT_TIER)
        check_kind(self.kind, f"instrument {self.symbol}")


SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "venue": pl.String(), "base_currency": pl.String(), "quote_currency": pl.String(),
    "price_precision": pl.Int64(), "size_precision": pl.Int64(), "tick_size": pl.Float64(),
    "lot_size": pl.Float64(), "maker_fee": pl.Float64(), "taker_fee": pl.Float64(), "trading_days": pl.Int64(),
    "source": pl.String(), "kind": pl.String(), "raw_symbol": pl.String(), "fee_tier": pl.String(),
}


def split_currencies(symbol: str) -> tuple[str, str]:
    """(base, quote) from a symbol like BTCUSDT, BTCUSDT-PERP or EURUSD; (symbol, '?') when unknown."""
    s = pair_of(symbol).replace("-", "").replace("_", "").replace(".", "").replace("/", "")
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
    maker, taker = default_fees(venue, parse_symbol(symbol, venue)[1])
    return Instrument(symbol, venue, base, quote, p_dec, s_dec, 10.0**-p_dec, 10.0**-s_dec, maker, taker,
                      trading_days=VENUE_TRADING_DAYS.get(venue, DEFAULT_TRADING_DAYS))


def default_fees(venue: str, kind: str) -> tuple[float, float]:
    """(maker, taker) stored with an inferred instrument: the latest built-in VIP 0 schedule row
    of the venue × kind, else the venue's flat default. Backtests use :func:`fees_for` the month."""
    rows = [r for r in fee_mod.builtin_fees() if (r.venue, r.kind, r.tier) == (venue, kind, DEFAULT_TIER)]
    if rows:
        return rows[-1].maker, rows[-1].taker
    return VENUE_FEES.get(venue, DEFAULT_FEES)


def merge_inferred(old: Instrument | None, new: Instrument) -> Instrument:
    """Months disagree on precision when a venue changes tick size: keep the finer one."""
    if old is None:
        return new
    p, s = max(old.price_precision, new.price_precision), max(old.size_precision, new.size_precision)
    return replace(new, price_precision=p, size_precision=s, tick_size=10.0**-p, lot_size=10.0**-s)


def read_inferred(lake: Lake) -> dict[str, Instrument]:
    if not lake.instruments_path.exists():
        return {}
    # A table written before kind/raw_symbol/fee_tier existed lacks those columns (or holds
    # nulls): the dataclass defaults fill them from the symbol.
    known = {f.name for f in fields(Instrument)}
    return {
        r["symbol"]: Instrument(**{k: v for k, v in r.items() if k in known and v is not None})
        for r in pl.read_parquet(lake.instruments_path).iter_rows(named=True)
    }


def record_inferred(lake: Lake, inst: Instrument) -> None:
    """Store ``inst`` (merged with what was inferred before) in the lake's table."""
    with lake.lock("instruments"):
        table = read_inferred(lake)
        table[inst.symbol] = merge_inferred(table.get(inst.symbol), inst)
        rows = [asdict(i) for _, i in sorted(table.items())]
        lake.write_parquet(pl.DataFrame(rows, schema=SCHEMA), lake.instruments_path)


def overrides(path: Path | None = None) -> dict[str, dict[str, object]]:
    """The override table: symbol -> {field: value}. Unknown fields, an unknown ``kind`` and a
    fee outside ±5% are errors naming the file, the symbol and the field. The ``[[fees]]`` and
    ``[[margin]]`` sections are not symbols (see :mod:`quant_assets.lake.fees`)."""
    path, data = fee_mod.load_config(path)
    valid = {f.name for f in fields(Instrument)} - {"symbol", "source"}
    out = {}
    for sym, values in data.items():
        if sym in fee_mod.RESERVED_KEYS:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"{path}: {sym!r} must be a table ([{sym}]) of instrument fields")
        bad = set(values) - valid
        if bad:
            raise ValueError(f"{path}: [{sym}] has unknown field(s) {sorted(bad)}; allowed: {sorted(valid)}")
        if "kind" in values:
            check_kind(values["kind"], f"{path} [{sym}] kind")
        for fee in ("maker_fee", "taker_fee"):
            if fee in values:
                fee_mod.check_fee(values[fee], f"{path} [{sym}] {fee}")
        out[sym.upper()] = values
    return out


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
    if "venue" in over and "kind" not in over:  # e.g. venue FX makes a pair kind fx
        inst = replace(inst, kind=parse_symbol(symbol, str(over["venue"]))[1])
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


@dataclass(frozen=True)
class FeeChoice:
    """The fees a backtest month is charged, and where they come from (for the manifest).

    ``maker``/``taker`` are fractions of traded notional in the quote currency (negative maker:
    a rebate); ``effective`` is the first day of the schedule row used (None for overrides and
    venue defaults)."""

    venue: str
    kind: str
    tier: str
    effective: str | None
    maker: float
    taker: float
    source: str

    def label(self) -> str:
        since = f" from {self.effective}" if self.effective else ""
        return f"{self.venue} {self.kind} {self.tier}{since} ({self.source})"


def fee_choice(instrument: Instrument, month: str, config: Path | None = None) -> FeeChoice:
    """Fees of ``instrument`` for backtest ``month`` (``YYYY-MM``): the schedule row of its
    venue × kind × ``fee_tier`` in effect on the month's first day; per-symbol ``maker_fee``/
    ``taker_fee`` in ``instruments.toml`` win (each on its own); with no schedule for the venue ×
    kind, the instrument's own fees (the venue default)."""
    over = overrides(config).get(instrument.symbol, {})
    row = fee_mod.schedule_row(instrument.venue, instrument.kind, instrument.fee_tier, month, config)
    i = instrument
    if row is None:
        maker, taker, effective, source = i.maker_fee, i.taker_fee, None, f"instrument record ({i.source})"
    else:
        maker, taker, effective, source = row.maker, row.taker, row.start.isoformat(), row.source
    given = [f for f in ("maker_fee", "taker_fee") if f in over]
    if given:
        maker, taker = float(over.get("maker_fee", maker)), float(over.get("taker_fee", taker))  # type: ignore[arg-type]
        where = f"{config or config_path()} [{i.symbol}] {'/'.join(given)}"
        # both overridden: the schedule plays no part; one: say what the other came from
        source, effective = (where, None) if len(given) == 2 else (f"{where} over {source}", effective)
    return FeeChoice(i.venue, i.kind, i.fee_tier, effective, maker, taker, source)


def fees_for(instrument: Instrument, month: str, config: Path | None = None) -> tuple[float, float, str]:
    """``(maker, taker, source_label)`` for ``instrument`` in backtest ``month`` (see :func:`fee_choice`)."""
    c = fee_choice(instrument, month, config)
    return c.maker, c.taker, c.label()


def margin_for(instrument: Instrument, config: Path | None = None) -> tuple[float, float]:
    """``(max_leverage, maintenance_margin_rate)`` of the instrument's venue × kind: leverage ≥ 1
    (1 = fully funded), maintenance margin a fraction of position notional (quote currency)."""
    row = fee_mod.margin_row(instrument.venue, instrument.kind, config)
    return row.max_leverage, row.maintenance_margin


def validate_config(config: Path | None = None) -> None:
    """Read every section of ``instruments.toml`` (symbol tables, ``[[fees]]``, ``[[margin]]``)
    and raise the first error, naming the file and the row: run when the definitions load, so
    a typo stops the code location with a message instead of failing backtests one by one."""
    table = overrides(config)
    fee_mod.fee_schedule(config)
    fee_mod.margin_settings(config)
    for sym, over in table.items():
        inst = apply_overrides(sym, None, over)
        assert inst is not None
        if "fee_tier" in over:  # a tier with no schedule is an error only once looked up
            fee_mod.schedule_row(inst.venue, inst.kind, inst.fee_tier, "2000-01", config)
