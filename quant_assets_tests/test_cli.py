"""``quant-assets sync`` / ``status`` / ``demo`` on a real instance and lake."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import dagster as dg
import polars as pl

from quant_assets.cli import main
from quant_assets.lake import duck
from quant_assets_tests import builders as b


def _drop_real_formats(lake):
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-trades-2024-01.zip",
            b.zipped("BTCUSDT-trades-2024-01.csv", b.binance_trades_csv(5)))
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4))
    b.write(lake.landing_dir("ETHUSDT") / "binance_quotes_2024-01-01_ETHUSDT.csv", b.tardis_quotes_csv("ETHUSDT", 3))
    b.write(lake.landing_dir("EURUSD") / "EURUSD_Ticks.csv", b.fx_dukascopy_csv(4))


def test_sync_materialises_every_missing_slice_once(lake, instance, capsys):
    _drop_real_formats(lake)
    assert main(["sync"]) == 0
    out = capsys.readouterr().out
    assert "3 slices known, 3 to materialise" in out
    con = duck.connect(lake)
    assert con.sql("SELECT symbol, count(*) FROM ticks GROUP BY 1 ORDER BY 1").fetchall() == [
        ("BTCUSDT", 9), ("ETHUSDT", 3), ("EURUSD", 4)
    ]
    assert sorted(instance.get_dynamic_partitions("symbols")) == ["BTCUSDT", "ETHUSDT", "EURUSD"]
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"quant_assets/trigger": "sync"}))
    # the symbols' venue settings, a run per slice, then one per symbol for its roll-ups, then the ledgers
    assert len(runs) == 1 + 3 + 3 + 1 and all(r.is_success for r in runs)
    assert "the ledgers over every tested change (discoveries, critic_scorecard) ok" in out

    # nothing changed: nothing to do
    assert main(["sync"]) == 0
    assert "3 slices known, 0 to materialise" in capsys.readouterr().out

    # a new file touching one slice rebuilds exactly that slice
    b.write(lake.landing_dir("ETHUSDT") / "more.csv", b.tardis_quotes_csv("ETHUSDT", 6))
    assert main(["sync"]) == 0
    assert "3 slices known, 1 to materialise" in capsys.readouterr().out
    assert con.sql("SELECT count(*) FROM ticks WHERE symbol='ETHUSDT'").fetchall() == [(6,)]


def test_status_shows_states(lake, instance, capsys):
    _drop_real_formats(lake)
    main(["status"])
    out = capsys.readouterr().out
    assert "2024-01|EURUSD" in out and "missing" in out
    main(["sync"])
    capsys.readouterr()
    main(["status"])
    out = capsys.readouterr().out
    # per slice: ticks, then backtest / sensitivity / metrics / critique of three strategies (their out-of-sample
    # validations wait for a next month), bars, a sweep and its engine agreement; per symbol: three roll-ups
    # and two factor analyses
    assert out.count(" ok") == 3 * (1 + 3 * 4 + 3) + 3 * (1 + 3 + 2) and "missing" not in out
    # and the sweeps' hand-offs wait, and the walk-forward (no month before the first to choose on)
    assert out.count("waiting") == 3 * 3 + 3 + 3 + 3


def test_sync_reports_a_bad_file_and_still_ingests_the_rest(lake, instance, capsys):
    _drop_real_formats(lake)
    b.write(lake.landing_dir("BTCUSDT") / "broken.csv", "what,is,this\n1,2\n")
    assert main(["sync"]) == 0
    out = capsys.readouterr().out
    assert "broken.csv" in out and "unknown tick format" in out
    assert "3 slices known, 3 to materialise" in out


def test_demo_end_to_end_in_a_subprocess(tmp_path):
    env = {**os.environ, "QUANT_LAKE": str(tmp_path / "lake"), "DAGSTER_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "quant_assets.cli", "demo", "--events", "5000"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for pk in ("2024-01|BTCUSDT", "2024-02|BTCUSDT", "2024-01|BTCUSDT-PERP", "2024-02|BTCUSDT-PERP"):
        assert pk in out.stdout
    table = out.stdout[out.stdout.index("lake "):]
    assert table.count("ok 5,000") == 4  # ticks, with row counts
    # and per slice backtest / realism sensitivity / metrics / critique of three strategies, the out-of-sample validations
    # of January (February has no next month: they wait), bars, a sweep and its agreement, then three roll-ups and
    # two factor analyses per symbol (and January's sweep hand-offs; February's wait), February's walk-forward fold
    # (chosen on January) and each symbol's walk-forward report
    # (and universes.toml's btc_basis: the basis trade's backtest and metrics and ema_cross's cross-section, each month)
    assert table.count(" ok") == 4 * (1 + 3 * 4 + 3) + 2 * 3 + 2 + 2 * (1 + 3 + 2) + 2 + 2 + 3 * 2 and "FAILED" not in out.stdout
    assert "multi-instrument backtests" in out.stdout and "cross-sectional factors" in out.stdout and "btc_lines" in out.stdout
    # every backtested slice of the demo has its realism sensitivity, shown by the demo
    lake = tmp_path / "lake"
    backtests = {p.parent.relative_to(lake / "backtests") for p in lake.glob("backtests/*/*/*/manifest.json")}
    assert len(backtests) == 12
    assert backtests == {p.parent.relative_to(lake / "sensitivity") for p in lake.glob("sensitivity/*/*/*/manifest.json")}
    assert "realism sensitivity" in out.stdout
    assert "sweeps on bars" in out.stdout and "re-tested event-driven on the next month" in out.stdout
    assert "engine agreement" in out.stdout and "factor analysis of the strategies' signals" in out.stdout
    # the false-discovery ledger judges January's tested suggestions and hand-offs
    assert "tested changes survive FDR at q=0.1" in out.stdout and "tested changes (one-sided p" in out.stdout
    # and the judge's scorecard: the rule critic against the null critic on January's validations
    assert "critic scorecard: share of tested changes" in out.stdout
    assert any(line.lstrip("│┃| ").startswith("rules ") for line in out.stdout.splitlines())
    assert table.count("waiting") == 2 * 3 + 2 + 2  # January's folds: no month before it
    assert "walk-forward optimisation: per fold" in out.stdout and "walk-forward ema_cross on BTCUSDT: 1 fold(s)" in out.stdout
    assert (tmp_path / "home" / "dagster.yaml").read_text().count("enabled: false") == 1
    # the loop: January's suggestions were validated on February before February was critiqued, and
    # February's prompt remembers them (no calendar month in it: months are counted back)
    tested = {p.parent.parent.name for p in lake.glob("oos/strategy=*/symbol=*/month=2024-01/validation.parquet")
              if len(pl.read_parquet(p))}
    assert tested, "no January suggestion was tested: the demo shows no memory"
    assert "critic memory:" in out.stdout and "promoted variants" in out.stdout
    for symbol_dir in tested:
        for prompt in lake.glob(f"critiques/strategy=*/{symbol_dir}/month=2024-02/prompt.json"):
            crit = json.loads((prompt.parent / "critique.json").read_text())
            jan = lake / "oos" / prompt.parent.parent.parent.name / symbol_dir / "month=2024-01" / "validation.parquet"
            if jan.exists() and len(pl.read_parquet(jan)):
                recent = json.loads(prompt.read_text())["data"]["memory"]["recent"]
                assert recent[0]["instrument"] == "this" and recent[0]["months_before"] == 1, recent
                assert any(s.endswith("month=2024-01/validation.parquet") for s in crit["memory"]["sources"])


def test_definitions_load_without_heavy_imports():
    code = (
        "import sys, quant_assets.definitions as d; d.defs.resolve_all_job_defs();"
        "print(sorted(m for m in ('nautilus_trader','vectorbt','quantstats','hftbacktest','alphalens','arch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_dagster_cli_materialises_one_backtest_partition(tmp_path):
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake

    home, lake = tmp_path / "home", Lake.at(tmp_path / "lake")
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_landing(lake, SyntheticSpec("BTCUSDT", "2024-01", events=5_000))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    env = {**os.environ, "QUANT_LAKE": str(lake.root), "DAGSTER_HOME": str(home)}
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "quant_assets.definitions",
           "--select", "ticks,backtest_ema_cross", "--partition", "2024-01|BTCUSDT"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (lake.backtest_dir("ema_cross", "BTCUSDT", "2024-01") / "manifest.json").exists()


def test_sync_never_runs_a_failing_step_twice_in_one_invocation(lake, instance, capsys, monkeypatch):
    # A step that fails in the first pass is not re-planned by the second pass (which exists
    # for out-of-sample tests that waited for their next month): one run for the slice.
    from quant_assets.engines import runner

    real = runner.run_engine
    calls = []

    def failing(spec, *args, **kwargs):
        if spec.name == "ema_cross":
            calls.append(spec.name)
            raise RuntimeError("engine exploded")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "run_engine", failing)
    b.write(lake.landing_dir("BTCUSDT") / "BTCUSDT-bookTicker-2024-01.csv", b.binance_bookticker_csv(4))
    assert main(["sync"]) == 1
    assert calls == ["ema_cross"]
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"quant_assets/trigger": "sync", "dagster/partition": "2024-01|BTCUSDT"}))
    started = [sorted({e.step_key for e in instance.all_logs(r.run_id) if e.is_dagster_event and e.dagster_event.is_step_start})
               for r in runs]
    assert len(runs) == 1, started


def test_status_past_a_screenful_prints_a_summary_and_filters_print_tables(lake, instance, capsys, monkeypatch):
    from quant_assets import cli

    _drop_real_formats(lake)
    monkeypatch.setattr(cli, "SCREENFUL", 2)  # 3 slices: more than a "screenful"
    monkeypatch.setattr(cli, "NEEDS_RUN_SHOWN", 2)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "3 slices of 3 symbols" in out and "2024-01|EURUSD" not in out.split("need a run")[0]
    ticks_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("ticks "))
    assert ticks_row.split("│")[3].strip() == "3"  # column "missing": 3 slices
    assert "6 slice(s) or roll-up(s) need a run:" in out and "... and 4 more" in out
    assert "2024-01|BTCUSDT: ticks (missing), book (missing), funding (missing)" in out
    assert main(["status", "--symbol", "ethusdt"]) == 0
    out = capsys.readouterr().out
    assert "2024-01|ETHUSDT" in out and "BTCUSDT" not in out and "roll-ups (all months" in out
    assert main(["status", "--month", "2024-02"]) == 0
    assert "no slice matches" in capsys.readouterr().out


def test_sync_rebuilds_in_one_call_the_next_month_that_reads_a_changed_month(lake, instance):
    # Sweeps read the month before (warm-up): a changed January makes February's sweep stale only
    # once January's bars are rebuilt, so the call's second pass rebuilds it, and a second sync
    # has nothing to do. (The ingest and research assets only: the same passes serve every asset.)
    from quant_assets import sync

    research = {"ticks", "funding", "bars_1m", "sweep_ema_cross"}
    for month, t0 in (("2024-01", b.JAN_MS), ("2024-02", b.FEB_START_MS)):
        b.write(lake.landing_dir("BTCUSDT") / f"BTCUSDT-bookTicker-{month}.csv", b.binance_bookticker_csv(4, t0_ms=t0))

    def plan() -> list:
        return sync.plan(lake, instance, slices, assets=lambda k: k.path[-1] in research)

    def run() -> list[tuple[str, list[str]]]:
        out = []
        for month, symbol, result in sync.run_slices(instance, plan(), replan=plan):
            assert result.success, (month, symbol)
            if month == sync.LEDGER:
                continue  # the FDR ledger closes every sync that ran a slice
            built = sorted({e.asset_key.path[-1] for e in result.get_asset_materialization_events()})
            out.append((f"{month}|{symbol}", built))
        return out

    slices = sync.discover(lake, instance)
    assert run() == [("2024-01|BTCUSDT", sorted(research)), ("2024-02|BTCUSDT", sorted(research))]
    b.write(lake.landing_dir("BTCUSDT") / "more-2024-01.csv", b.binance_bookticker_csv(6, t0_ms=b.JAN_MS + 3_600_000))
    assert {(s.month, s.asset.path[-1]) for s in plan() if s.needs_run} == {("2024-01", "ticks")}
    assert run() == [("2024-01|BTCUSDT", ["bars_1m", "sweep_ema_cross", "ticks"]), ("2024-02|BTCUSDT", ["sweep_ema_cross"])]
    assert [s for s in plan() if s.needs_run] == []


#: The toy lake of the next test: (asset, month) -> value; a slice's data version is its value.
TOY: dict[tuple[str, str], str] = {}


def _toy_assets() -> list[dg.AssetsDefinition]:
    from quant_assets.assets.critiques import NEXT_MONTH
    from quant_assets.batching import Built, NotBuilt, build_slices
    from quant_assets.partitions import WITH_PREVIOUS_MONTH, month_symbol_partitions, split_key

    def asset(name: str, deps: list, value) -> dg.AssetsDefinition:  # noqa: ANN001
        @dg.asset(name=name, partitions_def=month_symbol_partitions, deps=deps, output_required=False)
        def _asset(context):
            def one(pk: str):
                month, _ = split_key(pk)
                v = value(month)
                if v is None:
                    return NotBuilt(f"{name} {pk}: waits")
                TOY[(name, month)] = v
                return Built({}, v)
            yield from build_slices(context, one)
        return _asset

    def prev(month: str) -> str:
        y, m = int(month[:4]), int(month[5:])
        return f"{y - (m == 1)}-{12 if m == 1 else m - 1:02d}"

    return [
        asset("src", [], lambda m: TOY[("landed", m)]),
        # reads M-1 and M (warm-up): its value moves with January's
        asset("warm", [dg.AssetDep("src", partition_mapping=WITH_PREVIOUS_MONTH)],
              lambda m: f"{TOY.get(('src', prev(m)))}+{TOY[('src', m)]}"),
        # reads M+1 (an out-of-sample test): waits for it
        asset("val", [dg.AssetDep("warm", partition_mapping=NEXT_MONTH)],
              lambda m: TOY.get(("warm", f"{m[:5]}{int(m[5:]) + 1:02d}"))),
    ]


def test_sync_passes_until_the_month_before_has_re_read_the_month_it_validates_on(lake, instance, monkeypatch):
    # January changes: its slice runs first (pass 1), February's warm-up re-reads it (pass 2),
    # then January's validation re-reads February (pass 3): all in one call, nothing left after.
    from quant_assets import sync

    assets = _toy_assets()
    monkeypatch.setattr(sync, "ASSETS", assets)
    monkeypatch.setattr(sync, "defs", dg.Definitions(assets=assets, resources={}))
    monkeypatch.setitem(TOY, ("landed", "2024-01"), "jan-1")
    monkeypatch.setitem(TOY, ("landed", "2024-02"), "feb-1")
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    slices = [("2024-01", "BTCUSDT"), ("2024-02", "BTCUSDT")]

    def plan() -> list:  # (February's validation waits for March: left out)
        return [s for s in sync.plan(lake, instance, slices) if (s.asset.path[-1], s.month) != ("val", "2024-02")]

    def run(states) -> list[tuple[str, list[str]]]:
        out = []
        for month, _, result in sync.run_slices(instance, states, replan=plan):
            assert result.success
            out.append((month, sorted({e.asset_key.path[-1] for e in result.get_asset_materialization_events()})))
        return out

    # first build: January's validation waits for February, built in the next pass
    assert run(plan()) == [("2024-01", ["src", "warm"]), ("2024-02", ["src", "warm"]), ("2024-01", ["val"])]
    assert TOY[("val", "2024-01")] == "jan-1+feb-1" and [s for s in plan() if s.needs_run] == []
    monkeypatch.setitem(TOY, ("landed", "2024-01"), "jan-2")
    # (what the plan says of a fed-from-outside asset whose landing files changed)
    changed = [dataclasses.replace(s, state="sources changed") if (s.asset.path[-1], s.month) == ("src", "2024-01") else s
               for s in plan()]
    assert run(changed) == [
        ("2024-01", ["src", "val", "warm"]), ("2024-02", ["warm"]), ("2024-01", ["val"])]
    assert TOY[("val", "2024-01")] == "jan-2+feb-1" and [s for s in plan() if s.needs_run] == []
