"""Errors raised while reading a landing file; each names the file and what was expected."""

from __future__ import annotations


class IngestError(ValueError):
    """A landing file that cannot be ingested at all; no partition changes because of it."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        self.reason = message
        super().__init__(f"{path}: {message}")


class UnknownFormatError(IngestError):
    """No parser recognised the file's content."""
