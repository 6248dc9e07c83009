"""Autoregressive layers: bad arguments are refused, the helpers build the layers."""

from __future__ import annotations

import pytest
import torch

from flowinfer.transforms import (
    Autoregressive,
    ConditionalBijector,
    affine_autoregressive,
    conditional_affine_autoregressive,
    conditional_spline_autoregressive,
    spline_autoregressive,
)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"direction": "sideways"}, ValueError, "direction must be one of"),
    ({"element": "cubic"}, ValueError, "element must be one of"),
    ({"ordering": [0, 0]}, ValueError, "ordering must be a permutation"),
    ({"context_dim": 1.0}, TypeError, "context_dim must be an integer"),
    ({"residual": "yes"}, TypeError, "residual must be True or False"),
])
def test_bad_autoregressive_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Autoregressive(2, **kwargs)


def test_helpers_build_the_layers():
    assert affine_autoregressive(3, direction="iaf").direction == "iaf"
    assert spline_autoregressive(3, bins=4).element.bins == 4
    for helper in (conditional_affine_autoregressive, conditional_spline_autoregressive):
        layer = helper(3, context_dim=2)
        assert isinstance(layer, ConditionalBijector)
        assert layer.condition(torch.zeros(2))(torch.zeros(4, 3)).shape == (4, 3)
        with pytest.raises(ValueError, match="context_dim must be an integer >= 1"):
            helper(3, context_dim=0)


@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_input_checks_in_both_directions(direction):
    layer = Autoregressive(3, direction=direction, context_dim=2)
    with pytest.raises(ValueError, match="context is required"):
        layer.call_and_ladj(torch.zeros(3))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3\)"):
        layer.inverse_and_ladj(torch.zeros(2), torch.zeros(2))


def test_element_as_an_object():
    from flowinfer.transforms import AffineElement

    layer = Autoregressive(3, element=AffineElement(log_scale_bound=1.0), direction="iaf")
    assert layer.element_name == "affine" and layer.element.log_scale_bound == 1.0
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer.inverse_and_ladj(layer(x))[0], x)
