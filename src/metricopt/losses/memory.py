"""A first-in first-out memory of the last few batches, kept in module buffers.

RaMBO's score memory (Rolinek et al., CVPR 2020): the detached scores
(classification) or embeddings (retrieval) of the last ``tau`` batches join the
current batch's ranking, so a small batch is ranked against a larger sample.
Gradients flow only through the current batch. The paper used tau = 7 for
detection; removing memory cost 6 points R@1 on Stanford Online Products.

:class:`BatchMemory` stores values and labels as registered buffers, so the
memory moves with ``module.to(device)``, is saved in ``state_dict()`` and loads
back whatever its size. Batches may differ in size; the memory drops whole
batches, oldest first. The row counts (``lengths``) stay on the CPU whatever
device the module moves to: they are bookkeeping, and reading them from a GPU
would synchronise the host with it at every step.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

from metricopt._checks import describe

__all__ = ["BatchMemory", "check_memory_size"]


def check_memory_size(memory_size: Any) -> int:
    """Return ``memory_size`` as an int, raising unless it is an integer >= 0."""
    if isinstance(memory_size, bool) or not isinstance(memory_size, numbers.Integral) or memory_size < 0:
        raise ValueError(f"`memory_size` must be an integer >= 0 (batches to remember); got {describe(memory_size)}")
    return int(memory_size)


class BatchMemory(nn.Module):
    """The detached ``(values, labels)`` of the last ``memory_size`` batches.

    ``values`` has shape ``(M, *feature_shape)`` and ``labels`` ``(M, *label_shape)``,
    the concatenation of the remembered batches in arrival order (oldest
    first). ``lengths`` holds each remembered batch's row count.

    >>> memory = BatchMemory(2)
    >>> for k in range(3):
    ...     memory.push(torch.full((k + 1, 1), float(k)), torch.ones(k + 1))
    >>> memory.lengths.tolist(), memory.values.flatten().tolist()
    ([2, 3], [1.0, 1.0, 2.0, 2.0, 2.0])
    """

    def __init__(self, memory_size: int) -> None:
        super().__init__()
        self.memory_size = check_memory_size(memory_size)
        self.register_buffer("values", torch.empty(0))
        self.register_buffer("labels", torch.empty(0))
        self.register_buffer("lengths", torch.empty(0, dtype=torch.long))

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        lengths = self.lengths
        result = super()._apply(fn, recurse)
        self.lengths = lengths  # bookkeeping stays on the CPU (module docstring)
        return result

    def __len__(self) -> int:
        """Number of remembered rows."""
        return int(self.lengths.sum())

    def reset(self) -> None:
        """Forget every remembered batch (buffers keep their device)."""
        self.values = self.values.new_empty(0)
        self.labels = self.labels.new_empty(0)
        self.lengths = self.lengths.new_empty(0)

    def push(self, values: Tensor, labels: Tensor) -> None:
        """Remember a batch (detached), dropping the oldest beyond ``memory_size``.

        Raises:
            ValueError: if the rows' shapes differ from the remembered ones.
        """
        if self.memory_size == 0:
            return
        values, labels = values.detach(), labels.detach()
        if len(self) and (values.shape[1:] != self.values.shape[1:] or labels.shape[1:] != self.labels.shape[1:]):
            raise ValueError(
                f"memory holds rows of shape {tuple(self.values.shape[1:])} with labels "
                f"{tuple(self.labels.shape[1:])}; got values {describe(values)} and labels {describe(labels)}; "
                "call reset() before changing shapes"
            )
        if not len(self):
            kept_values, kept_labels, kept_lengths = values, labels, torch.tensor([len(values)])
        else:
            kept_values = torch.cat([self.values, values.to(self.values.dtype)])
            kept_labels = torch.cat([self.labels, labels.to(self.labels.dtype)])
            kept_lengths = torch.cat([self.lengths, self.lengths.new_tensor([len(values)])])
        if len(kept_lengths) > self.memory_size:
            drop = int(kept_lengths[: len(kept_lengths) - self.memory_size].sum())
            kept_values, kept_labels = kept_values[drop:], kept_labels[drop:]
            kept_lengths = kept_lengths[-self.memory_size :]
        self.values, self.labels, self.lengths = kept_values.clone(), kept_labels.clone(), kept_lengths

    def contents(self) -> tuple[Tensor, Tensor] | None:
        """``(values, labels)`` remembered, or None when the memory is empty."""
        return (self.values, self.labels) if len(self) else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Buffers change size as batches arrive: adopt the saved sizes before loading.
        for name in ("values", "labels", "lengths"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                device = "cpu" if name == "lengths" else getattr(self, name).device
                setattr(self, name, torch.empty_like(saved, device=device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"memory_size={self.memory_size}, batches={len(self.lengths)}, rows={len(self)}"
