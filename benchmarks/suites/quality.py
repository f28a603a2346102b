"""Quality and ablation runners: exact held-out metrics per (dataset, seed, method, target metric).

Protocol (the same for every method):

1. ``train_val_test_split(X, y, random_state=seed)``: stratified 60/20/20 with
   train-only standardisation.
2. ``make_mlp(d, outputs, hidden_sizes, seed=seed)``: one initialisation per
   (dataset, seed), shared by all methods; ``fit`` with Adam, the spec's
   epochs, batch size and learning rate, batch order seeded by ``seed``.
3. After every epoch, validation and test probabilities are scored for every
   target metric. For each target metric the epoch with the best validation
   score is selected (first one on ties) and its test score recorded. This is
   what retraining with ``fit(evaluate=...)`` selecting on that metric would
   return, at a quarter of the cost: a non-AnyLoss network is trained once
   and selected four ways; AnyLoss is trained once per target metric, since
   the metric is its loss.
4. Decisions: ``p > 0.5`` (argmax multi-class), or for tuned methods the
   threshold ``tune_threshold`` picks on validation for the target metric at
   that epoch, applied to test. Rank metrics (``"ap"``, ``"auroc"``) take no
   decisions: they are scored from the probabilities for every method, tuned
   or not, and recorded with threshold None.

Each (dataset, seed) is one task; tasks run in worker processes
(``jobs``), each with ``torch.set_num_threads(spec.threads)``. The results do
not depend on ``jobs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.harness import methods as _methods
from benchmarks.harness.jobs import run_tasks
from benchmarks.harness.methods import BuildContext, Method
from benchmarks.harness.results import collect_metadata, load_average, summarize
from benchmarks.harness.specs import AblationSpec, QualitySpec, spec_to_dict
from benchmarks.harness.threads import torch_threads
from benchmarks.peers import classification as peers
from metricopt.app.data import Split, load_dataset, train_val_test_split
from metricopt.app.recipes.classification import fit, make_mlp
from metricopt.evaluation import THRESHOLD_FREE_METRICS, report, tune_threshold
from metricopt.predict import predict_proba

__all__ = ["methods_for", "run_suite", "run_task", "train_mlp_methods"]


def methods_for(spec: QualitySpec | AblationSpec) -> list[Method]:
    """The methods a spec compares (ablation: one AnyLoss variant per amplification)."""
    if isinstance(spec, AblationSpec):
        return [_methods.anyloss_method(a) for a in spec.amplifications]
    return _methods.resolve_methods(spec.methods)


def _probs(model: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    p = predict_proba(model, X)
    # A diverged network (NaN logits) predicts class 0 / the negative class, not a crash.
    return np.nan_to_num(p, nan=0.0)


def _select(rows: list[tuple[int, float, float, float | None]]) -> tuple[int, float, float, float | None]:
    """The row with the best validation score; the earliest epoch on ties."""
    return max(rows, key=lambda row: row[1])


History = dict[tuple[str, str], list[tuple[int, float, float, float | None]]]


def _evaluator(
    split: Split, members: Sequence[Method], targets: tuple[str, ...], history: History, num_classes: int
) -> Callable[[torch.nn.Module, int], None]:
    """The ``fit(evaluate=...)`` callback: after each epoch, append ``(epoch, val, test, threshold)``
    per (method, target metric) to ``history``; returns None, so ``fit`` does no selection of its own."""
    fixed = [m for m in members if not m.tune]
    tuned = [m for m in members if m.tune]
    threshold_fixed = 0.5 if num_classes == 2 else None
    # Rank metrics are scored from the probabilities (no threshold), once for all members.
    shared = targets if fixed else tuple(k for k in targets if k in THRESHOLD_FREE_METRICS)

    def evaluate(net: torch.nn.Module, epoch: int) -> None:
        p_val, p_test = _probs(net, split.X_val), _probs(net, split.X_test)
        if shared:
            val = report(split.y_val, p_val, num_classes=num_classes, metrics=shared)
            test = report(split.y_test, p_test, num_classes=num_classes, metrics=shared)
        for m in fixed:
            for k in targets:
                threshold = None if k in THRESHOLD_FREE_METRICS else threshold_fixed
                history[(m.name, k)].append((epoch, val[k], test[k], threshold))
        for m in tuned:
            for k in targets:
                if k in THRESHOLD_FREE_METRICS:
                    history[(m.name, k)].append((epoch, val[k], test[k], None))
                    continue
                threshold = tune_threshold(split.y_val, p_val, k)
                v = report(split.y_val, p_val, num_classes=2, metrics=(k,), threshold=threshold)[k]
                t = report(split.y_test, p_test, num_classes=2, metrics=(k,), threshold=threshold)[k]
                history[(m.name, k)].append((epoch, v, t, threshold))

    return evaluate


def run_task(spec: QualitySpec | AblationSpec, dataset: str, seed: int, methods: Sequence[Method]) -> dict[str, Any]:
    """Train and score every method on one (dataset, seed).

    Returns:
        ``{"records": [...], "dataset_info": {...}, "skipped": {method: reason}, "seconds": float}``.
    """
    with torch_threads(spec.threads):
        start = time.perf_counter()
        try:
            ds = load_dataset(dataset)
        except ImportError as exc:  # an optional dataset package is missing: record it, run the rest
            return {"records": [], "dataset_info": {}, "skipped": {}, "dataset": dataset,
                    "unavailable_dataset": str(exc), "seconds": time.perf_counter() - start}
        split = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=seed)
        num_classes, task = ds.n_classes, ds.task
        info = {
            "task": task, "n": ds.n_samples, "features": ds.n_features, "classes": num_classes,
            "positive_rate": ds.positive_rate, "train": len(split.y_train), "val": len(split.y_val),
            "test": len(split.y_test),
        }
        records, skipped = train_mlp_methods(spec, split, methods, dataset=dataset, task=task,
                                             num_classes=num_classes, n_features=ds.n_features, seed=seed)
        return {"records": records, "dataset_info": info, "skipped": skipped, "dataset": dataset,
                "seconds": time.perf_counter() - start}


def train_mlp_methods(
    spec: Any, split: Split, methods: Sequence[Method], *, dataset: str, task: str, num_classes: int,
    n_features: int, seed: int,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Train and score the MLP methods that run on ``task`` on one standardised split (the quality protocol).

    ``spec`` gives the budget (``hidden_sizes``, ``epochs``, ``batch_size``,
    ``learning_rate``, ``weight_decay``), the target ``metrics`` and, where it
    has them, ``amplification`` and ``focal_gamma``. Returns the records (one
    per method and target metric, with ``train_seconds``) and the methods
    skipped with the reason (a peer that is not installed).
    """
    outputs = 1 if num_classes == 2 else num_classes
    groups: dict[str, list[Method]] = {}
    for m in methods:
        if task in m.tasks:
            groups.setdefault(m.group, []).append(m)
    records: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    default_amplification = getattr(spec, "amplification", 73.0)
    for members in groups.values():
        first = members[0]
        for train_metric in (spec.metrics if first.per_metric else (None,)):
            targets = (train_metric,) if train_metric else tuple(spec.metrics)
            context = BuildContext(
                num_classes=num_classes,
                y_train=split.y_train,
                metric=train_metric or spec.metrics[0],
                amplification=default_amplification if first.amplification is None else first.amplification,
                focal_gamma=getattr(spec, "focal_gamma", 2.0),
            )
            built = first.build(make_mlp(n_features, outputs, spec.hidden_sizes, seed=seed), context)
            if built is None:
                for m in members:
                    skipped[m.name] = peers.peer_status(m.peer) if m.peer else "not available"
                break
            model, loss_fn = built
            history: History = {(m.name, k): [] for m in members for k in targets}

            evaluate = _evaluator(split, members, targets, history, num_classes)

            y_fit = split.y_train
            if first.indexed_targets:  # (N, 2) [label, training row index], for losses with per-sample state
                y_fit = np.stack([split.y_train, np.arange(len(split.y_train))], axis=1).astype(np.int64)
            t0 = time.perf_counter()
            if first.libauc_protocol:
                peers.fit_libauc_protocol(model, loss_fn, split.X_train, y_fit, epochs=spec.epochs,
                                          batch_size=spec.batch_size, learning_rate=spec.learning_rate, seed=seed,
                                          evaluate=evaluate)
            else:
                fit(
                    model, loss_fn, split.X_train, y_fit, epochs=spec.epochs, batch_size=spec.batch_size,
                    learning_rate=spec.learning_rate, weight_decay=spec.weight_decay, seed=seed,
                    batching=first.batching, evaluate=evaluate,
                )
            seconds = time.perf_counter() - t0
            for (name, metric), rows in history.items():
                epoch, val, test, threshold = _select(rows)
                records.append({
                    "dataset": dataset, "task": task, "method": name, "metric": metric, "seed": seed,
                    "test": test, "val": val, "epoch": epoch, "threshold": threshold,
                    "train_seconds": round(seconds, 3),
                })
    return records, skipped


def _task_cost(dataset: str) -> float:
    """Rough cost for scheduling big tasks first (rows; HIVA's 1617 columns count double)."""
    from metricopt.app.data import DATASETS

    spec = DATASETS.get(dataset)
    n = float(getattr(spec, "n_samples", 0) or getattr(spec, "n", 0) or 0)
    return n * (3.0 if dataset == "hiva" else 1.0)


def run_suite(
    spec: QualitySpec | AblationSpec,
    *,
    jobs: int = 1,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run a quality or ablation spec; returns the JSON-ready payload (records, summary, metadata)."""
    from tqdm.auto import tqdm

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer; got {jobs!r}")
    with torch_threads(spec.threads):
        metadata = collect_metadata(command)
        methods = methods_for(spec)
        unavailable = {m.name: peers.peer_status(m.peer) for m in methods if m.peer and peers.load_peer(m.peer) is None}
        runnable = [m for m in methods if m.name not in unavailable]
        tasks = sorted(
            ((d, s) for d in spec.datasets for s in spec.seeds), key=lambda t: (-_task_cost(t[0]), t[0], t[1])
        )
        start = time.perf_counter()
        outputs: list[dict[str, Any]] = []
        bar = tqdm(total=len(tasks), desc=spec.name, unit="task", disable=not progress, dynamic_ncols=True)
        for (d, s, _), out in run_tasks(run_task, [(d, s, runnable) for d, s in tasks], args=(spec,), jobs=jobs):
            outputs.append(out)
            bar.set_postfix_str(f"done {d} seed {s}")
            bar.update()
        bar.close()
        wall = time.perf_counter() - start
        records = sorted(
            (r for out in outputs for r in out["records"]),
            key=lambda r: (r["task"], r["dataset"], r["metric"], r["method"], r["seed"]),
        )
        dataset_info = {}
        task_seconds: dict[str, float] = {}
        for out in outputs:
            name = out["dataset"]
            task_seconds[name] = task_seconds.get(name, 0.0) + out["seconds"]
            if "unavailable_dataset" in out:
                unavailable.setdefault(f"dataset {name}", out["unavailable_dataset"])
            else:
                dataset_info[name] = out["dataset_info"]
            for method, reason in out["skipped"].items():
                unavailable.setdefault(method, reason)
        reference = spec.challenger if isinstance(spec, AblationSpec) else spec.reference
        metadata["load_average_at_end"] = load_average()
        payload: dict[str, Any] = {
            "suite": spec.name,
            "kind": spec.kind,
            "title": _title(spec),
            "protocol": _protocol(spec),
            "spec": spec_to_dict(spec),
            "metadata": metadata,
            "jobs": jobs,
            "wall_seconds": round(wall, 1),
            "task_seconds_by_dataset": {k: round(v, 1) for k, v in sorted(task_seconds.items())},
            "peers": peers.peer_versions(),
            "methods": {m.name: {"label": m.label, "tasks": list(m.tasks), "tuned_threshold": m.tune,
                                 "trained_per_metric": m.per_metric} for m in methods},
            "unavailable": unavailable,
            "reference": reference,
            "datasets": dict(sorted(dataset_info.items())),
            "records": records,
        }
        return refresh_summary(payload)


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute ``payload["summary"]`` (and the ablation notes) from its records, in place."""
    spec = payload["spec"]
    names = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    payload["summary"] = summarize(
        payload["records"], names, spec["metrics"], payload["reference"], spec["tie_tolerance"]
    )
    if payload["kind"] == "ablation":
        payload["notes"] = _ablation_notes(payload, spec)
    # keep the records last in the file, after the human-readable parts
    payload["records"] = payload.pop("records")
    return payload


def _title(spec: QualitySpec | AblationSpec) -> str:
    if isinstance(spec, AblationSpec):
        return f"AnyLoss amplification ablation (`{spec.name}`)"
    if spec.reference != "anyloss":
        others = ", ".join(_methods.method_label(m) for m in spec.methods if m != spec.reference)
        return f"Quality benchmark (`{spec.name}`): {_methods.method_label(spec.reference)} against {others}"
    return f"Quality benchmark (`{spec.name}`): AnyLoss against the usual recipes and peer losses"


def _rank_protocol(spec: QualitySpec) -> str:
    """Protocol text of a suite with rank metrics: how they are scored and what each method is."""
    from metricopt.losses import ranking as _ranking

    rank_defaults = (f"interpolation (blackbox lambda) {_ranking.DEFAULT_INTERPOLATION} and margin "
                     f"{_ranking.DEFAULT_MARGIN}, both in spreads of the scores, no batch memory")
    notes = {
        "rambo_ap": f"`APLoss (RaMBO)` is `metricopt.losses.APLoss` with its defaults ({rank_defaults}) on the "
                    "logits: 1 - AP of each batch through blackbox-differentiated exact ranks.",
        "rambo_auroc": f"`AUROCLoss (RaMBO)` is `metricopt.losses.AUROCLoss` with its defaults ({rank_defaults}).",
        "bce": "`BCE` is binary cross-entropy.",
        "bce_tuned": "`BCE tuned` is the BCE network (same scores, so the same AP and AUROC).",
        "libauc_ap": "`APLoss (LibAUC SOAP)` is LibAUC 2.0.1's `APLoss` (SOAP, Qi et al. NeurIPS 2021) with its "
                     "documented defaults (margin 1.0, gamma 0.9, squared-hinge surrogate) on sigmoid scores, fed "
                     "each sample's training row index; trained with the same Adam, not LibAUC's SOAP optimizer "
                     "(whose default adam mode adds gradient clipping at 1 and weight decay 1e-5), on the same "
                     "uniformly shuffled batches, not LibAUC's DualSampler (which oversamples positives); a batch "
                     "without a positive gives a zero loss (LibAUC asserts), as it does for the RaMBO losses.",
        "libauc_ap_own": "`APLoss (LibAUC SOAP, its optimizer and sampler)` is the same loss trained LibAUC's way: "
                         "its `SOAP` optimizer (mode adam: Adam with gradient clipping at 1 and weight decay 1e-5) "
                         "at the same learning rate, on batches of LibAUC's `DualSampler` (sampling rate 0.5: half "
                         "of every batch positives, repeated from the rare class), LibAUC's epochs "
                         "(rows // batch size batches).",
        "rambo_ap_oversampled": "`APLoss (RaMBO), oversampled batches` is the same APLoss on the same shuffled "
                                "batches, each topped up with further rows of any class it holds fewer than "
                                "32 of (`fit(batching=\"oversampled\")`, `metricopt.batches.oversampled_batches`; "
                                "measured on the collection's validation tables by the suite `ap_validation`).",
        "bce_oversampled": "`BCE, oversampled batches` is BCE on those batches: whether the batches or the loss "
                           "make a difference.",
        "aucm": "`AUCM` is LibAUC's AUCMLoss (v1, margin 1, imratio = training positive rate) on sigmoid scores, "
                "trained with the same Adam (its dual variable alpha ascends through a negated gradient and is "
                "clipped to [0, 999] as in LibAUC's PESG optimizer).",
    }
    described = " ".join(notes[m] for m in spec.methods if m in notes)
    return (
        "AP (average precision, scikit-learn's definition: a block of tied scores is one threshold) and AUROC "
        "are computed exactly (`metricopt.metrics.ranking`) from the positive-class probabilities; no threshold "
        "is involved (records carry threshold null), so the `tuned` labels do not apply to them. " + described
    )


def _protocol(spec: QualitySpec | AblationSpec) -> str:
    common = (
        f"Protocol: stratified 60/20/20 split per seed (`train_val_test_split(random_state=seed)`), "
        f"MLP hidden {tuple(spec.hidden_sizes)} (same initialisation for every method of a seed), "
        f"Adam lr {spec.learning_rate}, batch {spec.batch_size}, {spec.epochs} epochs, seeds {tuple(spec.seeds)}. "
        "After each epoch, validation and test are scored; per target metric the epoch with the best "
        "validation score is kept (model selection by the target metric) and its test score reported. "
    )
    if isinstance(spec, AblationSpec):
        return common + (
            "Every variant is AnyLoss trained for the target metric with decision p > 0.5; only the "
            "amplification (steepness L of A(p) = sigmoid(L (p - 0.5))) differs. `auto` is "
            "`metricopt.losses.soft_confusion.auto_amplification` (L = clip(5 / median |p - 0.5|, 10, 73) per batch)."
        )
    if any(k in THRESHOLD_FREE_METRICS for k in spec.metrics):
        return common + _rank_protocol(spec)
    from metricopt.losses import confusion as _confusion

    sharpness = getattr(_confusion, "DEFAULT_SHARPNESS", None)
    multi = f"; multi-class: library default, softmax sharpness {sharpness}" if sharpness is not None else ""
    return common + (
        f"AnyLoss (binary amplification {spec.amplification}{multi}) is trained once per target metric and "
        "decides at p > 0.5 (argmax multi-class). BCE/CE, weighted BCE (inverse class frequency), focal "
        f"(gamma {spec.focal_gamma}) and MONAI Dice (batch-level soft Dice, sigmoid / softmax) decide at 0.5 "
        "(argmax). `BCE tuned` is the BCE network with the threshold tuned on validation for the target metric "
        "at every epoch (`evaluation.tune_threshold`). AUCM is LibAUC's AUCMLoss (v1, margin 1, imratio = "
        "training positive rate) on sigmoid scores, trained with the same Adam (its dual variable alpha ascends "
        "through a negated gradient and is clipped to [0, 999] as in LibAUC's PESG); an AUC loss has no natural "
        "threshold, so it is scored at the threshold tuned on validation. Multi-class metrics: macro F1 / macro "
        "G-mean, multi-class balanced accuracy and MCC (scikit-learn's definitions). Tuned-threshold methods and "
        "AUCM are binary only (N/A on multi-class)."
    )


def _ablation_notes(payload: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    summ = payload["summary"].get("binary")
    if not summ:
        return []
    challenger, reference = spec["challenger"], spec["reference"]
    notes = []
    for k in spec["metrics"]:
        means = summ["mean_over_datasets"][k]
        ranking = sorted((m for m in means if means[m] is not None), key=lambda m: -means[m])
        notes.append(f"{k}: best on the mean is {ranking[0]} ({means[ranking[0]]:.4f}); ranking "
                     + ", ".join(f"{m} {means[m]:.4f}" for m in ranking) + ".")
        wtl = summ["wins_ties_losses"].get(reference, {}).get(k)
        if wtl:
            notes.append(
                f"{k}: {challenger} vs {reference}: {wtl['wins']} wins / {wtl['ties']} ties / "
                f"{wtl['losses']} losses over {wtl['n']} datasets, mean difference {wtl['mean_diff']:+.4f}, "
                f"worst {wtl['worst_diff']:+.4f} on {wtl['worst_dataset']}"
                + (f"; paired over {wtl['n_pairs']} (dataset, seed) runs: mean difference "
                   f"{wtl['paired_mean_diff']:+.4f} ± {wtl['paired_se']:.4f} (standard error)."
                   if wtl.get("paired_se") is not None else ".")
            )
    return notes
