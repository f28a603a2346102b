"""Data, backbones, adapters and direct losses of the black-box benchmark (:mod:`benchmarks.suites.blackbox`).

* :func:`load_data`: one (dataset, seed)'s train / validation / test rows
  (a :class:`metricopt.app.data.Split`) and its number of classes.
  Fashion-MNIST (10 classes): ``n_train`` images of the official training file
  drawn stratified with the seed, split 80/20 (stratified) into training and
  validation, ``n_test`` images of the official test file (stratified); pixels
  / 255, then standardised with the training images' single mean and standard
  deviation; shape ``(N, 1, 28, 28)``. Tabular (imbalanced binary sets of
  ``metricopt.app.data.DATASETS``): ``train_val_test_split`` 60/20/20 with
  ``random_state = seed`` (stratified, train-only standardisation).
  Retrieval (``letter_retrieval``, ``fashion_retrieval``): the rank family's
  class-disjoint sets (:func:`benchmarks.suites.retrieval.load_data`: test
  classes never seen in training, 20 % of the training rows held out as
  validation, stratified with the seed); the number of classes returned is
  the number of training classes.
* :func:`pretrain`: the frozen backbone. Fashion-MNIST: :class:`SmallCNN`
  (conv 1->16 3x3, ReLU, max-pool 2, conv 16->32 3x3, ReLU, max-pool 2,
  flatten, Linear -> 64, ReLU, Linear -> 10; "same" padding, DECIDED: the
  brief does not say) trained with cross-entropy by :func:`metricopt.app.recipes.classification.fit`;
  tabular: the MLP (64, 64) of :func:`metricopt.app.recipes.classification.train_classifier`
  (cross-entropy, the last epoch kept); retrieval: the retrieval suite's
  embedders (:func:`benchmarks.suites.retrieval.make_embedder`: Letter MLP
  16 -> 128 -> 128 -> 64, Fashion-MNIST CNN with a 64-d output) trained by
  :func:`training_loss`'s :func:`contrastive_loss` with Adam (lr 1e-3, batches
  of 256, the last epoch kept). Initialisation and batch order come from the
  seed alone.
* :func:`training_loss`: the loss of pre-training and of loss-only fine-tuning:
  cross-entropy for the classifiers, :func:`contrastive_loss` for the
  embedders (DECIDED: the MetricOpt paper fine-tunes retrieval embedders with
  their own training loss; a contrastive loss is the plainest metric-learning
  loss, the one pytorch-metric-learning defaults to, and no peer is needed).
* :func:`make_adapter`: ``"input_bias"`` (:class:`~metricopt.blackbox.InputBias`,
  the paper's choice for MLPs) or ``"film"`` (:class:`~metricopt.blackbox.FiLM`
  with its default layers: every conv and every Linear but the output layer).
* :func:`direct_loss`: the loss in this library that targets each benchmark
  metric directly: ``mcr`` -> ``ConfusionLoss("accuracy")`` (AnyLoss),
  ``aucpr`` -> ``APLoss`` (RaMBO; multi-class: one-vs-rest mean AP without the
  cross-class term, ``cross_class_weight=0``, DECIDED: that is exactly the
  macro one-vs-rest AP the metric reports), ``cost`` -> ``ConfusionLoss`` with
  :func:`cost_score` (``1 - cost / fn_cost``, so the loss is the soft cost per
  sample divided by ``fn_cost``), ``recall@1`` -> ``RecallLoss(interpolation=2,
  margin=0)`` (RaMBO's recall loss with the defaults it had when these suites
  were measured; issue 16 changed them to 2048 / 0.005, whose gradient is 30
  to 90 times smaller, which the suites' SGD learning rate was not tuned for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from metricopt.app.data import Split

__all__ = [
    "ADAPTERS",
    "DIRECT_LOSSES",
    "FN_COST",
    "FP_COST",
    "SmallCNN",
    "contrastive_loss",
    "cost_score",
    "direct_loss",
    "load_data",
    "make_adapter",
    "pretrain",
    "training_loss",
]

#: Adapter names of the settings.
ADAPTERS: tuple[str, ...] = ("input_bias", "film")
#: The ``cost`` metric's weights (``metricopt.blackbox.metric.cost_weighted_error`` defaults: 20:1).
FN_COST, FP_COST = 20.0, 1.0
#: Per metric, the direct loss's description (table footnotes).
DIRECT_LOSSES: dict[str, str] = {
    "mcr": 'AnyLoss: metricopt.losses.ConfusionLoss("accuracy")',
    "aucpr": "RaMBO: metricopt.losses.APLoss() (binary); APLoss(cross_class_weight=0), one-vs-rest mean AP "
             "(multi-class)",
    "cost": f"AnyLoss: metricopt.losses.ConfusionLoss(cost_score), soft ({FN_COST:g} FN + {FP_COST:g} FP) / "
            f"({FN_COST:g} N)",
    "recall@1": "RaMBO: metricopt.losses.RecallLoss(interpolation=2, margin=0) (its defaults until issue 16)",
}
#: Retrieval datasets of the black-box suites -> the retrieval suite's names.
RETRIEVAL_DATASETS: dict[str, str] = {"letter_retrieval": "letter", "fashion_retrieval": "fashion_mnist"}
#: The retrieval models (:func:`pretrain`): the retrieval suite's MLP (Letter) and CNN (Fashion-MNIST) embedders.
EMBEDDERS: tuple[str, ...] = ("mlp_embedder", "cnn_embedder")
#: :func:`contrastive_loss`'s margin on the distance of L2-normalised embeddings of different classes.
CONTRASTIVE_MARGIN = 1.0


def _fashion(seed: int, n_train: int, n_test: int) -> Split:
    from sklearn.model_selection import train_test_split

    from metricopt.app.data import Split, load_fashion_mnist

    X, y = load_fashion_mnist("train")
    X_te, y_te = load_fashion_mnist("test")
    if n_train < len(y):
        X, _, y, _ = train_test_split(X, y, train_size=n_train, stratify=y, random_state=seed)
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    if n_test < len(y_te):
        X_te, _, y_te, _ = train_test_split(X_te, y_te, train_size=n_test, stratify=y_te, random_state=seed)
    scaled = [a.astype(np.float32)[:, None] / np.float32(255.0) for a in (X_fit, X_val, X_te)]
    mean, std = float(scaled[0].mean(dtype=np.float64)), float(scaled[0].std(dtype=np.float64)) or 1.0
    X_fit, X_val, X_te = (np.ascontiguousarray((a - mean) / std, dtype=np.float32) for a in scaled)
    as64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)
    return Split(X_fit, as64(y_fit), X_val, as64(y_val), X_te, as64(y_te))


def load_data(dataset: str, seed: int, *, fashion_sizes: tuple[int, int] = (3000, 1000),
              retrieval_sizes: tuple[int, int] = (10000, 5000)) -> tuple[Split, int]:
    """The split of ``dataset`` for ``seed`` (see the module docstring) and its number of (training) classes.

    ``X_*`` are float32 (``(N, d)`` or ``(N, 1, 28, 28)``), ``y_*`` int64.

    Raises:
        FileNotFoundError, ImportError: the data set is not installed here.
    """
    if dataset == "fashion_mnist":
        return _fashion(seed, *fashion_sizes), 10
    if dataset in RETRIEVAL_DATASETS:
        from benchmarks.harness.specs import RetrievalSpec
        from benchmarks.suites.retrieval import load_data as retrieval_data

        split = retrieval_data(RetrievalSpec(fashion_sizes=retrieval_sizes), RETRIEVAL_DATASETS[dataset], seed)
        return split, len(np.unique(split.y_train))
    from metricopt.app.data import load_dataset, train_val_test_split

    data = load_dataset(dataset)
    return train_val_test_split(data.X, data.y, test_size=0.2, val_size=0.2, random_state=seed), data.n_classes


class SmallCNN(nn.Sequential):
    """conv 1->16 3x3, ReLU, max-pool 2, conv 16->32 3x3, ReLU, max-pool 2, Linear -> 64, ReLU, Linear -> classes."""

    def __init__(self, num_classes: int = 10, *, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().__init__(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes),
            )


def contrastive_loss(embeddings: Tensor, labels: Tensor) -> Tensor:
    """The contrastive loss of a batch of embeddings (Hadsell et al. 2006, as pytorch-metric-learning's default).

    On L2-normalised embeddings with pairwise Euclidean distances ``d``: the
    mean of ``d`` over the pairs of one class plus the mean of
    ``relu(CONTRASTIVE_MARGIN - d)`` over the pairs of different classes whose
    term is non-zero (pytorch-metric-learning's ``AvgNonZeroReducer``); a batch
    without such pairs contributes 0 for that part.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(float(contrastive_loss(e, torch.tensor([0, 0, 1]))), 5)  # same-class pair at 0; others at sqrt(2)
        0.0
    """
    z = torch.nn.functional.normalize(embeddings, dim=1)
    distance = (2 - 2 * (z @ z.T)).clamp_min(0).add(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = distance[same & off_diagonal]
    negative = torch.relu(CONTRASTIVE_MARGIN - distance[~same])
    negative = negative[negative > 0]
    zero = embeddings.sum() * 0  # keeps the graph (and the dtype) when a part is empty
    return ((positive.mean() if len(positive) else zero)
            + (negative.mean() if len(negative) else zero))


def training_loss(model: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Pre-training's and loss-only fine-tuning's loss for ``model``: cross-entropy, or the contrastive loss."""
    from metricopt.losses import cross_entropy_loss

    return contrastive_loss if model in EMBEDDERS else cross_entropy_loss


def pretrain(split: Split, num_classes: int, model: str, *, epochs: int, seed: int) -> nn.Module:
    """The backbone of ``model`` (``"cnn"``, ``"mlp"`` or an embedder of :data:`EMBEDDERS`) trained by
    :func:`training_loss` on ``split``'s training rows."""
    from metricopt.app.recipes.classification import fit, train_classifier
    from metricopt.losses import cross_entropy_loss

    if model in EMBEDDERS:
        from benchmarks.harness.specs import RetrievalSpec
        from benchmarks.suites.retrieval import make_embedder

        network = make_embedder(RetrievalSpec(), model, seed, split.X_train.shape[1:])
        fit(network, contrastive_loss, split.X_train, torch.as_tensor(split.y_train), epochs=epochs, seed=seed)
    elif model == "cnn":
        network = SmallCNN(num_classes, seed=seed)
        fit(network, cross_entropy_loss, split.X_train, torch.as_tensor(split.y_train), epochs=epochs, seed=seed)
    elif model == "mlp":
        network, _ = train_classifier(cross_entropy_loss, split.X_train, split.y_train, num_classes=num_classes,
                                      hidden_sizes=(64, 64), seed=seed, epochs=epochs)
    else:
        raise ValueError(f"`model` must be 'cnn' or 'mlp'; got {model!r}")
    return network.eval()


def make_adapter(kind: str, backbone: nn.Module, *, phi_size: int, seed: int) -> Any:
    """``InputBias`` or ``FiLM`` (default layers) on ``backbone``, projections seeded by ``seed``."""
    from metricopt.blackbox import FiLM, InputBias

    if kind == "input_bias":
        return InputBias(backbone, phi_size=phi_size, seed=seed)
    if kind == "film":
        return FiLM(backbone, phi_size=phi_size, seed=seed)
    raise ValueError(f"`adapter` must be one of {ADAPTERS}; got {kind!r}")


def cost_score(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """``1 - (FN_COST * fn + FP_COST * fp) / (FN_COST * n)``: the ``cost`` metric as a score in [0, 1].

    A count formula for ``ConfusionLoss`` (``metricopt.metrics.confusion.resolve_metric``'s
    callable contract: torch operations, a tensor shaped like the counts).

    Example:
        >>> t = lambda v: torch.tensor(float(v))
        >>> round(float(cost_score(t(1), t(1), t(1), t(1))), 6)  # cost (20 + 1) / 4 = 5.25 -> 1 - 5.25 / 20
        0.7375
    """
    total = tp + fp + fn + tn
    return 1 - (FN_COST * fn + FP_COST * fp) / (FN_COST * total.clamp_min(1e-12))


def direct_loss(metric: str, num_classes: int) -> Callable[[Tensor, Tensor], Tensor] | None:
    """The loss that targets ``metric`` directly (see :data:`DIRECT_LOSSES`), or None if it has none here."""
    from metricopt.losses import APLoss, ConfusionLoss, RecallLoss

    if metric == "recall@1":
        return RecallLoss(interpolation=2.0, margin=0.0)
    if metric == "mcr":
        return ConfusionLoss("accuracy")
    if metric == "aucpr":
        return APLoss() if num_classes == 2 else APLoss(cross_class_weight=0.0)
    if metric == "cost" and num_classes == 2:
        return ConfusionLoss(cost_score)
    return None
