"""Shuffled mini-batches of row indices: the one batch iterator of the package.

Every training loop draws its batches here: :func:`metricopt.app.recipes.classification.fit`
(one epoch per call, the generator carried across epochs), the black-box
fine-tuning (:func:`metricopt.blackbox.finetune.finetune`, epoch after epoch
until its steps are done) and the learned optimizer's unrolls
(:func:`metricopt.blackbox.learned_objective.batch_indices`).

An epoch is one ``torch.randperm(n, generator=generator)`` cut into
consecutive batches of ``batch_size`` indices (the last one shorter when
``batch_size`` does not divide ``n``; one batch of all ``n`` when
``batch_size >= n``). Epochs are drawn lazily, one ``randperm`` each, when
their first batch is requested, so the generator advances exactly as a loop
calling ``randperm`` once per epoch would advance it.

Example:
    >>> import torch
    >>> batches = shuffled_batches(5, 2, torch.Generator().manual_seed(0), epochs=2)
    >>> tuple(len(b) for b in batches)
    (2, 2, 1, 2, 2, 1)
    >>> first = list(shuffled_batches(5, 2, torch.Generator().manual_seed(0), epochs=1))
    >>> tuple(sorted(torch.cat(first).tolist()))
    (0, 1, 2, 3, 4)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from metricopt._checks import check_integer

__all__ = ["shuffled_batches"]


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, *, epochs: int | None = None
) -> Iterator[Tensor]:
    """Shuffled index batches over ``range(n)``, epoch after epoch.

    Args:
        n: number of rows (``n = 0``: each epoch is one empty batch).
        batch_size: indices per batch, at least 1.
        generator: the CPU ``torch.Generator`` that shuffles; it advances by
            one ``randperm`` per epoch drawn.
        epochs: number of epochs, or None (the default) for an endless stream.

    Returns:
        An iterator of ``int64`` index tensors; every epoch holds each index
        of ``range(n)`` exactly once.

    Raises:
        ValueError: ``n`` or ``epochs`` is not an integer >= 0, or
            ``batch_size`` is not an integer >= 1 (raised by this call, not by
            the first ``next``).
        TypeError: ``generator`` is not a ``torch.Generator``.
    """
    n = check_integer("n", n, 0)
    batch_size = check_integer("batch_size", batch_size, 1)
    if epochs is not None:
        epochs = check_integer("epochs", epochs, 0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator; got {type(generator).__name__}")
    return _epochs(n, batch_size, generator, epochs)


def _epochs(n: int, batch_size: int, generator: torch.Generator, epochs: int | None) -> Iterator[Tensor]:
    epoch = 0
    while epochs is None or epoch < epochs:
        yield from torch.randperm(n, generator=generator).split(batch_size)
        epoch += 1
