"""Instrument identity (venue + raw symbol + kind), fee schedules with effective dates, margin
settings, and what a backtest records of them. Small data made in code; no engine runs except
one short NautilusTrader backtest through ``run_backtest``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.identity import claims_match, parse_symbol, symbol_for
from quant_assets.lake.instruments import Instrument, fee_choice, fees_for, margin_for

SPOT = Instrument("BTCUSDT", "BINANCE", "BTC", "USDT", 2, 3, 0.01, 0.001, 0.001, 0.001)
PERP = Instrument("BTCUSDT-PERP", "BINANCE", "BTC", "USDT", 1, 3, 0.1, 0.001, 0.001, 0.001)


@pytest.mark.parametrize("symbol, raw, kind", [
    ("BTCUSDT", "BTCUSDT", "spot"),
    ("BTCUSDT-PERP", "BTCUSDT", "perpetual"),
    ("btcusdt-perp", "BTCUSDT", "perpetual"),
    ("BTC-PERPETUAL", "BTC-PERPETUAL", "perpetual"),
    ("BTCUSDT-250328", "BTCUSDT_250328", "future"),
    ("BTCUSDT_250328", "BTCUSDT_250328", "future"),
    ("BTCUSDT-251399", "BTCUSDT-251399", "spot"),  # not a date: no expiry, no future
    ("EURUSD", "EURUSD", "fx"),
    ("EUR.USD", "EUR.USD", "fx"),
    ("ETHBTC", "ETHBTC", "spot"),
])
def test_partition_symbols_name_raw_symbol_and_kind(symbol, raw, kind):
    assert parse_symbol(symbol) == (raw, kind)


def test_symbol_for_inverts_parse_symbol_and_fx_follows_the_venue():
    for sym in ("BTCUSDT", "BTCUSDT-PERP", "BTCUSDT-250328", "EURUSD", "BTC-PERPETUAL"):
        assert symbol_for(*parse_symbol(sym)) == sym
    assert parse_symbol("XAUUSD") == ("XAUUSD", "spot")
    assert parse_symbol("XAUUSD", venue="FX") == ("XAUUSD", "fx")
    with pytest.raises(ValueError, match="unknown kind 'swap'"):
        symbol_for("BTCUSDT", "swap")


def test_file_claims_are_checked_against_the_raw_symbol():
    assert claims_match("BTCUSDT", "BTCUSDT-PERP") and claims_match("BTCUSDT", "BTCUSDT")
    assert claims_match("EURUSD", "EUR.USD")  # a TrueFX pair column in a dotted folder
    assert not claims_match("ETHUSDT", "BTCUSDT-PERP")
    assert not claims_match("BTCUSDT", "ETHUSDT-PERP")


def test_positional_instruments_infer_kind_and_raw_symbol():
    assert (SPOT.kind, SPOT.raw_symbol, SPOT.fee_tier) == ("spot", "BTCUSDT", "VIP0")
    assert (PERP.kind, PERP.raw_symbol) == ("perpetual", "BTCUSDT")
    fx = Instrument("EURUSD", "FX", "EUR", "USD", 5, 0, 1e-5, 1.0, 0.0, 0.0)
    assert fx.kind == "fx"
    assert inst_mod.split_currencies("BTCUSDT-PERP") == ("BTC", "USDT")
    assert inst_mod.split_currencies("ETHUSDT-250328") == ("ETH", "USDT")
    with pytest.raises(ValueError, match="instrument X: unknown kind 'option'"):
        Instrument("X", "SIM", "X", "USD", 1, 0, 0.1, 1.0, 0.0, 0.0, kind="option")


def test_an_instruments_table_written_before_kinds_existed_still_loads(lake):
    old_schema = {k: v for k, v in inst_mod.SCHEMA.items() if k not in ("kind", "raw_symbol", "fee_tier")}
    rows = [{k: v for k, v in inst_mod.asdict(i).items() if k in old_schema} for i in (SPOT, PERP)]
    lake.instruments_path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=old_schema).write_parquet(lake.instruments_path)
    table = inst_mod.read_inferred(lake)
    assert table["BTCUSDT"].kind == "spot" and table["BTCUSDT-PERP"].kind == "perpetual"
    assert table["BTCUSDT-PERP"].raw_symbol == "BTCUSDT"
    # and rewriting it (the next ingest) stores the new columns
    inst_mod.record_inferred(lake, replace(SPOT, symbol="ETHUSDT", raw_symbol="", kind=""), "2024-01")
    assert set(pl.read_parquet(lake.instruments_path)["kind"]) == {"spot", "perpetual"}


def test_instrument_records_are_dated_and_a_month_never_reads_a_later_one(lake):
    coarse = replace(SPOT, price_precision=2, tick_size=0.01)
    fine = replace(SPOT, price_precision=3, tick_size=0.001, taker_fee=0.0009)
    inst_mod.record_inferred(lake, coarse, "2024-01")
    inst_mod.record_inferred(lake, coarse, "2024-02")
    inst_mod.record_inferred(lake, fine, "2024-03")  # the venue's tick size became finer in March
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-01").tick_size == 0.01
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-02").tick_size == 0.01
    march = inst_mod.resolve(lake, "BTCUSDT", month="2024-03")
    assert (march.tick_size, march.taker_fee) == (0.001, 0.0009)
    # later months keep the finest precision seen so far (merged as before), with their own fields
    inst_mod.record_inferred(lake, coarse, "2024-04")
    april = inst_mod.resolve(lake, "BTCUSDT", month="2024-04")
    assert (april.tick_size, april.taker_fee) == (0.001, coarse.taker_fee)
    # month=None (per-symbol settings): every record
    assert inst_mod.resolve(lake, "BTCUSDT", month=None).tick_size == 0.001
    # a month before any record has none; a re-ingest of a month replaces its record only
    assert inst_mod.resolve(lake, "BTCUSDT", month="2023-12") is None
    inst_mod.record_inferred(lake, fine, "2024-01")
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-01").tick_size == 0.001
    table = pl.read_parquet(lake.instruments_path)
    assert table.select("symbol", "month").rows() == [("BTCUSDT", m) for m in ("2024-01", "2024-02", "2024-03", "2024-04")]
    with pytest.raises(TypeError, match="month"):
        inst_mod.resolve(lake, "BTCUSDT")  # the month must be said, never defaulted


def test_an_undated_table_still_serves_the_months_not_ingested_since(lake):
    """A table written before records were dated: its rows serve every month without a dated
    record of its own (as the old table did); a month re-ingested since reads its own record."""
    old = {k: v for k, v in inst_mod.SCHEMA.items()}
    merged_then = replace(SPOT, price_precision=3, tick_size=0.001)  # merged across every month, later ones too
    lake.instruments_path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([inst_mod.asdict(merged_then)], schema=old).write_parquet(lake.instruments_path)
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-01").tick_size == 0.001
    inst_mod.record_inferred(lake, replace(SPOT, price_precision=2, tick_size=0.01), "2024-01")  # January re-ingested
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-01").tick_size == 0.01
    assert inst_mod.resolve(lake, "BTCUSDT", month="2024-02").tick_size == 0.001  # not re-ingested: as before
    table = pl.read_parquet(lake.instruments_path)
    assert table["month"].to_list() == [None, "2024-01"]
    # DuckDB shows a record per symbol x month (null: the undated row)
    from quant_assets.lake import duck

    assert duck.connect(lake).sql("SELECT month, tick_size FROM instruments ORDER BY month NULLS FIRST").fetchall() == [
        (None, 0.001), ("2024-01", 0.01)]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "instruments.toml"
    path.write_text(text)
    return path


def test_builtin_binance_fees_by_kind():
    # Binance's published VIP 0 rates: spot 0.1% / 0.1%, USD-M perpetual 0.02% / 0.05%
    assert fees_for(SPOT, "2024-03")[:2] == (0.001, 0.001)
    maker, taker, label = fees_for(PERP, "2024-03")
    assert (maker, taker) == (0.0002, 0.0005)
    assert "BINANCE perpetual VIP0" in label and "built-in" in label
    # a venue without a schedule keeps the instrument's own fees
    sim = Instrument("TOYUSD", "SIM", "TOY", "USD", 0, 1, 1.0, 0.1, 0.0003, 0.0007)
    assert fees_for(sim, "2024-03")[:2] == (0.0003, 0.0007)


def test_the_schedule_row_in_force_at_the_start_of_the_month_is_used(tmp_path):
    cfg = _toml(tmp_path, """
[[fees]]
venue = "BINANCE"
kind = "perpetual"
from = "2020-01-01"
maker = 0.0002
taker = 0.0004

[[fees]]
venue = "BINANCE"
kind = "perpetual"
from = 2024-03-15          # a TOML date: in force from mid-March, so April is the first month
maker = -0.0001            # a rebate
taker = 0.0003

[[fees]]
venue = "BINANCE"
kind = "perpetual"
tier = "VIP1"
from = "2020-01-01"
maker = 0.00016
taker = 0.0004
""")
    assert fees_for(PERP, "2024-03", cfg)[:2] == (0.0002, 0.0004)
    choice = fee_choice(PERP, "2024-04", cfg)
    assert (choice.maker, choice.taker, choice.effective, choice.tier) == (-0.0001, 0.0003, "2024-03-15", "VIP0")
    assert "row 2" in choice.source
    assert fees_for(PERP, "2019-06", cfg)[:2] == (0.0002, 0.0004)  # before the first row: the first row
    assert fees_for(replace(PERP, fee_tier="VIP1"), "2024-04", cfg)[:2] == (0.00016, 0.0004)
    # configured perpetual rows do not touch the built-in spot schedule
    assert fees_for(SPOT, "2024-04", cfg)[:2] == (0.001, 0.001)


def test_a_symbol_chooses_its_tier_and_per_symbol_fees_win(tmp_path, lake):
    cfg = _toml(tmp_path, """
[BTCUSDT-PERP]
venue = "BINANCE"
fee_tier = "VIP1"

[ETHUSDT-PERP]
venue = "BINANCE"
taker_fee = 0.0007

[[fees]]
venue = "BINANCE"
kind = "perpetual"
tier = "VIP1"
from = "2020-01-01"
maker = 0.00016
taker = 0.0004
""")
    btc = inst_mod.apply_overrides("BTCUSDT-PERP", PERP, inst_mod.overrides(cfg)["BTCUSDT-PERP"])
    assert btc.fee_tier == "VIP1" and fees_for(btc, "2024-01", cfg)[:2] == (0.00016, 0.0004)
    eth_inferred = replace(PERP, symbol="ETHUSDT-PERP", base_currency="ETH")
    eth = inst_mod.apply_overrides("ETHUSDT-PERP", eth_inferred, inst_mod.overrides(cfg)["ETHUSDT-PERP"])
    maker, taker, label = fees_for(eth, "2024-01", cfg)
    assert (maker, taker) == (0.0002, 0.0007)  # taker overridden, maker still from the VIP0 schedule
    assert "[ETHUSDT-PERP] taker_fee" in label


@pytest.mark.parametrize("text, message", [
    ("""
[[fees]]
venue = "BINANCE"
kind = "perpetual"
from = "2020-01-01"
until = "2024-02-01"
maker = 0.0002
taker = 0.0005

[[fees]]
venue = "BINANCE"
kind = "perpetual"
from = "2024-01-01"
maker = 0.0001
taker = 0.0004
""", r"\[\[fees\]\] row 2: overlaps .*row 1 for BINANCE perpetual VIP0"),
    ("""
[[fees]]
venue = "BINANCE"
kind = "spot"
from = "2020-01-01"
maker = 0.001
taker = 0.001

[[fees]]
venue = "BINANCE"
kind = "spot"
from = "2020-01-01"
maker = 0.0009
taker = 0.001
""", r"row 2: overlaps .*row 1"),
    ("""
[[fees]]
venue = "BINANCE"
kind = "spot"
from = "2020-01-01"
maker = 0.001
taker = 10
""", r"\[\[fees\]\] row 1 taker: 10 is outside ±0.05"),
    ("""
[[fees]]
venue = "BINANCE"
kind = "swap"
from = "2020-01-01"
maker = 0.001
taker = 0.001
""", r"\[\[fees\]\] row 1: unknown kind 'swap'"),
    ("""
[[fees]]
venue = "BINANCE"
kind = "spot"
from = "2020-01-01"
maker = 0.001
""", r"row 1: missing field\(s\) \['taker'\]"),
    ("""
[BTCUSDT]
kind = "perp"
""", r"\[BTCUSDT\] kind: unknown kind 'perp'"),
    ("""
[BTCUSDT]
maker_fee = 1.0
""", r"\[BTCUSDT\] maker_fee: 1.0 is outside"),
    ("""
[BTCUSDT]
fee_tier = "VIP9"
""", r"no fee schedule for BINANCE spot tier 'VIP9'"),
])
def test_bad_fee_settings_name_the_file_and_the_row(tmp_path, text, message):
    cfg = _toml(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        inst = inst_mod.apply_overrides("BTCUSDT", SPOT, inst_mod.overrides(cfg).get("BTCUSDT"))
        fees_for(inst, "2024-01", cfg)
    assert str(cfg) in str(err.value)


def test_margin_settings_default_by_kind_and_are_configurable(tmp_path):
    assert margin_for(SPOT) == (1.0, 0.0)
    assert margin_for(PERP) == (20.0, 0.004)
    cfg = _toml(tmp_path, """
[[margin]]
venue = "BINANCE"
kind = "perpetual"
max_leverage = 50
maintenance_margin = 0.005
""")
    assert margin_for(PERP, cfg) == (50.0, 0.005)
    assert margin_for(replace(PERP, venue="TARDIS"), cfg) == (20.0, 0.004)  # other venues keep the default


@pytest.mark.parametrize("row, message", [
    ("max_leverage = 0.5", r"\[\[margin\]\] row 1: max_leverage 0.5 must be a number ≥ 1"),
    ("maintenance_margin = 1.5", r"row 1: maintenance_margin 1.5 must be a fraction"),
    ('kind = "swap"', r"row 1: unknown kind 'swap'"),
    ("leverage = 10", r"row 1: unknown field\(s\) \['leverage'\]"),
])
def test_bad_margin_settings_name_the_file_and_the_row(tmp_path, row, message):
    kind = "" if row.startswith("kind") else 'kind = "perpetual"\n'
    cfg = _toml(tmp_path, f'[[margin]]\nvenue = "BINANCE"\n{kind}{row}\n')
    with pytest.raises(ValueError, match=message) as err:
        margin_for(PERP, cfg)
    assert str(cfg) in str(err.value)


def test_nautilus_gets_the_instrument_type_of_the_kind():
    from nautilus_trader.model.instruments import CryptoFuture, CryptoPerpetual, CurrencyPair

    from quant_assets.engines.nautilus import nautilus_instrument

    spot, perp = nautilus_instrument(SPOT), nautilus_instrument(PERP)
    assert type(spot) is CurrencyPair and str(spot.id) == "BTCUSDT.BINANCE"
    assert type(perp) is CryptoPerpetual and str(perp.id) == "BTCUSDT-PERP.BINANCE"
    assert perp.raw_symbol.value == "BTCUSDT" and not perp.is_inverse
    assert perp.settlement_currency.code == "USDT" and perp.base_currency.code == "BTC"
    assert float(perp.margin_init) == pytest.approx(1 / 20) and float(perp.margin_maint) == pytest.approx(0.004)
    fut = nautilus_instrument(replace(PERP, symbol="BTCUSDT-250328", kind="", raw_symbol=""))
    assert type(fut) is CryptoFuture and fut.raw_symbol.value == "BTCUSDT_250328"
    assert fut.expiration_ns == 1_743_148_800 * 10**9  # 2025-03-28T08:00:00Z
    fx = nautilus_instrument(Instrument("EURUSD", "FX", "EUR", "USD", 5, 0, 1e-5, 1.0, 0.0, 0.0))
    assert type(fx) is CurrencyPair


def test_run_backtest_charges_the_months_schedule_and_records_it(lake, tmp_path, monkeypatch):
    from quant_assets.engines.runner import run_backtest
    from quant_assets.strategies import registry
    from quant_assets_tests.scripted import around, write

    monkeypatch.setenv("QUANT_INSTRUMENTS", str(_toml(tmp_path, """
[[fees]]
venue = "BINANCE"
kind = "perpetual"
from = "2023-12-01"
maker = 0.0001
taker = 0.0004
""")))
    sym, month = "TESTUSDT-PERP", "2024-01"
    path = lake.ticks_path(sym, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(around([100.0] * 5 + [101.0] * 5 + [99.0] * 5), path)
    inst_mod.record_inferred(lake, Instrument(sym, "BINANCE", "TEST", "USDT", 2, 2, 0.01, 0.01, 0.001, 0.001), month)
    # on every quote update (bar_s = 0): the scripted month is 15 seconds long
    spec = replace(registry.EMA_CROSS, values={"fast_period": 2, "slow_period": 3, "notional": 1000.0, "equity_interval_s": 1.0,
                                               "bar_s": 0})
    out = run_backtest(lake, spec, sym, month)

    manifest = json.loads((out.directory / "manifest.json").read_text())
    assert manifest["fee_schedule"] | {"source": None} == {
        "venue": "BINANCE", "kind": "perpetual", "tier": "VIP0", "effective": "2023-12-01",
        "maker": 0.0001, "taker": 0.0004, "source": None, "label": manifest["fee_schedule"]["label"],
    }
    assert "[[fees]] row 1" in manifest["fee_schedule"]["source"]
    assert {k: manifest["account"][k] for k in ("max_leverage", "maintenance_margin")} == {"max_leverage": 20.0, "maintenance_margin": 0.004}
    assert manifest["instrument"]["kind"] == "perpetual" and manifest["instrument"]["taker_fee"] == 0.0004
    fills = pl.read_parquet(out.directory / "fills.parquet")
    assert len(fills) > 0 and (fills["liquidity"] == "taker").all()
    assert fills["fee"].to_list() == pytest.approx((fills["qty"] * fills["price"] * 0.0004).to_list(), rel=1e-5)


def test_instruments_toml_may_set_the_kind_and_is_validated_whole(tmp_path):
    cfg = _toml(tmp_path, """
[XBTUSD]
venue = "BITMEX"
kind = "perpetual"

[EURUSD]
venue = "FX"
""")
    over = inst_mod.overrides(cfg)
    xbt = inst_mod.apply_overrides("XBTUSD", None, over["XBTUSD"])
    assert (xbt.kind, xbt.raw_symbol, xbt.venue) == ("perpetual", "XBTUSD", "BITMEX")
    assert margin_for(xbt, cfg) == (20.0, 0.004)
    assert inst_mod.apply_overrides("EURUSD", None, over["EURUSD"]).kind == "fx"
    inst_mod.validate_config(cfg)  # a good file passes
    bad = _toml(tmp_path, '[BTCUSDT]\nvenue = "BINANCE"\nfee_tier = "VIP7"\n')
    with pytest.raises(ValueError, match=r"no fee schedule for BINANCE spot tier 'VIP7'"):
        inst_mod.validate_config(bad)


def test_fee_margin_and_profile_edits_move_the_venue_settings_of_that_venue_s_symbols_only(tmp_path, monkeypatch, lake):
    from quant_assets.assets.backtests import backtest_asset
    from quant_assets.assets.venues import venue_profile_asset
    from quant_assets.strategies.registry import EMA_CROSS
    from quant_assets.venues.scope import symbol_venue

    def versions() -> tuple[str, str, str, str]:
        (backtest,) = backtest_asset(EMA_CROSS).code_versions_by_key.values()
        (venue,) = venue_profile_asset().code_versions_by_key.values()
        return backtest, venue, symbol_venue(lake, "BTCUSDT-PERP").version, symbol_venue(lake, "ETHUSDT").version

    cfg = tmp_path / "instruments.toml"
    symbols = '[BTCUSDT-PERP]\nvenue = "BINANCE"\n[ETHUSDT]\nvenue = "BINANCE"\n'
    cfg.write_text(symbols)
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(cfg))
    before = versions()
    cfg.write_text(symbols + '[[fees]]\nvenue = "BINANCE"\nkind = "perpetual"\nfrom = "2019-09-01"\nmaker = -0.0001\ntaker = 0.0004\n')
    fees = versions()
    cfg.write_text(symbols + '[[margin]]\nvenue = "BINANCE"\nkind = "perpetual"\nmax_leverage = 10\nmaintenance_margin = 0.005\n')
    margin = versions()
    venues = tmp_path / "venues.toml"
    venues.write_text("[BINANCE.spot]\nentry_latency_ms = 20.0\n")
    monkeypatch.setenv("QUANT_VENUES", str(venues))
    profile = versions()
    # the backtest's code version no longer carries the venue: it enters per symbol, as a data version
    assert len({v[0] for v in (before, fees, margin, profile)}) == 1
    assert len({v[1] for v in (before, fees, margin, profile)}) == 4  # every edit asks each symbol to recompute
    # the perpetual's settings moved with the perpetual's fees and margin, the spot pair's with the spot profile
    assert len({before[2], fees[2], margin[2]}) == 3 and profile[2] == margin[2]
    assert before[3] == fees[3] == margin[3] != profile[3]

