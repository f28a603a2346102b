"""Result files: run metadata, aggregation, wins/ties/losses, JSON and Markdown.

Conventions:

* A *record* is one held-out score: ``{"dataset", "task", "method", "metric",
  "seed", "test", "val", "epoch", "threshold"}``.
* Per (dataset, metric, method) the table shows the mean over seeds and the
  sample standard deviation (``ddof=1``; 0 for one seed).
* "mean over datasets" averages those seed-means over the datasets where the
  method ran; its spread (plots) is the standard deviation over seeds of the
  per-seed average over datasets.
* Wins/ties/losses of the reference method against a baseline count datasets
  by their seed-means: a tie is ``|reference - baseline| < tie_tolerance``
  (0.005 unless the spec says otherwise), a win is reference ahead by at least
  that much, a loss behind by at least that much. The largest deficit is
  reported beside them, so a loss is never hidden inside a count.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.harness.stats import wilcoxon_vs

if TYPE_CHECKING:
    from metricopt.app.data import Split

__all__ = [
    "METRIC_LABELS",
    "aggregate",
    "collect_metadata",
    "format_mean_std",
    "quality_markdown",
    "seed_average_over_datasets",
    "speed_markdown",
    "split_info",
    "summary_means",
    "wins_ties_losses",
    "write_json",
]

METRIC_LABELS = {
    "f1": "F1", "gmean": "G-mean", "balanced_accuracy": "balanced accuracy", "mcc": "MCC",
    "ap": "AP", "auroc": "AUROC",
}
_PACKAGES = ("metricopt", "torch", "numpy", "scikit-learn", "pandas", "matplotlib", "tqdm", "monai", "libauc")


# ---------------------------------------------------------------------------
# metadata


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return _metadata.version(package)
    except _metadata.PackageNotFoundError:
        if package == "metricopt":
            import metricopt

            return f"{metricopt.__version__} (source tree)"
        return None


def _command_line() -> str:
    """This process's command line, with ``-m benchmarks`` restored for module runs."""
    argv = list(sys.argv)
    if argv and argv[0].replace("\\", "/").endswith("metricopt/bench/__main__.py"):
        argv = ["-m", "benchmarks", *argv[1:]]
    return shlex.join([Path(sys.executable).name, *argv])


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def collect_metadata(command: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how a benchmark ran: commit, versions, threads, machine, date, command.

    Args:
        command: the arguments the harness was given (``main(argv)``); the
            process's own ``sys.argv`` is recorded beside them.
    """
    import torch

    here = Path(__file__).resolve().parent
    status = _git(["status", "--porcelain"], here)
    load = load_average()
    return {
        "git_commit": _git(["rev-parse", "HEAD"], here),
        "git_dirty": None if status is None else bool(status),
        "versions": {p: _version(p) for p in _PACKAGES} | {"python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
        "argv": None if command is None else list(command),
    }


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write ``payload`` as indented JSON (NaN written as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=1, sort_keys=False) + "\n")
    return path


def write_sweep(payload: dict[str, Any], output_dir: Path, name: str, report: Callable[[dict[str, Any]], str]) -> str:
    """A sweep script's ``<name>.json`` and its Markdown ``<name>.md``, rendered from the JSON as written (what
    ``python -m benchmarks render`` re-creates); returns the Markdown."""
    json_path = write_json(payload, Path(output_dir) / f"{name}.json")
    text = report(json.loads(json_path.read_text()))
    json_path.with_suffix(".md").write_text(text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def split_info(split: Split, *, num_classes: int | None = None) -> dict[str, Any]:
    """A split's ``dataset_info`` record: its part sizes, input shape and classes.

    With ``num_classes`` (classification: the same classes in every part) the
    record holds ``"classes"`` and, for two classes, the positive rate of the
    training and test labels (4 decimals); without it (retrieval: class-disjoint
    training and test classes) the sorted ``"train_classes"`` and ``"test_classes"``.
    """
    out: dict[str, Any] = {"train": len(split.y_train), "val": len(split.y_val), "test": len(split.y_test),
                           "input_shape": list(split.X_train.shape[1:])}
    if num_classes is not None:
        out["classes"] = num_classes
        if num_classes == 2:
            out["positive_rate"] = {part: round(float(y.mean()), 4)
                                    for part, y in (("train", split.y_train), ("test", split.y_test))}
    else:
        out["train_classes"] = sorted(int(c) for c in np.unique(split.y_train))
        out["test_classes"] = sorted(int(c) for c in np.unique(split.y_test))
    return out


# ---------------------------------------------------------------------------
# aggregation


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]]:
    """``out[task][dataset][metric][method] = {"mean", "std", "n", "by_seed"}`` of the test scores.

    Example:
        >>> rec = [{"task": "binary", "dataset": "d", "metric": "f1", "method": "a", "seed": s, "test": v}
        ...        for s, v in [(0, 0.5), (1, 0.7)]]
        >>> cell = aggregate(rec)["binary"]["d"]["f1"]["a"]
        >>> round(cell["mean"], 3), round(cell["std"], 3), cell["n"]
        (0.6, 0.141, 2)
    """
    scores: dict[tuple[str, str, str, str], dict[int, float]] = defaultdict(dict)
    for r in records:
        scores[(r["task"], r["dataset"], r["metric"], r["method"])][int(r["seed"])] = float(r["test"])
    out: dict[str, Any] = {}
    for (task, dataset, metric, method), by_seed in scores.items():
        values = np.array(list(by_seed.values()), dtype=float)
        cell = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values),
            "by_seed": dict(sorted(by_seed.items())),
        }
        out.setdefault(task, {}).setdefault(dataset, {}).setdefault(metric, {})[method] = cell
    return out


def summary_means(table: dict[str, Any], metric: str, methods: Sequence[str]) -> dict[str, float | None]:
    """Mean over datasets of each method's seed-means for ``metric`` (None if it never ran).

    ``table`` is one task's part of :func:`aggregate`.
    """
    out: dict[str, float | None] = {}
    for method in methods:
        values = [cells[metric][method]["mean"] for cells in table.values() if method in cells.get(metric, {})]
        out[method] = float(np.mean(values)) if values else None
    return out


def seed_average_over_datasets(table: dict[str, Any], metric: str, method: str) -> dict[int, float]:
    """Per seed, the mean over datasets of ``method``'s score (seeds present on every dataset)."""
    per_dataset = [cells[metric][method]["by_seed"] for cells in table.values() if method in cells.get(metric, {})]
    if not per_dataset:
        return {}
    seeds = set.intersection(*(set(d) for d in per_dataset))
    return {s: float(np.mean([d[s] for d in per_dataset])) for s in sorted(seeds)}


def wins_ties_losses(
    table: dict[str, Any], reference: str, baseline: str, metric: str, *, tolerance: float = 0.005
) -> dict[str, Any]:
    """Count datasets where ``reference`` beats, ties or trails ``baseline`` on ``metric``.

    Returns ``{"wins", "ties", "losses", "n", "mean_diff", "worst_diff", "worst_dataset",
    "n_pairs", "paired_mean_diff", "paired_se"}``; ``diff = reference - baseline``
    of seed-means, ``worst_diff`` the smallest (most negative) one; the paired
    fields use the per-(dataset, seed) differences where cells carry
    ``by_seed``. Datasets where either method did not run are skipped.

    Example:
        >>> cell = lambda m: {"mean": m}
        >>> table = {"a": {"f1": {"ours": cell(0.80), "base": cell(0.70)}},
        ...          "b": {"f1": {"ours": cell(0.500), "base": cell(0.503)}},
        ...          "c": {"f1": {"ours": cell(0.40), "base": cell(0.45)}}}
        >>> r = wins_ties_losses(table, "ours", "base", "f1")
        >>> r["wins"], r["ties"], r["losses"], r["worst_dataset"], round(r["worst_diff"], 3)
        (1, 1, 1, 'c', -0.05)
    """
    if tolerance < 0:
        raise ValueError(f"`tolerance` must be >= 0; got {tolerance!r}")
    wins = ties = losses = 0
    diffs: dict[str, float] = {}
    paired: list[float] = []
    for dataset, cells in table.items():
        row = cells.get(metric, {})
        if reference not in row or baseline not in row:
            continue
        diff = row[reference]["mean"] - row[baseline]["mean"]
        diffs[dataset] = diff
        ref_seeds, base_seeds = row[reference].get("by_seed", {}), row[baseline].get("by_seed", {})
        paired += [ref_seeds[s] - base_seeds[s] for s in ref_seeds if s in base_seeds]
        if abs(diff) < tolerance:
            ties += 1
        elif diff > 0:
            wins += 1
        else:
            losses += 1
    worst = min(diffs, key=diffs.__getitem__) if diffs else None
    return {
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": len(diffs),
        "mean_diff": float(np.mean(list(diffs.values()))) if diffs else None,
        "worst_diff": diffs[worst] if worst is not None else None,
        "worst_dataset": worst,
        # (dataset, seed) pairs share split and initialisation: their differences
        # give a standard error for the mean difference.
        "n_pairs": len(paired),
        "paired_mean_diff": float(np.mean(paired)) if paired else None,
        "paired_se": float(np.std(paired, ddof=1) / np.sqrt(len(paired))) if len(paired) > 1 else None,
    }


def summarize(
    records: list[dict[str, Any]], methods: Sequence[str], metrics: Sequence[str], reference: str, tolerance: float
) -> dict[str, Any]:
    """Per task: means over datasets, per-seed spreads, and wins/ties/losses of ``reference``."""
    agg = aggregate(records)
    out: dict[str, Any] = {}
    for task, table in agg.items():
        # Every method keeps its column; one that cannot run on this task (binary-only
        # recipes on multi-class sets) shows N/A instead of disappearing.
        present = list(methods)
        means = {k: summary_means(table, k, present) for k in metrics}
        spread = {
            k: {m: _std(list(seed_average_over_datasets(table, k, m).values())) for m in present} for k in metrics
        }
        wtl = {
            base: {k: {**wins_ties_losses(table, reference, base, k, tolerance=tolerance),
                       "wilcoxon_p": wilcoxon_vs(table, reference, base, k)["p_value"]} for k in metrics}
            for base in present
            if base != reference and reference in present
        }
        best = {
            k: max((m for m in present if means[k][m] is not None), key=lambda m: means[k][m], default=None)
            for k in metrics
        }
        out[task] = {
            "datasets": sorted(table),
            "methods": present,
            "mean_over_datasets": means,
            "seed_std_of_mean": spread,
            "best_on_mean": best,
            "wins_ties_losses": wtl,
        }
    return out


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------
# Markdown


def format_mean_std(mean: float, std: float, *, bold: bool = False) -> str:
    """``0.712 ± 0.031``, bold if asked."""
    text = f"{mean:.3f} ± {std:.3f}"
    return f"**{text}**" if bold else text


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _bold_max(values: dict[str, float | None]) -> set[str]:
    valid = {k: v for k, v in values.items() if v is not None}
    if not valid:
        return set()
    top = max(valid.values())
    return {k for k, v in valid.items() if round(v, 3) == round(top, 3)}


def _metadata_lines(payload: dict[str, Any]) -> list[str]:
    md = payload["metadata"]
    versions = ", ".join(f"{k} {v}" for k, v in md["versions"].items() if v is not None)
    lines = [
        f"- command: `{md['command']}`",
        f"- git commit: `{md['git_commit']}`"
        + (" (working tree had uncommitted changes)" if md.get("git_dirty") else ""),
        f"- date: {md['date']}; wall time {payload.get('wall_seconds', float('nan')):.0f} s",
        f"- machine: {md['cpu_model']}, {md['cpu_count']} CPUs, torch threads {md['torch_threads']}"
        + (f", worker processes {payload['jobs']}" if "jobs" in payload else "")
        + f"; load average at start {md['load_average_at_start']}",
        f"- versions: {versions}",
    ]
    if "peers" in payload:
        lines.append("- peers: " + "; ".join(f"{k}: {v}" for k, v in payload["peers"].items()))
    return lines


def quality_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a quality or ablation payload (see :mod:`benchmarks.suites.quality`)."""
    from benchmarks.harness.methods import method_label

    spec = payload["spec"]
    metrics = spec["metrics"]
    reference = payload["reference"]
    agg = aggregate(payload["records"])
    tol = spec["tie_tolerance"]
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload), "", payload.get("protocol", ""), ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    for task in ("binary", "multiclass"):
        if task not in payload["summary"]:
            continue
        summ = payload["summary"][task]
        methods = summ["methods"]
        heads = [method_label(m, task) for m in methods]
        task_name = "Binary" if task == "binary" else "Multi-class"
        lines += [f"## {task_name}: mean over {len(summ['datasets'])} datasets", ""]
        lines += [_row(["metric", *heads]), _row(["---"] * (len(heads) + 1))]
        for k in metrics:
            means = summ["mean_over_datasets"][k]
            bold = _bold_max(means)
            lines.append(_row([METRIC_LABELS.get(k, k)] + [
                "N/A" if means[m] is None else (f"**{means[m]:.3f}**" if m in bold else f"{means[m]:.3f}")
                for m in methods
            ]))
        lines += ["", "Best on the mean: " + ", ".join(
            f"{METRIC_LABELS.get(k, k)} {method_label(summ['best_on_mean'][k], task)}" for k in metrics) + ".", ""]
        if summ["wins_ties_losses"]:
            ref_label = method_label(reference, task)
            lines += [
                f"### {task_name}: {ref_label} wins / ties / losses against each other method",
                "",
                (f"Per dataset, by seed-means; tie = |difference| < {tol}. In brackets: the mean difference "
                 f"({ref_label} minus the other), the worst dataset and the two-sided Wilcoxon signed-rank "
                 "test's p over the datasets' seed-means (zero differences dropped)."),
                "",
                _row(["against", *(METRIC_LABELS.get(k, k) for k in metrics)]),
                _row(["---"] * (len(metrics) + 1)),
            ]
            for base, per_metric in summ["wins_ties_losses"].items():
                cells = []
                for k in metrics:
                    r = per_metric[k]
                    if r["n"] == 0:
                        cells.append("N/A")
                        continue
                    p = r.get("wilcoxon_p")
                    cells.append(
                        f"{r['wins']}/{r['ties']}/{r['losses']} (mean {r['mean_diff']:+.3f}; worst "
                        f"{r['worst_diff']:+.3f} {r['worst_dataset']}; p {'–' if p is None else f'{p:.3g}'})"
                    )
                lines.append(_row([method_label(base, task), *cells]))
            lines.append("")
        table = agg[task]
        for k in metrics:
            lines += [f"### {task_name} per dataset: {METRIC_LABELS.get(k, k)} (test, mean ± std over seeds)", ""]
            lines += [_row(["dataset", *heads]), _row(["---"] * (len(heads) + 1))]
            for dataset in summ["datasets"]:
                cells_k = table[dataset].get(k, {})
                bold = _bold_max({m: cells_k[m]["mean"] if m in cells_k else None for m in methods})
                lines.append(_row([dataset] + [
                    format_mean_std(cells_k[m]["mean"], cells_k[m]["std"], bold=m in bold) if m in cells_k else "N/A"
                    for m in methods
                ]))
            means = summ["mean_over_datasets"][k]
            bold = _bold_max(means)
            lines.append(_row(["**mean over datasets**"] + [
                "N/A" if means[m] is None else (f"**{means[m]:.3f}**" if m in bold else f"{means[m]:.3f}")
                for m in methods
            ]))
            lines.append("")
    for note in payload.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def speed_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a speed payload (see :mod:`benchmarks.suites.speed`)."""
    spec = payload["spec"]
    sizes = spec["sizes"]
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload), "", payload.get("protocol", ""), ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    for what, key in (("forward + backward", "fwd_bwd"), ("forward", "fwd")):
        lines += [f"## Ratio to the baseline, {what} (median time / baseline's median time)", ""]
        lines += [_row(["loss", "baseline", *(f"N={n}" for n in sizes)]), _row(["---"] * (len(sizes) + 2))]
        for row in payload["losses"].values():
            cells = []
            for n in sizes:
                ratio = row["ratio"][key].get(str(n))
                cells.append("–" if ratio is None else f"{ratio:.2f}")
            lines.append(_row([row["label"], row["baseline"], *cells]))
        lines.append("")
    lines += ["## Median time in milliseconds (forward + backward / forward)", ""]
    lines += [_row(["loss", *(f"N={n}" for n in sizes)]), _row(["---"] * (len(sizes) + 1))]
    for row in payload["losses"].values():
        cells = []
        for n in sizes:
            fb, f = row["median_ms"]["fwd_bwd"].get(str(n)), row["median_ms"]["fwd"].get(str(n))
            cells.append("–" if fb is None else f"{fb:.3f} / {f:.3f}")
        lines.append(_row([row["label"], *cells]))
    lines.append("")
    for note in payload.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def write_suite_reports(payload: dict[str, Any], output_dir: Path, *, markdown: Any, plot: Any,
                        plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` (``markdown(payload)``) and ``<suite>.png`` (``plot(payload, path)``); returns the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if plots:
        paths["png"] = plot(payload, output_dir / f"{payload['suite']}.png")
    paths["md"] = output_dir / f"{payload['suite']}.md"
    paths["md"].write_text(markdown(payload))
    return paths
