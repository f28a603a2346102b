"""What every family's ``metricopt train`` shares: the configuration, data, progress and results."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from metricopt import __version__
from metricopt._checks import check_integer, check_positive
from metricopt.app.cli.wording import flag_errors
from metricopt.app.data import (
    Split,
    TabularDataset,
    load_csv,
    load_dataset,
    split_with_test,
    train_val_test_split,
)
from metricopt.app.data.labels import PositiveClassError, positive_class
from metricopt.app.recipes.blackbox import BlackBoxOptions
from metricopt.app.recipes.classification import FitResult
from metricopt.app.recipes.ranking import DEFAULT_EMBEDDING_DIM, is_retrieval_dataset
from metricopt.distributed import is_distributed, world_size
from metricopt.losses.confusion import resolve_amplification
from metricopt.metrics.registry import canonical_name

__all__ = ["BASELINE", "DEFAULT_DATASET", "TrainConfig"]

DEFAULT_DATASET = "breast_cancer"

#: The loss every run is compared with.
BASELINE = "bce"

def metric_name(text: str) -> str:
    """``--metric`` as the configuration records it: a built-in name in lower case (metric names are
    case-insensitive: ``F1``, ``AP``, ``NDCG@10``), a ``MODULE:FUNCTION`` as given (Python names are not)."""
    return text.strip() if ":" in text else canonical_name(text)


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
    module docstring). ``drop`` names the columns of ``csv`` left out of the
    features (``--drop``). ``model`` is ``"mlp"``, ``"lightgbm"`` or
    ``"mlp+lightgbm"`` (the last two: confusion-matrix metrics;
    ``amplification`` then defaults to boosting's). ``tune_threshold``: each
    method's binary decision threshold is tuned on the validation split for
    ``metric`` (``--tune-threshold``) instead of ``threshold``.
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
    drop: tuple[str, ...] = ()
    model: str = "mlp"
    tune_threshold: bool = False


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``; an empty string means no hidden layer."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) != len(parts) or any(size < 1 for size in sizes):
        raise ValueError(f"--hidden must be comma-separated layer widths (integers >= 1) such as '64,64', or '' "
                         f"for none; got --hidden={text!r}")
    return sizes


def parse_amplification(text: str | None, metric: str = "f1") -> float | str:
    """``--amplification``: a number > 0 or ``auto``; None (not given) is AnyLoss's default for ``metric``
    (73; 20 for a constrained metric)."""
    if text is None:
        return resolve_amplification(None, metric)
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"--amplification must be a number > 0 or 'auto'; got --amplification={text!r}")
    return value


def parse_drop(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--drop A,B --drop C`` -> ``("A", "B", "C")`` (names stripped, repeats removed)."""
    names: list[str] = []
    for value in values or ():
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):
            raise ValueError(f"--drop must be comma-separated column names such as 'id,name'; got --drop={value!r}")
        names.extend(part for part in parts if part not in names)
    return tuple(names)


#: The largest seed: the data splits (scikit-learn, numpy) take seeds below 2**32.
MAX_SEED = 2**32 - 1


def check_numbers(args: argparse.Namespace) -> None:
    """The numeric options every family shares, in range; checked before any output or data is read."""
    with flag_errors():
        check_integer("epochs", args.epochs, 1)
        check_integer("batch_size", args.batch_size, 1)
        check_positive("learning_rate", args.lr)
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (processes to train with); got {args.nproc}")
    parse_hidden(args.hidden)
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to {MAX_SEED}; got --seed={args.seed}")


def check_data_options(args: argparse.Namespace) -> None:
    if args.pos_label is not None and not args.pos_label.strip():
        raise ValueError(f"--pos-label must name a class of the target, got --pos-label={args.pos_label!r}")
    if args.csv is None:
        for option, value in (("--target", args.target), ("--test-csv", args.test_csv)):
            if value is not None:
                raise ValueError(f"{option} needs --csv (it describes a CSV file), got {option}={value!r}")
        if args.drop:
            raise ValueError(f"--drop needs --csv (it leaves columns of a CSV file out); got --drop="
                             f"{','.join(args.drop)!r} with --dataset {args.dataset or DEFAULT_DATASET}")
    elif args.target is None:
        raise ValueError(f"--csv needs --target COLUMN naming the label column of --csv={args.csv!r}")


def shared_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields every method family takes from the arguments as they are."""
    return {
        "dataset": None if args.csv is not None else (args.dataset or DEFAULT_DATASET),
        "csv": args.csv,
        "target": args.target,
        "test_csv": args.test_csv,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "amplification": parse_amplification(args.amplification, args.metric),
        "seed": args.seed,
        "nproc": args.nproc,
        "pos_label": args.pos_label,
        "drop": parse_drop(args.drop),
    }


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
        return load_csv(config.csv, config.target, test_path=config.test_csv, pos_label=config.pos_label,
                        drop=config.drop)
    except PositiveClassError as exc:
        # Raise the same error again, naming --pos-label, --target and --csv instead of Python arguments.
        positive_class(exc.classes, exc.pos_label, argument="--pos-label",
                       where=f"--target {config.target} in --csv {config.csv}")
        raise


def load_data(config: TrainConfig) -> tuple[TabularDataset, Split]:
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
def progress_bar(name: str, config: TrainConfig, show: bool) -> Iterator[Callable[[dict[str, float]], None]]:
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


def methods_of(config: TrainConfig) -> list[str]:
    return [config.loss] if config.loss == BASELINE else [config.loss, BASELINE]


def dataset_info(data: TabularDataset) -> dict[str, Any]:
    """What the results record about the data; ``positive_class`` is label 1's name (None: multi-class)."""
    positive = data.class_names[1] if data.task == "binary" else None
    return {"dataset": data.name, "source": data.source, "task": data.task, "class_names": list(data.class_names),
            "positive_class": positive, "n_features": data.n_features}


def positive_text(data: TabularDataset) -> str:
    """The status line's words on the positive class (nothing for multi-class data)."""
    if data.positive_rate is None:
        return ""
    return f", positive class {data.class_names[1]}, positive rate {data.positive_rate:.3f}"


def log_start(log: Callable[[str], None] | None, info: dict[str, Any], n_classes: int, split: Split,
               config: TrainConfig, detail: str = "") -> None:
    if log is not None:
        processes = f" in {world_size()} processes ({dist.get_backend()}, DDP)" if is_distributed() else ""
        log(f"{info['dataset']}: {info['task']}, {n_classes} classes, {info['n_features']} features{detail}; "
            f"train {len(split.y_train)} / val {len(split.y_val)} / test {len(split.y_test)}; "
            f"training {' and '.join(methods_of(config))} for {config.metric}, {config.epochs} epochs{processes}")


def results_of(config: TrainConfig, info: dict[str, Any], split: Split,
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
        **split_sizes(split),
        "test_metrics": test_metrics,
        "baseline_metrics": baseline_metrics,
        "best_epoch": result.best_epoch,
        "baseline_best_epoch": baseline_result.best_epoch,
        "val_score": result.best_score,
        "baseline_val_score": baseline_result.best_score,
        "history": {name: fitted[name][1].history for name in fitted},
        **provenance(config),
    }


def split_sizes(split: Split) -> dict[str, int]:
    return {"n_train": len(split.y_train), "n_val": len(split.y_val), "n_test": len(split.y_test)}


def provenance(config: TrainConfig) -> dict[str, Any]:
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
