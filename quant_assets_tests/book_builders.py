"""Depth landing files built in code: scripted canonical book Parquet (the ``canonical_book_parquet``
format), message by message, with Binance-style continuity fields when asked."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quant_assets.book.schema import F_LAST, STAGED_SCHEMA

#: 2024-01-01T00:00:00Z in ns.
JAN_NS = 1_704_067_200 * 1_000_000_000
DAY_NS = 86_400 * 1_000_000_000
MS = 1_000_000

_COLUMNS = [c for c in STAGED_SCHEMA if c not in ("src_line", "reason")]


class Script:
    """A depth stream written message by message. Times advance by ``step`` ns per message unless
    given; ``seq`` is the message's sequence (Binance ``u``); ``first``/``prev`` its ``U``/``pu``."""

    def __init__(self, t0: int = JAN_NS, step: int = MS) -> None:
        self.t = t0
        self.step = step
        self.rows: list[dict] = []

    def _stamp(self, t: int | None) -> int:
        if t is not None:
            self.t = t
        else:
            self.t += self.step
        return self.t

    def snapshot(self, bids: dict[float, float], asks: dict[float, float], seq: int, t: int | None = None,
                 orders: list[tuple[int, int, float, float]] | None = None) -> "Script":
        """A full snapshot (clear, then one add per level, or per order ``(id, side, price, size)``)."""
        ts = self._stamp(t)
        body = ([(1, p, q, None) for p, q in bids.items()] + [(-1, p, q, None) for p, q in asks.items()]
                if orders is None else [(s, p, q, oid) for oid, s, p, q in orders])
        self.rows.append(self._row(ts, seq, 0, 0.0, 0.0, "clear", True, None, 0, None, None))
        for k, (side, px, q, oid) in enumerate(body):
            self.rows.append(self._row(ts, seq, side, px, q, "add", True, oid, F_LAST if k == len(body) - 1 else 0, None, None))
        if not body:
            self.rows[-1]["flags"] = F_LAST
        return self

    def update(self, changes: list[tuple], seq: int, first: int | None = None, prev: int | None = None,
               t: int | None = None) -> "Script":
        """One message of level changes ``(side, price, size)`` (L2: absolute size, 0 deletes) or
        order rows ``(action, side, price, size, order_id)`` (L3)."""
        ts = self._stamp(t)
        for k, ch in enumerate(changes):
            if len(ch) == 3:
                side, px, q = ch
                action, oid = ("delete" if q == 0 else "update"), None
            else:
                action, side, px, q, oid = ch
            self.rows.append(self._row(ts, seq, side, px, q, action, False, oid,
                                       F_LAST if k == len(changes) - 1 else 0, first, prev))
        return self

    @staticmethod
    def _row(ts, seq, side, px, q, action, snap, oid, flags, first, prev) -> dict:
        return {"ts_event": ts, "ts_recv": ts, "seq": seq, "side": side, "price": px, "size": q, "action": action,
                "is_snapshot": snap, "order_id": oid, "flags": flags, "seq_first": first, "seq_prev": prev}

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema={c: STAGED_SCHEMA[c] for c in _COLUMNS})


def land(lake, symbol: str, frame: pl.DataFrame, name: str = "depth.parquet") -> Path:
    """Write ``frame`` as a canonical book Parquet into ``landing/<symbol>/`` and return its path."""
    path = lake.landing_dir(symbol) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.with_columns(pl.col("action").cast(pl.String)).write_parquet(path)
    return path
