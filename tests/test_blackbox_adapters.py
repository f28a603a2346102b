"""Tests for metricopt.blackbox.adapters: InputBias and FiLM on frozen backbones.

Properties: phi = 0 is the backbone bitwise; training phi leaves the backbone's
state bitwise unchanged and its BatchNorm statistics still; gradients reach phi (or
the ``phi=`` tensor, and then only it); InputBias equals an explicit concatenation of
phi to the first layer's input; FiLM equals the formula recomputed by hand, on the
chosen layers only; layer selection by name and type; error messages; remove();
no_grad, functional_call, deepcopy and state_dict round trips.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricopt.blackbox.adapters import Adapter, FiLM, InputBias

pytestmark = pytest.mark.usefixtures("one_thread")


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(24, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x)).flatten(-3)
        return self.head(F.relu(self.hidden(h)))


def make_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net


def inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


MLP_X = (7, 5)
CNN_X = (3, 2, 6, 6)
CASES = [
    pytest.param(make_mlp, MLP_X, lambda net: InputBias(net, phi_size=16), id="mlp-inputbias"),
    pytest.param(make_mlp, MLP_X, lambda net: FiLM(net, phi_size=16), id="mlp-film"),
    pytest.param(make_cnn, CNN_X, lambda net: FiLM(net, phi_size=16), id="cnn-film"),
    pytest.param(make_cnn, CNN_X, lambda net: FiLM(net, phi_size=16, layers=nn.BatchNorm2d), id="cnn-film-bn"),
]


@pytest.mark.parametrize("make_net, x_shape, make_adapter", CASES)
def test_zero_phi_reproduces_backbone_exactly(make_net, x_shape, make_adapter):
    net, x = make_net(), inputs(x_shape)
    expected = net.eval()(x)
    adapter = make_adapter(net)
    assert torch.equal(adapter.phi, torch.zeros(16))
    assert torch.equal(adapter(x), expected)
    assert torch.equal(adapter(x, phi=torch.zeros(16)), expected)
    adapter.reset_phi(torch.ones(16))
    assert not torch.equal(adapter(x), expected)
    adapter.reset_phi()
    assert torch.equal(adapter(x), expected)


@pytest.mark.parametrize("make_net, x_shape, make_adapter", CASES)
def test_training_phi_changes_only_phi(make_net, x_shape, make_adapter):
    net, x = make_net(), inputs(x_shape)
    adapter = make_adapter(net)
    backbone_before = state_copy(adapter.backbone)
    target = inputs((x_shape[0], 3), seed=2)
    optimizer = torch.optim.Adam(adapter.adapter_parameters(), lr=0.05)
    adapter.train()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.mse_loss(adapter(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert adapter.phi.abs().sum() > 0
    assert_state_equal(backbone_before, adapter.backbone)
    assert all(p.grad is None and not p.requires_grad for p in adapter.backbone.parameters())
    assert [n for n, p in adapter.named_parameters() if p.requires_grad] == ["phi"]
    assert adapter.adapter_parameters() == [adapter.phi]


def test_backbone_stays_in_eval_mode():
    net = make_cnn().train()
    bn = net.features[1]
    x = inputs(CNN_X)
    adapter = FiLM(net, phi_size=8)
    stats = state_copy(bn)
    assert not net.training
    assert adapter.train() is adapter
    assert adapter.training and not any(m.training for m in adapter.backbone.modules())
    adapter.reset_phi(torch.ones(8))
    adapter(x).sum().backward()
    assert_state_equal(stats, bn)
    mlp = InputBias(make_mlp(), phi_size=8).train()  # dropout off: repeated calls agree
    mlp.reset_phi(torch.ones(8))
    y = inputs(MLP_X)
    assert torch.equal(mlp(y), mlp(y))
    adapter.eval()
    assert not adapter.training and not net.training


@pytest.mark.parametrize("make_net, x_shape, make_adapter", CASES)
def test_gradient_reaches_phi_and_phi_argument(make_net, x_shape, make_adapter):
    adapter, x = make_adapter(make_net()), inputs(x_shape)
    adapter(x).square().sum().backward()
    assert adapter.phi.grad is not None and adapter.phi.grad.abs().sum() > 0
    adapter.phi.grad = None
    phi = (0.1 * inputs((16,), seed=3)).requires_grad_()
    out = adapter(x, phi=phi)
    out.square().sum().backward()
    assert phi.grad is not None and phi.grad.abs().sum() > 0
    assert adapter.phi.grad is None
    # The override ends with the call: later calls use self.phi again (= 0 here).
    assert torch.equal(adapter(x), adapter.backbone(x))
    assert not torch.equal(out.detach(), adapter(x))


def test_gradient_of_phi_argument_matches_finite_differences():
    adapter = FiLM(make_cnn().double(), phi_size=4)
    x = inputs(CNN_X).double()
    phi = (0.3 * inputs((4,), seed=5)).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: adapter(x, phi=p), (phi,))


def test_phi_argument_works_unrolled():
    # Two inner SGD steps on a phi tensor, then the gradient of the final loss
    # w.r.t. the initial phi (second order), as in meta-training.
    adapter, x = InputBias(make_mlp(), phi_size=8), inputs(MLP_X)
    phi0 = torch.zeros(8, requires_grad=True)
    phi = phi0
    for _ in range(2):
        (grad,) = torch.autograd.grad(adapter(x, phi=phi).square().mean(), phi, create_graph=True)
        phi = phi - 0.5 * grad
    adapter(x, phi=phi).sum().backward()
    assert phi0.grad is not None and phi0.grad.abs().sum() > 0


def test_functional_call_swaps_phi():
    adapter, x = FiLM(make_mlp(), phi_size=8), inputs(MLP_X)
    phi = (0.5 * inputs((8,), seed=4)).requires_grad_()
    out = torch.func.functional_call(adapter, {"phi": phi}, (x,))
    assert torch.equal(out, adapter(x, phi=phi))
    out.sum().backward()
    assert phi.grad is not None and adapter.phi.grad is None


def test_input_bias_equals_explicit_concatenation():
    net, x = make_mlp(), inputs((4, 3, 5))  # leading dims broadcast
    adapter = InputBias(net, phi_size=16, seed=7)
    phi = inputs((16,), seed=8)
    first = nn.Linear(5 + 16, 8)
    with torch.no_grad():
        first.weight.copy_(torch.cat([net[0].weight, adapter.phi_weight], dim=1))
        first.bias.copy_(net[0].bias)
    h = first(torch.cat([x, phi.expand(4, 3, 16)], dim=-1))
    for layer in list(net)[1:]:
        h = layer(h)
    torch.testing.assert_close(adapter(x, phi=phi), h, rtol=1e-5, atol=1e-6)
    unbatched = adapter(x[0, 0], phi=phi)  # an (in_features,) input
    torch.testing.assert_close(unbatched, h[0, 0], rtol=1e-5, atol=1e-6)


def test_input_bias_layer_choice():
    net = make_mlp()
    assert InputBias(net, phi_size=4).layer == "0"
    adapter = InputBias(make_mlp(), phi_size=4, layer="3")
    assert adapter.layer == "3" and adapter.phi_weight.shape == (6, 4)
    adapter.reset_phi(torch.ones(4))
    x = inputs(MLP_X)
    reference = make_mlp().eval()
    h = reference[2](reference[1](reference[0](x)))
    h = reference[3](h) + adapter.phi_weight.sum(dim=1)
    torch.testing.assert_close(adapter(x), reference[5](reference[4](h)))
    assert InputBias(nn.Linear(3, 2), phi_size=4).layer == ""  # the backbone is the layer


def test_film_on_named_layer_equals_formula_and_affects_only_it():
    net, x = make_mlp(), inputs(MLP_X)
    reference = make_mlp().eval()
    adapter = FiLM(net, phi_size=16, layers="3", seed=3)
    assert adapter.film_layers == ("3",)
    phi = inputs((16,), seed=9)
    scale, shift = adapter.projections(0)
    assert scale is adapter.film_scale_0 and shift is adapter.film_shift_0
    h = reference[3](reference[1](reference[0](x)))
    h = (1 + scale @ phi) * h + shift @ phi
    expected = reference[5](reference[4](h))
    torch.testing.assert_close(adapter(x, phi=phi), expected)
    # A hook registered on layer 0 after the adapter sees layer 0's output unchanged.
    seen = {}
    net[0].register_forward_hook(lambda m, i, o: seen.setdefault("0", o.detach()))
    adapter(x, phi=phi)
    assert torch.equal(seen["0"], reference[0](x))


def test_film_conv_channel_dim_equals_formula():
    net, x = make_cnn(), inputs(CNN_X)
    reference = make_cnn().eval()
    adapter = FiLM(net, phi_size=8, layers="features.3")
    phi = inputs((8,), seed=10)
    scale, shift = adapter.projections(0)
    assert scale.shape == (6, 8)
    h = reference.features[:4](x)
    h = (1 + scale @ phi)[:, None, None] * h + (shift @ phi)[:, None, None]
    h = reference.pool(reference.features[4](h)).flatten(1)
    expected = reference.head(F.relu(reference.hidden(h)))
    torch.testing.assert_close(adapter(x, phi=phi), expected)


def test_film_conv1d_3d_and_unbatched():
    cases = ((nn.Conv1d(2, 3, 3), (4, 2, 7)), (nn.Conv3d(2, 3, 3), (4, 2, 4, 4, 4)), (nn.Conv2d(2, 3, 3), (2, 5, 5)))
    for conv, shape in cases:  # the last: an unbatched (C, H, W) input, channels in dim 0
        x, phi = inputs(shape), inputs((5,), seed=11)
        expected_plain = conv(x)
        adapter = FiLM(nn.Sequential(conv), phi_size=5)
        scale, shift = adapter.projections(0)
        view = (3,) + (1,) * len(conv.kernel_size)  # channels, then the spatial dims
        expected = (1 + scale @ phi).reshape(view) * expected_plain + (shift @ phi).reshape(view)
        torch.testing.assert_close(adapter(x, phi=phi), expected)


def test_film_layer_selection():
    names = FiLM(make_cnn(), phi_size=4).film_layers
    assert names == ("features.0", "features.3", "hidden")  # convs + every Linear but the head
    assert FiLM(make_cnn(), phi_size=4, layers=nn.Conv2d).film_layers == ("features.0", "features.3")
    assert FiLM(make_cnn(), phi_size=4, layers=nn.Linear).film_layers == ("hidden", "head")
    mixed = FiLM(make_cnn(), phi_size=4, layers=["head", nn.BatchNorm2d, "features.0", nn.Conv2d])
    assert mixed.film_layers == ("features.0", "features.1", "features.3", "head")  # union, module order
    assert FiLM(make_mlp(), phi_size=4).film_layers == ("0", "3")
    group = nn.Sequential(nn.Conv2d(2, 4, 1), nn.GroupNorm(2, 4))
    assert FiLM(group, phi_size=4, layers=(nn.GroupNorm,)).film_layers == ("1",)
    default = FiLM(make_cnn(), phi_size=4)
    shapes = [tuple(w.shape) for i in range(3) for w in default.projections(i)]
    assert shapes == [(4, 4), (4, 4), (6, 4), (6, 4), (10, 4), (10, 4)]


def test_projections_seeded_and_scaled():
    a, b = FiLM(make_cnn(), phi_size=32, seed=1), FiLM(make_cnn(), phi_size=32, seed=1)
    c = FiLM(make_cnn(), phi_size=32, seed=2)
    for i in range(3):
        assert all(torch.equal(p, q) for p, q in zip(a.projections(i), b.projections(i)))
        assert not torch.equal(a.projections(i)[0], c.projections(i)[0])
    assert not torch.equal(a.film_scale_0, a.film_shift_0)
    big = InputBias(nn.Linear(3, 400), phi_size=100, seed=0, scale=2.0).phi_weight
    assert big.shape == (400, 100)
    assert abs(big.std().item() - 2.0 / 10) < 0.01  # N(0, scale^2 / phi_size), 40k draws
    assert abs(big.mean().item()) < 0.01
    torch.testing.assert_close(InputBias(nn.Linear(3, 400), phi_size=100, seed=0).phi_weight, big / 2)
    nets = (make_cnn(), nn.Linear(3, 4), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    before = torch.get_rng_state()
    FiLM(nets[0], phi_size=8)
    InputBias(nets[1], phi_size=8)
    FiLM(nets[2], phi_size=8)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched


def test_remove_restores_backbone_output():
    for make_net, shape, make_adapter in ((make_mlp, MLP_X, InputBias), (make_cnn, CNN_X, FiLM)):
        net, x = make_net(), inputs(shape)
        expected = net.eval()(x)
        adapter = make_adapter(net, phi_size=8)
        adapter.reset_phi(torch.ones(8))
        assert not torch.equal(net(x), expected)  # the hooks live in the backbone
        adapter.remove()
        adapter.remove()  # idempotent
        assert torch.equal(net(x), expected)
        assert "removed" in repr(adapter)
        with pytest.raises(RuntimeError, match="removed"):
            adapter(x)


def test_works_under_no_grad():
    adapter, x = FiLM(make_cnn(), phi_size=8), inputs(CNN_X)
    phi = inputs((8,), seed=12)
    expected = adapter(x, phi=phi)
    with torch.no_grad():
        out = adapter(x, phi=phi.requires_grad_())
        adapter.reset_phi(phi)
        out_self = adapter(x)
    assert not out.requires_grad and not out_self.requires_grad
    assert torch.equal(out, expected.detach()) and torch.equal(out_self, out)
    assert adapter.phi.requires_grad and adapter.phi.grad_fn is None


def test_reset_phi():
    adapter = InputBias(make_mlp(), phi_size=4)
    value = torch.tensor([1.0, -2.0, 3.0, 0.5])
    adapter.reset_phi(value)
    assert torch.equal(adapter.phi, value)
    value[0] = 9.0  # a copy, not a view
    assert adapter.phi[0] == 1.0
    assert adapter.phi.requires_grad and adapter.phi.grad_fn is None
    adapter.reset_phi()
    assert torch.equal(adapter.phi, torch.zeros(4))


def test_state_dict_round_trip():
    net, x = make_cnn(), inputs(CNN_X)
    adapter = FiLM(net, phi_size=8, seed=1)
    adapter.reset_phi(inputs((8,), seed=13))
    state = adapter.state_dict()
    assert {"phi", "film_scale_0", "film_shift_0", "film_scale_2", "backbone.head.weight"} <= state.keys()
    other = FiLM(make_cnn(seed=5), phi_size=8, seed=2)
    assert not torch.equal(other(x), adapter(x))
    other.load_state_dict(state)
    assert torch.equal(other(x), adapter(x))
    bias = InputBias(make_mlp(), phi_size=8)
    assert {"phi", "phi_weight", "backbone.0.weight"} <= bias.state_dict().keys()


def test_deepcopy_is_independent():
    adapter, x = FiLM(make_cnn(), phi_size=8), inputs(CNN_X)
    twin = copy.deepcopy(adapter)
    twin.reset_phi(torch.ones(8))
    assert torch.equal(adapter(x), adapter.backbone(x))
    assert not torch.equal(twin(x), adapter(x))
    adapter.reset_phi(torch.ones(8))
    assert torch.equal(twin(x), adapter(x))


def test_dtype_follows_backbone():
    adapter = FiLM(make_cnn().double(), phi_size=8)
    assert adapter.phi.dtype == torch.float64 and adapter.film_scale_0.dtype == torch.float64
    x = inputs(CNN_X).double()
    assert adapter(x).dtype == torch.float64
    converted = InputBias(make_mlp(), phi_size=8).double()
    assert converted.phi.dtype == converted.phi_weight.dtype == torch.float64
    assert converted(inputs(MLP_X).double()).dtype == torch.float64


@pytest.mark.parametrize("make_net, x_shape, make_adapter", CASES)
def test_phi_follows_the_backbone_to_its_device(make_net, x_shape, make_adapter):
    # The backbone moved on its own, and a phi= on another device: the hooks move phi and the
    # projections to the output they modulate. 'meta' has no data, so this checks the devices;
    # before, the CPU shift met the other device's output and raised.
    adapter = make_adapter(make_net())
    adapter.backbone.to("meta")
    x = inputs(x_shape).to("meta")
    assert adapter(x).device.type == "meta"
    assert adapter(x, phi=torch.ones(16)).device.type == "meta"
    assert adapter.phi.device.type == "cpu"


@pytest.mark.parametrize("make_net, x_shape, make_adapter", CASES)
def test_adapter_on_each_device_equals_the_cpu_one(make_net, x_shape, make_adapter, device):
    adapter = make_adapter(make_net())
    phi = torch.linspace(-1, 1, 16)
    expected = adapter(inputs(x_shape), phi=phi)
    moved = make_adapter(make_net()).to(device)
    assert all(t.device == torch.device(device) for t in (moved.phi, *moved.buffers()))
    got = moved(inputs(x_shape).to(device), phi=phi.to(device))
    assert got.device == torch.device(device)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)
    # phi on the CPU, backbone on the device: phi's gradient comes back to phi's device.
    cpu_phi = phi.clone().requires_grad_(True)
    moved(inputs(x_shape).to(device), phi=cpu_phi).sum().backward()
    assert cpu_phi.grad is not None and cpu_phi.grad.device.type == "cpu"


def test_base_adapter_is_the_frozen_backbone():
    net, x = make_mlp(), inputs(MLP_X)
    adapter = Adapter(net, phi_size=3)
    assert adapter.phi_size == 3 and torch.equal(adapter(x), net(x))
    assert not any(p.requires_grad for p in net.parameters())


def test_errors():
    with pytest.raises(ValueError, match=r"`phi_size` must be an integer >= 1; got 0"):
        InputBias(make_mlp(), phi_size=0)
    with pytest.raises(TypeError, match="`phi_size`"):
        FiLM(make_cnn(), phi_size=2.5)
    with pytest.raises(TypeError, match="`phi_size`"):
        FiLM(make_cnn(), phi_size=True)
    with pytest.raises(ValueError, match="`scale`"):
        FiLM(make_cnn(), scale=0.0)
    with pytest.raises(TypeError, match="`seed`"):
        InputBias(make_mlp(), seed=1.5)
    with pytest.raises(TypeError, match="`backbone`.*function"):
        InputBias(lambda x: x)
    with pytest.raises(ValueError, match=r"`layer` 'fc' is not a module.*valid names include '', '0'"):
        InputBias(make_mlp(), layer="fc")
    with pytest.raises(TypeError, match=r"`layer` 'features.0' is Conv2d, not nn.Linear.*FiLM"):
        InputBias(make_cnn(), layer="features.0")
    with pytest.raises(TypeError, match=r"first layer 'features.0' is Conv2d.*FiLM"):
        InputBias(make_cnn())
    with pytest.raises(TypeError, match="no.*Linear|none"):
        InputBias(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match=r"`layers` entry 'features.9' is not a module.*features.0"):
        FiLM(make_cnn(), layers=["features.0", "features.9"])
    with pytest.raises(ValueError, match="matches no module"):
        FiLM(make_mlp(), layers=nn.Conv2d)
    with pytest.raises(ValueError, match="no layer to modulate"):
        FiLM(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    with pytest.raises(TypeError, match=r"selects '1', a ReLU"):
        FiLM(make_mlp(), layers=nn.ReLU)
    with pytest.raises(TypeError, match="`layers` entries"):
        FiLM(make_mlp(), layers=[3])
    with pytest.raises(TypeError, match="`layers`"):
        FiLM(make_mlp(), layers=[])
    adapter = InputBias(make_mlp(), phi_size=4)
    with pytest.raises(ValueError, match=r"`value` must have shape \(4,\); got tensor of shape \(5,\)"):
        adapter.reset_phi(torch.zeros(5))
    with pytest.raises(ValueError, match=r"`value` must be finite"):
        adapter.reset_phi(torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(TypeError, match="`value` must be a torch.Tensor"):
        adapter.reset_phi([0.0] * 4)
    with pytest.raises(ValueError, match=r"`phi` must have shape \(4,\); got tensor of shape \(2, 4\)"):
        adapter(inputs(MLP_X), phi=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="`phi` must be a floating-point"):
        adapter(inputs(MLP_X), phi=torch.zeros(4, dtype=torch.long))
    assert torch.equal(adapter.phi, torch.zeros(4))
    adapter(inputs(MLP_X))  # a failed call leaves no override behind
    assert adapter._phi_stack == []
    film = FiLM(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), phi_size=4, layers="0")
    with pytest.raises(RuntimeError, match="FiLM layer '0' expected an output with 4 channels"):
        film.backbone[0].weight = nn.Parameter(torch.zeros(5, 3), requires_grad=False)
        film.backbone[0].bias = nn.Parameter(torch.zeros(5), requires_grad=False)
        film(torch.zeros(2, 3))
