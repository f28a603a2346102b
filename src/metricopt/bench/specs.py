"""Benchmark specifications: every benchmark is data, run by a harness.

Five kinds of suite, each a frozen dataclass:

* :class:`QualitySpec`: held-out exact metrics of AnyLoss against the usual
  imbalanced-learning recipes and peer losses (one MLP, one budget for all);
* :class:`AblationSpec`: the AnyLoss steepness ``amplification`` (L), fixed
  values against ``"auto"``;
* :class:`SpeedSpec`: forward and forward + backward time of each loss against
  ``BCEWithLogits`` over batch sizes, as ratios measured in one run;
* :class:`RetrievalSpec`: retrieval (metric learning) on classes unseen in
  training, RaMBO's recall losses against metric-learning peers (run by
  :mod:`metricopt.bench.retrieval`).
* :class:`RankSpeedSpec`: forward + backward time and peak memory of the rank
  losses against their peers, one ranking and retrieval batches (run by
  :mod:`metricopt.bench.rank_speed`).

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
    "RankSpeedSpec",
    "RetrievalSpec",
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
        metrics: target metrics (names from ``metricopt.METRIC_NAMES``, or the
            threshold-free ``"ap"`` / ``"auroc"`` of ``metricopt.evaluation.RANK_METRICS``).
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


#: Method names understood by :mod:`metricopt.bench.retrieval`, in table order.
RETRIEVAL_METHODS: tuple[str, ...] = (
    "rambo_loglog", "rambo_log", "rambo_loglog_margin", "rambo_loglog_memory", "rambo_loglog_margin_memory",
    "pml_contrastive", "pml_triplet", "pml_multisimilarity", "pml_fastap", "pml_smoothap", "torchsort_ap",
    "bbb_recall",
)


@dataclass(frozen=True)
class RetrievalSpec:
    """Retrieval quality: embedders trained by rank losses, scored on classes unseen in training.

    The protocol is in :mod:`metricopt.bench.retrieval` (class-disjoint split,
    20 % of the training rows held out for epoch selection by validation R@1,
    one initialisation per seed, class-balanced P x K batches, test
    ``retrieval_report`` with queries = gallery = test set).

    Attributes:
        datasets: ``"letter"`` and/or ``"fashion_mnist"``.
        methods: names from :data:`RETRIEVAL_METHODS`; a peer not installed is
            recorded as unavailable.
        seeds: split, initialisation and batch seeds.
        epochs: ``(dataset, epochs)`` pairs (see :meth:`epochs_for`).
        batches: ``(dataset, P classes, K items per class)``; ``pml_smoothap``
            gets P x P (see :meth:`batch_for`).
        fashion_sizes: Fashion-MNIST ``(n_train, n_test)`` rows (stratified, seeded).
        mlp_hidden: hidden widths of the Letter MLP.
        embedding_dim: embedding width of both embedders.
        learning_rate, weight_decay: Adam, the same for every method.
        val_size: fraction of the training rows held out for validation.
        metrics: table columns (keys of ``retrieval_report``).
        selection_metric: validation metric that picks the epoch; also the
            metric of the wins/ties/losses.
        rambo_margin, rambo_memory_size: the ``+margin`` / ``+memory`` RaMBO variants.
        bbb_recall_lambda: blackbox-backprop RecallLoss's lambda (its default
            0.5 gives all-zero gradients on Fashion-MNIST batches).
        torchsort_ap_strength: torchsort AP's ``regularization_strength`` (the
            peer default 0.1 pools every soft rank of a 200-item batch: the
            loss stays at about 1 - chance AP).
        peer_tuning_note: how those two were chosen (on validation only).
        reference: the method compared with every other.
        references: untrained references scored beside the methods (test only):
            ``"untrained"`` (the seed's initial embedder) and ``"raw_input"``
            (the input features themselves); see ``metricopt.bench.retrieval.REFERENCES``.
        tie_tolerance: |difference of seed-means| below which two methods tie.
        threads: ``torch.set_num_threads`` in each worker.
    """

    name: str = "retrieval"
    datasets: tuple[str, ...] = ("letter", "fashion_mnist")
    methods: tuple[str, ...] = RETRIEVAL_METHODS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # Sized so that the 120 runs finish in about 25 minutes with 2 worker processes on a 2-core CPU.
    epochs: tuple[tuple[str, int], ...] = (("letter", 10), ("fashion_mnist", 4))
    batches: tuple[tuple[str, int, int], ...] = (("letter", 13, 16), ("fashion_mnist", 5, 40))
    fashion_sizes: tuple[int, int] = (10000, 5000)
    mlp_hidden: tuple[int, ...] = (128, 128)
    embedding_dim: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    val_size: float = 0.2
    metrics: tuple[str, ...] = ("R@1", "R@2", "R@4", "R@8", "MAP@R")
    selection_metric: str = "R@1"
    rambo_margin: float = 0.05
    rambo_memory_size: int = 4
    bbb_recall_lambda: float = 16.0
    torchsort_ap_strength: float = 0.001
    peer_tuning_note: str = (
        "Two peers were tuned by validation R@1 (seed 0, validation rows of the training classes, never the "
        "test classes), each alone. bbb_recall lambda: Letter, 6 epochs, lambda 0.5 / 1 / 2 / 4 / 8 / 16 / 32 "
        "gave 0.956 / 0.953 / 0.962 / 0.963 / 0.964 / 0.961 / 0.960; Fashion-MNIST, 2 epochs, lambda 0.5 / 2 / "
        "4 / 8 / 16 / 32 / 64 gave 0.798 (training loss constant: all-zero gradients) / 0.836 / 0.842 / 0.858 / "
        "0.866 / 0.868 / 0.859; 16 is within 0.003 of the best on both. torchsort_ap regularization_strength: "
        "Letter, 6 epochs, 0.001 / 0.003 / 0.01 / 0.03 / 0.1 (peer default) gave 0.954 / 0.951 / 0.897 / 0.884 / "
        "0.876 (training loss flat at 0.916 with 0.1); Fashion-MNIST, 2 epochs, 0.001 / 0.003 / 0.01 / 0.1 gave "
        "0.883 / 0.870 / 0.860 / 0.834; 0.001 is the best on both. No other method was tuned (RaMBO uses "
        "metricopt's defaults, the PML losses their library defaults)."
    )
    reference: str = "rambo_loglog"
    references: tuple[str, ...] = ("untrained", "raw_input")
    tie_tolerance: float = 0.005
    threads: int = 1

    kind = "retrieval"

    def epochs_for(self, dataset: str) -> int:
        """Training epochs on ``dataset``."""
        return dict(self.epochs)[dataset]

    def batch_for(self, dataset: str) -> tuple[int, int]:
        """``(P, K)``: classes per batch and items per class on ``dataset``."""
        return {d: (p, k) for d, p, k in self.batches}[dataset]


@dataclass(frozen=True)
class RankSpeedSpec:
    """Speed and memory of the rank losses against their peers (:mod:`metricopt.bench.rank_speed`).

    Two parts: one ranking of N scores (``ranking_*``) and retrieval batches of
    N embeddings with sqrt(N) classes x sqrt(N) items (``retrieval_*``; sizes
    must be squares). Forward + backward time (interleaved rounds) and the
    extra peak memory of one call (forked child), per loss and N; losses over a
    budget are skipped at larger N (the module docstring has the rules).

    Attributes:
        ranking_sizes, ranking_losses: N and loss names of
            ``rank_speed.RANKING_LOSSES``.
        retrieval_sizes, retrieval_losses: N and names of ``rank_speed.RETRIEVAL_LOSSES``.
        embedding_dim: D of the retrieval embeddings.
        positive_rate: fraction of positives in the one-ranking target.
        repeats, warmup: timed rounds and untimed calls per (loss, N).
        min_repeats, max_cell_seconds: a loss leaves the rounds at an N once it
            has ``min_repeats`` times and ``max_cell_seconds`` of timed calls.
        settle_below_s: a loss faster than this per call gets one untimed call
            before each timed one (so it does not pay for the caches the
            previous loss in the round left cold).
        ranking_call_budget_s, retrieval_call_budget_s: seconds per call above
            which (estimated or measured) a loss is skipped.
        memory_budget_gib: extra memory per call above which (estimated) a loss
            is skipped; also the address-space cap of the memory probe.
        probe_timeout_s: the memory probe's child is killed after this long.
        memory_check_mib: size of the known allocation that validates the probe.
        threads: ``torch.set_num_threads`` for the timing.
        goal_size, goal_speedup, goal_torchsort_ratio: at N = ``goal_size``,
            APLoss at least ``goal_speedup`` x faster than LibAUC APLoss and at
            most ``goal_torchsort_ratio`` x torchsort's time.
        slope_range, linear_slope_max: APLoss's log-log slope of time and
            memory over this N range must be at most ``linear_slope_max``.
        retrieval_slope_range: N range of the (informational) retrieval slopes.
    """

    name: str = "rank_speed"
    ranking_sizes: tuple[int, ...] = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
    ranking_losses: tuple[str, ...] = ("rambo_ap", "bce", "torchsort_ap", "libauc_ap", "bbb_map")
    retrieval_sizes: tuple[int, ...] = (64, 256, 1024, 4096)
    retrieval_losses: tuple[str, ...] = (
        "rambo_recall", "torchsort_ap", "pml_fastap", "pml_smoothap", "bbb_recall",
        "pml_contrastive", "pml_triplet", "pml_multisimilarity",
    )
    embedding_dim: int = 128
    positive_rate: float = 0.1
    repeats: int = 30
    warmup: int = 3
    min_repeats: int = 3
    max_cell_seconds: float = 10.0
    settle_below_s: float = 1.0
    ranking_call_budget_s: float = 3.0
    retrieval_call_budget_s: float = 20.0
    memory_budget_gib: float = 6.0
    probe_timeout_s: float = 180.0
    memory_check_mib: int = 400
    threads: int = 2
    goal_size: int = 4096
    goal_speedup: float = 30.0
    goal_torchsort_ratio: float = 2.0
    slope_range: tuple[int, int] = (65536, 1048576)
    linear_slope_max: float = 1.15
    retrieval_slope_range: tuple[int, int] = (1024, 4096)
    seed: int = 0

    kind = "rank_speed"


Spec = QualitySpec | AblationSpec | SpeedSpec | RetrievalSpec | RankSpeedSpec

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
    # AP for imbalanced classification: RaMBO's rank losses against BCE and LibAUC's AP and AUC losses,
    # scored by the threshold-free rank metrics (metricopt.evaluation.RANK_METRICS).
    "ap_quality": QualitySpec(
        name="ap_quality", binary_datasets=BINARY_DATASETS, multiclass_datasets=(),
        methods=("rambo_ap", "bce", "libauc_ap", "aucm", "rambo_auroc"), metrics=("ap", "auroc"),
        reference="rambo_ap",
    ),
    "ap_quality_smoke": QualitySpec(
        name="ap_quality_smoke", binary_datasets=("breast_cancer",), multiclass_datasets=(),
        methods=("rambo_ap", "bce", "libauc_ap", "aucm", "rambo_auroc"), metrics=("ap", "auroc"),
        reference="rambo_ap", seeds=(0,), epochs=3,
    ),
    # Retrieval (metric learning): RaMBO's recall losses against metric-learning peers, class-disjoint splits.
    "retrieval": RetrievalSpec(),
    "retrieval_smoke": RetrievalSpec(
        name="retrieval_smoke", datasets=("letter",), seeds=(0,), epochs=(("letter", 2),),
        methods=("rambo_loglog", "pml_contrastive", "bbb_recall"), references=("untrained",),
    ),
    # Speed and memory of the rank losses (one ranking and retrieval batches) against their peers.
    "rank_speed": RankSpeedSpec(),
    "rank_speed_smoke": RankSpeedSpec(
        name="rank_speed_smoke", ranking_sizes=(256, 1024), retrieval_sizes=(16, 64), repeats=3, warmup=1,
        min_repeats=1, max_cell_seconds=2.0, memory_check_mib=64, probe_timeout_s=60.0, goal_size=1024,
        slope_range=(256, 1024), retrieval_slope_range=(16, 64),
    ),
}


def get_suite(kind: str, *, smoke: bool = False) -> Spec:
    """The named suite ``kind`` (``"quality"``, ``"ablation"``, ``"speed"``, ``"ap_quality"``...) or its smoke version."""
    key = f"{kind}_smoke" if smoke else kind
    if key not in SUITES:
        kinds = ", ".join(repr(k) for k in SUITES if not k.endswith("_smoke"))
        raise ValueError(f"`kind` must be one of {kinds}; got {kind!r}")
    return SUITES[key]


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """A JSON-ready dict of the spec's fields, with ``kind``."""
    out: dict[str, Any] = {"kind": spec.kind}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
