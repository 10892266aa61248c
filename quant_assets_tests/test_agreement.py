"""Engine agreement: on a scripted path with one quote per bar the vectorised sweep and
NautilusTrader must agree exactly (same orders, fees and PnL); on real-looking ticks the check
flags the gap when the tolerance is tighter than it."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from quant_assets.lake import instruments as inst_mod
from quant_assets.research.agreement import decompose, run_agreement, verdict
from quant_assets.research.run import run_bars, run_sweep_slice
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets_tests.scripted import INSTRUMENT, T0, around, write

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
def scripted_month(lake):
    """2024-01 of TESTUSDT: one quote a minute (mid ± 0.5), 1,600 minutes, each a little after
    its minute's start, under the built-in venue profile (5 ms order latency): a decision at a
    bar's close meets the next quote, the next bar's first, in both legs."""
    write(around(_stepped_mids(1_600), half_spread=0.5, step=MIN, size=1_000_000.0, t0=T0 + 7_000_000_000),
          lake.ticks_path("TESTUSDT", "2024-01"))
    inst_mod.record_inferred(lake, INSTRUMENT, "2024-01")
    run_bars(lake, "TESTUSDT", "2024-01")
    # A small notional: this path loses on every switch, and vectorbt caps orders by cash.
    spec = EMA_CROSS.with_values({"notional": 1_000.0})
    out = run_sweep_slice(lake, spec, "TESTUSDT", "2024-01", INSTRUMENT.taker_fee, 365, 100_000.0, lot=INSTRUMENT.lot_size)
    assert out.table.height == 100
    return lake


def test_both_engines_trade_the_same_signal_exactly_on_a_scripted_path(scripted_month):
    lake = scripted_month
    out = run_agreement(lake, EMA_CROSS.with_values({"notional": 1_000.0}), "TESTUSDT", "2024-01", tolerance=0.0, top=3)
    t = out.table
    assert t.height == 3
    for row in t.iter_rows(named=True):
        assert json.loads(row["event_params"]) == json.loads(row["params_bars"])  # the same strategy: same lengths
        assert row["vector_orders"] == row["event_orders"] == row["matched_orders"] >= 5
        assert row["side_mismatches"] == 0 and row["unmatched_share"] == 0.0
        assert row["event_fees"] == pytest.approx(row["vector_fees"], rel=1e-12)
        assert row["event_pnl"] == pytest.approx(row["vector_pnl"], rel=1e-9, abs=1e-6)
        for c in ("latency", "spread", "size", "fees", "unmatched"):
            assert row[f"gap_{c}"] == pytest.approx(0.0, abs=1e-6), (c, row)
        assert row["agree"], row
    # Order by order: same time, side, quantity, price and fee.
    vf = pl.read_parquet(out.directory / "vector_fills.parquet").filter(pl.col("sweep_rank") == 1)
    ef = (pl.read_parquet(out.directory / "runs" / "rank1" / "fills.parquet")
          .group_by("order_id", maintain_order=True)
          .agg(pl.col("ts").first(), pl.col("side").first(), pl.col("qty").sum(), pl.col("price").first(), pl.col("fee").sum()))
    # Each decision meets the next bar's first quote in both legs; the month's close goes out at
    # the last quote and reaches the book 5 ms later (the venue's latency) at the same touch.
    assert vf["ts"].to_list()[:-1] == ef["ts"].to_list()[:-1]
    assert ef["ts"][-1] - vf["ts"][-1] == 5_000_000
    assert vf["side"].to_list() == ef["side"].cast(pl.Int8).to_list()
    np.testing.assert_allclose(vf["qty"].to_numpy(), ef["qty"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(vf["price"].to_numpy(), ef["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(vf["fee"].to_numpy(), ef["fee"].to_numpy(), rtol=1e-9)
    # The vectorised leg is the sweep's own simulation plus the closing order.
    grid = pl.read_parquet(lake.sweep_dir("ema_cross", "TESTUSDT", "2024-01") / "grid.parquet")
    assert grid.filter(pl.col("rank") == 1)["orders"][0] == t["vector_orders"][0] - 1


def test_a_gap_splits_exactly_into_latency_spread_size_fees_and_unmatched_orders():
    # Vectorised: buy 10 @ 100.5 (mid 100), sell 10 @ 101.5 (mid 102). Event-driven: the buy a
    # quote later at 101.0 (mid 100.8, half spread 0.2), 9 sold at 101.0 (mid 101.5) and one more
    # order of its own; fees differ.
    v = pl.DataFrame({"ts": [1, 2], "side": [1, -1], "qty": [10.0, 10.0], "price": [100.5, 101.5], "fee": [1.0, 1.0],
                      "mid": [100.0, 102.0]}, schema_overrides={"side": pl.Int8})
    e = pl.DataFrame({"ts": [3, 4, 5], "side": [1, -1, 1], "qty": [10.0, 9.0, 1.0], "price": [101.0, 101.0, 100.0],
                      "fee": [1.5, 1.0, 0.1], "mid": [100.8, 101.5, 99.9]}, schema_overrides={"side": pl.Int8})
    d = decompose(v, e)
    cash = lambda df: float((-df["side"].cast(pl.Float64) * df["qty"] * df["price"]).sum() - df["fee"].sum())  # noqa: E731
    gap = cash(e) - cash(v)
    c = d["components"]
    assert d["matched"] == 2 and d["side_mismatches"] == 0 and d["max_fill_delay_s"] == pytest.approx(2e-9)
    assert sum(c.values()) == pytest.approx(gap, abs=1e-9)
    assert c["latency"] == pytest.approx(-(10 * 0.8) + 9 * (101.5 - 102.0))
    assert c["fees"] == pytest.approx(-0.6) and c["unmatched"] == pytest.approx(-100.0)


def test_legs_trading_different_signals_do_not_agree():
    assert verdict(50, 52, 0, 0.0, 0.1) == []  # two orders apart: a flatten racing a reversal
    assert "more than 2 apart" in verdict(50, 60, 0, 0.0, 0.1)[0]
    assert verdict(50, 50, 3, 0.0, 0.1) == ["3 matched order(s) of opposite sides"]
    assert "unmatched orders carry 20% of the scale > 10%" in verdict(50, 51, 0, 0.2, 0.1)[0]


def test_the_asset_stores_the_comparison_and_checks_the_legs_trade_one_signal(lake, instance, monkeypatch):
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
    # A random-walk feed with trades under the built-in venue (5 ms latency): the same signal in
    # both legs, the PnL gap made of execution (where the market moved while orders were in
    # flight, the spread and slippage actually paid, fees).
    res = run(["agreement_ema_cross"])
    (check,) = res.get_asset_check_evaluations()
    assert check.check_name == "engines_agree" and check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "both legs trade the same signal" in check.description and "latency" in check.description
    t = pl.read_parquet(lake.agreement_dir("ema_cross", "BTCUSDT", "2024-01") / "agreement.parquet")
    assert t.height == 1 and t["sweep_rank"][0] == 1 and t["agree"][0]
    row = t.row(0, named=True)
    assert row["vector_orders"] == row["event_orders"] == row["matched_orders"] > 0 and row["side_mismatches"] == 0
    parts = sum(row[f"gap_{c}"] for c in ("latency", "spread", "size", "fees", "unmatched"))
    assert parts == pytest.approx(row["pnl_gap"], abs=1e-6) and row["gap_unmatched"] == 0.0
    (mat,) = res.asset_materializations_for_node("agreement_ema_cross")
    assert mat.metadata["agree"].value is True and "| 1 |" in mat.metadata["comparison"].value
    assert duck.connect(lake).execute("SELECT count(*) FROM agreements WHERE agree").fetchone()[0] == 1
    monkeypatch.setenv("QUANT_AGREEMENT_TOLERANCE", "a lot")
    bad = dg.materialize(ASSETS, selection=["agreement_ema_cross"], partition_key="2024-01|BTCUSDT", instance=instance,
                         resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    assert not bad.success
    assert "QUANT_AGREEMENT_TOLERANCE='a lot': expected a fraction >= 0" in str(bad.get_step_failure_events()[0].event_specific_data.error)
