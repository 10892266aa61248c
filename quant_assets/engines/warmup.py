"""Warm-up: the end of the previous month, fed to a strategy before its month with trading off.

Every month is its own run (it starts flat with fixed cash), but indicators need history: an
EMA of 2,400 one-minute bars would otherwise spend the first 40 hours of each month undefined
and days more still weighing its seed. A strategy declares its warm-up
(:class:`~quant_assets.strategies.spec.Warmup`: a count of bars or quote updates, from its
parameters); a backtest of month M then reads the ticks of M−1 received from
:attr:`WarmupFeed.from_ts` on (the last ``count`` quote bars, or the last ``count`` quotes) and
feeds them first. Only the indicators see them: no order, no sample, no account check before
M's first tick. Where M−1 has no ticks the strategy starts cold and waits the same count of
M's own inputs; where M−1 holds fewer, it uses what there is and waits for the rest. The
manifest of every backtest says which (:meth:`WarmupFeed.describe`).

The tail is found from the row groups' ``ts_recv`` statistics, reading only the ``ts_recv`` and
``kind`` columns of the last row groups (files are sorted by ``ts_recv``), so the cost follows
the warm-up's length, not the month's size. Plain Python, no engine import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from quant_assets.strategies.spec import NO_WARMUP, Warmup


def previous_month(month: str) -> str:
    d = date.fromisoformat(f"{month}-01")
    return f"{d.year - (d.month == 1)}-{(d.month - 2) % 12 + 1:02d}"


def bar_bucket(ts: np.ndarray, bar_ns: int) -> np.ndarray:
    """The start of the left-open bar (start, start + bar_ns] holding each ``ts`` (ns), as
    :mod:`quant_assets.research.bars` and NautilusTrader's time bars bucket them."""
    return ((ts - 1) // bar_ns) * bar_ns


@dataclass(frozen=True)
class WarmupFeed:
    """What a backtest feeds before its month. ``status``: ``none`` (nothing declared),
    ``warm`` (the whole count found in ``month``), ``partial`` (fewer: ``inputs`` of them),
    ``cold`` (no previous month). ``from_ts``: ticks of ``path`` with ``ts_recv >= from_ts``
    (ns) are fed."""

    declared: Warmup
    status: str
    month: str | None = None
    path: Path | None = None
    from_ts: int | None = None
    inputs: int = 0
    reason: str = ""

    @property
    def feeds(self) -> bool:
        return self.path is not None and self.from_ts is not None and self.inputs > 0

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the warm-up."""
        return {"declared": self.declared.describe(), "unit": self.declared.unit, "count": self.declared.count,
                "status": self.status, "from_month": self.month, "from_ts": self.from_ts, "inputs": self.inputs,
                "reason": self.reason}


def _tail_from(path: Path, warmup: Warmup) -> tuple[int | None, int]:
    """(from_ts, inputs found) of the last ``warmup.count`` inputs in the ticks file ``path``."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    need = warmup.count
    seen_ts: list[np.ndarray] = []
    found = 0
    for i in range(pf.num_row_groups - 1, -1, -1):
        t = pf.read_row_group(i, columns=["ts_recv", "kind"])
        kind = t.column("kind").to_numpy(zero_copy_only=False)
        ts = t.column("ts_recv").to_numpy()[kind.astype(str) == "quote"]
        if not len(ts):
            continue
        seen_ts.insert(0, ts)
        allq = np.concatenate(seen_ts)
        found = len(allq) if warmup.unit == "quotes" else len(np.unique(bar_bucket(allq, warmup.bar_ns)))
        # One input more than needed proves the earliest needed one is whole (a bar can span
        # two row groups).
        if found > need:
            break
    if not seen_ts:
        return None, 0
    allq = np.concatenate(seen_ts)
    if warmup.unit == "quotes":
        take = min(need, len(allq))
        return int(allq[-take]), take
    buckets = np.unique(bar_bucket(allq, warmup.bar_ns))
    take = min(need, len(buckets))
    return int(buckets[-take]) + 1, take  # ticks after the bucket's start: its bar, whole


def plan_warmup(ticks_path_of, month: str, warmup: Warmup) -> WarmupFeed:
    """The warm-up feed of ``month`` for ``warmup``; ``ticks_path_of(month) -> Path`` locates a
    month's ticks partition (the lake's layout)."""
    if warmup is NO_WARMUP or warmup.count == 0:
        return WarmupFeed(warmup, "none", reason="the strategy declares no warm-up")
    prev = previous_month(month)
    path = ticks_path_of(prev)
    if not Path(path).exists():
        return WarmupFeed(warmup, "cold", month=prev, reason=(
            f"no ticks for {prev}: cold start, the strategy trades once it has seen {warmup.describe()} of {month}"))
    from_ts, found = _tail_from(Path(path), warmup)
    if not found:
        return WarmupFeed(warmup, "cold", month=prev, reason=f"{prev} has no quotes: cold start")
    if found < warmup.count:
        return WarmupFeed(warmup, "partial", prev, Path(path), from_ts, found, reason=(
            f"{prev} holds {found:,} of the {warmup.describe()} declared: the rest is waited for in {month}"))
    return WarmupFeed(warmup, "warm", prev, Path(path), from_ts, found, reason=f"warmed on the end of {prev}")
