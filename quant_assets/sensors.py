"""``landing_sensor``: new or changed files in ``<lake>/landing/<SYMBOL>/`` become ``ticks`` runs
(tick files) or ``funding`` runs (funding files of perpetuals).

Each tick: every landing folder is surveyed (new or changed files are fingerprinted and
probed for the months they touch; unchanged files cost a ``stat``), unseen symbols are
registered as dynamic partitions, and one run is requested per touched partition. The run
key is the partition plus the content hashes of the files that triggered it, so the same
content never triggers a second run. The cursor maps each landing path to the hash already
requested. A partition whose latest ``ticks`` materialization was already built from exactly
these files (its ``source_fingerprint``) is not requested again: a sensor started on a lake
that ``quant-assets sync`` or ``demo`` built re-ingests nothing.

A file still being written is never ingested half-way: a file is only read once a tick finds
it with the same size and mtime as the previous tick did, and at least ``SETTLE_SECONDS``
old (a file untouched for ``QUIET_SECONDS`` is taken at first sight, e.g. on a first start).
"""


import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg

from quant_assets.book.build import expected_fingerprint as expected_book_fingerprint
from quant_assets.funding.build import expected_fingerprint as expected_funding_fingerprint
from quant_assets.ingest.build import expected_fingerprint
from quant_assets.ingest.landing import survey, table_of
from quant_assets.lake.symbols import InvalidSymbolError, normalise_symbol
from quant_assets.partitions import month_partitions, partition_key, symbol_partitions
from quant_assets.settings import sensor_interval_s
from resources import LakeResource

#: A file modified more recently than this may still be being written: wait a tick.
SETTLE_SECONDS = 2.0
#: A file untouched this long is complete even if no earlier tick saw it.
QUIET_SECONDS = 30.0


class _Readiness:
    """Decides which landing files are complete: unchanged (size, mtime) since the previous
    tick, or quiet for ``QUIET_SECONDS``. Remembers what it saw of the files it held back."""

    def __init__(self, previous: dict[str, list[int]]) -> None:
        self.previous = previous
        self.pending: dict[str, list[int]] = {}
        self.now_ns = time.time_ns()

    def __call__(self, path: Path, st: os.stat_result) -> bool:
        seen = [st.st_size, st.st_mtime_ns]
        age_s = (self.now_ns - st.st_mtime_ns) / 1e9
        if age_s >= QUIET_SECONDS or (age_s >= SETTLE_SECONDS and self.previous.get(str(path)) == seen):
            return True
        self.pending[str(path)] = seen
        return False


def _read_cursor(cursor: str | None) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(landing path -> content hash already requested, held-back path -> [size, mtime_ns])."""
    data = json.loads(cursor) if cursor else {}
    if "requested" not in data:  # the cursor of earlier versions: the requested map alone
        return data, {}
    return data["requested"], data.get("pending", {})

ingest_job = dg.define_asset_job(
    "ingest_ticks",
    selection=dg.AssetSelection.assets("ticks", "funding", "book"),
    partitions_def=None,
    description="Build ticks (and funding) partitions from the landing zone; each run request names its asset.",
)

#: Per table fed from the landing zone: its asset and the fingerprint of its current sources.
_TABLES = {"ticks": (dg.AssetKey("ticks"), expected_fingerprint),
           "funding": (dg.AssetKey("funding"), expected_funding_fingerprint),
           "book": (dg.AssetKey("book"), expected_book_fingerprint)}


def _selection(table: str) -> list[dg.AssetKey]:
    """What a run for a landing file of ``table`` builds: a funding file its funding; a tick or
    depth file the slice's ticks, funding and book (every slice has all three, "not applicable"
    or "none" where it has no such file: a depth file's top may be the ticks' quotes, and the
    ticks compare their quotes with the book)."""
    if table == "funding":
        return [_TABLES["funding"][0]]
    return [_TABLES["ticks"][0], _TABLES["funding"][0], _TABLES["book"][0]]


@dg.sensor(
    job=ingest_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_s(),
    description="Requests ticks (or funding) runs for exactly the partitions that new or changed landing files touch.",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    lk = lake.lake()
    seen, previous = _read_cursor(context.cursor)
    ready = _Readiness(previous)
    # An object store shows an object only once it is whole: no file there is half-written.
    check = None if lk.remote is not None else ready
    valid_months = set(month_partitions.get_partition_keys())
    known_symbols = set(context.instance.get_dynamic_partitions(symbol_partitions.name))
    new_symbols: list[str] = []
    triggers: dict[tuple[str, str, str], list[str]] = {}  # (table, month, symbol) -> file hashes
    for folder in lk.landing_symbols():
        try:
            symbol = normalise_symbol(folder)
        except InvalidSymbolError as exc:
            context.log.warning(f"landing/{folder}: {exc}; folder ignored")
            continue
        if symbol != folder:
            context.log.warning(f"landing/{folder}: symbol folders must be upper case ({symbol!r}); folder ignored")
            continue
        # One survey for both tables (one manifest read): each record is routed by its format.
        for rec in survey(lk, symbol, ready=check, table=None):
            if seen.get(rec.path) == rec.sha256:
                continue
            seen[rec.path] = rec.sha256
            if rec.status == "failed":
                context.log.error(f"{rec.path}: {rec.error}")
                continue
            for month in rec.months:
                if month not in valid_months:
                    context.log.warning(f"{rec.path}: month {month} is outside the month partitions; skipped")
                    continue
                triggers.setdefault((table_of(rec), month, symbol), []).append(rec.sha256)
            if rec.months and symbol not in known_symbols and symbol not in new_symbols:
                new_symbols.append(symbol)
    for (table, month, symbol) in list(triggers):
        asset_key, fingerprint = _TABLES[table]
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[str(partition_key(month, symbol))]), limit=1
        ).records
        built = records[0].asset_materialization.metadata.get("source_fingerprint") if records else None
        if built is not None and built.value == fingerprint(lk, symbol, month):
            del triggers[(table, month, symbol)]
    run_requests = [
        dg.RunRequest(
            run_key=f"{table}:{month}|{symbol}:" + hashlib.sha256(",".join(sorted(hashes)).encode()).hexdigest()[:16],
            partition_key=partition_key(month, symbol),
            # A ticks run builds the slice's funding partition too (cheap: "not applicable" for
            # spot, the month's rates for a perpetual), so backtests never wait on it.
            asset_selection=_selection(table),
            tags={"quant_assets/trigger": "landing"},
        )
        for (table, month, symbol), hashes in sorted(triggers.items())
    ]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[symbol_partitions.build_add_request(new_symbols)] if new_symbols else [],
        cursor=json.dumps({"requested": seen, "pending": ready.pending}, sort_keys=True),
    )
