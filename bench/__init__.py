"""Benchmarks: `python -m bench.run_all` (or `make bench`); see docs/benchmarks.md."""
