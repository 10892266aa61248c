"""Versions of a landing file: a re-published source file lands beside the one it replaces.

Landing files are immutable. When a source re-publishes a file under the same name with new
bytes (Binance re-uploads archive zips with a new ``.CHECKSUM``), the new bytes land as a new
*version* of the same *logical* file, named by inserting ``~v<N>`` before the name's first dot::

    BTCUSDT-trades-2024-03.zip        version 1 (the name as published)
    BTCUSDT-trades-2024-03~v2.zip     version 2, landed beside it; version 1 is kept

Builds read only the newest version of each logical file (:func:`newest`); older versions
stay in the landing folder and in the manifest (status ``superseded``), so every landing file
is accounted for and an "as of" read of a partition built from version 1 can find its bytes.

The rule is by name only, so a user can drop a corrected file by hand the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

_VERSION_RE = re.compile(r"~v(\d+)(?=\.|$)")

T = TypeVar("T")


def split_version(name: str) -> tuple[str, int]:
    """``(logical name, version)`` of a landing file name; an unmarked name is version 1.

    >>> split_version("BTCUSDT-trades-2024-03~v2.zip")
    ('BTCUSDT-trades-2024-03.zip', 2)
    >>> split_version("BTCUSDT-trades-2024-03.zip")
    ('BTCUSDT-trades-2024-03.zip', 1)
    """
    head, dot, rest = name.partition(".")
    m = _VERSION_RE.search(head)
    if m is None or m.end() != len(head):
        return name, 1
    return head[: m.start()] + dot + rest, int(m.group(1))


def versioned_name(logical: str, version: int) -> str:
    """The landing name of ``version`` of the logical file ``logical`` (version 1: unchanged).

    >>> versioned_name("binance-futures_trades_2024-03-08_BTCUSDT.csv.gz", 3)
    'binance-futures_trades_2024-03-08_BTCUSDT~v3.csv.gz'
    """
    if version < 1:
        raise ValueError(f"a landing file version is 1 or more, got {version}")
    if version == 1:
        return logical
    head, dot, rest = logical.partition(".")
    return f"{head}~v{version}{dot}{rest}"


def newest(names: Iterable[T], name_of=lambda x: x) -> tuple[list[T], list[T]]:
    """Split ``names`` (or objects, with ``name_of``) into ``(current, superseded)``: for each
    logical file only its highest version is current. Order within each list follows input."""
    items = list(names)
    best: dict[str, int] = {}
    for item in items:
        logical, v = split_version(name_of(item))
        best[logical] = max(v, best.get(logical, 0))
    current, old = [], []
    for item in items:
        logical, v = split_version(name_of(item))
        (current if v == best[logical] else old).append(item)
    return current, old


# A Binance archive name: SYMBOL-dataset-YYYY-MM[-DD] (data.binance.vision's daily and
# monthly files of one dataset).
_BINANCE_PERIOD_RE = re.compile(r"^([A-Za-z0-9_]+-[A-Za-z]+)-(\d{4}-\d{2})(-\d{2})?$")


def _monthly_key(logical: str) -> tuple[str, bool] | None:
    """``("SYMBOL-dataset-YYYY-MM", is_daily)`` of a Binance archive's logical name, else None."""
    head = logical.partition(".")[0]
    m = _BINANCE_PERIOD_RE.match(head)
    if m is None:
        return None
    return f"{m.group(1)}-{m.group(2)}", m.group(3) is not None


def superseded(names: Iterable[str]) -> dict[str, str]:
    """The landing names of one folder that builds must not read, each with the name that
    replaces it:

    - an older version of a logical file (``newest``);
    - a Binance *daily* archive of a month whose *monthly* archive of the same dataset is there
      (``BTCUSDT-trades-2024-03-08.zip`` beside ``BTCUSDT-trades-2024-03.zip``): the fetcher lands
      daily files while a month is current and the monthly one once it is published; the
      monthly file is the source's final word on the month (a re-publication may correct rows
      the daily files had), so the daily files are kept but no longer read.
    """
    names = list(names)
    current, old = newest(names)
    by_logical = {split_version(n)[0]: n for n in current}
    out = {n: by_logical[split_version(n)[0]] for n in old}
    monthly = {}
    for n in current:
        key = _monthly_key(split_version(n)[0])
        if key is not None and not key[1]:
            monthly[key[0]] = n
    for n in current:
        key = _monthly_key(split_version(n)[0])
        if key is not None and key[1] and key[0] in monthly:
            out[n] = monthly[key[0]]
    return out
