"""Promotion of validated suggestions into strategy variants (quant_assets.critique.promotion,
quant_assets.strategies.promoted): the rule, the variant in the definitions after a reload,
retiring it, and flagging one that fails its own later months.

The critique, its validation and the false-discovery verdict are written by hand in their real
schemas (the month they decide is given); one test runs the engine on a real month after."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from quant_assets.analytics.discoveries import SCHEMA as LEDGER_SCHEMA
from quant_assets.cli import main
from quant_assets.critique.oos import SCHEMA as OOS_SCHEMA
from quant_assets.critique.promotion import Rule, run_promotions
from quant_assets.strategies import promoted, registry
from quant_assets.strategies.registry import EMA_CROSS
from quant_assets_tests.test_critique_assets import two_months  # noqa: F401 - a fixture

BASE = EMA_CROSS.resolved()
VARIANT = "ema_cross_slow_period_400"


def _survivor(lake, month: str, oos_month: str, cand: float, base: float, improved: bool = True, strategy: str = "ema_cross",
              name: str = "slow_period", value: int = 400) -> None:
    """A critique of ``month`` (rules) suggesting slow_period = 400, validated on ``oos_month``
    with the given Sharpes, and the ledger's verdict on it."""
    d = lake.critique_dir(strategy, "BTCUSDT", month)
    d.mkdir(parents=True)
    params = registry.load()[strategy].resolved() if strategy in registry.load() else BASE
    (d / "critique.json").write_text(json.dumps({"critic": "rules", "model": "rules-v1", "params": params}))
    row = {c: None for c in OOS_SCHEMA} | {
        "arm": "critic", "strategy": strategy, "symbol": "BTCUSDT", "critique_month": month, "oos_month": oos_month, "critic": "rules",
        "name": name, "value": json.dumps(value), "baseline_value": json.dumps(BASE[name]), "hypothesis": "h",
        "oos_candidate_sharpe": cand, "oos_baseline_sharpe": base, "suggestion_index": 0, "tested": True, "n_tested": 1,
        "p_value": 0.001, "local_bar": 0.05, "clears_local_bar": True}
    v = lake.oos_dir(strategy, "BTCUSDT", month)
    v.mkdir(parents=True)
    # the null critic's arm repeats suggestion_index 0 with a different change: never a candidate
    null = row | {"arm": "null", "name": "fast_period", "value": "7", "baseline_value": json.dumps(BASE["fast_period"])}
    pl.DataFrame([row, null], schema=OOS_SCHEMA).write_parquet(v / "validation.parquet")
    ledger = {c: None for c in LEDGER_SCHEMA} | {
        "kind": "suggestion", "strategy": strategy, "symbol": "BTCUSDT", "month": month, "oos_month": oos_month,
        "test_index": 0, "tested": True, "p_value": 0.001, "change": f"{name}={value}", "in_family": True,
        "improved": improved}
    lake.discoveries_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([ledger], schema=LEDGER_SCHEMA).write_parquet(lake.discoveries_dir / "discoveries.parquet")


def _no_days(symbol: str, month: str) -> int:
    raise AssertionError("no month after the first should be backtested here")


def test_a_suggestion_that_beat_its_months_is_promoted_reloaded_and_retired(lake, capsys) -> None:
    _survivor(lake, "2024-01", "2024-02", cand=1.2, base=0.4)
    out = run_promotions(lake, registry.load(), Rule(1, 1), _no_days)
    assert out.newly_promoted == [VARIANT] and out.table["status"].to_list() == ["promoted"]
    assert "ema_cross" in (lake.root / "strategies" / "promoted.toml").read_text()
    entry = promoted.read_lineage(lake)[VARIANT]
    assert entry["params"] == {**BASE, "slow_period": 400} and entry["critique"]["month"] == "2024-01"
    assert entry["months"] == [{"month": "2024-02", "candidate_sharpe": 1.2, "baseline_sharpe": 0.4, "beat": True}]
    # the registry loads it like a user variant, never from strategies.toml
    spec = registry.load()[VARIANT]
    assert spec.resolved()["slow_period"] == 400 and "Promoted by the research loop" in spec.description
    assert VARIANT not in registry.load(promoted=False)
    # a fresh process (a reload of the definitions) has its chain
    code = "from quant_assets.definitions import defs; print(sorted(k.to_user_string() for k in defs.resolve_all_asset_keys()))"
    keys = subprocess.run([sys.executable, "-c", code], env=os.environ.copy(), capture_output=True, text=True, check=True).stdout
    assert f"backtest_{VARIANT}" in keys and f"critique_{VARIANT}" in keys
    # running again promotes nothing new; the CLI lists it
    assert run_promotions(lake, registry.load(), Rule(1, 1), _no_days).newly_promoted == []
    assert main(["promoted"]) == 0
    assert VARIANT in capsys.readouterr().out
    assert main(["retire", VARIANT, "--reason", "test"]) == 0
    assert VARIANT not in registry.load() and promoted.read_lineage(lake)[VARIANT]["retired"] is True
    assert main(["retire", "no_such_variant"]) == 2
    # retired stays retired: the same survivor is not promoted again
    assert run_promotions(lake, registry.load(), Rule(1, 1), _no_days).newly_promoted == []
    assert VARIANT not in registry.load()


def test_a_variant_s_own_critique_can_promote_a_variant_of_it(lake) -> None:
    _survivor(lake, "2024-01", "2024-02", cand=1.2, base=0.4)
    run_promotions(lake, registry.load(), Rule(1, 1), _no_days)
    _survivor(lake, "2024-02", "2024-03", cand=0.9, base=0.3, strategy=VARIANT, name="fast_period", value=60)
    out = run_promotions(lake, registry.load(), Rule(1, 1), _no_days)
    child = f"{VARIANT}_fast_period_60"
    assert out.newly_promoted == [child]
    entry = promoted.read_lineage(lake)[child]
    assert (entry["base"], entry["parent"]) == ("ema_cross", VARIANT)  # the TOML's base is the built-in
    assert registry.load()[child].resolved() == {**BASE, "slow_period": 400, "fast_period": 60}


def test_the_rule_needs_k_of_n_months_and_waits_for_the_months_it_lacks(lake) -> None:
    _survivor(lake, "2024-01", "2024-02", cand=0.1, base=0.5)  # lost its first month
    lost = run_promotions(lake, registry.load(), Rule(1, 2), _no_days).table.row(0, named=True)
    assert lost["status"] == "pending" and lost["reason"].startswith("waits for 2024-03")
    out = run_promotions(lake, registry.load(), Rule(2, 2), _no_days).table.row(0, named=True)
    assert out["status"] == "rejected" and "1 months" in out["reason"] and not promoted.read_lineage(lake)


def test_a_suggestion_the_ledger_does_not_keep_is_never_a_candidate(lake) -> None:
    _survivor(lake, "2024-01", "2024-02", cand=1.2, base=0.4, improved=False)
    out = run_promotions(lake, registry.load(), Rule(1, 1), _no_days)
    assert out.table.height == 0 and out.newly_promoted == []


def test_a_promoted_variant_that_loses_its_own_later_months_is_flagged(lake) -> None:
    _survivor(lake, "2024-01", "2024-02", cand=1.2, base=0.4)
    run_promotions(lake, registry.load(), Rule(1, 1), _no_days)
    for month, (mine, base) in {"2024-02": (9.0, 0.0), "2024-03": (0.1, 0.9), "2024-04": (0.2, 0.8)}.items():
        for strategy, sharpe in ((VARIANT, mine), ("ema_cross", base)):
            d = lake.metrics_dir(strategy, "BTCUSDT", month)
            d.mkdir(parents=True)
            pl.DataFrame({"sharpe": [sharpe]}).write_parquet(d / "metrics.parquet")
    out = run_promotions(lake, registry.load(), Rule(1, 2), _no_days)
    assert out.flagged == [VARIANT]
    entry = promoted.read_lineage(lake)[VARIANT]
    # February decided the promotion: only the months after it are the variant's own
    assert [m["month"] for m in entry["own_months"]] == ["2024-03", "2024-04"] and "beat ema_cross on 0 of 2" in entry["flag"]
    assert VARIANT in registry.load()  # flagged, not retired: that is a person's decision


@pytest.mark.parametrize("k_of_n", ["0/3", "4/3", "x"])
def test_a_bad_rule_is_refused_with_its_variable(monkeypatch, k_of_n) -> None:
    from quant_assets.settings import promotion_k_of_n

    monkeypatch.setenv("QUANT_PROMOTE", k_of_n)
    with pytest.raises(ValueError, match="QUANT_PROMOTE"):
        promotion_k_of_n()


def test_the_months_after_the_first_are_backtested_with_the_engine(lake, instance, two_months) -> None:
    from quant_assets.lake import instruments as inst_mod

    # December's suggestion beat its baseline on January (its validation); February is run here
    _survivor(lake, "2023-12", "2024-01", cand=1.2, base=0.4)
    out = run_promotions(lake, registry.load(), Rule(2, 2),
                         lambda symbol, month: inst_mod.trading_days_of(lake, symbol, month=month))
    row = out.table.row(0, named=True)
    months = json.loads(row["months"])
    assert [m["month"] for m in months] == ["2024-01", "2024-02"] and row["months_tested"] == 2
    feb = months[1]
    assert feb["beat"] == (feb["candidate_sharpe"] is not None and feb["baseline_sharpe"] is not None
                           and feb["candidate_sharpe"] > feb["baseline_sharpe"])
    assert row["status"] == ("promoted" if feb["beat"] else "rejected")
    run = lake.root / "promotions" / "strategy=ema_cross" / "symbol=BTCUSDT" / "month=2023-12" / "0-slow_period" / "2024-02"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"] == {**BASE, "slow_period": 400}
    assert manifest["ticks_path"] == "ticks/symbol=BTCUSDT/month=2024-02/part-0.parquet"
    # the published February slice ran the critique's parameters: it is the baseline, not re-run
    assert not (run.parent / "baseline").exists()
    assert feb["baseline_sharpe"] is not None
