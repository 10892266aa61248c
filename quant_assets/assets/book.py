"""``book``: order-book depth per month × symbol (``book/symbol=S/month=M/day=DD/part-0.parquet``),
built from the depth files of the landing zone by :func:`quant_assets.book.build.build_book`."""

import dagster as dg

from quant_assets.batching import BACKFILL_POLICY, Built, SliceFailed, build_slices
from quant_assets.book.build import BOOK_VERSION, CHECKS, NONE, BookBlocked, BookBuild, BookInputError, Outcome, build_book
from quant_assets.book.schema import BOOK_DOCS, BOOK_SCHEMA
from quant_assets.ingest.errors import IngestError
from quant_assets.lake import versions
from quant_assets.partitions import month_symbol_partitions, split_key
from resources import LakeResource

BOOK_CODE_VERSION = f"book-v{BOOK_VERSION}"

COLUMN_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn(name, str(dtype), description=BOOK_DOCS[name]) for name, dtype in BOOK_SCHEMA.items()]
)


def check_results(outcomes: list[Outcome], gaps: list[dict] | None = None) -> list[dg.AssetCheckResult]:
    """One result per check of the build; a recovered gap is a WARN (its spans in the metadata)."""
    out = []
    for o in outcomes:
        meta: dict[str, object] = {"count": o.count, "detail": o.detail or "ok"}
        if o.name == "book_gaps" and gaps:
            meta["gaps"] = dg.MetadataValue.json(gaps)
        out.append(dg.AssetCheckResult(
            check_name=o.name, passed=o.passed, metadata=meta,
            severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
        ))
    return out


def _metadata(b: BookBuild) -> dict[str, object]:
    return {
        "dagster/row_count": b.rows,
        "level": b.level,
        "fidelity": b.level,
        "deltas": b.deltas,
        "snapshot_rows": b.snapshot_rows,
        "messages": b.messages,
        "days": len(b.days),
        "gaps": dg.MetadataValue.json(b.gaps),
        "quarantined_rows": b.quarantined,
        "max_levels": dg.MetadataValue.json({"bid": b.max_levels[0], "ask": b.max_levels[1]}),
        "build_status": b.status,
        "path": dg.MetadataValue.path(str(b.path)),
        "sources": dg.MetadataValue.json([{"path": r.path, "sha256": r.sha256[:16], "format": r.format} for r in b.sources]),
        "warmup": dg.MetadataValue.json([{"path": r.path, "sha256": r.sha256[:16]} for r in b.warmup]),
        "failed_files": dg.MetadataValue.json([{"path": r.path, "error": r.error} for r in b.failed]),
        "source_fingerprint": b.source_fingerprint,
        "sha256": b.sha256,
        "dagster/column_schema": COLUMN_SCHEMA,
    }


@dg.asset(
    partitions_def=month_symbol_partitions,
    code_version=BOOK_CODE_VERSION,
    group_name="ingest",
    kinds={"parquet", "polars"},
    check_specs=[dg.AssetCheckSpec(name, asset="book", blocking=blocking, description=d)
                 for name, (blocking, d) in CHECKS.items()],
    metadata={"dagster/column_schema": COLUMN_SCHEMA},
    backfill_policy=BACKFILL_POLICY,
)
def book(context: dg.AssetExecutionContext, lake: LakeResource):
    """Order-book depth of one symbol-month, by UTC day, each day file starting with a full snapshot
    (L2 levels or L3 orders; ``level`` in the metadata and the partition's ``manifest.json``).
    Gaps reset the book at the next snapshot; their spans are in ``gaps`` and their rows in
    ``quarantine/symbol=S/book-month=M.parquet``. A month without depth files materialises as
    ``none`` (data version ``none``: L1 only). The data version is the hash of the day files' SHA-256s."""
    lk = lake.lake()

    def build_one(pk: str) -> Built:
        month, symbol = split_key(pk)
        try:
            result = build_book(lk, symbol, month)
        except BookBlocked as exc:
            raise SliceFailed(
                f"{exc}; the published book partition was left unchanged",
                metadata={o.name: o.detail for o in exc.outcomes if not o.passed},
                checks=check_results(exc.outcomes),
            ) from exc
        except (BookInputError, IngestError) as exc:
            raise dg.Failure(description=f"{symbol} {month}: {exc}; the published book partition was left unchanged") from exc
        if result.status == NONE:
            # Every slice has a book partition, as every slice has a funding one: an L1-only month
            # records "none" (a constant data version), so its backtests can depend on the book
            # (a depth file landing later is new data for them) and never wait for it.
            why = "no depth file touches the month: L1 only"
            return Built(metadata={
                "build_status": NONE, "level": "none", "fidelity": "L1 only", "dagster/row_count": 0,
                "source_fingerprint": result.source_fingerprint,
                "failed_files": dg.MetadataValue.json([{"path": r.path, "error": r.error} for r in result.failed])},
                data_version=NONE,
                checks=[dg.AssetCheckResult(check_name=name, passed=True, description=f"not applicable: {why}",
                                            metadata={"not_applicable": True}) for name in CHECKS])
        assert result.sha256 is not None
        # Kept beside its predecessors (lake.versions): `quant-assets asof` reads it once replaced.
        kept = versions.record(lk, "book", (symbol, month), result.sha256[:24])
        return Built(metadata={**_metadata(result), "version_files": dg.MetadataValue.json(kept.describe())},
                     data_version=result.sha256[:24],
                     checks=check_results(result.outcomes, result.gaps))

    yield from build_slices(context, build_one)
