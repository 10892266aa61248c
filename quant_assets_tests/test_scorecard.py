"""The judge's scorecard: the null critic's proposals are seeded, deterministic, in range and as
many as the critic's; the scorecard's shares and one-sided p-value on hand-made validations
(Fisher's exact test by hand); only new or changed validations are read again; the null arm
stays out of the false-discovery ledger and the ``suggestions`` view; the asset materialises."""

from __future__ import annotations

import hashlib
import re
from math import comb

import dagster as dg
import polars as pl
import pytest

from quant_assets.analytics import discoveries, scorecard
from quant_assets.critique.null_critic import NullCriticError, eligible, null_suggestions, seed_of
from quant_assets.critique.oos import SCHEMA as OOS_SCHEMA
from quant_assets.lake import duck
from quant_assets.strategies.registry import BUILTIN, DEPTH_PARAMS, MARKET_MAKER
from quant_assets.strategies.spec import Param, StrategySpec

MODEL = "claude-sonnet-4-6"


@pytest.mark.parametrize("spec", BUILTIN, ids=lambda s: s.name)
def test_the_null_critic_is_seeded_deterministic_in_range_and_as_many_as_asked(spec):
    baseline = spec.resolved()
    base = spec.with_values(baseline)
    names = {p.name for p in spec.params if p.tunable}
    for month in ("2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06"):
        got = null_suggestions(spec, baseline, "BTCUSDT", month, 5, "quotes+trades")
        assert got == null_suggestions(spec, baseline, "BTCUSDT", month, 5, "quotes+trades")  # same inputs, same proposals
        assert len(got) == 5
        assert null_suggestions(spec, baseline, "BTCUSDT", month, 2, "quotes+trades") == got[:2]  # k is its own draw
        for k, s in enumerate(got):
            p = spec.param(s.name)
            assert s.name in names and s.name not in DEPTH_PARAMS  # no depth on this slice: not offered to the critic
            assert s.value != baseline[s.name] and isinstance(s.value, p.type)
            assert (p.lo is None or s.value >= p.lo) and (p.hi is None or s.value <= p.hi)
            assert base.resolved({s.name: s.value})[s.name] == s.value  # passes the spec's checks and constraints
            assert s.seed == seed_of(spec.name, "BTCUSDT", month, k) == int.from_bytes(
                hashlib.sha256(f"{spec.name}|BTCUSDT|{month}|{k}".encode()).digest()[:8], "big")
    months = [null_suggestions(spec, baseline, "BTCUSDT", m, 3, None) for m in ("2024-01", "2024-02")]
    assert months[0] != months[1]  # another slice, other draws
    assert null_suggestions(spec, baseline, "BTCUSDT", "2024-01", 0) == []


def test_the_null_critic_offers_depth_parameters_only_on_depth_and_respects_bools_and_constraints():
    assert "imbalance_levels" not in eligible(MARKET_MAKER, "L1-approximate")
    assert "imbalance_levels" in eligible(MARKET_MAKER, "depth-L2") and "imbalance_levels" in eligible(MARKET_MAKER, None)
    drawn = {s.name for m in range(1, 13) for s in null_suggestions(
        MARKET_MAKER, MARKET_MAKER.resolved(), "BTCUSDT", f"2024-{m:02d}", 5, "depth-L2")}
    assert "imbalance_levels" in drawn  # offered with depth, and drawn

    toy = StrategySpec(
        name="toy", engine="nautilus", impl="x:y", description="toy",
        params=(Param("flag", bool, False, "a switch"), Param("fast", int, 5, "fast", "bars", 2, 1_000),
                Param("slow", int, 6, "slow", "bars", 3, 1_000), Param("fixed", float, 1.0, "not tunable", tunable=False)),
        constraints=((lambda v: v["fast"] < v["slow"], "fast below slow"),),
    )
    got = null_suggestions(toy, toy.resolved(), "X", "2024-01", 20)
    assert {s.name for s in got} <= {"flag", "fast", "slow"}
    assert all(s.value is True for s in got if s.name == "flag")  # the other value
    assert all(s.value < 6 for s in got if s.name == "fast") and all(s.value > 5 for s in got if s.name == "slow")
    frozen = StrategySpec(name="frozen", engine="nautilus", impl="x:y", description="d",
                          params=(Param("fixed", float, 1.0, "not tunable", tunable=False),))
    with pytest.raises(NullCriticError, match=re.escape("frozen 2024-01|X: no tunable parameter")):
        null_suggestions(frozen, frozen.resolved(), "X", "2024-01", 1)


def _row(**values) -> dict:
    return {**{c: None for c in OOS_SCHEMA}, **values}


def _write(lake, symbol: str, month: str, critic: str, model: str, arms: dict[str, list], strategy: str = "ema_cross"):
    """A validation slice: per arm, one entry per proposal: a Sharpe difference on M+1 (float),
    None (ran, Sharpe undefined) or "untested" (the account could not run it)."""
    oos = f"{month[:5]}{int(month[5:]) + 1:02d}"
    rows = [_row(strategy=strategy, symbol=symbol, critique_month=month, oos_month=oos, critic=critic, model=model, arm=arm,
                 name="fast_period", value=str(10 + k), suggestion_index=k, n_tested=len(deltas), tested=d != "untested",
                 oos_delta_sharpe=None if d in (None, "untested") else d,
                 p_value=None if d in (None, "untested") else (0.001 if d > 0 else 0.9))
            for arm, deltas in arms.items() for k, d in enumerate(deltas)]
    lake.write_parquet(pl.DataFrame(rows, schema=OOS_SCHEMA), lake.oos_dir(strategy, symbol, month) / "validation.parquet")


def _fisher_by_hand(k1: int, n1: int, k2: int, n2: int) -> float:
    """P(X >= k1), X hypergeometric: k1 + k2 improvements among n1 + n2, n1 of them the critic's."""
    k, n = k1 + k2, n1 + n2
    return sum(comb(k, x) * comb(n - k, n1 - x) for x in range(k1, min(k, n1) + 1)) / comb(n, n1)


def _populate(lake):
    # rules: 9 of 10 tested suggestions improved over 2 slices; the null arm 2 of 10 (one of them
    # undefined: ran, no Sharpe; one untested on each side, in no count)
    _write(lake, "BTCUSDT", "2024-01", "rules", "rules-v1",
           {"critic": [0.5, 0.2, 0.1, 0.3, 0.4, "untested"], "null": [0.1, -0.2, -0.1, None, -0.3, "untested"]})
    _write(lake, "ETHUSDT", "2024-01", "rules", "rules-v1",
           {"critic": [0.6, 0.7, 0.8, 0.9, -0.1], "null": [0.2, -0.5, -0.6, -0.7, -0.8]})
    # an Anthropic model no better than random: 5 of 10 against 5 of 10
    _write(lake, "BTCUSDT", "2024-02", "anthropic", MODEL,
           {"critic": [0.1, 0.1, 0.1, 0.1, 0.1, -0.1, -0.1, -0.1, -0.1, -0.1],
            "null": [0.2, 0.2, 0.2, 0.2, 0.2, -0.2, -0.2, -0.2, -0.2, -0.2]})


def test_the_scorecard_gives_each_critic_its_share_against_the_null_and_a_one_sided_p(lake):
    _populate(lake)
    out = scorecard.run_scorecard(lake)
    t = {r["critic"]: r for r in out.table.iter_rows(named=True)}
    assert set(t) == {"rules", MODEL}
    rules = t["rules"]
    assert (rules["critic_improved"], rules["critic_tested"], rules["critic_proposed"]) == (9, 10, 11)
    assert (rules["null_improved"], rules["null_tested"], rules["null_undefined"]) == (2, 10, 1)
    assert rules["critic_share"] == 0.9 and rules["null_share"] == 0.2 and rules["share_difference"] == pytest.approx(0.7)
    assert rules["slices"] == 2 and rules["critic_kind"] == "rules" and (rules["first_oos_month"], rules["last_oos_month"]) == ("2024-02", "2024-02")
    assert rules["p_value"] == pytest.approx(_fisher_by_hand(9, 10, 2, 10)) and rules["p_value"] < 0.01
    assert rules["critic_mean_delta_sharpe"] == pytest.approx((0.5 + 0.2 + 0.1 + 0.3 + 0.4 + 0.6 + 0.7 + 0.8 + 0.9 - 0.1) / 10)
    model = t[MODEL]
    assert model["critic_share"] == model["null_share"] == 0.5 and model["critic_kind"] == "anthropic"
    assert model["p_value"] == pytest.approx(_fisher_by_hand(5, 10, 5, 10)) and model["p_value"] > 0.5
    assert "one-sided Fisher exact" in model["reason"]
    assert out.summary.startswith(f"{MODEL}: 5/10 improved vs null 5/10") and "rules: 9/10 improved vs null 2/10" in out.summary
    assert (out.directory / "scorecard.png").read_bytes()[:4] == b"\x89PNG"
    tests = out.tests
    assert tests.height == 2 * (6 + 5 + 10) and set(tests["arm"]) == {"critic", "null"}
    assert tests.filter(~pl.col("tested"))["improved"].to_list() == [None, None]

    # the DuckDB views: the scorecard, every proposal of both arms
    con = duck.connect(lake)
    assert con.sql("SELECT critic, critic_improved, null_improved FROM scorecard ORDER BY critic").fetchall() == [
        (MODEL, 5, 5), ("rules", 9, 2)]
    assert con.sql("SELECT arm, count(*) FROM scorecard_tests GROUP BY 1 ORDER BY 1").fetchall() == [("critic", 21), ("null", 21)]

    # nothing to compare: null with the reason
    assert scorecard.fisher_greater(0, 0, 2, 10)[1:] == (None, "no tested suggestion of the critic: nothing to compare")
    _write(lake, "SOLUSDT", "2024-01", "anthropic", "claude-opus-4-1", {"critic": ["untested"], "null": [0.1]})
    only = {r["critic"]: r for r in scorecard.run_scorecard(lake).table.iter_rows(named=True)}["claude-opus-4-1"]
    assert only["p_value"] is None and only["critic_share"] is None and only["reason"].startswith("no tested suggestion")


def test_only_new_or_changed_validations_are_read_again(lake):
    _populate(lake)
    first = scorecard.run_scorecard(lake)
    assert first.manifest["files_read"] == 3 and first.manifest["files_carried_over"] == 0
    again = scorecard.run_scorecard(lake)
    assert again.manifest["files_read"] == 0 and again.manifest["files_carried_over"] == 3
    assert again.data_version == first.data_version and again.table.equals(first.table)
    # a re-run validation: read again, its new rows replace the old
    _write(lake, "BTCUSDT", "2024-02", "anthropic", MODEL, {"critic": [0.1] * 10, "null": [-0.1] * 10})
    # a validation written before the null critic (no arm): remembered, not compared, not re-read
    old = pl.DataFrame([_row(strategy="ema_cross", symbol="ADAUSDT", critique_month="2024-01", oos_month="2024-02",
                             critic="rules", name="fast_period", value="20", suggestion_index=0, tested=True,
                             oos_delta_sharpe=1.0)], schema=OOS_SCHEMA).drop("arm", "model")
    lake.write_parquet(old, lake.oos_dir("ema_cross", "ADAUSDT", "2024-01") / "validation.parquet")
    third = scorecard.run_scorecard(lake)
    assert third.manifest["files_read"] == 2 and third.manifest["files_carried_over"] == 2
    assert third.manifest["files_before_null_critic"] == 1
    assert third.manifest["files_before_null_critic_first"] == ["oos/strategy=ema_cross/symbol=ADAUSDT/month=2024-01/validation.parquet"]
    model = third.table.filter(pl.col("critic") == MODEL).row(0, named=True)
    assert (model["critic_improved"], model["null_improved"]) == (10, 0) and model["p_value"] < 1e-4
    assert third.table.filter(pl.col("critic") == "rules")["critic_tested"].to_list() == [10]  # the old file is not in it
    fourth = scorecard.run_scorecard(lake)
    assert fourth.manifest["files_read"] == 0 and fourth.manifest["files_before_null_critic"] == 1
    # a removed validation leaves the scorecard
    (lake.oos_dir("ema_cross", "BTCUSDT", "2024-02") / "validation.parquet").unlink()
    assert scorecard.run_scorecard(lake).table["critic"].to_list() == ["rules"]


def test_the_null_arm_stays_out_of_the_fdr_ledger_and_the_suggestions_view(lake):
    _populate(lake)
    ledger = discoveries.run_discoveries(lake, 0.1)
    # only the critic's arm: 21 proposals, 20 tested (the null arm's 21 are not tests of a change)
    assert ledger.table.height == 21 and ledger.manifest["tested"] == 20 and ledger.manifest["not_tested"] == 1
    con = duck.connect(lake)
    assert con.sql("SELECT DISTINCT arm FROM suggestions").fetchall() == [("critic",)]
    assert con.sql("SELECT count(*), count(improved) FROM suggestions").fetchall() == [(21, 21)]


def test_the_critic_scorecard_asset_materialises_with_its_table_and_plot(lake, instance):
    from quant_assets.assets.scorecard import scorecard_asset
    from quant_assets.definitions import SPECS
    from resources import LakeResource

    _populate(lake)
    asset = scorecard_asset(SPECS)
    assert {k.to_user_string() for k in asset.asset_deps[asset.key]} == {f"oos_validation_{n}" for n in SPECS}
    res = dg.materialize([asset], instance=instance, resources={"lake": LakeResource()})
    (mat,) = res.asset_materializations_for_node("critic_scorecard")
    assert "rules: 9/10 improved vs null 2/10" in mat.metadata["summary"].value
    assert mat.metadata["critics"].value == 2 and mat.metadata["null_tested"].value == 20
    assert mat.metadata["plot"].value.startswith("![critic vs null critic](data:image/png;base64,")
    assert "| rules | 2 | 9/10 (90%) | 2/10 (20%) | 70% |" in mat.metadata["scorecard"].value
