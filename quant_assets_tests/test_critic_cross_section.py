"""The critic reads the cross-sectional factor analysis (quant_assets.critique.cross_section_context):
same month only, published slices only, no member names, bounded, recorded in critique.json, and
used by the rule critic. The factors_xs slices are published by the real writer
(quant_assets.research.cross_section.write) from results made in code: alphalens never runs here,
nor does any engine (the metric set of the critique is written by hand)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from quant_assets.critique import cross_section_context as xs_mod
from quant_assets.critique.critics import RuleCritic
from quant_assets.critique.cross_section_context import cross_section_context
from quant_assets.critique.prompt import MonthPosition, build_prompt
from quant_assets.lake.store import Lake, file_sha256
from quant_assets.portfolio import universes
from quant_assets.research.cross_section import CrossSectionResult, write
from quant_assets.strategies.registry import EMA_CROSS

MEMBERS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.fixture
def universes_file(tmp_path, monkeypatch):
    path = tmp_path / "universes.toml"
    path.write_text('[universes]\nalts_basket = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]\nquiet_pair = ["ADAUSDT", "XRPUSDT"]\n')
    monkeypatch.setenv(universes.CONFIG_ENV, str(path))
    return path


def _publish(lake: Lake, universe: str, month: str, members: list[str], ic: float = 0.12, t: float = 3.1,
             horizons: tuple[str, ...] = ("1h", "4h", "1d")) -> str:
    """A computed month x universe analysis published by the real writer; the report.json path."""
    periods = {h: {"ic_mean": ic, "ic_t": t, "top_minus_bottom_bps": 4.25, "turnover_top": 0.31, "rank_autocorrelation": 0.87}
               for h in horizons}
    report = {"strategy": EMA_CROSS.name, "universe": universe, "month": month, "members": members,
              "members_used": members, "sample": "1h", "sample_times_used": 700, "periods": periods, "reason": None,
              "signal": "ema_spread", "signal_description": "(EMA fast - EMA slow) / mid: ema_cross is long when positive"}
    out = write(lake, CrossSectionResult(report, pl.DataFrame(), pl.DataFrame(), pl.DataFrame()))
    return lake.relative(out.directory / "report.json")


def _trades(n: int = 200) -> pl.DataFrame:
    pnl = np.linspace(-20, 40, n)
    return pl.DataFrame({
        "trade_id": np.arange(n), "direction": np.ones(n, np.int8), "duration_s": np.full(n, 60.0), "pnl": pnl,
        "fees": np.full(n, 1.0), "return": pnl / 1e4, "return_on_equity": pnl / 1e5,
        "entry_hour_utc": (np.arange(n) % 24).astype(np.int8), "entry_weekday": np.ones(n, np.int8),
        "spread_bps": np.full(n, 1.5), "vol_at_entry": np.full(n, 0.4), "vol_regime": ["normal"] * n,
        "entry_ts": np.arange(n, dtype=np.int64), "entry_price": np.full(n, 42_000.0), "exit_price": np.full(n, 42_010.0),
    })


REGIMES = pl.DataFrame({"regime": ["low", "normal", "high"], "samples": [100] * 3, "pnl": [500.0, 700.0, 800.0],
                        "trades": [10] * 3, "trade_pnl": [500.0, 700.0, 800.0], "trade_win_rate": [0.5] * 3,
                        "time_share": [1 / 3] * 3})
METRICS = {"periods": 40_000, "interval_s": 60.0, "periods_per_year": 525_600.0, "total_return": 0.02, "sharpe": 2.5,
           "psr": 0.97, "max_drawdown": -0.03, "trades": 200, "trade_win_rate": 0.55, "pnl": 2_000.0, "gross_pnl": 3_000.0,
           "fees": 1_000.0, "null_reasons": "{}"}


def _prompt(symbol: str = "BTCUSDT", cross_section: dict | None = None):
    """A healthy month (the rule critic calls it robust on its own)."""
    return build_prompt(EMA_CROSS, METRICS, _trades(), REGIMES, symbol, MonthPosition(2, 2), cross_section=cross_section)


def test_the_context_is_in_that_months_prompt_only_without_member_names(tmp_path, universes_file) -> None:
    lake = Lake.at(tmp_path / "lake")
    rel = _publish(lake, "alts_basket", "2024-02", MEMBERS)
    ctx = cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-02")
    assert ctx.sources == [{"universe": "alts_basket", "label": "U1", "path": rel, "sha256": file_sha256(lake.root / rel)}]
    prompt = _prompt(cross_section=ctx.as_prompt())
    shown = prompt.data["cross_section"]["universes"]
    assert shown == [{"universe": "U1", "members": 3, "members_used": 3, "sample_times": 700, "sample": "1h", "reason": None,
                      **{f"{k}_{h}": v for h in ("1h", "4h", "1d") for k, v in (
                          ("ic_mean", 0.12), ("ic_t", 3.1), ("top_minus_bottom_bps", 4.25), ("turnover_top", 0.31),
                          ("rank_autocorrelation", 0.87))}}]
    text = json.dumps(prompt.as_json())
    assert "top_minus_bottom_bps" in json.dumps(prompt.data["cross_section"]["units"])  # units kept
    for leak in ("ETHUSDT", "SOLUSDT", "BTC", "alts_basket", "2024"):
        assert leak not in text
    # a later month's slice changes nothing about February's context
    _publish(lake, "alts_basket", "2024-03", MEMBERS, ic=-0.5, t=-9.0)
    assert cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-02").as_prompt() == ctx.as_prompt()
    # another month without its own slice (January): no key at all, the prompt is what it was without one
    jan = cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-01")
    assert jan.as_prompt() is None and jan.skipped[0]["reason"] == "not published (no manifest.json)"
    assert _prompt(cross_section=jan.as_prompt()).digest == _prompt().digest
    assert "cross_section" not in _prompt().data
    # a symbol in no universe: nothing shown, nothing recorded
    none = cross_section_context(lake, EMA_CROSS.name, "DOGEUSDT", "2024-02")
    assert none.as_prompt() is None and none.record() is None


def test_an_unpublished_or_altered_slice_is_skipped_with_the_reason(tmp_path, monkeypatch) -> None:
    path = tmp_path / "universes.toml"
    path.write_text('[universes]\nalpha = ["BTCUSDT", "ETHUSDT"]\nbeta = ["BTCUSDT", "SOLUSDT"]\n')
    monkeypatch.setenv(universes.CONFIG_ENV, str(path))
    lake = Lake.at(tmp_path / "lake")
    _publish(lake, "alpha", "2024-02", ["BTCUSDT", "ETHUSDT"])
    (lake.factor_xs_dir(EMA_CROSS.name, "alpha", "2024-02") / "manifest.json").unlink()  # a writer that died before its mark
    rel = _publish(lake, "beta", "2024-02", ["BTCUSDT", "SOLUSDT"])
    report = json.loads((lake.root / rel).read_text())
    report["summary"]["ic_mean_1h"] = 0.99  # edited after publication
    (lake.root / rel).write_text(json.dumps(report))
    ctx = cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-02")
    assert ctx.as_prompt() is None and ctx.sources == []
    reasons = {s["universe"]: s["reason"] for s in ctx.skipped}
    assert reasons["alpha"] == "not published (no manifest.json)" and "differs from the manifest" in reasons["beta"]
    assert ctx.record() == {"shown": 0, "sources": [], "skipped": ctx.skipped}


def test_the_context_stays_bounded(tmp_path, monkeypatch) -> None:
    names = [f"u{i}" for i in range(5)]
    path = tmp_path / "universes.toml"
    path.write_text("[universes]\n" + "".join(f'{n} = ["BTCUSDT", "ETH{i}USDT"]\n' for i, n in enumerate(names)))
    monkeypatch.setenv(universes.CONFIG_ENV, str(path))
    lake = Lake.at(tmp_path / "lake")
    for i, n in enumerate(names):
        _publish(lake, n, "2024-02", ["BTCUSDT", f"ETH{i}USDT"], horizons=("1h", "2h", "4h", "8h", "12h", "1d"))
    ctx = cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-02")
    assert len(json.dumps(ctx.as_prompt(), separators=(",", ":"))) <= xs_mod.MAX_CONTEXT_CHARS
    assert 1 <= len(ctx.shown) <= xs_mod.MAX_UNIVERSES and len(ctx.sources) == len(ctx.shown)
    assert ctx.as_prompt()["units"] == xs_mod.SHORT_UNITS  # the long glossary gave way; units stay
    assert len(ctx.shown) + len(ctx.skipped) == len(names)  # every universe is either shown or said why not
    _prompt(cross_section=ctx.as_prompt())  # within the whole prompt's bound too


def test_the_rule_critic_names_a_signal_that_ranks_against_the_universe(tmp_path, universes_file) -> None:
    lake = Lake.at(tmp_path / "lake")
    _publish(lake, "alts_basket", "2024-02", MEMBERS, ic=-0.2, t=-3.4)
    ctx = cross_section_context(lake, EMA_CROSS.name, "BTCUSDT", "2024-02").as_prompt()
    c = RuleCritic().critique(_prompt(cross_section=ctx), EMA_CROSS).critique
    assert c.verdict == "fragile" and any(
        "universe U1 (3 members): " in r and "1h mean IC -0.2 (t -3.4)" in r for r in c.risks)
    assert RuleCritic().critique(_prompt(), EMA_CROSS).critique.verdict == "robust"  # without it: robust


def test_the_critique_records_the_files_it_read(tmp_path, universes_file) -> None:
    from quant_assets.critique.run import run_critique

    lake = Lake.at(tmp_path / "lake")
    d = lake.metrics_dir(EMA_CROSS.name, "BTCUSDT", "2024-02")
    d.mkdir(parents=True)
    pl.DataFrame([METRICS]).write_parquet(d / "metrics.parquet")
    _trades().write_parquet(d / "trades.parquet")
    REGIMES.write_parquet(d / "regimes.parquet")
    (d / "manifest.json").write_text(json.dumps({"files": {}}))
    rel = _publish(lake, "alts_basket", "2024-02", MEMBERS)
    out = run_critique(lake, EMA_CROSS, "BTCUSDT", "2024-02", RuleCritic())
    assert out.record["cross_section"]["sources"] == [{"universe": "alts_basket", "label": "U1", "path": rel,
                                                       "sha256": file_sha256(lake.root / rel)}]
    assert out.record["cross_section"]["skipped"] == []
    prompt = json.loads((out.directory / "prompt.json").read_text())
    assert prompt["data"]["cross_section"]["universes"][0]["universe"] == "U1"
