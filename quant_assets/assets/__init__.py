"""The Dagster layer's assets: thin wrappers that read a partition, call domain code, report."""
