"""What a source is and what it publishes: :class:`RemoteFile` and the :class:`Source` protocol.

A source turns a fetch entry into the files that should be published by a given time
(:meth:`Source.plan`, pure: no request), says how a downloaded file is verified
(:meth:`Source.verify`), and which headers authenticate a request (:meth:`Source.auth_headers`,
keys read from the environment at request time, never stored on a :class:`RemoteFile`, never
logged). Optional hooks (looked up with ``getattr``, so a source defines only what it needs):

- ``check_entry(entry) -> None``: validate a ``[[<source>.fetch]]`` entry (datasets, options);
  raise a ValueError naming ``entry.where`` and the field.
- ``resolve(rf, client) -> RemoteFile``: fill in what is only known by asking (an expected
  checksum); the default reads ``rf.checksum_url`` as a ``sha256sum`` line.
- ``fallback(rf, now) -> list[RemoteFile]``: what to fetch instead when ``rf`` is not published
  (Binance: a month's daily files while its monthly file is not out).
- ``download(rf, partial, client) -> None``: write ``rf``'s bytes to ``partial`` another way
  (Databento: its official client) instead of :meth:`quant_assets.sources.http.HttpClient.download`.

Plain Python, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from quant_assets.sources.config import FetchEntry, SourceConfig


class VerifyError(Exception):
    """A downloaded file that is not what the source published (checksum, size, integrity).
    The file is refused: nothing lands, the temporary file is removed."""


@dataclass(frozen=True)
class RemoteFile:
    """One file a source publishes, and where it lands.

    ``symbol`` is the landing folder (a partition symbol), ``period`` the publication period
    (``YYYY-MM`` monthly or ``YYYY-MM-DD`` daily, UTC), ``months`` the partition months its rows
    fall in, ``name`` the logical landing name (a re-upload lands as ``name~v2``, see
    :mod:`quant_assets.ingest.versions`). Expected ``sha256`` (hex), ``size`` (bytes) and
    ``md5`` (hex) when the source gives them, or ``checksum_url`` to read the SHA-256 from.
    ``url`` never carries a key (keys travel in headers)."""

    source: str
    dataset: str
    symbol: str
    period: str
    months: tuple[str, ...]
    url: str
    name: str
    checksum_url: str | None = None
    sha256: str | None = None
    size: int | None = None
    md5: str | None = None
    #: Source-specific facts a source's hooks need (e.g. Binance market and granularity).
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The ledger key: (source, dataset, symbol, period)."""
        return (self.source, self.dataset, self.symbol, self.period)

    def get(self, name: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(name, default)


@runtime_checkable
class Source(Protocol):
    """A data source (see the module docstring for the optional hooks)."""

    name: str
    config: SourceConfig

    def plan(self, entry: FetchEntry, now: datetime) -> list[RemoteFile]:
        """Every file of ``entry`` that should be published by ``now`` (UTC), by the source's
        own availability where it says more than the clock. No request is sent."""
        ...

    def verify(self, path: Path, rf: RemoteFile) -> None:
        """Raise :class:`VerifyError` with the reason when ``path`` is not ``rf``'s bytes."""
        ...

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (keys from the environment); ``{}`` for public data."""
        ...
