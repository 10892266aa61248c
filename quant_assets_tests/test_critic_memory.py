"""The critic's memory (quant_assets.critique.memory): point in time, bounded, in the prompt, and
used by the rule critic. Validation files and the discoveries ledger are written by hand (their
real schemas), so no backtest runs here."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from quant_assets.analytics.discoveries import SCHEMA as LEDGER_SCHEMA
from quant_assets.critique import memory as mem
from quant_assets.critique.critics import RuleCritic
from quant_assets.critique.oos import SCHEMA as OOS_SCHEMA
from quant_assets.critique.prompt import MonthPosition, build_prompt
from quant_assets.lake.store import Lake
from quant_assets.strategies.registry import EMA_CROSS

BASE = EMA_CROSS.resolved()


def _validation(lake: Lake, symbol: str, month: str, oos_month: str, changes: list[tuple[str, object, bool]],
                null: tuple[str, object] | None = ("fast_period", 7)) -> None:
    """validation.parquet of the critique of ``month``: (parameter, value, cleared its bar) per
    row of the critic's arm, and one row of the null critic's arm (``null``), which memory ignores."""
    rows = []
    arms = [("critic", c) for c in changes] + ([("null", (*null, True))] if null else [])
    for k, (arm, (name, value, beat)) in enumerate(arms):
        row = {c: None for c in OOS_SCHEMA}
        row.update(arm=arm, strategy=EMA_CROSS.name, symbol=symbol, critique_month=month, oos_month=oos_month, critic="rules",
                   name=name, value=json.dumps(value), baseline_value=json.dumps(BASE[name]), hypothesis="h",
                   oos_delta_sharpe=0.4 if beat else -0.2, suggestion_index=k if arm == "critic" else 0, tested=True, n_tested=len(changes),
                   p_value=0.001 if beat else 0.6, local_bar=0.05 / len(changes), clears_local_bar=beat)
        rows.append(row)
    path = lake.oos_dir(EMA_CROSS.name, symbol, month) / "validation.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=OOS_SCHEMA).write_parquet(path)


def _ledger(lake: Lake, rows: list[tuple[str, str, str, str, bool]]) -> None:
    """discoveries.parquet: (symbol, critique month, oos month, change, cleared its bar) per test."""
    out = []
    for k, (symbol, month, oos_month, change, beat) in enumerate(rows):
        row = {c: None for c in LEDGER_SCHEMA}
        row.update(kind="suggestion", strategy=EMA_CROSS.name, symbol=symbol, month=month, oos_month=oos_month,
                   test_index=k, tested=True, p_value=0.01 if beat else 0.7, local_bar=0.05, clears_local_bar=beat,
                   change=change)
        out.append(row)
    lake.discoveries_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(out, schema=LEDGER_SCHEMA).write_parquet(lake.discoveries_dir / "discoveries.parquet")


def test_memory_is_point_in_time(tmp_path) -> None:
    lake = Lake.at(tmp_path)
    _validation(lake, "BTCUSDT", "2024-01", "2024-02", [("fast_period", 60, False)], null=None)
    jan = lake.oos_dir(EMA_CROSS.name, "BTCUSDT", "2024-01") / "validation.parquet"
    pl.read_parquet(jan).drop("arm").write_parquet(jan)  # written before the null critic existed: no arm
    _validation(lake, "BTCUSDT", "2024-02", "2024-03", [("slow_period", 240, True)])
    # the validation of March's own suggestions (on April) is later than March's data: never seen
    _validation(lake, "BTCUSDT", "2024-03", "2024-04", [("fast_period", 5, True)])
    _ledger(lake, [("ETHUSDT", "2024-01", "2024-02", "fast_period=60", False),
                   ("ETHUSDT", "2024-03", "2024-04", "slow_period=100", True)])  # April: later, absent
    m = mem.recall(lake, EMA_CROSS.name, "BTCUSDT", "2024-03", baseline=BASE)
    shown = [(e["instrument"], e["months_before"], e["parameter"], e["to"]) for e in m.recent]
    assert shown == [("this", 1, "slow_period", 240), ("this", 2, "fast_period", 60), ("another", 2, "fast_period", 60)]
    assert m.recent[0]["beat_baseline"] is True and m.recent[1]["beat_baseline"] is False
    assert m.recent[2]["from"] == BASE["fast_period"] and "ETHUSDT" not in json.dumps(m.as_prompt())
    assert len(m.sources) == 3  # two of this instrument's validation files (March's is not read) and the ledger
    # the first month has nothing to remember: no memory key in its prompt at all
    assert mem.recall(lake, EMA_CROSS.name, "BTCUSDT", "2024-01").as_prompt() is None


def test_memory_stays_bounded_and_condenses_older_history(tmp_path) -> None:
    lake = Lake.at(tmp_path)
    months = [f"{y}-{m:02d}" for y in (2022, 2023) for m in range(1, 13)]
    for i, month in enumerate(months[:-1]):
        _validation(lake, "BTCUSDT", month, months[i + 1],
                    [("fast_period", 60 + i, i % 3 == 0), ("slow_period", 100 + i, False)])
    m = mem.recall(lake, EMA_CROSS.name, "BTCUSDT", months[-1], baseline=BASE)
    text = json.dumps(m.as_prompt(), separators=(",", ":"))
    assert len(text) <= mem.MAX_MEMORY_CHARS and m.tests_seen == 2 * (len(months) - 1)
    assert 0 < len(m.recent) <= mem.RECENT_THIS and max(e["months_before"] for e in m.recent) <= 3
    older = {(r["parameter"], r["direction"]): (r["tried"], r["beat_baseline"]) for r in m.older}
    assert older[("slow_period", "lowered")][1] == 0 and older[("fast_period", "raised")][1] > 0


def _fee_burning_prompt(memory: dict | None):
    n = 200
    trades = pl.DataFrame({
        "trade_id": np.arange(n), "direction": np.ones(n, np.int8), "duration_s": np.full(n, 60.0),
        "pnl": np.linspace(-20, 10, n), "fees": np.full(n, 1.0), "return": np.zeros(n), "return_on_equity": np.zeros(n),
        "entry_hour_utc": (np.arange(n) % 24).astype(np.int8), "entry_weekday": np.ones(n, np.int8),
        "spread_bps": np.full(n, 1.5), "vol_at_entry": np.full(n, 0.4), "vol_regime": ["normal"] * n,
        "entry_ts": np.arange(n, dtype=np.int64),
    })
    regimes = pl.DataFrame({"regime": ["normal"], "samples": [100], "pnl": [-1.0], "trades": [n], "trade_pnl": [-1.0],
                            "trade_win_rate": [0.4], "time_share": [1.0]})
    metrics = {"periods": 40_000, "interval_s": 60.0, "total_return": -0.015, "sharpe": -1.0, "psr": 0.1, "trades": n,
               "pnl": -1_500.0, "gross_pnl": 500.0, "fees": 2_000.0, "null_reasons": "{}"}
    return build_prompt(EMA_CROSS, metrics, trades, regimes, "BTCUSDT", MonthPosition(3, 3), memory=memory)


def test_the_rule_critic_does_not_repeat_a_change_that_failed_here(tmp_path) -> None:
    lake = Lake.at(tmp_path)
    # the fee rule proposes fast 30 -> 60 and slow 120 -> 240; 60 failed here last month
    _validation(lake, "BTCUSDT", "2024-02", "2024-03", [("fast_period", 60, False), ("slow_period", 240, True)])
    memory = mem.recall(lake, EMA_CROSS.name, "BTCUSDT", "2024-03", baseline=BASE).as_prompt()
    prompt = _fee_burning_prompt(memory)
    assert prompt.data["memory"]["recent"][0]["parameter"] == "fast_period"  # the prompt carries it
    with_memory = RuleCritic().critique(prompt, EMA_CROSS).critique
    assert {(s.name, s.value) for s in with_memory.suggestions} == {("slow_period", 240)}
    assert "fast_period = 60" in with_memory.diagnosis
    without = RuleCritic().critique(_fee_burning_prompt(None), EMA_CROSS).critique
    assert {(s.name, s.value) for s in without.suggestions} == {("fast_period", 60), ("slow_period", 240)}
