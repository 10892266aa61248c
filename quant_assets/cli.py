"""``quant-assets``: the project's command line.

    quant-assets demo      synthetic ticks for 2 symbols x 2 months, ingested, then a status table
    quant-assets sync      register landing symbols, materialise every missing or stale slice
    quant-assets status    slices x assets with their state (past a screenful: a summary; --symbol/--month: tables)
    quant-assets lineage   critique -> metrics -> backtest -> ticks -> landed files, with versions
    quant-assets promoted  the strategy variants the research loop promoted, with their lineage and flags
    quant-assets retire V  remove promoted variant V (kept in the lineage; its assets go at the next reload)
    quant-assets asof A P T  the version of asset A's slice P current at time T (or data version T), its stored files
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

# Piped output (CI logs, tests) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)


def _instance():
    """The instance in $DAGSTER_HOME; use as a context manager so its storages are disposed."""
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def _open_lake(args: argparse.Namespace):
    """The lake of ``--lake``/``$QUANT_LAKE``; a lake in an object store is pulled into this
    machine's working copy first (each run pushes what it writes)."""
    from quant_assets.lake.store import Lake

    lake = Lake.at(args.lake or lake_root())
    if lake.remote is not None:
        stats = lake.remote.pull()
        console.print(f"lake {lake.url}: working copy {lake.root} up to date ({stats.summary()})")
    return lake


def cmd_sync(args: argparse.Namespace) -> int:
    lake = _open_lake(args)
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
    todo = sorted({(s.month, s.symbol) for s in states if s.needs_run and not s.is_rollup})
    console.print(f"{len(slices)} slices known, {len(todo)} to materialise")
    failed = 0
    with console.status("materialising...") as status:
        replan = lambda: sync.plan(lake, instance, slices)  # noqa: E731
        for i, (month, symbol, result) in enumerate(sync.run_slices(instance, states, replan=replan), start=1):
            mark = "[green]ok[/]" if result.success else "[red]FAILED[/]"
            what = (f"{symbol} roll-ups (all months)" if month == sync.ALL_MONTHS
                    else f"venue settings of {symbol}" if month == sync.INPUTS
                    else "the ledgers over every tested change (discoveries, critic_scorecard)" if month == sync.LEDGER else f"{month}|{symbol}")
            console.print(f"[{i}] {what} {mark} (run {result.run_id[:8]})")
            if not result.success:
                failed += 1
                for event in result.all_events:
                    if event.is_step_failure and event.step_failure_data:
                        err = event.step_failure_data.error
                        console.print(f"    {event.step_key}: {err.message.strip() if err else ''}")
            status.update(f"materialising... {i} runs done")
    _print_status(lake, instance, slices)
    return 1 if failed else 0


_COLOUR = {"materialized": "green", "missing": "red", "stale": "yellow", "sources changed": "yellow", "waiting": "blue", "n/a": "magenta"}


def _cell(state) -> str:
    word = "ok" if state.state == "materialized" else state.state
    return f"[{_COLOUR[state.state]}]{word}[/]" + (f" {state.rows:,}" if state.rows is not None else "")


#: Slices a status prints as tables; past this (a screenful) it prints a summary instead.
SCREENFUL = 40
#: Slices (and symbols' roll-ups) needing a run that a summary names; the rest are counted.
NEEDS_RUN_SHOWN = 20


def _print_status(lake, instance, slices, symbols: list[str] | None = None, months: list[str] | None = None,
                  surveyed: dict | None = None) -> None:
    """Per-slice tables (ticks, then backtest / metrics / critique / validation per strategy;
    research; roll-ups per symbol), for the slices of ``symbols`` and ``months`` when given.
    A lake with more than :data:`SCREENFUL` slices and no filter gets a summary instead: per
    asset the count of slices in each state, then the slices that need a run. ``surveyed``:
    the landing records of a discover just before (see :func:`quant_assets.sync.plan`)."""
    from quant_assets import sync

    _print_critic_budget(lake)
    _print_fetch_state(lake)
    states = sync.plan(lake, instance, slices, surveyed=surveyed)
    if symbols or months:
        wanted_symbols = {s.upper() for s in symbols or ()}
        if symbols:
            states = [s for s in states if s.symbol in wanted_symbols]
        if months:  # (a symbol's roll-ups stay with it)
            states = [s for s in states if s.month in months or (symbols and s.month == sync.ALL_MONTHS)]
        if not states:
            console.print("no slice matches " + " ".join(f"--symbol {x}" for x in symbols or ()) + " "
                          + " ".join(f"--month {m}" for m in months or ()))
            return
    elif len(set(slices)) > SCREENFUL:
        _print_summary(lake, slices, states)
        _print_gaps(lake, symbols, months, NEEDS_RUN_SHOWN)
        return
    _print_tables(lake, states)
    _print_universe_states(instance, slices, months)
    _print_gaps(lake, symbols, months)


def _print_universe_states(instance, slices, months: list[str] | None) -> None:
    """The month × universe assets (multi backtests, their metrics, cross-sections): one row per
    asset, its state per month where every member has a slice."""
    from quant_assets import sync
    from quant_assets.definitions import defs

    rows = [r for r in sync.universe_states(instance, defs.resolve_asset_graph(), set(slices)) if not months or r[2] in months]
    if not rows:
        return
    cols = sorted({r[2] for r in rows})
    table = Table(title="universes (month x universe assets; universes.toml): state per month where every member has data")
    table.add_column("asset")
    for c in cols:
        table.add_column(c)
    by_asset: dict[str, dict[str, str]] = {}
    for key, _universe, month, state in rows:
        by_asset.setdefault(key.to_user_string(), {})[month] = state
    for name, cells in sorted(by_asset.items()):
        table.add_row(name, *(f"[{_COLOUR[cells[c]]}]{'ok' if cells[c] == 'materialized' else cells[c]}[/]" if c in cells else "-"
                              for c in cols))
    console.print(table)


def _print_gaps(lake, symbols: list[str] | None, months: list[str] | None, shown: int | None = None) -> None:
    """The ticks slices with calendar gaps (``coverage.json`` beside each partition, written by its
    build: :mod:`quant_assets.ingest.coverage`), one row per slice and kind, the first ``shown``
    slices when given; read from the lake alone (one glob, one small file per slice)."""
    from quant_assets.ingest.coverage import ranges, read_all
    from quant_assets.settings import gaps_mode

    judged, bad = read_all(lake, {s.upper() for s in symbols} if symbols else None, set(months) if months else None)
    if not judged:
        return
    mode = gaps_mode()
    if not bad:
        console.print(f"calendar coverage: {judged:,} ticks slice(s) judged, no gaps")
        return
    table = Table(title=f"calendar gaps: {len(bad):,} of {judged:,} ticks slice(s) lack expected days (QUANT_GAPS={mode}: "
                        + ("their downstream slices do not run)" if mode == "block" else "a warning; backtests still run)"))
    for col in ("slice", "calendar", "kind", "days without rows", "stopped after day", "judged through"):
        table.add_column(col, no_wrap=col != "days without rows")
    for c in bad[:shown]:
        pk = f"{c['month']}|{c['symbol']}"
        if c.get("error"):
            table.add_row(pk, "", "", f"[red]unreadable: {c['error']}[/]", "", "")
            continue
        through = (c["judged_through"] or "-") + (" (in progress)" if c["in_progress"] else "")
        rows = [(k, ranges(v), str(c["stopped"][k]["last_day"]) if k in c["stopped"] else "") for k, v in sorted(c["missing"].items())]
        if c["empty_days"]:
            rows.append(("(any)", ranges(c["empty_days"]), ""))
        for kind, days, stop in rows:
            table.add_row(pk, c["calendar"], kind, f"[yellow]{days}[/]", stop, through)
    console.print(table)
    if shown is not None and len(bad) > shown:
        console.print(f"  ... and {len(bad) - shown:,} more slice(s) with gaps (`quant-assets status --symbol S` lists a symbol's)")


def _print_fetch_state(lake, shown: int = 10) -> None:
    """The fetch ledger in a few lines (nothing when nothing was ever fetched): per source and
    dataset, files landed (re-uploads: versions beyond the first), not yet published, and the
    source's gaps (a missing period while later ones exist), refused and failed files named."""
    import polars as pl

    from quant_assets.sources import ledger

    st = ledger.state(lake)
    if st.is_empty():
        return
    t = Table(title="fetched: the fetch ledger's latest state per file (`quant-assets fetch`; <lake>/fetch/*.jsonl)")
    for col in ("source", "dataset", "symbols", "landed", "re-uploads", "not published", "missing (gap)", "refused", "failed"):
        t.add_column(col, justify="left" if col in ("source", "dataset") else "right")
    summary = (st.group_by("source", "dataset").agg(
        symbols=pl.col("symbol").n_unique(), landed=pl.col("landed_sha256").is_not_null().sum(),
        reuploads=(pl.col("landed_version") > 1).sum(),
        **{k: (pl.col("status") == k).sum() for k in ("not_published", "missing", "refused", "failed")})
        .sort("source", "dataset"))
    for r in summary.iter_rows(named=True):
        t.add_row(r["source"], r["dataset"], *(str(r[k]) for k in
                  ("symbols", "landed", "reuploads", "not_published", "missing", "refused", "failed")))
    console.print(t)
    bad = st.filter(pl.col("status").is_in(["missing", "refused", "failed"])).sort("status", "source", "symbol", "period")
    for r in bad.head(shown).iter_rows(named=True):
        what = "gap at the source" if r["status"] == "missing" else r["status"]
        console.print(f"  [yellow]{what}[/]: {r['source']} {r['dataset']} {r['symbol']} {r['period']}: {r['reason']}")
    if bad.height > shown:
        console.print(f"  ... and {bad.height - shown} more (DuckDB: read_json('<lake>/fetch/*.jsonl'))")


def _print_critic_budget(lake) -> None:
    """One line on the paid critic's spend today (UTC) against its limits, and the critiques
    waiting for the day's budget; nothing when no limit is set and nothing was spent today."""
    import datetime as dt

    from quant_assets.critique.budget import BudgetUnknown, SpendLedger, waiting_for_budget
    from quant_assets.settings import CRITIC_BUDGET_DAY_ENV, CRITIC_BUDGET_RUN_ENV, critic_budget_usd

    per_day, per_run = critic_budget_usd()
    ledger = SpendLedger(lake)
    day = ledger.today()
    if not (per_day or per_run or lake.critique_spend_dir(day).is_dir()):
        return
    try:
        spent = ledger.spent(day)
    except BudgetUnknown as exc:
        console.print(f"[red]critic budget: {exc}[/]")
        return
    limits = ", ".join(f"{usd:.2f} USD per {what} ({env})" for usd, what, env in (
        (per_day, "UTC day", CRITIC_BUDGET_DAY_ENV), (per_run, "run", CRITIC_BUDGET_RUN_ENV)) if usd) or "no limit"
    amount = "unknown (a model without a price)" if spent.day_usd is None else f"{spent.day_usd:.4f} USD"
    line = f"critic spend today (UTC {day}): {amount} in {spent.calls} paid call(s)"
    if spent.open_calls:
        line += f" ({spent.open_calls} in flight or unfinished, counted at their worst case)"
    console.print(f"{line}; limits: {limits}")
    waiting = sorted(waiting_for_budget(lake, per_day))
    if waiting:
        tomorrow = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
        named = ", ".join(f"critique_{s} {m}|{sym}" for s, sym, m in waiting[:NEEDS_RUN_SHOWN])
        more = f" and {len(waiting) - NEEDS_RUN_SHOWN} more" if len(waiting) > NEEDS_RUN_SHOWN else ""
        console.print(f"[yellow]budget exhausted: {len(waiting)} critique(s) wait until {tomorrow} 00:00 UTC "
                      f"(or a higher {CRITIC_BUDGET_DAY_ENV}): {named}{more}[/]")


def _print_summary(lake, slices, states) -> None:
    """Per asset, the number of its slices (or symbols, for roll-ups) in each state; then the
    slices that need a run, the first :data:`NEEDS_RUN_SHOWN` named with their assets."""
    from collections import Counter

    from quant_assets.sync import ALL_MONTHS, SETTLED

    order = list(_COLOUR)
    # Counted by (asset key, state), named afterwards: 600k states at 400 x 84, ~24 x 6 names
    # (attributes read directly: a property call per state costs 0.2 s there).
    tally = Counter((s.asset, s.state) for s in states)
    counts: dict[str, Counter] = {}
    for (asset, state), n in tally.items():
        counts.setdefault(asset.to_user_string(), Counter())[state] = n
    pending = sorted({(s.month, s.symbol) for s in states if s.state not in SETTLED}, key=lambda k: (k[0] == ALL_MONTHS, k))
    n_slices, n_symbols = len(set(slices)), len({symbol for _, symbol in slices})
    table = Table(title=f"lake {lake.location}: {n_slices:,} slices of {n_symbols:,} symbols (per asset: slices in each "
                        "state; roll-ups: symbols). `quant-assets status --symbol S [--month YYYY-MM]` shows them one by one")
    table.add_column("asset", no_wrap=True)
    for state in order:
        table.add_column(state, justify="right", no_wrap=True)
    for name in sorted(counts, key=_asset_order):
        table.add_row(name, *[f"[{_COLOUR[st]}]{counts[name][st]:,}[/]" if counts[name][st] else "" for st in order])
    console.print(table)
    _print_not_applicable(states)
    _print_discoveries(lake, table=False)
    _print_promoted(lake, candidates=False)
    _print_scorecard(lake)
    if not pending:
        console.print("[green]every slice is up to date[/]")
        return
    shown = set(pending[:NEEDS_RUN_SHOWN])
    todo: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for s in states:
        if s.needs_run and (s.month, s.symbol) in shown:
            todo.setdefault((s.month, s.symbol), []).append((s.asset.to_user_string(), s.state))
    console.print(f"{len(pending):,} slice(s) or roll-up(s) need a run:")
    for month, symbol in pending[:NEEDS_RUN_SHOWN]:
        what = f"{symbol} roll-ups" if month == ALL_MONTHS else f"{month}|{symbol}"
        console.print(f"  {what}: " + ", ".join(f"{a} ({st})" for a, st in sorted(todo[(month, symbol)], key=lambda x: _asset_order(x[0]))))
    if len(pending) > NEEDS_RUN_SHOWN:
        console.print(f"  ... and {len(pending) - NEEDS_RUN_SHOWN:,} more")


def _asset_order(name: str) -> tuple:
    """ticks, funding and book first, then the slice assets by name, then the roll-ups."""
    return (name.startswith(("report_", "factors_")), name not in ("ticks", "funding", "book"), name != "ticks", name)


def _print_not_applicable(states) -> None:
    """One line per strategy and reason it is n/a for, with its number of slices."""
    from collections import Counter

    n_a = Counter((s.asset, s.reason) for s in states if s.state == "n/a")  # (by key: naming 600k is slow)
    lines = Counter()
    for (asset, reason), n in n_a.items():
        if asset.to_user_string().startswith("backtest_"):
            lines[(asset.to_user_string().removeprefix("backtest_"), reason)] += n
    for (strategy, reason), n in sorted(lines.items()):
        console.print(f"[magenta]n/a[/] {strategy} on {n} slice(s): {reason}")


def _print_tables(lake, states) -> None:
    """Two tables: slices (ticks, then backtest and metrics per strategy) and roll-ups per symbol."""
    from quant_assets import sync

    by_key = {(s.month, s.symbol, s.asset.to_user_string()): s for s in states}
    strategies = sorted({a.split("_", 1)[1] for (_, _, a) in by_key if a.startswith("backtest_")})
    stages = ("backtest", "sensitivity", "metrics", "critique", "oos_validation")
    table = Table(title=f"slices of lake {lake.location}  (per strategy: backtest / realism sensitivity / metrics / critique / "
                        "out-of-sample validation)")
    research = sorted({a for (_, _, a) in by_key if a.startswith(("bars_", "sweep_", "agreement_", "wf_fold_"))})
    table.add_column("partition", no_wrap=True)
    table.add_column("ticks", no_wrap=True)
    for strategy in strategies:
        table.add_column(strategy, no_wrap=True)
    for month, symbol in sorted({(s.month, s.symbol) for s in states if not s.is_rollup}):
        row = [_cell(by_key[(month, symbol, "ticks")]) if (month, symbol, "ticks") in by_key else ""]
        for strategy in strategies:
            parts = [by_key.get((month, symbol, f"{stage}_{strategy}")) for stage in stages]
            row.append(" / ".join(_cell(p) for p in parts if p is not None))
        table.add_row(f"{month}|{symbol}", *row)
    console.print(table)
    _print_not_applicable(states)
    _print_sensitivity(lake, strategies, sorted({(s.month, s.symbol) for s in states if not s.is_rollup}))
    if research:
        extra = Table(title="research slices (bars, vectorised sweeps, engine agreement, hand-offs, walk-forward folds)")
        extra.add_column("partition", no_wrap=True)
        for a in research:
            extra.add_column(a, no_wrap=True)
        for month, symbol in sorted({(s.month, s.symbol) for s in states if not s.is_rollup}):
            extra.add_row(f"{month}|{symbol}", *[_cell(by_key[(month, symbol, a)]) if (month, symbol, a) in by_key else "" for a in research])
        console.print(extra)
    rollups = [s for s in states if s.is_rollup]
    if rollups:
        report = Table(title="roll-ups (all months of a symbol)")
        report.add_column("symbol", no_wrap=True)
        names = sorted({s.asset.to_user_string() for s in rollups}, key=lambda a: (not a.startswith("report_"), a))
        for name in names:
            report.add_column(name.replace("_", " ", 1), no_wrap=True)
        for symbol in sorted({s.symbol for s in rollups}):
            report.add_row(symbol, *[_cell(by_key[(sync.ALL_MONTHS, symbol, a)]) if (sync.ALL_MONTHS, symbol, a) in by_key else ""
                                     for a in names])
        console.print(report)
    _print_discoveries(lake)
    _print_promoted(lake)
    _print_scorecard(lake)


def _print_sensitivity(lake, strategies: list[str], slices: list[tuple[str, str]]) -> None:
    """PnL of each shown slice under its venue profile and the harsher scenarios, and whether its
    sign depends on them (``fragile``), from the published sensitivity reports."""
    from quant_assets.venues.sensitivity import SCENARIOS, read_report

    rows = []
    for strategy in strategies:
        for month, symbol in slices:
            rep = read_report(lake, strategy, symbol, month)
            if rep is not None:
                rows.append((strategy, f"{month}|{symbol}", rep))
    if not rows:
        return
    names = ["baseline", *(n for n, _, _ in SCENARIOS)]
    table = Table(title="realism sensitivity: PnL (quote currency) under the venue profile and harsher assumptions; "
                        "fragile = its sign depends on them")
    for col in ("strategy", "partition", *names, "fragile"):
        table.add_column(col, no_wrap=True, justify="right" if col in names else "left")
    for strategy, partition, rep in rows:
        pnl = {r["scenario"]: r["pnl"] for r in rep["scenarios"]}
        table.add_row(strategy, partition, *["-" if pnl.get(n) is None else f"{pnl[n]:+,.0f}" for n in names],
                      "[red]fragile[/]" if rep["fragile"] else "[green]no[/]")
    console.print(table)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"


def _print_results(lake) -> None:
    """The roll-ups' headline numbers, one row per strategy × symbol (from ``report.json``)."""
    import json

    reports = sorted(lake.root.glob("reports/strategy=*/symbol=*/report.json"))
    if not reports:
        return
    table = Table(title="results: roll-ups over all months (Sharpe on daily returns with its bootstrap interval; "
                        "max DD on the intraday grid; nulls explained in report.json)")
    for col in ("strategy", "symbol", "fidelity", "months", "return", "Sharpe [95% CI]", "max DD", "trades", "win rate", "deflated Sharpe", "tearsheet"):
        table.add_column(col, no_wrap=col != "tearsheet")
    for path in reports:
        r = json.loads(path.read_text())
        m, ci = r["metrics"], (r["bootstrap"].get("sharpe") or {})
        sharpe = "-" if m.get("sharpe") is None else f"{m['sharpe']:.2f}"
        if ci:
            sharpe += f" [{ci['lo']:.1f}, {ci['hi']:.1f}]"
        dsr = r["deflated_sharpe"].get("dsr")
        fidelity = sorted(set(((r.get("money") or {}).get("fidelity_by_month") or {}).values()) - {None})
        table.add_row(
            r["strategy"], r["symbol"], ", ".join(fidelity) or "-", str(len(r["months"])), _pct(m.get("total_return")), sharpe,
            _pct(r["metrics_grid"].get("max_drawdown")), str(m.get("trades") or 0),
            "-" if m.get("trade_win_rate") is None else f"{100 * m['trade_win_rate']:.0f}%",
            "-" if dsr is None else f"{dsr:.2f}", lake.relative(path.parent / "tearsheet.html"),
        )
    console.print(table)


def _print_universes(lake) -> None:
    """Per universe: each multi-instrument month (the account's PnL split), each cross-sectional
    month (IC, top minus bottom), each portfolio (return, drawdown, deflated Sharpe)."""
    import json

    multi = sorted(lake.root.glob("metrics_multi/strategy=*/universe=*/month=*/metrics.json"))
    if multi:
        table = Table(title="multi-instrument backtests: the account per month, PnL split (quote currency; "
                            "metrics_multi/.../metrics.json)")
        for col in ("strategy", "universe", "month", "PnL", "basis", "funding", "fees", "round trips", "in market",
                    "return", "max DD"):
            table.add_column(col, no_wrap=True)
        for path in multi:
            m = json.loads(path.read_text())
            sp = m["split"]
            table.add_row(m["strategy"], m["universe"], m["month"], f"{sp['total_pnl']:,.2f}", f"{sp['basis_pnl']:,.2f}",
                          f"{sp['funding_pnl']:,.2f}", f"{sp['fees']:,.2f}", str(sp["round_trips"]),
                          "-" if m.get("time_in_market") is None else f"{100 * m['time_in_market']:.0f}%", _pct(m.get("total_return")), _pct(m.get("max_drawdown")))
        console.print(table)
    xs = sorted(lake.root.glob("factors_xs/strategy=*/universe=*/month=*/report.json"))
    if xs:
        table = Table(title="cross-sectional factors: the signal ranked across the universe's members at each sample "
                            "time (alphalens; factors_xs/.../report.json)")
        cols = ("strategy", "universe", "month", "members", "times", "IC (shortest)", "IC t", "top-bottom bps", "reason")
        for col in cols:
            table.add_column(col, no_wrap=col != "reason")
        for path in xs:
            s = json.loads(path.read_text())["summary"]
            label = next((k.removeprefix("ic_mean_") for k in s if k.startswith("ic_mean_")), None)
            f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
            table.add_row(s["strategy"], s["universe"], s["month"], str(len(s.get("members_used") or [])), str(s.get("sample_times") or 0),
                          f(s.get(f"ic_mean_{label}"), ".3f"), f(s.get(f"ic_t_{label}"), ".2f"),
                          f(s.get(f"top_minus_bottom_bps_{label}"), ".2f"), s.get("reason") or "")
        console.print(table)
    ports = sorted(lake.root.glob("portfolios/universe=*/set=*/portfolio.json"))
    if ports:
        table = Table(title="portfolios: the lines combined, rebalanced daily (portfolios/.../portfolio.json)")
        for col in ("set", "universe", "lines", "weighting", "days", "return", "Sharpe", "max DD", "deflated Sharpe", "trials"):
            table.add_column(col, no_wrap=True)
        for path in ports:
            r = json.loads(path.read_text())
            dsr = r["deflated_sharpe"]
            table.add_row(r["set"], r["universe"], str(len(r["lines"])), r["weighting"]["kind"], str(r["days_with_return"]),
                          _pct(r["total_return"]), "-" if r["metrics"].get("sharpe") is None else f"{r['metrics']['sharpe']:.2f}",
                          _pct(r["max_drawdown"]["value"]), "-" if dsr.get("dsr") is None else f"{dsr['dsr']:.2f}",
                          str(dsr.get("n_trials")))
        console.print(table)


def _print_memory(lake) -> None:
    """The research loop as the demo shows it: what each critique after a symbol's first month
    remembered of earlier suggestions (critique.memory), and the promoted variants."""
    import json

    table = Table(title="critic memory: what each critique was told of earlier suggestions and their out-of-sample results "
                        "(only tests whose out-of-sample month ended by the critiqued month; bar: the slice's one-sided "
                        "significance bar against the unchanged parameters)")
    for col in ("strategy", "partition", "tests remembered", "most recent (this instrument)"):
        table.add_column(col, no_wrap=col != "most recent (this instrument)")
    for path in sorted(lake.root.glob("critiques/strategy=*/symbol=*/month=*/critique.json")):
        record = json.loads(path.read_text())
        seen = (record.get("memory") or {}).get("tests_seen", 0)
        if not seen:
            continue
        data = json.loads((path.parent / "prompt.json").read_text())["data"]
        recent = [e for e in data["memory"]["recent"] if e["instrument"] == "this"][:2]
        text = "; ".join(
            f"{e['parameter']} {e['from']} -> {e['to']} ({e['months_before']} month(s) before): "
            + ("could not run" if not e["tested"] else "cleared its bar" if e["beat_baseline"] else "did not clear its bar")
            + ("" if e.get("p_value") is None else ", p<0.01" if e["p_value"] < 0.01 else f", p={e['p_value']:.2f}")
            for e in recent) or "others' tests only"
        table.add_row(record["strategy"], f"{record['month']}|{record['symbol']}", str(seen), text)
    if table.row_count:
        console.print(table)


def _compact(params_json: str) -> str:
    """``{"fast_period": 80, "slow_period": 1400}`` -> ``fast=80 slow=1400`` (fits a terminal)."""
    import json

    return " ".join(f"{k.removesuffix('_period')}={v}" for k, v in json.loads(params_json).items())


def _print_sweeps(lake) -> None:
    """The best combination of every sweep slice, with the tests that discount it."""
    import json

    summaries = sorted(lake.root.glob("sweeps/strategy=*/symbol=*/month=*/summary.json"))
    if not summaries:
        return
    table = Table(title="sweeps on bars (best of the grid by Sharpe; deflated Sharpe counts every combination "
                        "tried; SPA p-value: is the best better than staying flat, given the search)")
    for col in ("strategy", "partition", "combinations", "best parameters (bars)", "Sharpe", "return", "deflated Sharpe", "SPA p"):
        table.add_column(col, no_wrap=True)
    for path in summaries:
        s = json.loads(path.read_text())
        best = s["top"][0] if s["top"] else None
        names = [a["name"] for a in s["axes"]]
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        table.add_row(
            s["strategy"], f"{s['month']}|{s['symbol']}", str(s["combinations"]),
            ", ".join(f"{n}={best[n]}" for n in names) if best else s.get("reason", "-"),
            f(best and best["sharpe"], ".2f"), _pct(best and best["total_return"]),
            f(best and best["deflated_sharpe"], ".2f"), f(s["spa_pvalue"], ".2f"),
        )
    console.print(table)
    agreements = sorted(lake.root.glob("agreements/strategy=*/symbol=*/month=*/agreement.parquet"))
    if agreements:
        import polars as pl

        ag = Table(title="engine agreement: the sweep's best, the same strategy vectorised on bars and event-driven on "
                         "ticks (same month); the PnL gap split into execution: latency, spread, size, fees, unmatched orders")
        for col in ("strategy", "partition", "params (bars)", "orders vec/event", "PnL vec/event",
                    "latency / spread / size / fees / unmatched", "same signal"):
            ag.add_column(col, no_wrap=True)
        for path in agreements:
            for r in pl.read_parquet(path).iter_rows(named=True):
                if r["vector_orders"] is None:
                    continue
                ag.add_row(r["strategy"], f"{r['month']}|{r['symbol']}", _compact(r["params_bars"]),
                           f"{r['vector_orders']}/{r['event_orders']}", f"{r['vector_pnl']:+.0f}/{r['event_pnl']:+.0f}",
                           " / ".join(f"{r[f'gap_{c}']:+.0f}" for c in ("latency", "spread", "size", "fees", "unmatched")),
                           "yes" if r["agree"] else f"no: {r['reason']}")
        console.print(ag)
    _print_walkforward(lake)
    factors = sorted(lake.root.glob("factors/strategy=*/symbol=*/report.json"))
    if factors:
        fa = Table(title="factor analysis of the strategies' signals (alphalens; IC = Spearman of the signal with the "
                         "forward return, mean of the months; quintile spread and turnover at the first horizon)")
        for col in ("strategy", "symbol", "signal", "months", "IC by horizon", "top-bottom quintile", "top quintile turnover"):
            fa.add_column(col, no_wrap=True)
        for path in factors:
            r = json.loads(path.read_text())
            if not r["periods"]:
                fa.add_row(r["strategy"], r["symbol"], r["signal"], str(len(r["months"])), r["reason"], "-", "-")
                continue
            periods = sorted(r["periods"].items(), key=lambda kv: kv[1]["samples_ahead"])
            first = periods[0][1]
            fa.add_row(r["strategy"], r["symbol"], r["signal"], str(len(r["months"])),
                       " ".join(f"{k}:{'-' if v['ic_mean'] is None else format(v['ic_mean'], '+.3f')}" for k, v in periods),
                       "-" if first["top_minus_bottom_bps"] is None else f"{first['top_minus_bottom_bps']:+.1f} bps",
                       "-" if first["turnover_top"] is None else f"{first['turnover_top']:.0%}")
        console.print(fa)
    handoffs = sorted(lake.root.glob("handoffs/strategy=*/symbol=*/month=*/handoff.parquet"))
    if handoffs:
        import json

        import polars as pl

        verdicts = _verdicts(lake, "handoff")
        ho = Table(title="sweep candidates re-tested event-driven on the next month (in-sample sweep rank next to "
                         "the out-of-sample result; p: one-sided, 'beats the current parameters'; improved = survives "
                         "the FDR control over every tested change)")
        for col in ("strategy", "partition", "rank", "params (bars)", "event-driven params", "sweep Sharpe", "OOS Sharpe",
                    "baseline OOS Sharpe", "p", "improved"):
            ho.add_column(col, no_wrap=True)
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        for path in handoffs:
            for r in pl.read_parquet(path).iter_rows(named=True):
                key = (r["strategy"], r["symbol"], r["sweep_month"], r["sweep_rank"], r.get("p_value"))
                ho.add_row(r["strategy"], f"{r['sweep_month']}|{r['symbol']}", str(r["sweep_rank"]), _compact(r["sweep_params_bars"]),
                           _compact(r["event_params"]), f(r["sweep_sharpe"]), f(r["oos_candidate_sharpe"]),
                           f(r["oos_baseline_sharpe"]), "-" if r.get("p_value") is None else f"{r['p_value']:.3f}",
                           verdicts.get(key, "not judged yet"))
        console.print(ho)


def _print_walkforward(lake) -> None:
    """Every walk-forward fold (choice in sample, result out of sample) and each symbol's
    stitched efficiency."""
    import json

    import polars as pl

    folds = sorted(lake.root.glob("wf_folds/strategy=*/symbol=*/month=*/fold.parquet"))
    if not folds:
        return
    f = lambda v, fmt=".2f": "-" if v is None else format(v, fmt)  # noqa: E731
    wf = Table(title="walk-forward optimisation: per fold, the grid's best deflated Sharpe on the months before, run "
                     "event-driven on the fold's month (WFE = OOS Sharpe / IS Sharpe)")
    for col in ("strategy", "symbol", "OOS month", "in sample", "chosen (bars)", "IS Sharpe", "IS deflated", "OOS Sharpe",
                "OOS return", "WFE"):
        wf.add_column(col, no_wrap=True)
    for path in folds:
        strategy = path.parts[-4].removeprefix("strategy=")
        symbol = path.parts[-3].removeprefix("symbol=")
        for r in pl.read_parquet(path).iter_rows(named=True):
            wf.add_row(strategy, symbol, r["oos_month"], r["in_sample"], _compact(r["params_bars"]), f(r["is_sharpe"]),
                       f(r["is_deflated_sharpe"]), f(r["oos_sharpe"]), _pct(r["oos_return"]), f(r["wfe"]))
    console.print(wf)
    for path in sorted(lake.root.glob("walkforward/strategy=*/symbol=*/report.json")):
        r = json.loads(path.read_text())
        console.print(f"walk-forward {r['strategy']} on {r['symbol']}: {r['folds']} fold(s), stitched OOS Sharpe "
                      f"{f(r.get('oos_sharpe_hourly'))}, mean IS Sharpe {f(r.get('is_sharpe_mean'))}, efficiency "
                      f"{f(r.get('walk_forward_efficiency'))}"
                      + (f" ({r['walk_forward_efficiency_reason']})" if r.get("walk_forward_efficiency_reason") else ""))


def _verdicts(lake, kind: str) -> dict[tuple, str]:
    """(strategy, symbol, month, test index, p-value) -> the FDR ledger's verdict in words, for
    the tests of ``kind``; a test re-run since the ledger's last run has no entry."""
    from quant_assets.analytics import discoveries

    table = discoveries.read(lake)
    if table is None:
        return {}
    out = {}
    for r in table.filter(table["kind"] == kind).iter_rows(named=True):
        word = ("[green]yes[/]" if r["improved"] else "no") if r["in_family"] else "not tested"
        out[(r["strategy"], r["symbol"], r["month"], r["test_index"], r["p_value"])] = word
    return out


#: Tested changes a status or demo lists (survivors first, then by p-value).
TESTS_SHOWN = 20


def _print_discoveries(lake, table: bool = True) -> None:
    """The false-discovery ledger: "k of N tested changes survive FDR at q" and, with ``table``,
    the tested changes (survivors first)."""
    from quant_assets.analytics import discoveries

    manifest = discoveries.read_manifest(lake)
    if manifest is None:
        if any(lake.root.glob("oos/strategy=*/symbol=*/month=*/validation.parquet")) or any(
                lake.root.glob("handoffs/strategy=*/symbol=*/month=*/handoff.parquet")):
            console.print("[yellow]false-discovery control: not computed yet (materialise `discoveries`)[/]")
        return
    kinds = manifest["by_kind"]
    console.print(
        f"false-discovery control (Benjamini-Hochberg over every tested change): [bold]{manifest['survivors']} of "
        f"{manifest['tested']} tested changes survive FDR at q={manifest['q']:g}[/] (suggestions "
        f"{kinds['suggestion']['survivors']} of {kinds['suggestion']['tested']}, hand-offs {kinds['handoff']['survivors']} of "
        f"{kinds['handoff']['tested']}; point in time: {manifest['survivors_point_in_time']})")
    t = discoveries.read(lake)
    if not table or t is None or not t.height:
        return
    import polars as pl

    shown = t.sort([pl.col("improved"), pl.col("p_used")], descending=[True, False], nulls_last=True).head(TESTS_SHOWN)
    tt = Table(title=f"tested changes (one-sided p of 'beats its baseline on the next month'; improved = survives FDR at "
                     f"q={manifest['q']:g} among all {manifest['tested']}; point in time = among tests whose out-of-sample "
                     "month ended no later)")
    for col in ("kind", "strategy", "partition", "out-of-sample", "change", "p", "clears own bar", "adjusted p", "improved",
                "improved (point in time)"):
        tt.add_column(col, no_wrap=col != "change")
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in shown.iter_rows(named=True):
        verdict = ("[green]yes[/]" if r["improved"] else "no") if r["in_family"] else "not tested"
        tt.add_row(r["kind"], r["strategy"], f"{r['month']}|{r['symbol']}", r["oos_month"], r["change"] or "-", f(r["p_value"]),
                   "yes" if r["clears_local_bar"] else "no", f(r["p_adjusted"]), verdict,
                   ("yes" if r["improved_point_in_time"] else "no") if r["in_family"] else "-")
    console.print(tt)
    if t.height > TESTS_SHOWN:
        console.print(f"  ... and {t.height - TESTS_SHOWN:,} more (DuckDB view `suggestions`, `handoffs`, `discoveries`)")


def _print_promoted(lake, candidates: bool = True) -> None:
    """Promoted variants (and, with ``candidates``, the survivors still being judged)."""
    import polars as pl

    from quant_assets.strategies import promoted

    lineage = promoted.read_lineage(lake)
    path = lake.root / "promotions" / "candidates.parquet"
    pending = pl.read_parquet(path).filter(pl.col("status") != "promoted") if path.exists() and candidates else None
    if not lineage and (pending is None or not pending.height):
        if not candidates:  # a status: nothing to say yet
            return
        console.print("promoted variants: none yet (a suggestion must survive the false-discovery control, then beat "
                      "its baseline on k of the next n months: `promotions`)")
        return
    if not lineage:
        console.print("promoted variants: none yet")
    if lineage:
        t = Table(title=f"promoted variants ({promoted.toml_path(lake)}; their assets appear when the definitions reload)")
        for col in ("variant", "of", "change", "from the critique of", "critic", "out-of-sample months", "own months", "state"):
            t.add_column(col, no_wrap=col not in ("change", "state"))
        for name, e in sorted(lineage.items()):
            c = e["critique"]
            months = ", ".join(f"{m['month']} {'beat' if m['beat'] else 'lost'}" for m in e["months"])
            own = ", ".join(f"{m['month']} {'beat' if m['beat'] else 'lost'}" for m in e.get("own_months", [])) or "-"
            state = ("[dim]retired[/]: " + e.get("retired_reason", "") if e.get("retired")
                     else f"[red]flagged[/]: {e['flag']}" if e.get("flag") else "[green]active[/]")
            t.add_row(name, e.get("parent", e["base"]), e["change"], f"{c['month']}|{c['symbol']}", f"{c['critic']} {c['model']}", months, own, state)
        console.print(t)
    if pending is not None and pending.height:
        console.print("survivors of the false-discovery control not promoted: " + "; ".join(
            f"{r['strategy']} {r['month']}|{r['symbol']} `{r['change']}` {r['status']} ({r['reason']})"
            for r in pending.head(10).iter_rows(named=True)))


def cmd_promoted(args: argparse.Namespace) -> int:
    _print_promoted(_open_lake(args))
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    from quant_assets.strategies import promoted

    lake = _open_lake(args)
    try:
        r = promoted.retire(lake, args.variant, reason=args.reason)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/]")
        return 2
    console.print(f"{r.name}: retired" + ("" if r.was_active else " (it already was)") +
                  "; its assets leave the definitions when they reload (its published slices stay in the lake)")
    return 0
def _print_scorecard(lake) -> None:
    """The judge's scorecard: per critic, the share of its tested suggestions that improved out
    of sample against the null critic's random changes on the same slices."""
    from quant_assets.analytics import scorecard

    t = scorecard.read(lake)
    if t is None:
        if any(lake.root.glob("oos/strategy=*/symbol=*/month=*/validation.parquet")):
            console.print("[yellow]critic scorecard: not computed yet (materialise `critic_scorecard`)[/]")
        return
    if not t.height:
        console.print("critic scorecard: no critic has a tested suggestion with a null arm yet")
        return
    sc = Table(title=f"critic scorecard: share of tested changes whose Sharpe on the next month beats the baseline's, "
                     "each critic against the null critic's random changes on the same slices (p: one-sided Fisher "
                     "exact, 'better than random'; DuckDB view `scorecard`)")
    for col in ("critic", "slices", "critic improved", "null improved", "difference", "p"):
        sc.add_column(col, no_wrap=True, justify="left" if col == "critic" else "right")
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    for r in t.iter_rows(named=True):
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        sc.add_row(r["critic"], str(r["slices"]), f"{r['critic_improved']}/{r['critic_tested']} ({pct(r['critic_share'])})",
                   f"{r['null_improved']}/{r['null_tested']} ({pct(r['null_share'])})", pct(r["share_difference"]),
                   f"[green]{p}[/]" if r["p_value"] is not None and r["p_value"] <= 0.05 else p)
    console.print(sc)
    for r in t.filter(t["p_value"].is_null()).iter_rows(named=True):
        console.print(f"  {r['critic']}: p n/a ({r['reason']})")


def cmd_status(args: argparse.Namespace) -> int:
    from quant_assets import sync

    lake = _open_lake(args)
    with _instance() as instance:
        surveyed: dict = {}  # one landing survey per symbol, for discover and the plan
        slices = sync.discover(lake, instance, log=lambda m: console.print(f"[yellow]{m}[/]"), surveyed=surveyed)
        _print_status(lake, instance, slices, symbols=args.symbol, months=args.month, surveyed=surveyed)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from quant_assets.ingest.synthetic import SyntheticSpec, write_landing

    lake = _open_lake(args)
    t0 = time.perf_counter()
    depth = {s.upper() for s in args.symbols} if args.depth == ["all"] else {s.upper() for s in args.depth if s != "none"}
    for symbol in args.symbols:
        for month in args.months:
            spec = SyntheticSpec(symbol.upper(), month, seed=args.seed, events=args.events)
            path = write_landing(lake, spec)
            console.print(f"landing: {lake.relative(path)}")
            if spec.symbol in depth:  # the same quotes and trades as order-book depth (quant_assets.book.synthetic)
                from quant_assets.book.synthetic import write_book_landing

                console.print(f"landing: {lake.relative(write_book_landing(lake, spec))}")
    code = cmd_sync(args)
    _print_results(lake)
    _print_universes(lake)
    _print_sweeps(lake)
    _print_memory(lake)
    _print_promoted(lake)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; open the UI with `uv run quant-assets ui`")
    return code


def _lineage_label(n, origins: dict[str, str] | None = None) -> str:
    import datetime as dt

    if not n.materialized:
        return f"[red]{n.asset}[/] {n.partition or ''}: never materialised"
    when = dt.datetime.fromtimestamp(n.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if n.timestamp else "?"
    flag = "" if n.current is None else (" [green]inputs current[/]" if n.current else " [yellow]inputs changed since (stale)[/]")
    text = (f"[bold]{n.asset}[/] {n.partition or ''}  data [cyan]{n.data_version}[/]  code [cyan]{n.code_version}[/]  "
            f"run {str(n.run_id)[:8]} at {when}{flag}")
    if n.path:
        text += f"\n  {n.path}"
    for src in n.sources:
        text += f"\n  landed: {src.get('path')} (sha256 {src.get('sha256')}…, {src.get('format')})"
        if url := (origins or {}).get(str(src.get("path"))):
            text += f"\n    fetched from {url}"
    return text


def _fetched_from(lake) -> dict[str, str]:
    """Landing path (lake-relative) -> the URL it was fetched from, from the fetch ledgers."""
    import polars as pl

    from quant_assets.sources import ledger

    rows = ledger.scan(lake).filter(pl.col("status") == "landed").select("landing", "url").collect()
    return dict(rows.iter_rows())


def cmd_lineage(args: argparse.Namespace) -> int:
    import json

    from rich.tree import Tree

    from quant_assets import lineage

    with _instance() as instance:
        try:
            root = lineage.trace(instance, args.asset, args.partition)
        except KeyError as exc:
            console.print(f"[red]{exc.args[0]}[/]")
            return 2
    if args.json:
        print(json.dumps(root.as_dict(), indent=2, default=str))
        return 0 if root.materialized else 1
    from quant_assets.lake.store import Lake

    origins = _fetched_from(Lake.at(args.lake or lake_root()))
    tree = Tree(_lineage_label(root, origins))

    def add(branch, node) -> None:
        for parent in node.parents:
            add(branch.add(_lineage_label(parent, origins)), parent)

    add(tree, root)
    console.print(tree)
    return 0 if root.materialized else 1


def _fetch_targets(words: list[str], known_sources: list[str]) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
    """``quant-assets fetch [SOURCE] [INSTRUMENT...] [MONTH|FROM:TO ...]`` words -> (sources,
    instruments, months); None: all. A month is ``YYYY-MM``, a range ``YYYY-MM:YYYY-MM``."""
    import re

    from quant_assets.ingest.validate import next_month

    sources, instruments, months = [], [], []
    for w in words:
        if w.lower() in known_sources:
            sources.append(w.lower())
        elif m := re.fullmatch(r"(\d{4}-\d{2})(?::(\d{4}-\d{2}))?", w):
            first, last = m.group(1), m.group(2) or m.group(1)
            if last < first:
                raise SystemExit(f"quant-assets fetch: month range {w!r} ends before it starts")
            while first <= last:
                months.append(first)
                first = next_month(first)
        else:
            instruments.append(w.upper())
    return sources or None, instruments or None, months or None


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download what ``sources.toml`` declares (or the subset named) into landing/, with a
    progress bar; record each slice's fetch in the instance; ``--sync`` builds what landed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from quant_assets.sources import config as src_config
    from quant_assets.sources import fetch as src_fetch

    lake = _open_lake(args)
    try:
        cfg = src_config.load(args.config)
    except (ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    sources, instruments, months = _fetch_targets(args.what, src_config.SOURCE_NAMES)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=not sys.stdout.isatty()) as bar:
        task = bar.add_task("planning", total=None)

        def progress(done: int, total: int, rf) -> None:
            bar.update(task, completed=done, total=total, description=f"{rf.source} {rf.symbol} {rf.name}")

        report = src_fetch.fetch(lake, cfg, source=sources, symbols=instruments, months=months,
                                 recheck=args.recheck, progress=progress)
    _print_fetch_report(report)
    _record_fetch(lake, report)
    code = 1 if report.problem_lines() else 0
    if args.sync and report.landed:
        code = max(code, cmd_sync(args))
    return code


def _print_fetch_report(report) -> None:
    t = Table(title="fetch: one row per source × dataset (files)")
    for col in ("source", "dataset", "landed", "unchanged", "not published", "missing (gap)", "refused", "failed"):
        t.add_column(col, justify="left" if col in ("source", "dataset") else "right")
    for (source, dataset), counts in sorted(report.by_dataset().items()):
        t.add_row(source, dataset, *(str(counts.get(k, 0)) for k in
                                     ("landed", "unchanged", "not_published", "missing", "refused", "failed")))
    console.print(t)
    if not report.rows and not report.errors:
        console.print(f"nothing to fetch: {report.planned} file(s) planned, all landed already (see `quant-assets status`)")
    for path in report.landed:
        console.print(f"  landed {path}")
    for line in report.problem_lines() + report.gap_lines():
        console.print(f"  [yellow]{line}[/]")


def _record_fetch(lake, report) -> None:
    """Report each fetched slice to the instance as a materialization of ``fetch`` (as the
    asset would have recorded it), so the UI and lineage show CLI fetches too."""
    import dagster as dg

    from quant_assets.assets.fetch import FETCH_CODE_VERSION, fetch_metadata, slice_data_version
    from quant_assets.partitions import partition_key, symbol_partitions

    slices = report.slices()
    if not slices:
        return
    from quant_assets.sources import ledger

    state = ledger.state(lake)  # after the fetch: it holds this fetch's rows
    with _instance() as instance:
        known = set(instance.get_dynamic_partitions(symbol_partitions.name))
        if new := sorted({s for _, s in slices} - known):
            instance.add_dynamic_partitions(symbol_partitions.name, new)
        for month, symbol in sorted(slices):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key="fetch", partition=str(partition_key(month, symbol)),
                metadata={**fetch_metadata(report, symbol, month), "via": "quant-assets fetch"},
                tags={"dagster/data_version": slice_data_version(state, symbol, month),
                      "dagster/code_version": FETCH_CODE_VERSION},
            ))


def _version_text(lake, v) -> str:
    lines = [f"[bold]{v.slice}[/]  data version [cyan]{v.data_version}[/]  published {v.published_at}"]
    for name, f in sorted(v.files.items()):
        lines.append(f"  {name}  {f['size']:,} B  sha256 {f['sha256'][:16]}…  {lake.root / 'versions' / 'objects' / f['sha256'][:2] / f['sha256']}")
    return "\n".join(lines)


def cmd_asof(args: argparse.Namespace) -> int:
    """A slice as it was: the version current at a time (or with a data version), its files in the
    version store; ``--out`` copies them out, ``--inputs`` names what a result read."""
    import shutil
    from pathlib import Path

    from quant_assets.lake import versions
    from quant_assets.lake.store import Lake

    # No pull of the whole lake: the slice's index and objects are fetched on demand.
    lake = Lake.at(args.lake or lake_root())
    try:
        v = versions.resolve(lake, "", versions.Slice.of_asset(args.asset, args.partition), args.when)
        found = versions.inputs(lake, v) if args.inputs else []
        paths = v.paths(lake)
    except (versions.VersionNotFound, ValueError) as exc:
        console.print(f"[red]{exc}[/]", soft_wrap=True)
        return 2
    console.print(_version_text(lake, v), soft_wrap=True)
    for i in found:
        head = f"read {i['role']}: {i['slice']} ({i['how']})"
        if i["version"] is None:
            console.print(f"{head}\n  [yellow]not found: {i['reason']}[/]", soft_wrap=True)
        else:
            console.print(f"{head}\n" + _version_text(lake, i["version"]), soft_wrap=True)
            paths.update({f"inputs/{i['role'].replace(' ', '_')}/{n}": p for n, p in i["version"].paths(lake).items()})
    if args.out:
        out = Path(args.out)
        for name, path in paths.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / name)
        console.print(f"{len(paths)} file(s) copied to {out}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    cmd = ["dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port), "-w", str(REPO_ROOT / "workspace.yaml")]
    os.chdir(REPO_ROOT)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker of the ``celery`` profile (``QUANT_EXECUTOR=celery``): runs the steps the
    Dagster runs submit to ``$QUANT_CELERY_BROKER``. Start one or more per machine; each must
    see the same lake and Dagster instance as the launcher."""
    from quant_assets.settings import celery_broker

    ensure_dagster_home()
    os.environ["QUANT_LAKE"] = args.lake or lake_root()  # --lake wins over the environment, as for every verb
    cmd = [sys.executable, "-m", "celery", "-A", "quant_assets.celery_app", "worker", "-Q", "dagster",
           "--concurrency", str(args.concurrency), "--prefetch-multiplier", "1", "--loglevel", args.loglevel,
           "-n", f"{args.name}@%h"]
    console.print(f"celery worker {args.name}: broker {celery_broker()}, lake {os.environ['QUANT_LAKE']}, "
                  f"DAGSTER_HOME {os.environ['DAGSTER_HOME']}")
    os.execv(sys.executable, cmd)
    return 0  # not reached


def cmd_free_slots(args: argparse.Namespace) -> int:
    """Release the pool slots still held by runs that have ended (see :mod:`quant_assets.slots`)."""
    import dagster as dg

    from quant_assets.slots import free_ended_run_slots

    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        freed = free_ended_run_slots(instance)
    for run_id, status, n in freed:
        console.print(f"run {run_id[:8]} ({status}): freed {n} slot(s)")
    console.print(f"{sum(n for *_, n in freed)} slot(s) freed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quant-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="lake root (default $QUANT_LAKE or ./data_lake)")
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="synthetic data end to end")
    # Spot and the perpetual of one pair side by side: the perpetual pays funding and its
    # market maker quotes at the derivatives venue's fees.
    demo.add_argument("--symbols", nargs="+", default=["BTCUSDT", "BTCUSDT-PERP"])
    demo.add_argument("--months", nargs="+", default=["2024-01", "2024-02"])
    demo.add_argument("--events", type=int, default=200_000, help="quotes + trades per symbol-month")
    demo.add_argument("--seed", type=int, default=42)
    # The perpetual gets an order book (5 levels a side), spot stays L1: the demo shows the market
    # maker's queue on real depth beside its L1-approximate result, and ema_cross on an L2 book.
    demo.add_argument("--depth", nargs="+", default=["BTCUSDT-PERP"], metavar="SYMBOL",
                      help="symbols that also land their synthetic order book ('all' or 'none'; default BTCUSDT-PERP)")
    demo.set_defaults(fn=cmd_demo)
    sub.add_parser("sync", help="materialise every missing or stale slice").set_defaults(fn=cmd_sync)
    status = sub.add_parser("status", help="slices x assets with their state (a summary past a screenful of slices)")
    status.add_argument("--symbol", action="append", help="only this symbol's slices and roll-ups, as tables (repeatable)")
    status.add_argument("--month", action="append", help="only this month's slices (YYYY-MM), as tables (repeatable)")
    status.set_defaults(fn=cmd_status)
    lin = sub.add_parser("lineage", help="walk an asset partition back to the landed files")
    lin.add_argument("asset", help="e.g. critique_ema_cross")
    lin.add_argument("partition", nargs="?", help="e.g. 2024-01|BTCUSDT (a symbol for report_*)")
    lin.add_argument("--json", action="store_true", help="print the tree as JSON")
    lin.set_defaults(fn=cmd_lineage)
    sub.add_parser("promoted", help="the strategy variants the research loop promoted").set_defaults(fn=cmd_promoted)
    ret = sub.add_parser("retire", help="remove a promoted variant (its lineage is kept)")
    ret.add_argument("variant", help="e.g. ema_cross_slow_period_300 (see `quant-assets promoted`)")
    ret.add_argument("--reason", default="retired by hand", help="why, kept in its lineage")
    ret.set_defaults(fn=cmd_retire)
    asof = sub.add_parser("asof", help="a slice as it was at a time or data version (its stored files)")
    asof.add_argument("asset", help="ticks, book, backtest_<strategy> or metrics_<strategy>")
    asof.add_argument("partition", help="MONTH|SYMBOL, e.g. 2024-03|BTCUSDT")
    asof.add_argument("when", help="an ISO time (UTC unless it says, e.g. 2024-04-01T00:00Z) or a data version (4+ leading characters)")
    asof.add_argument("--out", help="copy the version's files into this folder (with --inputs, the inputs' under inputs/)")
    asof.add_argument("--inputs", action="store_true",
                      help="for a backtest or metric set: the versions it read (ticks, book, warm-up; the backtest) and their files")
    asof.set_defaults(fn=cmd_asof)
    wk = sub.add_parser("worker", help="a Celery worker of the celery profile (QUANT_EXECUTOR=celery)")
    wk.add_argument("--name", default=f"worker-{os.getpid()}", help="worker name (unique per machine)")
    wk.add_argument("--concurrency", type=int, default=1, help="steps this worker runs at once (processes)")
    wk.add_argument("--loglevel", default="INFO")
    wk.set_defaults(fn=cmd_worker)
    sub.add_parser("free-slots", help="release pool slots held by runs that have ended (after a killed worker)"
                   ).set_defaults(fn=cmd_free_slots)
    fe = sub.add_parser("fetch", help="download raw files from the sources in sources.toml into landing/ (with a progress bar)",
                        description="quant-assets fetch [SOURCE] [INSTRUMENT...] [MONTH|FROM:TO ...]: every file that "
                                    "sources.toml declares and the source has published, or the subset named "
                                    "(binance | tardis | databento; BTCUSDT-PERP; 2024-03 or 2024-01:2024-06).")
    fe.add_argument("what", nargs="*", help="a source, instruments, months (any order)")
    fe.add_argument("--config", help="a sources file (default: $QUANT_SOURCES or sources.toml)")
    fe.add_argument("--recheck", action="store_true", help="re-check landed files for re-uploads (a new checksum lands as a new version)")
    fe.add_argument("--sync", action="store_true", help="then build every missing or stale slice, as `quant-assets sync`")
    fe.set_defaults(fn=cmd_fetch)
    ui = sub.add_parser("ui", help="the Dagster UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(fn=cmd_ui)
    args = parser.parse_args(argv)
    if args.lake:
        # The runs a verb launches read the lake from the environment (LakeResource), so
        # --lake must reach them too, not only the verb's own reads.
        os.environ["QUANT_LAKE"] = args.lake
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
