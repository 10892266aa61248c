"""Tardis-like and Databento-like APIs on the fake sources server (:mod:`quant_assets_tests.fake_sources`).

:class:`FakeTardis` adds, through the server's ``routes``:

- ``/tardis-api/v1/exchanges/<exchange>``: the exchange's ``datasets`` (``exportedFrom``,
  ``exportedUntil``, per symbol ``type``, ``dataTypes``, ``availableSince``, ``availableTo``);
- ``/tardis-datasets/v1/<exchange>/<type>/<YYYY>/<MM>/<DD>/<SYMBOL>.csv.gz``: gzip CSVs made in
  code (the layouts the lake's Tardis parsers read), Range-able, after the server's faults.
  Without ``Authorization: Bearer <key>`` only the first day of a month is served (401 with a
  body that echoes the Authorization header otherwise, like a careless server would).

:class:`FakeDatabento` is the Databento batch API the official client speaks (``/v0/batch.*``,
``/v0/metadata.get_dataset_range``, file downloads), with HTTP Basic auth. The client forces
``https`` on its gateway, so this server speaks TLS with a certificate made in code
(:func:`self_signed`): tests point ``REQUESTS_CA_BUNDLE`` at it.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import ssl
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from quant_assets_tests.builders import dbn_file, dbn_mbo_records, dbn_mbp10_records, tardis_book_snapshot_csv, tardis_incremental_l2_csv
from quant_assets_tests.fake_sources import FakeSources, etag

TARDIS_API = "/tardis-api"
TARDIS_DATASETS = "/tardis-datasets"


def _us(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000


def tardis_csv(exchange: str, data_type: str, symbol: str, day: dt.date, seed: int = 0) -> str:
    """A few rows of a Tardis ``data_type`` file for ``day`` (µs times inside the day), in the
    layouts :mod:`quant_assets.ingest.tardis`, :mod:`quant_assets.book.parse.tardis` and
    :mod:`quant_assets.funding.parse` read. ``seed`` moves prices (a re-export)."""
    t0 = _us(day) + 3_600_000_000  # 01:00 UTC
    px = 42_000.0 + seed
    if data_type == "trades":
        rows = ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount"]
        rows += [f"{exchange},{symbol},{t0 + i * 1000},{t0 + i * 1000 + 50},{100 + i},{'buy' if i % 2 else 'sell'},"
                 f"{px + i * 0.5},{0.01 * (i + 1):.3f}" for i in range(6)]
    elif data_type == "quotes":
        rows = ["exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"]
        rows += [f"{exchange},{symbol},{t0 + i * 1000},{t0 + i * 1000 + 50},1.5,{px + 0.5 + i},{px + i},2.0" for i in range(6)]
    elif data_type == "incremental_book_L2":
        return tardis_incremental_l2_csv(symbol, t0).replace("binance-futures,", f"{exchange},")
    elif data_type == "book_snapshot_25":
        return tardis_book_snapshot_csv(25, symbol, t0).replace("binance-futures,", f"{exchange},")
    elif data_type == "derivative_ticker":
        # A funding event at 08:00: its rate published before it, the file running past it.
        f_us = _us(day) + 8 * 3_600_000_000
        rows = ["exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
                "open_interest,last_price,index_price,mark_price"]
        for i, t in enumerate((f_us - 7_200_000_000, f_us - 60_000_000, f_us + 1_000_000, f_us + 3_600_000_000)):
            nxt = f_us if t < f_us else f_us + 8 * 3_600_000_000
            rows.append(f"{exchange},{symbol},{t},{t + 30},{nxt},0.0001{i},0.0001,1000.5,{px},{px - 1},{px + 0.25}")
    else:
        raise ValueError(f"no fake Tardis {data_type!r} files")
    return "\n".join(rows) + "\n"


def gz(text: str) -> bytes:
    """Deterministic gzip (mtime 0): equal text, equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(text.encode())
    return buf.getvalue()


def _iso(day: dt.date) -> str:
    return f"{day:%Y-%m-%d}T00:00:00.000Z"


@dataclass
class FakeTardis:
    """The Tardis API and datasets on ``fake`` (see the module docstring)."""

    fake: FakeSources
    key: str | None = None
    exported_from: dt.date = dt.date(2019, 11, 17)
    exported_until: dt.date = dt.date(2024, 3, 6)
    #: exchange -> symbol id -> (type, data types, available since, available to or None)
    symbols: dict[str, dict[str, tuple[str, list[str], dt.date, dt.date | None]]] = field(default_factory=dict)
    #: path -> bytes of every file served
    files: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fake.routes[f"{TARDIS_API}/v1/exchanges/"] = self._exchange
        self.fake.routes[f"{TARDIS_DATASETS}/v1/"] = self._dataset

    @property
    def api_url(self) -> str:
        return self.fake.url + TARDIS_API

    @property
    def datasets_url(self) -> str:
        return self.fake.url + TARDIS_DATASETS

    def add_symbol(self, exchange: str, symbol: str, type_: str, data_types: list[str],
                   since: dt.date = dt.date(2020, 1, 1), to: dt.date | None = None) -> None:
        self.symbols.setdefault(exchange, {})[symbol] = (type_, data_types, since, to)

    @staticmethod
    def path(exchange: str, data_type: str, day: dt.date, symbol: str) -> str:
        return f"{TARDIS_DATASETS}/v1/{exchange}/{data_type}/{day:%Y/%m/%d}/{symbol}.csv.gz"

    def publish(self, exchange: str, data_type: str, symbol: str, days: list[dt.date], seed: int = 0,
                body: bytes | None = None) -> dict[str, bytes]:
        """Serve the days' files (``body`` replaces the made bytes: a corrupt file)."""
        out = {}
        for day in days:
            p = self.path(exchange, data_type, day, symbol)
            out[p] = self.files[p] = body if body is not None else gz(tardis_csv(exchange, data_type, symbol, day, seed))
        return out

    def _exchange(self, fake: FakeSources, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        exchange = path.rsplit("/", 1)[-1]
        if fake.apply_fault(h, path, None):
            return
        if exchange not in self.symbols:
            fake.reply(h, 404, json.dumps({"code": 100, "message": f"unknown exchange {exchange}"}).encode())
            return
        syms = [{"id": s, "type": t, "dataTypes": types, "availableSince": _iso(since),
                 **({"availableTo": _iso(to)} if to else {})}
                for s, (t, types, since, to) in self.symbols[exchange].items()]
        doc = {"id": exchange, "name": exchange, "enabled": True, "supportsDatasets": True,
               "datasets": {"formats": ["csv"], "exportedFrom": _iso(self.exported_from),
                            "exportedUntil": _iso(self.exported_until), "symbols": syms}}
        fake.reply(h, 200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _dataset(self, fake: FakeSources, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        body = self.files.get(path)
        day = path.split("/")[-4:-1]  # YYYY, MM, DD
        auth = h.headers.get("Authorization")
        if day[-1] != "01" and (self.key is None or auth != f"Bearer {self.key}"):
            # a careless server that echoes what it was sent: the fetch must not keep it
            fake.reply(h, 401, json.dumps({"message": f"invalid or missing API key, got Authorization: {auth}"}).encode())
            return
        if fake.apply_fault(h, path, body):
            return
        if body is None:
            fake.reply(h, 404, b"not found")
            return
        # Tardis's Content-MD5-like header is not a whole-file MD5: serve one that is wrong on purpose
        fake.serve_bytes(h, body, {"Content-Type": "application/gzip", "x-md5": "0" * 32})


# ---- TLS for the Databento gateway ------------------------------------------------------

def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for ``127.0.0.1`` (IP SAN), made in code; ``(cert, key)`` paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fake-gateway.pem", folder / "fake-gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def serve_tls(fake: FakeSources, cert: Path, key: Path) -> str:
    """Make ``fake`` (not started yet) speak TLS; returns its ``https://`` URL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = fake._server  # noqa: SLF001 - the fake's own socket, wrapped before it serves
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    host, port = server.server_address[:2]
    return f"https://{host}:{port}"


def dbn_bytes(schema: str, symbol: str, month: str, seed: int = 0) -> bytes:
    """A small zstd DBN file of ``schema`` (mbp-10 or mbo) for ``symbol`` (the builders' records)."""
    records = dbn_mbp10_records() if schema == "mbp-10" else dbn_mbo_records()
    return dbn_file(schema, records[: len(records) - seed] if seed else records, symbol=symbol, zstd=True)


@dataclass
class FakeDatabento:
    """The Databento batch API on ``fake`` (TLS; see the module docstring). Jobs take
    ``polls_to_done`` ``get_job_details`` polls to be ``done``."""

    fake: FakeSources
    url: str
    key: str
    dataset: str = "GLBX.MDP3"
    available_end: str = "2024-03-04T00:00:00.000000000Z"
    polls_to_done: int = 2
    jobs: dict[str, dict] = field(default_factory=dict)
    #: (schema, symbol, "YYYY-MM") -> bytes a job for it returns
    data: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    #: job id -> file name -> (bytes served, hash stated): lets a test state a wrong hash
    served: dict[str, dict[str, tuple[bytes, str]]] = field(default_factory=dict)
    wrong_hash: bool = False

    def __post_init__(self) -> None:
        for p in ("/v0/batch.submit_job", "/v0/batch.list_jobs", "/v0/batch.get_job_details", "/v0/batch.list_files",
                  "/v0/metadata.get_dataset_range", "/v0/batch/download/"):
            self.fake.routes[p] = self._route

    def publish(self, schema: str, symbol: str, month: str, seed: int = 0) -> bytes:
        self.data[(schema, symbol, month)] = b = dbn_bytes(schema, symbol, month, seed)
        return b

    # -- helpers --
    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        want = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        return h.headers.get("Authorization") == want

    def _json(self, h: BaseHTTPRequestHandler, obj: object, status: int = 200) -> None:
        self.fake.reply(h, status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _route(self, fake: FakeSources, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        if fake.apply_fault(h, path, self._file_body(path)):
            return
        if not self._authorised(h):
            # echo the Authorization header and the user name in it, as a careless server might
            sent = h.headers.get("Authorization", "")
            user = ""
            if sent.startswith("Basic "):
                user = base64.b64decode(sent[6:]).decode(errors="replace")
            self._json(h, {"detail": f"Authentication failed for {user!r} ({sent})"}, 401)
            return
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if h.command == "POST":
            length = int(h.headers.get("Content-Length", "0"))
            query.update({k: v[-1] for k, v in parse_qs(h.rfile.read(length).decode()).items()})
        if path == "/v0/metadata.get_dataset_range":
            self._json(h, {"start": "2017-05-21T00:00:00.000000000Z", "end": self.available_end,
                           "schema": {"mbp-10": {"start": "2017-05-21T00:00:00.000000000Z", "end": self.available_end},
                                      "mbo": {"start": "2017-05-21T00:00:00.000000000Z", "end": self.available_end}}})
        elif path == "/v0/batch.submit_job":
            self._submit(h, query)
        elif path == "/v0/batch.list_jobs":
            states = set(query.get("states", "queued,processing,done").split(","))
            self._json(h, [self._public(j) for j in self.jobs.values() if j["state"] in states])
        elif path == "/v0/batch.get_job_details":
            job = self.jobs.get(query.get("job_id", ""))
            if job is None:
                self._json(h, {"detail": "no such job"}, 404)
                return
            job["_polls"] += 1
            if job["_polls"] >= self.polls_to_done:
                job["state"] = "done"
            elif job["_polls"] >= 1:
                job["state"] = "processing"
            self._json(h, self._public(job))
        elif path == "/v0/batch.list_files":
            job_id = query.get("job_id", "")
            files = self.served.get(job_id, {})
            self._json(h, [{"filename": n, "size": len(b), "hash": f"sha256:{stated}",
                            "urls": {"https": f"{self.url}/v0/batch/download/{job_id}/{n}", "ftp": ""}}
                           for n, (b, stated) in files.items()])
        else:
            body = self._file_body(path)
            if body is None:
                self._json(h, {"detail": "not found"}, 404)
                return
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[len("bytes="):].split("-")[0])
                fake.reply(h, 206, body[start:], {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                return
            fake.reply(h, 200, body, {"Content-Type": "application/octet-stream"})

    def _file_body(self, path: str) -> bytes | None:
        if not path.startswith("/v0/batch/download/"):
            return None
        job_id, _, name = path[len("/v0/batch/download/"):].partition("/")
        got = self.served.get(job_id, {}).get(name)
        return got[0] if got else None

    def _submit(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        month = q["start"][:7]
        key = (q["schema"], q["symbols"], month)
        body = self.data.get(key)
        job_id = f"GLBX-{len(self.jobs) + 1:08d}"
        job = {"id": job_id, "state": "queued", "dataset": q["dataset"], "schema": q["schema"], "symbols": q["symbols"],
               "stype_in": q.get("stype_in"), "stype_out": q.get("stype_out"), "start": f"{q['start']}T00:00:00.000000000Z",
               "end": f"{q['end']}T00:00:00.000000000Z", "encoding": q.get("encoding"), "compression": q.get("compression"),
               "split_duration": q.get("split_duration"), "delivery": q.get("delivery"), "_polls": 0}
        self.jobs[job_id] = job
        files: dict[str, tuple[bytes, str]] = {}
        if body is not None:
            name = f"{q['dataset'].lower().replace('.', '-')}-{month.replace('-', '')}.{q['schema']}.dbn.zst"
            stated = hashlib.sha256(body).hexdigest()
            if self.wrong_hash:
                stated = hashlib.sha256(body + b"x").hexdigest()
            files[name] = (body, stated)
        meta = json.dumps({"query": q}).encode()
        files["metadata.json"] = (meta, hashlib.sha256(meta).hexdigest())
        self.served[job_id] = files
        self._json(h, self._public(job))

    @staticmethod
    def _public(job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}
