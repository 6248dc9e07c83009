"""Laplace start for flow guides: MAP point and inverse-Hessian factor of a log density.

``AutoFlow`` (``warm_start="laplace"``) uses these to start from the Laplace approximation
``N(u*, H^-1)`` of the posterior over the unconstrained latent vector, where ``u*`` maximises
the log joint (Jacobian of ``biject_to`` included) and ``H`` is the negative Hessian there.
The guide then learns in the coordinates whitened by that Gaussian, so every learnable
parameter is in posterior-standard-deviation units: on a narrow posterior far from the prior
(a regression with thousands of rows) Adam's step of about ``lr`` per iteration is then a
step of ``lr`` posterior sds, not ``lr`` raw units.

The functions here take a plain callable ``log_density(u) -> scalar`` on a 1-D tensor and know
nothing about Pyro, so they can be tested on closed-form densities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flowinfer.inference.evidence import elbo_estimate

__all__ = ["LaplaceStart", "find_mode", "inverse_hessian_tril", "gaussian_elbo",
           "laplace_start", "safe_log_density"]

LogDensity = Callable[[Tensor], Tensor]

#: What a model may raise when asked for its density at a point far from the data: Pyro's
#: argument validation (``ValueError``), a failed Cholesky or overflow (``RuntimeError``,
#: ``torch.linalg.LinAlgError`` is one), arithmetic errors of Python scalars.
MODEL_ERRORS = (ValueError, RuntimeError, ArithmeticError, AssertionError)


def safe_log_density(log_density: LogDensity) -> LogDensity:
    """``log_density`` with model errors and NaN turned into ``-inf``.

    A line search or a Monte Carlo estimate then treats such a point as one of zero density
    (it backs off or gives the draw zero weight) instead of failing: a hierarchical model
    whose scale underflows to zero, or a recursion that overflows far from the data, makes
    Pyro's distributions raise on their NaN parameters. Only evaluation errors are caught
    (see ``MODEL_ERRORS``); a ``TypeError`` from calling the model wrongly still raises.

    Example:
        >>> f = safe_log_density(lambda u: torch.log(u).sum())   # NaN for u < 0
        >>> float(f(torch.tensor([-1.0])))
        -inf
    """

    def safe(u: Tensor) -> Tensor:
        try:
            value = log_density(u)
        except MODEL_ERRORS:
            return u.new_full((), -math.inf)
        if not bool(torch.isfinite(value).all()):
            # +inf is as unusable as NaN: an unbounded density has no mode to move towards.
            return torch.where(torch.isfinite(value), value, value.new_full((), -math.inf))
        return value

    return safe


@dataclass
class LaplaceStart:
    """The outcome of :func:`laplace_start`.

    Attributes:
        loc: the mode found (the starting point if no finite improvement was found).
        scale_tril: lower-triangular ``L`` with ``L @ L.T = H^-1``, or ``None`` when the
            Hessian was skipped or unusable.
        log_density: the log density at ``loc``.
        evaluations: how many times L-BFGS evaluated the log density.
        converged: whether ``loc`` is a mode: the Newton decrement ``g^T H^-1 g`` (the log
            density a Newton step would still gain, times two) is below 1e-2, or, without a
            usable Hessian, every gradient coordinate is below 1e-3. An improper or
            unbounded density (no mode) fails this.
        message: why ``scale_tril`` is ``None`` or the search did not converge.
    """

    loc: Tensor
    scale_tril: Tensor | None
    log_density: float
    evaluations: int
    converged: bool = False
    message: str = ""


@torch.enable_grad()  # callers may be under no_grad (Predictive, a guide's first call)
def find_mode(log_density: LogDensity, init: Tensor, max_iter: int = 500) -> tuple[Tensor, float,
                                                                                      int]:
    """Maximise ``log_density`` from ``init`` with L-BFGS (strong-Wolfe line search).

    Non-finite values, non-finite gradients and model errors (``MODEL_ERRORS``, see
    :func:`safe_log_density`) are treated as ``-inf`` so the line search backs off from them,
    and the best finite point seen is returned, so a model that overflows or raises far from
    its mode cannot leave the start worse than ``init``.

    Returns:
        ``(mode, log_density(mode), number of evaluations)``.

    Example:
        >>> mode, value, _ = find_mode(lambda u: -((u - 3.0) ** 2).sum(), torch.zeros(2))
        >>> torch.allclose(mode, torch.full((2,), 3.0), atol=1e-4)
        True

    References:
        Liu & Nocedal (1989), "On the limited memory BFGS method for large scale
        optimization".
    """
    u = init.detach().clone().requires_grad_(True)
    best = {"u": init.detach().clone(), "value": -math.inf, "evals": 0, "first": math.nan}
    log_density = safe_log_density(log_density)

    def rejected() -> Tensor:
        # A huge *finite* loss with a zero gradient: the strong-Wolfe zoom interpolates
        # between the bracket's ends, and an infinite end turns its cubic into NaN (the
        # search then never recovers); a finite wall makes it shrink the step instead.
        u.grad = torch.zeros_like(u)
        scale = abs(best["first"]) if math.isfinite(best["first"]) else 0.0
        return torch.tensor(1e10 + 1e3 * scale, dtype=u.dtype)

    def closure() -> Tensor:
        optimizer.zero_grad()
        best["evals"] += 1
        if not bool(torch.isfinite(u).all()):
            return rejected()
        value = log_density(u)
        if not bool(torch.isfinite(value)) or not value.requires_grad:
            return rejected()
        loss = -value
        try:
            loss.backward()
        except MODEL_ERRORS:
            return rejected()
        if not bool(torch.isfinite(u.grad).all()):
            return rejected()
        if not math.isfinite(best["first"]):
            best["first"] = float(value.detach())
        if float(value.detach()) > best["value"]:
            best["u"], best["value"] = u.detach().clone(), float(value.detach())
        return loss.detach()

    optimizer = torch.optim.LBFGS([u], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                                  history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)
    optimizer.step(closure)
    return best["u"], best["value"], best["evals"]


def inverse_hessian_tril(log_density: LogDensity, point: Tensor) -> tuple[Tensor | None, str]:
    """Cholesky factor of the inverse of ``H = -Hessian(log_density)(point)``.

    Returns ``(L, "")`` with ``L @ L.T = H^-1`` when ``H`` is symmetric positive definite and
    finite, else ``(None, reason)``: a saddle point or a flat direction (e.g. an unidentified
    parameter) has no Laplace approximation.

    Example:
        >>> prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
        >>> L, _ = inverse_hessian_tril(lambda u: -0.5 * u @ prec @ u, torch.zeros(2))
        >>> torch.allclose(L @ L.T, torch.linalg.inv(prec), atol=1e-5)
        True
    """
    point = point.detach()
    try:
        hessian = torch.autograd.functional.hessian(lambda u: -log_density(u), point)
    except MODEL_ERRORS as e:
        return None, f"the Hessian could not be computed ({type(e).__name__}: {e})"
    hessian = 0.5 * (hessian + hessian.T)
    if not bool(torch.isfinite(hessian).all()):
        return None, "the Hessian at the mode is not finite"
    chol, info = torch.linalg.cholesky_ex(hessian)
    if int(info) != 0:
        return None, "the Hessian at the mode is not positive definite (saddle or flat)"
    # H = C C^T  =>  H^-1 = C^-T C^-1; its Cholesky factor is the one of cholesky_inverse(C).
    cov = torch.cholesky_inverse(chol)
    tril, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.T))
    if int(info) != 0 or not bool(torch.isfinite(tril).all()):
        return None, "the inverse Hessian is numerically singular"
    return tril, ""


def gaussian_elbo(log_density: LogDensity, loc: Tensor, scale_tril: Tensor,
                  eps: Tensor) -> float:
    """Monte Carlo ELBO of ``N(loc, L L^T)`` against ``log_density``, on given draws ``eps``.

    Passing the same standard-normal ``eps`` for two Gaussians compares them with common
    random numbers. A non-finite log density (or a model error) at any draw gives ``-inf``.

    Example:
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> eps = torch.randn(64, 1)
        >>> elbo = gaussian_elbo(lambda u: normal.log_prob(u).sum(), torch.zeros(1),
        ...                      torch.eye(1), eps)   # q is the target itself: log Z = 0
        >>> round(elbo, 5) + 0.0
        0.0
    """
    log_density = safe_log_density(log_density)
    with torch.no_grad():
        u = loc + eps @ scale_tril.T
        log_q = torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril).log_prob(u)
        log_p = torch.stack([log_density(row).reshape(()) for row in u])
        return elbo_estimate(log_p - log_q)[0]


@torch.enable_grad()
def laplace_start(log_density: LogDensity, init: Tensor, max_iter: int = 500,
                  max_dim: int = 500) -> LaplaceStart:
    """Mode of ``log_density`` from ``init``, and the Laplace scale there.

    Args:
        log_density: ``u -> scalar`` on 1-D tensors shaped like ``init``.
        init: the starting point.
        max_iter: L-BFGS iterations.
        max_dim: above this size the Hessian (one backward pass per coordinate) is skipped.

    Example:
        >>> prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
        >>> start = laplace_start(lambda u: -0.5 * (u - 1) @ prec @ (u - 1), torch.zeros(2))
        >>> torch.allclose(start.loc, torch.ones(2), atol=1e-4)
        True

    References:
        MacKay (2003), "Information Theory, Inference, and Learning Algorithms", ch. 27
        (Laplace's method).
    """
    loc, value, evals = find_mode(log_density, init, max_iter=max_iter)
    if not math.isfinite(value):
        return LaplaceStart(init.detach(), None, value, evals, False,
                            "the log density is not finite at the starting point")
    tril, message = (None, f"{loc.numel()} latent coordinates > max_dim={max_dim}") if (
        loc.numel() > max_dim) else inverse_hessian_tril(log_density, loc)
    u = loc.detach().clone().requires_grad_(True)
    try:
        (grad,) = torch.autograd.grad(log_density(u), u)
    except MODEL_ERRORS as e:
        return LaplaceStart(loc, None, value, evals, False,
                            f"the gradient at the mode failed ({type(e).__name__})")
    if not bool(torch.isfinite(grad).all()):
        return LaplaceStart(loc, None, value, evals, False, "the gradient at the mode is "
                            "not finite")
    if tril is not None:
        converged = float(((tril.T @ grad) ** 2).sum()) < 1e-2
    else:
        converged = bool(grad.abs().max() < 1e-3)
    if not converged:
        message = (message + "; " if message else "") + (
            "the mode search did not converge (an improper or unbounded density?)")
        tril = None
    return LaplaceStart(loc, tril, value, evals, converged, message)
