"""The Bijector base: checks once in the public methods, the private ones do the maths."""

from __future__ import annotations

import pytest
import torch

from flowinfer.transforms import Bijector, ConditionalBijector, affine_coupling
from flowinfer.transforms.base import check_context, check_event


class Shift(Bijector):
    """y = x + 1, counting how often the private methods run."""

    def __init__(self, dim: int, context_dim: int = 0) -> None:
        super().__init__(dim, context_dim)
        self.calls = []

    def _call_and_ladj(self, x, context):
        self.calls.append(("forward", x.shape, None if context is None else context.shape))
        return x + 1.0, x.new_zeros(x.shape[:-1])

    def _inverse_and_ladj(self, y, context):
        self.calls.append(("inverse", y.shape, None if context is None else context.shape))
        return y - 1.0, y.new_zeros(y.shape[:-1])


def test_subclass_implements_only_the_private_methods_and_gets_the_checks():
    t = Shift(3)
    y, ladj = t.call_and_ladj(torch.zeros(2, 3))
    assert torch.equal(y, torch.ones(2, 3)) and ladj.shape == (2,)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        t.call_and_ladj(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3\)"):
        t.inverse_and_ladj(torch.zeros(2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        t.call_and_ladj([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="context was given to an unconditional transform"):
        t.call_and_ladj(torch.zeros(3), torch.zeros(2))
    assert len(t.calls) == 1  # bad input never reached the private method
    # The Pyro interface goes through the same checks.
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        t(torch.zeros(2))


def test_context_is_checked_and_broadcast_before_the_private_method():
    t = Shift(2, context_dim=4)
    with pytest.raises(ValueError, match="context is required: this transform was built with "
                                         "context_dim=4"):
        t.call_and_ladj(torch.zeros(2))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 4\)"):
        t.inverse_and_ladj(torch.zeros(2), torch.zeros(3))
    t.call_and_ladj(torch.zeros(5, 2), torch.zeros(4))
    assert t.calls[-1] == ("forward", (5, 2), (5, 4))
    wrapped = ConditionalBijector(t)
    wrapped.condition(torch.zeros(3, 1, 4)).inv(torch.zeros(6, 2))
    assert t.calls[-1] == ("inverse", (3, 6, 2), (3, 6, 4))


def test_check_context_words_both_mistakes_for_any_owner():
    assert check_context(None, 0, "flow") is None
    context = torch.zeros(3)
    assert check_context(context, 3, "flow") is context
    with pytest.raises(ValueError, match=r"context was given to an unconditional flow "
                                         r"\(context_dim=0\)"):
        check_context(context, 0, "flow")
    with pytest.raises(ValueError, match="context is required: this prior was built with "
                                         "context_dim=2"):
        check_context(None, 2, "prior")
    with pytest.raises(TypeError, match="context must be a torch.Tensor"):
        check_context([0.0, 0.0], 2, "flow")


def test_check_event_for_vectors_and_tensors():
    check_event(torch.zeros(5, 3), 3, "x")
    check_event(torch.zeros(2, 3, 4), (3, 4), "x")
    check_event(torch.zeros(3), (3,), "x")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3, 4\) \(the event "
                                         r"shape\), got shape \(4, 3\)"):
        check_event(torch.zeros(4, 3), (3, 4), "x")
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        check_event(torch.zeros(()), 2, "z")


def test_layers_say_whether_they_have_an_analytic_inverse():
    assert Shift(2).has_inverse and affine_coupling(2).has_inverse
    assert ConditionalBijector(Shift(2, context_dim=1)).has_inverse


def test_base_class_without_implementation_raises_not_implemented():
    with pytest.raises(NotImplementedError):
        Bijector(2).call_and_ladj(torch.zeros(2))
