"""A peek at the head of a text file, shared by every format's ``matches`` test."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+)|nan|NaN|inf")
_BOOL = {"true", "false"}


def kind_of(token: str) -> str:
    """'int', 'float', 'bool' or 'str' for one CSV field."""
    t = token.strip()
    if _INT.fullmatch(t):
        return "int"
    if _FLOAT.fullmatch(t):
        return "float"
    if t.lower() in _BOOL:
        return "bool"
    return "str"


@dataclass(frozen=True)
class Sample:
    """The first lines of a (decompressed) CSV landing file.

    ``source`` is the landing file as the user named it (for messages and name checks);
    ``text_path`` the plain-text file polars will scan (the source itself, or its
    decompressed copy).
    """

    source: Path
    text_path: Path
    lines: tuple[str, ...]

    @classmethod
    def read(cls, source: Path, text_path: Path, max_bytes: int = 16384) -> "Sample":
        with open(text_path, "rb") as f:
            head = f.read(max_bytes)
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by max_bytes is fine; anything earlier is not UTF-8.
            if exc.start < len(head) - 4:
                line = head.count(b"\n", 0, exc.start) + 1
                raise ValueError(
                    f"not UTF-8 text: line {line}, byte {exc.start} is 0x{head[exc.start]:02x} "
                    "(re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`)"
                ) from exc
            text = head[: exc.start].decode("utf-8")
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
        if len(head) == max_bytes:
            lines = lines[:-1]  # the last line may be cut
        return cls(source, text_path, tuple(ln for ln in lines if ln.strip()))

    @property
    def first(self) -> list[str]:
        return [f.strip() for f in self.lines[0].split(",")] if self.lines else []

    @property
    def header(self) -> list[str] | None:
        """Lower-cased field names when the first line is a header (has a non-numeric field
        where no known data row has one), else None."""
        if not self.lines:
            return None
        first = self.first
        second = [f.strip() for f in self.lines[1].split(",")] if len(self.lines) > 1 else None
        looks_like_names = all(kind_of(f) == "str" for f in first)
        if looks_like_names and (second is None or any(kind_of(f) != "str" for f in second)):
            return [f.lower() for f in first]
        return None

    @property
    def data_row(self) -> list[str]:
        """The first data row's fields (after the header, if any)."""
        idx = 1 if self.header is not None else 0
        if len(self.lines) <= idx:
            return []
        return [f.strip() for f in self.lines[idx].split(",")]

    def kinds(self) -> list[str]:
        return [kind_of(f) for f in self.data_row]

    def row_fits(self, pattern: list[str]) -> bool:
        """Whether the first data row's fields fit ``pattern`` (an int fits a 'float' slot:
        a price may be written ``42000``)."""
        kinds = self.kinds()
        return len(kinds) == len(pattern) and all(
            k == want or (want == "float" and k == "int") for k, want in zip(kinds, pattern, strict=True)
        )

    def describe(self) -> str:
        row = self.lines[0][:120] if self.lines else "<empty>"
        return f"first line {row!r} ({len(self.first)} fields)"
