"""Tests for the optional rank-loss peers (benchmarks.peers.ranking); each skips when its peer is missing."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.peers import ranking as rank_peers
from benchmarks.peers.ranking import (
    AP_PEERS,
    RETRIEVAL_PEERS,
    make_ap_peer,
    make_retrieval_peer,
    rank_peer_status,
    rank_peer_versions,
)


def _require(name: str) -> None:
    status = rank_peer_status(name)
    if status != "ok":
        pytest.skip(status)


def _exact_ap(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """Average precision of one ranking (no ties in the test data)."""
    order = torch.argsort(scores, descending=True)
    hits = relevant[order].double()
    precision_at = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def _mean_retrieval_ap(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    normed = F.normalize(embeddings, dim=1)
    similarities = normed @ normed.T
    aps = []
    for query in range(len(labels)):
        others = torch.arange(len(labels)) != query
        aps.append(
            _exact_ap(similarities[query, others], labels[others] == labels[query])
        )
    return sum(aps) / len(aps)


def _descend(
    objective: Callable[[], torch.Tensor], parameter: torch.Tensor, steps: int = 100
) -> None:
    """Gradient descent with steps normalised by the largest gradient entry (peers' scales differ).

    (torch.optim is avoided: its first step imports for seconds.)
    """
    for _ in range(steps):
        parameter.grad = None
        objective().backward()
        with torch.no_grad():
            parameter -= (
                0.05 * parameter.grad / parameter.grad.abs().max().clamp_min(1e-30)
            )


def _ranking(seed: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.3).long()
    target[0] = 1
    return torch.randn(n, generator=generator), target


def _batch(
    seed: int, classes: int = 4, per_class: int = 4, dim: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    return torch.randn(len(labels), dim, generator=generator), labels


# ---------------------------------------------------------------------------
# AP peers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", AP_PEERS)
def test_ap_peer_gives_finite_scalar_and_gradient(
    name: str, dtype: torch.dtype
) -> None:
    _require(name)
    scores, target = _ranking(0)
    scores = scores.to(dtype).requires_grad_(True)
    loss = make_ap_peer(name, len(scores))(scores, target)
    assert loss.shape == ()
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert float(scores.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "name", [n for n in AP_PEERS if n != "libauc_ap"]
)  # LibAUC's value is a surrogate near 0
def test_ap_peer_value_falls_toward_perfect_ranking(name: str) -> None:
    _require(name)
    scores, target = _ranking(1)
    loss = make_ap_peer(name, len(scores))
    perfect = (target.float() - 0.5) * 4 + 0.01 * scores
    values = [
        float(loss(perfect * w + scores * (1 - w), target)) for w in (0.0, 0.5, 1.0)
    ]
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("name", AP_PEERS)
def test_ap_peer_gradient_steps_raise_exact_ap(name: str) -> None:
    _require(name)
    scores, target = _ranking(2)
    before = _exact_ap(scores, target == 1)
    scores.requires_grad_(True)
    loss = make_ap_peer(name, len(scores))
    torch.manual_seed(0)  # MapLoss draws its margin from the global RNG
    _descend(lambda: loss(scores, target), scores)
    assert _exact_ap(scores.detach(), target == 1) > before + 0.1


@pytest.mark.parametrize("name", AP_PEERS)
def test_ap_peer_without_positives_is_zero(name: str) -> None:
    _require(name)
    scores = torch.randn(10, requires_grad=True)
    loss = make_ap_peer(name, 10)(scores, torch.zeros(10, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(scores.grad.abs().sum()) == 0.0


def test_ap_peer_rejects_bad_input() -> None:
    _require("torchsort_ap")
    loss = make_ap_peer("torchsort_ap", 8)
    with pytest.raises(ValueError, match="scores"):
        loss(torch.randn(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="target"):
        loss(torch.randn(8), torch.ones(7))
    with pytest.raises(ValueError, match="0 and 1"):
        loss(torch.randn(8), torch.full((8,), 2))


def test_libauc_ap_rejects_more_items_than_n() -> None:
    _require("libauc_ap")
    with pytest.raises(ValueError, match="n=8"):
        make_ap_peer("libauc_ap", 8)(torch.randn(9), torch.ones(9))


def test_torchsort_ap_matches_exact_ap_at_small_strength() -> None:
    _require("torchsort_ap")
    scores, target = _ranking(3)
    loss = make_ap_peer("torchsort_ap", len(scores), regularization_strength=1e-4)
    assert 1.0 - float(loss(scores.double(), target)) == pytest.approx(
        _exact_ap(scores, target == 1), abs=1e-6
    )


# ---------------------------------------------------------------------------
# retrieval peers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", RETRIEVAL_PEERS)
def test_retrieval_peer_gives_finite_scalar_and_gradient(
    name: str, dtype: torch.dtype
) -> None:
    _require(name)
    embeddings, labels = _batch(0)
    embeddings = embeddings.to(dtype).requires_grad_(True)
    loss = make_retrieval_peer(name)(embeddings, labels)
    assert loss.shape == ()
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    assert float(embeddings.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", RETRIEVAL_PEERS)
def test_retrieval_peer_value_falls_when_classes_cluster(name: str) -> None:
    _require(name)
    embeddings, labels = _batch(1)
    clustered = F.one_hot(labels, embeddings.shape[1]).float() + 0.05 * embeddings
    loss = make_retrieval_peer(name)
    assert float(loss(clustered, labels)) < float(loss(embeddings, labels))


@pytest.mark.parametrize("name", RETRIEVAL_PEERS)
def test_retrieval_peer_gradient_steps_raise_mean_ap(name: str) -> None:
    _require(name)
    embeddings, labels = _batch(2)
    before = _mean_retrieval_ap(embeddings, labels)
    embeddings.requires_grad_(True)
    # RecallLoss's default lambda (0.5, the paper's detection value) hardly moves a 16-item batch.
    loss = make_retrieval_peer(
        name, **({"lambda_val": 4.0} if name == "bbb_recall" else {})
    )
    _descend(lambda: loss(embeddings, labels), embeddings)
    assert _mean_retrieval_ap(embeddings.detach(), labels) > before + 0.1


@pytest.mark.parametrize("name", ["torchsort_ap", "bbb_recall", "il_smoothap"])
def test_retrieval_peer_without_relevant_pairs_is_zero(name: str) -> None:
    _require(name)
    embeddings = torch.randn(6, 4, requires_grad=True)
    loss = make_retrieval_peer(name)(embeddings, torch.arange(6))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(embeddings.grad.abs().sum()) == 0.0


def _smooth_ap(scores: torch.Tensor, relevant: torch.Tensor, temperature: float) -> torch.Tensor:
    """Smooth-AP of one ranking (Brown et al. 2020, eq. 8), written out pair by pair."""
    aps = []
    for i in torch.nonzero(relevant).flatten().tolist():
        above = [torch.sigmoid((scores[j] - scores[i]) / temperature) for j in range(len(scores)) if j != i]
        above_relevant = [torch.sigmoid((scores[j] - scores[i]) / temperature)
                          for j in range(len(scores)) if j != i and bool(relevant[j])]
        aps.append((1 + sum(above_relevant)) / (1 + sum(above)))
    return torch.stack(aps).mean()


def test_imbalanced_losses_smoothap_is_mean_smooth_ap_over_queries() -> None:
    _require("il_smoothap")
    embeddings, labels = _batch(4, classes=3, per_class=3)
    labels = torch.cat([labels, torch.tensor([9])])  # a query without relevant items does not count
    embeddings = torch.cat([embeddings, torch.randn(1, embeddings.shape[1])])
    similarities = F.normalize(embeddings, dim=1) @ F.normalize(embeddings, dim=1).T
    expected = []
    for query in range(len(labels) - 1):
        others = torch.arange(len(labels)) != query
        expected.append(1 - _smooth_ap(similarities[query, others], labels[others] == labels[query], 0.05))
    loss = make_retrieval_peer("il_smoothap", temperature=0.05)(embeddings, labels)
    assert float(loss) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)


def test_smoothap_needs_as_many_classes_as_items_per_class() -> None:
    _require("pml_smoothap")
    loss = make_retrieval_peer("pml_smoothap")
    with pytest.raises(ValueError, match="as many classes as items per class"):
        loss(*_batch(0, classes=2, per_class=8))
    embeddings, labels = _batch(0)
    labels[0] = (labels[0] + 1) % 4  # unequal class sizes
    with pytest.raises(ValueError, match="class sizes"):
        loss(embeddings, labels)


def test_smoothap_does_not_depend_on_batch_order() -> None:
    _require("pml_smoothap")
    embeddings, labels = _batch(3, classes=3, per_class=3)
    loss = make_retrieval_peer("pml_smoothap")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    shifted = labels * 7 - 3  # negative, non-contiguous labels are fine
    assert float(loss(embeddings[order], shifted[order])) == pytest.approx(
        float(loss(embeddings, labels)), rel=1e-5
    )


def test_retrieval_peer_rejects_bad_input() -> None:
    _require("pml_contrastive")
    loss = make_retrieval_peer("pml_contrastive")
    with pytest.raises(ValueError, match="embeddings"):
        loss(torch.randn(8), torch.arange(8))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(8, 3), torch.zeros(8))


# ---------------------------------------------------------------------------
# names, options, status, versions


@pytest.mark.parametrize(
    "call", [rank_peer_status, lambda n: make_ap_peer(n, 8), make_retrieval_peer]
)
def test_unknown_peer_name_is_an_error(call) -> None:
    with pytest.raises(ValueError, match="no_such_peer"):
        call("no_such_peer")


def test_ap_only_and_retrieval_only_names_are_kept_apart() -> None:
    with pytest.raises(ValueError):
        make_ap_peer("pml_fastap", 8)
    with pytest.raises(ValueError):
        make_retrieval_peer("libauc_ap")


def test_unknown_option_and_bad_n_are_errors() -> None:
    with pytest.raises(ValueError, match="`n`"):
        make_ap_peer("torchsort_ap", 1)
    _require("torchsort_ap")
    with pytest.raises(TypeError, match="temperature"):
        make_ap_peer("torchsort_ap", 8, temperature=0.1)
    assert (
        make_retrieval_peer("torchsort_ap", regularization_strength=0.5).options[
            "regularization_strength"
        ]
        == 0.5
    )


def test_missing_blackbox_backprop_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rank_peers.BLACKBOX_BACKPROP_ENV, str(tmp_path / "absent"))
    for name in ("bbb_map", "bbb_recall"):
        assert rank_peer_status(name).startswith("not installed:")
        assert rank_peers.BLACKBOX_BACKPROP_ENV in rank_peer_status(name)
    with pytest.raises(ModuleNotFoundError):
        make_retrieval_peer("bbb_recall")
    assert rank_peer_versions()["blackbox-backprop"].startswith("not installed:")


def test_versions_name_every_backend() -> None:
    versions = rank_peer_versions()
    assert set(versions) == {
        "torchsort",
        "pytorch-metric-learning",
        "libauc",
        "imbalanced-losses",
        "blackbox-backprop",
    }
    assert all(isinstance(value, str) and value for value in versions.values())
