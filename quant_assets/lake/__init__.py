"""The Parquet lake: canonical schema, hive layout, atomic writes, manifest and DuckDB views."""
