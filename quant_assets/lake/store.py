"""Every path and every write of the lake, in one place.

Layout (hive-style, readable by DuckDB, Polars and pyarrow without our code)::

    <root>/landing/<SYMBOL>/<file>                       raw drops, never modified
    <root>/ticks/symbol=S/month=YYYY-MM/part-0.parquet   canonical ticks (coverage.json beside: days per kind, gaps)
    <root>/funding/symbol=S/month=YYYY-MM/part-0.parquet funding events of a perpetual
    <root>/book/symbol=S/month=YYYY-MM/day=DD/part-0.parquet  order-book deltas by UTC day, manifest.json per month
    <root>/staging/symbol=S/src=<hash>.parquet           one parsed+validated source file
    <root>/book_staging/symbol=S/src=<hash>.parquet      one parsed depth file (rows with reasons; .json facts)
    <root>/quarantine/symbol=S/src=<hash>.parquet        its rejected rows, with reasons
    <root>/quarantine/symbol=S/book-src=<hash>.parquet   a depth file's rejected rows; book-month=M.parquet: a book build's
    <root>/manifest/landing.parquet                      one row per landed file
    <root>/fetch/<source>.jsonl                          the fetch ledger: one line per download outcome (append-only)
    <root>/backtests/strategy=X/symbol=S/month=M/        fills.parquet, equity.parquet, manifest.json
    <root>/metrics/strategy=X/symbol=S/month=M/          metrics.parquet, trades.parquet, regimes.parquet, manifest.json
    <root>/reports/strategy=X/symbol=S/                  report.json, equity.parquet, walk_forward.parquet, tearsheet.html
    <root>/trials/trials.parquet                         every parameter set a strategy has been run with
    <root>/bars/interval=I/symbol=S/month=M/part-0.parquet  time bars (OHLCV, spread) from ticks
    <root>/sweeps/strategy=X/symbol=S/month=M/           grid.parquet, summary.json, heatmap.png, manifest.json
    <root>/handoffs/strategy=X/symbol=S/month=M/         handoff.parquet, manifest.json, runs/ (event-driven re-tests)
    <root>/agreements/strategy=X/symbol=S/month=M/       agreement.parquet, vector_fills.parquet, manifest.json, runs/
    <root>/factors/strategy=X/symbol=S/                  report.json, ic.parquet, quantile_returns.parquet, factor.png
    <root>/critiques/strategy=X/symbol=S/month=M/        prompt.json, critique.json, manifest.json
    <root>/critiques/_cache/<model>/<prompt sha>.json    answers by prompt and model (never pay twice)
    <root>/critiques/_spend/day=YYYY-MM-DD/<host>.jsonl  the paid critic's spend ledger (append-only, per UTC day)
    <root>/oos/strategy=X/symbol=S/month=M/              validation.parquet, manifest.json, runs/ (candidate backtests)
    <root>/discoveries/                                  discoveries.parquet (FDR over every tested change), manifest.json, sources.parquet
    <root>/scorecard/                                    scorecard.parquet (each critic against the null critic), scorecard.png, tests.parquet, manifest.json, sources.parquet
    <root>/portfolios/universe=U/set=P/                  daily.parquet, lines.parquet, correlation.parquet, contributions.parquet, portfolio.json, tearsheet.html, manifest.json
    <root>/.scratch, <root>/.locks                       private working space

Writes go to a hidden temporary file in the destination folder, are fsynced, then renamed
over the destination (``os.replace`` is atomic on POSIX): a reader sees the old file or the
new one, never a half-written one, and a crash leaves at most a hidden ``.tmp`` file.

A result made of several files (a backtest slice, a metric set, a critique, a report, an
out-of-sample validation) is
published as a whole folder: it is written into a hidden sibling folder and swapped with the
published one in one ``renameat2(RENAME_EXCHANGE)`` call, so a reader sees all old files or all
new ones, never a mix, even if the writer is killed between two files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from filelock import FileLock

from quant_assets.lake import remote as _remote
from quant_assets.lake.faults import crash_point
from quant_assets.lake.symbols import normalise_symbol

#: Rows per Parquet row group: small enough to stream a month in bounded memory,
#: large enough that the per-group overhead stays negligible.
ROW_GROUP_ROWS = 256 * 1024

#: zstd level for every lake file. Level 1 writes ~25% faster than polars' default (3) on
#: tick data for ~30% more bytes (measured by bench/ingest_bench.py): ingest is write-bound,
#: and reads decompress at the same speed.
ZSTD_LEVEL = 1

TMP_PREFIX = ".tmp-"

#: A universe or portfolio-set name as a path part (quant_assets.portfolio.universes checks the same).
_PORTFOLIO_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def file_sha256(path: Path, chunk_bytes: int = 4 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it over ``final``.

    On any exception the temporary file is removed and ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{final.name}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point(f"replace:{final.name}")
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        _remote.published(final)
    finally:
        if tmp.exists():
            tmp.unlink()


def sweep_debris(folder: Path, name: str, min_age_s: float = 0.0) -> int:
    """Remove the hidden leftovers (``.tmp-<id>-<name>...``) that a killed writer of ``name``
    in ``folder`` left behind; returns how many. Call it holding the lock of ``name``'s writer
    (or with ``min_age_s`` longer than any write takes), so no live write is swept."""
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    for p in folder.glob(f"{TMP_PREFIX}*-{name}*"):
        try:
            if now - p.lstat().st_mtime < min_age_s:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``: Python has no binding).
    False where the platform or filesystem does not support it."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextlib.contextmanager
def atomic_dir(final: Path, kind: str) -> Iterator[Path]:
    """Yield a hidden folder beside ``final`` to write a whole result into; on success it
    replaces ``final`` in one atomic swap (the old folder is then deleted).

    On an exception the new folder is removed and ``final`` is untouched; after a SIGKILL the
    hidden folder remains (invisible to the lake's globs) until the next writer of ``final``
    sweeps it. Callers hold the writer lock of ``final``. Where the swap is unsupported, the
    old folder is renamed away first: a reader may then briefly find no folder, never a mix.
    ``kind`` names the crash points (``publish:<kind>``, ``published:<kind>``).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_debris(final.parent, final.name)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{final.name}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        crash_point(f"publish:{kind}")
        if not final.exists():
            os.rename(tmp, final)
        elif not _exchange(tmp, final):
            old = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{final.name}"
            os.rename(final, old)
            os.rename(tmp, final)
            tmp = old
        _fsync_dir(final.parent)
        crash_point(f"published:{kind}")
        _remote.published(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sink(lf: pl.LazyFrame, path: Path) -> None:
    """Stream ``lf`` into the Parquet file ``path`` with the lake's settings."""
    lf.sink_parquet(path, compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)


def link_or_copy(source: Path, dest: Path) -> None:
    """Put an immutable lake file's bytes at ``dest``: a hard link (no bytes copied) where the
    filesystem allows, else a copy. Safe because lake files are only ever replaced by rename,
    never edited in place."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


@dataclass(frozen=True)
class Lake:
    """A lake rooted at a local folder. Only this class builds lake paths.

    When ``url`` is set the shared lake lives in that object store and ``root`` is this
    machine's working copy of it (see ``quant_assets.lake.remote``)."""

    root: Path
    url: str | None = None

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> "Lake":
        """The lake at a folder, or at an object-store URL (``s3://bucket/prefix``)."""
        if _remote.is_url(str(root)):
            return cls(_remote.cache_dir(str(root)), url=str(root))
        return cls(Path(root).expanduser().resolve())

    @property
    def remote(self):
        """The object store behind this lake (``RemoteLake``), or None for a local lake."""
        if self.url is None:
            return None
        return _remote.RemoteLake(self.url, self.root)

    @property
    def location(self) -> str:
        """Where the lake is, for people: the URL of a remote lake, else the folder."""
        return self.url or str(self.root)

    # ---- landing -------------------------------------------------------------------
    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def landing_dir(self, symbol: str) -> Path:
        return self.landing / normalise_symbol(symbol)

    def landing_symbols(self) -> list[str]:
        """Folder names under ``landing/`` (raw; callers validate them)."""
        if not self.landing.is_dir():
            return []
        return sorted(p.name for p in self.landing.iterdir() if p.is_dir() and not p.name.startswith("."))

    def landing_files(self, symbol: str) -> list[Path]:
        """Regular, non-hidden files in one symbol's landing folder, sorted by name."""
        d = self.landing_dir(symbol)
        if not d.is_dir():
            return []
        # scandir: a directory entry knows whether it is a file without a stat of its own
        # (surveying 33,600 files each planning pass, that stat per file adds up)
        with os.scandir(d) as entries:
            return sorted(d / e.name for e in entries if not e.name.startswith(".") and e.is_file())

    def fetch_ledger_path(self, source: str) -> Path:
        """The append-only fetch ledger of ``source`` (``quant_assets.sources.ledger``)."""
        return self.root / "fetch" / f"{normalise_symbol(source).lower()}.jsonl"

    def relative(self, path: Path) -> str:
        """A lake path as text relative to the root (how the manifest names files)."""
        return path.resolve().relative_to(self.root).as_posix()

    # ---- canonical ticks -----------------------------------------------------------
    @property
    def ticks_root(self) -> Path:
        return self.root / "ticks"

    def ticks_path(self, symbol: str, month: str) -> Path:
        return self.ticks_root / f"symbol={normalise_symbol(symbol)}" / f"month={month}" / "part-0.parquet"

    def ticks_coverage_path(self, symbol: str, month: str) -> Path:
        """The calendar coverage of a ticks partition (``coverage.json`` beside ``part-0.parquet``,
        :mod:`quant_assets.ingest.coverage`): the days with rows per kind and the gaps."""
        return self.ticks_path(symbol, month).parent / "coverage.json"

    # ---- funding (perpetuals) ------------------------------------------------------
    @property
    def funding_root(self) -> Path:
        return self.root / "funding"

    def funding_path(self, symbol: str, month: str) -> Path:
        """The funding events of one perpetual in one month (``quant_assets.funding.schema``)."""
        return self.funding_root / f"symbol={normalise_symbol(symbol)}" / f"month={month}" / "part-0.parquet"

    # ---- order-book depth (quant_assets.book) --------------------------------------
    @property
    def book_root(self) -> Path:
        return self.root / "book"

    def book_month_dir(self, symbol: str, month: str) -> Path:
        """The depth of one instrument in one month: one ``day=DD/part-0.parquet`` per UTC day
        (:mod:`quant_assets.book.schema`), ``manifest.json`` last."""
        return self.book_root / f"symbol={normalise_symbol(symbol)}" / f"month={month}"

    def book_day_path(self, symbol: str, month: str, day: str) -> Path:
        """``day``: ``DD`` (the UTC day of the month, two digits)."""
        return self.book_month_dir(symbol, month) / f"day={day}" / "part-0.parquet"

    def book_days(self, symbol: str, month: str) -> list[Path]:
        """The published day files of a month, in day order (empty when the month has no book)."""
        d = self.book_month_dir(symbol, month)
        if not (d / "manifest.json").exists():
            return []
        return sorted(d.glob("day=*/part-0.parquet"))

    def book_staging_path(self, symbol: str, sha256: str) -> Path:
        """The parsed rows of one depth landing file, every row with its ``reason`` (null: accepted),
        :data:`quant_assets.book.schema.STAGED_SCHEMA`; its facts beside it (``.json``)."""
        return self.root / "book_staging" / f"symbol={normalise_symbol(symbol)}" / f"src={sha256[:20]}.parquet"

    def book_quarantine_path(self, symbol: str, sha256: str) -> Path:
        """Rows of one depth landing file rejected when it was parsed (beside the tick quarantine)."""
        return self.root / "quarantine" / f"symbol={normalise_symbol(symbol)}" / f"book-src={sha256[:20]}.parquet"

    def book_month_quarantine_path(self, symbol: str, month: str) -> Path:
        """Rows the latest build of a book month set aside (gaps, stale snapshots, duplicates, the
        rows of a blocking failure), each with its reason."""
        return self.root / "quarantine" / f"symbol={normalise_symbol(symbol)}" / f"book-month={month}.parquet"

    # ---- staging and quarantine ----------------------------------------------------
    def staging_path(self, symbol: str, sha256: str) -> Path:
        return self.root / "staging" / f"symbol={normalise_symbol(symbol)}" / f"src={sha256[:20]}.parquet"

    def quarantine_path(self, symbol: str, sha256: str) -> Path:
        return self.root / "quarantine" / f"symbol={normalise_symbol(symbol)}" / f"src={sha256[:20]}.parquet"

    def _strategy_dir(self, kind: str, strategy: str, symbol: str, month: str | None = None) -> Path:
        """``<root>/<kind>/strategy=X/symbol=S[/month=M]``: the hive layout of every per-strategy output."""
        d = self.root / kind / f"strategy={strategy}" / f"symbol={normalise_symbol(symbol)}"
        return d / f"month={month}" if month is not None else d

    # ---- backtests -------------------------------------------------------------------
    def backtest_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """``fills.parquet``, ``equity.parquet`` and ``manifest.json`` of one backtest slice;
        the manifest is written last and names the data files' hashes (it is the commit mark)."""
        return self._strategy_dir("backtests", strategy, symbol, month)

    def backtest_multi_dir(self, strategy: str, universe: str, month: str) -> Path:
        """``<root>/backtests_multi/strategy=X/universe=U/month=M``: one multi-instrument backtest
        (every member in one engine; :mod:`quant_assets.engines.multi_runner`), manifest last."""
        return self.root / "backtests_multi" / f"strategy={strategy}" / f"universe={universe}" / f"month={month}"

    def sensitivity_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """The realism sensitivity of one backtest slice (``sensitivity.parquet``, ``manifest.json``
        last): the slice re-run under harsher venue settings."""
        return self._strategy_dir("sensitivity", strategy, symbol, month)

    # ---- metrics, roll-up reports, trials ----------------------------------------------
    def metrics_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """The metric set of one backtest slice; ``manifest.json`` is written last."""
        return self._strategy_dir("metrics", strategy, symbol, month)

    def report_dir(self, strategy: str, symbol: str) -> Path:
        """The roll-up of one strategy on one symbol across its months."""
        return self._strategy_dir("reports", strategy, symbol)

    def critique_dir(self, strategy: str, symbol: str, month: str) -> Path:
        return self._strategy_dir("critiques", strategy, symbol, month)

    def critique_cache_path(self, model: str, digest: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in model)
        return self.root / "critiques" / "_cache" / safe / f"{digest}.json"

    def critique_spend_dir(self, day: str) -> Path:
        """The spend ledger of the paid critic for one UTC day (``YYYY-MM-DD``): one append-only
        JSON-lines file per machine (:mod:`quant_assets.critique.budget`)."""
        return self.root / "critiques" / "_spend" / f"day={day}"

    def oos_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """Out-of-sample validation of the critique of ``month`` (its runs use the next month)."""
        return self._strategy_dir("oos", strategy, symbol, month)

    def bars_path(self, interval: str, symbol: str, month: str) -> Path:
        return self.root / "bars" / f"interval={interval}" / f"symbol={normalise_symbol(symbol)}" / f"month={month}" / "part-0.parquet"

    def sweep_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """A vectorised parameter sweep of one slice of bars; ``manifest.json`` is written last."""
        return self._strategy_dir("sweeps", strategy, symbol, month)

    def handoff_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """The event-driven out-of-sample re-test of the sweep of ``month`` (its runs use M+1)."""
        return self._strategy_dir("handoffs", strategy, symbol, month)

    def factor_dir(self, strategy: str, symbol: str) -> Path:
        """The factor analysis of a strategy's signal on one symbol across all its months."""
        return self._strategy_dir("factors", strategy, symbol)

    def factor_xs_dir(self, strategy: str, universe: str, month: str) -> Path:
        """The cross-sectional factor analysis of a strategy's signal across one universe's
        members in one month (:mod:`quant_assets.research.cross_section`)."""
        return self.root / "factors_xs" / f"strategy={strategy}" / f"universe={universe}" / f"month={month}"

    def agreement_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """The vectorised sweep's best combination against the event-driven engine on the same slice."""
        return self._strategy_dir("agreements", strategy, symbol, month)

    def wf_fold_dir(self, strategy: str, symbol: str, month: str) -> Path:
        """One fold of the walk-forward optimisation: parameters chosen on the sweeps before
        ``month``, run event-driven on ``month``; ``manifest.json`` is written last."""
        return self._strategy_dir("wf_folds", strategy, symbol, month)

    def walkforward_dir(self, strategy: str, symbol: str) -> Path:
        """The walk-forward optimisation of a strategy on one symbol: its folds stitched."""
        return self._strategy_dir("walkforward", strategy, symbol)

    @property
    def trials_path(self) -> Path:
        return self.root / "trials" / "trials.parquet"

    @property
    def discoveries_dir(self) -> Path:
        """The false-discovery ledger over every tested change (one folder, published whole)."""
        return self.root / "discoveries"

    @property
    def scorecard_dir(self) -> Path:
        """The judge's scorecard: each critic against the null critic (one folder, published whole)."""
        return self.root / "scorecard"

    # ---- portfolios (quant_assets.portfolio) --------------------------------------------
    def portfolio_dir(self, universe: str, name: str) -> Path:
        """The roll-up of the strategy set ``name`` over universe ``universe`` (one folder,
        published whole). Both names are universe-style keys (``[a-z0-9][a-z0-9_-]*``)."""
        for what, key in (("universe", universe), ("portfolio set", name)):
            if not _PORTFOLIO_KEY.fullmatch(key):
                raise ValueError(f"invalid {what} name {key!r}: expected 1-64 characters from a-z 0-9 _ - starting with a letter or digit")
        return self.root / "portfolios" / f"universe={universe}" / f"set={name}"

    # ---- manifest, instruments, private space ---------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest" / "landing.parquet"

    @property
    def instruments_path(self) -> Path:
        return self.root / "instruments" / "instruments.parquet"

    def scratch_dir(self) -> Path:
        d = self.root / ".scratch"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def lock(self, name: str, timeout_s: float = 600.0) -> FileLock:
        """An inter-process lock (``fcntl``-based) named ``name`` inside the lake."""
        d = self.root / ".locks"
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / f"{name}.lock"), timeout=timeout_s)

    # ---- writes ----------------------------------------------------------------------
    def write_parquet(self, data: pl.DataFrame | pl.LazyFrame, final: Path) -> None:
        """Write ``data`` to ``final`` atomically (zstd, streaming-sized row groups)."""
        with atomic_target(final) as tmp:
            if isinstance(data, pl.LazyFrame):
                sink(data, tmp)
            else:
                data.write_parquet(tmp, compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)

    def write_json(self, obj: object, final: Path, indent: int | None = 2) -> None:
        """Write ``obj`` as JSON to ``final`` atomically (indented; ``indent=None``: one line, for
        small files read by the thousand)."""
        with atomic_target(final) as tmp:
            tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=str))

    def append_line(self, line: str, final: Path) -> None:
        """Append one line (``line`` without its newline) to the text file ``final``, made durable
        (fsync) before returning. Hold the writer's lock: the line is one ``write`` of an
        ``O_APPEND`` descriptor, whole for readers that hold the same lock."""
        if "\n" in line:
            raise ValueError(f"{final}: a line to append must not contain a newline")
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(final, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # After a writer killed mid-line, start a new line: the torn one stays alone (its
            # reader reports it) instead of swallowing this one.
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            data = memoryview((("\n" if torn else "") + line + "\n").encode())
            while data:  # os.write may write less than asked
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _remote.published(final)

    def write_parquet_many(self, pairs: list[tuple[pl.LazyFrame, Path]]) -> None:
        """Sink several frames that share a source in one pass (polars runs them as one
        plan, reading the source once), then rename each into place."""
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic_target(final)) for _, final in pairs]
            pl.collect_all([
                lf.sink_parquet(tmp, compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS, lazy=True)
                for (lf, _), tmp in zip(pairs, tmps, strict=True)
            ])
