"""Autocast off for the few operations whose precision a loss's result depends on.

Under ``torch.autocast`` a matmul runs in bfloat16/float16: a multi-class soft
confusion matrix or a matrix of cosine similarities would then carry a
relative error of about 1e-3 (in bfloat16, a third of 1024 x 1024 retrieval
similarities tie). The losses compute these in float32 inside
:func:`full_precision`, so mixed precision does not change their maths.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["full_precision"]


_UNCHANGED = contextlib.nullcontext()


def full_precision(tensor: Tensor) -> contextlib.AbstractContextManager[None]:
    """A context with autocast off on ``tensor``'s device (no-op where autocast is off or unavailable there)."""
    device_type = tensor.device.type
    try:
        if not torch.is_autocast_enabled(device_type):
            return _UNCHANGED  # the common case, and the cheap one (no autocast state saved and restored)
    except (TypeError, RuntimeError):  # torch < 2.4 takes no device type; a device without autocast
        pass
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device_type):
        return _UNCHANGED
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # torch < 2.4 without is_autocast_available: a device autocast does not know
        return _UNCHANGED
