"""The application layer: what a user runs end to end, built on the core.

* :class:`MetricClassifier` (:mod:`metricopt.app.estimator`): a scikit-learn
  classifier trained for a metric.
* :mod:`metricopt.app.recipes`: the training loops (classification, ranking
  and retrieval, black-box metrics).
* :mod:`metricopt.app.data`: dataset loaders, CSV reading, splits, labels.
* :mod:`metricopt.app.cli`: the ``metricopt`` command line;
  :mod:`metricopt.app.launch`: its several-process runs.
* :mod:`metricopt.app.plots`: learning curves.

Imports the core (:mod:`metricopt`); the core never imports this package.
Needs scikit-learn, tqdm and matplotlib (installed with metricopt); pandas
and the dataset packages only where a loader uses them.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metricopt.app.estimator import MetricClassifier

__all__ = ["MetricClassifier"]


def __getattr__(name: str) -> Any:
    """``MetricClassifier``, imported on first use: the command line does not pay for scikit-learn's import."""
    if name == "MetricClassifier":
        from metricopt.app.estimator import MetricClassifier

        return MetricClassifier
    raise AttributeError(f"module 'metricopt.app' has no attribute {name!r}")
