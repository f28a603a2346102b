"""Tests of the constrained-metric benchmark (benchmarks.suites.constrained): epoch selection, calibration,
resuming, the smoke suite end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import main
from benchmarks.cli import _override, render
from benchmarks.harness.specs import CONSTRAINED_VARIANTS, ConstrainedSpec, get_suite
from benchmarks.suites import constrained as C
from metricopt.evaluation import selection_score

# ---------------------------------------------------------------------------
# an independent reference: the best objective over every threshold, by brute force


def _brute_best(y: np.ndarray, scores: np.ndarray, constraint: str) -> float:
    """Best recall (TPR) over the thresholds ``scores > t`` meeting the constraint (0 if none does), by loops."""
    objective, rest = constraint.split("@")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    best = 0.0
    for t in [np.inf, -np.inf, *scores]:  # nothing positive, everything positive, everything above a score
        decided = scores > t
        tp = int(np.sum(decided & (y == 1)))
        fp = int(np.sum(decided & (y == 0)))
        recall = tp / positives if positives else 0.0
        if rest.startswith("precision>="):
            ok = (tp / (tp + fp) if tp + fp else 0.0) >= float(rest.split(">=")[1]) - 1e-12
        else:
            ok = (fp / negatives if negatives else 0.0) <= float(rest.split("<=")[1]) + 1e-12
        if ok:
            best = max(best, recall)
    assert objective in ("recall", "tpr")
    return best


def _first_best_epoch(values: list[float]) -> int:
    return int(np.argmax(values)) + 1  # epochs count from 1; argmax takes the first on ties


# ---------------------------------------------------------------------------
# epoch selection


CONSTRAINTS = ("recall@precision>=0.7", "recall@precision>=0.9", "tpr@fpr<=0.1", "tpr@fpr<=0.3")


def test_epoch_selection_keeps_each_constraints_best_validation_epoch() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(10, np.int64), np.zeros(30, np.int64)]
    top_half = np.r_[np.arange(10, 15), rng.normal(size=5), rng.normal(size=30)]  # recall 0.5 at precision 1
    two_on_top = np.r_[np.arange(5, 15), 20, 21, rng.normal(size=28)]  # recall 1 at precision 0.83, FPR 0.07
    noisy = [y * rng.uniform(0.0, 2.0) + rng.normal(size=40) for _ in range(6)]
    epochs = [(val, rng.normal(size=25)) for val in (noisy[0], noisy[1], top_half, noisy[2], noisy[3], two_on_top,
                                                     noisy[4], noisy[5])]
    selection = C.EpochSelection(y, CONSTRAINTS)
    for epoch, (val, test) in enumerate(epochs, start=1):
        selection.observe(epoch, val, test)
    for constraint in CONSTRAINTS:
        objectives = [_brute_best(y, val, constraint) for val, _ in epochs]
        kept = selection.best[constraint]
        assert kept.epoch == _first_best_epoch(objectives), constraint
        assert kept.objective == pytest.approx(max(objectives))
        # the library's own epoch-selection score, at the plain rule, agrees
        assert kept.utility == pytest.approx(max(selection_score(y, val, constraint, confidence=0.5)
                                                 for val, _ in epochs))
        np.testing.assert_array_equal(kept.val_scores, epochs[kept.epoch - 1][0])
        np.testing.assert_array_equal(kept.test_scores, epochs[kept.epoch - 1][1])
    # the constraints disagree on the best epoch: each keeps its own
    assert selection.best["recall@precision>=0.9"].epoch == 3
    assert selection.best["recall@precision>=0.7"].epoch == selection.best["tpr@fpr<=0.1"].epoch == 6


def test_an_epoch_without_a_feasible_threshold_counts_as_the_worst() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])
    selection = C.EpochSelection(y, ("recall@precision>=0.9",))
    selection.observe(1, np.array([0.1, 0.9, 0.2, 0.3, 0.4, 0.5]), np.zeros(6))  # a negative on top: infeasible
    assert not selection.best["recall@precision>=0.9"].feasible
    selection.observe(2, np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5]), np.ones(6))   # recall 0.5 at precision 1
    kept = selection.best["recall@precision>=0.9"]
    assert (kept.epoch, kept.objective, kept.feasible) == (2, 0.5, True)


def _split(n: int = 240, d: int = 5, seed: int = 0) -> Any:
    from metricopt.app.data import train_val_test_split

    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.25).astype(np.int64)
    X = rng.normal(size=(n, d)).astype(np.float32) + y[:, None] * np.linspace(0.2, 1.0, d, dtype=np.float32)
    return train_val_test_split(X, y, test_size=0.3, random_state=seed)  # validation and test of unequal sizes


def test_training_keeps_the_scores_of_each_constraints_best_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real training loop: the kept scores are those the network gave at the epoch a brute force picks."""
    split = _split()
    seen: list[np.ndarray] = []
    scores = C._scores

    def spy(model: Any, X: np.ndarray) -> np.ndarray:
        out = scores(model, X)
        seen.append(out)
        return out

    monkeypatch.setattr(C, "_scores", spy)
    spec = ConstrainedSpec(tables=("appendicitis",), epochs=6, batch_size=32)
    selection, seconds = C.train_and_select(spec, split, C.resolve_method("bce").loss(None, split.y_train),
                                           CONSTRAINTS, seed=0)
    assert seconds > 0 and len(seen) == 2 * spec.epochs  # validation, then test, after every epoch
    val, test = seen[0::2], seen[1::2]
    assert {len(v) for v in val} == {len(split.y_val)} and {len(t) for t in test} == {len(split.y_test)}
    assert len({v.tobytes() for v in val}) == spec.epochs  # the network changed every epoch
    for constraint in CONSTRAINTS:
        kept = selection.best[constraint]
        assert kept.epoch == _first_best_epoch([_brute_best(split.y_val, v, constraint) for v in val]), constraint
        np.testing.assert_array_equal(kept.val_scores, val[kept.epoch - 1])
        np.testing.assert_array_equal(kept.test_scores, test[kept.epoch - 1])


def test_indexed_peers_see_each_training_row_once_per_epoch_with_its_label() -> None:
    split = _split(seed=1)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def peer(logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        assert logits.shape == target.shape == index.shape and index.dtype == torch.long
        batches.append((target.clone(), index.clone()))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

    spec = ConstrainedSpec(tables=("appendicitis",), epochs=2, batch_size=50)
    C.train_and_select(spec, split, C._IndexedPeer(peer), ("tpr@fpr<=0.1",), seed=0, indexed=True)
    n = len(split.y_train)
    per_epoch = -(-n // spec.batch_size)
    assert len(batches) == 2 * per_epoch
    for epoch in range(2):
        part = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        index = torch.cat([i for _, i in part])
        assert sorted(index.tolist()) == list(range(n))
        np.testing.assert_array_equal(torch.cat([t for t, _ in part]).numpy(), split.y_train[index.numpy()])


# ---------------------------------------------------------------------------
# calibration


def test_calibration_records_every_confidence_on_test() -> None:
    from metricopt.metrics.constrained import calibrate_threshold

    rng = np.random.default_rng(5)
    y_val, y_test = (rng.uniform(size=(2, 300)) < 0.2).astype(np.int64)
    val, test = y_val * 1.5 + rng.normal(size=300), y_test * 1.5 + rng.normal(size=300)
    confidences = (0.5, 0.7, 0.8, 0.9)
    for constraint in ("recall@precision>=0.7", "tpr@fpr<=0.05"):
        records = C.calibrated_records(y_val, y_test, val, test, constraint, confidences, method="m", seed=0)
        assert [r["confidence"] for r in records] == list(confidences)
        for r, q in zip(records, confidences):
            assert r["method"] == "m" and r["constraint"] == constraint
            assert r["threshold"] == calibrate_threshold(y_val, val, constraint, confidence=q).threshold
            decided = test > r["threshold"]
            tp, fp = np.sum(decided & (y_test == 1)), np.sum(decided & (y_test == 0))
            assert r["objective"] == pytest.approx(tp / y_test.sum())
            if constraint.startswith("recall"):
                rate = tp / (tp + fp) if tp + fp else 0.0
                assert r["rates"] == {"precision": pytest.approx(rate)} and r["held"] == (rate >= 0.7)
            else:
                rate = fp / (len(y_test) - y_test.sum())
                assert r["rates"] == {"fpr": pytest.approx(rate)} and r["held"] == (rate <= 0.05)
            assert r["score"] == (r["objective"] if r["held"] else 0.0)
        # a wider margin can only shrink the feasible thresholds: the validation objective never rises with q
        val_objectives = [r["val_objective"] for r in records]
        assert val_objectives == sorted(val_objectives, reverse=True)
        assert records[0]["val_objective"] == pytest.approx(_brute_best(y_val, val, constraint))
    assert C.default_confidence() == pytest.approx(0.8)


# ---------------------------------------------------------------------------
# methods and spec


def test_methods_and_variants_resolve_and_unknown_names_fail() -> None:
    from metricopt.losses import ConfusionLoss

    variant = C.resolve_method("constrained_augmented_10")
    loss = variant.loss("tpr@fpr<=0.01", np.array([0, 1, 0]))
    assert isinstance(loss, ConfusionLoss) and variant.per_constraint
    assert (loss.multipliers.method, loss.multipliers.strength) == ("augmented", 10.0)
    assert C.resolve_method("bce").per_constraint is False and C.resolve_method("hgb").family == "booster"
    for name in ("constrained_sgd_1", "xgboost", "constrained_penalty_"):
        with pytest.raises(ValueError, match="unknown constrained method"):
            C.resolve_method(name)
    with pytest.raises(C.NotApplicable, match="precision"):  # a partial-AUC loss takes no precision floor
        C.resolve_method("libauc_pauc").loss("recall@precision>=0.9", np.array([0, 1, 0, 0]))


def test_specs_check_their_fields_and_the_selection_runs_the_variants() -> None:
    full, selection, smoke = get_suite("constrained"), get_suite("constrained_selection"), get_suite(
        "constrained", smoke=True)
    assert full.tables == "report" and full.seeds == (0, 1, 2) and full.reference == "constrained"
    assert full.confidences == (0.5, 0.7, 0.8, 0.9) and (full.hidden_sizes, full.epochs) == ((64, 64), 50)
    assert selection.tables == "validation" and set(selection.methods) == {
        *CONSTRAINED_VARIANTS, "bce", "weighted_bce", "hgb"} and selection.reference in CONSTRAINED_VARIANTS
    assert len(smoke.tables) == 2 and smoke.seeds == (0,) and smoke.epochs == 3
    assert get_suite("constrained_selection", smoke=True).tables == smoke.tables
    for bad, match in (({"tables": "multiclass"}, "tables"), ({"methods": ("bce",)}, "reference"),
                       ({"confidences": (0.5, 1.0)}, "confidences"), ({"confidences": ()}, "confidences"),
                       ({"constraints": ("recall@precision>=2",)}, "constraints")):
        with pytest.raises(ValueError, match=match):
            ConstrainedSpec(**bad)


def _args(**kw: Any) -> argparse.Namespace:
    base = {"seeds": None, "epochs": None, "datasets": None, "threads": None, "name": None, "suite": "constrained"}
    return argparse.Namespace(**(base | kw))


def test_command_line_options() -> None:
    spec = get_suite("constrained")
    assert _override(spec, _args(datasets=("validation",), seeds=(0,), epochs=5)).tables == "validation"
    assert _override(spec, _args(datasets=("Yeast4", "vowel0"))).tables == ("yeast4", "vowel0")
    with pytest.raises(SystemExit, match="--datasets"):
        _override(spec, _args(datasets=("multiclass",)))


# ---------------------------------------------------------------------------
# resuming


class _FakeRunner:
    """Records the tasks it runs; raises after ``stop_after`` of them (a run killed part way)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.stop_after = stop_after

    def __call__(self, spec: ConstrainedSpec, table: str, seed: int, unit: str) -> dict[str, Any]:
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append((table, seed, unit))
        records = [{"dataset": table, "task": "binary", "method": unit, "seed": seed, "constraint": c,
                    "confidence": q, "objective": 0.5 + 0.01 * seed, "held": q > 0.6, "score": 0.5 if q > 0.6 else 0,
                    "val_feasible": True, "train_seconds": 0.1} for c in spec.constraints for q in spec.confidences]
        return {"key": [table, seed, unit], "records": records, "not_applicable": {}, "failed": {}, "seconds": 0.1}


def test_a_restarted_run_skips_the_finished_tasks(tmp_path: Path) -> None:
    spec = ConstrainedSpec(name="c", tables=("appendicitis", "new_thyroid1"), seeds=(0, 1),
                           methods=("constrained", "bce", "hgb"), constraints=("tpr@fpr<=0.05",),
                           confidences=(0.5, 0.8))
    partial = tmp_path / "c.partial.jsonl"
    first = _FakeRunner(stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        C.run_suite(spec, progress=False, partial_path=partial, runner=first)
    with partial.open("a") as handle:  # a line cut short by the kill is ignored
        handle.write('{"key": ["appendicitis", 0, "bc')
    second = _FakeRunner()
    payload = C.run_suite(spec, progress=False, partial_path=partial, runner=second)
    all_tasks = {(t, s, m) for t in spec.tables for s in spec.seeds for m in spec.methods}
    assert len(first.calls) == 5 and not set(first.calls) & set(second.calls)
    assert set(first.calls) | set(second.calls) == all_tasks
    assert payload["tasks"] == 12 and payload["resumed_tasks"] == 5
    assert len(payload["records"]) == 2 * 2 * 3 * 2  # tables x seeds x methods x confidences
    part = payload["summary"]["constraints"]["tpr@fpr<=0.05"]
    assert part["0.8"]["held_rate"] == {m: 1.0 for m in spec.methods} and part["0.5"]["held_rate"]["bce"] == 0.0
    third = _FakeRunner()
    C.run_suite(spec, progress=False, partial_path=partial, runner=third)
    assert third.calls == []
    with pytest.raises(ValueError, match="another spec"):
        C.run_suite(ConstrainedSpec(name="c", tables=("appendicitis",), seeds=(0,), methods=("constrained",)),
                    progress=False, partial_path=partial, runner=_FakeRunner())


def test_summary_compares_the_reference_per_constraint_and_confidence() -> None:
    def record(table: str, method: str, seed: int, objective: float, held: bool) -> dict[str, Any]:
        return {"dataset": table, "task": "binary", "method": method, "seed": seed, "constraint": "tpr@fpr<=0.05",
                "confidence": 0.5, "objective": objective, "held": held, "score": objective if held else 0.0,
                "val_feasible": True, "train_seconds": 1.0}

    records = [record("a", "constrained", 0, 0.8, True), record("a", "constrained", 1, 0.6, False),
               record("a", "bce", 0, 0.5, True), record("a", "bce", 1, 0.5, True),
               record("b", "constrained", 0, 0.3, True), record("b", "bce", 0, 0.4, True)]
    payload = C.refresh_summary({
        "spec": {"constraints": ["tpr@fpr<=0.05"], "confidences": [0.5], "tie_tolerance": 0.005},
        "reference": "constrained", "methods": {"constrained": {}, "bce": {}}, "unavailable": {},
        "records": records})
    part = payload["summary"]["constraints"]["tpr@fpr<=0.05"]["0.5"]
    assert part["held_rate"] == {"constrained": pytest.approx(2 / 3), "bce": 1.0}
    assert part["objective"]["mean"]["constrained"] == pytest.approx((0.7 + 0.3) / 2)
    assert part["score"]["mean"]["constrained"] == pytest.approx((0.4 + 0.3) / 2)
    objective, score = part["objective"]["against"]["bce"], part["score"]["against"]["bce"]
    assert (objective["wins"], objective["losses"]) == (1, 1) and (score["wins"], score["losses"]) == (0, 2)
    assert list(payload)[-1] == "records"


# ---------------------------------------------------------------------------
# end to end


def test_constrained_smoke_end_to_end_and_render(tmp_path: Path) -> None:
    from benchmarks.peers.constrained import CONSTRAINED_PEERS

    assert main(["constrained", "--smoke", "--output-dir", str(tmp_path), "--quiet"]) == 0
    payload = json.loads((tmp_path / "constrained_smoke.json").read_text())
    spec = get_suite("constrained", smoke=True)
    assert payload["failures"] == [] and set(payload["unavailable"]) <= {*CONSTRAINED_PEERS, "lightgbm"}
    assert not (tmp_path / "constrained_smoke.partial.jsonl").exists()
    ran = [m for m in spec.methods if m not in payload["unavailable"]]
    skipped = {(m, c) for m, by in payload["not_applicable"].items() for c in by}
    assert {m for m, _ in skipped} <= set(CONSTRAINED_PEERS)  # only peers are ever not applicable
    got = {(r["dataset"], r["method"], r["constraint"], r["confidence"]) for r in payload["records"]}
    assert got == {(t, m, c, q) for t in spec.tables for m in ran for c in spec.constraints
                   for q in spec.confidences if (m, c) not in skipped}
    assert all(0 <= r["objective"] <= 1 and r["score"] in (r["objective"], 0.0) for r in payload["records"])
    assert all(r["epoch"] is None or 1 <= r["epoch"] <= spec.epochs for r in payload["records"])
    assert (tmp_path / "constrained_smoke.png").stat().st_size > 10_000
    markdown = (tmp_path / "constrained_smoke.md").read_text()
    assert "## Overview" in markdown and "ConfusionLoss (defaults)" in markdown and "Wilcoxon" in markdown
    again = render(tmp_path / "constrained_smoke.json", tmp_path / "again")
    assert again["md"].read_text() == markdown and again["png"].exists()


def test_the_estimator_is_fit_per_constraint_and_calibrated_like_every_method() -> None:
    spec = get_suite("constrained_recipe", smoke=True)
    out = C.run_task(spec, "appendicitis", 0, "recipe")
    assert not out["failed"], out["failed"]
    records = out["records"]
    assert len(records) == len(spec.constraints) * len(spec.confidences)
    assert {r["constraint"] for r in records} == set(spec.constraints) and {r["method"] for r in records} == {"recipe"}
    for r in records:  # the suite's calibration: the constrained score is the objective exactly where it held
        assert r["score"] == (r["objective"] if r["held"] else 0.0)
    assert C.resolve_method("recipe").per_constraint and C.resolve_method("recipe_anyloss").family == "booster"


def test_the_estimator_methods_calibration_at_its_own_confidence_is_the_threshold_it_chose() -> None:
    from metricopt.app import MetricClassifier
    from metricopt.app.data import train_val_test_split
    from metricopt.app.data.collection import load_table
    from metricopt.metrics.constrained import calibrate_threshold

    data = load_table("appendicitis")
    raw = train_val_test_split(data.X, data.y, random_state=0, standardize=False)
    y_held, held_scores, _ = C.resolve_method("recipe").booster(raw, 0, 1, "tpr@fpr<=0.05")
    X, y = np.concatenate([raw.X_train, raw.X_val]), np.concatenate([raw.y_train, raw.y_val])
    own = MetricClassifier(metric="tpr@fpr<=0.05", random_state=0, n_jobs=1).fit(X, y)
    assert calibrate_threshold(y_held, held_scores, "tpr@fpr<=0.05").threshold == pytest.approx(own.threshold_)


def test_the_hybrid_loss_adds_weighted_bce_to_the_constrained_loss() -> None:
    import torch as _torch

    from metricopt.app.recipes.classification import make_loss
    from metricopt.losses import ConfusionLoss

    y = np.array([0, 1, 0, 0, 1, 0, 0, 0])
    hybrid = C.resolve_method("weighted_bce_constrained").loss("recall@precision>=0.8", y)
    logits, target = _torch.randn(8), _torch.as_tensor(y, dtype=_torch.float32)
    expected = make_loss("weighted_bce", y_train=y, num_classes=2)(logits, target) + ConfusionLoss(
        "recall@precision>=0.8")(logits, target)
    _torch.testing.assert_close(hybrid(logits, target), expected)
    assert hybrid.multipliers is not None and C.resolve_method("weighted_bce_constrained").per_constraint
