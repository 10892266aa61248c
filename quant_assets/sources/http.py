"""One download routine for every source: resumable, retried, rate-limited, key-safe.

:meth:`HttpClient.download` writes a URL's bytes to a *partial* file (the caller puts it in the
hidden ``landing/<SYMBOL>/.partial/`` folder, which the landing survey never reads) and returns
when the file is whole:

- **resume**: a partial file left by a cut connection (in this process or an earlier one) is
  continued with ``Range: bytes=<have>-`` and ``If-Range: <ETag or Last-Modified>`` (kept in a
  ``<partial>.json`` sidecar), so a file changed on the server restarts from zero instead of
  mixing two versions' bytes. A ``206`` must start at the byte asked for; a ``200`` restarts.
  Without a validator the download restarts (no ``Range``): nothing proves the bytes still match.
- **retries**: a 429, a 5xx, a refused or cut connection and a timeout are retried up to
  ``retries`` more times, waiting ``backoff_s · 2^attempt`` plus up to ``backoff_s`` of jitter
  (at most ``backoff_max_s``), or the server's ``Retry-After`` when it asks for longer. A
  ``Retry-After`` beyond ``backoff_max_s`` fails at once with that reason (a scheduled run must
  not sleep for an hour). A 404 raises :class:`NotPublished`; 401/403 fail at once.
- **rate limit**: a token bucket of ``rate_per_s`` requests per second **per source and per
  process** (several processes fetching the same source each get the full rate: run one fetch
  per source at a time, as the schedule does).
- **timeouts**: ``timeout_s`` bounds the connection and every wait for bytes (a server that
  stops sending for that long is a timeout, retried like a 5xx).
- **keys**: auth headers are built at request time by the source's ``auth_headers()`` and every
  message this module raises is redacted of their values (and of their last 8 characters).

Plain Python (``requests``), no Dagster.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
import urllib3

from quant_assets.sources.config import SourceConfig

#: Bytes per read of a streamed body (and per ``on_bytes`` call at most).
CHUNK_BYTES = 1 << 20
#: Largest body :meth:`HttpClient.get_bytes` accepts (checksum files, API answers).
SMALL_MAX_BYTES = 16 << 20


class NotPublished(Exception):
    """The server answered 404: the file is not (or not yet) published."""

    def __init__(self, url: str) -> None:
        super().__init__(f"{url}: 404 not found (not published)")
        self.url = url


class DownloadFailed(Exception):
    """A request that did not succeed within its retries (or could not: 401, 403, a long
    ``Retry-After``). The message says why and never holds a key."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each secret (and its last 8 characters, which some messages print) replaced.

    The same rule as ``quant_assets.critique.anthropic_critic.redact``, repeated here because
    importing the critic package costs ~0.6 s that loading the fetch code should not pay."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "[REDACTED]")
        if len(secret) >= 12:
            text = text.replace(secret[-8:], "[REDACTED]")
    return text


class TokenBucket:
    """``rate`` requests per second with bursts of up to ``max(1, rate)``; thread-safe."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity, self._clock = rate, max(1.0, rate), clock
        self._tokens, self._at = self.capacity, clock()
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """Take one token; return how long the caller must sleep before using it (seconds)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


_BUCKETS: dict[str, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_for(source: str, rate_per_s: float) -> TokenBucket:
    """The process-wide bucket of ``source`` (made on first use; a changed rate replaces it)."""
    with _BUCKETS_LOCK:
        b = _BUCKETS.get(source)
        if b is None or b.rate != rate_per_s:
            b = _BUCKETS[source] = TokenBucket(rate_per_s)
        return b


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@dataclass(frozen=True)
class Downloaded:
    """A whole download: its path, size (bytes), validator, and how it went."""

    path: Path
    size: int
    etag: str | None
    last_modified: str | None
    attempts: int
    resumed_from: list[int]  # the byte offsets asked for with Range, in order (empty: never resumed)


def _meta_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def discard_partial(partial: Path) -> None:
    """Remove a partial file and its sidecar (after it was refused, or landed)."""
    partial.unlink(missing_ok=True)
    _meta_path(partial).unlink(missing_ok=True)


class HttpClient:
    """Requests of one source: its settings, its auth headers, its rate limit.

    ``sleep`` and ``rng`` are injectable so tests can record waits instead of waiting."""

    def __init__(self, cfg: SourceConfig, auth_headers: Callable[[], dict[str, str]] | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self._auth = auth_headers or (lambda: {})
        self.session = session or requests.Session()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.bucket = bucket_for(cfg.name, cfg.rate_per_s)
        #: Every wait this client slept for a retry (seconds), in order: what tests inspect.
        self.waits: list[float] = []

    # ---- shared pieces ---------------------------------------------------------------
    def _secrets(self) -> list[str]:
        out = []
        for value in self._auth().values():
            out.append(value)
            out.extend(part for part in value.split() if len(part) >= 8)  # "Bearer <key>" -> the key
        return out

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets())

    def _throttle(self) -> None:
        wait = self.bucket.wait_s()
        if wait > 0:
            self.sleep(wait)

    def _backoff(self, attempt: int, asked: float | None) -> float:
        base = self.cfg.backoff_s
        wait = min(self.cfg.backoff_max_s, base * 2 ** attempt + self.rng.uniform(0, base))
        return max(wait, asked or 0.0)

    def _status(self, r: requests.Response, url: str) -> None:
        """Raise for a response that is not a success (404, retryable, or fatal)."""
        code = r.status_code
        if code == 404:
            raise NotPublished(url)
        if code == 429 or 500 <= code < 600:
            raise _Retryable(f"HTTP {code} ({r.reason})", retry_after_s(r.headers.get("Retry-After")))
        if code in (401, 403):
            raise DownloadFailed(f"{url}: HTTP {code} ({r.reason}): not authorised; check the source's API key "
                                 "(read from the environment, see the README)")
        if not 200 <= code < 300:
            raise DownloadFailed(f"{url}: unexpected HTTP {code} ({r.reason})")

    def _with_retries(self, url: str, attempt_fn: Callable[[int], Any]) -> Any:
        attempts = self.cfg.retries + 1
        for attempt in range(attempts):
            try:
                return attempt_fn(attempt + 1)
            except NotPublished:
                raise
            except DownloadFailed as exc:
                raise DownloadFailed(self._clean(str(exc))) from None
            except _Retryable as exc:
                reason, asked = str(exc), exc.retry_after_s
            except requests.Timeout as exc:
                reason, asked = f"timed out ({self.cfg.timeout_s:g} s without a byte; {type(exc).__name__})", None
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                # A read timeout while streaming surfaces as a ConnectionError wrapping ReadTimeoutError
                # (requests) or a ReadTimeoutError (urllib3, reading the raw body); a cut body as a
                # ProtocolError (IncompleteRead).
                text = str(exc)
                kind = "timed out" if "timed out" in text.lower() else "connection failed"
                reason, asked = f"{kind} ({type(exc).__name__}: {text[:200]})", None
            if attempt + 1 == attempts:
                break
            if asked is not None and asked > self.cfg.backoff_max_s:
                raise DownloadFailed(self._clean(
                    f"{url}: {reason}; the server asks to retry after {asked:g} s, over backoff_max_s="
                    f"{self.cfg.backoff_max_s:g} s of [{self.cfg.name}]: try again later"))
            wait = self._backoff(attempt, asked)
            self.waits.append(wait)
            self.sleep(wait)
        raise DownloadFailed(self._clean(f"{url}: gave up after {attempts} attempts: {reason}"))

    def _get(self, url: str, headers: dict[str, str], params: dict[str, Any] | None = None) -> requests.Response:
        self._throttle()
        t = self.cfg.timeout_s
        return self.session.get(url, headers={**headers, **self._auth()}, params=params, stream=True, timeout=(t, t))

    # ---- small bodies ----------------------------------------------------------------
    def get_bytes(self, url: str, params: dict[str, Any] | None = None, max_bytes: int = SMALL_MAX_BYTES) -> bytes:
        """The whole body of a small resource (a ``.CHECKSUM``, an API answer), retried."""

        def attempt(_n: int) -> bytes:
            with self._get(url, {}, params) as r:
                self._status(r, url)
                body = bytearray()
                for block in r.iter_content(CHUNK_BYTES):
                    body += block
                    if len(body) > max_bytes:
                        raise DownloadFailed(f"{url}: more than {max_bytes} bytes; expected a small answer")
                expected = r.headers.get("Content-Length")
                if expected is not None and expected.isdigit() and int(expected) != len(body):
                    raise _Retryable(f"connection cut at byte {len(body)} of {expected}")
                return bytes(body)

        return self._with_retries(url, attempt)

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        body = self.get_bytes(url, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DownloadFailed(self._clean(f"{url}: not JSON ({exc})")) from None

    # ---- files -----------------------------------------------------------------------
    def download(self, url: str, partial: Path, on_bytes: Callable[[int], None] | None = None) -> Downloaded:
        """Download ``url`` into ``partial`` (resuming what is there); see the module docstring.

        Raises :class:`NotPublished` on a 404 and :class:`DownloadFailed` when retries run
        out; on failure the partial file stays for the next attempt to resume."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        meta_path = _meta_path(partial)
        resumed: list[int] = []
        state: dict[str, Any] = {}

        def load_meta() -> dict[str, Any]:
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                return {}
            return meta if isinstance(meta, dict) and meta.get("url") == url else {}

        def attempt(n: int) -> Downloaded:
            meta = load_meta()
            have = partial.stat().st_size if partial.exists() else 0
            validator = meta.get("etag") or meta.get("last_modified")
            headers: dict[str, str] = {"Accept-Encoding": "identity"}
            if have and validator:
                headers.update({"Range": f"bytes={have}-", "If-Range": validator})
                resumed.append(have)
            elif have:
                discard_partial(partial)  # bytes of unknown origin: start again
                have = 0
            with self._get(url, headers) as r:
                if r.status_code == 416:  # our partial is not a prefix of what is there now
                    discard_partial(partial)
                    raise _Retryable("HTTP 416 (range not satisfiable): restarting from byte 0")
                self._status(r, url)
                if r.status_code == 206:
                    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != have:
                        discard_partial(partial)
                        raise _Retryable(f"a 206 for the wrong range ({r.headers.get('Content-Range')!r}, "
                                         f"asked from byte {have}): restarting")
                    total = int(m.group(3)) if m.group(3) != "*" else None
                    mode = "ab"
                else:  # 200: the whole entity (a server that ignores Range, or a changed file)
                    have, mode = 0, "wb"
                    length = r.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                state.update(etag=r.headers.get("ETag"), last_modified=r.headers.get("Last-Modified"))
                meta_path.write_text(json.dumps({"url": url, "etag": state["etag"],
                                                 "last_modified": state["last_modified"], "total": total}))
                size = have
                with open(partial, mode) as f:
                    try:
                        # read1 hands over what has arrived, so a connection cut mid-body keeps
                        # every byte received (iter_content drops the last incomplete chunk);
                        # raw bytes, undecoded: the checksum is of the file as published.
                        while block := r.raw.read1(CHUNK_BYTES, decode_content=False):
                            f.write(block)
                            size += len(block)
                            if on_bytes is not None:
                                on_bytes(len(block))
                    finally:
                        f.flush()
                        os.fsync(f.fileno())
                if total is not None and size != total:
                    raise _Retryable(f"connection cut at byte {size} of {total}")
                return Downloaded(partial, size, state["etag"], state["last_modified"], n, list(resumed))

        return self._with_retries(url, attempt)


def iter_lines(body: bytes) -> Iterator[str]:
    """Non-empty lines of a small text body (UTF-8; a BOM is dropped)."""
    for line in body.decode("utf-8-sig", errors="replace").splitlines():
        if line.strip():
            yield line.strip()
