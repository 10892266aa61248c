"""Every published version of a slice, kept and readable "as of" a time or a data version.

A published lake file is only ever replaced by a rename, never edited (``store.atomic_target``,
``store.atomic_dir``), so a hard link to it keeps the bytes it had when it is replaced. After a
slice (``ticks``, ``book``, ``backtests``, ``metrics``) is published, :func:`record` links each
of its files into a content-addressed object store and appends one line to the slice's index::

    <root>/versions/objects/<sha[:2]>/<sha256>                       the bytes (a hard link; a copy where links fail)
    <root>/versions/refs/<sha[:2]>/<sha256>/<slice key>              "this slice's index names this object" (empty file)
    <root>/versions/<table>/[strategy=X/]symbol=S/month=M/index.jsonl one line per published version, oldest first

An index line is ``{"data_version", "published_at_ns" (int, UTC epoch ns), "published_at" (ISO
UTC), "files": {relative name: {"sha256", "size" (bytes)}}}``; the data version is the one
Dagster records for the materialization, so ``dagster/data_version`` names the bytes. A version
whose data version is the index's last one is not recorded again (re-materialising unchanged
data adds nothing).

Cost follows the work: a record touches one slice's index and its own files' objects (a hard
link costs no bytes while the published file is current; the bytes are kept once it is
replaced); the hashes the builder already computed are reused (the ticks file's SHA-256, the
day files' in the book's manifest, the data files' in a backtest's or metric set's manifest),
so only manifests and ``run.json`` (kilobytes) are hashed here. Nothing reads every index except
:func:`gc`, an explicit repair.

Retention: ``$QUANT_KEEP_VERSIONS`` versions per slice (default 10; ``0`` or ``all``: keep every
version), pruned when a version is recorded. Two versions (of one slice or of two) with identical
bytes share one object; ``refs/`` says which slices' indexes name it, so pruning a version frees
an object only when no index names it any more, without reading other slices' indexes.

On a lake in an object store (``QUANT_LAKE=s3://...``) objects and indexes are pushed as they are
written; steps do not pull ``versions/objects/`` (history is fetched on demand by :func:`object_path`);
pruning trims the index but does not delete objects (another machine's slice may share one, and
its ``refs`` are not in this copy) — see the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from quant_assets.lake import remote as _remote
from quant_assets.lake.store import TMP_PREFIX, Lake, atomic_target, file_sha256
from quant_assets.lake.symbols import normalise_symbol

KEEP_ENV = "QUANT_KEEP_VERSIONS"
DEFAULT_KEEP = 10

#: Tables whose slices keep versions; the per-strategy ones are named by their asset prefix too.
TABLES = ("ticks", "book", "backtests", "metrics")
_ASSET_PREFIX = {"backtest_": "backtests", "metrics_": "metrics"}
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}")


class VersionNotFound(LookupError):
    """No recorded version of a slice matches the time or data version asked for."""


def keep_versions() -> int | None:
    """Versions kept per slice: ``$QUANT_KEEP_VERSIONS`` (default 10); None keeps every version."""
    value = (os.environ.get(KEEP_ENV) or str(DEFAULT_KEEP)).strip().lower()
    if value in ("0", "all"):
        return None
    if not value.isdigit():
        raise ValueError(f"{KEEP_ENV}={value!r}: expected a whole number of versions per slice >= 1, or 0/all to keep every version")
    return int(value)


@dataclass(frozen=True)
class Slice:
    """One published slice of a versioned table: ``table`` in :data:`TABLES`, ``strategy`` only for
    ``backtests`` and ``metrics``."""

    table: str
    symbol: str
    month: str
    strategy: str | None = None

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"versions: unknown table {self.table!r}; expected one of {', '.join(TABLES)}")
        if (self.strategy is None) != (self.table in ("ticks", "book")):
            raise ValueError(f"versions: {self.table} slices {'need' if self.strategy is None else 'take no'} strategy")
        if not _MONTH.match(self.month):
            raise ValueError(f"versions: month {self.month!r}: expected YYYY-MM")
        object.__setattr__(self, "symbol", normalise_symbol(self.symbol))

    @classmethod
    def of(cls, table: str, partition: tuple[str, ...]) -> "Slice":
        """``table`` (``ticks``, ``backtests`` ... or an asset name ``backtest_<strategy>``) and
        ``partition`` = ``(symbol, month[, strategy])``."""
        for prefix, tbl in _ASSET_PREFIX.items():
            if table.startswith(prefix):
                return cls(tbl, partition[0], partition[1], table[len(prefix):])
        return cls(table, *partition)

    @classmethod
    def of_asset(cls, asset: str, partition_key: str) -> "Slice":
        """From an asset name and a Dagster partition key ``YYYY-MM|SYMBOL``."""
        month, sep, symbol = partition_key.partition("|")
        if not sep:
            raise ValueError(f"partition {partition_key!r}: expected MONTH|SYMBOL, e.g. 2024-03|BTCUSDT")
        return cls.of(asset, (symbol, month))

    @property
    def asset(self) -> str:
        return {"backtests": f"backtest_{self.strategy}", "metrics": f"metrics_{self.strategy}"}.get(self.table, self.table)

    @property
    def rel(self) -> str:
        """The slice's folder relative to the lake root (and to ``versions/``)."""
        strategy = f"strategy={self.strategy}/" if self.strategy else ""
        return f"{self.table}/{strategy}symbol={self.symbol}/month={self.month}"

    @property
    def key(self) -> str:
        """The slice as one file name (its ``refs`` marker)."""
        return self.rel.replace("/", ",")

    def __str__(self) -> str:
        return f"{self.asset} {self.month}|{self.symbol}"

    def published_dir(self, lake: Lake) -> Path:
        return lake.root / self.rel

    def index_path(self, lake: Lake) -> Path:
        return lake.root / "versions" / self.rel / "index.jsonl"


@dataclass(frozen=True)
class Version:
    """One recorded version of a slice. ``files``: relative name -> {"sha256", "size" (bytes)}."""

    slice: Slice
    data_version: str
    published_at_ns: int
    files: dict[str, dict] = field(default_factory=dict)

    @property
    def published_at(self) -> str:
        return iso(self.published_at_ns)

    def entry(self) -> dict:
        """The index line."""
        return {"data_version": self.data_version, "published_at_ns": self.published_at_ns,
                "published_at": self.published_at, "files": self.files}

    def describe(self) -> dict:
        """The index line with each file's object path (lake-relative): materialization metadata."""
        return {**self.entry(), "slice": str(self.slice),
                "files": {n: {**f, "object": object_rel(f["sha256"])} for n, f in self.files.items()}}

    def paths(self, lake: Lake) -> dict[str, Path]:
        """Each file's bytes in the object store (fetched from the store first on a remote lake)."""
        return {name: object_path(lake, f["sha256"]) for name, f in sorted(self.files.items())}


def iso(ns: int) -> str:
    """UTC epoch ns as ISO 8601 with a ``Z``, to the microsecond."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> int:
    """``2024-04-01``, ``2024-04-01T00:00Z``, ``2024-04-01T00:00:00+02:00`` ... -> UTC epoch ns
    (a time without a zone is UTC)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: expected an ISO 8601 time (e.g. 2024-04-01T00:00Z) or a data version") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


# ---- the object store ----------------------------------------------------------------------
def object_rel(sha256: str) -> str:
    return f"versions/objects/{sha256[:2]}/{sha256}"


def object_path(lake: Lake, sha256: str) -> Path:
    """The object holding the bytes of SHA-256 ``sha256``; on a remote lake fetched from the
    store into the working copy when this machine does not have it (steps never pull history)."""
    path = lake.root / object_rel(sha256)
    if not path.exists() and lake.remote is not None:
        _fetch(lake, object_rel(sha256))
    if not path.exists():
        raise VersionNotFound(f"object {sha256} is missing from {lake.location}/versions/objects (removed by hand, or by gc "
                              "while an index still named it)")
    return path


def _fetch(lake: Lake, rel: str) -> bool:
    """Copy ``rel`` from the lake's store into its working copy; False when the store has no such file."""
    remote = lake.remote
    dest = lake.root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{dest.name}"
    try:
        remote.fs.get_file(f"{remote.base}/{rel}", str(tmp))
        os.replace(tmp, dest)
        return True
    except FileNotFoundError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _pin(lake: Lake, source: Path) -> Path:
    """A hard link (a copy where links fail) of ``source`` beside the objects: its bytes can no
    longer change, whatever replaces ``source`` afterwards."""
    d = lake.root / "versions" / "objects"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    return tmp


def _store(lake: Lake, pinned: Path, sha256: str, slc: Slice) -> None:
    """Move a pinned file into place as object ``sha256`` (dropping it when the object exists:
    same hash, same bytes) and mark that ``slc``'s index names it. Hold the versions lock."""
    obj = lake.root / object_rel(sha256)
    if obj.exists():
        pinned.unlink()
    else:
        obj.parent.mkdir(parents=True, exist_ok=True)
        os.replace(pinned, obj)
        _remote.published(obj)
    if lake.url is None:
        marker = lake.root / "versions" / "refs" / sha256[:2] / sha256 / slc.key
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def _release(lake: Lake, sha256: str, slc: Slice) -> bool:
    """``slc``'s index no longer names object ``sha256``: drop its mark, and the object when no
    other slice marks it. True when the object was removed. Hold the versions lock."""
    refs = lake.root / "versions" / "refs" / sha256[:2] / sha256
    (refs / slc.key).unlink(missing_ok=True)
    try:
        refs.rmdir()  # fails while another slice's mark is there
    except FileNotFoundError:
        pass
    except OSError:
        return False
    (lake.root / object_rel(sha256)).unlink(missing_ok=True)
    return True


# ---- what a published slice holds ----------------------------------------------------------
#: Files of a published folder that are not part of its data: a backtest's ``run.json`` (what the run
#: measured about itself: wall time, memory) differs between two runs of the same data version.
NOT_DATA = frozenset({"run.json"})


def published_files(lake: Lake, slc: Slice) -> dict[str, Path]:
    """The published files of a slice by relative name (hidden temporaries and :data:`NOT_DATA`
    excluded): the data files and the manifest that names them."""
    if slc.table == "ticks":
        path = lake.ticks_path(slc.symbol, slc.month)
        return {path.name: path} if path.exists() else {}
    d = slc.published_dir(lake)
    if not d.is_dir():
        return {}
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in NOT_DATA and not any(part.startswith(".") for part in p.relative_to(d).parts)}


def _known_hashes(table: str, manifest: dict) -> dict[str, str]:
    """The SHA-256s a slice's own manifest already states (the builder computed them)."""
    if table == "book":
        return {f"day={d['day']}/part-0.parquet": d["sha256"] for d in manifest.get("days", [])}
    return dict(manifest.get("files") or {})


def _check_data_version(slc: Slice, data_version: str, manifest: dict | None, hashes: dict[str, str]) -> None:
    """The pinned bytes are those of ``data_version`` (a publish after the caller's would mix two
    versions): recomputed from the hashes the way each builder computes its data version."""
    import hashlib

    if slc.table == "ticks":
        got = hashes.get("part-0.parquet", "")
    elif slc.table == "book":
        got = (manifest or {}).get("sha256") or ""
    else:
        files = (manifest or {}).get("files") or {}
        got = hashlib.sha256("|".join(files[k] for k in sorted(files)).encode()).hexdigest()
    if not got.startswith(data_version):
        raise RuntimeError(f"versions: {slc}: the published files are data version {got[:24] or '?'}, not {data_version} "
                           "(published again since); not recorded")


# ---- the index ------------------------------------------------------------------------------
def _index_rel(slc: Slice) -> str:
    return f"versions/{slc.rel}/index.jsonl"


def versions(lake: Lake, slc: Slice) -> list[Version]:
    """A slice's recorded versions, oldest first. A line torn by a killed writer is skipped (the
    next prune rewrites the index without it). On a remote lake the store's index is read."""
    path = slc.index_path(lake)
    if lake.remote is not None:
        _fetch(lake, _index_rel(slc))
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            out.append(Version(slc, row["data_version"], int(row["published_at_ns"]), row["files"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def record(lake: Lake, table: str, partition: tuple[str, ...] | Slice, data_version: str,
           files: Mapping[str, Path] | None = None, published_at: datetime | int | None = None,
           known: Mapping[str, str] | None = None) -> Version:
    """Keep the just-published ``data_version`` of a slice: link its ``files`` (relative name ->
    path; default: every published file of the slice) into the object store and append its
    index line, then prune to :func:`keep_versions`. ``known``: SHA-256s the builder already
    computed (``{"part-0.parquet": sha}`` for ticks); the slice's manifest supplies the others'
    where it states them, the rest are hashed. ``published_at``: default now (UTC; int = epoch ns).
    Idempotent: returns the last version unchanged when it already has ``data_version``."""
    slc = partition if isinstance(partition, Slice) else Slice.of(table, partition)
    files = dict(files) if files is not None else published_files(lake, slc)
    if not files:
        raise FileNotFoundError(f"versions: {slc}: nothing is published at {slc.published_dir(lake)}")
    at_ns = (time.time_ns() if published_at is None else published_at if isinstance(published_at, int)
             else parse_time(published_at.isoformat()))
    with lake.lock("versions"):
        past = versions(lake, slc)
        if past and past[-1].data_version == data_version:
            return past[-1]
        pinned = {name: _pin(lake, path) for name, path in files.items()}
        try:
            manifest = json.loads(pinned["manifest.json"].read_text()) if "manifest.json" in pinned else None
            hashes = {**(_known_hashes(slc.table, manifest) if manifest else {}), **(known or {})}
            hashes = {name: hashes.get(name) or file_sha256(p) for name, p in pinned.items()}
            _check_data_version(slc, data_version, manifest, hashes)
            meta = {name: {"sha256": hashes[name], "size": p.stat().st_size} for name, p in pinned.items()}
            for name, p in pinned.items():
                _store(lake, p, hashes[name], slc)
        finally:
            for p in pinned.values():
                p.unlink(missing_ok=True)
        version = Version(slc, data_version, at_ns, meta)
        keep = keep_versions()
        index = slc.index_path(lake)
        if keep is None or len(past) + 1 <= keep:
            lake.append_line(json.dumps(version.entry(), sort_keys=True), index)
            return version
        kept = [*past, version][-keep:]
        dropped = [*past, version][:-keep]
        with atomic_target(index) as tmp:
            tmp.write_text("".join(json.dumps(v.entry(), sort_keys=True) + "\n" for v in kept))
        if lake.url is None:  # see the module docstring: a remote copy cannot see other machines' refs
            still = {f["sha256"] for v in kept for f in v.files.values()}
            for sha in {f["sha256"] for v in dropped for f in v.files.values()} - still:
                _release(lake, sha, slc)
        return version


# ---- resolving and reading -----------------------------------------------------------------
def _listing(vs: list[Version]) -> str:
    return "; ".join(f"{v.data_version} published {v.published_at}" for v in vs) or "none recorded"


def resolve(lake: Lake, table: str, partition: tuple[str, ...] | Slice, at: datetime | str | int) -> Version:
    """The version of a slice current at time ``at`` (a ``datetime``, epoch ns, or ISO text: the
    last one published at or before it), or — for text that is not a time — the version whose
    data version equals or starts with ``at`` (the latest such, when bytes came back).
    :class:`VersionNotFound` lists the slice's versions when none matches."""
    slc = partition if isinstance(partition, Slice) else Slice.of(table, partition)
    vs = versions(lake, slc)
    where = f"{slc} (index {lake.location}/{_index_rel(slc)})"
    if not vs:
        raise VersionNotFound(f"{where}: no versions recorded")
    if isinstance(at, str) and not _TIME.match(at):
        text = at.strip().lower()
        hits = [v for v in vs if v.data_version.startswith(text)] if len(text) >= 4 else []
        if not hits:
            raise VersionNotFound(f"{where}: no version has data version {at!r} (4+ leading characters); versions: {_listing(vs)}")
        if len({v.data_version for v in hits}) > 1:
            raise VersionNotFound(f"{where}: {at!r} matches several data versions; give more characters: {_listing(hits)}")
        return hits[-1]
    ns = at if isinstance(at, int) else parse_time(at if isinstance(at, str) else at.isoformat())
    before = sorted((v for v in vs if v.published_at_ns <= ns), key=lambda v: v.published_at_ns)
    if not before:
        raise VersionNotFound(f"{where}: nothing was published at or before {iso(ns)}; versions: {_listing(vs)}")
    return before[-1]


def by_file(lake: Lake, slc: Slice, name: str, sha256: str) -> Version:
    """The latest version of ``slc`` whose file ``name`` had SHA-256 ``sha256`` (a backtest names
    its book by the hash of the book's ``manifest.json``)."""
    vs = versions(lake, slc)
    hits = [v for v in vs if v.files.get(name, {}).get("sha256") == sha256]
    if not hits:
        raise VersionNotFound(f"{slc}: no recorded version has {name} with sha256 {sha256}; versions: {_listing(vs)}")
    return hits[-1]


def scan(lake: Lake, version: Version, file: str | None = None) -> pl.LazyFrame:
    """A slice as it was: ``file`` of ``version`` (default: its Parquet files — one for ticks, the
    day files in order for a book) as a Polars LazyFrame over the stored objects."""
    names = [file] if file else [n for n in sorted(version.files) if n.endswith(".parquet")]
    missing = [n for n in names if n not in version.files]
    if missing or not names:
        raise VersionNotFound(f"{version.slice} version {version.data_version}: no file {missing or '*.parquet'}; "
                              f"it has {sorted(version.files)}")
    return pl.scan_parquet([object_path(lake, version.files[n]["sha256"]) for n in names])


# ---- what a result read ------------------------------------------------------------------
def inputs(lake: Lake, version: Version) -> list[dict]:
    """The input versions a ``backtests`` or ``metrics`` version read, from its manifest: each
    ``{"role", "slice", "version" (Version or None), "how", "reason"}``. A backtest names its
    ticks by data version and its book by its manifest's hash; the warm-up month's ticks carry
    no data version, so they are taken as current when the backtest was published (said in
    ``how``). A metric set names its backtest by data version."""
    if "manifest.json" not in version.files:
        raise VersionNotFound(f"{version.slice} version {version.data_version} has no manifest.json: its inputs are not recorded")
    m = json.loads(object_path(lake, version.files["manifest.json"]["sha256"]).read_text())
    slc = version.slice
    out: list[dict] = []

    def add(role: str, target: Slice, how: str, find) -> None:
        try:
            out.append({"role": role, "slice": target, "version": find(), "how": how, "reason": None})
        except VersionNotFound as exc:
            out.append({"role": role, "slice": target, "version": None, "how": how, "reason": str(exc)})

    if slc.table == "metrics":
        bt = Slice("backtests", slc.symbol, slc.month, slc.strategy)
        dv = m.get("backtest_data_version")
        add("backtest", bt, f"data version {dv}", lambda: resolve(lake, "", bt, dv))
        return out
    if slc.table != "backtests":
        raise ValueError(f"{slc}: only backtests and metrics record the versions they read")
    ticks = Slice("ticks", slc.symbol, slc.month)
    dv = m.get("ticks_data_version")
    if dv:
        add("ticks", ticks, f"data version {dv}", lambda: resolve(lake, "", ticks, dv))
    else:
        out.append({"role": "ticks", "slice": ticks, "version": None, "how": "-",
                    "reason": "the manifest records no ticks data version (run outside Dagster)"})
    book = m.get("book")
    if book and book.get("manifest_sha256"):
        bk = Slice("book", slc.symbol, slc.month)
        add("book", bk, f"manifest.json sha256 {book['manifest_sha256'][:16]}…",
            lambda: by_file(lake, bk, "manifest.json", book["manifest_sha256"]))
    warm = (m.get("warmup") or {}).get("from_month")
    if warm and warm != slc.month:
        wt = Slice("ticks", slc.symbol, warm)
        add("warm-up ticks", wt, f"current at the backtest's publish time {version.published_at} (no data version recorded)",
            lambda: resolve(lake, "", wt, version.published_at_ns))
    return out


# ---- repair ---------------------------------------------------------------------------------
def gc(lake: Lake, min_age_s: float = 3600.0) -> dict[str, int]:
    """Make ``refs`` match the indexes and remove every object no index names (and pinned
    temporaries older than ``min_age_s``, left by a killed writer). Reads every index: an
    explicit repair (after a crash mid-record or files removed by hand), not part of a publish.
    Local lakes only. Returns counts."""
    if lake.url is not None:
        raise NotImplementedError(f"versions.gc on a remote lake ({lake.url}) is not implemented: its objects are kept")
    root = lake.root / "versions"
    named: dict[str, set[str]] = {}
    for index in root.rglob("index.jsonl"):
        rel = index.parent.relative_to(root).as_posix()
        for line in index.read_text().splitlines():
            try:
                files = json.loads(line)["files"]
            except (ValueError, KeyError, TypeError):
                continue
            for f in files.values():
                named.setdefault(f["sha256"], set()).add(rel.replace("/", ","))
    counts = {"objects_removed": 0, "bytes_removed": 0, "marks_fixed": 0, "temporaries_removed": 0}
    now = time.time()
    with lake.lock("versions"):
        for obj in (root / "objects").glob("*/*") if (root / "objects").is_dir() else []:
            if obj.name not in named:
                size = obj.stat().st_size if obj.stat().st_nlink == 1 else 0  # still linked: no bytes freed
                obj.unlink()
                counts["objects_removed"] += 1
                counts["bytes_removed"] += size
        for tmp in (root / "objects").glob(f"{TMP_PREFIX}*") if (root / "objects").is_dir() else []:
            if now - tmp.lstat().st_mtime >= min_age_s:
                tmp.unlink(missing_ok=True)
                counts["temporaries_removed"] += 1
        refs = root / "refs"
        for d in refs.glob("*/*") if refs.is_dir() else []:
            for marker in d.iterdir():
                if marker.name not in named.get(d.name, ()):
                    marker.unlink()
                    counts["marks_fixed"] += 1
            if not any(d.iterdir()):
                d.rmdir()
        for sha, keys in named.items():
            d = refs / sha[:2] / sha
            for key in keys:
                if not (d / key).exists():
                    d.mkdir(parents=True, exist_ok=True)
                    (d / key).touch()
                    counts["marks_fixed"] += 1
    return counts
