"""One training loop for tabular classifiers, shared by the estimator, the CLI and the benchmarks.

* :func:`make_mlp`: the multi-layer perceptron every method trains.
* :func:`make_loss`: a loss by name (``"anyloss"`` and the cross-entropy baselines).
* :func:`fit`: mini-batch Adam with per-epoch evaluation and model selection;
  under ``torch.distributed`` it trains with DDP, each process on its shard of
  every batch (:func:`metricopt.app.launch.launch` starts the processes).

Binary models have one output logit, multi-class models one per class.
"""

from __future__ import annotations

import copy
import itertools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from metricopt._checks import check_choice, check_positive
from metricopt.batches import oversampled_batches, shuffled_batches, stratified_batches
from metricopt.distributed import is_distributed
from metricopt.evaluation import selection_score
from metricopt.losses import ConfusionLoss, cross_entropy_loss, focal_loss, inverse_frequency_weights
from metricopt.predict import predict_proba

LossFn = Callable[[Tensor, Tensor], Tensor]

#: Names accepted by :func:`make_loss`.
LOSSES = ("anyloss", "bce", "weighted_bce", "focal")

#: Batch orders of :func:`fit`: :func:`~metricopt.batches.shuffled_batches` or the class-aware
#: :func:`~metricopt.batches.stratified_batches`.
BATCHINGS = ("shuffled", "stratified", "oversampled")

__all__ = [
    "BATCHINGS",
    "LOSSES",
    "FitResult",
    "fit",
    "make_loss",
    "make_mlp",
    "train_classifier",
]


def make_mlp(
    n_features: int, n_outputs: int, hidden_sizes: int | Sequence[int] = (64, 64), *, seed: int = 0
) -> nn.Sequential:
    """A ReLU MLP ``n_features -> hidden_sizes -> n_outputs`` with seeded initialisation.

    ``hidden_sizes`` is a sequence of widths or one width (as scikit-learn's
    ``hidden_layer_sizes``).
    """
    widths = (hidden_sizes,) if isinstance(hidden_sizes, numbers.Integral) else tuple(hidden_sizes)
    if not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"`hidden_sizes` must be positive integers; got {hidden_sizes!r}")
    sizes = [int(n_features), *(int(w) for w in widths)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_outputs))
        return nn.Sequential(*layers)


def make_loss(
    name: str,
    *,
    metric: str = "f1",
    y_train: np.ndarray | None = None,
    num_classes: int = 2,
    amplification: float | str | None = None,
    sharpness: float = 2.0,
    average: str | None = "auto",
    beta: float = 1.0,
    gamma: float = 2.0,
    count_momentum: float | None = None,
) -> LossFn:
    """A loss ``f(logits, target)`` by name.

    Args:
        name: ``"anyloss"`` (the confusion loss for ``metric``), ``"bce"``
            (binary or multi-class cross-entropy), ``"weighted_bce"`` (weighted
            by inverse class frequency of ``y_train``), ``"focal"``.
        metric, amplification, sharpness, average, beta, count_momentum: options
            of ``"anyloss"`` (:class:`~metricopt.losses.ConfusionLoss`).
        y_train: training labels, needed by ``"weighted_bce"``.
        num_classes: number of classes.
        gamma: focusing parameter of ``"focal"``.
    """
    check_choice("loss", name, LOSSES)
    if name == "anyloss":
        return ConfusionLoss(metric, amplification=amplification, sharpness=sharpness, average=average, beta=beta,
                             count_momentum=count_momentum)
    if count_momentum is not None:
        raise ValueError(f"`count_momentum` averages the confusion counts of loss='anyloss'; got it with loss={name!r}")
    if name == "focal":
        return lambda logits, target: focal_loss(logits, target, gamma=gamma)
    if name == "bce":
        return cross_entropy_loss
    if y_train is None:
        raise ValueError("`y_train` is required for loss='weighted_bce'")
    weights = inverse_frequency_weights(torch.as_tensor(y_train), num_classes)
    return lambda logits, target: cross_entropy_loss(logits, target, class_weight=weights)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch with ``epoch``, ``train_loss`` and, when an
            evaluation callback is given, ``val_score``.
        best_epoch: the epoch whose weights the model holds at the end
            (the last one without an evaluation callback).
        best_score: its validation score (None without a callback).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None


class _DataParallel:
    """What :func:`fit` does differently under ``torch.distributed`` (a process group of 2+ processes).

    DECIDED: ``batch_size`` stays the GLOBAL batch. Every process draws the same
    batch order (same seed) and trains on its contiguous share of each batch
    (``tensor_split``: sizes differ by at most one, a share may be empty); the
    model is wrapped in DDP, whose averaged gradients are exact for losses
    that gather their batch (every loss in :mod:`metricopt.losses` does by
    default), so a run's losses and weights follow one process's up to float
    rounding. Process 0 evaluates and broadcasts the score, so every process
    keeps the same epoch. With NCCL the model moves to the current CUDA device.
    """

    def __init__(self, model: nn.Module) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if dist.get_backend() == "nccl":
            model.to(torch.device("cuda", torch.cuda.current_device()))
            self.model = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
        else:
            self.model = DistributedDataParallel(model)

    def shard(self, index: Tensor) -> Tensor:
        return index.tensor_split(self.world)[self.rank]

    def score(self, evaluate: Callable[[], float | None]) -> float | None:
        box = [evaluate() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    batching: str = "shuffled",
    evaluate: Callable[[nn.Module, int], float | None] | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` with Adam on mini-batches; keep the best epoch by ``evaluate``.

    Args:
        model: maps ``(B, d)`` float inputs to ``(B, 1)`` or ``(B, C)`` logits.
        loss_fn: ``f(logits, target)``; binary logits are passed as ``(B,)``.
        X, y: training inputs ``(N, d)`` and labels ``(N,)``.
        epochs, batch_size, learning_rate, weight_decay: the budget
            (``batch_size`` is the global batch under ``torch.distributed``).
        seed: seeds the batch order.
        batching: ``"shuffled"`` (a plain shuffle each epoch),
            ``"stratified"`` (class-aware: every batch holds each class of
            ``y`` in its share of the data, :func:`~metricopt.batches.stratified_batches`)
            or ``"oversampled"`` (the plain shuffle, each batch topped up to
            at least 32 rows of every class:
            :func:`~metricopt.batches.oversampled_batches`).
        evaluate: called as ``evaluate(model, epoch)`` after each epoch (model in
            eval mode); a returned float is a validation score (higher is
            better) used to keep the best weights; None skips selection.
        progress: called with each epoch's history row (for progress bars).

    Returns:
        A :class:`FitResult`; the model holds the selected weights.

    Under ``torch.distributed`` (an initialised process group of two or more
    processes) every process calls ``fit`` with the same arguments and the
    whole data; each trains on its share of every batch with DDP and gets the
    same result (see ``_DataParallel``).
    """
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer; got {value!r}")
    check_positive("learning_rate", learning_rate)
    check_choice("batching", batching, BATCHINGS)
    if not 0 <= weight_decay < float("inf"):
        raise ValueError(f"`weight_decay` must be a finite number >= 0; got {weight_decay!r}")
    parallel = _DataParallel(model) if is_distributed() else None
    train_model = model if parallel is None else parallel.model
    device = next(model.parameters()).device
    X = torch.as_tensor(X, dtype=torch.float32, device=device)
    y = torch.as_tensor(y, device=device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    result = FitResult()
    best_state = None
    if batching == "shuffled":
        batches = shuffled_batches(len(X), batch_size, generator)
    elif batching == "stratified":
        batches = stratified_batches(y.cpu().long(), batch_size, generator)
    else:
        batches = oversampled_batches(y.cpu().long(), batch_size, generator)
    per_epoch = -(-len(X) // batch_size) if len(X) else 1
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for index in itertools.islice(batches, per_epoch):
            local = index if parallel is None else parallel.shard(index)
            logits = train_model(X[local])
            loss = loss_fn(logits.squeeze(-1) if logits.shape[-1] == 1 else logits, y[local])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        row = {"epoch": float(epoch), "train_loss": total / count}
        if evaluate is not None:
            model.eval()
            score = evaluate(model, epoch) if parallel is None else parallel.score(partial(evaluate, model, epoch))
            if score is not None:
                row["val_score"] = float(score)
                if result.best_score is None or score > result.best_score:
                    result.best_epoch, result.best_score = epoch, float(score)
                    best_state = copy.deepcopy(model.state_dict())
        result.history.append(row)
        if progress is not None:
            progress(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = epochs
    model.eval()
    return result


def train_classifier(
    loss_fn: LossFn,
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    num_classes: int,
    hidden_sizes: Sequence[int] = (64, 64),
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    metric: str = "f1",
    beta: float = 1.0,
    seed: int = 0,
    evaluate: Callable[[nn.Module, int], float | None] | None = None,
    **fit_options: object,
) -> tuple[nn.Module, FitResult]:
    """Build the MLP for ``num_classes`` and :func:`fit` it; the recipe every entry point shares.

    Binary problems get one output logit and float targets, multi-class ones
    ``num_classes`` logits and integer targets. With a validation set and no
    ``evaluate`` callback, the epoch with the best validation ``metric`` is
    kept (:func:`metricopt.evaluation.selection_score`: at threshold 0.5 /
    argmax; a constrained metric at its calibrated threshold).

    Args:
        loss_fn: ``f(logits, target)``, e.g. from :func:`make_loss`.
        X_train, y_train: training data, labels in ``[0, num_classes)``.
        num_classes: number of classes (>= 2).
        hidden_sizes: MLP hidden widths.
        X_val, y_val: optional validation data for model selection.
        metric, beta: the selection metric.
        seed: seeds initialisation and batch order.
        evaluate: replaces the default validation scorer (see :func:`fit`).
        **fit_options: ``epochs``, ``batch_size``, ``learning_rate``,
            ``weight_decay``, ``batching``, ``progress`` of :func:`fit`.
    """
    model = make_mlp(X_train.shape[1], 1 if num_classes == 2 else num_classes, hidden_sizes, seed=seed)
    target = torch.as_tensor(y_train, dtype=torch.float32 if num_classes == 2 else torch.long)
    if evaluate is None and X_val is not None and y_val is not None:
        def evaluate(model: nn.Module, epoch: int) -> float:
            return selection_score(y_val, predict_proba(model, X_val), metric, beta=beta, num_classes=num_classes)

    result = fit(model, loss_fn, X_train, target, seed=seed, evaluate=evaluate, **fit_options)  # type: ignore[arg-type]
    return model, result
