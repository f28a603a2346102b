"""Tests for metricopt.losses.ranker: exact ranks and their blackbox gradient.

The forward is checked against a pure-python "max rank" reference
(``rank_i = #{j : s_j >= s_i}``), the backward against the definition of
blackbox differentiation recomputed here with that reference, and both against
the authors' ``TrueRanker`` (martius-lab/blackbox-backprop) imported at test
time from its checkout (never copied into this repository).

Most inputs are drawn from a small grid of dyadic values (multiples of 1/4,
lambdas and spreads powers of two) so that scores, perturbed scores and their
ties are exact in every dtype: the reference and the library then compare the
same numbers and no tolerance is needed. The spread rule itself
(:func:`score_spread`) is checked against its own reference.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from metricopt.losses.ranker import exact_rank, interpolated_rank, score_spread

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)

GRID = [-2.0, -1.0, -0.25, 0.0, 0.5, 0.75, 3.0]  # few values -> many ties; all exact in float16
GRAD_GRID = [-1.0, -0.5, -0.25, 0.0, 0.25, 1.0]
LAMBDAS = [0.25, 1.0, 2.0, 8.0]  # powers of two: lam * g and y + lam * g stay exact

BLACKBOX_DIR = Path(os.environ.get("METRICOPT_BLACKBOX_BACKPROP", "/work/peers/blackbox-backprop"))


pytestmark = pytest.mark.usefixtures("one_thread")


# --- pure-python references ---------------------------------------------------------------------


def ref_max_rank(row: list[float]) -> list[int]:
    """rank_i = #{j : s_j >= s_i} (1 = highest; ties take the largest rank of their block)."""
    return [sum(1 for b in row if b >= a) for a in row]


def ref_rank_rows(values: list) -> list:
    """``ref_max_rank`` applied along the last axis of a nested list."""
    if values and isinstance(values[0], list):
        return [ref_rank_rows(v) for v in values]
    return ref_max_rank(values)


def ref_blackbox_grad(scores: list[float], upstream: list[float], lam: float, spread: float = 1.0) -> list[float]:
    """The documented rule, with python floats (float64): the row's upstream gradient g is used through
    its direction g / max|g| and a step lam * spread, and the result is scaled back by max|g|:
    dL/dy = max|g| (rk(y + step g / max|g|) - rk(y)) / step; zero when g is zero."""
    size = max(abs(g) for g in upstream)
    if size == 0:
        return [0.0] * len(scores)
    step = lam * spread
    base = ref_max_rank(scores)
    perturbed = ref_max_rank([y + step * (g / size) for y, g in zip(scores, upstream)])
    return [(p - b) * (size / step) for b, p in zip(base, perturbed)]


def ref_spread(row: list[float]) -> float:
    """The standard deviation of the finite scores, at least 1e-3 of their largest |score|, 1 if that is 0."""
    finite = [v for v in row if math.isfinite(v)] or [0.0]
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    std = max(std, 1e-3 * max(abs(v) for v in finite))
    return std if std > 0 else 1.0


def unit_spread(y: torch.Tensor) -> torch.Tensor:
    """A spread of 1 for every row: the exact-arithmetic tests fix the unit so that lam * g stays dyadic."""
    return torch.ones(*y.shape[:-1], 1, dtype=torch.float64)


# --- strategies ------------------------------------------------------------------------------------


@st.composite
def grid_rows(draw, min_size: int = 1, max_size: int = 10):
    return draw(st.lists(st.sampled_from(GRID), min_size=min_size, max_size=max_size))


@st.composite
def grid_batches(draw):
    """Nested lists of shape (*lead, n): 0 to 2 leading dims."""
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    n = draw(st.integers(1, 8))

    def build(dims):
        if not dims:
            return draw(st.lists(st.sampled_from(GRID + [-math.inf]), min_size=n, max_size=n))
        return [build(dims[1:]) for _ in range(dims[0])]

    return build(lead)


# --- exact_rank ------------------------------------------------------------------------------------


def test_exact_rank_docstring_example():
    assert exact_rank(torch.tensor([0.3, 0.9, 0.3, -1.0])).tolist() == [3.0, 1.0, 3.0, 4.0]


@SETTINGS
@given(row=grid_rows(max_size=12))
def test_exact_rank_equals_max_rank_reference_with_ties(row):
    assert exact_rank(torch.tensor(row)).tolist() == ref_max_rank(row)


@SETTINGS
@given(values=grid_batches())
def test_exact_rank_batched_leading_dims_and_minus_inf(values):
    scores = torch.tensor(values, dtype=torch.float64)
    got = exact_rank(scores)
    assert got.shape == scores.shape
    assert got.tolist() == ref_rank_rows(values)


def test_exact_rank_minus_inf_ranks_last_and_ties_with_itself():
    scores = torch.tensor([-math.inf, 1.0, -math.inf, -5.0, math.inf])
    assert exact_rank(scores).tolist() == [5.0, 2.0, 5.0, 3.0, 1.0]


def test_exact_rank_rows_are_independent_and_layout_does_not_matter():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (5, 6), generator=g).float()
    expected = ref_rank_rows(scores.tolist())
    assert exact_rank(scores).tolist() == expected
    # a transposed (non-contiguous) view ranks along its own last dimension
    assert not scores.T.is_contiguous()
    assert exact_rank(scores.T).tolist() == ref_rank_rows(scores.T.tolist())


@pytest.mark.parametrize(
    ("dtype", "rank_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_exact_rank_output_dtype(dtype, rank_dtype):
    row = [0.5, -0.25, 0.5, 3.0, -2.0]
    got = exact_rank(torch.tensor(row, dtype=dtype))
    assert got.dtype == rank_dtype
    assert got.tolist() == ref_max_rank(row)


def test_exact_rank_float16_ties_are_those_of_the_rounded_values():
    # 1.0 and 1.0 + 2**-12 differ in float32 but round to the same float16
    row32 = torch.tensor([1.0, 1.0 + 2**-12, 0.5])
    assert exact_rank(row32).tolist() == [2.0, 1.0, 3.0]
    assert exact_rank(row32.half()).tolist() == [2.0, 2.0, 3.0]


def test_exact_rank_float16_output_holds_ranks_above_2048():
    scores = -torch.arange(3000, dtype=torch.float16)  # float16 ties many of these
    ranks = exact_rank(scores)
    assert ranks.dtype == torch.float32
    assert ranks.tolist() == ref_max_rank(scores.tolist())
    assert ranks.max().item() == 3000


def test_exact_rank_has_no_gradient():
    scores = torch.tensor([0.1, 0.2], requires_grad=True)
    assert not exact_rank(scores).requires_grad


# --- interpolated_rank: forward and backward ------------------------------------------------------------


@SETTINGS
@given(
    data=st.data(),
    n=st.integers(1, 9),
    lam=st.sampled_from(LAMBDAS),
    dtype=st.sampled_from([torch.float16, torch.float32, torch.float64]),
)
def test_interpolated_rank_backward_equals_definition(data, n, lam, dtype):
    scores = data.draw(st.lists(st.sampled_from(GRID), min_size=n, max_size=n))
    upstream = data.draw(st.lists(st.sampled_from(GRAD_GRID), min_size=n, max_size=n))
    y = torch.tensor(scores, dtype=dtype, requires_grad=True)
    ranks = interpolated_rank(y, interpolation=lam, spread=unit_spread(y))
    assert ranks.tolist() == ref_max_rank(scores)
    ranks.backward(torch.tensor(upstream, dtype=ranks.dtype))
    assert y.grad.dtype == dtype
    assert y.grad.tolist() == ref_blackbox_grad(scores, upstream, lam)


@SETTINGS
@given(data=st.data(), shape=st.sampled_from([(2, 5), (3, 1, 4), (1, 2, 2, 3)]), lam=st.sampled_from(LAMBDAS))
def test_interpolated_rank_backward_batched_rows_are_independent(data, shape, lam):
    size = math.prod(shape)
    scores = data.draw(st.lists(st.sampled_from(GRID), min_size=size, max_size=size))
    upstream = data.draw(st.lists(st.sampled_from(GRAD_GRID), min_size=size, max_size=size))
    y = torch.tensor(scores, dtype=torch.float64).reshape(shape).requires_grad_()
    g = torch.tensor(upstream, dtype=torch.float64).reshape(shape)
    interpolated_rank(y, interpolation=lam, spread=unit_spread(y)).backward(g)
    n = shape[-1]
    expected = []
    for start in range(0, size, n):
        expected += ref_blackbox_grad(scores[start : start + n], upstream[start : start + n], lam)
    assert y.grad.flatten().tolist() == expected


def test_interpolated_rank_backward_on_continuous_float64_input_with_the_default_spread():
    # Non-grid values: the reference applies the rule in python floats, the same IEEE operations, and
    # computes the spread itself (compared to the library's with a tolerance; the perturbation then uses
    # the library's value so that both add the same numbers).
    g = torch.Generator().manual_seed(1)
    for lam in (0.3, 1.7, 25.0):
        y = torch.randn(4, 11, generator=g, dtype=torch.float64, requires_grad=True)
        upstream = torch.randn(4, 11, generator=g, dtype=torch.float64)
        spread = score_spread(y)
        assert spread.flatten().tolist() == pytest.approx([ref_spread(row) for row in y.tolist()], rel=1e-12)
        interpolated_rank(y, interpolation=lam).backward(upstream)
        for row in range(4):
            expected = ref_blackbox_grad(y[row].tolist(), upstream[row].tolist(), lam, float(spread[row]))
            assert y.grad[row].tolist() == expected
        assert y.grad.abs().sum() > 0  # the perturbation moved some ranks


def test_interpolated_rank_docstring_example_and_direction():
    y = torch.tensor([0.1, 0.5, 0.2], requires_grad=True)
    rk = interpolated_rank(y, interpolation=1.0)
    assert rk.tolist() == [3.0, 1.0, 2.0]
    rk[0].backward()
    # the loss is item 0's rank: descent (-grad) raises its score and lowers item 2's, which it passes
    step = ref_spread([0.1, 0.5, 0.2])
    torch.testing.assert_close(y.grad, torch.tensor([-1 / step, 0.0, 1 / step]))


@SETTINGS
@given(row=st.lists(st.sampled_from(GRID + [-math.inf]), min_size=1, max_size=10))
def test_score_spread_equals_reference_with_ties_and_minus_inf(row):
    got = score_spread(torch.tensor(row)).item()
    assert got == pytest.approx(ref_spread(row), rel=1e-12)


def test_score_spread_of_tied_rows_follows_the_documented_floor():
    rows = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [-4.0, -4.0, -4.0]])
    assert score_spread(rows).flatten().tolist() == [1.0, 2e-3, 4e-3]


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2, 2.0**20])
def test_interpolated_rank_gradient_direction_does_not_depend_on_the_scale_of_the_scores(scale):
    g = torch.Generator().manual_seed(3)
    y = torch.randn(3, 40, generator=g, dtype=torch.float64)
    upstream = torch.randn(3, 40, generator=g, dtype=torch.float64)
    base = y.clone().requires_grad_()
    interpolated_rank(base, interpolation=0.5).backward(upstream)
    scaled = (y * scale).requires_grad_()
    interpolated_rank(scaled, interpolation=0.5).backward(upstream)
    assert base.grad.abs().sum() > 0
    # d/dy of a function of y / c: the same ranks move, the size scales as 1 / c
    torch.testing.assert_close(scaled.grad * scale, base.grad, rtol=1e-9, atol=0)


@pytest.mark.parametrize("factor", [2.0**16, 1e-3, 0.37, 7.0])
def test_interpolated_rank_gradient_is_linear_in_the_upstream_gradient(factor):
    g = torch.Generator().manual_seed(4)
    y = torch.randn(2, 50, generator=g)
    upstream = torch.randn(2, 50, generator=g)
    base, scaled = y.clone().requires_grad_(), y.clone().requires_grad_()
    interpolated_rank(base, interpolation=0.5).backward(upstream)
    interpolated_rank(scaled, interpolation=0.5).backward(upstream * factor)
    assert base.grad.abs().sum() > 0
    torch.testing.assert_close(scaled.grad, factor * base.grad, rtol=1e-6, atol=0)


def test_interpolated_rank_tied_scores_get_a_gradient_that_orders_them():
    y = torch.zeros(6, requires_grad=True)  # a zero-initialised head
    upstream = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # the loss wants item 0 up
    interpolated_rank(y, interpolation=0.5).backward(upstream)
    # item 0 leaves the tie block (rank 6 -> 1); the others keep the block's largest rank, 6
    assert y.grad[0] < 0 and (y.grad[1:] == 0).all()


def test_interpolated_rank_float32_perturbation_does_not_round_away():
    # float32 scores around 1000 have a spacing of 6e-5; a step of 1e-6 of the spread added in float32 would
    # round to nothing and give a zero gradient; in float64 it moves item 0 past its neighbours.
    y = torch.tensor([1000.0, 1000.0 + 2**-6, 1000.0 + 2**-5], requires_grad=True)
    interpolated_rank(y, interpolation=4.0, spread=torch.tensor([[2**-5]], dtype=torch.float64)).backward(
        torch.tensor([1.0, 0.0, 0.0])
    )
    assert y.grad[0] < 0


@pytest.mark.parametrize("through_scores_too", [False, True])
def test_interpolated_rank_second_derivative_raises_instead_of_leaving_the_ranker_out(through_scores_too):
    # With once_differentiable, a loss that also uses the scores directly got a second derivative that
    # silently left the ranker's part out; the ranks alone gave a gradient with no graph at all.
    y = torch.tensor([0.1, 0.5, 0.2], requires_grad=True)
    loss = (interpolated_rank(y, interpolation=1.0) * torch.tensor([1.0, 2.0, 3.0])).sum()
    if through_scores_too:
        loss = loss + (y**2).sum()
    (grad,) = torch.autograd.grad(loss, y, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative was requested through metricopt's interpolated ranks"):
        grad.sum().backward()


def test_interpolated_rank_second_derivative_raises_under_torch_func():
    def first(y):
        return torch.func.grad(lambda s: (interpolated_rank(s, interpolation=1.0) * s).sum())(y).sum()

    with pytest.raises(RuntimeError, match="second derivative"):
        torch.func.grad(first)(torch.tensor([0.1, 0.5, 0.2]))


@SETTINGS
@given(row=grid_rows(), lam=st.sampled_from(LAMBDAS + [1e-6, 1e6]))
def test_interpolated_rank_zero_upstream_gives_exactly_zero_gradient(row, lam):
    y = torch.tensor(row, requires_grad=True)
    interpolated_rank(y, interpolation=lam).backward(torch.zeros(len(row)))
    assert torch.equal(y.grad, torch.zeros(len(row)))


def test_interpolated_rank_accepts_tensor_interpolation():
    y = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    spread = unit_spread(y)
    interpolated_rank(y, interpolation=torch.tensor(4.0), spread=spread).backward(torch.tensor([0.0, 0.0, 1.0]))
    assert y.grad.tolist() == ref_blackbox_grad([0.0, 1.0, 2.0], [0.0, 0.0, 1.0], 4.0)


def test_interpolated_rank_small_lambda_gives_zero_gradient_large_lambda_does_not():
    # DESIGN.md section 3: a small lambda never moves a rank (the step is lambda spreads of the row).
    y = torch.linspace(0, 1, 50, requires_grad=True)
    upstream = torch.zeros(50)
    upstream[0] = 1.0  # d rank_0: lowest item wants to move up
    interpolated_rank(y, interpolation=0.001).backward(upstream)
    assert torch.equal(y.grad, torch.zeros(50))
    y.grad = None
    interpolated_rank(y, interpolation=100.0).backward(upstream)
    assert y.grad[0] < 0  # descent raises the lowest item's score
    assert (y.grad[1:] >= 0).all()


# --- interpolated_rank: argument errors -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_interpolated_rank_rejects_nan_and_plus_inf_scores(bad):
    with pytest.raises(ValueError, match="`scores`"):
        interpolated_rank(torch.tensor([0.0, bad, 1.0]), interpolation=1.0)


def test_interpolated_rank_minus_inf_ranks_last_and_gets_no_gradient():
    y = torch.tensor([0.0, -math.inf, 1.0], requires_grad=True)
    ranks = interpolated_rank(y, interpolation=4.0)  # the step: 4 spreads of the finite scores, 4 * 0.5
    assert ranks.tolist() == [2.0, 3.0, 1.0]
    ranks.backward(torch.tensor([1.0, 1.0, 0.0]))
    assert y.grad[1] == 0 and y.grad[0] < 0


@pytest.mark.parametrize("lam", [0.0, -1.0, math.nan, math.inf])
def test_interpolated_rank_rejects_non_positive_interpolation(lam):
    with pytest.raises(ValueError, match="`interpolation`"):
        interpolated_rank(torch.tensor([0.0, 1.0]), interpolation=lam)


@pytest.mark.parametrize("lam", ["1", None, True])
def test_interpolated_rank_rejects_non_number_interpolation(lam):
    with pytest.raises(TypeError, match="`interpolation`"):
        interpolated_rank(torch.tensor([0.0, 1.0]), interpolation=lam)


@pytest.mark.parametrize("scores", [torch.tensor([1, 2, 3]), torch.tensor([True, False]), [0.1, 0.2]])
def test_interpolated_rank_rejects_non_floating_scores(scores):
    with pytest.raises(TypeError, match="`scores`"):
        interpolated_rank(scores, interpolation=1.0)


def test_interpolated_rank_rejects_a_non_positive_spread():
    with pytest.raises(ValueError, match="`spread`"):
        interpolated_rank(torch.tensor([[0.0, 1.0]]), interpolation=1.0, spread=torch.zeros(1, 1))


def test_interpolated_rank_rejects_zero_dim_scores():
    with pytest.raises(ValueError, match="`scores`"):
        interpolated_rank(torch.tensor(1.0), interpolation=1.0)


# --- the authors' TrueRanker --------------------------------------------------------------------------


def _load_true_ranker():
    """``blackbox_backprop/ranking.py`` loaded by file path (the package's __init__ imports solvers
    with extra dependencies); None if the checkout is absent."""
    path = BLACKBOX_DIR / "blackbox_backprop" / "ranking.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_peer_blackbox_ranking", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TrueRanker


TRUE_RANKER = _load_true_ranker()
needs_true_ranker = pytest.mark.skipif(TRUE_RANKER is None, reason=f"blackbox-backprop not found at {BLACKBOX_DIR}")


@needs_true_ranker
@pytest.mark.parametrize("n", [8, 16, 13])
@pytest.mark.parametrize("lam_official", [0.5, 2.0, 10.0])
def test_interpolated_rank_equals_official_true_ranker_on_tie_free_input(n, lam_official):
    """Mapping between TrueRanker(seq, lambda_N) and interpolated_rank(seq, interpolation=lambda).

    TrueRanker returns *normalised* ranks rk_N = rk / n (its ``rank_normalised`` is
    ``(argsort(argsort(seq).flip(1)) + 1) / n``: 1/n for the highest score), takes a 2-D
    (rows, n) input, and in backward perturbs ``seq + lambda_N * g_N`` with g_N = dL/drk_N and
    returns ``-(rk_N - rk_N') / (lambda_N + 1e-8)``.

    A loss written in normalised ranks has dL/drk = g = g_N / n in integer ranks. interpolated_rank
    perturbs ``y + interpolation * spread * g / max|g|`` per row and returns
    ``max|g| (rk' - rk) / (interpolation * spread)``; with interpolation 1 and the row's spread set
    to ``lambda_N max|g_N|`` the perturbation is ``y + lambda_N g_N``, TrueRanker's, and the returned
    gradient ``(max|g_N| / n)(rk' - rk) / (lambda_N max|g_N|) = -(rk_N - rk_N') / lambda_N``, TrueRanker's
    (up to its 1e-8 in the denominator). So the rule differs from the authors' only in how the step is
    chosen per row (relative to the scores, independent of the loss's scale), not in the method.

    With n a power of two the scalings are exact and the perturbed scores are bitwise equal;
    n = 13 checks the general case. Ties are avoided in y and y' (TrueRanker breaks them by
    argsort order, we give the block's largest rank).
    """
    g = torch.Generator().manual_seed(n * 100 + int(lam_official * 10))
    y = torch.randn(4, n, generator=g, requires_grad=True)
    g_official = torch.randn(4, n, generator=g) * 0.2
    assert_tie_free(y.detach())
    assert_tie_free(y.detach() + lam_official * g_official)

    y_official = y.detach().clone().requires_grad_()
    ranks_official = TRUE_RANKER.apply(y_official, lam_official)
    ranks_official.backward(g_official)

    ranks = interpolated_rank(y, interpolation=1.0, spread=_official_step(g_official, lam_official))
    ranks.backward(g_official / n)

    # rk_N * n is an integer up to float32 rounding of k / n (exact for n a power of two)
    torch.testing.assert_close(ranks, (ranks_official * n).round(), rtol=0, atol=0)
    torch.testing.assert_close(y.grad, y_official.grad)
    assert y.grad.abs().sum() > 0, "the perturbation must move some ranks for the comparison to mean anything"


def _official_step(g_official: torch.Tensor, lam_official: float) -> torch.Tensor:
    """The per-row spread that makes interpolated_rank's step TrueRanker's ``lambda_N g_N`` (see above)."""
    step = (lam_official * g_official.abs().amax(-1, keepdim=True)).double()
    return torch.where(step > 0, step, 1.0)  # a zero upstream row: any unit, the gradient is zero


def assert_tie_free(rows: torch.Tensor) -> None:
    for row in rows.tolist():
        assert len(set(row)) == len(row), "seeded input has a tie: choose another seed"


@needs_true_ranker
@SETTINGS
@given(data=st.data(), n=st.integers(2, 12), lam_official=st.sampled_from([0.25, 1.0, 4.0]))
def test_interpolated_rank_equals_official_true_ranker_hypothesis(data, n, lam_official):
    # distinct grid values (multiples of 1/8) and power-of-two gradients keep everything exact
    values = data.draw(st.lists(st.integers(-40, 40), min_size=n, max_size=n, unique=True))
    upstream = data.draw(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), min_size=n, max_size=n))
    y_list = [v / 8 for v in values]
    perturbed = [a + lam_official * b for a, b in zip(y_list, upstream)]
    assume(len(set(perturbed)) == n)

    # float32: TrueRanker computes its normalised ranks and gradient in float32 whatever the input
    y = torch.tensor([y_list], requires_grad=True)
    y_official = y.detach().clone().requires_grad_()
    g_official = torch.tensor([upstream])
    TRUE_RANKER.apply(y_official, lam_official).backward(g_official)
    interpolated_rank(y, interpolation=1.0, spread=_official_step(g_official, lam_official)).backward(g_official / n)
    torch.testing.assert_close(y.grad, y_official.grad)


def test_blackbox_rank_is_a_deprecated_alias() -> None:
    import metricopt

    scores = torch.tensor([0.1, 0.5, 0.2])
    with pytest.warns(DeprecationWarning, match="interpolated_rank"):
        ranks = metricopt.blackbox_rank(scores, interpolation=1.0)
    assert torch.equal(ranks, interpolated_rank(scores, interpolation=1.0))
