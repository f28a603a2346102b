"""The benchmark suites, one module each (run by :mod:`benchmarks.cli`)."""
