"""Issue 20's "appending a later month changes no earlier file": nothing about month M may
depend on month M+1.

A lake of one perpetual (ticks, funding and its venue settings) is built the way
``quant-assets sync`` builds it, for two months, with ``ema_cross``'s whole chain (backtest,
realism sensitivity, metrics, critique, out-of-sample validation, bars, sweep, engine
agreement, sweep hand-off, roll-up) and both factor analyses (``mean_reversion``'s converts its
window from quote updates to bars). Every result file of the two months is fingerprinted.

A third month then lands whose prices sit on a finer tick (the venue changed its tick size:
merged into the earlier months' instrument, it would change their backtests) and is built.
Then every earlier slice is recomputed from the lake as it now stands, the third month
included: a fresh Dagster instance on the same lake sees the first two months as never built
and rebuilds them, ticks first. The test checks they were rebuilt (a materialisation of every
asset of both months in the fresh instance, every result file rewritten), so it cannot pass by
leaving them alone; then that every file is byte-identical, and that the month parts of what
spans months are equal: the instrument records and the instrument each month resolves to, a
report's monthly rows, daily curve and walk-forward windows, each factor analysis's IC and
samples of those months.

Left out of the byte comparison, by design: ``run.json`` (what a run measured about itself:
wall times, peak RSS, whether the critic's answer came from its cache), and results of month
2024-02 that exist only once 2024-03 does (its out-of-sample tests). ~35 s on 2 cores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from quant_assets import sync
from quant_assets.ingest.synthetic import SyntheticSpec, generate, landing_name, write_funding_landing, write_landing
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.store import Lake

SYMBOL = "BTCUSDT-PERP"
EARLIER = ("2024-01", "2024-02")
LATER = "2024-03"
EVENTS = 5_000
#: ema_cross's whole chain, both factor analyses and the walk-forward: every month-partitioned
#: result family.
ASSETS = {
    "ticks", "funding", "venue_profile", "backtest_ema_cross", "sensitivity_ema_cross", "metrics_ema_cross",
    "critique_ema_cross", "oos_validation_ema_cross", "report_ema_cross", "bars_1m", "sweep_ema_cross",
    "agreement_ema_cross", "sweep_oos_ema_cross", "factors_ema_cross", "factors_mean_reversion",
    "wf_fold_ema_cross", "walkforward_ema_cross",
}
SLICE_ASSETS = ASSETS - {"venue_profile", "report_ema_cross", "factors_ema_cross", "factors_mean_reversion",
                         "walkforward_ema_cross"}
#: Slices with nothing before them to build on: January has no walk-forward fold (it waits).
FIRST_MONTH_WAITS = {"wf_fold_ema_cross"}
#: Lake folders that are not month results: raw drops, the parse cache, the critic's answer
#: cache, the shared ledgers (the instruments' month rows are compared below).
#: (``versions/``: the store of past versions, history rather than a result; the results it
#: keeps are the ones compared here.)
NOT_RESULTS = ("landing/", "staging/", "quarantine/", "critiques/_cache/", "manifest/", "trials/", "instruments/",
               "versions/")
#: A result folder's facts about the run that made it (see engines.runner): not data.
RUN_FACTS = "run.json"


def _sync(lake: Lake, instance: dg.DagsterInstance, months: tuple[str, ...] | None = None) -> None:
    """``quant-assets sync`` restricted to :data:`ASSETS` (and to the slices of ``months``)."""
    slices = [s for s in sync.discover(lake, instance, log=lambda m: None) if months is None or s[0] in months]
    only = lambda key: key.path[-1] in ASSETS  # noqa: E731
    states = sync.plan(lake, instance, slices, assets=only)
    replan = lambda: sync.plan(lake, instance, slices, assets=only)  # noqa: E731
    for _, _, result in sync.run_slices(instance, states, replan=replan):
        failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure and e.step_failure_data
                    and e.step_failure_data.error]
        assert result.success, failures


def _fingerprints(lake: Lake) -> dict[str, tuple[str, int]]:
    """Every result file of the earlier months: lake-relative path -> (SHA-256, mtime ns)."""
    out = {}
    for path in lake.root.rglob("*"):
        rel = path.relative_to(lake.root).as_posix()
        if not path.is_file() or rel.startswith(NOT_RESULTS) or path.name == RUN_FACTS or "/." in f"/{rel}":
            continue
        if any(f"month={m}/" in rel for m in EARLIER):
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


def _month_parts(lake: Lake) -> dict[str, object]:
    """The earlier months' parts of what spans months."""
    parts: dict[str, object] = {}
    records = pl.read_parquet(lake.instruments_path)
    parts["instrument records"] = records.filter(pl.col("month").is_in(EARLIER)).to_dicts()
    for month in EARLIER:
        parts[f"instrument as of {month}"] = inst_mod.resolve(lake, SYMBOL, month=month).__dict__
    rdir = lake.report_dir("ema_cross", SYMBOL)
    parts["report monthly"] = pl.read_parquet(rdir / "monthly.parquet").filter(pl.col("month").is_in(EARLIER)).to_dicts()
    parts["report daily"] = (pl.read_parquet(rdir / "daily.parquet")
                             .filter(pl.col("date").dt.strftime("%Y-%m").is_in(EARLIER)).to_dicts())
    parts["walk-forward windows"] = (pl.read_parquet(rdir / "walk_forward.parquet")
                                     .filter(pl.col("out_of_sample").is_in(EARLIER)).to_dicts())
    parts["walk-forward folds"] = (pl.read_parquet(lake.walkforward_dir("ema_cross", SYMBOL) / "folds.parquet")
                                   .filter(pl.col("oos_month").is_in(EARLIER)).to_dicts())
    for strategy in ("ema_cross", "mean_reversion"):
        fdir = lake.factor_dir(strategy, SYMBOL)
        parts[f"{strategy} factor IC"] = pl.read_parquet(fdir / "ic.parquet").filter(pl.col("month").is_in(EARLIER)).to_dicts()
        parts[f"{strategy} factor samples"] = (pl.read_parquet(fdir / "samples.parquet")
                                               .filter(pl.col("month").is_in(EARLIER)).to_dicts())
    return parts


def _land(lake: Lake, month: str, finer_tick: bool = False) -> None:
    spec = SyntheticSpec(SYMBOL, month, events=EVENTS)
    if not finer_tick:
        write_landing(lake, spec)
        return
    # The venue's tick size went from 0.01 to 0.001: the month's prices on the finer grid.
    ticks = generate(spec).with_columns((pl.col("bid_px", "ask_px", "price") + 0.003).round(3))
    lake.write_parquet(ticks, lake.landing_dir(SYMBOL) / landing_name(spec))
    write_funding_landing(lake, spec, ticks)


def _fresh_instance(home: Path, monkeypatch) -> dg.DagsterInstance:
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.instance_for_test(temp_dir=str(home))


def test_appending_a_later_month_changes_no_earlier_file(lake, instance, tmp_path, monkeypatch):
    for month in EARLIER:
        _land(lake, month)
    _sync(lake, instance)
    before, parts_before = _fingerprints(lake), _month_parts(lake)
    assert {rel.split("/")[0] for rel in before} == {"ticks", "funding", "backtests", "sensitivity", "metrics", "critiques", "oos",
                                                     "bars", "sweeps", "agreements", "handoffs", "wf_folds"}
    assert parts_before["instrument as of 2024-02"]["tick_size"] == 0.01

    _land(lake, LATER, finer_tick=True)
    _sync(lake, instance)  # the later month's whole chain, and February's out-of-sample tests
    assert inst_mod.resolve(lake, SYMBOL, month=LATER).tick_size == 0.001  # what the earlier months must not see

    # Recompute every earlier slice from the lake as it now stands.
    with _fresh_instance(tmp_path / "dagster_home_2", monkeypatch) as fresh:
        _sync(lake, fresh, months=EARLIER)
        for name in SLICE_ASSETS:
            built = fresh.get_materialized_partitions(dg.AssetKey(name))
            months = EARLIER[1:] if name in FIRST_MONTH_WAITS else EARLIER
            assert {f"{m}|{SYMBOL}" for m in months} <= built, (name, built)
    after, parts_after = _fingerprints(lake), _month_parts(lake)

    # February's out-of-sample tests exist only now that March does: they are about March
    extra = {rel for rel in set(after) - set(before)}
    assert extra and all(rel.startswith(("oos/", "handoffs/")) and "month=2024-02/" in rel for rel in extra), sorted(extra)
    # rebuilt, not left alone (ticks are a hard link to their staged parse, republished as it is)
    kept = [rel for rel in before if after[rel][1] == before[rel][1] and not rel.startswith("ticks/")]
    assert not kept, f"not rewritten by the recompute: {kept}"
    changed = [rel for rel in before if after[rel][0] != before[rel][0]]
    assert not changed, f"changed by a later month: {changed}"
    assert parts_after == parts_before
