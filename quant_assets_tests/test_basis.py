"""Multi-instrument backtests (one NautilusTrader engine, one account) and the basis strategy's
PnL split, on scripted spot and perpetual months whose fills and funding are known by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from quant_assets.analytics.basis_pnl import pnl_split
from quant_assets.engines.multi import ACCOUNT, Member, finalize_multi, merge_streams, run_multi
from quant_assets.engines.multi_runner import run_multi_backtest
from quant_assets.funding.schema import FUNDING_SCHEMA
from quant_assets.lake.instruments import Instrument
from quant_assets.strategies.basis import BASIS, carry_apr
from quant_assets.venues.profile import frictionless
from quant_assets_tests import scripted

MINUTE = 60_000_000_000
HOUR = 60 * MINUTE
N = 1440  # one quote a minute for a day, each member
# Taker fee 2 bp on both legs; tick and lot 0.01.
SPOT = Instrument("BTCUSDT", "BINANCE", "BTC", "USDT", 2, 2, 0.01, 0.01, 0.0002, 0.0002)
PERP = Instrument("BTCUSDT-PERP", "BINANCE", "BTC", "USDT", 2, 2, 0.01, 0.01, 0.0002, 0.0002)


def funding_rows() -> pl.DataFrame:
    # 00:00 +1 bp (longs pay), 08:00 +2 bp, 16:00 -1 bp: the last turns the carry negative.
    return pl.DataFrame({
        "ts": [scripted.T0, scripted.T0 + 8 * HOUR, scripted.T0 + 16 * HOUR], "rate": [0.0001, 0.0002, -0.0001],
        "interval_h": [8.0] * 3, "mark_px": [100.10, 100.0, 100.0], "source": ["scripted"] * 3, "src_line": [1, 2, 3],
    }).cast(FUNDING_SCHEMA)


def test_basis_month_gives_the_known_pnl_split(lake):
    """Spot mid 100.00 all day; perp mid 100.10 until 06:00, then 100.00 (the basis converges);
    spreads 0.02. At 00:00 the carry is 100 x (0.001 x 8760/24 + 0.0001 x 8760/8) = 47.45 %/yr
    > 12: buy 100 spot at 100.01, sell 100 perp at 100.09. At 16:00 the -1 bp rate makes it
    -10.95 %/yr < 5: sell spot at 99.99, buy perp at 100.01 (not < -12: no reverse entry).
    Basis PnL: 100 x (-0.02) + 100 x 0.08 = 6.00. Funding: the short receives 100 x 100.10 x
    0.0001 = 1.001 at 00:00 (the fill at 00:00 counts as done before it) and 100 x 100 x 0.0002
    = 2.00 at 08:00; flat at 16:00. Fees: 2 bp of 10001 + 9999 + 10009 + 10001 = 8.002."""
    assert carry_apr(100.10, 100.0, 0.0001, 8.0, 24.0) == pytest.approx(47.45)
    month = "2024-01"
    scripted.write(scripted.around([100.0] * N, step=MINUTE), lake.ticks_path(SPOT.symbol, month))
    scripted.write(scripted.around([100.10] * 360 + [100.0] * (N - 360), step=MINUTE), lake.ticks_path(PERP.symbol, month))
    fpath = lake.funding_path(PERP.symbol, month)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    funding_rows().write_parquet(fpath)
    spec = BASIS.with_values({"entry_apr": 12.0, "exit_apr": 5.0, "horizon_h": 24.0})
    out = run_multi_backtest(lake, spec, "btc_basis", [SPOT.symbol, PERP.symbol], month,
                             ticks_versions={SPOT.symbol: "v-spot", PERP.symbol: "v-perp"},
                             instruments={SPOT.symbol: SPOT, PERP.symbol: PERP},
                             profiles={"BINANCE": frictionless("BINANCE", "perpetual")})
    fills = out.result.fills.sort("instrument", "ts")
    assert fills.select("instrument", "side", "qty", "price", "reason").rows() == [
        ("BTCUSDT", 1, 100.0, 100.01, "entry"), ("BTCUSDT", -1, 100.0, 99.99, "exit"),
        ("BTCUSDT-PERP", -1, 100.0, 100.09, "entry"), ("BTCUSDT-PERP", 1, 100.0, 100.01, "exit"),
    ]
    assert out.result.funding["amount"].to_list() == pytest.approx([1.001, 2.0, 0.0], abs=1e-9)
    split = out.manifest["pnl_split"]
    assert split["basis_pnl"] == pytest.approx(6.0, abs=1e-6)
    assert split["funding_pnl"] == pytest.approx(3.001, abs=1e-6)
    assert split["fees"] == pytest.approx(-8.002, abs=1e-6)
    assert split["total_pnl"] == pytest.approx(0.999, abs=1e-6)
    assert split["unhedged_qty_max"] == 0.0
    acct = out.result.equity.filter(pl.col("instrument") == ACCOUNT)
    assert acct["equity"][-1] == pytest.approx(100_000.999, abs=1e-6)
    # The stored slice names what it was built from.
    assert out.directory == lake.root / "backtests_multi" / "strategy=basis" / "universe=btc_basis" / "month=2024-01"
    manifest = json.loads((out.directory / "manifest.json").read_text())
    members = {m["symbol"]: m for m in manifest["members"]}
    assert members["BTCUSDT"]["ticks_data_version"] == "v-spot" and members["BTCUSDT-PERP"]["ticks_data_version"] == "v-perp"
    assert members["BTCUSDT-PERP"]["funding"]["status"] == "applied"
    assert members["BTCUSDT-PERP"]["funding"]["source"].startswith("funding/")
    assert members["BTCUSDT"]["funding"]["status"] == "not applicable"
    assert manifest["account"]["accounts"] == 1
    stored = pl.read_parquet(out.directory / "fills.parquet")
    assert stored.columns[0] == "instrument" and len(stored) == 4


def test_split_refuses_a_total_it_does_not_explain():
    fills = pl.DataFrame({"instrument": ["A"], "ts": [1], "side": [1], "qty": [1.0], "price": [1.0], "fee": [0.5],
                          "order_id": ["o"], "realized_pnl": [2.0], "reason": ["entry"]})
    flows = pl.DataFrame(schema={"instrument": pl.String(), "ts": pl.Int64(), "kind": pl.String(), "amount": pl.Float64()})
    equity = pl.DataFrame({"instrument": [ACCOUNT], "ts": [1], "equity": [101.0]})
    assert pnl_split(fills, flows, equity.with_columns(equity=pl.lit(101.5)), 100.0)["total_pnl"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="differs from the account"):
        pnl_split(fills, flows, equity, 100.0)


def test_merge_streams_orders_by_time_and_stream():
    a = [(["a1", "a2"], np.array([1, 3])), (["a3"], np.array([5]))]
    b = [(["b1"], np.array([1])), (["b2", "b3"], np.array([4, 9]))]
    c = [(["c1"], np.array([3]))]
    out = [x for part in merge_streams([a, b, c]) for x in part]
    assert out == ["a1", "b1", "a2", "c1", "b2", "a3", "b3"]


def test_member_traded_alone_equals_its_single_instrument_run(tmp_path):
    """ema_cross trades only the spot member while the perpetual's ticks stream through the same
    engine: its fills and equity equal the single-instrument adapter's run of that member."""
    from quant_assets.engines.nautilus import run_nautilus
    from quant_assets.engines.result import finalize
    from quant_assets.strategies.registry import EMA_CROSS

    rng = np.random.default_rng(7)
    t = np.arange(600)
    spot_mid = np.round(100 + 0.6 * np.sin(t / 25) + rng.normal(0, 0.03, len(t)), 2).tolist()
    perp_mid = np.round(100.2 + 0.5 * np.cos(t / 30), 2).tolist()
    sp = scripted.write(scripted.around(spot_mid, step=20 * 1_000_000_000), tmp_path / "spot.parquet")
    # The perpetual quotes at other times (offset 7 s) and more often.
    pp = scripted.write(scripted.around(perp_mid * 2, t0=scripted.T0 + 7_000_000_000, step=10 * 1_000_000_000),
                        tmp_path / "perp.parquet")
    params = EMA_CROSS.resolved({"fast_period": 5, "slow_period": 20, "bar_s": 0, "notional": 5_000.0})
    members = [Member(PERP, pp), Member(SPOT, sp)]
    multi = finalize_multi(run_multi(members, EMA_CROSS.impl, params, trade=[SPOT.symbol], chunk_rows=97), members)
    single = run_nautilus(sp, SPOT, EMA_CROSS.impl, params)
    f1, e1 = finalize(single)
    f2, e2, _ = multi.member(SPOT.symbol)
    assert len(f1) > 4
    cols = [c for c in f1.columns if c != "order_id"]  # order ids carry the strategy's tag
    assert f2.select(cols).equals(f1.select(cols))
    assert e2.equals(e1)
    # The untraded member streamed too and stayed flat; the account is the traded member's PnL.
    pf, pe, _ = multi.member(PERP.symbol)
    assert pf.is_empty() and pe.is_empty()
    acct = multi.equity.filter(pl.col("instrument") == ACCOUNT)
    assert math.isclose(acct["equity"][-1], e1["equity"][-1], abs_tol=1e-6)
