"""The running average of AnyLoss's soft counts: the metric at the average, the gradient of the batch."""

from __future__ import annotations

import pytest
import torch

from metricopt.losses import ConfusionLoss, confusion_loss
from metricopt.losses.count_average import CountAverage
from metricopt.losses.soft_confusion import binary_soft_counts


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 2 * tp / (2 * tp + fp + fn)


def _batches(count: int, n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=generator, dtype=torch.float64),
             (torch.rand(n, generator=generator) < 0.2).long()) for _ in range(count)]


def test_momentum_one_is_the_batch_loss_value_and_gradient() -> None:
    criterion = ConfusionLoss("f1", count_momentum=1.0)
    for logits, target in _batches(3):
        mine, plain = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        averaged, batch = criterion(mine, target), confusion_loss(plain, target, "f1")
        torch.testing.assert_close(averaged, batch)
        averaged.backward()
        batch.backward()
        torch.testing.assert_close(mine.grad, plain.grad)


def test_the_loss_is_the_metric_of_the_average_with_the_batch_gradient() -> None:
    momentum, (first, second) = 0.25, _batches(2)
    criterion = ConfusionLoss("f1", count_momentum=momentum)
    criterion(*first)  # starts the average at the first batch's rates
    logits, target = second[0].clone().requires_grad_(), second[1]
    loss = criterion(logits, target)
    loss.backward()

    n = len(target)
    rates_first = [c / n for c in binary_soft_counts(first[0], first[1], 73.0)]
    x = second[0].clone().requires_grad_()
    counts = binary_soft_counts(x, target, 73.0)
    average = [(1 - momentum) * a + momentum * c.detach() / n for a, c in zip(rates_first, counts)]
    expected = 1 - _f1(*[a * n + c - c.detach() for a, c in zip(average, counts)])
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach())
    torch.testing.assert_close(logits.grad, x.grad)
    # the batch's own loss differs: the average is not a no-op
    assert abs(confusion_loss(second[0], target, "f1").item() - loss.item()) > 1e-3


def test_evaluation_and_no_grad_give_the_batch_loss_and_leave_the_average() -> None:
    (first, second) = _batches(2)
    criterion = ConfusionLoss("f1", count_momentum=0.1)
    criterion(*first)
    saved = [r.clone() for r in criterion.count_average.rates]
    batch_loss = confusion_loss(*second, "f1")
    with torch.no_grad():
        torch.testing.assert_close(criterion(*second), batch_loss)
    criterion.eval()
    torch.testing.assert_close(criterion(*second), batch_loss)
    for before, after in zip(saved, criterion.count_average.rates):
        torch.testing.assert_close(before, after)


def test_the_average_is_saved_in_the_state_dict_and_follows_the_dtype() -> None:
    criterion = ConfusionLoss("mcc", count_momentum=0.5)
    for batch in _batches(2):
        criterion(*batch)
    restored = ConfusionLoss("mcc", count_momentum=0.5)
    restored.load_state_dict(criterion.state_dict())
    for a, b in zip(criterion.count_average.rates, restored.count_average.rates):
        torch.testing.assert_close(a, b)
    logits, target = _batches(1, seed=1)[0]
    torch.testing.assert_close(criterion(logits, target), restored(logits, target))
    assert all(r.dtype == torch.float32 for r in restored.float().count_average.rates)
    restored.count_average.reset()
    assert restored.count_average.rates is None


def test_multiclass_counts_are_averaged_too() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(48, 3, generator=generator), torch.randint(0, 3, (48,), generator=generator))
               for _ in range(2)]
    criterion = ConfusionLoss("mcc", count_momentum=0.5)
    torch.testing.assert_close(criterion(*batches[0]), confusion_loss(*batches[0], "mcc"))  # first batch: its own
    logits = batches[1][0].clone().requires_grad_()
    averaged = criterion(logits, batches[1][1])
    averaged.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert abs(averaged.item() - confusion_loss(*batches[1], "mcc").item()) > 1e-4


@pytest.mark.parametrize("momentum", [0, 1.5, -0.1, True, "0.5"])
def test_bad_momentum_names_the_argument(momentum: object) -> None:
    with pytest.raises(ValueError, match="`count_momentum` must lie in \\(0, 1\\]"):
        ConfusionLoss("f1", count_momentum=momentum)  # type: ignore[arg-type]


def test_counts_of_another_shape_are_an_error_until_reset() -> None:
    average = CountAverage(0.5)
    average.blend((torch.ones(3),), 4)
    with pytest.raises(ValueError, match="changed shape"):
        average.blend((torch.ones(4),), 4)
    average.reset()
    average.blend((torch.ones(4),), 4)


def test_a_rejected_or_non_finite_batch_leaves_the_average() -> None:
    (first, second) = _batches(2)
    criterion = ConfusionLoss("f1", count_momentum=0.5)
    criterion(*first)
    saved = [r.clone() for r in criterion.count_average.rates]
    bad = first[0].clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        criterion(bad, first[1])  # validated: rejected before it reaches the average
    with pytest.raises(ValueError):
        criterion(first[0], first[1] * 2)  # a label 2 in a binary target
    unchecked = ConfusionLoss("f1", count_momentum=0.5, validate=False)
    unchecked(*first)
    unchecked(bad, first[1])  # validation off: the NaN batch is not averaged in
    for before, mine, theirs in zip(saved, criterion.count_average.rates, unchecked.count_average.rates):
        torch.testing.assert_close(before, mine)
        torch.testing.assert_close(before, theirs)
    assert torch.isfinite(unchecked(*second)).all()
