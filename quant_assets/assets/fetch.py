"""``fetch``: raw files of one month × symbol, downloaded from the configured sources into
``landing/<SYMBOL>/`` (``quant_assets.sources``), verified before they land.

The asset is the Dagster face of the fetch: a slice's materialization lists what its run
landed, what was already there, what the source has not published yet and the days the
source is missing (gaps). Its data version hashes the bytes landed for the slice (every
source, every dataset: the fetch ledger's last landed SHA-256 of each file), so a re-uploaded
file (a new version beside the old one) is a new data version and an unchanged source is not.
What is built from the files is the landing sensor's work, as for a file dropped by hand: the
``ticks`` of a month name their landing files in their metadata, and the fetch ledger
(``<lake>/fetch/<source>.jsonl``) names each file's URL.
"""


import hashlib
from datetime import datetime, timezone

import dagster as dg

from quant_assets.batching import BACKFILL_POLICY, Built, SliceFailed, build_slices
from quant_assets.partitions import month_symbol_partitions, split_key
from resources import LakeResource

#: Bump when the fetch logic changes what lands for a slice.
FETCH_CODE_VERSION = "fetch-v1"


class FetchConfig(dg.Config):
    """What a run fetches of its slices. Empty lists: everything configured (``sources.toml``)
    that is due and not landed yet."""

    sources: list[str] = []
    #: Logical landing names (``BTCUSDT-trades-2024-03-08.zip``): only these files (the
    #: schedule names the new files it requests).
    names: list[str] = []
    #: Re-check files already landed for a re-upload (a new checksum lands as a new version).
    recheck: bool = False
    #: Plan as of this UTC time (ISO 8601; the schedule's tick), not the clock: the names a
    #: schedule requested are the files due then (a month's daily files, not the monthly file
    #: the same month may have by the time a delayed run starts).
    as_of: str | None = None


def slice_data_version(state, symbol: str, month: str, rows: list[dict] = ()) -> str:
    """A hash of the bytes landed for ``symbol`` × ``month`` by every source: the last landed
    SHA-256 of each (source, dataset, period) of the month, from the fetch ledger's ``state``
    (read once per run, :func:`quant_assets.sources.ledger.state`) updated with this run's
    ledger ``rows``. ``none`` when nothing has landed."""
    import polars as pl

    mine = state.filter((pl.col("symbol") == symbol) & pl.col("period").str.starts_with(month)
                        & pl.col("landed_sha256").is_not_null())
    landed = {(a, b, c): d for a, b, c, d in mine.select("source", "dataset", "period", "landed_sha256").iter_rows()}
    for r in rows:
        if r["symbol"] == symbol and r["period"][:7] == month and r["status"] in ("landed", "unchanged"):
            landed[(r["source"], r["dataset"], r["period"])] = r["sha256"]
    if not landed:
        return "none"
    text = "\n".join("|".join((*k, v)) for k, v in sorted(landed.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def fetch_metadata(report, symbol: str, month: str) -> dict[str, object]:
    """A slice's fetch report (``FetchReport.metadata``) as Dagster metadata: lists as JSON.
    The asset and ``quant-assets fetch`` (which records its fetches as this asset's
    materializations) show the same fields."""
    return {k: (dg.MetadataValue.json(v) if isinstance(v, list) else v) for k, v in report.metadata(symbol, month).items()}


@dg.asset(
    partitions_def=month_symbol_partitions,
    code_version=FETCH_CODE_VERSION,
    group_name="sources",
    kinds={"http"},
    backfill_policy=BACKFILL_POLICY,
)
def fetch(context: dg.AssetExecutionContext, config: FetchConfig, lake: LakeResource):
    """Downloads one symbol-month's raw files from the sources in ``sources.toml`` (Binance
    public data, Tardis, Databento) into ``landing/<SYMBOL>/``: to a hidden temporary file,
    verified (SHA-256 ``.CHECKSUM``, size and gzip integrity, Databento's file hash), then
    renamed in; a re-uploaded file lands beside the old one as ``~v2``. Fails the slice when a
    file was refused or a request failed (what did land stays)."""
    from quant_assets.sources import config as src_config
    from quant_assets.sources import fetch as src_fetch
    from quant_assets.sources import ledger

    lk = lake.lake()
    cfg = src_config.load()
    # The ledger is read once per run, not once per slice: at 400 symbols x 84 months it holds
    # ~10^5 rows, and a batched backfill runs thousands of slices.
    state = ledger.state(lk)
    as_of = datetime.fromisoformat(config.as_of).astimezone(timezone.utc) if config.as_of else None

    def build_one(pk: str) -> Built:
        month, symbol = split_key(pk)
        report = src_fetch.fetch(lk, cfg, source=config.sources or None, symbols=[symbol], months=[month],
                                 names=config.names or None, recheck=config.recheck, now=as_of)
        metadata = fetch_metadata(report, symbol, month)
        bad = report.problem_lines(symbol, month)
        if bad:
            raise SliceFailed(f"{symbol} {month}: " + "; ".join(bad), metadata=metadata)
        return Built(metadata=metadata, data_version=slice_data_version(state, symbol, month, report.rows))

    yield from build_slices(context, build_one)
