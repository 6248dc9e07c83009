"""The one potential of a Pyro model: its log joint density on a flat unconstrained vector.

The latent sites are mapped to the real line by ``biject_to(site.support)`` (the transforms
Pyro's HMC uses) and laid end to end in the trace's order. ``log_prob(u)`` is minus Pyro's
potential energy: the log joint density of the model at the constrained values plus the
log-Jacobian of the map, so its integral over ``u`` is the model's marginal likelihood
``p(data)``. Every part of flowinfer that needs a model's density works through this class:
the guides' Laplace warm start, reverse-KL targets and the inference workflow.

Example:
    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    ...     pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> potential = ModelPotential(model)
    >>> potential.sites, potential.dim
    (['scale', 'loc'], 3)
    >>> potential.log_prob(torch.zeros(5, 3)).shape
    torch.Size([5])
    >>> potential.constrain(torch.zeros(5, 3))["scale"]
    tensor([1., 1., 1., 1., 1.])

References:
    Bingham et al. (2019), "Pyro: Deep Universal Probabilistic Programming", JMLR.
    Kucukelbir et al. (2017), "Automatic Differentiation Variational Inference", JMLR.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

__all__ = ["ModelPotential", "PyroModelTarget", "constrained_samples", "check_model_args",
           "check_model_kwargs"]


def check_model_args(model_args: Any) -> tuple:
    """``model_args`` as a tuple (a list is accepted), else ``TypeError``."""
    if not isinstance(model_args, tuple | list):
        raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
    return tuple(model_args)


def check_model_kwargs(model_kwargs: Any) -> dict:
    """``model_kwargs`` as a dict (None gives ``{}``), else ``TypeError``."""
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    return model_kwargs


def _check_last_dim(x: Any, dim: int, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[-1] != dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {dim}), got {shape}")


class ModelPotential:
    """The posterior of a Pyro model as an unnormalized density on a flat unconstrained vector.

    The potential is vectorised over a batch with ``torch.vmap`` (Pyro's argument validation
    off, since validation branches on tensor values). If the model cannot be vmapped, or the
    vmapped values disagree with one-point evaluations, a warning says so and the points are
    evaluated one at a time (correct, slower); ``vectorized = False`` forces that path.

    Args:
        model: a Pyro model with continuous latent sites (no subsampling).
        *args, **kwargs: the model's arguments.

    Attributes:
        sites: latent site names, in the order of the flat vector.
        shapes: each site's unconstrained shape.
        dim: length of the flat vector.
        transforms: per site, the bijection unconstrained -> constrained.
        vectorized: whether batched ``log_prob`` uses ``torch.vmap``.
    """

    def __init__(self, model: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        from pyro.infer.mcmc.util import initialize_model

        if not callable(model):
            raise TypeError(f"target must be a callable Pyro model, got {type(model).__name__}")
        try:
            init, _, _, trace = initialize_model(model, model_args=args, model_kwargs=kwargs)
        except NotImplementedError as err:  # e.g. subsampling plates
            raise ValueError(f"target: this Pyro model is not supported: {err}") from err
        self._setup(model, args, kwargs, trace)
        self._init_flat = torch.cat([init[k].reshape(-1) for k in self.sites])
        self.vectorized = self._check_vmap()

    @classmethod
    def from_trace(cls, model: Callable[..., Any], trace: Any, args: Sequence[Any] = (),
                   kwargs: dict[str, Any] | None = None) -> ModelPotential:
        """The potential of ``model`` with the latent sites of a trace already run.

        Used by guides, whose prototype trace fixes the site order of their latent vector.
        The batched path is checked against one-point evaluations on first use.
        """
        self = cls.__new__(cls)
        self._setup(model, tuple(args), dict(kwargs or {}), trace)
        # The trace's own point: the model ran there, so it is a fair place to compare the
        # batched path with one-point evaluations.
        self._init_flat = torch.cat([
            self.transforms[k].inv(trace.nodes[k]["value"]).reshape(-1).detach()
            for k in self.sites])
        self.vectorized = None
        return self

    def _setup(self, model: Callable[..., Any], args: tuple, kwargs: dict, trace: Any) -> None:
        self.model, self.args, self.kwargs = model, args, kwargs
        latent = [site for site in trace.nodes.values()
                  if site["type"] == "sample" and not site["is_observed"]
                  and not site_is_subsample(site)]
        discrete = [s["name"] for s in latent if s["fn"].has_enumerate_support]
        if discrete:
            raise ValueError(
                f"target: the Pyro model has discrete latent sites {discrete}; a flow models "
                "continuous variables only (marginalise them out, e.g. with enumeration)"
            )
        if not latent:
            raise ValueError("target: the Pyro model has no latent sample sites to fit")
        self.sites: list[str] = [s["name"] for s in latent]
        self.transforms = {s["name"]: biject_to(s["fn"].support) for s in latent}
        self.shapes: dict[str, torch.Size] = {
            s["name"]: self.transforms[s["name"]].inv(s["value"]).shape for s in latent}
        self._sizes = [self.shapes[k].numel() for k in self.sites]
        self.dim = sum(self._sizes)

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return f"{type(self).__name__}({name}, sites={self.sites}, dim={self.dim})"

    def unflatten(self, x: Tensor) -> dict[str, Tensor]:
        """Split ``x`` of shape ``(..., dim)`` into unconstrained site values ``(..., *shape)``."""
        parts = torch.split(x, self._sizes, dim=-1)
        batch = x.shape[:-1]
        pairs = zip(self.sites, parts, strict=True)
        return {k: p.reshape(batch + self.shapes[k]) for k, p in pairs}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        """Site values in the model's own (constrained) space, shapes ``(..., *site_shape)``."""
        _check_last_dim(x, self.dim, "x")
        return {k: self.transforms[k](v) for k, v in self.unflatten(x).items()}

    def conditioned_trace(self, flat: Tensor) -> tuple[Any, Tensor]:
        """The model's trace at one unconstrained point, and ``log|dz/du|`` there."""
        values, log_jac = {}, flat.new_zeros(())
        for name, u in self.unflatten(flat).items():
            t = self.transforms[name]
            values[name] = t(u)
            log_jac = log_jac + t.log_abs_det_jacobian(u, values[name]).sum()
        with poutine.block():
            trace = poutine.trace(poutine.condition(self.model, values)).get_trace(
                *self.args, **self.kwargs)
        return trace, log_jac

    def _single_log_prob(self, flat: Tensor) -> Tensor:
        # One point, written with plain tensor ops so that torch.vmap can batch it.
        trace, log_jac = self.conditioned_trace(flat)
        return trace.log_prob_sum() + log_jac

    def _vmapped(self, flat: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            return torch.vmap(self._single_log_prob)(flat)

    def _looped(self, flat: Tensor) -> Tensor:
        return torch.stack([self._single_log_prob(row) for row in flat])

    def _check_vmap(self) -> bool:
        points = torch.stack([self._init_flat, self._init_flat + 0.1])
        with torch.no_grad():
            reference = self._looped(points)
            try:
                batched = self._vmapped(points)
                agree = torch.allclose(batched, reference, rtol=1e-4, atol=1e-4,
                                       equal_nan=True)
                reason = "its values differ from one-point evaluations"
            except Exception as err:  # noqa: BLE001 - any failure means: use the loop
                agree, reason = False, f"{type(err).__name__}: {err}"
        if not agree:
            warnings.warn(
                f"{type(self).__name__}: the model's potential could not be vectorised with "
                f"torch.vmap ({reason}); evaluating it one point at a time (slower).",
                stacklevel=3,
            )
        return agree

    def log_prob(self, x: Tensor, *, safe: bool = False) -> Tensor:
        """Minus the potential energy at unconstrained points ``x`` of shape ``(..., dim)``.

        Args:
            x: one point ``(dim,)`` or a batch ``(..., dim)``.
            safe: treat a point where the model raises or returns NaN as a point of zero
                density (``-inf``) instead of raising; such points are evaluated one at a
                time, and the others keep their values.
        """
        _check_last_dim(x, self.dim, "x")
        if x.dim() == 1:
            return self._safe_single(x) if safe else self._single_log_prob(x)
        flat = x.reshape(-1, self.dim)
        if self.vectorized is None:
            self.vectorized = self._check_vmap()
        try:
            out = self._vmapped(flat) if self.vectorized else self._looped(flat)
        except Exception:  # noqa: BLE001 - a safe call re-evaluates point by point below
            if not safe:
                raise
            out = torch.stack([self._safe_single(row) for row in flat])
        if safe:
            out = torch.where(torch.isnan(out), torch.full_like(out, -torch.inf), out)
        return out.reshape(x.shape[:-1])

    def _safe_single(self, flat: Tensor) -> Tensor:
        try:
            with pyro.validation_enabled(False):
                value = self._single_log_prob(flat)
        except Exception:  # noqa: BLE001 - the model's own failure means zero density here
            return flat.new_full((), -torch.inf)
        return torch.where(torch.isnan(value), value.new_full((), -torch.inf), value)


#: The name this class had in flowinfer 0.1 (``flowinfer.reverse_kl.PyroModelTarget``).
PyroModelTarget = ModelPotential


def constrained_samples(
    target: ModelPotential | Callable[..., Any],
    x: Tensor,
    *,
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Map flat unconstrained flow samples back to the model's sites (constrained space).

    Args:
        target: a :class:`ModelPotential`, or a Pyro model with ``model_args``/``model_kwargs``.
        x: samples of shape ``(..., dim)``, e.g. ``flow.sample((1000,))``.

    Returns:
        ``{site: tensor of shape (..., *site_shape)}``, each inside its site's support.

    Example:
        >>> import pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("rate", dist.Gamma(2.0, 1.0))
        >>> bool((constrained_samples(model, torch.randn(4, 1))["rate"] > 0).all())
        True
    """
    if not isinstance(target, ModelPotential):
        target = ModelPotential(target, *check_model_args(model_args),
                                **check_model_kwargs(model_kwargs))
    return target.constrain(x)
