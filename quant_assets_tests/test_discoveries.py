"""The false-discovery control over every tested change: a lake with known p-values reports
exactly the Benjamini–Hochberg survivors (computed by hand), ledger-wide and point in time;
slices' own files never change; only new or changed slices are read again; the asset, the
DuckDB views and the one-sided Sharpe-difference test that produces the p-values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quant_assets.analytics import discoveries
from quant_assets.analytics.returns import ReturnSeries
from quant_assets.analytics.sharpe_test import sharpe_difference
from quant_assets.critique.oos import SCHEMA as OOS_SCHEMA
from quant_assets.lake import duck
from quant_assets.lake.store import file_sha256
from quant_assets.research.handoff import SCHEMA as HANDOFF_SCHEMA

Q = 0.10
#: (strategy, symbol, critique month, out-of-sample month, p-values of its suggestions); None:
#: a test whose p-value is undefined (counts as 1); "untested": the candidate could not run.
SUGGESTIONS = [
    ("ema_cross", "BTCUSDT", "2024-01", "2024-02", [0.001, 0.030, 0.20]),
    ("ema_cross", "ETHUSDT", "2024-01", "2024-02", [0.012, None]),
    ("mean_reversion", "BTCUSDT", "2024-02", "2024-03", [0.004, 0.045, "untested"]),
    ("mean_reversion", "ETHUSDT", "2024-02", "2024-03", [0.060, 0.50, 0.90]),
]
#: (symbol, sweep month, out-of-sample month, p-values of ranks 1..)
HANDOFFS = [("BTCUSDT", "2024-01", "2024-02", [0.008, 0.35]), ("ETHUSDT", "2024-02", "2024-03", [0.025, 0.07])]


def _row(schema: dict, **values) -> dict:
    return {**{c: None for c in schema}, **values}


def _write_validation(lake, strategy, symbol, month, oos_month, ps) -> None:
    rows = [_row(OOS_SCHEMA, strategy=strategy, symbol=symbol, critique_month=month, oos_month=oos_month, critic="rules",
                 name="fast_period", value=str(10 + k), suggestion_index=k, n_tested=len(ps),
                 tested=p != "untested", p_value=None if p in (None, "untested") else p, local_bar=0.05 / len(ps),
                 clears_local_bar=isinstance(p, float) and p <= 0.05 / len(ps))
            for k, p in enumerate(ps)]
    lake.write_parquet(pl.DataFrame(rows, schema=OOS_SCHEMA), lake.oos_dir(strategy, symbol, month) / "validation.parquet")


def _write_handoff(lake, symbol, month, oos_month, ps) -> None:
    rows = [_row(HANDOFF_SCHEMA, strategy="ema_cross", symbol=symbol, sweep_month=month, oos_month=oos_month, sweep_rank=k + 1,
                 event_params=f'{{"fast_period": {100 * (k + 1)}}}', tested=True, n_tested=len(ps), p_value=p,
                 local_bar=0.05 / len(ps), clears_local_bar=p <= 0.05 / len(ps))
            for k, p in enumerate(ps)]
    lake.write_parquet(pl.DataFrame(rows, schema=HANDOFF_SCHEMA), lake.handoff_dir("ema_cross", symbol, month) / "handoff.parquet")


def _bh_by_hand(ps: list[float], q: float) -> set[int]:
    """Benjamini–Hochberg from its definition: reject the k smallest, k the largest i with
    p_(i) <= i q / m."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    k = max((i for i in range(1, m + 1) if ps[order[i - 1]] <= i * q / m), default=0)
    return set(order[:k])


def _tests() -> list[dict]:
    """Every test of the lake with its p as the family sees it (None -> 1; untested left out)."""
    out = []
    for strategy, symbol, month, oos, ps in SUGGESTIONS:
        for k, p in enumerate(ps):
            if p != "untested":
                out.append({"kind": "suggestion", "key": (strategy, symbol, month, k), "oos": oos, "p": 1.0 if p is None else p})
    for symbol, month, oos, ps in HANDOFFS:
        for k, p in enumerate(ps):
            out.append({"kind": "handoff", "key": ("ema_cross", symbol, month, k + 1), "oos": oos, "p": p})
    return out


def _populate(lake) -> list[str]:
    for s in SUGGESTIONS:
        _write_validation(lake, *s)
    for h in HANDOFFS:
        _write_handoff(lake, *h)
    return sorted(str(p) for p in lake.root.glob("*/strategy=*/symbol=*/month=*/*.parquet"))


def _key(r: dict) -> tuple:
    return r["kind"], (r["strategy"], r["symbol"], r["month"], r["test_index"])


def test_a_lake_of_known_p_values_reports_exactly_the_bh_survivors(lake):
    sources = _populate(lake)
    before = {p: file_sha256(Path(p)) for p in sources}
    out = discoveries.run_discoveries(lake, Q)

    tests = _tests()
    survivors = {(tests[i]["kind"], tests[i]["key"]) for i in _bh_by_hand([t["p"] for t in tests], Q)}
    assert len(tests) == 14 and len(survivors) == 7  # not trivial: 7 of 14 (naive p <= q: 9; Bonferroni: 2)
    table = out.table
    got = {_key(r) for r in table.iter_rows(named=True) if r["improved"]}
    assert got == survivors
    assert out.summary == "7 of 14 tested changes survive FDR at q=0.1"
    assert out.manifest["by_kind"] == {"suggestion": {"tested": 10, "survivors": 5}, "handoff": {"tested": 4, "survivors": 2}}
    assert out.manifest["undefined_p_counted_as_1"] == 1 and out.manifest["not_tested"] == 1
    untested = table.filter(~pl.col("in_family"))
    assert untested.height == 1 and untested["improved"].to_list() == [False] and untested["family_size"].to_list() == [None]
    # the adjusted p-values are statsmodels' fdr_bh: min over j >= i of p_(j) m / j
    fam = table.filter(pl.col("in_family")).sort("p_used")
    m = fam.height
    adj = np.minimum.accumulate((fam["p_used"].to_numpy() * m / np.arange(1, m + 1))[::-1])[::-1].clip(max=1.0)
    np.testing.assert_allclose(fam["p_adjusted"].to_numpy(), adj)

    # point in time: the tests of 2024-02 are judged among the tests of 2024-02 only
    early = [t for t in tests if t["oos"] == "2024-02"]
    early_survivors = {(early[i]["kind"], early[i]["key"]) for i in _bh_by_hand([t["p"] for t in early], Q)}
    pit = table.filter(pl.col("in_family") & (pl.col("oos_month") == "2024-02"))
    assert {_key(r) for r in pit.iter_rows(named=True) if r["improved_point_in_time"]} == early_survivors
    assert set(pit["family_size_point_in_time"].to_list()) == {len(early)}
    late = table.filter(pl.col("in_family") & (pl.col("oos_month") == "2024-03"))
    assert set(late["family_size_point_in_time"].to_list()) == {14}
    assert late["improved_point_in_time"].to_list() == late["improved"].to_list()

    # the slices' own files never change
    assert {p: file_sha256(Path(p)) for p in sources} == before

    # the views: each slice's figures with the ledger's verdict
    con = duck.connect(lake)
    view = con.sql("SELECT strategy, symbol, critique_month, suggestion_index, improved, fdr_status FROM suggestions").fetchall()
    assert len(view) == 11
    judged = {("suggestion", (s, y, mo, k)): imp for s, y, mo, k, imp, _ in view}
    assert {k for k, v in judged.items() if v} == {k for k in survivors if k[0] == "suggestion"}
    assert sorted(st for *_, st in view).count("not tested (the candidate could not run)") == 1
    assert con.sql("SELECT count(*) FROM handoffs WHERE improved").fetchall() == [(2,)]
    assert con.sql("SELECT count(*) FROM discoveries").fetchall() == [(15,)]


def test_only_new_or_changed_slices_are_read_again_and_a_rerun_slice_awaits_its_verdict(lake):
    _populate(lake)
    first = discoveries.run_discoveries(lake, Q)
    assert first.manifest["files_read"] == 6 and first.manifest["files_carried_over"] == 0
    again = discoveries.run_discoveries(lake, Q)
    assert again.manifest["files_read"] == 0 and again.manifest["files_carried_over"] == 6
    assert again.data_version == first.data_version and again.table.equals(first.table)

    # a re-run validation with new p-values: the views show it as not judged until the ledger runs
    _write_validation(lake, "mean_reversion", "ETHUSDT", "2024-02", "2024-03", [0.0001, 0.0002, 0.95])
    con = duck.connect(lake)
    rows = con.sql("SELECT improved, fdr_status FROM suggestions WHERE symbol = 'ETHUSDT' AND strategy = 'mean_reversion'").fetchall()
    assert {r[1] for r in rows} == {"not judged yet: materialise discoveries"} and {r[0] for r in rows} == {None}
    # an old-format slice (written before p-values) is listed, not judged, and read again next time
    lake.write_parquet(pl.DataFrame({"strategy": ["ema_cross"], "symbol": ["SOLUSDT"], "critique_month": ["2024-01"],
                                     "oos_month": ["2024-02"], "p_better": [0.99], "improved": [True]}),
                       lake.oos_dir("ema_cross", "SOLUSDT", "2024-01") / "validation.parquet")
    third = discoveries.run_discoveries(lake, Q)
    assert third.manifest["files_read"] == 2 and third.manifest["files_carried_over"] == 5
    assert third.manifest["files_before_fdr"] == 1
    assert third.manifest["files_before_fdr_first"] == ["oos/strategy=ema_cross/symbol=SOLUSDT/month=2024-01/validation.parquet"]
    assert third.manifest["tested"] == 14  # the old slice is not a test the ledger can judge
    tests = [t if t["key"][:3] != ("mean_reversion", "ETHUSDT", "2024-02") else
             {**t, "p": [0.0001, 0.0002, 0.95][t["key"][3]]} for t in _tests()]
    survivors = {(tests[i]["kind"], tests[i]["key"]) for i in _bh_by_hand([t["p"] for t in tests], Q)}
    assert {_key(r) for r in third.table.iter_rows(named=True) if r["improved"]} == survivors
    assert discoveries.run_discoveries(lake, Q).manifest["files_read"] == 1  # only the old-format slice, again
    # a removed slice leaves the ledger
    (lake.handoff_dir("ema_cross", "ETHUSDT", "2024-02") / "handoff.parquet").unlink()
    assert discoveries.run_discoveries(lake, Q).manifest["tested"] == 12


def test_the_discoveries_asset_reports_k_of_n_at_the_configured_q(lake, instance, monkeypatch):
    import dagster as dg

    from quant_assets.assets.discoveries import discoveries_asset
    from quant_assets.definitions import SPECS
    from resources import LakeResource

    _populate(lake)
    monkeypatch.setenv("QUANT_FDR_Q", "0.05")
    asset = discoveries_asset(SPECS)
    assert asset.code_versions_by_key[dg.AssetKey("discoveries")].endswith("-q0.05")
    assert {k.to_user_string() for k in asset.asset_deps[asset.key]} == {
        "oos_validation_ema_cross", "oos_validation_mean_reversion", "oos_validation_market_maker", "sweep_oos_ema_cross"}
    res = dg.materialize([asset], instance=instance, resources={"lake": LakeResource()})
    (mat,) = res.asset_materializations_for_node("discoveries")
    tests = _tests()
    k = len(_bh_by_hand([t["p"] for t in tests], 0.05))
    assert mat.metadata["summary"].value == f"{k} of 14 tested changes survive FDR at q=0.05"
    assert mat.metadata["survivors"].value == k and mat.metadata["tested"].value == 14
    monkeypatch.setenv("QUANT_FDR_Q", "1.5")
    with pytest.raises(ValueError, match="QUANT_FDR_Q='1.5': expected a level strictly between 0 and 1"):
        discoveries_asset(SPECS)


def _series(r: np.ndarray, start: str = "2024-02-01", interval_s: float = 60.0) -> ReturnSeries:
    idx = pd.date_range(start, periods=len(r), freq=f"{int(interval_s)}s") + pd.Timedelta(seconds=interval_s)
    return ReturnSeries(pd.Series(r, index=idx), interval_s, 365, 1e5, 1e5 * float(np.prod(1 + r)))


def test_the_one_sided_sharpe_difference_test_is_ledoit_wolf_by_hand():
    rng = np.random.default_rng(4)
    n = 60 * 24 * 20  # 20 days of minutes
    common = rng.standard_normal(n) * 1e-4
    base = common + rng.standard_normal(n) * 3e-5
    better = common + rng.standard_normal(n) * 3e-5 + 4e-6  # the same market, a small edge per minute
    up, down = sharpe_difference(_series(better), _series(base)), sharpe_difference(_series(base), _series(better))
    assert up.hours == 20 * 24 and up.p_value < 0.05
    assert up.p_value + down.p_value == pytest.approx(1.0)  # one-sided: the reverse claim gets 1 - p
    # by hand, with no lags (the iid delta method of Ledoit & Wolf 2008, eq. 2-4), on hourly returns
    h = lambda r: np.expm1(np.log1p(r).reshape(-1, 60).sum(axis=1))  # noqa: E731
    x = np.column_stack([h(better), h(base)])
    mu, g = x.mean(axis=0), (x**2).mean(axis=0)
    v = g - mu**2
    delta = mu[0] / math.sqrt(v[0]) - mu[1] / math.sqrt(v[1])
    y = np.column_stack([x[:, 0] - mu[0], x[:, 1] - mu[1], x[:, 0] ** 2 - g[0], x[:, 1] ** 2 - g[1]])
    psi = y.T @ y / len(x)
    grad = np.array([g[0] / v[0] ** 1.5, -g[1] / v[1] ** 1.5, -mu[0] / (2 * v[0] ** 1.5), mu[1] / (2 * v[1] ** 1.5)])
    se = math.sqrt(grad @ psi @ grad / len(x))
    iid = sharpe_difference(_series(better), _series(base), lags=0)
    assert iid.delta == pytest.approx(delta, rel=1e-9) and iid.se == pytest.approx(se, rel=1e-9)
    from scipy.stats import norm

    assert iid.p_value == pytest.approx(norm.sf(delta / se), rel=1e-9)
    # undefined, with the reason: identical runs, a flat candidate, too little data
    assert "equal the baseline" in sharpe_difference(_series(base), _series(base)).reason
    assert "no variance" in sharpe_difference(_series(np.zeros(n)), _series(base)).reason
    short = sharpe_difference(_series(better[:600]), _series(base[:600]))
    assert short.p_value is None and "10 common hours" in short.reason
