"""Tardis.dev downloadable CSV datasets: one gzip-compressed CSV per exchange, data type, symbol
and UTC day (split by Tardis's receive time, ``local_timestamp``).

Availability comes from Tardis's API, never from the clock alone:
``GET {base_url}/v1/exchanges/{exchange}`` gives ``datasets.exportedFrom`` / ``exportedUntil``
(the export reaches up to that instant, exclusive) and, per symbol, its ``type`` (spot,
perpetual, future), ``dataTypes``, ``availableSince`` and ``availableTo``. A day D is planned
only when the whole day ``[D, D+1)`` lies inside all of them, so a day past ``exportedUntil``
is never requested.

Files: ``{datasets_url}/v1/{exchange}/{data_type}/{YYYY}/{MM}/{DD}/{SYMBOL}.csv.gz`` with
``Authorization: Bearer <key>``; the key comes from ``$TARDIS_API_KEY`` at request time only.
Without a key Tardis serves the first day of each month and nothing else: those days are
fetched, every other day is refused before any request with a message naming the variable.

A file lands as ``{exchange}_{data_type}_{YYYY-MM-DD}_{SYMBOL}.csv.gz`` in the instrument's
landing folder: the partition symbol of the Tardis symbol and the type the API gives it
(``binance-futures`` ``BTCUSDT``, a perpetual -> ``BTCUSDT-PERP``; ``binance`` ``BTCUSDT``, spot
-> ``BTCUSDT``; see :mod:`quant_assets.lake.identity`), or the entry's ``landing`` override.
The lake reads these files by content: ``trades``/``quotes`` as ticks
(:mod:`quant_assets.ingest.tardis`), ``incremental_book_L2``/``book_snapshot_25`` as book
(:mod:`quant_assets.book.parse.tardis`), ``derivative_ticker`` as funding
(:mod:`quant_assets.funding.parse`, perpetual folders only).

Verification: the size received equals ``Content-Length`` (the download checks it) and the gzip
stream decompresses whole, to its end-of-stream marker and CRC, and starts with a Tardis CSV
header. Tardis sends an MD5 header too, but it is not the MD5 of the whole file's bytes (the
export is multipart-uploaded), so it is not compared.

Configuration (``sources.toml``)::

    [tardis]
    base_url = "https://api.tardis.dev"          # the API (the default)
    datasets_url = "https://datasets.tardis.dev" # the CSV files (the default)

    [[tardis.fetch]]
    exchange = "binance-futures"
    instruments = ["BTCUSDT-PERP"]   # or the Tardis symbol, "BTCUSDT": the API's type decides the folder
    datasets = ["trades", "incremental_book_L2", "derivative_ticker"]
    start = "2024-01"
    end = "2024-03"                  # optional: up to what is exported

Plain Python, no Dagster.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from quant_assets.lake.identity import KINDS, parse_symbol, symbol_for
from quant_assets.lake.symbols import normalise_symbol

NAME = "tardis"
KEY_ENV = "TARDIS_API_KEY"
DEFAULT_API_URL = "https://api.tardis.dev"
DEFAULT_DATASETS_URL = "https://datasets.tardis.dev"
#: The data types fetched, each read by a lake parser (see the module docstring).
DATA_TYPES = ("trades", "quotes", "incremental_book_L2", "book_snapshot_25", "derivative_ticker")
#: Every Tardis CSV starts with these columns (the lake's Tardis parsers key on them too).
CSV_HEAD = b"exchange,symbol,timestamp,local_timestamp"
_OPTIONS = {"exchange"}
_SOURCE_OPTIONS = {"datasets_url"}
_READ = 1 << 20


class MissingKey(Exception):
    """A file that needs ``$TARDIS_API_KEY``, asked for without one (nothing is requested)."""


# ---- the exchange's datasets (GET /v1/exchanges/{exchange}) ---------------------------------

@dataclass(frozen=True)
class TardisSymbol:
    """One dataset symbol of an exchange: its Tardis id, type and available span (UTC;
    ``available_to`` exclusive, None while it is still collected)."""

    id: str
    type: str
    data_types: tuple[str, ...]
    available_since: datetime
    available_to: datetime | None


@dataclass(frozen=True)
class ExchangeDatasets:
    """What Tardis has exported for one exchange: ``[exported_from, exported_until)`` (UTC)."""

    exchange: str
    exported_from: datetime
    exported_until: datetime
    symbols: dict[str, TardisSymbol]

    def symbol(self, symbol: str, where: str) -> TardisSymbol:
        found = self.symbols.get(symbol.upper())
        if found is None:
            sample = ", ".join(sorted(self.symbols)[:8])
            raise ValueError(f"{where}: Tardis has no {self.exchange} dataset symbol {symbol!r} (it has e.g. {sample})")
        return found

    def complete_days(self, sym: TardisSymbol, first: date, last: date) -> list[date]:
        """Days in ``[first, last]`` whose whole UTC day is exported and inside the symbol's span."""
        lo = max(self.exported_from, sym.available_since)
        hi = min(self.exported_until, sym.available_to) if sym.available_to else self.exported_until
        out, d = [], first
        while d <= last:
            start = datetime.combine(d, time(), timezone.utc)
            if start >= lo and start + timedelta(days=1) <= hi:
                out.append(d)
            d += timedelta(days=1)
        return out


def _instant(value: object, where: str) -> datetime:
    """An ISO-8601 UTC instant of the API (``2024-03-08T00:00:00.000Z``)."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an ISO-8601 time, got {value!r}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: expected an ISO-8601 time, got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_exchange(doc: Any, exchange: str, url: str) -> ExchangeDatasets:
    """The datasets part of an exchange-details response; errors name ``url`` and the field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{url}: expected a JSON object, got {type(doc).__name__}")
    ds = doc.get("datasets")
    if not isinstance(ds, dict):
        raise ValueError(f"{url}: no 'datasets' object: Tardis offers no downloadable CSV datasets for {exchange!r}")
    symbols: dict[str, TardisSymbol] = {}
    raw_symbols = ds.get("symbols")
    if not isinstance(raw_symbols, list):
        raise ValueError(f"{url}: datasets.symbols: expected a list, got {raw_symbols!r}")
    for i, s in enumerate(raw_symbols):
        at = f"{url}: datasets.symbols[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("id"), str):
            raise ValueError(f"{at}: expected an object with an 'id', got {s!r}")
        types = s.get("dataTypes", ds.get("dataTypes", []))
        if not isinstance(types, list):
            raise ValueError(f"{at}.dataTypes: expected a list, got {types!r}")
        to = s.get("availableTo")
        symbols[s["id"].upper()] = TardisSymbol(
            id=s["id"], type=str(s.get("type", "")), data_types=tuple(map(str, types)),
            available_since=_instant(s.get("availableSince"), f"{at}.availableSince"),
            available_to=_instant(to, f"{at}.availableTo") if to is not None else None,
        )
    return ExchangeDatasets(
        exchange=exchange,
        exported_from=_instant(ds.get("exportedFrom"), f"{url}: datasets.exportedFrom"),
        exported_until=_instant(ds.get("exportedUntil"), f"{url}: datasets.exportedUntil"),
        symbols=symbols,
    )


# ---- names --------------------------------------------------------------------------------

def url_symbol(symbol: str) -> str:
    """A symbol as Tardis spells it in a file path: upper case, ``/`` and ``:`` as ``-``."""
    return symbol.replace("/", "-").replace(":", "-").upper()


def file_url(datasets_url: str, exchange: str, data_type: str, day: date, symbol: str) -> str:
    return f"{datasets_url.rstrip('/')}/v1/{exchange}/{data_type}/{day:%Y/%m/%d}/{url_symbol(symbol)}.csv.gz"


def landing_name(exchange: str, data_type: str, day: date, symbol: str) -> str:
    """``binance-futures_trades_2024-03-08_BTCUSDT.csv.gz`` (Tardis's own download names)."""
    return f"{exchange}_{data_type}_{day:%Y-%m-%d}_{url_symbol(symbol)}.csv.gz"


def landing_folder(sym: TardisSymbol, override: str | None, where: str) -> str:
    """The partition symbol a Tardis symbol lands under (``override`` first)."""
    if override:
        return normalise_symbol(override)
    if sym.type not in KINDS:
        raise ValueError(f"{where}: Tardis gives {sym.id!r} the type {sym.type!r}, which has no landing folder rule "
                         f"(one of {', '.join(KINDS)}); set landing = \"<SYMBOL>\" in the entry")
    try:
        return normalise_symbol(symbol_for(url_symbol(sym.id), sym.type))
    except ValueError as exc:
        raise ValueError(f"{where}: no landing folder for Tardis {sym.type} {sym.id!r} ({exc}); "
                         "set landing = \"<SYMBOL>\" in the entry") from None


def tardis_symbol(instrument: str) -> str:
    """The Tardis symbol of an entry's instrument: a partition symbol's raw symbol
    (``BTCUSDT-PERP`` -> ``BTCUSDT``), or the Tardis symbol itself."""
    return parse_symbol(instrument)[0]


# ---- verification -------------------------------------------------------------------------

def verify_gzip(path: Path) -> int:
    """Raise ``VerifyError`` unless ``path`` is a whole gzip stream (every member to its
    end-of-stream marker, CRC and length checked) of a Tardis CSV; returns the decompressed
    size (bytes). An empty file (Tardis's answer for a day without data) is refused too."""
    from quant_assets.sources.model import VerifyError

    total, head = 0, b""
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_READ):
                if len(head) < len(CSV_HEAD):
                    head += chunk[: len(CSV_HEAD) - len(head)]
                total += len(chunk)
    except EOFError as exc:
        raise VerifyError(f"truncated gzip: the stream ends before its end marker ({exc})") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a bad CRC is too
        raise VerifyError(f"corrupt gzip ({type(exc).__name__}: {exc})") from None
    if total == 0:
        raise VerifyError("no rows: Tardis serves an empty file for a day without data (exchange downtime, no trading)")
    if head != CSV_HEAD:
        raise VerifyError(f"not a Tardis CSV: starts with {head[:60]!r}, expected {CSV_HEAD.decode()!r}")
    return total


# ---- the source ---------------------------------------------------------------------------

def _months(start: str, end: str) -> tuple[date, date]:
    y, m = map(int, start.split("-"))
    first = date(y, m, 1)
    y, m = map(int, end.split("-"))
    last = (date(y + (m == 12), m % 12 + 1, 1)) - timedelta(days=1)
    return first, last


class TardisSource:
    """Tardis.dev CSV datasets (see the module docstring). ``get_json(url)`` sends the
    exchange-details request (by default through :class:`quant_assets.sources.http.HttpClient`
    of this source: its rate limit, retries and key redaction); ``env`` is where the key is read
    from, at request time."""

    name = NAME

    def __init__(self, config: Any, get_json: Callable[[str], Any] | None = None, env: Any = os.environ) -> None:
        self.config = config
        options = dict(getattr(config, "options", {}) or {})
        unknown = sorted(set(options) - _SOURCE_OPTIONS)
        if unknown:
            raise ValueError(f"{getattr(config, 'where', '[tardis]')}: unknown setting(s) {', '.join(unknown)} "
                             f"(known besides the common ones: {', '.join(sorted(_SOURCE_OPTIONS))})")
        self.api_url = str(getattr(config, "base_url", DEFAULT_API_URL)).rstrip("/")
        self.datasets_url = str(options.get("datasets_url", DEFAULT_DATASETS_URL)).rstrip("/")
        self._get_json = get_json
        self._env = env
        self._details: dict[str, ExchangeDatasets] = {}

    # -- keys: read when a request is made, never stored --
    def _key(self) -> str | None:
        key = self._env.get(KEY_ENV)
        return key.strip() if key and key.strip() else None

    def auth_headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def secrets(self) -> tuple[str, ...]:
        """The secrets a message must never show (for redaction)."""
        key = self._key()
        return (key,) if key else ()

    def refuse(self, rf: Any) -> str | None:
        """Why ``rf`` must not be requested now, or None. Without a key only the first day of
        a month is served: any other day is refused here, before a request is sent."""
        if self._key() is None and not rf.period.endswith("-01"):
            return (f"{KEY_ENV} is not set: without a key Tardis serves only the first day of each month "
                    f"({rf.period} is not one); set {KEY_ENV} to fetch it")
        return None

    def download(self, rf: Any, partial: Path, client: Any) -> None:
        """The core's resumable download (``client``), unless :meth:`refuse` says no: then a
        ``DownloadFailed`` with the reason, and no request."""
        from quant_assets.sources.http import DownloadFailed

        reason = self.refuse(rf)
        if reason is not None:
            raise DownloadFailed(reason)
        client.download(rf.url, partial)

    # -- configuration --
    def check_entry(self, entry: Any) -> None:
        exchange = entry.options.get("exchange")
        if not isinstance(exchange, str) or not exchange.strip():
            raise ValueError(f"{entry.where}: missing field 'exchange' (the Tardis exchange id, e.g. \"binance-futures\")")
        unknown = sorted(set(entry.options) - _OPTIONS)
        if unknown:
            raise ValueError(f"{entry.where}: unknown field(s) {', '.join(unknown)} for tardis (known: exchange)")
        bad = [d for d in entry.datasets if d not in DATA_TYPES]
        if bad:
            raise ValueError(f"{entry.where} datasets: {', '.join(map(repr, bad))} not fetched from Tardis; "
                             f"expected some of {', '.join(DATA_TYPES)}")

    def exchange_details(self, exchange: str) -> ExchangeDatasets:
        """The exchange's datasets, asked once per source object (one fetch)."""
        if exchange not in self._details:
            if self._get_json is None:
                from quant_assets.sources.http import HttpClient

                self._get_json = HttpClient(self.config, self.auth_headers).get_json
            url = f"{self.api_url}/v1/exchanges/{exchange}"
            self._details[exchange] = parse_exchange(self._get_json(url), exchange, url)
        return self._details[exchange]

    def plan(self, entry: Any, now: datetime) -> list[Any]:
        """Every day of the entry's months that Tardis has exported by ``now`` (its
        ``exportedUntil`` and each symbol's ``availableSince``/``availableTo``; ``now`` only caps
        it), per instrument and data type."""
        from quant_assets.sources.model import RemoteFile

        self.check_entry(entry)
        exchange = entry.options["exchange"].strip()
        details = self.exchange_details(exchange)
        now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        end = entry.end or f"{now:%Y-%m}"
        first, last = _months(entry.start, end)
        last = min(last, now.date() - timedelta(days=1))
        out: list[RemoteFile] = []
        for instrument in entry.instruments:
            where = f"{entry.where} instrument {instrument}"
            sym = details.symbol(tardis_symbol(instrument), where)
            folder = landing_folder(sym, entry.landing, where)
            if not entry.landing and normalise_symbol(instrument) not in (folder, url_symbol(sym.id)):
                raise ValueError(f"{where}: Tardis says {exchange} {sym.id} is a {sym.type}, whose landing folder is "
                                 f"{folder!r}, not {instrument!r}; write {folder!r} or set landing")
            missing = [d for d in entry.datasets if sym.data_types and d not in sym.data_types]
            if missing:
                raise ValueError(f"{where}: Tardis has no {', '.join(missing)} for {exchange} {sym.id} "
                                 f"(it has {', '.join(sym.data_types)})")
            days = details.complete_days(sym, first, last)
            for data_type in entry.datasets:
                for day in days:
                    out.append(RemoteFile(
                        source=NAME, dataset=f"{exchange}_{data_type}", symbol=folder, period=f"{day:%Y-%m-%d}",
                        months=(f"{day:%Y-%m}",), url=file_url(self.datasets_url, exchange, data_type, day, sym.id),
                        name=landing_name(exchange, data_type, day, sym.id),
                        extra=(("exchange", exchange), ("data_type", data_type), ("tardis_symbol", sym.id)),
                    ))
        return out

    def verify(self, path: Path, rf: Any) -> None:
        """The size (when the plan or the response gave one) and the whole gzip stream."""
        from quant_assets.sources.model import VerifyError

        if rf.size is not None and path.stat().st_size != rf.size:
            raise VerifyError(f"{path.stat().st_size} bytes, expected {rf.size} (Content-Length)")
        verify_gzip(path)


def make(config: Any) -> TardisSource:
    """The source for ``[tardis]`` (:func:`quant_assets.sources.make_source`)."""
    return TardisSource(config)
