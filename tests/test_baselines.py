"""Cross-entropy baselines against torch's own losses and scikit-learn's class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from metricopt.losses import FocalLoss, cross_entropy_loss, focal_loss, inverse_frequency_weights


def _binary(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64) * 2, torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])[:n]


def _multiclass(n: int = 12, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, dtype=torch.float64) * 2,
            torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0, 1])[:n])


def test_binary_cross_entropy_equals_torch():
    z, y = _binary()
    expected = F.binary_cross_entropy_with_logits(z, y.double())
    assert torch.allclose(cross_entropy_loss(z, y), expected, rtol=1e-12)
    assert torch.allclose(cross_entropy_loss(z[:, None], y), expected, rtol=1e-12)  # (N, 1) logits
    assert torch.allclose(cross_entropy_loss(z, y.double()), expected, rtol=1e-12)  # float target


def test_weighted_binary_cross_entropy_equals_torch():
    z, y = _binary()
    w = torch.tensor([0.3, 2.5], dtype=torch.float64)
    sample_w = w[y]
    # normalised by the summed weights, as nn.CrossEntropyLoss
    expected = (F.binary_cross_entropy_with_logits(z, y.double(), weight=sample_w, reduction="sum")) / sample_w.sum()
    assert torch.allclose(cross_entropy_loss(z, y, class_weight=w), expected, rtol=1e-12)
    # and the same as 2-class softmax cross-entropy on logits (0, z)
    two_class = torch.stack([torch.zeros_like(z), z], 1)
    assert torch.allclose(cross_entropy_loss(z, y, class_weight=w), F.cross_entropy(two_class, y, weight=w), rtol=1e-12)


def test_multiclass_cross_entropy_equals_torch():
    z, y = _multiclass()
    assert torch.allclose(cross_entropy_loss(z, y), F.cross_entropy(z, y), rtol=1e-12)
    w = torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)
    assert torch.allclose(cross_entropy_loss(z, y, class_weight=w), torch.nn.CrossEntropyLoss(weight=w)(z, y),
                          rtol=1e-12)


def test_cross_entropy_gradient_equals_torch():
    z, y = _multiclass()
    w = torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    cross_entropy_loss(a, y, class_weight=w).backward()
    F.cross_entropy(b, y, weight=w).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_focal_with_gamma_zero_is_cross_entropy(task, weighted):
    z, y = _binary() if task == "binary" else _multiclass()
    w = None
    if weighted:
        w = (torch.tensor([0.4, 3.0], dtype=torch.float64) if task == "binary"
             else torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64))
    got = focal_loss(z, y, gamma=0, class_weight=w)
    assert torch.allclose(got, cross_entropy_loss(z, y, class_weight=w), rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_matches_its_formula(gamma):
    z, y = _binary()
    p = torch.sigmoid(z)
    p_t = torch.where(y == 1, p, 1 - p)
    assert torch.allclose(focal_loss(z, y, gamma=gamma), (-((1 - p_t) ** gamma) * torch.log(p_t)).mean(), rtol=1e-10)
    z, y = _multiclass()
    w = torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)
    p_t = torch.softmax(z, -1)[torch.arange(len(y)), y]
    per_sample = -((1 - p_t) ** gamma) * torch.log(p_t)
    expected = (w[y] * per_sample).sum() / w[y].sum()
    assert torch.allclose(focal_loss(z, y, gamma=gamma, class_weight=w), expected, rtol=1e-10)


def test_focal_down_weights_easy_examples():
    y = torch.tensor([1])
    easy, hard = torch.tensor([4.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    ratio = {k: (focal_loss(z, y, gamma=2.0) / cross_entropy_loss(z, y)).item()
             for k, z in (("easy", easy), ("hard", hard))}
    assert ratio["easy"] < 0.001 < 0.5 < ratio["hard"] < 1.0
    # on a batch: focal never exceeds CE and shrinks easy samples' share of the gradient
    z, y = _binary()
    assert focal_loss(z, y, gamma=2.0) < cross_entropy_loss(z, y)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    focal_loss(a, y, gamma=2.0).backward()
    cross_entropy_loss(b, y).backward()
    p_t = torch.where(y == 1, torch.sigmoid(z), 1 - torch.sigmoid(z))
    easiest, hardest = p_t.argmax(), p_t.argmin()
    assert (a.grad[easiest] / b.grad[easiest]).abs() < (a.grad[hardest] / b.grad[hardest]).abs()


def test_focal_module_equals_function():
    z, y = _multiclass()
    w = torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)
    module = FocalLoss(gamma=1.5, class_weight=w)
    assert torch.equal(module(z, y), focal_loss(z, y, gamma=1.5, class_weight=w))
    assert torch.equal(FocalLoss()(z, y), focal_loss(z, y))
    assert "class_weight" in dict(module.named_buffers())


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_focal_bad_gamma(bad):
    z, y = _binary()
    with pytest.raises(ValueError, match="`gamma`"):
        focal_loss(z, y, gamma=bad)


@pytest.mark.parametrize(
    ("labels", "num_classes"),
    [([0, 0, 0, 1], 2), ([1, 0, 1, 1, 1], 2), ([0, 1, 1, 2, 2, 2, 2], 3), ([3, 1, 1, 0, 2, 2, 2, 2, 2, 3], 4)],
)
def test_inverse_frequency_weights_equal_sklearn_balanced(labels, num_classes):
    y = np.array(labels)
    expected = compute_class_weight("balanced", classes=np.arange(num_classes), y=y)
    got = inverse_frequency_weights(torch.tensor(labels), num_classes)
    assert np.allclose(got.numpy(), expected, rtol=1e-6)


def test_inverse_frequency_weights_absent_class_is_zero():
    got = inverse_frequency_weights(torch.tensor([0, 0, 2, 2, 2, 2]), 3)
    present = compute_class_weight("balanced", classes=np.array([0, 2]), y=np.array([0, 0, 2, 2, 2, 2]))
    # n / (C n_c) with C = 3 (all classes), so the present weights are scaled by 2/3 against sklearn's C = 2
    assert got[1].item() == 0.0
    assert np.allclose(got[[0, 2]].numpy(), present * 2 / 3, rtol=1e-6)
