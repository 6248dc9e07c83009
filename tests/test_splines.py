"""Rational-quadratic spline: invertibility, log-determinant, smoothness, shapes, compile."""

from __future__ import annotations

import pytest
import torch

from flowinfer.splines import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    rational_quadratic_spline,
    spline_params_per_dim,
    split_spline_params,
)

BOUND = 5.0
BINS = 8
ATOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _params(shape, bins=BINS, dtype=torch.float64, scale=1.5, seed=0):
    """Random (widths, heights, derivatives) with leading shape ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    raw = scale * torch.randn(*shape, spline_params_per_dim(bins), generator=gen, dtype=dtype)
    return split_spline_params(raw, bins)


def _uniform(shape, low=-7.0, high=7.0, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=gen, dtype=dtype)


def _knots(unnormalized, min_size, bound=BOUND):
    """Knot positions recomputed from the definition, independently of the module."""
    bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * bins) * torch.softmax(unnormalized, -1)
    cum = torch.nn.functional.pad(torch.cumsum(sizes, -1), (1, 0))
    cum[..., -1] = 1.0  # the end knots are exactly +-bound by definition
    return bound * (2 * cum - 1)


# float32 parameters are milder: with scale 1.5 some bins have slopes near 1e-5, where any
# float32 rounding of y is amplified ~1e5-fold by the inverse (conditioning, not an error;
# test_roundtrip_with_sharp_bins checks that case against the conditioning bound).
@pytest.mark.parametrize(("dtype", "scale"), [(torch.float32, 0.5), (torch.float64, 1.5)])
def test_forward_then_inverse_is_identity(dtype, scale):
    w, h, d = _params((256, 3), dtype=dtype, scale=scale)
    x = _uniform((256, 3), dtype=dtype)
    assert ((x.abs() < BOUND).any() and (x.abs() > BOUND).any()).item()
    y, ladj = rational_quadratic_spline(x, w, h, d, bound=BOUND)
    x_back, ladj_inv = rational_quadratic_spline(y, w, h, d, inverse=True, bound=BOUND)
    assert y.dtype == x_back.dtype == ladj.dtype == ladj_inv.dtype == dtype
    torch.testing.assert_close(x_back, x, atol=ATOL[dtype], rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=ATOL[dtype], rtol=0)
    # And the other way round: inverse first.
    z, _ = rational_quadratic_spline(x, w, h, d, inverse=True, bound=BOUND)
    torch.testing.assert_close(
        rational_quadratic_spline(z, w, h, d)[0], x, atol=ATOL[dtype], rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_with_sharp_bins(dtype):
    # Large parameters push bins towards the minimum width/height and derivatives towards
    # their extremes, where the inverse's quadratic is worst conditioned. A backward-stable
    # inverse is off by at most a few roundings of y divided by the slope dy/dx.
    w, h, d = _params((512,), dtype=dtype, scale=6.0, seed=3)
    x = _uniform((512,), dtype=dtype, seed=4)
    y, ladj = rational_quadratic_spline(x, w, h, d)
    x_back, ladj_inv = rational_quadratic_spline(y, w, h, d, inverse=True)
    assert torch.isfinite(ladj).all() and torch.isfinite(ladj_inv).all()
    assert torch.isfinite(x_back).all()
    slope = ladj.exp()
    eps = torch.finfo(dtype).eps
    allowed = 100 * eps * (y.abs() + slope * x.abs() + 1) / slope
    assert ((x_back - x).abs() <= allowed).all()
    if dtype == torch.float64:
        _, ladj_back = rational_quadratic_spline(x_back, w, h, d)
        torch.testing.assert_close(ladj_inv, -ladj_back, atol=1e-10, rtol=0)


@pytest.mark.parametrize("inverse", [False, True])
def test_log_abs_det_matches_autograd(inverse):
    w, h, d = _params((300,), seed=5)
    x = _uniform((300,), seed=6).requires_grad_(True)
    y, ladj = rational_quadratic_spline(x, w, h, d, inverse=inverse)
    # The map is elementwise, so the gradient of the sum is the diagonal of the Jacobian.
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert (grad > 0).all()
    torch.testing.assert_close(ladj, grad.log(), atol=1e-10, rtol=0)
    outside = x.detach().abs() > BOUND
    assert outside.any() and (~outside).any()
    assert torch.equal(ladj[outside], torch.zeros_like(ladj[outside]))
    assert torch.equal(y[outside], x.detach()[outside])


def test_inverse_log_abs_det_is_minus_forward_at_matching_point():
    w, h, d = _params((200,), seed=7)
    y = _uniform((200,), seed=8)
    x, ladj_inv = rational_quadratic_spline(y, w, h, d, inverse=True)
    y_again, ladj_fwd = rational_quadratic_spline(x, w, h, d)
    torch.testing.assert_close(y_again, y, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj_fwd, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("bins", [1, 2, 8])
def test_zero_params_give_identity(dtype, inverse, bins):
    eps = torch.finfo(dtype).eps
    x = torch.cat([_uniform((100,), dtype=dtype), torch.tensor([-BOUND, 0.0, BOUND], dtype=dtype)])
    w, h = torch.zeros(bins, dtype=dtype), torch.zeros(bins, dtype=dtype)
    d = torch.zeros(bins - 1, dtype=dtype)
    y, ladj = rational_quadratic_spline(x, w, h, d, inverse=inverse)
    torch.testing.assert_close(y, x, atol=20 * eps * BOUND, rtol=0)
    assert ladj.abs().max().item() <= 20 * eps


@pytest.mark.parametrize("inverse", [False, True])
def test_monotone_increasing(inverse):
    w, h, d = _params((), scale=3.0, seed=9)
    grid = torch.linspace(-7, 7, 4001, dtype=torch.float64)
    y, _ = rational_quadratic_spline(grid, w, h, d, inverse=inverse)
    assert (y.diff() > 0).all()


def test_continuity_at_knots_and_bound():
    w, h, d = _params((), seed=10)
    knots_x = _knots(w, DEFAULT_MIN_BIN_WIDTH)
    knots_y = _knots(h, DEFAULT_MIN_BIN_HEIGHT)
    eps = 1e-9
    below, _ = rational_quadratic_spline(knots_x - eps, w, h, d)
    at, ladj_at = rational_quadratic_spline(knots_x, w, h, d)
    above, _ = rational_quadratic_spline(knots_x + eps, w, h, d)
    # Knots interpolate: the spline passes through (knots_x, knots_y), including +-bound.
    torch.testing.assert_close(at, knots_y, atol=1e-12, rtol=0)
    assert (above - below).abs().max().item() < 1e-6
    # Unit boundary derivatives: the slope is continuous into the identity tails too.
    edge = torch.tensor([-BOUND - eps, -BOUND + eps, BOUND - eps, BOUND + eps], dtype=torch.float64)
    y_edge, ladj_edge = rational_quadratic_spline(edge, w, h, d)
    torch.testing.assert_close(y_edge, edge, atol=1e-6, rtol=0)
    assert ladj_edge.abs().max().item() < 1e-6
    assert ladj_at[0].abs().item() < 1e-12 and ladj_at[-1].abs().item() < 1e-12
    # The same for the inverse, around the output knots.
    x_below, _ = rational_quadratic_spline(knots_y - eps, w, h, d, inverse=True)
    x_above, _ = rational_quadratic_spline(knots_y + eps, w, h, d, inverse=True)
    assert (x_above - x_below).abs().max().item() < 1e-6


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_finite_everywhere_and_nonzero_inside(inverse):
    w0, h0, d0 = _params((), seed=11)
    knots = _knots(h0, DEFAULT_MIN_BIN_HEIGHT) if inverse else _knots(w0, DEFAULT_MIN_BIN_WIDTH)
    assert knots[0].item() == -BOUND and knots[-1].item() == BOUND
    interior = torch.tensor([-3.3, -0.7, 0.1, 1.9, 4.2], dtype=torch.float64)
    tails = torch.tensor([-6.0, 6.5], dtype=torch.float64)
    # knots includes exactly -bound and +bound.
    x = torch.cat([interior, knots, tails]).requires_grad_(True)
    n = x.shape[0]
    # One parameter row per point, so each point's gradients can be inspected separately.
    w, h, d = (p.expand(n, -1).clone().requires_grad_(True) for p in (w0, h0, d0))
    y, ladj = rational_quadratic_spline(x, w, h, d, inverse=inverse)
    k = interior.shape[0]
    for out in (y, ladj):
        grads = torch.autograd.grad(out.sum(), (x, w, h, d), retain_graph=True)
        for name, g in zip(("x", "widths", "heights", "derivs"), grads, strict=True):
            assert torch.isfinite(g).all(), name
        for name, g in zip(("widths", "heights", "derivs"), grads[1:], strict=True):
            assert (g[:k].abs().sum(-1) > 0).all(), name
            # The identity tails do not depend on the parameters at all.
            assert torch.equal(g[-2:], torch.zeros_like(g[-2:])), name
    (dy_dx,) = torch.autograd.grad(y.sum(), x)
    assert (dy_dx > 0).all()


def test_gradients_finite_for_zero_params_float32():
    # The identity point is where a zero-initialised flow starts training.
    x = torch.tensor([-BOUND, -2.5, 0.0, 1.25, BOUND, 6.0]).requires_grad_(True)
    params = torch.zeros(6, spline_params_per_dim(4), requires_grad=True)
    for inverse in (False, True):
        y, ladj = rational_quadratic_spline(
            *((x,) + split_spline_params(params, 4)), inverse=inverse
        )
        gx, gp = torch.autograd.grad((y + ladj).sum(), (x, params))
        assert torch.isfinite(gx).all() and torch.isfinite(gp).all()


def test_shapes_broadcast():
    B, D = 5, 3
    x = _uniform((B, D), seed=12)
    w, h, d = _params((B, D), seed=13)
    y, ladj = rational_quadratic_spline(x, w, h, d)
    assert y.shape == ladj.shape == (B, D)
    # Parameters shared over the batch broadcast against x ...
    ws, hs, ds = _params((D,), seed=14)
    y1, l1 = rational_quadratic_spline(x, ws, hs, ds)
    y2, l2 = rational_quadratic_spline(x, *(p.expand(B, D, -1) for p in (ws, hs, ds)))
    assert y1.shape == (B, D)
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    torch.testing.assert_close(l1, l2, atol=0, rtol=0)
    # ... and x shared over a batch of parameters broadcasts against them.
    y3, l3 = rational_quadratic_spline(x[0], w, h, d, inverse=True)
    assert y3.shape == l3.shape == (B, D)
    y4, _ = rational_quadratic_spline(x[0].expand(B, D), w, h, d, inverse=True)
    torch.testing.assert_close(y3, y4, atol=0, rtol=0)
    # A scalar x with a single spline.
    w0, h0, d0 = _params((), seed=15)
    y5, l5 = rational_quadratic_spline(torch.tensor(0.5, dtype=torch.float64), w0, h0, d0)
    assert y5.shape == l5.shape == ()


def test_split_and_param_count():
    assert spline_params_per_dim(1) == 2
    assert spline_params_per_dim(8) == 23
    params = torch.arange(2 * 23.0).reshape(2, 23)
    w, h, d = split_spline_params(params, 8)
    assert w.shape == h.shape == (2, 8) and d.shape == (2, 7)
    torch.testing.assert_close(torch.cat([w, h, d], -1), params)


def test_bad_inputs_raise():
    w, h, d = _params((4,))
    x = torch.zeros(4, dtype=torch.float64)
    for bound in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="bound"):
            rational_quadratic_spline(x, w, h, d, bound=bound)
    with pytest.raises(ValueError, match="unnormalized_heights"):
        rational_quadratic_spline(x, w, torch.zeros(4, BINS + 1, dtype=torch.float64), d)
    with pytest.raises(ValueError, match="unnormalized_derivatives"):
        rational_quadratic_spline(x, w, h, torch.zeros(4, BINS, dtype=torch.float64))
    with pytest.raises(ValueError, match="unnormalized_widths"):
        rational_quadratic_spline(x, torch.zeros(4, 0), h, d)
    with pytest.raises(ValueError, match="broadcast"):
        rational_quadratic_spline(torch.zeros(3), w, h, d)
    with pytest.raises(ValueError, match="min_bin_width"):
        rational_quadratic_spline(x, w, h, d, min_bin_width=1.0 / BINS)
    with pytest.raises(ValueError, match="min_derivative"):
        rational_quadratic_spline(x, w, h, d, min_derivative=1.0)
    with pytest.raises(ValueError, match="params"):
        split_spline_params(torch.zeros(4, 22), 8)
    with pytest.raises(ValueError, match="bins must be an integer >= 1"):
        spline_params_per_dim(0)
    with pytest.raises(TypeError, match="bins must be an integer"):
        spline_params_per_dim(8.0)
    with pytest.raises(TypeError, match="bound must be a finite number"):
        rational_quadratic_spline(x, w, h, d, bound="5")
    with pytest.raises(TypeError, match="unnormalized_widths must be a torch.Tensor"):
        rational_quadratic_spline(x, [0.0] * BINS, h, d)
    with pytest.raises(ValueError, match="min_bin_height must be a finite number >= 0"):
        rational_quadratic_spline(x, w, h, d, min_bin_height=-0.1)


def _both_directions(x, w, h, d):
    y, ladj = rational_quadratic_spline(x, w, h, d)
    x_back, ladj_inv = rational_quadratic_spline(y, w, h, d, inverse=True)
    return x_back, ladj + ladj_inv


def test_compiles_as_one_graph():
    # fullgraph=True raises on any graph break (data-dependent control flow or indexing);
    # aot_eager also traces the backward without needing a C++ toolchain, which keeps it fast.
    torch._dynamo.reset()
    compiled = torch.compile(_both_directions, fullgraph=True, backend="aot_eager")
    w, h, d = _params((6, 2), bins=4, dtype=torch.float32, scale=0.5)
    x = _uniform((6, 2), dtype=torch.float32)
    params = torch.cat([w, h, d], -1).requires_grad_(True)
    x_back, total = compiled(x, *split_spline_params(params, 4))
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-4, rtol=0)
    (grad,) = torch.autograd.grad(x_back.sum() + total.sum(), params)
    assert torch.isfinite(grad).all()
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    w, h, d = _params((6, 2), bins=4, dtype=torch.float32, scale=0.5)
    x = _uniform((6, 2), dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(_both_directions, fullgraph=True)
    for got, want in zip(compiled(x, w, h, d), _both_directions(x, w, h, d), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
