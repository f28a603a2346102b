"""Benchmark specifications: every benchmark is data, run by a harness.

Three kinds of suite, each a frozen dataclass:

* :class:`QualitySpec`: held-out exact metrics of AnyLoss against the usual
  imbalanced-learning recipes and peer losses (one MLP, one budget for all);
* :class:`AblationSpec`: the AnyLoss steepness ``amplification`` (L), fixed
  values against ``"auto"``;
* :class:`SpeedSpec`: forward and forward + backward time of each loss against
  ``BCEWithLogits`` over batch sizes, as ratios measured in one run.

:data:`SUITES` holds the named suites (``quality``, ``ablation``, ``speed``) and
tiny ``*_smoke`` versions of each that run in seconds for CI. Change a suite by
``dataclasses.replace``, never by editing the harness.

Example:
    >>> from metricopt.bench.specs import get_suite
    >>> spec = get_suite("quality", smoke=True)
    >>> spec.kind, spec.seeds
    ('quality', (0,))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BINARY_DATASETS",
    "MULTICLASS_DATASETS",
    "SUITES",
    "TARGET_METRICS",
    "AblationSpec",
    "QualitySpec",
    "Spec",
    "SpeedSpec",
    "get_suite",
    "spec_to_dict",
]

#: The imbalanced binary sets of shared/DATASETS.md (names in ``metricopt.data.DATASETS``).
BINARY_DATASETS: tuple[str, ...] = (
    "caravan", "lending_club", "nass_crashes", "taxi", "hmda",
    "yeast4", "abalone19", "page_blocks0", "hiva", "breast_cancer",
)
#: The multi-class sets of shared/DATASETS.md.
MULTICLASS_DATASETS: tuple[str, ...] = ("hpc", "segment", "texture", "wine")
#: Metrics every quality suite reports; each is also a model-selection target.
TARGET_METRICS: tuple[str, ...] = ("f1", "gmean", "balanced_accuracy", "mcc")

#: Method names understood by :mod:`metricopt.bench.methods`.
QUALITY_METHODS: tuple[str, ...] = (
    "anyloss", "bce", "bce_tuned", "weighted_bce", "focal", "dice", "aucm",
)


@dataclass(frozen=True)
class TrainingProtocol:
    """The protocol the quality and ablation suites share.

    Attributes:
        seeds: split, initialisation and batch-order seeds.
        epochs, batch_size, hidden_sizes, learning_rate, weight_decay: the one
            budget every method gets (Adam).
        test_size, val_size: fractions of all rows.
        tie_tolerance: |difference of seed-means| below which two methods tie.
        threads: ``torch.set_num_threads`` in each worker.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 50
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    test_size: float = 0.2
    val_size: float = 0.2
    tie_tolerance: float = 0.005
    threads: int = 1


@dataclass(frozen=True)
class QualitySpec(TrainingProtocol):
    """A quality benchmark: exact held-out metrics of several training recipes.

    Every (dataset, seed) pair gets one stratified train/validation/test split
    (``train_val_test_split(random_state=seed)``) and one MLP initialisation
    (``make_mlp(seed=seed)``) shared by all methods. Each method trains once per
    (dataset, seed) (AnyLoss once per target metric, since its loss is the
    metric); after every epoch the harness scores validation and test for every
    target metric, and for each target it keeps the epoch with the best
    validation score (model selection by the target metric).

    Attributes:
        name: suite name; result files are ``<name>.json|.md|*.png``.
        binary_datasets, multiclass_datasets: dataset names.
        methods: method names (see :mod:`metricopt.bench.methods`); binary-only
            methods are marked N/A on multi-class sets.
        metrics: target metrics (names from ``metricopt.METRIC_NAMES``).
        amplification: AnyLoss steepness L used by the ``anyloss`` method.
        focal_gamma: focusing parameter of the focal baseline.
        reference: the method compared with every other (wins/ties/losses).

    The budget and splits are those of :class:`TrainingProtocol`.
    """

    name: str = "quality"
    binary_datasets: tuple[str, ...] = BINARY_DATASETS
    multiclass_datasets: tuple[str, ...] = MULTICLASS_DATASETS
    methods: tuple[str, ...] = QUALITY_METHODS
    metrics: tuple[str, ...] = TARGET_METRICS
    amplification: float | str = 73.0
    focal_gamma: float = 2.0
    reference: str = "anyloss"

    kind = "quality"

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.binary_datasets + self.multiclass_datasets


@dataclass(frozen=True)
class AblationSpec(TrainingProtocol):
    """Ablation of the AnyLoss steepness: fixed L values against ``"auto"``.

    Same protocol as :class:`QualitySpec` (splits, MLP, budget, selection by the
    target metric on validation), binary datasets only, one AnyLoss run per
    (dataset, seed, target metric, amplification).

    Attributes:
        amplifications: the L values compared (floats and/or ``"auto"``).
        reference, challenger: wins/ties/losses are reported for ``challenger``
            against every other variant; ``reference`` is the paper's default
            the challenger must beat (named in the report).
    """

    name: str = "ablation"
    binary_datasets: tuple[str, ...] = BINARY_DATASETS
    amplifications: tuple[float | str, ...] = (10.0, 30.0, 73.0, 110.0, "auto")
    metrics: tuple[str, ...] = ("f1", "gmean")
    challenger: str = "auto"
    reference: str = "L=73"

    kind = "ablation"

    @property
    def multiclass_datasets(self) -> tuple[str, ...]:
        return ()

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.binary_datasets


@dataclass(frozen=True)
class SpeedSpec:
    """Loss speed: median forward and forward + backward time over batch sizes.

    Binary losses get ``(N,)`` logits, multi-class ones ``(N, num_classes)``;
    each repeat times every loss once, in turn (interleaved), so that machine
    load hits all losses alike and the ratios come from one run.

    Attributes:
        sizes: batch sizes N.
        losses: names from :mod:`metricopt.bench.speed` (peers missing on the
            machine are recorded as not installed).
        baseline: binary losses are divided by this one's time.
        multiclass_baseline: multi-class losses are divided by this one's time.
        num_classes: C for the multi-class losses.
        positive_rate: fraction of positive targets.
        repeats, warmup: timed and untimed calls per (loss, N).
        threads: ``torch.set_num_threads``.
        goal_ratio: the target for AnyLoss (forward + backward / baseline).
    """

    name: str = "speed"
    sizes: tuple[int, ...] = (256, 1024, 4096, 16384, 65536)
    losses: tuple[str, ...] = (
        "bce", "anyloss_f1", "anyloss_f1_novalidate", "anyloss_f1_auto", "anyloss_mcc", "dice", "aucm",
        "ce_c10", "anyloss_f1_c10", "anyloss_mcc_c10", "dice_c10",
    )
    baseline: str = "bce"
    multiclass_baseline: str = "ce_c10"
    num_classes: int = 10
    positive_rate: float = 0.1
    repeats: int = 50
    warmup: int = 10
    threads: int = 2
    goal_ratio: float = 1.5
    seed: int = 0

    kind = "speed"


Spec = QualitySpec | AblationSpec | SpeedSpec

SUITES: dict[str, Spec] = {
    "quality": QualitySpec(),
    "ablation": AblationSpec(),
    "speed": SpeedSpec(),
    "quality_smoke": QualitySpec(
        name="quality_smoke", binary_datasets=("breast_cancer",), multiclass_datasets=("wine",),
        seeds=(0,), epochs=3,
    ),
    "ablation_smoke": AblationSpec(
        name="ablation_smoke", binary_datasets=("breast_cancer",), metrics=("f1",), seeds=(0,), epochs=3,
    ),
    "speed_smoke": SpeedSpec(name="speed_smoke", sizes=(256, 1024), repeats=5, warmup=2),
}


def get_suite(kind: str, *, smoke: bool = False) -> Spec:
    """The named suite ``kind`` (``"quality"``, ``"ablation"``, ``"speed"``), or its smoke version."""
    key = f"{kind}_smoke" if smoke else kind
    if key not in SUITES:
        raise ValueError(f"`kind` must be one of 'quality', 'ablation', 'speed'; got {kind!r}")
    return SUITES[key]


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """A JSON-ready dict of the spec's fields, with ``kind``."""
    out: dict[str, Any] = {"kind": spec.kind}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
