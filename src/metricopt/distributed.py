"""Gathering a batch across processes with gradients, for losses that need the global batch.

A confusion-matrix or rank loss is not a sum over samples: under data-parallel
training (``torch.distributed``, DDP) each process sees only its shard, and a
loss of the shard is a different function (its gradient error is measured in
the design notes: ``docs/design.md``, "Several processes"). :func:`gather`
concatenates a tensor from every process in rank order, so every process
computes the loss of the whole global batch, and lets gradients flow back to
the process's own rows.

Why the gradients come out exact under DDP (``W`` processes, parameters
``theta``, global loss ``L`` of the gathered scores ``s = [s_0, ..., s_{W-1}]``):
every process computes the same ``L``; the backward of :func:`gather` sums the
incoming gradient over processes (an all-reduce) and keeps the process's own
rows, so process ``r`` gets ``W * dL/ds_r``; DDP then averages the parameter
gradients over processes, ``(1 / W) sum_r W dL/ds_r ds_r/dtheta = dL/dtheta``,
the gradient of one process holding the whole batch. Without the all-reduce
(the backward of a plain gather keeping only the own rows) the result is
``dL/dtheta / W``: exactly half on two processes, silently.

DECIDED:

* The primitives are ``torch.distributed.all_gather`` and ``all_reduce`` inside
  one ``torch.autograd.Function`` here, not ``torch.distributed.nn.all_gather``
  (deprecated in torch 2.13; its semantics are the same), so callers never
  depend on which one torch offers.
* Uneven shards (a last batch split unevenly, or ranks with different batch
  sizes) are padded to the largest shard for the collective and trimmed
  after; the sizes are gathered first (one small extra collective).
* Integer tensors (labels) are gathered without autograd.
* The losses gather only where the gather can change a gradient
  (:func:`gather_batch`: grad mode on and an input that requires grad).
  A collective blocks until every process joins it, so a loss that gathered
  under ``torch.no_grad()`` would hang a job whose validation or logging step
  runs on one process only. Under ``no_grad`` a loss is the value of this
  process's batch; for the global batch's value, gather explicitly, on every
  process: ``loss_fn(gather(scores), gather(target))``.
* Cost: each process holds the whole gathered batch, ``W * B`` rows (memory
  and the loss's own cost grow with ``W * B``: ``O(W B log(W B))`` for a rank
  loss, ``O(W B)`` for a confusion loss), and the backward all-reduces a
  ``W * B``-row gradient; both are small next to a model's own all-reduce of
  its parameter gradients for the batch sizes these losses use.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather", "gather_batch", "is_distributed", "world_size"]


def is_distributed(group: Any = None) -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: Any = None) -> int:
    """The number of processes (1 without an initialised process group)."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def _all_gather_rows(tensor: Tensor, group: Any) -> tuple[Tensor, list[int]]:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, and each process's row count."""
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s.item()) for s in sizes]
    largest = max(counts)
    padded = tensor.contiguous()
    if tensor.shape[0] < largest:
        padding = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([padded, padding])
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:count] for part, count in zip(parts, counts)]), counts


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        gathered, counts = _all_gather_rows(tensor, group)
        rank = dist.get_rank(group)
        ctx.group, ctx.start, ctx.count = group, sum(counts[:rank]), counts[rank]
        return gathered

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start:ctx.start + ctx.count], None


def gather(tensor: Tensor, *, group: Any = None) -> Tensor:
    """``tensor`` from every process, concatenated along dim 0 in rank order, with gradients.

    Without an initialised process group of two or more processes, returns
    ``tensor`` itself. Shards may differ in their first dimension; the other
    dimensions, the dtype and the device must match across processes.
    Floating tensors that require grad get the backward described in the
    module docstring (exact global-batch gradients under DDP's averaging);
    other tensors are gathered without autograd.

    Args:
        tensor: this process's rows, shape ``(B_r, ...)``.
        group: the process group (default: the world).

    Returns:
        ``(sum_r B_r, ...)``, process 0's rows first.

    Raises:
        TypeError: ``tensor`` is not a tensor.
        ValueError: ``tensor`` is 0-dimensional.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`tensor` must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.ndim == 0:
        raise ValueError("`tensor` must have at least one dimension (rows to gather); got a 0-d tensor")
    if not is_distributed(group):
        return tensor
    if tensor.requires_grad and torch.is_grad_enabled():
        return _Gather.apply(tensor, group)
    with torch.no_grad():
        return _all_gather_rows(tensor, group)[0]


def gather_batch(*tensors: Tensor, enabled: bool = True, group: Any = None) -> tuple[Tensor, ...]:
    """:func:`gather` of each tensor (a batch's scores and targets) where a gradient can flow.

    What every loss calls, with its ``distributed`` option as ``enabled``. It
    gathers only when ``enabled``, a process group of two or more processes is
    initialised, grad mode is on and at least one of ``tensors`` requires
    grad; otherwise it returns the tensors as they are, with no collective, so
    a loss called on one process (a validation or logging step) never blocks.
    To evaluate a loss on the global batch, call :func:`gather` on every
    process: ``loss_fn(gather(scores), gather(target))``.

    Raises:
        TypeError: ``enabled`` is not a bool.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"`distributed` must be True or False; got {enabled!r}")
    flows = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if not (enabled and flows and is_distributed(group)):
        return tensors
    return tuple(gather(t, group=group) for t in tensors)
