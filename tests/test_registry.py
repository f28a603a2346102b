"""The one metric registry: every part of the library reads its names and directions from it."""

from __future__ import annotations

import numpy as np
import pytest

from metricopt.app.recipes.blackbox import BLACKBOX_ONLY_METRICS
from metricopt.app.recipes.ranking import RANK_METRICS, parse_rank_metric
from metricopt.blackbox.metric import BUILTIN_METRICS, make_metric
from metricopt.evaluation import REPORT_METRICS, THRESHOLD_FREE_METRICS
from metricopt.metrics import METRIC_NAMES
from metricopt.metrics._formulas import METRICS
from metricopt.metrics.registry import REGISTRY, MetricInfo, canonical_name, metric_info, names


def test_every_confusion_name_has_a_formula_and_no_formula_lacks_a_name() -> None:
    assert tuple(METRICS) == METRIC_NAMES == names("confusion")


def test_the_families_partition_the_names_the_library_uses() -> None:
    assert RANK_METRICS == ("ap", "auroc", "ndcg", "recall")
    assert THRESHOLD_FREE_METRICS == ("ap", "auroc")
    assert BLACKBOX_ONLY_METRICS == ("mcr", "aucpr", "cost")
    assert set(REPORT_METRICS) <= set(METRIC_NAMES)
    assert set(BUILTIN_METRICS) == {*BLACKBOX_ONLY_METRICS, *METRIC_NAMES, *THRESHOLD_FREE_METRICS}


@pytest.mark.parametrize("name", BUILTIN_METRICS)
def test_black_box_directions_come_from_the_registry(name: str) -> None:
    assert make_metric(name).higher_is_better is REGISTRY[name].higher_is_better


def test_aucpr_is_average_precision() -> None:
    y, scores = np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.8, 0.4, 0.4, 0.3])
    ap, aucpr = make_metric("ap"), make_metric("aucpr")
    assert ap.function(y, scores) == aucpr.function(y, scores) == pytest.approx(0.8055555555555556)


@pytest.mark.parametrize("info", [info for info in REGISTRY.values() if info.same_as], ids=lambda info: info.name)
def test_a_name_same_as_another_is_computed_by_its_function(info: MetricInfo) -> None:
    assert make_metric(info.name).function is make_metric(info.same_as).function


def test_names_are_case_insensitive_and_recall_at_k_is_a_rank_metric() -> None:
    assert canonical_name(" F1 ") == "f1"
    assert metric_info("F1").family == "confusion"
    assert metric_info("recall").family == "confusion"
    assert metric_info("Recall@4").family == "rank" and metric_info("recall@4").cutoff
    assert metric_info("NDCG@10").name == "ndcg"
    assert str(parse_rank_metric("Recall@4")) == "recall@4"
    assert metric_info("mcr").higher_is_better is False
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        metric_info("nope")
    with pytest.raises(ValueError, match="family"):
        names("other")


def test_evaluation_rank_metrics_is_a_deprecated_name_of_threshold_free_metrics() -> None:
    import metricopt.evaluation

    with pytest.warns(DeprecationWarning, match="THRESHOLD_FREE_METRICS"):
        assert metricopt.evaluation.RANK_METRICS == THRESHOLD_FREE_METRICS
    with pytest.raises(AttributeError, match="RANK_METRIC"):
        metricopt.evaluation.RANK_METRIC  # noqa: B018
