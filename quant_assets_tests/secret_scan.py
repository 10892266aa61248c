"""One scan for secrets left behind: walk folder trees and report every file holding a key.

Used for the Anthropic key (critique), and the Tardis and Databento keys (fetch). A key is
looked for in every form a careless path could write it: as is, its last 8 characters (some
messages print a key's tail), and its HTTP Basic form (``key:`` in base64, what Databento's
client sends as ``Authorization: Basic ...`` and a server may echo).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path


def secret_forms(secret: str) -> list[bytes]:
    """The byte strings that betray ``secret``."""
    forms = [secret, base64.b64encode(f"{secret}:".encode()).decode().rstrip("=")]
    if len(secret) >= 12:
        forms.append(secret[-8:])
    return [f.encode() for f in forms]


def files_holding(roots: Iterable[Path], secrets: Iterable[str]) -> tuple[list[str], int]:
    """``(files that hold a form of a secret, with which secret, files scanned)`` under ``roots``."""
    secrets = list(secrets)
    order = {s: i for i, s in enumerate(secrets, 1)}
    needles = [(s, form) for s in secrets for form in secret_forms(s)]
    hits, scanned = [], 0
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    data = open(path, "rb").read()
                except OSError:  # a file removed while walking (a lock, a temp file)
                    continue
                scanned += 1
                for secret, form in needles:
                    if form in data:
                        hits.append(f"{path} holds a form of secret #{order[secret]}")
    return hits, scanned


def assert_no_secret(roots: Iterable[Path], secrets: Iterable[str], min_files: int = 1) -> int:
    """Fail naming every file under ``roots`` that holds a form of one of ``secrets``; also
    fail when fewer than ``min_files`` files were scanned (a scan of nothing proves nothing).
    Returns the number of files scanned."""
    secrets = [s for s in secrets if s]
    assert secrets, "no secret to look for"
    hits, scanned = files_holding(list(roots), secrets)
    assert not hits, "\n".join(hits)
    assert scanned >= min_files, f"only {scanned} files scanned under {list(roots)}; expected at least {min_files}"
    return scanned
