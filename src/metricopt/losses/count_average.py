"""A moving average of the soft confusion counts across batches: the dataset's counts, estimated.

A confusion-matrix metric is not a mean over samples, so the metric of a batch
is a biased, noisy estimate of the dataset's: a batch of 256 at a 2 % positive
rate holds about five positives, and its F1 swings with them. Following the
compositional estimators LibAUC uses for average precision (Qi et al., 2021),
:class:`CountAverage` keeps an exponential moving average ``u`` of the batch's
count *rates* (counts divided by the batch size),

    u <- (1 - momentum) u + momentum r_batch,

and the loss evaluates the metric at ``u`` while its gradient flows through
the current batch's counts only: the blended counts are
``(u + r - stop_gradient(r)) * N``, whose value is ``u N`` and whose gradient
is that of the batch's counts. The metric's outer derivative is thus taken at
the running estimate of the dataset's counts instead of the batch's. The
confusion metrics are ratios of counts, so scaling the rates back by ``N``
changes nothing but keeps a callable metric's input in count units.

A batch whose counts are not finite (NaN or inf logits with validation off,
say an overflowing step that AMP's loss scaler then skips) leaves the average
as it was. The average updates only while training: in a module in training mode
(``module.train()``) with gradients enabled. Under ``module.eval()`` or
``torch.no_grad()`` (a validation step) the loss is the batch's own, and the
average is left alone. Under ``torch.distributed`` the counts are those of the
global batch (the loss gathers it), so every process keeps the same average.
The average is part of ``state_dict()`` (as the module's extra state,
``count_average._extra_state``) and follows ``module.to(device)``; a
checkpoint of a ``ConfusionLoss`` without ``count_momentum`` has no such key,
so load one into the other with ``load_state_dict(..., strict=False)``.

Whether, and with which momentum, it trains better than the batch counts is
measured on validation data, not assumed (issue 14's ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metricopt._checks import describe

__all__ = ["CountAverage", "check_momentum"]


def check_momentum(momentum: Any) -> float:
    """Return ``momentum`` as a float, raising unless it lies in (0, 1]."""
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum <= 1:
        raise ValueError(f"`count_momentum` must lie in (0, 1] (the weight of each new batch); "
                         f"got {describe(momentum)}")
    return float(momentum)


def _moved(old: Tensor, new: Tensor, momentum: float) -> Tensor:
    """``old`` moved toward ``new``; a non-finite new rate (a batch a loss scaler will skip, with
    validation off) leaves the old one, and a non-finite old one is replaced. No host sync."""
    moved = torch.where(torch.isfinite(old), old.lerp(new, momentum), new)
    return torch.where(torch.isfinite(new), moved, old)


class CountAverage(nn.Module):
    """The running average of a loss's soft count rates (see the module docstring).

    Args:
        momentum: the weight of each new batch, in (0, 1]; 1 keeps the batch's
            own counts (the plain batch loss).

    Example:
        >>> average = CountAverage(0.5)
        >>> first = average.blend((torch.tensor(2.0), torch.tensor(6.0)), 8)
        >>> second = average.blend((torch.tensor(6.0), torch.tensor(2.0)), 8)
        >>> [round(c.item(), 3) for c in second]   # rates (0.25, 0.75) and (0.75, 0.25) averaged, times 8
        [4.0, 4.0]
    """

    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.momentum = check_momentum(momentum)
        self.rates: list[Tensor] | None = None

    def blend(self, counts: Sequence[Tensor], n: int | Tensor) -> tuple[Tensor, ...]:
        """The counts a loss should use: the running average's value, the batch's gradient.

        Args:
            counts: the batch's soft counts (any shapes, the same at every call).
            n: the batch size the counts are summed over (> 0).

        Returns:
            The blended counts (the batch's own while not training, see the module docstring).
        """
        rates = [count / n for count in counts]
        if not (self.training and torch.is_grad_enabled()):
            return tuple(counts)
        if self.rates is not None and [r.shape for r in self.rates] != [r.shape for r in rates]:
            raise ValueError(f"the counts changed shape from {[tuple(r.shape) for r in self.rates]} to "
                             f"{[tuple(r.shape) for r in rates]} (another number of classes?); call reset() first")
        fresh = [rate.detach() for rate in rates]
        if self.rates is None:
            self.rates = fresh
        else:
            self.rates = [_moved(old.to(new), new, self.momentum) for old, new in zip(self.rates, fresh)]
        return tuple((average + (rate - rate.detach())) * n for average, rate in zip(self.rates, rates))

    def reset(self) -> None:
        """Forget the average (the next training batch starts it again)."""
        self.rates = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"rates": None if self.rates is None else [rate.clone() for rate in self.rates]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        rates = state.get("rates")
        self.rates = None if rates is None else [torch.as_tensor(rate) for rate in rates]

    def _apply(self, fn: Any, recurse: bool = True) -> CountAverage:  # type: ignore[override]
        result = super()._apply(fn, recurse)
        if self.rates is not None:  # follow .to(device) / .double() like a buffer
            self.rates = [fn(rate) for rate in self.rates]
        return result

    def extra_repr(self) -> str:
        return f"momentum={self.momentum!r}"
