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

**Dated records.** The table keeps one inferred record per symbol × ``month``: what that month's
ticks alone say (written by each ingest of the month, replacing the month's previous record).
A month resolves to the merge of its symbol's records of months up to and including itself
(:func:`merge_inferred`, the later month's fields with the finest precision seen so far), so an
old month never trades on a tick size first seen in a later month, and appending a month
changes nothing about the months before it. ``month=None`` (settings that do not depend on the
month, such as a symbol's venue) merges every record.

A table written before records were dated has no ``month`` (or a null one): such an *undated*
row was merged across every month ingested then, later ones included. It still serves the
months that have no dated record of their own (they were last ingested before records were
dated), merged with the dated records before them, exactly as the old table served them; a
month re-ingested since has its own dated record and no longer reads the undated row.
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
#: The stored table: an instrument per symbol × month (``YYYY-MM`` whose ticks it was inferred
#: from; null for an undated row of a table written before records were dated).
TABLE_SCHEMA: dict[str, pl.DataType] = {**SCHEMA, "month": pl.String()}


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


def read_records(lake: Lake, symbol: str | None = None) -> pl.DataFrame:
    """The stored records (:data:`TABLE_SCHEMA`), of ``symbol`` only when given. A table written
    before kind/raw_symbol/fee_tier or months existed lacks those columns: they read as null
    (the dataclass defaults then fill the identity from the symbol; a null month is undated)."""
    if not lake.instruments_path.exists():
        return pl.DataFrame(schema=TABLE_SCHEMA)
    table = pl.scan_parquet(lake.instruments_path)
    if symbol is not None:
        table = table.filter(pl.col("symbol") == symbol)
    df = table.collect()
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in TABLE_SCHEMA.items() if c not in df.columns]
    # unique: an object-store merge of two copies may hold the same undated row twice
    return df.with_columns(missing).select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA).unique(maintain_order=True)


def _instrument(row: dict[str, object]) -> Instrument:
    known = {f.name for f in fields(Instrument)}
    return Instrument(**{k: v for k, v in row.items() if k in known and v is not None})  # type: ignore[arg-type]


def as_of(records: pl.DataFrame, month: str | None) -> dict[str, Instrument]:
    """Per symbol of ``records``: the instrument known in ``month`` (see the module docstring):
    its dated records of months <= ``month`` merged in month order, plus its undated row when
    ``month`` has no dated record of its own; ``month=None``: every record."""
    out: dict[str, Instrument] = {}
    for (symbol,), rows in records.sort("symbol", "month", nulls_last=False).group_by("symbol", maintain_order=True):
        dated = rows.filter(pl.col("month").is_not_null())
        if month is not None:
            dated = dated.filter(pl.col("month") <= month)
        use_undated = month is None or not (rows["month"] == month).any()
        chosen = pl.concat([rows.filter(pl.col("month").is_null()), dated]) if use_undated else dated
        merged = None
        for row in chosen.iter_rows(named=True):  # undated first, then dated months in order
            merged = merge_inferred(merged, _instrument(row))
        if merged is not None:
            out[str(symbol)] = merged
    return out


def read_inferred(lake: Lake, month: str | None = None) -> dict[str, Instrument]:
    """Every symbol's inferred instrument as known in ``month`` (None: every record merged)."""
    return as_of(read_records(lake), month)


def record_inferred(lake: Lake, inst: Instrument, month: str) -> None:
    """Store ``inst``, inferred from ``month``'s ticks, as the record of (symbol, month),
    replacing that month's previous record; other months' records are left as they are."""
    with lake.lock("instruments"):
        table = read_records(lake)
        keep = table.filter(~((pl.col("symbol") == inst.symbol) & (pl.col("month") == month).fill_null(False)))
        # Rows of a table written before kinds existed get their identity filled in (once).
        old = pl.any_horizontal(pl.col("kind", "raw_symbol", "fee_tier").is_null())
        filled = [{**asdict(_instrument(r)), "month": r["month"]} for r in keep.filter(old).iter_rows(named=True)]
        rows = [keep.filter(~old), pl.DataFrame(filled, schema=TABLE_SCHEMA),
                pl.DataFrame([{**asdict(inst), "month": month}], schema=TABLE_SCHEMA)]
        lake.write_parquet(pl.concat(rows).sort("symbol", "month", nulls_last=False), lake.instruments_path)


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


def resolve(lake: Lake, symbol: str, config: Path | None = None, *, month: str | None) -> Instrument | None:
    """The instrument for ``symbol`` in ``month`` (``YYYY-MM``): its records up to that month
    merged (see the module docstring) with the config's overrides applied. ``month=None``
    merges every record: for settings that do not depend on the month (a symbol's venue)."""
    return apply_overrides(symbol, as_of(read_records(lake, symbol), month).get(symbol), overrides(config).get(symbol))


def trading_days_of(lake: Lake, symbol: str, *, month: str | None) -> int:
    """Trading days per year of ``symbol`` (the annualisation of its metrics) as known in
    ``month`` (None: every record, for roll-ups over all months); the default when it has no
    instrument record."""
    inst = resolve(lake, symbol, month=month)
    return inst.trading_days if inst else DEFAULT_TRADING_DAYS


def venue_of(formats: list[str | None]) -> str:
    """Venue implied by the source formats of a partition (``binance_trades`` -> BINANCE)."""
    for fmt in sorted(f for f in formats if f):
        venue = VENUE_BY_FORMAT.get(fmt.split("_")[0])
        if venue:
            return venue
    return "SIM"


def for_candidate(lake: Lake, symbol: str, month: str, candidate: Path, formats: list[str | None]) -> tuple[Instrument, Instrument]:
    """(inferred, resolved) instrument for a candidate ticks file of ``month`` before it is
    published: inferred from the file alone (the record :func:`record_inferred` stores for the
    month), and resolved as the month will be once it is: merged with the records of the months
    before it (never later ones), the config applied."""
    inferred = infer(symbol, pl.scan_parquet(candidate), venue_of(formats))
    records = read_records(lake, symbol).filter((pl.col("month") != month).fill_null(True))
    candidate_row = pl.DataFrame([{**asdict(inferred), "month": month}], schema=TABLE_SCHEMA)
    known = as_of(pl.concat([records, candidate_row]), month)[symbol]
    resolved = apply_overrides(symbol, known, overrides().get(symbol))
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
