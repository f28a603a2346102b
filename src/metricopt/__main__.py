"""``python -m metricopt``: the ``metricopt`` command line (see :mod:`metricopt.cli`)."""

from metricopt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
