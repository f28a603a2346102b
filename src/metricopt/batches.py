"""Shuffled mini-batches of row indices: the batch iterators of the package.

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

:func:`stratified_batches` is the class-aware variant: the same shuffled
epochs, reordered so that every batch holds each class in its share of the
data (within two rows), where a plain shuffle leaves a batch of 256 at a 2 %
positive rate with anywhere from one to a dozen positives. A batch-level loss
(a confusion metric of the batch's soft counts) then sees the dataset's class
balance in every step.

:func:`oversampled_batches` tops every batch of the plain shuffle up with
rows of each class it holds fewer than ``min_rows`` of, so that a rank loss
(AP of the batch) ranks more than a handful of positives in every step; the
extra rows change the class balance of the batch on purpose.

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

__all__ = ["MIN_CLASS_ROWS", "oversampled_batches", "shuffled_batches", "stratified_batches"]

#: Rows of every class in each batch of :func:`oversampled_batches` (at least): the best of 8 and 32 positives per
#: batch (and a stratified shuffle) for RaMBO's AP loss in a prototype sweep (not committed) on the collection's
#: 26 validation tables, seeds 10-14; ``python -m benchmarks ap_validation`` measures 32 again
#: (docs/benchmarks/ranking.md).
MIN_CLASS_ROWS = 32


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


def stratified_batches(
    labels: Tensor, batch_size: int, generator: torch.Generator, *, epochs: int | None = None
) -> Iterator[Tensor]:
    """Class-aware shuffled index batches over ``range(len(labels))``: each class in its share in every batch.

    Each epoch shuffles the rows (one ``randperm``), then gives the ``i``-th
    shuffled row of a class of ``n_c`` rows the key ``(i + u_c) / n_c``
    (``u_c`` uniform in [0, 1), one draw per class) and orders all rows by key:
    every class is spread evenly over the epoch, so any ``batch_size``
    consecutive rows hold ``batch_size * n_c / n`` rows of class ``c`` up to
    about two rows (for two classes). The last batch is shorter when
    ``batch_size`` does not divide ``n``, as in :func:`shuffled_batches`.

    Args:
        labels: ``(n,)`` integer class labels (any integer values; a class is a
            distinct value).
        batch_size: indices per batch, at least 1.
        generator: the CPU ``torch.Generator`` that shuffles.
        epochs: number of epochs, or None (the default) for an endless stream.

    Returns:
        An iterator of ``int64`` index tensors; every epoch holds each index
        of ``range(n)`` exactly once.

    Raises:
        ValueError: ``labels`` is not one-dimensional or not integer,
            ``batch_size`` is not an integer >= 1 or ``epochs`` not an integer
            >= 0 (raised by this call).
        TypeError: ``generator`` is not a ``torch.Generator``.

    Example:
        >>> labels = torch.tensor([1] * 4 + [0] * 12)
        >>> batches = stratified_batches(labels, 4, torch.Generator().manual_seed(0), epochs=1)
        >>> [int(labels[b].sum()) for b in batches]   # one positive in every batch of four
        [1, 1, 1, 1]
    """
    labels = _check_labels(labels)
    batch_size = check_integer("batch_size", batch_size, 1)
    if epochs is not None:
        epochs = check_integer("epochs", epochs, 0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator; got {type(generator).__name__}")
    return _stratified_epochs(labels.cpu().long(), batch_size, generator, epochs)


def _check_labels(labels: Tensor) -> Tensor:
    """``labels`` as a tensor, raising ``ValueError`` unless it is a 1-D tensor of integer class labels."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"`labels` must be a 1-D tensor of integer class labels; got dtype {labels.dtype} "
                         f"and shape {tuple(labels.shape)}")
    return labels


def _stratified_epochs(labels: Tensor, batch_size: int, generator: torch.Generator,
                       epochs: int | None) -> Iterator[Tensor]:
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(len(labels), generator=generator)
        shuffled = inverse[order]
        offsets = torch.rand(len(counts), generator=generator, dtype=torch.float64)
        keys = torch.empty(len(labels), dtype=torch.float64)
        for c, count in enumerate(counts.tolist()):
            rows = shuffled == c
            keys[rows] = (torch.arange(count, dtype=torch.float64) + offsets[c]) / count
        yield from order[torch.argsort(keys, stable=True)].split(batch_size)
        epoch += 1


def oversampled_batches(
    labels: Tensor, batch_size: int, generator: torch.Generator, *, min_rows: int = MIN_CLASS_ROWS,
    epochs: int | None = None,
) -> Iterator[Tensor]:
    """Shuffled index batches topped up so that every class has at least ``min_rows`` rows in each batch.

    Each batch of :func:`shuffled_batches` (the same epochs, the same order)
    gets, for every class with fewer than ``min_rows`` rows in it, as many more
    rows of that class: drawn at random among the class's rows not in the
    batch, and with repetition only when the class has fewer than
    ``min_rows`` rows in all (drawn by a generator seeded with
    ``generator.initial_seed() + 1``, so the epochs stay those of
    :func:`shuffled_batches`). Batches are therefore larger than
    ``batch_size`` where a class is rare; every epoch still holds each index
    of ``range(n)`` at least once.

    Args:
        labels: ``(n,)`` integer class labels (any integer values).
        batch_size: indices per batch of the shuffle, at least 1.
        generator: the CPU ``torch.Generator`` that shuffles.
        min_rows: rows of every class per batch, at least 1.
        epochs: number of epochs, or None (the default) for an endless stream.

    Raises:
        ValueError: ``labels`` is not one-dimensional or not integer,
            ``batch_size`` or ``min_rows`` is not an integer >= 1, or
            ``epochs`` not an integer >= 0 (raised by this call).
        TypeError: ``generator`` is not a ``torch.Generator``.

    Example:
        >>> labels = torch.tensor([1] * 4 + [0] * 60)
        >>> batches = oversampled_batches(labels, 16, torch.Generator().manual_seed(0), min_rows=4, epochs=1)
        >>> [int(labels[b].sum()) for b in batches]   # four positives in every batch
        [4, 4, 4, 4]
    """
    labels = _check_labels(labels)
    min_rows = check_integer("min_rows", min_rows, 1)
    base = shuffled_batches(len(labels), batch_size, generator, epochs=epochs)
    # The extra rows come from a generator of their own, so the epochs stay those of shuffled_batches.
    extra = torch.Generator().manual_seed(generator.initial_seed() + 1)
    return _topped_up(base, labels.cpu().long(), min_rows, extra)


def _topped_up(base: Iterator[Tensor], labels: Tensor, min_rows: int, generator: torch.Generator) -> Iterator[Tensor]:
    classes = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    for batch in base:
        extra = []
        for rows in classes:
            inside = torch.isin(rows, batch)
            need = min_rows - int(inside.sum())
            if need <= 0:
                continue
            outside = rows[~inside]
            if len(outside) >= need:
                extra.append(outside[torch.randperm(len(outside), generator=generator)[:need]])
            else:  # fewer rows in the class than asked for: all of them, then repeats
                extra.append(torch.cat([outside, rows[torch.randint(len(rows), (need - len(outside),),
                                                                      generator=generator)]]))
        yield torch.cat([batch, *extra]) if extra else batch
