"""The account both engines trade through: leverage limits, liquidation, equity never below
zero, and the invariants every result must pass (engines.account, engines.invariants)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from quant_assets.engines.account import AccountRules, rules_for
from quant_assets.engines.hft import run_hftbacktest
from quant_assets.engines.invariants import check_backtest, round_trips
from quant_assets.engines.nautilus import run_nautilus
from quant_assets.engines.result import annotate_fills, equity_curve, finalize_with_flows, raw_fills, summary
from quant_assets.engines.runner import check_sizes
from quant_assets.ingest.synthetic import SyntheticSpec, generate
from quant_assets.lake.instruments import Instrument
from quant_assets.strategies.registry import EMA_CROSS, MARKET_MAKER
from quant_assets.strategies.spec import ParamError
from quant_assets_tests.scripted import INSTRUMENT, T0, around, write

EMA = "quant_assets.strategies.ema_cross:EmaCross"
EMA_PARAMS = {"fast_period": 2, "slow_period": 3, "notional": 10_000.0, "equity_interval_s": 1.0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_leverage": 0.5}, "at least 1"),
    ({"max_leverage": 10.0, "maintenance_margin": 0.2}, r"1/max_leverage"),
    ({"max_leverage": 1.0, "maintenance_margin": -0.1}, "maintenance_margin"),
])
def test_account_rules_refuse_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AccountRules(1_000.0, **kwargs)


def test_leverage_limits_new_exposure_but_never_a_reduction():
    spot = rules_for("spot", 1_000.0)
    assert (spot.max_leverage, spot.maintenance_margin) == (1.0, 0.0)
    assert spot.allows(0.0, 9.0, 100.0, 1_000.0) and not spot.allows(0.0, 11.0, 100.0, 1_000.0)
    assert spot.allows(50.0, -50.0, 100.0, 10.0)  # closing is always allowed
    assert not spot.allows(5.0, -20.0, 100.0, 1_000.0)  # a flip to -15 (1,500) is new exposure
    perp = rules_for("perpetual", 1_000.0)
    assert perp.allows(0.0, 190.0, 100.0, 1_000.0) and perp.must_liquidate(190.0, 100.0, 70.0)
    assert not perp.must_liquidate(190.0, 100.0, 80.0)


@pytest.mark.parametrize(("crash", "insured"), [(91.2, False), (90.0, True)], ids=["to-maintenance", "gap-through-zero"])
def test_a_leveraged_long_through_a_crash_is_liquidated_and_equity_never_goes_below_zero(tmp_path: Path, crash, insured):
    # 10x long on a perpetual (99 at 101.01 on 1,000 of cash), then the price drops in one tick:
    # to 91.2 equity is ~18, under the 0.4% maintenance margin (~36): the position is closed at
    # the touch and the strategy stops, although its signal keeps flipping afterwards. To 90 the
    # account is already below zero: the shortfall is the insurance fund's, equity ends at 0.
    mids = [100.0] * 5 + [101.0] * 3 + [crash] * 3 + [90.0, 91.0, 89.0, 92.0] * 3
    path = write(around(mids), tmp_path / "t.parquet")
    rules = rules_for("perpetual", 1_000.0)
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, starting_cash=1_000.0, rules=rules)
    fills, equity, flows = finalize_with_flows(run)
    assert run.counters["liquidations"] == 1 and len(run.account_events) == 1
    assert fills["reason"].to_list() == [None, "liquidation"]
    assert fills["ts"][-1] == run.account_events[0]["ts"]  # nothing after the liquidation
    assert float(equity["equity"][-1]) >= 0.0
    assert (flows["kind"].to_list() == ["insurance"]) is insured
    assert float(equity["equity"][-1]) == pytest.approx(0.0 if insured else 1_000.0 + summary(fills, equity, 1_000.0, flows)["pnl"])
    assert all(c.passed for c in check_backtest(fills, equity.filter(pl.col("ts") >= fills["ts"][-1]), flows, 1_000.0, EMA_PARAMS)[1:])
    assert summary(fills, equity, 1_000.0, flows)["liquidated"] == 1


def test_a_gap_through_zero_is_absorbed_as_insurance_not_negative_equity():
    # Long 10 at 100 on 100 of cash (10x); the market gaps to 80: closing at 80 leaves -100.
    raw = raw_fills({"ts": [1, 2], "side": [1, -1], "qty": [10.0, 10.0], "price": [100.0, 80.0], "fee": [0.0, 0.0],
                     "liquidity": ["taker", "taker"], "order_id": ["a", "b"], "reason": [None, "liquidation"]})
    from quant_assets.engines.result import EngineRun

    run = EngineRun(raw, pl.DataFrame({"ts": [0, 1, 2], "mid": [100.0, 100.0, 80.0]}), "x", "0", 3, 1.0, 100.0, "USDT")
    fills, equity, flows = finalize_with_flows(run)
    assert flows.rows() == [(2, "insurance", 100.0)]
    assert equity["equity"].to_list()[-1] == pytest.approx(0.0)
    assert all(c.passed for c in check_backtest(fills, equity, flows, 100.0, {}))


def test_orders_past_the_leverage_limit_are_refused_and_counted(tmp_path: Path):
    # 10,000 of notional on 5,000 of spot cash: every entry is refused, none is sent.
    path = write(around([100.0] * 5 + [101.0] * 5 + [99.0] * 5 + [101.0] * 5), tmp_path / "t.parquet")
    run = run_nautilus(path, INSTRUMENT, EMA, EMA_PARAMS, starting_cash=5_000.0, rules=rules_for("spot", 5_000.0))
    assert len(run.fills) == 0 and run.counters["orders_refused_leverage"] == 3


def test_a_size_the_account_can_never_carry_is_refused_before_the_engine_starts():
    spec = EMA_CROSS.with_values({"notional": 1e9})
    with pytest.raises(ParamError, match=r"ema_cross.notional = 1,000,000,000.0 is more than the account can carry \(100,000 at 1x"):
        check_sizes(spec, spec.resolved(), rules_for("spot", 100_000.0), "BTCUSDT 2024-01")
    check_sizes(spec, spec.resolved(), rules_for("perpetual", 100_000_000.0), "x")  # 20x of 1e8 carries it


@pytest.fixture(scope="module")
def synthetic_month(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mm") / "t.parquet"
    generate(SyntheticSpec("BTCUSDT", "2024-01", events=20_000)).write_parquet(path)
    return path


#: 1% fees on every fill: the market maker pays far more than it earns.
COSTLY = Instrument("BTCUSDT", "SIM", "BTC", "USDT", 2, 4, 0.01, 0.0001, 0.01, 0.01)
MM_PARAMS = MARKET_MAKER.resolved({"order_notional": 5_000.0, "max_position_orders": 2})


def test_the_market_maker_stops_quoting_what_its_spot_account_cannot_carry(synthetic_month: Path):
    run = run_hftbacktest(synthetic_month, COSTLY, MM_PARAMS, starting_cash=20_000.0, rules=rules_for("spot", 20_000.0))
    fills, equity, flows = finalize_with_flows(run)
    assert run.counters["orders_refused_leverage"] >= 1 and run.counters["liquidations"] == 0
    # once equity is under one order's notional nothing more is quoted: the account keeps what is left
    assert 0.0 < float(equity["equity"].min()) < 5_000.0
    assert float(equity["equity"][-1]) == pytest.approx(20_000.0 + summary(fills, equity, 20_000.0, flows)["pnl"])
    assert all(c.passed for c in check_backtest(fills, equity, flows, 20_000.0, MM_PARAMS))


def test_the_market_maker_is_liquidated_at_its_maintenance_margin(synthetic_month: Path):
    rules = AccountRules(20_000.0, max_leverage=20.0, maintenance_margin=0.04)
    run = run_hftbacktest(synthetic_month, COSTLY, MM_PARAMS, starting_cash=20_000.0, rules=rules)
    fills, equity, flows = finalize_with_flows(run)
    assert run.counters["liquidations"] == 1, run.notes
    assert run.account_events[0]["equity"] <= max(rules.ruin_floor, 0.04 * abs(run.account_events[0]["position"]) * run.account_events[0]["mark"])
    assert "liquidation" in fills["reason"].to_list()
    assert int(fills.filter(pl.col("reason") == "liquidation")["ts"].min()) >= run.account_events[0]["ts"]
    assert float(equity["equity"].min()) >= 0.0
    assert all(c.passed for c in check_backtest(fills, equity, flows, 20_000.0, MM_PARAMS))


def test_invariants_catch_a_stuck_position_and_an_equity_curve_that_does_not_reconcile():
    # A bracket strategy's position held 700 h and closed by the month's end without an exit.
    h = 3600 * 10**9
    fills = annotate_fills(raw_fills({
        "ts": [T0, T0 + 700 * h], "side": [-1, 1], "qty": [1.0, 1.0], "price": [2536.0, 1394.0], "fee": [0.0, 0.0],
        "liquidity": ["maker", "taker"], "order_id": ["e", "f"], "reason": ["entry", None],
    }))
    equity = equity_curve(fills, pl.DataFrame({"ts": [T0, T0 + 700 * h], "mid": [2536.0, 1394.0]}), 100_000.0)
    out = {c.name: c for c in check_backtest(fills, equity, pl.DataFrame(schema={"ts": pl.Int64(), "kind": pl.String(), "amount": pl.Float64()}),
                                             100_000.0, {"max_hold_s": 14_400.0})}
    assert out["equity_consistent"].passed
    assert not out["exits_always_working"].passed and not out["holding_within_limits"].passed
    assert round_trips(fills)["hold_s"].to_list() == [700 * 3600.0]
    broken = equity.with_columns(equity=pl.col("equity") + 5.0)
    assert not {c.name: c for c in check_backtest(fills, broken, pl.DataFrame(schema={"ts": pl.Int64(), "kind": pl.String(), "amount": pl.Float64()}),
                                                  100_000.0, {})}["equity_consistent"].passed
