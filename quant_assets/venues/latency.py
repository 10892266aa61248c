"""A profile's order latency in the form each engine takes (nanoseconds throughout).

* hftbacktest: a constant latency is ``constant_order_latency(entry, response)``; a lognormal
  distribution or a recorded file becomes an ``IntpOrderLatency`` table (rows of ``req_ts``,
  ``exch_ts``, ``resp_ts``: an order sent at ``req_ts`` reaches the matching engine at
  ``exch_ts`` and its response is back at ``resp_ts``; hftbacktest interpolates between rows).
  A distribution is drawn once per :data:`SAMPLE_NS` of the slice, seeded by the profile's
  seed and the slice's first timestamp, so a slice always draws the same latencies.
* NautilusTrader 1.221: ``LatencyModel`` holds one constant per command type and no response
  latency (events reach the strategy at once), so it gets the entry latency (for a
  distribution or a file: the median entry latency) and the manifest says so.

A recorded file (``.npz`` as hftbacktest writes it, ``.parquet`` or ``.csv`` with the columns
``req_ts, exch_ts, resp_ts``) must have ``req_ts`` sorted ascending and ``req_ts ≤ exch_ts ≤
resp_ts`` on every row; errors name the file, the setting and the first bad row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from quant_assets.venues.profile import VenueProfile

NS_PER_MS = 1_000_000
#: One latency draw per 10 s of a slice: 268k rows (8.6 MB) for a 31-day month.
SAMPLE_NS = 10 * 1_000_000_000
#: hftbacktest's ``OrderLatencyRow`` (``#[repr(C)]``: req_ts, exch_ts, resp_ts, padding; i64).
LATENCY_DTYPE = np.dtype([("req_ts", "i8"), ("exch_ts", "i8"), ("resp_ts", "i8"), ("_padding", "i8")])


def read_recorded(path: Path, where: str) -> np.ndarray:
    """The rows of a recorded latency file as :data:`LATENCY_DTYPE`, checked (see the module
    docstring); a ValueError naming ``where`` and the file otherwise."""
    if not path.exists():
        raise ValueError(f"{where}: {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                arr = z["data"] if "data" in z.files else z[z.files[0]]
            cols = {c: np.asarray(arr[c], dtype=np.int64) for c in ("req_ts", "exch_ts", "resp_ts")}
        elif path.suffix in (".parquet", ".csv"):
            import polars as pl

            df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
            cols = {c: df[c].cast(pl.Int64).to_numpy() for c in ("req_ts", "exch_ts", "resp_ts")}
        else:
            raise ValueError(f"unknown format {path.suffix!r}: expected .npz, .parquet or .csv")
    except (KeyError, ValueError, OSError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("unknown format"):
            raise ValueError(f"{where}: {path}: {exc}") from None
        raise ValueError(f"{where}: {path}: expected columns req_ts, exch_ts, resp_ts (ns): {exc}") from None
    req, exch, resp = cols["req_ts"], cols["exch_ts"], cols["resp_ts"]
    if len(req) == 0:
        raise ValueError(f"{where}: {path} has no rows")
    unsorted = np.flatnonzero(np.diff(req) < 0)
    if unsorted.size:
        i = int(unsorted[0]) + 1
        raise ValueError(f"{where}: {path} row {i}: req_ts {req[i]} is before the previous row's {req[i - 1]}: "
                         "timestamps must be sorted ascending")
    bad = np.flatnonzero((exch < req) | (resp < exch))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: {path} row {i}: expected req_ts ≤ exch_ts ≤ resp_ts, got {req[i]}, {exch[i]}, {resp[i]}")
    rows = np.zeros(len(req), dtype=LATENCY_DTYPE)
    rows["req_ts"], rows["exch_ts"], rows["resp_ts"] = req, exch, resp
    return rows


def file_digest(path: Path, rows: np.ndarray) -> str:
    """The recorded rows' digest (what the engine reads), 16 hex characters."""
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


def _scale(rows: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return rows
    out = rows.copy()
    entry = (rows["exch_ts"] - rows["req_ts"]) * factor
    resp = (rows["resp_ts"] - rows["exch_ts"]) * factor
    out["exch_ts"] = rows["req_ts"] + np.round(entry).astype(np.int64)
    out["resp_ts"] = out["exch_ts"] + np.round(resp).astype(np.int64)
    return out


def constant_ns(p: VenueProfile) -> tuple[int, int] | None:
    """(entry, response) in ns for a constant latency, else None."""
    if p.latency_model != "constant":
        return None
    s = p.latency_scale
    return int(round(p.entry_latency_ms * NS_PER_MS * s)), int(round(p.response_latency_ms * NS_PER_MS * s))


def hft_rows(p: VenueProfile, start_ns: int, end_ns: int) -> np.ndarray | None:
    """The ``IntpOrderLatency`` table of the slice [start_ns, end_ns] (None for a constant
    latency): the recorded rows scaled by ``latency_scale``, or the seeded lognormal draws."""
    if p.latency_model == "constant":
        return None
    if p.latency_model == "recorded":
        return _scale(read_recorded(Path(str(p.latency_file)), f"{p.source} latency_file"), p.latency_scale)
    n = max(2, (end_ns - start_ns) // SAMPLE_NS + 2)
    rng = np.random.default_rng([int(p.latency_seed or 0), int(start_ns) % (1 << 63)])
    sigma = float(p.latency_sigma or 0.0)
    s = p.latency_scale
    entry = p.entry_latency_ms * NS_PER_MS * s * np.exp(sigma * rng.standard_normal(n))
    resp = p.response_latency_ms * NS_PER_MS * s * np.exp(sigma * rng.standard_normal(n))
    rows = np.zeros(n, dtype=LATENCY_DTYPE)
    rows["req_ts"] = start_ns + np.arange(n, dtype=np.int64) * SAMPLE_NS
    rows["exch_ts"] = rows["req_ts"] + np.round(entry).astype(np.int64)
    rows["resp_ts"] = rows["exch_ts"] + np.round(resp).astype(np.int64)
    return rows


def nautilus_entry_ns(p: VenueProfile) -> tuple[int, str | None]:
    """(entry latency in ns, a note or None) for NautilusTrader's constant ``LatencyModel``."""
    fixed = constant_ns(p)
    if fixed is not None:
        return fixed[0], None
    if p.latency_model == "lognormal":
        ns = int(round(p.entry_latency_ms * NS_PER_MS * p.latency_scale))
        return ns, f"NautilusTrader takes one constant latency: the lognormal's median {ns / NS_PER_MS:g} ms"
    rows = _scale(read_recorded(Path(str(p.latency_file)), f"{p.source} latency_file"), p.latency_scale)
    ns = int(np.median(rows["exch_ts"] - rows["req_ts"]))
    return ns, f"NautilusTrader takes one constant latency: the recorded file's median entry latency {ns / NS_PER_MS:g} ms"
