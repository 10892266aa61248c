"""Issue 17's "done when", through ``quant-assets sync`` on real file layouts: Binance spot trades
(trades-only) in ``landing/BTCUSDT/`` beside a Binance USD-M bookTicker + trades capture and its
fundingRate file, with Binance's own file names, in ``landing/BTCUSDT-PERP/``."""

from __future__ import annotations

import json

import polars as pl
import pytest

from quant_assets.cli import main
from quant_assets.lake import duck
from quant_assets_tests import builders as b

JAN_MS = b.JAN_MS


def _bookticker(n: int, t0_ms: int = JAN_MS, step_ms: int = 60_000) -> str:
    """A USD-M bookTicker capture: a slow random walk, one quote a minute."""
    import numpy as np

    rng = np.random.default_rng(7)
    mid = 42_000.0 + np.cumsum(rng.normal(0, 8.0, n))
    lines = ["update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"]
    for i, m in enumerate(mid):
        bid = round(m - 0.05, 1)
        lines.append(f"{9000 + i},{bid:.1f},1.5,{bid + 0.1:.1f},2.0,{t0_ms + i * step_ms},{t0_ms + i * step_ms + 3}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def side_by_side(lake):
    spot, perp = lake.landing_dir("BTCUSDT"), lake.landing_dir("BTCUSDT-PERP")
    b.write(spot / "BTCUSDT-trades-2024-01.zip", b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(3_000, step_ms=60_000)))
    b.write(perp / "BTCUSDT-bookTicker-2024-01.csv", _bookticker(3_000))
    b.write(perp / "BTCUSDT-trades-2024-01.zip", b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(500, step_ms=300_000)))
    b.write(perp / "BTCUSDT-fundingRate-2024-01.csv", b.binance_funding_csv([0.0001, -0.0002, 0.0003] * 2, t0_ms=JAN_MS))
    return lake


def test_spot_trades_only_and_a_perpetual_capture_sync_side_by_side(side_by_side, instance, capsys):
    lake = side_by_side
    assert main(["sync"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    # ema_cross backtested on both; the market maker is n/a on the trades-only spot month only
    for symbol, fidelity in (("BTCUSDT", "trades-only"), ("BTCUSDT-PERP", "quotes+trades")):
        manifest = json.loads((lake.backtest_dir("ema_cross", symbol, "2024-01") / "manifest.json").read_text())
        assert manifest["fidelity"] == fidelity and all(c["passed"] for c in manifest["checks"].values()), manifest["checks"]
    assert not lake.backtest_dir("market_maker", "BTCUSDT", "2024-01").exists()
    assert (lake.backtest_dir("market_maker", "BTCUSDT-PERP", "2024-01") / "manifest.json").exists()
    assert "n/a market_maker on 1 slice(s): not applicable on trades-only data" in out

    perp = json.loads((lake.backtest_dir("ema_cross", "BTCUSDT-PERP", "2024-01") / "manifest.json").read_text())
    assert perp["instrument_kind"] == "perpetual" and perp["funding"]["status"] == "applied"
    assert perp["fee_schedule"]["taker"] == 0.0005 and perp["account"]["max_leverage"] == 20.0
    # equity change = the fills' cash flow + funding, and funding is position x mark x rate
    d = lake.backtest_dir("ema_cross", "BTCUSDT-PERP", "2024-01")
    fills, equity, funding = (pl.read_parquet(d / f) for f in ("fills.parquet", "equity.parquet", "funding.parquet"))
    flow = float((-(fills["side"].cast(pl.Float64) * fills["qty"] * fills["price"]) - fills["fee"]).sum())
    # six funding times from 00:00 on Jan 1; the first is 3 ms before the run's first quote
    assert len(funding) == 5 and funding["amount"].abs().sum() > 0
    assert float(equity["equity"][-1]) - 100_000.0 == pytest.approx(flow + float(funding["amount"].sum()), abs=1e-6)
    assert funding["amount"].to_list() == pytest.approx((-funding["position"] * funding["mark_px"] * funding["rate"]).to_list())

    # every metric set agrees with its equity curve and carries what it was built from
    con = duck.connect(lake)
    rows = con.sql("SELECT strategy, symbol, month, final_equity, starting_equity, total_return, vbt_total_return, pnl, fidelity, "
                   "funding_status FROM metrics").pl()
    assert len(rows) >= 5
    for r in rows.iter_rows(named=True):
        eq = pl.read_parquet(lake.backtest_dir(r["strategy"], r["symbol"], r["month"]) / "equity.parquet")
        assert r["final_equity"] == pytest.approx(float(eq["equity"][-1]))
        assert eq["equity"].min() >= 0.0
        if r["total_return"] is not None:
            assert r["total_return"] == pytest.approx(r["final_equity"] / r["starting_equity"] - 1.0, rel=1e-9, abs=1e-12)
        if r["vbt_total_return"] is not None:  # vectorbt's replay of the fills, plus the funding it cannot book
            assert r["vbt_total_return"] == pytest.approx(r["total_return"], rel=1e-9, abs=1e-12), r
    assert set(rows.filter(pl.col("symbol") == "BTCUSDT")["fidelity"]) == {"trades-only"}
    assert set(rows.filter(pl.col("symbol") == "BTCUSDT-PERP")["funding_status"]) == {"applied"}

    # a second sync has nothing to do and still exits 0 (n/a slices are not retried)
    assert main(["sync"]) == 0
    assert "2 slices known, 0 to materialise" in capsys.readouterr().out
