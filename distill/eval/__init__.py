"""The held-out transfer suite: requests, metrics, paired comparisons, the baseline cache,
statistics with intervals, and the report."""
