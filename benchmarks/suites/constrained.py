"""Constrained metrics as losses (issue 17): recall at a precision floor and TPR at an FPR budget, on real tables.

Protocol (:class:`benchmarks.harness.specs.ConstrainedSpec`), the same for every method:

1. Per (table, seed) the tabular suite's split: one stratified 60/20/20 train /
   validation / test split of the raw features of a binary table of
   :mod:`metricopt.app.data.collection` (``train_val_test_split(random_state=seed,
   standardize=False)``) for the boosted trees, and the train-standardised copy
   of the same rows for the MLPs.
2. MLP methods (:data:`METHODS`) train with the tabular protocol's budget
   (MLP (64, 64), one initialisation per seed, Adam, 50 epochs) through
   :func:`metricopt.app.recipes.classification.train_classifier`. After every
   epoch the network scores validation and test rows (its logit); per
   constraint the epoch whose validation scores give the best objective at
   the best feasible threshold (``best_threshold(..., confidence=0.5)``, an
   infeasible epoch counting as the objective's worst value, the first epoch
   on ties) is kept, with its validation and test scores
   (:class:`EpochSelection`). BCE and weighted BCE train once and are
   selected for every constraint; the constrained losses (the library's
   ``ConfusionLoss(constraint)`` with its defaults, its ablation variants,
   the peers' losses) train once per constraint.
3. The boosted trees (HistGradientBoosting; LightGBM log-loss early-stopped
   on the validation log-loss) fit on the raw training rows once; their
   validation and test probabilities are the scores.
4. Calibration: per constraint and each confidence ``q`` of the spec, the
   threshold is ``calibrate_threshold(y_val, validation scores, constraint,
   confidence=q)``; test rows are decided positive where their score exceeds
   it and scored by ``constrained_report``: the objective, whether the
   constraint held, and the constrained score (the objective where it held,
   the objective's worst value where not).

Work is split into tasks (table, seed, method), run in ``jobs`` worker
processes (one thread each) and appended to a partial file as each finishes,
so a killed run resumes (:func:`benchmarks.harness.jobs.run_resumable`). A
method that fails on a task is recorded, not raised; a peer that does not apply
to a constraint (a partial-AUC loss and a precision floor) is recorded as not
applicable there. :func:`refresh_summary` computes from the records alone, per
constraint and confidence: each method's mean test objective, the rate at
which the constraint held on test (over tables x seeds) and the mean
constrained score, with wins / ties / losses of the reference, Wilcoxon tests
and average ranks (``python -m benchmarks render``).
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.jobs import failures_of, run_resumable, run_summary
from benchmarks.harness.markdown import best, number, p_value, row, wtl
from benchmarks.harness.results import _metadata_lines, aggregate, collect_metadata, load_average, write_suite_reports
from benchmarks.harness.specs import ConstrainedSpec, spec_to_dict
from benchmarks.harness.threads import torch_threads
from benchmarks.peers.constrained import (
    CONSTRAINED_PEERS,
    constrained_peer_status,
    constrained_peer_versions,
    make_constrained_peer,
)
from benchmarks.suites.tabular import compare, load_partial, package_status, resolve_tables, table_cost, table_info

__all__ = [
    "METHODS",
    "ConstrainedMethod",
    "EpochSelection",
    "NotApplicable",
    "calibrated_records",
    "constrained_markdown",
    "default_confidence",
    "method_label",
    "refresh_summary",
    "resolve_method",
    "run_suite",
    "run_task",
    "train_and_select",
    "write_reports",
]

Task = tuple[str, int, str]
LossFn = Callable[[Any, Any], Any]


def default_confidence() -> float:
    """The library's calibration confidence (``metricopt.metrics.constrained.DEFAULT_CONFIDENCE``)."""
    from metricopt.metrics.constrained import DEFAULT_CONFIDENCE

    return float(DEFAULT_CONFIDENCE)


# ---------------------------------------------------------------------------
# the methods


class NotApplicable(Exception):
    """A method that does not apply to a constraint (recorded as not applicable, not as a failure)."""


#: A loss builder: ``build(constraint or None, y_train) -> loss_fn(logits, target)``; raises :class:`NotApplicable`.
LossBuilder = Callable[[str | None, np.ndarray], LossFn]
#: A booster: ``fit(raw_split, seed, threads, constraint) -> (validation scores, test scores)``, or
#: ``(validation labels, validation scores, test scores)`` for a method that holds out validation rows of its
#: own; ``constraint`` is None for a method trained once for every constraint.
Booster = Callable[[Any, int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ConstrainedMethod:
    """One method of the constrained suites.

    Attributes:
        name: key in results.
        label: column header.
        per_constraint: trained once per constraint (its loss depends on it);
            otherwise trained once and selected for each constraint.
        loss: an MLP method's :data:`LossBuilder`.
        booster: a boosted-tree method's :data:`Booster`.
        indexed: ``loss`` takes ``(N, 2)`` targets ``[label, training row index]``.
        requires: a module the method needs (None: always available).
        peer: its name in :data:`benchmarks.peers.constrained.CONSTRAINED_PEERS`.
    """

    name: str
    label: str
    per_constraint: bool
    loss: LossBuilder | None = None
    booster: Booster | None = None
    indexed: bool = False
    requires: str | None = None
    peer: str | None = None

    @property
    def family(self) -> str:
        """``"booster"``, ``"peer"`` or ``"mlp"``."""
        return "booster" if self.booster is not None else "peer" if self.peer else "mlp"


def _bce(constraint: str | None, y_train: np.ndarray) -> LossFn:
    from metricopt.app.recipes.classification import make_loss

    return make_loss("bce")


def _weighted_bce(constraint: str | None, y_train: np.ndarray) -> LossFn:
    from metricopt.app.recipes.classification import make_loss

    return make_loss("weighted_bce", y_train=y_train, num_classes=2)


def _confusion_loss(**options: Any) -> LossBuilder:
    def build(constraint: str | None, y_train: np.ndarray) -> LossFn:
        from metricopt.losses import ConfusionLoss

        return ConfusionLoss(constraint, **options)

    return build


class _SumOfLosses:
    """``first(logits, target) + second(logits, target)``; ``multipliers``: the second's (a diagnostic)."""

    def __init__(self, first: LossFn, second: LossFn) -> None:
        self.first, self.second = first, second
        self.multipliers = getattr(second, "multipliers", None)

    def __call__(self, logits: Any, target: Any) -> Any:
        return self.first(logits, target) + self.second(logits, target)


def _weighted_bce_and_constrained(constraint: str | None, y_train: np.ndarray) -> LossFn:
    """Weighted BCE for the ranking of every sample plus the constrained loss at the operating point."""
    return _SumOfLosses(_weighted_bce(constraint, y_train), _confusion_loss()(constraint, y_train))


class _IndexedPeer:
    """A peer ``loss(logits, target, index)`` as ``loss_fn(logits, (B, 2) [label, training row])`` for ``fit``."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer
        self.options = dict(getattr(peer, "options", {}))

    def __call__(self, logits: Any, target: Any) -> Any:
        return self.peer(logits, target[:, 0].to(logits.dtype), target[:, 1].round().long())


#: The constraints a peer's interface takes: (objective, rate, op) -> the peer's ``rate``.
_PEER_RATES = {("recall", "precision", ">="): "precision", ("tpr", "precision", ">="): "precision",
               ("recall", "fpr", "<="): "fpr", ("tpr", "fpr", "<="): "fpr"}


def _peer(name: str) -> LossBuilder:
    def build(constraint: str | None, y_train: np.ndarray) -> LossFn:
        from metricopt.metrics.constrained import parse_constrained

        parsed = parse_constrained(constraint)
        if len(parsed.constraints) != 1:
            raise NotApplicable("the peers take one constraint")
        bound = parsed.constraints[0]
        rate = _PEER_RATES.get((parsed.objective, bound.rate, bound.op))
        if rate is None:
            raise NotApplicable(f"the peers optimise recall at a precision floor or TPR at an FPR budget, not "
                                f"{parsed.name}")
        try:
            peer = make_constrained_peer(name, rate=rate, level=bound.level, data_len=len(y_train),
                                         positive_rate=float(np.mean(y_train == 1)))
        except ValueError as exc:  # a precision floor at or below the positive rate: met by flagging everything
            raise NotApplicable(str(exc)) from None
        if peer is None:
            raise NotApplicable(f"{name} takes no {rate} constraint")
        return _IndexedPeer(peer)

    return build


def _hgb(raw: Any, seed: int, threads: int, constraint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed).fit(raw.X_train, raw.y_train)
    return model.predict_proba(raw.X_val)[:, 1], model.predict_proba(raw.X_test)[:, 1]


#: LightGBM's rounds and early stopping (those of ``metricopt.app.recipes.boosting.fit_lightgbm``).
LIGHTGBM_ROUNDS, LIGHTGBM_PATIENCE = 1000, 50


def _lightgbm(raw: Any, seed: int, threads: int, constraint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=LIGHTGBM_ROUNDS, random_state=seed, verbose=-1, n_jobs=threads)
    # LightGBM 4.6 renamed eval_set (deprecated since) to eval_X / eval_y
    names = inspect.signature(model.fit).parameters
    validation = ({"eval_X": (raw.X_val,), "eval_y": (raw.y_val,)} if "eval_X" in names
                  else {"eval_set": [(raw.X_val, raw.y_val)]})
    model.fit(raw.X_train, raw.y_train, eval_metric="binary_logloss",
              callbacks=[lightgbm.early_stopping(LIGHTGBM_PATIENCE, verbose=False)], **validation)
    return model.predict_proba(raw.X_val)[:, 1], model.predict_proba(raw.X_test)[:, 1]


def _estimator(**options: Any) -> Booster:
    """``MetricClassifier(metric=constraint, random_state=seed, **options)`` with its defaults otherwise.

    It fits on the training and validation rows together (the data the other
    methods see), holding out its own validation rows for the epoch, the
    boosting rounds and its threshold, as a user would call it. Its
    probabilities on those held-out rows are what it calibrates on: returned
    with their labels, they give the calibration at every confidence of the
    suite (at the estimator's own, the threshold it chose).
    """
    def fit(raw: Any, seed: int, threads: int, constraint: str | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import warnings

        from metricopt.app import MetricClassifier

        X = np.concatenate([raw.X_train, raw.X_val])
        y = np.concatenate([raw.y_train, raw.y_val])
        model = MetricClassifier(metric=constraint, random_state=seed, n_jobs=threads, **options)
        with warnings.catch_warnings():  # "no threshold meets ... on its validation rows": recorded as infeasible
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X, y)
        held_out = model._validation_rows(y.astype(np.int64), seed)  # the rows it held out (labels 0/1, pos 1)
        column = list(model.classes_).index(model.pos_label_)
        return (y[held_out], model.predict_proba(X[held_out])[:, column],
                model.predict_proba(raw.X_test)[:, column])

    return fit


_PEER_LABELS = {
    "libauc_pauc": "pAUC CVaR (LibAUC)",
    "libauc_pauc_kl": "pAUC KL-DRO (LibAUC)",
    "il_pauc_budget": "pAUC at budget (imbalanced-losses)",
    "il_recall_quantile": "recall at quantile (imbalanced-losses)",
}

#: The named methods; ``constrained_<method>_<strength>`` names a variant of the loss (:func:`resolve_method`).
METHODS: dict[str, ConstrainedMethod] = {
    m.name: m
    for m in (
        ConstrainedMethod("constrained", "ConfusionLoss (defaults)", True, loss=_confusion_loss()),
        ConstrainedMethod("bce", "BCE", False, loss=_bce),
        ConstrainedMethod("weighted_bce", "weighted BCE", False, loss=_weighted_bce),
        ConstrainedMethod("weighted_bce_constrained", "weighted BCE + ConfusionLoss", True,
                          loss=_weighted_bce_and_constrained),
        ConstrainedMethod("hgb", "HGB", False, booster=_hgb),
        ConstrainedMethod("lightgbm", "LightGBM log-loss", False, booster=_lightgbm, requires="lightgbm"),
        ConstrainedMethod("recipe", "MetricClassifier (recipe)", True, booster=_estimator(), requires="lightgbm"),
        ConstrainedMethod("recipe_anyloss", "MetricClassifier (loss='anyloss')", True,
                          booster=_estimator(loss="anyloss"), requires="lightgbm"),
        *(ConstrainedMethod(name, _PEER_LABELS.get(name, name), True, loss=_peer(name), indexed=True, peer=name)
          for name in CONSTRAINED_PEERS),
    )
}

_NUMBER = r"[0-9]*\.?[0-9]+(?:e-?[0-9]+)?"
_VARIANT = re.compile(rf"^constrained_(lagrangian|augmented|penalty|quantile)_({_NUMBER})(?:_L({_NUMBER}|auto))?$")


def resolve_method(name: str) -> ConstrainedMethod:
    """The method named ``name``: one of :data:`METHODS` or a variant ``constrained_<method>_<strength>[_L<L>]``
    (``ConfusionLoss(constraint, constraint_method=method, constraint_strength=strength, amplification=L)``;
    without ``_L``, the loss's default amplification).

    Example:
        >>> m = resolve_method("constrained_augmented_10")
        >>> m.label, m.per_constraint
        ('ConfusionLoss augmented 10', True)
        >>> resolve_method("constrained_lagrangian_1_L20").label
        'ConfusionLoss lagrangian 1 L=20'
    """
    if name in METHODS:
        return METHODS[name]
    match = _VARIANT.match(name)
    if match is None:
        raise ValueError(f"unknown constrained method {name!r}; known: {sorted(METHODS)} and "
                         "'constrained_<lagrangian|augmented|penalty|quantile>_<strength>[_L<amplification|auto>]'")
    method, strength, amplification = match.group(1), float(match.group(2)), match.group(3)
    options: dict[str, Any] = {"constraint_method": method, "constraint_strength": strength}
    label = f"ConfusionLoss {method} {strength:g}"
    if amplification is not None:
        options["amplification"] = amplification if amplification == "auto" else float(amplification)
        label += f" L={amplification}"
    return ConstrainedMethod(name, label, True, loss=_confusion_loss(**options))


def method_label(name: str) -> str:
    """Column header of a method."""
    try:
        return resolve_method(name).label
    except ValueError:
        return name


def method_status(name: str) -> str | None:
    """None when the method can run here, else why not (``"not installed: ..."``)."""
    method = resolve_method(name)
    if method.peer is not None:
        status = constrained_peer_status(method.peer)
        return None if status == "ok" else status
    if method.requires is not None:
        import importlib

        try:
            importlib.import_module(method.requires)
        except ImportError as exc:
            return f"not installed: {exc} (install: pip install {method.requires})"
    return None


# ---------------------------------------------------------------------------
# training, selection, calibration

#: Scores of a diverged network (NaN or infinite logits) are clipped to +-this: finite, so thresholds exist.
_SCORE_LIMIT = 1e6


def _scores(model: Any, X: np.ndarray) -> np.ndarray:
    """The MLP's logits as float64: monotone in its probability, without float32's saturation at 1."""
    from metricopt.predict import predict_logits

    z = predict_logits(model, X).squeeze(-1).double().cpu().numpy()
    return np.clip(np.nan_to_num(z, nan=-_SCORE_LIMIT), -_SCORE_LIMIT, _SCORE_LIMIT)


@dataclass(frozen=True)
class _Kept:
    """One constraint's kept epoch: its selection score, and its validation and test scores."""

    epoch: int
    utility: float
    objective: float
    feasible: bool
    val_scores: np.ndarray
    test_scores: np.ndarray


@dataclass
class EpochSelection:
    """Per constraint, the epoch whose validation scores give the best objective at the best feasible threshold.

    :meth:`observe` takes each epoch's validation and test scores; an epoch
    replaces the kept one only when it is strictly better (the first on ties).
    An epoch with no feasible threshold counts as the objective's worst value.
    The criterion is ``metricopt.evaluation.selection_score(..., confidence=0.5)``
    (the library's epoch selection, there at its default confidence), computed
    here through ``best_threshold`` to keep the feasibility too.

    Example:
        >>> selection = EpochSelection(np.array([0, 0, 1, 1]), ("recall@precision>=0.9",))
        >>> selection.observe(1, np.array([0.9, 0.1, 0.2, 0.8]), np.zeros(4))  # precision 1 needs recall 0.5
        >>> selection.observe(2, np.array([0.1, 0.2, 0.8, 0.9]), np.ones(4))   # recall 1 at precision 1
        >>> selection.observe(3, np.array([0.1, 0.2, 0.8, 0.9]), np.ones(4))   # a tie: the first is kept
        >>> kept = selection.best["recall@precision>=0.9"]
        >>> kept.epoch, kept.objective, kept.feasible
        (2, 1.0, True)
    """

    y_val: np.ndarray
    constraints: tuple[str, ...]
    best: dict[str, _Kept] = field(default_factory=dict)

    def observe(self, epoch: int, val_scores: np.ndarray, test_scores: np.ndarray) -> None:
        from metricopt.metrics.constrained import best_threshold, parse_constrained

        for constraint in self.constraints:
            metric = parse_constrained(constraint)
            choice = best_threshold(self.y_val, val_scores, metric, confidence=0.5)
            objective = choice.score if choice.feasible else metric.worst
            utility = metric.utility(objective)
            kept = self.best.get(constraint)
            if kept is None or utility > kept.utility:
                self.best[constraint] = _Kept(epoch, utility, objective, choice.feasible, np.array(val_scores),
                                              np.array(test_scores))


def train_and_select(spec: ConstrainedSpec, split: Any, loss_fn: LossFn, constraints: Sequence[str], *, seed: int,
                     indexed: bool = False) -> tuple[EpochSelection, float]:
    """Train the seed's MLP on the standardised ``split`` with ``loss_fn``; keep each constraint's best epoch.

    Returns the :class:`EpochSelection` and the seconds of the training (the
    per-epoch scoring included).
    """
    from metricopt.app.recipes.classification import train_classifier

    selection = EpochSelection(np.asarray(split.y_val), tuple(constraints))

    def evaluate(model: Any, epoch: int) -> None:
        selection.observe(epoch, _scores(model, split.X_val), _scores(model, split.X_test))

    y = split.y_train
    if indexed:  # [label, training row] for losses with per-sample state (float32 holds rows < 2**24 exactly)
        y = np.stack([split.y_train, np.arange(len(split.y_train))], axis=1)
    start = time.perf_counter()
    train_classifier(loss_fn, split.X_train, y, num_classes=2, hidden_sizes=spec.hidden_sizes, seed=seed,
                     evaluate=evaluate, epochs=spec.epochs, batch_size=spec.batch_size,
                     learning_rate=spec.learning_rate, weight_decay=spec.weight_decay)
    return selection, time.perf_counter() - start


def calibrated_records(y_val: np.ndarray, y_test: np.ndarray, val_scores: np.ndarray, test_scores: np.ndarray,
                       constraint: str, confidences: Sequence[float], **fields: Any) -> list[dict[str, Any]]:
    """One record per confidence: the threshold calibrated on validation, applied to test.

    Each record holds ``fields`` and ``constraint``, ``confidence``, the test
    ``objective``, whether the constraint ``held``, the constrained ``score``
    (the objective, or its worst value where the constraint broke), the test
    ``rates``, the ``threshold`` and whether validation had a feasible one
    (``val_feasible``) with its objective (``val_objective``).
    """
    from metricopt.metrics.constrained import calibrate_threshold, constrained_report, parse_constrained

    metric = parse_constrained(constraint)
    out = []
    for q in confidences:
        choice = calibrate_threshold(y_val, val_scores, metric, confidence=q)
        test = constrained_report(y_test, (test_scores > choice.threshold).astype(np.int64), metric)
        out.append({
            **fields, "constraint": constraint, "confidence": q, "objective": test["objective"],
            "held": test["held"], "score": test["objective"] if test["held"] else metric.worst,
            "rates": {k: v for k, v in test.items() if k not in ("objective", "held")},
            "threshold": choice.threshold, "val_feasible": choice.feasible, "val_objective": choice.score,
        })
    return out


def _run_mlp(spec: ConstrainedSpec, ds: Any, table: str, seed: int, method: ConstrainedMethod
             ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    from metricopt.app.data import train_val_test_split

    split = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=seed)
    records: list[dict[str, Any]] = []
    not_applicable: dict[str, str] = {}
    assert method.loss is not None
    for trained_for in (spec.constraints if method.per_constraint else (None,)):
        targets = (trained_for,) if trained_for else spec.constraints
        try:
            loss_fn = method.loss(trained_for, split.y_train)
        except NotApplicable as exc:
            not_applicable[str(trained_for)] = str(exc)
            continue
        selection, seconds = train_and_select(spec, split, loss_fn, targets, seed=seed, indexed=method.indexed)
        extra: dict[str, Any] = {}
        if getattr(loss_fn, "options", None):
            extra["loss_options"] = loss_fn.options
        multipliers = getattr(getattr(loss_fn, "multipliers", None), "values", None)
        if multipliers is not None:  # the Lagrange multipliers at the end of training (diagnostic)
            extra["multipliers"] = multipliers.detach().cpu().reshape(-1).tolist()
        for constraint in targets:
            kept = selection.best[constraint]
            records += calibrated_records(
                split.y_val, split.y_test, kept.val_scores, kept.test_scores, constraint, spec.confidences,
                dataset=table, task="binary", method=method.name, seed=seed, epoch=kept.epoch,
                selection_feasible=kept.feasible, train_seconds=round(seconds, 3), **extra)
    return records, not_applicable


def _run_booster(spec: ConstrainedSpec, ds: Any, table: str, seed: int, method: ConstrainedMethod
                 ) -> list[dict[str, Any]]:
    from metricopt.app.data import train_val_test_split

    raw = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=seed,
                               standardize=False)
    assert method.booster is not None
    records = []
    for trained_for in (spec.constraints if method.per_constraint else (None,)):
        start = time.perf_counter()
        scores = method.booster(raw, seed, spec.threads, trained_for)
        seconds = time.perf_counter() - start
        y_val, val_scores, test_scores = scores if len(scores) == 3 else (raw.y_val, *scores)
        records += [r for constraint in ((trained_for,) if trained_for else spec.constraints)
                    for r in calibrated_records(
            y_val, raw.y_test, np.asarray(val_scores, dtype=np.float64), np.asarray(test_scores, dtype=np.float64),
            constraint, spec.confidences, dataset=table, task="binary", method=method.name, seed=seed, epoch=None,
            selection_feasible=None, train_seconds=round(seconds, 3))]
    return records


def run_task(spec: ConstrainedSpec, table: str, seed: int, unit: str) -> dict[str, Any]:
    """Run one method (``unit``) on one (table, seed), for every constraint of the spec.

    Returns ``{"key": [table, seed, unit], "records": [...], "not_applicable":
    {constraint: reason}, "failed": {unit: error}, "seconds": float}``. An
    error is recorded under ``"failed"``, not raised: one method failing on
    one table does not end a run of hours.
    """
    from threadpoolctl import threadpool_limits

    from metricopt.app.data.collection import load_table

    with torch_threads(spec.threads), threadpool_limits(limits=spec.threads):
        start = time.perf_counter()
        out: dict[str, Any] = {"key": [table, seed, unit], "records": [], "not_applicable": {}, "failed": {}}
        try:
            ds = load_table(table)
            method = resolve_method(unit)
            if method.booster is not None:
                out["records"] = _run_booster(spec, ds, table, seed, method)
            else:
                out["records"], out["not_applicable"] = _run_mlp(spec, ds, table, seed, method)
        except Exception as exc:  # noqa: BLE001 - recorded and reported, see the docstring
            out["failed"][unit] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = round(time.perf_counter() - start, 3)
        return out


# ---------------------------------------------------------------------------
# the run


def _cost(task: Task, spec: ConstrainedSpec) -> float:
    method = resolve_method(task[2])
    if method.booster is not None:  # the estimator trains an MLP and LightGBM per constraint
        weight = 4.0 * len(spec.constraints) if method.per_constraint else 0.3
    else:
        weight = len(spec.constraints) if method.per_constraint else 1.0
    return table_cost(task[0], weight)


def _loss_defaults(constraint: str) -> dict[str, Any]:
    """What ``ConfusionLoss(constraint)`` means at run time (its defaults may change)."""
    from metricopt.losses import ConfusionLoss

    loss = ConfusionLoss(constraint)
    return {"constraint_method": loss.multipliers.method, "constraint_strength": loss.multipliers.strength,
            "amplification": loss.amplification}


def run_suite(
    spec: ConstrainedSpec,
    *,
    jobs: int = 1,
    progress: bool = True,
    command: Sequence[str] | None = None,
    partial_path: Path | None = None,
    runner: Callable[[ConstrainedSpec, str, int, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the constrained spec; returns the JSON-ready payload.

    Args:
        jobs: worker processes (spawned; 1: in this process).
        partial_path: the partial file: finished tasks are appended to it and
            skipped when a run with the same spec starts again (None: no file).
        runner: the task function (default :func:`run_task`; tests replace it, with ``jobs=1``).
    """
    runner = run_task if runner is None else runner
    with torch_threads(spec.threads):
        metadata = collect_metadata(command)
        tables = resolve_tables(spec.tables)
        infos = {t: table_info(t) for t in sorted(tables)}
        multiclass = [t for t, info in infos.items() if info["ir_group"] == "multi-class"]
        if multiclass:
            raise ValueError(f"the constrained suites take binary tables; got multi-class {multiclass}")
        unavailable = {m: status for m in spec.methods if (status := method_status(m)) is not None}
        methods = [m for m in spec.methods if m not in unavailable]
        tasks: list[Task] = sorted(((t, s, m) for t in tables for s in spec.seeds for m in methods),
                                   key=lambda task: (-_cost(task, spec), task))
        done = load_partial(partial_path, spec)
        outputs, wall = run_resumable(runner, tasks, spec=spec, done=done, partial_path=partial_path, jobs=jobs,
                                      progress=progress)
        not_applicable: dict[str, dict[str, str]] = {}
        for out in outputs:
            for constraint, reason in out.get("not_applicable", {}).items():
                not_applicable.setdefault(out["key"][2], {}).setdefault(constraint, reason)
        records = sorted((r for out in outputs for r in out["records"]),
                         key=lambda r: (r["dataset"], r["constraint"], r["confidence"], r["method"], r["seed"]))
        metadata["load_average_at_end"] = load_average()
        versions = constrained_peer_versions()
        for name in ("lightgbm", "scikit-learn", "scipy"):
            versions[name] = package_status(name)
        payload: dict[str, Any] = {
            "suite": spec.name,
            "kind": spec.kind,
            "title": f"Constrained metrics (`{spec.name}`): the constrained loss against calibrated baselines",
            "protocol": "",
            "spec": spec_to_dict(spec),
            "metadata": metadata,
            **run_summary(tasks, done, outputs, jobs=jobs, wall=wall),
            "peers": versions,
            "peer_descriptions": {m: CONSTRAINED_PEERS[m] for m in spec.methods if m in CONSTRAINED_PEERS},
            "default_confidence": default_confidence(),
            "loss_defaults": _loss_defaults(spec.constraints[0]),
            "methods": {m: {"label": method_label(m), "family": resolve_method(m).family,
                            "trained_per_constraint": resolve_method(m).per_constraint} for m in spec.methods},
            "unavailable": unavailable,
            "not_applicable": not_applicable,
            "failures": failures_of(outputs),
            "reference": spec.reference,
            "datasets": infos,
            "records": records,
        }
        payload["protocol"] = _protocol(spec, len(tables), payload)
        return refresh_summary(payload)


def _protocol(spec: ConstrainedSpec, n_tables: int, payload: dict[str, Any]) -> str:
    which = spec.tables if isinstance(spec.tables, str) else "listed"
    defaults = payload["loss_defaults"]
    peers = [m for m in spec.methods if m in CONSTRAINED_PEERS]
    variants = [m for m in spec.methods if m.startswith("constrained_")]
    return (
        f"Protocol: {n_tables} {which} binary tables of `metricopt.app.data.collection`, seeds "
        f"{tuple(spec.seeds)}; per (table, seed) one stratified 60/20/20 train / validation / test split "
        "(`train_val_test_split(random_state=seed, standardize=False)`; the MLPs take its train-standardised "
        f"copy). Constraints: {', '.join(f'`{c}`' for c in spec.constraints)}. MLP methods: MLP "
        f"{tuple(spec.hidden_sizes)}, one initialisation per seed, Adam lr {spec.learning_rate}, batch "
        f"{spec.batch_size}, {spec.epochs} epochs (`train_classifier`); after each epoch the validation and test "
        "rows are scored (the logit) and, per constraint, the epoch whose validation scores give the best "
        "objective at the best feasible threshold (`best_threshold(confidence=0.5)`; an epoch with none counts "
        "as the objective's worst value; the first on ties) is kept. `BCE` and `weighted BCE` (inverse class "
        "frequency, `make_loss('weighted_bce')`) train once and are selected per constraint; "
        f"`ConfusionLoss (defaults)` is `ConfusionLoss(constraint)` (constraint_method "
        f"{defaults['constraint_method']!r}, constraint_strength {defaults['constraint_strength']!r}, "
        f"amplification {defaults['amplification']!r} at this run), trained once per constraint"
        + (", as are its variants `ConfusionLoss <method> <strength>` (`constraint_method`, "
           "`constraint_strength`)" if variants else "")
        + (", and the peers' losses (" + "; ".join(f"`{method_label(m)}`: {CONSTRAINED_PEERS[m]}" for m in peers)
           + "), with the same model, Adam and batches, each given its training row indices; a peer that does "
             "not apply to a constraint is marked N/A there" if peers else "")
        + (". `MetricClassifier (recipe)` is `metricopt.app.MetricClassifier(metric=constraint, random_state=seed)` "
           "with its defaults (an MLP with weighted BCE and LightGBM's log-loss, probabilities averaged; "
           "`MetricClassifier (loss='anyloss')`: the MLP trained with the constrained loss), fit per constraint on "
           "the raw training and validation rows together, from which it holds out its own (25 %: its epoch, its "
           "boosting rounds, its threshold); the calibration below uses its held-out rows and its probabilities "
           "there (at q = 0.8, the threshold it chose itself)" if any(
               m in spec.methods for m in ("recipe", "recipe_anyloss")) else "")
        + ". `HGB`: `HistGradientBoostingClassifier(random_state=seed)`, its defaults; `LightGBM log-loss`: "
        f"`LGBMClassifier(n_estimators={LIGHTGBM_ROUNDS}, random_state=seed, verbose=-1, n_jobs=1)` stopped "
        f"early on the validation log-loss (patience {LIGHTGBM_PATIENCE}); both fit on the raw training rows "
        "and score by their probability. Calibration, every method: the threshold is "
        "`calibrate_threshold(y_val, validation scores, constraint, confidence=q)` for q in "
        f"{tuple(spec.confidences)} (a one-sided Wilson bound of the constrained rate at q must meet the level; "
        f"q = 0.5: the rate itself, the practitioner's rule; the library's default is q = "
        f"{payload['default_confidence']:g}); test rows with a score above it are positive. Reported per "
        "constraint and q: the mean over tables of the seed-mean test objective, the rate at which the "
        "constraint held on test over tables x seeds, the mean constrained score (the objective where the "
        "constraint held, its worst value where not). Wins / ties / losses of the reference by table "
        f"seed-means, tie = |difference| < {spec.tie_tolerance}; average rank over the tables where every "
        "method with results ran (1 = best); Wilcoxon signed-rank test (two-sided, zero differences dropped) of "
        "the table seed-means. Seconds: wall time of one fit on one thread (MLP fits include the per-epoch "
        "scoring)."
    )


# ---------------------------------------------------------------------------
# the summary


def _key(kind: str, constraint: str, confidence: float) -> str:
    return f"{kind}|{constraint}|{confidence:g}"


def _score_table(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~benchmarks.harness.results.aggregate`'s table of the objectives and constrained scores, keyed
    ``"<objective|score>|<constraint>|<confidence>"``."""
    rows = [{"task": "binary", "dataset": r["dataset"], "method": r["method"], "seed": r["seed"],
             "metric": _key(kind, r["constraint"], r["confidence"]), "test": r[kind]}
            for r in records for kind in ("objective", "score")]
    return aggregate(rows).get("binary", {})


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute ``payload["summary"]`` from its records, in place; returns the payload.

    ``summary["constraints"][constraint][str(confidence)]`` holds the methods
    with results, their ``held_rate`` (test, over tables x seeds),
    ``val_feasible_rate`` and ``records`` counts, and :func:`benchmarks.suites.tabular.compare`'s
    means, ranks and comparisons of the ``"objective"`` and of the
    constrained ``"score"``; ``summary["seconds"]`` the fit seconds per method.
    """
    spec = payload["spec"]
    reference, tolerance = payload["reference"], spec["tie_tolerance"]
    methods = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    records = payload["records"]
    table = _score_table(records)
    by_cell: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in records:
        by_cell.setdefault((r["constraint"], float(r["confidence"])), []).append(r)
    out: dict[str, Any] = {}
    for constraint in spec["constraints"]:
        out[constraint] = {}
        for q in spec["confidences"]:
            cell = by_cell.get((constraint, float(q)), [])
            present = [m for m in methods if any(r["method"] == m for r in cell)]
            part: dict[str, Any] = {
                "methods": present,
                "held_rate": {m: _mean([float(r["held"]) for r in cell if r["method"] == m]) for m in present},
                "val_feasible_rate": {m: _mean([float(r["val_feasible"]) for r in cell if r["method"] == m])
                                      for m in present},
                "records": {m: sum(1 for r in cell if r["method"] == m) for m in present},
            }
            for kind in ("objective", "score"):
                key = _key(kind, constraint, q)
                part[kind] = compare(table, present, [key], reference, tolerance)["per_metric"][key]
            out[constraint][f"{q:g}"] = part
    first = spec["confidences"][0]
    seconds: dict[str, dict[str, float | None]] = {}
    for m in methods:
        values = [float(r["train_seconds"]) for r in records if r["method"] == m and r["confidence"] == first]
        seconds[m] = {"mean": _mean(values), "median": float(np.median(values)) if values else None,
                      "max": float(np.max(values)) if values else None}
    payload["summary"] = {"constraints": out, "seconds": seconds}
    payload["records"] = payload.pop("records")  # keep the records last in the file
    return payload


# ---------------------------------------------------------------------------
# Markdown and plot


#: The overview's methods, in this order (those of a run; the variants follow in a table of their own).
OVERVIEW_METHODS = ("recipe", "recipe_anyloss", "constrained", "weighted_bce_constrained", "bce", "weighted_bce",
                    "hgb", "lightgbm", *CONSTRAINED_PEERS)


def _percent(value: float | None) -> str:
    return "N/A" if value is None else f"{100 * value:.0f}%"


def _overview_confidences(payload: dict[str, Any]) -> list[float]:
    wanted = (0.5, payload["default_confidence"])
    return [q for q in payload["spec"]["confidences"] if any(abs(q - w) < 1e-12 for w in wanted)]


def _overview_table(payload: dict[str, Any], methods: Sequence[str]) -> list[str]:
    summary = payload["summary"]["constraints"]
    constraints = payload["spec"]["constraints"]
    heads = ["method", "q", *(f"`{c}`" for c in constraints)]
    lines = [row(heads), row(["---"] * len(heads))]
    for m in methods:
        for q in _overview_confidences(payload):
            cells = [method_label(m), f"{q:g}"]
            for c in constraints:
                part = summary[c][f"{q:g}"]
                if m not in part["methods"]:
                    cells.append("N/A")
                    continue
                cells.append(f"{number(part['objective']['mean'][m])} / {_percent(part['held_rate'][m])} / "
                             f"{number(part['score']['mean'][m])}")
            lines.append(row(cells))
    return lines + [""]


def _detail(payload: dict[str, Any], constraint: str, q: float) -> list[str]:
    part = payload["summary"]["constraints"][constraint][f"{q:g}"]
    seconds = payload["summary"]["seconds"]
    reference, methods = payload["reference"], part["methods"]
    n_tables = len(payload["datasets"])
    heads = ["method", "objective", "held", "score", "objective rank", "score rank", "validation feasible",
             "s / fit (mean, max)"]
    lines = [row(heads), row(["---"] * len(heads))]
    objective, score = part["objective"], part["score"]
    bold = {"objective": best(objective["mean"]), "held": best(part["held_rate"]), "score": best(score["mean"]),
            "objective rank": best(objective["average_rank"], low=True),
            "score rank": best(score["average_rank"], low=True)}

    def cell(name: str, m: str, text: str) -> str:
        return f"**{text}**" if m in bold[name] else text

    for m in methods:
        n = objective["datasets_per_method"][m]
        s = seconds.get(m, {})
        lines.append(row([
            method_label(m) + (f" ({n} tables)" if n < n_tables else ""),
            cell("objective", m, number(objective["mean"][m])), cell("held", m, _percent(part["held_rate"][m])),
            cell("score", m, number(score["mean"][m])),
            cell("objective rank", m, number(objective["average_rank"][m], 2)),
            cell("score rank", m, number(score["average_rank"][m], 2)), _percent(part["val_feasible_rate"][m]),
            "N/A" if s.get("mean") is None else f"{s['mean']:.2f}, {s['max']:.2f}",
        ]))
    lines += ["", f"Tables ranked (every method with results ran): {objective['ranked_datasets']}.", ""]
    if reference in methods and len(methods) > 1:
        heads = ["against", "objective W/T/L", "mean diff", "worst", "Wilcoxon p", "score W/T/L", "mean diff",
                 "worst", "Wilcoxon p"]
        lines += [row(heads), row(["---"] * len(heads))]
        for base in objective["against"]:
            cells = [method_label(base)]
            for kind in (objective, score):
                r = kind["against"][base]
                cells += (["N/A"] * 4 if r["n"] == 0 else [
                    wtl(r), f"{r['mean_diff']:+.3f}", f"{r['worst_diff']:+.3f} {r['worst_dataset']}",
                    p_value(r["wilcoxon"]["p_value"])])
            lines.append(row(cells))
        lines.append("")
    return lines


def _held_by_confidence(payload: dict[str, Any], constraint: str) -> list[str]:
    parts = payload["summary"]["constraints"][constraint]
    confidences = payload["spec"]["confidences"]
    methods = [m for m in payload["methods"] if any(m in parts[f"{q:g}"]["methods"] for q in confidences)]
    heads = ["method", *(f"q = {q:g}" for q in confidences)]
    lines = [row(heads), row(["---"] * len(heads))]
    for m in methods:
        cells = [method_label(m)]
        for q in confidences:
            part = parts[f"{q:g}"]
            cells.append("N/A" if m not in part["methods"] else
                         f"{_percent(part['held_rate'][m])} ({number(part['objective']['mean'][m])})")
        lines.append(row(cells))
    return lines + [""]


def _per_table(payload: dict[str, Any], constraint: str, q: float) -> list[str]:
    part = payload["summary"]["constraints"][constraint][f"{q:g}"]
    table = _score_table(payload["records"])
    key = _key("score", constraint, q)
    heads = ["table", "IR group", *(method_label(m) for m in part["methods"])]
    lines = [row(heads), row(["---"] * len(heads))]
    for name in sorted(payload["datasets"]):
        cells_k = table.get(name, {}).get(key, {})
        values = {m: cells_k[m]["mean"] if m in cells_k else None for m in part["methods"]}
        bold = best(values)
        lines.append(row([name, payload["datasets"][name]["ir_group"]] + [
            "N/A" if values[m] is None else (f"**{values[m]:.3f}**" if m in bold else f"{values[m]:.3f}")
            for m in part["methods"]]))
    return lines + [""]


def constrained_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a constrained payload."""
    spec = payload["spec"]
    ran = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload),
             f"- tasks: {payload['tasks']} ({payload['resumed_tasks']} resumed from the partial file); task "
             f"seconds summed over workers {payload['task_seconds']:.0f}", "", payload["protocol"], ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    if payload.get("not_applicable"):
        lines += ["Not applicable (N/A): " + "; ".join(
            f"{method_label(m)} on {', '.join(f'`{c}`' for c in sorted(by))}"
            for m, by in payload["not_applicable"].items()), ""]
    if payload.get("failures"):
        shown = payload["failures"][:20]
        lines += [f"Failed fits ({len(payload['failures'])}; their tables are missing for that method): "
                  + "; ".join(f"{f['unit']} on {f['table']} seed {f['seed']}: {f['error']}" for f in shown)
                  + (" ..." if len(payload["failures"]) > len(shown) else ""), ""]
    confidences = ", ".join(f"{q:g}" for q in _overview_confidences(payload))
    legend = (f"Each cell: mean test objective / constraint held on test (over tables x seeds) / mean constrained "
              f"score, over {len(payload['datasets'])} tables; q: the calibration confidence ({confidences}: "
              "the plain rule and the library's default).")
    overview = [m for m in OVERVIEW_METHODS if m in ran]
    variants = [m for m in ran if m not in OVERVIEW_METHODS]
    lines += ["## Overview", "", legend, ""]
    lines += _overview_table(payload, overview)
    if variants:
        lines += ["### The loss's variants", ""] + _overview_table(payload, variants)
    default = payload["default_confidence"]
    for constraint in spec["constraints"]:
        lines += [f"## `{constraint}`", "", "Constraint held on test (mean objective) by calibration confidence q:",
                  ""]
        lines += _held_by_confidence(payload, constraint)
        for q in spec["confidences"]:
            lines += [f"### `{constraint}`, q = {q:g}", ""]
            lines += _detail(payload, constraint, q)
    per_table_q = default if default in spec["confidences"] else spec["confidences"][-1]
    for constraint in spec["constraints"]:
        lines += [f"## Per table: constrained score of `{constraint}` at q = {per_table_q:g} (test, mean over "
                  "seeds)", ""]
        lines += _per_table(payload, constraint, per_table_q)
    return "\n".join(lines).rstrip() + "\n"


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` and (``plots``) ``<suite>.png``; returns the paths."""
    from benchmarks.harness.plots import plot_constrained

    return write_suite_reports(payload, output_dir, markdown=constrained_markdown, plot=plot_constrained,
                               plots=plots)
