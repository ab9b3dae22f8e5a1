"""``insid3 eval``: the official INSID3 benchmarks (episode sampling, metrics, resumable runs)."""
