"""Dagster resources of quant_assets: the lake root, DuckDB over it, and the critic."""

from resources.critic import CriticResource
from resources.lake import DuckDBResource, LakeResource

__all__ = ["CriticResource", "DuckDBResource", "LakeResource"]
