"""A local stand-in for the data sources' servers, on 127.0.0.1, with switchable faults.

:class:`FakeSources` is a ``ThreadingHTTPServer`` in a thread. Requests are dispatched by
path prefix through :attr:`FakeSources.routes` (longest prefix wins), so other test modules
add their own APIs (Tardis, Databento) beside the Binance tree::

    fake.routes["/v1/exchanges/"] = my_handler      # my_handler(fake, h) -> None
    fake.reply(h, 200, b"{...}", {"Content-Type": "application/json"})

The default ``/data/`` route serves :attr:`FakeSources.files` (a Binance-public-data-like
tree: zips and ``.CHECKSUM`` files made in code by :func:`binance_zip`) with ``Range`` /
``If-Range`` support and ETags, after applying the faults queued for that path
(:meth:`FakeSources.fault`): an HTTP status (429 with ``Retry-After``, 503, ...), ``"cut"``
(headers for the whole file, half the body, then the connection closes) or ``"slow"`` (no
answer for ``slow_s`` seconds). Every request is logged in :attr:`FakeSources.requests`.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

Handler = Callable[["FakeSources", BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None


@dataclass
class FakeSources:
    """The fake server (see the module docstring). Use as a context manager."""

    files: dict[str, bytes] = field(default_factory=dict)
    routes: dict[str, Handler] = field(default_factory=dict)
    faults: dict[str, list[object]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    slow_s: float = 1.0

    def __post_init__(self) -> None:
        self.routes.setdefault("/data/", FakeSources.serve_file)
        self._lock = threading.Lock()
        fake = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                fake._dispatch(self)

            do_HEAD = do_GET
            do_POST = do_GET  # the Databento-like batch API (quant_assets_tests/fake_vendors.py) takes POSTs

        class _Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client that gave up (timeout test)
                pass

        self._server = _Server(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ---- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> "FakeSources":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- content ----------------------------------------------------------------------
    def put(self, path: str, data: bytes, checksum: str | None = None) -> None:
        """Publish ``data`` at ``path`` with its ``.CHECKSUM`` (``checksum`` overrides the
        SHA-256 it states: a wrong checksum)."""
        name = path.rsplit("/", 1)[-1]
        digest = checksum or hashlib.sha256(data).hexdigest()
        with self._lock:
            self.files[path] = data
            self.files[path + ".CHECKSUM"] = f"{digest}  {name}\n".encode()

    def remove(self, path: str) -> None:
        with self._lock:
            self.files.pop(path, None)
            self.files.pop(path + ".CHECKSUM", None)

    def fault(self, path: str, *faults: object) -> None:
        """Queue faults for the next requests of ``path``, one per request: an int status
        (429 answers with ``Retry-After: 1``), ``(status, headers)``, ``"cut"`` or ``"slow"``."""
        with self._lock:
            self.faults.setdefault(path, []).extend(faults)

    def hits(self, path_part: str) -> list[Seen]:
        """Requests whose path contains ``path_part``."""
        return [r for r in self.requests if path_part in r.path]

    # ---- answering ----------------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        seen = Seen(h.command, parts.path, parts.query, {k: v for k, v in h.headers.items()})
        with self._lock:
            self.requests.append(seen)
        h.seen = seen  # type: ignore[attr-defined]
        prefix = max((p for p in self.routes if parts.path.startswith(p)), key=len, default=None)
        if prefix is None:
            self.reply(h, 404, b"no route\n")
            return
        self.routes[prefix](self, h)

    def reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              reason: str | None = None) -> None:
        """Send a whole response."""
        h.seen.status = status  # type: ignore[attr-defined]
        h.send_response(status, reason)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def take_fault(self, path: str) -> object | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def apply_fault(self, h: BaseHTTPRequestHandler, path: str, body: bytes | None) -> bool:
        """Apply the next queued fault of ``path``; True when it answered the request."""
        fault = self.take_fault(path)
        if fault is None:
            return False
        if fault == "slow":
            time.sleep(self.slow_s)
            return False  # then answers normally (the client has given up by then)
        if fault == "cut":
            data = body or b""
            h.seen.status = 200  # type: ignore[attr-defined]
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("ETag", etag(data))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return True
        status, headers = (fault, {}) if isinstance(fault, int) else fault  # type: ignore[misc]
        if status == 429 and not headers:
            headers = {"Retry-After": "1"}
        self.reply(h, int(status), f"fault {status}\n".encode(), dict(headers))
        return True

    @staticmethod
    def serve_file(fake: "FakeSources", h: BaseHTTPRequestHandler) -> None:
        """The Binance-like tree: ``files`` with ETags, Range and If-Range, after faults."""
        path = urlsplit(h.path).path
        with fake._lock:
            body = fake.files.get(path)
        if fake.apply_fault(h, path, body):
            return
        if body is None:
            fake.reply(h, 404, b"<Error><Code>NoSuchKey</Code></Error>")
            return
        fake.serve_bytes(h, body, {"Last-Modified": "Mon, 01 Apr 2024 00:00:00 GMT"})

    def serve_bytes(self, h: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str] | None = None) -> None:
        """``body`` with an ETag, honouring ``Range`` (a 206 from the asked byte, a 416 past the
        end) unless an ``If-Range`` names another version."""
        tag = etag(body)
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if rng and (if_range is None or if_range == tag) and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
            if start >= len(body):
                self.reply(h, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            self.reply(h, 206, body[start:], {"ETag": tag, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
            return
        self.reply(h, 200, body, {"ETag": tag, **(headers or {})})


def etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


# ---- Binance files made in code ---------------------------------------------------------
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def _zip(name: str, text: str) -> bytes:
    """A deterministic zip holding one CSV (fixed timestamp, so equal rows give equal bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, text)
    return buf.getvalue()


def _span_ms(period: str) -> tuple[int, int]:
    start = date.fromisoformat(period if len(period) == 10 else period + "-01")
    t0 = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp() * 1000)
    if len(period) == 10:
        return t0, t0 + 86_400_000
    nxt = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return t0, int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=timezone.utc).timestamp() * 1000)


def binance_csv(dataset: str, period: str, rows: int = 20, seed: int = 0) -> str:
    """Rows of a Binance ``dataset`` file for ``period`` (USD-M layouts, with headers), in the
    formats ``quant_assets.ingest.binance`` and ``quant_assets.funding.parse`` recognise.
    ``seed`` changes the prices (a re-upload with different bytes)."""
    rng = np.random.default_rng(seed)
    lo, hi = _span_ms(period)
    if dataset == "fundingRate":
        lines = ["calc_time,funding_interval_hours,last_funding_rate"]
        t = lo
        while t < hi:
            lines.append(f"{t},8,{rng.uniform(-1e-4, 3e-4):.8f}")
            t += 8 * 3_600_000
        return "\n".join(lines) + "\n"
    times = np.sort(rng.integers(lo + 1000, hi - 1000, rows))
    px = 60_000 + np.cumsum(rng.normal(0, 5, rows))
    if dataset in ("trades", "aggTrades"):
        if dataset == "trades":
            lines = ["id,price,qty,quote_qty,time,is_buyer_maker"]
            for i, (t, p) in enumerate(zip(times, px)):
                q = round(float(rng.uniform(0.001, 0.5)), 3)
                lines.append(f"{1000 + i},{p:.1f},{q},{p * q:.4f},{t},{'true' if rng.random() < 0.5 else 'false'}")
        else:
            lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
            for i, (t, p) in enumerate(zip(times, px)):
                q = round(float(rng.uniform(0.001, 0.5)), 3)
                lines.append(f"{500 + i},{p:.1f},{q},{1000 + 2 * i},{1001 + 2 * i},{t},{'true' if rng.random() < 0.5 else 'false'}")
        return "\n".join(lines) + "\n"
    if dataset == "bookTicker":
        lines = ["update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"]
        for i, (t, p) in enumerate(zip(times, px)):
            lines.append(f"{9000 + i},{p:.1f},{rng.uniform(0.1, 5):.3f},{p + 0.1:.1f},{rng.uniform(0.1, 5):.3f},{t},{t + 3}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"no fake Binance {dataset!r} files")


def binance_zip(symbol: str, dataset: str, period: str, rows: int = 20, seed: int = 0) -> bytes:
    """``<symbol>-<dataset>-<period>.zip`` as Binance publishes it (one CSV inside)."""
    return _zip(f"{symbol}-{dataset}-{period}.csv", binance_csv(dataset, period, rows, seed))


def binance_path(market: str, granularity: str, dataset: str, symbol: str, period: str) -> str:
    """The URL path of a Binance public-data zip."""
    root = {"spot": "spot", "um": "futures/um", "cm": "futures/cm"}[market]
    return f"/data/{root}/{granularity}/{dataset}/{symbol}/{symbol}-{dataset}-{period}.zip"


def publish_binance(fake: FakeSources, market: str, dataset: str, symbol: str, periods: list[str],
                    rows: int = 20, seed: int = 0) -> dict[str, bytes]:
    """Put the zips of ``periods`` (``YYYY-MM`` monthly, ``YYYY-MM-DD`` daily) on ``fake``;
    returns path -> bytes."""
    out = {}
    for period in periods:
        gran = "daily" if len(period) == 10 else "monthly"
        path = binance_path(market, gran, dataset, symbol, period)
        data = binance_zip(symbol, dataset, period, rows, seed)
        fake.put(path, data)
        out[path] = data
    return out
