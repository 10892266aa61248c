"""One multi-instrument backtest (month × universe), end to end: members → one engine → result
format → lake. Domain code: the Dagster layer calls :func:`run_multi_backtest`.

Output at ``<lake>/backtests_multi/strategy=X/universe=U/month=M/`` (:meth:`Lake.backtest_multi_dir`):
``fills.parquet``, ``equity.parquet``, ``cashflows.parquet``, ``funding.parquet`` (the single-
instrument tables of :mod:`quant_assets.engines.result` with an ``instrument`` column first;
equity also holds the account's rows under ``instrument = "ACCOUNT"``), then ``manifest.json``
last, naming every file's SHA-256 and, per member, the ``ticks`` data version it read (the
Dagster data version when the caller passes it, and the file's own SHA-256 always) and its
funding source. ``run.json`` holds the run's own wall time and events/s (not in the manifest:
same inputs give byte-identical published files).
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.analytics.basis_pnl import pnl_split
from quant_assets.analytics.slice_metrics import backtest_data_version
from quant_assets.engines import ADAPTER_VERSIONS
from quant_assets.engines.account import AccountRules
from quant_assets.engines.inputs import BacktestInputError
from quant_assets.engines.multi import ACCOUNT, Member, MultiResult, finalize_multi, run_multi
from quant_assets.engines.result import summary
from quant_assets.engines.runner import STARTING_CASH, check_sizes, venue_profile
from quant_assets.funding.build import load_funding
from quant_assets.funding.schema import is_perpetual
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake.store import Lake, atomic_dir, file_sha256
from quant_assets.strategies.spec import StrategySpec
from quant_assets.venues.profile import VenueProfile


@dataclass(frozen=True)
class MultiOutput:
    directory: Path
    manifest: dict[str, Any]
    result: MultiResult
    data_version: str  # hash of the result files


def account_rules(members: list[Member], starting_cash: float) -> AccountRules:
    """The one cross-margined account of a universe: the largest leverage and the largest
    maintenance margin of its members' venue × kind settings (a spot + perpetual pair trades
    under the perpetual's leverage; the maintenance rate applies to the gross exposure)."""
    rows = [inst_mod.margin_for(m.instrument) for m in members]
    return AccountRules(starting_cash, max(r[0] for r in rows), max(r[1] for r in rows))


def setup_members(lake: Lake, symbols: list[str], month: str,
                  instruments: dict[str, inst_mod.Instrument] | None = None) -> list[Member]:
    """The members of (universe, month): each symbol's instrument as known in the month with the
    month's fees applied (or ``instruments[symbol]`` as given), its ``ticks`` file and, for a
    perpetual, its funding rows (None when the month has none: ``missing``, never a zero)."""
    out = []
    for s in symbols:
        inst = (instruments or {}).get(s) or inst_mod.resolve(lake, s, month=month)
        if inst is None:
            raise BacktestInputError(f"{s} {month}: no instrument record (materialise `ticks` for it or add [{s}] to instruments.toml)")
        if not instruments or s not in instruments:
            fees = inst_mod.fee_choice(inst, month)
            inst = replace(inst, maker_fee=fees.maker, taker_fee=fees.taker)
        out.append(Member(inst, lake.ticks_path(s, month), load_funding(lake, s, month) if is_perpetual(s) else None))
    return out


def run_multi_backtest(
    lake: Lake, spec: StrategySpec, universe: str, symbols: list[str], month: str,
    ticks_versions: dict[str, str | None] | None = None, code_version: str | None = None,
    starting_cash: float = STARTING_CASH, instruments: dict[str, inst_mod.Instrument] | None = None,
    profiles: dict[str, VenueProfile] | None = None, trade: list[str] | None = None,
) -> MultiOutput:
    """Backtest ``spec`` on every member of ``universe`` (``symbols``) for ``month`` in one
    engine and publish the result (the previous one stays until the new one is complete).
    ``profiles``: venue -> profile (default: the venue profile of the venue's first member);
    ``trade``: for a single-instrument strategy, the members it trades (default: all)."""
    if spec.engine != "nautilus":
        raise BacktestInputError(f"{spec.name}: multi-instrument runs are NautilusTrader only (engine {spec.engine})")
    params = spec.resolved()
    members = setup_members(lake, symbols, month, instruments)
    rules = account_rules(members, starting_cash)
    check_sizes(spec, params, rules, f"{universe} {month}")
    if profiles is None:
        profiles = {}
        for m in members:
            profiles.setdefault(m.instrument.venue, venue_profile(m.instrument))
    t0 = time.perf_counter()
    run = run_multi(members, spec.impl, params, starting_cash, rules, profiles, trade)
    res = finalize_multi(run, members)
    split = pnl_split(res.fills, res.cashflows, res.equity, starting_cash, ACCOUNT)
    out = lake.backtest_multi_dir(spec.name, universe, month)
    names = ["fills.parquet", "equity.parquet", "cashflows.parquet", "funding.parquet"]
    with lake.lock(f"backtest-multi-{spec.name}-{universe}-{month}"), atomic_dir(out, "backtest") as new:
        for name, df in zip(names, (res.fills, res.equity, res.cashflows, res.funding)):
            lake.write_parquet(df, new / name)
        hashes = {name: file_sha256(new / name) for name in names}
        member_rows = []
        for m in members:
            f, e, c = res.member(m.symbol)
            fs = res.funding_summary[m.symbol]
            src = lake.funding_path(m.symbol, month)
            member_rows.append({
                "symbol": m.symbol, "kind": m.instrument.kind, "venue": m.instrument.venue,
                "ticks_path": lake.relative(m.ticks_path),
                "ticks_data_version": (ticks_versions or {}).get(m.symbol),
                "ticks_sha256": file_sha256(m.ticks_path),
                "events": run.runs[m.symbol].events, "fidelity": run.runs[m.symbol].fidelity,
                "instrument": m.instrument.__dict__,
                "funding": {"status": fs["funding_status"], "funding_pnl": fs["funding_pnl"], "events": fs["funding_events"],
                            "source": lake.relative(src) if m.funding is not None else None,
                            "source_sha256": file_sha256(src) if m.funding is not None and src.exists() else None},
                "summary": summary(f, e, starting_cash, c),
            })
        manifest = {
            "strategy": spec.name, "universe": universe, "month": month, "members": member_rows, "params": params,
            "engine": "nautilus_trader", "engine_version": run.engine_version,
            "adapter_version": ADAPTER_VERSIONS["nautilus"],
            "code_version": code_version or spec.code_version(ADAPTER_VERSIONS["nautilus"]),
            "account": {"starting_cash": starting_cash, "quote_currency": run.quote_currency, **asdict(rules),
                        "accounts": run.counters["accounts"]},
            "venue_profiles": {v: p.describe() for v, p in profiles.items()},
            "pnl_split": split,
            "counters": run.counters, "account_events": run.account_events, "events": run.events,
            "files": hashes, "notes": run.notes,
        }
        lake.write_json({"engine_wall_s": round(run.wall_s, 4), "wall_s": round(time.perf_counter() - t0, 4),
                         "events_per_s": round(run.events_per_s, 1),
                         "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
                        new / "run.json")
        lake.write_json(manifest, new / "manifest.json")
    return MultiOutput(out, manifest, res, backtest_data_version({"files": hashes}))
