"""Optional peer losses for the benchmarks, imported lazily.

* ``monai``: ``monai.losses.DiceLoss``, a batch-level soft Dice (= soft F1)
  loss. Binary: ``DiceLoss(sigmoid=True, batch=True)`` on ``(N, 1)`` logits,
  i.e. ``1 - (2 sum p y + eps) / (sum p + sum y + eps)`` over the whole batch.
  Multi-class: ``DiceLoss(softmax=True, to_onehot_y=True, batch=True)`` on
  ``(N, C)`` logits, the mean over classes of the per-class soft Dice loss
  (a soft macro F1). Install: ``pip install --no-deps monai`` (it needs only
  numpy and torch; ``--no-deps`` keeps pip from touching the installed torch).
* ``libauc``: ``libauc.losses.AUCMLoss`` (AUC-margin, Yuan et al. ICCV 2021) and
  ``libauc.losses.APLoss`` (SOAP, Qi et al. NeurIPS 2021; see
  :class:`SOAPCriterion`) on sigmoid scores, binary only. Install:
  ``pip install --no-deps libauc==2.0.1``.
  Some LibAUC builds import ``torchvision`` at import time; if it is missing,
  :func:`load_peer` puts a stub module on ``sys.path`` from a temporary folder,
  inside this process only.

* ``imbalanced_losses``: ``imbalanced_losses.SigmoidFocalLoss`` (imbalanced-losses
  0.6.0, 2026) with its defaults (alpha 0.25, gamma 2, mean over the batch), on
  ``(N,)`` binary logits, without its DDP gathering (one process). Install:
  ``pip install imbalanced-losses==0.6.0``.

A missing peer never crashes a benchmark: :func:`peer_status` reports
``"not installed: <reason>"`` and the harness records it in the results.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "PEERS", "AUCMCriterion", "SOAPCriterion", "dice_loss_fn", "fit_libauc_protocol", "focal_loss_fn", "load_peer",
    "make_aucm", "make_soap", "peer_status", "peer_versions",
]

#: Peer name -> (module to import, install hint).
PEERS: dict[str, tuple[str, str]] = {
    "monai": ("monai.losses", "pip install --no-deps monai"),
    "libauc": ("libauc.losses", "pip install --no-deps libauc==2.0.1"),
    "imbalanced_losses": ("imbalanced_losses", "pip install imbalanced-losses==0.6.0"),
}

_STATUS: dict[str, str] = {}
_STUB_DIR: tempfile.TemporaryDirectory[str] | None = None


def _install_torchvision_stub() -> None:
    """Put an empty ``torchvision`` package on ``sys.path`` (temp dir, this process only)."""
    global _STUB_DIR
    if _STUB_DIR is not None:
        return
    _STUB_DIR = tempfile.TemporaryDirectory(prefix="metricopt-bench-stub-")
    package = Path(_STUB_DIR.name) / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""Stub so that libauc imports without torchvision; the benchmark uses no vision code."""\n'
        "__version__ = '0.0.0+metricopt-stub'\n"
        "from . import transforms, datasets, models\n"
    )
    for sub in ("transforms", "datasets", "models"):
        (package / f"{sub}.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n")
    sys.path.insert(0, _STUB_DIR.name)


def _import_libauc_sampler() -> types.ModuleType:
    """``libauc.sampler``, which imports ``torchvision`` for an ``isinstance`` check that passing ``labels``
    skips: where torchvision is missing, the stub is put on ``sys.path`` for this import only and taken off
    again, so that later imports of torchvision in the process (another library's) are not served the stub."""
    if "libauc.sampler" in sys.modules:
        return sys.modules["libauc.sampler"]
    try:
        return importlib.import_module("libauc.sampler")
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise
    installed_here = _STUB_DIR is None
    _install_torchvision_stub()
    try:
        return importlib.import_module("libauc.sampler")
    finally:
        if installed_here:
            _remove_torchvision_stub()


def _remove_torchvision_stub() -> None:
    """Undo :func:`_install_torchvision_stub`: its folder off ``sys.path``, its modules out of ``sys.modules``."""
    global _STUB_DIR
    if _STUB_DIR is None:
        return
    if _STUB_DIR.name in sys.path:
        sys.path.remove(_STUB_DIR.name)
    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]
    _STUB_DIR.cleanup()
    _STUB_DIR = None


def load_peer(name: str) -> types.ModuleType | None:
    """Import a peer's loss module, or return None (and remember why) if it is missing."""
    if name not in PEERS:
        raise ValueError(f"`name` must be one of {sorted(PEERS)}; got {name!r}")
    module_name, hint = PEERS[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != "torchvision" or name != "libauc":
                    raise
                _install_torchvision_stub()
                module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here", never a crash
        _STATUS[name] = f"not installed: {type(exc).__name__}: {exc} (install: {hint})"
        return None
    root = importlib.import_module(module_name.split(".")[0])
    _STATUS[name] = f"installed {getattr(root, '__version__', None) or _distribution_version(root.__name__)}"
    return module


def _distribution_version(module: str) -> str:
    """The installed distribution's version of a module without ``__version__`` (``imbalanced_losses``)."""
    from importlib import metadata

    try:
        return metadata.version(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "unknown version"


def peer_status(name: str) -> str:
    """``"installed <version>"`` or ``"not installed: <reason>"``."""
    if name not in _STATUS:
        load_peer(name)
    return _STATUS[name]


def peer_versions() -> dict[str, str]:
    """Status of every peer, for the run metadata."""
    return {name: peer_status(name) for name in PEERS}


def dice_loss_fn(num_classes: int) -> Any:
    """MONAI's batch-level soft Dice loss as ``f(logits, target)``, or None if MONAI is missing.

    ``logits``: ``(N,)`` binary (sigmoid) or ``(N, C)`` multi-class (softmax);
    ``target``: ``(N,)`` labels.
    """
    module = load_peer("monai")
    if module is None:
        return None
    if num_classes == 2:
        criterion = module.DiceLoss(sigmoid=True, batch=True)

        def binary_dice(logits: Tensor, target: Tensor) -> Tensor:
            return criterion(logits.reshape(-1, 1), target.reshape(-1, 1).to(logits.dtype))

        return binary_dice
    criterion = module.DiceLoss(softmax=True, to_onehot_y=True, batch=True)

    def multiclass_dice(logits: Tensor, target: Tensor) -> Tensor:
        return criterion(logits, target.reshape(-1, 1))

    return multiclass_dice


def focal_loss_fn() -> Any:
    """imbalanced-losses' ``SigmoidFocalLoss()`` (its defaults) as ``f(logits, target)`` for ``(N,)`` binary
    logits, or None if the package is missing."""
    module = load_peer("imbalanced_losses")
    if module is None:
        return None
    criterion = module.SigmoidFocalLoss(gather_distributed=False)

    def focal(logits: Tensor, target: Tensor) -> Tensor:
        return criterion(logits, target.to(logits.dtype))

    return focal


def _reverse_gradient(grad: Tensor) -> Tensor:
    return -grad


class AUCMCriterion(nn.Module):
    """LibAUC's ``AUCMLoss`` (v1, prior = training positive rate) trainable by a plain optimizer.

    AUC-margin is a min-max problem: the model and the class centres ``a``,
    ``b`` descend, the dual variable ``alpha >= 0`` ascends. LibAUC's PESG
    optimizer does that; to give every benchmark method the same optimizer and
    budget (Adam), ``alpha``'s gradient is negated by a hook (so a descent step
    is an ascent step for it) and ``alpha`` is projected onto ``[0, 999]``
    before each forward, as PESG does. Scores are ``sigmoid(logits)``, as in
    LibAUC's examples.

    Holds the loss parameters, so it must be a submodule of the trained model
    (:class:`ModelWithCriterion`) for the optimizer to see them.
    """

    def __init__(self, loss_module: nn.Module) -> None:
        super().__init__()
        self.loss = loss_module
        self.loss.alpha.register_hook(_reverse_gradient)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            self.loss.alpha.clamp_(0.0, 999.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no positive sample" on a batch: defined, just noisy
            # auto=False: use the imratio given at construction, not the batch's rate.
            return self.loss(torch.sigmoid(logits).reshape(-1, 1), target.reshape(-1, 1), auto=False)


def make_aucm(positive_rate: float, *, margin: float = 1.0) -> AUCMCriterion | None:
    """An :class:`AUCMCriterion` for training positive rate ``positive_rate``, or None if LibAUC is missing."""
    module = load_peer("libauc")
    if module is None:
        return None
    loss = module.AUCMLoss(margin=margin, imratio=float(positive_rate), version="v1", device=torch.device("cpu"))
    return AUCMCriterion(loss)


class SOAPCriterion(nn.Module):
    """LibAUC's ``APLoss`` (SOAP) as ``f(logits, target)`` with ``target`` = ``(B, 2)`` [label, row index].

    SOAP (Qi, Luo, Xu, Ji and Yang, NeurIPS 2021) keeps, for every positive
    training sample, moving averages ``u_all``, ``u_pos`` of its surrogate rank
    among all and among positive samples, so its forward needs each sample's
    index in the training set and the training set size (``data_len``). The
    harness's ``fit`` passes ``y[batch]`` to the loss, so this method's training
    labels are given as an ``(N, 2)`` integer array ``[label, row index]``
    (:attr:`benchmarks.harness.methods.Method.indexed_targets`) and split here.

    Settings: LibAUC 2.0.1's documented defaults, ``margin=1.0``,
    ``gamma=0.9`` (moving-average weight of the new estimate),
    ``surr_loss="squared_hinge"``; scores are ``sigmoid(logits)`` as in
    LibAUC's examples. Differences from LibAUC's recipe, so that every method
    of the benchmark gets the same optimizer, batches and budget:

    * plain Adam instead of LibAUC's ``SOAP`` optimizer (its default
      ``mode="adam"`` is Adam with gradient clipping at 1.0 and weight decay
      1e-5);
    * the harness's uniformly shuffled batches instead of LibAUC's
      ``DualSampler`` (which oversamples positives). LibAUC asserts that every
      batch holds a positive; here a batch without one (or with a single
      sample) gives a zero loss with zero gradient, as metricopt's ``APLoss``
      does.
    """

    def __init__(self, loss_module: nn.Module) -> None:
        super().__init__()
        self.loss = loss_module

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.ndim != 2 or target.shape[1] != 2:
            raise ValueError(f"`target` must be (B, 2) [label, row index]; got shape {tuple(target.shape)}")
        labels, index = target[:, 0], target[:, 1].long()
        if len(labels) < 2 or not bool((labels == 1).any()):
            return logits.sum() * 0.0
        return self.loss(torch.sigmoid(logits).reshape(-1, 1), labels.reshape(-1, 1), index)


def make_soap(data_len: int, *, margin: float = 1.0, gamma: float = 0.9) -> SOAPCriterion | None:
    """A :class:`SOAPCriterion` for a training set of ``data_len`` rows, or None if LibAUC is missing."""
    module = load_peer("libauc")
    if module is None:
        return None
    loss = module.APLoss(data_len=int(data_len), margin=margin, gamma=gamma, surr_loss="squared_hinge",
                         device=torch.device("cpu"))
    return SOAPCriterion(loss)


class ModelWithCriterion(nn.Module):
    """A model plus a loss that has parameters, so one optimizer trains both.

    ``forward`` is the model's; ``criterion(logits, target)`` is the loss.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def fit_libauc_protocol(
    model: nn.Module, loss_fn: SOAPCriterion, X: np.ndarray, y_indexed: np.ndarray, *, epochs: int, batch_size: int,
    learning_rate: float, seed: int, evaluate: Any,
) -> None:
    """Train with LibAUC's own recipe for its ``APLoss``: the ``SOAP`` optimizer and the ``DualSampler``.

    LibAUC 2.0.1's recommended setting for SOAP: ``SOAP(mode="adam")`` with its
    defaults (Adam with gradient clipping at 1.0 and weight decay 1e-5) at the
    benchmark's learning rate, and batches from ``DualSampler`` with its
    default ``sampling_rate=0.5`` (half of every batch positives, drawn with
    repetition from the rare class), seeded with ``seed``. Each epoch is
    LibAUC's: ``len(y) // batch_size`` batches (at least one). After each
    epoch ``evaluate(model, epoch)`` is called in eval mode, as
    :func:`metricopt.app.recipes.classification.fit` does; selection is the
    caller's. ``y_indexed`` is ``(N, 2)`` [label, row index].
    """
    module = load_peer("libauc")
    if module is None:
        raise ModuleNotFoundError("libauc is not installed")
    import libauc.optimizers

    sampler_module = _import_libauc_sampler()

    labels = y_indexed[:, 0]
    optimizer = libauc.optimizers.SOAP(model.parameters(), lr=learning_rate, mode="adam")
    size = min(batch_size, len(labels))
    sampler = sampler_module.DualSampler(None, size, labels=labels, sampling_rate=0.5, random_seed=seed)
    X_t = torch.as_tensor(X, dtype=torch.float32)
    y_t = torch.as_tensor(y_indexed)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.as_tensor(np.fromiter(iter(sampler), dtype=np.int64))
        for index in order.split(size)[: max(1, len(labels) // size)]:
            loss = loss_fn(model(X_t[index]).squeeze(-1), y_t[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        evaluate(model, epoch)
