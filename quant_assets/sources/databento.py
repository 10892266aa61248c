"""Databento historical data: DBN files of the schemas the lake ingests, fetched through the
official client (``databento.Historical``) with its batch API.

The lake reads Databento ``mbp-10`` and ``mbo`` DBN files (:mod:`quant_assets.book.parse.databento`:
the book, and the trades carried by their ``T`` records). A DBN file of schema ``trades`` is
refused by that parser (it names its schema), so ``trades`` is not fetched: an ``mbp-10`` or
``mbo`` file already gives the lake its trades.

One file per instrument, schema and **whole month**: a month is planned once the dataset's
available range (``metadata.get_dataset_range``, per schema where the answer says) reaches its
end, so a landed file never changes because the month grew; the current month is fetched when
it is over. Per file: ``batch.submit_job`` (DBN, zstd, one symbol, ``split_duration="month"``),
unless ``batch.list_jobs`` already holds a live job with the same request (an interrupted fetch
resumes its job instead of paying for a second one); ``batch.get_job_details`` polled until the
job is ``done``; ``batch.list_files``; ``batch.download`` of the data file (the client resumes a
cut download with ``Range``). The file is verified against the ``hash`` (``sha256:<hex>``) and
``size`` of the job's file list (the client only warns on a mismatch: here it is refused), and
its DBN metadata must name the dataset and schema asked for. It lands as
``{dataset}-{schema}-{SYMBOL}-{YYYY-MM}.dbn.zst`` with the dataset spelt as Databento names its
own files (``glbx-mdp3``: no dot, so a re-published version is ``...~v2.dbn.zst``).

The API key comes from ``$DATABENTO_API_KEY`` when a request is made; it is never logged or put
in a message (the client's own log records are redacted while it runs, every error is re-raised
with the key, its tail and its HTTP Basic form removed).

Configuration (``sources.toml``)::

    [databento]
    base_url = "https://hist.databento.com"   # the client's gateway (the default)
    poll_s = 10.0                             # between job-state polls (seconds)
    max_wait_s = 3600.0                       # a job not done by then is picked up by the next fetch

    [[databento.fetch]]
    dataset = "GLBX.MDP3"
    instruments = ["ESH4"]         # raw symbols (stype_in = "raw_symbol", the default)
    datasets = ["mbp-10", "mbo"]   # schemas
    start = "2024-01"
    end = "2024-03"                # optional: up to the dataset's available range

Plain Python, no Dagster.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from quant_assets.lake.symbols import normalise_symbol
from quant_assets.sources.http import DownloadFailed
from quant_assets.sources.model import RemoteFile, VerifyError

NAME = "databento"
KEY_ENV = "DATABENTO_API_KEY"
DEFAULT_GATEWAY = "https://hist.databento.com"
#: Schemas fetched: the DBN schemas :mod:`quant_assets.book.parse.databento` ingests.
SCHEMAS = ("mbp-10", "mbo")
_ENTRY_OPTIONS = {"dataset", "stype_in"}
_SOURCE_OPTIONS = {"poll_s", "max_wait_s"}
_LIVE_STATES = ("queued", "processing", "done")


class DatabentoError(DownloadFailed):
    """A Databento request that failed (a ``DownloadFailed``: the fetch records it ``failed``
    and goes on); the message never holds the key."""


def redact(text: str, key: str | None) -> str:
    """``text`` without ``key``, its last 8 characters, or its HTTP Basic form (``key:`` in
    base64, which is what the client sends and what a server echoing ``Authorization`` shows)."""
    if not key:
        return text
    basic = base64.b64encode(f"{key}:".encode()).decode()
    for secret in (basic, basic.rstrip("="), key, key[-8:] if len(key) >= 12 else key):
        text = text.replace(secret, "[REDACTED]")
    return text


class _Redacting(logging.Filter):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.key), None
        return True


@contextlib.contextmanager
def _redacted_logs(key: str) -> Iterator[None]:
    """Redact the key from the client's log records while it runs (its retry messages quote
    the server's error text, which may echo the key). A filter on a logger only sees records
    made by that very logger, so it goes on every ``databento.*`` logger that exists."""
    names = ["databento"] + [n for n in logging.root.manager.loggerDict if n.startswith("databento.")]
    f = _Redacting(key)
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)


def file_dataset(dataset: str) -> str:
    """``GLBX.MDP3`` -> ``glbx-mdp3``, how Databento names a dataset in its own file names."""
    return dataset.lower().replace(".", "-")


def landing_name(dataset: str, schema: str, symbol: str, period: str) -> str:
    return f"{file_dataset(dataset)}-{schema}-{symbol}-{period}.dbn.zst"


def _instant(value: object, where: str) -> datetime:
    """An ISO-8601 instant of the API (nanosecond fractions allowed) as UTC."""
    if not isinstance(value, str):
        raise DatabentoError(f"{where}: expected an ISO-8601 time, got {value!r}")
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds: drop the rest of the fraction
        frac = "".join(c for c in rest if c.isdigit())
        zone = rest[len(frac):]
        text = f"{head}.{frac[:6].ljust(6, '0')}{zone}"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        try:
            t = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time())
        except ValueError:
            raise DatabentoError(f"{where}: expected an ISO-8601 time, got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def available_end(answer: Any, dataset: str, schema: str) -> datetime:
    """The end (exclusive) of what ``dataset`` has for ``schema``, from a
    ``metadata.get_dataset_range`` answer (its ``schema`` part when it has one)."""
    where = f"metadata.get_dataset_range({dataset})"
    if not isinstance(answer, dict):
        raise DatabentoError(f"{where}: expected a JSON object, got {type(answer).__name__}")
    per_schema = answer.get("schema")
    if isinstance(per_schema, dict) and isinstance(per_schema.get(schema), dict) and "end" in per_schema[schema]:
        return _instant(per_schema[schema]["end"], f"{where} schema.{schema}.end")
    return _instant(answer.get("end"), f"{where} end")


def _month_bounds(month: str) -> tuple[date, date]:
    y, m = map(int, month.split("-"))
    return date(y, m, 1), date(y + (m == 12), m % 12 + 1, 1)


def _month_range(start: str, end: str) -> list[str]:
    out, m = [], start
    while m <= end:
        out.append(m)
        nxt = _month_bounds(m)[1]
        m = f"{nxt:%Y-%m}"
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class DatabentoSource:
    """Databento DBN files through the official client (see the module docstring).

    ``client_factory(key, gateway)`` makes the client (tests may wrap it); ``sleep`` waits
    between polls and retries (injectable)."""

    name = NAME

    def __init__(self, config: Any, env: Any = os.environ, client_factory: Callable[[str, str], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        options = dict(getattr(config, "options", {}) or {})
        where = getattr(config, "where", "[databento]")
        unknown = sorted(set(options) - _SOURCE_OPTIONS)
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)} "
                             f"(known besides the common ones: {', '.join(sorted(_SOURCE_OPTIONS))})")
        self.poll_s = self._positive(options.get("poll_s", 10.0), f"{where} poll_s")
        self.max_wait_s = self._positive(options.get("max_wait_s", 3600.0), f"{where} max_wait_s")
        self.gateway = str(getattr(config, "base_url", DEFAULT_GATEWAY)).rstrip("/")
        self._env = env
        self._factory = client_factory
        self._sleep = sleep
        self._ranges: dict[str, Any] = {}
        self._made: tuple[str, Any] | None = None
        #: rf.key -> (sha256, size, file name) of the job file :meth:`download` fetched.
        self._expected: dict[tuple[str, str, str, str], tuple[str | None, int | None, str]] = {}
        #: Every (job id, state) polled, in order: what tests inspect.
        self.polls: list[tuple[str, str]] = []

    @staticmethod
    def _positive(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{where}: expected a number > 0 (seconds), got {value!r}")
        return float(value)

    # -- keys --
    def _key(self) -> str | None:
        key = self._env.get(KEY_ENV)
        return key.strip() if key and key.strip() else None

    def auth_headers(self) -> dict[str, str]:
        """The client authenticates itself (HTTP Basic, the key as user name); nothing here."""
        return {}

    def secrets(self) -> tuple[str, ...]:
        key = self._key()
        return (key, base64.b64encode(f"{key}:".encode()).decode()) if key else ()

    def refuse(self, rf: Any) -> str | None:
        if self._key() is None:
            return f"{KEY_ENV} is not set: Databento serves no data without an API key"
        return None

    def _client(self) -> Any:
        key = self._key()
        if key is None:
            raise DatabentoError(f"{KEY_ENV} is not set: Databento serves no data without an API key")
        # one client per key (the key is read again each time: a changed environment is seen)
        if self._made is None or self._made[0] != key:
            if self._factory is not None:
                client = self._factory(key, self.gateway)
            else:
                import databento  # ~3 s the first time (pandas and friends): only when fetching

                client = databento.Historical(key, gateway=self.gateway)
            self._made = (key, client)
        return self._made[1]

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a client call), retried on 429/5xx/connection errors like the core's
        downloads (``retries``, ``backoff_s`` doubling, at most ``backoff_max_s``), every error
        re-raised without the key. Raised outside the ``except`` so no exception chain carries
        the client's original message."""
        key = self._key() or ""
        retries = int(getattr(self.config, "retries", 5))
        backoff, cap = float(getattr(self.config, "backoff_s", 1.0)), float(getattr(self.config, "backoff_max_s", 60.0))
        reason = ""
        for attempt in range(retries + 1):
            status: int | None = None
            with _redacted_logs(key):
                try:
                    return fn()
                except Exception as exc:  # noqa: BLE001 - every client error is reported, redacted
                    status = getattr(exc, "http_status", None)
                    reason = redact(f"{type(exc).__name__}: {exc}", key)
            retryable = status is None or status == 429 or 500 <= status < 600
            if status is not None and status in (401, 403):
                reason += f" (not authorised: check {KEY_ENV})"
            if not retryable or attempt == retries:
                break
            self._sleep(min(cap, backoff * 2 ** attempt))
        raise DatabentoError(f"databento {what}: {reason}")

    # -- configuration --
    def check_entry(self, entry: Any) -> None:
        dataset = entry.options.get("dataset")
        if not isinstance(dataset, str) or "." not in dataset:
            raise ValueError(f"{entry.where}: missing or bad field 'dataset' (a Databento dataset code, e.g. \"GLBX.MDP3\"), "
                             f"got {dataset!r}")
        unknown = sorted(set(entry.options) - _ENTRY_OPTIONS)
        if unknown:
            raise ValueError(f"{entry.where}: unknown field(s) {', '.join(unknown)} for databento "
                             f"(known: {', '.join(sorted(_ENTRY_OPTIONS))})")
        bad = [d for d in entry.datasets if d not in SCHEMAS]
        if bad:
            why = " (a trades DBN file is not read by the lake: mbp-10 and mbo carry the trades)" if "trades" in bad else ""
            raise ValueError(f"{entry.where} datasets: {', '.join(map(repr, bad))} not fetched from Databento{why}; "
                             f"expected some of {', '.join(SCHEMAS)}")

    def dataset_range(self, dataset: str) -> Any:
        if dataset not in self._ranges:
            client = self._client()
            self._ranges[dataset] = self._call(f"metadata.get_dataset_range({dataset})",
                                               lambda: client.metadata.get_dataset_range(dataset=dataset))
        return self._ranges[dataset]

    def plan(self, entry: Any, now: datetime) -> list[Any]:
        """Each whole month of the entry that the dataset's available range covers by ``now``,
        per instrument and schema."""
        self.check_entry(entry)
        dataset = entry.options["dataset"]
        stype = str(entry.options.get("stype_in", "raw_symbol"))
        now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        answer = self.dataset_range(dataset)
        out = []
        for schema in entry.datasets:
            end = min(available_end(answer, dataset, schema), now)
            months = [m for m in _month_range(entry.start, entry.end or f"{now:%Y-%m}")
                      if datetime.combine(_month_bounds(m)[1], datetime.min.time(), timezone.utc) <= end]
            for instrument in entry.instruments:
                folder = entry.landing_for(instrument) if hasattr(entry, "landing_for") else normalise_symbol(instrument)
                for month in months:
                    first, nxt = _month_bounds(month)
                    out.append(RemoteFile(
                        source=NAME, dataset=f"{file_dataset(dataset)}-{schema}", symbol=folder, period=month,
                        months=(month,),
                        url=(f"{self.gateway}/v0/batch.submit_job?dataset={dataset}&schema={schema}"
                             f"&symbols={instrument}&start={first}&end={nxt}"),
                        name=landing_name(dataset, schema, normalise_symbol(instrument), month),
                        extra=(("dataset", dataset), ("schema", schema), ("raw_symbol", instrument),
                               ("stype_in", stype), ("start", first.isoformat()), ("end", nxt.isoformat())),
                    ))
        return out

    # -- the batch flow --
    def _request(self, rf: RemoteFile) -> dict[str, Any]:
        return dict(dataset=rf.get("dataset"), symbols=[rf.get("raw_symbol")], schema=rf.get("schema"),
                    start=rf.get("start"), end=rf.get("end"), encoding="dbn", compression="zstd",
                    split_duration="month", delivery="download", stype_in=rf.get("stype_in"))

    @staticmethod
    def _same_job(job: dict[str, Any], want: dict[str, Any]) -> bool:
        try:
            symbols = job.get("symbols")
            symbols = symbols.split(",") if isinstance(symbols, str) else list(symbols or [])
            return (job.get("dataset") == want["dataset"] and job.get("schema") == want["schema"]
                    and [s.strip() for s in symbols] == want["symbols"]
                    and str(job.get("encoding", "dbn")) == "dbn" and str(job.get("compression", "zstd")) == "zstd"
                    and _instant(job.get("start"), "job start") == _instant(want["start"], "start")
                    and _instant(job.get("end"), "job end") == _instant(want["end"], "end"))
        except (DatabentoError, AttributeError, TypeError):
            return False

    def live_job(self, client: Any, rf: RemoteFile) -> dict[str, Any] | None:
        """The newest queued, processing or done job with ``rf``'s very request, or None."""
        want = self._request(rf)
        jobs = self._call("batch.list_jobs", lambda: client.batch.list_jobs(states=",".join(_LIVE_STATES)))
        for job in reversed(jobs or []):  # listed oldest first
            if isinstance(job, dict) and job.get("state") in _LIVE_STATES and self._same_job(job, want):
                return job
        return None

    def job_for(self, client: Any, rf: RemoteFile) -> str:
        """The id of a live job for ``rf``'s request: one already listed, else a new one."""
        job = self.live_job(client, rf)
        if job is not None:
            return str(job["id"])
        want = self._request(rf)
        job = self._call("batch.submit_job", lambda: client.batch.submit_job(**want))
        if not isinstance(job, dict) or not job.get("id"):
            raise DatabentoError(f"databento batch.submit_job: no job id in the answer ({str(job)[:200]})")
        return str(job["id"])

    def wait_done(self, client: Any, job_id: str) -> None:
        """Poll the job until it is ``done`` (``poll_s`` apart, at most ``max_wait_s``)."""
        waited = 0.0
        while True:
            details = self._call(f"batch.get_job_details({job_id})", lambda: client.batch.get_job_details(job_id))
            state = str(details.get("state")) if isinstance(details, dict) else "?"
            self.polls.append((job_id, state))
            if state == "done":
                return
            if state not in ("queued", "processing"):
                raise DatabentoError(f"databento job {job_id} is {state!r}, expected queued, processing or done")
            if waited >= self.max_wait_s:
                raise DatabentoError(f"databento job {job_id} still {state} after {waited:g} s (max_wait_s); "
                                     "the next fetch picks it up again (batch.list_jobs)")
            self._sleep(self.poll_s)
            waited += self.poll_s

    @staticmethod
    def data_file(files: Any, job_id: str) -> dict[str, Any]:
        """The one DBN data file of a job's file list (the others are its JSON descriptions)."""
        data = [f for f in files or [] if isinstance(f, dict) and str(f.get("filename", "")).endswith((".dbn.zst", ".dbn"))]
        if len(data) != 1:
            names = [f.get("filename") for f in files or [] if isinstance(f, dict)]
            raise DatabentoError(f"databento job {job_id}: expected one DBN file for one symbol and month, got {names}")
        f = data[0]
        try:
            hash_algo, _, hex_digest = str(f["hash"]).partition(":")
            size = int(f["size"])
        except (KeyError, TypeError, ValueError):
            raise DatabentoError(f"databento job {job_id}: file {f.get('filename')!r} lacks a hash or size") from None
        if hash_algo != "sha256" or len(hex_digest) != 64:
            raise DatabentoError(f"databento job {job_id}: file {f.get('filename')!r} has hash {f.get('hash')!r}, "
                                 "expected sha256:<hex>")
        return {"filename": str(f["filename"]), "sha256": hex_digest.lower(), "size": size}

    def resolve(self, rf: RemoteFile, client: Any = None) -> RemoteFile:
        """``rf`` with the sha256 and size of its file when a done job for it is still listed
        (no new job, no cost): the fetch then knows an already landed month is unchanged
        without downloading it again. ``client``: the fetch's HTTP client, unused."""
        if self._key() is None:
            return rf
        db = self._client()
        job = self.live_job(db, rf)
        if job is None or job.get("state") != "done":
            return rf
        job_id = str(job["id"])
        want = self.data_file(self._call(f"batch.list_files({job_id})", lambda: db.batch.list_files(job_id)), job_id)
        return replace(rf, sha256=want["sha256"], size=want["size"])

    def download(self, rf: RemoteFile, partial: Path, client: Any = None) -> None:
        """Submit (or find) the job, wait for it, download its data file with the official
        client, and leave it at ``partial``; :meth:`verify` then checks it against the job's
        file list. ``client``: the fetch's HTTP client, unused (the official client does the
        requests)."""
        reason = self.refuse(rf)
        if reason is not None:
            raise DatabentoError(reason)
        db = self._client()
        job_id = self.job_for(db, rf)
        self.wait_done(db, job_id)
        files = self._call(f"batch.list_files({job_id})", lambda: db.batch.list_files(job_id))
        want = self.data_file(files, job_id)
        self._expected[rf.key] = (want["sha256"], want["size"], want["filename"])
        # The client writes to <output_dir>/<job_id>/<filename> and resumes a file left there
        # (a cut download, in this run or an earlier one) with Range.
        out_dir = partial.with_name(partial.name + ".job")
        out_dir.mkdir(parents=True, exist_ok=True)
        got = self._call(f"batch.download({job_id}, {want['filename']})",
                         lambda: db.batch.download(job_id=job_id, output_dir=out_dir, filename_to_download=want["filename"]))
        path = Path(got[0]) if got else out_dir / job_id / want["filename"]
        os.replace(path, partial)
        shutil.rmtree(out_dir, ignore_errors=True)

    def verify(self, path: Path, rf: RemoteFile) -> None:
        """Size and sha256 as the job's file list gives them (the client itself only warns on
        a mismatch), and DBN metadata naming the dataset and schema asked for."""
        sha, size, filename = self._expected.get(rf.key, (rf.sha256, rf.size, rf.name))
        if sha is None or size is None:
            raise VerifyError(f"no sha256 and size from the job's file list to check {rf.name} against")
        got_size, got_sha = path.stat().st_size, _sha256(path)
        if got_size != size or got_sha != sha:
            raise VerifyError(f"{filename}: {got_size} bytes with sha256 {got_sha}, expected {size} bytes with "
                              f"sha256 {sha} (the job's file list)")
        try:
            import databento

            store = databento.DBNStore.from_file(path)
            dataset, schema = store.dataset, str(store.schema) if store.schema is not None else None
        except Exception as exc:  # noqa: BLE001 - any decoding failure refuses the file
            raise VerifyError(f"not a readable DBN file ({type(exc).__name__}: {exc})") from None
        if dataset != rf.get("dataset") or schema != rf.get("schema"):
            raise VerifyError(f"DBN metadata says dataset {dataset!r} schema {schema!r}, expected "
                              f"{rf.get('dataset')!r} {rf.get('schema')!r}")


def make(config: Any) -> DatabentoSource:
    """The source for ``[databento]`` (:func:`quant_assets.sources.make_source`)."""
    return DatabentoSource(config)
