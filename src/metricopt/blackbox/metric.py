"""Black-box metrics: any scoring function, called safely, with a known direction.

MetricOpt never differentiates the metric: it only needs its value now and
then. This module turns whatever the user names (a built-in, a
``"MODULE:FUNCTION"`` string from the command line, or a callable) into a
:class:`BlackBoxMetric` that knows its direction and calls the function so that
a failure is one clear :class:`MetricError` and never a silent NaN.

Conventions:

* A metric takes ``(y_true, y_score)`` (``takes="scores"``), ``(y_true,
  outputs)`` (``takes="outputs"``: the model's raw outputs, e.g. the
  embeddings of a retrieval model) or the model itself (``takes="model"``,
  e.g. a metric that runs its own evaluation). ``y_true`` holds ``(N,)``
  integer labels; ``y_score`` is the output of
  :func:`metricopt.predict.predict_proba`: ``(N,)`` positive-class
  probabilities for a binary model, ``(N, C)`` class probabilities otherwise;
  ``outputs`` is the float32 ``(N, D)`` array of
  :func:`metricopt.predict.predict_logits`.
* ``"recall@K"`` (any integer K >= 1) is the built-in retrieval metric:
  :func:`retrieval_recall` of the outputs, every row a query against the
  other rows (cosine similarity, as :func:`metricopt.metrics.retrieval_report`).
* Decisions, where a built-in needs them, are ``p > 0.5`` for ``(N,)`` scores
  and argmax for ``(N, C)`` scores (:func:`metricopt.predict.predict_labels`,
  as in :mod:`metricopt.evaluation`).
* Direction: each metric reports its raw value; :meth:`BlackBoxMetric.cost` is
  the lower-is-better value used inside :mod:`metricopt.blackbox`
  (``1 - value`` for a higher-is-better metric, the value itself otherwise).

DECIDED here (the MetricOpt paper is silent):

* ``(N, 2)`` scores count as binary: the built-ins use column 1 as the
  positive-class probability, so a two-logit and a one-logit model get the
  same binary metric (binary F1, binary AP, ...), not a two-class macro mean.
* ``cost_weighted_error`` defaults to a missed positive costing 20 times a
  false alarm and reports the plain mean cost per sample (not normalised to
  [0, 1]).
* ``takes`` is inferred from the signature: one required positional
  parameter means the model, two mean ``(y_true, y_score)``.
* ``"MODULE:FUNCTION"`` imports with the current working directory at the
  front of ``sys.path`` for the duration of the import, as ``python -m``
  would; it is removed again afterwards.
* :meth:`BlackBoxMetric.evaluate` runs the model under ``torch.no_grad`` and
  restores its training mode afterwards.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metricopt._checks import check_choice, check_nonnegative, describe
from metricopt.evaluation import rank_score
from metricopt.metrics import METRIC_NAMES, average_precision_score, metric_score, retrieval_report
from metricopt.metrics.registry import BLACKBOX_ONLY, THRESHOLD_FREE, metric_info
from metricopt.predict import predict_labels, predict_logits, predict_proba

__all__ = [
    "BUILTIN_METRICS",
    "BlackBoxMetric",
    "MetricError",
    "aucpr",
    "cost_weighted_error",
    "load_function",
    "make_metric",
    "misclassification_rate",
    "retrieval_recall",
]

#: What a metric function takes: ``(y_true, y_score)``, ``(y_true, outputs)`` (the raw outputs) or the model.
TAKES: tuple[str, ...] = ("scores", "outputs", "model")
#: The built-in retrieval metric's name pattern, ``"recall@K"``.
RECALL_PATTERN = re.compile(r"recall@([0-9]+)")

ON_ERROR: tuple[str, ...] = ("raise", "warn")


class MetricError(ValueError):
    """A black-box metric raised, or returned something other than a finite number."""


# --------------------------------------------------------------------------- inputs


def _as_array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"`num_classes` must be an integer >= 2; got {describe(num_classes)}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}")
    return int(num_classes)


def _labels_and_scores(y_true: Any, y_score: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked ``(labels (N,), scores, C)``; binary scores come back as ``(N,)`` positive-class probabilities."""
    scores = _as_array(y_score)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"`y_score` must hold real numbers; got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if scores.ndim not in (1, 2) or (scores.ndim == 2 and scores.shape[1] < 2):
        raise ValueError(
            "`y_score` must be (N,) positive-class or (N, C) "
            f"class probabilities, C >= 2; got shape {scores.shape}"
        )
    if len(scores) == 0:
        raise ValueError(f"`y_score` must hold at least one sample; got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"`y_score` must be finite; it contains {scores[~np.isfinite(scores)][:3].tolist()}")
    classes = 2 if scores.ndim == 1 else scores.shape[1]
    if num_classes is not None and _check_num_classes(num_classes) != classes:
        raise ValueError(
            f"`num_classes`={num_classes} does not match `y_score` "
            f"of shape {scores.shape} ({classes} classes)"
        )
    if scores.ndim == 2 and classes == 2:
        scores = scores[:, 1]
    labels = _as_array(y_true)
    if labels.shape != (len(scores),):
        raise ValueError(
            f"`y_true` must be ({len(scores)},) labels to match `y_score` "
            f"of shape {_as_array(y_score).shape}; got shape {labels.shape}"
        )
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "biu":
        raise ValueError(
            "`y_true` must hold integer labels; got dtype "
            f"{labels.dtype} (values such as {labels[:3].tolist()})"
        )
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"`y_true` labels must lie in [0, {classes}) for `y_score` of shape "
            f"{_as_array(y_score).shape}; got values in [{labels.min()}, {labels.max()}]"
        )
    return labels, scores, classes


# --------------------------------------------------------------------------- built-ins


def misclassification_rate(y_true: Any, y_score: Any, *, num_classes: int | None = None) -> float:
    """Fraction of wrong decisions (lower is better): ``1 - accuracy``.

    Decisions are ``p > 0.5`` for ``(N,)`` positive-class probabilities (or
    column 1 of ``(N, 2)`` rows) and argmax for ``(N, C)`` rows.

    Args:
        y_true: ``(N,)`` integer labels in ``[0, C)``.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        num_classes: if given, must equal the number of classes of ``y_score``.

    Example:
        >>> misclassification_rate(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.5]))
        0.25
        >>> misclassification_rate([0, 2, 1], [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
        0.3333333333333333
    """
    labels, scores, _ = _labels_and_scores(y_true, y_score, num_classes)
    return float(np.mean(predict_labels(scores) != labels))


def aucpr(y_true: Any, y_score: Any, *, num_classes: int | None = None) -> float:
    """Area under the precision-recall curve as average precision (higher is better).

    Binary scores give the binary AP of class 1
    (:func:`metricopt.metrics.average_precision_score`, equal to
    scikit-learn's); ``(N, C)`` rows with ``C > 2`` give the macro one-vs-rest AP
    (:func:`metricopt.evaluation.rank_score`; a class without a positive
    scores 0).

    Args:
        y_true: ``(N,)`` integer labels in ``[0, C)``.
        y_score: ``(N,)`` or ``(N, C)`` scores (higher = more likely).
        num_classes: if given, must equal the number of classes of ``y_score``.

    Example:
        >>> aucpr([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.4])
        0.8333333333333333
    """
    labels, scores, classes = _labels_and_scores(y_true, y_score, num_classes)
    if scores.ndim == 1:
        return float(average_precision_score(labels, scores))
    return rank_score(labels, scores, "ap", num_classes=classes)


def cost_weighted_error(
    y_true: Any, y_score: Any, *, fn_cost: float = 20.0, fp_cost: float = 1.0, num_classes: int | None = None
) -> float:
    """Mean misclassification cost per sample (lower is better); binary only.

    cost = mean_i ( fn_cost * [y_i = 1 and p_i <= 0.5] + fp_cost * [y_i = 0 and p_i > 0.5] )

    With the defaults a missed positive costs 20 times a false alarm. The value
    is the plain mean cost per sample, in ``[0, max(fn_cost, fp_cost)]``, not
    normalised. For other costs, wrap it:
    ``make_metric(functools.partial(cost_weighted_error, fn_cost=5.0), higher_is_better=False)``.

    Args:
        y_true: ``(N,)`` labels in {0, 1}.
        y_score: ``(N,)`` positive-class probabilities or ``(N, 2)`` rows.
        fn_cost: cost of a false negative (a missed positive), >= 0.
        fp_cost: cost of a false positive (a false alarm), >= 0.
        num_classes: if given, must be 2.

    Raises:
        ValueError: for ``(N, C)`` scores with ``C > 2`` or a negative cost.

    Example:
        >>> cost_weighted_error([1, 1, 0, 0], [0.9, 0.3, 0.8, 0.1])  # one miss, one false alarm
        5.25
    """
    fn_cost = check_nonnegative("fn_cost", fn_cost)
    fp_cost = check_nonnegative("fp_cost", fp_cost)
    shape = _as_array(y_score).shape
    if len(shape) == 2 and shape[1] > 2:
        raise ValueError(f"cost_weighted_error is binary only: `y_score` must be (N,) or (N, 2); got shape {shape}")
    labels, scores, _ = _labels_and_scores(y_true, y_score, num_classes)
    predicted = predict_labels(scores)
    missed = (labels == 1) & (predicted == 0)
    false_alarm = (labels == 0) & (predicted == 1)
    return float(np.mean(fn_cost * missed + fp_cost * false_alarm))


def retrieval_recall(y_true: Any, outputs: Any, *, k: int = 1) -> float:
    """Recall@K of cosine-similarity retrieval among the rows: each row queries all the others.

    A query scores 1 when a row of its label is among its ``k`` most similar
    other rows (ties count against it), as
    :func:`metricopt.metrics.retrieval_report` without a gallery; queries whose
    label no other row has are left out.

    Args:
        y_true: ``(N,)`` labels.
        outputs: ``(N, D)`` embeddings (the model's raw outputs), finite, no zero row.
        k: the cut-off, an integer >= 1.

    Example:
        >>> retrieval_recall([0, 0, 1, 1], [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])  # the last row misses
        0.75
    """
    labels = _as_array(y_true)
    embeddings = _as_array(outputs)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"recall@{k} needs (N, D) embeddings for N = {len(labels)} labels; got outputs of shape "
                         f"{embeddings.shape}")
    return float(retrieval_report(embeddings, labels, ks=(k,))[f"R@{k}"])


def _confusion_score(y_true: Any, y_score: Any, *, metric: str, num_classes: int | None = None) -> float:
    """A confusion-matrix metric of the decisions (``p > 0.5`` / argmax), its ``"auto"`` averaging."""
    labels, scores, classes = _labels_and_scores(y_true, y_score, num_classes)
    return float(metric_score(labels, predict_labels(scores), metric, num_classes=classes))


def _rank_score(y_true: Any, y_score: Any, *, metric: str, num_classes: int | None = None) -> float:
    """``"ap"`` or ``"auroc"`` of the scores: binary, or macro one-vs-rest for ``C > 2``."""
    labels, scores, classes = _labels_and_scores(y_true, y_score, num_classes)
    return rank_score(labels, scores, metric, num_classes=classes)


#: name -> function(y_true, y_score, *, num_classes=None), one per metric (a registry name that is
#: ``same_as`` another, ``aucpr`` for ``ap``, has none of its own).
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "mcr": misclassification_rate,
    "cost": cost_weighted_error,
    **{name: functools.partial(_confusion_score, metric=name) for name in METRIC_NAMES},
    "ap": aucpr,
    **{name: functools.partial(_rank_score, metric=name) for name in THRESHOLD_FREE if name != "ap"},
}
#: name -> (function, higher_is_better), in the registry's order: the black-box-only metrics, then every
#: confusion and threshold-free rank metric; the direction and ``same_as`` from :mod:`metricopt.metrics.registry`.
_BUILTINS: dict[str, tuple[Callable[..., float], bool]] = {
    name: (_FUNCTIONS[metric_info(name).same_as or name], metric_info(name).higher_is_better)
    for name in (*BLACKBOX_ONLY, *METRIC_NAMES, *THRESHOLD_FREE)
}

#: Names :func:`make_metric` accepts as built-in metrics.
BUILTIN_METRICS: tuple[str, ...] = tuple(_BUILTINS)


# --------------------------------------------------------------------------- the metric


def _finite_number(value: Any) -> float | None:
    """``value`` as a float if it is one real number, else None (NaN/inf pass through)."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            return None
        return float(value.detach().reshape(()).cpu())
    if isinstance(value, np.ndarray):
        return float(value.reshape(())) if value.size == 1 and value.dtype.kind in "iuf" else None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


@dataclass(frozen=True)
class BlackBoxMetric:
    """A metric function with a name and a direction, called safely.

    Attributes:
        function: ``function(y_true, y_score)`` (``takes="scores"``) or
            ``function(y_true, outputs)`` (``takes="outputs"``: the raw
            outputs) or ``function(model)`` (``takes="model"``), returning a number.
        name: used in every message.
        higher_is_better: the metric's direction.
        takes: ``"scores"``, ``"outputs"`` or ``"model"``.

    Example:
        >>> metric = BlackBoxMetric(misclassification_rate, "mcr", higher_is_better=False, takes="scores")
        >>> metric.score([0, 1, 1], [0.2, 0.7, 0.4])
        0.3333333333333333
        >>> metric.cost(0.25), make_metric("f1").cost(0.75)
        (0.25, 0.25)
    """

    function: Callable[..., Any]
    name: str
    higher_is_better: bool
    takes: str = "scores"

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise TypeError(f"`function` must be callable; got {describe(self.function)}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"`name` must be a non-empty string; got {describe(self.name)}")
        if not isinstance(self.higher_is_better, bool):
            raise TypeError(f"`higher_is_better` must be True or False; got {describe(self.higher_is_better)}")
        check_choice("takes", self.takes, TAKES)

    def _call(self, *args: Any) -> float:
        try:
            value = self.function(*args)
        except Exception as error:
            raise MetricError(f"metric {self.name!r} raised {type(error).__name__}: {error}") from error
        number = _finite_number(value)
        if number is None:
            raise MetricError(
                f"metric {self.name!r} returned {describe(value)} "
                f"({type(value).__name__}); expected one finite number"
            )
        if not math.isfinite(number):
            raise MetricError(f"metric {self.name!r} returned {number!r}; expected a finite number")
        return number

    def score(self, y_true: Any, y_score: Any) -> float:
        """The metric of ``y_score`` against ``y_true`` (``takes="scores"`` only).

        Raises:
            MetricError: the function raised or returned a non-finite / non-number value.
            TypeError: the metric takes the model (use :meth:`score_model`).
        """
        if self.takes == "model":
            raise TypeError(
                f"metric {self.name!r} takes the model: call "
                "score_model(model), not score(y_true, y_score)"
            )
        return self._call(y_true, y_score)

    def score_model(self, model: nn.Module) -> float:
        """The metric of ``model`` (``takes="model"`` only).

        Raises:
            MetricError: the function raised or returned a non-finite / non-number value.
            TypeError: the metric takes scores (use :meth:`score` or :meth:`evaluate`).
        """
        if self.takes != "model":
            raise TypeError(
                f"metric {self.name!r} takes (y_true, {'y_score' if self.takes == 'scores' else 'outputs'}): call "
                "score(y_true, y_score) or evaluate(model, X, y)"
            )
        return self._call(model)

    def cost(self, value: float) -> float:
        """The internal lower-is-better value: ``1 - value`` if higher is better, else ``value``."""
        number = _finite_number(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"`value` must be a finite number; got {describe(value)}")
        return 1.0 - number if self.higher_is_better else number

    def evaluate(self, model: nn.Module, X: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
        """The raw metric value of ``model`` on ``(X, y)``.

        A ``takes="model"`` metric is called with the model alone (``X`` and
        ``y`` are ignored); otherwise the scores are
        :func:`metricopt.predict.predict_proba` ``(model, X)``, or the raw
        outputs ``predict_logits(model, X)`` for ``takes="outputs"``. The model runs
        without gradients and its training mode is restored afterwards.

        Example:
            >>> model = torch.nn.utils.skip_init(torch.nn.Linear, 1, 1)
            >>> _ = torch.nn.init.ones_(model.weight), torch.nn.init.zeros_(model.bias)
            >>> make_metric("mcr").evaluate(model, np.array([[-1.0], [2.0], [3.0]]), np.array([0, 1, 0]))
            0.3333333333333333
        """
        if self.takes == "model":
            return self.score_model(model)
        was_training = model.training
        try:
            with torch.no_grad():
                y_score = (predict_proba(model, X) if self.takes == "scores"
                           else predict_logits(model, X).cpu().numpy())
        finally:
            model.train(was_training)
        return self.score(_as_array(y), y_score)

    def safe_evaluate(
        self, model: nn.Module, X: np.ndarray | Tensor, y: np.ndarray | Tensor, *, on_error: str = "raise"
    ) -> float | None:
        """:meth:`evaluate`, or None with a ``RuntimeWarning`` when the metric fails and ``on_error="warn"``.

        Only a :class:`MetricError` is turned into a warning; a failure of the
        model itself still raises. None means "skip this observation": it must
        never reach a value function or a checkpoint.

        Example:
            >>> metric = make_metric(lambda model: 0.5, higher_is_better=True)
            >>> metric.safe_evaluate(None, None, None, on_error="warn")
            0.5
        """
        check_choice("on_error", on_error, ON_ERROR)
        try:
            return self.evaluate(model, X, y)
        except MetricError as error:
            if on_error == "raise":
                raise
            warnings.warn(f"metric {self.name!r} failed, observation skipped: {error}", RuntimeWarning, stacklevel=2)
            return None


# --------------------------------------------------------------------------- construction


def _import_module(module_name: str, spec: str) -> Any:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(module_name)
    except Exception as error:
        message = " ".join(str(error).split())
        raise ImportError(
            f"cannot import module {module_name!r} for `spec` {spec!r}: {type(error).__name__}: {message}"
        ) from error
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_function(spec: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:function"`` (a dotted path after the colon is allowed).

    The current working directory is importable (as with ``python -m``).

    Raises:
        ValueError: no colon, an empty part, or a missing attribute.
        ImportError: the module cannot be imported (the message gives the cause).
        TypeError: ``spec`` is not a string, or names something not callable.

    Example:
        >>> load_function("metricopt.blackbox.metric:misclassification_rate") is misclassification_rate
        True
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a 'MODULE:FUNCTION' string; got {describe(spec)}")
    module_name, colon, path = spec.partition(":")
    if not colon:
        raise ValueError(
            f"`spec` {spec!r} must be a built-in metric name or "
            "'MODULE:FUNCTION' (e.g. 'mymetrics:score'); it has no ':'"
        )
    if not module_name.strip() or not path.strip():
        raise ValueError(
            f"`spec` {spec!r} must be 'MODULE:FUNCTION' with "
            "a module before and a function after the ':'"
        )
    module = _import_module(module_name, spec)
    target: Any = module
    for part in path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {path!r} (`spec` {spec!r})") from None
    if not callable(target):
        raise TypeError(f"`spec` {spec!r} names {describe(target)}, which is not callable")
    return target


def _function_name(function: Callable[..., Any]) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__name__", type(function).__name__)


def _infer_takes(function: Callable[..., Any], name: str) -> str:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise TypeError(
            "cannot read the signature of metric function "
            f"{name}; pass takes='scores', takes='outputs' or takes='model'"
        ) from None
    parameters = signature.parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    required_keyword = [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty]
    if not required_keyword and len(required) in (1, 2):
        return "model" if len(required) == 1 else "scores"
    raise TypeError(
        f"metric function {name} must take (y_true, y_score) or (model); got signature {signature} "
        "(pass takes='scores', takes='outputs' or takes='model' to say how to call it)"
    )


def _require_direction(name: str, higher_is_better: bool | None) -> bool:
    if higher_is_better is None:
        raise ValueError(
            f"metric {name!r} is not built in, so its direction is unknown: pass `higher_is_better=True` or "
            "`higher_is_better=False`"
        )
    return higher_is_better


def _recall_metric(name: str, k: int, higher_is_better: bool | None, takes: str | None) -> BlackBoxMetric:
    """The built-in ``"recall@K"``: :func:`retrieval_recall` of the raw outputs, higher is better."""
    if k < 1:
        raise ValueError(f"built-in metric 'recall@K' needs an integer K >= 1; got {name!r}")
    if higher_is_better is False:
        raise ValueError(f"built-in metric {name!r} is higher-is-better; got `higher_is_better`=False")
    if takes not in (None, "outputs"):
        raise ValueError(f"built-in metric {name!r} takes (y_true, outputs); got `takes`={takes!r}")
    return BlackBoxMetric(functools.partial(retrieval_recall, k=k), name, True, "outputs")


def make_metric(
    metric: str | Callable[..., Any] | BlackBoxMetric,
    *,
    higher_is_better: bool | None = None,
    takes: str | None = None,
    num_classes: int | None = None,
) -> BlackBoxMetric:
    """A :class:`BlackBoxMetric` from a built-in name, ``"MODULE:FUNCTION"``, a callable, or a metric.

    Args:
        metric: one of :data:`BUILTIN_METRICS` (``"mcr"``, ``"aucpr"``,
            ``"cost"``, the confusion-matrix names of
            ``metricopt.METRIC_NAMES``, ``"ap"``, ``"auroc"``), the
            retrieval metric ``"recall@K"`` (:func:`retrieval_recall` of the
            model's raw outputs, ``takes="outputs"``), a
            ``"MODULE:FUNCTION"`` spec (:func:`load_function`), a callable, or
            a :class:`BlackBoxMetric` (returned as it is).
        higher_is_better: the direction; known for built-ins (a contradicting
            value is an error), required for anything else.
        takes: ``"scores"``, ``"outputs"`` or ``"model"``; inferred from the
            signature when None (one required positional parameter: the model;
            two: scores; ``"outputs"`` is never inferred).
        num_classes: bound into the built-ins, which then check it against the
            scores' shape; ignored for user functions.

    Raises:
        ValueError: unknown name, missing or contradicting direction, a
            built-in asked to take the model, ``num_classes`` != 2 for ``"cost"``.
        TypeError: a signature that fits neither call, or a wrong argument type.

    Example:
        >>> make_metric("aucpr").higher_is_better, make_metric("cost").higher_is_better
        (True, False)
        >>> make_metric(lambda y_true, y_score: 0.0, higher_is_better=False).takes
        'scores'
    """
    if higher_is_better is not None and not isinstance(higher_is_better, bool):
        raise TypeError(f"`higher_is_better` must be True, False or None; got {describe(higher_is_better)}")
    if takes is not None:
        check_choice("takes", takes, TAKES)
    if num_classes is not None:
        num_classes = _check_num_classes(num_classes)
    if isinstance(metric, BlackBoxMetric):
        if higher_is_better is not None and higher_is_better != metric.higher_is_better:
            raise ValueError(
                f"`higher_is_better`={higher_is_better} contradicts metric "
                f"{metric.name!r} (higher_is_better={metric.higher_is_better})"
            )
        if takes is not None and takes != metric.takes:
            raise ValueError(f"`takes`={takes!r} contradicts metric {metric.name!r} (takes={metric.takes!r})")
        return metric
    if isinstance(metric, str) and (match := RECALL_PATTERN.fullmatch(metric)):
        return _recall_metric(metric, int(match.group(1)), higher_is_better, takes)
    if isinstance(metric, str) and metric in _BUILTINS:
        function, direction = _BUILTINS[metric]
        if higher_is_better is not None and higher_is_better != direction:
            better = "higher" if direction else "lower"
            raise ValueError(
                f"built-in metric {metric!r} is {better}-is-better; "
                f"got `higher_is_better`={higher_is_better}"
            )
        if takes not in (None, "scores"):
            raise ValueError(f"built-in metric {metric!r} takes (y_true, y_score); got `takes`={takes!r}")
        if metric == "cost" and num_classes not in (None, 2):
            raise ValueError(f"built-in metric 'cost' is binary only; got `num_classes`={num_classes}")
        if num_classes is not None:
            function = functools.partial(function, num_classes=num_classes)
        return BlackBoxMetric(function, metric, direction, "scores")
    if isinstance(metric, str):
        if ":" not in metric:
            raise ValueError(
                f"`metric` {metric!r} is neither a built-in metric ({', '.join(BUILTIN_METRICS)}) nor 'MODULE:FUNCTION'"
            )
        direction = _require_direction(metric, higher_is_better)
        function, name = load_function(metric), metric
    elif callable(metric):
        name = _function_name(metric)
        direction = _require_direction(name, higher_is_better)
        function = metric
    else:
        raise TypeError(
            "`metric` must be a metric name, 'MODULE:FUNCTION', a "
            f"callable or a BlackBoxMetric; got {describe(metric)}"
        )
    return BlackBoxMetric(function, name, direction, takes if takes is not None else _infer_takes(function, name))
