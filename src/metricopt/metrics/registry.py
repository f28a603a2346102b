"""The one table of metric names: what every part of metricopt calls a metric.

Each entry says the metric's family, direction and display name; the losses
(:mod:`metricopt.losses`), the exact metrics, the black-box family
(:mod:`metricopt.blackbox.metric`), the reports (:mod:`metricopt.evaluation`),
the estimator and the command line all read their names from here.

Families:

* ``"confusion"``: a function of the confusion matrix of the decisions
  (``p > 0.5`` or argmax); a loss in :func:`metricopt.losses.confusion_loss`.
* ``"rank"``: a function of the scores' order (no threshold); ``ndcg`` and
  ``recall`` take a cut-off, written ``ndcg@K`` / ``recall@K``; losses in
  :mod:`metricopt.losses.ranking`.
* ``"blackbox"``: only a function that scores a model (no loss), optimised by
  :mod:`metricopt.blackbox`; any confusion or threshold-free rank metric is one
  too.

Names are case-insensitive and canonical in lower case. ``aucpr`` is the
black-box family's name for ``ap`` (the same function: average precision).

Example:
    >>> info = metric_info("Recall@4")
    >>> info.name, info.family, info.higher_is_better, info.display_name
    ('recall', 'rank', True, 'recall@K')
    >>> canonical_name(" MCC ")
    'mcc'
"""

from __future__ import annotations

from dataclasses import dataclass

from metricopt.metrics.constrained import is_constrained, parse_constrained

__all__ = [
    "BLACKBOX_ONLY",
    "CONFUSION",
    "RANK",
    "REGISTRY",
    "REPORTED",
    "THRESHOLD_FREE",
    "WITH_CUTOFF",
    "MetricInfo",
    "canonical_name",
    "metric_info",
    "names",
]


@dataclass(frozen=True)
class MetricInfo:
    """One metric of the registry.

    Attributes:
        name: canonical name (lower case; without ``@K``).
        family: ``"confusion"``, ``"rank"`` or ``"blackbox"``.
        higher_is_better: the direction of the raw value.
        display_name: how tables and plots name it.
        cutoff: the metric takes ``@K`` (``ndcg``, ``recall``).
        same_as: another entry this one is a name for (``aucpr`` -> ``ap``).
    """

    name: str
    family: str
    higher_is_better: bool
    display_name: str
    cutoff: bool = False
    same_as: str | None = None


REGISTRY: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        # confusion-matrix metrics, in the order of the losses' documentation
        MetricInfo("accuracy", "confusion", True, "accuracy"),
        MetricInfo("precision", "confusion", True, "precision"),
        MetricInfo("recall", "confusion", True, "recall"),
        MetricInfo("specificity", "confusion", True, "specificity"),
        MetricInfo("f1", "confusion", True, "F1"),
        MetricInfo("fbeta", "confusion", True, "F-beta"),
        MetricInfo("balanced_accuracy", "confusion", True, "balanced accuracy"),
        MetricInfo("gmean", "confusion", True, "G-mean"),
        MetricInfo("mcc", "confusion", True, "MCC"),
        MetricInfo("jaccard", "confusion", True, "Jaccard"),
        MetricInfo("kappa", "confusion", True, "Cohen's kappa"),
        # rank metrics (recall@K is a rank metric; plain "recall" above is the confusion one)
        MetricInfo("ap", "rank", True, "AP"),
        MetricInfo("auroc", "rank", True, "AUROC"),
        MetricInfo("ndcg", "rank", True, "NDCG@K", cutoff=True),
        # black-box only: no loss of their own
        MetricInfo("mcr", "blackbox", False, "misclassification rate"),
        MetricInfo("aucpr", "blackbox", True, "AUCPR", same_as="ap"),
        MetricInfo("cost", "blackbox", False, "20:1 cost"),
    )
}
#: recall@K shares the name "recall" with the confusion metric: the cut-off tells them apart.
_RECALL_AT_K = MetricInfo("recall", "rank", True, "recall@K", cutoff=True)


def names(family: str) -> tuple[str, ...]:
    """The canonical names of one family, in registry order (``"rank"`` includes ``recall``, i.e. recall@K)."""
    if family not in ("confusion", "rank", "blackbox"):
        raise ValueError(f"`family` must be 'confusion', 'rank' or 'blackbox'; got {family!r}")
    found = tuple(info.name for info in REGISTRY.values() if info.family == family)
    return (*found, "recall") if family == "rank" else found


def canonical_name(text: str) -> str:
    """``text`` stripped and in lower case (metric names are case-insensitive)."""
    if not isinstance(text, str):
        raise TypeError(f"a metric name must be a string; got {type(text).__name__}")
    return text.strip().lower()


def metric_info(text: str) -> MetricInfo:
    """The registry entry of a metric name (``"F1"``, ``"ndcg@10"``, ``"recall@4"``).

    A constrained metric (``"recall@precision>=0.95"``,
    :mod:`metricopt.metrics.constrained`) is a confusion metric named by its
    canonical spelling, with its objective's direction.

    The cut-off itself is not checked here (:func:`metricopt.app.recipes.ranking.parse_rank_metric`
    parses it); ``"recall"`` without ``@K`` is the confusion-matrix recall.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    name = canonical_name(text)
    if is_constrained(name):  # "recall@precision>=0.95": a confusion metric, the direction of its objective
        parsed = parse_constrained(text)
        return MetricInfo(parsed.name, "confusion", parsed.higher_is_better, parsed.name)
    head, at, _ = name.partition("@")
    if at and head == "recall":
        return _RECALL_AT_K
    info = REGISTRY.get(head)
    if info is None:
        raise ValueError(f"unknown metric {text!r}; known: {', '.join(REGISTRY)} (ndcg and recall take @K)")
    return info


#: Names by family.
CONFUSION: tuple[str, ...] = names("confusion")
RANK: tuple[str, ...] = names("rank")
BLACKBOX_ONLY: tuple[str, ...] = names("blackbox")
#: Rank metrics of the whole ranking (no cut-off): what a classifier's scores are scored by.
THRESHOLD_FREE: tuple[str, ...] = tuple(info.name for info in REGISTRY.values()
                                        if info.family == "rank" and not info.cutoff)
#: Rank metrics written with a cut-off, ``name@K``.
WITH_CUTOFF: tuple[str, ...] = tuple(name for name in RANK if name not in THRESHOLD_FREE)
#: The confusion metrics a classifier's report shows, in its order.
REPORTED: tuple[str, ...] = ("f1", "gmean", "balanced_accuracy", "mcc", "accuracy", "precision", "recall")
