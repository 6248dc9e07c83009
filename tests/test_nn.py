"""Conditioner networks: identity start and the autoregressive property of MADE."""

from __future__ import annotations

import pytest
import torch

from flowinfer.nn import MLP, MaskedMLP, check_hidden


def test_mlp_starts_at_zero_and_learns():
    net = MLP(3, 5, hidden=(16, 16))
    x = torch.randn(7, 3)
    assert torch.equal(net(x), torch.zeros(7, 5))
    net(x).pow(2).sum().backward()
    assert net.net[-1].weight.grad is not None


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("ordering", [None, [2, 0, 3, 1]])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_is_autoregressive_in_its_ordering(residual, ordering, context_dim):
    torch.manual_seed(0)
    dim, params = 4, 3
    made = MaskedMLP(dim, params, hidden=(32, 32), context_dim=context_dim, ordering=ordering,
                     residual=residual)
    # Move the zero-initialised output (and residual) layers away from zero so every allowed
    # connection is non-zero.
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.5 * torch.randn_like(p))
    order = torch.arange(dim) if ordering is None else torch.tensor(ordering)
    x = torch.randn(dim, dtype=torch.float64)
    made = made.double()
    ctx = torch.randn(context_dim, dtype=torch.float64) if context_dim else None
    jac = torch.autograd.functional.jacobian(lambda v: made(v, ctx), x)  # (dim, params, dim)
    dependence = jac.abs().sum(1) > 0  # output i depends on input j
    allowed = order[:, None] > order[None, :]
    assert torch.equal(dependence & ~allowed, torch.zeros_like(allowed)), "leak past the order"
    # With 32 hidden units every allowed connection exists for dim=4.
    assert torch.equal(dependence, allowed)
    if context_dim:
        cjac = torch.autograd.functional.jacobian(lambda c: made(x, c), ctx)
        assert (cjac.abs().sum((1, 2)) > 0).all(), "every output must see the context"


def test_made_output_starts_at_zero():
    made = MaskedMLP(3, 2, hidden=(8,))
    assert torch.equal(made(torch.randn(5, 3)), torch.zeros(5, 3, 2))


def test_residual_needs_equal_widths():
    with pytest.raises(ValueError, match="equal sizes"):
        MaskedMLP(3, 2, hidden=(8, 16), residual=True)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"in_features": -1, "out_features": 2}, ValueError, "in_features must be an integer >= 0"),
    ({"in_features": 2, "out_features": 0}, ValueError, "out_features must be an integer >= 1"),
    ({"in_features": 2.0, "out_features": 2}, TypeError, "in_features must be an integer"),
    ({"in_features": 2, "out_features": 2, "hidden": ()}, ValueError, "hidden"),
    ({"in_features": 2, "out_features": 2, "zero_init": 1}, TypeError, "zero_init"),
])
def test_mlp_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


def test_made_bad_arguments():
    with pytest.raises(ValueError, match="ordering must be a permutation"):
        MaskedMLP(3, 2, ordering=[0, 0, 1])
    with pytest.raises(ValueError, match="params_per_dim must be an integer >= 1"):
        MaskedMLP(3, 0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        MaskedMLP("3", 2)


def test_check_hidden_takes_an_int_or_a_sequence():
    assert check_hidden(8) == (8,)
    assert check_hidden([16, 8]) == (16, 8)
    with pytest.raises(TypeError, match="hidden must be a non-empty sequence"):
        check_hidden("wide")
    with pytest.raises(ValueError, match="hidden must be a non-empty sequence"):
        check_hidden((8, 0))


def test_check_positive_int_is_deprecated_and_keeps_its_old_errors():
    from flowinfer.nn import check_positive_int

    with pytest.warns(DeprecationWarning, match="check_int"):
        assert check_positive_int(0, "n", allow_zero=True) == 0
    with pytest.warns(DeprecationWarning), \
            pytest.raises(ValueError, match="n must be a positive integer"):
        check_positive_int(1.5, "n")
