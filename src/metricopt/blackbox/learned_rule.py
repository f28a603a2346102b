"""MetricOpt (learned), the update rule: a per-coordinate MLP ``m_w`` in place of SGD/Adam.

Method: Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021, supplementary section 2 (Eq. 1), with the rule's
form taken from Metz, Maheswaranathan, Nixon, Freeman and Sohl-Dickstein,
"Understanding and correcting pathologies in the training of learned
optimizers", ICML 2019. :mod:`~metricopt.blackbox.learned` meta-trains the rule;
every choice the two papers leave open is marked DECIDED below, with its reason.

:class:`LearnedOptimizer` is the update rule ``m_w`` (an ``nn.Module``; ``w`` are
its weights). It implements the :class:`~metricopt.blackbox.finetune.UpdateRule`
protocol (``reset(phi)``, ``step(phi, gradient, loss, cost)``), so the one
fine-tuning loop :func:`~metricopt.blackbox.finetune.finetune` runs it, and
:meth:`LearnedOptimizer.update` is the same step as a pure, differentiable
function of ``(phi, gradient, state, loss, cost)`` and, optionally, of the
weights (``parameters=``).

Stated by the MetricOpt supplementary:

* An MLP (not an LSTM: truncated back-propagation through an LSTM optimizer gives
  biased or exploding gradients, Metz et al.) maps the loss gradient
  ``grad_t``, its exponential running average, the current ``phi_t``, the
  scale-normalised loss ``l_t`` and metric ``M_t`` and their relative changes from
  their moving averages to an update direction ``u_t`` and a step size
  ``alpha_t``: ``phi_{t+1} = phi_t + alpha_t u_t`` (Eq. 1; Algorithm 1 writes
  ``-``; a learned ``u`` makes the sign a convention).

Taken from Metz et al. (2019), which the supplementary cites for the rule: a
per-coordinate MLP shared across coordinates, outputting a direction and a log
step size (``base_step * u * exp(s)``, their ``lambda_1 d exp(lambda_2 m)``).

DECIDED here (both papers are silent or leave a choice):

* Rule inputs, per coordinate ``i`` (7 features; the first three are divided
  by ``rms_t``, a running RMS of the gradient, so that features 1 and 2 do not
  depend on the gradient's scale):

  1. ``grad_t[i] / rms_t``;
  2. ``avg_t[i] / rms_t``, ``avg_t`` the exponential average of the gradient
     with ``beta = 0.9``, bias-corrected as in Adam;
  3. ``phi_t[i] / rms_t`` (unlike 1 and 2 this one does depend on the
     gradient's scale: ``phi`` has its own units; the bound below keeps it
     finite when the gradient vanishes);
  4. ``l_t / l_0``, the loss scaled by the run's first loss;
  5. ``(l_t - lbar) / |lbar|``, the relative change of the loss from its
     moving average ``lbar`` (``beta = 0.9``, over the previous steps);
  6. the latest observed metric cost divided by the run's first observed cost
     (sample-and-hold between the ``K`` sparse observations, 0 before the first);
  7. its relative change from its moving average (``beta = 0.9``, updated every
     step on the held value, so it spikes when a new observation arrives and
     decays while the value is held; 0 before the first observation).

  ``rms_t`` is ONE number per step, ``sqrt`` of the bias-corrected exponential
  average (``beta = 0.99``) of ``mean_i grad_t[i]^2``, not a per-coordinate
  second moment: it keeps the relative sizes of the coordinates, so the
  untrained rule is gradient descent rather than sign descent (Adam at step 1).
  Features 4-7 are the same for every coordinate (broadcast).
* Bounds: every feature passes through ``10 tanh(x / 10)`` (identity near 0, at
  most 10), and the log step size through ``5 tanh(s / 5)``: a huge
  ``phi / rms`` late in a run, or a perturbed weight, cannot produce an
  overflowing step, and gradients stay non-zero (a hard clamp would cut them).
  Denominators have floors: ``1e-6`` for losses, ``1e-3`` for costs
  (:data:`LOSS_EPS`, :data:`COST_FLOOR`; the objective of
  :mod:`~metricopt.blackbox.learned_objective` uses the same two).
* Output and initialisation: ``u = -feature_1 + r``, ``alpha = base_step *
  exp(s)``, where ``(r, s)`` is the MLP output ``7 -> 32 -> 32 -> 2`` (SiLU) whose
  last layer starts at zero. The untrained rule is therefore exactly the
  normalised gradient step ``phi - base_step * grad / rms`` (within the
  feature bound; ``base_step = 0.01`` by default), so learning starts from a
  sensible optimizer; the
  residual form keeps that prior at any weights. The hidden layers are drawn
  like PyTorch's ``nn.Linear`` default from a ``torch.Generator`` seeded by
  ``seed``. ``alpha`` is per coordinate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from metricopt._checks import check_integer, check_positive, check_tensor, describe

__all__ = ["COST_FLOOR", "FEATURES", "LOSS_EPS", "LearnedOptimizer"]

#: The rule's inputs per coordinate, in order (module docstring).
FEATURES = ("gradient", "gradient_average", "phi", "loss", "loss_change", "cost", "cost_change")

_AVERAGE = 0.9  # gradient, loss and cost moving averages
_SECOND_MOMENT = 0.99  # the running mean square of the gradient
_FEATURE_BOUND = 10.0  # features pass through B tanh(x / B)
_LOG_STEP_BOUND = 5.0  # log step sizes pass through B tanh(s / B)
LOSS_EPS = 1e-6  # epsilon of L_loss and floor of loss denominators
COST_FLOOR = 1e-3  # floor of cost denominators (the metric features and L_metric)
_TINY = 1e-24  # inside sqrt: keeps the RMS and its gradient finite for a zero gradient


# --------------------------------------------------------------------------- the update rule


class LearnedOptimizer(nn.Module):
    """A per-coordinate MLP update rule for the adapter parameters ``phi`` (MetricOpt Eq. 1).

    Per step: ``phi_{t+1} = phi_t + base_step * u * exp(s)`` with
    ``u = -x_1 + r`` and ``(r, s) = MLP(x)``, where ``x`` holds the 7 features of
    :data:`FEATURES` for each coordinate (module docstring). The MLP's last layer
    starts at zero, so the untrained rule is the normalised gradient step
    ``phi - base_step * grad / rms``.

    Args:
        hidden: width of the two hidden layers.
        base_step: the step size at ``s = 0``.
        seed: seeds the hidden layers' initial weights (a private ``torch.Generator``).

    Attributes:
        state: the running state of the current run (set by :meth:`reset`,
            advanced by :meth:`step`); None before the first :meth:`reset`.

    >>> rule = LearnedOptimizer(base_step=0.1)
    >>> phi = torch.zeros(3)
    >>> rule.reset(phi)
    >>> gradient = torch.tensor([1.0, -2.0, 0.5])
    >>> next_phi = rule.step(phi, gradient, loss=1.0, cost=None)
    >>> normalised = gradient / gradient.square().mean().sqrt()
    >>> torch.allclose(next_phi, -0.1 * 10 * torch.tanh(normalised / 10))  # bounded normalised gradient step
    True
    """

    def __init__(self, *, hidden: int = 32, base_step: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        self.hidden = check_integer("hidden", hidden, 1)
        self.base_step = check_positive("base_step", base_step)
        self.seed = check_integer("seed", seed, 0)
        generator = torch.Generator().manual_seed(self.seed)
        widths = (len(FEATURES), self.hidden, self.hidden, 2)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            # skip_init: nn.Linear's own initialisation would draw from (and advance) the global RNG.
            linear = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            last = i == len(widths) - 2
            bound = 0.0 if last else 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_((torch.rand(linear.weight.shape, generator=generator) * 2 - 1) * bound)
                linear.bias.copy_((torch.rand(linear.bias.shape, generator=generator) * 2 - 1) * bound)
            layers.append(linear)
            if not last:
                layers.append(nn.SiLU())
        self.network = nn.Sequential(*layers)
        self.state: dict[str, Tensor] | None = None

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., 7)`` bounded features -> the direction residual ``r`` and the raw log step ``s``, each ``(...)``."""
        output = self.network(features)
        return output[..., 0], output[..., 1]

    def initial_state(self, phi: Tensor) -> dict[str, Tensor]:
        """The state at the start of a run on ``phi`` (zeros; nothing observed yet).

        Keys: ``step`` (steps taken), ``gradient_average`` ``(P,)``,
        ``square_average`` (of ``mean grad^2``), ``first_loss``, ``loss_average``,
        ``has_cost``, ``first_cost``, ``cost_average``.
        """
        check_tensor("phi", phi)
        if phi.ndim != 1 or not phi.is_floating_point():
            raise ValueError(f"`phi` must be a floating (phi_size,) tensor; got {describe(phi)}")
        zero = torch.zeros((), dtype=phi.dtype, device=phi.device)
        return {
            "step": torch.zeros((), dtype=torch.int64),
            "gradient_average": torch.zeros_like(phi).detach(),
            "square_average": zero,
            "first_loss": zero,
            "loss_average": zero,
            "has_cost": torch.zeros((), dtype=torch.bool),
            "first_cost": zero,
            "cost_average": zero,
        }

    def update(
        self,
        phi: Tensor,
        gradient: Tensor,
        state: Mapping[str, Tensor],
        loss: Tensor | float,
        cost: Tensor | float | None,
        *,
        parameters: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One step as a pure function: ``(next_phi, new_state)``; ``state`` is not modified.

        Differentiable with respect to every tensor input and to the weights
        (``self``'s, or ``parameters``, a mapping from parameter names to tensors
        used instead, as in ``torch.func.functional_call``).

        Devices and dtypes follow ``phi``: the step is computed on ``phi``'s
        device in its dtype, weights and state held elsewhere (a rule loaded on
        the CPU guiding a CUDA adapter) are moved there for the call, and the
        result lives there. The state's ``step`` and ``has_cost`` stay on the
        CPU (they are read on the host every step).

        Args:
            phi: ``(P,)`` current adapter parameters.
            gradient: ``(P,)`` loss gradient at ``phi``.
            state: from :meth:`initial_state` or a previous call.
            loss: the step's loss (a number or a 0-dim tensor).
            cost: the latest observed metric cost, or None before the first observation.
            parameters: weights to use instead of the module's own.
        """
        if gradient.shape != phi.shape:
            raise ValueError(f"`gradient` must have the shape of `phi` {tuple(phi.shape)}; got {describe(gradient)}")
        like = {"dtype": phi.dtype, "device": phi.device}
        # Devices follow phi: a state or weights from elsewhere (a rule loaded on the CPU) move to it.
        state = {key: tensor.to(phi.device) if tensor.is_floating_point() else tensor for key, tensor in state.items()}
        steps_taken = int(state["step"])
        t = steps_taken + 1
        gradient_average = _AVERAGE * state["gradient_average"] + (1 - _AVERAGE) * gradient
        square_average = _SECOND_MOMENT * state["square_average"] + (1 - _SECOND_MOMENT) * gradient.square().mean()
        rms = torch.sqrt(square_average / (1 - _SECOND_MOMENT**t) + _TINY)
        average = gradient_average / (1 - _AVERAGE**t)

        loss = torch.as_tensor(loss, **like)
        first_loss = loss if steps_taken == 0 else state["first_loss"]
        loss_average = loss if steps_taken == 0 else state["loss_average"]
        loss_scaled = loss / (first_loss.abs() + LOSS_EPS)
        loss_change = (loss - loss_average) / (loss_average.abs() + LOSS_EPS)

        has_cost, first_cost, cost_average = state["has_cost"], state["first_cost"], state["cost_average"]
        if cost is None:
            cost_scaled = cost_change = torch.zeros((), **like)
        else:
            cost = torch.as_tensor(cost, **like)
            if not bool(has_cost):
                has_cost, first_cost, cost_average = torch.ones((), dtype=torch.bool), cost, cost
            cost_scaled = cost / first_cost.abs().clamp_min(COST_FLOOR)
            cost_change = (cost - cost_average) / cost_average.abs().clamp_min(COST_FLOOR)
            cost_average = _AVERAGE * cost_average + (1 - _AVERAGE) * cost

        scalars = torch.stack([loss_scaled, loss_change, cost_scaled, cost_change])
        features = torch.cat(
            [torch.stack([gradient / rms, average / rms, phi / rms], dim=-1), scalars.expand(*phi.shape, 4)], dim=-1
        )
        features = _FEATURE_BOUND * torch.tanh(features / _FEATURE_BOUND)
        weights = dict(self.named_parameters()) if parameters is None else dict(parameters)
        if any(w.device != phi.device or w.dtype != phi.dtype for w in weights.values()):
            weights = {name: w.to(**like) for name, w in weights.items()}  # differentiable: gradients reach w
            residual, log_step = torch.func.functional_call(self, weights, (features,))
        elif parameters is None:
            residual, log_step = self(features)
        else:
            residual, log_step = torch.func.functional_call(self, weights, (features,))
        direction = -features[..., 0] + residual
        log_step = _LOG_STEP_BOUND * torch.tanh(log_step / _LOG_STEP_BOUND)
        next_phi = phi + self.base_step * direction * torch.exp(log_step)
        new_state = {
            "step": torch.tensor(t, dtype=torch.int64),
            "gradient_average": gradient_average,
            "square_average": square_average,
            "first_loss": first_loss,
            "loss_average": _AVERAGE * loss_average + (1 - _AVERAGE) * loss,
            "has_cost": has_cost,
            "first_cost": first_cost,
            "cost_average": cost_average,
        }
        return next_phi, new_state

    def reset(self, phi: Tensor) -> None:
        """Start a run at ``phi`` (the :class:`~metricopt.blackbox.finetune.UpdateRule` protocol)."""
        self.state = self.initial_state(phi.detach())

    @torch.no_grad()
    def step(self, phi: Tensor, gradient: Tensor, loss: float, cost: float | None) -> Tensor:
        """The next ``phi`` (no autograd graph); advances :attr:`state`. Call :meth:`reset` first."""
        if self.state is None:
            raise RuntimeError("call reset(phi) before step(): the rule has no running state")
        next_phi, self.state = self.update(phi.detach(), gradient.detach(), self.state, loss, cost)
        return next_phi

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``LearnedOptimizer(**rule.config())`` rebuilds the architecture."""
        return {"hidden": self.hidden, "base_step": self.base_step, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, base_step={self.base_step}"


