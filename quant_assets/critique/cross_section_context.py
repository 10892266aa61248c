"""What the critic is told of the cross-sectional factor analysis of its strategy, this month.

For the critique of (strategy, symbol, month), the published
``factors_xs/strategy=<strategy>/universe=<u>/month=<month>/report.json``
(:mod:`quant_assets.research.cross_section`) of each universe holding the symbol
(:meth:`~quant_assets.portfolio.universes.Universes.universes_of`): its ``summary`` (mean IC,
its t-statistic, top-minus-bottom quantile spread in bps, turnover, per horizon), cut down to
what the prompt may carry:

* **point in time**: the same month only, never a later one (the analysis itself reads only the
  month's bars and the one before, for warm-up);
* **published only**: a slice counts when its ``manifest.json`` (written last) exists and names
  ``report.json`` with the hash the file has now; otherwise it is skipped, and the skip with its
  reason is recorded (:attr:`CrossSectionContext.skipped`), never shown;
* **no other instrument's name, no calendar**: a universe is shown by a label (``U1``, ``U2``,
  in name order: a universe name such as ``btc_basis`` would say what the instrument is) with
  its member counts, never its members; the summary's ``strategy``, ``universe``, ``month``
  and member list are dropped, and member names in a null reason become ``<member>``;
* **bounded**: at most :data:`MAX_UNIVERSES` universes and :data:`MAX_CONTEXT_CHARS` characters
  serialised (the full unit glossary gives way to a one-line one, then the rank autocorrelation,
  then the last universes).

Cost: one ``universes.toml`` stat (parsed once per edit), and per universe holding the symbol, up
to :data:`MAX_UNIVERSES` of them, one manifest and one small ``report.json`` read and hashed:
independent of the size of the lake.

Plain Python: no Dagster.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from quant_assets.lake.store import Lake, file_sha256
from quant_assets.portfolio import universes as universes_mod
from quant_assets.portfolio.universes import Universes

#: Universes shown at most (in name order, published ones only).
MAX_UNIVERSES = 3
#: Upper bound of the serialised context (characters): about 400 tokens.
MAX_CONTEXT_CHARS = 1_500
#: Summary fields never shown: names (the universe, its members), the calendar month, and what
#: the prompt already says (the strategy) or gives once for all universes (the units).
_DROPPED = ("strategy", "universe", "month", "members_used", "units")
#: The glossary kept when the summary's own does not fit.
SHORT_UNITS = ("ic_*: Spearman rank correlation across members, -1..1; ic_t_*: its t-statistic; *_bps: basis points; "
               "turnover_*, rank_autocorrelation_*: 0..1 / -1..1; suffix: the horizon's time span")
MEANING = ("this month only: the strategy's signal for every member of each universe holding this instrument, ranked "
           "across the members at each sample time and judged on their forward returns (alphalens); universes are "
           "labelled, members not named; reason: why numbers are null")


def _num(x: Any) -> Any:
    """3 significant digits (fewer tokens); None for missing or non-finite; other values kept."""
    if x is None or isinstance(x, (bool, str)):
        return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return int(v) if v.is_integer() and abs(v) < 1e15 else float(f"{v:.3g}")


@dataclass(frozen=True)
class CrossSectionContext:
    """The context of one critique: ``shown`` (per universe, what the prompt carries), the
    glossary, the signal's description, and lineage: ``sources`` (lake-relative path and
    sha256 of each ``report.json`` shown, with the universe's name and its label in the prompt)
    and ``skipped`` (universe and why it is not shown)."""

    shown: list[dict[str, Any]] = field(default_factory=list)
    units: Any = None
    signal: str | None = None
    sources: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.shown

    def as_prompt(self) -> dict[str, Any] | None:
        """The prompt's ``cross_section`` value, or None (no key at all) when nothing is shown."""
        if self.empty:
            return None
        return {"meaning": MEANING, **({"signal": self.signal} if self.signal else {}), "units": self.units,
                "universes": self.shown}

    def record(self) -> dict[str, Any] | None:
        """What ``critique.json`` records (None when the symbol is in no universe)."""
        if not self.shown and not self.skipped:
            return None
        return {"shown": len(self.shown), "sources": self.sources, "skipped": self.skipped}


def _published_report(lake: Lake, strategy: str, universe: str, month: str) -> tuple[dict[str, Any] | None, str, str]:
    """(report, lake-relative path, sha256) of a published slice, or (None, path, why not)."""
    d = lake.factor_xs_dir(strategy, universe, month)
    path = d / "report.json"
    rel = lake.relative(path)
    if not (d / "manifest.json").exists():
        return None, rel, "not published (no manifest.json)"
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        expected = manifest["files"]["report.json"]
    except (ValueError, KeyError, TypeError) as exc:
        return None, rel, f"manifest.json unreadable or without files.report.json ({exc.__class__.__name__})"
    if not path.exists():
        return None, rel, "report.json missing"
    actual = file_sha256(path)
    if actual != expected:
        return None, rel, f"report.json's sha256 {actual[:12]}... differs from the manifest's {str(expected)[:12]}..."
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return None, rel, "report.json is not valid JSON"
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict):
        return None, rel, "report.json has no summary"
    return report, rel, actual


def _shown(report: dict[str, Any], label: str) -> dict[str, Any]:
    """One universe's summary as the prompt shows it (module docstring)."""
    s = report["summary"]
    members = [m for m in (report.get("members") or []) if isinstance(m, str)]
    used = s.get("members_used")
    out: dict[str, Any] = {"universe": label, "members": len(members) if members else None,
                           "members_used": len(used) if isinstance(used, list) else _num(used)}
    reason = s.get("reason")
    if isinstance(reason, str):
        for m in sorted(members, key=len, reverse=True):  # longest first: BTCUSDT-PERP before BTCUSDT
            reason = re.sub(rf"(?<![A-Za-z0-9]){re.escape(m)}(?![A-Za-z0-9])", "<member>", reason, flags=re.I)
    for k, v in s.items():
        if k not in _DROPPED and k not in out:
            out[k] = reason if k == "reason" else _num(v)
    return out


def _size(ctx: CrossSectionContext) -> int:
    return len(json.dumps(ctx.as_prompt() or {}, separators=(",", ":")))


def cross_section_context(lake: Lake, strategy: str, symbol: str, month: str,
                          universes: Universes | None = None) -> CrossSectionContext:
    """The cross-sectional context of the critique of (``strategy``, ``symbol``, ``month``)
    (module docstring). ``universes``: default :func:`quant_assets.portfolio.universes.load`
    (``$QUANT_UNIVERSES`` or the repository's ``universes.toml``)."""
    held = (universes or universes_mod.load()).universes_of(symbol)
    shown: list[dict[str, Any]] = []
    sources: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    units: Any = None
    signal: str | None = None
    for name in held:
        if len(shown) == MAX_UNIVERSES:
            skipped.append({"universe": name, "reason": f"not read: at most {MAX_UNIVERSES} universes are shown"})
            continue
        report, rel, digest_or_why = _published_report(lake, strategy, name, month)
        if report is None:
            skipped.append({"universe": name, "path": rel, "reason": digest_or_why})
            continue
        label = f"U{len(shown) + 1}"
        shown.append(_shown(report, label))
        sources.append({"universe": name, "label": label, "path": rel, "sha256": digest_or_why})
        units = units or report["summary"].get("units")
        signal = signal or (report.get("signal_description") if isinstance(report.get("signal_description"), str) else None)
    ctx = CrossSectionContext(shown, units or SHORT_UNITS, signal, sources, skipped)
    return _bounded(ctx)


def _bounded(ctx: CrossSectionContext) -> CrossSectionContext:
    """Shrink until the serialised context fits :data:`MAX_CONTEXT_CHARS`: the one-line glossary
    instead of the summary's, then no rank autocorrelation, then no signal description, then
    the last universes (recorded as skipped)."""
    shown, sources, skipped = [dict(u) for u in ctx.shown], list(ctx.sources), list(ctx.skipped)
    steps = [
        lambda c: CrossSectionContext(c.shown, SHORT_UNITS, c.signal, c.sources, c.skipped),
        lambda c: CrossSectionContext([{k: v for k, v in u.items() if not k.startswith("rank_autocorrelation_")}
                                       for u in c.shown], c.units, c.signal, c.sources, c.skipped),
        lambda c: CrossSectionContext(c.shown, c.units, None, c.sources, c.skipped),
    ]
    ctx = CrossSectionContext(shown, ctx.units, ctx.signal, sources, skipped)
    for step in steps:
        if _size(ctx) <= MAX_CONTEXT_CHARS:
            return ctx
        ctx = step(ctx)
    while _size(ctx) > MAX_CONTEXT_CHARS and ctx.shown:
        dropped = ctx.sources[len(ctx.shown) - 1]
        ctx = CrossSectionContext(ctx.shown[:-1], ctx.units, ctx.signal, ctx.sources[:-1],
                                  ctx.skipped + [{"universe": dropped["universe"], "path": dropped["path"],
                                                  "reason": f"left out: the context is bounded to {MAX_CONTEXT_CHARS} characters"}])
    return ctx


__all__ = ["MAX_CONTEXT_CHARS", "MAX_UNIVERSES", "CrossSectionContext", "cross_section_context"]
