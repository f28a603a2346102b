"""Cross-entropy recipes for imbalanced data: the baselines metricopt is measured against.

Binary logits ``(N,)`` use the sigmoid, multi-class logits ``(N, C)`` the softmax,
so one call covers both tasks (as :func:`~metricopt.losses.confusion_loss` does).

* :func:`cross_entropy_loss`: BCE / CE, optionally class-weighted.
* :func:`focal_loss`: Lin et al. (ICCV 2017), ``-(1 - p_t)^gamma log p_t``.
* :func:`inverse_frequency_weights`: "balanced" class weights, n / (C n_c),
  scikit-learn's ``class_weight="balanced"``.

Under ``torch.distributed`` both gather the batch across processes where a
gradient can flow (``distributed=True``, as every loss here), so the
(weighted) mean is the global batch's: DDP's average of per-process means
equals it only for equal shards without class weights. Half-precision logits
are computed in float32 and give a float32 loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metricopt._checks import check_positive
from metricopt.distributed import gather_batch

__all__ = ["cross_entropy_loss", "focal_loss", "FocalLoss", "inverse_frequency_weights"]


def inverse_frequency_weights(target: Tensor, num_classes: int) -> Tensor:
    """Per-class weights n / (C n_c); a class absent from ``target`` gets weight 0.

    Examples:
        >>> inverse_frequency_weights(torch.tensor([0, 0, 0, 1]), 2).tolist()
        [0.6666666865348816, 2.0]
    """
    counts = torch.bincount(target.long().flatten(), minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)), 0.0)


def _is_binary(logits: Tensor) -> bool:
    return logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)


def _log_prob_of_target(logits: Tensor, target: Tensor) -> Tensor:
    """log p_t per sample, for binary or multi-class logits; half-precision logits in float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if _is_binary(logits):
        z = logits.reshape(-1)
        y = target.reshape(-1).to(z.dtype)
        return -F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return torch.log_softmax(logits, -1).gather(1, target.long().reshape(-1, 1)).squeeze(1)


def _sample_weights(target: Tensor, class_weight: Tensor | None) -> Tensor | None:
    return None if class_weight is None else class_weight.to(target.device)[target.long().reshape(-1)]


def cross_entropy_loss(logits: Tensor, target: Tensor, *, class_weight: Tensor | None = None,
                       distributed: bool = True) -> Tensor:
    """Mean (class-weighted) binary or multi-class cross-entropy.

    Args:
        logits: ``(N,)``/``(N, 1)`` binary or ``(N, C)`` multi-class.
        target: ``(N,)`` labels.
        class_weight: optional ``(C,)`` weights (``C = 2`` for binary); the mean
            is normalised by the summed weights, as ``nn.CrossEntropyLoss``.
        distributed: under ``torch.distributed``, the mean over the batch
            gathered from every process (:func:`metricopt.distributed.gather`);
            False: this process's batch.
    """
    logits, target = gather_batch(logits, target, enabled=distributed)
    nll = -_log_prob_of_target(logits, target)
    weights = _sample_weights(target, class_weight)
    return nll.mean() if weights is None else (weights * nll).sum() / weights.sum().clamp_min(1e-12)


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, class_weight: Tensor | None = None,
               distributed: bool = True) -> Tensor:
    """Focal loss ``-(1 - p_t)^gamma log p_t``, averaged (weighted) over the batch.

    Args:
        logits: ``(N,)``/``(N, 1)`` binary or ``(N, C)`` multi-class.
        target: ``(N,)`` labels.
        gamma: focusing parameter >= 0 (0 gives cross-entropy).
        class_weight: optional ``(C,)`` weights (the alpha of the paper).
        distributed: as in :func:`cross_entropy_loss`.
    """
    if gamma != 0:
        gamma = check_positive("gamma", gamma)
    logits, target = gather_batch(logits, target, enabled=distributed)
    log_pt = _log_prob_of_target(logits, target)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    weights = _sample_weights(target, class_weight)
    return loss.mean() if weights is None else (weights * loss).sum() / weights.sum().clamp_min(1e-12)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`."""

    def __init__(self, *, gamma: float = 2.0, class_weight: Tensor | None = None, distributed: bool = True) -> None:
        super().__init__()
        self.gamma = gamma
        self.distributed = distributed
        self.register_buffer("class_weight", class_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, gamma=self.gamma, class_weight=self.class_weight,
                          distributed=self.distributed)
