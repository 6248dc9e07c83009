"""The bijector contract, run for every registered flow (see DESIGN.md, "The bijector contract").

Flows are built small and their parameters are moved away from the identity before each
check: at the identity, invertibility and log-det checks would pass trivially.
"""

from __future__ import annotations

import copy
import io

import pyro
import pyro.distributions as dist
import pytest
import torch

import flowinfer as fi
from flowinfer.registry import get_flow_spec

SMALL_HYPER = {
    "realnvp": {"num_layers": 2, "hidden": (8,)},
    "nsf": {"num_layers": 2, "hidden": (8,), "bins": 4},
    "maf": {"num_layers": 2, "hidden": (8,)},
    "iaf": {"num_layers": 2, "hidden": (8,)},
    "nsf-ar": {"num_layers": 2, "hidden": (8,), "bins": 4},
    # Options that add layers are contract cases of their own: "<flow>+<option>".
    "nsf+final_affine": {"num_layers": 2, "hidden": (8,), "bins": 4, "final_affine": True},
    "nsf-ar+final_affine": {"num_layers": 2, "hidden": (8,), "bins": 4, "final_affine": True},
    "glow": {"num_layers": 2, "hidden": (8,)},
    "householder": {"num_layers": 1},
    "bnaf": {"num_layers": 2, "hidden_factors": (4,)},
    "planar": {"num_layers": 2},
    "radial": {"num_layers": 2},
    "sylvester": {"num_layers": 2},
}

ALL = sorted(fi.available_flows())
VARIANTS = sorted(n for n in SMALL_HYPER if "+" in n)


def registry_name(case: str) -> str:
    return case.split("+")[0]


INVERTIBLE = [n for n in ALL + VARIANTS if get_flow_spec(registry_name(n)).has_inverse]
NOT_INVERTIBLE = [n for n in ALL if not get_flow_spec(n).has_inverse]
DTYPES = [torch.float64, torch.float32]
CONTEXT_DIM = 3


def _cases(names):
    cases = []
    for name in names:
        for dtype in DTYPES:
            cases.append(pytest.param(name, dtype, 0, id=f"{name}-{str(dtype)[6:]}"))
            if get_flow_spec(registry_name(name)).supports_context:
                cases.append(
                    pytest.param(name, dtype, CONTEXT_DIM, id=f"{name}-{str(dtype)[6:]}-ctx")
                )
    return cases


def test_registry_lists_every_promised_name():
    promised = {"realnvp", "maf", "iaf", "nsf", "nsf-ar", "glow", "bnaf", "planar", "radial",
                "sylvester", "householder"}
    assert promised <= set(ALL)
    assert set(SMALL_HYPER) >= set(ALL), "add small hyper-parameters for new flows"


def make_flow(name, dim, context_dim, dtype, seed=0, scale=0.3, base="learnable"):
    """A small flow with parameters drawn away from the identity."""
    torch.manual_seed(seed)
    flow = fi.build_flow(registry_name(name), dim=dim, context_dim=context_dim, base=base,
                         **SMALL_HYPER.get(name, {}))
    flow = flow.to(dtype)
    perturb(flow, scale, seed)
    return flow


@torch.no_grad()
def perturb(flow, scale, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    for p in flow.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    for name, buf in flow.named_buffers():
        if name.endswith("initialized"):
            buf.fill_(True)


def context_for(context_dim, shape, dtype, seed=5):
    if not context_dim:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, context_dim, generator=gen, dtype=torch.float64).to(dtype)


def points(shape, dtype, seed=3, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def tol(dtype):
    return 1e-5 if dtype == torch.float64 else 2e-3


# ---------------------------------------------------------------------------- invertible flows
@pytest.mark.parametrize("name,dtype,context_dim", _cases(INVERTIBLE))
class TestInvertibleContract:
    dim = 3

    def test_shapes(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        ctx = context_for(context_dim, (4,), dtype)
        x = points((5, 4, self.dim), dtype)
        assert flow.log_prob(x, ctx).shape == (5, 4)
        assert flow.log_prob(x, ctx).dtype == dtype
        sample = flow.sample((6,), ctx)
        assert sample.shape == ((6, 4, self.dim) if context_dim else (6, self.dim))
        y, lp = flow.rsample_and_log_prob((2,), ctx)
        assert y.shape[:-1] == lp.shape
        d = flow(ctx)
        assert d.event_shape == (self.dim,)
        # The Pyro view and the one-pass shortcut agree.
        torch.testing.assert_close(d.log_prob(x), flow.log_prob(x, ctx), atol=tol(dtype),
                                   rtol=tol(dtype))

    def test_inverse_of_forward(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        ctx = context_for(context_dim, (7,), dtype)
        z = points((7, self.dim), dtype)
        y = flow.transform_with_intermediates(z, ctx)[-1]
        for layer in reversed(flow.layers):
            y, _ = flow._layer_inverse(layer, y, ctx)
        torch.testing.assert_close(y, z, atol=tol(dtype), rtol=0)
        # Each layer on its own, through the Pyro interface, with the stash cleared so the
        # inverse is really computed.
        for t in flow.transforms(ctx):
            x = points((7, self.dim), dtype, seed=11)
            out = t(x)
            if hasattr(t, "clear_cache"):
                t.clear_cache()
            torch.testing.assert_close(t.inv(out), x, atol=tol(dtype), rtol=0)

    def test_log_det_matches_autograd_jacobian(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        ctx = context_for(context_dim, (), dtype)
        z = points((self.dim,), dtype, seed=7)

        def forward(v):
            return flow.transform_with_intermediates(v, ctx)[-1]

        jac = torch.autograd.functional.jacobian(forward, z)
        _, ladj, _ = flow._forward_pass(z, ctx)
        expected = torch.linalg.slogdet(jac.double()).logabsdet
        torch.testing.assert_close(ladj.double(), expected, atol=10 * tol(dtype), rtol=0)
        # The inverse direction reports the same forward log-det at the preimage.
        y = forward(z)
        total = 0.0
        for layer in reversed(flow.layers):
            y, step = flow._layer_inverse(layer, y, ctx)
            total = total + step
        torch.testing.assert_close(total.double(), expected, atol=10 * tol(dtype), rtol=0)

    def test_gradients_reach_every_parameter(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype, base="learnable")
        ctx = context_for(context_dim, (8,), dtype)
        loss = -flow.log_prob(points((8, self.dim), dtype), ctx).mean()
        y, lp = flow.rsample_and_log_prob((8,), ctx)
        loss = loss + (lp + y.pow(2).sum(-1)).mean()
        loss.backward()
        for pname, p in flow.named_parameters():
            assert p.grad is not None, f"no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
            assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"

    def test_no_stale_values_after_parameter_change(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        ctx = context_for(context_dim, (5,), dtype)
        x = points((5, self.dim), dtype)
        transforms = flow.transforms(ctx)
        before = [t(x) for t in transforms]
        lp_before = flow().log_prob(x) if not context_dim else flow(ctx).log_prob(x)
        opt = torch.optim.Adam(flow.parameters(), lr=0.05)
        (-flow.log_prob(x, ctx).sum()).backward()
        opt.step()
        moved = 0
        for t, old in zip(transforms, before, strict=True):
            new = t(x)
            fresh = type(t).__call__(copy.deepcopy(t), x) if isinstance(t, torch.nn.Module) \
                else new
            torch.testing.assert_close(new, fresh)
            moved += int(not torch.allclose(new, old))
            # The inverse of an old output is recomputed with the new parameters.
            if hasattr(t, "clear_cache"):
                x_back = t.inv(old)
                t.clear_cache()
                torch.testing.assert_close(x_back, t.inv(old))
        assert moved > 0
        lp_after = flow(ctx).log_prob(x)
        assert not torch.allclose(lp_after, lp_before)
        torch.testing.assert_close(lp_after, flow.log_prob(x, ctx), atol=tol(dtype),
                                   rtol=tol(dtype))

    def test_deepcopy_after_forward(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        ctx = context_for(context_dim, (4,), dtype)
        x = points((4, self.dim), dtype)
        d = flow(ctx)
        y = d.rsample()
        d.log_prob(y)  # leaves graph-carrying tensors in every layer's stash
        clone = copy.deepcopy(flow)
        torch.testing.assert_close(clone.log_prob(x, ctx), flow.log_prob(x, ctx))

    def test_state_dict_round_trip(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype, seed=1)
        ctx = context_for(context_dim, (4,), dtype)
        x = points((4, self.dim), dtype)
        flow.log_prob(x, ctx)
        buffer = io.BytesIO()
        torch.save(flow.state_dict(), buffer)
        buffer.seek(0)
        other = make_flow(name, self.dim, context_dim, dtype, seed=2)
        assert not torch.allclose(other.log_prob(x, ctx), flow.log_prob(x, ctx))
        other.load_state_dict(torch.load(buffer, weights_only=True))
        torch.testing.assert_close(other.log_prob(x, ctx), flow.log_prob(x, ctx))

    def test_dtype_conversion(self, name, dtype, context_dim):
        flow = make_flow(name, self.dim, context_dim, dtype)
        other = torch.float32 if dtype == torch.float64 else torch.float64
        ctx = context_for(context_dim, (4,), other)
        converted = flow.to(other)
        x = points((4, self.dim), other)
        assert converted.log_prob(x, ctx).dtype == other
        assert converted.sample((3,), ctx).dtype == other

    def test_jit_svi_step(self, name, dtype, context_dim):
        if dtype == torch.float64:
            pytest.skip("one JIT run per flow is enough; float32 covers it")
        pyro.clear_param_store()
        flow = make_flow(name, self.dim, context_dim, dtype, scale=0.05)
        ctx = context_for(context_dim, (), dtype)
        data = torch.tensor(1.5)

        def model():
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z.sum(), 1.0), obs=data)

        def guide():
            pyro.module("flow", flow)
            pyro.sample("z", flow(ctx))

        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}),
                             pyro.infer.JitTrace_ELBO())
        losses = [svi.step() for _ in range(3)]
        assert all(torch.isfinite(torch.tensor(losses)))


# ------------------------------------------------------- densities integrate to one (1-D, 2-D)
def _density_cases():
    cases = []
    for name in INVERTIBLE:
        contextual = get_flow_spec(registry_name(name)).supports_context
        for context_dim in (0, CONTEXT_DIM) if contextual else (0,):
            cases.append(pytest.param(name, context_dim, id=f"{name}-ctx{context_dim}"))
    return cases


def _mass_outside(flow, ctx, half_width, n=200_000):
    """Monte-Carlo mass outside the quadrature box (standard error < 1.2e-3 for n=2e5).

    Random parameters give heavy tails; the quadrature covers the box, the flow's own samples
    account for the rest, so the sum checks that density and sampler describe one
    normalised distribution.
    """
    torch.manual_seed(123)
    sample = flow.sample((n,), ctx)
    return (sample.abs() > half_width).any(-1).double().mean().item()


@pytest.mark.parametrize("name,context_dim", _density_cases())
def test_density_integrates_to_one_1d(name, context_dim):
    flow = make_flow(name, 1, context_dim, torch.float64, scale=0.2)
    ctx = context_for(context_dim, (), torch.float64)
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    with torch.no_grad():
        density = flow.log_prob(grid[:, None], ctx).exp()
    mass = torch.trapezoid(density, grid).item() + _mass_outside(flow, ctx, 12.0)
    assert abs(mass - 1.0) < 1e-2, mass


@pytest.mark.parametrize("name,context_dim", _density_cases())
def test_density_integrates_to_one_2d(name, context_dim):
    flow = make_flow(name, 2, context_dim, torch.float64, scale=0.2)
    ctx = context_for(context_dim, (), torch.float64)
    axis = torch.linspace(-10, 10, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(grid, ctx).exp().reshape(401, 401)
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis).item()
    mass += _mass_outside(flow, ctx, 10.0)
    assert abs(mass - 1.0) < 1e-2, mass


# ------------------------------------------------------------ flows without an inverse (Pyro's)
@pytest.mark.parametrize("name", NOT_INVERTIBLE)
class TestSampleOnlyContract:
    dim = 3

    def test_samples_and_their_density(self, name):
        flow = make_flow(name, self.dim, 0, torch.float64, scale=0.1)
        y, lp = flow.rsample_and_log_prob((6,))
        assert y.shape == (6, self.dim) and lp.shape == (6,)
        # Same value through Pyro's TransformedDistribution on the same base draw.
        d = flow()
        z = flow.base_distribution().sample((6,))
        y_pyro = z
        for t in d.transforms:
            y_pyro = t(y_pyro)
        _, ladj, _ = flow._forward_pass(z, None)
        expected = flow.base_distribution().log_prob(z) - ladj
        lp_pyro = d.log_prob(y_pyro)
        torch.testing.assert_close(lp_pyro, expected)

    def test_log_det_matches_autograd_jacobian(self, name):
        flow = make_flow(name, self.dim, 0, torch.float64, scale=0.1)
        z = points((self.dim,), torch.float64, seed=7)
        jac = torch.autograd.functional.jacobian(
            lambda v: flow.transform_with_intermediates(v)[-1], z)
        _, ladj, _ = flow._forward_pass(z, None)
        torch.testing.assert_close(ladj, torch.linalg.slogdet(jac).logabsdet, atol=1e-6,
                                   rtol=0)

    def test_log_prob_of_data_explains_itself(self, name):
        flow = make_flow(name, self.dim, 0, torch.float64)
        with pytest.raises(NotImplementedError, match="no analytic inverse"):
            flow.log_prob(torch.zeros(2, self.dim, dtype=torch.float64))

    def test_gradients_stale_values_deepcopy_and_state_dict(self, name):
        flow = make_flow(name, self.dim, 0, torch.float64, scale=0.1)
        z = points((5, self.dim), torch.float64)
        y, ladj, _ = flow._forward_pass(z, None)
        (ladj.sum() + y.pow(2).sum()).backward()
        for pname, p in flow.named_parameters():
            if p.requires_grad and not pname.startswith("base"):
                assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        first = flow.transform_with_intermediates(z)[-1]
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.05)
        second = flow.transform_with_intermediates(z)[-1]
        assert not torch.allclose(first, second)
        clone = copy.deepcopy(flow)
        torch.testing.assert_close(clone.transform_with_intermediates(z)[-1], second)
        other = make_flow(name, self.dim, 0, torch.float64, seed=9)
        other.load_state_dict(flow.state_dict())
        torch.testing.assert_close(other.transform_with_intermediates(z)[-1], second)

    def test_jit_svi_step(self, name):
        pyro.clear_param_store()
        flow = make_flow(name, self.dim, 0, torch.float32, scale=0.05)

        def model():
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z.sum(), 1.0), obs=torch.tensor(1.5))

        def guide():
            pyro.module("flow", flow)
            pyro.sample("z", flow())

        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}),
                             pyro.infer.JitTrace_ELBO())
        losses = [svi.step() for _ in range(3)]
        assert all(torch.isfinite(torch.tensor(losses)))
