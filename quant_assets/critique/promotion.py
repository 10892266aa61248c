"""Promotion: a critic's suggestion that keeps beating its baseline out of sample becomes a
strategy variant of its own.

A candidate is a critique suggestion (one parameter changed from the critique's parameters) of
month M that survives the ledger-wide false-discovery control (``improved`` in
``discoveries/discoveries.parquet``: :mod:`quant_assets.analytics.discoveries`). It is then
judged on the next ``n`` months, M+1 .. M+n: on each, it *beats* its baseline when its Sharpe
(hourly returns, the out-of-sample validation's measure) is above the baseline's. M+1 is the
validation's own result; M+2 .. M+n are backtested here with the pipeline's engine (kept in
``<lake>/promotions/strategy=X/symbol=S/month=M/<k>-<name>/<month>/`` and reused while their
parameters match), against the published slice of that month when it ran the critique's
parameters (else the baseline is re-run beside the candidate). The decision is taken as soon
as it is certain: **promoted** once it beat on ``k`` months, **rejected** once ``k`` can no
longer be reached, else **pending** (naming the month it waits for).

A promoted candidate is written to the lake's generated variants
(:mod:`quant_assets.strategies.promoted`) under ``<base>_<parameter>_<value>``, with the
critique's full parameter set, its lineage and the months that decided it. The definitions then
load it like a user variant (its own ``backtest_<variant>`` chain).

**Flagged**: a promoted variant whose own later months (after the months that promoted it,
where both its metric set and the base strategy's exist) beat the base on fewer than ``k`` of
the first ``n`` such months. It stays active (retiring is a person's decision: ``quant-assets
retire``) and is marked in ``quant-assets promoted`` and the asset's metadata.

Nothing about a month depends on a later month: the promotion of month M's suggestion is decided
at M+j, from months up to M+j only. Cost follows the work: the ledger's survivors (few), each
backtested on at most n−1 months once.

Output: ``<lake>/promotions/candidates.parquet`` (one row per survivor, its months and status)
and ``manifest.json``. Plain Python: no Dagster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.critique.oos import CRITIC_ARM
from quant_assets.engines.inputs import NotApplicableError
from quant_assets.lake.store import Lake
from quant_assets.strategies import promoted
from quant_assets.strategies.spec import ParamError, StrategySpec

#: Bump when the rule or the stored columns change.
PROMOTION_VERSION = "1"

SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "symbol": pl.String(), "month": pl.String(), "test_index": pl.Int64(),
    "change": pl.String(), "critic": pl.String(), "model": pl.String(), "months_tested": pl.Int64(),
    "months_beaten": pl.Int64(), "months": pl.String(), "status": pl.String(), "reason": pl.String(),
    "variant": pl.String(),
}


@dataclass(frozen=True)
class Rule:
    """Beat the baseline on ``k`` of the next ``n`` months (1 <= k <= n)."""

    k: int = 2
    n: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"promotion rule {self.k} of {self.n}: expected 1 <= k <= n")

    def describe(self) -> str:
        return f"beat the baseline on {self.k} of the next {self.n} months"


@dataclass(frozen=True)
class PromotionsOutput:
    directory: Path
    table: pl.DataFrame
    manifest: dict[str, Any]
    newly_promoted: list[str]
    flagged: list[str]
    data_version: str


def _add_months(month: str, k: int) -> str:
    y, m = (int(x) for x in month.split("-"))
    n = y * 12 + m - 1 + k
    return f"{n // 12}-{n % 12 + 1:02d}"


def _sharpe_pair(lake: Lake, spec: StrategySpec, base_params: dict, symbol: str, month: str, change: dict,
                 folder: Path, trading_days: int) -> tuple[float | None, float | None]:
    """(candidate Sharpe, baseline Sharpe) on ``month``, both on hourly returns."""
    from quant_assets.analytics.returns import sample_returns
    from quant_assets.analytics.slice_metrics import read_backtest
    from quant_assets.critique.oos import period_row, read_backtest_dir, run_and_measure

    base_spec = spec.with_values(base_params)
    cand_spec = base_spec.with_values(change)
    cand_dir = folder / month
    if _ran_with(cand_dir, cand_spec.resolved()):
        bt = read_backtest_dir(cand_dir)
        cand = period_row(sample_returns(bt.equity, bt.interval_s, trading_days))["sharpe"]
    else:
        cand = run_and_measure(lake, cand_spec, symbol, month, cand_dir, trading_days).row["sharpe"]
    published = read_backtest(lake, spec.name, symbol, month)
    if published.manifest.get("params") != base_spec.resolved():
        base_dir = folder / "baseline" / month
        if not _ran_with(base_dir, base_spec.resolved()):
            run_and_measure(lake, base_spec, symbol, month, base_dir, trading_days)
        published = read_backtest_dir(base_dir)
    base = period_row(sample_returns(published.equity, published.interval_s, trading_days))["sharpe"]
    return cand, base


def _ran_with(directory: Path, params: dict) -> bool:
    m = directory / "manifest.json"
    return m.exists() and json.loads(m.read_text()).get("params") == params


def _beats(cand: float | None, base: float | None) -> bool:
    """Strictly above; an undefined Sharpe (no position, a wiped-out account) never beats."""
    return cand is not None and base is not None and cand > base


def run_promotions(lake: Lake, specs: Mapping[str, StrategySpec], rule: Rule,
                   trading_days_of: Callable[[str, str], int]) -> PromotionsOutput:
    """Judge every survivor of the ledger, promote the decided ones, flag failing variants
    (module docstring). ``trading_days_of(symbol, month)``: the instrument's trading days."""
    from quant_assets.critique.oos import next_month_ready

    ledger_path = lake.discoveries_dir / "discoveries.parquet"
    survivors = (pl.read_parquet(ledger_path).filter((pl.col("kind") == "suggestion") & pl.col("improved") & pl.col("tested"))
                 .sort("strategy", "symbol", "month", "test_index") if ledger_path.exists() else pl.DataFrame())
    rows: list[dict[str, Any]] = []
    newly: list[str] = []
    out_dir = lake.root / "promotions"
    with lake.lock("promotions"):
        lineage = promoted.read_lineage(lake)
        for s in survivors.iter_rows(named=True):
            row = {c: None for c in SCHEMA} | {k: s[k] for k in ("strategy", "symbol", "month", "test_index", "change")}
            spec = specs.get(s["strategy"])
            vpath = lake.oos_dir(s["strategy"], s["symbol"], s["month"]) / "validation.parquet"
            cpath = lake.critique_dir(s["strategy"], s["symbol"], s["month"]) / "critique.json"
            if spec is None or not vpath.exists() or not cpath.exists():
                rows.append(row | {"status": "skipped", "reason": "its strategy, validation or critique is no longer in the lake"})
                continue
            table = pl.read_parquet(vpath)
            if "arm" in table.columns:  # the ledger's tests are the critic's arm (suggestion_index repeats per arm)
                table = table.filter(pl.col("arm") == CRITIC_ARM)
            v = table.filter(pl.col("suggestion_index") == s["test_index"]).row(0, named=True)
            critique = json.loads(cpath.read_text())
            change = {v["name"]: json.loads(v["value"])}
            row |= {"critic": critique["critic"], "model": critique["model"]}
            months = [{"month": v["oos_month"], "candidate_sharpe": v["oos_candidate_sharpe"],
                       "baseline_sharpe": v["oos_baseline_sharpe"],
                       "beat": _beats(v["oos_candidate_sharpe"], v["oos_baseline_sharpe"])}]
            folder = out_dir / f"strategy={s['strategy']}" / f"symbol={s['symbol']}" / f"month={s['month']}" / f"{s['test_index']}-{v['name']}"
            status, reason = "pending", None
            while True:  # decided as soon as it is certain; months run in order, none skipped
                beaten = sum(m["beat"] for m in months)
                if beaten >= rule.k:
                    status = "promoted"
                    break
                if beaten + (rule.n - len(months)) < rule.k:
                    status, reason = "rejected", f"beat its baseline on {beaten} of {len(months)} months: {rule.describe()} is out of reach"
                    break
                month = _add_months(s["month"], len(months) + 1)
                if not next_month_ready(lake, s["strategy"], s["symbol"], _add_months(month, -1)):
                    reason = f"waits for {month} (its ticks and the {s['strategy']} metric set)"
                    break
                try:
                    cand, base = _sharpe_pair(lake, spec, critique["params"], s["symbol"], month, change, folder,
                                              trading_days_of(s["symbol"], month))
                except (ParamError, NotApplicableError) as exc:
                    status, reason = "rejected", f"cannot be run on {month}: {exc}"
                    break
                months.append({"month": month, "candidate_sharpe": cand, "baseline_sharpe": base, "beat": _beats(cand, base)})
            beaten = sum(m["beat"] for m in months)
            row |= {"months_tested": len(months), "months_beaten": beaten, "months": json.dumps(months), "status": status,
                    "reason": reason or (f"beat its baseline on {beaten} of {len(months)} months ({rule.describe()})"
                                         if status == "promoted" else None)}
            if status == "promoted":
                name = promoted.variant_name(spec.name, v["name"], change[v["name"]])
                row["variant"] = name
                if name not in lineage:
                    lineage[name] = {
                        # a variant's own critique can promote a variant of it: the TOML's base is
                        # the built-in strategy, the comparison (flags) is against its parent
                        "base": _builtin_of(spec), "parent": spec.name,
                        "params": spec.with_values(critique["params"]).resolved(change),
                        "change": f"{v['name']}: {json.loads(v['baseline_value'])} -> {change[v['name']]}",
                        "critique": {"strategy": s["strategy"], "symbol": s["symbol"], "month": s["month"],
                                     "critic": critique["critic"], "model": critique["model"],
                                     "path": lake.relative(cpath), "validation": lake.relative(vpath)},
                        "months": months, "rule": {"k": rule.k, "n": rule.n},
                        "promoted_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    }
                    newly.append(name)
            rows.append(row)
        flagged = _flag(lake, lineage, rule)
        if newly or flagged or lineage:
            promoted.write(lake, lineage)
        table = pl.DataFrame(rows, schema=SCHEMA)
        lake.write_parquet(table, out_dir / "candidates.parquet")
        counts = table.group_by("status").len().sort("status").rows() if len(table) else []
        manifest = {"promotion_version": PROMOTION_VERSION, "rule": {"k": rule.k, "n": rule.n, "text": rule.describe()},
                    "candidates": len(table), "by_status": dict(counts), "newly_promoted": newly, "flagged": flagged,
                    "active": sorted(n for n, e in lineage.items() if not e.get("retired"))}
        lake.write_json(manifest, out_dir / "manifest.json")
    digest = hashlib.sha256(json.dumps([table.rows(), manifest["active"], flagged], default=str).encode()).hexdigest()[:24]
    return PromotionsOutput(out_dir, table, manifest, newly, flagged, digest)


def _builtin_of(spec: StrategySpec) -> str:
    """The built-in strategy a spec (built-in, user variant or promoted variant) runs."""
    from quant_assets.strategies.registry import BUILTIN

    return next(b.name for b in BUILTIN if b.impl == spec.impl and b.engine == spec.engine)


def _flag(lake: Lake, lineage: dict[str, dict[str, Any]], rule: Rule) -> list[str]:
    """Mark the active variants whose own months after promotion fail the rule against the base."""
    flagged = []
    for name, entry in lineage.items():
        if entry.get("retired"):
            continue
        symbol, decided = entry["critique"]["symbol"], entry["months"][-1]["month"]
        parent = entry.get("parent", entry["base"])
        own = []
        vdir = lake.metrics_dir(name, symbol, decided).parent
        for mdir in sorted(vdir.glob("month=*")) if vdir.is_dir() else []:
            month = mdir.name.removeprefix("month=")
            base_m = lake.metrics_dir(parent, symbol, month) / "metrics.parquet"
            if month <= decided or not (mdir / "metrics.parquet").exists() or not base_m.exists():
                continue
            cand = pl.read_parquet(mdir / "metrics.parquet")["sharpe"][0]
            base = pl.read_parquet(base_m)["sharpe"][0]
            own.append({"month": month, "variant_sharpe": cand, "base_sharpe": base, "beat": _beats(cand, base)})
            if len(own) == rule.n:
                break
        beaten = sum(m["beat"] for m in own)
        failing = beaten + (rule.n - len(own)) < rule.k
        entry["own_months"] = own
        entry["flag"] = (f"fails its own out-of-sample months: beat {parent} on {beaten} of {len(own)} "
                         f"({rule.describe()})") if failing else None
        if failing:
            flagged.append(name)
    return flagged
