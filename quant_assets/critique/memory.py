"""The critic's memory: what became of this strategy's earlier suggestions, point in time.

After FinMem's layered memory (recent events in detail, older ones condensed), without its
look-ahead. For the critique of month M of symbol S, a test counts only if its out-of-sample
month ended no later than M's data does (``oos_month <= M``): the validation of month M−1's
suggestions on M qualifies; the validation of M's own suggestions (on M+1) never does, nor
anything later. Two layers, both bounded:

* **recent**, in detail: this instrument's latest tested suggestions (up to
  :data:`RECENT_THIS`), then other instruments' (up to :data:`RECENT_OTHER`), each with how
  many months before M it was proposed, the change (``parameter``, ``from``, ``to``), the critic,
  and what the next month said (out-of-sample Sharpe change against the baseline, the one-sided
  p-value, whether it cleared its slice's bar; or that it could not be run);
* **older**, condensed: for the tests not shown, per parameter and direction (raised,
  lowered), how often it was tried and how often it beat the baseline.

The serialised memory stays under :data:`MAX_MEMORY_CHARS` (entries are dropped, oldest first,
until it fits). No calendar month and no other instrument's name appears: months are counted
back from M and other instruments are "another instrument".

Sources and their cost: this instrument's own ``oos/strategy=X/symbol=S/month=*/validation.parquet``
(at most one file per earlier month: a listing of one folder), read fresh; other instruments
from the false-discovery ledger (``discoveries/discoveries.parquet``, one file, whatever the
number of symbols), which carries each test's change, p-value and local bar but not the
Sharpe change, and is as recent as the ledger's last build: a test validated since then is
missing from other instruments' memory until the ledger runs again (never a later month's).

Plain Python + Polars: no Dagster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_assets.critique.oos import CRITIC_ARM
from quant_assets.critique.oos import SCHEMA as OOS_SCHEMA
from quant_assets.lake.store import Lake

#: Detailed entries of this instrument, and of the others, at most.
RECENT_THIS = 6
RECENT_OTHER = 4
#: Parameters (× direction) in the condensed older history, at most.
OLDER_PARAMS = 8
#: Upper bound of the serialised memory (characters): about 500 tokens.
MAX_MEMORY_CHARS = 2_000

_VALIDATION_COLS = ("critique_month", "oos_month", "critic", "name", "value", "baseline_value", "tested",
                    "oos_delta_sharpe", "p_value", "clears_local_bar", "suggestion_index")


def month_number(month: str) -> int:
    """Months since year 0 (``2024-01`` -> 24288): month arithmetic on ``YYYY-MM`` keys."""
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def _value(text: str | None) -> Any:
    """A stored suggestion value (JSON text) back as a number/bool; the text when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _num(x: Any) -> Any:
    if x is None or isinstance(x, bool):
        return x
    return float(f"{float(x):.3g}")


def _direction(baseline: Any, value: Any) -> str:
    if isinstance(value, bool) or isinstance(baseline, bool) or baseline is None:
        return "set"
    try:
        return "raised" if float(value) > float(baseline) else "lowered" if float(value) < float(baseline) else "kept"
    except (TypeError, ValueError):
        return "set"


@dataclass(frozen=True)
class Memory:
    """What the critic is told of earlier tests (:meth:`as_prompt`), and what it was built from."""

    recent: list[dict[str, Any]] = field(default_factory=list)
    older: list[dict[str, Any]] = field(default_factory=list)
    #: Lake-relative files read (lineage), and the tests seen in all (shown or condensed).
    sources: list[str] = field(default_factory=list)
    tests_seen: int = 0

    @property
    def empty(self) -> bool:
        return not self.recent and not self.older

    def as_prompt(self) -> dict[str, Any] | None:
        if self.empty:
            return None
        return {
            "meaning": ("earlier suggestions for this strategy and what the following month said of them: only tests "
                        "whose out-of-sample month ended by the end of this month; months_before counts back from this "
                        "month to the month the suggestion was made; beat_baseline = cleared its slice's one-sided "
                        "significance bar against the unchanged parameters. Do not repeat a change that failed unless "
                        "the report gives a new reason."),
            "recent": self.recent,
            "older_summary": self.older,
        }


def _this_instrument(lake: Lake, strategy: str, symbol: str, month: str) -> tuple[pl.DataFrame, list[str]]:
    base = lake.oos_dir(strategy, symbol, month).parent
    files = sorted(p for p in base.glob("month=*/validation.parquet")
                   if p.parent.name.removeprefix("month=") < month) if base.is_dir() else []
    if not files:
        return pl.DataFrame(), []
    # one scan of every file (a file per earlier month), the columns needed only; a file from
    # before the null critic has no arm: all its rows are the critic's
    schema = {c: OOS_SCHEMA[c] for c in ("arm", *_VALIDATION_COLS)}
    df = (pl.scan_parquet(files, schema=schema, missing_columns="insert", extra_columns="ignore")
          .filter(pl.col("arm").is_null() | (pl.col("arm") == CRITIC_ARM))  # the null arm is the scorecard's yardstick
          .select(_VALIDATION_COLS).collect())
    return df, [lake.relative(f) for f in files]


def _other_instruments(lake: Lake, strategy: str, symbol: str, month: str) -> tuple[pl.DataFrame, list[str]]:
    path = lake.discoveries_dir / "discoveries.parquet"
    if not path.exists():
        return pl.DataFrame(), []
    df = (pl.scan_parquet(path)
          .filter((pl.col("kind") == "suggestion") & (pl.col("strategy") == strategy) & (pl.col("symbol") != symbol)
                  & (pl.col("oos_month") <= month))
          .select("month", "oos_month", "change", "tested", "p_value", "clears_local_bar", "test_index")
          .collect())
    # a source only where it gave something: the ledger's existence alone (built after the
    # first months' critiques, there when they are recomputed) must not change a critique
    return df, [lake.relative(path)] if df.height else []


def recall(lake: Lake, strategy: str, symbol: str, month: str, baseline: dict[str, Any] | None = None) -> Memory:
    """The memory for the critique of (``month``, ``symbol``) of ``strategy`` (module docstring).
    ``baseline``: the parameters the critique runs with (the direction of other instruments'
    changes, whose ledger rows carry only the new value)."""
    m = month_number(month)
    here, here_src = _this_instrument(lake, strategy, symbol, month)
    other, other_src = _other_instruments(lake, strategy, symbol, month)
    entries: list[dict[str, Any]] = []  # newest first within each instrument group
    if here.height:
        here = here.filter(pl.col("oos_month") <= month).sort(["critique_month", "suggestion_index"], descending=[True, False])
        for r in here.iter_rows(named=True):
            base_v, new_v = _value(r["baseline_value"]), _value(r["value"])
            beat = bool(r["clears_local_bar"]) if r["tested"] else None
            entries.append({
                "instrument": "this", "months_before": m - month_number(r["critique_month"]),
                "parameter": r["name"], "from": base_v, "to": new_v, "dir": _direction(base_v, new_v),
                "critic": r.get("critic"), "tested": bool(r["tested"]),
                "oos_sharpe_change": _num(r.get("oos_delta_sharpe")), "p_value": _num(r.get("p_value")), "beat_baseline": beat,
            })
    this = entries
    others: list[dict[str, Any]] = []
    older_counts: dict[tuple[str, str], list[int]] = {}
    if other.height:
        # Every other instrument's tests (400 symbols x 84 months: ~130k rows): the few shown are
        # built one by one, the rest are counted by Polars, never looped over in Python.
        other = other.sort(["oos_month", "test_index"], descending=[True, False])
        for r in other.head(RECENT_OTHER).iter_rows(named=True):
            name, _, text = (r["change"] or "").partition("=")
            new_v = _value(text)
            base_v = (baseline or {}).get(name)
            others.append({
                "instrument": "another", "months_before": m - month_number(r["month"]),
                "parameter": name, "from": base_v, "to": new_v, "dir": _direction(base_v, new_v), "tested": bool(r["tested"]),
                "p_value": _num(r.get("p_value")), "beat_baseline": bool(r["clears_local_bar"]) if r["tested"] else None,
            })
        older_counts = _count_ledger_rows(other.slice(RECENT_OTHER), baseline or {})
    shown = this[:RECENT_THIS] + others
    memory = Memory(
        recent=[_public(e) for e in shown], older=_condensed(this[RECENT_THIS:], older_counts),
        sources=here_src + other_src, tests_seen=len(this) + other.height,
    )
    return _bounded(memory)


def _count_ledger_rows(rows: pl.DataFrame, baseline: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    """(parameter, direction) -> [tried, beat the baseline] over ledger rows (tested ones)."""
    if not rows.height:
        return {}
    numeric = {k: float(v) for k, v in baseline.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts = pl.col("change").str.split_exact("=", 1)
    new, base = pl.col("new"), pl.col("base")
    counted = (
        rows.lazy().filter(pl.col("tested"))
        .with_columns(parameter=parts.struct.field("field_0"),
                      new=parts.struct.field("field_1").cast(pl.Float64, strict=False))
        .with_columns(base=pl.col("parameter").replace_strict(numeric, default=None, return_dtype=pl.Float64))
        .with_columns(direction=pl.when(new.is_null() | base.is_null()).then(pl.lit("set"))
                      .when(new > base).then(pl.lit("raised")).when(new < base).then(pl.lit("lowered")).otherwise(pl.lit("kept")))
        .group_by("parameter", "direction").agg(tried=pl.len(), beat=pl.col("clears_local_bar").fill_null(False).sum())
        .collect()
    )
    return {(r["parameter"], r["direction"]): [int(r["tried"]), int(r["beat"])] for r in counted.iter_rows(named=True)}


def _public(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as the prompt shows it (the grouping keys dropped, nulls left out)."""
    return {k: v for k, v in e.items() if k != "dir" and v is not None}


def _condensed(rest: list[dict[str, Any]], counted: dict[tuple[str, str], list[int]] | None = None) -> list[dict[str, Any]]:
    """Tried / beat-the-baseline per (parameter, direction) over ``rest`` (entries not shown)
    and ``counted`` (the same counts, made by :func:`_count_ledger_rows`)."""
    counts: dict[tuple[str, str], list[int]] = {k: list(v) for k, v in (counted or {}).items()}
    for e in rest:
        if not e["tested"]:
            continue
        c = counts.setdefault((e["parameter"], e["dir"]), [0, 0])
        c[0] += 1
        c[1] += int(bool(e["beat_baseline"]))
    rows = [{"parameter": p, "direction": d, "tried": c[0], "beat_baseline": c[1]} for (p, d), c in counts.items()]
    return sorted(rows, key=lambda r: (-r["tried"], r["parameter"], r["direction"]))[:OLDER_PARAMS]


def _bounded(memory: Memory) -> Memory:
    """Drop the oldest detailed entries (then condensed rows) until the memory fits."""
    recent, older = list(memory.recent), list(memory.older)
    while len(json.dumps(Memory(recent, older).as_prompt() or {}, separators=(",", ":"))) > MAX_MEMORY_CHARS:
        if recent:
            recent.pop(max(range(len(recent)), key=lambda i: (recent[i]["months_before"], i)))
        elif older:
            older.pop()
        else:
            break
    return Memory(recent, older, memory.sources, memory.tests_seen)
