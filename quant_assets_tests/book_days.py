"""Hand-scripted order-book day files in the canonical ``book`` schema, for engine tests: a known
book gives known fills. Each day file starts with a snapshot (a ``clear`` row, then one ``add`` per
level, all ``is_snapshot``, stamped with the day's first delta's time) and every message ends on an
``F_LAST`` row, as :mod:`quant_assets.book.schema` requires of a published partition."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from quant_assets.book.read import BookSlice
from quant_assets.book.schema import ASK, BID, BOOK_SCHEMA, BOTH, DEPTH_L2, F_LAST

Level = tuple[float, float]  # (price, size)


def _rows(rows: list[dict]) -> pl.DataFrame:
    if rows:
        rows[-1]["flags"] |= F_LAST
    return pl.DataFrame(rows, schema=BOOK_SCHEMA)


def _row(ts: int, seq: int, side: int, price: float | None, size: float, action: str, snapshot: bool = False,
         order_id: int | None = None) -> dict:
    return {"ts_event": ts, "ts_recv": ts, "seq": seq, "side": side, "price": price, "size": size, "action": action,
            "is_snapshot": snapshot, "order_id": order_id, "flags": 0}


def snapshot(ts: int, seq: int, bids: list[Level], asks: list[Level], order_ids: list[int] | None = None) -> pl.DataFrame:
    """The full book at ``ts`` (ns) as one message: clear, then the bids and asks (best first).
    ``order_ids``: one per level, bids then asks, for an L3 book (each level then one order)."""
    rows = [_row(ts, seq, BOTH, None, 0.0, "clear", True)]
    levels = [(BID, p, s) for p, s in bids] + [(ASK, p, s) for p, s in asks]
    for i, (side, p, s) in enumerate(levels):
        rows.append(_row(ts, seq, side, p, s, "add", True, order_ids[i] if order_ids else None))
    return _rows(rows)


def message(ts: int, seq: int, changes: list[tuple[int, float, float, str]]) -> pl.DataFrame:
    """One diff message at ``ts`` (ns): (side, price, size, action) rows in order."""
    return _rows([_row(ts, seq, side, p, s, a) for side, p, s, a in changes])


def move(ts: int, seq: int, old: tuple[list[Level], list[Level]], new: tuple[list[Level], list[Level]]) -> pl.DataFrame:
    """One message replacing the book ``old`` (bids, asks) by ``new``: a delete per old level
    absent from ``new``, then an add or update per new level."""
    changes = []
    for side, before, after in ((BID, old[0], new[0]), (ASK, old[1], new[1])):
        prices = {p for p, _ in after}
        changes += [(side, p, 0.0, "delete") for p, _ in before if p not in prices]
    for side, before, after in ((BID, old[0], new[0]), (ASK, old[1], new[1])):
        known = {p for p, _ in before}
        changes += [(side, p, s, "update" if p in known else "add") for p, s in after]
    return message(ts, seq, changes)


def write_book(month_dir: Path, days: dict[str, list[pl.DataFrame]], level: str = DEPTH_L2) -> BookSlice:
    """Write day files ``day=DD/part-0.parquet`` under ``month_dir`` (e.g. ``lake.book_month_dir``)
    and its ``manifest.json`` (``level``, ``files``); returns the slice the engines read."""
    paths = []
    for day, frames in sorted(days.items()):
        path = month_dir / f"day={day}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.concat(frames).write_parquet(path)
        paths.append(path)
    (month_dir / "manifest.json").write_text(json.dumps({"level": level, "files": [str(p.relative_to(month_dir)) for p in paths]}))
    return BookSlice(level, tuple(paths))
