"""Tests of metricopt.blackbox.value: the value function f_w(phi) and its loss L_v."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metricopt.blackbox.value import ValueFunction, value_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- ValueFunction


def test_shapes():
    value = ValueFunction(6, hidden_sizes=(16, 8))
    assert value(torch.zeros(6)).shape == ()
    assert value(torch.zeros(5, 6)).shape == (5,)
    assert value(torch.zeros(2, 3, 6)).shape == (2, 3)
    assert value.predict_cost(torch.zeros(4, 6)).shape == (4,)
    assert value.phi_size == 6 and value.hidden_sizes == (16, 8)


def test_phi_on_another_device_than_the_weights_is_a_clear_error():
    # 'meta' stands for a CUDA tensor here: before, F.linear mixed the devices without a word.
    value = ValueFunction(6, hidden_sizes=(8,))
    with pytest.raises(ValueError, match=r"`phi` is on meta but the value function is on cpu: .*value\.to\('meta'\)"):
        value(torch.zeros(6, device="meta"))
    assert value.to("meta")(torch.zeros(3, 6, device="meta")).device.type == "meta"


def test_value_function_runs_on_each_device(device):
    value = ValueFunction(6, hidden_sizes=(8,))
    phi = torch.linspace(-1, 1, 12).reshape(2, 6)
    expected = value.predict_cost(phi)
    moved = ValueFunction(6, hidden_sizes=(8,)).to(device)
    got = moved.predict_cost(phi.to(device))
    assert got.device == torch.device(device)
    torch.testing.assert_close(got.cpu(), expected)


def test_default_architecture_and_smooth_activation():
    value = ValueFunction(128)
    linears = [m for m in value.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 256), (256, 256), (256, 1)]
    assert not any(isinstance(m, torch.nn.ReLU) for m in value.modules())
    # A smooth network: the gradient w.r.t. phi changes continuously (ReLU's jumps between regions).
    phi = torch.randn(128, generator=torch.Generator().manual_seed(1), requires_grad=True)
    (grad,) = torch.autograd.grad(value(phi), phi)
    near = (phi.detach() + 1e-4).requires_grad_(True)
    (grad_near,) = torch.autograd.grad(value(near), near)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, grad_near, atol=1e-4)


def test_linear_model_when_no_hidden_layer():
    value = ValueFunction(3, hidden_sizes=())
    phi = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    weight, bias = value.network[0].weight, value.network[0].bias
    torch.testing.assert_close(value(phi), (phi @ weight.T + bias).squeeze(-1))


def test_seeded_determinism_without_the_global_rng():
    state = torch.random.get_rng_state()
    a, b, c = ValueFunction(8, seed=3), ValueFunction(8, seed=3), ValueFunction(8, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y)
        if name.startswith("network"):
            assert not torch.equal(x, z)


def test_default_style_initialisation_bounds():
    value = ValueFunction(100, hidden_sizes=(50,))
    first, last = value.network[0], value.network[2]
    assert first.weight.abs().max() <= 1 / math.sqrt(100) and first.weight.std() > 0.5 / math.sqrt(3 * 100)
    assert last.weight.abs().max() <= 1 / math.sqrt(50)


def test_normalisation_round_trip():
    value = ValueFunction(4, hidden_sizes=(8,))
    value.set_normalisation(0.3, 0.05)
    phi = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    cost = value.predict_cost(phi)
    torch.testing.assert_close(cost, 0.3 + 0.05 * value(phi))
    torch.testing.assert_close(value.normalise(cost), value(phi))
    costs = np.array([0.3, 0.35, 0.2])  # float64 in, float64 out; the buffers hold float32 offset and scale
    expected = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(value.normalise(costs), expected, atol=1e-6, rtol=0)
    assert value.normalise(0.4).item() == pytest.approx(2.0)
    assert value.normalise(torch.tensor([0.4], dtype=torch.float64)).dtype == torch.float64
    torch.testing.assert_close(
        value.normalise_std(np.array([0.05, 0.1])), torch.tensor([1.0, 2.0], dtype=torch.float64)
    )
    assert float(value.target_offset) == pytest.approx(0.3) and float(value.target_scale) == pytest.approx(0.05)
    value.set_normalisation(torch.tensor(1.0), np.float64(2.0))
    assert float(value.target_offset) == 1.0 and float(value.target_scale) == 2.0


def test_normalisation_lives_in_state_dict_and_follows_dtype():
    value = ValueFunction(4, hidden_sizes=(8,))
    value.set_normalisation(-1.0, 3.0)
    assert {"target_offset", "target_scale"} <= set(value.state_dict())
    double = value.double()
    assert double.target_scale.dtype == torch.float64
    assert double.predict_cost(torch.zeros(4, dtype=torch.float64)).dtype == torch.float64


def test_config_round_trip():
    value = ValueFunction(5, hidden_sizes=[12, 6], seed=7)
    value.set_normalisation(0.2, 0.5)
    with torch.no_grad():
        value.network[0].weight.add_(1.0)
    config = value.config()
    assert config == {"phi_size": 5, "hidden_sizes": [12, 6], "seed": 7}
    rebuilt = ValueFunction(**config)
    assert rebuilt.config() == config
    rebuilt.load_state_dict(value.state_dict())
    phi = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rebuilt.predict_cost(phi), value.predict_cost(phi))


def test_value_function_errors():
    value = ValueFunction(4, hidden_sizes=(8,))
    with pytest.raises(ValueError, match=r"`phi` must have shape \(\.\.\., 4\); got tensor of shape \(2, 3\)"):
        value(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="`phi` must have shape"):
        value(torch.tensor(1.0))
    with pytest.raises(TypeError, match="`phi` must be a torch.Tensor; got list"):
        value([0.0] * 4)
    with pytest.raises(ValueError, match="`scale` must be > 0; got 0.0"):
        value.set_normalisation(0.0, 0.0)
    with pytest.raises(ValueError, match="`scale` must be > 0; got -1.0"):
        value.set_normalisation(0.0, -1.0)
    with pytest.raises(ValueError, match="`offset` must be finite; got nan"):
        value.set_normalisation(float("nan"), 1.0)
    with pytest.raises(TypeError, match="`scale` must be a number; got 'a'"):
        value.set_normalisation(0.0, "a")
    with pytest.raises(ValueError, match="`costs` must be finite"):
        value.normalise(torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match="`phi_size` must be an integer >= 1; got 0"):
        ValueFunction(0)
    with pytest.raises(ValueError, match="`hidden_sizes` must be an integer >= 1; got 0"):
        ValueFunction(4, hidden_sizes=(8, 0))
    with pytest.raises(TypeError, match="`hidden_sizes` must be a sequence of integers; got 8"):
        ValueFunction(4, hidden_sizes=8)
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0; got -1"):
        ValueFunction(4, seed=-1)


def test_trained_value_gradient_points_to_the_optimum():
    # Synthetic cost c(phi) = ||phi - a||^2: after fitting, -grad_phi f must point toward a.
    generator = torch.Generator().manual_seed(0)
    size = 8
    a = torch.randn(size, generator=generator)
    phis = a + 1.5 * torch.randn(256, size, generator=generator)
    costs = (phis - a).square().sum(-1)
    value = ValueFunction(size, seed=0)
    value.set_normalisation(costs.mean().item(), costs.std().item())
    targets, std = value.normalise(costs), torch.zeros(len(costs))
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-3)
    for _ in range(200):
        optimizer.zero_grad()
        value_loss(value(phis), targets, std).backward()
        optimizer.step()
    tests = (a + 1.5 * torch.randn(20, size, generator=generator)).requires_grad_(True)
    (grad,) = torch.autograd.grad(value(tests).sum(), tests)
    cosine = F.cosine_similarity(-grad, a - tests.detach(), dim=-1)
    assert cosine.min() > 0.8, cosine


# ---------------------------------------------------------------- value_loss


def _reference_loss(predicted, mean, std, delta, ranking_weight, ranking_margin):
    """L_v written out with loops, independent of the vectorised version."""
    fit = sum((p - m) ** 2 / (s**2 + delta) for p, m, s in zip(predicted, mean, std)) / len(mean)
    terms = [
        math.log1p(math.exp(-(predicted[j] - predicted[i])))
        for i in range(len(mean))
        for j in range(len(mean))
        if mean[i] < mean[j] - (std[i] + std[j]) - ranking_margin
    ]
    return fit + (ranking_weight * sum(terms) / len(terms) if terms else 0.0)


@pytest.mark.parametrize("ranking_margin", [0.0, 0.3])
def test_value_loss_matches_reference(ranking_margin):
    generator = torch.Generator().manual_seed(0)
    predicted = torch.randn(9, generator=generator, dtype=torch.float64)
    mean = torch.randn(9, generator=generator, dtype=torch.float64)
    std = 0.3 * torch.rand(9, generator=generator, dtype=torch.float64)
    loss = value_loss(predicted, mean, std, delta=0.05, ranking_weight=0.7, ranking_margin=ranking_margin)
    expected = _reference_loss(predicted.tolist(), mean.tolist(), std.tolist(), 0.05, 0.7, ranking_margin)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_value_loss_near_zero_at_a_consistent_fit():
    mean = torch.linspace(0.0, 20.0, 6)  # well separated: the logistic term is tiny
    std = torch.full((6,), 0.1)
    assert value_loss(mean.clone(), mean, std, ranking_weight=0.0).item() == 0.0
    assert value_loss(mean.clone(), mean, std).item() < 1e-3


def test_value_loss_weights_sure_points_more():
    mean = torch.tensor([0.0, 0.0])
    std = torch.tensor([0.01, 1.0])
    error_at_sure = value_loss(torch.tensor([0.5, 0.0]), mean, std)
    error_at_unsure = value_loss(torch.tensor([0.0, 0.5]), mean, std)
    assert error_at_sure > 50 * error_at_unsure


def _ranking_term(predicted, mean, std):
    return value_loss(predicted, mean, std) - value_loss(predicted, mean, std, ranking_weight=0.0)


def test_ranking_term_penalises_a_swapped_order():
    mean = torch.tensor([0.0, 1.0, 2.0, 3.0])
    std = torch.full((4,), 0.1)
    right, swapped = mean.clone(), torch.tensor([0.0, 2.0, 1.0, 3.0])
    # 6 clear pairs; swapping the middle two turns softplus(-1) into softplus(1) for one of them.
    expected_gap = 0.1 * (F.softplus(torch.tensor(1.0)) - F.softplus(torch.tensor(-1.0))) / 6
    torch.testing.assert_close(_ranking_term(swapped, mean, std) - _ranking_term(right, mean, std), expected_gap)
    assert _ranking_term(swapped, mean, std) > _ranking_term(right, mean, std) > 0


def test_unclear_pairs_and_margin_leave_the_ranking_term():
    predicted = torch.tensor([0.3, -0.2])
    std = torch.tensor([0.1, 0.1])
    fit_only = value_loss(predicted, torch.tensor([0.0, 0.15]), std, ranking_weight=0.0)
    assert value_loss(predicted, torch.tensor([0.0, 0.15]), std).item() == fit_only.item()  # within 2 sigma
    mean = torch.tensor([0.0, 0.5])
    with_pair = value_loss(predicted, mean, std)
    without = value_loss(predicted, mean, std, ranking_margin=0.4)
    assert with_pair > without == value_loss(predicted, mean, std, ranking_weight=0.0)


def test_value_loss_gradcheck():
    generator = torch.Generator().manual_seed(0)
    predicted = torch.randn(7, generator=generator, dtype=torch.float64, requires_grad=True)
    mean = torch.randn(7, generator=generator, dtype=torch.float64)
    std = 0.2 * torch.rand(7, generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: value_loss(p, mean, std, ranking_weight=0.5), (predicted,))


def test_targets_are_detached_and_may_be_arrays():
    predicted = torch.tensor([0.1, 0.4, 0.2], requires_grad=True)
    mean = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    loss = value_loss(predicted, mean, np.array([0.1, 0.1, 0.1]))
    loss.backward()
    assert mean.grad is None and predicted.grad is not None
    same = value_loss(predicted, [0.0, 1.0, 0.5], torch.full((3,), 0.1))
    assert same.item() == pytest.approx(loss.item())


def test_single_step_is_finite_with_a_gradient():
    predicted = torch.tensor([0.3], requires_grad=True)
    loss = value_loss(predicted, torch.tensor([0.0]), torch.tensor([0.0]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.09 / 0.01)
    assert predicted.grad.item() == pytest.approx(2 * 0.3 / 0.01)


def test_long_trajectories_subsample_ranking_pairs():
    generator = torch.Generator().manual_seed(0)
    predicted = torch.randn(1500, generator=generator)
    mean = torch.linspace(0.0, 3.0, 1500)
    std = torch.full((1500,), 0.05)
    sub = value_loss(predicted, mean, std)
    every = value_loss(predicted, mean, std, max_ranking_points=None)
    fit = value_loss(predicted, mean, std, ranking_weight=0.0)
    assert torch.isfinite(sub) and sub != every and (sub - fit) > 0
    assert value_loss(predicted[:300], mean[:300], std[:300]) == value_loss(
        predicted[:300], mean[:300], std[:300], max_ranking_points=None
    )
    index = torch.linspace(0, 1499, 512).round().long()
    torch.testing.assert_close(sub, fit + _ranking_term(predicted[index], mean[index], std[index]))


def test_value_loss_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"`mean` must have the shape of `predicted` \(3,\); got \(2,\)"):
        value_loss(x, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="`std` must be >= 0; got minimum -1.0"):
        value_loss(x, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="`mean` must be finite"):
        value_loss(x, torch.tensor([0.0, float("nan"), 0.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="`predicted` must be finite"):
        value_loss(torch.tensor([0.0, float("inf"), 0.0]), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"`predicted` must have shape \(T,\)"):
        value_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"`predicted` must have shape \(T,\) with T >= 1"):
        value_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="`predicted` must be a floating tensor"):
        value_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="`predicted` must be a torch.Tensor"):
        value_loss([0.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="`delta` must be a finite number > 0; got 0.0"):
        value_loss(x, x, x, delta=0.0)
    with pytest.raises(ValueError, match="`ranking_weight` must be a finite number >= 0; got -0.1"):
        value_loss(x, x, x, ranking_weight=-0.1)
    with pytest.raises(ValueError, match="`ranking_margin` must be a finite number >= 0"):
        value_loss(x, x, x, ranking_margin=float("nan"))
    with pytest.raises(ValueError, match="`max_ranking_points` must be an integer >= 2; got 1"):
        value_loss(x, x, x, max_ranking_points=1)
