"""Monotonic rational-quadratic splines with identity tails (pure tensor functions).

The spline maps ``[-bound, bound]`` onto itself through ``K`` bins whose widths, heights and
knot derivatives come from unconstrained parameters, and is the identity outside that
interval. Both directions are closed form: the forward map is a ratio of quadratics and the
inverse is the root of a quadratic.

Everything here is written without data-dependent indexing (no boolean masks, no
``nonzero``): every element is evaluated on a clamped input and the tails are selected with
``torch.where``. That keeps the functions traceable by ``torch.compile(fullgraph=True)`` and
keeps the shapes of all intermediates static.

Example:
    >>> import torch
    >>> from flowinfer.splines import rational_quadratic_spline, split_spline_params
    >>> _ = torch.manual_seed(0)
    >>> params = torch.randn(4, 3, 3 * 8 - 1)
    >>> w, h, d = split_spline_params(params, bins=8)
    >>> x = torch.randn(4, 3)
    >>> y, ladj = rational_quadratic_spline(x, w, h, d)
    >>> x_back, ladj_inv = rational_quadratic_spline(y, w, h, d, inverse=True)
    >>> torch.allclose(x_back, x, atol=1e-4) and torch.allclose(ladj_inv, -ladj, atol=1e-4)
    True

References:
    Durkan, C., Bekasov, A., Murray, I., Papamakarios, G. (2019). Neural Spline Flows.
    NeurIPS 2019. arXiv:1906.04032.

    Gregory, J. A., Delbourgo, R. (1982). Piecewise rational quadratic interpolation to
    monotonic data. IMA Journal of Numerical Analysis, 2(2), 123-130.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowinfer.checks import check_int, check_number

__all__ = [
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_DERIVATIVE",
    "spline_params_per_dim",
    "split_spline_params",
    "rational_quadratic_spline",
    "rational_quadratic_spline_from_params",
]

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_params_per_dim(bins: int) -> int:
    """Number of unconstrained parameters per dimension: ``3 * bins - 1``.

    A spline with ``K`` bins has ``K`` widths, ``K`` heights and ``K - 1`` interior knot
    derivatives; the two boundary derivatives are fixed to 1 to match the identity tails.

    Args:
        bins: Number of bins ``K`` (a positive integer).

    Returns:
        ``3 * bins - 1``.

    Raises:
        TypeError: If ``bins`` is not an integer.
        ValueError: If ``bins`` is below 1.

    Example:
        >>> spline_params_per_dim(8)
        23
    """
    check_int(bins, "bins")
    return 3 * bins - 1


def split_spline_params(params: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split a ``(..., 3K - 1)`` tensor into widths ``(..., K)``, heights ``(..., K)``, derivatives
    ``(..., K - 1)``.

    Args:
        params: Unconstrained spline parameters with last dimension ``3 * bins - 1``.
        bins: Number of bins ``K``.

    Returns:
        ``(unnormalized_widths, unnormalized_heights, unnormalized_derivatives)``, views into
        ``params``.

    Raises:
        TypeError: If ``bins`` is not an integer.
        ValueError: If ``bins`` is below 1 or the last dimension of ``params`` is not
            ``3 * bins - 1``.

    Example:
        >>> w, h, d = split_spline_params(torch.zeros(5, 2, 23), bins=8)
        >>> w.shape, h.shape, d.shape
        (torch.Size([5, 2, 8]), torch.Size([5, 2, 8]), torch.Size([5, 2, 7]))
    """
    check_int(bins, "bins")
    expected = 3 * bins - 1
    if params.dim() < 1 or params.shape[-1] != expected:
        raise ValueError(
            f"params must have last dimension 3 * bins - 1 = {expected} for bins={bins}, "
            f"got shape {tuple(params.shape)}"
        )
    return params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :]


def rational_quadratic_spline(
    x: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    bound: float = 5.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Elementwise monotonic rational-quadratic spline on ``[-bound, bound]``, identity outside.

    Widths and heights are ``min + (1 - min * K) * softmax(u)`` so every bin keeps at least
    the minimum size; the knots are their cumulative sums scaled to ``[-bound, bound]``, with
    the end knots exactly ``-bound`` and ``bound``. Interior derivatives are
    ``min_derivative + softplus(u + c)`` with ``c`` chosen so that ``u = 0`` gives derivative
    1; boundary derivatives are 1. Hence all-zero parameters give the identity map.

    Args:
        x: Inputs of shape ``(...)``: the forward inputs, or the outputs when ``inverse``.
        unnormalized_widths: Shape ``(..., K)``.
        unnormalized_heights: Shape ``(..., K)``.
        unnormalized_derivatives: Shape ``(..., K - 1)`` (interior knots only).
        inverse: Evaluate the inverse map instead of the forward map.
        bound: Half-width of the spline's interval; must be positive and finite.
        min_bin_width: Smallest bin width as a fraction of the interval (``K * min < 1``).
        min_bin_height: Smallest bin height as a fraction of the interval (``K * min < 1``).
        min_derivative: Smallest interior knot derivative, in ``[0, 1)``.

    Returns:
        ``(out, log_abs_det)``, both with the broadcast leading shape. For the forward map
        ``out = y`` and ``log_abs_det = log|dy/dx|`` at ``x``. With ``inverse=True`` the input
        is ``y``, ``out = x`` and ``log_abs_det = log|dx/dy| = -log|dy/dx|`` at that ``x``.
        Outside ``[-bound, bound]`` the map is the identity and ``log_abs_det`` is 0.

    Raises:
        TypeError: If an input is not a tensor or a setting not a number.
        ValueError: If ``bound`` is not positive and finite, if the parameter shapes are not
            ``(..., K)``, ``(..., K)``, ``(..., K - 1)``, if the leading shapes do not
            broadcast, or if a minimum is out of range.

    Example:
        >>> import torch
        >>> w, h, d = torch.zeros(3, 8), torch.zeros(3, 8), torch.zeros(3, 7)
        >>> y, ladj = rational_quadratic_spline(torch.tensor([-6.0, 0.3, 2.0]), w, h, d)
        >>> torch.allclose(y, torch.tensor([-6.0, 0.3, 2.0])), ladj.abs().max().item() < 1e-6
        (True, True)

    References:
        Durkan, C., Bekasov, A., Murray, I., Papamakarios, G. (2019). Neural Spline Flows.
        NeurIPS 2019. arXiv:1906.04032. (Eqs. 4 and 6-8 and Appendix A.)

        Gregory, J. A., Delbourgo, R. (1982). Piecewise rational quadratic interpolation to
        monotonic data. IMA Journal of Numerical Analysis, 2(2), 123-130.
    """
    _validate(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
              bound=bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
              min_derivative=min_derivative)
    try:
        batch = torch.broadcast_shapes(
            x.shape,
            unnormalized_widths.shape[:-1],
            unnormalized_heights.shape[:-1],
            unnormalized_derivatives.shape[:-1],
        )
    except RuntimeError as err:
        raise ValueError(
            "x and the leading dimensions of unnormalized_widths, unnormalized_heights and "
            f"unnormalized_derivatives must broadcast: got x {tuple(x.shape)}, "
            f"unnormalized_widths {tuple(unnormalized_widths.shape)}, "
            f"unnormalized_heights {tuple(unnormalized_heights.shape)}, "
            f"unnormalized_derivatives {tuple(unnormalized_derivatives.shape)}"
        ) from err

    # Widths and heights go through one softmax/cumsum as a stacked (..., 2, K) table.
    sizes = torch.stack(
        torch.broadcast_tensors(unnormalized_widths, unnormalized_heights), dim=-2
    )
    return _spline(x.expand(batch), sizes, unnormalized_derivatives, inverse=inverse,
                   bound=bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                   min_derivative=min_derivative)


def rational_quadratic_spline_from_params(
    x: Tensor, params: Tensor, bins: int, *, inverse: bool = False, bound: float = 5.0
) -> tuple[Tensor, Tensor]:
    """:func:`rational_quadratic_spline` on packed ``(..., 3K - 1)`` parameters (the fast path).

    The layout is that of :func:`split_spline_params`: ``K`` widths, ``K`` heights, ``K - 1``
    derivatives. Widths and heights are normalised as one ``(..., 2, K)`` view of ``params``
    (no copy), which is what the flow layers call; the default minimum sizes apply.

    Args:
        x: Inputs of shape ``batch``; ``params`` must have shape ``batch + (3 * bins - 1,)``.
        params: Unconstrained spline parameters.
        bins: Number of bins ``K``.
        inverse: Evaluate the inverse map.
        bound: Half-width of the spline's interval.

    Returns:
        ``(out, log_abs_det)`` exactly as :func:`rational_quadratic_spline`.

    Raises:
        ValueError: If ``params`` does not have last dimension ``3 * bins - 1`` or its
            leading shape differs from ``x.shape``.

    Example:
        >>> params = torch.zeros(4, 3, 23)
        >>> y, ladj = rational_quadratic_spline_from_params(torch.ones(4, 3), params, 8)
        >>> torch.allclose(y, torch.ones(4, 3)), ladj.abs().max().item() < 1e-6
        (True, True)

    References:
        Durkan, C., Bekasov, A., Murray, I., Papamakarios, G. (2019). Neural Spline Flows.
        NeurIPS 2019. arXiv:1906.04032.
    """
    check_int(bins, "bins")
    if params.shape[-1] != 3 * bins - 1 or params.shape[:-1] != x.shape:
        raise ValueError(
            f"params must have shape x.shape + (3 * bins - 1,) = {tuple(x.shape)} + "
            f"({3 * bins - 1},), got {tuple(params.shape)}"
        )
    sizes = params[..., : 2 * bins].unflatten(-1, (2, bins))
    return _spline(x, sizes, params[..., 2 * bins :], inverse=inverse, bound=bound,
                   min_bin_width=DEFAULT_MIN_BIN_WIDTH, min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                   min_derivative=DEFAULT_MIN_DERIVATIVE)


def _spline(
    x: Tensor,
    unnormalized_sizes: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline on validated inputs; ``unnormalized_sizes`` is ``(..., 2, K)`` (widths,
    heights) and every leading shape broadcasts to ``x.shape``.

    The work is done in unit coordinates, ``[-bound, bound] -> [0, 1]`` on both axes: bin
    slopes and knot derivatives are invariant under that common scaling, so the tables never
    need rescaling and only ``x`` and the output are mapped (two tensors instead of
    ``2 (K + 1)``-wide tables). Each operation acts on widths and heights together and the
    six per-point quantities come from a single ``gather``; on CPU the flow layers are bound
    by the number of kernel launches, not by arithmetic, so fewer, wider ops is what pays.
    """
    bins = unnormalized_sizes.shape[-1]
    if min_bin_width == min_bin_height:
        floor = min_bin_width
        share = 1 - min_bin_width * bins
    else:
        floor = unnormalized_sizes.new_tensor([[min_bin_width], [min_bin_height]])
        share = 1 - floor * bins
    # Softmax and cumulative sum written out: on CPU torch's softmax (forward and backward)
    # is about 4x slower than exp and a division at K = 8, and cumsum's backward (two flips
    # and a cumsum) about 1.5x slower than a matmul. So: exp of the inputs less their
    # detached row maximum (softmax is shift invariant; this keeps exp finite), then every
    # partial sum at once as a matmul with a triangular matrix of ones, whose last column is
    # the softmax normaliser.
    exp = (unnormalized_sizes - unnormalized_sizes.detach().amax(dim=-1, keepdim=True)).exp()
    ones = torch.ones(bins, bins, dtype=exp.dtype, device=exp.device)
    partial = exp @ ones.triu()
    total = partial[..., -1:]
    # Knot j (0 < j < K) = sum of the first j sizes = j * floor + share * partial_{j-1} / total.
    # Only those K - 1 knots are computed; the ends are written as exact 0 and 1, so the
    # spline meets the tails at exactly -bound and bound whatever the sums round to.
    steps = torch.arange(1, bins, dtype=exp.dtype, device=exp.device)
    inner = floor * steps + share * (partial[..., :-1] / total)
    lead = inner.shape[:-1]
    knots = torch.cat([inner.new_zeros(*lead, 1), inner, inner.new_ones(*lead, 1)], dim=-1)
    derivs = _knot_derivatives(unnormalized_derivatives, min_derivative)
    # One table (..., 3, K + 1): x knots, y knots, derivatives.
    lead = torch.broadcast_shapes(knots.shape[:-2], derivs.shape[:-1])
    table = torch.cat(
        [knots.expand(*lead, 2, bins + 1), derivs.unsqueeze(-2).expand(*lead, 1, bins + 1)],
        dim=-2,
    )
    shape = x.shape
    table = table.expand(*shape, 3, bins + 1)

    inside = x.abs() <= bound
    # Evaluating the spline on the clamped input for every element keeps all intermediates
    # finite, so the discarded tail branch of torch.where cannot leak NaN gradients.
    u = (x.clamp(-bound, bound) + bound) * (0.5 / bound)

    # Bin index = number of interior knots at or below the point, which lands in [0, K - 1]
    # by construction; a point exactly on a knot belongs to the bin that starts there.
    search = table[..., 1 if inverse else 0, 1:-1]
    idx = (u.unsqueeze(-1) >= search).sum(-1, keepdim=True)
    # Left and right ends of the bin for all three rows of the table in one gather.
    idx = torch.cat([idx, idx + 1], dim=-1).unsqueeze(-2).expand(*shape, 3, 2)
    (x_k, x_k1), (y_k, y_k1), (d_k, d_k1) = (
        row.unbind(-1) for row in table.gather(-1, idx).unbind(-2)
    )
    w_k = x_k1 - x_k
    h_k = y_k1 - y_k
    s_k = h_k / w_k
    # (d_k + d_{k+1} - 2 s_k) is the curvature term of the Gregory-Delbourgo denominator.
    curv = d_k + d_k1 - 2 * s_k

    if inverse:
        dy = u - y_k
        # xi solves a xi^2 + b xi + c = 0 (Durkan et al. 2019, Appendix A). The textbook root
        # divides by a, which vanishes wherever the bin is locally linear (e.g. at the
        # identity); 2c / (-b - sqrt(disc)) is the same root without that 0/0 or the
        # cancellation, and its denominator is never 0 (c = 0 or a = 0 both force b > 0).
        # The clamp absorbs rounding that would push the discriminant slightly negative.
        a = h_k * (s_k - d_k) + dy * curv
        b = h_k * d_k - dy * curv
        c = -s_k * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - disc.sqrt())
        out = xi * w_k + x_k
    else:
        xi = (u - x_k) / w_k

    one_minus = 1 - xi
    xi_sq = xi * xi
    xi_1mxi = xi * one_minus
    denominator = s_k + curv * xi_1mxi
    if not inverse:
        out = y_k + h_k * (s_k * xi_sq + d_k * xi_1mxi) / denominator
    # The derivative is always taken at the forward input xi, so the inverse can negate it.
    numerator = d_k1 * xi_sq + 2 * s_k * xi_1mxi + d_k * one_minus * one_minus
    # log((s / den)^2 num) as one log: three logs cost three kernels forward and backward.
    ratio = s_k / denominator
    log_deriv = torch.log(ratio * ratio * numerator)
    if inverse:
        log_deriv = -log_deriv

    out = torch.where(inside, out * (2 * bound) - bound, x)
    log_abs_det = torch.where(inside, log_deriv, 0.0)
    return out, log_abs_det


def _validate(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> int:
    """Check arguments and return the number of bins ``K``."""
    check_number(bound, "bound", low=0.0, low_open=True)
    for name, t in (
        ("x", x),
        ("unnormalized_widths", widths),
        ("unnormalized_heights", heights),
        ("unnormalized_derivatives", derivatives),
    ):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if widths.dim() < 1 or widths.shape[-1] < 1:
        raise ValueError(
            f"unnormalized_widths must have shape (..., K) with K >= 1, got {tuple(widths.shape)}"
        )
    bins = widths.shape[-1]
    if heights.dim() < 1 or heights.shape[-1] != bins:
        raise ValueError(
            f"unnormalized_heights must have last dimension K = {bins} (as unnormalized_widths), "
            f"got shape {tuple(heights.shape)}"
        )
    if derivatives.dim() < 1 or derivatives.shape[-1] != bins - 1:
        raise ValueError(
            f"unnormalized_derivatives must have last dimension K - 1 = {bins - 1}, "
            f"got shape {tuple(derivatives.shape)}"
        )
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        check_number(value, name, low=0.0)
        if not value * bins < 1:
            raise ValueError(
                f"{name} must satisfy 0 <= {name} * K < 1, got {value!r} with K={bins}"
            )
    check_number(min_derivative, "min_derivative", low=0.0, high=1.0, high_open=True)
    return bins


def _knot_derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    """Knot derivatives ``(..., K + 1)``: ones at both ends, ``K - 1`` positive values inside."""
    # softplus(shift) = 1 - min_derivative, so a zero parameter gives derivative exactly 1 and
    # zero-initialised conditioners start the flow at the identity.
    shift = math.log(math.expm1(1 - min_derivative))
    interior = min_derivative + F.softplus(unnormalized + shift)
    # Unit boundary derivatives make the spline's slope match the identity tails.
    return F.pad(interior, (1, 1), value=1.0)
