"""Universes and portfolio roll-ups (quant_assets.portfolio), on data made in code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quant_assets.analytics import trials
from quant_assets.lake.store import file_sha256
from quant_assets.portfolio import universes
from quant_assets.portfolio.rollup import (
    INVERSE_VOL, Line, LineReturns, PortfolioError, Weighting, build, combine, write,
)

REPO = Path(__file__).resolve().parents[1]


# ---- universes -------------------------------------------------------------------------

def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "universes.toml"
    path.write_text(text)
    return path


def test_universes_load_members_and_the_inverse_index(tmp_path, monkeypatch):
    path = _toml(tmp_path, '[universes]\nmajors = ["btcusdt", "ETHUSDT"]\nbtc_basis = ["BTCUSDT", "BTCUSDT-PERP"]\n')
    monkeypatch.setenv(universes.CONFIG_ENV, str(path))
    assert universes.members("majors") == ("BTCUSDT", "ETHUSDT")  # normalised
    assert universes.universes_of("BTCUSDT") == ("btc_basis", "majors")
    assert universes.universes_of("btcusdt-perp") == ("btc_basis",)
    assert universes.universes_of("SOLUSDT") == () and universes.universes_of("../x") == ()
    path.write_text('[universes]\nmajors = ["SOLUSDT"]\n')  # an edit is seen (the cache keys on size and mtime)
    assert universes.universes_of("SOLUSDT") == ("majors",) and universes.universes_of("BTCUSDT") == ()
    with pytest.raises(universes.UniverseError, match=r"universes\.toml: no universe 'btc_basis' \(known: majors\)"):
        universes.members("btc_basis")
    assert universes.load(tmp_path / "absent.toml").sets == {}


@pytest.mark.parametrize("body, match", [
    ('[universes]\n"a|b" = ["BTCUSDT"]\n', r"universe 'a\|b': a universe name is 1-64 characters"),
    ('[universes]\nMajors = ["BTCUSDT"]\n', r"universe 'Majors'"),
    ('[universes]\nfutures = ["BTCUSDT_250328"]\n', r"universe 'futures': member 'BTCUSDT_250328' is a venue's raw symbol.*'BTCUSDT-250328'"),
    ('[universes]\nbad = ["BTC/USDT"]\n', r"universe 'bad': member 'BTC/USDT': invalid symbol"),
    ('[universes]\nbad = ["BTCUSDT", "btcusdt"]\n', r"universe 'bad': member 'btcusdt' is listed twice"),
    ('[universes]\nbad = []\n', r"universe 'bad': expected a non-empty list"),
    ('[universes]\nbad = "BTCUSDT"\n', r"universe 'bad': expected a non-empty list"),
    ('[universes]\nbad = [1]\n', r"universe 'bad': member 1 is not a string"),
    ('[universe]\nmajors = ["BTCUSDT"]\n', r"unknown table\(s\) 'universe'"),
    ('[universes\n', r"not valid TOML"),
])
def test_universe_errors_name_the_file_the_universe_and_the_member(tmp_path, body, match):
    path = _toml(tmp_path, body)
    with pytest.raises(universes.UniverseError, match=match) as err:
        universes.load(path)
    assert str(path) in str(err.value)


def test_the_shipped_universes_fit_the_synthetic_demo():
    shipped = universes.load(REPO / "universes.toml")
    assert shipped.members("btc_basis") == ("BTCUSDT", "BTCUSDT-PERP")  # `quant-assets demo`'s default symbols
    assert set(shipped.members("majors")) == {"BTCUSDT", "ETHUSDT"}  # prices the synthetic feed knows


# ---- the combination ---------------------------------------------------------------------

DAYS = pd.date_range("2024-01-01", periods=4, freq="D")


def _line(symbol: str, values, index=DAYS, missing=None) -> LineReturns:
    return LineReturns(Line("s", symbol), pd.Series(values, index=index, dtype="float64"), missing or {})


def test_two_lines_with_known_returns_give_the_known_drawdown_and_exact_contributions():
    a, b = _line("A", [0.10, -0.20, 0.05, 0.0]), _line("B", [0.0, -0.10, 0.10, 0.0])
    res = combine([a, b], Weighting(weights={"s:A": 3.0, "s:B": 1.0}), universe="u", name="p")
    # r = 0.75 a + 0.25 b = [0.075, -0.175, 0.0625, 0]: the worst fall is day 2, from the day-1 peak.
    assert res.daily["return"].to_list() == pytest.approx([0.075, -0.175, 0.0625, 0.0])
    assert res.report["max_drawdown"]["value"] == pytest.approx(-0.175)
    assert res.report["metrics"]["max_drawdown"] == pytest.approx(-0.175)  # quantstats' figure agrees
    assert (res.report["max_drawdown"]["peak"], res.report["max_drawdown"]["trough"]) == ("2024-01-01", "2024-01-02")
    dd = res.report["contributions"]["drawdown"]
    assert dd["s:A"] == pytest.approx(0.75 * -0.20) and dd["s:B"] == pytest.approx(0.25 * -0.10)
    total = 1.075 * 0.825 * 1.0625 - 1.0
    assert res.report["total_return"] == pytest.approx(total)
    ret = res.report["contributions"]["return"]
    assert ret["s:A"] + ret["s:B"] == pytest.approx(total)
    assert ret["s:B"] == pytest.approx(1.075 * 0.25 * -0.10 + 1.075 * 0.825 * 0.25 * 0.10)


def test_correlation_is_exactly_minus_one_for_mirrored_lines_and_pearson_otherwise():
    rng = np.random.default_rng(7)
    idx = pd.date_range("2024-01-01", periods=30, freq="D")
    x, z = rng.normal(0, 0.01, 30), rng.normal(0, 0.01, 30)
    res = combine([_line("A", x, idx), _line("B", -x, idx), _line("C", z, idx)], universe="u", name="p")
    corr = res.report["correlation"]
    assert corr["s:A"]["s:B"] == pytest.approx(-1.0, abs=1e-12)
    assert corr["s:A"]["s:C"] == pytest.approx(float(np.corrcoef(x, z)[0, 1]), abs=1e-12)
    # Equal weights of a line and its mirror cancel: the book is flat, every day.
    flat = combine([_line("A", x, idx), _line("B", -x, idx)], universe="u", name="p")
    assert np.allclose(flat.daily["return"].to_numpy(), 0.0, atol=1e-15)
    short = combine([_line("A", x[:3], idx[:3]), _line("B", z[:3], idx[:3])], universe="u", name="p")
    row = short.correlation.filter((pl.col("line_a") == "s:A") & (pl.col("line_b") == "s:B")).row(0, named=True)
    assert row["correlation"] is None and "3 common day(s)" in row["reason"]


def test_inverse_vol_weights_use_only_past_returns():
    rng = np.random.default_rng(11)
    idx = pd.date_range("2024-01-01", periods=40, freq="D")
    a, b = rng.normal(0, 0.01, 40), rng.normal(0, 0.03, 40)
    w = Weighting(INVERSE_VOL, window_days=10, min_days=5)

    def weights(a_values) -> pd.DataFrame:
        res = combine([_line("A", a_values, idx), _line("B", b, idx)], w, universe="u", name="p")
        return res.line_table.pivot(on="line", index="date", values="target_weight").to_pandas().set_index("date")

    before = weights(a)
    changed = a.copy()
    changed[25] = 0.5  # a shock on day 25
    after = weights(changed)
    pd.testing.assert_frame_equal(before.iloc[:26], after.iloc[:26])  # no weight up to day 25 itself moves
    assert not np.allclose(before.iloc[26:36]["s:A"], after.iloc[26:36]["s:A"])  # the next window sees it
    # Day 20's weight is 1/std over days 10..19, normalised; the first 5 days have none (warm-up).
    inv = 1 / np.array([a[10:20].std(ddof=1), b[10:20].std(ddof=1)])
    assert before.iloc[20]["s:A"] == pytest.approx(inv[0] / inv.sum())
    assert before.iloc[:5].isna().all().all()
    res = combine([_line("A", a, idx), _line("B", b, idx)], w, universe="u", name="p")
    assert res.daily["return"][:5].is_null().all() and "fewer than 5 daily returns" in res.daily["reason"][0]


def test_bad_weights_are_refused():
    a, b = _line("A", [0.01] * 4), _line("B", [0.02] * 4)
    with pytest.raises(PortfolioError, match="not in the portfolio"):
        combine([a, b], Weighting(weights={"s:X": 1.0}), universe="u", name="p")
    with pytest.raises(PortfolioError, match="non-negative"):
        combine([a, b], Weighting(weights={"s:A": -1.0, "s:B": 2.0}), universe="u", name="p")


# ---- from the lake ---------------------------------------------------------------------------

def _backtest(lake, strategy: str, symbol: str, month: str, daily_growth: float) -> None:
    """A backtest slice whose equity grows by ``daily_growth`` each UTC day (hourly samples;
    the mid moves every day so no day is taken for a closed market)."""
    start = pd.Timestamp(f"{month}-01")
    n = int((start + pd.offsets.MonthBegin(1) - start) / pd.Timedelta(hours=1))
    ts = start.value + np.arange(n, dtype=np.int64) * 3_600_000_000_000
    day = np.arange(n) // 24
    d = lake.backtest_dir(strategy, symbol, month)
    d.mkdir(parents=True)
    pl.DataFrame({"ts": ts, "equity": 10_000.0 * (1 + daily_growth) ** day, "mid": 100.0 + np.arange(n) * 0.01}).write_parquet(d / "equity.parquet")
    pl.DataFrame({"ts": pl.Series([], dtype=pl.Int64)}).write_parquet(d / "fills.parquet")
    files = {f: file_sha256(d / f) for f in ("equity.parquet", "fills.parquet")}
    (d / "manifest.json").write_text(json.dumps({"files": files, "params": {"equity_interval_s": 3600.0}, "starting_cash": 10_000.0}))


def test_a_missing_line_is_null_with_its_reason_and_the_book_is_published(lake, tmp_path):
    path = _toml(tmp_path, '[universes]\npair = ["AAAUSDT", "BBBUSDT"]\n')
    for month in ("2024-01", "2024-02"):
        _backtest(lake, "s", "AAAUSDT", month, 0.001)
    _backtest(lake, "s", "BBBUSDT", "2024-01", -0.002)  # no February
    for params in ({"x": 1}, {"x": 2}):
        trials.record(lake, "pkg.mod:S", "s", params)
    res = build(lake, "pair", "book", ["s"], universes_path=path, impls={"s": "pkg.mod:S"})
    lines = res.line_table
    feb_b = lines.filter((pl.col("line") == "s:BBBUSDT") & (pl.col("date") >= pl.date(2024, 2, 1)))
    assert feb_b.height == 29 and feb_b["return"].is_null().all()
    assert feb_b["reason"].str.contains("no backtest slice for 2024-02").all()
    assert res.report["missing"]["s:BBBUSDT"][0]["days"] == 29
    feb = res.daily.filter(pl.col("date") >= pl.date(2024, 2, 2))  # (Feb 1: the month's first day, flat by construction)
    assert feb["return"].to_list() == pytest.approx([0.001] * len(feb))  # A alone, renormalised: not a zero for B
    assert feb["reason"].str.contains("s:BBBUSDT: no backtest slice").all()
    jan = res.daily.filter(pl.col("date") == pl.date(2024, 1, 10))
    assert jan["return"][0] == pytest.approx(0.5 * 0.001 + 0.5 * -0.002)
    assert res.report["deflated_sharpe"]["n_trials"] == 2 * 2  # 2 parameter sets x 2 members
    assert res.inputs["s:BBBUSDT"]["2024-02"].startswith("no backtest slice")

    out = write(lake, res)
    assert out.directory == lake.root / "portfolios" / "universe=pair" / "set=book"
    assert out.tearsheet is not None and out.tearsheet.stat().st_size > 0
    manifest = json.loads((out.directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"daily.parquet", "lines.parquet", "correlation.parquet", "contributions.parquet", "portfolio.json"}
    assert pl.read_parquet(out.directory / "lines.parquet").filter(pl.col("return").is_null()).height == feb_b.height
