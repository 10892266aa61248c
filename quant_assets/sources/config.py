"""``sources.toml``: where raw data is fetched from, and what to fetch.

The file is the repository's ``sources.toml`` or the one named by ``$QUANT_SOURCES``. One table
per source; every setting has a default, so a source needs only its ``fetch`` entries::

    [binance]
    base_url = "https://data.binance.vision"   # the real public archive (the default)
    publish_utc = "06:00"     # when a UTC day's files are normally out, the next day (HH:MM UTC)
    rate_per_s = 5.0          # requests per second, per process (token bucket)
    timeout_s = 60.0          # connect and read timeout of one request (seconds)
    retries = 5               # further attempts after a 429, a 5xx, a cut connection or a timeout
    backoff_s = 1.0           # first backoff (doubled each attempt, plus jitter; seconds)
    recheck_days = 2          # re-check landed files this recent for re-uploads (days)

    [[binance.fetch]]
    instruments = ["BTCUSDT-PERP"]   # partition symbols (quant_assets/lake/identity.py)
    datasets = ["trades", "fundingRate"]
    start = "2024-01"                # first month
    end = "2024-06"                  # last month (optional: up to now)
    # landing = "BTCUSDT-PERP"       # landing folder override (one instrument only)
    # market = "um"                  # a source's own options (Binance: spot | um | cm)

The landing folder of an instrument is its partition symbol (``BTCUSDT`` spot,
``BTCUSDT-PERP`` USD-M perpetual, ``BTCUSDT-250328`` dated future) unless ``landing`` says
otherwise. Keys that are not listed here stay in :attr:`FetchEntry.options` /
:attr:`SourceConfig.options` for the source to check (``Source.check_entry``). No setting is a
secret: API keys come from the environment only (see each source's module).

Errors name the file, the entry (``[[binance.fetch]] #2``) and the field. Plain Python.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_assets.lake.symbols import normalise_symbol
from quant_assets.settings import REPO_ROOT

CONFIG_ENV = "QUANT_SOURCES"

#: Per-source defaults. ``base_url`` is the REAL public endpoint: tests pass their own.
DEFAULTS: dict[str, dict[str, Any]] = {
    # Binance writes a UTC day's daily files in the early hours of the next day.
    "binance": {"base_url": "https://data.binance.vision", "publish_utc": "06:00", "rate_per_s": 5.0},
    # Tardis exports a day's CSVs after the day ends; availability comes from its API.
    "tardis": {"base_url": "https://api.tardis.dev", "publish_utc": "03:00", "rate_per_s": 2.0},
    "databento": {"base_url": "https://hist.databento.com", "publish_utc": "10:00", "rate_per_s": 1.0},
}
_COMMON = {"base_url": "https://example.invalid", "publish_utc": "06:00", "rate_per_s": 2.0, "timeout_s": 60.0,
           "retries": 5, "backoff_s": 1.0, "backoff_max_s": 60.0, "recheck_days": 2}
_SETTINGS = set(_COMMON)
_ENTRY_FIELDS = {"instruments", "datasets", "start", "end", "landing"}
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class FetchEntry:
    """One ``[[<source>.fetch]]`` entry: instruments × datasets × months.

    ``end`` None means up to now. ``landing`` overrides the landing folder (one instrument).
    ``where`` names the entry in messages (``sources.toml [[binance.fetch]] #1``)."""

    source: str
    instruments: tuple[str, ...]
    datasets: tuple[str, ...]
    start: str
    end: str | None
    landing: str | None
    options: dict[str, Any]
    where: str

    def landing_for(self, instrument: str) -> str:
        """The landing folder (partition symbol) of ``instrument``."""
        return normalise_symbol(self.landing) if self.landing else normalise_symbol(instrument)


@dataclass(frozen=True)
class SourceConfig:
    """One source's settings (units in the names: seconds, requests per second, days)."""

    name: str
    base_url: str
    publish_utc: str
    rate_per_s: float
    timeout_s: float
    retries: int
    backoff_s: float
    backoff_max_s: float
    recheck_days: int
    entries: tuple[FetchEntry, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    @property
    def publish_minutes(self) -> int:
        """``publish_utc`` as minutes after midnight UTC."""
        h, m = self.publish_utc.split(":")
        return int(h) * 60 + int(m)


@dataclass(frozen=True)
class SourcesConfig:
    """Every configured source, by name, and the file they came from (None: no file)."""

    path: Path | None
    sources: dict[str, SourceConfig]

    def get(self, name: str) -> SourceConfig:
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ValueError(f"{self.path or 'sources.toml'}: no source {name!r} configured (configured: {known})")
        return self.sources[name]


def config_path() -> Path:
    """``$QUANT_SOURCES`` or the repository's ``sources.toml``."""
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "sources.toml")


def _number(value: object, where: str, unit: str, *, integer: bool = False, positive: bool = True) -> float | int:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (value < 0) or (positive and value == 0):  # type: ignore[operator]
        kind = "a whole number" if integer else "a number"
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{where}: expected {kind} {bound} ({unit}), got {value!r}")
    return int(value) if integer else float(value)  # type: ignore[arg-type]


def _month(value: object, where: str) -> str:
    if not isinstance(value, str) or not _MONTH.match(value):
        raise ValueError(f"{where}: expected a month like \"2024-01\" (a string), got {value!r}")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: expected a non-empty list of names, got {value!r}")
    return tuple(v.strip() for v in value)


def _entry(source: str, raw: object, where: str) -> FetchEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table of instruments, datasets, start[, end, landing]")
    for req in ("instruments", "datasets", "start"):
        if req not in raw:
            raise ValueError(f"{where}: missing field {req!r}")
    instruments = _strings(raw["instruments"], f"{where} instruments")
    for inst in instruments:
        try:
            normalise_symbol(inst)
        except ValueError as exc:
            raise ValueError(f"{where} instruments: {exc}") from None
    datasets = _strings(raw["datasets"], f"{where} datasets")
    start = _month(raw["start"], f"{where} start")
    end = _month(raw["end"], f"{where} end") if raw.get("end") is not None else None
    if end is not None and end < start:
        raise ValueError(f"{where} end: {end} is before start {start}")
    landing = raw.get("landing")
    if landing is not None:
        if not isinstance(landing, str):
            raise ValueError(f"{where} landing: expected a landing folder name (a string), got {landing!r}")
        if len(instruments) != 1:
            raise ValueError(f"{where} landing: a landing folder override needs exactly one instrument, got {list(instruments)}")
        try:
            landing = normalise_symbol(landing)
        except ValueError as exc:
            raise ValueError(f"{where} landing: {exc}") from None
    options = {k: v for k, v in raw.items() if k not in _ENTRY_FIELDS}
    return FetchEntry(source, instruments, datasets, start, end, landing, options, where)


def parse(data: dict[str, Any], path: Path | None = None) -> SourcesConfig:
    """Validate parsed TOML into a :class:`SourcesConfig`; a ValueError names file, table, field."""
    label = str(path) if path is not None else "sources.toml"
    sources: dict[str, SourceConfig] = {}
    for name, table in data.items():
        where = f"{label} [{name}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table of settings and [[{name}.fetch]] entries, got {table!r}")
        values = {**_COMMON, **DEFAULTS.get(name, {})}
        options: dict[str, Any] = {}
        for key, value in table.items():
            if key == "fetch":
                continue
            if key in _SETTINGS:
                values[key] = value
            else:
                options[key] = value
        url = values["base_url"]
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"{where} base_url: expected an http(s) URL, got {url!r}")
        if not isinstance(values["publish_utc"], str) or not _HHMM.match(values["publish_utc"]):
            raise ValueError(f"{where} publish_utc: expected \"HH:MM\" (UTC), got {values['publish_utc']!r}")
        raw_entries = table.get("fetch", [])
        if not isinstance(raw_entries, list):
            raise ValueError(f"{where} fetch: expected [[{name}.fetch]] entries (an array of tables)")
        entries = tuple(_entry(name, e, f"{label} [[{name}.fetch]] #{i}") for i, e in enumerate(raw_entries, 1))
        sources[name] = SourceConfig(
            name=name, base_url=url.rstrip("/"), publish_utc=values["publish_utc"],
            rate_per_s=_number(values["rate_per_s"], f"{where} rate_per_s", "requests per second"),
            timeout_s=_number(values["timeout_s"], f"{where} timeout_s", "seconds"),
            retries=int(_number(values["retries"], f"{where} retries", "further attempts", integer=True, positive=False)),
            backoff_s=_number(values["backoff_s"], f"{where} backoff_s", "seconds", positive=False),
            backoff_max_s=_number(values["backoff_max_s"], f"{where} backoff_max_s", "seconds", positive=False),
            recheck_days=int(_number(values["recheck_days"], f"{where} recheck_days", "days", integer=True, positive=False)),
            entries=entries, options=options, where=where,
        )
    return SourcesConfig(path, sources)


def load(path: Path | None = None, check: bool = True) -> SourcesConfig:
    """The sources file (``{}`` when there is none), validated. With ``check`` each entry is
    also checked by its source (datasets it publishes, its own options), where the source's
    module is known (:func:`quant_assets.sources.check_entries`)."""
    path = path or config_path()
    if not path.exists():
        return SourcesConfig(None, {})
    return loads(path.read_text(), path, check)


def loads(text: str, path: Path | None = None, check: bool = True) -> SourcesConfig:
    """:func:`load` from TOML text (``path`` only names it in messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path or 'sources.toml'}: not valid TOML ({exc})") from exc  # the file, then what is wrong
    cfg = parse(data, path)
    if check:
        from quant_assets.sources import check_entries

        check_entries(cfg)
    return cfg


#: The sources this build knows, in the order a fetch of all of them runs.
SOURCE_NAMES = ("binance", "tardis", "databento")


def publish_time(source: str, path: Path | None = None) -> tuple[int, int]:
    """``(hour, minute)`` UTC of ``source``'s ``publish_utc`` in the sources file, else its
    default. A sources file that does not load falls back to the default too: the definitions
    (which build each source's schedule from it) must load; the error surfaces when the
    schedule or ``quant-assets fetch`` reads the file."""
    hhmm = DEFAULTS.get(source, _COMMON)["publish_utc"]
    try:
        cfg = load(path, check=False)
        if source in cfg.sources:
            hhmm = cfg.sources[source].publish_utc
    except (ValueError, OSError):
        pass
    h, m = hhmm.split(":")
    return int(h), int(m)
