"""AnyLoss as a gradient-boosting objective: per-sample gradient and curvature of a soft confusion metric.

Gradient boosting (LightGBM, XGBoost) fits each round to the per-sample
gradient ``g_i`` and curvature ``h_i`` of the loss at the current raw scores
``z`` of the *whole* training set, so AnyLoss there is the exact
full-set soft metric, not a batch estimate. For raw scores ``z``:

    p = sigmoid(z),  A = sigmoid(L (p - 1/2)),
    TP = sum y A,  FP = sum (1 - y) A,  FN = sum y (1 - A),  TN = sum (1 - y)(1 - A),
    loss = scale * (1 - M(TP, FP, FN, TN)) / (1 - m),

with ``M`` the metric's own formula (the one the exact metric and
:func:`~metricopt.losses.confusion_loss` use, from the registry in
:mod:`metricopt.metrics._formulas`) and ``m`` its lowest score (-1 for MCC
and kappa, else 0), i.e. ``scale`` times :func:`~metricopt.losses.confusion_loss`
on the whole set.

The counts are sums, so with ``s_i = dcounts/dA_i`` (``(1, 0, -1, 0)`` for a
positive, ``(0, 1, 0, -1)`` for a negative), ``G`` and ``H`` the gradient and the
4x4 Hessian of the loss in the counts (torch autograd on the 4 numbers), and
``A'``, ``A''`` the derivatives of ``A`` in ``z``:

    g_i = (G . s_i) A'_i                                  (exact)
    h_i = s_i^T H s_i A'_i^2 + (G . s_i) A''_i            (the exact diagonal of the Hessian)

The exact diagonal is mostly its second term, whose sign is that of
``A''``: half of the samples near the threshold have negative curvature, so it
cannot be a Newton denominator as it is. ``hessian`` chooses the positive
curvature the booster gets:

* ``"gauss_newton"`` (default): ``|G . s_i| A_i (1 - A_i) (L p_i (1 - p_i))^2``,
  the Gauss-Newton curvature of each sample's term ``(G . s_i) A_i`` read as a
  logistic loss on the amplified logit ``u_i = L (p_i - 1/2)`` (its Fisher
  curvature in ``u`` is ``|G . s_i| A (1 - A)``; ``du/dz = L p (1 - p)``). It
  equals ``|g_i| L p_i (1 - p_i)``: a Newton step moves each sample's amplified
  logit by about one unit, then the learning rate shrinks it;
* ``"exact"``: the exact diagonal clipped below at ``min_hessian``;
* ``"constant"``: 1 for every sample (a plain gradient step, the learning
  rate times the leaf's mean gradient of the scaled loss).

Which one boosts best is measured, not argued: docs/design.md, "Gradient
boosting with a confusion-metric objective".

Numerics (as :mod:`metricopt.losses.soft_confusion`): nothing close to 1 is
subtracted from 1. ``p - 1/2 = tanh(z / 2) / 2`` exactly, ``A`` and ``1 - A``
are each ``sigmoid(+-x)`` of ``x = L tanh(z/2) / 2`` to full relative precision,
``p (1 - p)`` is the product of ``sigmoid(z)`` and ``sigmoid(-z)``, and each count
is its own sum of non-negative terms. All arithmetic is float64.

``scale`` defaults to the number of samples: the objective is then the sum
form, whose per-sample gradients are of order 1 as a per-sample loss's are,
the magnitude the boosters' defaults (``min_sum_hessian_in_leaf``,
``lambda_l2``, a constant curvature of 1) are set for. The Newton step of the
``"gauss_newton"`` and ``"exact"`` forms does not depend on it.

**Multi-class** (:func:`multiclass_confusion_objective`): raw scores ``z`` of
shape ``(N, K)``, the soft prediction ``P = softmax(s z)`` of
:func:`~metricopt.losses.confusion_loss` (sharpness ``s``), its soft confusion
matrix and averaging; the loss is ``scale`` times ``confusion_loss`` on the
whole set and its gradient ``g`` comes from torch autograd (exact). Each
sample's part of the loss is linear in its soft prediction, ``sum_k c_ik
P_ik`` with ``c = dLoss/dP``, so ``g_ik = s P_ik (c_ik - cbar_i)`` with
``cbar_i = sum_k P_ik c_ik``. The ``"gauss_newton"`` curvature reads that term
as a softmax cross-entropy weighted by ``m_i = max_k |c_ik - cbar_i|`` and takes
its Fisher diagonal, ``h_ik = m_i s^2 P_ik (1 - P_ik)``: a Newton step then moves
each tempered logit ``s z_ik`` by at most about ``1 / (1 - P_ik)`` units, as the
binary rule moves the amplified logit by about one. ``"constant"``: 1.

The module imports numpy and torch only; the boosting library is the
application's (:mod:`metricopt.app.recipes.boosting`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metricopt._checks import check_choice, check_positive, describe
from metricopt.losses.confusion import DEFAULT_SHARPNESS, confusion_loss
from metricopt.metrics.confusion import MetricArg, resolve_metric
from metricopt.metrics.constrained import is_constrained

__all__ = [
    "HESSIANS",
    "MULTICLASS_HESSIANS",
    "confusion_objective",
    "count_derivatives",
    "exact_hessian_diagonal",
    "multiclass_confusion_objective",
    "soft_counts",
]

#: The curvature rules of :func:`confusion_objective`.
HESSIANS = ("gauss_newton", "exact", "constant")
#: The curvature rules of :func:`multiclass_confusion_objective`.
MULTICLASS_HESSIANS = ("gauss_newton", "constant")
#: The floor of the ``"exact"`` curvature (in units of the default ``scale``, a per-sample loss).
DEFAULT_MIN_HESSIAN = 1e-3


def _sigmoid_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(x), sigmoid(-x))``, each to full relative precision (no ``1 - something``)."""
    e = np.exp(-np.abs(x))
    small, large = e / (1 + e), 1 / (1 + e)
    upper = x >= 0
    return np.where(upper, large, small), np.where(upper, small, large)


def _amplified(z: np.ndarray, amplification: float) -> tuple[np.ndarray, ...]:
    """``p, 1 - p, A, 1 - A`` of raw scores ``z``, each without cancellation."""
    p, q = _sigmoid_pair(z)
    a, b = _sigmoid_pair(0.5 * amplification * np.tanh(0.5 * z))  # L (p - 1/2) = L tanh(z/2) / 2
    return p, q, a, b


def _as_inputs(scores: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(scores, dtype=np.float64)
    y = np.asarray(target)
    if z.ndim != 1 or z.size == 0:
        raise ValueError(f"`scores` must be a non-empty 1-D array of raw scores; got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("`scores` must be finite; got NaN or inf")
    if y.shape != z.shape:
        raise ValueError(f"`target` must have the shape of `scores` {z.shape}; got {y.shape}")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:3].tolist() if y.dtype.kind in "biuf" else describe(y.dtype)
        raise ValueError(f"binary `target` must hold only 0 and 1; got values such as {bad}")
    return z, y.astype(np.float64)


def soft_counts(scores: Any, target: Any, amplification: float) -> np.ndarray:
    """The soft ``[TP, FP, FN, TN]`` of raw scores (float64), each a sum of non-negative terms.

    Examples:
        >>> soft_counts([4.0, -4.0, 3.0], [1, 1, 0], 73.0).round(3).tolist()
        [1.0, 1.0, 1.0, 0.0]
    """
    amplification = check_positive("amplification", amplification)
    z, y = _as_inputs(scores, target)
    _, _, a, b = _amplified(z, amplification)
    return _counts(y, a, b)


def _counts(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[TP, FP, FN, TN]`` from labels, ``A`` and ``1 - A``."""
    return np.array([y @ a, (1 - y) @ a, y @ b, (1 - y) @ b])


def count_derivatives(
    counts: Any, metric: MetricArg = "f1", *, beta: float = 1.0, scale: float = 1.0, hessian: bool = True
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Loss, gradient ``(4,)`` and Hessian ``(4, 4)`` of ``scale (1 - M) / (1 - m)`` in ``[TP, FP, FN, TN]``.

    ``M`` is the metric's formula from the registry (or a callable
    ``f(tp, fp, fn, tn)`` in torch operations); derivatives by torch autograd
    in float64. ``hessian=False`` skips the Hessian (None), the costly part.

    Examples:
        >>> loss, grad, hess = count_derivatives([2.0, 1.0, 1.0, 4.0], "f1")
        >>> round(loss, 4), grad.round(4).tolist()   # F1 = 4 / 6
        (0.3333, [-0.1111, 0.1111, 0.1111, 0.0])
    """
    if is_constrained(metric):
        raise ValueError(f"the boosting objective has no constrained form: `metric` {describe(metric)} has "
                         "constraints; boost with a log-loss and calibrate the threshold "
                         "(metricopt.metrics.constrained.calibrate_threshold)")
    spec, formula = resolve_metric(metric, beta)
    lower = 0.0 if spec is None else spec.lower_bound

    def loss(values: torch.Tensor) -> torch.Tensor:
        return scale * (1 - formula(*values.unbind())) / (1 - lower)

    c = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    value = loss(c)
    if not bool(torch.isfinite(value)):
        raise ValueError(f"`metric` returned a non-finite score at counts {c.tolist()}")
    grad = torch.autograd.functional.jacobian(loss, c)
    hess = torch.autograd.functional.hessian(loss, c).numpy() if hessian else None
    return float(value), grad.numpy(), hess


def _derivatives(
    z: np.ndarray, y: np.ndarray, metric: MetricArg, amplification: float, beta: float, scale: float, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the gradient ``g`` and the curvature of ``rule`` (``"exact"``: the unclipped diagonal)."""
    p, q, a, b = _amplified(z, amplification)
    pq = p * q
    _, g_c, h_c = count_derivatives(_counts(y, a, b), metric, beta=beta, scale=scale, hessian=rule == "exact")
    positive = y == 1
    w = np.where(positive, g_c[0] - g_c[2], g_c[1] - g_c[3])  # G . s_i = dLoss/dA_i, one value per class
    slope = amplification * a * b * pq  # A' = dA/dz = L A (1 - A) p (1 - p)
    grad = w * slope
    if rule == "constant":
        return grad, np.ones_like(grad)
    if rule == "gauss_newton":
        return grad, np.abs(grad) * amplification * pq
    # s^T H s, one value per class; A'' = A' (L p q (1 - 2A) + (1 - 2p)), with 1 - 2A = (1 - A) - A
    curvature = np.where(positive, h_c[0, 0] - 2 * h_c[0, 2] + h_c[2, 2], h_c[1, 1] - 2 * h_c[1, 3] + h_c[3, 3])
    return grad, curvature * slope**2 + w * slope * (amplification * pq * (b - a) + (q - p))


def confusion_objective(
    scores: Any,
    target: Any,
    metric: MetricArg = "f1",
    *,
    amplification: float,
    beta: float = 1.0,
    hessian: str = "gauss_newton",
    min_hessian: float = DEFAULT_MIN_HESSIAN,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gradient and positive curvature of the full-set soft confusion loss (binary).

    The objective a gradient booster calls each round (see the module
    docstring for the maths and the curvature rules).

    Args:
        scores: raw scores ``z`` (log-odds), shape ``(N,)``.
        target: labels in {0, 1}, shape ``(N,)``.
        metric: a confusion-matrix metric name of the registry (``"f1"``,
            ``"mcc"``, ``"gmean"``, ...) or a callable ``f(tp, fp, fn, tn)``
            in torch operations (higher is better).
        amplification: the steepness L of ``A(p) = sigmoid(L (p - 1/2))``, > 0.
        beta: recall's weight for ``metric="fbeta"``.
        hessian: ``"gauss_newton"``, ``"exact"`` (clipped at ``min_hessian``) or ``"constant"``.
        min_hessian: the floor of the ``"exact"`` curvature, > 0.
        scale: the loss's multiplier; None: the number of samples (the sum form).

    Returns:
        ``(grad, hess)``: float64 arrays of shape ``(N,)``; ``hess > 0``.

    Raises:
        ValueError: an unknown ``metric`` or ``hessian``; ``amplification``,
            ``min_hessian`` or ``scale`` not a finite number > 0; ``scores`` not
            finite; ``target`` not 0/1 of the scores' shape.

    Examples:
        >>> grad, hess = confusion_objective([0.0, 0.0, 0.0, 0.0], [1, 0, 0, 0], "f1", amplification=20.0)
        >>> bool(grad[0] < 0 < grad[1]), bool((hess > 0).all())   # raise the positive, lower the negatives
        (True, True)
    """
    amplification = check_positive("amplification", amplification)
    check_choice("hessian", hessian, HESSIANS)
    min_hessian = check_positive("min_hessian", min_hessian)
    resolve_metric(metric, beta)  # the metric's error before the inputs'
    z, y = _as_inputs(scores, target)
    scale = float(z.size) if scale is None else check_positive("scale", scale)
    grad, curvature = _derivatives(z, y, metric, amplification, beta, scale, hessian)
    if hessian == "constant":
        return grad, curvature
    if hessian == "gauss_newton":
        # a saturated sample (A (1 - A) = 0 in float64) has g = 0 too: the tiny floor only keeps h > 0
        return grad, np.maximum(curvature, np.finfo(np.float64).tiny)
    return grad, np.maximum(curvature, min_hessian)


def exact_hessian_diagonal(
    scores: Any, target: Any, metric: MetricArg = "f1", *, amplification: float, beta: float = 1.0,
    scale: float | None = None,
) -> np.ndarray:
    """The unclipped exact Hessian diagonal (negative for some samples): what ``hessian="exact"`` clips.

    Examples:
        >>> h = exact_hessian_diagonal([-0.05, 0.05, 0.0], [1, 0, 1], "f1", amplification=73.0)
        >>> bool(h.min() < 0 < h.max())
        True
    """
    amplification = check_positive("amplification", amplification)
    z, y = _as_inputs(scores, target)
    scale = float(z.size) if scale is None else check_positive("scale", scale)
    return _derivatives(z, y, metric, amplification, beta, scale, "exact")[1]


def multiclass_confusion_objective(
    scores: Any,
    target: Any,
    metric: MetricArg = "f1",
    *,
    sharpness: float = DEFAULT_SHARPNESS,
    average: str = "auto",
    beta: float = 1.0,
    hessian: str = "gauss_newton",
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gradient and positive curvature of the full-set soft confusion loss (multi-class).

    See the module docstring ("Multi-class") for the maths and the curvature.

    Args:
        scores: raw scores ``z``, shape ``(N, K)``, ``K >= 2``.
        target: integer classes in ``[0, K)``, shape ``(N,)``.
        metric: a confusion-matrix metric name or a callable ``f(tp, fp, fn, tn)`` (as
            :func:`~metricopt.losses.confusion_loss`).
        sharpness: ``s`` of the soft prediction ``softmax(s z)``, > 0.
        average: how per-class scores combine (:func:`~metricopt.losses.confusion_loss`; ``"auto"``: the
            metric's own multi-class form, macro for F1).
        beta: recall's weight for ``metric="fbeta"``.
        hessian: ``"gauss_newton"`` or ``"constant"``.
        scale: the loss's multiplier; None: the number of samples.

    Returns:
        ``(grad, hess)``: float64 arrays of shape ``(N, K)``; ``hess > 0``.

    Raises:
        ValueError: a bad argument, named.

    Examples:
        >>> grad, hess = multiclass_confusion_objective(np.zeros((3, 3)), [0, 1, 2], "f1")
        >>> [int(np.argmin(row)) for row in grad], bool((hess > 0).all())  # raise each row's own class
        ([0, 1, 2], True)
    """
    sharpness = check_positive("sharpness", sharpness)
    check_choice("hessian", hessian, MULTICLASS_HESSIANS)
    resolve_metric(metric, beta)
    z = np.asarray(scores, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"`scores` must have shape (N, K) with N >= 1 and K >= 2; got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("`scores` must be finite; got NaN or inf")
    y = np.asarray(target)
    if y.shape != z.shape[:1] or y.dtype.kind not in "biu" or y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"`target` must hold integer classes in [0, {z.shape[1]}), one per row of `scores`; "
                         f"got shape {y.shape} and dtype {y.dtype}")
    scale = float(z.shape[0]) if scale is None else check_positive("scale", scale)
    logits = torch.as_tensor(z).requires_grad_(True)
    loss = scale * confusion_loss(logits, torch.as_tensor(y, dtype=torch.long), metric, sharpness=sharpness,
                                  average=average, beta=beta, validate=False, distributed=False)
    if loss.dim() != 0:
        raise ValueError(f"`average` must combine the classes into one loss; got average={average!r}")
    (grad,) = torch.autograd.grad(loss, logits)
    g = grad.numpy()
    if hessian == "constant":
        return g, np.ones_like(g)
    p = torch.softmax(sharpness * logits.detach(), dim=1).numpy()
    # c_ik - cbar_i = g_ik / (s P_ik); its largest magnitude per row weights the row's Fisher diagonal
    spread = np.max(np.abs(g) / (sharpness * np.maximum(p, np.finfo(np.float64).tiny)), axis=1, keepdims=True)
    return g, np.maximum(spread * sharpness**2 * p * (1 - p), np.finfo(np.float64).tiny)
