"""Resource bounds: a landing file over the size limit is refused by name; a month whose sort
would not fit the memory budget is built slice by slice (same bytes as in one go) or refused
with a message; an hftbacktest month too big for the budget is refused before the engine
starts. Nothing already published changes."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from quant_assets.engines.inputs import MemoryBudgetError
from quant_assets.engines.runner import run_backtest
from quant_assets.ingest import build as build_mod
from quant_assets.ingest.build import build_partition
from quant_assets.ingest.landing import survey
from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
from quant_assets.lake import instruments
from quant_assets.strategies import registry
from quant_assets_tests import builders as b


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_landing_file_over_the_size_limit_is_refused_by_name(lake, monkeypatch):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(5))
    survey(lake, "BTCUSDT")
    build_partition(lake, "BTCUSDT", "2024-01")
    before = _sha(lake.ticks_path("BTCUSDT", "2024-01"))
    monkeypatch.setenv("QUANT_MAX_LANDING_BYTES", "1000")
    big = b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01-big.csv", b.binance_trades_csv(100, start_id=1000))
    (rec,) = [r for r in survey(lake, "BTCUSDT") if r.path.endswith("big.csv")]
    assert rec.status == "failed"
    assert f"{big.stat().st_size:,} bytes, over the 1,000-byte limit (QUANT_MAX_LANDING_BYTES)" in rec.error
    build_partition(lake, "BTCUSDT", "2024-01")
    assert _sha(lake.ticks_path("BTCUSDT", "2024-01")) == before


def _overlapping(lake, n=6_000):
    """Two files of one month that overlap in time: the build must sort."""
    for seed in (1, 2):
        path = write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=seed, events=n))
        path.rename(path.with_name(f"s{seed}-{path.name}"))
    survey(lake, "BTCUSDT")


def test_a_sort_over_the_memory_budget_runs_in_slices_with_the_same_result(lake, monkeypatch):
    _overlapping(lake)
    whole = build_partition(lake, "BTCUSDT", "2024-01")
    assert whole.sort_slices == 1
    reference = pl.read_parquet(whole.path)
    monkeypatch.setenv("QUANT_MEMORY_BUDGET_MB", "1")  # 12k rows x 250 B = 3 MB to sort
    sliced = build_partition(lake, "BTCUSDT", "2024-01")
    assert sliced.sort_slices > 1
    assert pl.read_parquet(sliced.path).equals(reference)
    assert sliced.sha256 == whole.sha256
    assert list(lake.scratch_dir().iterdir()) == []  # slice files are removed


def test_a_sort_far_beyond_the_budget_is_refused_and_the_partition_kept(lake, monkeypatch):
    _overlapping(lake)
    before = _sha(build_partition(lake, "BTCUSDT", "2024-01").path)
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01-more.csv", b.binance_trades_csv(50, t0_ms=b.JAN_MS + 3_600_000))
    survey(lake, "BTCUSDT")
    monkeypatch.setenv("QUANT_MEMORY_BUDGET_MB", "1")
    monkeypatch.setattr(build_mod, "MAX_SORT_SLICES", 2)
    with pytest.raises(build_mod.MemoryBudgetError, match="QUANT_MEMORY_BUDGET_MB"):
        build_partition(lake, "BTCUSDT", "2024-01")
    assert _sha(lake.ticks_path("BTCUSDT", "2024-01")) == before
    assert not list(lake.root.rglob(".tmp-*"))


def test_an_hftbacktest_month_over_the_budget_is_refused_before_the_engine_starts(lake, monkeypatch):
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", seed=3, events=20_000))
    survey(lake, "BTCUSDT")
    path = build_partition(lake, "BTCUSDT", "2024-01").path
    instruments.record_inferred(lake, instruments.infer("BTCUSDT", pl.scan_parquet(path), "BINANCE"), "2024-01")
    monkeypatch.setenv("QUANT_MEMORY_BUDGET_MB", "64")  # below the engine's fixed ~300 MiB
    spec = registry.load()["market_maker"]
    with pytest.raises(MemoryBudgetError) as err:
        run_backtest(lake, spec, "BTCUSDT", "2024-01")
    msg = str(err.value)
    assert "20,000 ticks" in msg and "QUANT_MEMORY_BUDGET_MB" in msg and "nautilus" in msg
    assert str(lake.ticks_path("BTCUSDT", "2024-01")) in msg
    assert not lake.backtest_dir("market_maker", "BTCUSDT", "2024-01").exists()
