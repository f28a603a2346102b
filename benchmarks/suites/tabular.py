"""The practitioner's tabular benchmark: the recommended recipe against every baseline, 100+ real tables.

Protocol (:class:`benchmarks.harness.specs.TabularSpec`), the same for every method:

1. Per (table, seed) one stratified 60/20/20 train / validation / test split of
   the raw numeric features (``train_val_test_split(random_state=seed,
   standardize=False)``) of a table of :mod:`metricopt.app.data.collection`.
2. MLP methods (:mod:`benchmarks.harness.methods`: AnyLoss, BCE, BCE with a
   tuned threshold, weighted BCE, focal, MONAI Dice, sigmoid soft F1) train on
   the train-standardised copy of the same rows, with the quality suite's
   protocol (:func:`benchmarks.suites.quality.train_mlp_methods`: one
   initialisation per seed, the epoch with the best validation score of the
   target metric kept).
3. The baselines of :mod:`benchmarks.peers.tabular` (the recommended recipe
   ``MetricClassifier(metric=...)``, tuned-threshold HistGradientBoosting and
   logistic regression, class-weighted logistic regression, LightGBM with
   ``is_unbalance`` and with AnyLoss) take the raw rows.
4. Every method that takes a target is trained (or tuned, or early-stopped)
   once per target metric; the test value of that metric is recorded with the
   seconds of the fit.

Work is split into tasks (table, seed, unit), a unit being one MLP training
group or one baseline; tasks run in ``jobs`` worker processes (one thread
each, torch and OpenMP alike). Each finished task is appended to a partial
file (JSON lines, after a header holding the spec); a run started again with
the same spec skips the tasks the file holds. :func:`refresh_summary` computes
per method the mean over tables, wins / ties / losses of the reference,
average ranks and Wilcoxon signed-rank tests, over all tables and per
imbalance-ratio group, from the records alone (``python -m benchmarks render``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import methods as _methods
from benchmarks.harness import partial
from benchmarks.harness.jobs import failures_of, run_resumable, run_summary
from benchmarks.harness.markdown import best as _best
from benchmarks.harness.markdown import number as _num
from benchmarks.harness.markdown import p_value as _p
from benchmarks.harness.markdown import row as _row
from benchmarks.harness.markdown import wtl as _wtl
from benchmarks.harness.results import (
    METRIC_LABELS,
    _metadata_lines,
    aggregate,
    collect_metadata,
    load_average,
    summary_means,
    wins_ties_losses,
    write_suite_reports,
)
from benchmarks.harness.specs import TabularSpec, spec_to_dict
from benchmarks.harness.stats import average_ranks, subtable, wilcoxon_vs
from benchmarks.harness.threads import torch_threads
from benchmarks.peers import classification as peers
from benchmarks.peers.tabular import TABULAR_PEERS, tabular_peer_status

__all__ = [
    "compare",
    "load_partial",
    "recipe_choice",
    "method_label",
    "refresh_summary",
    "resolve_tables",
    "run_suite",
    "run_task",
    "package_status",
    "table_cost",
    "table_info",
    "tabular_markdown",
    "units_of",
    "write_reports",
]

#: Imbalance-ratio groups in report order (labels of :func:`metricopt.app.data.collection.ir_group`).
GROUP_ORDER = ("IR <3", "IR 3-9", "IR 9-30", "IR >=30", "multi-class")

Task = tuple[str, int, str]


# ---------------------------------------------------------------------------
# what runs


#: ``"multiclass"``: the multi-class report tables up to this many rows (leaves out ``fars``, for run time: its
#: 100,968 rows x 362 features are more than the other 20 tables hold together) ...
MULTICLASS_MAX_ROWS = 20_000
#: ... whose smallest class has at least this many rows (a stratified train / validation / test split needs one
#: per part; leaves out abalone, ecoli, nursery and post_operative, with classes of 1 or 2 rows).
MULTICLASS_MIN_CLASS_ROWS = 3


def resolve_tables(tables: str | Sequence[str]) -> tuple[str, ...]:
    """The table names of ``"report"``, ``"validation"``, ``"multiclass"`` or a list of names (checked;
    ValueError if unknown)."""
    from metricopt.app.data import collection

    if tables == "report":
        return tuple(t.name for t in collection.report_tables())
    if tables == "validation":
        return tuple(t.name for t in collection.validation_tables())
    if tables == "multiclass":
        infos = [collection.table_info(name) for name in collection.multiclass_split()[1]]
        return tuple(t.name for t in infos
                     if t.n_samples <= MULTICLASS_MAX_ROWS and t.n_positive >= MULTICLASS_MIN_CLASS_ROWS)
    if tables == "multiclass_validation":
        return collection.multiclass_split()[0]
    if isinstance(tables, str):
        raise ValueError(f"`tables` must be 'report', 'validation', 'multiclass', 'multiclass_validation' or a list "
                         f"of names; got {tables!r}")
    return tuple(collection.table_info(name).name for name in tables)


def method_label(name: str) -> str:
    """Column header of a method."""
    return TABULAR_PEERS[name].label if name in TABULAR_PEERS else _methods.method_label(name)


def _check_methods(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in TABULAR_PEERS and n not in _methods.METHODS]
    if unknown:
        raise ValueError(f"unknown tabular method(s) {unknown}; known: {sorted({*TABULAR_PEERS, *_methods.METHODS})}")


def units_of(methods: Sequence[str]) -> list[str]:
    """The work units of one (table, seed): one per MLP training group (BCE and BCE tuned share one), one per
    baseline, in the methods' order."""
    _check_methods(methods)
    out: list[str] = []
    for name in methods:
        unit = name if name in TABULAR_PEERS else _methods.METHODS[name].group
        if unit not in out:
            out.append(unit)
    return out


def _unavailable(methods: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in methods:
        if name in TABULAR_PEERS:
            status = tabular_peer_status(name)
            if status is not None:
                out[name] = status
        else:
            peer = _methods.METHODS[name].peer
            if peer and peers.load_peer(peer) is None:
                out[name] = peers.peer_status(peer)
    return out


def table_info(name: str) -> dict[str, Any]:
    """A table's size, positives, imbalance ratio and group, family and source (the payload's ``datasets``)."""
    from metricopt.app.data import collection

    t = collection.table_info(name)
    if t.task == "multiclass":  # one group: the imbalance-ratio groups are for binary tables
        return {"n": t.n_samples, "features": t.n_features, "classes": t.n_classes, "ir_group": "multi-class",
                "family": t.family, "source": t.source}
    return {"n": t.n_samples, "features": t.n_features, "positives": t.n_positive,
            "imbalance_ratio": round(t.imbalance_ratio, 2), "ir_group": t.ir_group, "family": t.family,
            "source": t.source}


# ---------------------------------------------------------------------------
# one task


def _task(n_classes: int) -> str:
    return "binary" if n_classes == 2 else "multiclass"


def _record(table: str, seed: int, method: str, metric: str, test: float, seconds: float, task: str,
            **extra: Any) -> dict[str, Any]:
    out = {"dataset": table, "task": task, "method": method, "metric": metric, "seed": seed,
           "test": float(test), "val": None, "epoch": None, "threshold": None, "train_seconds": round(seconds, 3)}
    out.update(extra)
    return out


def _run_baseline(spec: TabularSpec, ds: Any, table: str, seed: int, name: str) -> list[dict[str, Any]]:
    from metricopt.app.data import train_val_test_split
    from metricopt.metrics import metric_score

    raw = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=seed,
                               standardize=False)
    peer = TABULAR_PEERS[name]
    options = dict(spec.recipe_params) if name == "recipe" else {}
    records = []
    for target in (spec.metrics if peer.per_metric else (None,)):
        start = time.perf_counter()
        predict = peer.fit(raw, target, seed, spec.threads, options)
        seconds = time.perf_counter() - start
        decided = np.asarray(predict(raw.X_test)).astype(np.int64)
        for k in (target,) if target else spec.metrics:
            score = metric_score(raw.y_test, decided, k, num_classes=ds.n_classes)
            records.append(_record(table, seed, name, k, score, seconds, _task(ds.n_classes)))
    return records


def _run_mlp(spec: TabularSpec, ds: Any, table: str, seed: int, unit: str) -> tuple[list[dict[str, Any]],
                                                                                  dict[str, str]]:
    from benchmarks.suites.quality import train_mlp_methods
    from metricopt.app.data import train_val_test_split

    split = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=seed)
    members = [m for m in _methods.resolve_methods(tuple(n for n in spec.methods if n in _methods.METHODS))
               if m.group == unit]
    return train_mlp_methods(spec, split, members, dataset=table, task=_task(ds.n_classes),
                             num_classes=ds.n_classes, n_features=ds.n_features, seed=seed)


def run_task(spec: TabularSpec, table: str, seed: int, unit: str) -> dict[str, Any]:
    """Run one unit (an MLP training group or a baseline) on one (table, seed).

    Returns ``{"key": [table, seed, unit], "records": [...], "skipped": {method: reason},
    "failed": {unit: error}, "seconds": float}``. An error inside the unit is
    recorded under ``"failed"``, not raised: one method failing on one table
    does not end a run of hours (the report lists the failures).
    """
    from threadpoolctl import threadpool_limits

    from metricopt.app.data.collection import load_table

    with torch_threads(spec.threads), threadpool_limits(limits=spec.threads):
        start = time.perf_counter()
        out: dict[str, Any] = {"key": [table, seed, unit], "records": [], "skipped": {}, "failed": {}}
        try:
            ds = load_table(table)
            if unit in TABULAR_PEERS:
                out["records"] = _run_baseline(spec, ds, table, seed, unit)
            else:
                out["records"], out["skipped"] = _run_mlp(spec, ds, table, seed, unit)
        except Exception as exc:  # noqa: BLE001 - recorded and reported, see the docstring
            out["failed"][unit] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = round(time.perf_counter() - start, 3)
        return out


# ---------------------------------------------------------------------------
# the partial file


def load_partial(path: Path | None, spec: TabularSpec) -> dict[Task, dict[str, Any]]:
    """The finished tasks a partial file holds (:func:`benchmarks.harness.partial.read`).

    A task whose unit failed is not finished: a restart runs it again (a transient error, or a bug fixed since).
    """
    def key(out: dict[str, Any]) -> Task | None:
        table, seed, unit = out["key"]
        return None if out.get("failed") else (str(table), int(seed), str(unit))

    return partial.read(path, spec, key, what="tasks")  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# the run


def table_cost(table: str, weight: float = 1.0) -> float:
    """A task's expected cost on a collection table, to start the long ones first: rows x (1 + features / 100)
    x ``weight``."""
    from metricopt.app.data import collection

    info = collection.table_info(table)
    return info.n_samples * (1.0 + info.n_features / 100.0) * weight


def _cost(task: Task) -> float:
    return table_cost(task[0], 4.0 if task[2] in ("recipe", "anyloss") else 1.0)  # MLP epochs x targets


def run_suite(
    spec: TabularSpec,
    *,
    jobs: int = 1,
    progress: bool = True,
    command: Sequence[str] | None = None,
    partial_path: Path | None = None,
    runner: Callable[[TabularSpec, str, int, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the tabular spec; returns the JSON-ready payload.

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
        _check_methods(spec.methods)
        unavailable = _unavailable(spec.methods)
        units = units_of([m for m in spec.methods if m not in unavailable])
        tasks: list[Task] = sorted(((t, s, u) for t in tables for s in spec.seeds for u in units),
                                   key=lambda task: (-_cost(task), task))
        done = load_partial(partial_path, spec)
        outputs, wall = run_resumable(runner, tasks, spec=spec, done=done, partial_path=partial_path, jobs=jobs,
                                      progress=progress)
        for out in outputs:
            for method, reason in out.get("skipped", {}).items():
                unavailable.setdefault(method, reason)
        failures = failures_of(outputs)
        records = sorted((r for out in outputs for r in out["records"]),
                         key=lambda r: (r["dataset"], r["metric"], r["method"], r["seed"]))
        metadata["load_average_at_end"] = load_average()
        versions = peers.peer_versions()
        infos = {t: table_info(t) for t in sorted(tables)}
        for name in ("lightgbm", "scipy"):
            versions[name] = package_status(name)
        payload: dict[str, Any] = {
            "suite": spec.name,
            "kind": spec.kind,
            "title": f"Tabular benchmark (`{spec.name}`): the recommended recipe against the practitioner's "
                     "baselines",
            "protocol": _protocol(spec, len(tables), multiclass=any(info["ir_group"] == "multi-class"
                                                                   for info in infos.values())),
            "spec": spec_to_dict(spec),
            "metadata": metadata,
            **run_summary(tasks, done, outputs, jobs=jobs, wall=wall),
            "peers": versions,
            "methods": {m: {"label": method_label(m), "kind": "baseline" if m in TABULAR_PEERS else "mlp",
                            "trained_per_metric": _per_metric(m)} for m in spec.methods},
            "unavailable": unavailable,
            "failures": failures,
            "reference": spec.reference,
            "datasets": infos,
            "records": records,
        }
        return refresh_summary(payload)


def package_status(name: str) -> str:
    """``"installed <version>"`` or ``"not installed"`` (the payload's ``peers``)."""
    from importlib import metadata

    try:
        return f"installed {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return "not installed"


def _per_metric(name: str) -> bool:
    if name in TABULAR_PEERS:
        return TABULAR_PEERS[name].per_metric
    m = _methods.METHODS[name]
    return m.per_metric or m.tune


def _protocol(spec: TabularSpec, n_tables: int, *, multiclass: bool = False) -> str:
    which = spec.tables if isinstance(spec.tables, str) else "listed"
    recipe = ("with its defaults" if not spec.recipe_params else
              "with " + ", ".join(f"{k}={v!r}" for k, v in spec.recipe_params) + " (not its defaults)")
    return (
        f"Protocol: {n_tables} {which} tables of `metricopt.app.data.collection`, seeds {tuple(spec.seeds)}; per "
        "(table, seed) one stratified 60/20/20 train / validation / test split of the raw numeric features "
        f"(`train_val_test_split(random_state=seed, standardize=False)`). Every method that takes a target is "
        f"trained, tuned or early-stopped for each target metric ({', '.join(spec.metrics)}) and scored on test "
        "by that metric; the others are fit once and scored by each. "
        f"`MetricClassifier (recipe)` is `metricopt.app.MetricClassifier(metric=..., random_state=seed)` {recipe}, "
        "fit on train + validation (it standardises and holds out its own validation rows). "
        "`tuned HGB` / `tuned LR`: `TunedThresholdClassifierCV` (5-fold CV, scoring = the target metric: `f1`, "
        "`make_scorer(matthews_corrcoef)` for MCC) over `HistGradientBoostingClassifier(random_state=seed)` / "
        "`StandardScaler` + `LogisticRegression(max_iter=1000)`, fit on train + validation; `weighted LR`: the "
        "same logistic regression with `class_weight='balanced'` at its default threshold. LightGBM "
        "(`fit_lightgbm`: log-loss with `is_unbalance=True`, or the AnyLoss objective with its defaults) fits on "
        "train and stops early on the target metric of the validation rows (decision p > 0.5). MLP methods train "
        f"on the train-standardised rows: MLP {tuple(spec.hidden_sizes)}, Adam lr {spec.learning_rate}, batch "
        f"{spec.batch_size}, {spec.epochs} epochs, one initialisation per seed; the epoch with the best "
        "validation score of the target metric is kept; decisions at p > 0.5 except `BCE tuned` (threshold tuned "
        f"on validation); AnyLoss L = {spec.amplification}, focal gamma {spec.focal_gamma}. Seconds: wall time "
        "of one fit on one thread (MLP fits include the per-epoch scoring of validation and test). Wins / ties / "
        f"losses of the reference by table seed-means, tie = |difference| < {spec.tie_tolerance}; average rank "
        "over the tables where every method ran (1 = best); Wilcoxon signed-rank test (two-sided, zero "
        "differences dropped) of the table seed-means."
        + (" Multi-class tables: every decision is the argmax (no threshold), F1 is the macro average over the "
           "classes and MCC the multi-class MCC; `HGB`, `LR` and `LightGBM log-loss` are HistGradientBoosting, the "
           "logistic regression and LightGBM's multiclass log-loss at the argmax, `MetricClassifier (recipe)` its "
           "multi-class defaults (the AnyLoss MLP)." if multiclass else "")
    )


# ---------------------------------------------------------------------------
# the summary


def compare(table: dict[str, Any], methods: Sequence[str], metrics: Sequence[str], reference: str,
            tolerance: float) -> dict[str, Any]:
    """Means, average ranks, wins / ties / losses and Wilcoxon tests of ``reference`` against every other method,
    on one task's :func:`~benchmarks.harness.results.aggregate` table (or a part of it)."""
    out: dict[str, Any] = {"datasets": sorted(table), "per_metric": {}}
    for k in metrics:
        ranks = average_ranks(table, k, methods)
        against = {}
        if reference in methods:
            for base in methods:
                if base == reference:
                    continue
                against[base] = wins_ties_losses(table, reference, base, k, tolerance=tolerance)
                against[base]["wilcoxon"] = wilcoxon_vs(table, reference, base, k)
        out["per_metric"][k] = {
            "mean": summary_means(table, k, methods),
            "datasets_per_method": {m: sum(1 for cells in table.values() if m in cells.get(k, {})) for m in methods},
            "average_rank": ranks["ranks"],
            "ranked_datasets": ranks["n"],
            "against": against,
        }
    return out


def _seconds(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, float | None]]:
    by_method: dict[str, list[float]] = {m: [] for m in methods}
    for r in records:
        if r["method"] in by_method and r.get("train_seconds") is not None:
            by_method[r["method"]].append(float(r["train_seconds"]))
    return {m: {"mean": float(np.mean(v)) if v else None, "median": float(np.median(v)) if v else None,
                "max": float(np.max(v)) if v else None} for m, v in by_method.items()}


def _all_tasks(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~benchmarks.harness.results.aggregate`'s tables of every task, in one mapping (names are unique)."""
    return {name: cells for part in aggregate(records).values() for name, cells in part.items()}


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute ``payload["summary"]`` from its records and table records, in place; returns the payload."""
    spec = payload["spec"]
    metrics, reference, tolerance = spec["metrics"], payload["reference"], spec["tie_tolerance"]
    methods = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    table = _all_tasks(payload["records"])
    groups: dict[str, list[str]] = {}
    for name, info in payload["datasets"].items():
        groups.setdefault(info["ir_group"], []).append(name)
    ordered = [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)
    payload["summary"] = {
        "all": compare(table, methods, metrics, reference, tolerance),
        "groups": {g: compare(subtable(table, groups[g]), methods, metrics, reference, tolerance) for g in ordered},
        "seconds": _seconds(payload["records"], methods),
    }
    payload["records"] = payload.pop("records")  # keep the records last in the file
    return payload


# ---------------------------------------------------------------------------
# Markdown and plot


def _overview(part: dict[str, Any], methods: Sequence[str], metrics: Sequence[str],
              seconds: dict[str, Any] | None) -> list[str]:
    heads = ["method"] + [f"{METRIC_LABELS.get(k, k)} mean" for k in metrics] + [
        f"{METRIC_LABELS.get(k, k)} rank" for k in metrics]
    if seconds is not None:
        heads.append("s / fit (mean, max)")
    lines = [_row(heads), _row(["---"] * len(heads))]
    best_mean = {k: _best(part["per_metric"][k]["mean"]) for k in metrics}
    best_rank = {k: _best(part["per_metric"][k]["average_rank"], low=True) for k in metrics}
    for m in methods:
        cells = [method_label(m)]
        for k in metrics:
            v = part["per_metric"][k]["mean"][m]
            n = part["per_metric"][k]["datasets_per_method"][m]
            text = _num(v)
            if v is not None and n < len(part["datasets"]):
                text += f" ({n} tables)"
            cells.append(f"**{text}**" if m in best_mean[k] else text)
        for k in metrics:
            text = _num(part["per_metric"][k]["average_rank"][m], 2)
            cells.append(f"**{text}**" if m in best_rank[k] else text)
        if seconds is not None:
            s = seconds[m]
            cells.append("N/A" if s["mean"] is None else f"{s['mean']:.2f}, {s['max']:.2f}")
        lines.append(_row(cells))
    ranked = ", ".join(f"{METRIC_LABELS.get(k, k)} {part['per_metric'][k]['ranked_datasets']}" for k in metrics)
    return lines + ["", f"Tables ranked (every method ran): {ranked}.", ""]


def _against(part: dict[str, Any], reference: str, metrics: Sequence[str]) -> list[str]:
    heads = ["against"]
    for k in metrics:
        label = METRIC_LABELS.get(k, k)
        heads += [f"{label} W/T/L", f"{label} mean diff", f"{label} worst", f"{label} Wilcoxon p"]
    lines = [_row(heads), _row(["---"] * len(heads))]
    bases = list(part["per_metric"][metrics[0]]["against"])
    for base in bases:
        cells = [method_label(base)]
        for k in metrics:
            r = part["per_metric"][k]["against"][base]
            if r["n"] == 0:
                cells += ["N/A"] * 4
                continue
            cells += [_wtl(r), f"{r['mean_diff']:+.3f}", f"{r['worst_diff']:+.3f} {r['worst_dataset']}",
                      _p(r["wilcoxon"]["p_value"])]
        lines.append(_row(cells))
    return lines + [""]


#: Issue 14's goal: the recipe never more than this below tuned-threshold HistGradientBoosting on any group's mean.
GOAL_MARGIN = 0.02
GOAL_BASELINE = "tuned_hgb"


def _goal_lines(payload: dict[str, Any], methods: Sequence[str]) -> list[str]:
    """The goal's check: reference minus tuned HGB on the mean over all tables and over each group."""
    reference, metrics = payload["reference"], payload["spec"]["metrics"]
    if GOAL_BASELINE not in methods or reference not in methods or reference == GOAL_BASELINE:
        return []
    summary = payload["summary"]
    parts = {"all tables": summary["all"], **summary["groups"]}
    heads = ["tables", *(METRIC_LABELS.get(k, k) for k in metrics)]
    lines = [f"### Goal: {method_label(reference)} minus {method_label(GOAL_BASELINE)} on the mean, at most "
             f"{GOAL_MARGIN} behind on any group", "", _row(heads), _row(["---"] * len(heads))]
    for name, part in parts.items():
        cells = [f"{name} ({len(part['datasets'])})"]
        for k in metrics:
            means = part["per_metric"][k]["mean"]
            if means[reference] is None or means[GOAL_BASELINE] is None:
                cells.append("N/A")
                continue
            diff = means[reference] - means[GOAL_BASELINE]
            cells.append(f"{diff:+.3f}" + (" (missed)" if diff < -GOAL_MARGIN else ""))
        lines.append(_row(cells))
    return lines + [""]


#: The rule that chooses the recipe among its candidates (docs/benchmarks/tabular.md, "Choosing the recipe"):
#: the best mean of mean F1 and mean MCC; within this of the best, the smallest median fit time.
CHOICE_TOLERANCE = 0.005
CANDIDATE_PREFIX = "candidate_"


def recipe_choice(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The rule applied to a run holding recipe candidates (None when it holds none).

    Returns ``{"scores": {candidate: (mean F1 + mean MCC) / 2}, "median_seconds": {...}, "within": [...],
    "chosen": name}`` over all tables of the run.
    """
    methods = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    candidates = [m for m in methods if m.startswith(CANDIDATE_PREFIX)]
    metrics = payload["spec"]["metrics"]
    if not candidates or set(metrics) != {"f1", "mcc"}:
        return None
    summary = payload["summary"]
    means = {k: summary["all"]["per_metric"][k]["mean"] for k in metrics}
    scores = {m: float(np.mean([means[k][m] for k in metrics])) for m in candidates
              if all(means[k][m] is not None for k in metrics)}
    if not scores:
        return None
    best = max(scores.values())
    within = [m for m in candidates if m in scores and scores[m] >= best - CHOICE_TOLERANCE]
    seconds = {m: summary["seconds"][m]["median"] for m in candidates}
    chosen = min(within, key=lambda m: (seconds[m] if seconds[m] is not None else float("inf"), -scores[m]))
    return {"scores": scores, "median_seconds": seconds, "within": within, "chosen": chosen}


def _choice_lines(payload: dict[str, Any]) -> list[str]:
    choice = recipe_choice(payload)
    if choice is None:
        return []
    lines = ["## The rule's choice", "",
             f"Score: the mean of mean test F1 and mean test MCC over the tables; the best, or among those within "
             f"{CHOICE_TOLERANCE} of it the one with the smallest median fit time "
             "(docs/benchmarks/tabular.md, \"Choosing the recipe\").", "",
             _row(["candidate", "score", "within the tolerance", "median s / fit"]), _row(["---"] * 4)]
    for m, score in sorted(choice["scores"].items(), key=lambda item: -item[1]):
        name = method_label(m) + (" (chosen)" if m == choice["chosen"] else "")
        seconds = choice["median_seconds"][m]
        lines.append(_row([f"**{name}**" if m == choice["chosen"] else name, f"{score:.4f}",
                           "yes" if m in choice["within"] else "no", _num(seconds, 2)]))
    chosen = choice["chosen"]
    if GOAL_BASELINE in payload["methods"] and GOAL_BASELINE not in payload.get("unavailable", {}):
        metrics = payload["spec"]["metrics"]
        parts = {"all tables": payload["summary"]["all"], **payload["summary"]["groups"]}
        heads = ["tables", *(METRIC_LABELS.get(k, k) for k in metrics)]
        lines += ["", f"{method_label(chosen)} minus {method_label(GOAL_BASELINE)} (mean; at most {GOAL_MARGIN} "
                  "behind on any group is the goal):", "", _row(heads), _row(["---"] * len(heads))]
        for name, part in parts.items():
            cells = [f"{name} ({len(part['datasets'])})"]
            for k in metrics:
                means = part["per_metric"][k]["mean"]
                diff = means[chosen] - means[GOAL_BASELINE]
                cells.append(f"{diff:+.3f}" + (" (missed)" if diff < -GOAL_MARGIN else ""))
            lines.append(_row(cells))
    return lines + [""]


def tabular_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a tabular payload."""
    spec = payload["spec"]
    metrics = spec["metrics"]
    reference = payload["reference"]
    summary = payload["summary"]
    methods = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    ref_label = method_label(reference)
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload),
             f"- tasks: {payload['tasks']} ({payload['resumed_tasks']} resumed from the partial file); task "
             f"seconds summed over workers {payload['task_seconds']:.0f}", "", payload["protocol"], ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    if payload.get("failures"):
        shown = payload["failures"][:20]
        lines += [f"Failed fits ({len(payload['failures'])}; their tables are missing for that method): "
                  + "; ".join(f"{f['unit']} on {f['table']} seed {f['seed']}: {f['error']}" for f in shown)
                  + (" ..." if len(payload["failures"]) > len(shown) else ""), ""]
    everything = summary["all"]
    lines += [f"## All {len(everything['datasets'])} tables: mean test score, average rank, seconds per fit", ""]
    lines += _overview(everything, methods, metrics, summary["seconds"])
    if reference in methods:
        lines += [f"### {ref_label} against each method", "",
                  f"W/T/L: tables where {ref_label} wins / ties / loses (seed-means, tie = |difference| < "
                  f"{spec['tie_tolerance']}); mean diff and worst: {ref_label} minus the other; Wilcoxon: "
                  "two-sided signed-rank test over the tables' seed-means.", ""]
        lines += _against(everything, reference, metrics)
    lines += _goal_lines(payload, methods)
    lines += _choice_lines(payload)
    lines += ["## By imbalance-ratio group", ""]
    for group, part in summary["groups"].items():
        lines += [f"### {group}: {len(part['datasets'])} tables", ""]
        lines += _overview(part, methods, metrics, None)
        if reference in methods:
            lines += _against(part, reference, metrics)
    table = _all_tasks(payload["records"])
    for k in metrics:
        lines += [f"## Per table: {METRIC_LABELS.get(k, k)} (test, mean over seeds)", ""]
        heads = ["table", "IR group", *(method_label(m) for m in methods)]
        lines += [_row(heads), _row(["---"] * len(heads))]
        for name in everything["datasets"]:
            cells_k = table[name].get(k, {})
            values = {m: cells_k[m]["mean"] if m in cells_k else None for m in methods}
            bold = _best(values)
            lines.append(_row([name, payload["datasets"][name]["ir_group"]] + [
                "N/A" if values[m] is None else (f"**{values[m]:.3f}**" if m in bold else f"{values[m]:.3f}")
                for m in methods]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_tabular(payload: dict[str, Any], path: Path) -> Path:
    """One horizontal bar chart per metric: each method's mean test score over all tables (reference in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = payload["spec"]["metrics"]
    part = payload["summary"]["all"]
    methods = [m for m in payload["methods"] if m not in payload.get("unavailable", {})]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 0.4 * len(methods) + 1.5), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        means = part["per_metric"][k]["mean"]
        shown = sorted((m for m in methods if means[m] is not None), key=lambda m: means[m])
        colors = ["tab:red" if m == payload["reference"] else "tab:blue" for m in shown]
        ax.barh([method_label(m) for m in shown], [means[m] for m in shown], color=colors)
        ax.set_xlabel(f"mean test {METRIC_LABELS.get(k, k)} over {len(part['datasets'])} tables")
    fig.suptitle(payload["title"], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` and (``plots``) ``<suite>.png``; returns the paths."""
    return write_suite_reports(payload, output_dir, markdown=tabular_markdown, plot=plot_tabular, plots=plots)
