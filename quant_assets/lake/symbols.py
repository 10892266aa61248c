"""Symbol names: the only user-supplied text that becomes a path in the lake."""

from __future__ import annotations

import re

_SYMBOL_RE = re.compile(r"[A-Z0-9._-]{1,32}")


class InvalidSymbolError(ValueError):
    """A symbol that is empty, too long, or could escape the lake (``../x``, ``a/b``)."""


def normalise_symbol(raw: str) -> str:
    """Upper-case ``raw`` and check it against ``[A-Z0-9._-]{1,32}``.

    Dots are allowed (``EUR.USD``) but a name made only of dots is not: ``.`` and ``..``
    would name the folder itself or its parent.
    """
    sym = (raw or "").strip().upper()
    if not _SYMBOL_RE.fullmatch(sym) or set(sym) == {"."}:
        raise InvalidSymbolError(
            f"invalid symbol {raw!r}: expected 1-32 characters from A-Z 0-9 . _ - "
            "(case-insensitive), not a path"
        )
    return sym
