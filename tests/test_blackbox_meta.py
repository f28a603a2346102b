"""Tests of metricopt.blackbox.adaptation and metricopt.blackbox.meta: fitting and meta-training the value function."""

from __future__ import annotations

import copy
import dataclasses
import fractions
import math
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricopt.blackbox.adaptation import adapt_value, observed_points, trajectory_targets
from metricopt.blackbox.adapters import InputBias
from metricopt.blackbox.finetune import FineTuneConfig, TaskData, finetune
from metricopt.blackbox.meta import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    MetaConfig,
    MetaResult,
    TaskDistribution,
    load_value,
    meta_train,
    reptile_step,
)
from metricopt.blackbox.metric import BlackBoxMetric, MetricError, make_metric
from metricopt.blackbox.trajectory import Trajectory
from metricopt.blackbox.value import ValueFunction, value_loss

pytestmark = pytest.mark.usefixtures("one_thread")

PHI_SIZE = 4
LOSS = F.binary_cross_entropy_with_logits
#: The known optimum of the synthetic metric ||phi - TARGET||^2.
TARGET = torch.tensor([1.0, -1.0, 0.5, 0.0])


def _backbone(seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return net


@pytest.fixture
def adapter() -> InputBias:
    return InputBias(_backbone(), phi_size=PHI_SIZE, seed=0)


@pytest.fixture(scope="module")
def pool() -> TaskData:
    """200 synthetic binary rows: 150 to draw task subsets from, 50 for the metric."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=generator)
    w = torch.randn(5, generator=generator)
    y = (X @ w + 0.8 * torch.randn(200, generator=generator) > 0).float()
    return TaskData(X[:150], y[:150], X[150:], y[150:].long().numpy())


@pytest.fixture(scope="module")
def reference_run(pool, tmp_path_factory) -> tuple[MetaResult, Path]:
    """One uninterrupted meta-training run with the small settings, and its final checkpoint (read only)."""
    path = tmp_path_factory.mktemp("reference") / "sub" / "meta.pt"  # the folder "sub" is created
    return _meta_train(InputBias(_backbone(), phi_size=PHI_SIZE, seed=0), pool, checkpoint=path), path


@pytest.fixture
def reference(reference_run) -> MetaResult:
    return reference_run[0]


def _distance_metric() -> BlackBoxMetric:
    """A black-box metric of model form with a known value: ``||phi - TARGET||^2`` (lower is better)."""
    return BlackBoxMetric(lambda model: float((model.phi.detach() - TARGET).square().sum()), "dist",
                          higher_is_better=False, takes="model")


#: Small budgets: a whole meta-training run takes a fraction of a second.
FINETUNE = FineTuneConfig(steps=10, evaluations=3, learning_rate=0.1, batch_size=32, value_weight=0.5, adapt_steps=2,
                          adapt_learning_rate=1e-2)
META = MetaConfig(tasks=5, warmup_tasks=2, replay=2, inner_steps=3, inner_learning_rate=1e-2, meta_step=0.5,
                  hidden_sizes=(16,), checkpoint_every=2, seed=0)


def _meta_train(adapter, pool, metric=None, **options) -> MetaResult:
    options.setdefault("finetune_config", FINETUNE)
    options.setdefault("config", META)
    return meta_train(adapter, LOSS, metric if metric is not None else make_metric("aucpr"), pool, **options)


def _assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


#: History columns that hold wall-clock time: equal runs differ there.
TIME_COLUMNS = ("collect_seconds", "update_seconds")


def _assert_rows_equal(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if key in TIME_COLUMNS:
                assert x[key] >= 0 and y[key] >= 0, key
                continue
            assert x[key] == y[key] or (math.isnan(x[key]) and math.isnan(y[key])), key


def _assert_trajectories_equal(a: list[Trajectory], b: list[Trajectory]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.phi_matrix(), y.phi_matrix())
        assert x.losses == y.losses and x.observed_steps == y.observed_steps and x.observed_costs == y.observed_costs


def _quadratic_trajectory(start: torch.Tensor, end: torch.Tensor, points: int = 21, observed=(0, 5, 10, 15, 20)):
    """A straight run from ``start`` to ``end`` whose cost is the synthetic ``||phi - TARGET||^2``."""
    trajectory = Trajectory()
    for t in range(points):
        trajectory.record(start + (end - start) * t / (points - 1))
    for step in observed:
        trajectory.observe(step, float((trajectory.phis[step] - TARGET).square().sum()))
    return trajectory


def _descent_cosines(value: ValueFunction, points: torch.Tensor) -> torch.Tensor:
    """Cosine between -grad_phi f_w(phi) and the direction to the optimum TARGET, per point."""
    points = points.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(value(points).sum(), points)
    return F.cosine_similarity(-gradient, TARGET - points.detach(), dim=1)


# ---------------------------------------------------------------- adaptation


def test_trajectory_targets_are_in_normalised_units():
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.ones(PHI_SIZE))
    value = ValueFunction(PHI_SIZE, hidden_sizes=(8,))
    value.set_normalisation(2.0, 0.5)
    phis, mean, std = trajectory_targets(value, trajectory)
    curve = trajectory.curve()
    assert torch.equal(phis, trajectory.phi_matrix())
    torch.testing.assert_close(mean, torch.as_tensor((curve.mean - 2.0) / 0.5, dtype=torch.float32))
    torch.testing.assert_close(std, torch.as_tensor(curve.std / 0.5, dtype=torch.float32))


def test_adapt_value_lowers_the_value_loss_in_place():
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.tensor([2.0, -2.0, 0.0, 1.0]))
    value = ValueFunction(PHI_SIZE, hidden_sizes=(16,))
    value.set_normalisation(1.5, 1.0)
    before = copy.deepcopy(value.state_dict())
    start = adapt_value(value, trajectory, steps=0)
    _assert_state_equal(before, value.state_dict())  # steps=0 only evaluates
    phis, mean, std = trajectory_targets(value, trajectory)
    with torch.no_grad():
        assert start == pytest.approx(float(value_loss(value(phis), mean, std)))
    adapt_value(value, trajectory, steps=50, learning_rate=1e-2)
    assert adapt_value(value, trajectory, steps=0) < 0.7 * start
    assert not torch.equal(before["network.0.weight"], value.state_dict()["network.0.weight"])
    _assert_state_equal({k: before[k] for k in ("target_offset", "target_scale")},
                        {k: value.state_dict()[k] for k in ("target_offset", "target_scale")})


def test_adapt_value_is_deterministic_and_leaves_grads_clean():
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.ones(PHI_SIZE))
    a, b = ValueFunction(PHI_SIZE, hidden_sizes=(8,)), ValueFunction(PHI_SIZE, hidden_sizes=(8,))
    assert adapt_value(a, trajectory, steps=5) == adapt_value(b, trajectory, steps=5)
    _assert_state_equal(a.state_dict(), b.state_dict())


@pytest.mark.parametrize(("options", "match"), [({"steps": -1}, "`steps`"), ({"steps": 1.5}, "`steps`"),
                                                ({"learning_rate": 0.0}, "`learning_rate`")])
def test_adapt_value_errors(options, match):
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.ones(PHI_SIZE))
    with pytest.raises(ValueError, match=match):
        adapt_value(ValueFunction(PHI_SIZE, hidden_sizes=(8,)), trajectory, **options)


def test_adapt_value_needs_two_observations():
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.ones(PHI_SIZE), observed=(0,))
    with pytest.raises(ValueError, match="at least 2 observations"):
        adapt_value(ValueFunction(PHI_SIZE, hidden_sizes=(8,)), trajectory)


def test_meta_trained_value_points_toward_the_optimum_of_a_known_cost(adapter, pool):
    """Meta-train on the synthetic metric ||phi - a||^2, adapt to a new task: -grad f_w points toward a.

    Thresholds: for a direction unrelated to ``a`` the cosine in 4-D has mean 0 and a
    standard deviation of 1/2 per point. Points of one trajectory are correlated, so
    count about one independent point per trajectory: over the 8 meta-training
    trajectories a mean of 0.5 is ~2.8 standard errors (0.5 / sqrt(8)) above chance,
    and >= 90 % of points with a positive cosine means all 8 trajectories, a 2^-8 (0.4 %)
    event by chance. Over the new task's trajectory (points close together) the
    adapted value must do better, 0.7. Measured for MetaConfig seeds 0-5: mean over
    the meta-training points 0.54-0.89 (seed 0: 0.75), positive fraction 0.93-1.0,
    adapted on the new task 0.85-0.89 and still 0.60-0.92 on the old points.
    """
    metric = _distance_metric()
    finetune_config = FineTuneConfig(steps=20, evaluations=5, learning_rate=0.05, batch_size=32, value_weight=0.5,
                                     adapt_steps=0)
    config = MetaConfig(tasks=8, warmup_tasks=3, replay=10, inner_steps=10, inner_learning_rate=1e-2, meta_step=0.5,
                        hidden_sizes=(32,), checkpoint_every=100, seed=0)
    result = meta_train(adapter, LOSS, metric, pool, finetune_config=finetune_config, config=config,
                        distribution=TaskDistribution(initial_phi_std=2.0))
    seen = torch.cat([t.phi_matrix() for t in result.trajectories])
    assert len(result.trajectories) == 8
    meta_cosines = _descent_cosines(result.value, seen)
    assert meta_cosines.mean() > 0.5 and (meta_cosines > 0).float().mean() >= 0.9
    # A new task from an unseen start: adapt a copy to its trajectory (what fine-tuning does online).
    run = finetune(adapter, LOSS, metric, pool, config=finetune_config,
                   initial_phi=torch.tensor([-1.0, 1.0, 1.0, -0.5]))
    adapted = copy.deepcopy(result.value)
    adapt_value(adapted, run.trajectory, steps=20, learning_rate=1e-2)
    assert _descent_cosines(adapted, run.trajectory.phi_matrix()).mean() > 0.7
    assert _descent_cosines(adapted, seen).mean() > 0.5  # adapting to one task did not erase the rest


def test_joint_fit_points_toward_the_optimum_of_a_known_cost(adapter, pool):
    """``fit="joint"``: the same synthetic metric and thresholds as the Reptile test above."""
    metric = _distance_metric()
    finetune_config = FineTuneConfig(steps=20, evaluations=5, learning_rate=0.05, batch_size=32, value_weight=0.5,
                                     adapt_steps=0)
    config = MetaConfig(tasks=8, warmup_tasks=3, fit="joint", joint_steps=50, inner_learning_rate=1e-2,
                        hidden_sizes=(32,), checkpoint_every=100, seed=0)
    result = meta_train(adapter, LOSS, metric, pool, finetune_config=finetune_config, config=config,
                        distribution=TaskDistribution(initial_phi_std=2.0))
    rows = result.history
    assert [row["joint_steps"] for row in rows] == [0.0, 0.0] + [50.0] * 6  # trained from the last warm-up task on
    assert all(row["reptile_iterations"] == 0.0 for row in rows)
    seen = torch.cat([t.phi_matrix() for t in result.trajectories])
    cosines = _descent_cosines(result.value, seen)
    assert cosines.mean() > 0.5 and (cosines > 0).float().mean() >= 0.9
    assert all(p.grad is None for p in result.value.parameters())
    # The fit is a regression on the observations: it predicts them better than their mean does.
    phis, costs = observed_points(result.value, result.trajectories)
    with torch.no_grad():
        error = (result.value(phis) - costs).square().mean()
    assert error < 0.25 * (costs - costs.mean()).square().mean()


def test_joint_fit_resumes_bitwise_with_its_optimizer_state(adapter, pool, tmp_path):
    config = dataclasses.replace(META, fit="joint", joint_steps=5)
    path = tmp_path / "joint.pt"
    uninterrupted = _meta_train(adapter, pool, config=config)
    with pytest.raises(KeyboardInterrupt):
        _meta_train(adapter, pool, config=config, checkpoint=path, progress=_Interrupt(after_task=2))
    state = torch.load(path, weights_only=True)
    assert state["next_task"] == 2 and state["joint_optimizer"]["state"]  # Adam moments saved mid-way
    resumed = _meta_train(adapter, pool, config=config, checkpoint=path)
    assert resumed.resumed_from == 2
    _assert_state_equal(uninterrupted.value.state_dict(), resumed.value.state_dict())
    _assert_rows_equal(uninterrupted.history, resumed.history)
    # A Reptile checkpoint is not resumed as a joint one.
    with pytest.raises(ValueError, match="fit"):
        _meta_train(adapter, pool, checkpoint=path)


# ---------------------------------------------------------------- Reptile


@pytest.mark.parametrize("meta_step", [0.25, 0.5, 1.0])
def test_reptile_moves_the_weights_toward_the_adapted_weights(meta_step):
    trajectory = _quadratic_trajectory(torch.zeros(PHI_SIZE), torch.tensor([2.0, -2.0, 0.0, 1.0]))
    config = MetaConfig(inner_steps=5, inner_learning_rate=1e-2, meta_step=meta_step, hidden_sizes=(16,))
    value = ValueFunction(PHI_SIZE, hidden_sizes=(16,), seed=1)
    value.set_normalisation(1.5, 1.0)
    before = copy.deepcopy(value)
    adapted = copy.deepcopy(value)  # w~: the same inner steps on a copy
    expected_loss = adapt_value(adapted, trajectory, steps=config.inner_steps, learning_rate=config.inner_learning_rate)

    loss = reptile_step(value, trajectory, config)

    assert loss == expected_loss

    @torch.no_grad()
    def distance(a: ValueFunction, b: ValueFunction) -> float:
        return float(torch.cat([(x - y).flatten() for x, y in zip(a.parameters(), b.parameters())]).norm())

    start = distance(before, adapted)
    assert start > 1e-3
    # w <- w + eta (w~ - w): the distance to w~ shrinks by exactly (1 - eta), parameter by parameter.
    assert distance(value, adapted) == pytest.approx((1 - meta_step) * start, rel=1e-4, abs=1e-6)
    for w, w0, w1 in zip(value.parameters(), before.parameters(), adapted.parameters()):
        torch.testing.assert_close(w.detach(), w0 + meta_step * (w1 - w0), rtol=1e-5, atol=1e-7)
        assert w.grad is None
    # The normalisation buffers are not interpolated.
    assert float(value.target_offset) == 1.5 and float(value.target_scale) == 1.0


# ---------------------------------------------------------------- meta_train


def test_meta_train_history_and_normalisation(reference):
    result = reference
    assert isinstance(result, MetaResult) and result.resumed_from is None
    assert len(result.history) == META.tasks == len(result.trajectories)
    assert [row["task"] for row in result.history] == [float(i) for i in range(META.tasks)]
    for index, row in enumerate(result.history):
        trajectory = result.trajectories[index]
        assert row["start_cost"] == trajectory.observed_costs[0]
        assert row["final_cost"] == trajectory.observed_costs[-1]
        assert row["best_cost"] == min(trajectory.observed_costs)
        if index < META.warmup_tasks:
            assert row["value_weight"] == 0.0  # warm-up runs are loss-only
        else:
            low, high = TaskDistribution().value_weight
            assert low * FINETUNE.value_weight <= row["value_weight"] <= high * FINETUNE.value_weight
        if index < META.warmup_tasks - 1:
            assert math.isnan(row["value_loss"]) and row["reptile_iterations"] == 0.0
        else:
            assert math.isfinite(row["value_loss"]) and row["reptile_iterations"] == 1 + META.replay
    # The warm-up runs fix the normalisation: mean and spread of their observed costs.
    costs = np.concatenate([t.observed_costs for t in result.trajectories[: META.warmup_tasks]])
    assert float(result.value.target_offset) == pytest.approx(costs.mean(), rel=1e-6)
    assert float(result.value.target_scale) == pytest.approx(max(costs.std(), 0.1 * abs(costs.mean())), rel=1e-6)
    assert result.value.phi_size == PHI_SIZE and result.value.hidden_sizes == META.hidden_sizes


def test_meta_train_is_deterministic(adapter, pool, reference):
    state = torch.random.get_rng_state()
    a = reference
    b = _meta_train(adapter, pool)
    assert torch.equal(state, torch.random.get_rng_state())  # never the global RNG
    _assert_state_equal(a.value.state_dict(), b.value.state_dict())
    _assert_rows_equal(a.history, b.history)
    _assert_trajectories_equal(a.trajectories, b.trajectories)
    c = _meta_train(adapter, pool, config=MetaConfig(**{**_plain(META), "seed": 1}))
    assert not torch.equal(a.value.state_dict()["network.0.weight"], c.value.state_dict()["network.0.weight"])


def _plain(config: MetaConfig) -> dict:
    return {k: getattr(config, k) for k in config.__dataclass_fields__}


def test_meta_train_leaves_the_backbone_frozen(adapter, pool):
    before = {k: v.clone() for k, v in adapter.backbone.state_dict().items()}
    _meta_train(adapter, pool)
    _assert_state_equal(before, adapter.backbone.state_dict())


class _Interrupt:
    """A progress callback that raises KeyboardInterrupt after the given task (a simulated kill)."""

    def __init__(self, after_task: int) -> None:
        self.after_task, self.rows = after_task, []

    def __call__(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if row["task"] == self.after_task:
            raise KeyboardInterrupt


def test_resume_after_a_kill_matches_an_uninterrupted_run(adapter, pool, tmp_path, reference):
    path = tmp_path / "meta.pt"
    uninterrupted = reference
    # Killed after the third task (index 2); the last checkpoint (every 2 tasks) holds tasks 0-1.
    killer = _Interrupt(after_task=2)
    with pytest.raises(KeyboardInterrupt):
        _meta_train(adapter, pool, checkpoint=path, progress=killer)
    assert len(killer.rows) == 3
    state = torch.load(path, weights_only=True)
    assert state["next_task"] == 2 and len(state["history"]) == 2
    assert not path.with_name(path.name + ".partial").exists()

    rows = []
    resumed = _meta_train(adapter, pool, checkpoint=path, progress=rows.append)
    assert resumed.resumed_from == 2
    assert [row["task"] for row in rows] == [2.0, 3.0, 4.0]  # only the remaining tasks run
    _assert_state_equal(uninterrupted.value.state_dict(), resumed.value.state_dict())  # bitwise
    _assert_rows_equal(uninterrupted.history, resumed.history)
    _assert_trajectories_equal(uninterrupted.trajectories, resumed.trajectories)
    # The final checkpoint holds the final weights.
    final = torch.load(path, weights_only=True)
    assert final["next_task"] == META.tasks
    _assert_state_equal(final["value_state"], uninterrupted.value.state_dict())


@pytest.mark.parametrize(("after_task", "resumed_from"), [(0, None), (1, 2), (3, 4)])
def test_resume_after_a_kill_elsewhere(adapter, pool, tmp_path, reference, after_task, resumed_from):
    # Task 0: before the first checkpoint (a fresh start); task 1 and 3: right after one was written
    # (task 1 is the last warm-up task: the normalisation is set and must be restored).
    path = tmp_path / "meta.pt"
    uninterrupted = reference
    with pytest.raises(KeyboardInterrupt):
        _meta_train(adapter, pool, checkpoint=path, progress=_Interrupt(after_task))
    assert path.exists() == (resumed_from is not None)
    resumed = _meta_train(adapter, pool, checkpoint=path)
    assert resumed.resumed_from == resumed_from
    _assert_state_equal(uninterrupted.value.state_dict(), resumed.value.state_dict())
    _assert_rows_equal(uninterrupted.history, resumed.history)


def test_resume_from_a_finished_run_does_nothing(adapter, pool, tmp_path, reference_run):
    first, finished = reference_run
    path = shutil.copy(finished, tmp_path / "meta.pt")
    rows = []
    again = _meta_train(adapter, pool, checkpoint=path, progress=rows.append)
    assert again.resumed_from == META.tasks and rows == []
    _assert_state_equal(first.value.state_dict(), again.value.state_dict())
    _assert_rows_equal(first.history, again.history)


def test_checkpoint_loads_weights_only(reference_run):
    result, path = reference_run
    state = torch.load(path, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["next_task"] == META.tasks
    assert state["value_config"] == {"phi_size": PHI_SIZE, "hidden_sizes": [16], "seed": 0}
    _assert_state_equal(state["value_state"], result.value.state_dict())
    assert len(state["trajectories"]) == META.tasks
    restored = [Trajectory.from_state(s) for s in state["trajectories"]]
    _assert_trajectories_equal(restored, result.trajectories)
    _assert_rows_equal(state["history"], result.history)
    assert not path.with_name(path.name + ".partial").exists()


def test_load_value_round_trip(reference_run):
    result, path = reference_run
    value = load_value(path)
    assert isinstance(value, ValueFunction) and value.config() == result.value.config()
    _assert_state_equal(value.state_dict(), result.value.state_dict())
    phi = torch.randn(3, PHI_SIZE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(value.predict_cost(phi), result.value.predict_cost(phi))
    _assert_state_equal(load_value(str(path)).state_dict(), value.state_dict())  # a string path works too


def test_load_value_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"`path` .*other\.pt.* is not a .*checkpoint"):
        load_value(path)


@pytest.mark.parametrize(
    "change",
    [
        {"config": MetaConfig(**{**_plain(META), "inner_steps": 4})},
        {"finetune_config": FineTuneConfig(**{**_plain(FINETUNE), "steps": 11})},
        {"distribution": TaskDistribution(class_balance=2.0)},
    ],
)
def test_checkpoint_with_other_settings(adapter, pool, tmp_path, reference_run, change):
    path = shutil.copy(reference_run[1], tmp_path / "meta.pt")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="different settings; pass resume=False"):
        _meta_train(adapter, pool, checkpoint=path, **change)
    assert path.read_bytes() == before  # the refused checkpoint is left alone


def test_resume_false_overwrites_a_checkpoint_with_other_settings(adapter, pool, tmp_path):
    path = tmp_path / "meta.pt"
    with pytest.raises(KeyboardInterrupt):
        _meta_train(adapter, pool, checkpoint=path, progress=_Interrupt(after_task=2))
    change = MetaConfig(**{**_plain(META), "tasks": 3})
    with pytest.raises(ValueError, match="different settings"):
        _meta_train(adapter, pool, checkpoint=path, config=change)
    result = _meta_train(adapter, pool, checkpoint=path, config=change, resume=False)
    assert result.resumed_from is None and len(result.history) == 3
    assert torch.load(path, weights_only=True)["next_task"] == 3
    _assert_state_equal(load_value(path).state_dict(), result.value.state_dict())


def test_resume_false_ignores_a_matching_checkpoint(adapter, pool, tmp_path):
    path = tmp_path / "meta.pt"
    with pytest.raises(KeyboardInterrupt):
        _meta_train(adapter, pool, checkpoint=path, progress=_Interrupt(after_task=2))
    rows = []
    result = _meta_train(adapter, pool, checkpoint=path, resume=False, progress=rows.append)
    assert result.resumed_from is None and len(rows) == META.tasks


def test_checkpoint_path_holding_something_else(adapter, pool, tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"`checkpoint` .*meta\.pt.* is not a .*checkpoint"):
        _meta_train(adapter, pool, checkpoint=path)


def _flip_a_tensor_byte(data: bytes, path: Path) -> bytes:
    """``data`` (a torch.save archive) with one byte of its first tensor's storage inverted."""
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename)
    flipped = bytearray(data)
    header = member.header_offset  # the local header: 30 bytes, then the name and the extra field
    name_length = int.from_bytes(data[header + 26:header + 28], "little")
    extra_length = int.from_bytes(data[header + 28:header + 30], "little")
    flipped[header + 30 + name_length + extra_length] ^= 0xFF
    return bytes(flipped)


#: name -> (how to damage a good checkpoint's bytes, what the error must say). Each raised a raw
#: EOFError, RuntimeError (miniz), UnpicklingError or KeyError naming no file, or loaded a wrong weight.
CORRUPTIONS = {
    "empty": (lambda data, path: b"", "is empty"),
    "truncated_half": (lambda data, path: data[: len(data) // 2], "is truncated or corrupt"),
    "cut_tail": (lambda data, path: data[:-7], "is truncated or corrupt"),
    "flipped_tensor_byte": (_flip_a_tensor_byte, "is truncated or corrupt .*fails its CRC check"),
    "csv_text": (lambda data, path: b"phi,cost\n0,1\n", "is not a metricopt checkpoint: it is not a file written by "
                                                         "torch.save"),
    "random_bytes": (lambda data, path: bytes(range(256)) * 4, "is not a metricopt checkpoint: it is not a file "
                                                                "written by torch.save"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_checkpoint_files_raise_an_error_naming_the_file(tmp_path, reference_run, corruption):
    damage, message = CORRUPTIONS[corruption]
    good = reference_run[1]
    path = tmp_path / "meta.pt"
    path.write_bytes(damage(good.read_bytes(), good))
    with pytest.raises(CheckpointError, match=f"`path` {re.escape(repr(str(path)))} {message}") as caught:
        load_value(path)
    assert isinstance(caught.value, ValueError)  # documented: a ValueError subclass


def _save(path: Path, state) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("state, message", [
    ({"format": CHECKPOINT_FORMAT, "value_config": {"phi_size": 4}, "value_state": {}, "x": fractions.Fraction(1, 2)},
     "holds objects other than tensors and plain values"),
    ({"format": "metricopt.blackbox.meta/2"}, "of format 'metricopt.blackbox.meta/2', which this version"),
    ({"format": "metricopt.blackbox.learned/1"}, "is a metricopt learned-optimizer checkpoint, not a meta-training "
                                                  "checkpoint \\(load it with load_learned\\)"),
    ({"format": CHECKPOINT_FORMAT}, "is a damaged .* it lacks value_config, value_state"),
    ({"format": CHECKPOINT_FORMAT, "value_config": {"phi_size": 4, "hidden_sizes": [16], "seed": 0},
      "value_state": ValueFunction(5, hidden_sizes=(16,)).state_dict()}, "is a damaged .*size mismatch"),
    ([1, 2, 3], "is not a metricopt meta-training checkpoint"),
])
def test_checkpoints_of_another_kind_raise_an_error_saying_what_they_are(tmp_path, state, message):
    path = _save(tmp_path / "value.pt", state)
    with pytest.raises(CheckpointError, match=f"`path` {re.escape(repr(str(path)))} .*{message}"):
        load_value(path)


def test_missing_checkpoint_and_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(tmp_path / "none.pt"))) + " does not exist"):
        load_value(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_value(tmp_path)


def test_resuming_a_damaged_checkpoint_names_it_and_resume_false_starts_over(adapter, pool, tmp_path, reference_run):
    path = tmp_path / "meta.pt"
    path.write_bytes(reference_run[1].read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"`checkpoint` {re.escape(repr(str(path)))} is truncated or corrupt"
                                              ".*pass resume=False to overwrite it"):
        _meta_train(adapter, pool, checkpoint=path)
    result = _meta_train(adapter, pool, checkpoint=path, resume=False)
    assert result.resumed_from is None
    _assert_state_equal(load_value(path).state_dict(), result.value.state_dict())


class _FlakyAucpr:
    """aucpr, but NaN on every third call."""

    def __init__(self) -> None:
        self.calls = 0
        self.metric = make_metric("aucpr")

    def __call__(self, y_true, y_score) -> float:
        self.calls += 1
        return math.nan if self.calls % 3 == 0 else self.metric.function(y_true, y_score)


def test_failing_metric_never_reaches_the_checkpoint(adapter, pool, tmp_path):
    path = tmp_path / "meta.pt"
    flaky = _FlakyAucpr()
    metric = BlackBoxMetric(flaky, "flaky-aucpr", higher_is_better=True)
    finetune_config = FineTuneConfig(**{**_plain(FINETUNE), "evaluations": 4, "on_error": "warn"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _meta_train(adapter, pool, metric, finetune_config=finetune_config, checkpoint=path)
    failures = [w for w in caught if issubclass(w.category, RuntimeWarning) and "flaky-aucpr" in str(w.message)]
    assert len(failures) == flaky.calls // 3 >= 5
    state = torch.load(path, weights_only=True)
    for key, tensor in state["value_state"].items():
        assert torch.isfinite(tensor).all(), key
    for trajectory in state["trajectories"]:
        for key, tensor in trajectory.items():
            assert torch.isfinite(tensor).all(), key
        assert 2 <= len(trajectory["observed_steps"]) <= 4
    assert sum(4 - len(t["observed_steps"]) for t in state["trajectories"]) == len(failures)
    # History: the only NaNs are the documented "no value loss yet" of the warm-up rows before the last and
    # the rank correlation of a run with fewer than 3 observations or before the value function first trained.
    for row in state["history"]:
        for key, number in row.items():
            if key == "value_loss" and row["task"] < META.warmup_tasks - 1:
                assert math.isnan(number)
            elif key == "rank_correlation":
                assert math.isnan(number) or -1 <= number <= 1, key
            else:
                assert math.isfinite(number), key
    assert all(torch.isfinite(p).all() for p in result.value.parameters())


class _FailFirst:
    """aucpr, but NaN on the first ``count`` calls."""

    def __init__(self, count: int) -> None:
        self.count, self.calls = count, 0
        self.metric = make_metric("aucpr")

    def __call__(self, y_true, y_score) -> float:
        self.calls += 1
        return math.nan if self.calls <= self.count else self.metric.function(y_true, y_score)


def test_failed_warmup_delays_the_normalisation(adapter, pool):
    # Every evaluation of the 2 warm-up tasks fails (2 x 3 calls): no trajectory until task 2,
    # which then fixes the normalisation and starts Reptile.
    metric = BlackBoxMetric(_FailFirst(2 * FINETUNE.evaluations), "late", higher_is_better=True)
    finetune_config = FineTuneConfig(**{**_plain(FINETUNE), "on_error": "warn"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _meta_train(adapter, pool, metric, finetune_config=finetune_config)
    assert len(result.trajectories) == META.tasks - 2
    assert [row["reptile_iterations"] for row in result.history] == [0.0, 0.0] + [1.0 + META.replay] * 3
    assert all(math.isnan(row["start_cost"]) for row in result.history[:2])
    costs = np.asarray(result.trajectories[0].observed_costs)
    assert float(result.value.target_offset) == pytest.approx(costs.mean(), rel=1e-6)
    assert float(result.value.target_scale) == pytest.approx(max(costs.std(), 0.1 * abs(costs.mean())), rel=1e-6)
    assert all(torch.isfinite(t).all() for t in result.value.state_dict().values())


def test_failing_metric_raises_by_default(adapter, pool):
    metric = BlackBoxMetric(_FlakyAucpr(), "flaky-aucpr", higher_is_better=True)
    with pytest.raises(MetricError, match="metric 'flaky-aucpr' returned nan"):
        _meta_train(adapter, pool, metric)


def test_every_warmup_observation_failing_gives_a_clear_error(adapter, pool):
    metric = BlackBoxMetric(lambda model: math.nan, "never", higher_is_better=False, takes="model")
    finetune_config = FineTuneConfig(**{**_plain(FINETUNE), "on_error": "warn"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, MetricError), match="(?i)observ|warm"):
            _meta_train(adapter, pool, metric, finetune_config=finetune_config)


def test_meta_train_rejects_a_plain_module(pool):
    with pytest.raises(TypeError, match="`adapter` must be a metricopt.blackbox Adapter; got Sequential"):
        meta_train(_backbone(), LOSS, make_metric("aucpr"), pool, finetune_config=FINETUNE, config=META)


# ---------------------------------------------------------------- TaskDistribution


def _labels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(200, generator=generator) < 0.4).long()


def _same_task(a, b) -> bool:
    return (a.index == b.index and torch.equal(a.indices, b.indices) and torch.equal(a.initial_phi, b.initial_phi)
            and a.learning_rate_factor == b.learning_rate_factor and a.value_weight_factor == b.value_weight_factor
            and a.seed == b.seed)


def test_sample_is_determined_by_seed_and_index():
    distribution = TaskDistribution()
    labels = _labels()

    def sample(index, seed=0):
        return distribution.sample(index, seed=seed, labels=labels, phi_size=PHI_SIZE, guided=True)

    first = [sample(i) for i in range(4)]
    torch.manual_seed(123)  # the global RNG plays no part
    state = torch.random.get_rng_state()
    again = [sample(i) for i in reversed(range(4))][::-1]  # order of calls plays no part
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(_same_task(a, b) for a, b in zip(first, again))
    assert not _same_task(first[0], first[1])
    assert not torch.equal(first[0].indices, first[1].indices)
    other = sample(0, seed=1)
    assert not torch.equal(first[0].indices, other.indices) and first[0].seed != other.seed


def test_sample_ranges():
    distribution = TaskDistribution(subset=(0.3, 0.6), learning_rate=(0.5, 2.0), initial_phi_std=0.5,
                                    value_weight=(0.2, 1.0))
    labels = _labels()
    for index in range(20):
        task = distribution.sample(index, seed=3, labels=labels, phi_size=PHI_SIZE, guided=index % 2 == 0)
        assert task.index == index
        assert task.indices.dtype == torch.int64 and (task.indices[1:] >= task.indices[:-1]).all()
        assert 0 <= int(task.indices.min()) and int(task.indices.max()) < len(labels)
        assert round(0.3 * 200) <= len(task.indices) <= round(0.6 * 200)
        assert 0.5 <= task.learning_rate_factor <= 2.0
        assert task.initial_phi.shape == (PHI_SIZE,) and task.initial_phi.abs().max() < 0.5 * 6
        if index % 2 == 0:
            assert 0.2 <= task.value_weight_factor <= 1.0
        else:
            assert task.value_weight_factor == 0.0
        assert 0 <= task.seed < 2**31 - 1


def test_sample_zero_initial_phi_std_starts_at_the_pretrained_model():
    task = TaskDistribution(initial_phi_std=0.0).sample(0, seed=0, labels=_labels(), phi_size=PHI_SIZE, guided=False)
    assert torch.equal(task.initial_phi, torch.zeros(PHI_SIZE))


def test_class_balance_varies_the_class_mix():
    labels = _labels()
    pool_fraction = float(labels.float().mean())

    def positive_fractions(class_balance: float) -> np.ndarray:
        distribution = TaskDistribution(subset=(1.0, 1.0), class_balance=class_balance)
        tasks = [distribution.sample(i, seed=0, labels=labels, phi_size=PHI_SIZE, guided=False) for i in range(40)]
        return np.array([float(labels[t.indices].float().mean()) for t in tasks])

    even = positive_fractions(1.0)
    skewed = positive_fractions(20.0)
    # class_balance = 1: every row equally likely, the pool's mix up to sampling noise
    # (binomial sd sqrt(0.4 * 0.6 / 200) ~ 0.035).
    assert abs(even.mean() - pool_fraction) < 0.03 and even.std() < 0.06
    # class_balance = 20: per-class weights in [1/20, 20] give mixes far from the pool's.
    assert skewed.std() > 3 * even.std()
    assert skewed.min() < 0.15 and skewed.max() > 0.75


def test_sample_multiclass_labels():
    labels = torch.arange(150) % 3
    task = TaskDistribution(class_balance=4.0).sample(0, seed=0, labels=labels, phi_size=PHI_SIZE, guided=False)
    assert set(labels[task.indices].tolist()) <= {0, 1, 2} and len(task.indices) >= 2


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"tasks": 0}, ValueError, "`tasks`"),
        ({"warmup_tasks": 0}, ValueError, "`warmup_tasks`"),
        ({"replay": -1}, ValueError, "`replay`"),
        ({"inner_steps": 0}, ValueError, "`inner_steps`"),
        ({"inner_learning_rate": 0.0}, ValueError, "`inner_learning_rate`"),
        ({"meta_step": 0.0}, ValueError, r"`meta_step` must lie in \(0, 1\]; got 0.0"),
        ({"meta_step": 1.5}, ValueError, "`meta_step`"),
        ({"checkpoint_every": 0}, ValueError, "`checkpoint_every`"),
        ({"tasks": 2.0}, ValueError, "`tasks`"),
    ],
)
def test_meta_config_errors(options, error, match):
    with pytest.raises(error, match=match):
        MetaConfig(**options)


def test_meta_config_rejects_more_warmup_than_tasks():
    # Otherwise meta_train would never run a Reptile step and return the initial weights.
    with pytest.raises(ValueError, match=r"`warmup_tasks` \(4\) must not exceed `tasks` \(3\)"):
        MetaConfig(tasks=3)
    MetaConfig(tasks=4)  # equal is fine: the last warm-up task starts Reptile


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"subset": (0.0, 1.0)}, ValueError, r"`subset` fractions must lie in \(0, 1\]"),
        ({"subset": (0.5, 1.5)}, ValueError, "`subset`"),
        ({"subset": (0.8, 0.2)}, ValueError, "`subset`"),
        ({"subset": "ab"}, TypeError, r"`subset` must be a pair \(low, high\)"),
        ({"subset": (0.5,)}, TypeError, "`subset`"),
        ({"class_balance": 0.5}, ValueError, "`class_balance` must be >= 1"),
        ({"class_balance": 0.0}, ValueError, "`class_balance`"),
        ({"learning_rate": (0.0, 1.0)}, ValueError, "`learning_rate` factors must be > 0"),
        ({"learning_rate": (2.0, 1.0)}, ValueError, "`learning_rate`"),
        ({"initial_phi_std": -1.0}, ValueError, "`initial_phi_std`"),
        ({"value_weight": (-1.0, 1.0)}, ValueError, "`value_weight`"),
        ({"value_weight": (0.0, math.inf)}, ValueError, "`value_weight`"),
    ],
)
def test_task_distribution_errors(options, error, match):
    with pytest.raises(error, match=match):
        TaskDistribution(**options)
