"""``python -m metricopt``: the ``metricopt`` command line (see :mod:`metricopt.app.cli`)."""

from metricopt.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
