"""The lake on object storage: every read and write of the shared copy, in one place.

When the lake root is a URL (``s3://bucket/prefix``, or any fsspec URL), that store holds the
shared lake and each machine works in a local copy of it (``$QUANT_LAKE_CACHE``, else
``~/.cache/quant_assets/lakes/<hash of the URL>``). A step pulls what changed in the store
for its symbol before it runs; each file or folder it publishes is pushed as soon as the lake's
atomic writers put it in place (:meth:`RemoteLake.attach`), and a last push after the step
sweeps up anything else. The lake code keeps its local-disk guarantees (atomic renames, folder
swaps, locks).

Why a working copy rather than fsspec calls throughout: the engines (NautilusTrader's
catalog, hftbacktest's ``.npz`` feeds) and the atomic folder swap need a real filesystem, and
a tick month is read many times per step; a copy is fetched once per machine and kept.

Atomicity on the store, which writes each object whole but has no rename:

* data files are uploaded first and each folder's ``manifest.json`` (the commit mark that
  names the data files' hashes) last, then objects that the local copy no longer has are
  deleted; a reader that trusts the manifest never takes a half-pushed folder for a whole one;
* a step killed before it pushes leaves the store as it was: a good slice is never replaced
  by a failed run's files;
* raw files under ``landing/`` are never overwritten or deleted in the store;
* the shared ledgers (trials, landing manifest, instruments) are row tables that every step
  may append to: when the store's copy changed since this machine last saw it, the rows are
  merged by key before the upload (the last writer no longer drops the others' rows; two
  pushes in the same instant can still race, as the store has no lock).

Credentials and endpoint come from the environment, as for every AWS tool:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (for MinIO, moto, Ceph...).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from filelock import FileLock

from quant_assets.lake.faults import crash_point

CACHE_ENV = "QUANT_LAKE_CACHE"

#: Folders of the local copy that are never synchronised (private working space).
PRIVATE = frozenset({".scratch", ".locks", ".sync"})

#: Folders a step never pulls: the bytes of past versions (``lake.versions``), fetched one object
#: at a time when a past version is read; pulling them would copy the lake's whole history.
ON_DEMAND = ("versions/objects/", "versions/refs/")

#: File names that commit a folder: uploaded after every other file of the push.
COMMIT_MARKS = frozenset({"manifest.json"})

#: Shared row tables and the columns that identify a row; merged on push (see module doc).
LEDGERS: dict[str, tuple[str, ...]] = {
    # a parameter set and a null-critic control run of the same set are two rows (trials.record)
    "trials/trials.parquet": ("impl", "params_hash", "kind"),
    "manifest/landing.parquet": ("path",),
    "instruments/instruments.parquet": ("symbol", "month"),  # a record per symbol x month
}


def is_url(root: str) -> bool:
    """True when a lake root names an object store (``scheme://...``) rather than a folder."""
    return "://" in root


def cache_dir(url: str) -> Path:
    """This machine's working copy of the lake at ``url``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser().resolve()
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (Path.home() / ".cache" / "quant_assets" / "lakes" / digest).resolve()


@functools.cache
def filesystem(url: str):
    """The fsspec filesystem and the root path inside it for ``url``.

    s3fs reads credentials from the AWS environment itself; the endpoint is passed on
    explicitly because not every botocore release reads ``AWS_ENDPOINT_URL``."""
    import fsspec  # s3fs, aiobotocore: only when a lake is remote

    options: dict[str, object] = {}
    if url.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    fs, path = fsspec.url_to_fs(url, **options)
    return fs, path.rstrip("/")


def in_scope(rel: str, symbol: str | None) -> bool:
    """Whether the lake file ``rel`` belongs to a step on ``symbol`` (None: every file).

    A file is a symbol's when a hive key ``symbol=S`` or the landing folder names it; files
    without a symbol (ledgers, the critique cache) belong to every step."""
    if symbol is None:
        return True
    parts = rel.split("/")
    if parts[0] == "landing":
        return len(parts) > 1 and parts[1] == symbol
    keyed = [p[len("symbol="):] for p in parts if p.startswith("symbol=")]
    return not keyed or keyed[0] == symbol


class LakeUnavailable(RuntimeError):
    """The object store behind a lake cannot be reached, has no such bucket, or refused a write."""


@dataclass
class SyncStats:
    """What one pull or push moved: file counts and bytes."""

    fetched: int = 0
    uploaded: int = 0
    deleted: int = 0
    merged: int = 0
    bytes: int = 0
    order: list[str] = field(default_factory=list)  # uploads, in the order they were made

    def summary(self) -> str:
        return (f"{self.fetched} fetched, {self.uploaded} uploaded, {self.merged} merged, {self.deleted} deleted, "
                f"{self.bytes / 2**20:.1f} MiB")


class RemoteLake:
    """The store at ``url`` and the local working copy at ``local``.

    ``.sync/state.json`` in the copy records, for every file it shares with the store, the
    store's tag (ETag) and the local size and mtime when they were last equal: a file changed
    in the store when its tag differs, locally when its size or mtime does."""

    def __init__(self, url: str, local: Path) -> None:
        self.url, self.local = url, local
        self.fs, self.base = filesystem(url)

    # ---- state ---------------------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.local / ".sync" / "state.json"

    @contextlib.contextmanager
    def _session(self) -> Iterator[dict[str, dict]]:
        """The sync state, under a lock shared by every process of this machine's copy."""
        (self.local / ".sync").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.local / ".sync" / "sync.lock"), timeout=3600):
            state = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
            yield state
            tmp = self._state_path.with_name(f".tmp-{uuid.uuid4().hex}")
            tmp.write_text(json.dumps(state, sort_keys=True))
            os.replace(tmp, self._state_path)

    def _remote_files(self, prefixes: Iterable[str] = ("",)) -> dict[str, str]:
        """Store files under ``prefixes`` (relative to the root): path relative to the root -> tag."""
        return {rel: tag for rel, (tag, _) in self._remote_infos(prefixes).items()}

    def _remote_infos(self, prefixes: Iterable[str] = ("",)) -> dict[str, tuple[str, float | None]]:
        """Store files under ``prefixes``: path relative to the root -> (tag, last-modified epoch s)."""
        self.fs.invalidate_cache()
        out: dict[str, tuple[str, float | None]] = {}
        for prefix in prefixes:
            top = f"{self.base}/{prefix}".rstrip("/")
            try:
                found = self.fs.find(top, detail=True)
            except FileNotFoundError:
                continue
            for path, info in found.items():
                if info.get("type") == "directory":
                    continue
                rel = path[len(self.base) + 1:]
                if rel.split("/")[0] in PRIVATE:
                    continue
                out[rel] = (_tag(info), _mtime(info))
        return out

    def _local_files(self, only: str | None = None) -> dict[str, os.stat_result]:
        """Published local files (no hidden temporaries, no private folders), all or those at
        or under the path ``only`` (relative to the copy's root)."""
        out: dict[str, os.stat_result] = {}
        start = self.local / only if only else self.local
        if start.is_file():
            return {only: start.stat()}
        if not start.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.local).as_posix()
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (rel_dir == "." and d in PRIVATE)]
            for name in filenames:
                if name.startswith("."):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                out[rel] = os.stat(os.path.join(dirpath, name))
        return out

    # ---- pull ----------------------------------------------------------------------------
    def check(self) -> None:
        """Fail with the URL and what to check when the store's bucket (or top folder) cannot
        be reached; a listing alone would take a misspelt bucket for an empty lake."""
        top = self.base.split("/")[0]
        try:
            found = self.fs.exists(top)
        except OSError as exc:
            raise LakeUnavailable(f"lake {self.url}: cannot reach {top!r}: {exc}") from exc
        if not found:
            raise LakeUnavailable(
                f"lake {self.url}: {top!r} does not exist or is not visible with these credentials; create the bucket, "
                "or check AWS_ENDPOINT_URL_S3 / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")

    def pull(self, symbol: str | None = None, prefixes: Iterable[str] = ("",)) -> SyncStats:
        """Bring the local copy up to the store for ``symbol``'s files (None: all) under
        ``prefixes``; files that left the store leave the copy too, unless changed locally."""
        self.check()
        stats = SyncStats()
        prefixes = tuple(prefixes)
        remote = self._remote_infos(prefixes)
        with self._session() as state:
            for rel, (tag, mtime) in sorted(remote.items()):
                if not in_scope(rel, symbol) or rel.startswith(ON_DEMAND):
                    continue
                dest = self.local / rel
                known = state.get(rel)
                if known and known["tag"] == tag and _unchanged(dest, known):
                    continue
                if rel in LEDGERS and known and dest.exists() and not _unchanged(dest, known):
                    # Rows added here that a push has not carried yet (a push cut short):
                    # keep them beside the store's; the next push uploads the union.
                    self._merge_ledger(rel, dest)
                    stats.merged += 1
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.parent / f".tmp-{uuid.uuid4().hex}-{dest.name}"
                try:
                    self.fs.get_file(f"{self.base}/{rel}", str(tmp))
                    if mtime is not None:
                        # The store's time, so "how old is this file" (the landing sensor's
                        # readiness) means the same on every machine.
                        os.utime(tmp, (mtime, mtime))
                    os.replace(tmp, dest)
                finally:
                    tmp.unlink(missing_ok=True)
                state[rel] = _record(dest, tag)
                stats.fetched += 1
                stats.bytes += dest.stat().st_size
            for rel in [r for r in state if r not in remote and in_scope(r, symbol) and r.startswith(prefixes)]:
                dest = self.local / rel
                if _unchanged(dest, state[rel]):
                    dest.unlink(missing_ok=True)
                    stats.deleted += 1
                del state[rel]
        return stats

    # ---- push ----------------------------------------------------------------------------
    def push(self, only: str | None = None) -> SyncStats:
        """Upload every local file that changed since it was last synchronised, commit marks
        last, then delete from the store what the copy removed (never raw landing files).
        ``only`` (a path relative to the root) limits the push to that file or folder."""
        stats = SyncStats()
        local = self._local_files(only)
        # A folder's listing, or the parent's for a file: an object store lists by prefix.
        listed = ("",) if only is None else ((only if (self.local / only).is_dir() else only.rpartition("/")[0]),)

        def mine(rel: str) -> bool:
            return only is None or rel == only or rel.startswith(only + "/")

        with self._session() as state:
            changed = [rel for rel, st in local.items() if rel not in state or not _same_stat(st, state[rel])]
            remote = self._remote_files(listed)
            changed = [r for r in changed if not (r.startswith("landing/") and r in remote)]
            # Data first, then the ledgers (they name data), then each folder's commit mark.
            changed.sort(key=lambda r: (r.rsplit("/", 1)[-1] in COMMIT_MARKS, r in LEDGERS, r))
            for rel in changed:
                path = self.local / rel
                if rel in LEDGERS and rel in remote and remote[rel] != state.get(rel, {}).get("tag"):
                    self._merge_ledger(rel, path)
                    stats.merged += 1
                if rel.rsplit("/", 1)[-1] in COMMIT_MARKS:
                    crash_point("push:commit")
                try:
                    self.fs.put_file(str(path), f"{self.base}/{rel}")
                except OSError as exc:
                    raise LakeUnavailable(f"lake {self.url}: could not upload {rel}: {exc}; the working copy "
                                          f"{self.local} keeps it and the next push retries") from exc
                stats.uploaded += 1
                stats.bytes += path.stat().st_size
                stats.order.append(rel)
            gone = [rel for rel in state if mine(rel) and rel not in local and not rel.startswith("landing/")]
            if gone:
                self.fs.rm([f"{self.base}/{rel}" for rel in gone])
                stats.deleted += len(gone)
            for rel in gone:
                del state[rel]
            if changed:
                tags = self._remote_files(listed)
                for rel in changed:
                    if rel in tags:
                        state[rel] = _record(self.local / rel, tags[rel])
        return stats

    # ---- write-through -------------------------------------------------------------------
    def attach(self) -> None:
        """Push each file or folder the lake code publishes in the working copy as soon as it
        is published (``store.atomic_target``/``atomic_dir`` call :func:`published`), so a
        push that fails fails the step that wrote it."""
        _ATTACHED[self.local] = self

    def detach(self) -> None:
        _ATTACHED.pop(self.local, None)

    def _merge_ledger(self, rel: str, path: Path) -> None:
        """Fold the store's rows of a ledger that this copy does not have into the local file."""
        keys = list(LEDGERS[rel])
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
        try:
            self.fs.get_file(f"{self.base}/{rel}", str(tmp))
            theirs, ours = pl.read_parquet(tmp), pl.read_parquet(path)
            # nulls_equal: a key may be null (an undated instrument row of an older table) and
            # still names one row. A key column one side lacks (that side's table predates it)
            # reads as null there.
            dtype = {k: ours.schema.get(k) or theirs.schema.get(k) or pl.String() for k in keys}
            theirs = theirs.with_columns(pl.lit(None, dtype[k]).alias(k) for k in keys if k not in theirs.columns)
            ours = ours.with_columns(pl.lit(None, dtype[k]).alias(k) for k in keys if k not in ours.columns)
            merged = pl.concat([theirs.join(ours.select(keys), on=keys, how="anti", nulls_equal=True), ours],
                               how="diagonal_relaxed")
            merged.write_parquet(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # ---- direct reads --------------------------------------------------------------------
    def files(self) -> dict[str, str]:
        """Every file in the store: path relative to the root -> tag."""
        return self._remote_files()

    def url_of(self, rel: str) -> str:
        return f"{self.url.rstrip('/')}/{rel}"


#: Working copies whose publications are pushed at once (see ``RemoteLake.attach``).
_ATTACHED: dict[Path, RemoteLake] = {}


def published(path: Path) -> None:
    """Called by the lake's atomic writers after ``path`` (a file or folder) is in place:
    pushes it when it lies in an attached working copy, outside its private folders."""
    for root, lake in list(_ATTACHED.items()):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if not rel.parts or rel.parts[0] in PRIVATE or any(part.startswith(".") for part in rel.parts):
            return
        lake.push(only=rel.as_posix())
        return


def _tag(info: dict) -> str:
    for key in ("ETag", "etag", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def _mtime(info: dict) -> float | None:
    value = info.get("LastModified") or info.get("mtime")
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _record(path: Path, tag: str) -> dict[str, object]:
    st = path.stat()
    return {"tag": tag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_stat(st: os.stat_result, known: dict) -> bool:
    return st.st_size == known["size"] and st.st_mtime_ns == known["mtime_ns"]


def _unchanged(path: Path, known: dict) -> bool:
    try:
        return _same_stat(path.stat(), known)
    except FileNotFoundError:
        return False
