"""LULinear: bad arguments are refused; the inverse undoes the map."""

from __future__ import annotations

import pytest
import torch

from flowinfer.transforms import LULinear


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        LULinear(0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        LULinear(2.0)
    with pytest.raises(TypeError, match="bias must be True or False"):
        LULinear(2, bias=1)


def test_inverse_and_log_det():
    torch.manual_seed(0)
    t = LULinear(3).double()
    with torch.no_grad():
        for p in t.parameters():
            p.normal_()
    x = torch.randn(4, 3, dtype=torch.float64)
    y, ladj = t.call_and_ladj(x)
    x_back, ladj_back = t.inverse_and_ladj(y)
    torch.testing.assert_close(x_back, x)
    expected = torch.linalg.slogdet(t.weight()).logabsdet
    torch.testing.assert_close(ladj, expected.expand(4))
    torch.testing.assert_close(ladj_back, ladj)
