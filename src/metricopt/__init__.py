"""metricopt: train PyTorch models for the metric you report.

* :func:`confusion_loss` / :class:`ConfusionLoss`: F1, G-mean, MCC, balanced
  accuracy and any f(TP, FP, FN, TN) as a loss (AnyLoss).
* :class:`APLoss`, :class:`RecallLoss`, :class:`NDCGLoss`, :class:`AUROCLoss`
  (and their functions): rank metrics as losses via :func:`interpolated_rank` (RaMBO).
* :mod:`metricopt.metrics`: the exact metrics, equal to scikit-learn's.
* :mod:`metricopt.blackbox`: any black-box metric, by fine-tuning adapter
  parameters guided by a learned value function (MetricOpt).
* :mod:`metricopt.distributed`: the global batch under ``torch.distributed``.

This package is the core: it needs torch and numpy only, and importing it
loads none of scikit-learn, scipy, pandas, matplotlib or tqdm (the names
above are imported on first use: ``import metricopt`` alone loads no torch). The
application built on it (the scikit-learn estimator
:class:`metricopt.app.MetricClassifier`, training recipes, dataset loaders,
the command line) is :mod:`metricopt.app`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use (see __getattr__)
    from metricopt.losses import (
        APLoss,
        AUROCLoss,
        ConfusionLoss,
        NDCGLoss,
        RecallLoss,
        auroc_loss,
        average_precision_loss,
        confusion_loss,
        interpolated_rank,
        ndcg_loss,
        recall_loss,
    )
    from metricopt.metrics import METRIC_NAMES, metric_score

__version__ = "0.1.0"

__all__ = [
    "APLoss",
    "AUROCLoss",
    "ConfusionLoss",
    "METRIC_NAMES",
    "NDCGLoss",
    "RecallLoss",
    "auroc_loss",
    "average_precision_loss",
    "confusion_loss",
    "interpolated_rank",
    "metric_score",
    "ndcg_loss",
    "recall_loss",
    "__version__",
]


#: The public names and the module each is imported from on first use: ``import metricopt`` itself
#: loads nothing but this file, so the command line answers ``--help`` without loading torch.
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(("APLoss", "AUROCLoss", "ConfusionLoss", "NDCGLoss", "RecallLoss", "auroc_loss",
                     "average_precision_loss", "confusion_loss", "interpolated_rank", "ndcg_loss", "recall_loss",
                     "blackbox_rank"),  # blackbox_rank: the deprecated name of interpolated_rank, not in __all__
                    "metricopt.losses"),
    **dict.fromkeys(("METRIC_NAMES", "metric_score"), "metricopt.metrics"),
}


#: The subpackages and modules reachable as attributes (``metricopt.losses.APLoss``), imported on first use.
_SUBMODULES = ("app", "batches", "blackbox", "distributed", "evaluation", "losses", "metrics", "predict")


def __getattr__(name: str) -> Any:
    """The public names, imported on first use; ``metricopt.MetricClassifier``, deprecated (:mod:`metricopt.app`)."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"metricopt.{name}")  # the import sets the attribute
    if name == "MetricClassifier":
        import warnings

        warnings.warn("metricopt.MetricClassifier moved to metricopt.app.MetricClassifier "
                      "(`from metricopt.app import MetricClassifier`); the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        from metricopt.app.estimator import MetricClassifier

        return MetricClassifier
    raise AttributeError(f"module 'metricopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
