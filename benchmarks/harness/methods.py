"""The training recipes a benchmark compares, as data.

A :class:`Method` says how to build the loss (and, for losses with parameters,
the model wrapper), whether it is trained once per target metric, how its
decisions are taken (threshold 0.5 / argmax, or a threshold tuned on
validation for the target metric), and which tasks it supports. Methods that
share a ``train_group`` share one training run (BCE at 0.5 and BCE with a tuned
threshold are the same network).

Recipes:

=============== ============================================================
``anyloss``      AnyLoss for the target metric (``ConfusionLoss``), decision
                 at 0.5 (argmax multi-class); trained once per target metric.
``anyloss_tuned`` the same network, threshold tuned on validation for the
                 target metric; binary only.
``bce``          (binary) cross-entropy, decision at 0.5 / argmax.
``bce_tuned``    the same network, threshold tuned on validation for the
                 target metric (``evaluation.tune_threshold``); binary only.
``weighted_bce`` cross-entropy weighted by inverse class frequency.
``focal``        focal loss (gamma from the spec).
``dice``         MONAI ``DiceLoss`` (batch-level soft Dice = soft F1; softmax
                 and macro over classes for multi-class); peer, optional.
``il_focal``     imbalanced-losses' ``SigmoidFocalLoss`` with its defaults
                 (alpha 0.25, gamma 2), decision at 0.5; ``il_focal_tuned``:
                 the same network, threshold tuned; binary only; peer, optional.
``sigmoid_f1``   a batch-level soft F1 on sigmoid probabilities, ``1 - 2 TP /
                 (2 TP + FP + FN)`` (the naive 5-line soft F1 of
                 :func:`benchmarks.suites.speed.naive_soft_f1`), decision at
                 0.5; binary only.
``aucm``         LibAUC ``AUCMLoss`` on sigmoid scores, threshold tuned on
                 validation (an AUC loss has no natural threshold); binary
                 only; peer, optional.
``rambo_ap``     metricopt's ``APLoss`` (RaMBO: 1 - AP of the batch through
                 blackbox-differentiated exact ranks) with its defaults, on the
                 logits; threshold tuned (a rank loss fixes no threshold);
                 binary only.
``rambo_auroc``  metricopt's ``AUROCLoss`` (RaMBO, 1 - AUROC) with its
                 defaults; as ``rambo_ap``.
``libauc_ap``    LibAUC 2.0.1 ``APLoss`` (SOAP) with its documented defaults
                 (margin 1.0, gamma 0.9, squared hinge) on sigmoid scores,
                 fed each sample's training row index
                 (:attr:`Method.indexed_targets`; see
                 :class:`benchmarks.peers.classification.SOAPCriterion`); trained with
                 the same Adam as every method, not LibAUC's SOAP optimizer;
                 threshold tuned; binary only; peer, optional.
``libauc_ap_own`` the same loss trained LibAUC's way: its ``SOAP`` optimizer
                 and ``DualSampler`` (:func:`benchmarks.peers.classification.fit_libauc_protocol`).
``rambo_ap_oversampled`` ``rambo_ap`` on batches topped up to at least 32
                 rows of each class (``fit(batching="oversampled")``,
                 :func:`metricopt.batches.oversampled_batches`).
``bce_oversampled`` BCE on the same oversampled batches: the control that
                 says whether the batches or the loss make a difference.
=============== ============================================================

Rank metrics (``"ap"``, ``"auroc"``; :data:`metricopt.evaluation.THRESHOLD_FREE_METRICS`)
are scored from the probabilities, so ``tune`` never applies to them (their
records carry threshold None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from benchmarks.peers import classification as peers
from metricopt.app.recipes.classification import make_loss
from metricopt.losses import APLoss, AUROCLoss

__all__ = ["METHODS", "BuildContext", "Method", "anyloss_method", "method_label", "resolve_methods"]


@dataclass(frozen=True)
class BuildContext:
    """What a method's builder may use: the task and the training labels."""

    num_classes: int
    y_train: np.ndarray
    metric: str
    amplification: float | str
    focal_gamma: float

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.y_train == 1))


#: builder(model, context) -> (model to train, loss_fn), or None when a peer is missing.
Builder = Callable[[nn.Module, BuildContext], tuple[nn.Module, Any] | None]


@dataclass(frozen=True)
class Method:
    """One training recipe.

    Attributes:
        name: key in results.
        label: column header in tables.
        build: see :data:`Builder`.
        per_metric: trained once per target metric (its loss depends on it).
        tune: decisions at a threshold tuned on validation for the target metric.
        tasks: ``"binary"`` and/or ``"multiclass"``.
        train_group: methods with the same group share one training run.
        peer: name in :data:`benchmarks.peers.classification.PEERS` if the loss is a peer's.
        amplification: AnyLoss steepness override (ablation variants).
        indexed_targets: ``fit`` gets ``(N, 2)`` integer targets ``[label,
            training row index]`` instead of ``(N,)`` labels (losses that keep
            per-sample state, such as LibAUC's SOAP ``APLoss``).
        batching: ``fit``'s ``batching`` (``"shuffled"``, ``"stratified"``, ``"oversampled"``).
        libauc_protocol: trained by LibAUC's own recipe (its optimizer and
            sampler) instead of ``fit``.
    """

    name: str
    label: str
    build: Builder
    per_metric: bool = False
    tune: bool = False
    tasks: tuple[str, ...] = ("binary", "multiclass")
    train_group: str = ""
    peer: str | None = None
    amplification: float | str | None = None
    indexed_targets: bool = False
    batching: str = "shuffled"
    libauc_protocol: bool = False

    @property
    def group(self) -> str:
        return self.train_group or self.name


def _anyloss(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, make_loss("anyloss", metric=ctx.metric, amplification=ctx.amplification, num_classes=ctx.num_classes)


def _bce(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, make_loss("bce")


def _weighted_bce(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, make_loss("weighted_bce", y_train=ctx.y_train, num_classes=ctx.num_classes)


def _focal(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, make_loss("focal", gamma=ctx.focal_gamma)


def _dice(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any] | None:
    fn = peers.dice_loss_fn(ctx.num_classes)
    return None if fn is None else (model, fn)


def _il_focal(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any] | None:
    fn = peers.focal_loss_fn()
    return None if fn is None else (model, fn)


def _sigmoid_f1(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    from benchmarks.suites.speed import naive_soft_f1

    return model, naive_soft_f1


def _aucm(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any] | None:
    criterion = peers.make_aucm(ctx.positive_rate)
    if criterion is None:
        return None
    wrapped = peers.ModelWithCriterion(model, criterion)
    return wrapped, wrapped.criterion


def _rambo_ap(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, APLoss()


def _rambo_auroc(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any]:
    return model, AUROCLoss()


def _libauc_ap(model: nn.Module, ctx: BuildContext) -> tuple[nn.Module, Any] | None:
    criterion = peers.make_soap(len(ctx.y_train))
    return None if criterion is None else (model, criterion)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("anyloss", "AnyLoss", _anyloss, per_metric=True),
        Method("anyloss_tuned", "AnyLoss tuned", _anyloss, per_metric=True, tune=True, tasks=("binary",),
               train_group="anyloss"),
        Method("bce", "BCE", _bce, train_group="bce"),
        Method("bce_tuned", "BCE tuned", _bce, tune=True, tasks=("binary",), train_group="bce"),
        Method("weighted_bce", "weighted BCE", _weighted_bce),
        Method("focal", "focal", _focal),
        Method("dice", "Dice (MONAI)", _dice, peer="monai"),
        Method("sigmoid_f1", "sigmoid soft F1", _sigmoid_f1, tasks=("binary",)),
        Method("il_focal", "focal (imbalanced-losses)", _il_focal, tasks=("binary",), peer="imbalanced_losses",
               train_group="il_focal"),
        Method("il_focal_tuned", "focal (imbalanced-losses) tuned", _il_focal, tune=True, tasks=("binary",),
               peer="imbalanced_losses", train_group="il_focal"),
        Method("aucm", "AUCM (LibAUC, tuned)", _aucm, tune=True, tasks=("binary",), peer="libauc"),
        Method("rambo_ap", "APLoss (RaMBO)", _rambo_ap, tune=True, tasks=("binary",)),
        Method("rambo_auroc", "AUROCLoss (RaMBO)", _rambo_auroc, tune=True, tasks=("binary",)),
        Method("libauc_ap", "APLoss (LibAUC SOAP)", _libauc_ap, tune=True, tasks=("binary",), peer="libauc",
               indexed_targets=True),
        Method("libauc_ap_own", "APLoss (LibAUC SOAP, its optimizer and sampler)", _libauc_ap, tune=True,
               tasks=("binary",), peer="libauc", indexed_targets=True, libauc_protocol=True),
        Method("rambo_ap_oversampled", "APLoss (RaMBO), oversampled batches", _rambo_ap, tune=True,
               tasks=("binary",), batching="oversampled"),
        Method("bce_oversampled", "BCE, oversampled batches", _bce, batching="oversampled"),
    )
}


def ablation_name(amplification: float | str) -> str:
    """``"auto"`` or ``"L=73"`` for an AnyLoss steepness."""
    return "auto" if amplification == "auto" else f"L={float(amplification):g}"


def anyloss_method(amplification: float | str) -> Method:
    """AnyLoss with a fixed steepness (ablation variant)."""
    name = ablation_name(amplification)
    return Method(name, name, _anyloss, per_metric=True, tasks=("binary",), amplification=amplification)


def resolve_methods(names: tuple[str, ...]) -> list[Method]:
    """Methods by name; raises ``ValueError`` naming an unknown one."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    return [METHODS[n] for n in names]


def method_label(name: str, task: str = "binary") -> str:
    """Table header of a method (CE instead of BCE on multi-class tables)."""
    label = METHODS[name].label if name in METHODS else name
    return label.replace("BCE", "CE") if task == "multiclass" else label
