"""Cross-sectional factor analysis (month × universe) with alphalens: a planted look-ahead signal
has IC 1, a random one IC near 0, a later month changes nothing, too few members is null with
its reason, and the published folder holds what the report says."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from quant_assets.research.bars import BAR_SCHEMA
from quant_assets.research.cross_section import (
    CrossSectionInputError, CrossSectionSettings, cross_section, month_bounds, run_cross_section,
)
from quant_assets.research.factors import SIGNAL_DEFS, SignalDef
from quant_assets.strategies.registry import EMA_CROSS, MEAN_REVERSION

MINUTE = 60_000_000_000
MEMBERS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT"]
HOURLY = CrossSectionSettings(sample="1h", periods=(1, 4), quantiles=5)

#: The future return over the next hour of 1-minute bars: a planted look-ahead (the sampled bar
#: is each hour's last; 60 bars on is the next hour's last, the end of the 1-sample horizon).
LOOKAHEAD = SignalDef("lookahead", lambda _p: pl.col("mid_close").shift(-60) / pl.col("mid_close") - 1.0, (),
                      "the next hour's return (planted look-ahead)")
#: A seeded pseudo-random signal: a hash of the bar's own mid, unrelated to what follows.
RANDOM = SignalDef("random", lambda _p: (pl.col("mid_close").hash(seed=11) % 1_000_003).cast(pl.Float64), (),
                   "a seeded hash of the mid (noise)")


def _bars(month: str, seed: int, drop_every: int = 0) -> pl.DataFrame:
    """One member's month of 1-minute bars with a random-walk mid (5 quotes a bar); every
    ``drop_every``-th bar absent (a bar without ticks is absent, as bars_1m has it)."""
    start, end = month_bounds(month)
    ts = np.arange(start, end, MINUTE, dtype=np.int64)
    rng = np.random.default_rng(seed)
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 5e-4, len(ts))))
    keep = np.ones(len(ts), dtype=bool) if not drop_every else (np.arange(len(ts)) % drop_every) != 7
    n = int(keep.sum())
    cols = {"ts": ts[keep], "mid_close": mid[keep], "quotes": np.full(n, 5, dtype=np.uint32)}
    frame = pl.DataFrame({name: cols.get(name, pl.Series([None] * n, dtype=dtype)) for name, dtype in BAR_SCHEMA.items()})
    return frame.with_columns(open=pl.col("mid_close"), close=pl.col("mid_close"), high=pl.col("mid_close"),
                              low=pl.col("mid_close"), volume=0.0, trades=0, source=pl.lit("mid")).cast(BAR_SCHEMA)


def _write(lake, members, month, drop_every: int = 0) -> None:
    for i, symbol in enumerate(members):
        lake.write_parquet(_bars(month, seed=1_000 * i + int(month[-2:]), drop_every=drop_every),
                           lake.bars_path("1m", symbol, month))


def test_a_planted_lookahead_has_ic_one_and_a_random_signal_ic_near_zero(lake):
    _write(lake, MEMBERS, "2024-01")
    planted = cross_section(lake, EMA_CROSS, LOOKAHEAD, "five", MEMBERS, "2024-01", settings=HOURLY)
    one = planted.report["periods"]["1h"]
    assert planted.reason is None and planted.report["members_used"] == MEMBERS
    # 744 hourly grid times; the planted signal needs the next hour (the last has none) and the
    # 1-sample horizon ends inside the month for all but the last: 743 ICs, each exactly 1
    assert planted.report["sample_times_grid"] == 744 and one["ic_times"] == 743
    assert one["ic_mean"] == pytest.approx(1.0) and planted.ic["1h"].min() == pytest.approx(1.0)
    assert one["quantile_mean_bps"] == sorted(one["quantile_mean_bps"]) and one["top_minus_bottom_bps"] > 0
    four = planted.report["periods"]["4h"]
    assert four["ic_times"] == 743 - 3 and 0.2 < four["ic_mean"] < 0.9  # one hour of four is known: it fades
    noise = cross_section(lake, EMA_CROSS, RANDOM, "five", MEMBERS, "2024-01", settings=HOURLY)
    for label in ("1h", "4h"):
        assert abs(noise.report["periods"][label]["ic_mean"]) < 0.1  # 744 times: the IC's standard error is ~0.02
    # alphalens's turnover of a random signal's top quintile (one member of five): almost always new
    assert noise.report["periods"]["1h"]["turnover_top"] > 0.6
    assert abs(noise.report["periods"]["1h"]["rank_autocorrelation"]) < 0.1
    s = noise.summary()
    assert s["members_used"] == MEMBERS and set(s["units"]) >= {"ic_mean", "top_minus_bottom_bps", "turnover_top"}


def test_the_month_does_not_change_when_a_later_month_arrives(lake):
    members = MEMBERS[:4]
    _write(lake, members, "2023-12")  # warm-up history and quotes per bar from before
    _write(lake, members, "2024-01", drop_every=13)  # members miss bars: missing at some times, never filled
    settings = CrossSectionSettings(sample="1h", periods=(1, 5), quantiles=2, min_per_quantile=2)
    for spec, signal in ((MEAN_REVERSION, SIGNAL_DEFS["zscore_reversion"]), (EMA_CROSS, SIGNAL_DEFS["ema_spread"])):
        before = cross_section(lake, spec, signal, "four", members, "2024-01", settings=settings)
        _write(lake, members, "2024-02")
        after = cross_section(lake, spec, signal, "four", members, "2024-01", settings=settings)
        for symbol in members:  # back to the month alone for the next strategy
            lake.bars_path("1m", symbol, "2024-02").unlink()
        assert before.reason is None and before.report["sample_times_used"] > 600
        assert after.report == before.report
        for frame in ("ic", "quantile_returns", "turnover"):
            assert getattr(after, frame).equals(getattr(before, frame))
        # the last horizon's samples of the month have no forward return (the next month is never read)
        assert before.report["periods"]["5h"]["forward_returns"] < before.report["periods"]["1h"]["forward_returns"]
        assert before.ic["time"].max() <= month_bounds("2024-01")[1] - 3_600_000_000_000


def test_fewer_than_two_members_is_null_with_the_reason(lake, tmp_path):
    _write(lake, MEMBERS[:1], "2024-01")
    alone = cross_section(lake, EMA_CROSS, RANDOM, "solo", MEMBERS[:2], "2024-01", settings=HOURLY)
    assert alone.reason == "1 member(s) with bars in 2024-01; a cross-section needs at least 2"
    assert alone.report["periods"] is None and alone.ic.is_empty() and alone.quantile_returns.is_empty()
    assert "no 1m bars for 2024-01" in alone.report["members_missing"]["BBBUSDT"]
    _write(lake, MEMBERS[1:3], "2024-01")
    few = cross_section(lake, EMA_CROSS, RANDOM, "three", MEMBERS[:3], "2024-01", settings=HOURLY)
    assert few.reason.startswith("3 members with bars in 2024-01 cannot fill 5 quantiles with 1 each")
    out = run_cross_section(lake, EMA_CROSS, RANDOM, "three", MEMBERS[:3], "2024-01", settings=HOURLY)
    assert out.directory == lake.factor_xs_dir("ema_cross", "three", "2024-01")
    report = json.loads((out.directory / "report.json").read_text())
    assert report["reason"] == few.reason and report["summary"]["reason"] == few.reason
    assert pl.read_parquet(out.directory / "ic.parquet").is_empty()
    with pytest.raises(CrossSectionInputError, match="not a whole multiple of the bar interval"):
        cross_section(lake, EMA_CROSS, RANDOM, "three", MEMBERS[:3], "2024-01", settings=CrossSectionSettings(sample="90s"))


def test_the_published_folder_holds_the_result(lake):
    _write(lake, MEMBERS[:3], "2024-01")
    settings = CrossSectionSettings(sample="1h", periods=(1,), quantiles=3)
    out = run_cross_section(lake, EMA_CROSS, LOOKAHEAD, "three", MEMBERS[:3], "2024-01", settings=settings)
    d = out.directory
    assert sorted(p.name for p in d.iterdir()) == ["ic.parquet", "manifest.json", "quantile_returns.parquet", "report.json",
                                                   "turnover.parquet"]
    assert pl.read_parquet(d / "ic.parquet").equals(out.result.ic)
    turnover = pl.read_parquet(d / "turnover.parquet")
    assert turnover["metric"].to_list() == ["rank_autocorrelation", "quantile_turnover", "quantile_turnover",
                                            "quantile_turnover"]
    report = json.loads((d / "report.json").read_text())
    assert report["summary"]["ic_mean_1h"] == pytest.approx(1.0)
    assert set(report["inputs"]["AAAUSDT"]["bars"]) == {"bars/interval=1m/symbol=AAAUSDT/month=2024-01/part-0.parquet"}


def test_a_missing_price_is_not_filled_past_the_limit():
    from quant_assets.research.cross_section import analyse, month_grid

    grid = month_grid("2024-01", 3_600_000_000_000)[:40]
    rng = np.random.default_rng(3)
    members = {s: pl.DataFrame({"time": grid, "mid": 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(grid)))),
                                "signal": rng.normal(size=len(grid))}) for s in MEMBERS[:3]}
    members["AAAUSDT"] = members["AAAUSDT"].filter(pl.col("time") != grid[10])  # no bar in hour 11
    settings = CrossSectionSettings(sample="1h", periods=(1,), quantiles=3, min_times=10)
    strict = analyse(members, "2024-01", settings)
    filled = analyse(members, "2024-01", CrossSectionSettings(sample="1h", periods=(1,), quantiles=3, min_times=10, fill_limit=1))
    # the time AAA misses has two members: too few for three quantiles, so it is left out
    assert strict.report["sample_times_used"] == 39 and strict.report["sample_times_too_few_members"] == 1
    # 39 times x 3 members; the last time has no next hour (3); AAA's return into its missing
    # hour is not taken from its previous price (1) unless the limit allows: a price carried
    # one sample fills both (a zero return)
    assert strict.report["periods"]["1h"]["forward_returns"] == 39 * 3 - 3 - 1
    assert filled.report["periods"]["1h"]["forward_returns"] == 39 * 3
