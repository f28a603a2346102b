"""Tests for metricopt.losses.chunks: rankings too large for memory run in chunks or are refused before allocating."""

from __future__ import annotations

import pytest
import torch

from metricopt.losses import APLoss, RecallLoss
from metricopt.losses.chunks import BYTES_PER_ITEM, BYTES_PER_RELEVANT, check_memory_limit, row_chunk
from metricopt.losses.ranking import auroc_loss, average_precision_loss, recall_loss, recall_loss_scores

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def test_row_chunk_all_rows_when_small_and_as_many_as_fit_under_a_limit():
    assert row_chunk(100, 1000, 10, 4, CPU, None, "loss") == 100
    row = 1000 * 4 * BYTES_PER_ITEM + 10 * BYTES_PER_RELEVANT
    assert row_chunk(100, 1000, 10, 4, CPU, 3 * row + 1, "loss") == 3
    assert row_chunk(2, 1000, 10, 4, CPU, 100 * row, "loss") == 2


def test_a_million_items_is_chunked_by_default_not_allocated_at_once():
    # 1e6 x 1e6 float32 similarities would need terabytes: the default limit (half the free memory) splits them.
    chunk = row_chunk(10**6, 10**6, 10**3, 4, CPU, None, "recall_loss")
    assert 1 <= chunk < 10**6


def test_a_row_too_large_is_refused_before_allocating():
    embeddings = torch.randn(10**6, 2)  # the similarities would be 4 TB; the check comes before them
    with pytest.raises(ValueError, match=r"recall_loss: one ranking of 1,000,000 items needs about .* MiB .*"
                                         r"memory_limit=1048576.*raise `memory_limit`"):
        recall_loss(embeddings, torch.zeros(10**6, dtype=torch.long), memory_limit=2**20)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1GB", True])
def test_invalid_memory_limit_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="`memory_limit` must be None or a number of bytes > 0"):
        check_memory_limit(bad)
    with pytest.raises(ValueError, match="`memory_limit`"):
        RecallLoss(memory_limit=bad)


def _value_and_grad(fn, leaf):
    leaf = leaf.clone().requires_grad_()
    value = fn(leaf)
    value.backward()
    return value.detach(), leaf.grad


def test_chunked_losses_equal_unchunked():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(30, 5, generator=generator)
    labels = torch.randint(0, 4, (30,), generator=generator)
    scores = torch.randn(40, 6, generator=generator)
    target = (torch.rand(40, 6, generator=generator) < 0.3).long()
    small = 3 * (40 * 4 * BYTES_PER_ITEM + 40 * BYTES_PER_RELEVANT)  # three rows of 40 (or of 30) at a time
    cases = [
        (lambda x, limit: recall_loss(x, labels, memory_limit=limit, margin=0.05), embeddings),
        (lambda x, limit: average_precision_loss(x, target, memory_limit=limit, cross_class_weight=0), scores),
        (lambda x, limit: auroc_loss(x, target, memory_limit=limit), scores),
        (lambda x, limit: recall_loss_scores(x @ x.T, labels[:, None] == labels[None], memory_limit=limit,
                                             exclude=torch.eye(30, dtype=torch.bool)), embeddings),
    ]
    for fn, inputs in cases:
        whole = _value_and_grad(lambda x, fn=fn: fn(x, None), inputs)
        chunked = _value_and_grad(lambda x, fn=fn: fn(x, small), inputs)
        torch.testing.assert_close(chunked[0], whole[0])
        torch.testing.assert_close(chunked[1], whole[1])


def test_modules_pass_the_limit_on():
    loss_fn = APLoss(memory_limit=2**20)
    assert loss_fn.memory_limit == 2**20
    with pytest.raises(ValueError, match="average_precision_loss: one ranking of 1,000,000 items"):
        loss_fn(torch.randn(10**6), torch.zeros(10**6, dtype=torch.long))
