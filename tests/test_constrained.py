"""Constrained metrics: the grammar, the exact scores against brute force, calibration, and the loss's multipliers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, precision_score, recall_score

from metricopt import ConfusionLoss
from metricopt.losses import ConstraintMultipliers, confusion_loss
from metricopt.losses.constrained import batch_threshold
from metricopt.metrics import metric_score
from metricopt.metrics.constrained import (
    best_threshold,
    calibrate_threshold,
    constrained_report,
    constrained_score,
    parse_constrained,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --- the grammar -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name"), [
    ("recall@precision>=0.95", "recall@precision>=0.95"),
    (" Recall @ Precision >= 0.950 ", "recall@precision>=0.95"),
    ("tpr@fpr<=0.01", "tpr@fpr<=0.01"),
    ("fnr@fpr<=1e-3", "fnr@fpr<=0.001"),
    ("f1@recall>=0.5,precision>=0.2", "f1@recall>=0.5,precision>=0.2"),
    ("mcc@specificity>=0.9", "mcc@specificity>=0.9"),
])
def test_constrained_names_parse_to_one_canonical_spelling(text: str, name: str) -> None:
    assert parse_constrained(text).name == name


@pytest.mark.parametrize(("text", "says"), [
    ("recall@precision>=1.5", "outside [0, 1]"),
    ("recall@precision<=", "cannot read the constraint"),
    ("recall@precision=0.5", "cannot read the constraint"),
    ("recall@precision>0.5", "cannot read the constraint"),
    ("recall@precision>=high", "not a number"),
    ("precision>=0.5", "no objective"),
    ("recall@", "no constraint"),
    ("auc@precision>=0.5", "unknown objective 'auc'"),
    ("recall@prec>=0.5", "unknown rate 'prec'"),
])
def test_a_malformed_constraint_is_a_value_error_naming_the_argument_and_the_accepted_forms(
        text: str, says: str) -> None:
    for build in (parse_constrained, ConfusionLoss, lambda t: metric_score([0, 1], [0, 1], t)):
        with pytest.raises(ValueError, match="`metric`") as error:
            build(text)
        assert says in str(error.value) and "accepted forms" in str(error.value) and "tpr@fpr<=0.01" in str(error.value)


def test_metric_helpers_know_the_direction_and_the_worst_value() -> None:
    assert parse_constrained("recall@precision>=0.9").worst == 0.0
    assert parse_constrained("mcc@recall>=0.9").worst == -1.0
    fnr = parse_constrained("fnr@fpr<=0.01")
    assert not fnr.higher_is_better and fnr.worst == 1.0 and fnr.utility(0.2) == -0.2


# --- exact scores of decisions ------------------------------------------------------------------------------


def _manual(y: np.ndarray, d: np.ndarray, metric: str) -> float:
    """The constrained score from scikit-learn's counts, written out."""
    tn, fp, fn, tp = sk_confusion_matrix(y, d, labels=[0, 1]).ravel()
    rates = {
        "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
        "tpr": tp / (tp + fn) if tp + fn else 0.0, "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "fnr": fn / (tp + fn) if tp + fn else 0.0, "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": f1_score(y, d, zero_division=0.0),
    }
    parsed = parse_constrained(metric)
    held = all(rates[c.rate] >= c.level if c.op == ">=" else rates[c.rate] <= c.level for c in parsed.constraints)
    return rates[parsed.objective] if held else parsed.worst


METRICS = ["recall@precision>=0.6", "precision@recall>=0.5", "tpr@fpr<=0.2", "fnr@fpr<=0.1",
           "f1@recall>=0.5,precision>=0.3", "specificity@recall>=0.75"]


@pytest.mark.parametrize("metric", METRICS)
def test_the_score_of_decisions_is_the_objective_where_the_constraints_hold_else_the_worst(metric: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        y = (rng.random(30) < 0.3).astype(int)
        d = (rng.random(30) < rng.random()).astype(int)
        assert metric_score(y, d, metric) == pytest.approx(_manual(y, d, metric), abs=1e-12)
        assert constrained_score(y, d, metric) == pytest.approx(_manual(y, d, metric), abs=1e-12)


def test_a_constraint_at_exactly_its_level_holds() -> None:
    y, d = [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]  # precision 4/5
    assert metric_score(y, d, "recall@precision>=0.8") == 1.0
    assert constrained_report(y, d, "recall@precision>=0.8")["held"]


def test_nothing_predicted_fails_a_precision_floor_and_meets_an_fpr_ceiling() -> None:
    y, d = [1, 0, 0, 1], [0, 0, 0, 0]
    assert metric_score(y, d, "recall@precision>=0.5") == 0.0
    assert not constrained_report(y, d, "recall@precision>=0.5")["held"]
    assert constrained_report(y, d, "tpr@fpr<=0.1") == {"objective": 0.0, "fpr": 0.0, "held": True}


def test_multiclass_targets_are_scored_one_vs_rest_and_averaged() -> None:
    rng = np.random.default_rng(1)
    y, d = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    d[y == 1] = 1  # class 1 is predicted well, so it meets its floor
    per_class = [_manual((y == c).astype(int), (d == c).astype(int), "recall@precision>=0.5") for c in range(3)]
    got = metric_score(y, d, "recall@precision>=0.5", average="none")
    np.testing.assert_allclose(got, per_class)
    assert metric_score(y, d, "recall@precision>=0.5") == pytest.approx(np.mean(per_class))
    assert per_class[1] > 0


def test_report_gives_the_raw_objective_and_each_rate() -> None:
    y, d = np.array([1, 1, 0, 0, 0, 1]), np.array([1, 0, 1, 0, 0, 1])
    report = constrained_report(y, d, "recall@precision>=0.7,fpr<=0.5")
    assert report == {"objective": pytest.approx(recall_score(y, d)), "precision": pytest.approx(precision_score(y, d)),
                      "fpr": pytest.approx(1 / 3), "held": False}


def test_fbeta_objective_takes_beta_and_other_objectives_refuse_it() -> None:
    y, d = [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]
    assert metric_score(y, d, "fbeta@precision>=0.5", beta=2.0) == pytest.approx(
        metric_score(y, d, "fbeta", beta=2.0))
    with pytest.raises(ValueError, match="`beta`"):
        metric_score(y, d, "recall@precision>=0.5", beta=2.0)


# --- the best threshold, against brute force over every threshold ---------------------------------------------


def _brute_force(y: np.ndarray, s: np.ndarray, metric: str) -> float:
    """Every threshold, one by one, scored by the decisions' constrained score (the utility's best)."""
    parsed = parse_constrained(metric)
    values = np.unique(s)
    candidates = np.r_[values, values[0] - 1.0]  # "score > v" for every distinct v, and everything positive
    scores = [_manual(y, (s > t).astype(int), metric) for t in candidates]
    feasible = [v for v, t in zip(scores, candidates)
                if constrained_report(y, (s > t).astype(int), parsed)["held"]]
    if not feasible:
        return parsed.worst
    return max(feasible) if parsed.higher_is_better else min(feasible)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_equals_brute_force_over_every_threshold(metric: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    s = np.round(rng.normal(size=n) + 1.2 * y, 1)  # rounded: blocks of tied scores
    choice = best_threshold(y, s, metric)
    assert choice.score == pytest.approx(_brute_force(y, s, metric), abs=1e-12)
    if choice.feasible:  # the threshold given reproduces the score
        assert metric_score(y, (s > choice.threshold).astype(int), metric) == pytest.approx(choice.score)


def test_best_threshold_reports_an_infeasible_constraint() -> None:
    y, s = np.array([0, 1, 0, 1]), np.array([0.9, 0.1, 0.8, 0.2])  # every positive below every negative
    choice = best_threshold(y, s, "recall@precision>=0.9")
    assert not choice.feasible and choice.score == 0.0


def test_ties_in_the_objective_go_to_the_safest_threshold() -> None:
    # recall 1 at thresholds below 0.6 and below 0.5; the higher one has more precision
    y, s = np.array([1, 1, 0, 0]), np.array([0.9, 0.6, 0.5, 0.1])
    choice = best_threshold(y, s, "recall@precision>=0.5")
    assert 0.5 <= choice.threshold < 0.6 and choice.score == 1.0


def test_best_threshold_takes_tensors_and_refuses_bad_input() -> None:
    y, s = torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.7, 0.4])
    assert best_threshold(y, s, "recall@precision>=0.9").score == 1.0
    with pytest.raises(ValueError, match="`y_score`"):
        best_threshold([0, 1], [0.1, float("nan")], "recall@precision>=0.9")
    with pytest.raises(ValueError, match="`y_true`"):
        best_threshold([0, 2], [0.1, 0.2], "recall@precision>=0.9")
    with pytest.raises(ValueError, match="`confidence`"):
        best_threshold([0, 1], [0.1, 0.2], "recall@precision>=0.9", confidence=1.0)


# --- calibration --------------------------------------------------------------------------------------------


def _wilson_lower(k: float, n: float, z: float) -> float:
    p = k / n
    return (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_calibration_holds_each_rate_to_its_wilson_bound() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(int)
    s = rng.normal(size=400) + 1.5 * y
    choice = calibrate_threshold(y, s, "recall@precision>=0.7", confidence=0.9)
    d = s > choice.threshold
    tp, predicted = int((d & (y == 1)).sum()), int(d.sum())
    assert choice.feasible and _wilson_lower(tp, predicted, 1.2815515655446004) >= 0.7
    # the plain rule reaches further down (more recall) with less margin
    plain = best_threshold(y, s, "recall@precision>=0.7")
    assert plain.threshold < choice.threshold and plain.score > choice.score


def test_calibration_makes_the_constraint_hold_on_new_data_more_often() -> None:
    # Validation and test rows from one distribution: the plain rule puts the threshold at the edge of the
    # validation rows' constraint, so it breaks on new rows about half the time; the margin fixes most of that.
    rng = np.random.default_rng(4)
    held = {0.5: 0, 0.9: 0}
    for _ in range(150):
        draws = []
        for _ in range(2):
            y = (rng.random(300) < 0.15).astype(int)
            draws.append((y, rng.normal(size=300) + 1.8 * y))
        (y_val, s_val), (y_test, s_test) = draws
        for confidence in held:
            t = calibrate_threshold(y_val, s_val, "tpr@fpr<=0.05", confidence=confidence).threshold
            held[confidence] += constrained_report(y_test, (s_test > t).astype(int), "tpr@fpr<=0.05")["held"]
    assert held[0.5] / 150 < 0.75 and held[0.9] / 150 > 0.85, held


# --- the loss's multipliers ------------------------------------------------------------------------------------


def _batch(seed: int = 0, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g), (torch.rand(n, generator=g) < 0.4).float()


def test_the_multipliers_rise_while_a_constraint_is_broken_and_only_while_training() -> None:
    criterion = ConfusionLoss("recall@precision>=0.95")
    logits, target = _batch()
    criterion(logits.requires_grad_(), target)
    first = criterion.multipliers.values.clone()
    assert float(first) > 0  # random scores: precision about 0.4, far below 0.95
    with torch.no_grad():
        criterion(logits, target)
    criterion.eval()
    criterion(logits, target)
    torch.testing.assert_close(criterion.multipliers.values, first)
    criterion.train()
    criterion(logits, target)
    assert float(criterion.multipliers.values) > float(first)


def test_a_met_constraint_lowers_its_multiplier_to_zero_and_no_further() -> None:
    multipliers = ConstraintMultipliers("lagrangian", 1.0)
    logits = torch.tensor([5.0, 5.0, -5.0, -5.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    multipliers.values = torch.tensor([0.3])
    confusion_loss(logits, target, "recall@precision>=0.5", multipliers=multipliers)  # precision 1: slack 0.5
    assert float(multipliers.values) == 0.0


@pytest.mark.parametrize("method", ["lagrangian", "augmented", "penalty"])
def test_each_method_gives_the_documented_loss(method: str) -> None:
    logits, target = _batch(1)
    multipliers = ConstraintMultipliers(method, 2.0)
    multipliers.values = torch.tensor([0.4])
    loss = confusion_loss(logits, target, "recall@precision>=0.9", multipliers=multipliers, amplification=5.0)
    p = torch.sigmoid(5.0 * (torch.sigmoid(logits) - 0.5))
    tp, fp, fn = (p * target).sum(), (p * (1 - target)).sum(), ((1 - p) * target).sum()
    recall, violation = tp / (tp + fn), 0.9 - tp / (tp + fp)
    term = {"lagrangian": 0.4 * violation, "penalty": 2.0 * violation.clamp_min(0),
            "augmented": ((0.4 + 2.0 * violation).clamp_min(0) ** 2 - 0.4**2) / 4.0}[method]
    torch.testing.assert_close(loss, 1 - recall + term)


def test_a_rate_to_minimise_is_the_loss_itself() -> None:
    logits, target = _batch(2)
    multipliers = ConstraintMultipliers("penalty", 1.0)
    loss = confusion_loss(logits, target, "fnr@fpr<=1.0", multipliers=multipliers, amplification=73.0)
    plain = confusion_loss(logits, target, "recall")
    torch.testing.assert_close(loss, plain)  # FNR = 1 - recall; the ceiling at 1 never binds


def test_the_multipliers_live_in_the_state_dict_and_follow_the_module() -> None:
    criterion = ConfusionLoss("tpr@fpr<=0.01")
    logits, target = _batch(3)
    criterion(logits.requires_grad_(), target)
    state = criterion.state_dict()
    fresh = ConfusionLoss("tpr@fpr<=0.01")
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.multipliers.values, criterion.multipliers.values)
    assert fresh.double().multipliers.values.dtype == torch.float64
    fresh.multipliers.reset()
    assert fresh.multipliers.values is None


def test_a_non_finite_violation_leaves_the_multipliers_alone() -> None:
    criterion = ConfusionLoss("recall@precision>=0.9", validate=False)
    logits, target = _batch(4)
    criterion(logits.requires_grad_(), target)
    before = criterion.multipliers.values.clone()
    criterion(torch.full((64,), float("nan"), requires_grad=True), target)  # an overflowing AMP step
    torch.testing.assert_close(criterion.multipliers.values, before)


def test_a_constrained_metric_defaults_to_its_own_steepness() -> None:
    assert ConfusionLoss("recall@precision>=0.9").amplification == 20.0
    assert ConfusionLoss("recall").amplification == 73.0
    assert ConfusionLoss("recall@precision>=0.9", amplification=50).amplification == 50.0


def test_the_functional_form_needs_multipliers_and_only_for_a_constrained_metric() -> None:
    logits, target = _batch(5)
    with pytest.raises(ValueError, match="`multipliers`"):
        confusion_loss(logits, target, "recall@precision>=0.9")
    with pytest.raises(ValueError, match="`multipliers`"):
        confusion_loss(logits, target, "f1", multipliers=ConstraintMultipliers())
    with pytest.raises(ValueError, match="`constraint_method`"):
        ConfusionLoss("recall@precision>=0.9", constraint_method="dual")
    with pytest.raises(ValueError, match="`constraint_strength`"):
        ConfusionLoss("recall@precision>=0.9", constraint_strength=0.0)


def test_a_multilabel_target_gets_one_multiplier_per_constraint_and_label() -> None:
    criterion = ConfusionLoss("recall@precision>=0.8,fpr<=0.2")
    g = torch.Generator().manual_seed(6)
    criterion(torch.randn(40, 3, generator=g, requires_grad=True), (torch.rand(40, 3, generator=g) < 0.3).float())
    assert criterion.multipliers.values.shape == (2, 3)


def test_training_meets_a_broken_constraint_on_the_training_decisions() -> None:
    # A noisy linear problem whose 20 % positives the untrained model decides at precision 0.2: the loss
    # moves the decisions at p > 0.5 until precision >= 0.9 holds, keeping some recall.
    g = torch.Generator().manual_seed(7)
    X = torch.randn(600, 4, generator=g)
    y = ((X[:, 0] + 0.7 * torch.randn(600, generator=g)) > 1.0).float()
    for method in ("lagrangian", "augmented"):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        criterion = ConfusionLoss("recall@precision>=0.9", amplification=20.0, constraint_method=method)
        for _ in range(300):
            optimizer.zero_grad()
            criterion(model(X).squeeze(1), y).backward()
            optimizer.step()
        with torch.no_grad():
            decided = (model(X).squeeze(1) > 0).long().numpy()
        report = constrained_report(y.long().numpy(), decided, "recall@precision>=0.9")
        assert report["held"] and report["objective"] > 0, (method, report)


def test_batch_threshold_equals_the_exact_best_threshold() -> None:
    rng = np.random.default_rng(9)
    for metric in ("recall@precision>=0.7", "tpr@fpr<=0.1", "fnr@fpr<=0.2", "f1@recall>=0.5"):
        parsed = parse_constrained(metric)
        for _ in range(100):
            n = int(rng.integers(3, 40))
            y = (rng.random(n) < 0.4).astype(int)
            s = np.round(rng.normal(size=n) + y, 1)
            exact = best_threshold(y, s, metric)
            tau = float(batch_threshold(torch.tensor(s), torch.tensor(y), parsed))
            if exact.feasible:
                assert metric_score(y, (s > tau).astype(int), metric) == pytest.approx(exact.score, abs=1e-12)
        columns = torch.tensor(rng.normal(size=(30, 3)))
        labels = torch.tensor(rng.random((30, 3)) < 0.4)
        taus = batch_threshold(columns, labels, parsed)
        for c in range(3):
            assert float(taus[c]) == float(batch_threshold(columns[:, c], labels[:, c], parsed))


def test_every_objective_and_rate_trains_without_error() -> None:
    logits, target = _batch(8)
    for objective, rate in itertools.product(("recall", "tpr", "f1", "mcc", "fnr", "balanced_accuracy"),
                                             ("precision>=0.5", "fpr<=0.1", "specificity>=0.9", "fnr<=0.2")):
        leaf = logits.clone().requires_grad_()
        ConfusionLoss(f"{objective}@{rate}")(leaf, target).backward()
        assert torch.isfinite(leaf.grad).all()


def test_the_registry_names_a_constrained_metric_a_confusion_metric_with_its_objectives_direction() -> None:
    from metricopt.metrics.registry import metric_info

    info = metric_info(" Recall @ Precision>=0.9 ")
    assert (info.name, info.family, info.higher_is_better) == ("recall@precision>=0.9", "confusion", True)
    assert metric_info("fnr@fpr<=0.1").higher_is_better is False
    assert metric_info("recall@4").family == "rank"  # recall@K stays the rank metric
