"""Differentiable confusion counts from amplified probabilities (AnyLoss).

AnyLoss (Han, Moniz and Chawla, KDD 2024) replaces each hard prediction by an
*amplified* probability

    A(p) = sigmoid(L * (p - 0.5)),

which is close to 0 or 1 everywhere except near the decision threshold 0.5, and
sums them into a soft confusion matrix over the batch:

    TP = sum y A,  FP = sum (1 - y) A,  FN = sum y (1 - A),  TN = sum (1 - y)(1 - A).

At saturated probabilities the soft counts equal the hard counts of the
prediction ``p > 0.5``, so any metric written on counts becomes a loss.

Numerics: in float32, ``sigmoid(x)`` rounds to exactly 1.0 for x above about 17,
and torch computes its gradient from the output as ``A (1 - A) = 0``: a naive
implementation with L = 73 returns zero gradient for every sample with p above
about 0.73, and ``1 - A`` computed as a difference is 0 where it should be
1e-16. :func:`binary_soft_counts` therefore never subtracts a number close to 1
from 1: it computes ``p = sigmoid(z)`` and ``1 - p = sigmoid(-z)``, then
``A = sigmoid(L (p - 1/2))`` and ``1 - A = sigmoid(L ((1 - p) - 1/2))``, each
to full relative precision, and the gradient in closed form from their
product, ``dA/dz = L A (1 - A) p (1 - p)``. Each count is its own sum of
non-negative terms (never a difference such as negatives - FP), so a count
near 0 keeps its relative precision next to counts near N. :func:`amplify`
gives the same ``A`` and ``1 - A`` from autograd-friendly building blocks
(``s = sigmoid(-|x|)``, never close to 1); the tests compare the two.

Speed (``python -m benchmarks speed``): the forward pass makes a few
passes over the batch (``[sigmoid(z); sigmoid(-z)]`` and their amplification,
in place; the four counts from two matrix-vector products; the gradient
weight), the backward pass three elementwise ones, and the labels are
converted once. Everything runs in float32 (or float64) with autocast off, so
mixed precision does not change the counts.

Multi-class (beyond the paper): the test-time decision is the argmax, not
``p > 0.5``, so the soft prediction of a sample is a sharpened softmax,
``Â = softmax(sharpness * logits)``, and the soft ``(C, C)`` confusion matrix is
``Y^T Â``. DECIDED by measurement: sharpening in logit space, because
amplifying each softmax probability with ``A(p)`` leaves a class whose
probabilities fall well below 0.5 with no gradient (``A ~ 1e-16``); sharpness 2
by default, the best mean test MCC of a sharpness sweep (see the design notes:
``docs/design.md``, "Confusion-matrix losses (AnyLoss)").
"""

from __future__ import annotations

import torch
from torch import Tensor

from metricopt._autocast import full_precision

__all__ = ["amplify", "binary_soft_counts", "soft_confusion_matrix", "auto_amplification"]


def amplify(probs: Tensor, amplification: float | Tensor) -> tuple[Tensor, Tensor]:
    """Amplified probabilities ``A(p)`` and ``1 - A(p)``, each without cancellation.

    The differentiable building block that :func:`binary_soft_counts` fuses;
    autograd through it keeps float32 gradients (``s = sigmoid(-|x|)`` is never
    close to 1, so its output-based gradient ``s (1 - s)`` does not round to 0).

    Args:
        probs: probabilities in [0, 1], any shape.
        amplification: the steepness L (> 0); a tensor broadcasts against ``probs``.

    Returns:
        ``(A, 1 - A)``, both of the shape of ``probs``.

    Examples:
        >>> a, one_minus_a = amplify(torch.tensor([0.1, 0.5, 0.99]), 73.0)
        >>> [round(v, 4) for v in a.tolist()]
        [0.0, 0.5, 1.0]
        >>> bool(one_minus_a[2] > 0)  # 1 - A(0.99) is about 3e-16, not 0
        True
    """
    x = amplification * (probs - 0.5)
    upper = x >= 0
    small = torch.sigmoid(torch.where(upper, -x, x))  # sigmoid(-|x|) with the right gradient sign
    return torch.where(upper, 1 - small, small), torch.where(upper, small, 1 - small)


def _counts_forward(
    logits: Tensor, rows: Tensor, amplification: float | Tensor, check: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """The forward pass of :class:`_SoftCounts` (no autograd): counts, gradient weight, input status."""
    columns = logits.reshape(1, -1) if logits.ndim == 1 else logits.T  # (C, N)
    probs = _probabilities(columns)
    p, q = probs.unbind(0)
    weight = p * q  # p (1 - p), to become p (1 - p) A (1 - A) = dA/dz / L
    # L ((1 - p) - 1/2) = -L (p - 1/2), so [A; 1 - A], each to full relative precision; in place:
    # every new batch-sized tensor costs an allocation and a pass over memory.
    amplified = probs.sub_(0.5).mul_(amplification).sigmoid_()
    a, b = amplified.unbind(0)
    # The four counts as matrix products, each its own sum of non-negative terms, with no product
    # written out (four `(y * a).sum()` would write and read one each). One column (binary): two
    # (2, N) x (N,) products, [A; 1 - A] y = [TP, FN] and [A; 1 - A] (1 - y) = [FP, TN]; BLAS runs
    # these on the calling thread, where a (2, N) x (N, 2) product enters a parallel region even
    # for N = 256 (a wake-up of the second thread, milliseconds when the cores are busy). Several
    # columns: one (2, N) x (N, 2) product per column, [[TP, FN], [FP, TN]].
    if columns.shape[0] == 1:
        matrix = amplified.view(2, -1)
        positives, negatives = rows.view(2, -1).unbind(0)
        tp, fn = torch.mv(matrix, positives).unbind(0)
        fp, tn = torch.mv(matrix, negatives).unbind(0)
        if logits.ndim == 2:
            tp, fp, fn, tn = (count.reshape(1) for count in (tp, fp, fn, tn))
    else:
        counts = torch.bmm(rows.transpose(0, 1), amplified.permute(1, 2, 0))
        tp, fn, fp, tn = counts.flatten(1).T.unbind(0)
    weight.mul_(a).mul_(b)  # a product of precise factors
    status = None
    if check:
        # sum y (1 - y) is exactly 0 for labels in {0, 1}; 0 * sum(z) is NaN for a NaN or infinite logit
        status = torch.dot(rows[0].flatten(), rows[1].flatten()) + logits.sum() * 0
    return tp, fp, fn, tn, weight, status


def _probabilities(columns: Tensor) -> Tensor:
    """``[p; 1 - p] = [sigmoid(z); sigmoid(-z)]`` as one ``(2, C, N)`` tensor: 1 - p is never a difference.

    Written into one new tensor (``torch.stack`` of ``[z; -z]`` and a sigmoid in
    place cost 6x as much at N = 1M: one more pass, and a slow copy); under
    ``torch.func`` transforms, which have no rule for ``out=``, by ``stack``.
    """
    if torch._C._are_functorch_transforms_active():
        return torch.sigmoid(torch.stack((columns, columns.neg())))
    probs = columns.new_empty((2, *columns.shape))
    p, q = probs.unbind(0)
    torch.sigmoid(columns, out=p)
    torch.neg(columns, out=q).sigmoid_()
    return probs


def _counts_backward(
    weight: Tensor, labels: Tensor, amplification: float | Tensor, shape: torch.Size,
    g_tp: Tensor | None, g_fp: Tensor | None, g_fn: Tensor | None, g_tn: Tensor | None,
) -> Tensor:
    """dLoss/dz = L p (1 - p) A (1 - A) (y (g_tp - g_fn) + (1 - y) (g_fp - g_tn)): three elementwise passes.

    L multiplies the per-column coefficients, not the batch-sized weight (a pass saved).
    """
    positive = _difference(g_tp, g_fn, weight)  # dLoss/dA of a positive sample, per column
    negative = _difference(g_fp, g_tn, weight)
    slope, negative = (positive - negative) * amplification, negative * amplification
    if negative.ndim:  # per-column coefficients (C,) against (C, N) rows
        slope, negative = slope.unsqueeze(-1), negative.unsqueeze(-1)
    # (y * slope + negative) * weight; not addcmul, whose broadcasting of the small operands over
    # the batch takes a slow path on CPU (4x the time of this mul + add)
    grad = (labels * slope).add_(negative).mul_(weight)
    return grad.view(shape) if len(shape) == 1 else grad.T


def _difference(a: Tensor | None, b: Tensor | None, like: Tensor) -> Tensor:
    """``a - b`` for the gradients of two counts, either of which may be None (unused by the metric)."""
    if b is None:
        return a if a is not None else like.new_zeros(like.shape[:-1])
    return -b if a is None else a - b


class _SoftCounts(torch.autograd.Function):
    """Fused ``logits -> sigmoid -> amplify -> (tp, fp, fn, tn)`` per column, closed-form backward.

    Inputs: logits ``(N,)`` (counts are 0-d) or ``(N, C)`` (counts ``(C,)``),
    ``rows = [y; 1 - y]`` of shape ``(2, C, N)`` (not differentiated), the
    steepness L (a number or a 0-d tensor, a constant), and ``check``: also
    return the input status (``sum y (1 - y) + 0 * sum z``, 0 exactly for
    valid input). Outputs: the four counts, the gradient weight
    ``p (1 - p) A (1 - A) = dA/dz / L`` (returned so that ``setup_context`` can save it),
    and the status (None unless ``check``); neither is differentiable.

    The backward pass is :func:`_counts_backward`. This is the ``forward`` +
    ``setup_context`` form that ``torch.func.grad``, ``vmap``
    (``generate_vmap_rule``) and ``torch.compile`` need; :class:`_EagerSoftCounts`
    is the same function in the older ``ctx`` form, which costs less per call
    (measured: ``docs/design.md``, "Confusion-matrix losses (AnyLoss)") and is
    used outside ``torch.func`` transforms.

    A second derivative would treat the saved weight as a constant, so it is
    refused: the backward is ``@once_differentiable`` (autograd's marker, which
    :mod:`metricopt.blackbox` finds in a graph), and under nested ``torch.func``
    transforms, where that marker does not raise, :func:`_refuse_second_derivative` does.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, rows: Tensor, amplification: float | Tensor, check: bool):  # type: ignore[override]
        return _counts_forward(logits, rows, amplification, check)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        logits, rows, amplification, _ = inputs
        weight, status = output[4:]
        ctx.mark_non_differentiable(*(t for t in (weight, status) if t is not None))
        ctx.set_materialize_grads(False)  # a metric uses some counts only: no zero tensors for the others
        ctx.shape = logits.shape
        constant = isinstance(amplification, Tensor)  # a 0-d tensor is saved, a number kept as it is
        ctx.amplification = None if constant else amplification
        ctx.save_for_backward(weight, rows[0], amplification if constant else None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_tp, g_fp, g_fn, g_tn, *_):  # type: ignore[override]
        _refuse_second_derivative()
        weight, labels, amplification = ctx.saved_tensors
        scale = ctx.amplification if amplification is None else amplification
        return _counts_backward(weight, labels, scale, ctx.shape, g_tp, g_fp, g_fn, g_tn), None, None, None


def _refuse_second_derivative() -> None:
    """Raise if a ``torch.func`` transform would differentiate this backward (a second derivative).

    Under nested ``torch.func.grad`` (or ``jacrev``), ``once_differentiable``
    does not raise: the outer transform sees a constant and returns zeros.
    The backward runs inside the innermost grad transform; any other grad or
    jvp transform on the stack would differentiate it.
    """
    stack = getattr(torch._C._functorch, "get_interpreter_stack", lambda: None)() or []
    kinds = getattr(torch._C._functorch, "TransformType", None)
    if kinds is not None and sum(level.key() in (kinds.Grad, kinds.Jvp) for level in stack) > 1:
        raise RuntimeError(
            "the soft confusion counts of confusion_loss are differentiable once (closed-form backward); "
            "a second derivative (nested torch.func.grad, jacrev or hessian) is not implemented. Use a "
            "twice-differentiable loss there, or a first-order method"
        )


class _EagerSoftCounts(torch.autograd.Function):
    """:class:`_SoftCounts` in the ``ctx`` form (cheaper per call; no ``torch.func`` support)."""

    @staticmethod
    def forward(ctx, logits: Tensor, rows: Tensor, amplification: float | Tensor, check: bool):  # type: ignore[override]
        tp, fp, fn, tn, weight, status = _counts_forward(logits, rows, amplification, check)
        if status is not None:
            ctx.mark_non_differentiable(status)
        ctx.set_materialize_grads(False)
        ctx.shape = logits.shape
        ctx.amplification = amplification
        ctx.save_for_backward(weight, rows[0])
        return tp, fp, fn, tn, status

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_tp, g_fp, g_fn, g_tn, _):  # type: ignore[override]
        weight, labels = ctx.saved_tensors
        return _counts_backward(weight, labels, ctx.amplification, ctx.shape, g_tp, g_fp, g_fn, g_tn), None, None, None


_ONE = torch.ones(())  # a CPU 0-d tensor combines with tensors on any device, as a number does


def target_rows(target: Tensor, like: Tensor) -> Tensor:
    """``[y; 1 - y]`` of shape ``(2, C, N)`` in ``like``'s dtype from ``(N,)`` or ``(N, C)`` labels.

    The labels are converted once; ``1 - y`` is computed from the converted
    labels (float arithmetic, cheaper than a second conversion of integer labels).
    """
    columns = target.reshape(1, -1) if target.ndim == 1 else target.T
    if torch._C._are_functorch_transforms_active():  # vmap has no rule for out=; one more copy there
        labels = columns.to(like.dtype)
        return torch.stack((labels, 1 - labels))
    rows = like.new_empty((2, *columns.shape))
    rows[0].copy_(columns)
    torch.sub(_ONE, rows[0], out=rows[1])
    return rows


def binary_soft_counts(
    logits: Tensor, target: Tensor, amplification: float | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft ``(tp, fp, fn, tn)`` per column of ``(N, C)`` logits (sigmoid) and 0/1 targets.

    Computed in the logits' dtype (float32 or float64; use float32 for half
    logits) with autocast off. ``amplification`` is a constant (a number or a
    0-d tensor; no gradient flows to it). ``(N,)`` logits and targets give 0-d
    counts.

    Returns four tensors of shape ``(C,)``.

    Examples:
        >>> tp, fp, fn, tn = binary_soft_counts(
        ...     torch.tensor([[4.0], [-4.0], [3.0]]), torch.tensor([[1], [1], [0]]), 73.0)
        >>> [round(float(c), 3) for c in (tp[0], fp[0], fn[0], tn[0])]
        [1.0, 1.0, 1.0, 0.0]
    """
    with full_precision(logits):
        counts, _ = soft_counts_and_status(logits, target, amplification, check=False)
    return counts


def soft_counts_and_status(
    logits: Tensor, target: Tensor, amplification: float | Tensor, *, check: bool
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor | None]:
    """:func:`binary_soft_counts` and, with ``check``, an input status computed on the way.

    Runs under the caller's autocast state (:func:`binary_soft_counts` and
    :func:`~metricopt.losses.confusion.confusion_loss` turn it off around it).

    The status is a 0-d tensor, exactly 0 when every label is 0 or 1 and every
    logit is finite: ``sum y (1 - y)`` over the converted labels (each term is 0
    for a label in {0, 1}; an integer label outside adds at most -2, so the sum
    cannot cancel back to 0) plus ``0 * sum z`` (NaN for a NaN or infinite
    logit). Float labels between 0 and 1 add positive terms that labels
    outside [0, 1] could cancel: callers confine float labels to [0, 1] first.
    """
    rows = target_rows(target, logits)
    function = _SoftCounts if torch._C._are_functorch_transforms_active() else _EagerSoftCounts
    tp, fp, fn, tn, *rest = function.apply(logits, rows, amplification, check)
    return (tp, fp, fn, tn), rest[-1]


def soft_confusion_matrix(logits: Tensor, target: Tensor, sharpness: float) -> Tensor:
    """Soft ``(C, C)`` confusion matrix (rows: true class) of ``(N, C)`` multi-class logits.

    Computed in the logits' dtype with autocast off (pass float32 for half logits).

    Args:
        logits: ``(N, C)`` raw scores.
        target: ``(N,)`` integer classes in ``[0, C)``.
        sharpness: the soft prediction is ``softmax(sharpness * logits)``; large
            values approach the one-hot argmax.

    Examples:
        >>> cm = soft_confusion_matrix(torch.tensor([[9.0, 0.0], [0.0, 9.0], [9.0, 0.0]]), torch.tensor([0, 1, 1]), 5.0)
        >>> cm.round().tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
    with full_precision(logits):  # the product in the logits' dtype, not bfloat16/float16
        return soft_confusion_matrix_here(logits, target, sharpness)


def soft_confusion_matrix_here(logits: Tensor, target: Tensor, sharpness: float) -> Tensor:
    """:func:`soft_confusion_matrix` under the caller's autocast state (for callers that turned it off)."""
    soft_predictions = torch.softmax(sharpness * logits, dim=-1)
    one_hot = torch.nn.functional.one_hot(target, logits.shape[-1]).to(soft_predictions.dtype)
    return one_hot.T @ soft_predictions


def auto_amplification(probs: Tensor, *, target_margin: float = 5.0, low: float = 10.0, high: float = 73.0) -> Tensor:
    """The ``amplification="auto"`` rule: scale L to the batch's typical confidence.

    L = clip(target_margin / median |p - 0.5|, low, high), computed without
    gradient. While the predictions crowd around 0.5 (early training) L stays at
    the paper's 73, so the soft counts track the hard ones; as the model grows
    confident, L falls so that the typical sample sits at ``x = L (p - 0.5) =
    target_margin`` (A = 0.993) instead of deep in the saturated tail, which keeps
    a gradient flowing to confidently misclassified samples. The benchmark
    ablation (benchmarks/results) compares it with fixed values.
    """
    with torch.no_grad():
        spread = (probs.detach() - 0.5).abs().flatten().median()
        return (target_margin / spread.clamp_min(1e-6)).clamp(low, high)
