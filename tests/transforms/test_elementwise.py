"""ActNorm on any event rank, ElementwiseAffine, and the deprecated names around them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flowinfer as fi
from flowinfer.transforms import ActNorm, ElementwiseAffine

F64 = torch.float64
LEGACY = Path(__file__).resolve().parent.parent / "data" / "legacy_v010_glow.pt"


@pytest.mark.parametrize("event", [3, (3,), (3, 5), (3, 4, 4)])
def test_actnorm_start_standardises_each_channel_on_any_rank(event):
    t = ActNorm(event).double()
    shape = (event,) if isinstance(event, int) else event
    gen = torch.Generator().manual_seed(0)
    view = (3,) + (1,) * (len(shape) - 1)
    loc = torch.tensor([1.0, -2.0, 5.0], dtype=F64).reshape(view)
    scale = torch.tensor([0.5, 2.0, 3.0], dtype=F64).reshape(view)
    data = loc + scale * torch.randn(40, *shape, generator=gen, dtype=F64)
    z = t.inv(data)
    assert bool(t.initialized)
    assert tuple(t.loc.shape) == view
    dims = (0,) + tuple(range(2, 1 + len(shape)))
    torch.testing.assert_close(z.mean(dims), torch.zeros(3, dtype=F64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(dims), torch.ones(3, dtype=F64), atol=1e-10, rtol=0)
    # log|det J| = (positions per channel) * sum(log_scale), the same in both directions.
    positions = data[0].numel() // 3
    y, ladj = t.call_and_ladj(z)
    torch.testing.assert_close(y, data)
    torch.testing.assert_close(ladj, (positions * t.log_scale.sum()).expand(40))
    # Later batches do not re-initialise it; a loaded (initialised) state is kept.
    before = t.loc.detach().clone()
    t.inv(data + 10.0)
    assert torch.equal(t.loc.detach(), before)
    fresh = ActNorm(event).double()
    fresh.load_state_dict(t.state_dict())
    fresh.inv(data * 3.0)
    assert torch.equal(fresh.loc.detach(), before)
    # In eval mode the first batch does not initialise.
    idle = ActNorm(event).double().eval()
    torch.testing.assert_close(idle.inv(data), data)
    assert not bool(idle.initialized)


def test_actnorm_log_det_matches_autograd_jacobian_on_images():
    t = ActNorm((2, 3, 3)).double()
    with torch.no_grad():
        t.log_scale.add_(torch.randn_like(t.log_scale))
        t.loc.add_(torch.randn_like(t.loc))
    x = torch.randn(2, 3, 3, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda v: t.call_and_ladj(v)[0], x).reshape(18, 18)
    torch.testing.assert_close(t.call_and_ladj(x)[1], torch.linalg.slogdet(jac).logabsdet)
    assert t.domain.event_dim == 3 and ActNorm(3).domain.event_dim == 1


def test_glow_state_dicts_written_before_the_merge_still_load():
    # Written by flowinfer 0.1.0, where vectors used ActNorm and images ActNorm2d
    # (tests/data/make_legacy_glow.py): keys and parameter shapes are unchanged.
    legacy = torch.load(LEGACY, weights_only=True)
    image = fi.build_flow("glow", shape=(1, 4, 4), levels=2, steps_per_level=1,
                          hidden_channels=4)
    image.load_state_dict(legacy["image_state"])
    torch.testing.assert_close(image.log_prob(legacy["x_image"]), legacy["image_log_prob"])
    vector = fi.build_flow("glow", dim=3, num_layers=2, hidden=(8,))
    vector.load_state_dict(legacy["vector_state"])
    torch.testing.assert_close(vector.log_prob(legacy["x_vector"]), legacy["vector_log_prob"])
    # The loaded ActNorms are initialised: a new batch does not move them.
    norms = [m for m in image.modules() if isinstance(m, ActNorm)]
    assert len(norms) == 2 and all(m._is_initialized for m in norms)


def test_deprecated_names_still_work_and_warn():
    from flowinfer.transforms import (
        ActNorm2d,
        actnorm,
        actnorm2d,
        channel_coupling,
        elementwise_affine,
        invertible_conv1x1,
        lu_linear,
        multiscale_split,
        squeeze,
    )

    with pytest.warns(DeprecationWarning, match=r"ActNorm\(shape\)"):
        old = ActNorm2d((2, 4, 4))
    assert isinstance(old, ActNorm) and tuple(old.loc.shape) == (2, 1, 1)
    assert set(old.state_dict()) == set(ActNorm((2, 4, 4)).state_dict())
    with pytest.raises(ValueError, match=r"shape must be a \(C, H, W\)"), \
            pytest.warns(DeprecationWarning):
        ActNorm2d((4, 4))
    built = {
        "actnorm": lambda: actnorm(2), "elementwise_affine": lambda: elementwise_affine(2),
        "lu_linear": lambda: lu_linear(2), "squeeze": lambda: squeeze((1, 2, 2)),
        "actnorm2d": lambda: actnorm2d((1, 2, 2)),
        "invertible_conv1x1": lambda: invertible_conv1x1((2, 2, 2)),
        "channel_coupling": lambda: channel_coupling((2, 2, 2), 4),
        "multiscale_split": lambda: multiscale_split((2, 2, 2)),
    }
    for name, make in built.items():
        with pytest.warns(DeprecationWarning, match="deprecated"):
            layer = make()
        assert isinstance(layer, fi.transforms.Bijector), name
    for name in [*built, "ActNorm2d"]:
        assert name not in fi.transforms.__all__


@pytest.mark.parametrize(("event", "error"), [
    (0, ValueError), (2.0, TypeError), ("3", TypeError), ((2, 0), ValueError),
    ((), ValueError), ((2, 1.5), TypeError),
])
def test_actnorm_bad_event(event, error):
    with pytest.raises(error, match="dim|event"):
        ActNorm(event)


def test_elementwise_affine_starts_at_identity_and_checks_dim():
    t = ElementwiseAffine(3)
    x = torch.randn(4, 3)
    y, ladj = t.call_and_ladj(x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))
    with pytest.raises(TypeError, match="dim must be an integer"):
        ElementwiseAffine(2.5)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        t.call_and_ladj(torch.zeros(4, 2))
