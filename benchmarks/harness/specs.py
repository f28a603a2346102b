"""Benchmark specifications: every benchmark is data, run by a harness.

The kinds of suite, each a frozen dataclass:

* :class:`QualitySpec`: held-out exact metrics of AnyLoss against the usual
  imbalanced-learning recipes and peer losses (one MLP, one budget for all);
* :class:`AblationSpec`: the AnyLoss steepness ``amplification`` (L), fixed
  values against ``"auto"``;
* :class:`SpeedSpec`: forward and forward + backward time of each loss against
  ``BCEWithLogits`` over batch sizes, as ratios measured in one run;
* :class:`RetrievalSpec`: retrieval (metric learning) on classes unseen in
  training, RaMBO's recall losses against metric-learning peers (run by
  :mod:`benchmarks.suites.retrieval`).
* :class:`RankSpeedSpec`: forward + backward time and peak memory of the rank
  losses against their peers, one ranking and retrieval batches (run by
  :mod:`benchmarks.suites.rank_speed`).
* :class:`BlackBoxSpec` / :class:`BlackBoxAblationSpec` /
  :class:`BlackBoxDefaultsSpec` / :class:`BlackBoxGuidanceSpec`: MetricOpt's
  value-guided fine-tuning of adapter parameters against loss-only
  fine-tuning, black-box metrics reported as costs (run by
  :mod:`benchmarks.suites.blackbox`); the ablation and the two defaults sweeps
  run :class:`BlackBoxVariant` s of one spec.
* :class:`TabularSpec`: the practitioner's tabular benchmark, every method on
  the collection's real tables (run by :mod:`benchmarks.suites.tabular`).
* :class:`ConstrainedSpec`: constrained metrics (recall at a precision floor,
  TPR at an FPR budget) trained directly and calibrated on validation, on the
  same tables (run by :mod:`benchmarks.suites.constrained`).

:data:`SUITES` holds the named suites (``quality``, ``ablation``, ``speed``) and
tiny ``*_smoke`` versions of each that run in seconds for CI. Change a suite by
``dataclasses.replace``, never by editing the harness.

Example:
    >>> from benchmarks.harness.specs import get_suite
    >>> spec = get_suite("quality", smoke=True)
    >>> spec.kind, spec.seeds
    ('quality', (0,))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.peers.constrained import CONSTRAINED_PEERS
from benchmarks.peers.tabular import BINARY_CANDIDATES, MULTICLASS_CANDIDATES
from metricopt.app.data.retrieval import RETRIEVAL_DATASETS


def _collection_names(role: str) -> tuple[str, ...]:
    """``load_dataset`` names (``collection:NAME``) of the collection's binary tables of a role (``"report"`` or
    ``"validation"``)."""
    from metricopt.app.data.collection import report_tables, validation_tables

    return tuple(f"collection:{t.name}" for t in (report_tables() if role == "report" else validation_tables()))


#: The AP suites' methods: RaMBO's APLoss with and without oversampled batches, BCE the same two ways (the
#: control), and LibAUC's SOAP APLoss with the shared protocol and with its own optimizer and sampler.
AP_METHODS: tuple[str, ...] = (
    "rambo_ap_oversampled", "rambo_ap", "bce", "bce_oversampled", "libauc_ap", "libauc_ap_own",
)

__all__ = [
    "BINARY_DATASETS",
    "BLACKBOX_METHODS",
    "MULTICLASS_DATASETS",
    "SUITES",
    "TARGET_METRICS",
    "AblationSpec",
    "BlackBoxAblationSpec",
    "BlackBoxDefaultsSpec",
    "BlackBoxGuidanceSpec",
    "BlackBoxSpec",
    "BlackBoxVariant",
    "ConstrainedSpec",
    "QualitySpec",
    "RankSpeedSpec",
    "RetrievalSpec",
    "Spec",
    "SpeedSpec",
    "TabularSpec",
    "get_suite",
    "spec_to_dict",
]

#: The imbalanced binary sets of shared/DATASETS.md (names in ``metricopt.app.data.DATASETS``).
BINARY_DATASETS: tuple[str, ...] = (
    "caravan", "lending_club", "nass_crashes", "taxi", "hmda",
    "yeast4", "abalone19", "page_blocks0", "hiva", "breast_cancer",
)
#: The multi-class sets of shared/DATASETS.md.
MULTICLASS_DATASETS: tuple[str, ...] = ("hpc", "segment", "texture", "wine")
#: Metrics every quality suite reports; each is also a model-selection target.
TARGET_METRICS: tuple[str, ...] = ("f1", "gmean", "balanced_accuracy", "mcc")

#: Method names understood by :mod:`benchmarks.harness.methods`.
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
        methods: method names (see :mod:`benchmarks.harness.methods`); binary-only
            methods are marked N/A on multi-class sets.
        metrics: target metrics (names from ``metricopt.METRIC_NAMES``, or the
            threshold-free ``"ap"`` / ``"auroc"`` of ``metricopt.evaluation.THRESHOLD_FREE_METRICS``).
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
        losses: names from :mod:`benchmarks.suites.speed` (peers missing on the
            machine are recorded as not installed).
        baseline: binary losses are divided by this one's time.
        multiclass_baseline: multi-class losses are divided by this one's time.
        reference: binary losses are also divided by this one's time (the
            naive soft F1 a user would write).
        num_classes: C for the multi-class losses.
        positive_rate: fraction of positive targets.
        repeats, warmup: timed rounds and untimed calls per (loss, N).
        max_seconds, min_repeats: a loss leaves the rounds at an N once it has
            ``min_repeats`` times and ``max_seconds`` of timed calls.
        size_limits: ``(loss, largest N)`` pairs for losses too slow for the
            largest batches (LibAUC's AUCM takes 0.3 s at N = 65,536 and grows
            faster than N).
        threads: ``torch.set_num_threads`` during the run (restored after).
        clock: ``"wall"``; ``"cpu"``: the thread's CPU time, which leaves
            out the waits for a core on a shared machine (one thread only; why
            the named suite uses it: :mod:`benchmarks.suites.speed`); ``"auto"``:
            ``"cpu"`` for one thread, else ``"wall"``.
        goal_ratio, goal_size: AnyLoss F1 forward + backward at most
            ``goal_ratio`` x the baseline at N = ``goal_size``.
        reference_goal_ratio: ... and at most this x the reference at every N.
    """

    name: str = "speed"
    sizes: tuple[int, ...] = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
    losses: tuple[str, ...] = (
        "bce", "naive_f1", "sigmoid_dice", "anyloss_f1", "anyloss_f1_novalidate", "anyloss_f1_auto", "anyloss_mcc",
        "dice", "aucm", "ce_c10", "anyloss_f1_c10", "anyloss_mcc_c10", "dice_c10",
    )
    baseline: str = "bce"
    multiclass_baseline: str = "ce_c10"
    reference: str = "naive_f1"
    num_classes: int = 10
    positive_rate: float = 0.1
    repeats: int = 60
    warmup: int = 5
    max_seconds: float = 4.0
    min_repeats: int = 15
    size_limits: tuple[tuple[str, int], ...] = (("aucm", 65536),)
    threads: int = 1
    clock: str = "auto"
    goal_ratio: float = 1.5
    goal_size: int = 65536
    reference_goal_ratio: float = 1.2
    seed: int = 0

    kind = "speed"


#: Datasets understood by :mod:`benchmarks.suites.retrieval`, in table order: the library's retrieval registry.
RETRIEVAL_SUITE_DATASETS: tuple[str, ...] = tuple(RETRIEVAL_DATASETS)

#: Method names understood by :mod:`benchmarks.suites.retrieval`, in table order.
RETRIEVAL_METHODS: tuple[str, ...] = (
    "rambo_loglog", "rambo_log", "rambo_loglog_margin", "rambo_loglog_memory", "rambo_loglog_margin_memory",
    "rambo_loglog_former",
    "pml_contrastive", "pml_triplet", "pml_multisimilarity", "pml_fastap", "pml_smoothap", "il_smoothap",
    "torchsort_ap", "bbb_recall",
)


@dataclass(frozen=True)
class RetrievalSpec:
    """Retrieval quality: embedders trained by rank losses, scored on classes unseen in training.

    The protocol is in :mod:`benchmarks.suites.retrieval` (class-disjoint split,
    20 % of the training rows held out for epoch selection by validation R@1,
    one initialisation per seed, class-balanced P x K batches, test
    ``retrieval_report`` with queries = gallery = test set).

    Attributes:
        datasets: any of ``"letter"``, ``"letter_shadow"`` and ``"fashion_mnist"``.
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
            (the input features themselves); see ``benchmarks.suites.retrieval.REFERENCES``.
        tie_tolerance: |difference of seed-means| below which two methods tie.
        threads: ``torch.set_num_threads`` in each worker.
    """

    name: str = "retrieval"
    datasets: tuple[str, ...] = RETRIEVAL_SUITE_DATASETS
    methods: tuple[str, ...] = RETRIEVAL_METHODS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # Sized so that the 195 runs finish in about 35 minutes with 2 worker processes on a 2-core CPU.
    epochs: tuple[tuple[str, int], ...] = (("letter", 10), ("letter_shadow", 20), ("fashion_mnist", 4))
    batches: tuple[tuple[str, int, int], ...] = (
        ("letter", 13, 16), ("letter_shadow", 13, 16), ("fashion_mnist", 5, 40))
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
    """Speed and memory of the rank losses against their peers (:mod:`benchmarks.suites.rank_speed`).

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
        retrieval_goal_size, goal_sort_ratio: at N = ``retrieval_goal_size``
            embeddings, RecallLoss at most ``goal_sort_ratio`` x the time of one
            row-wise sort of the N x N similarities (``row_sort``).
        slope_range, linear_slope_max: APLoss's log-log slope of time and
            memory over this N range must be at most ``linear_slope_max``.
        retrieval_slope_range: N range of the (informational) retrieval slopes.
    """

    name: str = "rank_speed"
    ranking_sizes: tuple[int, ...] = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
    ranking_losses: tuple[str, ...] = ("rambo_ap", "bce", "torchsort_ap", "libauc_ap", "bbb_map")
    retrieval_sizes: tuple[int, ...] = (64, 256, 1024, 4096)
    retrieval_losses: tuple[str, ...] = (
        "rambo_recall", "row_sort", "torchsort_ap", "pml_fastap", "pml_smoothap", "bbb_recall",
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
    goal_torchsort_ratio: float = 1.0
    retrieval_goal_size: int = 4096
    goal_sort_ratio: float = 1.5
    slope_range: tuple[int, int] = (65536, 1048576)
    linear_slope_max: float = 1.15
    retrieval_slope_range: tuple[int, int] = (1024, 4096)
    seed: int = 0

    kind = "rank_speed"


#: Method names understood by :mod:`benchmarks.suites.blackbox`, in table order.
BLACKBOX_METHODS: tuple[str, ...] = (
    "pretrained", "tuned_threshold", "sgd", "adam", "metricopt_sgd", "metricopt_adam", "metricopt_learned",
    "direct_loss",
)
#: Where the metric observations that guide MetricOpt come from (``metricopt.app.recipes.blackbox.GUIDANCE``):
#: "validation" (the validation rows guide and pick the kept phi), "split" (half of them guide, the other half
#: picks), "train" (training rows guide, the validation rows pick).
BLACKBOX_GUIDANCE: tuple[str, ...] = ("validation", "split", "train")
#: Where fine-tuning and meta-training start (``metricopt.app.recipes.blackbox.STARTS``): the pre-trained model,
#: or (binary problems) the pre-trained model at its decision threshold tuned on the validation rows.
BLACKBOX_STARTS: tuple[str, ...] = ("pretrained", "tuned_threshold")
#: How the value function learns from the meta-training runs (``metricopt.blackbox.meta.FITS``).
BLACKBOX_VALUE_FITS: tuple[str, ...] = ("reptile", "joint")
#: Black-box metrics of the suites (``metricopt.blackbox.metric`` built-ins), reported as costs;
#: ``recall@1`` on the retrieval datasets only, the others on the classification datasets only.
BLACKBOX_METRICS: tuple[str, ...] = ("mcr", "aucpr", "cost", "recall@1")
#: The class-disjoint retrieval sets of the rank family (:mod:`benchmarks.suites.retrieval`), embedders with FiLM.
BLACKBOX_RETRIEVAL: tuple[str, ...] = ("letter_retrieval", "fashion_retrieval")
#: Tabular datasets the black-box suites accept (binary: ``cost`` is binary-only), plus Fashion-MNIST and the
#: retrieval sets.
BLACKBOX_DATASETS: tuple[str, ...] = ("fashion_mnist", *BLACKBOX_RETRIEVAL, *BINARY_DATASETS)
# every other (tabular) dataset: "mlp"
_BLACKBOX_MODELS = {"fashion_mnist": "cnn", "letter_retrieval": "mlp_embedder", "fashion_retrieval": "cnn_embedder"}
_BLACKBOX_ADAPTERS = ("input_bias", "film")
_BLACKBOX_TABULAR = ("page_blocks0", "yeast4", "caravan", "abalone19")
_METRICOPT_METHODS = ("metricopt_sgd", "metricopt_adam", "metricopt_learned")

Setting = tuple[str, str, str, tuple[str, ...]]


def _blackbox_error(field: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"BlackBoxSpec `{field}` must be {expected}; got {value!r}")


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


def _is_evaluations(value: Any) -> bool:
    """``K``: a count >= 2 or a fraction of the steps in (0, 1] (``metricopt.blackbox.trajectory``)."""
    if isinstance(value, float):
        return 0 < value <= 1
    return _is_int(value, 2)


DistributionOverrides = tuple[tuple[str, Any], ...]


def _is_named_pairs(value: Any, names: Any = None) -> bool:
    """A tuple of ``(name, value)`` pairs with distinct names (each in ``names``, if given; else non-empty strings)."""
    return (isinstance(value, tuple)
            and all(isinstance(p, tuple) and len(p) == 2
                    and (p[0] in names if names is not None else isinstance(p[0], str) and bool(p[0]))
                    for p in value)
            and len({p[0] for p in value}) == len(value))


def _task_distribution(field: str, overrides: Any) -> Any:
    """The :class:`~metricopt.blackbox.meta.TaskDistribution` with ``overrides`` (``(name, value)`` pairs) applied;
    ValueError naming ``field`` when they are not distinct field names with valid values."""
    from metricopt.blackbox.meta import TaskDistribution

    names = tuple(f.name for f in dataclasses.fields(TaskDistribution))
    if not _is_named_pairs(overrides, names):
        raise _blackbox_error(field, overrides, f"(name, value) pairs of distinct TaskDistribution fields {names}")
    try:
        return TaskDistribution(**dict(overrides))
    except (TypeError, ValueError) as exc:
        raise _blackbox_error(field, overrides, f"valid TaskDistribution overrides ({exc})") from None


#: Spec fields a :class:`BlackBoxVariant` may override (one job's pre-training and split stay shared).
VARIANT_FIELDS: tuple[str, ...] = ("evaluations", "phi_size", "value_weight", "task_distribution", "guidance", "start",
                                   "value_fit")


@dataclass(frozen=True)
class BlackBoxVariant:
    """One configuration a black-box suite runs: its spec with ``overrides`` applied.

    Attributes:
        label: the variant's name in result rows and tables.
        overrides: ``(field, value)`` pairs of :data:`VARIANT_FIELDS` that differ from the spec's.
    """

    label: str = "default"
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"BlackBoxVariant `label` must be a non-empty string; got {self.label!r}")
        if not _is_named_pairs(self.overrides, VARIANT_FIELDS):
            raise ValueError(f"BlackBoxVariant `overrides` must be (field, value) pairs of distinct fields of "
                             f"{VARIANT_FIELDS}; got {self.overrides!r}")

    def apply(self, spec: BlackBoxSpec) -> BlackBoxSpec:
        """The plain :class:`BlackBoxSpec` this variant runs (validated: a bad override raises here)."""
        base = {f.name: getattr(spec, f.name) for f in dataclasses.fields(BlackBoxSpec)}
        return BlackBoxSpec(**{**base, **dict(self.overrides)})

    def record(self, spec: BlackBoxSpec) -> dict[str, Any]:
        """JSON-ready: the label and the values it runs with (the task distribution resolved)."""
        from metricopt.blackbox.meta import plain_record

        run = self.apply(spec)
        return {"label": self.label, "evaluations": run.evaluations, "phi_size": run.phi_size,
                "value_weight": run.value_weight, "task_distribution": plain_record(run.meta_distribution()),
                "guidance": run.guidance, "start": run.start, "value_fit": run.value_fit}


@dataclass(frozen=True)
class BlackBoxSpec:
    """MetricOpt against loss-only fine-tuning of adapter parameters (:mod:`benchmarks.suites.blackbox`).

    Per (setting, metric, seed): one split and pre-trained backbone, the value
    function meta-trained on tasks drawn from the training split (metric on
    validation), the learned optimizer too (if in ``methods``), then
    ``held_out_tasks`` new tasks fine-tuned by every method with the same
    budget and seed; the kept ``phi`` is the best observed on validation and
    its test cost is reported (lower is better for every metric: ``mcr``,
    ``1 - aucpr``, ``cost``).

    The defaults are sized for about an hour on 2 cores (``--jobs 2``): input
    bias on every tabular set, FiLM on two (page_blocks0, and yeast4 where an
    input bias cannot move the model), 24 meta-training tasks (the command
    line's default is 40), Fashion-MNIST at 3000 / 1000 images.

    Attributes:
        name: suite name; result files are ``<name>.json|.md|.png``.
        settings: ``(dataset, model, adapter, metrics)`` rows: ``dataset`` from
            :data:`BLACKBOX_DATASETS`, ``model`` ``"cnn"`` (Fashion-MNIST) or
            ``"mlp"`` (tabular), ``adapter`` ``"input_bias"`` or ``"film"``,
            ``metrics`` from :data:`BLACKBOX_METRICS` (``cost`` binary only),
            ``("recall@1",)`` on the retrieval sets (:data:`BLACKBOX_RETRIEVAL`:
            ``model`` ``"mlp_embedder"`` for Letter, ``"cnn_embedder"`` for
            Fashion-MNIST, the retrieval suite's embedders).
        seeds: split, backbone, adapter projection, meta-training and task seeds.
        pretrain_epochs: ``(model, epochs)`` of cross-entropy pre-training.
        fashion_sizes: Fashion-MNIST ``(training images, test images)`` drawn
            stratified with the seed (the training ones split 80/20 into train/val).
        retrieval_sizes: ``fashion_retrieval``'s ``(training images, test
            images)`` (classes 0-4 of the official training file, 5-9 of the
            test file), as the retrieval suite's ``fashion_sizes``.
        steps: ``T``, fine-tuning steps per run.
        evaluations: ``K``, metric observations per run (count, or fraction of ``T``).
        sgd_learning_rate, adam_learning_rate: the two hand-designed optimisers.
        batch_size: training examples per fine-tuning step.
        value_weight: ``lambda_v``, weight of the value function's gradient.
        task_distribution: ``(field, value)`` overrides of
            :class:`~metricopt.blackbox.meta.TaskDistribution`'s defaults for
            meta-training (empty: the library's); held-out tasks always come
            from the library's default distribution.
        meta_tasks, warmup_tasks: Reptile meta-training tasks (the first
            ``warmup_tasks`` loss-only); the learned optimizer gets as many.
        held_out_tasks: new tasks per (setting, metric, seed) every method runs.
        phi_size: adapter size ``|phi|``.
        methods: names from :data:`BLACKBOX_METHODS` (``tuned_threshold``: the
            pre-trained model at the decision threshold tuned on all validation
            rows, binary datasets only).
        tie_tolerance: paired runs whose test costs differ by at most this tie.
        threads: ``torch.set_num_threads`` in each worker.
        guidance: which rows' metric observations guide MetricOpt and which
            pick the kept phi, one of :data:`BLACKBOX_GUIDANCE` (the library's
            ``--guidance``; every method keeps its phi by the picking rows).
        start: where meta-training and every fine-tuning run start, one of
            :data:`BLACKBOX_STARTS` (``tuned_threshold``: binary datasets; a
            multi-class one starts from the pre-trained model).
        value_fit: how the value function learns from the meta-training runs,
            one of :data:`BLACKBOX_VALUE_FITS` (the library's ``--value-fit``).
        trust_check: MetricOpt falls back to loss-only fine-tuning (no value
            gradient) when its value function fails the library's check
            (``MetaResult.trust``), as the library does by default.
    """

    name: str = "blackbox"
    settings: tuple[Setting, ...] = (
        ("fashion_mnist", "cnn", "film", ("mcr", "aucpr")),
        *((d, "mlp", "input_bias", ("mcr", "aucpr", "cost")) for d in _BLACKBOX_TABULAR),
        *((d, "mlp", "film", ("mcr", "aucpr", "cost")) for d in ("page_blocks0", "yeast4")),
    )
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # the embedders: the retrieval suite's epochs (RetrievalSpec.epochs)
    pretrain_epochs: tuple[tuple[str, int], ...] = (("cnn", 3), ("mlp", 30), ("mlp_embedder", 10),
                                                    ("cnn_embedder", 4))
    fashion_sizes: tuple[int, int] = (3000, 1000)
    retrieval_sizes: tuple[int, int] = RetrievalSpec().fashion_sizes
    steps: int = 200
    evaluations: int | float = 0.05
    sgd_learning_rate: float = 0.05
    adam_learning_rate: float = 0.01
    batch_size: int = 128
    value_weight: float = 1.0
    task_distribution: DistributionOverrides = ()
    meta_tasks: int = 24
    warmup_tasks: int = 4
    held_out_tasks: int = 2
    phi_size: int = 128
    methods: tuple[str, ...] = BLACKBOX_METHODS
    tie_tolerance: float = 0.0
    threads: int = 1
    # The library's defaults (metricopt.app.recipes.blackbox.BlackBoxOptions), chosen by the blackbox_guidance and
    # blackbox_value_fit sweeps.
    guidance: str = "train"
    start: str = "tuned_threshold"
    value_fit: str = "joint"
    trust_check: bool = True

    kind = "blackbox"

    def __post_init__(self) -> None:
        if not isinstance(self.settings, tuple) or not self.settings:
            raise _blackbox_error("settings", self.settings, "a non-empty tuple of (dataset, model, adapter, metrics)")
        for setting in self.settings:
            if not isinstance(setting, tuple) or len(setting) != 4:
                raise _blackbox_error("settings", setting, "a (dataset, model, adapter, metrics) tuple")
            dataset, model, adapter, metrics = setting
            if dataset not in BLACKBOX_DATASETS:
                raise _blackbox_error("settings", setting, f"a row whose dataset is one of {BLACKBOX_DATASETS}")
            if model != _BLACKBOX_MODELS.get(dataset, "mlp"):
                raise _blackbox_error("settings", setting, f"a row whose model for {dataset!r} is "
                                      f"{_BLACKBOX_MODELS.get(dataset, 'mlp')!r}")
            if adapter not in _BLACKBOX_ADAPTERS:
                raise _blackbox_error("settings", setting, f"a row whose adapter is one of {_BLACKBOX_ADAPTERS}")
            if (not isinstance(metrics, tuple) or not metrics or len(set(metrics)) != len(metrics)
                    or not set(metrics) <= set(BLACKBOX_METRICS)):
                raise _blackbox_error("settings", setting, f"a row whose metrics are distinct names of "
                                      f"{BLACKBOX_METRICS}")
            if dataset == "fashion_mnist" and "cost" in metrics:
                raise _blackbox_error("settings", setting, "a row without 'cost' on the 10-class fashion_mnist "
                                      "(the cost metric is binary only)")
            if (dataset in BLACKBOX_RETRIEVAL) != (metrics == ("recall@1",)):
                raise _blackbox_error("settings", setting, "a row with the metrics ('recall@1',) exactly when its "
                                      f"dataset is a retrieval set {BLACKBOX_RETRIEVAL}")
        if len({s[:3] for s in self.settings}) != len(self.settings):
            raise _blackbox_error("settings", self.settings, "rows with distinct (dataset, model, adapter)")
        if not self.seeds or not all(_is_int(s, 0) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise _blackbox_error("seeds", self.seeds, "a non-empty tuple of distinct integers >= 0")
        epochs = dict(self.pretrain_epochs)
        models = {s[1] for s in self.settings}
        if not models <= set(epochs) or not all(_is_int(e, 1) for e in epochs.values()):
            raise _blackbox_error("pretrain_epochs", self.pretrain_epochs,
                                  f"(model, epochs >= 1) pairs covering {sorted(models)}")
        if len(self.fashion_sizes) != 2 or not all(_is_int(n, 10) for n in self.fashion_sizes):
            raise _blackbox_error("fashion_sizes", self.fashion_sizes, "(training images, test images), each >= 10")
        if len(self.retrieval_sizes) != 2 or not all(_is_int(n, 10) for n in self.retrieval_sizes):
            raise _blackbox_error("retrieval_sizes", self.retrieval_sizes,
                                  "(training images, test images), each >= 10")
        for field in ("steps", "batch_size", "meta_tasks", "warmup_tasks", "held_out_tasks", "phi_size", "threads"):
            if not _is_int(getattr(self, field), 1):
                raise _blackbox_error(field, getattr(self, field), "an integer >= 1")
        if self.warmup_tasks > self.meta_tasks:
            raise _blackbox_error("warmup_tasks", self.warmup_tasks,
                                  f"at most meta_tasks={self.meta_tasks} (the warm-up fixes the value normalisation)")
        if not _is_evaluations(self.evaluations):
            raise _blackbox_error("evaluations", self.evaluations, "a count >= 2 or a fraction of the steps in (0, 1]")
        for field in ("sgd_learning_rate", "adam_learning_rate"):
            if not _is_positive(getattr(self, field)):
                raise _blackbox_error(field, getattr(self, field), "a finite number > 0")
        for field in ("value_weight", "tie_tolerance"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")):
                raise _blackbox_error(field, value, "a finite number >= 0")
        if (not self.methods or len(set(self.methods)) != len(self.methods)
                or not set(self.methods) <= set(BLACKBOX_METHODS)):
            raise _blackbox_error("methods", self.methods, f"distinct names of {BLACKBOX_METHODS}")
        if not isinstance(self.guidance, str) or self.guidance not in BLACKBOX_GUIDANCE:
            raise _blackbox_error("guidance", self.guidance, f"one of {BLACKBOX_GUIDANCE}")
        if not isinstance(self.start, str) or self.start not in BLACKBOX_STARTS:
            raise _blackbox_error("start", self.start, f"one of {BLACKBOX_STARTS}")
        if not isinstance(self.value_fit, str) or self.value_fit not in BLACKBOX_VALUE_FITS:
            raise _blackbox_error("value_fit", self.value_fit, f"one of {BLACKBOX_VALUE_FITS}")
        if not isinstance(self.trust_check, bool):
            raise _blackbox_error("trust_check", self.trust_check, "True or False")
        _task_distribution("task_distribution", self.task_distribution)

    @property
    def datasets(self) -> tuple[str, ...]:
        """The settings' datasets, in order, each once."""
        return tuple(dict.fromkeys(s[0] for s in self.settings))

    def epochs_for(self, model: str) -> int:
        """Pre-training epochs of ``model``."""
        return dict(self.pretrain_epochs)[model]

    def meta_distribution(self) -> Any:
        """The :class:`~metricopt.blackbox.meta.TaskDistribution` meta-training draws its tasks from."""
        return _task_distribution("task_distribution", self.task_distribution)

    def variants(self) -> tuple[BlackBoxVariant, ...]:
        """The configurations run per (setting, metric, seed): here only the spec's own."""
        return (BlackBoxVariant("default"),)

    def reference_variant(self) -> BlackBoxVariant:
        """The variant that runs the spec's own values (the point every sweep shares)."""
        own = _point(self)
        return next(v for v in self.variants() if _point(v.apply(self)) == own)


def _point(spec: BlackBoxSpec) -> tuple[Any, ...]:
    return spec.evaluations, spec.phi_size, spec.value_weight, spec.meta_distribution(), spec.guidance, spec.start


def _k_label(evaluations: float) -> str:
    return f"K={evaluations:.1%}".replace(".0%", "%") if isinstance(evaluations, float) else f"K={evaluations}"


def _check_validation_seeds(spec: Any) -> None:
    """A sweep that chooses defaults runs on seeds disjoint from ``spec.reporting_seeds`` (the reported runs')."""
    if set(spec.seeds) & set(spec.reporting_seeds):
        raise _blackbox_error("seeds", spec.seeds, f"disjoint from reporting_seeds={spec.reporting_seeds} (the "
                              "defaults are chosen on validation tasks, not on the reported ones)")


@dataclass(frozen=True)
class BlackBoxAblationSpec(BlackBoxSpec):
    """The black-box ablation: metric observations ``K`` and adapter size ``|phi|``.

    The same protocol as :class:`BlackBoxSpec`, one setting; ``K`` swept over
    ``evaluations_grid`` at the spec's ``phi_size`` and ``|phi|`` over
    ``phi_size_grid`` at the spec's ``evaluations`` (the shared point runs
    once). ``K`` applies to meta-training and to the held-out runs of every
    method alike.

    Attributes:
        evaluations_grid: ``K`` values (counts, or fractions of ``T``).
        phi_size_grid: ``|phi|`` values.
    """

    name: str = "blackbox_ablation"
    # As the committed run was made: before guidance, threshold starts, joint fits and the value function's check.
    guidance: str = "validation"
    start: str = "pretrained"
    value_fit: str = "reptile"
    trust_check: bool = False
    settings: tuple[Setting, ...] = (("page_blocks0", "mlp", "input_bias", ("cost", "mcr")),)
    methods: tuple[str, ...] = ("sgd", "metricopt_sgd")
    evaluations_grid: tuple[int | float, ...] = (0.025, 0.05, 1.0)
    phi_size_grid: tuple[int, ...] = (32, 128, 512)

    kind = "blackbox_ablation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (not self.evaluations_grid or not all(_is_evaluations(k) for k in self.evaluations_grid)
                or len(set(self.evaluations_grid)) != len(self.evaluations_grid)):
            raise _blackbox_error("evaluations_grid", self.evaluations_grid,
                                  "distinct counts >= 2 or fractions of the steps in (0, 1]")
        if (not self.phi_size_grid or not all(_is_int(p, 1) for p in self.phi_size_grid)
                or len(set(self.phi_size_grid)) != len(self.phi_size_grid)):
            raise _blackbox_error("phi_size_grid", self.phi_size_grid, "distinct integers >= 1")

    def variants(self) -> tuple[BlackBoxVariant, ...]:
        """The ``K`` sweep, then the ``|phi|`` sweep (no point twice)."""
        points = [(k, self.phi_size) for k in self.evaluations_grid]
        points += [(self.evaluations, p) for p in self.phi_size_grid if (self.evaluations, p) not in points]
        return tuple(BlackBoxVariant(f"{_k_label(k)}, phi={p}", (("evaluations", k), ("phi_size", p)))
                     for k, p in points)


#: Named meta-training task distributions of the defaults sweep (``TaskDistribution`` overrides). ``medium`` is
#: the library's default written out; ``narrow`` and ``wide`` shrink and widen every range around it.
TASK_DISTRIBUTION_PRESETS: tuple[tuple[str, DistributionOverrides], ...] = (
    ("narrow", (("subset", (0.6, 1.0)), ("class_balance", 2.0), ("learning_rate", (0.5, 2.0)),
                ("initial_phi_std", 0.25))),
    ("medium", (("subset", (0.3, 1.0)), ("class_balance", 8.0), ("learning_rate", (0.3, 3.0)),
                ("initial_phi_std", 0.5))),
    ("wide", (("subset", (0.15, 1.0)), ("class_balance", 16.0), ("learning_rate", (0.1, 10.0)),
              ("initial_phi_std", 1.0))),
)


@dataclass(frozen=True)
class BlackBoxDefaultsSpec(BlackBoxSpec):
    """Choosing MetricOpt's ``value_weight`` and meta-training task distribution on validation tasks.

    The protocol of :class:`BlackBoxSpec` on ``seeds`` disjoint from
    ``reporting_seeds`` (those of the ``blackbox`` suite): the held-out tasks of
    this suite are validation tasks for the defaults, never the runs the
    benchmark reports. ``lambda_v`` is swept over ``value_weight_grid`` at the
    spec's task distribution, the distribution over the presets of
    ``distribution_grid`` at the spec's ``value_weight`` (the shared point runs
    once; it is the reference every variant is compared with). Held-out tasks
    come from the library's default distribution for every variant, so every
    variant is scored on the same tasks against the same loss-only runs.
    The criterion and the rule are in :mod:`benchmarks.suites.blackbox_selection`.

    Attributes:
        value_weight_grid: ``lambda_v`` values (> 0).
        distribution_grid: ``(name, TaskDistribution overrides)`` presets; one
            must equal the spec's ``task_distribution`` (the reference).
        selection_pair: ``(MetricOpt method, loss-only method)`` of the criterion.
        reporting_seeds: the seeds ``seeds`` must avoid.
    """

    name: str = "blackbox_defaults"
    # As the committed run was made: before guidance, threshold starts, joint fits and the value function's check.
    guidance: str = "validation"
    start: str = "pretrained"
    value_fit: str = "reptile"
    trust_check: bool = False
    # Sized for about 30 minutes with --jobs 2 on 2 cores: 6 (setting, metric) x 5 seeds x 6 variants = 180 cells,
    # one cell (meta-training + 4 held-out tasks x 2 methods) 15 s on an idle core, up to 35 s on a loaded one.
    settings: tuple[Setting, ...] = (
        ("page_blocks0", "mlp", "input_bias", ("cost", "aucpr")),
        ("yeast4", "mlp", "film", ("cost", "aucpr")),
        ("caravan", "mlp", "input_bias", ("cost", "aucpr")),
    )
    seeds: tuple[int, ...] = (10, 11, 12, 13, 14)
    methods: tuple[str, ...] = ("sgd", "metricopt_sgd")
    held_out_tasks: int = 4
    value_weight_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
    distribution_grid: tuple[tuple[str, DistributionOverrides], ...] = TASK_DISTRIBUTION_PRESETS
    selection_pair: tuple[str, str] = ("metricopt_sgd", "sgd")
    reporting_seeds: tuple[int, ...] = BlackBoxSpec.seeds

    kind = "blackbox_defaults"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_validation_seeds(self)
        if (not isinstance(self.value_weight_grid, tuple) or not self.value_weight_grid
                or not all(_is_positive(w) for w in self.value_weight_grid)
                or len(set(self.value_weight_grid)) != len(self.value_weight_grid)):
            raise _blackbox_error("value_weight_grid", self.value_weight_grid, "distinct finite numbers > 0")
        if not self.distribution_grid or not _is_named_pairs(self.distribution_grid):
            raise _blackbox_error("distribution_grid", self.distribution_grid,
                                  "(name, overrides) presets with distinct non-empty names")
        resolved = [_task_distribution("distribution_grid", p[1]) for p in self.distribution_grid]
        if any(a == b for i, a in enumerate(resolved) for b in resolved[i + 1:]):
            raise _blackbox_error("distribution_grid", self.distribution_grid, "presets of distinct distributions")
        if self.meta_distribution() not in resolved:
            raise _blackbox_error("distribution_grid", self.distribution_grid,
                                  f"presets including the spec's own task distribution {self.task_distribution!r}")
        pair = self.selection_pair
        if (not isinstance(pair, tuple) or len(pair) != 2 or pair[0] not in _METRICOPT_METHODS
                or pair[1] not in ("sgd", "adam") or not set(pair) <= set(self.methods)):
            raise _blackbox_error("selection_pair", self.selection_pair,
                                  "(a MetricOpt method, 'sgd' or 'adam'), both in `methods`")

    def preset_name(self) -> str:
        """The name of the preset that is the spec's own task distribution."""
        own = self.meta_distribution()
        return next(n for n, o in self.distribution_grid if _task_distribution("distribution_grid", o) == own)

    def variants(self) -> tuple[BlackBoxVariant, ...]:
        """The ``lambda_v`` sweep, then the distribution sweep (no point twice)."""
        presets = dict(self.distribution_grid)
        points = [(w, self.preset_name()) for w in self.value_weight_grid]
        points += [(self.value_weight, n) for n in presets if (self.value_weight, n) not in points]
        return tuple(BlackBoxVariant(f"lambda_v={w:g}, tasks={n}", (("value_weight", w), ("task_distribution",
                                                                                         presets[n])))
                     for w, n in points)



@dataclass(frozen=True)
class BlackBoxGuidanceSpec(BlackBoxSpec):
    """Choosing MetricOpt's ``guidance`` and ``start`` defaults on validation tasks.

    The protocol of :class:`BlackBoxSpec` on ``seeds`` disjoint from
    ``reporting_seeds`` (those of the ``blackbox`` suite): every guidance of
    ``guidance_grid`` crossed with every start of ``start_grid`` (6 variants by
    default), each against the pre-trained model, the pre-trained model at its
    tuned threshold and loss-only fine-tuning. The reference variant is the
    spec's own ``guidance`` and ``start`` (the library's defaults,
    ``validation`` and ``pretrained``). Held-out tasks come from the library's
    default distribution for every variant. The rule that chooses is
    :data:`benchmarks.suites.blackbox_selection.GUIDANCE_RULE`, fixed before
    the suite was run.

    Attributes:
        guidance_grid: guidances of :data:`BLACKBOX_GUIDANCE` (distinct).
        start_grid: starts of :data:`BLACKBOX_STARTS` (distinct).
        reporting_seeds: the seeds ``seeds`` must avoid.
    """

    name: str = "blackbox_guidance"
    # The reference: the library's defaults when the sweep was run.
    guidance: str = "validation"
    start: str = "pretrained"
    value_fit: str = "reptile"
    # About 180 cells (6 (setting, metric) x 5 seeds x 6 variants), each meta-training plus 2 held-out tasks x 2
    # fine-tuning runs: the size of the blackbox_defaults sweep (about 30 minutes with --jobs 2 on 2 cores).
    settings: tuple[Setting, ...] = (
        ("page_blocks0", "mlp", "input_bias", ("cost", "aucpr")),
        ("yeast4", "mlp", "film", ("cost", "aucpr")),
        ("caravan", "mlp", "input_bias", ("cost", "aucpr")),
    )
    seeds: tuple[int, ...] = (10, 11, 12, 13, 14)
    methods: tuple[str, ...] = ("pretrained", "tuned_threshold", "sgd", "metricopt_sgd")
    held_out_tasks: int = 2
    guidance_grid: tuple[str, ...] = BLACKBOX_GUIDANCE
    start_grid: tuple[str, ...] = BLACKBOX_STARTS
    value_fit_grid: tuple[str, ...] = ("reptile",)
    reporting_seeds: tuple[int, ...] = BlackBoxSpec.seeds

    kind = "blackbox_guidance"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_validation_seeds(self)
        for field, known in (("guidance_grid", BLACKBOX_GUIDANCE), ("start_grid", BLACKBOX_STARTS),
                             ("value_fit_grid", BLACKBOX_VALUE_FITS)):
            grid = getattr(self, field)
            if (not isinstance(grid, tuple) or not grid or len(set(grid)) != len(grid)
                    or not all(isinstance(g, str) and g in known for g in grid)):
                raise _blackbox_error(field, grid, f"a non-empty tuple of distinct names of {known}")
        if self.guidance not in self.guidance_grid:
            raise _blackbox_error("guidance_grid", self.guidance_grid,
                                  f"guidances including the spec's own guidance {self.guidance!r} (the reference)")
        if self.start not in self.start_grid:
            raise _blackbox_error("start_grid", self.start_grid,
                                  f"starts including the spec's own start {self.start!r} (the reference)")
        if self.value_fit not in self.value_fit_grid:
            raise _blackbox_error("value_fit_grid", self.value_fit_grid,
                                  f"fits including the spec's own value_fit {self.value_fit!r} (the reference)")
        needed = ("pretrained", "sgd", "metricopt_sgd")
        if not set(needed) <= set(self.methods):
            raise _blackbox_error("methods", self.methods, f"methods including {needed} (the rule compares them)")

    def variants(self) -> tuple[BlackBoxVariant, ...]:
        """Every guidance x every start x every value fit, guidance first (the fit named only when it varies)."""
        fits = len(self.value_fit_grid) > 1
        return tuple(BlackBoxVariant(f"guidance={g}, start={s}" + (f", value_fit={f}" if fits else ""),
                                     (("guidance", g), ("start", s)) + ((("value_fit", f),) if fits else ()))
                     for g in self.guidance_grid for s in self.start_grid for f in self.value_fit_grid)

#: Methods of the tabular suite: MLP recipes of :mod:`benchmarks.harness.methods` and the baselines of
#: :mod:`benchmarks.peers.tabular` (the recommended recipe first: the reference).
TABULAR_METHODS: tuple[str, ...] = (
    "recipe", "anyloss", "anyloss_tuned", "bce", "bce_tuned", "weighted_bce", "focal", "dice", "sigmoid_f1",
    "il_focal", "il_focal_tuned", "tuned_hgb", "tuned_lr", "weighted_lr", "lgb_unbalance", "lgb_anyloss",
)


#: The named table sets of the tabular suites (``benchmarks.suites.tabular.resolve_tables``).
TABLE_SETS = ("report", "validation", "multiclass", "multiclass_validation")
#: Methods of the multi-class tabular suite: every method above that takes multi-class targets, argmax decisions.
TABULAR_MULTICLASS_METHODS: tuple[str, ...] = (
    "recipe", "anyloss", "bce", "weighted_bce", "focal", "dice", "hgb", "lr", "weighted_lr", "lgb_logloss",
    "lgb_anyloss",
)


def _check_tables_and_reference(spec: Any, table_sets: Sequence[str]) -> None:
    """A table suite's ``tables`` (a named set or a tuple of names) and ``reference`` (one of ``methods``)."""
    if isinstance(spec.tables, str) and spec.tables not in table_sets:
        raise ValueError(f"`tables` must be one of {', '.join(map(repr, table_sets))} or a tuple of table "
                         f"names; got {spec.tables!r}")
    if spec.reference not in spec.methods:
        raise ValueError(f"`reference` {spec.reference!r} must be one of `methods` {spec.methods}")

@dataclass(frozen=True)
class TabularSpec(TrainingProtocol):
    """The practitioner's tabular benchmark (issue 14): 100+ real imbalanced binary tables, every method.

    Every (table, seed) gets one stratified 60/20/20 train/validation/test
    split of the raw numeric features (``train_val_test_split(random_state=seed,
    standardize=False)``). The MLP methods (names in
    :mod:`benchmarks.harness.methods`) train on the train-standardised copy of
    the same rows with the :class:`TrainingProtocol` budget and keep the epoch
    with the best validation score of the target metric (the quality
    protocol); the baselines of :mod:`benchmarks.peers.tabular` take the raw
    rows (scikit-learn models fit on train + validation and select inside
    them; LightGBM fits on train and stops early on validation). Run by
    :mod:`benchmarks.suites.tabular` (resumable, parallel).

    Attributes:
        tables: ``"report"`` (the collection's report tables), ``"validation"``
            (its validation tables), ``"multiclass"`` (its multi-class report
            tables of at most 20,000 rows whose every class has 3 rows or
            more), ``"multiclass_validation"`` (its multi-class validation
            tables) or a tuple of collection table names.
        methods: method names; a method that cannot run here is recorded as
            unavailable.
        metrics: target metrics (each method is trained or tuned for each where it takes a target).
        reference: the method compared with every other (wins/ties/losses, Wilcoxon).
        recipe_params: ``MetricClassifier`` arguments beside ``metric`` and
            ``random_state`` (empty: its defaults, the recommended recipe; the
            smoke suite shortens training).
        amplification: AnyLoss steepness L of the ``anyloss`` MLP method.
        focal_gamma: focusing parameter of the focal baseline.
    """

    name: str = "tabular"
    tables: str | tuple[str, ...] = "report"
    methods: tuple[str, ...] = TABULAR_METHODS
    metrics: tuple[str, ...] = ("f1", "mcc")
    reference: str = "recipe"
    recipe_params: tuple[tuple[str, Any], ...] = ()
    amplification: float | str = 73.0
    focal_gamma: float = 2.0

    kind = "tabular"

    def __post_init__(self) -> None:
        _check_tables_and_reference(self, TABLE_SETS)


#: The constraints of the constrained suites (issue 17): recall at two precision floors, TPR at two FPR budgets.
CONSTRAINTS: tuple[str, ...] = ("recall@precision>=0.7", "recall@precision>=0.9", "tpr@fpr<=0.01", "tpr@fpr<=0.05")
#: The constrained loss's variants that ``constrained_selection`` compares: ``ConfusionLoss(constraint,
#: constraint_method=<method>, constraint_strength=<strength>, amplification=<L>)`` named
#: ``constrained_<method>_<strength>[_L<L>]`` (without ``_L``: L = 73). The rule, fixed before the run: the loss's
#: default is the variant with the highest mean constrained score (the test objective where the constraint held,
#: its worst value where not) over every (validation table, seed, constraint) at calibration confidence 0.8.
CONSTRAINED_VARIANTS: tuple[str, ...] = (
    "constrained_lagrangian_1", "constrained_lagrangian_0.1", "constrained_lagrangian_1_L20",
    "constrained_lagrangian_0.1_L20", "constrained_lagrangian_1_Lauto", "constrained_augmented_1_L20",
    "constrained_penalty_1_L20", "constrained_quantile_0.1_L20",
)
#: Methods of the constrained suite (:mod:`benchmarks.suites.constrained`): the library's loss with its defaults
#: (the reference), the BCE MLPs and the boosted trees calibrated on validation, the peers' constrained losses.
CONSTRAINED_METHODS: tuple[str, ...] = ("constrained", "bce", "weighted_bce", "hgb", "lightgbm", *CONSTRAINED_PEERS)
#: Methods of ``constrained_selection``: the loss's defaults, its variants and the baselines they must beat.
CONSTRAINED_SELECTION_METHODS: tuple[str, ...] = (*CONSTRAINED_VARIANTS, "bce", "weighted_bce", "hgb")
#: The named table sets of the constrained suites (binary tables only).
CONSTRAINED_TABLE_SETS = ("report", "validation")


@dataclass(frozen=True)
class ConstrainedSpec(TrainingProtocol):
    """Constrained metrics as losses (issue 17): the objective at a rate constraint, on held-out rows.

    Every (table, seed) gets the tabular suite's split: one stratified 60/20/20
    train / validation / test split of the raw features
    (``train_val_test_split(random_state=seed, standardize=False)``) for the
    boosted trees and its train-standardised copy for the MLPs, which train
    with the :class:`TrainingProtocol` budget. Per constraint, an MLP keeps the
    epoch whose validation scores give the best objective at the constraint
    (the best feasible threshold, no margin); every method's decision threshold
    is then chosen on validation at each calibration ``confidence``
    (``calibrate_threshold``) and applied to test. Run by
    :mod:`benchmarks.suites.constrained` (resumable, parallel).

    Attributes:
        tables: ``"report"`` or ``"validation"`` (the collection's binary
            report / validation tables) or a tuple of table names.
        constraints: constrained metrics (``metricopt.metrics.constrained``
            grammar); each method is selected, calibrated and scored for each.
        methods: method names (:mod:`benchmarks.suites.constrained`); one that
            cannot run here is recorded as unavailable, a peer that does not
            apply to a constraint as not applicable there.
        confidences: the calibration confidences, each in [0.5, 1); 0.5 is the
            plain rule (the constraint met on validation, no margin).
        reference: the method compared with every other.
    """

    name: str = "constrained"
    tables: str | tuple[str, ...] = "report"
    seeds: tuple[int, ...] = (0, 1, 2)
    constraints: tuple[str, ...] = CONSTRAINTS
    methods: tuple[str, ...] = CONSTRAINED_METHODS
    confidences: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9)
    reference: str = "constrained"

    kind = "constrained"

    def __post_init__(self) -> None:
        from metricopt.metrics.constrained import parse_constrained

        _check_tables_and_reference(self, CONSTRAINED_TABLE_SETS)
        if not self.constraints:
            raise ValueError("`constraints` must name at least one constrained metric; got ()")
        for constraint in self.constraints:
            parse_constrained(constraint, argument="constraints")
        if not self.confidences or len(set(self.confidences)) != len(self.confidences) or not all(
                isinstance(q, float) and 0.5 <= q < 1 for q in self.confidences):
            raise ValueError(f"`confidences` must be distinct floats in [0.5, 1); got {self.confidences!r}")


Spec = (QualitySpec | AblationSpec | SpeedSpec | RetrievalSpec | RankSpeedSpec | BlackBoxSpec | TabularSpec
        | ConstrainedSpec)

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
    "speed_smoke": SpeedSpec(name="speed_smoke", sizes=(256, 1024), repeats=5, warmup=2, min_repeats=3),
    # AP for imbalanced classification: RaMBO's rank losses against BCE and LibAUC's AP and AUC losses,
    # scored by the threshold-free rank metrics (metricopt.evaluation.THRESHOLD_FREE_METRICS).
    # AP as a loss (issue 16) on the collection's report tables; the oversampled batches were chosen on its
    # validation tables by "ap_validation" (docs/benchmarks/ap.md).
    "ap_quality": QualitySpec(
        name="ap_quality", binary_datasets=_collection_names("report"), multiclass_datasets=(),
        methods=AP_METHODS, metrics=("ap", "auroc"), reference="rambo_ap_oversampled",
    ),
    "ap_validation": QualitySpec(
        name="ap_validation", binary_datasets=_collection_names("validation"), multiclass_datasets=(),
        methods=("rambo_ap_oversampled", "rambo_ap", "bce", "bce_oversampled"), metrics=("ap", "auroc"),
        reference="rambo_ap_oversampled", seeds=(10, 11, 12, 13, 14),
    ),
    "ap_quality_smoke": QualitySpec(
        name="ap_quality_smoke", binary_datasets=("breast_cancer",), multiclass_datasets=(),
        methods=AP_METHODS, metrics=("ap", "auroc"), reference="rambo_ap_oversampled", seeds=(0,), epochs=3,
    ),
    "ap_validation_smoke": QualitySpec(
        name="ap_validation_smoke", binary_datasets=("breast_cancer",), multiclass_datasets=(),
        methods=("rambo_ap_oversampled", "rambo_ap", "bce", "bce_oversampled"), metrics=("ap", "auroc"),
        reference="rambo_ap_oversampled", seeds=(10,), epochs=3,
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
        retrieval_goal_size=64,
        slope_range=(256, 1024), retrieval_slope_range=(16, 64),
    ),
    # Black-box metrics (MetricOpt): value-guided fine-tuning of adapters against loss-only fine-tuning.
    "blackbox": BlackBoxSpec(),
    # The blackbox suite's tabular settings and reported seeds without the learned optimizer and Fashion-MNIST
    # (which take three quarters of its time): the library's defaults on held-out tasks in about 20 minutes.
    "blackbox_tabular": BlackBoxSpec(
        name="blackbox_tabular", settings=tuple(s for s in BlackBoxSpec().settings if s[0] != "fashion_mnist"),
        methods=tuple(m for m in BLACKBOX_METHODS if m != "metricopt_learned"),
    ),
    # MetricOpt on the paper's retrieval setting: recall@1 of embedders with FiLM on the rank family's
    # class-disjoint sets (test classes never seen in pre-training, meta-training or fine-tuning).
    "blackbox_retrieval": BlackBoxSpec(
        name="blackbox_retrieval",
        settings=tuple((d, m, "film", ("recall@1",)) for d, m in (("letter_retrieval", "mlp_embedder"),
                                                                  ("fashion_retrieval", "cnn_embedder"))),
        methods=("pretrained", "sgd", "adam", "metricopt_sgd", "metricopt_adam", "direct_loss"),
    ),
    "blackbox_smoke": BlackBoxSpec(
        name="blackbox_smoke",
        settings=(("breast_cancer", "mlp", "input_bias", ("mcr", "aucpr", "cost")),
                  ("fashion_mnist", "cnn", "film", ("aucpr",)),
                  ("fashion_retrieval", "cnn_embedder", "film", ("recall@1",))),
        seeds=(0,), pretrain_epochs=(("cnn", 1), ("mlp", 5), ("cnn_embedder", 1)), fashion_sizes=(300, 100),
        retrieval_sizes=(300, 200), steps=20, evaluations=4, batch_size=32, meta_tasks=3, warmup_tasks=2, phi_size=8,
    ),
    "blackbox_ablation": BlackBoxAblationSpec(),
    "blackbox_ablation_smoke": BlackBoxAblationSpec(
        name="blackbox_ablation_smoke", settings=(("breast_cancer", "mlp", "input_bias", ("cost", "mcr")),),
        seeds=(0,), pretrain_epochs=(("mlp", 5),), steps=20, evaluations=4, meta_tasks=3, warmup_tasks=2,
        phi_size=8, evaluations_grid=(2, 4, 1.0), phi_size_grid=(4, 8),
    ),
    # MetricOpt's value_weight and meta-training task distribution, chosen on validation seeds (10-14).
    "blackbox_defaults": BlackBoxDefaultsSpec(),
    "blackbox_defaults_smoke": BlackBoxDefaultsSpec(
        name="blackbox_defaults_smoke", settings=(("breast_cancer", "mlp", "input_bias", ("cost",)),),
        seeds=(10,), pretrain_epochs=(("mlp", 5),), steps=20, evaluations=4, meta_tasks=3, warmup_tasks=2,
        phi_size=8, held_out_tasks=2, value_weight_grid=(0.3, 1.0), distribution_grid=TASK_DISTRIBUTION_PRESETS[:2],
    ),
    # MetricOpt's guidance (which rows guide, which pick) and start (pre-trained or tuned threshold), chosen on
    # validation seeds (10-14) by the rule of benchmarks.suites.blackbox_selection.GUIDANCE_RULE.
    "blackbox_guidance": BlackBoxGuidanceSpec(),
    "blackbox_guidance_smoke": BlackBoxGuidanceSpec(
        name="blackbox_guidance_smoke", settings=(("breast_cancer", "mlp", "input_bias", ("cost",)),),
        seeds=(10,), pretrain_epochs=(("mlp", 5),), steps=20, evaluations=4, meta_tasks=2, warmup_tasks=1,
        phi_size=8, held_out_tasks=2,
    ),
    # How the value function learns (Reptile or a joint regression on every observation), at the guidance and start
    # that blackbox_guidance chose, on the same validation seeds and by the same rule (GUIDANCE_RULE).
    "blackbox_value_fit": BlackBoxGuidanceSpec(
        name="blackbox_value_fit", guidance="train", start="tuned_threshold", guidance_grid=("train",),
        start_grid=("tuned_threshold",), value_fit_grid=BLACKBOX_VALUE_FITS,
    ),
    # The practitioner's tabular benchmark (issue 14): the collection's report tables, every method, 5 seeds.
    "tabular": TabularSpec(),
    # Choosing the recipe (docs/benchmarks/tabular.md, "Choosing the recipe"): its candidates and tuned HGB on the
    # validation tables, 3 seeds; the rule that picks one was fixed before this ran.
    "tabular_selection": TabularSpec(
        name="tabular_selection", tables="validation", seeds=(0, 1, 2),
        methods=(*(f"candidate_{name}" for name in BINARY_CANDIDATES), "tuned_hgb"),
        reference="candidate_mlp_anyloss",
    ),
    # The same for multi-class targets: the collection's multi-class validation tables, HGB as the bar.
    "tabular_selection_multiclass": TabularSpec(
        name="tabular_selection_multiclass", tables="multiclass_validation", seeds=(0, 1, 2),
        methods=(*(f"candidate_{name}" for name in MULTICLASS_CANDIDATES), "hgb"),
        reference="candidate_multiclass_mlp_anyloss",
    ),
    # Multi-class tables (issue 14): the collection's multi-class report tables, argmax decisions, macro F1 and MCC.
    "tabular_multiclass": TabularSpec(
        name="tabular_multiclass", tables="multiclass", methods=TABULAR_MULTICLASS_METHODS,
    ),
    "tabular_multiclass_smoke": TabularSpec(
        name="tabular_multiclass_smoke", tables=("balance", "tae"), seeds=(0,), epochs=3,
        methods=("recipe", "anyloss", "bce", "hgb", "weighted_lr", "lgb_anyloss", "lgb_logloss"),
        recipe_params=(("max_epochs", 3),),
    ),
    # Constrained metrics as losses (issue 17): the loss with its defaults against the BCE MLPs, the boosted trees
    # and the peers' constrained losses, each calibrated on validation, on the collection's report tables.
    "constrained": ConstrainedSpec(),
    # Choosing the loss's defaults (constraint_method, constraint_strength): its variants on the validation tables.
    "constrained_selection": ConstrainedSpec(
        name="constrained_selection", tables="validation", methods=CONSTRAINED_SELECTION_METHODS,
        reference="constrained_lagrangian_1",
    ),
    # The library's estimator (its recipe, and with loss='anyloss') for each constraint, beside the loss alone and
    # the boosted trees, on the report tables; a run of its own so that the first run's results stand as they were.
    "constrained_recipe": ConstrainedSpec(
        name="constrained_recipe", methods=("recipe", "recipe_anyloss", "constrained", "lightgbm", "hgb"),
        reference="recipe",
    ),
    # An exploration on the validation tables (not a choice of defaults): weighted BCE plus the constrained loss.
    "constrained_hybrid": ConstrainedSpec(
        name="constrained_hybrid", tables="validation",
        methods=("weighted_bce_constrained", "weighted_bce", "constrained", "bce"),
        reference="weighted_bce_constrained",
    ),
    "constrained_recipe_smoke": ConstrainedSpec(
        name="constrained_recipe_smoke", tables=("appendicitis", "new_thyroid1"), seeds=(0,), epochs=3,
        methods=("recipe", "lightgbm"), reference="recipe",
    ),
    "constrained_smoke": ConstrainedSpec(
        name="constrained_smoke", tables=("appendicitis", "new_thyroid1"), seeds=(0,), epochs=3,
    ),
    "constrained_selection_smoke": ConstrainedSpec(
        name="constrained_selection_smoke", tables=("appendicitis", "new_thyroid1"), seeds=(0,), epochs=3,
        methods=("constrained", "constrained_penalty_1", "bce", "hgb"),
    ),
    "tabular_smoke": TabularSpec(
        name="tabular_smoke", tables=("appendicitis", "new_thyroid1"), seeds=(0,), epochs=3,
        methods=("recipe", "anyloss", "bce", "bce_tuned", "tuned_hgb", "weighted_lr", "lgb_anyloss"),
        recipe_params=(("max_epochs", 3),),
    ),
}


def get_suite(kind: str, *, smoke: bool = False) -> Spec:
    """The named suite ``kind`` (``"quality"``, ``"ablation"``, ``"speed"``, ``"ap_quality"``...) or its smoke
    version."""
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
