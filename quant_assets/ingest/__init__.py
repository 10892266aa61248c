"""Landing files in, canonical ticks out: one parser module per source format."""
