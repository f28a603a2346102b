"""Tests of metricopt.blackbox.finetune: the one fine-tuning loop of the black-box family."""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricopt.blackbox.adapters import InputBias
from metricopt.blackbox.finetune import (
    OPTIMIZERS,
    FineTuneConfig,
    FineTuneResult,
    TaskData,
    UpdateRule,
    finetune,
    logits_for_loss,
)
from metricopt.blackbox.meta import CHECKPOINT_FORMAT, atomic_save, load_value
from metricopt.blackbox.metric import BlackBoxMetric, MetricError, make_metric
from metricopt.blackbox.trajectory import evaluation_steps
from metricopt.blackbox.value import ValueFunction

pytestmark = pytest.mark.usefixtures("one_thread")

# The module itself: metricopt.blackbox re-exports the function `finetune`, which shadows the
# submodule as an attribute of the package (`import metricopt.blackbox.finetune as m` gives the function).
finetune_module = importlib.import_module("metricopt.blackbox.finetune")

PHI_SIZE = 6
LOSS = F.binary_cross_entropy_with_logits


def _backbone(seed: int = 0) -> nn.Module:
    """A 2-layer MLP with seeded weights (no global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return net


def _data(seed: int = 0) -> TaskData:
    """~200 synthetic binary rows: 150 for the loss, 50 for the metric."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(200, 5, generator=generator)
    w = torch.randn(5, generator=generator)
    y = (X @ w + 0.8 * torch.randn(200, generator=generator) > 0).float()
    return TaskData(X[:150], y[:150], X[150:], y[150:].long().numpy())


@pytest.fixture
def adapter() -> InputBias:
    return InputBias(_backbone(), phi_size=PHI_SIZE, seed=0)


@pytest.fixture(scope="module")
def data() -> TaskData:
    return _data()


def _value(seed: int = 0) -> ValueFunction:
    value = ValueFunction(PHI_SIZE, hidden_sizes=(16,), seed=seed)
    value.set_normalisation(0.3, 0.1)
    return value


def _distance_metric(target: torch.Tensor) -> BlackBoxMetric:
    """A model-form metric with a known value: ``||phi - target||^2`` (lower is better)."""
    return BlackBoxMetric(lambda model: float((model.phi.detach() - target).square().sum()), "dist",
                          higher_is_better=False, takes="model")


def _config(**overrides) -> FineTuneConfig:
    options = {"steps": 12, "evaluations": 4, "learning_rate": 0.2, "batch_size": 32, "value_weight": 1.0,
               "adapt_steps": 3, "adapt_learning_rate": 1e-2}
    options.update(overrides)
    return FineTuneConfig(**options)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_state_equal(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        assert torch.equal(tensor, after[key]), key


def _assert_same_run(a: FineTuneResult, b: FineTuneResult) -> None:
    assert torch.equal(a.trajectory.phi_matrix(), b.trajectory.phi_matrix())
    assert a.trajectory.losses == b.trajectory.losses
    assert a.trajectory.observed_steps == b.trajectory.observed_steps
    assert a.trajectory.observed_costs == b.trajectory.observed_costs
    assert torch.equal(a.phi, b.phi) and a.best_step == b.best_step and a.best_value == b.best_value


# ---------------------------------------------------------------- basic contract


def test_result_structure(adapter, data):
    config = _config()
    rows = []
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, progress=rows.append)
    trajectory = result.trajectory
    assert trajectory.num_points == config.steps + 1 and len(trajectory.losses) == config.steps
    assert trajectory.observed_steps == evaluation_steps(config.steps, config.evaluations).tolist() == [0, 4, 8, 12]
    assert all(math.isfinite(v) for v in trajectory.losses + trajectory.observed_costs)
    assert torch.equal(trajectory.phis[0], torch.zeros(PHI_SIZE))  # default start: the pre-trained model
    assert result.skipped == 0
    # progress sees every step; "cost"/"best_cost" only at observation steps; history keeps the rows.
    assert rows == result.history and [row["step"] for row in rows] == list(range(config.steps + 1))
    for row in rows:
        has_cost = int(row["step"]) in trajectory.observed_steps
        assert ("cost" in row) == has_cost and ("best_cost" in row) == has_cost
        assert ("loss" in row) == (row["step"] < config.steps)
    assert [row["cost"] for row in rows if "cost" in row] == trajectory.observed_costs
    assert rows[-1]["best_cost"] == min(trajectory.observed_costs)
    # The adapter ends holding the kept phi.
    assert torch.equal(adapter.phi.detach(), result.phi)


def test_initial_phi_and_determinism(adapter, data):
    start = torch.linspace(-0.5, 0.5, PHI_SIZE)
    config = _config()
    a = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, initial_phi=start, seed=3)
    assert torch.equal(a.trajectory.phis[0], start)
    b = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, initial_phi=start, seed=3)
    _assert_same_run(a, b)
    c = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, initial_phi=start, seed=4)
    assert not torch.equal(a.trajectory.phi_matrix(), c.trajectory.phi_matrix())  # the seed orders the batches


def test_global_rng_untouched(adapter, data):
    state = torch.random.get_rng_state()
    finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(), value=_value())
    assert torch.equal(state, torch.random.get_rng_state())


def test_first_sgd_step_is_the_loss_gradient_of_the_seeded_batch(adapter, data):
    config = _config(optimizer="sgd", learning_rate=0.3, momentum=0.9, value_weight=0.0)
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, seed=7)
    index = torch.randperm(len(data.X_train), generator=torch.Generator().manual_seed(7))[: config.batch_size]
    phi = torch.zeros(PHI_SIZE, requires_grad=True)
    loss = LOSS(adapter(data.X_train[index], phi=phi).squeeze(-1), data.y_train[index])
    (gradient,) = torch.autograd.grad(loss, phi)
    assert result.trajectory.losses[0] == pytest.approx(float(loss.detach()), rel=1e-6)
    torch.testing.assert_close(result.trajectory.phis[1], -config.learning_rate * gradient)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_sgd_and_adam_both_run(adapter, data, optimizer):
    config = _config(optimizer=optimizer, learning_rate=0.05, keep_best=False)
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, value=_value())
    phis = result.trajectory.phi_matrix()
    assert torch.isfinite(phis).all() and (phis[1:] != phis[:-1]).any(dim=1).all()  # every step moves phi
    step = phis[1] - phis[0]
    if optimizer == "adam":
        # Adam's first step is lr * sign(gradient) (m / sqrt(v) = g / |g|), whatever the gradient's size.
        torch.testing.assert_close(step.abs(), torch.full((PHI_SIZE,), config.learning_rate), rtol=1e-4, atol=1e-6)
    else:
        assert not torch.allclose(step.abs(), torch.full((PHI_SIZE,), config.learning_rate))


def test_sgd_and_adam_differ(adapter, data):
    runs = [finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(optimizer=o)) for o in OPTIMIZERS]
    assert not torch.equal(runs[0].trajectory.phi_matrix(), runs[1].trajectory.phi_matrix())


def test_logits_for_loss():
    assert logits_for_loss(torch.zeros(4, 1)).shape == (4,)
    assert logits_for_loss(torch.zeros(4, 3)).shape == (4, 3)


# ---------------------------------------------------------------- the frozen backbone


@pytest.mark.parametrize(("guided", "optimizer"), [(False, "sgd"), (False, "adam"), (True, "sgd"), (True, "adam")])
def test_backbone_bitwise_untouched(adapter, data, guided, optimizer):
    before = _snapshot(adapter.backbone)
    projection = adapter.phi_weight.clone()
    value = _value() if guided else None
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(optimizer=optimizer), value=value)
    _assert_state_equal(before, adapter.backbone)
    assert torch.equal(adapter.phi_weight, projection)
    for p in adapter.backbone.parameters():
        assert not p.requires_grad and p.grad is None
    assert not adapter.backbone.training
    assert not torch.equal(result.trajectory.phis[-1], result.trajectory.phis[0])  # phi itself did move


def test_value_guided_run_with_a_float64_backbone(data):
    adapter = InputBias(_backbone().double(), phi_size=PHI_SIZE, seed=0)
    data64 = TaskData(data.X_train.double(), data.y_train.double(), data.X_val.double(), data.y_val)
    metric = _distance_metric(torch.zeros(PHI_SIZE, dtype=torch.float64))  # model form: no float32 predict_proba
    plain = finetune(adapter, LOSS, metric, data64, config=_config())
    assert plain.phi.dtype == torch.float64
    guided = finetune(adapter, LOSS, metric, data64, config=_config(), value=_value())
    assert torch.isfinite(guided.trajectory.phi_matrix()).all()


# ---------------------------------------------------------------- keep_best


def test_keep_best_ends_at_the_best_observed_phi(adapter, data):
    metric = make_metric("aucpr")
    config = _config(steps=20, evaluations=6, learning_rate=0.5, keep_best=True)
    result = finetune(adapter, LOSS, metric, data, config=config, value=_value())
    trajectory = result.trajectory
    costs = trajectory.observed_costs
    assert len(set(costs)) > 1  # the metric moved: the choice is not trivial
    best = int(np.argmin(costs))  # first of equal costs: strict improvement only
    assert result.best_step == trajectory.observed_steps[best]
    assert torch.equal(result.phi, trajectory.phis[result.best_step])
    assert metric.cost(result.best_value) == min(costs)
    # Re-evaluate the black-box metric where the adapter ended: it is the best observed value.
    assert torch.equal(adapter.phi.detach(), result.phi)
    assert metric.evaluate(adapter, data.X_val, data.y_val) == result.best_value


def test_keep_best_counts_the_starting_point(adapter, data):
    # The metric is the distance to the starting phi: every step makes it worse.
    start = torch.linspace(-0.3, 0.3, PHI_SIZE)
    metric = _distance_metric(start)
    result = finetune(adapter, LOSS, metric, data, config=_config(keep_best=True), initial_phi=start)
    assert result.trajectory.observed_costs[0] == 0.0 and min(result.trajectory.observed_costs[1:]) > 0
    assert result.best_step == 0 and result.best_value == 0.0
    assert torch.equal(result.phi, start) and torch.equal(adapter.phi.detach(), start)
    assert metric.evaluate(adapter, None, None) == 0.0


def test_keep_best_false_ends_at_the_last_phi(adapter, data):
    start = torch.linspace(-0.3, 0.3, PHI_SIZE)
    metric = _distance_metric(start)
    config = _config(keep_best=False)
    result = finetune(adapter, LOSS, metric, data, config=config, initial_phi=start)
    last = result.trajectory.phis[-1]
    assert result.best_step == config.steps
    assert torch.equal(result.phi, last) and torch.equal(adapter.phi.detach(), last)
    assert result.best_value == result.trajectory.observed_costs[-1] == metric.evaluate(adapter, None, None) > 0


# ---------------------------------------------------------------- the value function's part


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("adapt_steps", [0, 3])
def test_loss_only_equals_value_weight_zero(adapter, data, optimizer, adapt_steps):
    metric = make_metric("aucpr")
    loss_only = finetune(adapter, LOSS, metric, data, config=_config(optimizer=optimizer, adapt_steps=adapt_steps))
    zero = finetune(adapter, LOSS, metric, data, value=_value(),
                    config=_config(optimizer=optimizer, adapt_steps=adapt_steps, value_weight=0.0))
    _assert_same_run(loss_only, zero)


def test_value_gradient_changes_the_path(adapter, data):
    metric = make_metric("aucpr")
    value = _value()
    config = _config(optimizer="sgd", learning_rate=0.2, value_weight=0.7)
    guided = finetune(adapter, LOSS, metric, data, config=config, value=value)
    plain = finetune(adapter, LOSS, metric, data, config=_config(optimizer="sgd", learning_rate=0.2), value=None)
    assert not torch.equal(guided.trajectory.phi_matrix(), plain.trajectory.phi_matrix())
    # Step 1 (no online adaptation yet: it needs two observations): the difference is exactly
    # -lr * value_weight * grad f_w(phi_0), SGD's first step having no momentum history.
    phi0 = torch.zeros(PHI_SIZE, requires_grad=True)
    (value_gradient,) = torch.autograd.grad(value(phi0), phi0)
    assert value_gradient.abs().max() > 1e-3
    torch.testing.assert_close(guided.trajectory.phis[1] - plain.trajectory.phis[1],
                               -config.learning_rate * config.value_weight * value_gradient, rtol=1e-4, atol=1e-6)


def test_value_weight_scales_the_value_gradient(adapter, data):
    metric = make_metric("aucpr")
    runs = {w: finetune(adapter, LOSS, metric, data, value=_value(), config=_config(optimizer="sgd", value_weight=w))
            for w in (0.0, 0.5, 1.0)}
    first = {w: r.trajectory.phis[1] for w, r in runs.items()}
    torch.testing.assert_close(first[1.0] - first[0.0], 2 * (first[0.5] - first[0.0]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_online_adaptation_leaves_the_callers_value_alone(adapter, data, optimizer):
    value = _value()
    before = _snapshot(value)
    config = _config(optimizer=optimizer, adapt_steps=5)
    adapted = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, value=value)
    _assert_state_equal(before, value)
    assert all(p.grad is None for p in value.parameters())
    # The adaptation did happen (on a private copy): without it the path differs.
    frozen = finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(optimizer=optimizer, adapt_steps=0),
                      value=value)
    _assert_state_equal(before, value)
    assert all(p.grad is None for p in value.parameters())
    assert not torch.equal(adapted.trajectory.phi_matrix(), frozen.trajectory.phi_matrix())
    # Up to the second observation (step 4) the two runs are the same.
    second = adapted.trajectory.observed_steps[1]
    assert torch.equal(adapted.trajectory.phi_matrix()[: second + 1], frozen.trajectory.phi_matrix()[: second + 1])


def _checkpointed_value(path) -> ValueFunction:
    """``_value()`` written as a meta-training checkpoint and loaded back with load_value (on the CPU)."""
    value = _value()
    atomic_save(path, {"format": CHECKPOINT_FORMAT, "value_config": {**value.config()},
                       "value_state": value.state_dict()})
    return load_value(path)


@pytest.mark.parametrize("adapt_steps", [0, 3])
def test_a_value_function_loaded_from_a_checkpoint_guides_an_adapter_on_each_device(data, tmp_path, device,
                                                                                    adapt_steps):
    # Defect 8: the loaded value function sits on the CPU; the adapter anywhere. Same run as on the CPU.
    config = _config(adapt_steps=adapt_steps)
    value = _checkpointed_value(tmp_path / "meta.pt")
    before = _snapshot(value)
    expected = finetune(InputBias(_backbone(), phi_size=PHI_SIZE), LOSS, make_metric("aucpr"), data, config=config,
                        value=_value())
    adapter = InputBias(_backbone(), phi_size=PHI_SIZE).to(device)
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, value=value)
    assert result.phi.device == adapter.phi.device == torch.device(device)
    torch.testing.assert_close(result.trajectory.phi_matrix(), expected.trajectory.phi_matrix(), rtol=1e-4, atol=1e-5)
    assert result.best_step == expected.best_step
    assert next(value.parameters()).device.type == "cpu"  # the caller's value function is neither moved
    _assert_state_equal(before, value)  # nor adapted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the CPU-checkpoint, CUDA-adapter case")
def test_meta_trained_checkpoint_guides_a_cuda_adapter(data, tmp_path):
    # The reported case end to end: meta-train on the CPU with a checkpoint, load it (CPU), fine-tune on CUDA.
    from metricopt.blackbox.meta import MetaConfig, meta_train

    pool = _data(1)
    meta_train(InputBias(_backbone(), phi_size=PHI_SIZE), LOSS, make_metric("aucpr"), pool,
               finetune_config=_config(steps=8, evaluations=3), config=MetaConfig(tasks=3, warmup_tasks=1, replay=1,
               inner_steps=2, hidden_sizes=(16,)), checkpoint=tmp_path / "meta.pt")
    value = load_value(tmp_path / "meta.pt")
    assert next(value.parameters()).device.type == "cpu"
    on_cpu = finetune(InputBias(_backbone(), phi_size=PHI_SIZE), LOSS, make_metric("aucpr"), data, config=_config(),
                      value=value)
    adapter = InputBias(_backbone(), phi_size=PHI_SIZE).cuda()
    on_cuda = finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(), value=value)
    assert on_cuda.phi.is_cuda and adapter.phi.is_cuda
    torch.testing.assert_close(on_cuda.trajectory.phi_matrix(), on_cpu.trajectory.phi_matrix(), rtol=1e-4, atol=1e-5)


def test_online_adaptation_sees_every_observation_so_far(adapter, data, monkeypatch):
    seen = []
    real = finetune_module.adapt_value

    def spy(value, trajectory, **kwargs):
        seen.append((list(trajectory.observed_steps), trajectory.num_points, kwargs))
        return real(value, trajectory, **kwargs)

    monkeypatch.setattr(finetune_module, "adapt_value", spy)
    config = _config(adapt_steps=4, adapt_learning_rate=3e-3)
    finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, value=_value())
    assert [s for s, _, _ in seen] == [[0, 4], [0, 4, 8], [0, 4, 8, 12]]
    assert [n for _, n, _ in seen] == [5, 9, 13]  # adapted right after observing step t: t + 1 points
    assert all(k == {"steps": 4, "learning_rate": 3e-3} for _, _, k in seen)
    seen.clear()
    finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(adapt_steps=0), value=_value())
    assert seen == []


# ---------------------------------------------------------------- a learned update rule


class HalfStep:
    """A trivial UpdateRule: ``phi - 0.1 * gradient``, recording its calls."""

    def __init__(self) -> None:
        self.resets: list[torch.Tensor] = []
        self.costs: list[float | None] = []
        self.losses: list[float] = []

    def reset(self, phi: torch.Tensor) -> None:
        self.resets.append(phi.clone())

    def step(self, phi: torch.Tensor, gradient: torch.Tensor, loss: float, cost: float | None) -> torch.Tensor:
        self.costs.append(cost)
        self.losses.append(loss)
        return phi - 0.1 * gradient


def test_custom_update_rule_is_used(adapter, data):
    rule = HalfStep()
    assert isinstance(rule, UpdateRule)
    start = torch.linspace(-0.2, 0.2, PHI_SIZE)
    config = _config(optimizer="adam", learning_rate=0.5, keep_best=False)  # the optimizer must be ignored
    result = finetune(adapter, LOSS, make_metric("aucpr"), data, config=config, rule=rule, initial_phi=start)
    assert len(rule.resets) == 1 and torch.equal(rule.resets[0], start)
    assert len(rule.costs) == config.steps
    assert rule.losses == result.trajectory.losses
    # The cost a step sees is the latest observation (sample and hold; step 0 is observed first).
    trajectory = result.trajectory
    held = [trajectory.observed_costs[np.searchsorted(trajectory.observed_steps, t, side="right") - 1]
            for t in range(config.steps)]
    assert rule.costs == held
    assert torch.equal(adapter.phi.detach(), trajectory.phis[-1])  # keep_best=False: the rule's last phi
    # phi follows the rule: plain gradient descent with step 0.1 = SGD without momentum at lr 0.1.
    sgd = finetune(adapter, LOSS, make_metric("aucpr"), data, initial_phi=start,
                   config=_config(optimizer="sgd", learning_rate=0.1, momentum=0.0, keep_best=False))
    torch.testing.assert_close(trajectory.phi_matrix(), sgd.trajectory.phi_matrix(), rtol=1e-5, atol=1e-6)


def test_custom_update_rule_replaces_the_value_gradient(adapter, data):
    value = _value()
    before = _snapshot(value)
    with_value = finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(), rule=HalfStep(), value=value)
    without = finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(), rule=HalfStep())
    _assert_same_run(with_value, without)
    _assert_state_equal(before, value)


# ---------------------------------------------------------------- failing metrics


class Flaky:
    """A model-form metric function failing (NaN or an exception) on chosen calls."""

    def __init__(self, fail_on: set[int], how: str) -> None:
        self.fail_on, self.how, self.calls = fail_on, how, 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        if self.calls in self.fail_on:
            if self.how == "nan":
                return math.nan
            if self.how == "inf":
                return math.inf
            raise ZeroDivisionError("boom")
        return float(model.phi.detach().square().sum()) + 0.1


def _flaky_metric(fail_on: set[int], how: str) -> BlackBoxMetric:
    return BlackBoxMetric(Flaky(fail_on, how), "flaky", higher_is_better=False, takes="model")


@pytest.mark.parametrize(("how", "match"), [("nan", "metric 'flaky' returned nan"),
                                             ("inf", "metric 'flaky' returned inf"),
                                             ("raise", "metric 'flaky' raised ZeroDivisionError: boom")])
def test_failing_metric_raises_by_default(adapter, data, how, match):
    with pytest.raises(MetricError, match=match):
        finetune(adapter, LOSS, _flaky_metric({2}, how), data, config=_config(), value=_value())


def test_failing_scores_metric_raises(adapter, data):
    def broken(y_true, y_score):
        raise RuntimeError("no scores today")

    metric = make_metric(broken, higher_is_better=True)
    with pytest.raises(MetricError, match="raised RuntimeError: no scores today"):
        finetune(adapter, LOSS, metric, data, config=_config())


@pytest.mark.parametrize("how", ["nan", "inf", "raise"])
def test_failing_metric_is_skipped_with_a_warning(adapter, data, monkeypatch, how):
    adapted_on = []
    real = finetune_module.adapt_value

    def spy(value, trajectory, **kwargs):
        assert all(math.isfinite(c) for c in trajectory.observed_costs)
        out = real(value, trajectory, **kwargs)
        assert all(torch.isfinite(p).all() for p in value.state_dict().values())
        adapted_on.append(list(trajectory.observed_steps))
        return out

    monkeypatch.setattr(finetune_module, "adapt_value", spy)
    value = _value()
    before = _snapshot(value)
    metric = _flaky_metric({2}, how)  # call 2 = the observation at step 4
    rows = []
    with pytest.warns(RuntimeWarning, match="metric 'flaky' failed, observation skipped"):
        result = finetune(adapter, LOSS, metric, data, config=_config(on_error="warn"), value=value,
                          progress=rows.append)
    assert metric.function.calls == 4
    assert result.skipped == 1
    trajectory = result.trajectory
    assert trajectory.observed_steps == [0, 8, 12]
    assert all(math.isfinite(c) for c in trajectory.observed_costs)
    assert np.isfinite(trajectory.curve().mean).all()
    assert adapted_on == [[0, 8], [0, 8, 12]]
    assert "cost" not in rows[4] and "cost" in rows[8]
    assert result.best_value is not None and math.isfinite(result.best_value)
    _assert_state_equal(before, value)


def test_failed_start_does_not_count_as_best(adapter, data):
    start = torch.linspace(-0.3, 0.3, PHI_SIZE)
    metric = _flaky_metric({1}, "nan")  # the start (step 0) fails
    with pytest.warns(RuntimeWarning):
        result = finetune(adapter, LOSS, metric, data, config=_config(on_error="warn"), initial_phi=start)
    assert result.skipped == 1 and result.trajectory.observed_steps == [4, 8, 12]
    assert result.best_step in (4, 8, 12)
    assert result.best_value == min(result.trajectory.observed_costs)


@pytest.mark.parametrize("keep_best", [True, False])
def test_every_evaluation_failing(adapter, data, keep_best):
    metric = _flaky_metric(set(range(1, 100)), "raise")
    config = _config(on_error="warn", keep_best=keep_best)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(adapter, LOSS, metric, data, config=config, value=_value())
    assert sum(issubclass(w.category, RuntimeWarning) for w in caught) == 4
    assert result.skipped == 4 and result.trajectory.observed_steps == []
    assert result.best_value is None and result.best_step == config.steps
    assert torch.equal(result.phi, result.trajectory.phis[-1])


# ---------------------------------------------------------------- configuration and data errors


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"steps": 0}, ValueError, "`steps`"),
        ({"steps": 2.5}, ValueError, "`steps`"),
        ({"evaluations": 1}, ValueError, "`evaluations`"),
        ({"evaluations": 0.0}, ValueError, "`evaluations`"),
        ({"evaluations": 1.5}, ValueError, "`evaluations`"),
        ({"evaluations": "5"}, TypeError, "`evaluations`"),
        ({"optimizer": "rmsprop"}, ValueError, "`optimizer` must be one of 'sgd', 'adam'; got 'rmsprop'"),
        ({"learning_rate": 0.0}, ValueError, "`learning_rate`"),
        ({"learning_rate": math.nan}, ValueError, "`learning_rate`"),
        ({"learning_rate": "0.1"}, TypeError, "`learning_rate`"),
        ({"momentum": 1.0}, ValueError, "`momentum` must lie in \\[0, 1\\); got 1.0"),
        ({"momentum": -0.1}, ValueError, "`momentum`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"value_weight": -1.0}, ValueError, "`value_weight`"),
        ({"value_weight": math.inf}, ValueError, "`value_weight`"),
        ({"adapt_steps": -1}, ValueError, "`adapt_steps`"),
        ({"adapt_learning_rate": 0}, ValueError, "`adapt_learning_rate`"),
        ({"on_error": "ignore"}, ValueError, "`on_error` must be one of 'raise', 'warn'; got 'ignore'"),
    ],
)
def test_config_errors_name_the_argument(options, error, match):
    with pytest.raises(error, match=match):
        FineTuneConfig(**options)


def test_default_config_is_the_papers():
    config = FineTuneConfig()
    assert config.evaluations == 0.05 and config.optimizer == "sgd" and config.keep_best
    assert config.on_error == "raise"


def test_task_data_errors(data):
    with pytest.raises(ValueError, match="`X_train` and `y_train`.*150 and 149"):
        TaskData(data.X_train, data.y_train[:-1], data.X_val, data.y_val)
    with pytest.raises(ValueError, match="`X_val` and `y_val`.*50 and 49"):
        TaskData(data.X_train, data.y_train, data.X_val, data.y_val[:-1])
    with pytest.raises(ValueError, match="`X_train` and `y_train`"):
        TaskData(data.X_train[:0], data.y_train[:0], data.X_val, data.y_val)


def test_bad_initial_phi(adapter, data):
    with pytest.raises(ValueError, match="`value`"):
        finetune(adapter, LOSS, make_metric("aucpr"), data, config=_config(), initial_phi=torch.zeros(PHI_SIZE + 1))


def test_train_subset_keeps_the_chosen_training_rows_and_the_validation_part(data: TaskData) -> None:
    indices = torch.tensor([4, 0, 7])
    subset = data.train_subset(indices)
    assert torch.equal(subset.X_train, data.X_train[indices]) and torch.equal(subset.y_train, data.y_train[indices])
    assert subset.X_val is data.X_val and subset.y_val is data.y_val
    with pytest.raises(ValueError, match="X_train"):
        data.train_subset(torch.tensor([], dtype=torch.long))


# ---------------------------------------------------------------- selection rows


def _rows_metric() -> tuple[BlackBoxMetric, list[int]]:
    """AUCPR with a record of the rows each call saw (their count)."""
    seen: list[int] = []

    def aucpr_of_rows(y_true, y_score):
        seen.append(len(y_true))
        return make_metric("aucpr").score(y_true, y_score)

    return BlackBoxMetric(aucpr_of_rows, "aucpr-rows", higher_is_better=True), seen


def test_selection_rows_pick_the_kept_phi_and_the_validation_rows_guide(adapter, data):
    X, y = data.X_val, data.y_val
    split = TaskData(data.X_train, data.y_train, X[:30], y[:30], X[30:], y[30:])
    metric, seen = _rows_metric()
    config = _config(steps=20, evaluations=6, learning_rate=0.5)
    result = finetune(adapter, LOSS, metric, split, config=config, value=_value())
    assert seen == [30, 20] * 6  # each observation: the guiding rows, then the selecting rows
    observed = [row for row in result.history if "cost" in row]
    selected = [row["select_cost"] for row in observed]
    assert [row["cost"] for row in observed] == result.trajectory.observed_costs  # the trajectory: guiding rows
    assert len(set(selected)) > 1
    best = int(np.argmin(selected))
    assert result.best_step == result.trajectory.observed_steps[best]
    assert metric.cost(result.best_value) == min(selected)
    assert metric.evaluate(adapter, X[30:], y[30:]) == result.best_value  # the adapter ends at the kept phi
    # Without selection rows the same run keeps the phi best on the guiding rows.
    alone = finetune(adapter, LOSS, metric, TaskData(data.X_train, data.y_train, X[:30], y[:30]), config=config,
                     value=_value())
    assert torch.equal(alone.trajectory.phi_matrix(), result.trajectory.phi_matrix())  # selection does not steer
    assert metric.cost(alone.best_value) == min(result.trajectory.observed_costs)


def test_selection_rows_survive_train_subset_and_must_come_in_pairs(data):
    split = TaskData(data.X_train, data.y_train, data.X_val[:30], data.y_val[:30], data.X_val[30:], data.y_val[30:])
    subset = split.train_subset(torch.arange(10))
    assert len(subset.X_train) == 10 and subset.X_select is split.X_select and subset.y_select is split.y_select
    with pytest.raises(ValueError, match="`X_select` and `y_select` must be given together"):
        TaskData(data.X_train, data.y_train, data.X_val, data.y_val, data.X_val)
    with pytest.raises(ValueError, match="`X_select` and `y_select` must be non-empty.*20 and 19"):
        TaskData(data.X_train, data.y_train, data.X_val, data.y_val, data.X_val[30:], data.y_val[31:])
