"""``quant-assets``: the project's command line.

    quant-assets demo      synthetic ticks for 2 symbols x 2 months, ingested, then a status table
    quant-assets sync      register landing symbols, materialise every missing or stale slice
    quant-assets status    slices x assets with their state
    quant-assets ui        the Dagster UI (dagster dev on 127.0.0.1) with the project's DAGSTER_HOME

Runs go through the real Dagster instance in ``$DAGSTER_HOME`` (default ``.dagster_home/``),
so they show in the UI like any other run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rich.console import Console
from rich.table import Table

from quant_assets.settings import REPO_ROOT, ensure_dagster_home, lake_root

console = Console()


def _instance():
    """The instance in $DAGSTER_HOME; use as a context manager so its storages are disposed."""
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def cmd_sync(args: argparse.Namespace) -> int:
    from quant_assets.lake.store import Lake

    lake = Lake.at(args.lake or lake_root())
    with _instance() as instance:
        return _sync(lake, instance)


def _sync(lake, instance) -> int:
    """Discover slices, run the missing or stale ones with a progress display, print status."""
    from quant_assets import sync

    slices = sync.discover(lake, instance, log=lambda m: console.print(f"[yellow]{m}[/]"))
    if not slices:
        console.print(f"nothing in {lake.landing}: drop files into landing/<SYMBOL>/ or run `quant-assets demo`")
        return 0
    states = sync.plan(lake, instance, slices)
    todo = sorted({(s.month, s.symbol) for s in states if s.needs_run})
    console.print(f"{len(slices)} slices known, {len(todo)} to materialise")
    failed = 0
    with console.status("materialising...") as status:
        for i, (month, symbol, result) in enumerate(sync.run_slices(instance, states), start=1):
            mark = "[green]ok[/]" if result.success else "[red]FAILED[/]"
            console.print(f"[{i}/{len(todo)}] {month}|{symbol} {mark} (run {result.run_id[:8]})")
            if not result.success:
                failed += 1
                for event in result.all_events:
                    if event.is_step_failure and event.step_failure_data:
                        err = event.step_failure_data.error
                        console.print(f"    {event.step_key}: {err.message.strip() if err else ''}")
            status.update(f"materialising... {i}/{len(todo)}")
    _print_status(lake, instance, slices)
    return 1 if failed else 0


def _print_status(lake, instance, slices) -> None:
    from quant_assets import sync

    states = sync.plan(lake, instance, slices)
    assets = sorted({s.asset.to_user_string() for s in states}, key=lambda a: (a != "ticks", a))
    table = Table(title=f"lake {lake.root}")
    table.add_column("partition", no_wrap=True)
    for a in assets:
        # backtest_ema_cross -> "backtest\nema_cross": narrow columns that still say what they are
        table.add_column(a.replace("_", "\n", 1) if "_" in a else a, no_wrap=True)
    colour = {"materialized": "green", "missing": "red", "stale": "yellow", "sources changed": "yellow"}
    word = {"materialized": "ok"}
    by_slice: dict[str, dict[str, str]] = {}
    for s in states:
        cell = f"[{colour[s.state]}]{word.get(s.state, s.state)}[/]" + (f" {s.rows:,}" if s.rows is not None else "")
        by_slice.setdefault(f"{s.month}|{s.symbol}", {})[s.asset.to_user_string()] = cell
    for pk, cells in sorted(by_slice.items()):
        table.add_row(pk, *[cells.get(a, "") for a in assets])
    console.print(table)


def cmd_status(args: argparse.Namespace) -> int:
    from quant_assets.lake.store import Lake
    from quant_assets import sync

    lake = Lake.at(args.lake or lake_root())
    with _instance() as instance:
        slices = sync.discover(lake, instance, log=lambda m: console.print(f"[yellow]{m}[/]"))
        _print_status(lake, instance, slices)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing
    from quant_assets.lake.store import Lake

    lake = Lake.at(args.lake or lake_root())
    t0 = time.perf_counter()
    for symbol in args.symbols:
        for month in args.months:
            path = write_landing(lake, SyntheticSpec(symbol.upper(), month, seed=args.seed, events=args.events))
            console.print(f"landing: {lake.relative(path)}")
    code = cmd_sync(args)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; open the UI with `uv run quant-assets ui`")
    return code


def cmd_ui(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    cmd = ["dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port), "-w", str(REPO_ROOT / "workspace.yaml")]
    os.chdir(REPO_ROOT)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quant-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="lake root (default $QUANT_LAKE or ./data_lake)")
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="synthetic data end to end")
    demo.add_argument("--symbols", nargs="+", default=["BTCUSDT", "ETHUSDT"])
    demo.add_argument("--months", nargs="+", default=["2024-01", "2024-02"])
    demo.add_argument("--events", type=int, default=200_000, help="quotes + trades per symbol-month")
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(fn=cmd_demo)
    sub.add_parser("sync", help="materialise every missing or stale slice").set_defaults(fn=cmd_sync)
    sub.add_parser("status", help="slices x assets with their state").set_defaults(fn=cmd_status)
    ui = sub.add_parser("ui", help="the Dagster UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(fn=cmd_ui)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
