"""Optional rank-loss peers (average precision, retrieval), imported lazily.

Every peer is an ``nn.Module`` whose ``forward`` returns a scalar loss to
minimise. Two families share one interface each:

* :data:`AP_PEERS` (:func:`make_ap_peer`): one ranking of ``N`` scores,
  ``forward(scores (N,) float, target (N,) in {0, 1})``.
* :data:`RETRIEVAL_PEERS` (:func:`make_retrieval_peer`): every batch item is a
  query against all others, ``forward(embeddings (N, D) float, labels (N,) int)``;
  relevant = same label, self-pairs excluded.

Hyperparameters are keyword options of the factories; the defaults are in
:data:`AP_PEER_DEFAULTS` and :data:`RETRIEVAL_PEER_DEFAULTS`, and every module
keeps the values it uses in ``.options`` (for the result metadata).

Peers and how they are mapped onto the interface:

* ``torchsort_ap`` (torchsort 0.1.10, Blondel et al. 2020 soft ranks): AP =
  mean over relevant items of (soft rank among relevant) / (soft rank among
  all), descending ranks = ``torchsort.soft_rank(-scores)``. The rank among
  relevant items comes from the same call with every irrelevant score replaced
  by a constant placed more than ``N * regularization_strength`` below the
  lowest relevant score, so the two blocks never pool (equal, up to rounding, to
  soft-ranking the relevant scores alone). ``regularization_strength`` is in
  score units: scores closer than about that are partly tied. Default 0.1 for
  both forms (logits; cosine similarities in [-1, 1]); 0.01 on cosines gave
  vanishing gradients on small batches (mean AP stalled after a few steps).
  Loss = 1 - AP; the retrieval form is the mean of 1 - AP over queries with at
  least one relevant item.
* ``libauc_ap``: ``libauc.losses.APLoss(data_len=n, margin=1.0, gamma=0.9)``
  (SOAP, Qi et al. 2021; LibAUC's defaults), on ``sigmoid(scores)`` as LibAUC's
  examples do, with ``index = arange(N)``: item ``i`` of every call is dataset
  item ``i`` for LibAUC's per-sample moving averages, so it is meant for a fixed
  set of ``N <= n`` items ranked again at every step. Its value is a surrogate
  (about 0 in practice), not 1 - AP.
* ``bbb_map``: blackbox-backprop's ``MapLoss`` (RaMBO, Rolinek et al. 2020) on
  ``(N, 1)`` scores and float targets, i.e. one class column. For one column its
  cross-batch and inter-class terms are the same AP loss and ``forward`` would
  compute it twice and keep a batch memory, so the wrapper calls the loss's own
  ``raw_map_computation`` once (no memory). Raw scores, no sigmoid. Defaults
  ``lambda_val=0.5`` and ``margin=0.15`` (the paper's detection values; the
  official code ranks in normalised units rank / N, so lambda 0.5 there equals
  0.5 N in integer ranks). MapLoss draws its margin as ``margin * |randn|``
  from the global torch RNG on every call.
* ``bbb_recall``: blackbox-backprop's ``RecallLoss`` on the ``(N, N - 1)``
  cosine-similarity matrix of L2-normalised embeddings with the diagonal
  removed, and the float ``(N, N - 1)`` same-label matrix. Defaults
  ``lambda_val=0.5``, ``margin=0.15`` (constant shift in RecallLoss),
  ``weight="loglog"`` (``log(1 + log(1 + r))``, the paper's best on SOP/CUB;
  ``"log"`` is ``log(1 + r)``). RecallLoss de-normalises ranks by the number of
  rows (N) rather than the row length (N - 1). With lambda 0.5 its gradient is
  mostly exactly zero on small batches (the perturbation, lambda times a
  gradient of order 1 / (relevant items per row), rarely changes a rank);
  lambda 4 to 16 trained a 16-item toy problem well: sweep it.
* ``il_smoothap``: imbalanced-losses' ``SmoothAPLoss`` (Smooth-AP, Brown et
  al. 2020; imbalanced-losses 0.6.0) in binary mode (``num_classes=1``, no
  queue, no DDP gather), called once per query on its row of the
  ``(N, N - 1)`` cosine-similarity matrix with the same-label targets; mean
  over the queries with a relevant item. Default temperature 0.01 (the
  library's). The library is a classification loss on logits; this mapping
  is ours, with its public ``forward`` and nothing else.
* ``pml_*`` (pytorch-metric-learning 2.x, default distances: L2-normalised
  embeddings, Euclidean or cosine): ``ContrastiveLoss(pos_margin=0,
  neg_margin=1)``; ``TripletMarginLoss(margin=0.2)`` on triplets from
  ``TripletMarginMiner(margin=0.2, type_of_triplets="semihard")``;
  ``MultiSimilarityLoss(alpha=2, beta=50, base=0.5)`` with
  ``MultiSimilarityMiner(epsilon=0.1)``; ``FastAPLoss(num_bins=10)``;
  ``SmoothAPLoss(temperature=0.01)``.
  SmoothAPLoss (2.9) needs every class in the batch to have the same number of
  items, and its tensor reshapes are right only when the batch holds as many
  classes as items per class, in contiguous blocks (it views the batch as
  (items per class, classes)); anything else runs silently and gives a wrong
  value. The wrapper sorts the batch by label and raises ``ValueError`` unless
  the number of classes equals the number of items per class. Like the
  original Smooth-AP code, it counts the query itself as a relevant item.

Degenerate input: a ranking (or batch) without any relevant item gives a zero
loss with zero gradient (LibAUC asserts, MapLoss and RecallLoss give NaN there).

Dtypes (CPU): float32 and float64 work everywhere (LibAUC's float32 per-sample
state is promoted to the input's dtype). bfloat16 fails in torchsort
(``isotonic_l2``) and in the pml losses on Euclidean distances (``cdist``);
MapLoss, RecallLoss and SmoothAPLoss return float32 for half inputs.

Locating the peers: torchsort and pytorch-metric-learning are imported by name;
LibAUC through :func:`benchmarks.peers.classification.load_peer` (torchvision stub
included). blackbox-backprop is not on PyPI: its source tree is found at
``$METRICOPT_BLACKBOX_BACKPROP`` or, if that is unset,
``/work/peers/blackbox-backprop`` when it exists. Its package ``__init__``
imports solvers that need ``blossom_v`` and ``gurobipy``; the loader therefore
registers ``blackbox_backprop`` as a package from that folder without running
the ``__init__`` and imports only ``ranking``, ``mAP`` and ``recall``
(``sys.path`` is not changed). A ``COMMIT`` text file next to the tree (or its
``.git``) gives the version recorded by :func:`rank_peer_versions`.

Install: see ``pyproject.toml`` (``peers`` extra and the comment there).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.peers.classification import load_peer, peer_status

__all__ = [
    "AP_PEERS",
    "AP_PEER_DEFAULTS",
    "BLACKBOX_BACKPROP_ENV",
    "RETRIEVAL_PEERS",
    "RETRIEVAL_PEER_DEFAULTS",
    "make_ap_peer",
    "make_retrieval_peer",
    "rank_peer_status",
    "rank_peer_versions",
]

AP_PEERS: tuple[str, ...] = ("torchsort_ap", "libauc_ap", "bbb_map")
RETRIEVAL_PEERS: tuple[str, ...] = (
    "pml_contrastive",
    "pml_triplet",
    "pml_multisimilarity",
    "pml_fastap",
    "pml_smoothap",
    "il_smoothap",
    "torchsort_ap",
    "bbb_recall",
)

#: Default hyperparameters of each AP peer (override with keyword options).
AP_PEER_DEFAULTS: dict[str, dict[str, Any]] = {
    "torchsort_ap": {"regularization_strength": 0.1, "regularization": "l2"},
    "libauc_ap": {"margin": 1.0, "gamma": 0.9},
    "bbb_map": {"lambda_val": 0.5, "margin": 0.15},
}

#: Default hyperparameters of each retrieval peer (override with keyword options).
RETRIEVAL_PEER_DEFAULTS: dict[str, dict[str, Any]] = {
    "pml_contrastive": {"pos_margin": 0.0, "neg_margin": 1.0},
    "pml_triplet": {"margin": 0.2, "type_of_triplets": "semihard"},
    "pml_multisimilarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
    "pml_fastap": {"num_bins": 10},
    "pml_smoothap": {"temperature": 0.01},
    "il_smoothap": {"temperature": 0.01},
    "torchsort_ap": {"regularization_strength": 0.1, "regularization": "l2"},
    "bbb_recall": {"lambda_val": 0.5, "margin": 0.15, "weight": "loglog"},
}

#: Environment variable naming the blackbox-backprop source tree.
BLACKBOX_BACKPROP_ENV = "METRICOPT_BLACKBOX_BACKPROP"
_BLACKBOX_DEFAULT = Path("/work/peers/blackbox-backprop")

_BLACKBOX_HINT = (
    "not on PyPI: export github:martius-lab/blackbox-backprop to a folder "
    f"and point ${BLACKBOX_BACKPROP_ENV} at it"
)
_TORCHSORT_HINT = (
    "pip install --no-build-isolation --no-deps torchsort==0.1.10 "
    "(compiles a C++ extension; hide nvcc from PATH for CPU-only torch)"
)
_PML_HINT = "pip install --no-deps pytorch-metric-learning"

#: Which backend each peer needs.
_BACKEND: dict[str, str] = {
    "torchsort_ap": "torchsort",
    "libauc_ap": "libauc",
    "bbb_map": "blackbox-backprop",
    "bbb_recall": "blackbox-backprop",
    "il_smoothap": "imbalanced-losses",
    **{
        name: "pytorch-metric-learning"
        for name in RETRIEVAL_PEERS
        if name.startswith("pml_")
    },
}


# ---------------------------------------------------------------------------
# loaders


def _load_torchsort() -> types.ModuleType:
    try:
        return importlib.import_module("torchsort")
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{type(exc).__name__}: {exc} (install: {_TORCHSORT_HINT})"
        ) from exc


def _load_pml() -> types.ModuleType:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pytorch_metric_learning.losses")
            importlib.import_module("pytorch_metric_learning.miners")
        return importlib.import_module("pytorch_metric_learning")
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{type(exc).__name__}: {exc} (install: {_PML_HINT})"
        ) from exc


def _classification_peer(module: str) -> Callable[[], types.ModuleType]:
    """A loader of a peer that :mod:`benchmarks.peers.classification` also uses (same import, same hint)."""

    def load() -> types.ModuleType:
        loaded = load_peer(module)
        if loaded is None:
            raise ModuleNotFoundError(peer_status(module).removeprefix("not installed: "))
        return loaded

    return load


def _blackbox_root() -> Path:
    """The blackbox-backprop source tree (the folder holding ``blackbox_backprop/``)."""
    configured = os.environ.get(BLACKBOX_BACKPROP_ENV)
    if configured:
        root = Path(configured).expanduser()
        origin = f"${BLACKBOX_BACKPROP_ENV}={configured!r}"
    elif _BLACKBOX_DEFAULT.is_dir():
        root, origin = _BLACKBOX_DEFAULT, f"default {str(_BLACKBOX_DEFAULT)!r}"
    else:
        raise ModuleNotFoundError(
            f"${BLACKBOX_BACKPROP_ENV} is not set ({_BLACKBOX_HINT})"
        )
    missing = [
        f
        for f in ("ranking.py", "mAP.py", "recall.py")
        if not (root / "blackbox_backprop" / f).is_file()
    ]
    if missing:
        raise ModuleNotFoundError(
            f"{origin} has no blackbox_backprop/{missing[0]} ({_BLACKBOX_HINT})"
        )
    return root.resolve()


def _load_blackbox_backprop() -> types.ModuleType:
    """The package ``blackbox_backprop`` with its ``ranking``, ``mAP`` and ``recall`` modules."""
    package_dir = _blackbox_root() / "blackbox_backprop"
    package = sys.modules.get("blackbox_backprop")
    if package is None:
        # Register the package without executing its __init__ (which imports the
        # blossom_v / gurobipy solvers); submodules load from package_dir.
        spec = importlib.util.spec_from_file_location(
            "blackbox_backprop",
            package_dir / "__init__.py",
            submodule_search_locations=[str(package_dir)],
        )
        if spec is None:
            raise ModuleNotFoundError(f"cannot make a package spec for {package_dir}")
        package = importlib.util.module_from_spec(spec)
        sys.modules["blackbox_backprop"] = package
    try:
        for submodule in ("ranking", "mAP", "recall"):
            importlib.import_module(f"blackbox_backprop.{submodule}")
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{type(exc).__name__}: {exc} ({_BLACKBOX_HINT})"
        ) from exc
    return package


_LOADERS: dict[str, Callable[[], types.ModuleType]] = {
    "torchsort": _load_torchsort,
    "libauc": _classification_peer("libauc"),
    "blackbox-backprop": _load_blackbox_backprop,
    "pytorch-metric-learning": _load_pml,
    "imbalanced-losses": _classification_peer("imbalanced_losses"),
}


def _check_name(name: str, names: tuple[str, ...], argument: str = "name") -> None:
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"`{argument}` must be one of {list(names)}; got {name!r}")


def _load_backend(backend: str) -> types.ModuleType:
    """A backend module, or ``ModuleNotFoundError`` saying why it is unusable."""
    try:
        return _LOADERS[backend]()
    except ModuleNotFoundError:
        raise
    except (
        Exception
    ) as exc:  # any import failure means "not usable here", never a crash
        raise ModuleNotFoundError(f"{type(exc).__name__}: {exc}") from exc


def _backend(name: str) -> types.ModuleType:
    """The backend module of peer ``name`` (see :func:`_load_backend`)."""
    return _load_backend(_BACKEND[name])


def rank_peer_status(name: str) -> str:
    """``"ok"`` if peer ``name`` can be built here, else ``"not installed: <reason>"``."""
    _check_name(name, AP_PEERS + RETRIEVAL_PEERS)
    try:
        _backend(name)
    except ModuleNotFoundError as exc:
        return f"not installed: {exc}"
    return "ok"


def _blackbox_version() -> str:
    try:
        root = _blackbox_root()
    except ModuleNotFoundError as exc:
        return f"not installed: {exc}"
    commit_file = root / "COMMIT"
    if commit_file.is_file():
        return f"commit {commit_file.read_text().strip()} ({root})"
    git = root / ".git"
    head = git / "HEAD"
    if head.is_file():
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_name = ref[5:]
            ref_file = git / ref_name
            if ref_file.is_file():
                return f"commit {ref_file.read_text().strip()} ({root})"
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref_name):
                        return f"commit {line.split()[0]} ({root})"
        else:
            return f"commit {ref} ({root})"
    return f"unknown commit ({root})"


def _distribution_version(distribution: str, backend: str) -> str:
    try:
        _load_backend(backend)
    except ModuleNotFoundError as exc:
        return f"not installed: {exc}"
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def rank_peer_versions() -> dict[str, str]:
    """Version (or ``"not installed: ..."``) of every rank-peer backend, for result metadata."""
    return {
        "torchsort": _distribution_version("torchsort", "torchsort"),
        "pytorch-metric-learning": _distribution_version(
            "pytorch-metric-learning", "pytorch-metric-learning"
        ),
        "libauc": _distribution_version("libauc", "libauc"),
        "imbalanced-losses": _distribution_version("imbalanced-losses", "imbalanced-losses"),
        "blackbox-backprop": _blackbox_version(),
    }


def _options(
    name: str, defaults: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(
            f"peer {name!r} has no option(s) {unknown}; its options are {sorted(defaults)}"
        )
    return {**defaults, **options}


# ---------------------------------------------------------------------------
# input checks


def _check_ranking(scores: Tensor, target: Tensor) -> Tensor:
    """Validate one ranking; returns the boolean relevance mask."""
    if (
        not isinstance(scores, Tensor)
        or scores.ndim != 1
        or not scores.is_floating_point()
    ):
        raise ValueError(
            f"`scores` must be a 1-D float tensor; got {_describe(scores)}"
        )
    if not isinstance(target, Tensor) or target.shape != scores.shape:
        raise ValueError(
            f"`target` must be a tensor of shape {tuple(scores.shape)}; got {_describe(target)}"
        )
    if scores.numel() < 2:
        raise ValueError(f"`scores` must hold at least 2 items; got {scores.numel()}")
    if not bool(((target == 0) | (target == 1)).all()):
        raise ValueError("`target` must hold only 0 and 1")
    return target.to(device=scores.device) == 1


def _check_batch(embeddings: Tensor, labels: Tensor) -> None:
    if (
        not isinstance(embeddings, Tensor)
        or embeddings.ndim != 2
        or not embeddings.is_floating_point()
    ):
        raise ValueError(
            f"`embeddings` must be a 2-D float tensor (N, D); got {_describe(embeddings)}"
        )
    if (
        not isinstance(labels, Tensor)
        or labels.shape != embeddings.shape[:1]
        or labels.is_floating_point()
        or labels.is_complex()
    ):
        raise ValueError(
            f"`labels` must be an integer tensor of shape ({embeddings.shape[0]},); got {_describe(labels)}"
        )
    if embeddings.shape[0] < 2:
        raise ValueError(
            f"`embeddings` must hold at least 2 items; got {embeddings.shape[0]}"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def _zero_loss(reference: Tensor) -> Tensor:
    """A zero loss connected to ``reference`` (zero gradient), for inputs without relevant items."""
    return reference.sum() * 0.0


def _similarities_without_self(
    embeddings: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Cosine similarities ``(N, N - 1)`` (diagonal removed) and the same-label mask."""
    n = embeddings.shape[0]
    normed = F.normalize(embeddings, dim=1)
    similarities = normed @ normed.T
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    labels = labels.to(embeddings.device)
    relevant = labels[:, None] == labels[None, :]
    return similarities[off_diagonal].view(n, n - 1), relevant[off_diagonal].view(
        n, n - 1
    )


# ---------------------------------------------------------------------------
# torchsort


def _soft_average_precision(
    torchsort: types.ModuleType,
    scores: Tensor,
    relevant: Tensor,
    regularization_strength: float,
    regularization: str,
) -> Tensor:
    """Soft AP of each row of ``scores`` (B, n) with boolean ``relevant`` (B, n); 0 for rows without any."""
    n = scores.shape[1]
    descending = -scores  # soft_rank ranks ascending: rank 1 = highest score
    rank_all = torchsort.soft_rank(descending, regularization, regularization_strength)
    with torch.no_grad():
        low, high = descending.min(), descending.max()
        # Above every relevant value by more than n * strength: the blocks never pool.
        filler = high + (high - low) + n * regularization_strength + 1.0
    rank_relevant = torchsort.soft_rank(
        torch.where(relevant, descending, filler),
        regularization,
        regularization_strength,
    )
    precision = torch.where(
        relevant, rank_relevant / rank_all, torch.zeros_like(rank_all)
    )
    return precision.sum(dim=1) / relevant.sum(dim=1).clamp_min(1)


class _PeerModule(nn.Module):
    """A peer loss module that keeps the options it was built with (shown in its repr)."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__()
        self.options = options

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class TorchsortAPLoss(_PeerModule):
    """1 - soft AP of one ranking (torchsort soft ranks)."""

    def __init__(self, torchsort: types.ModuleType, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._torchsort = torchsort

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        relevant = _check_ranking(scores, target)
        if not bool(relevant.any()):
            return _zero_loss(scores)
        ap = _soft_average_precision(
            self._torchsort, scores[None, :], relevant[None, :], **self.options
        )
        return 1.0 - ap[0]


class TorchsortRetrievalAPLoss(_PeerModule):
    """Mean over queries (with a relevant item) of 1 - soft AP over cosine similarities, self excluded."""

    def __init__(self, torchsort: types.ModuleType, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._torchsort = torchsort

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_batch(embeddings, labels)
        similarities, relevant = _similarities_without_self(embeddings, labels)
        has_relevant = relevant.any(dim=1)
        if not bool(has_relevant.any()):
            return _zero_loss(embeddings)
        ap = _soft_average_precision(
            self._torchsort, similarities, relevant, **self.options
        )
        return (1.0 - ap[has_relevant]).mean()


# ---------------------------------------------------------------------------
# LibAUC


class LibAUCAPLoss(_PeerModule):
    """LibAUC's ``APLoss`` (SOAP) on ``sigmoid(scores)`` with ``index = arange(N)``."""

    def __init__(
        self, libauc_losses: types.ModuleType, n: int, options: dict[str, Any]
    ) -> None:
        super().__init__(options)
        self.n = n
        self.loss = libauc_losses.APLoss(
            data_len=n, device=torch.device("cpu"), **options
        )

    def extra_repr(self) -> str:
        return f"n={self.n}, " + ", ".join(
            f"{k}={v!r}" for k, v in self.options.items()
        )

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        relevant = _check_ranking(scores, target)
        if scores.numel() > self.n:
            raise ValueError(
                f"`scores` holds {scores.numel()} items but this loss was made for n={self.n}"
            )
        if not bool(relevant.any()):
            return _zero_loss(scores)  # LibAUC asserts on a batch without positives
        device = scores.device
        # LibAUC keeps float32 per-sample state on the device it was made for.
        dtype = torch.promote_types(self.loss.u_all.dtype, scores.dtype)
        if self.loss.u_all.device != device or self.loss.u_all.dtype != dtype:
            self.loss.u_all = self.loss.u_all.to(device, dtype)
            self.loss.u_pos = self.loss.u_pos.to(device, dtype)
        index = torch.arange(scores.numel(), device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.loss(
                torch.sigmoid(scores).view(-1, 1), relevant.view(-1, 1).long(), index
            )


# ---------------------------------------------------------------------------
# blackbox-backprop


class BlackboxMapLoss(_PeerModule):
    """blackbox-backprop's ``MapLoss`` AP term on one ``(N, 1)`` class column, no batch memory."""

    def __init__(self, package: types.ModuleType, options: dict[str, Any]) -> None:
        super().__init__(options)
        # interclass_coef does not matter for one column (both terms are the same AP).
        self.loss = package.mAP.MapLoss(
            lambda_val=options["lambda_val"],
            margin=options["margin"],
            interclass_coef=0.0,
            batch_memory=1,
        )

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        relevant = _check_ranking(scores, target)
        if not bool(relevant.any()):
            return _zero_loss(scores)  # MapLoss gives NaN (mean over no class)
        return self.loss.raw_map_computation(
            scores.view(-1, 1), relevant.view(-1, 1).to(scores.dtype)
        )


_WEIGHTS: dict[str, Callable[[Tensor], Tensor]] = {
    "log": torch.log1p,
    "loglog": lambda ranks: torch.log1p(torch.log1p(ranks)),
}


class BlackboxRecallLoss(_PeerModule):
    """blackbox-backprop's ``RecallLoss`` on the ``(N, N - 1)`` cosine-similarity matrix, self excluded."""

    def __init__(self, package: types.ModuleType, options: dict[str, Any]) -> None:
        super().__init__(options)
        _check_name(options["weight"], tuple(_WEIGHTS), "weight")
        with warnings.catch_warnings():
            # RecallLoss instantiates the autograd Function TrueRanker (deprecated).
            warnings.simplefilter("ignore", DeprecationWarning)
            self.loss = package.recall.RecallLoss(
                lambda_val=options["lambda_val"],
                margin=options["margin"],
                weight_fn=_WEIGHTS[options["weight"]],
            )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_batch(embeddings, labels)
        similarities, relevant = _similarities_without_self(embeddings, labels)
        if not bool(relevant.any()):
            # RecallLoss divides by the number of relevant pairs (NaN here).
            return _zero_loss(embeddings)
        return self.loss(similarities, relevant.to(similarities.dtype))


# ---------------------------------------------------------------------------
# imbalanced-losses


class ImbalancedLossesSmoothAP(_PeerModule):
    """imbalanced-losses' ``SmoothAPLoss`` in binary mode, once per query row, self excluded.

    Each row of the ``(N, N - 1)`` cosine-similarity matrix is one call of the
    library's public ``forward`` with ``(N - 1, 1)`` logits and the row's
    same-label targets (no queue, no DDP gather); the loss is the mean over the
    queries with at least one relevant item.
    """

    def __init__(self, package: types.ModuleType, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.loss = package.SmoothAPLoss(
            num_classes=1, queue_size=0, temperature=options["temperature"], gather_distributed=False
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_batch(embeddings, labels)
        similarities, relevant = _similarities_without_self(embeddings, labels)
        rows = relevant.any(1).nonzero()[:, 0].tolist()  # (one read from the device)
        if not rows:
            return _zero_loss(embeddings)
        losses = [self.loss(similarities[q].unsqueeze(1), relevant[q].long()) for q in rows]
        return torch.stack(losses).mean()


# ---------------------------------------------------------------------------
# pytorch-metric-learning


class PMLLoss(_PeerModule):
    """A pytorch-metric-learning loss, with its miner if it has one, as ``f(embeddings, labels)``."""

    def __init__(
        self, loss: nn.Module, miner: nn.Module | None, options: dict[str, Any]
    ) -> None:
        super().__init__(options)
        self.loss = loss
        self.miner = miner

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_batch(embeddings, labels)
        labels = labels.to(embeddings.device)
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


class PMLSmoothAPLoss(PMLLoss):
    """pytorch-metric-learning's ``SmoothAPLoss`` on a batch sorted by label.

    It needs as many classes as items per class (see the module docstring).
    """

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_batch(embeddings, labels)
        classes, compact, counts = torch.unique(
            labels, return_inverse=True, return_counts=True
        )
        if not bool((counts == counts[0]).all()) or int(counts[0]) != classes.numel():
            raise ValueError(
                "pml_smoothap needs a batch with as many classes as items per class "
                "(e.g. 8 classes x 8 items for N=64; pytorch-metric-learning's SmoothAPLoss "
                "computes a wrong value otherwise); got class sizes "
                f"{sorted(counts.tolist())} for {classes.numel()} classes"
            )
        order = torch.argsort(compact, stable=True).to(embeddings.device)
        return self.loss(embeddings[order], compact.to(embeddings.device)[order])


def _make_pml(name: str, pml: types.ModuleType, options: dict[str, Any]) -> nn.Module:
    losses, miners = pml.losses, pml.miners
    if name == "pml_contrastive":
        return PMLLoss(losses.ContrastiveLoss(**options), None, options)
    if name == "pml_triplet":
        loss = losses.TripletMarginLoss(margin=options["margin"])
        miner = miners.TripletMarginMiner(
            margin=options["margin"], type_of_triplets=options["type_of_triplets"]
        )
        return PMLLoss(loss, miner, options)
    if name == "pml_multisimilarity":
        loss = losses.MultiSimilarityLoss(
            alpha=options["alpha"], beta=options["beta"], base=options["base"]
        )
        return PMLLoss(
            loss, miners.MultiSimilarityMiner(epsilon=options["epsilon"]), options
        )
    if name == "pml_fastap":
        return PMLLoss(losses.FastAPLoss(**options), None, options)
    return PMLSmoothAPLoss(losses.SmoothAPLoss(**options), None, options)


# ---------------------------------------------------------------------------
# factories


def make_ap_peer(name: str, n: int, **options: Any) -> nn.Module:
    """AP peer ``name`` for rankings of ``n`` items: ``forward(scores (N,), target (N,))`` -> loss.

    ``options`` override :data:`AP_PEER_DEFAULTS` ``[name]``. Raises ``ValueError``
    for an unknown name or a bad ``n``, ``TypeError`` for an unknown option and
    ``ModuleNotFoundError`` (with the reason) if the peer is not installed.
    """
    _check_name(name, AP_PEERS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"`n` must be an int >= 2; got {n!r}")
    settings = _options(name, AP_PEER_DEFAULTS[name], options)
    backend = _backend(name)
    if name == "torchsort_ap":
        return TorchsortAPLoss(backend, settings)
    if name == "libauc_ap":
        return LibAUCAPLoss(backend, n, settings)
    return BlackboxMapLoss(backend, settings)


def make_retrieval_peer(name: str, **options: Any) -> nn.Module:
    """Retrieval peer ``name``: ``forward(embeddings (N, D), labels (N,))`` -> loss.

    ``options`` override :data:`RETRIEVAL_PEER_DEFAULTS` ``[name]``. Raises
    ``ValueError`` for an unknown name, ``TypeError`` for an unknown option and
    ``ModuleNotFoundError`` (with the reason) if the peer is not installed.
    """
    _check_name(name, RETRIEVAL_PEERS)
    settings = _options(name, RETRIEVAL_PEER_DEFAULTS[name], options)
    backend = _backend(name)
    if name == "torchsort_ap":
        return TorchsortRetrievalAPLoss(backend, settings)
    if name == "bbb_recall":
        return BlackboxRecallLoss(backend, settings)
    if name == "il_smoothap":
        return ImbalancedLossesSmoothAP(backend, settings)
    return _make_pml(name, backend, settings)
