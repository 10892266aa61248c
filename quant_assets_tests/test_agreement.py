"""Engine agreement: on a scripted path with one quote per bar the vectorised sweep and
NautilusTrader must agree exactly (same orders, fees and PnL); on real-looking ticks the check
flags the gap when the tolerance is tighter than it."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from quant_assets.lake import instruments as inst_mod
from quant_assets.research.agreement import gaps, run_agreement
from quant_assets.research.run import run_bars, run_sweep_slice
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets_tests.scripted import INSTRUMENT, around, write

MIN = 60_000_000_000


def _stepped_mids(n: int, seed: int = 3) -> list[float]:
    """Mid prices that step between levels where a 1,000 notional is a whole number of lots
    (so neither engine rounds a quantity), holding each level 10 to 40 bars: the EMAs cross
    at every step and never tie."""
    rng = np.random.default_rng(seed)
    levels = (80.0, 100.0, 125.0)
    mids, level = [], 100.0
    while len(mids) < n:
        mids += [level] * int(rng.integers(10, 41))
        level = float(rng.choice([x for x in levels if x != level]))
    return mids[:n]


@pytest.fixture
def scripted_month(lake, tmp_path, monkeypatch):
    """2024-01 of TESTUSDT: one quote a minute (mid ± 0.5), 1,600 minutes, on a venue without
    order latency: the bar approximation fills at the signal's bar, and exact agreement needs
    the event-driven leg to fill at the signal's quote (with latency it fills at the next one)."""
    venues = tmp_path / "venues.toml"
    venues.write_text(f"[{INSTRUMENT.venue}.{INSTRUMENT.kind}]\nentry_latency_ms = 0.0\nresponse_latency_ms = 0.0\n")
    monkeypatch.setenv("QUANT_VENUES", str(venues))
    write(around(_stepped_mids(1_600), half_spread=0.5, step=MIN, size=1_000_000.0), lake.ticks_path("TESTUSDT", "2024-01"))
    inst_mod.record_inferred(lake, INSTRUMENT, "2024-01")
    run_bars(lake, "TESTUSDT", "2024-01")
    # A small notional: this path loses on every switch, and vectorbt caps orders by cash.
    spec = EMA_CROSS.with_values({"notional": 1_000.0})
    out = run_sweep_slice(lake, spec, "TESTUSDT", "2024-01", INSTRUMENT.taker_fee, 365, 100_000.0)
    assert out.table.height == 100
    return lake


def test_both_engines_agree_exactly_when_a_bar_is_a_quote(scripted_month):
    lake = scripted_month
    out = run_agreement(lake, EMA_CROSS.with_values({"notional": 1_000.0}), "TESTUSDT", "2024-01", tolerance=0.0, top=3)
    t = out.table
    assert t.height == 3 and t["quotes_per_bar"].to_list() == [1.0] * 3
    for row in t.iter_rows(named=True):
        assert json.loads(row["event_params"]) == json.loads(row["params_bars"])  # one quote per bar: same lengths
        assert row["vector_orders"] == row["event_orders"] >= 5
        assert row["event_fees"] == pytest.approx(row["vector_fees"], rel=1e-12)
        assert row["event_pnl"] == pytest.approx(row["vector_pnl"], rel=1e-9, abs=1e-6)
        assert row["agree"], row
    # Order by order: same time, side, quantity, price and fee.
    vf = pl.read_parquet(out.directory / "vector_fills.parquet").filter(pl.col("sweep_rank") == 1)
    ef = (pl.read_parquet(out.directory / "runs" / "rank1" / "fills.parquet")
          .group_by("order_id", maintain_order=True)
          .agg(pl.col("ts").first(), pl.col("side").first(), pl.col("qty").sum(), pl.col("price").first(), pl.col("fee").sum()))
    assert vf["ts"].to_list() == ef["ts"].to_list()
    assert vf["side"].to_list() == ef["side"].cast(pl.Int8).to_list()
    np.testing.assert_allclose(vf["qty"].to_numpy(), ef["qty"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(vf["price"].to_numpy(), ef["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(vf["fee"].to_numpy(), ef["fee"].to_numpy(), rtol=1e-9)
    # The vectorised leg is the sweep's own simulation plus the closing order.
    grid = pl.read_parquet(lake.sweep_dir("ema_cross", "TESTUSDT", "2024-01") / "grid.parquet")
    assert grid.filter(pl.col("rank") == 1)["orders"][0] == t["vector_orders"][0] - 1


def test_gaps_are_relative_and_scaled_so_a_pnl_near_zero_is_not_huge():
    assert gaps(10, 10, 5.0, 5.0, 1.0, 1.0) == {"orders_gap": 0.0, "fees_gap": 0.0, "pnl_gap": 0.0}
    g = gaps(10, 20, 5.0, 10.0, 0.01, -0.01)
    assert g["orders_gap"] == 0.5 and g["fees_gap"] == 0.5
    assert g["pnl_gap"] == pytest.approx(0.02 / 10.0)  # scaled by the fee bill, not by |PnL| = 0.01
    assert gaps(0, 0, 0.0, 0.0, 0.0, 0.0) == {"orders_gap": 0.0, "fees_gap": 0.0, "pnl_gap": 0.0}


def test_the_asset_stores_the_comparison_and_its_check_warns_past_the_tolerance(lake, instance, monkeypatch):
    import dagster as dg

    from quant_assets.definitions import ASSETS
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake import duck
    from resources import CriticResource, LakeResource

    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    run = lambda sel: dg.materialize(ASSETS, selection=sel, partition_key="2024-01|BTCUSDT", instance=instance,  # noqa: E731
                                     resources={"lake": LakeResource(), "critic": CriticResource()})
    assert run(["ticks", "bars_1m", "sweep_ema_cross"]).success
    # Bars of a random-walk feed with trades: the two engines see different paths and cannot agree exactly.
    monkeypatch.setenv("QUANT_AGREEMENT_TOLERANCE", "0")
    strict = run(["agreement_ema_cross"])
    assert strict.success  # a failed check warns; it does not fail the run
    (check,) = strict.get_asset_check_evaluations()
    assert check.check_name == "engines_agree" and not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "> 0%: the bar approximation misleads here" in check.description
    t = pl.read_parquet(lake.agreement_dir("ema_cross", "BTCUSDT", "2024-01") / "agreement.parquet")
    assert t.height == 1 and t["sweep_rank"][0] == 1 and t["quotes_per_bar"][0] > 0 and not t["agree"][0]
    assert t["vector_orders"][0] > 0 and t["event_orders"][0] > 0
    monkeypatch.setenv("QUANT_AGREEMENT_TOLERANCE", "1000")
    loose = run(["agreement_ema_cross"])
    (check,) = loose.get_asset_check_evaluations()
    assert check.passed and "agree within" in check.description
    (mat,) = loose.asset_materializations_for_node("agreement_ema_cross")
    assert mat.metadata["agree"].value is True and "| 1 |" in mat.metadata["comparison"].value
    assert duck.connect(lake).execute("SELECT count(*) FROM agreements WHERE agree").fetchone()[0] == 1
    monkeypatch.setenv("QUANT_AGREEMENT_TOLERANCE", "a lot")
    bad = dg.materialize(ASSETS, selection=["agreement_ema_cross"], partition_key="2024-01|BTCUSDT", instance=instance,
                         resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    assert not bad.success
    assert "QUANT_AGREEMENT_TOLERANCE='a lot': expected a fraction >= 0" in str(bad.get_step_failure_events()[0].event_specific_data.error)
