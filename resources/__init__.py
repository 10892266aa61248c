"""Dagster resources of quant_assets: the lake root and DuckDB over it (later the LLM critic)."""

from resources.lake import DuckDBResource, LakeResource

__all__ = ["DuckDBResource", "LakeResource"]
