"""Black-box benchmark runner: MetricOpt against loss-only fine-tuning of adapter parameters.

Protocol, per (setting, metric, seed) of a :class:`~benchmarks.harness.specs.BlackBoxSpec`
and per variant of it (:class:`~benchmarks.harness.specs.BlackBoxVariant`: the ablation's
``K`` and ``|phi|``, the defaults sweep's ``value_weight`` and task distribution,
the guidance sweep's ``guidance`` and ``start``; data, backbones, adapters and
direct losses in :mod:`benchmarks.suites.blackbox_tasks`), as
``metricopt.app.recipes.blackbox.run_blackbox`` does it:

1. The (dataset, seed) split and the backbone pre-trained with its training
   loss (cross-entropy; the contrastive loss for the retrieval embedders,
   :func:`benchmarks.suites.blackbox_tasks.training_loss`; seeded), frozen;
   a copy under a ``ShiftedLogit`` head (its logit minus a shift: the
   decision threshold in use; shift 0 is the backbone bitwise),
   wrapped by the adapter (projections seeded by the seed; FiLM finds the same
   layers under the head, named ``model.*``). Binary datasets: the pre-trained
   model's threshold tuned on ALL validation rows at ``phi = 0``
   (:func:`metricopt.blackbox.threshold.tune_threshold`); with ``start =
   "tuned_threshold"`` the head keeps that shift for steps 2 and 3. The
   observation rows follow ``guidance``
   (:func:`metricopt.app.recipes.blackbox.task_data`): the guiding rows, and
   with ``"split"`` / ``"train"`` separate rows that pick the kept ``phi``.
2. The value function is meta-trained by :func:`metricopt.blackbox.meta_train`
   (Reptile, ``meta_tasks`` tasks of the spec's
   :class:`~metricopt.blackbox.TaskDistribution` (``task_distribution``
   overrides; default: the library's) drawn from the training split; the
   metric observed on the guiding rows (the pool without picking rows); SGD runs),
   timed (wall seconds, torch threads). With ``metricopt_learned`` in the
   methods, the learned optimizer is meta-trained too
   (``metricopt.blackbox.learned.meta_train_learned``) and timed. With
   ``trust_check`` (the default), a value function that fails the library's
   check (``MetaResult.trust``) does not guide: ``metricopt_sgd`` /
   ``metricopt_adam`` run loss-only, as the library falls back.
3. ``held_out_tasks`` new tasks: ``TaskDistribution().sample`` at index
   ``1_000_000 + j`` (a data subset and class balance never used in
   meta-training), each started at ``phi = 0`` with learning-rate factor 1.
   DECIDED: always the library's default distribution, whatever meta-training
   used, so that every variant of a suite runs the same held-out tasks.
   Every method fine-tunes ``phi`` with the same ``T``, ``K`` and batch seed:
   ``sgd`` / ``adam`` (the training loss only), ``metricopt_sgd`` /
   ``metricopt_adam`` (the training loss + ``value_weight`` x the value gradient),
   ``metricopt_learned`` (the learned rule), ``direct_loss`` (the metric's own
   loss in this library, with Adam: DECIDED, Adam's step does not depend on
   the loss's scale, which differs from cross-entropy's); all keep the
   ``phi`` with the best observed metric on the picking rows (the same ``K``
   observations, ``phi = 0`` included). ``pretrained`` is ``phi = 0`` at
   shift 0, ``tuned_threshold`` ``phi = 0`` at the tuned shift (binary
   datasets; one value per seed, repeated per task); every fine-tuned method
   is scored at the shift it was fine-tuned at.
4. Recorded per run: test cost at the kept ``phi``, the picking rows' cost
   there, the kept step, fine-tuning seconds; per meta-training: its seconds,
   the trust verdict and rank correlations, the tuned threshold.

Every metric is reported as a COST, lower is better: ``mcr``, ``1 - aucpr``,
``cost`` (mean cost per sample, a missed positive 20, a false alarm 1).

Aggregation per (setting, metric[, variant]): mean test cost over
seeds x held-out tasks; std over seeds of the per-seed means; paired
wins/ties/losses of each MetricOpt variant against each loss-only optimiser
over the (seed, task) runs (a win: lower test cost by more than
``tie_tolerance``) and against the tuned threshold; median meta-training
seconds over seeds. The defaults and guidance sweeps add their choice
(:mod:`benchmarks.suites.blackbox_selection`).

Jobs are (dataset, seed) pairs (one pre-training each), run in ``jobs``
worker processes (spawned) with ``torch.set_num_threads(spec.threads)``;
results do not depend on ``jobs``. With a partial file (the command line's
``<name>.partial.jsonl``) finished jobs survive a killed run and a restart
skips them. A data set that is not installed is
recorded as unavailable and the rest runs. Markdown and PNG reports:
:mod:`benchmarks.suites.blackbox_report`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.harness import partial
from benchmarks.harness.jobs import run_tasks
from benchmarks.harness.results import _clean, collect_metadata, load_average, split_info, write_suite_reports
from benchmarks.harness.specs import BLACKBOX_RETRIEVAL as RETRIEVAL
from benchmarks.harness.specs import BlackBoxSpec, BlackBoxVariant, spec_to_dict
from benchmarks.harness.threads import torch_threads

if TYPE_CHECKING:
    from metricopt.app.data import Split

__all__ = ["METHOD_LABELS", "PAIRS", "CellParts", "cell_parts", "load_partial", "refresh_summary", "run_job",
           "run_suite", "setting_key", "write_reports"]

#: Table labels of the methods.
METHOD_LABELS: dict[str, str] = {
    "pretrained": "pre-trained (phi = 0)", "tuned_threshold": "pre-trained, tuned threshold",
    "sgd": "loss-only SGD", "adam": "loss-only Adam",
    "metricopt_sgd": "MetricOpt (SGD)", "metricopt_adam": "MetricOpt (Adam)",
    "metricopt_learned": "MetricOpt (learned)", "direct_loss": "direct loss (Adam)",
}
#: (MetricOpt variant, other method) pairs of the paired wins/ties/losses: each loss-only optimiser, then the
#: tuned threshold (a pair is reported only where both ran).
PAIRS: tuple[tuple[str, str], ...] = tuple((m, b) for m in ("metricopt_sgd", "metricopt_adam", "metricopt_learned")
                                           for b in ("sgd", "adam", "tuned_threshold"))
COST_NOTE = "test COST, lower is better: mcr; 1 - AUCPR; cost = (20 FN + FP) / N; 1 - R@1"


def setting_key(setting: Sequence[Any]) -> str:
    """``"dataset/adapter"``, e.g. ``"page_blocks0/input_bias"``."""
    return f"{setting[0]}/{setting[2]}"


def _learned_api() -> tuple[Any, str | None]:
    """``metricopt.blackbox.learned`` or None with the reason."""
    try:
        from metricopt.blackbox import learned
    except ImportError as exc:
        return None, f"not available: {type(exc).__name__}: {exc}"
    return learned, None


# ---------------------------------------------------------------------------
# one (dataset, seed) job


@dataclasses.dataclass
class CellParts:
    """What every run of one (setting, metric, seed) shares: see :func:`cell_parts`."""

    head: Any
    adapter: Any
    metric: Any
    pool: Any
    meta_pool: Any
    sgd: Any
    adam: Any
    distribution: Any


def cell_parts(spec: BlackBoxSpec, split: Split, num_classes: int, backbone: Any, adapter_kind: str,
               metric_name: str, seed: int, *, steps: int | None = None) -> CellParts:
    """The parts of one cell, as the recipe builds them.

    A copy of ``backbone`` under a :class:`~metricopt.blackbox.threshold.ShiftedLogit`
    head at shift 0 (the pre-trained model, bitwise), wrapped by the adapter
    (projections seeded by ``seed``); the metric; the task pool of
    ``spec.guidance`` (held-out runs keep its selection rows) and the pool
    meta-training observes (the guiding rows only); the SGD and Adam
    fine-tuning configs (``steps`` overrides ``spec.steps``); the
    meta-training task distribution.
    """
    from benchmarks.suites.blackbox_tasks import make_adapter
    from metricopt.app.recipes.blackbox import task_data
    from metricopt.blackbox import FineTuneConfig, make_metric
    from metricopt.blackbox.threshold import ShiftedLogit

    head = ShiftedLogit(copy.deepcopy(backbone), 0.0)
    pool = task_data(split, num_classes, guidance=spec.guidance, seed=seed)
    sgd = FineTuneConfig(steps=spec.steps if steps is None else steps, evaluations=spec.evaluations,
                         optimizer="sgd", learning_rate=spec.sgd_learning_rate, batch_size=spec.batch_size,
                         value_weight=spec.value_weight)
    return CellParts(head=head, adapter=make_adapter(adapter_kind, head, phi_size=spec.phi_size, seed=seed),
                     metric=make_metric(metric_name, num_classes=num_classes), pool=pool,
                     meta_pool=pool.guiding_only(), sgd=sgd,
                     adam=dataclasses.replace(sgd, optimizer="adam", learning_rate=spec.adam_learning_rate),
                     distribution=spec.meta_distribution())


def _cell(spec: BlackBoxSpec, split: Split, num_classes: int, backbone: Any, setting: Sequence[Any],
          metric_name: str, variant: BlackBoxVariant, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Meta-train and run every method on the held-out tasks of one (setting, metric, variant, seed).

    Mirrors ``metricopt.app.recipes.blackbox.run_blackbox``: the backbone under a
    :class:`~metricopt.blackbox.threshold.ShiftedLogit` head (shift 0: the
    pre-trained model, bitwise) wrapped by the adapter; the decision threshold
    tuned on ALL validation rows at phi = 0 (binary datasets) before
    meta-training; ``spec.start == "tuned_threshold"`` moves the head's shift
    there for meta-training and every fine-tuning run; meta-training observes
    the guiding rows only (the pool without its selection rows), the held-out
    runs keep their phi by the selection rows when ``spec.guidance`` has them.
    Test costs: ``pretrained`` at phi = 0 and shift 0, ``tuned_threshold`` at
    phi = 0 and the tuned shift, every fine-tuned method at its kept phi and
    the shift in force for fine-tuning.
    """
    import torch

    from benchmarks.suites.blackbox_tasks import direct_loss, training_loss
    from metricopt.blackbox import MetaConfig, TaskDistribution, finetune, meta_train
    from metricopt.blackbox.threshold import tune_threshold

    label, spec = variant.label, variant.apply(spec)  # the spec's values with the variant's overrides
    loss = training_loss(setting[1])  # cross-entropy; the contrastive loss for the retrieval embedders
    phi_size = spec.phi_size
    parts = cell_parts(spec, split, num_classes, backbone, setting[2], metric_name, seed)
    head, adapter, metric, pool, meta_pool = parts.head, parts.adapter, parts.metric, parts.pool, parts.meta_pool
    sgd, adam, distribution, held_out = parts.sgd, parts.adam, parts.distribution, TaskDistribution()

    def costs(X: Any, y: Any, shift: float) -> float:
        head.shift = shift
        return metric.cost(metric.evaluate(adapter, X, y))

    adapter.reset_phi()
    threshold, threshold_seconds = None, 0.0
    if num_classes == 2:  # one logit: tune the pre-trained model's threshold on all validation rows, phi = 0
        start = time.perf_counter()
        threshold = tune_threshold(adapter, metric, split.X_val, split.y_val)
        threshold_seconds = time.perf_counter() - start
    # the pre-trained and tuned-threshold models do not depend on the held-out task: one value per seed
    fixed = {"pretrained": {"test_cost": costs(split.X_test, split.y_test, 0.0),
                            "val_cost": costs(split.X_val, split.y_val, 0.0),
                            "best_step": 0, "seconds": 0.0, "skipped": 0}}
    if threshold is not None:
        fixed["tuned_threshold"] = {"test_cost": costs(split.X_test, split.y_test, threshold.shift),
                                    "val_cost": metric.cost(threshold.value), "best_step": 0,
                                    "seconds": round(threshold_seconds, 3), "skipped": 0}
    shift = threshold.shift if threshold is not None and spec.start == "tuned_threshold" else 0.0
    head.shift = shift  # meta-training and every fine-tuning run start here
    meta_config = MetaConfig(tasks=spec.meta_tasks, warmup_tasks=spec.warmup_tasks, fit=spec.value_fit, seed=seed)
    start = time.perf_counter()
    meta = meta_train(adapter, loss, metric, meta_pool, finetune_config=sgd, config=meta_config,
                      distribution=distribution)
    value_seconds = time.perf_counter() - start
    trust = meta.trust
    guided = bool(trust.trusted or not spec.trust_check)
    value = meta.value if guided else None  # the library's fallback: loss-only fine-tuning
    value_loss = [r["value_loss"] for r in meta.history if math.isfinite(r["value_loss"])]
    meta_row: dict[str, Any] = {
        "setting": setting_key(setting), "metric": metric_name, "variant": label, "seed": seed,
        "value_seconds": round(value_seconds, 2), "learned_seconds": None,
        "threads": torch.get_num_threads(),
        "meta_tasks": spec.meta_tasks,
        "value_loss_last5": float(np.mean(value_loss[-5:])) if value_loss else None,
        "trusted": bool(trust.trusted), "guided": guided,
        "held_out_rank_correlation": None if math.isnan(trust.rank_correlation) else trust.rank_correlation,
        "trust_points": int(trust.points),
        "rank_correlation_within": meta.within_run_rank_correlation,
        "threshold": None if threshold is None else float(threshold.threshold),
        "threshold_evaluations": None if threshold is None else int(threshold.evaluations),
        "start_shift": float(shift),
    }
    rule = None
    if "metricopt_learned" in spec.methods:
        learned, _ = _learned_api()
        if learned is not None:
            start = time.perf_counter()
            result = learned.meta_train_learned(
                adapter, loss, metric, meta_pool, finetune_config=sgd, distribution=distribution,
                config=learned.LearnedConfig(tasks=spec.meta_tasks, warmup_tasks=spec.warmup_tasks, seed=seed,
                                             value=meta_config))
            rule = result.optimizer
            meta_row["learned_seconds"] = round(time.perf_counter() - start, 2)
    direct = direct_loss(metric_name, num_classes)
    plans = {"sgd": (loss, sgd, None, None), "adam": (loss, adam, None, None),
             "metricopt_sgd": (loss, sgd, value, None), "metricopt_adam": (loss, adam, value, None),
             "metricopt_learned": (loss, sgd, None, rule), "direct_loss": (direct, adam, None, None)}

    runs = []
    for j in range(spec.held_out_tasks):
        task = held_out.sample(1_000_000 + j, seed=seed, labels=pool.y_train.long(), phi_size=phi_size,
                               guided=False)
        task_data = pool.train_subset(task.indices)
        for method in spec.methods:
            row = {**{k: meta_row[k] for k in ("setting", "metric", "variant", "seed")}, "task": j, "method": method}
            if method in ("pretrained", "tuned_threshold"):
                if method in fixed:  # tuned_threshold: binary datasets only (N/A otherwise)
                    runs.append({**row, **fixed[method]})
                continue
            loss_fn, config, guide, update_rule = plans[method]
            if loss_fn is None or (method == "metricopt_learned" and update_rule is None):
                continue  # no direct loss for this metric / learned optimizer unavailable: N/A
            adapter.reset_phi()
            head.shift = shift
            start = time.perf_counter()
            run = finetune(adapter, loss_fn, metric, task_data, config=config, value=guide, rule=update_rule,
                           seed=task.seed)
            seconds = time.perf_counter() - start
            runs.append({**row, "test_cost": costs(split.X_test, split.y_test, shift),
                         "val_cost": None if run.best_value is None else metric.cost(run.best_value),
                         "best_step": run.best_step, "seconds": round(seconds, 3), "skipped": run.skipped})
    adapter.remove()
    return runs, meta_row


def run_job(spec: BlackBoxSpec, dataset: str, seed: int) -> dict[str, Any]:
    """Every (setting, metric, variant) of ``dataset`` for one seed: ``{"dataset", "seed", "runs", "meta",
    "dataset_info", "unavailable_dataset"?, "seconds"}``; torch and BLAS limited to ``spec.threads`` threads."""
    from threadpoolctl import threadpool_limits

    # Both limits restored on exit: with jobs=1 this runs in the harness process.
    with torch_threads(spec.threads), threadpool_limits(limits=spec.threads):  # numpy/scipy BLAS: the GPs
        return _run_job(spec, dataset, seed)


def _run_job(spec: BlackBoxSpec, dataset: str, seed: int) -> dict[str, Any]:
    from benchmarks.suites.blackbox_tasks import load_data, pretrain

    start = time.perf_counter()
    out: dict[str, Any] = {"dataset": dataset, "seed": seed, "runs": [], "meta": [], "dataset_info": {}}
    try:
        split, num_classes = load_data(dataset, seed, fashion_sizes=spec.fashion_sizes,
                                       retrieval_sizes=spec.retrieval_sizes)
    except (ImportError, FileNotFoundError) as exc:  # not installed here: record it, run the rest
        out["unavailable_dataset"] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = time.perf_counter() - start
        return out
    out["dataset_info"] = split_info(split, num_classes=num_classes)
    backbones: dict[str, Any] = {}
    for setting in (s for s in spec.settings if s[0] == dataset):
        model = setting[1]
        if model not in backbones:
            backbones[model] = pretrain(split, num_classes, model, epochs=spec.epochs_for(model), seed=seed)
        for metric_name in setting[3]:
            for variant in spec.variants():
                runs, meta_row = _cell(spec, split, num_classes, backbones[model], setting, metric_name, variant,
                                       seed)
                out["runs"] += runs
                out["meta"].append(meta_row)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _job_cost(spec: BlackBoxSpec, dataset: str) -> float:
    """Rough relative cost, for scheduling big jobs first."""
    cells = sum(len(s[3]) for s in spec.settings if s[0] == dataset)
    return cells * (40.0 if dataset in ("fashion_mnist", "fashion_retrieval") else 1.0)


def load_partial(path: Path | None, spec: BlackBoxSpec) -> dict[tuple[str, int], dict[str, Any]]:
    """The finished ``(dataset, seed)`` jobs a partial file holds (:func:`benchmarks.harness.partial.read`)."""
    return partial.read(path, spec, lambda out: (str(out["dataset"]), int(out["seed"])))  # type: ignore[return-value]


def run_suite(spec: BlackBoxSpec, *, jobs: int = 1, progress: bool = True,
              command: Sequence[str] | None = None, partial_path: Path | None = None) -> dict[str, Any]:
    """Run a black-box spec (or ablation, or defaults sweep); returns the JSON-ready payload.

    Progress: one line per finished job with its and the total elapsed time
    (stderr), and a tqdm bar when stderr is a terminal. With ``partial_path``,
    each finished (dataset, seed) job is appended to that JSON-lines file and a
    restarted run of the same spec skips the jobs it holds (the caller deletes
    it once the result is written); a file of another spec is a ValueError.
    """
    from tqdm.auto import tqdm

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer; got {jobs!r}")
    if not isinstance(spec, BlackBoxSpec):
        raise TypeError(f"`spec` must be a BlackBoxSpec; got {type(spec).__name__}")
    with torch_threads(spec.threads):
        metadata = collect_metadata(command)
        unavailable: dict[str, str] = {}
        if "metricopt_learned" in spec.methods and (reason := _learned_api()[1]) is not None:
            unavailable["metricopt_learned"] = f"metricopt.blackbox.learned {reason}"
        every = sorted(((d, s) for d in spec.datasets for s in spec.seeds),
                       key=lambda t: (-_job_cost(spec, t[0]), t[0], t[1]))
        done = {k: v for k, v in load_partial(partial_path, spec).items() if k in every}
        if partial_path is not None:
            partial.start(Path(partial_path), spec, done)
        pending = [t for t in every if t not in done]
        start = time.perf_counter()
        outputs: list[dict[str, Any]] = list(done.values())
        bar = tqdm(total=len(every), initial=len(done), desc=spec.name, unit="job", dynamic_ncols=True,
                   disable=not (progress and sys.stderr.isatty()))
        if progress and done:
            bar.write(f"{spec.name}: {len(done)} of {len(every)} jobs resumed from {partial_path}", file=sys.stderr)

        def finished(out: dict[str, Any]) -> None:
            outputs.append(out)
            partial.append(partial_path, _clean(out))  # as each finishes, so a killed run keeps it
            bar.update()
            if progress:
                status = " (data not installed)" if "unavailable_dataset" in out else ""
                bar.write(f"[{len(outputs)}/{len(every)}] {spec.name}: {out['dataset']} seed {out['seed']} done in "
                          f"{out['seconds']:.1f} s{status}; elapsed {time.perf_counter() - start:.1f} s",
                          file=sys.stderr)

        for _, out in run_tasks(run_job, pending, args=(spec,), jobs=jobs):
            finished(out)
        bar.close()
        datasets: dict[str, Any] = {}
        for out in sorted(outputs, key=lambda o: o["seed"]):
            if "unavailable_dataset" in out:
                unavailable.setdefault(f"dataset {out['dataset']}", out["unavailable_dataset"])
            else:
                datasets.setdefault(out["dataset"], out["dataset_info"])
        metadata["load_average_at_end"] = load_average()
        order = {(setting_key(s), k): (i, j) for i, s in enumerate(spec.settings) for j, k in enumerate(s[3])}
        variants = [v.label for v in spec.variants()]
        key = lambda r: (*order[r["setting"], r["metric"]], variants.index(r["variant"]), r["seed"])
        methods = list(spec.methods)
        payload: dict[str, Any] = {
            "suite": spec.name, "kind": spec.kind,
            "title": (f"Black-box metrics (`{spec.name}`): MetricOpt against loss-only fine-tuning of adapters, "
                      f"{COST_NOTE}"),
            "protocol": protocol_text(spec), "spec": spec_to_dict(spec), "metadata": metadata, "jobs": jobs,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "job_seconds": {f"{o['dataset']} seed {o['seed']}": o["seconds"] for o in outputs},
            **({"resumed_jobs": len(done)} if done else {}),
            "methods": {m: METHOD_LABELS[m] for m in methods},
            "variants": [v.record(spec) for v in spec.variants()], "reference_variant": spec.reference_variant().label,
            "direct_losses": _direct_losses(spec), "unavailable": unavailable, "datasets": datasets,
            "meta_training": sorted((m for o in outputs for m in o["meta"]), key=key),
            "runs": sorted((r for o in outputs for r in o["runs"]),
                           key=lambda r: (*key(r), r["task"], methods.index(r["method"]))),
        }
        return refresh_summary(payload)


def _direct_losses(spec: BlackBoxSpec) -> dict[str, str]:
    from benchmarks.suites.blackbox_tasks import DIRECT_LOSSES

    return {k: DIRECT_LOSSES[k] for k in dict.fromkeys(m for s in spec.settings for m in s[3])}


def protocol_text(spec: BlackBoxSpec) -> str:
    models = {s[1] for s in spec.settings}
    epochs = ", ".join(f"{m} {e} epochs" for m, e in spec.pretrain_epochs if m in models)
    k = spec.evaluations
    k_text = f"{k:.1%} of T = {min(spec.steps + 1, max(2, round(k * spec.steps)))}" if isinstance(k, float) else k
    data = []
    if "fashion_mnist" in spec.datasets:
        data.append(f"Fashion-MNIST: {spec.fashion_sizes[0]} training images stratified -> 80/20 train/val and "
                    f"{spec.fashion_sizes[1]} test images, small CNN")
    if "letter_retrieval" in spec.datasets:
        data.append("letter_retrieval: UCI Letter, letters A..M train / N..Z test, 20% of the training rows "
                    "validation, MLP embedder 16 -> 128 -> 128 -> 64")
    if "fashion_retrieval" in spec.datasets:
        data.append(f"fashion_retrieval: Fashion-MNIST classes 0-4 train ({spec.retrieval_sizes[0]} rows, 20% "
                    f"validation) / 5-9 test ({spec.retrieval_sizes[1]} rows), CNN embedder with a 64-d output")
    if any(d != "fashion_mnist" and d not in RETRIEVAL for d in spec.datasets):
        data.append("tabular: 60/20/20 split with random_state = seed, MLP (64, 64)")
    # (where meta-training and fine-tuning observe the metric, which rows pick the kept phi)
    guides = {"validation": ("the metric observed on the validation rows", "the validation rows pick the kept phi"),
              "split": ("the metric observed on a stratified half of the validation rows",
                        "the other half picks the kept phi"),
              "train": ("the metric observed on training rows (as many per class as the validation rows)",
                        "the validation rows pick the kept phi")}
    observed, picked = guides[spec.guidance]
    start = ("the pre-trained model at its tuned threshold (binary datasets)" if spec.start == "tuned_threshold"
             else "the pre-trained model")
    if spec.kind == "blackbox_guidance":
        (observed, picked), start = ("the metric observed on the guiding rows of each variant",
                                     "the picking rows of each variant pick the kept phi"), "the start of each variant"
    text = (
        "Protocol: per (setting, metric, seed), the split and the backbone pre-trained with its training loss "
        "(cross-entropy; retrieval embedders: a contrastive loss on L2-normalised embeddings, margin 1, which "
        "loss-only fine-tuning uses too) "
        f"({epochs}; seeded; {'; '.join(data)}), frozen, under a logit-shift head (shift 0: the backbone); the "
        f"adapter (InputBias or FiLM, |phi| = {spec.phi_size}) is the only thing fine-tuning moves. On binary "
        "datasets the decision threshold of the pre-trained model (phi = 0) is tuned on ALL validation rows by the "
        "black-box metric (metricopt.blackbox.threshold.tune_threshold; a rank metric such as AUCPR keeps "
        f"threshold 0.5). Meta-training and fine-tuning start from {start}. The value function is meta-trained "
        f"with Reptile on {spec.meta_tasks} tasks ({spec.warmup_tasks} loss-only warm-up) drawn from the training "
        f"split, {observed}" + (
            "; the learned optimizer likewise (metricopt.blackbox.learned, the same tasks)"
            if "metricopt_learned" in spec.methods else "") +
        ". " + ("When the value function fails the library's check (MetaResult.trust: pooled held-out rank "
                "correlation of the later half of the meta-training tasks), MetricOpt falls back to loss-only "
                "fine-tuning, as the library does. " if spec.trust_check else
                "No trust check: MetricOpt always follows the value function. ") +
        f"Then {spec.held_out_tasks} held-out tasks per seed (the library's default TaskDistribution sampled at "
        "index 1_000_000 + j: a data subset and class balance never used in meta-training; phi = 0, learning-rate "
        "factor 1), every "
        f"method with the same budget and batch seed: T = {spec.steps} steps, K = {k_text} metric "
        f"observations ({observed}; {picked}), batch {spec.batch_size}, SGD (momentum 0.9) lr "
        f"{spec.sgd_learning_rate}, Adam lr {spec.adam_learning_rate}, value weight {spec.value_weight}. Every "
        "method keeps the phi with the best observed metric on the picking rows (phi = 0 included) and is scored "
        "on the test split there, with the threshold it was fine-tuned at; the pre-trained model is scored at "
        "phi = 0 and threshold 0.5, the tuned-threshold model at phi = 0 and its tuned threshold (one value per "
        "seed, repeated per task)."
        + (" Direct losses fine-tune phi with Adam." if "direct_loss" in spec.methods else "")
        + f" Mean over seeds x held-out tasks; ± std over seeds of the per-seed means; seeds {tuple(spec.seeds)}."
    )
    if spec.kind == "blackbox_ablation":
        text += (f" Ablation: K over {list(spec.evaluations_grid)} at |phi| = {spec.phi_size}, |phi| over "
                 f"{list(spec.phi_size_grid)} at K = {spec.evaluations}; K applies to meta-training and to every "
                 "held-out run alike.")
    if spec.kind == "blackbox_defaults":
        presets = "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in o) for n, o in spec.distribution_grid)
        text += (f" Defaults sweep: value weight lambda_v over {list(spec.value_weight_grid)} at the "
                 f"{spec.preset_name()!r} meta-training task distribution, the distribution over the presets "
                 f"({presets}; value-weight factor range {tuple(spec.meta_distribution().value_weight)} in all) "
                 f"at lambda_v = {spec.value_weight:g}; lambda_v applies to meta-training (times each task's factor) "
                 "and to the held-out runs. The held-out tasks come from the library's default TaskDistribution for "
                 "every variant (the same tasks and loss-only runs), on seeds "
                 f"{tuple(spec.seeds)}, disjoint from the reporting seeds {tuple(spec.reporting_seeds)}: they are "
                 "validation tasks for the defaults.")
    if spec.kind == "blackbox_guidance" and len(spec.value_fit_grid) > 1:
        text += (f" Value-fit sweep: the value function's fit over {list(spec.value_fit_grid)} (reference: "
                 f"{spec.value_fit}) at guidance={spec.guidance}, start={spec.start} (the choice of the guidance "
                 "sweep), the same validation tasks, methods and rule as that sweep.")
    elif spec.kind == "blackbox_guidance":
        text += (f" Guidance sweep: guidance over {list(spec.guidance_grid)} x start over {list(spec.start_grid)} "
                 f"(reference: guidance={spec.guidance}, start={spec.start}, the library's defaults); guidance and "
                 "start apply to meta-training and to every held-out run alike, so the loss-only runs differ "
                 "between variants (their start and picking rows do). The held-out tasks come from the library's "
                 f"default TaskDistribution for every variant, on seeds {tuple(spec.seeds)}, disjoint from the "
                 f"reporting seeds {tuple(spec.reporting_seeds)}: they are validation tasks for the defaults.")
    return text


# ---------------------------------------------------------------------------
# summary


def _paired(a: dict[tuple[int, int], float], b: dict[tuple[int, int], float], tolerance: float) -> dict[str, Any]:
    diffs = np.array([a[k] - b[k] for k in a if k in b], dtype=float)
    out: dict[str, Any] = {"wins": int((diffs < -tolerance).sum()), "losses": int((diffs > tolerance).sum()),
                           "n": len(diffs)}
    out["ties"] = out["n"] - out["wins"] - out["losses"]
    out["mean_diff"] = float(diffs.mean()) if len(diffs) else None
    out["se"] = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
    return out


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute ``payload["summary"]`` from its runs and meta-training rows, in place.

    ``summary["groups"]``: one entry per (setting, metric, variant) with, per
    method, ``mean`` (over seeds x tasks), ``std`` (over seeds of the per-seed
    means), ``by_seed``, ``n_runs``, ``val_mean``, ``best_step_mean``,
    ``kept_start`` (share of runs that kept phi = 0), ``seconds_mean``; ``best``
    (lowest mean, ties at 4 decimals); ``wtl`` per pair of :data:`PAIRS`
    (``"a vs b"``: paired over (seed, task), a win = a's test cost lower);
    ``meta`` medians of meta-training seconds and their learned/value ratio.
    """
    tolerance = payload["spec"]["tie_tolerance"]
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in payload["runs"]:
        g = groups.setdefault((r["setting"], r["metric"], r["variant"]), {})
        g.setdefault(r["method"], []).append(r)
    summary = []
    for (setting, metric, variant), by_method in groups.items():
        cells: dict[str, Any] = {}
        for m in (m for m in payload["methods"] if m in by_method):
            rows = by_method[m]
            seeds = sorted({r["seed"] for r in rows})
            by_seed = {s: float(np.mean([r["test_cost"] for r in rows if r["seed"] == s])) for s in seeds}
            vals = [r["val_cost"] for r in rows if r["val_cost"] is not None]
            cells[m] = {"mean": float(np.mean([r["test_cost"] for r in rows])),
                        "std": float(np.std(list(by_seed.values()), ddof=1)) if len(seeds) > 1 else 0.0,
                        "by_seed": by_seed, "n_runs": len(rows), "val_mean": float(np.mean(vals)) if vals else None,
                        "best_step_mean": float(np.mean([r["best_step"] for r in rows])),
                        "kept_start": float(np.mean([r["best_step"] == 0 for r in rows])),
                        "seconds_mean": float(np.mean([r["seconds"] for r in rows]))}
        top = min(c["mean"] for c in cells.values())
        per_run = {m: {(r["seed"], r["task"]): r["test_cost"] for r in rows} for m, rows in by_method.items()}
        meta = [r for r in payload["meta_training"]
                if (r["setting"], r["metric"], r["variant"]) == (setting, metric, variant)]
        ratios = [r["learned_seconds"] / r["value_seconds"] for r in meta
                  if r["learned_seconds"] is not None and r["value_seconds"] > 0]
        learned = [r["learned_seconds"] for r in meta if r["learned_seconds"] is not None]
        summary.append({
            "setting": setting, "metric": metric, "variant": variant, "methods": cells,
            "best": [m for m, c in cells.items() if round(c["mean"], 4) == round(top, 4)],
            "wtl": {f"{a} vs {b}": _paired(per_run[a], per_run[b], tolerance) for a, b in PAIRS
                    if a in per_run and b in per_run},
            "meta": {"value_seconds_median": float(np.median([r["value_seconds"] for r in meta])) if meta else None,
                     "learned_seconds_median": float(np.median(learned)) if learned else None,
                     "learned_ratio_median": float(np.median(ratios)) if ratios else None, "n": len(meta)},
        })
    totals: dict[str, dict[str, int]] = {}
    for g in summary:
        for pair, r in g["wtl"].items():
            t = totals.setdefault(pair, {"wins": 0, "ties": 0, "losses": 0, "n": 0})
            for k in t:
                t[k] += r[k]
    payload["summary"] = {"groups": summary, "wtl_totals": totals}
    if payload.get("kind") == "blackbox_defaults":
        from benchmarks.suites.blackbox_selection import selection_summary

        payload["summary"]["selection"] = selection_summary(payload)
    if payload.get("kind") == "blackbox_guidance":
        from benchmarks.suites.blackbox_selection import guidance_summary

        payload["summary"]["guidance"] = guidance_summary(payload)
    payload["runs"] = payload.pop("runs")  # keep the long lists last in the file
    return payload


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` and ``<suite>.png`` of a black-box payload (not its JSON); returns the paths."""
    from benchmarks.suites.blackbox_report import blackbox_markdown, plot_blackbox
    return write_suite_reports(payload, output_dir, markdown=blackbox_markdown, plot=plot_blackbox, plots=plots)
