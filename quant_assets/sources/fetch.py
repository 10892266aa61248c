"""``fetch()``: fill the landing zone from the configured sources, verified, versioned, recorded.

For each source: plan every entry (no request), drop what the ledger says has landed, then per
file: read its expected checksum (Binance: the ``.CHECKSUM``, a few bytes), and when the
source still publishes the bytes already landed record ``unchanged`` without downloading;
otherwise download to ``landing/<SYMBOL>/.partial/<name>.part`` (resumable), verify, and rename
into ``landing/<SYMBOL>/<name>``, or beside an older version as ``<name~vN>`` when different
bytes of that logical file are already there (:mod:`quant_assets.ingest.versions`; landing
files are never overwritten, moved or deleted). Every outcome is a ledger row
(:mod:`quant_assets.sources.ledger`).

Cost follows the work, not the lake: a period whose bytes have landed is skipped without a
request, unless it ended less than ``recheck_days`` ago (Binance re-uploads recent files) or
``recheck=True`` (then each landed file's ``.CHECKSUM`` is read again: one small request per
file, never the zip). The skip is a Polars join of the plan with the ledger's state.

404s: the newest periods of a dataset are ``not_published`` (try again later); a 404 for a
period while a later period of the same dataset has landed is ``missing``: a gap at the source,
reported in :attr:`FetchReport.gaps` and skipped afterwards unless re-checked. A monthly file
not out yet falls back to the month's daily files where the source has a ``fallback``.

Concurrency: one process at a time per (source, landing folder) (lake lock
``fetch-<source>-<SYMBOL>``, not waited for: a busy folder is reported ``busy`` and left to the
other process); landing renames hold ``landing-<SYMBOL>``. Downloads run one at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
from filelock import Timeout

from quant_assets.ingest.versions import split_version, versioned_name
from quant_assets.lake import remote as _remote
from quant_assets.lake.store import Lake, file_sha256
from quant_assets.lake.symbols import normalise_symbol
from quant_assets.sources import ledger, make_source
from quant_assets.sources.config import SourcesConfig
from quant_assets.sources.http import DownloadFailed, HttpClient, NotPublished, discard_partial, iter_lines, redact
from quant_assets.sources.model import RemoteFile, Source, VerifyError

#: ``progress(done, total, rf)`` after each file (``total`` grows when a fallback adds files).
Progress = Callable[[int, int, RemoteFile], None]
PARTIAL_DIR = ".partial"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass
class FetchReport:
    """What a fetch did: ``counts`` per ledger status plus ``skipped`` (already landed, no
    request) and ``busy`` (another process held the folder); ``landed`` the new landing paths;
    ``rows`` every ledger row written."""

    planned: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    landed: list[Path] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n

    @property
    def gaps(self) -> list[dict[str, Any]]:
        """Rows of periods missing at the source (a later period exists)."""
        return [r for r in self.rows if r["status"] == "missing"]

    @property
    def problems(self) -> list[dict[str, Any]]:
        """Rows that need a person: ``refused`` and ``failed``."""
        return [r for r in self.rows if r["status"] in ("refused", "failed")]

    #: Source-level errors (a source whose availability could not be read): ``source: reason``.
    errors: list[str] = field(default_factory=list)

    def problem_lines(self, symbol: str | None = None, month: str | None = None) -> list[str]:
        """Every refused or failed file (of ``symbol`` × ``month`` when given), and the
        source-level errors, one line each, for people."""
        rows = self.of_slice(symbol, month) if symbol else self.rows
        lines = [f"{r['status']}: {r['source']} {r['dataset']} {r['symbol']} {r['period']} ({r['name']}): {r['reason']}"
                 for r in rows if r["status"] in ("refused", "failed")]
        return lines + list(self.errors)

    def gap_lines(self) -> list[str]:
        return [f"gap at the source: {r['source']} {r['dataset']} {r['symbol']} {r['period']}: {r['reason']}"
                for r in self.gaps]

    def of_slice(self, symbol: str, month: str) -> list[dict[str, Any]]:
        """The rows of one landing folder × partition month."""
        return [r for r in self.rows if r["symbol"] == symbol and r["period"][:7] == month]

    def slices(self) -> set[tuple[str, str]]:
        """``(month, symbol)`` of every row (the slices this fetch touched)."""
        return {(r["period"][:7], r["symbol"]) for r in self.rows}

    def by_dataset(self) -> dict[tuple[str, str], dict[str, int]]:
        """Counts per ledger status, per (source, dataset)."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for r in self.rows:
            c = out.setdefault((r["source"], r["dataset"]), {})
            c[r["status"]] = c.get(r["status"], 0) + 1
        return out

    def metadata(self, symbol: str, month: str) -> dict[str, Any]:
        """What a slice's fetch did, as plain values (counts per status, the landed files with
        their version and SHA-256, the source's gaps, the problems)."""
        rows = self.of_slice(symbol, month)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return {
            **{k: counts.get(k, 0) for k in ledger.STATUSES},
            "landed_files": [{"path": r["landing"], "version": r["version"], "sha256": (r["sha256"] or "")[:16],
                              "url": r["url"]} for r in rows if r["status"] == "landed"],
            "gaps": [f"{r['source']} {r['dataset']} {r['period']}" for r in rows if r["status"] == "missing"],
            "not_published": [f"{r['source']} {r['dataset']} {r['period']}" for r in rows if r["status"] == "not_published"],
            "problems": self.problem_lines(symbol, month),
        }


# ---- periods ----------------------------------------------------------------------------
def period_start(period: str) -> date:
    return date.fromisoformat(period if len(period) == 10 else period + "-01")


def period_end(period: str) -> date:
    """First day after ``period`` (a day or a month)."""
    d = period_start(period)
    if len(period) == 10:
        return d + timedelta(days=1)
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


# ---- planning ---------------------------------------------------------------------------
def plan(lake: Lake, src: Source, symbols: list[str] | None = None, months: list[str] | None = None,
         now: datetime | None = None, recheck: bool = False,
         state: pl.DataFrame | None = None) -> tuple[list[RemoteFile], list[RemoteFile], int]:
    """``(to_fetch, to_recheck, skipped)`` for one source: every file its entries plan, less
    those the ledger says have landed (re-checked when recent or ``recheck``), less months whose
    every day landed as daily files, less ``missing`` periods (unless re-checked)."""
    now = now or datetime.now(timezone.utc)
    wanted_syms = {normalise_symbol(s) for s in symbols} if symbols else None
    wanted_months = set(months) if months else None
    seen: dict[tuple[str, str, str, str], RemoteFile] = {}
    for entry in src.config.entries:
        for rf in src.plan(entry, now):
            if wanted_syms is not None and rf.symbol not in wanted_syms:
                continue
            if wanted_months is not None and not wanted_months.intersection(rf.months):
                continue
            seen.setdefault(rf.key, rf)
    files = list(seen.values())
    if not files:
        return [], [], 0
    st = ledger.state(lake, [src.name]) if state is None else state
    planned = pl.DataFrame(
        {"i": range(len(files)), "source": [f.source for f in files], "dataset": [f.dataset for f in files],
         "symbol": [f.symbol for f in files], "period": [f.period for f in files]},
        schema={"i": pl.Int64, "source": pl.String, "dataset": pl.String, "symbol": pl.String, "period": pl.String},
    )
    covered = ledger.months_covered_by_days(st).with_columns(covered=pl.lit(True))
    window_start = (now - timedelta(days=src.config.recheck_days)).date()
    period = pl.col("period")
    start = pl.when(period.str.len_chars() == 7).then(period + "-01").otherwise(period).str.to_date()
    end = pl.when(period.str.len_chars() == 7).then(start.dt.offset_by("1mo")).otherwise(start.dt.offset_by("1d"))
    recent = end > pl.lit(window_start)
    decided = (
        planned.join(st.select(*ledger.KEY, "status", "landed_sha256"), on=ledger.KEY, how="left")
        .with_columns(month=period.str.slice(0, 7))
        .join(covered, on=["source", "dataset", "symbol", "month"], how="left")
        .with_columns(
            action=pl.when(pl.col("landed_sha256").is_not_null())
            .then(pl.when(pl.lit(recheck) | recent).then(pl.lit("recheck")).otherwise(pl.lit("skip")))
            .when((period.str.len_chars() == 7) & pl.col("covered").fill_null(False))
            .then(pl.lit("skip"))
            .when((pl.col("status") == "missing") & ~(pl.lit(recheck) | recent))
            .then(pl.lit("skip"))
            .otherwise(pl.lit("fetch"))
        )
        .select("i", "action")
    )
    # Only the files left to ask about come back to Python (a few per symbol on a daily run).
    pick = lambda a: [files[i] for i in decided.filter(pl.col("action") == a).sort("i")["i"].to_list()]  # noqa: E731
    todo, again = pick("fetch"), pick("recheck")
    return todo, again, len(files) - len(todo) - len(again)


# ---- one file ---------------------------------------------------------------------------
def default_resolve(rf: RemoteFile, client: HttpClient) -> RemoteFile:
    """``rf`` with its ``sha256`` read from ``rf.checksum_url`` (``sha256sum`` format:
    ``<64 hex>  <name>``); a malformed checksum file is a :class:`VerifyError`."""
    if rf.sha256 or not rf.checksum_url:
        return rf
    body = client.get_bytes(rf.checksum_url)
    lines = list(iter_lines(body))
    parts = lines[0].split() if lines else []
    if not parts or not _SHA256.match(parts[0]):
        raise VerifyError(f"{rf.checksum_url}: expected '<sha256 hex>  <file name>', got {body[:120]!r}")
    if len(parts) > 1 and parts[-1].lstrip("*") != rf.url.rsplit("/", 1)[-1]:
        raise VerifyError(f"{rf.checksum_url}: names {parts[-1]!r}, expected {rf.url.rsplit('/', 1)[-1]!r}")
    return replace(rf, sha256=parts[0].lower())


def _versions(folder: Path, logical: str) -> dict[int, Path]:
    """Landed versions of ``logical`` in ``folder``: version -> path."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    head = logical.partition(".")[0]
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith(head) and e.is_file():
                name, v = split_version(e.name)
                if name == logical:
                    out[v] = folder / e.name
    return out


class _Fetcher:
    def __init__(self, lake: Lake, src: Source, client: HttpClient, report: FetchReport,
                 landed: dict[tuple[str, str, str, str], dict[str, Any]]) -> None:
        self.lake, self.src, self.client, self.report = lake, src, client, report
        self.landed = landed  # key -> the ledger's landed_* of that key

    def record(self, rf: RemoteFile, status: str, **kw: Any) -> dict[str, Any]:
        r = ledger.row(rf, status, **kw)
        ledger.append(self.lake, [r])
        self.report.rows.append(r)
        self.report.add(status)
        return r

    def _newest(self, rf: RemoteFile) -> tuple[int, Path, str] | None:
        """(version, path, sha256) of the newest landed version of ``rf.name``, or None. The
        sha comes from the ledger when it names that very file, else from hashing it."""
        versions = _versions(self.lake.landing_dir(rf.symbol), rf.name)
        if not versions:
            return None
        v = max(versions)
        path = versions[v]
        known = self.landed.get(rf.key)
        if known and known.get("landed_path") == self.lake.relative(path) and known.get("landed_sha256"):
            return v, path, known["landed_sha256"]
        return v, path, file_sha256(path)

    def one(self, rf: RemoteFile) -> str:
        """Fetch one file; return its status (``not_published`` is decided by the caller)."""
        try:
            resolve = getattr(self.src, "resolve", None) or default_resolve
            rf = resolve(rf, self.client)
        except NotPublished:
            return "404"
        except DownloadFailed as exc:
            self.record(rf, "failed", reason=f"checksum: {exc}")
            return "failed"
        except VerifyError as exc:
            self.record(rf, "refused", reason=self.client._clean(str(exc)))
            return "refused"
        newest = self._newest(rf)
        if newest is not None and rf.sha256 and newest[2] == rf.sha256:
            v, path, sha = newest
            self.record(rf, "unchanged", landing=self.lake.relative(path), version=v, sha256=sha,
                        size=path.stat().st_size, reason=None)
            return "unchanged"
        partial = self.lake.landing_dir(rf.symbol) / PARTIAL_DIR / f"{rf.name}.part"
        try:
            custom = getattr(self.src, "download", None)
            if custom is not None:
                custom(rf, partial, self.client)
            else:
                self.client.download(rf.url, partial)
        except NotPublished:
            return "404"
        except DownloadFailed as exc:
            self.record(rf, "failed", reason=str(exc))  # the partial stays: the next run resumes it
            return "failed"
        try:
            self.src.verify(partial, rf)
        except VerifyError as exc:
            discard_partial(partial)
            self.record(rf, "refused", reason=self.client._clean(str(exc)))
            return "refused"
        return self.land(rf, partial)

    def land(self, rf: RemoteFile, partial: Path) -> str:
        sha = rf.sha256 or file_sha256(partial)
        size = partial.stat().st_size
        folder = self.lake.landing_dir(rf.symbol)
        with self.lake.lock(f"landing-{rf.symbol}"):
            newest = self._newest(rf)
            if newest is not None and newest[2] == sha:
                discard_partial(partial)
                v, path, _ = newest
                self.record(rf, "unchanged", landing=self.lake.relative(path), version=v, sha256=sha, size=size)
                return "unchanged"
            v = 1 if newest is None else newest[0] + 1
            while True:
                final = folder / versioned_name(rf.name, v)
                try:
                    os.link(partial, final)  # never overwrites: fails if the name exists
                    break
                except FileExistsError:
                    v += 1
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            discard_partial(partial)
        _remote.published(final)
        self.report.landed.append(final)
        self.record(rf, "landed", landing=self.lake.relative(final), version=v, sha256=sha, size=size)
        return "landed"


def _client_default(src: Source) -> HttpClient:
    return HttpClient(src.config, auth_headers=src.auth_headers)


def fetch(lake: Lake, config: SourcesConfig, source: str | list[str] | None = None, symbols: list[str] | None = None,
          months: list[str] | None = None, now: datetime | None = None, progress: Progress | None = None,
          recheck: bool = False, client_for: Callable[[Source], HttpClient] | None = None,
          names: list[str] | None = None) -> FetchReport:
    """Fetch what ``config`` declares (one ``source``, several, or all) into ``lake``'s landing zone.

    ``names``: only the files of these logical landing names (what a schedule found due).
    A source whose plan fails (its availability API unreachable, a key refused) is reported in
    :attr:`FetchReport.errors` and the other sources go on.

    ``symbols`` (landing folders) and ``months`` (``YYYY-MM``) narrow the plan; ``now`` (UTC,
    default the clock) is what "published by now" is judged against; ``recheck`` re-reads the
    checksum of every landed file (re-uploads) instead of only recent ones. ``client_for``
    builds the HTTP client of a source (tests inject one that records its waits). Returns a
    :class:`FetchReport`; never raises for one file's failure (it is a ledger row)."""
    now = now or datetime.now(timezone.utc)
    report = FetchReport()
    wanted = None if names is None else set(names)
    chosen = [source] if isinstance(source, str) else list(source) if source else sorted(config.sources)
    for name in chosen:
        st = ledger.state(lake, [name])
        try:
            src = make_source(config.get(name))
            todo, again, skipped = plan(lake, src, symbols, months, now, recheck, st)
        except Exception as exc:  # noqa: BLE001 (any source error; vendor clients raise their own types)
            # one source's availability API down (or a key refused) must not stop the others
            keys = [os.environ.get(v, "") for v in ("TARDIS_API_KEY", "DATABENTO_API_KEY")]
            report.errors.append(redact(f"{name}: could not plan the fetch: {type(exc).__name__}: {exc}", keys))
            continue
        if wanted is not None:
            todo, again = [f for f in todo if f.name in wanted], [f for f in again if f.name in wanted]
        report.add("skipped", skipped) if skipped else None
        work = sorted(todo + again, key=lambda f: (f.symbol, f.dataset, f.period))
        report.planned += len(work) + skipped
        if not work:
            continue
        landed = _landed_of(st, work)
        client = (client_for or _client_default)(src)
        fetcher = _Fetcher(lake, src, client, report, landed)  # type: ignore[arg-type]
        done, total = 0, len(work)
        by_symbol: dict[str, list[RemoteFile]] = {}
        for rf in work:
            by_symbol.setdefault(rf.symbol, []).append(rf)
        not_found: list[RemoteFile] = []
        for symbol, files in by_symbol.items():
            lock = lake.lock(f"fetch-{name}-{symbol}", timeout_s=0)
            try:
                lock.acquire()
            except Timeout:
                report.add("busy", len(files))
                done += len(files)
                continue
            try:
                queue = list(files)
                while queue:
                    rf = queue.pop(0)
                    status = fetcher.one(rf)
                    if status == "404":
                        extra = getattr(src, "fallback", lambda *_: [])(rf, now)
                        fetcher.landed.update(_landed_of(st, extra))
                        extra = [f for f in extra if f.key not in fetcher.landed]
                        if extra:
                            fetcher.record(rf, "not_published", reason=f"404; fetching its {len(extra)} daily files instead")
                            queue[:0] = extra
                            total += len(extra)
                        else:
                            not_found.append(rf)
                    done += 1
                    if progress is not None:
                        progress(done, total, rf)
            finally:
                lock.release()
        _classify_404s(fetcher, not_found, st, report)
    return report


def _landed_of(st: pl.DataFrame, files: list[RemoteFile]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The ledger's landed path and SHA-256 of those of ``files`` that have landed (a join: the
    state is never walked row by row in Python)."""
    if not files:
        return {}
    keys = pl.DataFrame([f.key for f in files], schema=ledger.KEY, orient="row")
    hit = (st.filter(pl.col("landed_sha256").is_not_null()).join(keys, on=ledger.KEY, how="semi")
           .select(*ledger.KEY, "landed_path", "landed_sha256"))
    return {tuple(r[:4]): {"landed_path": r[4], "landed_sha256": r[5]} for r in hit.iter_rows()}


def _classify_404s(fetcher: _Fetcher, not_found: list[RemoteFile], st: pl.DataFrame, report: FetchReport) -> None:
    """``missing`` when a later period of the same (source, dataset, symbol) has landed (in the
    ledger before this run, or in it), else ``not_published``."""
    if not not_found:
        return
    latest: dict[tuple[str, str, str], date] = {}
    period = pl.col("period")
    starts = (
        st.filter(pl.col("landed_sha256").is_not_null())
        .with_columns(start=pl.when(period.str.len_chars() == 7).then(period + "-01").otherwise(period).str.to_date())
        .group_by("source", "dataset", "symbol").agg(pl.col("start").max())
    )
    for s, d, y, start in starts.iter_rows():
        latest[(s, d, y)] = start
    for r in report.rows:
        if r["status"] in ("landed", "unchanged"):
            k = (r["source"], r["dataset"], r["symbol"])
            latest[k] = max(latest.get(k, date.min), period_start(r["period"]))
    for rf in not_found:
        later = latest.get((rf.source, rf.dataset, rf.symbol))
        if later is not None and later >= period_end(rf.period):
            fetcher.record(rf, "missing", reason=f"404 while a later period ({later.isoformat()}) of "
                           f"{rf.dataset} has landed: a gap at the source (or before the listing)")
        else:
            fetcher.record(rf, "not_published", reason="404: not published yet")


def due(lake: Lake, config: SourcesConfig, source: str, now: datetime,
        symbols: list[str] | None = None) -> list[RemoteFile]:
    """The files of ``source`` a fetch at ``now`` would ask about: published by then (by the
    source's own availability) and not landed yet, plus landed ones still inside their
    ``recheck_days`` window (re-uploads). Empty when ``source`` has no entry. The schedules'
    question; like :func:`plan` it downloads nothing (vendor sources read their availability)."""
    if source not in config.sources or not config.sources[source].entries:
        return []
    todo, again, _ = plan(lake, make_source(config.get(source)), symbols, None, now)
    return todo + again
