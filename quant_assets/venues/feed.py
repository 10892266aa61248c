"""Feed latency of a ticks slice: ``ts_recv − ts_event`` (ns) where the data carries both.

Both engines already run on the receive clock (NautilusTrader ``ts_init = ts_recv``,
hftbacktest ``local_ts = ts_recv``), so where the data has a receive time the strategy sees
each event that much after the exchange made it. Files with one timestamp (Binance public
archives: ``ts_recv = ts_event``) have no feed latency to measure: it is declared ``unknown``,
never a silent zero.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def measure(path: Path) -> dict[str, object]:
    """``{"status": "measured" | "unknown", "median_ms", "p99_ms", "share_with_recv_time",
    "negative"}`` of the slice at ``path``: quantiles over the rows whose receive time differs
    from the exchange time; ``negative`` counts rows received before they happened (clock
    skew between the venue and the recorder)."""
    d = (pl.col("ts_recv") - pl.col("ts_event"))
    row = (
        pl.scan_parquet(path)
        .select(rows=pl.len(), known=(d != 0).sum(), negative=(d < 0).sum(),
                median=d.filter(d != 0).median(), p99=d.filter(d != 0).quantile(0.99))
        .collect()
        .row(0, named=True)
    )
    if not row["known"]:
        return {"status": "unknown", "median_ms": None, "p99_ms": None, "share_with_recv_time": 0.0, "negative": 0,
                "reason": "the data has no receive time (ts_recv = ts_event): feed latency is not modelled"}
    return {
        "status": "measured",
        "median_ms": round(float(row["median"]) / 1e6, 4),
        "p99_ms": round(float(row["p99"]) / 1e6, 4),
        "share_with_recv_time": round(int(row["known"]) / max(int(row["rows"]), 1), 6),
        "negative": int(row["negative"]),
    }
