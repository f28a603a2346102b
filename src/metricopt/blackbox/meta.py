"""Meta-training the value function with Reptile over a distribution of fine-tuning tasks.

For each task ``i`` (MetricOpt, Huang et al. 2021, with Reptile, Nichol et al. 2018)::

    sample a fine-tuning task (data subset, class balance, seed, learning rate, initial phi)
    run it (:func:`~metricopt.blackbox.finetune.finetune`), observing the metric K times
    interpolate the observations over the steps (Gaussian process)
    w~ = adapt(w, trajectory)          # a few steps on L_v
    w  <- w + eta (w~ - w)              # the Reptile update

Stated by the paper: Reptile, the value loss on interpolated sparse metrics,
fewer than 2k meta-iterations. DECIDED (paper silent):

* The first ``warmup_tasks`` runs are loss-only; their observed costs fix the
  value function's normalisation (offset = mean, scale = spread), which then
  stays fixed. Later runs are guided by the current value function with a
  ``value_weight`` drawn per task (on-policy data: the value function also
  sees where its own gradient leads).
* Each collected trajectory is followed by ``replay`` extra Reptile
  iterations on stored trajectories drawn at random: meta-iterations are cheap,
  trajectories are not.
* ``MetaConfig(fit="joint")`` replaces Reptile by a regression on every
  stored metric observation (:func:`~metricopt.blackbox.adaptation.fit_observations`,
  one Adam state across tasks): every task observes the same validation rows
  through the same frozen backbone, so the cost is one function of ``phi``.
  On an offline replay of stored meta-training runs it ranked held-out runs
  better than Reptile (pooled rank correlation 0.68 against 0.50, 6 of 6 runs)
  at a fifth of the compute (``benchmarks/results/value_fit.md``).
* :class:`TaskDistribution` defines the variation between tasks.

The loop over tasks (resuming, warm-up, normalisation, history, checkpoints) is
:class:`MetaLoop`, which the learned optimizer's meta-training
(:func:`~metricopt.blackbox.learned.meta_train_learned`) shares; each method
supplies its fine-tuning run, its update and what its checkpoint holds.

Checkpoints (``checkpoint=PATH``) are written every ``checkpoint_every`` tasks
and at the end, atomically (write, then rename). They hold only tensors,
numbers, strings, lists and dicts, so they load with
``torch.load(path, weights_only=True)``. Every random choice of task ``i``
derives from ``(seed, i)`` and the replay generator's state is saved, so a
killed run resumed from its last checkpoint ends with exactly the weights of a
run that was never interrupted. Reading one (:func:`load_value`, resuming)
checks it: a file that is empty, truncated or corrupt (the archive's CRCs are
verified, which ``torch.load`` does not do), not written by ``torch.save``,
holding objects other than tensors and plain values, of the other kind (a
learned-optimizer checkpoint) or of another format version raises
:class:`CheckpointError`, a ``ValueError`` whose message names the file and
the problem; a missing file is a ``FileNotFoundError``. Everything loads on
the CPU; the caller moves it (fine-tuning moves the value function to the
adapter's device itself).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import os
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import check_choice, check_integer, check_nonnegative, check_positive, describe
from metricopt.blackbox.adaptation import adapt_value, fit_observations, inner_optimizer
from metricopt.blackbox.adapters import Adapter
from metricopt.blackbox.diagnostics import Trust, predict_held_out, trust_value
from metricopt.blackbox.finetune import FineTuneConfig, LossFn, TaskData, finetune
from metricopt.blackbox.metric import BlackBoxMetric
from metricopt.blackbox.trajectory import Trajectory
from metricopt.blackbox.value import ValueFunction

__all__ = ["CHECKPOINT_FORMAT", "CheckpointEntry", "CheckpointError", "MetaConfig", "MetaLoop", "MetaResult", "Task",
           "TaskDistribution", "atomic_save", "interpolate_weights", "load_value", "meta_train", "plain_record",
           "read_checkpoint", "reptile_step", "restoring", "resumable_state", "set_normalisation_from"]

CHECKPOINT_FORMAT = "metricopt.blackbox.meta/1"
#: How the value function learns from the collected runs (:class:`MetaConfig` ``fit``).
FITS = ("reptile", "joint")


def _check_range(name: str, value: Any, low: float = 0.0) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a pair (low, high); got {describe(value)}") from None
    if not (low <= a <= b < math.inf):
        raise ValueError(f"`{name}` must satisfy {low:g} <= low <= high < inf; got {describe(value)}")
    return a, b


@dataclass(frozen=True)
class TaskDistribution:
    """How fine-tuning tasks of one backbone vary during meta-training.

    Attributes:
        subset: range of the fraction of the training pool a task trains on.
        class_balance: each class's sampling weight is drawn log-uniformly from
            ``[1 / class_balance, class_balance]`` (1: the pool's balance).
        learning_rate: range of factors on the fine-tuning learning rate (log-uniform).
        initial_phi_std: a task starts from ``phi ~ N(0, s^2)``, ``s`` uniform in ``[0, initial_phi_std]``.
        value_weight: range of factors on ``value_weight`` for guided tasks (uniform).

    DECIDED: the default ranges; the ``blackbox_defaults`` benchmark compared
    them on validation tasks with a narrower and a wider preset (every range
    shrunk or widened) and found neither clearly better, the wider one worse
    (``benchmarks/results/blackbox_defaults.md``).
    """

    subset: tuple[float, float] = (0.3, 1.0)
    class_balance: float = 8.0
    learning_rate: tuple[float, float] = (0.3, 3.0)
    initial_phi_std: float = 0.5
    value_weight: tuple[float, float] = (0.0, 2.0)

    def __post_init__(self) -> None:
        low, high = _check_range("subset", self.subset)
        if not 0 < low <= high <= 1:
            raise ValueError(f"`subset` fractions must lie in (0, 1]; got {self.subset!r}")
        if check_positive("class_balance", self.class_balance) < 1:
            raise ValueError(f"`class_balance` must be >= 1; got {self.class_balance!r}")
        low, _ = _check_range("learning_rate", self.learning_rate)
        if low <= 0:
            raise ValueError(f"`learning_rate` factors must be > 0; got {self.learning_rate!r}")
        check_nonnegative("initial_phi_std", self.initial_phi_std)
        _check_range("value_weight", self.value_weight)

    def sample(self, index: int, *, seed: int, labels: Tensor, phi_size: int, guided: bool) -> Task:
        """Task ``index``: every draw comes from a generator seeded by ``(seed, index)``."""
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

        classes = torch.unique(labels)
        log_balance = math.log(self.class_balance)
        class_weight = torch.exp((torch.rand(len(classes), generator=generator, dtype=torch.float64) * 2 - 1)
                                 * log_balance)
        weights = class_weight[torch.searchsorted(classes, labels)]
        size = max(2, int(round(uniform(*self.subset) * len(labels))))
        indices = torch.multinomial(weights, size, replacement=True, generator=generator)
        learning_rate = math.exp(uniform(math.log(self.learning_rate[0]), math.log(self.learning_rate[1])))
        phi_std = uniform(0.0, self.initial_phi_std)
        initial_phi = torch.randn(phi_size, generator=generator) * phi_std
        value_weight = uniform(*self.value_weight) if guided else 0.0
        seed_out = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        return Task(index, indices.sort().values, learning_rate, initial_phi, value_weight, seed_out)


@dataclass(frozen=True)
class Task:
    """One sampled fine-tuning task (factors multiply the fine-tuning config's values)."""

    index: int
    indices: Tensor
    learning_rate_factor: float
    initial_phi: Tensor
    value_weight_factor: float
    seed: int


@dataclass(frozen=True)
class MetaConfig:
    """Meta-training options.

    Attributes:
        tasks: fine-tuning runs to collect.
        warmup_tasks: loss-only runs first (they fix the normalisation).
        fit: how the value function learns from the collected runs: ``"reptile"``
            (the paper's: Reptile iterations on the interpolated curve of one
            trajectory at a time) or ``"joint"`` (full-batch regression on every
            stored metric observation after each run:
            :func:`~metricopt.blackbox.adaptation.fit_observations`).
        joint_steps: Adam steps of a ``"joint"`` fit per collected run (learning rate ``inner_learning_rate``).
        replay: extra Reptile iterations on stored trajectories per new run.
        inner_steps, inner_learning_rate: the adaptation ``w -> w~`` (Adam steps on ``L_v``).
        meta_step: Reptile's ``eta`` in ``w <- w + eta (w~ - w)``.
        hidden_sizes: the value network's hidden widths.
        checkpoint_every: write a checkpoint every this many tasks.
        seed: seeds the tasks, the replay order and the value network's initialisation.
    """

    tasks: int = 40
    warmup_tasks: int = 4
    fit: str = "reptile"
    joint_steps: int = 50
    replay: int = 20
    inner_steps: int = 10
    inner_learning_rate: float = 1e-3
    meta_step: float = 0.5
    hidden_sizes: tuple[int, ...] = (256, 256)
    checkpoint_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_integer("tasks", self.tasks, 1)
        check_integer("warmup_tasks", self.warmup_tasks, 1)
        if self.warmup_tasks > self.tasks:
            raise ValueError(f"`warmup_tasks` ({self.warmup_tasks}) must not exceed `tasks` ({self.tasks}): the value "
                             f"function would never be trained")
        check_choice("fit", self.fit, FITS)
        check_integer("joint_steps", self.joint_steps, 1)
        check_integer("replay", self.replay, 0)
        check_integer("inner_steps", self.inner_steps, 1)
        check_positive("inner_learning_rate", self.inner_learning_rate)
        if not 0 < self.meta_step <= 1:
            raise ValueError(f"`meta_step` must lie in (0, 1]; got {describe(self.meta_step)}")
        check_integer("checkpoint_every", self.checkpoint_every, 1)


@dataclass
class MetaResult:
    """What :func:`meta_train` returns.

    Attributes:
        value: the meta-learned value function.
        trajectories: every collected trajectory, in task order.
        history: one row per task: ``task``, ``value_weight``, ``start_cost``,
            ``best_cost``, ``final_cost``, ``value_loss`` (before adaptation), ``rank_correlation``
            (held out: of the predicted and observed costs of the task's run before Reptile trained on it; NaN
            before the value function first trained), ``reptile_iterations`` and ``joint_steps`` (how it
            trained after the task), ``collect_seconds`` (the fine-tuning run) and ``update_seconds`` (the
            training).
        resumed_from: the task index a checkpoint resumed from (None: fresh start).
    """

    value: ValueFunction
    trajectories: list[Trajectory] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def within_run_rank_correlation(self) -> float | None:
        """The mean of the history's finite ``rank_correlation`` over the later half of the tasks (None: none)."""
        later = [row.get("rank_correlation", math.nan) for row in self.history[len(self.history) // 2:]]
        finite = [value for value in later if math.isfinite(value)]
        return sum(finite) / len(finite) if finite else None

    @property
    def trust(self) -> Trust:
        """Whether the value function may guide fine-tuning (:func:`~metricopt.blackbox.diagnostics.trust_value`
        on the held-out predictions stored in the trajectories)."""
        return trust_value(self.trajectories)


@torch.no_grad()
def interpolate_weights(value: ValueFunction, adapted: ValueFunction, step: float) -> None:
    """The Reptile update ``w <- w + step (w~ - w)``, in place."""
    for weight, target in zip(value.parameters(), adapted.parameters()):
        weight.add_(target - weight, alpha=step)


def reptile_step(value: ValueFunction, trajectory: Trajectory, config: MetaConfig) -> float:
    """One Reptile iteration on one trajectory, in place; returns the adapted value loss.

    The weights adapt in place from a copy of the starting ones, then move to
    ``start + meta_step (adapted - start)`` (:func:`interpolate_weights`' update, without copying the module).
    """
    start = [weight.detach().clone() for weight in value.parameters()]
    loss = adapt_value(value, trajectory, steps=config.inner_steps, learning_rate=config.inner_learning_rate)
    with torch.no_grad():
        for weight, origin in zip(value.parameters(), start):
            weight.copy_(origin.add_(weight - origin, alpha=config.meta_step))
            weight.grad = None  # the inner steps' gradients are not the meta-weights'
    return loss


def set_normalisation_from(value: ValueFunction, trajectories: list[Trajectory]) -> None:
    """Fix ``value``'s normalisation from the costs observed in ``trajectories`` (mean; spread with a floor)."""
    costs = np.concatenate([np.asarray(t.observed_costs) for t in trajectories])
    mean, spread = float(costs.mean()), float(costs.std())
    # A floor of 10 % of the mean cost: warm-up runs on a flat stretch of the metric have no spread at all.
    value.set_normalisation(mean, max(spread, 0.1 * abs(mean), 1e-6))


def plain_record(obj: Any) -> Any:
    """A dataclass as nested dicts with lists for tuples (comparable after a ``weights_only`` load)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain_record(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [plain_record(v) for v in obj]
    return obj


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and what is wrong with it.

    A ``ValueError``: truncated or corrupt (a run killed mid-copy, a full disk), not
    written by ``torch.save``, holding objects other than tensors and plain values
    (metricopt's checkpoints load with ``weights_only=True``), not a metricopt
    checkpoint, a checkpoint of the other kind (value function vs learned optimizer),
    another format version, or missing entries. A missing file is a
    ``FileNotFoundError`` instead.
    """


#: The first bytes of a ``torch.save`` file (a zip archive).
_ZIP_MAGIC = b"PK\x03\x04"

#: The checkpoint kinds this package writes, by format prefix (for "wrong kind" messages).
_KINDS = {"metricopt.blackbox.meta": ("meta-training", "load_value"),
          "metricopt.blackbox.learned": ("learned-optimizer", "load_learned")}


def _torch_load(path: Path, where: str) -> Any:
    """``torch.load(weights_only=True)`` on the CPU.

    Every way a file can be unreadable is a :class:`CheckpointError`.
    """
    if not path.exists():
        raise FileNotFoundError(f"{where} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{where} is a directory, not a checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"{where} is empty (0 bytes): a truncated checkpoint; delete it or choose another path")
    try:
        with warnings.catch_warnings():
            # A file that is no torch.save archive makes torch warn about its pickle protocol before failing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # map_location: devices follow the caller, who moves what it loads (every checkpoint loads anywhere).
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError,
            TypeError, AttributeError) as error:
        reason = f"{type(error).__name__}: {_first_sentence(error)}"
        if head != _ZIP_MAGIC:
            raise CheckpointError(f"{where} is not a metricopt checkpoint: it is not a file written by torch.save "
                                  f"({reason})") from error
        if isinstance(error, pickle.UnpicklingError) and _archive_damage(path) is None:
            raise CheckpointError(f"{where} is not a metricopt checkpoint: it holds objects other than tensors and "
                                  f"plain values (metricopt checkpoints load with torch.load(weights_only=True); "
                                  f"{reason})") from error
        raise CheckpointError(_corrupt(where, reason)) from error
    # torch.load does not check the archive's CRCs: a flipped byte in a tensor would load as a wrong weight.
    damage = _archive_damage(path)
    if damage is not None:
        raise CheckpointError(_corrupt(where, damage))
    return state


def _corrupt(where: str, reason: str) -> str:
    return (f"{where} is truncated or corrupt ({reason}); a run killed while copying it, or a full disk, leaves such "
            "a file: delete it or choose another path")


def _archive_damage(path: Path) -> str | None:
    """None if ``path`` is a complete zip archive whose members all pass their CRC check, else what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {_first_sentence(error)}"
    return None if bad is None else f"member {bad!r} fails its CRC check"


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split())
    sentence = text.split(". ", 1)[0] if text else type(error).__name__
    return sentence if len(sentence) <= 160 else sentence[:157] + "..."


def read_checkpoint(path: Path, checkpoint_format: str, *, argument: str = "path",
                    kind: str = "meta-training", keys: Sequence[str] = ()) -> dict[str, Any]:
    """A ``weights_only`` load of a checkpoint of format ``checkpoint_format`` holding ``keys``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: (a ``ValueError``) anything else that makes the file
            unusable; the message names ``argument``, the file and the problem.
    """
    where = f"`{argument}` {str(path)!r}"
    state = _torch_load(Path(path), where)
    found = state.get("format") if isinstance(state, dict) else None
    if found != checkpoint_format:
        family, _, _ = checkpoint_format.rpartition("/")
        if isinstance(found, str) and found.rpartition("/")[0] == family:
            raise CheckpointError(f"{where} is a metricopt {kind} checkpoint of format {found!r}, which this version "
                                  f"of metricopt does not read (it reads {checkpoint_format!r})")
        other = _KINDS.get(found.rpartition("/")[0]) if isinstance(found, str) else None
        if other is not None:
            raise CheckpointError(f"{where} is a metricopt {other[0]} checkpoint, not a {kind} checkpoint "
                                  f"(load it with {other[1]})")
        raise CheckpointError(f"{where} is not a metricopt {kind} checkpoint (no format {checkpoint_format!r})")
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(f"{where} is a damaged metricopt {kind} checkpoint: it lacks {', '.join(missing)}")
    return state


def resumable_state(path: Path | None, resume: bool, checkpoint_format: str, record: dict[str, Any], *,
                    kind: str = "meta-training", keys: Sequence[str] = ()) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start fresh); refuses one written with other settings.

    Raises:
        CheckpointError: the file is unusable (see :func:`read_checkpoint`; the
            message says ``resume=False`` overwrites it) or was written with
            other settings.
    """
    if path is None or not resume or not path.exists():
        return None
    try:
        state = read_checkpoint(path, checkpoint_format, argument="checkpoint", kind=kind, keys=("config", *keys))
    except CheckpointError as error:
        raise CheckpointError(f"{error}; pass resume=False to overwrite it") from error.__cause__
    if state["config"] != record:
        raise CheckpointError(f"`checkpoint` {str(path)!r} was written with different settings; pass resume=False "
                              f"(or another path) to start over")
    return state


@contextlib.contextmanager
def restoring(path: Path, *, argument: str = "checkpoint", kind: str = "meta-training") -> Iterator[None]:
    """Errors while rebuilding objects from a loaded checkpoint become a :class:`CheckpointError` naming the file."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"`{argument}` {str(path)!r} is a damaged metricopt {kind} checkpoint: "
                              f"{type(error).__name__}: {_first_sentence(error)}") from error


def atomic_save(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a kill mid-write leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_value(path: str | os.PathLike[str]) -> ValueFunction:
    """The value function stored in a :func:`meta_train` checkpoint (``weights_only`` load), on the CPU.

    Fine-tuning moves it to the adapter's device itself
    (:func:`~metricopt.blackbox.finetune.finetune`); elsewhere, ``.to(device)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: (a ``ValueError``) the file is truncated, corrupt, not a
            meta-training checkpoint of this format, or damaged; the message
            names the file and the problem.
    """
    path = Path(path)
    state = read_checkpoint(path, CHECKPOINT_FORMAT, keys=("value_config", "value_state"))
    with restoring(path, argument="path"):
        value = ValueFunction(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["value_config"].items()})
        value.load_state_dict(state["value_state"])
    return value


#: A checkpoint entry of a :class:`MetaLoop`: how to read it from the training, and how to restore it
#: on resuming (None: written for readers such as :func:`load_value`, not restored).
CheckpointEntry = tuple[Callable[[], Any], Callable[[Any], object] | None]


class MetaLoop(abc.ABC):
    """The meta-training skeleton both MetricOpt trainers share: :func:`meta_train` (the value
    function) and :func:`~metricopt.blackbox.learned.meta_train_learned` (the learned optimizer).

    :meth:`run` owns the loop over tasks and everything the two have in common:

    * resuming from ``checkpoint`` (:func:`resumable_state`, :func:`restoring`:
      the :class:`CheckpointError` messages) and writing it (:func:`atomic_save`)
      every ``checkpoint_every`` tasks and after the last;
    * task ``i``: drawn by :meth:`TaskDistribution.sample` from ``(seed, i)``,
      its rows of ``pool``, the warm-up (``i < warmup_tasks``);
    * the trajectories: a run with two or more observations is stored;
    * the normalisation: from the last warm-up task on, it is set from every
      stored trajectory until the value function first trains, then fixed;
    * the history rows and the ``progress`` callback.

    A method is a subclass that supplies what differs: :meth:`collect` (fine-tune
    on a task: the trajectory and the task's history row), :meth:`update` (train
    on it), :meth:`trained` (whether a row's task trained the value function),
    :meth:`checkpoint_entries` (what its checkpoint holds, in file order), and
    the class attributes below. The value function, the trajectories and the
    history are the loop's (:attr:`value`, :attr:`trajectories`, :attr:`history`).
    """

    #: The checkpoint's ``format`` string (read back by :func:`read_checkpoint`).
    checkpoint_format: ClassVar[str]
    #: The checkpoint kind the error messages name (``"meta-training"``, ``"learned-optimizer"``).
    kind: ClassVar[str]
    #: The name the checkpoint's record keeps the method's options under.
    config_name: ClassVar[str]
    #: Draw the tasks after the warm-up as guided (:meth:`TaskDistribution.sample` then draws a value weight).
    guided: ClassVar[bool]

    def __init__(self, adapter: Adapter, loss_fn: LossFn, metric: BlackBoxMetric, pool: TaskData, *, config: Any,
                 meta: MetaConfig, finetune_config: FineTuneConfig, distribution: TaskDistribution) -> None:
        """``config``: the method's options (recorded); ``meta``: the Reptile options and the loop's
        (``tasks``, ``warmup_tasks``, ``checkpoint_every``, ``seed``)."""
        self.adapter, self.loss_fn, self.metric, self.pool = adapter, loss_fn, metric, pool
        self.meta, self.finetune_config, self.distribution = meta, finetune_config, distribution
        self.value = ValueFunction(adapter.phi_size, hidden_sizes=meta.hidden_sizes, seed=meta.seed)
        self.value.to(adapter.phi.device)
        # The settings a checkpoint must have been written with to be resumed.
        self.record = {self.config_name: plain_record(config), "finetune": plain_record(finetune_config),
                       "distribution": plain_record(distribution), "phi_size": adapter.phi_size}
        self.trajectories: list[Trajectory] = []
        self.history: list[dict[str, float]] = []
        self.resumed_from: int | None = None
        self.task_started = math.nan  # the clock (time.perf_counter) at the start of the current task

    @staticmethod
    def check_adapter(adapter: Any) -> None:
        """The argument check both trainers make first."""
        if not isinstance(adapter, Adapter):
            raise TypeError(f"`adapter` must be a metricopt.blackbox Adapter; got {type(adapter).__name__}")

    @staticmethod
    def cost_columns(trajectory: Trajectory) -> dict[str, float]:
        """The history columns every method has: the observed costs, and the value loss (NaN until it trains)."""
        costs = trajectory.observed_costs
        return {"start_cost": costs[0] if costs else math.nan, "best_cost": min(costs, default=math.nan),
                "final_cost": costs[-1] if costs else math.nan, "value_loss": math.nan,
                "rank_correlation": math.nan}

    @abc.abstractmethod
    def collect(self, task: Task, data: TaskData, *, warmup: bool) -> tuple[Trajectory, dict[str, float]]:
        """Fine-tune on ``task`` (its rows: ``data``): its trajectory and its history row."""

    @abc.abstractmethod
    def update(self, task: Task, data: TaskData, row: dict[str, float], *, usable: bool) -> None:
        """Train after collecting ``task`` (from the last warm-up task on, the normalisation set); fill in ``row``.

        ``usable``: this task's trajectory was stored (it is ``trajectories[-1]``).
        """

    @abc.abstractmethod
    def trained(self, row: dict[str, float]) -> bool:
        """Whether the task of history row ``row`` trained the value function (its normalisation is then fixed)."""

    def finish_task(self, row: dict[str, float]) -> None:  # noqa: B027 (an optional hook)
        """Last words on ``row`` before it joins the history (nothing by default)."""

    def checkpoint_entries(self) -> dict[str, CheckpointEntry]:
        """What a checkpoint holds besides ``format``, ``next_task`` and ``config``, in file order.

        Resuming requires and restores, in this order, the entries with a restore function.
        """
        return self.shared_entries()

    def shared_entries(self) -> dict[str, CheckpointEntry]:
        """The entries every method's checkpoint holds: the value function, the trajectories, the history."""
        return {"value_config": (self._value_config, None),
                "value_state": (self.value.state_dict, self.value.load_state_dict),
                "trajectories": (lambda: [t.state() for t in self.trajectories], self._load_trajectories),
                "history": (lambda: self.history, self._load_history)}

    def _value_config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.value.config().items()}

    def _load_trajectories(self, states: list[dict[str, Any]]) -> None:
        self.trajectories = [Trajectory.from_state(s) for s in states]

    def _load_history(self, rows: list[dict[str, float]]) -> None:
        self.history = [dict(row) for row in rows]

    def run(self, checkpoint: str | os.PathLike[str] | None, resume: bool,
            progress: Callable[[dict[str, float]], None] | None) -> None:
        """The tasks from the checkpoint's next one (or the first) to ``meta.tasks``; see the class docstring."""
        meta, pool = self.meta, self.pool
        path = Path(checkpoint) if checkpoint is not None else None
        entries = self.checkpoint_entries()
        restored = {name: load for name, (_, load) in entries.items() if load is not None}
        start = 0
        state = resumable_state(path, resume, self.checkpoint_format, self.record, kind=self.kind,
                                keys=(*restored, "next_task"))
        if state is not None:
            with restoring(cast(Path, path), kind=self.kind):
                for name, load in restored.items():
                    load(state[name])
                start = self.resumed_from = int(state["next_task"])

        labels = pool.y_train.long().cpu()
        for index in range(start, meta.tasks):
            self.task_started = time.perf_counter()
            warmup = index < meta.warmup_tasks
            task = self.distribution.sample(index, seed=meta.seed, labels=labels, phi_size=self.adapter.phi_size,
                                            guided=self.guided and not warmup)
            data = pool.train_subset(task.indices)
            trajectory, row = self.collect(task, data, warmup=warmup)
            usable = len(trajectory.observed_steps) >= 2
            if usable:
                self.trajectories.append(trajectory)
            if index + 1 >= meta.warmup_tasks:
                # Fixed once the value function trains: its weights predict costs in these units.
                if self.trajectories and not any(self.trained(r) for r in self.history):
                    set_normalisation_from(self.value, self.trajectories)
                self.update(task, data, row, usable=usable)
            self.finish_task(row)
            self.history.append(row)
            if path is not None and ((index + 1) % meta.checkpoint_every == 0 or index + 1 == meta.tasks):
                atomic_save(path, {"format": self.checkpoint_format, "next_task": index + 1, "config": self.record,
                                   **{name: read() for name, (read, _) in entries.items()}})
            if progress is not None:
                progress(row)


class _ValueTraining(MetaLoop):
    """:func:`meta_train` in the shared loop: value-guided tasks after the warm-up, then Reptile or a joint fit."""

    checkpoint_format = CHECKPOINT_FORMAT
    kind = "meta-training"
    config_name = "meta"
    guided = True

    def __init__(self, adapter: Adapter, loss_fn: LossFn, metric: BlackBoxMetric, pool: TaskData, *,
                 config: MetaConfig, finetune_config: FineTuneConfig, distribution: TaskDistribution) -> None:
        super().__init__(adapter, loss_fn, metric, pool, config=config, meta=config, finetune_config=finetune_config,
                         distribution=distribution)
        self.replay = torch.Generator().manual_seed(config.seed)
        self.joint = inner_optimizer(self.value.parameters(), config.inner_learning_rate) if config.fit == "joint" \
            else None

    def checkpoint_entries(self) -> dict[str, CheckpointEntry]:
        entries = {**self.shared_entries(), "replay_generator": (self.replay.get_state, self.replay.set_state)}
        if self.joint is not None:
            entries["joint_optimizer"] = (self.joint.state_dict, self.joint.load_state_dict)
        return entries

    def collect(self, task: Task, data: TaskData, *, warmup: bool) -> tuple[Trajectory, dict[str, float]]:
        guided, finetune_config = not warmup, self.finetune_config
        task_config = dataclasses.replace(
            finetune_config, learning_rate=finetune_config.learning_rate * task.learning_rate_factor,
            value_weight=finetune_config.value_weight * task.value_weight_factor)
        run = finetune(self.adapter, self.loss_fn, self.metric, data, config=task_config,
                       value=self.value if guided else None, initial_phi=task.initial_phi, seed=task.seed)
        row = {"task": float(task.index), "value_weight": task_config.value_weight if guided else 0.0,
               **self.cost_columns(run.trajectory), "reptile_iterations": 0.0, "joint_steps": 0.0,
               "collect_seconds": time.perf_counter() - self.task_started, "update_seconds": 0.0}
        return run.trajectory, row

    def update(self, task: Task, data: TaskData, row: dict[str, float], *, usable: bool) -> None:
        # The newest stored trajectory: this task's, or an earlier one when this run got too few observations.
        started = time.perf_counter()
        trajectories = self.trajectories
        if not trajectories:
            return
        if usable and any(self.trained(r) for r in self.history):
            # Held out: this task's trajectory before Reptile trains on it (metricopt.blackbox.diagnostics).
            row["rank_correlation"] = predict_held_out(self.value, trajectories[-1])
        row["value_loss"] = adapt_value(self.value, trajectories[-1], steps=0)
        if self.joint is not None:
            fit_observations(self.value, trajectories, self.joint, steps=self.meta.joint_steps)
            row["joint_steps"] = float(self.meta.joint_steps)
        else:
            iterations = [len(trajectories) - 1] + torch.randint(
                0, len(trajectories), (self.meta.replay,), generator=self.replay).tolist()
            for position in iterations:
                reptile_step(self.value, trajectories[position], self.meta)
            row["reptile_iterations"] = float(len(iterations))
        row["update_seconds"] = time.perf_counter() - started

    def trained(self, row: dict[str, float]) -> bool:
        return row["reptile_iterations"] > 0 or row.get("joint_steps", 0.0) > 0


def meta_train(
    adapter: Adapter,
    loss_fn: LossFn,
    metric: BlackBoxMetric,
    pool: TaskData,
    *,
    finetune_config: FineTuneConfig = FineTuneConfig(),
    config: MetaConfig = MetaConfig(),
    distribution: TaskDistribution = TaskDistribution(),
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> MetaResult:
    """Meta-train a value function for ``metric`` on tasks drawn from ``pool``.

    Args:
        adapter: the frozen backbone with its adapter (``phi`` is reset per task).
        loss_fn: the fine-tuning loss ``f(logits, target)``.
        metric: the black-box metric.
        pool: training rows tasks draw their subsets from, and the validation
            rows every task's metric is observed on.
        finetune_config: the per-task fine-tuning budget (its ``learning_rate``
            and ``value_weight`` are scaled by each task's factors).
        config: Reptile options.
        distribution: how tasks vary.
        checkpoint: file to checkpoint to; with ``resume`` an existing file
            written with the same settings is continued.
        resume: continue from ``checkpoint`` if it exists (False: start over).
        progress: called after each task with its history row.

    Returns:
        A :class:`MetaResult`.
    """
    MetaLoop.check_adapter(adapter)
    training = _ValueTraining(adapter, loss_fn, metric, pool, config=config, finetune_config=finetune_config,
                              distribution=distribution)
    training.run(checkpoint, resume, progress)
    if not any(training.trained(row) for row in training.history):
        raise ValueError(f"meta-training got no run with 2 successful observations of metric {metric.name!r} "
                         f"in {config.tasks} tasks: the value function was never trained")
    return MetaResult(training.value, training.trajectories, training.history, training.resumed_from)
