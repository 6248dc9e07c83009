"""The Flow container: bad input is refused early, and `has_inverse` comes from the layers.

The last part is a property-based test of invertibility and the log-determinant over random
shapes and parameter draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro.distributions.transforms import ExpTransform, Planar, Radial, householder

import flowinfer as fi
from flowinfer.transforms import PyroTransform, affine_coupling

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


# ------------------------------------------------------------------------------ has_inverse
def test_has_inverse_is_computed_from_the_layers():
    assert fi.Flow([affine_coupling(2)], dim=2).has_inverse
    assert fi.Flow([], dim=2).has_inverse
    assert fi.Flow([ExpTransform()], dim=2).has_inverse  # a torch transform with _inverse
    assert not fi.Flow([affine_coupling(2), Planar(2)], dim=2).has_inverse  # Pyro's, raw
    assert not fi.Flow([Radial(2)], dim=2).has_inverse
    assert fi.Flow([householder(2)], dim=2).has_inverse
    wrapped = PyroTransform(Planar(2), dim=2, name="planar", has_inverse=False)
    assert not fi.Flow([affine_coupling(2), wrapped], dim=2).has_inverse


@pytest.mark.parametrize("name", sorted(fi.available_flows()))
def test_has_inverse_agrees_with_the_registry(name):
    spec = fi.registry.get_flow_spec(name)
    flow = fi.build_flow(name, dim=2)
    assert flow.has_inverse == spec.has_inverse
    if spec.supports_context:
        assert fi.build_flow(name, dim=2, context_dim=2).has_inverse == spec.has_inverse
    if not flow.has_inverse:
        with pytest.raises(NotImplementedError, match="no analytic inverse"):
            flow.log_prob(torch.zeros(2))


# ------------------------------------------------------------------------------ construction
def test_bad_base_and_transform_list():
    with pytest.raises(ValueError, match="base must be one of"):
        fi.Flow([], dim=2, base="cauchy")
    with pytest.raises(TypeError, match=r"transforms\[0\]"):
        fi.Flow(["not a transform"], dim=2)
    with pytest.raises(TypeError, match="context_dim must be an integer"):
        fi.Flow([], dim=2, context_dim=1.0)
    with pytest.raises(ValueError, match="context_dim must be an integer >= 0"):
        fi.Flow([], dim=2, context_dim=-1)
    with pytest.raises(TypeError, match="dim must be an integer"):
        fi.Flow([], dim="2")
    with pytest.raises(TypeError, match="shape must be a non-empty sequence"):
        fi.Flow([], shape="abc")


# ------------------------------------------------------------------------------ methods
@pytest.mark.parametrize("x", [[[0.0, 0.0]], np.zeros((3, 2)), 1.0, None])
@pytest.mark.parametrize("method", ["log_prob", "transform_with_intermediates"])
def test_flow_methods_refuse_non_tensors(flow, method, x):
    with pytest.raises(TypeError, match="must be a torch.Tensor, got"):
        getattr(flow, method)(x)


@pytest.mark.parametrize("shape", [(), (3,), (3, 3), (2, 3, 1)])
def test_log_prob_wrong_event_size(flow, shape):
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., 2\)"):
        flow.log_prob(torch.zeros(shape))


@pytest.mark.parametrize("name", ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow"])
def test_wrong_trailing_size(name):
    flow = fi.build_flow(name, dim=3, num_layers=1)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\).*\(5, 2\)"):
        flow.log_prob(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="z must have shape"):
        flow.transform_with_intermediates(torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        flow.layers[0](torch.zeros(5, 2))


def test_log_prob_nan_is_refused_not_propagated(flow):
    # Pyro's argument validation (on by default) rejects a NaN before it reaches the result.
    with pytest.raises(ValueError, match="support"):
        flow.log_prob(torch.tensor([[0.0, math.nan]]))


def test_context_given_to_unconditional_flow():
    flow = fi.build_flow("realnvp", dim=2, num_layers=1)
    message = "context was given to an unconditional flow"
    with pytest.raises(ValueError, match=message):
        flow.log_prob(torch.zeros(4, 2), context=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=message):
        flow(torch.zeros(3))
    with pytest.raises(ValueError, match="context was given to an unconditional transform"):
        affine_coupling(2).call_and_ladj(torch.zeros(2), torch.zeros(3))


def test_context_missing_wrong_size_or_type_for_conditional_flow():
    flow = fi.build_flow("maf", dim=2, context_dim=3, **SMALL)
    with pytest.raises(ValueError, match="context is required: this flow"):
        flow.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="context is required"):
        flow.sample((2,))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\)"):
        flow.log_prob(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="context must be a torch.Tensor"):
        flow.sample((2,), context=[[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match="context has dtype torch.float64"):
        flow.log_prob(torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize(("temperature", "error"), [
    (0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
    ("hot", TypeError), (True, TypeError),
])
def test_sample_bad_temperature(flow, temperature, error):
    with pytest.raises(error, match="temperature must be a finite number > 0"):
        flow.sample((2,), temperature=temperature)


@pytest.mark.parametrize("shape", ["5", (2.5,), 2.0, (True,)])
def test_sample_bad_shape_is_a_type_error(flow, shape):
    with pytest.raises(TypeError, match="sample_shape"):
        flow.sample(shape)


def test_flow_inputs_of_another_dtype_and_empty_batches(flow):
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 .* flow.to\(torch.float64\)"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.long))
    assert flow.log_prob(torch.zeros(0, 2)).shape == (0,)
    with pytest.raises(ValueError, match="negative"):
        flow.sample((-1,))
    assert flow.sample(np.int64(3)).shape == (3, 2)  # numpy integers are integers


# ------------------------------------------------------------------------------ properties
INVERTIBLE = ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow", "householder"]


def _build(name: str, dim: int, layers: int):
    if name == "householder":
        return fi.build_flow(name, dim=dim)
    return fi.build_flow(name, dim=dim, num_layers=layers, hidden=(8,))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(INVERTIBLE),
    dim=st.integers(2, 4),
    layers=st.integers(1, 3),
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    scale=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_invertibility_and_log_det_over_random_draws(name, dim, layers, batch, scale, seed):
    """x = T(z) inverts back to z, and log q(x) = log N(z) - log|det dT/dz| (autograd)."""
    torch.manual_seed(seed)
    flow = _build(name, dim, layers).double()
    with torch.no_grad():
        for p in flow.parameters():  # a random parameter draw around the identity
            p.add_(scale * torch.randn_like(p))
    flow.eval()
    z = torch.randn(*batch, dim, dtype=torch.float64)
    x = flow.transform_with_intermediates(z)[-1]
    assert x.shape == z.shape

    # Invert layer by layer through the public Pyro view of the chain.
    back = x
    for t in reversed(flow.transforms()):
        back = t.inv(back)
    assert torch.allclose(back, z, atol=1e-6, rtol=1e-6)

    log_q = flow.log_prob(x)
    assert log_q.shape == tuple(batch)
    z0, x0 = z.reshape(-1, dim)[0], x.reshape(-1, dim)[0]
    jac = torch.autograd.functional.jacobian(
        lambda v: flow.transform_with_intermediates(v)[-1], z0)
    expected = flow.base_distribution().log_prob(z0) - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(flow.log_prob(x0), expected, atol=1e-6, rtol=1e-6)
