"""Adapters: a small trainable vector phi steering a frozen pre-trained backbone.

Method: Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021. MetricOpt never changes the
pre-trained weights theta: fine-tuning moves only a small vector phi, and the value
function f_w(phi) learns to predict the black-box metric from phi alone.

Stated by the paper (supplementary material):

* The backbone is frozen; phi is the only thing fine-tuning changes.
* Fully connected nets: phi is concatenated to the input of the first layer (a
  dynamic bias, as in CAVIA): :class:`InputBias`.
* Conv nets: phi drives FiLM layers that scale and shift each feature map,
  ``h' = rho_c h + b_c`` per channel c: :class:`FiLM`.
* ``|phi| = 128`` worked, and results were robust to its size (``phi_size=128``).

DECIDED here (the paper is silent):

* phi reaches the network through FIXED random projections drawn from a seeded
  ``torch.Generator`` and stored as buffers (saved in ``state_dict()``, frozen):
  ``W_phi`` for :class:`InputBias` and ``A_l, B_l`` per layer for :class:`FiLM`,
  each ``~ N(0, scale^2 / phi_size)``, so a phi with coordinates of size 1 shifts
  each unit by about ``scale``. The backbone and the adapters stay frozen and phi
  is the only trainable vector, which is what the value function needs.
* FiLM is parametrised as ``h' = (1 + A_l phi) * h + B_l phi`` (``rho = 1 + A_l phi``,
  ``b = B_l phi``), so ``phi = 0`` is the identity.
* ``phi`` starts at 0, and ``phi = 0`` reproduces the backbone's output exactly
  (bitwise: ``h * 1 + 0 == h``).
* The backbone is attached with forward hooks, never rewritten. The hooks live in
  the backbone, so ``adapter.backbone(x)`` is adapted too (by ``adapter.phi``)
  until :meth:`Adapter.remove`. Building an adapter freezes the backbone in place
  (``requires_grad_(False)``, eval mode, which also switches dropout off); the
  adapter's ``train()`` leaves the backbone in eval mode, so BatchNorm statistics
  never move. :meth:`Adapter.remove` removes the hooks only; it does not unfreeze.
* ``forward(x, phi=...)`` runs with the given tensor instead of ``adapter.phi``
  (gradients flow into it), for unrolled or functional use;
  ``torch.func.functional_call(adapter, {"phi": p}, (x,))`` works as well.
* Devices follow the backbone: phi and the projections start on the device of
  the backbone's first floating tensor and move with ``adapter.to(...)``; a
  hook moves phi and the projections to the device of the output it modulates,
  so a backbone moved on its own (``adapter.backbone.cuda()``) or a ``phi=``
  on another device still works (phi's gradient comes back to phi's device).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.utils.hooks import RemovableHandle

from metricopt._checks import check_finite, check_positive, check_tensor, describe

__all__ = ["Adapter", "FiLM", "InputBias"]


def _check_phi_size(phi_size: Any) -> int:
    if isinstance(phi_size, bool) or not isinstance(phi_size, numbers.Integral):
        raise TypeError(f"`phi_size` must be an integer >= 1; got {describe(phi_size)}")
    if phi_size < 1:
        raise ValueError(f"`phi_size` must be an integer >= 1; got {phi_size!r}")
    return int(phi_size)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an integer; got {describe(seed)}")
    return int(seed)


def _reference(backbone: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the backbone's first floating tensor (phi and the projections follow it)."""
    for tensor in (*backbone.parameters(), *backbone.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


def _projection(rows: int, phi_size: int, scale: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """A ``(rows, phi_size)`` matrix ~ N(0, scale^2 / phi_size), drawn on the CPU for reproducibility."""
    weight = torch.randn(rows, phi_size, generator=generator, dtype=torch.float32)
    return (weight * (scale / phi_size**0.5)).to(dtype=like.dtype, device=like.device)


def _follow(phi: Tensor, output: Tensor) -> Tensor:
    """``phi`` on the device of the layer output it modulates (differentiable: its gradient comes back)."""
    return phi if phi.device == output.device else phi.to(output.device)


def _few(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class Adapter(nn.Module):
    """Base class: a frozen ``backbone`` steered by the trainable vector ``phi``.

    Subclasses attach forward hooks with :meth:`_attach`; inside a hook,
    :meth:`current_phi` is the vector in use (the ``phi=`` argument of
    :meth:`forward`, else ``self.phi``). The base class alone adds no hook: it
    is the plain frozen backbone.

    Args:
        backbone: the pre-trained network; frozen in place (every parameter gets
            ``requires_grad=False``; it is put and kept in eval mode).
        phi_size: length of phi (the paper used 128).

    Attributes:
        backbone: the wrapped network.
        phi: ``nn.Parameter`` of shape ``(phi_size,)``, initialised to 0.

    >>> adapter = InputBias(nn.Sequential(nn.Linear(3, 2)), phi_size=4)
    >>> [name for name, p in adapter.named_parameters() if p.requires_grad]
    ['phi']
    >>> adapter.backbone.training, adapter.train().backbone.training
    (False, False)
    """

    def __init__(self, backbone: nn.Module, *, phi_size: int = 128) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"`backbone` must be a torch.nn.Module; got {type(backbone).__name__}")
        phi_size = _check_phi_size(phi_size)
        backbone.requires_grad_(False)
        backbone.eval()
        self.backbone = backbone
        dtype, device = _reference(backbone)
        self.phi = nn.Parameter(torch.zeros(phi_size, dtype=dtype, device=device))
        # Plain attributes, not module state: hook handles and the stack of phi
        # tensors in use (a list, so an nn.Parameter passed as `phi=` is never
        # registered as a parameter of the adapter).
        self._handles: list[RemovableHandle] = []
        self._phi_stack: list[Tensor] = []
        self._removed = False

    @property
    def phi_size(self) -> int:
        """Length of phi."""
        return self.phi.shape[0]

    def _attach(self, module: nn.Module, hook: Any) -> None:
        self._handles.append(module.register_forward_hook(hook))

    def current_phi(self) -> Tensor:
        """The phi the hooks use now: the ``phi=`` argument inside :meth:`forward`, else ``self.phi``."""
        return self._phi_stack[-1] if self._phi_stack else self.phi

    def _check_phi(self, name: str, phi: Any) -> Tensor:
        check_tensor(name, phi)
        if phi.shape != (self.phi_size,):
            raise ValueError(f"`{name}` must have shape ({self.phi_size},); got {describe(phi)}")
        if not phi.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor; got {describe(phi)}")
        return phi

    def forward(self, x: Any, phi: Tensor | None = None) -> Any:
        """Run the backbone on ``x`` with the adapter applied.

        Args:
            x: the backbone's input (passed through unchanged).
            phi: ``(phi_size,)`` vector used instead of ``self.phi`` for this call;
                gradients flow into it (and not into ``self.phi``).

        Raises:
            RuntimeError: after :meth:`remove`.
        """
        if self._removed:
            raise RuntimeError("this adapter's hooks were removed by remove(); build a new adapter")
        if phi is None:
            return self.backbone(x)
        self._phi_stack.append(self._check_phi("phi", phi))
        try:
            return self.backbone(x)
        finally:
            self._phi_stack.pop()

    def train(self, mode: bool = True) -> Adapter:
        """Set the adapter's mode; the backbone stays in eval mode (BatchNorm stats and dropout frozen)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: ``[self.phi]`` (give these to the optimiser)."""
        return [self.phi]

    @torch.no_grad()
    def reset_phi(self, value: Tensor | None = None) -> None:
        """Set phi in place, without recording gradients: to zeros, or to a copy of ``value``.

        Raises:
            TypeError, ValueError: if ``value`` is not a finite ``(phi_size,)`` tensor.
        """
        if value is None:
            self.phi.zero_()
            return
        value = self._check_phi("value", value)
        check_finite("value", value)
        self.phi.copy_(value)

    def remove(self) -> None:
        """Remove the hooks: the backbone computes its original output again (it stays frozen)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._removed = True

    def extra_repr(self) -> str:
        return f"phi_size={self.phi_size}" + (", removed" if self._removed else "")


class InputBias(Adapter):
    """phi concatenated to the input of the first fully connected layer (CAVIA's dynamic bias).

    For the first layer ``y = W x + b``, concatenating phi to its input with frozen
    extra weight columns ``W_phi`` gives

        ``[W | W_phi] [x; phi] + b = W x + b + W_phi phi``,

    so the adapter adds ``W_phi phi`` (shape ``(out_features,)``, broadcast over the
    batch and any leading dims) to that layer's output with a forward hook; the
    layer itself is not rewritten. ``W_phi`` is the buffer :attr:`phi_weight`,
    ``(out_features, phi_size) ~ N(0, scale^2 / phi_size)`` from ``torch.Generator``
    seeded with ``seed`` (DECIDED: fixed and random; the paper does not say).

    Args:
        backbone: the pre-trained network (frozen in place).
        phi_size: length of phi (the paper used 128).
        layer: dotted name (as in ``backbone.named_modules()``) of the first layer,
            an ``nn.Linear``. Default: the first ``nn.Linear`` in
            ``backbone.modules()`` order; a convolution before it is an error
            (use :class:`FiLM` for conv nets, or name the layer).
        seed: seed of the projection ``W_phi``.
        scale: standard deviation of ``W_phi phi`` per unit when every coordinate
            of phi has size 1.

    Raises:
        ValueError: unknown ``layer`` name, ``phi_size < 1``, ``scale <= 0``.
        TypeError: ``layer`` is not an ``nn.Linear``.

    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x, phi = torch.randn(5, 3), torch.randn(8)
    >>> before = net(x)
    >>> adapter = InputBias(net, phi_size=8)
    >>> adapter.layer, tuple(adapter.phi_weight.shape)
    ('0', (4, 8))
    >>> torch.equal(adapter(x), before)  # phi = 0: the backbone itself
    True
    >>> first = nn.Linear(3 + 8, 4)  # the first layer with phi concatenated to its input
    >>> with torch.no_grad():
    ...     _ = first.weight.copy_(torch.cat([net[0].weight, adapter.phi_weight], dim=1))
    ...     _ = first.bias.copy_(net[0].bias)
    >>> explicit = net[2](net[1](first(torch.cat([x, phi.expand(5, 8)], dim=1))))
    >>> torch.allclose(adapter(x, phi=phi), explicit, atol=1e-6)
    True
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        phi_size: int = 128,
        layer: str | None = None,
        seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        super().__init__(backbone, phi_size=phi_size)
        scale = check_positive("scale", scale)
        seed = _check_seed(seed)
        self.layer = _first_linear(backbone, layer)
        module = backbone.get_submodule(self.layer)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("phi_weight", _projection(module.out_features, self.phi_size, scale, generator, self.phi))
        self.seed, self.scale = seed, scale
        self._attach(module, self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        phi = _follow(self.current_phi(), output)
        shift = F.linear(phi, self.phi_weight.to(device=phi.device, dtype=phi.dtype))
        return output + shift.to(output.dtype)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, {super().extra_repr()}, seed={self.seed}, scale={self.scale}"


def _first_linear(backbone: nn.Module, layer: Any) -> str:
    """Dotted name of the layer :class:`InputBias` hooks (checked to be an ``nn.Linear``)."""
    modules = dict(backbone.named_modules())
    if layer is None:
        for name, module in modules.items():
            if isinstance(module, nn.Linear):
                return name
            if isinstance(module, _ConvNd):
                raise TypeError(
                    f"InputBias concatenates phi to the input of a fully connected first layer, but the "
                    f"backbone's first layer {name!r} is {type(module).__name__}; use FiLM for conv nets "
                    "or pass `layer=` (the dotted name of an nn.Linear)"
                )
        raise TypeError("InputBias needs an nn.Linear first layer; the backbone has none (use FiLM for conv nets)")
    if not isinstance(layer, str):
        raise TypeError(f"`layer` must be a dotted module name (str) or None; got {describe(layer)}")
    if layer not in modules:
        raise ValueError(
            f"`layer` {layer!r} is not a module of the backbone; valid names include {_few(list(modules))}"
        )
    if not isinstance(modules[layer], nn.Linear):
        raise TypeError(
            f"`layer` {layer!r} is {type(modules[layer]).__name__}, not nn.Linear: InputBias concatenates phi to "
            "a fully connected layer's input; use FiLM for convolutional layers"
        )
    return layer


def _channels(module: nn.Module) -> tuple[int, int] | None:
    """``(channels, channel dim)`` of a module's output that FiLM can modulate, or None.

    Linear: the last dim. Convolutions: the dim before the spatial ones (1 when
    batched, 0 for an unbatched input). BatchNorm and GroupNorm: dim 1.
    """
    if isinstance(module, nn.Linear):
        return module.out_features, -1
    if isinstance(module, _ConvNd):
        return module.out_channels, -(len(module.kernel_size) + 1)
    if isinstance(module, _BatchNorm):
        return module.num_features, 1
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, 1
    return None


class FiLM(Adapter):
    """Feature-wise scale and shift of chosen layers' outputs, driven by phi (FiLM).

    For each chosen layer l with C_l output channels (feature maps), the output h
    becomes

        ``h'[c] = (1 + A_l phi)[c] * h[c] + (B_l phi)[c]``

    per channel c: dim 1 of a convolution's ``(B, C, L)`` / ``(B, C, H, W)`` /
    ``(B, C, D, H, W)`` output (dim 0 unbatched), the last dim of a Linear's
    ``(B, ..., F)`` output, dim 1 of a BatchNorm or GroupNorm output. This is the
    paper's ``h' = rho_c h + b_c`` with ``rho = 1 + A_l phi`` and ``b = B_l phi``.
    ``A_l`` and ``B_l`` are fixed random ``(C_l, phi_size) ~ N(0, scale^2 / phi_size)``
    buffers ``film_scale_{i}`` and ``film_shift_{i}`` (i = position in
    :attr:`film_layers`), drawn in that order from one ``torch.Generator`` seeded
    with ``seed`` (DECIDED: the paper does not say how phi maps to the FiLM
    parameters; fixed projections keep everything but phi frozen).

    Args:
        backbone: the pre-trained network (frozen in place).
        phi_size: length of phi (the paper used 128).
        layers: which layers to modulate: a dotted name (as in
            ``backbone.named_modules()``), a module type (every instance), or a
            sequence of both (their union, in ``named_modules()`` order). Default:
            every ``nn.Conv1d/2d/3d`` and every ``nn.Linear`` except the last
            ``nn.Linear`` (the output layer). Supported modules: Linear,
            convolutions, BatchNorm, GroupNorm.
        seed: seed of the projections.
        scale: standard deviation of ``A_l phi`` and ``B_l phi`` per channel when
            every coordinate of phi has size 1.

    Attributes:
        film_layers: tuple of the chosen layers' dotted names.

    Raises:
        ValueError: unknown layer name (a few valid names are listed), no layer
            selected, ``phi_size < 1``, ``scale <= 0``.
        TypeError: a selected module FiLM cannot modulate.

    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    >>> x = torch.randn(5, 1, 4, 4)
    >>> before = net(x)
    >>> adapter = FiLM(net, phi_size=8)
    >>> adapter.film_layers, tuple(adapter.film_scale_0.shape)
    (('0',), (3, 8))
    >>> torch.equal(adapter(x), before)  # phi = 0: the backbone itself
    True
    >>> phi = torch.ones(8, requires_grad=True)
    >>> adapter(x, phi=phi).sum().backward()
    >>> phi.grad.shape, adapter.phi.grad is None
    (torch.Size([8]), True)
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        phi_size: int = 128,
        layers: str | type | Sequence[str | type] | None = None,
        seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        super().__init__(backbone, phi_size=phi_size)
        scale = check_positive("scale", scale)
        seed = _check_seed(seed)
        self.film_layers = _select_film_layers(backbone, layers)
        self.seed, self.scale = seed, scale
        generator = torch.Generator().manual_seed(seed)
        for index, name in enumerate(self.film_layers):
            module = backbone.get_submodule(name)
            channels, dim = _channels(module)  # type: ignore[misc]  # checked by the selection
            self.register_buffer(
                f"film_scale_{index}", _projection(channels, self.phi_size, scale, generator, self.phi)
            )
            self.register_buffer(
                f"film_shift_{index}", _projection(channels, self.phi_size, scale, generator, self.phi)
            )
            self._attach(module, functools.partial(self._hook, index, dim))

    def projections(self, index: int) -> tuple[Tensor, Tensor]:
        """``(A_l, B_l)`` of the ``index``-th layer of :attr:`film_layers`."""
        return getattr(self, f"film_scale_{index}"), getattr(self, f"film_shift_{index}")

    def _hook(self, index: int, dim: int, module: nn.Module, inputs: Any, output: Any) -> Tensor:
        name = self.film_layers[index]
        scale_weight, shift_weight = self.projections(index)
        channels = scale_weight.shape[0]
        if not isinstance(output, Tensor) or output.ndim == 0 or output.shape[dim] != channels:
            raise RuntimeError(
                f"FiLM layer {name!r} expected an output with {channels} channels in dim {dim}; got {describe(output)}"
            )
        phi = _follow(self.current_phi(), output)
        rho = 1 + F.linear(phi, scale_weight.to(device=phi.device, dtype=phi.dtype))
        shift = F.linear(phi, shift_weight.to(device=phi.device, dtype=phi.dtype))
        trailing = (1,) * (-dim - 1 if dim < 0 else output.ndim - dim - 1)
        rho, shift = rho.reshape(channels, *trailing), shift.reshape(channels, *trailing)
        return output * rho.to(output.dtype) + shift.to(output.dtype)

    def extra_repr(self) -> str:
        return f"film_layers={self.film_layers}, {super().extra_repr()}, seed={self.seed}, scale={self.scale}"


def _select_film_layers(backbone: nn.Module, layers: Any) -> tuple[str, ...]:
    """Dotted names of the layers :class:`FiLM` modulates, in ``named_modules()`` order."""
    modules = dict(backbone.named_modules())
    if layers is None:
        linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
        last = linears[-1] if linears else None
        chosen = {
            name
            for name, m in modules.items()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or (isinstance(m, nn.Linear) and name != last)
        }
        if not chosen:
            raise ValueError(
                "FiLM found no layer to modulate: the backbone has no Conv1d/2d/3d and no nn.Linear besides its "
                "output layer; pass `layers=` or use InputBias for a one-layer net"
            )
    else:
        entries = [layers] if isinstance(layers, (str, type)) else layers
        if not isinstance(entries, Sequence) or not entries:
            raise TypeError(
                f"`layers` must be a name, a module type, a non-empty sequence of them or None; got {describe(layers)}"
            )
        chosen = set()
        for entry in entries:
            if isinstance(entry, str):
                if entry not in modules:
                    raise ValueError(
                        f"`layers` entry {entry!r} is not a module of the backbone; "
                        f"valid names include {_few(list(modules))}"
                    )
                chosen.add(entry)
            elif isinstance(entry, type) and issubclass(entry, nn.Module):
                chosen.update(name for name, m in modules.items() if isinstance(m, entry))
            else:
                raise TypeError(f"`layers` entries must be dotted names or nn.Module types; got {describe(entry)}")
        if not chosen:
            raise ValueError(f"`layers` {describe(layers)} matches no module of the backbone")
    ordered = tuple(name for name in modules if name in chosen)
    for name in ordered:
        if _channels(modules[name]) is None:
            raise TypeError(
                f"`layers` selects {name!r}, a {type(modules[name]).__name__}; FiLM modulates nn.Linear, "
                "convolution, BatchNorm and GroupNorm outputs"
            )
    return ordered
