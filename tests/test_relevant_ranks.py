"""Tests for metricopt.losses.relevant_ranks: one sort forward, searches backward, the ranker's gradient exactly.

The reference is the definition the rank losses had before this module: every item of a row ranked by
``interpolated_rank`` after the margin shift (in float64), ``rk+`` counted exactly, and the gradient taken
through ``rk`` only. ``relevant_ranks`` must give the same ``r = rk - rk+`` and ``rk+`` at every relevant
item, and the same gradient, on random rows with ties, excluded items, margins and both layouts.
"""

from __future__ import annotations

import math

import pytest
import torch

from metricopt.losses import ranking
from metricopt.losses import relevant_ranks as relevant_ranks_module
from metricopt.losses.ranker import interpolated_rank, score_spread
from metricopt.losses.ranking import recall_loss
from metricopt.losses.relevant_ranks import relevant_columns, relevant_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(scores, relevant, exclude, interpolation, margin, unit):
    """``(rk - rk+, rk+)`` of every item by the full interpolated ranking (the definition)."""
    shifted = scores.to(torch.float64) + torch.where(relevant, -0.5 * margin, 0.5 * margin) * unit
    if exclude is not None:
        shifted = shifted.masked_fill(exclude, -math.inf)
    rank_all = interpolated_rank(shifted, interpolation=interpolation, spread=unit)
    above_or_tied = shifted.detach()[..., None, :] >= shifted.detach()[..., :, None]  # [i, j]: j at or above i
    rank_relevant = (above_or_tied & relevant[..., None, :]).sum(-1).to(torch.float64)
    return rank_all - rank_relevant, rank_relevant


def random_case(generator, trial):
    rows = int(torch.randint(1, 5, (), generator=generator))
    length = int(torch.randint(1, 40, (), generator=generator))
    dtype = torch.float32 if trial % 2 else torch.float64
    scores = torch.randn(rows, length, generator=generator, dtype=dtype)
    if trial % 3 == 0:  # many ties
        scores = (scores * 2).round() / 2
    relevant = torch.rand(rows, length, generator=generator) < torch.rand((), generator=generator)
    exclude = (torch.rand(rows, length, generator=generator) < 0.2) if trial % 4 == 0 else None
    if exclude is not None:
        relevant &= ~exclude
    return scores, relevant, exclude


@pytest.mark.parametrize("compact, synchronise, walk", [(True, True, False), (True, True, True), (False, False, False),
                                                        (True, False, False)])
def test_values_and_gradient_equal_the_full_interpolated_ranking(compact, synchronise, walk, monkeypatch):
    if walk:  # settle ties by stepping over them (what large inputs do) even on these small ones
        monkeypatch.setattr(relevant_ranks_module, "WALK_FROM", 0)
    generator = torch.Generator().manual_seed(0)
    for trial in range(120):
        scores, relevant, exclude = random_case(generator, trial)
        margin, interpolation = [(0.0, 0.25), (0.05, 2.0), (0.5, 0.01)][trial % 3]
        unit = score_spread(scores, None if exclude is None else ~exclude)
        weights = torch.rand(scores.shape, generator=generator, dtype=torch.float64)

        expected_leaf = scores.clone().requires_grad_()
        above_ref, rank_ref = reference(expected_leaf, relevant, exclude, interpolation, margin, unit)
        torch.where(relevant, torch.log1p(above_ref) * weights, 0.0).sum().backward()

        leaf = scores.clone().requires_grad_()
        inputs = leaf if exclude is None else leaf.masked_fill(exclude, -math.inf)
        columns, valid = relevant_columns(relevant, compact=compact)
        above, rank = relevant_ranks(inputs, columns, valid, interpolation=interpolation, margin=margin, unit=unit,
                                     synchronise=synchronise)
        torch.where(valid, torch.log1p(above) * weights.gather(-1, columns), 0.0).sum().backward()

        assert torch.equal(torch.where(valid, above, 0.0), torch.where(valid, above_ref.gather(-1, columns), 0.0))
        assert torch.equal(torch.where(valid, rank, 0.0), torch.where(valid, rank_ref.gather(-1, columns), 0.0))
        torch.testing.assert_close(leaf.grad, expected_leaf.grad, rtol=1e-6, atol=1e-6 * float(
            expected_leaf.grad.abs().max().clamp_min(1e-30)))


@pytest.mark.parametrize("compact", [True, False])
def test_items_at_minus_infinity_take_no_part(compact):
    # Row i with its item i at -inf ranks, and passes back, exactly as row i without item i.
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 30, generator=generator)
    relevant = torch.rand(6, 30, generator=generator) < 0.3
    relevant[torch.arange(6), torch.arange(6)] = False
    kept = torch.ones(6, 30, dtype=torch.bool)
    kept[torch.arange(6), torch.arange(6)] = False
    unit = torch.ones(6, 1, dtype=torch.float64)
    options = {"interpolation": 1.0, "margin": 0.1, "unit": unit}

    leaf = scores.clone().requires_grad_()
    columns, valid = relevant_columns(relevant, compact=compact)
    above, rank = relevant_ranks(leaf.scatter(-1, torch.arange(6)[:, None], -math.inf), columns, valid, **options)
    weights = torch.rand(above.shape, generator=generator, dtype=torch.float64)
    torch.where(valid, above * weights, 0.0).sum().backward()

    short = scores[kept].view(6, 29).clone().requires_grad_()
    short_columns, short_valid = relevant_columns(relevant[kept].view(6, 29), compact=compact)
    short_above, short_rank = relevant_ranks(short, short_columns, short_valid, **options)
    # the same relevant items in the same order, so the same weights apply
    short_weights = weights if compact else weights[kept].view(6, 29)
    torch.where(short_valid, short_above * short_weights, 0.0).sum().backward()

    if compact:
        assert torch.equal(torch.where(valid, above, 0.0), torch.where(short_valid, short_above, 0.0))
        assert torch.equal(torch.where(valid, rank, 0.0), torch.where(short_valid, short_rank, 0.0))
    else:
        assert torch.equal(above[kept & relevant], short_above[short_valid])
        assert torch.equal(rank[kept & relevant], short_rank[short_valid])
    torch.testing.assert_close(leaf.grad[kept].view(6, 29), short.grad, rtol=1e-6, atol=1e-6)
    assert float(short.grad.abs().sum()) > 0
    assert not leaf.grad[torch.arange(6), torch.arange(6)].any()  # an item at -inf gets no gradient


def test_relevant_columns_layouts():
    relevant = torch.tensor([[False, True, False, True], [False, False, False, False], [True, True, True, False]])
    columns, valid = relevant_columns(relevant)
    assert valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert columns.tolist() == [[1, 3, 1], [0, 0, 0], [0, 1, 2]]  # padding repeats the row's first column
    columns, valid = relevant_columns(relevant, compact=False)
    assert torch.equal(valid, relevant) and columns.tolist() == [[0, 1, 2, 3]] * 3
    columns, valid = relevant_columns(relevant[:1])  # one ranking
    assert columns.tolist() == [[1, 3]] and valid.all()


def test_gradient_is_linear_in_the_loss_and_zero_without_relevant_items():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    relevant = torch.rand(3, 50, generator=torch.Generator().manual_seed(3)) < 0.2
    relevant[1] = False
    columns, valid = relevant_columns(relevant)
    unit = score_spread(scores)
    grads = []
    for factor in (1.0, 1024.0):
        leaf = scores.clone().requires_grad_()
        above, _ = relevant_ranks(leaf, columns, valid, interpolation=0.25, margin=0.05, unit=unit)
        (factor * torch.where(valid, torch.log1p(above), 0.0).sum()).backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], 1024.0 * grads[0])
    assert not grads[0][1].any() and grads[0][0].any()
    leaf = scores.clone().requires_grad_()
    none = torch.zeros(3, 50, dtype=torch.bool)
    above, _ = relevant_ranks(leaf, *relevant_columns(none), interpolation=0.25, margin=0.0, unit=unit)
    (above.sum() + 0 * leaf.sum()).backward()
    assert not leaf.grad.any()


def test_second_derivative_raises():
    leaf = torch.randn(1, 20, requires_grad=True)
    relevant = torch.arange(20)[None] % 4 == 0
    above, _ = relevant_ranks(leaf, *relevant_columns(relevant), interpolation=0.25, margin=0.0,
                              unit=score_spread(leaf))
    (gradient,) = torch.autograd.grad(torch.log1p(above).sum() * leaf.sum(), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative"):
        gradient.sum().backward()


@pytest.mark.parametrize("with_memory", [False, True])
def test_same_label_columns_are_the_same_label_items_without_the_query(with_memory):
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 5, (23,), generator=generator)
    gallery_labels = torch.cat([labels, torch.randint(0, 7, (9,), generator=generator)]) if with_memory else labels
    groups = ranking._label_groups(labels, gallery_labels)
    columns, valid = ranking._same_label_columns(*groups, int(groups[2].max()))
    for i in range(len(labels)):
        expected = {j for j in range(len(gallery_labels)) if gallery_labels[j] == labels[i] and j != i}
        assert set(columns[i][valid[i]].tolist()) == expected
        assert valid[i].tolist() == sorted(valid[i].tolist(), reverse=True)  # the valid entries first


def test_recall_loss_without_host_synchronisation_equals_the_compact_path(monkeypatch):
    # On an accelerator with validate=False the loss does not compact the relevant items (which needs a host
    # synchronisation); the CPU always compacts. Forcing the other path here checks that both agree.
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.randn(40, 6, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    memory = (torch.randn(10, 6, generator=generator), torch.randint(0, 4, (10,), generator=generator))
    results = []
    for synchronise in (True, False):
        monkeypatch.setattr(ranking, "_synchronise", lambda scores, validate, value=synchronise: value)
        leaf = embeddings.clone().requires_grad_()
        loss = recall_loss(leaf, labels, memory=memory, margin=0.05)
        loss.backward()
        results.append((loss, leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
