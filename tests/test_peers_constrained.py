"""Tests for the constrained-metric peers (benchmarks.peers.constrained); each skips when its library is missing."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.peers.constrained import (
    CONSTRAINED_PEERS,
    RATES,
    alert_fraction,
    constrained_peer_status,
    constrained_peer_versions,
    make_constrained_peer,
    make_constrained_peer_optimizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Which constraint each peer applies to (the module docstring's decision, restated so a change shows up here).
APPLIES = {
    "libauc_pauc": {"fpr"},
    "libauc_pauc_kl": {"fpr"},
    "il_pauc_budget": {"fpr"},
    "il_recall_quantile": {"fpr", "precision"},
}
LEVEL = {"fpr": 0.1, "precision": 0.5}
APPLICABLE = [(name, rate) for name, rates in APPLIES.items() for rate in sorted(rates)]


def _require(name: str) -> None:
    status = constrained_peer_status(name)
    if status != "ok":
        pytest.skip(status)


def _batch(seed: int, n: int = 64, positives: int = 16, data_len: int = 256):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator)
    target = torch.zeros(n)
    target[torch.randperm(n, generator=generator)[:positives]] = 1.0
    index = torch.randperm(data_len, generator=generator)[:n]
    return logits, target, index


def _tpr_at_fpr(scores: torch.Tensor, target: torch.Tensor, budget: float) -> float:
    """Exact TPR of the best threshold ``score > t`` with FPR <= ``budget`` (ties count against the threshold)."""
    negatives = scores[target == 0].sort(descending=True).values
    allowed = math.floor(budget * len(negatives))
    if allowed >= len(negatives):
        return 1.0
    return float((scores[target == 1] > negatives[allowed]).double().mean())


def _separable(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 separates the classes (|x0| in [0.5, 1.5], sign = class); feature 1 is noise of scale 2."""
    target = (torch.rand(n, generator=generator) < 0.25).float()
    signal = (2 * target - 1) * (0.5 + torch.rand(n, generator=generator))
    noise = 2 * torch.randn(n, generator=generator)
    return torch.stack([signal, noise], 1), target


def _train(name: str, options: dict | None = None, steps: int = 200) -> tuple[float, float]:
    """TPR at FPR <= 0.1 on held-out data before and after Adam steps on a linear model that starts on the noise."""
    generator = torch.Generator().manual_seed(0)
    X, y = _separable(1024, generator)
    X_test, y_test = _separable(1000, generator)
    loss_fn = make_constrained_peer(name, rate="fpr", level=0.1, data_len=len(y), positive_rate=float(y.mean()),
                                    options=options)
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 1.0]]))
        model.bias.zero_()
    before = _tpr_at_fpr(model(X_test).squeeze(-1).detach(), y_test, 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        index = torch.randperm(len(y), generator=generator)[:256]
        loss = loss_fn(model(X[index]).squeeze(-1), y[index], index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, _tpr_at_fpr(model(X_test).squeeze(-1).detach(), y_test, 0.1)


def test_the_applicability_table_covers_every_peer_and_the_status_is_ok_or_why_not() -> None:
    assert set(APPLIES) == set(CONSTRAINED_PEERS)
    for name in CONSTRAINED_PEERS:
        status = constrained_peer_status(name)
        assert status == "ok" or status.startswith("not installed: ")
    assert set(constrained_peer_versions()) == set(CONSTRAINED_PEERS)
    with pytest.raises(ValueError, match="`name`"):
        constrained_peer_status("libauc")


@pytest.mark.parametrize(("name", "rate"), APPLICABLE)
def test_peer_gives_a_finite_loss_and_gradient(name: str, rate: str, device: torch.device) -> None:
    _require(name)
    logits, target, index = _batch(0)
    logits, target, index = logits.to(device).requires_grad_(True), target.to(device), index.to(device)
    loss_fn = make_constrained_peer(name, rate=rate, level=LEVEL[rate], data_len=256, positive_rate=0.25)
    loss = loss_fn(logits, target, index)
    assert loss.shape == () and loss.device == logits.device
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert float(logits.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", CONSTRAINED_PEERS)
@pytest.mark.parametrize("rate", RATES)
def test_peer_is_none_exactly_where_it_does_not_apply(name: str, rate: str) -> None:
    built = make_constrained_peer(name, rate=rate, level=LEVEL[rate], data_len=256, positive_rate=0.25)
    if rate not in APPLIES[name]:
        assert built is None
    elif constrained_peer_status(name) == "ok":
        assert built is not None
    else:
        assert built is None


def test_levels_map_onto_each_peers_own_budget_and_ddp_gathering_is_off() -> None:
    _require("libauc_pauc")
    _require("il_pauc_budget")
    cvar = make_constrained_peer("libauc_pauc", rate="fpr", level=0.05, data_len=100, positive_rate=0.2)
    assert cvar.loss.beta == 0.05 and cvar.loss.distributed is False and cvar.loss.data_len == 100
    assert make_constrained_peer("libauc_pauc_kl", rate="fpr", level=0.05, data_len=100,
                                 positive_rate=0.2).loss.distributed is False
    band = make_constrained_peer("il_pauc_budget", rate="fpr", level=0.05, data_len=100, positive_rate=0.2)
    assert (band.loss.alpha, band.loss.beta, band.loss.budget_basis) == (0.0, 0.05, "fpr")
    assert band.loss.gather_distributed is False
    for rate, level, quantile in (("fpr", 0.05, 0.2 + 0.8 * 0.05), ("precision", 0.8, 0.2 / 0.8)):
        recall = make_constrained_peer("il_recall_quantile", rate=rate, level=level, data_len=100, positive_rate=0.2)
        assert recall.loss.quantile == pytest.approx(quantile)
        assert recall.options["quantile"] == pytest.approx(alert_fraction(rate, level, 0.2))
        assert recall.loss.gather_distributed is False
        assert recall.options["queue_size"] == 1024 and recall.options["temperature"] == 0.01


@pytest.mark.parametrize("name", CONSTRAINED_PEERS)
def test_batches_with_one_class_give_finite_losses_and_without_positives_zero(name: str) -> None:
    _require(name)
    loss_fn = make_constrained_peer(name, rate="fpr", level=0.1, data_len=256, positive_rate=0.25)
    logits, _, index = _batch(1)
    logits.requires_grad_(True)
    loss = loss_fn(logits, torch.zeros(64), index)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0
    loss = loss_fn(logits, torch.ones(64), index)
    assert math.isfinite(float(loss.detach()))


@pytest.mark.parametrize("name", CONSTRAINED_PEERS)
def test_adam_steps_on_a_separable_problem_raise_tpr_at_fpr(name: str) -> None:
    _require(name)
    before, after = _train(name)
    assert after > before + 0.25, (before, after)


def test_options_reach_the_library_and_the_pairwise_band_separates_the_toy_problem() -> None:
    """At its defaults PAUCAtBudgetLoss (trapezoid) only pushes positives against detached thresholds; the
    pairwise surrogate also moves the band negatives and separates this problem."""
    _require("il_pauc_budget")
    built = make_constrained_peer("il_pauc_budget", rate="fpr", level=0.1, data_len=8, positive_rate=0.25,
                                  options={"surrogate": "pairwise"})
    assert built.loss.surrogate == "pairwise" and built.options["surrogate"] == "pairwise"
    assert _train("il_pauc_budget", {"surrogate": "pairwise"})[1] >= 0.95


def test_bad_arguments_raise_errors_naming_them() -> None:
    good = {"rate": "fpr", "level": 0.1, "data_len": 256, "positive_rate": 0.25}
    with pytest.raises(ValueError, match="`name`"):
        make_constrained_peer("pauc", **good)
    for key, value in (("rate", "recall"), ("level", 1.0), ("level", 0.0), ("data_len", 0), ("data_len", 2.5),
                       ("positive_rate", 0.0)):
        with pytest.raises(ValueError, match=f"`{key}`"):
            make_constrained_peer("il_recall_quantile", **{**good, key: value})
    with pytest.raises(ValueError, match="`level`.*`positive_rate`"):
        make_constrained_peer("il_recall_quantile", rate="precision", level=0.2, data_len=256, positive_rate=0.25)
    _require("il_recall_quantile")
    with pytest.raises(ValueError, match="`options`"):
        make_constrained_peer("il_recall_quantile", **good, options={"quantile": 0.5})
    with pytest.raises(ValueError, match="`options`"):
        make_constrained_peer("il_recall_quantile", **good, options={"gather_distributed": True})
    loss_fn = make_constrained_peer("il_recall_quantile", **good)
    logits, target, index = _batch(2)
    with pytest.raises(ValueError, match="`logits`"):
        loss_fn(logits.reshape(-1, 1), target, index)
    with pytest.raises(ValueError, match="`index`"):
        loss_fn(logits, target, index[:10])


def test_libauc_index_must_lie_in_the_training_set() -> None:
    _require("libauc_pauc")
    loss_fn = make_constrained_peer("libauc_pauc", rate="fpr", level=0.1, data_len=32, positive_rate=0.25)
    logits, target, index = _batch(3, data_len=256)
    with pytest.raises(ValueError, match="`index`.*data_len=32"):
        loss_fn(logits, target, index.clamp_min(32))


def test_libauc_own_optimisers_are_built_for_its_peers_only() -> None:
    _require("libauc_pauc")
    import libauc.optimizers

    model = torch.nn.Linear(2, 1)
    assert isinstance(make_constrained_peer_optimizer("libauc_pauc", model.parameters(), learning_rate=1e-3),
                      libauc.optimizers.SOPA)
    assert isinstance(make_constrained_peer_optimizer("libauc_pauc_kl", model.parameters(), learning_rate=1e-3),
                      libauc.optimizers.SOPAs)
    assert make_constrained_peer_optimizer("il_pauc_budget", model.parameters(), learning_rate=1e-3) is None
    with pytest.raises(ValueError, match="`learning_rate`"):
        make_constrained_peer_optimizer("libauc_pauc", model.parameters(), learning_rate=0.0)
