"""The ticks asset: metadata, data version, blocking checks that protect the published partition."""

from __future__ import annotations

import hashlib

import dagster as dg

from quant_assets.definitions import ASSETS
from quant_assets.lake import instruments
from quant_assets_tests import builders as b
from resources import CriticResource, LakeResource

PK = "2024-01|BTCUSDT"


def _materialize(instance):
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    return dg.materialize(ASSETS, selection=["ticks"], partition_key=PK, instance=instance, resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)


def test_metadata_data_version_and_checks(lake, instance):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4))
    lines = b.binance_trades_csv(3).splitlines()
    lines[0] = lines[0].replace("42000.00", "0")
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", "\n".join(lines) + "\n")
    res = _materialize(instance)
    assert res.success
    (mat,) = res.asset_materializations_for_node("ticks")
    md = mat.metadata
    assert md["dagster/row_count"].value == 6 and md["quotes"].value == 4 and md["trades"].value == 2
    assert md["rejected_rows"].value == 1
    assert md["path"].value.endswith("ticks/symbol=BTCUSDT/month=2024-01/part-0.parquet")
    file_sha = hashlib.sha256(lake.ticks_path("BTCUSDT", "2024-01").read_bytes()).hexdigest()
    assert mat.tags["dagster/data_version"] == file_sha[:24]
    assert mat.tags["dagster/code_version"] == "ticks-v1"
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(
        ["timestamps_non_decreasing", "no_crossed_quotes", "positive_prices_and_sizes", "precision_matches_instrument", "no_duplicates",
         "quotes_match_book"], True  # the last: not applicable, no depth file
    ) | {"calendar_complete": False}  # a few seconds of January 1st: 30 days without rows (a warning)
    inst = instruments.resolve(lake, "BTCUSDT", month="2024-01")
    assert (inst.venue, inst.quote_currency, inst.price_precision, inst.tick_size) == ("BINANCE", "USDT", 2, 0.01)


def test_a_failing_blocking_check_keeps_the_published_partition(lake, instance, tmp_path, monkeypatch):
    b.write(lake.landing_dir("BTCUSDT") / "a.csv", b.binance_trades_csv(3))
    assert _materialize(instance).success
    published = lake.ticks_path("BTCUSDT", "2024-01").read_bytes()
    # new data with a finer price grid than the configured instrument allows
    cfg = tmp_path / "instruments.toml"
    cfg.write_text("[BTCUSDT]\ntick_size = 0.5\n")
    monkeypatch.setenv("QUANT_INSTRUMENTS", str(cfg))
    b.write(lake.landing_dir("BTCUSDT") / "b.csv", b.binance_trades_csv(3, start_id=50, t0_ms=b.JAN_MS + 60_000).replace("42000.00", "42000.25"))
    res = _materialize(instance)
    assert not res.success
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert checks["precision_matches_instrument"].passed is False
    assert checks["precision_matches_instrument"].metadata["offending_rows"].value == 1
    assert lake.ticks_path("BTCUSDT", "2024-01").read_bytes() == published


def test_instrument_overrides_apply_field_by_field(lake, tmp_path):
    cfg = tmp_path / "i.toml"
    cfg.write_text('[EURUSD]\nvenue = "LMAX"\nprice_precision = 5\n')
    inst = instruments.apply_overrides("EURUSD", None, instruments.overrides(cfg)["EURUSD"])
    assert (inst.venue, inst.tick_size, inst.quote_currency, inst.source) == ("LMAX", 1e-05, "USD", "config")
    cfg.write_text("[EURUSD]\nfee = 1\n")
    import pytest

    with pytest.raises(ValueError, match="unknown field"):
        instruments.overrides(cfg)
