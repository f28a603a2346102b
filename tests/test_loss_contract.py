"""The loss contract (DESIGN.md section 5), written once as a table over every public loss.

What a real training loop relies on, checked for each loss and its main options:

* the gradient is linear in the loss (AMP's GradScaler, loss weights, accumulation);
* permuting the batch permutes the gradient and leaves the value alone;
* a few Adam steps from a zero-initialised head raise the exact metric, at score
  scales 0.01, 1 and 100;
* autocast (bfloat16) and half-precision inputs give the float32 result;
* ``torch.func.grad`` works and equals autograd;
* ``torch.compile`` equals eager (behind the ``slow`` marker: compiling takes
  seconds per loss);
* devices follow the inputs (the ``device`` fixture: cpu, and cuda when present).

That no loss all-gathers where no gradient can flow (a validation step on one
process) is checked with real processes in tests/test_distributed.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, ndcg_score, roc_auc_score
from torch import Tensor

from metricopt.losses import (
    APLoss,
    AUROCLoss,
    ConfusionLoss,
    FocalLoss,
    NDCGLoss,
    RecallLoss,
    cross_entropy_loss,
    recall_loss_scores,
)
from metricopt.metrics import retrieval_report
from metricopt.metrics.constrained import best_threshold

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Case:
    """One loss under the contract: how to build it, its inputs, and the exact metric it serves."""

    name: str
    make: Callable[[], Callable[[Tensor, Tensor], Tensor]]
    kind: str  # binary | multiclass | multilabel | embedding | gains
    outputs: int  # columns of the model's output
    metric: Callable[[np.ndarray, np.ndarray], float]  # (scores, target) -> higher is better


def _f1(scores: np.ndarray, target: np.ndarray) -> float:
    return f1_score(target, scores.reshape(-1) > 0, zero_division=0.0)


def _mcc(scores: np.ndarray, target: np.ndarray) -> float:
    return matthews_corrcoef(target, scores.argmax(1))


def _macro_f1(scores: np.ndarray, target: np.ndarray) -> float:
    return f1_score(target, scores > 0, average="macro", zero_division=0.0)


def _ap(scores: np.ndarray, target: np.ndarray) -> float:
    return average_precision_score(target, scores.reshape(scores.shape[0], -1).squeeze(1))


def _map(scores: np.ndarray, target: np.ndarray) -> float:
    return average_precision_score(target, scores, average="macro")


def _auroc(scores: np.ndarray, target: np.ndarray) -> float:
    return roc_auc_score(target, scores.reshape(-1))


def _accuracy(scores: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((scores.reshape(-1) > 0) == target))


def _recall_at_1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    return float(retrieval_report(torch.as_tensor(embeddings), torch.as_tensor(labels))["R@1"])


def _ndcg(scores: np.ndarray, gains: np.ndarray) -> float:
    return ndcg_score(gains[None], scores.reshape(1, -1), k=5)


def _constrained(scores: np.ndarray, target: np.ndarray) -> float:
    # the scorer's metric: the decision threshold is chosen for the constraint (the estimator calibrates it)
    return best_threshold(target, scores.reshape(-1), "recall@precision>=0.8").score


def _constrained_multiclass(scores: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean([best_threshold(target == c, scores[:, c], "recall@precision>=0.6").score
                          for c in range(scores.shape[1])]))


def _warmed(criterion: ConfusionLoss, classes: int | None) -> ConfusionLoss:
    """The loss after one other batch: its running average of the counts is no longer the next batch's own,
    and a constrained loss's multipliers are no longer 0."""
    g = torch.Generator().manual_seed(123)
    if classes is None:
        criterion(torch.randn(40, generator=g), (torch.rand(40, generator=g) < 0.3).long())
    else:
        criterion(torch.randn(40, classes, generator=g), torch.randint(0, classes, (40,), generator=g))
    return criterion


CASES = [
    Case("confusion_f1", lambda: ConfusionLoss("f1"), "binary", 1, _f1),
    Case("confusion_mcc_multiclass", lambda: ConfusionLoss("mcc"), "multiclass", 3, _mcc),
    Case("confusion_f1_multilabel", lambda: ConfusionLoss("f1"), "multilabel", 3, _macro_f1),
    Case("confusion_f1_count_average", lambda: _warmed(ConfusionLoss("f1", count_momentum=0.3), None), "binary", 1,
         _f1),
    Case("confusion_mcc_multiclass_count_average", lambda: _warmed(ConfusionLoss("mcc", count_momentum=0.3), 3),
         "multiclass", 3, _mcc),
    Case("confusion_recall_at_precision", lambda: _warmed(ConfusionLoss("recall@precision>=0.8"), None), "binary",
         1, _constrained),
    Case("confusion_recall_at_precision_augmented",
         lambda: _warmed(ConfusionLoss("recall@precision>=0.8", constraint_method="augmented"), None), "binary", 1,
         _constrained),
    Case("confusion_recall_at_precision_multiclass",
         lambda: _warmed(ConfusionLoss("recall@precision>=0.6"), 3), "multiclass", 3, _constrained_multiclass),
    Case("cross_entropy", lambda: cross_entropy_loss, "binary", 1, _accuracy),
    Case("focal", lambda: FocalLoss(), "binary", 1, _accuracy),
    Case("ap", lambda: APLoss(), "binary", 1, _ap),
    Case("ap_memory", lambda: APLoss(memory_size=2), "binary", 1, _ap),
    Case("ap_multilabel", lambda: APLoss(), "multilabel", 3, _map),
    Case("auroc", lambda: AUROCLoss(), "binary", 1, _auroc),
    Case("recall", lambda: RecallLoss(), "embedding", 4, _recall_at_1),
    Case("recall_memory", lambda: RecallLoss(memory_size=2), "embedding", 4, _recall_at_1),
    Case("ndcg_at_5", lambda: NDCGLoss(k=5), "gains", 1, _ndcg),
]
IDS = [case.name for case in CASES]
FEATURES = 6


def problem(case: Case, n: int = 96, seed: int = 0, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Features and targets that a linear model can learn (a linear teacher plus noise)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, FEATURES, generator=g)
    teacher = torch.randn(FEATURES, max(case.outputs, 1), generator=g)
    logits = X @ teacher + 0.5 * torch.randn(n, teacher.shape[1], generator=g)
    if case.kind == "binary":
        y = (logits[:, 0] > 0.6).long()
    elif case.kind == "multiclass":
        y = logits.argmax(1)
    elif case.kind == "multilabel":
        y = (logits > 0.4).long()
    elif case.kind == "embedding":
        y = logits[:, :3].argmax(1)
    else:  # graded gains from the teacher's first score
        y = torch.bucketize(logits[:, 0], torch.tensor([0.5, 1.2, 2.0])).float()
    return X.to(device), y.to(device)


def outputs(case: Case, scores: Tensor) -> Tensor:
    """The model's raw output shaped as the loss takes it."""
    return scores.squeeze(1) if case.outputs == 1 else scores


def scores_and_target(case: Case, seed: int = 0, dtype: torch.dtype = torch.float64, device="cpu"):
    X, y = problem(case, seed=seed, device=device)
    g = torch.Generator().manual_seed(seed + 100)
    W = torch.randn(FEATURES, case.outputs, generator=g).to(device)
    return outputs(case, X @ W).to(dtype), y


def gradient(case: Case, scores: Tensor, target: Tensor, factor: float = 1.0) -> tuple[Tensor, Tensor]:
    leaf = scores.detach().clone().requires_grad_()
    loss = case.make()(leaf, target)
    (factor * loss).backward()
    return loss.detach(), leaf.grad


# --- linearity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("factor", [2.0**16, 1e-3, 0.37])
def test_gradient_is_linear_in_the_loss(case: Case, factor: float) -> None:
    # AMP's GradScaler multiplies the loss by 65536, accumulation divides it: the gradient must follow,
    # to float rounding, and nothing else may change (on main the rank losses' perturbation grew with it).
    scores, target = scores_and_target(case)
    _, base = gradient(case, scores, target)
    _, scaled = gradient(case, scores, target, factor)
    assert base.abs().sum() > 0
    torch.testing.assert_close(scaled, factor * base, rtol=1e-9, atol=1e-12 * factor * float(base.abs().max()))


# --- permutation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_permuting_the_batch_permutes_the_gradient(case: Case) -> None:
    scores, target = scores_and_target(case, seed=1)
    order = torch.randperm(len(scores), generator=torch.Generator().manual_seed(2))
    value, grad = gradient(case, scores, target)
    value_permuted, grad_permuted = gradient(case, scores[order], target[order])
    torch.testing.assert_close(value_permuted, value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_permuted, grad[order], rtol=1e-9, atol=1e-12)


# --- training from a zero-initialised head, at any scale --------------------------------------------------


def _train_from_zero(case: Case, scale: float, steps: int = 40) -> tuple[float, float]:
    """The exact metric on the training data before and after ``steps`` Adam steps from a zero head
    (all scores tied)."""
    X, y = problem(case)
    torch.manual_seed(0)
    head = torch.nn.Linear(FEATURES, case.outputs)
    torch.nn.init.zeros_(head.weight)
    # identical embeddings for the recall loss (a zero embedding has no cosine similarity), else zeros
    torch.nn.init.constant_(head.bias, 1.0 if case.kind == "embedding" else 0.0)
    loss_fn = case.make()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)

    def metric() -> float:
        with torch.no_grad():
            return case.metric(outputs(case, scale * head(X)).numpy(), y.numpy())

    before = metric()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(outputs(case, scale * head(X)), y).backward()
        optimizer.step()
    return before, metric()


TIED_CASES = [case for case in CASES if case.kind != "embedding"]


@pytest.mark.parametrize("case", TIED_CASES, ids=[case.name for case in TIED_CASES])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_adam_from_a_zero_initialised_head_raises_the_exact_metric(case: Case, scale: float) -> None:
    # On main, APLoss and AUROCLoss gave exactly zero gradient from tied scores with the default margin, and
    # NDCG@K with every item tied below the cut-off was stuck. The recall loss is not in this table: its
    # scores are cosine similarities, and identical (or zero) embeddings are a stationary point of the
    # cosine similarity itself, for every loss; see the two recall tests below.
    before, after = _train_from_zero(case, scale)
    assert after > before + 0.05, (before, after)


def test_recall_loss_gives_tied_similarities_a_gradient() -> None:
    scores = torch.ones(6, 8, requires_grad=True)  # the similarities of identical embeddings
    relevance = torch.zeros(6, 8, dtype=torch.bool)
    relevance[:, :3] = True
    recall_loss_scores(scores, relevance).backward()
    assert (scores.grad[relevance] < 0).all() and (scores.grad[~relevance] >= 0).all()


@pytest.mark.parametrize("case", [case for case in CASES if case.kind == "embedding"], ids=["recall", "recall_memory"])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_recall_loss_trains_a_default_initialised_embedder_at_any_scale(case: Case, scale: float) -> None:
    X, y = problem(case)
    torch.manual_seed(0)
    head = torch.nn.Linear(FEATURES, case.outputs)
    loss_fn, optimizer = case.make(), torch.optim.Adam(head.parameters(), lr=0.05)
    with torch.no_grad():
        before = case.metric((scale * head(X)).numpy(), y.numpy())
    for _ in range(40):
        optimizer.zero_grad()
        loss_fn(scale * head(X), y).backward()
        optimizer.step()
    with torch.no_grad():
        after = case.metric((scale * head(X)).numpy(), y.numpy())
    assert after > before + 0.05, (before, after)


# --- mixed precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_autocast_gives_the_float32_result(case: Case) -> None:
    scores, target = scores_and_target(case, dtype=torch.float32)
    value, grad = gradient(case, scores, target)
    leaf = scores.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = case.make()(leaf, target)
    loss.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.detach(), value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad, grad, rtol=1e-5, atol=1e-6 * float(grad.abs().max()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_the_float32_result(case: Case, dtype: torch.dtype) -> None:
    scores, target = scores_and_target(case, dtype=dtype)
    value, grad = gradient(case, scores.float(), target)  # the same (rounded) numbers in float32
    half_value, half_grad = gradient(case, scores, target)
    assert half_value.dtype == torch.float32 and half_grad.dtype == dtype
    torch.testing.assert_close(half_value, value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(half_grad, grad.to(dtype))  # to the half dtype's own resolution


# --- torch.func and torch.compile --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_func_grad_equals_autograd(case: Case) -> None:
    scores, target = scores_and_target(case, dtype=torch.float32)
    _, expected = gradient(case, scores, target)
    loss_fn = case.make()  # built (and warmed) outside the transform, as a training loop builds it
    got = torch.func.grad(lambda s: loss_fn(s, target))(scores)
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_compile_equals_eager(case: Case) -> None:
    torch._dynamo.reset()
    scores, target = scores_and_target(case, dtype=torch.float32)
    value, grad = gradient(case, scores, target)
    leaf = scores.clone().requires_grad_()
    loss = torch.compile(case.make())(leaf, target)
    loss.backward()
    torch.testing.assert_close(loss.detach(), value)
    torch.testing.assert_close(leaf.grad, grad)


# --- devices ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_and_gradient_follow_the_inputs_device(case: Case, device: torch.device) -> None:
    scores, target = scores_and_target(case, dtype=torch.float32, device=device)
    loss_fn = case.make()
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)
    leaf = scores.clone().requires_grad_()
    loss = loss_fn(leaf, target)
    loss.backward()
    assert loss.device == scores.device and leaf.grad.device == scores.device
    reference_value, reference_grad = gradient(case, scores.cpu(), target.cpu())
    torch.testing.assert_close(loss.detach().cpu(), reference_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad.cpu(), reference_grad, rtol=1e-5, atol=1e-6)


RANK_CASES = [case for case in CASES if case.name.startswith(("ap", "auroc", "recall", "ndcg"))]


@pytest.mark.parametrize("case", RANK_CASES, ids=[case.name for case in RANK_CASES])
def test_rank_losses_without_validation_never_synchronise_the_host(case: Case, device: torch.device) -> None:
    # CUDA can report every host synchronisation; on the CPU there is none to find, so this runs on a GPU only.
    if device.type != "cuda":
        pytest.skip("host synchronisation is a property of an accelerator")
    scores, target = scores_and_target(case, dtype=torch.float32, device=device)
    loss_fn = case.make()
    loss_fn.validate = False
    loss_fn.to(device)
    leaf = scores.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):  # the second call also reads a filled memory
            loss_fn(leaf, target).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
