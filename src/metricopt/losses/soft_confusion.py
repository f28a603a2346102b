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
about 0.73. :func:`amplify` therefore computes ``A`` and ``1 - A`` from
``s = sigmoid(-|x|)`` (never close to 1), so that both and their gradients keep
full relative precision in float32.

Multi-class (beyond the paper, DECIDED by measurement): the test-time decision
is the argmax, not ``p > 0.5``, so the soft prediction of a sample is a sharpened
softmax, ``Â = softmax(sharpness * logits)``, and the soft ``(C, C)`` confusion
matrix is ``Y^T Â``. Amplifying each softmax probability with ``A(p)`` and
renormalising was tried first: a class whose probabilities fall well below 0.5
gets ``A ~ 1e-16`` and no gradient back, so training stalled with classes never
predicted (texture, 11 classes, multi-class MCC 0.73). Sharpening in logit space
decays only exponentially in the logit margin, but too sharp a softmax starves
classes the same way. ``benchmarks/sharpness_sweep.py`` (results in
``benchmarks/results/sharpness.md``; 4 multi-class datasets, 5 seeds) gives mean
test MCC 0.846 / 0.860 / 0.855 / 0.835 for sharpness 1 / 2 / 3 / 5 (texture alone
0.987 / 0.990 / 0.974 / 0.920, worst seed 0.723 at 5) and balanced accuracy
0.884 / 0.890 / 0.890 / 0.882; the default is 2. The sweep scores the same
datasets the quality benchmark reports, so it is a choice made on them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["amplify", "binary_soft_counts", "soft_confusion_matrix", "auto_amplification"]


def amplify(probs: Tensor, amplification: float | Tensor) -> tuple[Tensor, Tensor]:
    """Amplified probabilities ``A(p)`` and ``1 - A(p)``, each without cancellation.

    Args:
        probs: probabilities in [0, 1], any shape.
        amplification: the steepness L (> 0); a tensor broadcasts against ``probs``.

    Returns:
        ``(A, 1 - A)``, both of the shape of ``probs``.

    Example:
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


class _SigmoidSoftCounts(torch.autograd.Function):
    """Fused ``logits -> sigmoid -> amplify -> (tp, fp, fn, tn)`` per column.

    Autograd through the composed elementwise ops makes about twenty passes over
    the batch and keeps as many intermediates; this function keeps two tensors
    (``p`` and ``s = sigmoid(-|x|)``) and computes the backward pass in closed form:

        dA/dz = L s (1 - s) p (1 - p),
        dLoss/dA = y (g_tp - g_fn) + (1 - y) (g_fp - g_tn).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, amplification: Tensor):  # type: ignore[override]
        # In-place work on this function's own temporaries: each pass over the
        # batch costs as much as the whole BCE loss at large N.
        probs = torch.sigmoid(logits)
        x = (probs - 0.5).mul_(amplification)
        small = torch.sigmoid(x.abs().neg_())  # s = sigmoid(-|x|) = min(A, 1 - A), never near 1
        upper = x >= 0
        a, not_a = torch.where(upper, 1 - small, small), torch.where(upper, small, 1 - small)
        # Each count is its own sum, never a difference such as (negatives - FP): a count
        # near 0 would otherwise carry the rounding error of a count near N (a G-mean of
        # 4e-8 moved by 8% when two samples swapped places).
        negative = 1 - target
        tp, fn = (target * a).sum(0), (target * not_a).sum(0)
        fp, tn = (negative * a).sum(0), (negative * not_a).sum(0)
        ctx.save_for_backward(probs, small, target, amplification)
        return tp, fp, fn, tn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_tp: Tensor, g_fp: Tensor, g_fn: Tensor, g_tn: Tensor):  # type: ignore[override]
        probs, small, target, amplification = ctx.saved_tensors
        negative_grad = g_fp - g_tn
        grad = torch.addcmul(negative_grad, target, (g_tp - g_fn) - negative_grad)
        grad.mul_(torch.addcmul(small, small, small, value=-1))  # s (1 - s)
        grad.mul_(torch.addcmul(probs, probs, probs, value=-1))  # p (1 - p)
        return grad.mul_(amplification), None, None


def binary_soft_counts(
    logits: Tensor, target: Tensor, amplification: float | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft ``(tp, fp, fn, tn)`` per column of ``(N, C)`` logits (sigmoid) and 0/1 targets.

    Returns four tensors of shape ``(C,)``.

    Example:
        >>> tp, fp, fn, tn = binary_soft_counts(torch.tensor([[4.0], [-4.0], [3.0]]), torch.tensor([[1], [1], [0]]), 73.0)
        >>> [round(float(c), 3) for c in (tp[0], fp[0], fn[0], tn[0])]
        [1.0, 1.0, 1.0, 0.0]
    """
    amplification = torch.as_tensor(amplification, dtype=logits.dtype, device=logits.device)
    return _SigmoidSoftCounts.apply(logits, target.to(logits.dtype), amplification)


def soft_confusion_matrix(logits: Tensor, target: Tensor, sharpness: float) -> Tensor:
    """Soft ``(C, C)`` confusion matrix (rows: true class) of ``(N, C)`` multi-class logits.

    Args:
        logits: ``(N, C)`` raw scores.
        target: ``(N,)`` integer classes in ``[0, C)``.
        sharpness: the soft prediction is ``softmax(sharpness * logits)``; large
            values approach the one-hot argmax.

    Example:
        >>> cm = soft_confusion_matrix(torch.tensor([[9.0, 0.0], [0.0, 9.0], [9.0, 0.0]]), torch.tensor([0, 1, 1]), 5.0)
        >>> cm.round().tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
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
