"""Bad input to the core gets a clear ValueError naming the argument."""

from __future__ import annotations

import pytest
import torch

import flowinfer as fi
from flowinfer.nn import MLP, MaskedMLP
from flowinfer.transforms import Coupling, LULinear, affine_coupling


@pytest.mark.parametrize("dim", [0, -2, 2.5, "3", True])
def test_build_flow_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        fi.build_flow("realnvp", dim=dim)


@pytest.mark.parametrize("name", ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow", "planar"])
def test_non_positive_layer_count(name):
    with pytest.raises(ValueError, match="num_layers"):
        fi.build_flow(name, dim=2, num_layers=0)


@pytest.mark.parametrize("hidden", [(), (0,), (8, -1), "wide", (8.5,)])
@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_bad_hidden_sizes(name, hidden):
    with pytest.raises(ValueError, match="hidden"):
        fi.build_flow(name, dim=2, hidden=hidden)


def test_unknown_flow_lists_the_available_ones():
    with pytest.raises(ValueError, match="available flows: .*nsf.*realnvp"):
        fi.build_flow("no-such-flow", dim=2)


def test_unknown_hyper_parameter_names_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown hyper-parameter.*num_bins.*accepted.*bins"):
        fi.build_flow("nsf", dim=2, num_bins=8)


@pytest.mark.parametrize("bins", [1, 0, 2.0])
def test_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        fi.build_flow("nsf", dim=2, bins=bins)


def test_bad_context_dim_and_unsupported_context():
    with pytest.raises(ValueError, match="context_dim"):
        fi.build_flow("maf", dim=2, context_dim=-1)
    with pytest.raises(ValueError, match="does not support context"):
        fi.build_flow("planar", dim=2, context_dim=3)


def test_context_given_to_unconditional_flow():
    flow = fi.build_flow("realnvp", dim=2, num_layers=1)
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(torch.zeros(4, 2), context=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="context"):
        flow(torch.zeros(3))
    layer = affine_coupling(2)
    with pytest.raises(ValueError, match="context"):
        layer.call_and_ladj(torch.zeros(2), torch.zeros(3))


def test_context_missing_or_wrong_size_for_conditional_flow():
    flow = fi.build_flow("maf", dim=2, context_dim=3, num_layers=1)
    with pytest.raises(ValueError, match="context is required"):
        flow.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="context is required"):
        flow.sample((2,))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\)"):
        flow.log_prob(torch.zeros(4, 2), context=torch.zeros(4, 2))


@pytest.mark.parametrize("name", ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow"])
def test_wrong_trailing_size(name):
    flow = fi.build_flow(name, dim=3, num_layers=1)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\).*\(5, 2\)"):
        flow.log_prob(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="z must have shape"):
        flow.transform_with_intermediates(torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        flow.layers[0](torch.zeros(5, 2))


def test_non_tensor_input():
    flow = fi.build_flow("maf", dim=2, num_layers=1)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flow.log_prob([[0.0, 0.0]])


def test_bad_base_and_transform_list():
    with pytest.raises(ValueError, match="base"):
        fi.build_flow("maf", dim=2, base="cauchy")
    with pytest.raises(TypeError, match=r"transforms\[0\]"):
        fi.Flow(["not a transform"], dim=2)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="mask"):
        Coupling(3, mask=[True, False])
    with pytest.raises(ValueError, match="mask"):
        Coupling(2, mask=[True, True])
    with pytest.raises(ValueError, match="element"):
        Coupling(2, element="cubic")
    with pytest.raises(ValueError, match="direction"):
        fi.transforms.Autoregressive(2, direction="sideways")
    with pytest.raises(ValueError, match="ordering"):
        MaskedMLP(3, 2, ordering=[0, 0, 1])
    with pytest.raises(ValueError, match="log_scale_bound"):
        fi.build_flow("realnvp", dim=2, log_scale_bound=0)
    with pytest.raises(ValueError, match="bound"):
        fi.build_flow("nsf", dim=2, bound=-1.0)
    with pytest.raises(ValueError, match="permutation"):
        fi.build_flow("realnvp", dim=2, permutation="shuffle")
    with pytest.raises(ValueError, match="dim"):
        LULinear(0)
    with pytest.raises(ValueError, match="in_features"):
        MLP(-1, 2)
    with pytest.raises(ValueError, match="temperature"):
        fi.build_flow("realnvp", dim=2, num_layers=1).sample((2,), temperature=0.0)


def test_register_flow_refuses_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        fi.register_flow("nsf")(lambda dim, context_dim=0: [])
    with pytest.raises(ValueError, match="name"):
        fi.register_flow("")
