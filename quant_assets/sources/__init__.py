"""Fetching raw data into the landing zone: sources, verified resumable downloads, a ledger.

- :mod:`.config`  ``sources.toml``: per source its URL, publication time, rate, timeouts,
  retries and ``[[<source>.fetch]]`` entries (instruments × datasets × months).
- :mod:`.model`   :class:`~.model.RemoteFile` and the :class:`~.model.Source` protocol.
- :mod:`.http`    the one download routine (resume, retries, rate limit, redaction).
- :mod:`.ledger`  the append-only fetch ledger and its Polars reader.
- :mod:`.fetch`   ``fetch()``: plan, skip what has landed, download, verify, land.
- :mod:`.binance` Binance public data; ``tardis`` and ``databento`` (vendor APIs) beside it.

A source module is registered in :data:`SOURCE_MODULES` and exposes ``make(config) -> Source``;
modules are imported only when their source is used. Plain Python, no Dagster.
"""

from __future__ import annotations

import importlib

from quant_assets.sources.config import SourceConfig, SourcesConfig

#: Source name -> module exposing ``make(SourceConfig) -> Source``.
SOURCE_MODULES = {
    "binance": "quant_assets.sources.binance",
    "tardis": "quant_assets.sources.tardis",
    "databento": "quant_assets.sources.databento",
}


def make_source(cfg: SourceConfig):
    """The :class:`~quant_assets.sources.model.Source` for ``cfg`` (a ValueError for an unknown one)."""
    module = SOURCE_MODULES.get(cfg.name)
    if module is None:
        raise ValueError(f"{cfg.where or cfg.name}: unknown source {cfg.name!r}; expected one of {', '.join(SOURCE_MODULES)}")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ValueError(f"{cfg.where or cfg.name}: source {cfg.name!r} is not available in this build ({module} missing)") from None
    return mod.make(cfg)


def check_entries(config: SourcesConfig) -> None:
    """Let each source check its own entries (datasets it publishes, its options)."""
    for cfg in config.sources.values():
        if not cfg.entries:
            continue  # nothing to check (and a source without its module in this build is fine unused)
        src = make_source(cfg)
        check = getattr(src, "check_entry", None)
        if check is not None:
            for entry in cfg.entries:
                check(entry)
