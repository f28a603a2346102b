"""A model's scores and decisions, as the exact metrics score them.

* :func:`predict_logits`: the raw outputs, run in chunks on the model's device.
* :func:`predict_proba`: ``(N,)`` positive-class probabilities for a model
  with one output logit (binary), ``(N, C)`` softmax rows otherwise.
* :func:`predict_labels`: the decisions, ``p > threshold`` (binary) or the
  argmax (multi-class).

Shared by the black-box family, the reports and the application's training
recipes, so that every method is scored the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["predict_labels", "predict_logits", "predict_proba"]


@torch.no_grad()
def predict_logits(model: nn.Module, X: np.ndarray | Tensor, *, batch_size: int = 8192) -> Tensor:
    """The model's raw outputs ``(N, outputs)``, on its device.

    The model is put in evaluation mode; ``X`` moves to its device and is run
    in chunks of ``batch_size`` rows.

    Example:
        >>> predict_logits(torch.nn.Linear(2, 3), np.zeros((4, 2), dtype=np.float32)).shape
        torch.Size([4, 3])
    """
    model.eval()
    X = torch.as_tensor(X, dtype=torch.float32, device=next(model.parameters()).device)
    return torch.cat([model(chunk) for chunk in X.split(batch_size)]) if len(X) else model(X)


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray | Tensor, *, batch_size: int = 8192) -> np.ndarray:
    """Class probabilities: ``(N,)`` positive-class probabilities for a one-logit
    model, ``(N, C)`` softmax rows otherwise (of :func:`predict_logits`).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> predict_proba(model, np.zeros((3, 2), dtype=np.float32)).shape
        (3,)
    """
    logits = predict_logits(model, X, batch_size=batch_size)
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits.squeeze(-1)).cpu().numpy()
    return torch.softmax(logits, -1).cpu().numpy()


def predict_labels(probs: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Decisions from :func:`predict_proba` output: ``p > threshold`` or argmax.

    Example:
        >>> predict_labels(np.array([0.2, 0.7])).tolist()
        [0, 1]
    """
    if probs.ndim == 1:
        return (probs > threshold).astype(np.int64)
    return probs.argmax(-1).astype(np.int64)
