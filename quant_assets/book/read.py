"""Reading a published ``book`` partition: what the engines and features take from the lake.

A month's depth is its day files in day order (:meth:`~quant_assets.lake.store.Lake.book_days`),
each starting with a full snapshot, so a reader streams day by day and never holds the month;
its ``level`` (``depth-L2`` or ``depth-L3``) is in the partition's ``manifest.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from quant_assets.book.schema import DEPTH_L2, DEPTH_L3
from quant_assets.lake.store import Lake


@dataclass(frozen=True)
class BookSlice:
    """One month of one instrument's depth: ``level`` (``depth-L2`` | ``depth-L3``) and its
    ``days`` (day files, in order; each replays alone)."""

    level: str
    days: tuple[Path, ...]

    @property
    def is_l3(self) -> bool:
        return self.level == DEPTH_L3


def book_slice(lake: Lake, symbol: str, month: str) -> BookSlice | None:
    """The published depth of (symbol, month), or None when the slice has none."""
    days = lake.book_days(symbol, month)
    if not days:
        return None
    manifest = json.loads((lake.book_month_dir(symbol, month) / "manifest.json").read_text())
    level = manifest.get("level", DEPTH_L2)
    if level not in (DEPTH_L2, DEPTH_L3):
        raise ValueError(f"{lake.book_month_dir(symbol, month) / 'manifest.json'}: level {level!r}, expected {DEPTH_L2} or {DEPTH_L3}")
    return BookSlice(level, tuple(days))
