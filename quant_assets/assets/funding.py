"""``funding``: funding events of a perpetual per month × symbol, built from the landing zone."""

import dagster as dg

from quant_assets.batching import BACKFILL_POLICY, Built, build_slices
from quant_assets.funding.build import APPLIED, FundingError, build_funding
from quant_assets.funding.schema import FUNDING_SCHEMA
from quant_assets.ingest.errors import IngestError
from quant_assets.partitions import month_symbol_partitions, split_key
from resources import LakeResource

#: Bump when the funding logic changes what a partition contains.
FUNDING_CODE_VERSION = "funding-v1"

_DOCS = {
    "ts": "funding time, int64 ns UTC",
    "rate": "fraction per interval; positive: longs pay shorts",
    "interval_h": "hours since the previous funding (null: unknown)",
    "mark_px": "mark price at ts, quote currency (null: the source has none)",
    "source": "landing file, relative to the lake root",
    "src_line": "1-based line in the source file",
}
COLUMN_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn(name, str(dtype), description=_DOCS[name]) for name, dtype in FUNDING_SCHEMA.items()]
)


@dg.asset(
    partitions_def=month_symbol_partitions,
    code_version=FUNDING_CODE_VERSION,
    group_name="ingest",
    kinds={"parquet", "polars"},
    metadata={"dagster/column_schema": COLUMN_SCHEMA},
    backfill_policy=BACKFILL_POLICY,
)
def funding(context: dg.AssetExecutionContext, lake: LakeResource):
    """Funding events of one perpetual-month (``funding/symbol=S/month=M/part-0.parquet``) from the
    funding files in ``landing/<SYMBOL>/``. ``funding_status`` says ``applied``, ``missing`` (a
    perpetual month without funding data: nothing written) or ``not applicable`` (spot). The data
    version is the published file's SHA-256."""
    lk = lake.lake()

    def build_one(pk: str) -> Built:
        month, symbol = split_key(pk)
        try:
            result = build_funding(lk, symbol, month)
        except (FundingError, IngestError) as exc:
            raise dg.Failure(description=f"{symbol} {month}: {exc}; the published funding partition was left unchanged") from exc
        meta: dict[str, object] = {
            "funding_status": result.status,
            "dagster/row_count": result.rows,
            "sources": dg.MetadataValue.json([{"path": r.path, "sha256": r.sha256[:16], "format": r.format} for r in result.sources]),
            "source_fingerprint": result.source_fingerprint,
        }
        if result.status != APPLIED:
            if result.status == "missing":
                context.log.warning(f"{symbol} {month}: perpetual without funding data; settlement will say 'missing'")
            return Built(metadata=meta, data_version=result.status.replace(" ", "-"))
        assert result.path is not None and result.sha256 is not None
        meta.update({
            "intervals_h": dg.MetadataValue.json(result.intervals_h),
            "rate_sum": result.rate_sum,
            "duplicates_dropped": result.duplicates,
            "path": dg.MetadataValue.path(str(result.path)),
            "sha256": result.sha256,
            "dagster/column_schema": COLUMN_SCHEMA,
        })
        return Built(metadata=meta, data_version=result.sha256[:24])

    yield from build_slices(context, build_one)
