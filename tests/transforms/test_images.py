"""The bijector contract for the image bijectors and the assembled multiscale Glow.

Every layer is moved away from the identity before a check (at the identity, invertibility
and log-det checks would pass trivially). Jacobians are checked in float64 on small shapes.
"""

from __future__ import annotations

import copy
import io
import math
import os

import pyro.distributions as dist
import pytest
import torch

import flowinfer as fi
from flowinfer.transforms import (
    ActNorm,
    ChannelCoupling,
    InvertibleConv1x1,
    MultiscaleSplit,
    Squeeze,
    Unsqueeze,
    glow_layers,
)

F64 = torch.float64


def _split_inner():
    return [Squeeze((2, 4, 4)), ChannelCoupling((8, 2, 2), 6), InvertibleConv1x1((8, 2, 2)),
            ActNorm((8, 2, 2)), Unsqueeze((8, 2, 2))]


# name -> constructor; each returns a fresh layer.
LAYERS = {
    "squeeze": lambda: Squeeze((2, 4, 6)),
    "unsqueeze": lambda: Unsqueeze((8, 2, 3)),
    "actnorm": lambda: ActNorm((3, 4, 4)),
    "conv1x1": lambda: InvertibleConv1x1((3, 3, 4)),
    "coupling": lambda: ChannelCoupling((3, 4, 4), hidden_channels=6),
    "coupling-even": lambda: ChannelCoupling((4, 2, 2), hidden_channels=6),
    "split-nested": lambda: MultiscaleSplit((4, 4, 4), _split_inner()),
    "split-odd": lambda: MultiscaleSplit((3, 2, 2)),
}
PARAMETRIC = [n for n in LAYERS if n not in ("squeeze", "unsqueeze")]


@torch.no_grad()
def perturb(module, scale=0.3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=F64).to(p.dtype))
    for name, buf in module.named_buffers():
        if name.endswith("initialized"):
            buf.fill_(True)
    return module


def make(name, dtype=F64, seed=1):
    torch.manual_seed(0)
    return perturb(LAYERS[name]().to(dtype), seed=seed)


def rand(shape, seed=3, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def small_glow(dtype=F64, base="learnable", shape=(1, 4, 4), seed=1):
    torch.manual_seed(0)
    flow = fi.build_flow("glow", shape=shape, levels=2, steps_per_level=1, hidden_channels=4,
                         base=base).to(dtype)
    return perturb(flow, scale=0.2, seed=seed)


# ----------------------------------------------------------------------------- each layer
@pytest.mark.parametrize("name", list(LAYERS))
class TestImageBijectorContract:
    def test_shapes_and_pyro_view(self, name):
        t = make(name)
        x = rand((2, 3, *t.shape))
        y, ladj = t.call_and_ladj(x)
        assert y.shape == (2, 3, *t.out_shape)
        assert ladj.shape == (2, 3) and ladj.dtype == F64
        assert t.forward_shape(x.shape) == y.shape and t.inverse_shape(y.shape) == x.shape
        assert t.domain.event_dim == 3 and t.codomain.event_dim == 3
        # Inside Pyro's TransformedDistribution, the density is the change of variables.
        base = dist.Normal(torch.zeros(t.shape, dtype=F64), 1.0).to_event(3)
        d = dist.TransformedDistribution(base, [t])
        assert d.event_shape == t.out_shape
        expected = base.log_prob(t.inverse_and_ladj(y)[0]) - t.inverse_and_ladj(y)[1]
        torch.testing.assert_close(d.log_prob(y), expected)

    def test_inverse(self, name):
        t = make(name)
        x = rand((5, *t.shape))
        y, ladj = t.call_and_ladj(x)
        assert not torch.allclose(y.reshape(-1)[: x.numel()], x.reshape(-1)) or \
            name in ("squeeze", "unsqueeze")
        x_back, ladj_back = t.inverse_and_ladj(y)
        torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
        torch.testing.assert_close(ladj_back, ladj, atol=1e-10, rtol=0)
        # Through the Pyro interface with the stash cleared, so the inverse is recomputed.
        out = t(x)
        t.clear_cache()
        torch.testing.assert_close(t.inv(out), x, atol=1e-10, rtol=0)

    def test_log_det_matches_autograd_jacobian(self, name):
        t = make(name)
        x = rand(t.shape, seed=7)
        jac = torch.autograd.functional.jacobian(lambda v: t.call_and_ladj(v)[0], x)
        jac = jac.reshape(x.numel(), x.numel())
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(t.call_and_ladj(x)[1], expected, atol=1e-8, rtol=0)

    def test_float32_agrees_with_float64(self, name):
        t64 = make(name)
        t32 = copy.deepcopy(t64).float()
        x = rand((4, *t64.shape))
        y64, l64 = t64.call_and_ladj(x)
        y32, l32 = t32.call_and_ladj(x.float())
        assert y32.dtype == torch.float32 and l32.dtype == torch.float32
        torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(l32.double(), l64, atol=1e-3, rtol=1e-4)

    def test_deepcopy_save_and_load_after_forward(self, name):
        t = make(name)
        x = rand((3, *t.shape))
        base = dist.Normal(torch.zeros(t.shape, dtype=F64), 1.0).to_event(3)
        d = dist.TransformedDistribution(base, [t])
        d.log_prob(d.rsample((2,)))  # leaves graph-carrying tensors in the stash
        clone = copy.deepcopy(t)
        torch.testing.assert_close(clone(x), t(x))
        buf = io.BytesIO()
        torch.save(t.state_dict(), buf)
        buf.seek(0)
        torch.manual_seed(123)
        fresh = LAYERS[name]().to(F64)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        torch.testing.assert_close(fresh(x), t(x))


@pytest.mark.parametrize("name", PARAMETRIC)
def test_no_stale_values_and_gradients(name):
    t = make(name)
    x = rand((6, *t.shape))
    old = t(x)
    loss = t.call_and_ladj(x)[1].sum() + t(x).pow(2).sum()
    loss.backward()
    for pname, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    torch.optim.SGD(t.parameters(), lr=0.05).step()
    new = t(x)
    assert not torch.allclose(new, old)
    torch.testing.assert_close(new, type(t).__call__(copy.deepcopy(t), x))
    # The inverse of an output made with the old parameters is recomputed with the new ones.
    x_back = t.inv(old)
    t.clear_cache()
    torch.testing.assert_close(x_back, t.inv(old))
    assert not torch.allclose(x_back, x)


# ----------------------------------------------------------------------------- layer specifics
def test_squeeze_moves_each_2x2_patch_into_channels():
    x = torch.arange(16.0).reshape(1, 4, 4)
    y = Squeeze((1, 4, 4))(x)
    # Channel k = (row offset, column offset) of the 2x2 patch, in row-major order.
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))
    torch.testing.assert_close(y[:, 1, 1], torch.tensor([10.0, 11.0, 14.0, 15.0]))
    torch.testing.assert_close(Unsqueeze((4, 2, 2))(y), x)


def test_fresh_layers_start_at_identity_or_a_permutation():
    x = rand((2, 4, 4, 4))
    for layer in (ChannelCoupling((4, 4, 4)).double(), MultiscaleSplit((4, 4, 4)).double()):
        y, ladj = layer.call_and_ladj(x)
        assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(2, dtype=F64))
    conv = InvertibleConv1x1((4, 4, 4), init="reversal").double()
    y, ladj = conv.call_and_ladj(x)
    torch.testing.assert_close(y, x.flip(-3))
    assert torch.equal(ladj, torch.zeros(2, dtype=F64))


def test_conv1x1_starts_as_a_random_rotation():
    torch.manual_seed(0)
    conv = InvertibleConv1x1((6, 2, 2)).double()
    w = conv.weight()
    # The factors are stored as float32 parameters, hence float32 tolerances.
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=F64), atol=1e-6, rtol=0)
    assert not torch.allclose(w.abs(), torch.eye(6, dtype=F64).flip(0))  # not a permutation
    ladj = conv.call_and_ladj(rand((3, 6, 2, 2)))[1]
    torch.testing.assert_close(ladj, torch.zeros(3, dtype=F64), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    again = InvertibleConv1x1((6, 2, 2)).double()
    assert torch.equal(again.weight(), w)  # reproducible from the global seed
    with pytest.raises(ValueError, match="init must be one of"):
        InvertibleConv1x1((6, 2, 2), init="identity")


def test_conv1x1_log_det_is_pixels_times_log_det_of_weight():
    conv = make("conv1x1")
    h, w = conv.shape[1:]
    expected = h * w * torch.linalg.slogdet(conv.weight()).logabsdet
    torch.testing.assert_close(conv.call_and_ladj(rand((2, *conv.shape)))[1],
                               expected.expand(2))


def test_split_factors_out_a_gaussian_conditioned_on_the_kept_half():
    # With no inner layers, log p(x) = log N(x_a; 0, I) + log N(x_b; mu(x_a), sigma(x_a)^2).
    t = make("split-odd")
    x = rand((4, 3, 2, 2))
    z, ladj = t.inverse_and_ladj(x)
    base = dist.Normal(torch.zeros(3, 2, 2, dtype=F64), 1.0).to_event(3)
    params = t._params(x[:, :1])
    # The element's soft bound on the log scale: b * tanh(raw / b).
    bound = t.element.log_scale_bound
    mu, log_sigma = params[..., 0], bound * torch.tanh(params[..., 1] / bound)
    assert log_sigma.abs().max() > 0.05  # perturbed away from the N(0, 1) start
    expected = (dist.Normal(0.0, 1.0).log_prob(x[:, :1]).sum((1, 2, 3))
                + dist.Normal(mu, log_sigma.exp()).log_prob(x[:, 1:]).sum((1, 2, 3)))
    torch.testing.assert_close(base.log_prob(z) - ladj, expected)


# ----------------------------------------------------------------------------- assembled Glow
def test_build_flow_glow_image_and_vector():
    flow = fi.build_flow("glow", shape=(1, 8, 8), levels=2, steps_per_level=2,
                         hidden_channels=8)
    assert flow.event_shape == (1, 8, 8) and flow.dim == 64
    assert flow().event_shape == (1, 8, 8)
    assert flow.config["hyper"]["shape"] == (1, 8, 8)
    assert flow.sample(3, temperature=0.7).shape == (3, 1, 8, 8)
    vector = fi.build_flow("glow", dim=5, num_layers=2, hidden=(8,))
    assert vector.event_shape == (5,) and vector.sample((2,)).shape == (2, 5)
    # Image flows default to the learnable (position-dependent) base, vectors to N(0, I);
    # an explicit base wins, and the config records the one used.
    assert flow.base == flow.config["base"] == "learnable"
    assert vector.base == vector.config["base"] == "standard"
    fixed = fi.build_flow("glow", shape=(1, 8, 8), steps_per_level=1, hidden_channels=8,
                          base="standard")
    assert fixed.base == fixed.config["base"] == "standard"
    kinds = [type(t).__name__ for t in glow_layers((3, 8, 8), levels=3, steps_per_level=2)]
    assert kinds.count("Squeeze") == 1 and kinds.count("MultiscaleSplit") == 1


def test_glow_steps_and_widths_per_level(tmp_path):
    layers = glow_layers((1, 8, 8), levels=2, steps_per_level=(1, 3), hidden_channels=(4, 8))
    split = layers[1]
    assert isinstance(split, MultiscaleSplit)
    outer = [t for t in layers if isinstance(t, ChannelCoupling)]
    inner = [t for t in split.inner if isinstance(t, ChannelCoupling)]
    assert len(outer) == 1 and len(inner) == 3
    assert {t.conditioner[0].out_channels for t in outer} == {4}
    assert {t.conditioner[0].out_channels for t in inner} == {8}
    flow = fi.build_flow("glow", shape=(1, 8, 8), levels=2, steps_per_level=[1, 2],
                         hidden_channels=(4, 6))
    x = rand((3, 1, 8, 8), dtype=torch.float32)
    flow.log_prob(x)
    path = os.path.join(tmp_path, "glow.pt")
    fi.save(flow, path)
    torch.testing.assert_close(fi.load(path).log_prob(x), flow.log_prob(x))


def test_conditioners_use_channels_last_weights_with_unchanged_results():
    flow = small_glow(dtype=torch.float32)
    convs = [m for m in flow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = rand((5, 1, 4, 4), dtype=torch.float32)
    flow.log_prob(x)  # data-dependent init first, so both copies share it
    for p in flow.parameters():  # move away from the zero-initialised identity start
        p.data.add_(0.1 * torch.randn_like(p))
    plain = copy.deepcopy(flow).to(memory_format=torch.contiguous_format)
    assert all(m.weight.is_contiguous() for m in plain.modules()
               if isinstance(m, torch.nn.Conv2d))
    torch.testing.assert_close(plain.log_prob(x), flow.log_prob(x), atol=1e-4, rtol=1e-5)


def test_glow_inverse_log_det_and_pyro_view():
    flow = small_glow()
    z = rand((1, 4, 4), seed=9)
    y = flow.transform_with_intermediates(z)[-1]
    x = y
    total = 0.0
    for layer in reversed(flow.layers):
        x, step = flow._layer_inverse(layer, x, None, 3)
        total = total + step
    torch.testing.assert_close(x, z, atol=1e-10, rtol=0)
    jac = torch.autograd.functional.jacobian(
        lambda v: flow.transform_with_intermediates(v)[-1], z).reshape(16, 16)
    expected = torch.linalg.slogdet(jac).logabsdet
    _, ladj, _ = flow._forward_pass(z, None)
    torch.testing.assert_close(ladj, expected, atol=1e-8, rtol=0)
    torch.testing.assert_close(total, expected, atol=1e-8, rtol=0)
    # log_prob by change of variables, three ways.
    data = rand((6, 1, 4, 4), seed=4)
    lp = flow.log_prob(data)
    torch.testing.assert_close(flow().log_prob(data), lp)
    samples, lp_samples = flow.sample_and_log_prob((5,))
    torch.testing.assert_close(flow.log_prob(samples), lp_samples)


def test_glow_temperature_scales_the_whole_base():
    flow = small_glow()
    torch.manual_seed(3)
    cold = flow.sample(7, temperature=0.5)
    torch.manual_seed(3)
    z = flow.base_distribution().sample((7,))
    expected = flow.transform_with_intermediates(flow.base_loc + 0.5 * (z - flow.base_loc))[-1]
    torch.testing.assert_close(cold, expected)
    # Every factored-out level is scaled: the latents of cold samples shrink by the factor.
    latents = z
    x = cold
    for layer in reversed(flow.layers):
        x, _ = flow._layer_inverse(layer, x, None, 3)
    torch.testing.assert_close(x - flow.base_loc, 0.5 * (latents - flow.base_loc))


def test_glow_gradients_reach_every_parameter_and_no_stale_values():
    flow = small_glow(dtype=torch.float32)
    x = rand((8, 1, 4, 4), dtype=torch.float32)
    y, lp = flow.rsample_and_log_prob((4,))
    loss = -flow.log_prob(x).mean() + (lp + y.pow(2).sum((1, 2, 3))).mean()
    before = flow().log_prob(x).detach()
    loss.backward()
    for pname, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    torch.optim.Adam(flow.parameters(), lr=0.01).step()
    after = flow().log_prob(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, flow.log_prob(x), atol=1e-4, rtol=1e-4)


def test_glow_deepcopy_double_and_checkpoint_round_trip(tmp_path):
    flow = small_glow(dtype=torch.float32)
    d = flow()
    d.log_prob(d.rsample((3,)))
    clone = copy.deepcopy(flow)
    x = rand((3, 1, 4, 4), dtype=torch.float32)
    torch.testing.assert_close(clone.log_prob(x), flow.log_prob(x))
    twin = copy.deepcopy(flow).double()
    torch.testing.assert_close(twin.log_prob(x.double()).float(), flow.log_prob(x),
                               atol=1e-4, rtol=1e-4)
    # Rebuilt from its config (what fi.save / fi.load do), it is the same flow.
    path = os.path.join(tmp_path, "glow.pt")
    fi.save(flow, path)
    loaded = fi.load(path)
    assert loaded.event_shape == (1, 4, 4)
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x))


def test_glow_data_dependent_init_runs_on_the_first_batch():
    torch.manual_seed(0)
    flow = fi.build_flow("glow", shape=(1, 4, 4), levels=2, steps_per_level=1,
                         hidden_channels=4)
    data = 5.0 + 3.0 * rand((64, 1, 4, 4), seed=2, dtype=torch.float32)
    flow.log_prob(data)
    norms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert len(norms) == 2 and all(bool(m.initialized) for m in norms)
    # The first ActNorm met on the way to the base (after the squeeze) standardises the data
    # per channel.
    assert isinstance(flow.layers[-2], ActNorm)
    z = flow.layers[-2].inverse_and_ladj(flow.layers[-1].inverse_and_ladj(data)[0])[0]
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)


def test_flow_with_a_shape_and_no_layers_is_its_base():
    flow = fi.Flow([], shape=(2, 3, 4), base="learnable")
    assert flow.event_shape == (2, 3, 4) and flow.dim == 24
    x = rand((5, 2, 3, 4), dtype=torch.float32)
    expected = dist.Normal(torch.zeros(2, 3, 4), 1.0).to_event(3).log_prob(x)
    torch.testing.assert_close(flow.log_prob(x), expected)
    with pytest.raises(ValueError, match="dim must equal the number of elements"):
        fi.Flow([], dim=5, shape=(2, 3, 4))
    with pytest.raises(ValueError, match="dim is required"):
        fi.Flow([])
    with pytest.raises(ValueError, match="shape"):
        fi.Flow([], shape=())


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("hyper,match", [
    ({"shape": (1, 6, 6), "levels": 2}, "divisible by 2\\*\\*levels"),
    ({"shape": (1, 8)}, "shape must be a \\(C, H, W\\)"),
    ({"shape": (1, 0, 8)}, "shape"),
    ({"shape": (1, 8, 8), "num_layers": 3}, "vector Glow only"),
    ({"shape": (1, 8, 8), "hidden_channels": 0}, "hidden_channels"),
    ({"shape": (1, 8, 8), "levels": 0}, "levels"),
    ({"shape": (1, 8, 8), "steps_per_level": (2, 2, 2)}, "one int per level \\(levels=2\\)"),
    ({"shape": (1, 8, 8), "hidden_channels": (8, 0)}, "hidden_channels"),
    ({"dim": 4, "levels": 2}, "image Glow only"),
    ({"dim": 10, "shape": (1, 4, 4)}, "dim must equal"),
    ({"shape": (1, 4, 4), "context_dim": 2}, "takes no context"),
])
def test_glow_bad_arguments(hyper, match):
    with pytest.raises(ValueError, match=match):
        fi.build_flow("glow", **hyper)


@pytest.mark.parametrize("hyper,match", [
    ({"shape": "abc"}, "shape must be"),
    ({"shape": 8}, "shape must be"),
    ({"shape": (1, 8, 8), "steps_per_level": 1.5}, "steps_per_level"),
    ({"shape": (1, 8, 8), "hidden_channels": "64"}, "hidden_channels"),
    ({"shape": (1, 8, 8), "levels": 2.0}, "levels must be an integer"),
])
def test_glow_arguments_of_the_wrong_type(hyper, match):
    with pytest.raises(TypeError, match=match):
        fi.build_flow("glow", **hyper)


def test_build_flow_errors_for_shape():
    with pytest.raises(ValueError, match="dim is required"):
        fi.build_flow("nsf")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        fi.build_flow("nsf", shape=(1, 4, 4))


def test_flow_input_errors():
    flow = fi.build_flow("glow", shape=(1, 4, 4), levels=1, steps_per_level=1,
                         hidden_channels=4)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 1, 4, 4\)"):
        flow.log_prob(torch.zeros(3, 16))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flow.log_prob([[0.0]])
    with pytest.raises(ValueError, match="z must have shape"):
        flow.transform_with_intermediates(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        flow.sample(2, temperature=0.0)
    with pytest.raises(TypeError, match="temperature must be a finite number > 0"):
        flow.sample(2, temperature="hot")
    with pytest.raises(ValueError, match="context was given"):
        flow.log_prob(torch.zeros(1, 4, 4), torch.zeros(2))


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze((1, 3, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        Unsqueeze((6, 2, 2))
    with pytest.raises(ValueError, match="at least 2 channels"):
        ChannelCoupling((1, 4, 4))
    with pytest.raises(ValueError, match="at least 2 channels"):
        MultiscaleSplit((1, 4, 4))
    with pytest.raises(ValueError, match="hidden_channels"):
        ChannelCoupling((2, 4, 4), hidden_channels=-1)
    with pytest.raises(TypeError, match=r"inner\[0\] must be a bijector on \(C, H, W\)"):
        MultiscaleSplit((4, 4, 4), [fi.transforms.ActNorm(2)])
    with pytest.raises(TypeError, match=r"inner\[0\] must be a bijector on \(C, H, W\)"):
        MultiscaleSplit((4, 4, 4), [torch.nn.Identity()])
    with pytest.raises(ValueError, match=r"inner\[0\] takes shape"):
        MultiscaleSplit((4, 4, 4), [ActNorm((4, 4, 4))])
    with pytest.raises(ValueError, match="map the kept half"):
        MultiscaleSplit((4, 4, 4), [Squeeze((2, 4, 4))])
    t = ActNorm((2, 4, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2, 4, 4\)"):
        t.call_and_ladj(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"y must have shape"):
        Squeeze((1, 4, 4)).inverse_and_ladj(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="context was given to an unconditional transform"):
        t.call_and_ladj(torch.zeros(2, 4, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="hidden_channels must be an integer"):
        ChannelCoupling((2, 4, 4), hidden_channels=8.0)
    with pytest.raises(TypeError, match=r"shape must be a \(C, H, W\)"):
        Squeeze("abc")


# ----------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_glow_beats_a_diagonal_gaussian_on_held_out_digits():
    """A short fit on the 8x8 digits must beat the best diagonal Gaussian (fitted in closed form
    on the same logit-space training data) on held-out images, by more than three standard
    errors of the paired per-image difference."""
    datasets = pytest.importorskip("flowinfer.data.datasets")
    pytest.importorskip("sklearn")
    values, _ = datasets.load_digits()
    values = values.reshape(-1, 1, 8, 8)
    train, test = datasets.split(values, (0.8, 0.2), seed=0)
    pre = datasets.LogitPreprocessor(levels=17, event_dim=3)
    gen = torch.Generator().manual_seed(0)
    y_train, _ = pre(train, generator=gen)
    y_test, ladj_test = pre(test, generator=gen)
    torch.manual_seed(0)
    flow = fi.build_flow("glow", shape=(1, 8, 8), levels=2, steps_per_level=3,
                         hidden_channels=32)
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    for _ in range(400):
        idx = torch.randint(0, len(y_train), (128,), generator=gen)
        loss = -flow.log_prob(y_train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    with torch.no_grad():
        glow_bpd = pre.bits_per_dim(flow.log_prob(y_test), ladj_test, 64)
    mean, std = y_train.mean(0), y_train.std(0)
    gauss_lp = dist.Normal(mean, std).log_prob(y_test).sum((1, 2, 3))
    gauss_bpd = pre.bits_per_dim(gauss_lp, ladj_test, 64)
    diff = gauss_bpd - glow_bpd
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 3 * se, (float(glow_bpd.mean()), float(gauss_bpd.mean()))
