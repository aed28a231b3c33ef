"""The benchmarks (generator bench)."""
