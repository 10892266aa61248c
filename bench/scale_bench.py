"""Benchmark of issue 18: orchestration cost on a lake of 10, 50, 200 and 400 symbols × 84 months.

Usage (from the repository root)::

    uv run python bench/scale_bench.py                           # writes bench/RESULTS.md
    uv run python bench/scale_bench.py --sizes 10,50 --no-base --no-results   # a quick look

An instance is populated in bulk per size (``quant_assets_tests/bulk.py``: the events Dagster
itself stores, written through one SQLite transaction), in one of two states:

* ``landing``: exactly what the landing ingest records, one ``ticks`` materialization with a
  data version and its five blocking-check evaluations per slice, plus the slice's ``funding``;
  nothing downstream (the issue's measurement);
* ``built``: that, plus every downstream asset of every slice and every roll-up materialised
  (a lake the pipeline has fully built).

83 months are populated; then, in a fresh process on a copy of the instance, the automation
evaluation (``dg.evaluate_automation_conditions`` over the project's definitions, as the sensor
runs it) is timed: a first evaluation without a cursor, two steady ticks (nothing changed), and
the first tick after the 84th month's ``ticks`` lands for every symbol; its cursor size and the
process's peak RSS are recorded. ``sync.plan`` (what ``status``, ``sync`` and the nightly schedule
compute) and the nightly schedule's evaluation are timed on the same instance.

"Before" is the code of ``--base`` (the last commit before issue 18), checked out as a detached
worktree under ``bench/_work/`` and imported from there; "after" is this checkout. Both run on
copies of the same populated instance, in the same run (the machine is noisy: compare ratios).

Targets (after, at 400 symbols): steady tick <= 3x and first tick <= 4x the 10-symbol ones, each
< 10 s; cursor <= 10 MB; peak RSS <= 1 GB; plan and nightly evaluation <= 10 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_tree, REPO, RESULTS, child_main, machine, machine_line, run_child, write_results  # noqa: E402

WORK = REPO / "bench" / "_work" / "scale_bench"
SECTION = "## Orchestration at 400 symbols × 84 months (issue 18)"
BASE = "16e19e8"
MONTHS = 84
FIRST_MONTH = "2020-01"


def _bulk():
    """quant_assets_tests/bulk.py of this checkout, loaded by path (the "before" tree has none)."""
    spec = importlib.util.spec_from_file_location("_bulk", REPO / "quant_assets_tests" / "bulk.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _instance(home: str):
    os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    (Path(home) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    import dagster as dg

    return dg.DagsterInstance.get()


# ---------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------
def child_populate(home: str, symbols: int, state: str) -> dict:
    bulk = _bulk()
    inst = _instance(home)
    months = bulk.months_between(FIRST_MONTH, MONTHS)[:-1]
    names = bulk.symbols(symbols)
    slices = [(m, s) for s in names for m in months]
    t0 = time.perf_counter()
    inst.add_dynamic_partitions("symbols", names)
    with bulk.bulk_writes(inst):
        events = bulk.report_landing(inst, slices)
        from quant_assets.definitions import defs

        if state == "built":
            events += bulk.report_chain(inst, defs, slices)
    bulk.warm_status_cache(inst, defs)
    return {"events": events, "seconds": time.perf_counter() - t0}


def child_tick(home: str) -> dict:
    import dagster as dg

    bulk = _bulk()
    inst = _instance(home)
    from quant_assets.definitions import defs

    # The tick as the automation sensor runs it on the code server: the same evaluator, cursor
    # (de)serialisation, run requests and backfills. A sensor of our own over the same targets
    # so the code before issue 18 (whose sensor the daemon evaluated) is timed the same way.
    sensor = dg.AutomationConditionSensorDefinition("bench_automation", target=dg.AssetSelection.all(),
                                                    use_user_code_server=True)
    repo = defs.get_repository_def()

    def requested_of(data) -> list[tuple]:
        out = []
        for r in data.run_requests:
            if r.asset_graph_subset is not None:  # a backfill (the sensor emits one for many partitions)
                out += [(ap.asset_key, ap.partition_key) for ap in r.asset_graph_subset.iterate_asset_partitions()]
            else:
                out += [(k, r.partition_key) for k in r.asset_selection or []]
        return out

    def timed(cursor):
        context = dg.build_sensor_context(instance=inst, cursor=cursor, repository_def=repo)
        t0 = time.perf_counter()
        data = sensor.evaluate_tick(context)
        seconds = time.perf_counter() - t0
        return data, seconds, {"runs_or_backfills": len(data.run_requests), "asset_partitions": len(requested_of(data))}

    data, initial_s, _ = timed(None)
    steady = []
    cursor = data.cursor
    for _ in range(5):  # the best of five: a steady tick is a fixed cost, sub-second, noise-prone
        data, seconds, steady_req = timed(cursor)
        steady.append(seconds)
        cursor = data.cursor
    new_month = bulk.months_between(FIRST_MONTH, MONTHS)[-1]
    with bulk.bulk_writes(inst):
        bulk.report_landing(inst, [(new_month, s) for s in inst.get_dynamic_partitions("symbols")])
    landed, landed_s, landed_req = timed(cursor)
    # The requested runs complete (new data versions): the next tick requests what waited for
    # them (the previous month's out-of-sample validations, the roll-ups).
    with bulk.bulk_writes(inst):
        bulk.report_done(inst, requested_of(landed), "landed")
    done, done_s, done_req = timed(landed.cursor)
    return {
        "done_s": done_s, "done_requested": done_req["asset_partitions"],
        "initial_s": initial_s, "steady_s": min(steady), "steady_requested": steady_req["asset_partitions"],
        "first_s": landed_s, "first_requested": landed_req["asset_partitions"],
        "first_runs": landed_req["runs_or_backfills"],
        "cursor_mb": len(landed.cursor or "") / 1e6,
    }


def child_plan(home: str) -> dict:
    import dagster as dg

    inst = _instance(home)
    from quant_assets import sync
    from quant_assets.lake.store import Lake
    from quant_assets.partitions import split_key
    from quant_assets.schedules import nightly_partitions

    lake = Lake.at(Path(home) / "lake")
    slices = sorted(split_key(pk) for pk in inst.get_materialized_partitions(dg.AssetKey("ticks")))
    at = dt.datetime(2026, 12, 2, 2, tzinfo=dt.UTC)
    out: dict = {}
    # Cold: the first plan on this instance (the plan's cache of latest facts is built); warm:
    # every later one (status, sync and each nightly evaluation), refreshed from new events only.
    # The code before issue 18 has no cache and costs minutes: timed once.
    for run in ("cold", "warm"):
        t0 = time.perf_counter()
        states = sync.plan(lake, inst, slices)
        out[f"plan_{run}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        wanted = nightly_partitions(inst, lake, at)
        out[f"nightly_{run}_s"] = time.perf_counter() - t0
        if out["plan_cold_s"] > 60:
            out.update(plan_warm_s=out["plan_cold_s"], nightly_warm_s=out["nightly_cold_s"])
            break
    return {**out, "plan_s": out["plan_warm_s"], "nightly_s": out["nightly_warm_s"], "states": len(states),
            "needs_run": sum(s.needs_run for s in states), "nightly_requested": len(wanted)}


#: What the UI asks when an asset's Partitions tab opens (partition keys per dimension and the
#: materialised / failed ranges) and when the asset graph renders (every node with its
#: partition counts), as the webserver's GraphQL receives them.
UI_QUERIES = {
    "partitions tab (backtest_ema_cross)": """
      { assetNodeOrError(assetKey: {path: ["backtest_ema_cross"]}) { ... on AssetNode {
          partitionKeysByDimension { name partitionKeys }
          assetPartitionStatuses {
            ... on MultiPartitionStatuses { primaryDimensionName ranges { primaryDimStartKey primaryDimEndKey
              secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions } } } }
          } } } }""",
    "asset graph (all nodes, partition stats)": """
      { assetNodes { assetKey { path } dependencyKeys { path } isPartitioned
          partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }""",
}


def child_ui(home: str) -> dict:
    """Seconds of each UI query against ``dagster dev`` on the instance (best of 3)."""
    from quant_assets.devserver import DevServer

    env = {**os.environ, "DAGSTER_HOME": home, "QUANT_LAKE": str(Path(home) / "lake")}
    env.pop("ANTHROPIC_API_KEY", None)
    server = DevServer(env, Path(home) / "dagster-dev.log")
    try:
        server.wait_loaded(timeout_s=600)
        out = {}
        for name, query in UI_QUERIES.items():
            best = None
            for _ in range(3):
                t0 = time.perf_counter()
                data = server.graphql(query)
                seconds = time.perf_counter() - t0
                if not data:
                    raise SystemExit(f"{name}: no data\n{server.tail()}")
                best = seconds if best is None else min(best, seconds)
            out[name] = best
        return out
    finally:
        server.stop()


CHILDREN = {"populate": child_populate, "tick": child_tick, "plan": child_plan, "ui": child_ui}


# ---------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------
def _base_tree(commit: str) -> Path:
    return base_tree(WORK, commit)


def _populated(state: str, n: int) -> Path:
    """A populated instance for (state, n), built once and kept under bench/_work."""
    home = WORK / f"{state}-{n}"
    if not (home / "populated").exists():
        shutil.rmtree(home, ignore_errors=True)
        out = run_child(__file__, "populate", home=str(home), symbols=n, state=state)
        (home / "populated").write_text(f"{out['events']} events in {out['seconds']:.0f} s\n")
        print(f"populated {state} {n} x {MONTHS - 1}: {out['events']:,} events in {out['seconds']:.0f} s", flush=True)
    return home


def _copy(home: Path, tag: str) -> Path:
    dst = WORK / f"run-{tag}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(home, dst)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"))
    ap.add_argument("--sizes", default="10,50,200,400")
    ap.add_argument("--states", default="landing,built")
    ap.add_argument("--built-sizes", default="10,50,200",
                    help="sizes of the built state (populating 400 x 84 fully built is ~1M events, ~30 min here)")
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--no-base", action="store_true", help="measure this checkout only")
    ap.add_argument("--base-plan-max", type=int, default=10,
                    help="largest size whose planning is timed on the old code (it is ~65 ms a slice)")
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--populate-only", action="store_true", help="build the populated instances and stop")
    ap.add_argument("--no-ui", action="store_true", help="skip timing the UI's GraphQL queries at the largest size")
    args = ap.parse_args()
    if args.child:
        return child_main(CHILDREN, *args.child)

    WORK.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    states = args.states.split(",")
    built_sizes = [int(s) for s in args.built_sizes.split(",")]

    def sizes_of(state: str) -> list[int]:
        return [n for n in sizes if state != "built" or n in built_sizes]
    codes = {"after": {}} if args.no_base else {"before": {"PYTHONPATH": str(_base_tree(args.base))}, "after": {}}
    if args.populate_only:
        for state in states:
            for n in sizes_of(state):
                _populated(state, n)
        return 0
    rows: dict[tuple[str, str, int], dict] = {}
    for state in states:
        for n in sizes_of(state):
            home = _populated(state, n)
            for code, env in codes.items():
                tick = run_child(__file__, "tick", env=env, home=str(_copy(home, f"{code}-tick")))
                row = {**tick, "tick_rss_gb": tick["maxrss_kib"] / 1024 / 1024}
                if code == "after" or n <= args.base_plan_max:
                    plan = run_child(__file__, "plan", env=env, home=str(_copy(home, f"{code}-plan")))
                    row.update({k: plan[k] for k in ("plan_s", "nightly_s", "plan_cold_s", "nightly_cold_s",
                                                     "needs_run", "nightly_requested") if k in plan})
                rows[(state, code, n)] = row
                print(f"{state:8s} {code:6s} {n:4d}: " + ", ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "maxrss_kib"), flush=True)

    ui: dict[str, dict] = {}
    if not args.no_ui:
        for state in states:
            big = max(sizes_of(state))
            ui[state] = {"size": big, **run_child(__file__, "ui", home=str(_copy(_populated(state, big), "after-ui")))}
            print(f"ui {state} {big}: {ui[state]}", flush=True)

    def cell(row: dict | None, key: str, fmt: str = "{:.2f}") -> str:
        return "—" if row is None or key not in row else fmt.format(row[key])

    mach = machine(("dagster",))
    lines = [
        SECTION, "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        machine_line(mach),
        f"- command: `uv run python bench/scale_bench.py --sizes {args.sizes} --states {args.states} --built-sizes {args.built_sizes}`",
        f"- before: commit {args.base}; after: this checkout. 83 months populated, the 84th lands for every "
        "symbol before the \"first tick\". Seconds of `dg.evaluate_automation_conditions`; cursor of the first tick.",
        "",
        "| state | code | symbols | steady tick (s) | first tick after a month lands (s) | requested | next tick, once those ran (s) | requested | cursor (MB) | peak RSS (GB) | sync.plan (s) | nightly evaluation (s) | first plan, cold cache (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (state, code, n), row in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "before", kv[0][2])):
        lines.append(f"| {state} | {code} | {n} | {cell(row, 'steady_s')} | {cell(row, 'first_s')} | {row['first_requested']} | "
                     f"{cell(row, 'done_s')} | {row['done_requested']} | "
                     f"{cell(row, 'cursor_mb', '{:.3f}')} | {cell(row, 'tick_rss_gb')} | {cell(row, 'plan_s')} | {cell(row, 'nightly_s')} | "
                     f"{cell(row, 'plan_cold_s')} |")
    checks = []
    for state in states:
        lo, hi = min(sizes_of(state)), max(sizes_of(state))
        a, b = rows.get((state, "after", lo)), rows.get((state, "after", hi))
        if a is None or b is None:
            continue
        checks += [
            (f"{state}: steady tick {hi} / {lo} <= 3", b["steady_s"] / a["steady_s"], b["steady_s"] / a["steady_s"] <= 3),
            (f"{state}: first tick {hi} / {lo} <= 4", b["first_s"] / a["first_s"], b["first_s"] / a["first_s"] <= 4),
            (f"{state}: next tick {hi} / {lo} <= 4", b["done_s"] / a["done_s"], b["done_s"] / a["done_s"] <= 4),
            (f"{state}: ticks at {hi} < 10 s", max(b["steady_s"], b["first_s"], b["done_s"]),
             max(b["steady_s"], b["first_s"], b["done_s"]) < 10),
            (f"{state}: cursor at {hi} <= 10 MB", b["cursor_mb"], b["cursor_mb"] <= 10),
            (f"{state}: peak RSS at {hi} <= 1 GB", b["tick_rss_gb"], b["tick_rss_gb"] <= 1),
            (f"{state}: sync.plan at {hi} <= 10 s", b["plan_s"], b["plan_s"] <= 10),
            (f"{state}: nightly evaluation at {hi} <= 10 s", b["nightly_s"], b["nightly_s"] <= 10),
        ]
    if ui:
        lines += ["", f"The UI (`dagster dev` on the same instance, {MONTHS - 1} months, best of 3, seconds per GraphQL "
                  "query the page makes):", "", "| state | symbols | query | seconds |", "|---|---:|---|---:|"]
        lines += [f"| {state} | {got['size']} | {name} | {sec:.2f} |" for state, got in ui.items()
                  for name, sec in got.items() if name not in ("maxrss_kib", "size")]
    lines += ["", "| target | value | result |", "|---|---:|---|"]
    lines += [f"| {name} | {value:.2f} | {'PASS' if ok else 'FAIL'} |" for name, value, ok in checks]
    lines.append("")
    section = "\n".join(lines)
    print(section)
    if not args.no_results:
        write_results(RESULTS, SECTION, section)
        print(f"wrote section {SECTION!r} of {RESULTS}")
    for tmp in WORK.glob("run-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
