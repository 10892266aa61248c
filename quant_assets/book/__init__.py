"""Order-book depth: the canonical ``book`` table (L2/L3 deltas by day), its parsers, builder,
validation and replay. Plain Python: no Dagster."""
