"""``ticks``: canonical ticks per month × symbol, built from the landing zone."""


from pathlib import Path

import dagster as dg

from quant_assets.batching import BACKFILL_POLICY, Built, SliceFailed, build_slices
from quant_assets.engines.fidelity import fidelity_of
from quant_assets.ingest.build import build_partition
from quant_assets.lake import instruments as inst_mod
from quant_assets.lake import versions
from quant_assets.lake.manifest import FileRecord
from quant_assets.lake.quality import RULES, RuleOutcome, evaluate
from quant_assets.lake.schema import TICK_DOCS, TICK_SCHEMA
from quant_assets.partitions import month_symbol_partitions, split_key
from resources import LakeResource

#: Bump when the ingest logic changes what a partition contains.
TICKS_CODE_VERSION = "ticks-v1"

COLUMN_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn(name, str(dtype), description=TICK_DOCS[name]) for name, dtype in TICK_SCHEMA.items()]
)


QUOTES_MATCH_BOOK = "quotes_match_book"
QUOTES_MATCH_BOOK_DOC = ("when the month has both a quote file and depth: the share of quotes whose bid and ask agree with "
                         "the book's top within a tick is at least 0.9 (quant_assets.book.l1); quotes derived from the book pass")


def _book_check(lk, symbol: str, month: str, result) -> dg.AssetCheckResult:
    """The non-blocking comparison of the month's quotes with its book's top (or why none)."""
    from quant_assets.book.l1 import AGREEMENT_MIN, quotes_vs_book

    fb = result.quotes_from_book
    if fb is not None and fb.get("rows"):
        return dg.AssetCheckResult(check_name=QUOTES_MATCH_BOOK, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"quotes_from_book": True, "rows": fb["rows"]})
    if not result.book_sources or not result.quotes:
        why = fb["reason"] if fb is not None else "no depth file touches the month"
        return dg.AssetCheckResult(check_name=QUOTES_MATCH_BOOK, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"not applicable: {why}", metadata={"not_applicable": True})
    inst = inst_mod.resolve(lk, symbol, month=month)
    cmp = quotes_vs_book(lk, symbol, month, result.path, inst.tick_size if inst is not None else None)
    share = cmp["share"]
    return dg.AssetCheckResult(
        check_name=QUOTES_MATCH_BOOK, passed=share is None or share >= AGREEMENT_MIN, severity=dg.AssetCheckSeverity.WARN,
        description=cmp.get("reason"),
        metadata={k: (v if v is not None else "null") for k, v in cmp.items()})


CALENDAR_COMPLETE = "calendar_complete"
CALENDAR_COMPLETE_DOC = ("every day the instrument's calendar expects, up to now minus a day, has rows of each kind the month "
                         "has (quant_assets.ingest.coverage: missing days, kinds that stopped updating, fewer days than the "
                         "calendar); fails with severity WARN, or ERROR with QUANT_GAPS=block, which keeps the month's "
                         "backtests and everything downstream from running on the hole")


def _calendar_check(lk, symbol: str, month: str, result) -> dg.AssetCheckResult:
    """The month's calendar coverage, persisted beside the partition (``coverage.json``, what
    ``quant-assets status`` lists) and judged: WARN or, with ``QUANT_GAPS=block``, ERROR."""
    from quant_assets.ingest import coverage
    from quant_assets.settings import gaps_mode

    inst = inst_mod.resolve(lk, symbol, month=month)
    calendar = coverage.calendar_of(inst.kind if inst else "spot", inst.venue if inst else None,
                                    [r.format for r in [*result.sources, *result.book_sources]])
    cov = coverage.of_partition(lk, symbol, month, calendar, sha256=result.sha256)
    coverage.write(lk, cov)
    severity = dg.AssetCheckSeverity.ERROR if gaps_mode() == "block" else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=CALENDAR_COMPLETE, passed=not cov.gaps, severity=severity, description=cov.summary(),
        metadata={
            "calendar": f"{cov.calendar}: {cov.rule}",
            "judged_through": cov.judged_through or "null (no day of the month is over yet)",
            "in_progress": cov.in_progress,
            "missing_days": dg.MetadataValue.json({k: coverage.ranges(v) for k, v in cov.missing.items()}),
            "stopped": dg.MetadataValue.json(cov.stopped),
            "empty_days": coverage.ranges(cov.empty_days),
            "days_covered": dg.MetadataValue.json({k: coverage.ranges(v["days"]) for k, v in cov.kinds.items()}),
            "book_days": dg.MetadataValue.json({k: coverage.ranges(v) for k, v in cov.book.items()} if cov.book else {}),
            "coverage": dg.MetadataValue.path(str(lk.ticks_coverage_path(symbol, month))),
        })


class BlockingCheckFailed(Exception):
    """A candidate partition broke a blocking rule; the published partition is unchanged."""

    def __init__(self, outcomes: list[RuleOutcome]) -> None:
        self.outcomes = outcomes
        bad = [f"{o.name} ({o.offending_rows} rows)" for o in outcomes if not o.passed]
        super().__init__(f"blocking checks failed: {', '.join(bad)}")


def _check_results(outcomes: list[RuleOutcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=o.name, passed=o.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"offending_rows": o.offending_rows},
        )
        for o in outcomes
    ]


@dg.asset(
    partitions_def=month_symbol_partitions,
    code_version=TICKS_CODE_VERSION,
    group_name="ingest",
    kinds={"parquet", "polars"},
    check_specs=[dg.AssetCheckSpec(name, asset="ticks", blocking=True, description=d) for name, d in RULES.items()]
    + [dg.AssetCheckSpec(QUOTES_MATCH_BOOK, asset="ticks", blocking=False, description=QUOTES_MATCH_BOOK_DOC),
       # blocking, but a WARN failure (the default) holds nothing back: only ERROR (QUANT_GAPS=block) does
       dg.AssetCheckSpec(CALENDAR_COMPLETE, asset="ticks", blocking=True, description=CALENDAR_COMPLETE_DOC)],
    metadata={"dagster/column_schema": COLUMN_SCHEMA},
    backfill_policy=BACKFILL_POLICY,
)
def ticks(context: dg.AssetExecutionContext, lake: LakeResource):
    """Canonical L1 quotes and trades of one symbol-month (``ticks/symbol=S/month=M/part-0.parquet``),
    merged from every landing file that touches the month, sorted by (ts_recv, seq), deduplicated.
    Times are int64 ns UTC; prices in quote currency. The data version is the file's SHA-256."""
    lk = lake.lake()

    def build_one(pk: str) -> Built:
        month, symbol = split_key(pk)
        outcomes: list[RuleOutcome] = []
        inferred: list[inst_mod.Instrument] = []

        def check(candidate: Path, sources: list[FileRecord]) -> None:
            new, resolved = inst_mod.for_candidate(lk, symbol, month, candidate, [r.format for r in sources])
            inferred.append(new)
            outcomes.extend(evaluate(candidate, resolved))
            if not all(o.passed for o in outcomes):
                raise BlockingCheckFailed(outcomes)

        try:
            result = build_partition(lk, symbol, month, check=check)
        except BlockingCheckFailed as exc:
            # the candidate is quarantined by build_partition; the published partition stays
            raise SliceFailed(
                f"{symbol} {month}: {exc}; the published partition was left unchanged",
                metadata={o.name: o.offending_rows for o in exc.outcomes}, checks=_check_results(exc.outcomes),
            ) from exc
        # The month's own record (dated): later months never change what this month trades on.
        inst_mod.record_inferred(lk, inferred[-1], month)
        # Kept beside its predecessors (lake.versions): `quant-assets asof` reads it once replaced.
        kept = versions.record(lk, "ticks", (symbol, month), result.sha256[:24], known={result.path.name: result.sha256})
        return Built(
            metadata={
                "dagster/row_count": result.rows,
                "quotes": result.quotes,
                "trades": result.trades,
                # What the slice can support: quotes+trades, quotes-only or trades-only (engines.fidelity).
                "fidelity": fidelity_of(result.quotes, result.trades),
                "rejected_rows": result.rejected,
                "sort_slices": result.sort_slices,
                "first_event": dg.MetadataValue.timestamp(result.ts_min / 1e9),
                "last_event": dg.MetadataValue.timestamp(result.ts_max / 1e9),
                "path": dg.MetadataValue.path(str(result.path)),
                "sources": dg.MetadataValue.json([{"path": r.path, "sha256": r.sha256[:16], "format": r.format} for r in result.sources]),
                "failed_files": dg.MetadataValue.json([{"path": r.path, "error": r.error} for r in result.failed]),
                "source_fingerprint": result.source_fingerprint,
                "sha256": result.sha256,
                # quotes derived from the month's book top (no quote file): rows, book hash, gap spans
                "quotes_from_book": dg.MetadataValue.json(result.quotes_from_book or {}),
                "book_sources": dg.MetadataValue.json([{"path": r.path, "sha256": r.sha256[:16]} for r in result.book_sources]),
                "dagster/column_schema": COLUMN_SCHEMA,
                "version_files": dg.MetadataValue.json(kept.describe()),
            },
            data_version=result.sha256[:24],
            checks=[*_check_results(outcomes), _book_check(lk, symbol, month, result),
                    _calendar_check(lk, symbol, month, result)],
        )

    yield from build_slices(context, build_one)
