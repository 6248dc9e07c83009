"""build_flow / register_flow: bad names, sizes and hyper-parameters are refused early.

Wrong types raise TypeError, wrong values ValueError, and the message names the argument.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowinfer as fi
from flowinfer.registry import get_flow_spec


def test_build_flow_bad_name():
    with pytest.raises(ValueError, match="unknown flow.*available flows: .*nsf.*realnvp"):
        fi.build_flow("NSF ", dim=2)


@pytest.mark.parametrize("name", [3, None, ["nsf"]])
def test_build_flow_name_of_the_wrong_type(name):
    with pytest.raises(TypeError, match="flow name must be a string, one of .*nsf"):
        fi.build_flow(name, dim=2)


@pytest.mark.parametrize(("dim", "error"), [
    (0, ValueError), (-2, ValueError), (2.5, TypeError), ("3", TypeError), (True, TypeError),
    (math.nan, TypeError), (math.inf, TypeError), (torch.tensor(2), TypeError),
    (np.float64(2.0), TypeError),
])
def test_build_flow_bad_dim(dim, error):
    with pytest.raises(error, match="dim must be an integer >= 1"):
        fi.build_flow("nsf", dim=dim)


def test_build_flow_accepts_numpy_integers():
    assert fi.build_flow("realnvp", dim=np.int64(3), num_layers=1).dim == 3


@pytest.mark.parametrize(("context_dim", "error"), [(-1, ValueError), (1.5, TypeError),
                                                    ("2", TypeError)])
def test_build_flow_bad_context_dim(context_dim, error):
    with pytest.raises(error, match="context_dim must be an integer >= 0"):
        fi.build_flow("nsf", dim=2, context_dim=context_dim)


def test_build_flow_bad_base_and_unsupported_context():
    with pytest.raises(ValueError, match="base must be one of"):
        fi.build_flow("nsf", dim=2, base="cauchy")
    with pytest.raises(ValueError, match="does not support context"):
        fi.build_flow("planar", dim=2, context_dim=3)


@pytest.mark.parametrize("name", ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow", "planar"])
def test_non_positive_layer_count(name):
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        fi.build_flow(name, dim=2, num_layers=0)
    with pytest.raises(TypeError, match="num_layers"):
        fi.build_flow(name, dim=2, num_layers=2.0)


@pytest.mark.parametrize(("hidden", "error"), [
    ((), ValueError), ((0,), ValueError), ((8, -1), ValueError), ("wide", TypeError),
    ((8.5,), TypeError),
])
@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_bad_hidden_sizes(name, hidden, error):
    with pytest.raises(error, match="hidden"):
        fi.build_flow(name, dim=2, hidden=hidden)


def test_unknown_hyper_parameter_names_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown hyper-parameter.*num_bins.*accepted.*bins"):
        fi.build_flow("nsf", dim=2, num_bins=8)


@pytest.mark.parametrize(("hyper", "error", "match"), [
    ({"bins": 1}, ValueError, "bins must be an integer >= 2"),
    ({"bins": 2.0}, TypeError, "bins"),
    ({"bound": -1.0}, ValueError, "bound must be a finite number > 0"),
    ({"bound": "5"}, TypeError, "bound"),
    ({"permutation": "shuffle"}, ValueError, "permutation must be one of"),
])
def test_bad_spline_and_permutation_settings(hyper, error, match):
    with pytest.raises(error, match=match):
        fi.build_flow("nsf", dim=2, **hyper)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (math.inf, ValueError),
                                              ("big", TypeError)])
def test_bad_log_scale_bound(value, error):
    with pytest.raises(error, match="log_scale_bound"):
        fi.build_flow("realnvp", dim=2, log_scale_bound=value)


@pytest.mark.parametrize(("shape", "error"), [
    ((1, 0, 8), ValueError), ((), ValueError), ("abc", TypeError), (8, TypeError),
    ((1, 2.0, 2), TypeError),
])
def test_build_flow_bad_shape(shape, error):
    with pytest.raises(error, match="shape must be"):
        fi.build_flow("glow", shape=shape)


def test_dim_and_shape_must_agree_and_dim_is_required():
    with pytest.raises(ValueError, match="dim must equal the number of elements"):
        fi.build_flow("glow", dim=10, shape=(1, 4, 4))
    with pytest.raises(ValueError, match="dim is required"):
        fi.build_flow("nsf")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        fi.build_flow("nsf", shape=(1, 4, 4))


def test_register_flow_refuses_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        fi.register_flow("nsf")(lambda dim, context_dim=0: [])
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        fi.register_flow("")
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        fi.register_flow(3)
    with pytest.raises(TypeError, match="has_inverse must be True or False"):
        fi.register_flow("x-flow", has_inverse="no")


def test_spec_reports_inverse_and_context_support():
    assert get_flow_spec("nsf").has_inverse and get_flow_spec("nsf").supports_context
    assert not get_flow_spec("planar").has_inverse
    assert not get_flow_spec("planar").supports_context
