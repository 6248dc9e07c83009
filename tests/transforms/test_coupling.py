"""Coupling layers: bad arguments and inputs are refused, the helpers build the layers."""

from __future__ import annotations

import pytest
import torch

from flowinfer.transforms import (
    ConditionalBijector,
    Coupling,
    affine_coupling,
    conditional_affine_coupling,
    conditional_spline_coupling,
    spline_coupling,
)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"dim": 3, "mask": [True, False]}, ValueError, r"mask must have shape \(3,\)"),
    ({"dim": 2, "mask": [True, True]}, ValueError, "mask must leave at least one"),
    ({"dim": 2, "element": "cubic"}, ValueError, "element must be one of"),
    ({"dim": 0}, ValueError, "dim must be an integer >= 1"),
    ({"dim": 2.0}, TypeError, "dim must be an integer"),
    ({"dim": 2, "context_dim": -1}, ValueError, "context_dim must be an integer >= 0"),
    ({"dim": 2, "hidden": "wide"}, TypeError, "hidden"),
    ({"dim": 2, "log_scale_bound": 0}, ValueError, "log_scale_bound"),
    ({"dim": 2, "element": "spline", "bins": 1}, ValueError, "bins must be an integer >= 2"),
    ({"dim": 2, "element": "spline", "bound": "5"}, TypeError, "bound"),
])
def test_bad_coupling_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Coupling(**kwargs)


def test_coupling_input_checks():
    layer = affine_coupling(3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        layer.call_and_ladj(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="context was given to an unconditional transform"):
        layer.call_and_ladj(torch.zeros(3), torch.zeros(3))
    conditional = Coupling(3, context_dim=2)
    with pytest.raises(ValueError, match="context is required"):
        conditional.inverse_and_ladj(torch.zeros(3))


def test_helpers_build_the_layers():
    assert affine_coupling(2).element_name == "affine"
    assert spline_coupling(2, bins=4).element.bins == 4
    for helper in (conditional_affine_coupling, conditional_spline_coupling):
        layer = helper(2, context_dim=3)
        assert isinstance(layer, ConditionalBijector) and layer.context_dim == 3
        assert layer.condition(torch.zeros(3))(torch.zeros(5, 2)).shape == (5, 2)
        with pytest.raises(ValueError, match="context_dim must be an integer >= 1"):
            helper(2, context_dim=0)


def test_scattered_mask_matches_the_block_fast_path():
    # The contiguous-block path slices; a scattered mask goes through the index buffers.
    torch.manual_seed(0)
    block = Coupling(4, mask=[True, True, False, False]).double()
    scattered = Coupling(4, mask=[True, False, True, False]).double()
    assert block._block == "first" and scattered._block is None
    with torch.no_grad():
        for a, b in zip(block.parameters(), scattered.parameters(), strict=True):
            a.normal_()
            b.copy_(a)
    x = torch.randn(6, 4, dtype=torch.float64)
    y_block, l_block = block.call_and_ladj(x)
    y_scat, l_scat = scattered.call_and_ladj(x[:, [0, 2, 1, 3]])
    torch.testing.assert_close(y_scat[:, [0, 2, 1, 3]], y_block)
    torch.testing.assert_close(l_scat, l_block)


def test_element_as_an_object_equals_the_element_by_name():
    from flowinfer.transforms import SplineElement

    torch.manual_seed(0)
    by_name = Coupling(3, element="spline", bins=4, bound=3.0).double()
    torch.manual_seed(0)
    by_object = Coupling(3, element=SplineElement(bins=4, bound=3.0)).double()
    assert by_object.element_name == "spline" and by_object.element.bound == 3.0
    with torch.no_grad():
        for a, b in zip(by_name.parameters(), by_object.parameters(), strict=True):
            a.normal_()
            b.copy_(a)
    x = torch.randn(5, 3, dtype=torch.float64)
    (y1, l1), (y2, l2) = by_name.call_and_ladj(x), by_object.call_and_ladj(x)
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(l2, l1)
    with pytest.raises(TypeError, match="element must be 'affine', 'spline' or an element"):
        Coupling(3, element=3)
