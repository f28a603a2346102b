"""Retrieval-quality runner: RaMBO's recall losses against metric-learning peers.

Datasets (class-disjoint, :mod:`metricopt.app.data.retrieval`): UCI Letter
(letters A..M train, N..Z test, 16 standardised features, used whole);
``letter_shadow``, the same split with 48 shadow columns (3 copies of the 16
features, each column's values in a random row order: real marginals, no class
information), where the raw features and an untrained network retrieve
poorly and training has to find the informative columns; and Fashion-MNIST
(classes 0-4 of the official training file train, classes 5-9 of the official
test file test; ``n_train`` / ``n_test`` stratified rows drawn with the seed).

Protocol, per (dataset, seed), the same for every method:

1. The class-disjoint split; then ``val_size`` (20 %) of the training rows,
   stratified by class (``sklearn.model_selection.train_test_split(
   random_state=seed)``), are held out as validation. Validation rows are of
   the *training* classes; test rows of classes never seen in training.
2. One embedder initialisation per seed (``torch.manual_seed(seed)`` in a
   forked RNG), shared by every method: Letter an MLP 16 -> 128 -> 128 -> 64
   (:func:`metricopt.app.recipes.classification.make_mlp`), Fashion-MNIST a small CNN
   (conv 32 3x3, max-pool 2, conv 64 3x3, max-pool 2, fc 128, fc 64; ReLU,
   "same" padding). The 64-d output is the embedding; every loss gets the raw
   ``(B, 64)`` output and labels (the losses L2-normalise as they need).
3. Adam, the same learning rate, weight decay and epochs for every method.
   Batches come from :class:`ClassBalancedSampler`: P classes x K items per
   class (Letter: all 13 training classes x 16 = 208; Fashion-MNIST: all 5 x
   40 = 200), seeded by the seed, so every method sees the same batches.
   Exception: ``pml_smoothap`` (pytorch-metric-learning's SmoothAPLoss is only
   correct when a batch holds as many classes as items per class) gets P = K
   batches (Letter 13 x 13 = 169, Fashion-MNIST 5 x 5 = 25), and more of them:
   every method gets ``floor(n_train / batch size)`` batches per epoch, i.e.
   the same number of samples per epoch (within one batch), not the same
   number of steps.
4. After every epoch the validation rows are embedded and scored with
   :func:`metricopt.metrics.retrieval_report` (queries = gallery = validation
   set, each query's own item excluded); the epoch with the best validation
   R@1 is kept (the earliest on ties).
5. Test: :func:`~metricopt.metrics.retrieval_report` of the kept weights on
   the test set (queries = gallery = test set, self excluded, cosine
   similarity): R@1, R@2, R@4, R@8, MAP@R and MRR.
6. Untrained references, scored on the same test set and never ranked:
   ``untrained`` (the seed's initial embedder) and ``raw_input`` (the input
   features themselves). On these small benchmarks they are strong (raw
   Letter features give R@1 about 0.976, raw Fashion-MNIST pixels about 0.93),
   so a method's gain over them, not only its rank among methods, says
   whether training on the seen classes transferred to the unseen ones.

Two peers were tuned on validation before the benchmark, because their
defaults do not train on these batches (``bbb_recall``'s lambda, torchsort's
regularisation strength); the numbers are in ``RetrievalSpec.peer_tuning_note``.

A step whose loss is not finite is skipped (no update) and counted in the
run's ``skipped_steps``; a validation set whose embeddings cannot be scored
(non-finite or zero rows) scores -inf for that epoch.

Each (dataset, seed, method) is one task; tasks run in worker processes
(``jobs``), each with ``torch.set_num_threads(spec.threads)``. The results do
not depend on ``jobs``.

Reports: per dataset, mean ± sample std over seeds of each metric (best in
bold); wins/ties/losses of the reference (``rambo_loglog``) against every other
method on R@1, counted over datasets by seed-means
(:func:`benchmarks.harness.results.wins_ties_losses`) with the paired
per-(dataset, seed) mean difference and its standard error; a PNG with R@1 and
MAP@R bars (error bars: std over seeds) per dataset, the references as
horizontal lines.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.harness.jobs import run_tasks
from benchmarks.harness.results import (
    _bold_max,
    _metadata_lines,
    _row,
    aggregate,
    collect_metadata,
    format_mean_std,
    load_average,
    split_info,
    wins_ties_losses,
    write_suite_reports,
)
from benchmarks.harness.specs import RETRIEVAL_SUITE_DATASETS, RetrievalSpec, spec_to_dict
from benchmarks.harness.threads import torch_threads

if TYPE_CHECKING:
    from metricopt.app.data import Split

__all__ = [
    "RETRIEVAL_METHODS",
    "ClassBalancedSampler",
    "RetrievalMethod",
    "build_loss",
    "load_data",
    "make_embedder",
    "plot_retrieval",
    "refresh_summary",
    "retrieval_markdown",
    "run_suite",
    "run_task",
    "train_method",
]

TASK = "retrieval"
#: Metrics recorded per run (the tables show the spec's ``metrics``).
RECORDED_METRICS: tuple[str, ...] = ("R@1", "R@2", "R@4", "R@8", "MAP@R", "MRR")
#: Untrained references scored beside the methods (test only, no training, no selection): what the
#: test classes' retrieval is before any metric learning. They are shown but never ranked.
REFERENCES: dict[str, str] = {
    "untrained": "untrained embedder (the seed's initial weights)",
    "raw_input": "raw input features (standardised Letter features / normalised pixels)",
}
_REFERENCE_LABELS = {"untrained": "untrained embedder", "raw_input": "raw input features"}


# ---------------------------------------------------------------------------
# methods


@dataclass(frozen=True)
class RetrievalMethod:
    """One loss of the comparison.

    Attributes:
        name, label: key and table header.
        loss: ``loss(spec) -> nn.Module`` with ``forward(embeddings (B, D), labels (B,))``;
            raises ``ModuleNotFoundError`` when a peer is not installed.
        square_batch: needs batches of P classes x P items (``pml_smoothap``).
        peer: the peer name in :mod:`benchmarks.peers.ranking`, None for metricopt's own losses.
    """

    name: str
    label: str
    loss: Callable[[RetrievalSpec], nn.Module]
    square_batch: bool = False
    peer: str | None = None


#: The recall loss's defaults before issue 16 re-chose them (interpolation 2048, margin 0.005).
FORMER_RECALL_DEFAULTS = {"interpolation": 2.0, "margin": 0.0}


def _rambo_former(spec: RetrievalSpec) -> nn.Module:
    from metricopt.losses import RecallLoss

    return RecallLoss(variant="loglog", **FORMER_RECALL_DEFAULTS)


def _rambo(variant: str, margin: bool, memory: bool) -> Callable[[RetrievalSpec], nn.Module]:
    def build(spec: RetrievalSpec) -> nn.Module:
        from metricopt.losses import RecallLoss

        options = {"margin": spec.rambo_margin} if margin else {}  # otherwise the loss's default margin
        return RecallLoss(variant=variant, memory_size=spec.rambo_memory_size if memory else 0, **options)

    return build


def _peer(name: str) -> Callable[[RetrievalSpec], nn.Module]:
    def build(spec: RetrievalSpec) -> nn.Module:
        from benchmarks.peers.ranking import make_retrieval_peer

        options: dict[str, Any] = {}
        if name == "bbb_recall":
            options["lambda_val"] = spec.bbb_recall_lambda
        elif name == "torchsort_ap":
            options["regularization_strength"] = spec.torchsort_ap_strength
        return make_retrieval_peer(name, **options)

    return build


#: Every method the retrieval suites know, in table order.
RETRIEVAL_METHODS: dict[str, RetrievalMethod] = {
    m.name: m
    for m in (
        RetrievalMethod("rambo_loglog", "RaMBO loglog", _rambo("loglog", False, False)),
        RetrievalMethod("rambo_log", "RaMBO log", _rambo("log", False, False)),
        RetrievalMethod("rambo_loglog_margin", "RaMBO loglog +margin", _rambo("loglog", True, False)),
        RetrievalMethod("rambo_loglog_memory", "RaMBO loglog +memory", _rambo("loglog", False, True)),
        RetrievalMethod("rambo_loglog_margin_memory", "RaMBO loglog +margin +memory", _rambo("loglog", True, True)),
        RetrievalMethod("rambo_loglog_former", "RaMBO loglog, former defaults (2 / 0)", _rambo_former),
        RetrievalMethod("pml_contrastive", "Contrastive (PML)", _peer("pml_contrastive"), peer="pml_contrastive"),
        RetrievalMethod("pml_triplet", "Triplet semihard (PML)", _peer("pml_triplet"), peer="pml_triplet"),
        RetrievalMethod("pml_multisimilarity", "MultiSimilarity (PML)", _peer("pml_multisimilarity"),
                        peer="pml_multisimilarity"),
        RetrievalMethod("pml_fastap", "FastAP (PML)", _peer("pml_fastap"), peer="pml_fastap"),
        RetrievalMethod("pml_smoothap", "SmoothAP (PML)", _peer("pml_smoothap"), square_batch=True,
                        peer="pml_smoothap"),
        RetrievalMethod("il_smoothap", "Smooth-AP (imbalanced-losses)", _peer("il_smoothap"), peer="il_smoothap"),
        RetrievalMethod("torchsort_ap", "AP (torchsort)", _peer("torchsort_ap"), peer="torchsort_ap"),
        RetrievalMethod("bbb_recall", "RecallLoss (blackbox-backprop)", _peer("bbb_recall"), peer="bbb_recall"),
    )
}


def method_label(name: str) -> str:
    return RETRIEVAL_METHODS[name].label if name in RETRIEVAL_METHODS else name


def build_loss(name: str, spec: RetrievalSpec) -> nn.Module:
    """The loss module of method ``name`` (``ModuleNotFoundError`` if its peer is missing)."""
    if name not in RETRIEVAL_METHODS:
        raise ValueError(f"unknown retrieval method {name!r}; known: {list(RETRIEVAL_METHODS)}")
    return RETRIEVAL_METHODS[name].loss(spec)


def method_status(name: str, spec: RetrievalSpec) -> str:
    """``"ok"`` if the method's loss can be built here, else ``"not installed: <reason>"``."""
    try:
        build_loss(name, spec)
    except ModuleNotFoundError as exc:
        return f"not installed: {exc}"
    return "ok"


# ---------------------------------------------------------------------------
# data and models


def load_data(spec: RetrievalSpec, dataset: str, seed: int) -> Split:
    """The class-disjoint split of ``dataset`` with ``spec.val_size`` of its training rows held out (stratified).

    Training and validation rows hold the training classes, test rows the unseen classes;
    ``X_*`` float32, ``y_*`` int64.
    """
    from sklearn.model_selection import train_test_split

    from metricopt.app.data import Split
    from metricopt.app.data.retrieval import RETRIEVAL_DATASETS

    if dataset not in RETRIEVAL_SUITE_DATASETS:
        raise ValueError(f"unknown retrieval dataset {dataset!r}; known: {list(RETRIEVAL_SUITE_DATASETS)}")
    sizes = dict(zip(("n_train", "n_test"), spec.fashion_sizes, strict=True))
    split = RETRIEVAL_DATASETS[dataset](**(sizes | {"seed": seed} if dataset == "fashion_mnist" else {}))
    X_fit, X_val, y_fit, y_val = train_test_split(
        split.X_train, split.y_train, test_size=spec.val_size, random_state=seed, stratify=split.y_train
    )
    as32, as64 = (lambda a: np.ascontiguousarray(a, dtype=np.float32)), (lambda a: np.ascontiguousarray(a, np.int64))
    return Split(as32(X_fit), as64(y_fit), as32(X_val), as64(y_val), as32(split.X_test), as64(split.y_test))


class SmallCNN(nn.Sequential):
    """conv 32 3x3 -> max-pool 2 -> conv 64 3x3 -> max-pool 2 -> fc 128 -> fc ``embedding_dim`` (ReLU between)."""

    def __init__(self, embedding_dim: int = 64, in_channels: int = 1, side: int = 28) -> None:
        flat = 64 * (side // 4) * (side // 4)
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, embedding_dim),
        )


def make_embedder(spec: RetrievalSpec, dataset: str, seed: int, input_shape: Sequence[int]) -> nn.Module:
    """The embedder of ``dataset``, initialised from ``seed`` alone (the same for every method)."""
    from metricopt.app.recipes.classification import make_mlp

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if len(input_shape) == 1:
            return make_mlp(int(input_shape[0]), spec.embedding_dim, spec.mlp_hidden, seed=seed)
        channels, side = int(input_shape[0]), int(input_shape[-1])
        return SmallCNN(spec.embedding_dim, channels, side)


# ---------------------------------------------------------------------------
# sampler


class ClassBalancedSampler:
    """Batches of P classes x K items per class, as index arrays.

    Each class keeps a shuffled queue of its rows, refilled with a fresh
    permutation when fewer than K are left, so rows are drawn without
    replacement within a pass over their class, and never twice in one batch
    (for classes of at least K rows). With P equal to the number of
    classes every batch holds every class; otherwise P classes are drawn at
    random per batch. An epoch is ``samples_per_epoch // (P * K)`` batches
    (default: as many rows as the data). The draws depend only on ``seed``,
    the labels and P, K: two samplers built alike yield the same batches.
    """

    def __init__(self, labels: np.ndarray, classes_per_batch: int, items_per_class: int, *,
                 samples_per_epoch: int | None = None, seed: int = 0) -> None:
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        if not 1 <= classes_per_batch <= len(self.classes):
            raise ValueError(f"`classes_per_batch` must be in [1, {len(self.classes)}]; got {classes_per_batch}")
        if items_per_class < 1:
            raise ValueError(f"`items_per_class` must be >= 1; got {items_per_class}")
        self.P, self.K = int(classes_per_batch), int(items_per_class)
        self.batch_size = self.P * self.K
        samples = len(labels) if samples_per_epoch is None else int(samples_per_epoch)
        self.batches_per_epoch = max(1, samples // self.batch_size)
        self._rows = {c: np.flatnonzero(labels == c) for c in self.classes}
        self._queues: dict[Any, np.ndarray] = {c: np.empty(0, dtype=np.int64) for c in self.classes}
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _take(self, c: Any) -> np.ndarray:
        queue = self._queues[c]
        while len(queue) < self.K:
            fresh = self._rng.permutation(self._rows[c])
            # Rows still left from the last pass go to the end of the new one, so that
            # no batch holds a row twice (for classes with at least K rows).
            again = np.isin(fresh, queue)
            queue = np.concatenate([queue, fresh[~again], fresh[again]])
        self._queues[c] = queue[self.K:]
        return queue[: self.K]

    def __iter__(self) -> Iterator[np.ndarray]:
        """One epoch of batches (the state carries over to the next epoch)."""
        for _ in range(self.batches_per_epoch):
            if self.P == len(self.classes):
                chosen = self.classes
            else:
                chosen = np.sort(self._rng.choice(self.classes, size=self.P, replace=False))
            yield np.concatenate([self._take(c) for c in chosen])


# ---------------------------------------------------------------------------
# training and scoring


@torch.no_grad()
def embed(model: nn.Module, X: np.ndarray, batch_size: int = 1024) -> Tensor:
    model.eval()
    X_t = torch.as_tensor(X)
    return torch.cat([model(chunk) for chunk in X_t.split(batch_size)])


def _score(embeddings: Tensor, labels: np.ndarray, ks: Sequence[int]) -> dict[str, float] | None:
    """retrieval_report (queries = gallery, self excluded), or None for embeddings it cannot score."""
    from metricopt.metrics import retrieval_report

    if not bool(torch.isfinite(embeddings).all()) or bool((embeddings.norm(dim=1) == 0).any()):
        return None
    try:
        return retrieval_report(embeddings, labels, ks=tuple(ks))
    except ValueError:
        return None


def batch_shape(spec: RetrievalSpec, dataset: str, method: str) -> tuple[int, int]:
    """(P, K) of ``method`` on ``dataset``: the spec's, or P x P for square-batch methods."""
    P, K = spec.batch_for(dataset)
    return (P, P) if RETRIEVAL_METHODS[method].square_batch else (P, K)


def train_method(spec: RetrievalSpec, dataset: str, data: Split, method: str, seed: int,
                 *, epochs: int | None = None) -> dict[str, Any]:
    """Train ``method`` on ``data``, the split of ``dataset``, with the seed's initialisation and batches.

    The kept weights are those of the epoch with the best validation R@1.

    Returns:
        ``{"test": {metric: value}, "val": best validation R@1, "epoch": kept epoch, "val_curve": [...],
        "train_loss": [...], "skipped_steps": int, "seconds": float, "batch": [P, K], "steps": int}``.
    """
    epochs = spec.epochs_for(dataset) if epochs is None else epochs
    loss_fn = build_loss(method, spec)
    model = make_embedder(spec, dataset, seed, data.X_train.shape[1:])
    P, K = batch_shape(spec, dataset, method)
    sampler = ClassBalancedSampler(data.y_train, P, K, samples_per_epoch=len(data.y_train), seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    torch.manual_seed(seed)  # any randomness inside a loss is seeded alike for every method
    best_val, best_epoch, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    val_curve: list[float | None] = []
    losses: list[float | None] = []
    skipped = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        loss_fn.train()
        total, count = 0.0, 0
        for index in sampler:
            idx = torch.from_numpy(index)
            loss = loss_fn(model(X[idx]), y[idx])
            if not bool(torch.isfinite(loss)):
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
        losses.append(total / count if count else None)
        scores = _score(embed(model, data.X_val), data.y_val, ks=(1,))
        val = -math.inf if scores is None else scores["R@1"]
        val_curve.append(None if scores is None else val)
        if val > best_val:
            best_val, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    test = _score(embed(model, data.X_test), data.y_test, ks=(1, 2, 4, 8))
    test = {k: (math.nan if test is None else float(test[k])) for k in RECORDED_METRICS}
    return {
        "test": test, "val": best_val if math.isfinite(best_val) else None, "epoch": best_epoch,
        "val_curve": val_curve, "train_loss": losses, "skipped_steps": skipped,
        "seconds": round(seconds, 2), "batch": [P, K], "steps": epochs * len(sampler),
    }


def run_task(spec: RetrievalSpec, dataset: str, seed: int, method: str) -> dict[str, Any]:
    """Train and score one method on one (dataset, seed).

    Returns:
        ``{"dataset", "seed", "method", "records": [...], "run": {...}, "dataset_info": {...},
        "skipped": reason or None, "seconds": float}``.
    """
    with torch_threads(spec.threads):
        start = time.perf_counter()
        out: dict[str, Any] = {"dataset": dataset, "seed": seed, "method": method, "records": [], "run": None,
                               "dataset_info": {}, "skipped": None}
        try:
            data = load_data(spec, dataset, seed)
        except (ImportError, FileNotFoundError) as exc:  # the data set is not installed: record it, run the rest
            out["unavailable_dataset"] = f"{type(exc).__name__}: {exc}"
            out["seconds"] = time.perf_counter() - start
            return out
        out["dataset_info"] = split_info(data)
        if method in REFERENCES:
            out["reference_records"] = [
                {"dataset": dataset, "task": TASK, "method": method, "metric": k, "seed": seed, "test": v}
                for k, v in score_reference(spec, dataset, data, method, seed).items()
            ]
            out["seconds"] = time.perf_counter() - start
            return out
        try:
            run = train_method(spec, dataset, data, method, seed)
        except ModuleNotFoundError as exc:
            out["skipped"] = f"not installed: {exc}"
            out["seconds"] = time.perf_counter() - start
            return out
        for metric, value in run["test"].items():
            out["records"].append({
                "dataset": dataset, "task": TASK, "method": method, "metric": metric, "seed": seed,
                "test": value, "val": run["val"], "epoch": run["epoch"], "threshold": None,
                "train_seconds": run["seconds"],
            })
        run.pop("test")
        out["run"] = {"dataset": dataset, "method": method, "seed": seed, **run}
        out["seconds"] = time.perf_counter() - start
        return out


def score_reference(spec: RetrievalSpec, dataset: str, data: Split, reference: str, seed: int) -> dict[str, float]:
    """Test metrics of an untrained reference (see :data:`REFERENCES`) on ``data``, the split of ``dataset``."""
    if reference == "untrained":
        embeddings = embed(make_embedder(spec, dataset, seed, data.X_train.shape[1:]), data.X_test)
    elif reference == "raw_input":
        embeddings = torch.as_tensor(data.X_test.reshape(len(data.X_test), -1))
    else:
        raise ValueError(f"unknown reference {reference!r}; known: {list(REFERENCES)}")
    scores = _score(embeddings, data.y_test, ks=(1, 2, 4, 8))
    return {k: (math.nan if scores is None else float(scores[k])) for k in RECORDED_METRICS}


def _task_cost(spec: RetrievalSpec, dataset: str, method: str) -> float:
    """Rough relative cost, for scheduling big tasks first."""
    if method in REFERENCES:
        return 0.0
    per_epoch = 20.0 if dataset == "fashion_mnist" else 1.0
    return per_epoch * spec.epochs_for(dataset) * (1.5 if RETRIEVAL_METHODS[method].square_batch else 1.0)


def run_suite(spec: RetrievalSpec, *, jobs: int = 1, progress: bool = True,
              command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a retrieval spec; returns the JSON-ready payload (records, runs, summary, metadata)."""
    from tqdm.auto import tqdm

    from benchmarks.peers.ranking import rank_peer_versions

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer; got {jobs!r}")
    unknown = [m for m in spec.methods if m not in RETRIEVAL_METHODS]
    if unknown:
        raise ValueError(f"unknown retrieval method(s) {unknown}; known: {list(RETRIEVAL_METHODS)}")
    unknown = [r for r in spec.references if r not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; known: {list(REFERENCES)}")
    with torch_threads(spec.threads):
        metadata = collect_metadata(command)
        unavailable = {m: status for m in spec.methods if (status := method_status(m, spec)) != "ok"}
        runnable = [m for m in spec.methods if m not in unavailable]
        tasks = sorted(((d, s, m) for d in spec.datasets for s in spec.seeds for m in (*runnable, *spec.references)),
                       key=lambda t: (-_task_cost(spec, t[0], t[2]), t[0], t[1], t[2]))
        start = time.perf_counter()
        outputs: list[dict[str, Any]] = []
        bar = tqdm(total=len(tasks), desc=spec.name, unit="run", disable=not progress, dynamic_ncols=True)
        for (d, s, m), out in run_tasks(run_task, tasks, args=(spec,), jobs=jobs):
            outputs.append(out)
            bar.set_postfix_str(f"done {d} seed {s} {m}")
            bar.update()
        bar.close()
        wall = time.perf_counter() - start
        records = sorted((r for out in outputs for r in out["records"]),
                         key=lambda r: (r["dataset"], r["metric"], r["method"], r["seed"]))
        reference_records = sorted((r for out in outputs for r in out.get("reference_records", [])),
                                   key=lambda r: (r["dataset"], r["metric"], r["method"], r["seed"]))
        runs = sorted((out["run"] for out in outputs if out["run"] is not None),
                      key=lambda r: (r["dataset"], r["method"], r["seed"]))
        dataset_info: dict[str, Any] = {}
        seconds: dict[str, dict[str, float]] = {}
        for out in outputs:
            d = out["dataset"]
            if "unavailable_dataset" in out:
                unavailable.setdefault(f"dataset {d}", out["unavailable_dataset"])
            elif out["seed"] == spec.seeds[0]:
                dataset_info.setdefault(d, out["dataset_info"])
            if out["skipped"]:
                unavailable.setdefault(out["method"], out["skipped"])
            if out["method"] in REFERENCES:
                continue
            by_method = seconds.setdefault(d, {})
            by_method[out["method"]] = by_method.get(out["method"], 0.0) + out["seconds"]
        metadata["load_average_at_end"] = load_average()
        payload: dict[str, Any] = {
            "suite": spec.name,
            "kind": spec.kind,
            "title": f"Retrieval quality (`{spec.name}`): RaMBO recall losses against metric-learning peers",
            "protocol": protocol_text(spec),
            "spec": spec_to_dict(spec),
            "metadata": metadata,
            "jobs": jobs,
            "wall_seconds": round(wall, 1),
            "seconds_per_run": {d: {m: round(v / len(spec.seeds), 1) for m, v in sorted(ms.items())}
                                for d, ms in sorted(seconds.items())},
            "peers": rank_peer_versions(),
            "methods": {m: {"label": method_label(m), "peer": RETRIEVAL_METHODS[m].peer,
                            "batch": {d: list(batch_shape(spec, d, m)) for d in spec.datasets},
                            "loss": _loss_repr(m, spec)} for m in spec.methods},
            "unavailable": unavailable,
            "reference": spec.reference,
            "datasets": dict(sorted(dataset_info.items())),
            "references": {r: REFERENCES[r] for r in spec.references},
            "reference_records": reference_records,
            "runs": runs,
            "records": records,
        }
        return refresh_summary(payload)


def _loss_repr(method: str, spec: RetrievalSpec) -> str | None:
    try:
        return repr(build_loss(method, spec)).replace("\n", " ")
    except ModuleNotFoundError:
        return None


# ---------------------------------------------------------------------------
# summary and reports


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute ``payload["summary"]`` from its records, in place.

    ``summary[dataset][metric][method] = {"mean", "std", "n"}``, ``summary["best"][dataset][metric]``
    the best methods (ties at 3 decimals), and ``summary["wins_ties_losses"][method]`` the reference
    against ``method`` on the selection metric over datasets by seed-means.
    """
    spec = payload["spec"]
    names = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    table = aggregate(payload["records"]).get(TASK, {})
    per_dataset = {
        d: {k: {m: {key: cells[k][m][key] for key in ("mean", "std", "n")} for m in names if m in cells.get(k, {})}
            for k in spec["metrics"]}
        for d, cells in sorted(table.items())
    }
    best = {d: {k: sorted(_bold_max({m: c["mean"] for m, c in cells.items()})) for k, cells in ks.items()}
            for d, ks in per_dataset.items()}
    ref_table = aggregate(payload.get("reference_records", [])).get(TASK, {})
    references = {
        d: {k: {r: {key: cells[k][r][key] for key in ("mean", "std", "n")} for r in cells.get(k, {})}
            for k in spec["metrics"]}
        for d, cells in sorted(ref_table.items())
    }
    reference = payload["reference"]
    wtl = {m: wins_ties_losses(table, reference, m, spec["selection_metric"], tolerance=spec["tie_tolerance"])
           for m in names if m != reference} if reference in names else {}
    payload["summary"] = {"datasets": sorted(table), "methods": names, "per_dataset": per_dataset,
                          "best": best, "wins_ties_losses": wtl, "references": references}
    payload["notes"] = _reference_notes(payload["summary"], spec["selection_metric"])
    payload["records"] = payload.pop("records")  # keep the records last in the file
    return payload


def _reference_notes(summ: dict[str, Any], metric: str) -> list[str]:
    """Per dataset and untrained reference: which methods beat it on ``metric`` (by seed-means)."""
    notes = []
    for d in summ["datasets"]:
        cells = summ["per_dataset"][d].get(metric, {})
        for r, (c,) in _reference_rows(summ, d, [metric]):
            if c is None:
                continue
            above = [m for m in summ["methods"] if m in cells and cells[m]["mean"] > c["mean"]]
            notes.append(f"{d}: {len(above)} of {len(cells)} methods beat the {_REFERENCE_LABELS.get(r, r)} "
                         f"({c['mean']:.3f}) on test {metric}" + (f": {', '.join(above)}." if above else "."))
    return notes


def protocol_text(spec: RetrievalSpec) -> str:
    from metricopt.app.data.retrieval import LETTER_SHADOW_COPIES

    parts = []
    for d in spec.datasets:
        P, K = spec.batch_for(d)
        letter = "UCI Letter, letters A..M train / N..Z test, 16 features standardised on A..M, used whole"
        data = {
            "letter": letter,
            "letter_shadow": letter.replace("16 features", f"16 features and {16 * LETTER_SHADOW_COPIES} shadow "
                                            f"columns ({LETTER_SHADOW_COPIES} copies of the 16 features, each in "
                                            "a random row order; one fixed table)"),
        }.get(d, f"Fashion-MNIST, classes 0-4 train ({spec.fashion_sizes[0]} stratified rows of the official "
                 f"training file, drawn with the seed) / 5-9 test ({spec.fashion_sizes[1]} rows of the official "
                 "test file)")
        width = {"letter": 16, "letter_shadow": 16 * (1 + LETTER_SHADOW_COPIES)}.get(d)
        model = (f"MLP {width} -> {' -> '.join(str(w) for w in spec.mlp_hidden)} -> {spec.embedding_dim}"
                 if width else
                 f"CNN conv 32 3x3, max-pool 2, conv 64 3x3, max-pool 2, fc 128, fc {spec.embedding_dim}")
        parts.append(f"`{d}`: {data}; {model}; {spec.epochs_for(d)} epochs; batches of {P} classes x {K} items "
                     f"= {P * K} (`pml_smoothap`: {P} x {P} = {P * P})")
    return (
        "Protocol: per (dataset, seed), the class-disjoint split (test classes never seen in training); "
        f"{spec.val_size:.0%} of the training rows (stratified, `random_state=seed`) held out as validation. "
        "One embedder initialisation per seed, the same for every method. Adam, "
        f"lr {spec.learning_rate}, weight decay {spec.weight_decay}, same epochs and same class-balanced P x K "
        "sampler (seeded by the seed: every method with the same P, K sees the same batches) for every method, "
        "except `pml_smoothap`, whose loss needs as many classes as items per class: it gets P x P batches and "
        "more of them, every method getting floor(training rows / batch size) batches per epoch, i.e. the same "
        "number of samples per epoch (within one batch), not the same number of steps. After every epoch the "
        "validation set is scored (queries = gallery = validation rows, self excluded) and the epoch with the "
        "best validation R@1 is kept. Test: `metricopt.metrics.retrieval_report` on the test classes (queries = "
        "gallery = test set, self excluded, cosine similarity of the 64-d embeddings). "
        f"Seeds {tuple(spec.seeds)}; mean ± sample std over seeds. " + "; ".join(parts) + ". "
        "Methods: RaMBO = `metricopt.losses.RecallLoss` "
        f"({_rambo_defaults()} in cosine units, the loss's defaults; `log`/`loglog` "
        f"variants; `+margin` = margin {spec.rambo_margin}; `+memory` = the detached embeddings of the last "
        f"{spec.rambo_memory_size} batches as extra gallery columns; `former defaults` = interpolation 2, margin "
        "0, the defaults before issue 16). Peers with their defaults "
        "(`benchmarks.peers.ranking.RETRIEVAL_PEER_DEFAULTS`): pytorch-metric-learning ContrastiveLoss "
        "(pos margin 0, neg margin 1), TripletMarginLoss (margin 0.2) with a semihard TripletMarginMiner, "
        "MultiSimilarityLoss (2, 50, 0.5) with its miner (epsilon 0.1), FastAPLoss (10 bins), SmoothAPLoss "
        "(temperature 0.01); imbalanced-losses' SmoothAPLoss (binary mode, temperature 0.01, no queue) on each "
        f"query's row of the similarity matrix; torchsort soft-rank AP with regularisation strength "
        f"{spec.torchsort_ap_strength} "
        "instead of the peer default 0.1; blackbox-backprop's RecallLoss (the authors' code, loglog, margin "
        f"0.15) with lambda {spec.bbb_recall_lambda} instead of its default 0.5. {spec.peer_tuning_note} "
        "Untrained references (test only, italic rows, never ranked): the seed's initial embedder, and the raw "
        "inputs (standardised Letter features, with the shadow columns for `letter_shadow`; normalised "
        "Fashion-MNIST pixels, 784-d)."
    )


def _rambo_defaults() -> str:
    from metricopt.losses import ranking

    return f"interpolation {ranking.DEFAULT_RECALL_INTERPOLATION:g}, margin {ranking.DEFAULT_RECALL_MARGIN:g}"


def retrieval_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a retrieval payload."""
    spec = payload["spec"]
    summ = payload["summary"]
    names = summ["methods"]
    reference, selection, tol = payload["reference"], spec["selection_metric"], spec["tie_tolerance"]
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload), "", payload.get("protocol", ""), ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    for d in summ["datasets"]:
        info = payload["datasets"].get(d, {})
        sizes = (f" (train {info['train']}, validation {info['val']}, test {info['test']} rows)"
                 if info else "")
        lines += [f"## {d}{sizes}: test, mean ± std over {len(spec['seeds'])} seeds", ""]
        metrics = spec["metrics"]
        lines += [_row(["method", *metrics, "kept epoch"]), _row(["---"] * (len(metrics) + 2))]
        cells = summ["per_dataset"][d]
        epochs = _kept_epochs(payload, d)
        for m in names:
            row = [method_label(m) + (" (reference)" if m == reference else "")]
            for k in metrics:
                c = cells[k].get(m)
                row.append("N/A" if c is None else format_mean_std(c["mean"], c["std"], bold=m in summ["best"][d][k]))
            row.append(epochs.get(m, "N/A"))
            lines.append(_row(row))
        for r, cells_r in _reference_rows(summ, d, metrics):
            lines.append(_row([f"_{_REFERENCE_LABELS.get(r, r)} (reference, not trained)_",
                               *(f"_{format_mean_std(c['mean'], c['std'])}_" if c else "N/A" for c in cells_r),
                               "–"]))
        lines += ["", (f"Kept epoch: mean (min-max) over seeds of the epoch with the best validation "
                       f"{selection}, out of {spec_epochs(spec, d)}."), ""]
    if summ["wins_ties_losses"]:
        ref = method_label(reference)
        lines += [
            f"## {ref} against each other method on {selection}: wins / ties / losses over datasets", "",
            (f"Per dataset by seed-means; tie = |difference| < {tol}. Mean difference = {ref} minus the other, "
             f"averaged over datasets; paired = over the (dataset, seed) runs, which share split, initialisation "
             "and batches (± standard error)."), "",
            _row(["against", "W/T/L", "mean difference", "worst (dataset)", "paired mean ± se"]),
            _row(["---"] * 5),
        ]
        for m, r in summ["wins_ties_losses"].items():
            if r["n"] == 0:
                lines.append(_row([method_label(m), "N/A", "", "", ""]))
                continue
            paired = (f"{r['paired_mean_diff']:+.3f} ± {r['paired_se']:.3f} (n={r['n_pairs']})"
                      if r.get("paired_se") is not None else "")
            lines.append(_row([method_label(m), f"{r['wins']}/{r['ties']}/{r['losses']}", f"{r['mean_diff']:+.3f}",
                               f"{r['worst_diff']:+.3f} ({r['worst_dataset']})", paired]))
        lines.append("")
    if payload.get("notes"):
        lines += ["## Against the untrained references", ""]
        lines += [f"- {note}" for note in payload["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def _reference_rows(summ: dict[str, Any], dataset: str,
                    metrics: Sequence[str]) -> list[tuple[str, list[dict[str, Any] | None]]]:
    refs = summ.get("references", {}).get(dataset, {})
    names = sorted({r for k in metrics for r in refs.get(k, {})}, key=lambda r: list(REFERENCES).index(r)
                   if r in REFERENCES else len(REFERENCES))
    return [(r, [refs.get(k, {}).get(r) for k in metrics]) for r in names]


def spec_epochs(spec: dict[str, Any], dataset: str) -> Any:
    return dict(spec["epochs"]).get(dataset, "?")


def _kept_epochs(payload: dict[str, Any], dataset: str) -> dict[str, str]:
    out: dict[str, list[int]] = {}
    for run in payload.get("runs", []):
        if run["dataset"] == dataset:
            out.setdefault(run["method"], []).append(run["epoch"])
    return {m: f"{np.mean(e):.1f} ({min(e)}-{max(e)})" for m, e in out.items()}


def plot_retrieval(payload: dict[str, Any], path: Path) -> Path:
    """Bars of R@1 and MAP@R (error bars: std over seeds), one panel per (metric, dataset)."""
    from benchmarks.harness.plots import _pyplot, _save

    plt = _pyplot()
    import matplotlib

    summ = payload["summary"]
    datasets = summ["datasets"]
    metrics = [k for k in ("R@1", "MAP@R") if k in payload["spec"]["metrics"]]
    cmap = matplotlib.colormaps["tab20"]
    colors = {m: cmap(i % 20) for i, m in enumerate(payload["methods"])}
    fig, axes = plt.subplots(len(metrics), max(1, len(datasets)), squeeze=False,
                             figsize=(5.2 * max(1, len(datasets)) + 0.5, 3.6 * len(metrics) + 1.0))
    for row, k in zip(axes, metrics):
        for ax, d in zip(row, datasets):
            cells = summ["per_dataset"][d][k]
            methods = [m for m in summ["methods"] if m in cells]
            x = np.arange(len(methods))
            means = np.array([cells[m]["mean"] for m in methods], dtype=float)
            errs = np.array([cells[m]["std"] for m in methods], dtype=float)
            ax.bar(x, means, yerr=errs, capsize=2, color=[colors[m] for m in methods],
                   edgecolor=["black" if m == payload["reference"] else "none" for m in methods], linewidth=1.2)
            ax.set_xticks(x, [method_label(m) for m in methods], rotation=60, ha="right", fontsize=6.5)
            for (r, cells_r), style in zip(_reference_rows(summ, d, [k]), ("--", ":")):
                if cells_r[0] is not None:
                    ax.axhline(cells_r[0]["mean"], color="black", linestyle=style, linewidth=1.0,
                               label=f"{r} (not trained)")
                    means = np.append(means, cells_r[0]["mean"])
            if summ.get("references", {}).get(d):
                ax.legend(fontsize=6, loc="lower left")
            finite = means[np.isfinite(means)]
            if finite.size:
                ax.set_ylim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.04))
            ax.set_title(f"{d}: {k} (test, {len(payload['spec']['seeds'])} seeds, bar: std)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(payload["title"].replace("`", ""), fontsize=10)
    return _save(plt, fig, path, dpi=110)


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` and ``<suite>.png`` of a retrieval payload (not its JSON); returns the paths."""
    return write_suite_reports(payload, output_dir, markdown=retrieval_markdown, plot=plot_retrieval, plots=plots)
