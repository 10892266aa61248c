"""The common result format: position, realised PnL and equity derived from fills."""

from __future__ import annotations

import polars as pl
import pytest

from quant_assets.engines.result import EngineRun, annotate_fills, finalize, raw_fills


def _fills(rows):
    cols = ["ts", "side", "qty", "price", "fee", "liquidity", "order_id"]
    return raw_fills({c: [r[i] for r in rows] for i, c in enumerate(cols)})


def test_average_cost_realised_pnl_through_a_flip() -> None:
    fills = annotate_fills(_fills([
        (1, 1, 2.0, 100.0, 0.1, "taker", "a"),   # long 2 @ 100
        (2, 1, 2.0, 102.0, 0.1, "taker", "b"),   # long 4 @ 101
        (3, -1, 5.0, 103.0, 0.1, "maker", "c"),  # close 4 (+8), short 1 @ 103
        (4, 1, 1.0, 100.0, 0.1, "taker", "d"),   # close the short (+3)
    ]))
    assert fills["position"].to_list() == [2.0, 4.0, -1.0, 0.0]
    assert fills["realized_pnl"].to_list() == pytest.approx([0.0, 0.0, 8.0, 3.0])


def test_equity_is_cash_plus_marked_position_and_ends_at_the_final_cash() -> None:
    run = EngineRun(
        fills=_fills([(10, 1, 1.0, 100.0, 0.5, "taker", "a"), (30, -1, 1.0, 104.0, 0.5, "taker", "b")]),
        samples=pl.DataFrame({"ts": [0, 10, 20], "mid": [99.0, 100.0, 103.0]}),
        engine="x", engine_version="0", events=3, wall_s=1.0, starting_cash=1_000.0, quote_currency="USDT",
    )
    fills, equity = finalize(run)
    assert equity["ts"].to_list() == [0, 10, 20, 30]  # a last sample after the closing fill
    assert equity["position"].to_list() == [0.0, 1.0, 1.0, 0.0]
    assert equity["equity"].to_list() == pytest.approx([1_000.0, 999.5, 1_002.5, 1_003.0])
    assert equity["equity"][-1] == pytest.approx(1_000.0 + fills["realized_pnl"].sum() - fills["fee"].sum())


def test_a_run_that_does_not_end_flat_is_an_adapter_bug() -> None:
    run = EngineRun(_fills([(1, 1, 1.0, 100.0, 0.0, "taker", "a")]), pl.DataFrame({"ts": [0], "mid": [1.0]}),
                    "x", "0", 1, 1.0, 1_000.0, "USDT")
    with pytest.raises(RuntimeError, match="must flatten"):
        finalize(run)
