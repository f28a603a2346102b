"""``metricopt train`` for rank metrics: RaMBO (``rambo``) and the ``bce`` baseline."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from metricopt.app.cli.common import (
    BASELINE,
    TrainConfig,
    dataset_info,
    load_data,
    log_start,
    methods_of,
    progress_bar,
    results_of,
)
from metricopt.app.data import Split
from metricopt.app.recipes.classification import FitResult
from metricopt.app.recipes.ranking import (
    DEFAULT_EMBEDDING_DIM,
    RANK_METHOD,
    RankMetric,
    check_embedding_dim,
    check_rank_task,
    fit_rank_method,
    is_rank_metric,
    is_retrieval_dataset,
    load_retrieval_data,
    make_method_loss,
    make_rank_loss,
    parse_rank_metric,
)

__all__ = ["rank_options", "run_rank"]

#: How the rank metrics are written on the command line.
RANK_METRIC_FORMS = "ap, auroc, ndcg@K, recall@K"


def rank_options(args: argparse.Namespace, metric: str) -> dict[str, Any]:
    """``--interpolation``, ``--margin``, ``--memory-size``, ``--embedding-dim``; rank metrics only.

    Their values are checked here, before any output, by building the loss (the library's errors name
    its arguments; :func:`~metricopt.app.cli.train.config_from_args` words them with the options).
    """
    given = {option: value for option, value in (
        ("--interpolation", args.interpolation), ("--margin", args.margin),
        ("--memory-size", args.memory_size), ("--embedding-dim", args.embedding_dim)) if value is not None}
    if given and not is_rank_metric(metric):
        option = next(iter(given))
        raise ValueError(f"{option} applies to rank metrics ({RANK_METRIC_FORMS}) only; got --metric {metric}")
    if "--embedding-dim" in given and not parse_rank_metric(metric).is_retrieval:
        raise ValueError(f"--embedding-dim applies to --metric recall@K (an embedding) only; got --metric {metric}")
    options = {
        "interpolation": args.interpolation,
        "margin": args.margin,
        "memory_size": 0 if args.memory_size is None else args.memory_size,
        "embedding_dim": DEFAULT_EMBEDDING_DIM if args.embedding_dim is None else args.embedding_dim,
    }
    if given:
        make_rank_loss(metric, interpolation=options["interpolation"], margin=options["margin"],
                       memory_size=options["memory_size"])
        check_embedding_dim(options["embedding_dim"])
    return options


def _load_rank(config: TrainConfig, metric: RankMetric) -> tuple[dict[str, Any], Split, int]:
    """Data for a rank metric: ``(info, split, number of training classes)``."""
    if config.csv is None and is_retrieval_dataset(config.dataset) and metric.is_retrieval:
        if config.pos_label is not None:
            raise ValueError(f"--pos-label applies to binary targets only; --dataset {config.dataset} is a "
                             f"retrieval benchmark, got --pos-label {config.pos_label}")
        data = load_retrieval_data(config.dataset, seed=config.seed, val_size=config.val_size)
        info = {"dataset": data.name, "source": data.source, "task": "retrieval",
                "class_names": list(data.class_names), "positive_class": None,
                "n_features": int(data.split.X_train.shape[1]),
                "train_classes": list(data.train_classes), "test_classes": list(data.test_classes)}
        return info, data.split, len(data.train_classes)
    data, split = load_data(config)
    return dataset_info(data), split, data.n_classes


def _rank_scoring(metric: RankMetric, task: str, hidden_sizes: tuple[int, ...]) -> str:
    """How the test metrics were computed, for the table title and the JSON."""
    if metric.is_retrieval:
        unseen = "test classes unseen in training" if task == "retrieval" else "test classes seen in training"
        layer = "last hidden layer before the ReLU" if hidden_sizes else "logits (no hidden layer)"
        return f"leave-one-out cosine retrieval in the test set, {unseen}; {BASELINE} embedding = its {layer}"
    ovr = "; multi-class: macro one-vs-rest" if task != "binary" else ""
    return f"scores: {RANK_METHOD} raw outputs, {BASELINE} probabilities{ovr}"


def run_rank(config: TrainConfig, *, show_progress: bool,
              log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for a rank metric: RaMBO (``rambo``) and the ``bce`` baseline."""
    metric = parse_rank_metric(config.metric)
    info, split, n_classes = _load_rank(config, metric)
    methods = methods_of(config)
    # Build every loss (and check the embedding width) before training, so a bad option fails before any epoch.
    losses = {name: make_method_loss(name, metric, interpolation=config.interpolation, margin=config.margin,
                                     memory_size=config.memory_size) for name in methods}
    check_rank_task(metric, n_classes)
    if metric.is_retrieval:
        check_embedding_dim(config.embedding_dim)
    log_start(log, info, n_classes, split, config)

    fitted: dict[str, tuple[dict[str, float], FitResult]] = {}
    for name in methods:
        with progress_bar(name, config, show_progress) as progress:
            trained = fit_rank_method(
                name, metric, split, num_classes=n_classes, loss_fn=losses[name], hidden_sizes=config.hidden_sizes,
                embedding_dim=config.embedding_dim, epochs=config.epochs, batch_size=config.batch_size,
                learning_rate=config.learning_rate, seed=config.seed, progress=progress,
            )
        fitted[name] = (trained.test_metrics, trained.result)
    results = results_of(config, info, split, fitted)
    results["scoring"] = _rank_scoring(metric, info["task"], config.hidden_sizes)
    return results
