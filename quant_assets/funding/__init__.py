"""Funding of perpetual swaps: parsers, the per-month funding table, and settlement.

Domain code only (no Dagster here); the ``funding`` asset in ``quant_assets.assets.funding``
is the thin Dagster layer over :func:`quant_assets.funding.build.build_funding`.
"""
