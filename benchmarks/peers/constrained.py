"""Optional peer losses for constrained metrics (TPR at FPR <= b, recall at precision >= p), imported lazily.

The constrained-metric benchmark trains a binary model (one logit per sample)
and scores, on held-out data, either the TPR at FPR <= ``level``
(``rate="fpr"``) or the recall at precision >= ``level``
(``rate="precision"``). :func:`make_constrained_peer` builds each peer as an
``nn.Module`` with one interface,
``loss_fn(logits (N,) float, target (N,) float in {0, 1}, index (N,) long) -> scalar``,
where ``index`` is each sample's row in the training set (``0 <= index <
data_len``): LibAUC keeps per-sample state by that index; imbalanced-losses
ignores it. The wrapped library loss is ``loss_fn.loss`` and the values used
are in ``loss_fn.options`` (for the result metadata).

Peers, their settings, and which constraint each applies to. ``b`` is the FPR
budget, ``p`` the precision floor, ``pi`` the training positive rate
(``positive_rate``):

* ``libauc_pauc`` (FPR only): ``libauc.losses.pAUC_CVaR_Loss(data_len,
  pos_len, margin=1.0, beta=b, eta=0.1, surr_loss="squared_hinge")``, SOPA
  (Zhu et al., ICML 2022): one-way partial AUC over FPR in ``[0, b]`` by the
  CVaR form, ``beta`` = the FPR budget as LibAUC's docs say ("ideally based on
  task requirement for FPR"; their tuning range is 0.1 to 0.9, so budgets
  below 0.1 are outside what they tried). ``margin`` and ``eta`` (step of the
  per-positive CVaR threshold ``s_i``, updated inside ``forward``) are their
  defaults. ``forward(y_pred (N, 1), y_true (N, 1), index (N,))`` on
  ``sigmoid(logits)``, as LibAUC's examples do.
* ``libauc_pauc_kl`` (FPR only): ``libauc.losses.pAUC_DRO_Loss(data_len,
  gamma=0.9, margin=1.0, Lambda=1.0, surr_loss="squared_hinge")``, SOPA-s:
  one-way partial AUC by KL-DRO, LibAUC's default one-way pAUC
  (``pAUCLoss(mode="1w")``). It has no FPR parameter: the temperature
  ``Lambda`` sets how hard the negatives are weighted (Lambda -> 0: the
  hardest negative; large: full AUC) and LibAUC gives no mapping from a
  budget, so it runs at its default Lambda for every ``b``. Same
  ``forward`` as above.
* ``il_pauc_budget`` (FPR only): ``imbalanced_losses.PAUCAtBudgetLoss(
  num_classes=1, alpha=0.0, beta=b, budget_basis="fpr", gather_distributed=False)``,
  otherwise its defaults (trapezoid surrogate with 2 knots, temperature 0.1 times
  the negatives' IQR, queue of 1024 rows): ``1 - `` normalised pAUC over FPR in
  ``[0, b]`` with the band edges taken as quantiles of the negatives' scores
  (batch + queue). ``alpha=0, beta=budget`` is the band its docs recommend.
  ``forward(logits (N, 1), targets (N,) long)`` on raw logits.
* ``il_recall_quantile`` (FPR and precision): ``imbalanced_losses.
  RecallAtQuantileLoss(num_classes=1, quantile=q, gather_distributed=False)``,
  otherwise its defaults (temperature 0.01 on raw logits, queue of 1024 rows):
  ``1 -`` the soft recall above the ``1 - q`` quantile of all pooled scores,
  i.e. recall within an alert budget of ``q`` (the fraction of all samples
  flagged). Neither constraint is an alert budget, so each is translated
  into the alert fraction at which a perfectly ranked model meets the
  constraint with recall 1: ``q = pi / p`` for precision ``>= p`` (all
  positives plus ``pi (1 - p) / p`` negatives) and ``q = pi + (1 - pi) b``
  for FPR ``<= b``. This is an upper bound on the flagged fraction at the
  true operating point (``pi r / p``, resp. ``pi r + (1 - pi) b`` at recall
  ``r < 1``), so the loss's threshold sits at or below the true one; it keeps
  ``q > pi``, which its docs require for the threshold to fall among the
  negatives. A precision floor ``p <= pi`` is met by flagging everything
  and is refused (``ValueError``).

Why the pAUC peers get no precision constraint: a precision floor fixes an
FPR only through the TPR the model reaches (FPR = ``pi r (1 - p) / (p (1 -
pi))`` at recall ``r``), so any budget given to them would be ours, not theirs.
The bound at ``r = 1`` is one choice a benchmark may add; this module does not.
The recall-at-quantile loss gets one because its target quantity is recall and
its parameter (a flagged fraction) is what a precision floor limits.

Differences from the libraries' own recipes, so that every method of the
benchmark gets the same optimiser, batches and budget:

* Plain Adam, uniformly shuffled batches. Neither pAUC loss has trainable loss
  parameters (``s_i`` and LibAUC's moving averages are updated inside
  ``forward``), so no min-max optimiser is needed. LibAUC's recipe is its
  ``SOPA`` (``libauc_pauc``) or ``SOPAs`` (``libauc_pauc_kl``) optimiser,
  Adam with element-wise gradient clipping (1.0 / 2.0) and weight decay
  (0 / 1e-5), plus ``DualSampler`` batches (half positives);
  :func:`make_constrained_peer_optimizer` builds the optimiser for a
  "LibAUC's own recipe" row (the sampler as in
  :func:`benchmarks.peers.classification.fit_libauc_protocol`).
  imbalanced-losses has no optimiser of its own.
* LibAUC asserts that every batch holds a positive; without a negative
  ``pAUC_CVaR_Loss`` asserts too and ``pAUC_DRO_Loss`` returns NaN. Here a
  batch without both classes gives a zero loss with zero gradient. The
  per-positive state is visited once per epoch under uniform batches (more
  often under ``DualSampler``), which slows ``s_i``'s adaptation. Both
  losses count positives with Python's ``sum`` over the mask, one element at
  a time (about 0.5 ms at 256 samples on CPU; one device sync per element on
  a GPU).
* Both libraries all-gather across ranks when ``torch.distributed`` is
  initialised with world size > 1 (LibAUC decides at construction,
  imbalanced-losses at the first ``forward``). The benchmark runs one process,
  so gathering is switched off explicitly (LibAUC: ``loss.distributed =
  False``; imbalanced-losses: ``gather_distributed=False``).
* imbalanced-losses' queue is updated on every training-mode call; calling
  the loss on validation data in training mode would put those logits in it.

The peers' own knobs are settable through ``options`` of
:func:`make_constrained_peer`. Worth running beside the defaults (tests, a
linear model started on the noise feature of a separable 2-feature problem,
1024 rows, positive rate 0.25, batches of 256, Adam, TPR at FPR <= 0.1 from
about 0.1): ``il_pauc_budget``'s default trapezoid surrogate reached about
0.5 after 200 steps at learning rate 0.05 (0.35 after 300 at 0.01), where
``{"surrogate": "pairwise"}`` and both LibAUC peers reached 1.0: its
gradient reaches only the positives, against thresholds held fixed, and
the weights grew along both features instead of turning towards the
signal; its docs advise ``"pairwise"`` for wide bands with many band
negatives. ``il_recall_quantile`` reached 1.0 at 0.05 but about 0.3 after
300 steps at 0.01, and ``{"queue_size": 0}`` helped (0.55 to 1.0; at
batches of 64, 0.17 against 1.0 at 0.05): the queue's thresholds come from
logits of earlier steps. Its docs suggest ``queue_size=0`` once the live
batch estimates the quantile (``q >= pi`` here, so a batch of 256 has
``256 q`` samples above it).

A missing peer never crashes a benchmark: :func:`constrained_peer_status`
reports ``"not installed: <reason>"`` and :func:`make_constrained_peer` returns
None.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.peers.classification import load_peer, peer_status

__all__ = [
    "CONSTRAINED_PEERS", "RATES", "ImbalancedLossesConstrained", "LibAUCPartialAUC", "alert_fraction",
    "constrained_peer_status", "constrained_peer_versions", "make_constrained_peer", "make_constrained_peer_optimizer",
]

#: Method name -> one-line description (library, version, what it optimises).
CONSTRAINED_PEERS: dict[str, str] = {
    "libauc_pauc": "LibAUC 2.0.1 pAUC_CVaR_Loss (SOPA, one-way partial AUC over FPR in [0, b]; FPR only)",
    "libauc_pauc_kl": "LibAUC 2.0.1 pAUC_DRO_Loss (SOPA-s, KL-DRO one-way partial AUC, Lambda=1, "
                      "no budget parameter; FPR only)",
    "il_pauc_budget": "imbalanced-losses 0.6.0 PAUCAtBudgetLoss (normalised partial AUC over FPR in [0, b]; "
                      "FPR only)",
    "il_recall_quantile": "imbalanced-losses 0.6.0 RecallAtQuantileLoss (soft recall in the top-q alert "
                          "fraction, q = pi/p or pi + (1-pi) b; FPR and precision)",
}

#: The constraints: ``"fpr"`` (FPR <= level, score TPR) and ``"precision"`` (precision >= level, score recall).
RATES: tuple[str, ...] = ("fpr", "precision")

#: Peer -> (library in :data:`benchmarks.peers.classification.PEERS`, constraints it applies to).
_PEER_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "libauc_pauc": ("libauc", ("fpr",)),
    "libauc_pauc_kl": ("libauc", ("fpr",)),
    "il_pauc_budget": ("imbalanced_losses", ("fpr",)),
    "il_recall_quantile": ("imbalanced_losses", ("fpr", "precision")),
}

#: imbalanced-losses settings read back from the built loss for ``.options``.
_IL_SETTINGS = ("surrogate", "n_knots", "tau_scale", "pos_numerator", "temperature", "queue_size",
                "quantile_interpolation", "max_pool_size")

#: Peer -> its constructor argument set from ``level`` (not overridable through ``options``).
_BUDGET_ARGUMENT = {"libauc_pauc": "beta", "il_pauc_budget": "beta", "il_recall_quantile": "quantile"}


def _check_name(name: str) -> None:
    if name not in CONSTRAINED_PEERS:
        raise ValueError(f"`name` must be one of {sorted(CONSTRAINED_PEERS)}; got {name!r}")


def constrained_peer_status(name: str) -> str:
    """``"ok"`` if peer ``name`` can be built here, else ``"not installed: <reason>"``."""
    _check_name(name)
    status = peer_status(_PEER_SPECS[name][0])
    return "ok" if status.startswith("installed") else status


def constrained_peer_versions() -> dict[str, str]:
    """Status of every constrained peer's library (``"installed <version>"`` or why not), for run metadata."""
    return {name: peer_status(library) for name, (library, _) in _PEER_SPECS.items()}


def _check_inputs(logits: Tensor, target: Tensor, index: Tensor) -> None:
    if logits.ndim != 1:
        raise ValueError(f"`logits` must be (N,); got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"`target` must have the shape of `logits` {tuple(logits.shape)}; got {tuple(target.shape)}")
    if index.shape != logits.shape:
        raise ValueError(f"`index` must have the shape of `logits` {tuple(logits.shape)}; got {tuple(index.shape)}")


class LibAUCPartialAUC(nn.Module):
    """LibAUC's ``pAUC_CVaR_Loss`` or ``pAUC_DRO_Loss`` as ``f(logits, target, index)``.

    Scores are ``sigmoid(logits)``. A batch without a positive and a negative
    gives a zero loss with zero gradient (LibAUC asserts or gives NaN). The per-positive
    state (``loss.u_pos``, a plain tensor, not a buffer) follows the inputs'
    device. ``index`` must lie in ``[0, data_len)``.
    """

    def __init__(self, loss_module: nn.Module, data_len: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.loss = loss_module
        self.data_len = data_len
        self.options = options

    def forward(self, logits: Tensor, target: Tensor, index: Tensor) -> Tensor:
        _check_inputs(logits, target, index)
        positives = target == 1
        if not bool(positives.any()) or bool(positives.all()):
            return logits.sum() * 0.0
        index = index.to(device=logits.device, dtype=torch.long)
        if int(index.min()) < 0 or int(index.max()) >= self.data_len:
            raise ValueError(f"`index` must lie in [0, data_len={self.data_len}); got values in "
                             f"[{int(index.min())}, {int(index.max())}]")
        if self.loss.u_pos.device != logits.device:
            self.loss.u_pos = self.loss.u_pos.to(logits.device)
        return self.loss(torch.sigmoid(logits).reshape(-1, 1), target.reshape(-1, 1), index)


class ImbalancedLossesConstrained(nn.Module):
    """imbalanced-losses' ``PAUCAtBudgetLoss`` or ``RecallAtQuantileLoss`` (binary) as ``f(logits, target, index)``.

    Raw logits as ``(N, 1)``, integer targets; ``index`` is checked for shape
    and otherwise ignored. The loss's queue (buffers) follows the inputs'
    device. Batches without positives are handled by the library (zero loss,
    zero gradient).
    """

    def __init__(self, loss_module: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        self.loss = loss_module
        self.options = options

    def forward(self, logits: Tensor, target: Tensor, index: Tensor) -> Tensor:
        _check_inputs(logits, target, index)
        buffer = next(self.loss.buffers(), None)
        if buffer is not None and buffer.device != logits.device:
            self.loss.to(logits.device)
        return self.loss(logits.reshape(-1, 1), target.long())


def _check_constraint(rate: str, level: float, data_len: int, positive_rate: float) -> None:
    if rate not in RATES:
        raise ValueError(f"`rate` must be one of {RATES}; got {rate!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1); got {level!r}")
    if int(data_len) != data_len or data_len < 1:
        raise ValueError(f"`data_len` must be a positive integer; got {data_len!r}")
    if not 0.0 < positive_rate < 1.0:
        raise ValueError(f"`positive_rate` must be in (0, 1); got {positive_rate!r}")


def alert_fraction(rate: str, level: float, positive_rate: float) -> float:
    """The fraction of all samples a perfectly ranked model flags at the constraint's boundary with recall 1.

    ``positive_rate / level`` for precision ``>= level``; ``positive_rate + (1 -
    positive_rate) level`` for FPR ``<= level``. The ``quantile`` given to
    ``RecallAtQuantileLoss``.
    """
    if rate not in RATES:
        raise ValueError(f"`rate` must be one of {RATES}; got {rate!r}")
    if rate == "precision":
        if level <= positive_rate:
            raise ValueError(f"`level` (precision floor) must exceed `positive_rate` {positive_rate!r}, or flagging "
                             f"every sample meets it; got {level!r}")
        return positive_rate / level
    return positive_rate + (1.0 - positive_rate) * level


def make_constrained_peer(
    name: str, *, rate: str, level: float, data_len: int, positive_rate: float,
    options: Mapping[str, Any] | None = None,
) -> nn.Module | None:
    """Peer ``name`` as ``loss_fn(logits (N,), target (N,), index (N,)) -> scalar``, or None.

    None when the peer does not apply to ``rate`` (see the module docstring) or
    its library is not installed (:func:`constrained_peer_status` says why).

    Args:
        name: a key of :data:`CONSTRAINED_PEERS`.
        rate: ``"fpr"`` (constraint FPR <= ``level``) or ``"precision"``
            (precision >= ``level``).
        level: the FPR budget or the precision floor, in (0, 1).
        data_len: training-set size; ``index`` values lie in ``[0, data_len)``.
        positive_rate: training positive rate, in (0, 1).
        options: keyword arguments of the library's loss constructor that
            replace this module's settings, e.g. ``{"surrogate": "pairwise"}``
            or ``{"queue_size": 0}`` for the imbalanced-losses peers, ``{"eta":
            1.0}`` for ``libauc_pauc``: the peers' own knobs, for tuning them
            as strongly as metricopt's losses. The budget (``beta``,
            ``quantile``) comes from ``level`` and what this module manages
            (sizes, device, DDP gathering) cannot be set here.
    """
    _check_name(name)
    _check_constraint(rate, level, data_len, positive_rate)
    library, rates = _PEER_SPECS[name]
    if rate not in rates:
        return None
    module = load_peer(library)
    if module is None:
        return None
    level, positive_rate, data_len = float(level), float(positive_rate), int(data_len)
    if name == "libauc_pauc":
        constructor = module.pAUC_CVaR_Loss
        managed = {"data_len": data_len, "pos_len": max(1, round(positive_rate * data_len)),
                   "device": torch.device("cpu")}
        settings = {"margin": 1.0, "beta": level, "eta": 0.1, "surr_loss": "squared_hinge"}
    elif name == "libauc_pauc_kl":
        constructor = module.pAUC_DRO_Loss
        managed = {"data_len": data_len, "device": torch.device("cpu")}
        settings = {"gamma": 0.9, "margin": 1.0, "Lambda": 1.0, "surr_loss": "squared_hinge"}
    elif name == "il_pauc_budget":
        constructor = module.PAUCAtBudgetLoss
        managed = {"num_classes": 1, "gather_distributed": False}
        settings = {"alpha": 0.0, "beta": level, "budget_basis": "fpr"}
    else:
        constructor = module.RecallAtQuantileLoss
        managed = {"num_classes": 1, "gather_distributed": False}
        settings = {"quantile": alert_fraction(rate, level, positive_rate)}
    settings |= _checked_overrides(name, constructor, managed, options)
    loss = constructor(**managed, **settings)
    if library == "libauc":
        loss.distributed = False  # one process; LibAUC would all-gather under an initialised process group
        return LibAUCPartialAUC(loss, data_len, settings)
    # Record the library's defaults too, so that the results say what ran.
    settings |= {key: getattr(loss, key) for key in _IL_SETTINGS if hasattr(loss, key) and key not in settings}
    return ImbalancedLossesConstrained(loss, settings)



def _checked_overrides(
    name: str, constructor: Any, managed: Mapping[str, Any], options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if options is None:
        return {}
    parameters = inspect.signature(constructor).parameters
    allowed = {key for key, parameter in parameters.items() if parameter.kind is parameter.POSITIONAL_OR_KEYWORD}
    allowed -= set(managed) | {_BUDGET_ARGUMENT.get(name), "num_neg"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"`options` for {name!r} may set {sorted(allowed)}; got {unknown} (the budget comes from "
                         f"`level`)")
    return dict(options)


def make_constrained_peer_optimizer(
    name: str, parameters: Iterable[Tensor], *, learning_rate: float,
) -> torch.optim.Optimizer | None:
    """LibAUC's own optimiser for peer ``name`` at ``learning_rate``, or None where the peer has none.

    ``libauc_pauc``: ``libauc.optimizers.SOPA(mode="adam")`` (Adam, element-wise
    gradient clipping at 1.0, no weight decay); ``libauc_pauc_kl``:
    ``SOPAs(mode="adam")`` (clipping at 2.0, weight decay 1e-5); both at their
    defaults otherwise. None for the imbalanced-losses peers (no optimiser of
    their own) and when LibAUC is missing. Only for a "LibAUC's own recipe"
    row: the peers train with any optimiser.
    """
    _check_name(name)
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive; got {learning_rate!r}")
    if _PEER_SPECS[name][0] != "libauc" or load_peer("libauc") is None:
        return None
    import libauc.optimizers

    if name == "libauc_pauc":
        return libauc.optimizers.SOPA(parameters, mode="adam", lr=learning_rate)
    return libauc.optimizers.SOPAs(parameters, mode="adam", lr=learning_rate, verbose=False)
