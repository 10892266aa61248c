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
