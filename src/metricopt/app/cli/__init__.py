"""The ``metricopt`` command: train for your metric, compare with cross-entropy.

``metricopt train`` trains a small MLP with a loss for the chosen metric and,
the same way (same MLP and initialisation, seed, split, epochs, model
selection by the metric on the validation split), a cross-entropy (``bce``)
baseline. It prints the exact test metrics of both side by side with the
difference, saves learning curves as an image and, with ``--output``, writes
every number to a JSON file. ``metricopt`` with no arguments runs
``metricopt train`` on the built-in ``breast_cancer`` dataset.

Three metric families, each with its own method (``--loss`` / ``--method``
defaults to it):

* Confusion-matrix metrics (``f1``, ``gmean``, ``mcc``, ...): ``anyloss``, the
  AnyLoss confusion loss (or ``--loss weighted_bce`` / ``focal``).
* Rank metrics (``ap``, ``auroc``, ``ndcg@K``, ``recall@K``): ``rambo``, the
  RaMBO rank losses (blackbox-differentiated exact ranks), trained and scored
  by :mod:`metricopt.app.recipes.ranking`; ``--interpolation``, ``--margin``,
  ``--memory-size`` and ``--embedding-dim`` tune them. ``ap`` / ``auroc`` /
  ``ndcg@K`` rank the classifier's scores (multi-class: macro one-vs-rest;
  ``ndcg@K`` binary only); ``recall@K`` trains an embedding for retrieval,
  against a cross-entropy classifier whose last hidden layer (before its
  ReLU) is the embedding.
  ``--dataset letter``, ``letter_shadow`` and ``fashion_mnist`` are retrieval
  benchmarks whose test classes are never seen in training (``recall@K``
  only).
* Black-box metrics (any metric, never differentiated): ``metricopt``
  (``--method blackbox``), run by :mod:`metricopt.app.recipes.blackbox`. It
  pre-trains the MLP with cross-entropy, freezes it, meta-learns a value
  function of a small adapter vector phi on fine-tuning tasks drawn from the
  training split, then fine-tunes phi on the whole training split loss-only
  (the baseline) and guided by the value function (MetricOpt), observing the
  metric only ``--evaluations`` times per run on the validation split. It
  reports the metric on the test split for the pre-trained model (phi = 0),
  loss-only fine-tuning and MetricOpt. ``--metric`` is a built-in (``mcr``,
  ``aucpr``, ``cost``, the confusion-matrix names, ``ap``, ``auroc``) or
  ``MODULE:FUNCTION``, an importable ``f(y_true, y_score) -> float`` or
  ``f(model) -> float`` whose direction ``--higher-is-better`` /
  ``--lower-is-better`` must be given. ``MODULE:FUNCTION``, ``mcr``, ``aucpr``
  and ``cost`` imply ``--method blackbox``; its options (``--adapter``,
  ``--phi-size``, ``--meta-tasks``, ``--finetune-steps``, ``--evaluations``,
  ``--value-weight``, ``--optimizer``, ``--finetune-lr``, ``--checkpoint``)
  are errors with any other method.

Usage examples::

    metricopt                                    # AnyLoss(F1) vs BCE on breast_cancer
    metricopt train --dataset yeast4 --metric gmean --epochs 100
    metricopt train --csv data.csv --target label --pos-label yes --metric mcc --output run.json
    metricopt train --csv train.csv --test-csv test.csv --target label --no-plot
    metricopt train --metric mcc --hidden 128,64 --amplification auto --seed 3
    metricopt train --csv data.csv --target label --drop id,name   # leave identifier columns out
    metricopt train --dataset yeast4 --metric ap              # RaMBO AP loss vs BCE
    metricopt train --dataset breast_cancer --metric ndcg@10 --margin 0.2
    metricopt train --dataset letter --metric recall@1        # retrieval, unseen classes
    metricopt train --dataset fashion_mnist --metric recall@4 --embedding-dim 64
    metricopt train --metric mcr --meta-tasks 20     # MetricOpt for the misclassification rate
    metricopt train --method blackbox --metric f1 --adapter film --optimizer adam
    metricopt train --csv data.csv --target label --metric mymetrics:score --higher-is-better
    metricopt train --metric mcr --checkpoint meta.pt --output run.json   # resumable meta-training
    metricopt train --dataset yeast4 --metric f1 --nproc 2    # 2 processes (DDP), same results as 1
    metricopt datasets                           # built-in datasets, installed or not
    python -m metricopt --version

The positive class of a binary target (what F1, precision, recall, AP, ...
measure) follows one rule, the one of :class:`metricopt.app.MetricClassifier` and
scikit-learn (:mod:`metricopt.app.data.labels`): ``--pos-label LABEL`` names it;
without it a CSV target with the label 1 (0/1, -1/1, 1/2) or True (True/False)
makes that positive, and any other two labels (yes/no, bad/good) are an error
naming them. A built-in dataset defines its positive class (the minority,
e.g. ``malignant``; ``--pos-label`` may name the other). The results table and
the JSON (``positive_class``) show it.

Metric names are case-insensitive (``F1`` is ``f1``, ``NDCG@10`` is ``ndcg@10``)
and recorded in lower case; ``MODULE:FUNCTION`` is taken as written. Options
of another family are errors naming the option and the metric: the rank
options with a confusion-matrix or black-box metric, ``--amplification`` (AnyLoss)
with a rank or black-box metric, MetricOpt's options with any other method.

CSV columns: ``--drop COL[,COL...]`` leaves columns out of the features (a
name that is not a column is an error listing the columns). A non-numeric
column is one-hot encoded; one that looks like an identifier (a distinct value
in every row, or at least 20 distinct values and at least half as many as
rows: on average two rows or fewer per value, too few to learn a category
from) gets a one-line warning suggesting ``--drop``.

Splits: a built-in dataset or a single CSV is split 60/20/20 (stratified) into
train/validation/test; with ``--test-csv`` that file is the test set and 20 %
of the training CSV is held out for validation. Features are standardised with
training statistics. Decisions are ``p > 0.5`` (binary) or argmax. The
retrieval benchmarks keep their class-disjoint train/test parts and hold out
20 % of the training rows (stratified) for validation. MetricOpt observes the
metric on the validation split only; the test split is scored once per model.

``--nproc N`` (confusion-matrix and rank metrics) trains every method in ``N``
processes joined by ``torch.distributed`` (:func:`metricopt.app.launch.launch`:
gloo on CPU, NCCL with a GPU per process): each process trains on its share
of every batch with DDP and the losses gather the global batch, so the
reported metrics are those of one process up to float rounding.

Errors in the input (a missing file or column, a one-class target, an
ambiguous positive class, an unknown or uninstalled dataset, out-of-range
numbers, a ``MODULE:FUNCTION`` that cannot be imported or has the wrong
signature, a missing or contradictory metric direction, options of another
method or metric family, an ``--output`` or ``--plot`` path that cannot be
written or whose folder does not exist, a ``--drop`` column that is not in
the CSV; all checked before training) print one line ``metricopt: error:
<message>`` on stderr and exit with status 2. The library's messages name its
Python arguments (`` `learning_rate` ``); the command line names the options
instead (``--lr``, :data:`metricopt.app.cli.wording.FLAGS`). Warnings print as
one line ``metricopt: warning: <message>``. Any other error prints one line ``metricopt: error:
<type>: <message>`` and exits with status 1 (``METRICOPT_TRACEBACK=1`` shows
the traceback instead). Ctrl-C (SIGINT) stops every training process, prints
``metricopt: error: interrupted`` and exits with status 130, also while torch
is still loading (this package and the parser's commands import the standard
library only: ``metricopt --help`` and ``--version`` answer without torch;
``metricopt train --help`` loads it for the options' choices and defaults).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from metricopt.app.cli.parser import build_parser
from metricopt.app.cli.wording import PROG, flag_wording, one_line_warnings

__all__ = ["TrainConfig", "build_parser", "config_from_args", "format_table", "main", "run_train"]

#: Exceptions that mean "bad input": one line on stderr, exit status 2.
USER_ERRORS = (ValueError, TypeError, ImportError, OSError)

USAGE_ERROR = 2


#: Any other exception: one line on stderr, exit status 1 (this variable set: the traceback instead).
TRACEBACK_VARIABLE = "METRICOPT_TRACEBACK"

INTERRUPTED = 130

#: Options answered from the commands alone, without loading torch (the parser's ``commands_only``).
_WITHOUT_TORCH = ("-h", "--help", "--version")

#: Names of :mod:`metricopt.app.cli.train` this package offers, imported on first use (they load torch).
_TRAIN_NAMES = ("TrainConfig", "config_from_args", "format_table", "run_train")


def __getattr__(name: str) -> Any:
    if name in _TRAIN_NAMES:
        import metricopt.app.cli.train

        return getattr(metricopt.app.cli.train, name)
    raise AttributeError(f"module 'metricopt.app.cli' has no attribute {name!r}")


def _cmd_datasets(args: argparse.Namespace) -> int:
    from metricopt.app.data import available_datasets

    rows = [("name", "task", "n", "installed", "how to install / description")]
    for info in available_datasets():
        note = info["description"] if info["installed"] else f"missing: {info['install']}"
        rows.append((info["name"], info["task"], str(info["n"] or "?"), "yes" if info["installed"] else "no", note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                         row[3].ljust(widths[3]), row[4]]))
    return 0


def _cmd_bench(argv: list[str]) -> int:
    """The benchmarks left the installed package; say where they are."""
    _print_error("the benchmarks are not part of the installed package: from a clone of the repository, run "
                 "`python -m benchmarks " + (" ".join(argv) or "--help") + "` at its root")
    return USAGE_ERROR


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(flag_wording(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``metricopt`` command line; return the exit status.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` if None).
            No arguments, or options without a command, mean ``train``.

    Returns:
        0 on success, 2 on bad arguments or input (one ``metricopt: error:``
        line on stderr), 1 on any other error (one line too, unless the
        environment variable ``METRICOPT_TRACEBACK`` is set), 130 when
        interrupted (SIGINT, Ctrl-C). Warnings print as one line
        ``metricopt: warning: <message>`` while it runs (the previous
        :func:`warnings.showwarning` and :func:`warnings.formatwarning` are
        restored on return). A process that torchrun started (``argv`` None,
        its environment set) ends here with the status instead of returning
        (:func:`metricopt.app.launch.end_process`).
    """
    own_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in _WITHOUT_TORCH):
        argv.insert(0, "train")
    with one_line_warnings():
        status = _main(argv)
    if own_command_line and "WORLD_SIZE" in os.environ:
        from metricopt.app.launch import end_process, torchrun_world_size

        try:
            torchrun = torchrun_world_size() > 1
        except ValueError:  # a malformed variable: the command has said so already
            torchrun = False
        if torchrun:
            end_process(status)  # skip the interpreter's teardown of torch's distributed objects (see there)
    return status


def _main(argv: list[str]) -> int:
    try:
        if argv[0] == "bench":
            return _cmd_bench(argv[1:])
        parser = build_parser(commands_only=argv[0] in _WITHOUT_TORCH)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or an argparse usage error
            return exc.code if isinstance(exc.code, int) else USAGE_ERROR
        if args.command == "train":
            from metricopt.app.cli.train import command

            return command(args)
        return _cmd_datasets(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # launch() has stopped every training process by now
        _print_error("interrupted")
        return INTERRUPTED
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _print_error(str(exc) or type(exc).__name__)
        return USAGE_ERROR
    except Exception as exc:  # noqa: BLE001 - a library error: one line, not a traceback
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _print_error(f"{type(exc).__name__}: {exc} (set {TRACEBACK_VARIABLE}=1 for the traceback)")
        return 1
