"""Tests of metricopt.blackbox.learned: MetricOpt (learned), the jointly trained update rule.

Properties: the untrained rule is a bounded normalised gradient step, deterministic,
and descends a quadratic; ``update`` is pure and differentiable in the weights
(float64 gradcheck through two steps); L_loss is 0 for a constant loss and
L_metric orders improving below worsening sequences (and equals the formula by
hand); the pathwise and ES estimators both match the analytic gradient of a
Gaussian-smoothed objective within their standard error, and the merge follows
the inverse variances; non-finite samples are dropped and counted; a few smoothed
updates lower the objective of a fixed toy task; meta-training runs, checkpoints
load with ``weights_only`` and a killed run resumes to bitwise-equal weights;
fine-tuning with the rule keeps the best phi; bad options raise naming the option.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from metricopt.blackbox.adapters import InputBias
from metricopt.blackbox.finetune import FineTuneConfig, TaskData, UpdateRule, finetune
from metricopt.blackbox.learned import (
    FEATURES,
    LEARNED_CHECKPOINT_FORMAT,
    LearnedConfig,
    LearnedOptimizer,
    SecondOrderError,
    check_second_order,
    load_learned,
    loss_objective,
    meta_train_learned,
    metric_objective,
    optimizer_objective,
    smoothed_gradient,
    unroll,
)
from metricopt.blackbox.meta import CHECKPOINT_FORMAT, CheckpointError, MetaConfig, meta_train
from metricopt.blackbox.metric import BlackBoxMetric, make_metric
from metricopt.blackbox.value import ValueFunction
from metricopt.losses import auroc_loss, average_precision_loss, confusion_loss, cross_entropy_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_task(seed: int = 0, rows: int = 64) -> tuple[InputBias, TaskData]:
    """A tiny frozen MLP with an 8-dim InputBias adapter and a binary task."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, 4, generator=generator)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.3).long()
    torch.manual_seed(seed)
    adapter = InputBias(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), phi_size=8)
    return adapter, TaskData(X, y.float(), X, y.numpy())


def randomise(rule: LearnedOptimizer, seed: int = 0, scale: float = 0.3) -> LearnedOptimizer:
    """Give every weight (the zero-initialised last layer too) a random value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in rule.parameters():
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * scale)
    return rule


# ---------------------------------------------------------------- the rule


def test_untrained_rule_is_a_bounded_normalised_gradient_step():
    rule = LearnedOptimizer(base_step=0.05)
    assert isinstance(rule, UpdateRule)
    phi = torch.tensor([0.3, -0.2, 0.0, 1.0])
    gradient = torch.tensor([0.4, -3.0, 0.0, 0.1])
    rule.reset(phi)
    next_phi = rule.step(phi, gradient, 0.7, None)
    normalised = gradient / gradient.square().mean().sqrt()
    torch.testing.assert_close(next_phi, phi - 0.05 * 10 * torch.tanh(normalised / 10))
    # Scale-free: the same step for a gradient 1000 times larger.
    rule.reset(phi)
    torch.testing.assert_close(rule.step(phi, 1000 * gradient, 0.7, None), next_phi)


def test_rule_descends_a_quadratic_deterministically():
    target = torch.linspace(-1.0, 1.0, 6)

    def run(rule: LearnedOptimizer) -> tuple[list[torch.Tensor], list[float]]:
        phi = torch.zeros(6)
        rule.reset(phi)
        phis, losses = [phi], []
        for step in range(60):
            gradient = phi - target
            loss = 0.5 * float(gradient.square().sum())
            next_phi = rule.step(phi, gradient, loss, 0.5 if step >= 10 else None)
            assert torch.isfinite(next_phi).all()
            assert float(torch.dot(next_phi - phi, gradient)) < 0  # against the gradient
            phis.append(next_phi)
            losses.append(loss)
            phi = next_phi
        return phis, losses

    phis, losses = run(LearnedOptimizer(base_step=0.02, seed=3))
    again, _ = run(LearnedOptimizer(base_step=0.02, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(phis, again))
    assert losses[-1] < 0.1 * losses[0]


def test_seeded_initialisation_without_the_global_rng():
    state = torch.random.get_rng_state()
    a, b, c = LearnedOptimizer(seed=1), LearnedOptimizer(seed=1), LearnedOptimizer(seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y)
        if name.startswith("network.4"):
            assert not x.any()  # the output layer starts at zero
        else:
            assert not torch.equal(x, z)
    assert a.network[0].in_features == len(FEATURES) and a.network[2].in_features == 32


def test_update_is_pure_and_matches_step():
    rule = randomise(LearnedOptimizer(), seed=1)
    phi = torch.randn(5, generator=torch.Generator().manual_seed(2))
    state = rule.initial_state(phi)
    snapshot = {k: v.clone() for k, v in state.items()}
    rule.reset(phi)
    current = phi
    for step, cost in enumerate([None, 0.4, 0.4, 0.3]):
        gradient = torch.sin(current + step)
        expected, state = rule.update(current, gradient, state, 1.0 / (step + 1), cost)
        torch.testing.assert_close(rule.step(current, gradient, 1.0 / (step + 1), cost), expected, rtol=0, atol=0)
        current = expected
    assert all(torch.equal(v, snapshot[k]) for k, v in rule.initial_state(phi).items())
    assert int(state["step"]) == 4 and bool(state["has_cost"]) and float(state["first_cost"]) == pytest.approx(0.4)


def test_cost_input_changes_the_step_only_once_observed():
    rule = randomise(LearnedOptimizer(), seed=4)
    phi, gradient = torch.ones(3), torch.tensor([0.5, -0.5, 1.0])
    state = rule.initial_state(phi)
    unseen, after_unseen = rule.update(phi, gradient, state, 1.0, None)
    assert not bool(after_unseen["has_cost"])
    seen, after_seen = rule.update(phi, gradient, state, 1.0, 0.8)
    assert not torch.equal(unseen, seen)
    assert float(after_seen["first_cost"]) == pytest.approx(0.8)


def test_update_is_differentiable_in_the_weights():
    rule = randomise(LearnedOptimizer(hidden=4).double(), seed=5)
    names = [name for name, _ in rule.named_parameters()]
    phi = torch.tensor([0.2, -0.4, 0.7], dtype=torch.float64)

    def two_steps(*weights: torch.Tensor) -> torch.Tensor:
        parameters = dict(zip(names, weights))
        current, state = phi, rule.initial_state(phi)
        for loss, cost in [(1.0, None), (0.8, 0.5)]:
            gradient = current - 0.1
            current, state = rule.update(current, gradient, state, loss, cost, parameters=parameters)
        return current

    weights = tuple(w.detach().clone().requires_grad_(True) for w in rule.parameters())
    assert torch.autograd.gradcheck(two_steps, weights)


# ---------------------------------------------------------------- the objective


def test_loss_objective_is_zero_for_a_constant_loss_and_negative_for_a_falling_one():
    assert float(loss_objective(torch.full((11,), 0.37))) == 0.0
    assert float(loss_objective(torch.tensor([1.0, 0.5, 0.25]))) < 0


def test_metric_objective_prefers_improving_predictions():
    improving = torch.tensor([0.50, 0.45, 0.40, 0.35, 0.30])
    worsening = improving.flip(0)
    assert float(metric_objective(improving)) < math.log(2) < float(metric_objective(worsening))
    assert float(optimizer_objective(improving, torch.ones(5))) < float(optimizer_objective(worsening, torch.ones(5)))


def test_metric_objective_by_hand():
    costs = torch.tensor([0.5, 0.3, 0.4, 0.2], dtype=torch.float64, requires_grad=True)
    beta = 3 / 2  # T / 2

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    # t' = argmin_{i < t}: 0 for t = 1, then 1 for t = 2 and t = 3.
    expected = (softplus(beta * (0.3 - 0.5) / 0.3) + softplus(beta * (0.4 - 0.3) / 0.4)
                + softplus(beta * (0.2 - 0.3) / 0.2)) / 3
    value = metric_objective(costs)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # The gradient flows into M_t and M_t' with t' held fixed (the argmin choice is not differentiated).
    current, best = costs[[1, 2, 3]], costs[[0, 1, 1]]
    by_hand = torch.nn.functional.softplus(beta * (current - best) / current).mean()
    torch.testing.assert_close(torch.autograd.grad(value, costs)[0], torch.autograd.grad(by_hand, costs)[0])
    # A negative prediction is divided by the floor, not by itself: finite.
    assert math.isfinite(float(metric_objective(torch.tensor([0.1, -0.2]))))


# ---------------------------------------------------------------- the estimators


def test_both_estimators_are_unbiased_for_the_smoothed_gradient():
    # L(w) = sum cos(w): E cos(w + s e) = cos(w) exp(-s^2 / 2), so the smoothed gradient is
    # -sin(w) exp(-s^2 / 2), visibly different from the raw -sin(w) at s = 1.
    w = torch.tensor([0.5, 1.0, -1.5], dtype=torch.float64)
    sigma, samples = 1.0, 1000
    estimate = smoothed_gradient(lambda p: torch.cos(p["w"]).sum(), {"w": w}, sigma=sigma, samples=samples,
                                 generator=torch.Generator().manual_seed(0))
    smoothed = -torch.sin(w) * math.exp(-sigma**2 / 2)
    raw = -torch.sin(w)
    assert estimate.nonfinite == 0
    for mean, variance in [(estimate.pathwise["w"], estimate.pathwise_variance),
                           (estimate.evolution["w"], estimate.evolution_variance)]:
        # variance = E |mean - expectation|^2 (summed over coordinates): 4 standard errors.
        tolerance = 4 * math.sqrt(variance)
        assert float((mean - smoothed).norm()) < tolerance
        assert float((smoothed - raw).norm()) > 2 * tolerance  # the test can tell smoothed from raw
    merged = estimate.gradient["w"]
    assert float((merged - smoothed).norm()) < 4 * math.sqrt(min(estimate.pathwise_variance,
                                                                  estimate.evolution_variance))


def test_merge_weights_by_inverse_variance():
    # A linear objective: the pathwise estimate is exact (zero variance), ES is noisy.
    a = torch.tensor([1.0, -2.0, 0.5])
    estimate = smoothed_gradient(lambda p: (a * p["w"]).sum(), {"w": torch.zeros(3)}, samples=6,
                                 generator=torch.Generator().manual_seed(1))
    assert estimate.pathwise_variance == 0 and estimate.evolution_variance > 0
    torch.testing.assert_close(estimate.gradient["w"], a)
    # Two noisy estimators: the merge is their inverse-variance weighted mean.
    estimate = smoothed_gradient(lambda p: torch.cos(3 * p["w"]).sum(), {"w": torch.ones(2)}, sigma=0.5,
                                 samples=5, generator=torch.Generator().manual_seed(2))
    w_rp, w_es = 1 / estimate.pathwise_variance, 1 / estimate.evolution_variance
    expected = (w_rp * estimate.pathwise["w"] + w_es * estimate.evolution["w"]) / (w_rp + w_es)
    torch.testing.assert_close(estimate.gradient["w"], expected)


def test_nonfinite_samples_are_dropped_and_counted():
    def sometimes_nan(p):
        value = (p["w"] ** 2).sum()
        return value * math.nan if p["w"][0].item() > 0 else value

    estimate = smoothed_gradient(sometimes_nan, {"w": torch.zeros(2)}, samples=8,
                                 generator=torch.Generator().manual_seed(3))
    # Every antithetic pair has one side with w[0] > 0: all ES samples and pathwise samples are dropped.
    assert estimate.nonfinite == 16 and estimate.gradient is None
    estimate = smoothed_gradient(
        lambda p: (p["w"] ** 2).sum() + (math.inf if p["w"][0].item() > 0.15 else 0.0),
        {"w": torch.zeros(2)}, samples=20, generator=torch.Generator().manual_seed(5))
    assert 0 < estimate.nonfinite < 40
    assert estimate.gradient is not None and all(torch.isfinite(g).all() for g in estimate.gradient.values())


# ---------------------------------------------------------------- the unroll


def test_unroll_is_differentiable_and_evaluates_the_same_without_grad():
    adapter, data = toy_task()
    rule = randomise(LearnedOptimizer(), seed=6, scale=0.1)
    value = ValueFunction(8, hidden_sizes=(8,), seed=1)
    value.set_normalisation(0.5, 0.1)
    objective = unroll(rule, adapter, cross_entropy_loss, value, data, steps=8, batch_size=16, seed=2,
                       costs=[None, None, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4])
    gradients = torch.autograd.grad(objective, list(rule.parameters()))
    assert all(torch.isfinite(g).all() for g in gradients) and any(g.abs().sum() > 0 for g in gradients)
    with torch.no_grad():
        evaluated = unroll(rule, adapter, cross_entropy_loss, value, data, steps=8, batch_size=16, seed=2,
                           costs=[None, None, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4])
    torch.testing.assert_close(evaluated, objective.detach())
    assert torch.equal(adapter.phi, torch.zeros(8))  # the adapter's own phi is not touched


@pytest.mark.parametrize("seed", [0, 1])
def test_smoothed_updates_lower_a_fixed_task_objective(seed):
    adapter, data = toy_task(seed)
    value = ValueFunction(8, hidden_sizes=(), seed=seed)  # a linear metric model pointing elsewhere than the loss
    with torch.no_grad():
        value.network[0].weight.copy_(torch.randn(1, 8, generator=torch.Generator().manual_seed(seed)))
        value.network[0].bias.zero_()
    value.set_normalisation(0.5, 0.05)
    value.requires_grad_(False)
    rule = LearnedOptimizer(seed=seed, base_step=0.05)
    adam = torch.optim.Adam(rule.parameters(), lr=1e-2)

    def objective(weights=None):
        return unroll(rule, adapter, cross_entropy_loss, value, data, steps=10, batch_size=16, seed=seed,
                      parameters=weights)

    with torch.no_grad():
        before = float(objective())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(15):
        estimate = smoothed_gradient(objective, dict(rule.named_parameters()), samples=2, generator=generator)
        for name, weight in rule.named_parameters():
            weight.grad = estimate.gradient[name]
        adam.step()
    with torch.no_grad():
        after = float(objective())
    assert math.isfinite(after) and after < before


# ---------------------------------------------------------------- once-differentiable losses


class _OnceDifferentiableLogistic(torch.autograd.Function):
    """Binary cross-entropy whose backward is marked once-differentiable, as metricopt's fused losses are."""

    @staticmethod
    def forward(ctx, logits, target):
        ctx.save_for_backward(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        logits, target = ctx.saved_tensors
        return grad * (torch.sigmoid(logits) - target) / logits.numel(), None


def once_differentiable_loss(logits, target):
    return _OnceDifferentiableLogistic.apply(logits, target)


def test_a_once_differentiable_loss_would_silently_lose_its_curvature():
    # Why the check exists: autograd differentiates such a gradient again without an error and
    # leaves the loss's own second derivative out (here: the Hessian-vector products disagree).
    adapter, data = toy_task()

    def hessian_vector(loss_fn):
        phi = torch.full((8,), 0.3, requires_grad=True)
        loss = loss_fn(adapter(data.X_train, phi=phi).squeeze(-1), data.y_train)
        (gradient,) = torch.autograd.grad(loss, phi, create_graph=True)
        return torch.autograd.grad(gradient.sum(), phi)[0]

    silent = hessian_vector(once_differentiable_loss)
    exact = hessian_vector(F.binary_cross_entropy_with_logits)
    assert torch.isfinite(silent).all() and not torch.allclose(silent, exact, rtol=0.1, atol=1e-4)


SECOND_ORDER_ADVICE = r"cannot be differentiated twice.*LearnedConfig\(estimator='evolution'\)"


@pytest.mark.parametrize("loss_fn, name", [
    (once_differentiable_loss, "once_differentiable_loss"),
    (lambda logits, target: confusion_loss(logits, target, "f1"), "<lambda>"),  # fused soft counts
    (average_precision_loss, "average_precision_loss"),  # interpolated_rank
    (auroc_loss, "auroc_loss"),
])
def test_once_differentiable_losses_are_refused_where_a_second_derivative_is_needed(loss_fn, name):
    adapter, data = toy_task()
    with pytest.raises(SecondOrderError, match=f"`loss_fn` \\({re.escape(name)}\\) {SECOND_ORDER_ADVICE}"):
        check_second_order(loss_fn, adapter, data.X_train[:16], data.y_train[:16])
    rule, value = LearnedOptimizer(), ValueFunction(8, hidden_sizes=(8,))
    with pytest.raises(SecondOrderError, match=SECOND_ORDER_ADVICE):
        unroll(rule, adapter, loss_fn, value, data, steps=3, batch_size=16)
    with torch.no_grad():  # evaluation needs first derivatives only
        assert torch.isfinite(unroll(rule, adapter, loss_fn, value, data, steps=3, batch_size=16))


def test_twice_differentiable_losses_pass_the_check():
    adapter, data = toy_task()
    for loss_fn in (cross_entropy_loss, F.binary_cross_entropy_with_logits):
        check_second_order(loss_fn, adapter, data.X_train[:16], data.y_train[:16])
    assert torch.equal(adapter.phi, torch.zeros(8))


def test_a_backward_that_raises_when_differentiated_is_reported_too():
    class Refusing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, target):
            ctx.save_for_backward(logits, target)
            return F.binary_cross_entropy_with_logits(logits, target)

        @staticmethod
        def backward(ctx, grad):
            logits, target = ctx.saved_tensors
            return _Refuse.apply(grad * (torch.sigmoid(logits) - target) / logits.numel()), None

    class _Refuse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("no second derivative here")

    adapter, data = toy_task()
    with pytest.raises(SecondOrderError, match="no second derivative here.*estimator='evolution'"):
        check_second_order(lambda x, y: Refusing.apply(x, y), adapter, data.X_train[:16], data.y_train[:16])


def test_evolution_strategies_alone_match_the_merged_estimators_es_part():
    weights = {"w": torch.tensor([0.5, -1.0, 2.0])}
    grad_modes = []

    def objective(p):
        grad_modes.append(torch.is_grad_enabled())
        return (p["w"] ** 2).sum() + p["w"].prod()

    alone = smoothed_gradient(objective, weights, samples=6, generator=torch.Generator().manual_seed(3),
                              pathwise=False)
    assert not any(grad_modes) and len(grad_modes) == 12  # evaluated only: no graph, no derivative
    merged = smoothed_gradient(objective, weights, samples=6, generator=torch.Generator().manual_seed(3))
    assert alone.pathwise is None and math.isnan(alone.pathwise_variance)
    torch.testing.assert_close(alone.gradient["w"], merged.evolution["w"])
    assert alone.evolution_variance == merged.evolution_variance and alone.objective == merged.objective
    with pytest.raises(TypeError, match="`pathwise`"):
        smoothed_gradient(objective, weights, generator=torch.Generator(), pathwise=1)


# ---------------------------------------------------------------- meta-training


FINETUNE = FineTuneConfig(steps=12, evaluations=4, batch_size=16, learning_rate=0.1)


def learned_config(**changes) -> LearnedConfig:
    options = {"tasks": 4, "warmup_tasks": 2, "unroll_steps": 6, "samples": 2, "checkpoint_every": 1,
               "value": MetaConfig(hidden_sizes=(16,), replay=2, inner_steps=3)}
    options.update(changes)
    return LearnedConfig(**options)


def meta_setup():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(96, 4, generator=generator)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.3).long()
    torch.manual_seed(0)
    adapter = InputBias(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), phi_size=8)
    pool = TaskData(X[:64], y[:64].float(), X[64:], y[64:].numpy())
    return adapter, pool


def train(checkpoint=None, resume=True, progress=None, metric=None, finetune_config=FINETUNE, **changes):
    adapter, pool = meta_setup()
    metric = metric if metric is not None else make_metric("mcr")
    return meta_train_learned(adapter, cross_entropy_loss, metric, pool,
                              finetune_config=finetune_config, config=learned_config(**changes),
                              checkpoint=checkpoint, resume=resume, progress=progress)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The run, its checkpoint and the wall time of the call that made it."""
    path = tmp_path_factory.mktemp("learned") / "run.pt"
    start = time.perf_counter()
    result = train(checkpoint=path)
    return result, path, time.perf_counter() - start


def test_meta_training_runs_and_stays_finite(trained):
    result, _, _ = trained
    initial = LearnedOptimizer(seed=0)
    changed = [not torch.equal(a, b) for a, b in zip(result.optimizer.parameters(), initial.parameters())]
    assert all(torch.isfinite(w).all() for w in result.optimizer.parameters())
    assert all(torch.isfinite(w).all() for w in result.value.parameters())
    assert any(changed)
    rows = result.history
    assert [row["task"] for row in rows] == [0.0, 1.0, 2.0, 3.0]
    assert [row["learned_rule"] for row in rows] == [0.0, 0.0, 1.0, 1.0]
    assert math.isnan(rows[0]["objective"])  # warm-up task before the normalisation: no update
    assert all(math.isfinite(row["objective"]) and row["skipped_updates"] == 0 for row in rows[1:])
    assert all(row["unroll_start"] in (0.0, 6.0) for row in rows[1:])
    assert result.resumed_from is None


def test_seconds_is_the_wall_time_of_the_run(trained):
    # Bounded from both sides: `started` (the clock) was overwritten by a bool, so a 4.7 s run reported 450 s.
    result, _, wall = trained
    assert sum(row["seconds"] for row in result.history) <= result.seconds <= wall


def test_checkpoint_loads_with_weights_only(trained):
    result, path, _ = trained
    state = torch.load(path, weights_only=True)
    assert state["format"] == LEARNED_CHECKPOINT_FORMAT and state["next_task"] == 4
    rule = load_learned(path)
    assert all(torch.equal(a, b) for a, b in zip(rule.state_dict().values(), result.optimizer.state_dict().values()))
    with pytest.raises(ValueError, match="`path`"):
        torch.save({"format": "other"}, path.with_name("other.pt"))
        load_learned(path.with_name("other.pt"))


def test_resume_after_a_kill_gives_bitwise_equal_weights(trained, tmp_path):
    result, _, _ = trained
    path = tmp_path / "killed.pt"

    class Killed(Exception):
        pass

    def kill_after_task_2(row):
        if row["task"] == 2.0:
            raise Killed

    start = time.perf_counter()
    with pytest.raises(Killed):
        train(checkpoint=path, progress=kill_after_task_2)
    resumed = train(checkpoint=path)
    wall = time.perf_counter() - start
    assert resumed.resumed_from == 3
    # The seconds of both runs, summed through the checkpoint: no more than the two calls took.
    assert sum(row["seconds"] for row in resumed.history) <= resumed.seconds <= wall
    for a, b in [(resumed.optimizer, result.optimizer), (resumed.value, result.value)]:
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="different settings"):
        train(checkpoint=path, samples=3)


def _counting_metric() -> tuple[BlackBoxMetric, list[int]]:
    calls = [0]
    mcr = make_metric("mcr")

    def counted(y_true, y_score):
        calls[0] += 1
        return mcr.score(y_true, y_score)

    return BlackBoxMetric(counted, "mcr", higher_is_better=False), calls


def test_merged_estimator_refuses_a_once_differentiable_loss_before_any_training(tmp_path):
    adapter, pool = meta_setup()
    metric, calls = _counting_metric()
    rows = []
    with pytest.raises(SecondOrderError, match=r"`loss_fn` \(once_differentiable_loss\) " + SECOND_ORDER_ADVICE):
        meta_train_learned(adapter, once_differentiable_loss, metric, pool, finetune_config=FINETUNE,
                           config=learned_config(), checkpoint=tmp_path / "run.pt", progress=rows.append)
    assert calls == [0] and rows == [] and not (tmp_path / "run.pt").exists()


def test_evolution_estimator_trains_with_a_once_differentiable_loss():
    adapter, pool = meta_setup()
    result = meta_train_learned(adapter, once_differentiable_loss, make_metric("mcr"), pool,
                                finetune_config=FINETUNE, config=learned_config(estimator="evolution"))
    rows = [row for row in result.history if not math.isnan(row["objective"])]
    assert len(rows) == 3 and all(row["skipped_updates"] == 0 for row in rows)
    assert all(math.isnan(row["pathwise_variance"]) and row["evolution_variance"] > 0 for row in rows)
    initial = LearnedOptimizer(seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(result.optimizer.parameters(), initial.parameters()))
    assert all(torch.isfinite(w).all() for w in result.optimizer.parameters())


def test_estimator_option():
    assert LearnedConfig().estimator == "merged"
    with pytest.raises(ValueError, match="`estimator`.*'pathwise'"):
        LearnedConfig(estimator="pathwise")


def test_damaged_learned_checkpoints_name_the_file(trained, tmp_path):
    _, good, _ = trained
    path = tmp_path / "rule.pt"
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    where = re.escape(repr(str(path)))
    with pytest.raises(CheckpointError, match=f"`path` {where} is truncated or corrupt"):
        load_learned(path)
    with pytest.raises(CheckpointError, match=f"`checkpoint` {where} is truncated or corrupt.*resume=False"):
        train(checkpoint=path)
    torch.save({"format": "metricopt.blackbox.meta/1"}, path)
    with pytest.raises(CheckpointError, match=f"`path` {where} is a metricopt meta-training checkpoint, not a "
                                              "learned-optimizer checkpoint \\(load it with load_value\\)"):
        load_learned(path)
    torch.save({"format": LEARNED_CHECKPOINT_FORMAT, "optimizer_config": {"hidden": 0}, "optimizer_state": {}}, path)
    with pytest.raises(CheckpointError, match=f"`path` {where} is a damaged .*`hidden`"):
        load_learned(path)


# ---------------------------------------------------------------- the shared meta-training loop
# meta_train (the value function) and meta_train_learned run one loop (metricopt.blackbox.meta.MetaLoop):
# checkpoints, resuming, warm-up, normalisation. LearnedConfig.value is the matching value-only run.

#: History columns that hold wall time (they differ between any two runs).
TIME_COLUMNS = ("collect_seconds", "value_seconds", "optimizer_seconds", "update_seconds", "seconds")


def train_value(checkpoint=None, progress=None, metric=None, finetune_config=FINETUNE):
    adapter, pool = meta_setup()
    metric = metric if metric is not None else make_metric("mcr")
    return meta_train(adapter, cross_entropy_loss, metric, pool,
                      finetune_config=finetune_config, config=learned_config().value, checkpoint=checkpoint,
                      progress=progress)


TRAINERS = {"value": train_value, "learned": train}


@pytest.fixture(scope="module")
def value_trained(tmp_path_factory):
    """The value-only run matching ``trained`` and its checkpoint."""
    path = tmp_path_factory.mktemp("value") / "run.pt"
    return train_value(checkpoint=path), path


def assert_same_entries(a, b, where="checkpoint"):
    """Equal to the bit, NaN equal to NaN; wall times are not compared."""
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            if key not in TIME_COLUMNS:
                assert_same_entries(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_entries(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a.isnan(), b.isnan()), where
        assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)), where
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


@pytest.mark.parametrize("after_task", [1, 2])  # the last warm-up task (the normalisation is set), the first after
@pytest.mark.parametrize("trainer", ["value", "learned"])
def test_both_trainers_resume_a_mid_way_checkpoint_to_the_uninterrupted_checkpoint(
        trainer, after_task, trained, value_trained, tmp_path):
    uninterrupted = (value_trained if trainer == "value" else trained)[1]
    path = tmp_path / "killed.pt"

    class Killed(Exception):
        pass

    def kill(row):
        if row["task"] == after_task:
            raise Killed

    with pytest.raises(Killed):
        TRAINERS[trainer](checkpoint=path, progress=kill)
    assert torch.load(path, weights_only=True)["next_task"] == after_task + 1  # checkpoint_every=1
    rows = []
    resumed = TRAINERS[trainer](checkpoint=path, progress=rows.append)
    assert resumed.resumed_from == after_task + 1
    assert [row["task"] for row in rows] == [float(t) for t in range(after_task + 1, 4)]
    # Every entry: weights, Adam state, replay generator, trajectories, history (all but wall times).
    assert_same_entries(torch.load(uninterrupted, weights_only=True), torch.load(path, weights_only=True))


def test_checkpoints_keep_their_format_and_entry_order(trained, value_trained):
    shared = ["value_config", "value_state", "trajectories", "history"]
    value = torch.load(value_trained[1], weights_only=True)
    assert value["format"] == CHECKPOINT_FORMAT == "metricopt.blackbox.meta/1"
    assert list(value) == ["format", "next_task", "config", *shared, "replay_generator"]
    assert list(value["config"]) == ["meta", "finetune", "distribution", "phi_size"]
    learned = torch.load(trained[1], weights_only=True)
    assert learned["format"] == LEARNED_CHECKPOINT_FORMAT == "metricopt.blackbox.learned/1"
    assert list(learned) == ["format", "next_task", "config", "optimizer_config", "optimizer_state", "adam_state",
                             *shared, "seconds"]
    assert list(learned["config"]) == ["learned", "finetune", "distribution", "phi_size"]
    # The matching runs draw the same warm-up tasks (the learned one never draws guided tasks).
    for a, b in zip(value["trajectories"][:2], learned["trajectories"][:2]):
        assert_same_entries(a, b)


class _FailTask:
    """mcr, NaN for every observation of one task (``evaluations`` calls per task)."""

    def __init__(self, task: int, evaluations: int) -> None:
        self.failing = range(task * evaluations + 1, (task + 1) * evaluations + 1)
        self.calls, self.mcr = 0, make_metric("mcr")

    def __call__(self, y_true, y_score):
        self.calls += 1
        return math.nan if self.calls in self.failing else self.mcr.function(y_true, y_score)


def _normalisation(trajectories) -> tuple[float, float]:
    costs = torch.cat([t["observed_costs"] for t in trajectories]).numpy()
    mean = float(costs.mean())
    return mean, max(float(costs.std()), 0.1 * abs(mean), 1e-6)


def test_normalisation_is_set_until_the_value_function_trains_then_fixed(tmp_path):
    # The last warm-up run (task 1) fails: the learned optimizer trains only on a task's own trajectory, so
    # the normalisation set at task 1 from task 0's run is set again at task 2 from both runs, then fixed.
    # The value-only trainer trains at task 1 on the newest stored run (task 0's), which fixes it there.
    finetune_config = dataclasses.replace(FINETUNE, on_error="warn")
    metric = BlackBoxMetric(_FailTask(1, FINETUNE.evaluations), "mcr", higher_is_better=False)
    with pytest.warns(RuntimeWarning, match="returned nan"):
        learned = train(checkpoint=tmp_path / "learned.pt", metric=metric, finetune_config=finetune_config)
    metric = BlackBoxMetric(_FailTask(1, FINETUNE.evaluations), "mcr", higher_is_better=False)
    with pytest.warns(RuntimeWarning, match="returned nan"):
        value = train_value(checkpoint=tmp_path / "value.pt", metric=metric, finetune_config=finetune_config)
    assert [math.isnan(row["value_loss"]) for row in learned.history] == [True, True, False, False]
    assert [row["reptile_iterations"] > 0 for row in value.history] == [False, True, True, True]
    stored = torch.load(tmp_path / "learned.pt", weights_only=True)["trajectories"]
    assert len(stored) == 3  # tasks 0, 2 and 3
    offset, scale = _normalisation(stored[:2])
    assert float(learned.value.target_offset) == pytest.approx(offset, rel=1e-6)
    assert float(learned.value.target_scale) == pytest.approx(scale, rel=1e-6)
    stored = torch.load(tmp_path / "value.pt", weights_only=True)["trajectories"]
    offset, scale = _normalisation(stored[:1])
    assert float(value.value.target_offset) == pytest.approx(offset, rel=1e-6)
    assert float(value.value.target_scale) == pytest.approx(scale, rel=1e-6)


# ---------------------------------------------------------------- devices


def test_rule_and_state_follow_phi_to_its_device():
    # A rule and a state made on the CPU step a phi that lives elsewhere ('meta': no data, so this
    # checks where the computation happens); before, the CPU state met the other device's gradient.
    rule = randomise(LearnedOptimizer(), seed=1, scale=0.1)
    state = rule.initial_state(torch.zeros(8))
    phi, gradient = torch.zeros(8, device="meta"), torch.ones(8, device="meta")
    next_phi, new_state = rule.update(phi, gradient, state, 1.0, 0.5)
    assert next_phi.device.type == "meta"
    assert {key: tensor.device.type for key, tensor in new_state.items()} == {
        key: "cpu" if key in ("step", "has_cost") else "meta" for key in state}
    assert all(w.device.type == "cpu" for w in rule.parameters())  # the rule itself stays where it is


def test_unroll_runs_where_the_adapter_is():
    adapter, data = toy_task()
    adapter.to("meta")
    data = TaskData(data.X_train.to("meta"), data.y_train.to("meta"), data.X_val, data.y_val)
    rule, value = LearnedOptimizer(), ValueFunction(8, hidden_sizes=(8,))  # both on the CPU
    objective = unroll(rule, adapter, F.binary_cross_entropy_with_logits, value, data, steps=3, batch_size=8)
    assert objective.device.type == "meta" and objective.requires_grad
    assert next(value.parameters()).device.type == "cpu"  # a moved copy, not the caller's value function


def test_a_loaded_rule_and_value_guide_an_adapter_on_each_device(trained, device):
    _, path, _ = trained
    rule = load_learned(path)
    value = ValueFunction(8, hidden_sizes=(16,))
    value.load_state_dict(torch.load(path, weights_only=True)["value_state"])
    before = {k: v.clone() for k, v in value.state_dict().items()}
    runs = {}
    for where in ("cpu", device):
        adapter, data = toy_task(3)
        adapter.to(where)
        config = FineTuneConfig(steps=10, evaluations=3, batch_size=16, adapt_steps=2)
        runs[where, "rule"] = finetune(adapter, cross_entropy_loss, make_metric("mcr"), data, config=config, rule=rule)
        runs[where, "value"] = finetune(adapter, cross_entropy_loss, make_metric("mcr"), data, config=config,
                                        value=value)
        runs[where, "unroll"] = unroll(rule, adapter, cross_entropy_loss, value, data, steps=4, batch_size=16)
    for kind in ("rule", "value"):
        assert runs[device, kind].phi.device == torch.device(device)
        torch.testing.assert_close(runs[device, kind].phi.cpu(), runs["cpu", kind].phi, rtol=1e-4, atol=1e-5)
    assert runs[device, "unroll"].device == torch.device(device)
    torch.testing.assert_close(runs[device, "unroll"].cpu(), runs["cpu", "unroll"], rtol=1e-4, atol=1e-5)
    assert all(w.device.type == "cpu" for w in (*rule.parameters(), *value.parameters()))
    assert all(torch.equal(v, before[k]) for k, v in value.state_dict().items())  # never adapted in place


def test_finetune_with_the_learned_rule_keeps_the_best_phi():
    adapter, data = toy_task(3)
    rule = randomise(LearnedOptimizer(base_step=0.05), seed=7, scale=0.05)
    result = finetune(adapter, cross_entropy_loss, make_metric("mcr"), data,
                      config=FineTuneConfig(steps=20, evaluations=5, batch_size=16), rule=rule)
    trajectory = result.trajectory
    best = trajectory.observed_steps[trajectory.observed_costs.index(min(trajectory.observed_costs))]
    assert result.best_step == best
    assert torch.equal(result.phi, trajectory.phis[best]) and torch.equal(adapter.phi.detach(), result.phi)
    assert len(trajectory.phis) == 21 and not torch.equal(trajectory.phis[-1], trajectory.phis[0])


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("name, bad", [
    ("tasks", 0), ("warmup_tasks", 0), ("unroll_steps", 0), ("samples", 1), ("optimizer_updates", 0),
    ("sigma", 0.0), ("metric_weight", -1.0), ("learning_rate", -1e-3), ("hidden", 0), ("base_step", 0.0),
    ("seed", -1), ("checkpoint_every", 0), ("sigma", math.nan),
])
def test_bad_config_values_name_the_option(name, bad):
    with pytest.raises(ValueError, match=f"`{name}`"):
        LearnedConfig(**{name: bad})


def test_config_value_options():
    with pytest.raises(ValueError, match="`warmup_tasks`"):
        LearnedConfig(tasks=3, warmup_tasks=4)
    config = LearnedConfig(tasks=10, warmup_tasks=3, seed=2, value=MetaConfig(inner_steps=7))
    assert config.value == MetaConfig(tasks=10, warmup_tasks=3, seed=2, inner_steps=7)
    with pytest.raises(ValueError, match="`value`.tasks"):
        LearnedConfig(tasks=10, value=MetaConfig(tasks=12))
    with pytest.raises(TypeError, match="`value`"):
        LearnedConfig(value={"tasks": 3})
    assert dataclasses.replace(config, samples=8).value == config.value


def test_rule_argument_errors():
    with pytest.raises(ValueError, match="`hidden`"):
        LearnedOptimizer(hidden=0)
    with pytest.raises(ValueError, match="`base_step`"):
        LearnedOptimizer(base_step=-0.1)
    with pytest.raises(RuntimeError, match="reset"):
        LearnedOptimizer().step(torch.zeros(2), torch.zeros(2), 1.0, None)
    with pytest.raises(ValueError, match="`gradient`"):
        rule = LearnedOptimizer()
        rule.update(torch.zeros(2), torch.zeros(3), rule.initial_state(torch.zeros(2)), 1.0, None)
    with pytest.raises(ValueError, match="`costs`"):
        metric_objective(torch.tensor([0.5]))
