"""``python -m metricopt.bench``: see :mod:`metricopt.bench.cli`."""

from metricopt.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
