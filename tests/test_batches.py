"""metricopt.batches: shuffled_batches, the batch iterator of the training loops, and its class-aware variant."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from metricopt.batches import oversampled_batches, shuffled_batches, stratified_batches
from metricopt.blackbox.learned_objective import batch_indices


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(n: int, batch_size: int, generator: torch.Generator, epochs: int) -> list[torch.Tensor]:
    """The loops the iterator replaced: one ``randperm`` per epoch, cut into ``batch_size`` pieces."""
    batches: list[torch.Tensor] = []
    for _ in range(epochs):
        batches.extend(torch.randperm(n, generator=generator).split(min(batch_size, n) if n else batch_size))
    return batches


@pytest.mark.parametrize(("n", "batch_size"), [(1, 1), (5, 2), (10, 5), (17, 4), (7, 7), (3, 100)])
def test_every_epoch_holds_each_index_once_in_batches_of_batch_size(n: int, batch_size: int) -> None:
    per_epoch = math.ceil(n / batch_size)
    batches = list(shuffled_batches(n, batch_size, _generator(), epochs=3))
    assert len(batches) == 3 * per_epoch
    for epoch in range(3):
        chunk = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert [len(b) for b in chunk[:-1]] == [batch_size] * (per_epoch - 1)
        assert 1 <= len(chunk[-1]) <= batch_size
        assert sorted(torch.cat(chunk).tolist()) == list(range(n))
        assert all(b.dtype == torch.int64 for b in chunk)


@pytest.mark.parametrize(("n", "batch_size", "epochs"), [(10, 3, 4), (8, 8, 2), (5, 20, 3), (0, 4, 2), (1, 1, 1)])
def test_draws_are_those_of_one_randperm_per_epoch(n: int, batch_size: int, epochs: int) -> None:
    """Same batches as the replaced loops, and the generator left where they left it (fit shares it)."""
    generator, reference_generator = _generator(11), _generator(11)
    batches = list(shuffled_batches(n, batch_size, generator, epochs=epochs))
    expected = _reference(n, batch_size, reference_generator, epochs)
    assert len(batches) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(batches, expected))
    assert torch.equal(generator.get_state(), reference_generator.get_state())


def test_epochs_are_drawn_lazily_one_randperm_each() -> None:
    generator, reference = _generator(3), _generator(3)
    batches = shuffled_batches(9, 4, generator)
    assert torch.equal(generator.get_state(), reference.get_state())  # nothing drawn before the first batch
    next(batches)
    torch.randperm(9, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())
    next(batches), next(batches)  # the rest of the first epoch: no new draw
    assert torch.equal(generator.get_state(), reference.get_state())
    next(batches)  # the first batch of the second epoch
    torch.randperm(9, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


def test_reproducible_from_the_seed_and_different_for_another() -> None:
    first = list(shuffled_batches(50, 8, _generator(5), epochs=2))
    again = list(shuffled_batches(50, 8, _generator(5), epochs=2))
    other = list(shuffled_batches(50, 8, _generator(6), epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(torch.cat(first[:7]), torch.cat(first[7:]))  # the second epoch is a new order


def test_epochs_none_goes_on_epoch_after_epoch() -> None:
    n, batch_size = 7, 3
    batches = list(itertools.islice(shuffled_batches(n, batch_size, _generator(2)), 3 * 40 + 1))
    assert len(batches) == 121  # far past any single epoch, and not stopped
    for epoch in range(40):
        assert sorted(torch.cat(batches[3 * epoch:3 * epoch + 3]).tolist()) == list(range(n))
    expected = _reference(n, batch_size, _generator(2), 41)[:121]
    assert all(torch.equal(a, b) for a, b in zip(batches, expected))


def test_a_fixed_number_of_epochs_stops_and_zero_epochs_is_empty() -> None:
    assert len(list(shuffled_batches(6, 4, _generator(), epochs=2))) == 4
    assert list(shuffled_batches(6, 4, _generator(), epochs=0)) == []
    empty = list(shuffled_batches(0, 4, _generator(), epochs=2))  # n = 0: one empty batch per epoch
    assert [b.numel() for b in empty] == [0, 0]


@pytest.mark.parametrize(("n", "batch_size", "count", "seed"), [(10, 3, 9, 4), (10, 20, 5, 4), (100, 16, 40, 123)])
def test_batch_indices_are_the_first_count_batches_of_a_fresh_seeded_stream(
        n: int, batch_size: int, count: int, seed: int) -> None:
    batches = batch_indices(n, batch_size, count, seed)
    expected = _reference(n, batch_size, _generator(seed), count)[:count]
    assert len(batches) == count
    assert all(torch.equal(a, b) for a, b in zip(batches, expected))
    assert batch_indices(n, batch_size, 0, seed) == []


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ((-1, 4), "n"), ((2.5, 4), "n"), ((True, 4), "n"),
        ((10, 0), "batch_size"), ((10, -3), "batch_size"), ((10, 1.5), "batch_size"), ((10, None), "batch_size"),
    ],
)
def test_bad_sizes_raise_naming_the_argument_at_the_call(arguments: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        shuffled_batches(*arguments, _generator())  # raised by the call itself, before any next()


@pytest.mark.parametrize("epochs", [-1, 1.0, True, "2"])
def test_bad_epochs_raise_naming_the_argument(epochs: object) -> None:
    with pytest.raises(ValueError, match="`epochs`"):
        shuffled_batches(10, 4, _generator(), epochs=epochs)


@pytest.mark.parametrize("generator", [None, 0, torch.randn(3)])
def test_a_generator_is_required(generator: object) -> None:
    with pytest.raises(TypeError, match="`generator`"):
        shuffled_batches(10, 4, generator)


def test_batch_indices_checks_count() -> None:
    with pytest.raises(ValueError, match="`count`"):
        batch_indices(10, 4, -1, 0)


# ---------------------------------------------------------------------------
# stratified_batches


@pytest.mark.parametrize(("shares", "batch_size"), [((9800, 200), 256), ((700, 300), 64), ((8500, 200, 1300), 256),
                                                    ((5, 3), 2), ((40, 7, 1), 5)])
def test_stratified_every_batch_holds_each_class_in_its_share(shares: tuple[int, ...], batch_size: int) -> None:
    labels = torch.cat([torch.full((count,), c) for c, count in enumerate(shares)])
    labels = labels[torch.randperm(len(labels), generator=_generator(9))]  # the classes' order is irrelevant
    n, per_epoch = len(labels), math.ceil(len(labels) / batch_size)
    batches = list(stratified_batches(labels, batch_size, _generator(), epochs=3))
    assert len(batches) == 3 * per_epoch
    for epoch in range(3):
        chunk = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert sorted(torch.cat(chunk).tolist()) == list(range(n))  # a permutation of the rows, as shuffled_batches
        assert [len(b) for b in chunk[:-1]] == [batch_size] * (per_epoch - 1)
        for batch in chunk:
            for c, count in enumerate(shares):
                assert abs(int((labels[batch] == c).sum()) - len(batch) * count / n) <= 2


def test_stratified_beats_a_plain_shuffle_on_the_spread_of_positives() -> None:
    """The point of the class-aware order: at a 2 % positive rate the plain shuffle's batches of 256 hold
    from about one to a dozen positives, the stratified ones five or six."""
    labels = (torch.arange(20000) % 50 == 0).long()
    plain = [int(labels[b].sum()) for b in shuffled_batches(20000, 256, _generator(), epochs=4) if len(b) == 256]
    even = [int(labels[b].sum()) for b in stratified_batches(labels, 256, _generator(), epochs=4) if len(b) == 256]
    assert set(even) <= {5, 6}
    assert max(plain) - min(plain) >= 6


def test_stratified_is_reproducible_from_the_seed_and_reshuffles_each_epoch() -> None:
    labels = (torch.arange(300) % 7 == 0).long()
    first = list(stratified_batches(labels, 32, _generator(5), epochs=2))
    again = list(stratified_batches(labels, 32, _generator(5), epochs=2))
    other = list(stratified_batches(labels, 32, _generator(6), epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(torch.cat(first[:10]), torch.cat(first[10:]))
    endless = stratified_batches(labels, 32, _generator(5))
    assert all(torch.equal(next(endless), b) for b in first)  # epochs=None: the same stream, not stopped


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0]), torch.zeros(2, 2, dtype=torch.long)])
def test_stratified_refuses_labels_that_are_not_a_vector_of_classes(labels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="`labels`"):
        stratified_batches(labels, 4, _generator())


def test_stratified_checks_its_other_arguments_at_the_call() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="`batch_size`"):
        stratified_batches(labels, 0, _generator())
    with pytest.raises(ValueError, match="`epochs`"):
        stratified_batches(labels, 2, _generator(), epochs=-1)
    with pytest.raises(TypeError, match="`generator`"):
        stratified_batches(labels, 2, None)


# --- oversampled batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("positives, negatives, batch_size, min_rows", [(40, 600, 256, 32), (5, 95, 20, 8),
                                                                         (3, 300, 64, 32), (50, 50, 16, 4)])
def test_oversampled_every_batch_holds_min_rows_of_each_class_on_top_of_the_shuffle(
    positives: int, negatives: int, batch_size: int, min_rows: int
) -> None:
    labels = torch.tensor([1] * positives + [0] * negatives)
    generator, plain = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    topped = list(oversampled_batches(labels, batch_size, generator, min_rows=min_rows, epochs=2))
    shuffled = list(shuffled_batches(len(labels), batch_size, plain, epochs=2))
    assert len(topped) == len(shuffled)
    for batch, base in zip(topped, shuffled, strict=True):
        assert torch.equal(batch[: len(base)], base)  # the shuffle first, then the extra rows
        for c in (1, 0):
            count = int((labels[batch] == c).sum())
            assert count >= min_rows
            extra = batch[len(base):]
            if int((labels[base] == c).sum()) >= min_rows:
                assert not bool((labels[extra] == c).any())  # no class is topped up that did not need it
        if positives >= min_rows:  # enough rows: no row twice in a batch
            assert len(set(batch.tolist())) == len(batch)


def test_oversampled_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`min_rows` must be"):
        oversampled_batches(torch.tensor([0, 1]), 2, torch.Generator(), min_rows=0)
    with pytest.raises(ValueError, match="`labels` must be a 1-D tensor"):
        oversampled_batches(torch.zeros(3, 2, dtype=torch.long), 2, torch.Generator())
