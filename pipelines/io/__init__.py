"""The only code that touches files: volumes, shards, published versions."""
