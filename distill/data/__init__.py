"""Problems in, traces out: the sources (reasoning-gym, files, HF datasets, BIG-bench), the
row checks they share, the versioned schema and the append-only Parquet trace store."""
