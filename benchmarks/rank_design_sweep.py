"""Design sweep of the RaMBO rank losses: the measurements behind their defaults.

Two parts, each a small grid with the quality suite's protocol (MLP, Adam 1e-3,
epoch chosen on validation), written to ``benchmarks/results/rank_design.{json,md}``:

* ``ap``: ``APLoss`` on 6 imbalanced binary datasets (40 epochs, batch 256):
  interpolation x margin, batch memory, and the gradient through the rank among
  relevant items (``paper``: both rankings differentiated, as the paper and the
  official code; ``ours``: rk+ held constant, metricopt's choice), against BCE.
  Score: the best validation average precision over the epochs (test data is
  never used to choose a default).
* ``recall``: ``RecallLoss`` (loglog) on UCI Letter's training letters only,
  split by class again: A..I train, J..M validation (the test letters N..Z are
  never touched); 15 epochs, batch 256, 64-d MLP embedder, last epoch: margin,
  and the same gradient choice. Score: R@1 and MAP@R on the J..M rows. Two
  datasets: ``letter`` and ``letter_shadow`` (the same rows with 48 shadow
  columns, :func:`metricopt.app.data.letter_shadow_retrieval`), where the raw
  features retrieve poorly and the loss has to learn.

    python -m benchmarks.rank_design_sweep            # both parts, about 18 minutes on 2 cores (recall: 4)
    python -m benchmarks.rank_design_sweep --part ap --seeds 2

Interpolation and margin are in units of each ranking's spread (the standard
deviation of its scores; metricopt.losses.ranker). Rule fixed before the run:
the AP losses' default is the (interpolation, margin) with the highest mean
validation AP over the six datasets; the recall loss's, the variant with the
highest mean MAP@R (R@1 breaks a tie at 4 decimals), averaged over the recall
datasets since the run that added ``letter_shadow`` (issue 16), with margins
0.01 and 0.02 in the grid. The same rule, fixed
before its run, decides the recall loss's ``ap_weight`` (an AP term added per
query, for MAP@R; issue 16): 0, 0.25, 1 or 4. Where the best lies at
an edge of the interpolation grid, the grid grows by a factor of 4 past it
and the sweep runs again. History: the first run's best were lambda 0.25 for
AP and 32 for recall, both at the edges, and the grids grew. With
``letter_shadow`` added and margins 0.01 and 0.02 in the grid, the best was
lambda 8 at margin 0.01 (an edge of 0.5 / 2 / 8 there): 32 was added, then
128, each the best in turn; then 512 and 2048 together (one step of 16, not
4), 2048 the best; then 8192 at margin 0.01 and the margins 0 / 0.005 / 0.02 /
0.05 at 2048, where 0.005 was the best; then 512 and 8192 at margin 0.005,
below it. The best, interpolation 2048 and margin 0.005, is inside the grid
in both directions.

The ``paper`` gradient form perturbs both rankings in the unit of the whole
ranking; the committed run (before the losses moved to
``metricopt.losses.relevant_ranks``) perturbed the ranking among relevant
items in the relevant items' own spread for the AP variant.

The recall loss's unit: measured in each query's spread (as the AP losses'),
its best validation MAP@R was 0.481 (lambda 128), below the 0.497 of the
previous release's rule measured here side by side. Cosine similarities have a
scale of their own, so its unit became 1 (cosine units) and the recall grid
was run again in those units, with the spread-relative best as a variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

AP_DATASETS = ("page_blocks0", "yeast4", "hmda", "caravan", "lending_club", "hiva")
#: The recall part's datasets: Letter's training letters, without and with the shadow columns.
RECALL_DATASETS = ("letter", "letter_shadow")
#: (label, options of APLoss or None for BCE, gradient form)
AP_VARIANTS = (
    ("BCE", None, "ours"),
    *((f"lambda={lam:g} margin={m:g}", {"interpolation": lam, "margin": m}, "ours")
      for lam in (0.0625, 0.25, 1.0, 4.0, 16.0) for m in (0.0, 0.05, 0.2)),
    ("lambda=0.25 margin=0.05 memory=4", {"interpolation": 0.25, "margin": 0.05, "memory_size": 4}, "ours"),
    ("lambda=0.25 margin=0.05, paper gradient (rk and rk+)", {"interpolation": 0.25, "margin": 0.05}, "paper"),
)
RECALL_VARIANTS = (
    *((f"lambda={lam:g} margin=0", {"interpolation": lam, "margin": 0.0}, "ours") for lam in (0.5, 2.0, 8.0, 32.0)),
    *((f"lambda=2 margin={m:g}", {"interpolation": 2.0, "margin": m}, "ours") for m in (0.01, 0.02, 0.05)),
    *((f"lambda={lam:g} margin=0.01", {"interpolation": lam, "margin": 0.01}, "ours")
      for lam in (0.5, 8.0, 32.0, 128.0, 512.0, 2048.0, 8192.0)),
    *((f"lambda=2048 margin={m:g}", {"interpolation": 2048.0, "margin": m}, "ours") for m in (0.0, 0.005, 0.02, 0.05)),
    *((f"lambda={lam:g} margin=0.005", {"interpolation": lam, "margin": 0.005}, "ours") for lam in (512.0, 8192.0)),
    ("lambda=128 margin=0, unit: each query's spread", {"interpolation": 128.0, "margin": 0.0, "unit": None}, "ours"),
    ("lambda=2 margin=0, paper gradient (rk and rk+)", {"interpolation": 2.0, "margin": 0.0}, "paper"),
    *((f"lambda=2 margin=0 ap_weight={w:g}", {"interpolation": 2.0, "margin": 0.0, "ap_weight": w}, "ours")
      for w in (0.25, 1.0, 4.0)),
)
RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def _gradient(form: str) -> Iterator[None]:
    """``"paper"``: differentiate the rank among relevant items too, as the paper does, while inside."""
    import torch

    from metricopt.losses import ranking
    from metricopt.losses.ranker import interpolated_rank

    def both(scores, columns, valid, *, interpolation, margin, unit, synchronise=True):
        # Both rankings of every item, interpolated (ranking.relevant_ranks gives the first one's gradient only).
        relevant = torch.zeros(scores.shape, dtype=torch.long).scatter_add(-1, columns, valid.long()) > 0
        exclude = torch.isneginf(scores)  # self-pairs (the losses give them -inf)
        shifted = scores.to(torch.float64) + torch.where(relevant, -0.5 * margin, 0.5 * margin) * unit
        rank_all = interpolated_rank(shifted.masked_fill(exclude, -torch.inf), interpolation=interpolation,
                                     spread=unit)
        rank_relevant = interpolated_rank(shifted.masked_fill(exclude | ~relevant, -torch.inf),
                                          interpolation=interpolation, spread=unit)
        return (rank_all - rank_relevant).gather(-1, columns), rank_relevant.gather(-1, columns)

    original = ranking.relevant_ranks
    if form == "paper":
        ranking.relevant_ranks = both
    try:
        yield
    finally:
        ranking.relevant_ranks = original


def run_ap(job: tuple[str, int, int]) -> dict:
    import torch
    from sklearn.metrics import average_precision_score

    from metricopt.app.data import load_dataset, train_val_test_split
    from metricopt.app.recipes.classification import fit, make_mlp
    from metricopt.losses import APLoss, cross_entropy_loss
    from metricopt.predict import predict_proba

    torch.set_num_threads(1)
    dataset, index, seed = job
    label, options, gradient = AP_VARIANTS[index]
    data = load_dataset(dataset)
    split = train_val_test_split(data.X, data.y, random_state=seed)
    model = make_mlp(split.X_train.shape[1], 1, (64, 64), seed=seed)
    loss = cross_entropy_loss if options is None else APLoss(**options)
    with _gradient(gradient):
        result = fit(model, loss, split.X_train, split.y_train, epochs=40, batch_size=256, learning_rate=1e-3,
                     seed=seed,
                     evaluate=lambda m, e: average_precision_score(split.y_val, predict_proba(m, split.X_val)))
    return {"part": "ap", "variant": label, "dataset": dataset, "seed": seed, "ap": float(result.best_score)}


def run_recall(job: tuple[str, int, int]) -> dict:
    import torch

    from metricopt.app.data import load_retrieval
    from metricopt.app.recipes.classification import fit, make_mlp
    from metricopt.losses import RecallLoss
    from metricopt.metrics import retrieval_report

    torch.set_num_threads(1)
    dataset, index, seed = job
    label, options, gradient = RECALL_VARIANTS[index]
    split = load_retrieval(dataset)
    train = split.y_train <= 8  # letters A..I; J..M (9..12) validate; the test letters N..Z stay unused
    model = make_mlp(split.X_train.shape[1], 64, (128, 128), seed=seed)
    loss = RecallLoss(**options) if "unit" not in options else _recall_with_unit(**options)
    with _gradient(gradient):
        fit(model, loss, split.X_train[train], split.y_train[train], epochs=15, batch_size=256,
            learning_rate=1e-3, seed=seed)
    with torch.no_grad():
        embeddings = model(torch.as_tensor(split.X_train[~train]))
    report = retrieval_report(embeddings, torch.as_tensor(split.y_train[~train]))
    return {"part": "recall", "variant": label, "dataset": dataset, "seed": seed,
            "R@1": report["R@1"], "MAP@R": report["MAP@R"]}


def _recall_with_unit(*, unit: float | None, **options: float):
    """The recall loss with another unit than RecallLoss's cosine unit (``None``: each query's spread)."""
    from metricopt.losses import recall_loss_scores, retrieval_scores

    def loss(embeddings, labels):
        scores, relevance, exclude = retrieval_scores(embeddings, labels)
        return recall_loss_scores(scores, relevance, exclude=exclude, unit=unit, **options)

    return loss


def markdown(records: list[dict], metadata: dict) -> str:
    lines = ["# RaMBO rank-loss design sweep", "", f"- command: `{metadata['command']}`",
             f"- git commit: `{metadata.get('git_commit')}`; date {metadata.get('date')}"]
    if "kept_from_earlier_run" in metadata:
        kept = metadata["kept_from_earlier_run"]
        lines.append(f"- the {kept['part']} part is kept from the run of `{kept['metadata'].get('git_commit')}` "
                     f"({kept['metadata'].get('date')})")
    lines.append("")
    ap = [r for r in records if r["part"] == "ap"]
    if ap:
        lines += ["## APLoss: validation AP (best epoch), mean over seeds (last column: mean over datasets)", "",
                  "| variant | " + " | ".join(AP_DATASETS) + " | mean |", "| --- |" + " --- |" * (len(AP_DATASETS) + 1)]
        for label, _, _ in AP_VARIANTS:
            cells = [np.mean([r["ap"] for r in ap if r["variant"] == label and r["dataset"] == d]) for d in AP_DATASETS]
            lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | **{np.mean(cells):.3f}** |")
        lines.append("")
    recall = [r for r in records if r["part"] == "recall"]
    if recall:
        datasets = [d for d in RECALL_DATASETS if any(r["dataset"] == d for r in recall)]
        lines += ["## RecallLoss (loglog) on UCI Letter A..I, validated on J..M: mean ± std over seeds", "",
                  "`letter_shadow`: the same letters with 48 shadow columns (`metricopt.app.data."
                  "letter_shadow_retrieval`). Last column: MAP@R averaged over the datasets (the rule's score).", "",
                  "| variant | " + " | ".join(f"{d} R@1 | {d} MAP@R" for d in datasets) + " | mean MAP@R |",
                  "| --- |" + " --- |" * (2 * len(datasets) + 1)]
        by = defaultdict(list)
        for r in recall:
            by[r["variant"], r["dataset"]].append(r)
        for label, _, _ in RECALL_VARIANTS:
            if not all(by[label, d] for d in datasets):
                continue
            cells = [f"{np.mean([r[k] for r in by[label, d]]):.4f} ± {np.std([r[k] for r in by[label, d]]):.4f}"
                     for d in datasets for k in ("R@1", "MAP@R")]
            score = np.mean([np.mean([r["MAP@R"] for r in by[label, d]]) for d in datasets])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | **{score:.4f}** |")
    return "\n".join(lines) + "\n"


def report(payload: dict) -> str:
    """The Markdown file of a saved result (``python -m benchmarks render`` calls it)."""
    return markdown(payload["records"], payload["metadata"])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.harness.results import collect_metadata

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("ap", "recall", "both"), default="both")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: ap 2, recall 3)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    metadata = collect_metadata(sys.argv)
    metadata["command"] = ("python -m benchmarks.rank_design_sweep "
                           + " ".join(argv if argv is not None else sys.argv[1:]))
    records: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        if args.part in ("ap", "both"):
            seeds = range(args.seeds or 2)
            jobs = [(d, i, s) for d in AP_DATASETS for i in range(len(AP_VARIANTS)) for s in seeds]
            records += list(pool.map(run_ap, jobs))
        if args.part in ("recall", "both"):
            seeds = range(args.seeds or 3)
            records += list(pool.map(run_recall, [(d, i, s) for d in RECALL_DATASETS
                                                  for i in range(len(RECALL_VARIANTS)) for s in seeds]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "rank_design.json"
    if args.part != "both" and target.exists():  # keep the other part's records (and say so)
        earlier = json.loads(target.read_text())
        kept = [r for r in earlier["records"] if r["part"] != args.part]
        records = kept + records
        metadata["kept_from_earlier_run"] = {"part": "recall" if args.part == "ap" else "ap",
                                             "metadata": earlier["metadata"]}
    target.write_text(json.dumps({"metadata": metadata, "records": records}, indent=1) + "\n")
    text = report({"metadata": metadata, "records": records})
    (RESULTS / "rank_design.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
