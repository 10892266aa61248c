"""The realism sensitivity: a backtest slice re-run at latency × 0/2/5 and costs × 1.5, beside
its own result, which it never replaces; the fragile verdict; the trials ledger's kinds."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import polars as pl
import pytest

from quant_assets.analytics import trials
from quant_assets.definitions import ASSETS
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import duck
from quant_assets.strategies import registry
from quant_assets.venues.sensitivity import SCENARIOS, harsher_fee, judge, run_sensitivity
from resources import CriticResource, LakeResource

PK = "2024-01|BTCUSDT"


def _row(scenario: str, pnl: float, fills: int = 10) -> dict:
    return {"scenario": scenario, "pnl": pnl, "fills": fills}


def test_fragile_means_the_sign_of_the_pnl_depends_on_the_venue() -> None:
    assert judge([_row("baseline", 120.0), _row("latency_x2", 80.0), _row("fees_x1.5", 5.0)]) == (
        False, "the PnL keeps its sign (+) in every scenario")
    fragile, why = judge([_row("baseline", 120.0), _row("latency_x5", -40.0), _row("fees_x1.5", 30.0)])
    assert fragile and "latency_x5 -40.00" in why and "fees_x1.5" not in why
    assert judge([_row("baseline", 0.0, 0), _row("latency_x2", 0.0, 0)])[0] is False
    # a rebate is made smaller, a fee larger: never kinder
    assert harsher_fee(0.001, 1.5) == pytest.approx(0.0015) and harsher_fee(-0.0001, 1.5) == pytest.approx(-0.0001 / 1.5)


@pytest.fixture
def built_slice(lake, instance):
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=5, events=20_000))
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = dg.materialize(ASSETS, selection=["ticks", "funding", "backtest_ema_cross", "sensitivity_ema_cross"],
                            partition_key=PK, instance=instance,
                            resources={"lake": LakeResource(), "critic": CriticResource()}, raise_on_error=False)
    assert result.success
    return result


def test_the_sensitivity_re_runs_the_slice_without_touching_its_backtest(lake, instance, built_slice) -> None:
    spec = registry.load()["ema_cross"]
    bt = lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bt.iterdir()}
    manifest = json.loads((bt / "manifest.json").read_text())
    table = pl.read_parquet(lake.sensitivity_dir("ema_cross", "BTCUSDT", "2024-01") / "sensitivity.parquet")
    assert table["scenario"].to_list() == ["baseline", *(n for n, _, _ in SCENARIOS)]
    base = table.row(0, named=True)
    assert base["pnl"] == pytest.approx(manifest["summary"]["pnl"])
    inst = manifest["instrument"]
    assert base["venue_profile"] == manifest["venue_profile"]["label"] == f"{inst['venue']}.spot@{manifest['venue_profile']['version']}"
    feed = manifest["feed_latency"]
    assert feed["status"] == "unknown" if feed["share_with_recv_time"] == 0 else feed["median_ms"] > 0
    rows = {r["scenario"]: r for r in table.iter_rows(named=True)}
    # ema_cross trades with market orders only: at the profile's latency and costs × 1.5 it makes
    # the same fills, and pays exactly 1.5 × the fees
    assert rows["fees_x1.5"]["fills"] == base["fills"] > 0
    assert rows["fees_x1.5"]["fees"] == pytest.approx(1.5 * base["fees"], rel=1e-9)
    assert rows["fees_x1.5"]["pnl"] == pytest.approx(base["pnl"] - 0.5 * base["fees"], rel=1e-6, abs=1e-6)
    assert rows["latency_x5"]["venue_profile"] != base["venue_profile"]  # a scaled profile is another profile
    assert all(r["sharpe"] is not None or r["sharpe_null_reason"] for r in rows.values())

    # the sensitivity again: same report, the backtest's files untouched
    out = run_sensitivity(lake, spec, "BTCUSDT", "2024-01")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bt.iterdir()} == before
    (mat,) = built_slice.asset_materializations_for_node("sensitivity_ema_cross")
    assert mat.tags["dagster/data_version"] == out.data_version
    assert mat.metadata["fragile"].value == out.fragile
    assert mat.metadata["pnl_baseline"].value == pytest.approx(base["pnl"])
    (check,) = built_slice.get_asset_check_evaluations()[-1:]
    assert check.check_name == "sign_robust_to_venue" and check.passed == (not out.fragile)

    # the re-runs are in the ledger as what they are: not parameter sets of the strategy
    ledger = trials.read(lake)
    assert ledger.filter(pl.col("kind") == trials.VENUE_SENSITIVITY).height == len(SCENARIOS)
    assert trials.count(lake, spec.impl) == 1
    with duck.connect(lake) as con:
        assert con.execute("select count(*) from sensitivity where strategy = 'ema_cross'").fetchone()[0] == 1 + len(SCENARIOS)
