"""Sweep of the multi-class AnyLoss sharpness: the measurement behind its default.

Multi-class soft predictions are ``softmax(sharpness * logits)``
(``metricopt/losses/soft_confusion.py``). This script trains the multi-class
AnyLoss for each target metric with sharpness 1, 2, 3 and 5 on the four real
multi-class datasets, 5 seeds, with the quality suite's protocol (60/20/20
stratified split, MLP (64, 64), Adam 1e-3, batch 256, 50 epochs, epoch chosen
on validation by the target metric) and writes
``benchmarks/results/sharpness.{json,md}``.

    python -m benchmarks.sharpness_sweep          # about 4 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np

DATASETS = ("hpc", "segment", "texture", "wine")
METRICS = ("mcc", "balanced_accuracy", "f1")
SHARPNESS = (1.0, 2.0, 3.0, 5.0)
SEEDS = (0, 1, 2, 3, 4)
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(job: tuple[str, str, float, int]) -> dict:
    import torch

    from metricopt.app.data import load_dataset, train_val_test_split
    from metricopt.app.recipes.classification import make_loss, train_classifier
    from metricopt.metrics import metric_score
    from metricopt.predict import predict_labels, predict_proba

    torch.set_num_threads(1)
    dataset, metric, sharpness, seed = job
    data = load_dataset(dataset)
    split = train_val_test_split(data.X, data.y, random_state=seed)
    loss = make_loss("anyloss", metric=metric, sharpness=sharpness, num_classes=data.n_classes)
    model, result = train_classifier(
        loss, split.X_train, split.y_train, num_classes=data.n_classes, X_val=split.X_val, y_val=split.y_val,
        metric=metric, seed=seed, epochs=50, batch_size=256, learning_rate=1e-3,
    )
    predicted = predict_labels(predict_proba(model, split.X_test))
    test = float(metric_score(split.y_test, predicted, metric, num_classes=data.n_classes))
    return {"dataset": dataset, "metric": metric, "sharpness": sharpness, "seed": seed, "test": test,
            "epoch": result.best_epoch}


def markdown(records: list[dict], metadata: dict) -> str:
    lines = [
        "# Multi-class AnyLoss sharpness sweep",
        "",
        f"- command: `{metadata['command']}`",
        f"- git commit: `{metadata.get('git_commit')}`; date {metadata.get('date')}",
        "- protocol: quality-suite protocol, 5 seeds, test score of the epoch chosen on validation",
        "",
    ]
    for metric in METRICS:
        lines += [f"## {metric} (test, mean ± std over seeds)", "",
                  "| dataset | " + " | ".join(f"sharpness {s:g}" for s in SHARPNESS) + " |",
                  "| --- |" + " --- |" * len(SHARPNESS)]
        means = {s: [] for s in SHARPNESS}
        for dataset in DATASETS:
            cells = []
            for s in SHARPNESS:
                values = [r["test"] for r in records
                          if (r["dataset"], r["metric"], r["sharpness"]) == (dataset, metric, s)]
                means[s].append(np.mean(values))
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f} (min {min(values):.3f})")
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        lines.append("| **mean** | " + " | ".join(f"{np.mean(means[s]):.3f}" for s in SHARPNESS) + " |")
        lines.append("")
    return "\n".join(lines)


def report(payload: dict) -> str:
    """The Markdown file of a saved result (``python -m benchmarks render`` calls it)."""
    return markdown(payload["records"], payload["metadata"]) + "\n"


def main() -> int:
    from benchmarks.harness.results import collect_metadata

    metadata = collect_metadata(sys.argv)
    metadata["command"] = "python -m benchmarks.sharpness_sweep"
    jobs = list(product(DATASETS, METRICS, SHARPNESS, SEEDS))
    with ProcessPoolExecutor(max_workers=2) as pool:
        records = list(pool.map(run_one, jobs))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sharpness.json").write_text(json.dumps({"metadata": metadata, "records": records}, indent=1) + "\n")
    (RESULTS / "sharpness.md").write_text(report({"metadata": metadata, "records": records}))
    print(markdown(records, metadata))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
