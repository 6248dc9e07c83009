"""Reverse-KL fitting of a flow to an unnormalized density, and importance-sampling evidence.

Given ``log p~(x) = log p(x) + log Z`` known up to the constant ``log Z``, a flow ``q`` is fitted
by minimising, with reparameterised samples ``x = T(z)``, ``z ~ base``,

    ``L(q) = E_q[log q(x) - log p~(x)] = KL(q || p) - log Z``,

so ``-L`` is the ELBO and ``L >= -log Z``. Afterwards ``log Z`` is estimated by importance
sampling with ``q`` as proposal (:func:`estimate_log_z`), which also reports the effective
sample size and the PSIS k-hat that say how far ``q`` can be trusted.

The target may be a batched log density ``f(x) -> (n,)``, an object with ``log_prob`` and
``dim`` (a :mod:`flowinfer.data.targets` target, even another flow), or a Pyro model, whose
posterior is fitted in the unconstrained space through the potential energy Pyro defines for
HMC (:class:`PyroModelTarget`; :func:`constrained_samples` maps flow samples back per site).

Reverse KL is mode seeking: a flow that starts inside one mode rarely finds the others.
``docs/reverse_kl.md`` measures the remedies offered here on an 8-mode ring and the 40-mode
mixture of the FAB paper: a wide start (:func:`sampler_flow` with ``scale``) trained with the
mass-covering importance-weighted forward KL (``fit_reverse_kl(..., cover_steps=...)``)
covered all 8 ring modes and 38 of 40 mixture modes (all 40 after importance weighting, with
:func:`importance_resample`); tempering (``anneal_steps``) from the same wide start covered
the ring but only about half of the 40 modes; reverse KL alone kept 5 of 8 and 13 of 40
from the same wide start.

References:
    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML.
    Roeder, Wu & Duvenaud (2017), "Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference", NeurIPS.
    Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
    Müller et al. (2019), "Neural Importance Sampling", ACM Transactions on Graphics.
    Vehtari et al. (2024), "Pareto Smoothed Importance Sampling", JMLR.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.func import functional_call

from flowinfer.flow import Flow
from flowinfer.inference.evidence import ImportanceSummary, importance_summary
from flowinfer.registry import build_flow
from flowinfer.training import (
    BestState,
    FitResult,
    check_int,
    make_optimizer,
    stop_on_non_finite,
)
from flowinfer.training import progress as progress_bar
from flowinfer.transforms.base import Bijector

__all__ = [
    "PyroModelTarget",
    "annealing_schedule",
    "constrained_samples",
    "estimate_log_z",
    "fit_reverse_kl",
    "importance_resample",
    "importance_samples",
    "reverse_kl_loss",
    "sampler_flow",
]

LogDensity = Callable[[Tensor], Tensor]

_ESTIMATORS = ("standard", "stl")
_ANNEAL_SCHEDULES = ("geometric", "linear")
_LR_SCHEDULES = ("cosine", None)
# Weight of the newest step in the running loss that picks the best parameters: about a
# 50-step window, long enough to average out the Monte Carlo noise of one batch.
_SMOOTHING = 0.02


# ------------------------------------------------------------------------------ flows
def _as_vector(value: Any, dim: int, name: str) -> Tensor:
    try:
        vec = torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or a sequence of {dim} numbers, "
                         f"got {value!r}") from None
    if vec.dim() > 1 or (vec.dim() == 1 and vec.numel() != dim):
        raise ValueError(f"{name} must be a number or a sequence of {dim} numbers, got {value!r}")
    if not torch.isfinite(vec).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return vec.expand(dim).clone()


class BoxMap(Bijector):
    """``y = low + (high - low) * Phi(x)``: the real line onto the box ``(low, high)``.

    ``Phi`` is the standard normal CDF, so a standard normal input becomes the uniform
    distribution on the box: a fresh flow ending in this map covers the whole box evenly, and
    a target that is flat up to the box's edges (U2-U4 along ``z1``) keeps Gaussian tails in
    the flow's own coordinates, where the splines' identity tails already match them.
    Parameter-free; the bounds are buffers, so ``.to(device)`` and ``.double()`` move them.

    Example:
        >>> t = BoxMap(torch.tensor([-4.0, -4.0]), torch.tensor([4.0, 4.0]))
        >>> t(torch.tensor([[0.0, 100.0]]))
        tensor([[0., 4.]])
    """

    def __init__(self, low: Tensor, high: Tensor) -> None:
        super().__init__(low.numel())
        if not bool((high > low).all()):
            raise ValueError(f"box: high must exceed low in every dimension, got "
                             f"low={low.tolist()}, high={high.tolist()}")
        self.register_buffer("low", low)
        self.register_buffer("width", high - low)

    def _ladj(self, x: Tensor) -> Tensor:
        # log(width * phi(x)) in closed form: finite even where Phi(x) rounds to 0 or 1.
        terms = self.width.log() - 0.5 * x.square() - 0.5 * math.log(2 * math.pi)
        return terms.sum(-1)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, _ = self._check_input(x, context, "x")
        return self.low + self.width * torch.special.ndtr(x), self._ladj(x)

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._check_input(y, context, "y")
        x = torch.special.ndtri((y - self.low) / self.width)
        return x, self._ladj(x)

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={(self.low + self.width).tolist()}"


class StandardizeMap(Bijector):
    """``y = loc + scale * x`` with fixed ``loc`` and ``scale`` (buffers, not parameters).

    Lets the flow's layers work in standardised coordinates (where the splines' interval
    ``[-bound, bound]`` lies) for a target of another location and extent.

    Example:
        >>> t = StandardizeMap(torch.tensor([1.0]), torch.tensor([10.0]))
        >>> t(torch.tensor([[0.5]]))
        tensor([[6.]])
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(loc.numel())
        if not bool((scale > 0).all()):
            raise ValueError(f"scale must be positive, got {scale.tolist()}")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, _ = self._check_input(x, context, "x")
        return self.loc + self.scale * x, self.scale.log().sum().expand(x.shape[:-1])

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._check_input(y, context, "y")
        return (y - self.loc) / self.scale, self.scale.log().sum().expand(y.shape[:-1])

    def extra_repr(self) -> str:
        return f"loc={self.loc.tolist()}, scale={self.scale.tolist()}"


def sampler_flow(
    dim: int,
    *,
    flow: str = "nsf",
    box: tuple[Any, Any] | None = None,
    loc: Any = 0.0,
    scale: Any = 1.0,
    base: str = "standard",
    **hyper: Any,
) -> Flow:
    """The flow :func:`fit_reverse_kl` is tuned for, with an output map matching the target.

    A registered flow (default ``"nsf"``, hyper-parameters as in ``build_flow``) followed by
    one parameter-free map:

    * ``box=(low, high)``: :class:`BoxMap` onto the box, for targets that are zero outside it
      (U1-U4). Every sample then has finite target density, so no sample is wasted and the
      loss never sees ``log p~ = -inf``; a fresh flow is uniform on the box.
    * otherwise :class:`StandardizeMap` ``y = loc + scale * x``: a fresh flow is
      ``N(loc, diag(scale^2))``. Set ``scale`` to the target's extent (e.g. half the width of
      the region holding its modes) to start wide: the remedy for missed modes measured in
      ``docs/reverse_kl.md``.

    The map is part of the flow's layers but not of ``flow.config`` (which only describes
    the registered part): save the ``state_dict`` and rebuild with this function to reload.

    Args:
        dim: event size.
        flow: registered flow name.
        box: ``(low, high)``, scalars or ``dim``-vectors; excludes ``loc``/``scale``.
        loc, scale: scalars or ``dim``-vectors of the standardising map.
        base: ``"standard"`` or ``"learnable"`` base.
        **hyper: the flow's hyper-parameters (``num_layers``, ``hidden``, ``bins``, ...).

    Example:
        >>> flow = sampler_flow(2, box=(-4.0, 4.0), num_layers=2, hidden=(16,))
        >>> bool((flow.sample((1000,)).abs() < 4).all())
        True
    """
    if box is not None:
        if not (isinstance(box, tuple | list) and len(box) == 2):
            raise ValueError(f"box must be a pair (low, high), got {box!r}")
        if not (_is_default(loc, 0.0) and _is_default(scale, 1.0)):
            raise ValueError("give either box or loc/scale, not both")
        low, high = _as_vector(box[0], dim, "box"), _as_vector(box[1], dim, "box")
        output: Bijector = BoxMap(low, high)
    else:
        output = StandardizeMap(_as_vector(loc, dim, "loc"), _as_vector(scale, dim, "scale"))
    inner = build_flow(flow, dim, base=base, **hyper)
    return Flow([*inner.layers, output], dim=dim, base=base)


def _is_default(value: Any, default: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == default


# ------------------------------------------------------------------------------ Pyro models
class PyroModelTarget:
    """The posterior of a Pyro model as an unnormalized density on a flat unconstrained vector.

    The latent sites are mapped to the real line by ``biject_to(site.support)`` (the
    transforms Pyro's HMC uses, from ``pyro.infer.mcmc.util.initialize_model``) and laid end to
    end in the trace's order. ``log_prob(x)`` is minus Pyro's potential energy: the log joint
    density of the model at the constrained values plus the log-Jacobian of the map, so its
    integral over ``x`` is the model's marginal likelihood ``p(data)``.

    The potential is vectorised over the batch with ``torch.vmap`` (with Pyro's argument
    validation off, since validation branches on tensor values). If the model cannot be
    vmapped, or the vmapped values disagree with Pyro's own potential, a warning says so and
    the points are evaluated one at a time with Pyro's ``potential_fn`` (correct, slower);
    setting ``vectorized = False`` forces that path.

    Args:
        model: a Pyro model with continuous latent sites (no subsampling).
        *args, **kwargs: the model's arguments.

    Attributes:
        sites: latent site names, in the order of the flat vector.
        shapes: each site's unconstrained shape.
        dim: length of the flat vector (the flow's ``dim``).
        transforms: per site, the bijection unconstrained -> constrained.
        vectorized: whether ``log_prob`` uses ``torch.vmap``.

    Example:
        >>> import pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        ...     pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> target = PyroModelTarget(model)
        >>> target.sites, target.dim
        (['scale', 'loc'], 3)
        >>> target.log_prob(torch.zeros(5, 3)).shape
        torch.Size([5])
        >>> constrained_samples(target, torch.zeros(5, 3))["scale"]
        tensor([1., 1., 1., 1., 1.])

    References:
        Bingham et al. (2019), "Pyro: Deep Universal Probabilistic Programming", JMLR.
    """

    def __init__(self, model: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        from pyro.infer.mcmc.util import initialize_model

        if not callable(model):
            raise ValueError(f"target must be a callable Pyro model, got {type(model).__name__}")
        self.model = model
        self.args = args
        self.kwargs = kwargs
        try:
            init, self._potential_fn, to_unconstrained, trace = initialize_model(
                model, model_args=args, model_kwargs=kwargs
            )
        except NotImplementedError as err:  # e.g. subsampling plates
            raise ValueError(f"target: this Pyro model is not supported: {err}") from err
        discrete = [
            name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and site["fn"].has_enumerate_support
        ]
        if discrete:
            raise ValueError(
                f"target: the Pyro model has discrete latent sites {discrete}; a flow models "
                "continuous variables only (marginalise them out, e.g. with enumeration)"
            )
        if not init:
            raise ValueError("target: the Pyro model has no latent sample sites to fit")
        self.sites: list[str] = list(init)
        self.shapes: dict[str, torch.Size] = {k: v.shape for k, v in init.items()}
        self._sizes = [v.numel() for v in init.values()]
        self.dim = sum(self._sizes)
        self.transforms = {k: to_unconstrained[k].inv for k in self.sites}
        self._init_flat = torch.cat([init[k].reshape(-1) for k in self.sites])
        self.vectorized = self._check_vmap()

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return f"PyroModelTarget({name}, sites={self.sites}, dim={self.dim})"

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

    def _single_log_prob(self, flat: Tensor) -> Tensor:
        # One point; written with plain tensor ops so that torch.vmap can batch it.
        values, log_jac = {}, 0.0
        for name, u in self.unflatten(flat).items():
            t = self.transforms[name]
            values[name] = t(u)
            log_jac = log_jac + t.log_abs_det_jacobian(u, values[name]).sum()
        trace = poutine.trace(poutine.condition(self.model, values)).get_trace(
            *self.args, **self.kwargs
        )
        return trace.log_prob_sum() + log_jac

    def _vmapped(self, flat: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            return torch.vmap(self._single_log_prob)(flat)

    def _looped(self, flat: Tensor) -> Tensor:
        return torch.stack([-self._potential_fn(self.unflatten(row)) for row in flat])

    def _check_vmap(self) -> bool:
        points = torch.stack([self._init_flat, self._init_flat + 0.1])
        with torch.no_grad():
            reference = self._looped(points)
            try:
                batched = self._vmapped(points)
                agree = torch.allclose(batched, reference, rtol=1e-4, atol=1e-4)
                reason = "its values differ from Pyro's potential_fn"
            except Exception as err:  # noqa: BLE001 - any failure means: use the loop
                agree, reason = False, f"{type(err).__name__}: {err}"
        if not agree:
            warnings.warn(
                f"PyroModelTarget: the model's potential could not be vectorised with "
                f"torch.vmap ({reason}); evaluating it one point at a time (slower).",
                stacklevel=3,
            )
        return agree

    def log_prob(self, x: Tensor) -> Tensor:
        """Minus the potential energy at unconstrained points ``x`` of shape ``(..., dim)``."""
        _check_last_dim(x, self.dim, "x")
        flat = x.reshape(-1, self.dim)
        out = self._vmapped(flat) if self.vectorized else self._looped(flat)
        return out.reshape(x.shape[:-1])


def constrained_samples(
    target: PyroModelTarget | Callable[..., Any],
    x: Tensor,
    *,
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Map flat unconstrained flow samples back to the model's sites (constrained space).

    Args:
        target: a :class:`PyroModelTarget`, or a Pyro model with ``model_args``/``model_kwargs``.
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
    if not isinstance(target, PyroModelTarget):
        target = PyroModelTarget(target, *_check_model_args(model_args),
                                 **_check_model_kwargs(model_kwargs))
    return target.constrain(x)


# ------------------------------------------------------------------------------ targets
class _Resolved(NamedTuple):
    log_density: LogDensity
    dim: int | None
    source: Any


def _check_model_args(model_args: Any) -> tuple:
    if not isinstance(model_args, tuple | list):
        raise ValueError(f"model_args must be a tuple, got {type(model_args).__name__}")
    return tuple(model_args)


def _check_model_kwargs(model_kwargs: Any) -> dict:
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, dict):
        raise ValueError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    return model_kwargs


def _has_latent_sites(fn: Callable[..., Any]) -> bool:
    # A log density needs its x; only a callable that runs without arguments can be a model
    # here (models with arguments are recognised by model_args/model_kwargs).
    try:
        inspect.signature(fn).bind()
    except (TypeError, ValueError):
        return False
    try:
        with poutine.block():
            trace = poutine.trace(fn).get_trace()
    except Exception:  # noqa: BLE001 - not runnable without arguments: not a model
        return False
    return any(
        site["type"] == "sample" and not site["is_observed"] for site in trace.nodes.values()
    )


def _resolve_target(target: Any, model_args: Any = (), model_kwargs: Any = None) -> _Resolved:
    args, kwargs = _check_model_args(model_args), _check_model_kwargs(model_kwargs)
    if isinstance(target, PyroModelTarget):
        return _Resolved(target.log_prob, target.dim, target)
    log_prob = getattr(target, "log_prob", None)
    dim = getattr(target, "dim", None)
    if callable(log_prob) and isinstance(dim, int):
        return _Resolved(log_prob, dim, target)
    if not callable(target):
        raise ValueError(
            "target must be a log density callable f(x) -> (n,), an object with log_prob and "
            f"dim, or a Pyro model; got {type(target).__name__}"
        )
    if args or kwargs or _has_latent_sites(target):
        model = PyroModelTarget(target, *args, **kwargs)
        return _Resolved(model.log_prob, model.dim, model)
    return _Resolved(target, None, target)


def _check_last_dim(x: Tensor, dim: int, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[-1] != dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {dim}), got {shape}")


def _check_flow(flow: Any) -> Flow:
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a flowinfer Flow, got {type(flow).__name__}")
    if flow.is_conditional:
        raise ValueError(
            f"flow is conditional (context_dim={flow.context_dim}); reverse KL fits an "
            "unconditional flow"
        )
    return flow


def _check_dims(flow: Flow, resolved: _Resolved) -> None:
    if resolved.dim is not None and resolved.dim != flow.dim:
        raise ValueError(
            f"flow has dim={flow.dim} but target has dim={resolved.dim}; build the flow "
            "with the target's dim"
        )


def _evaluate(log_density: LogDensity, x: Tensor) -> Tensor:
    """``log_density(x)`` after checking that it returned one value per point."""
    out = log_density(x)
    if not isinstance(out, Tensor) or out.shape != x.shape[:-1]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"target must return a tensor of shape {tuple(x.shape[:-1])} for points of shape "
            f"{tuple(x.shape)} (one log density per point), got {got}. A Pyro model with "
            "arguments needs model_args=/model_kwargs=; a callable target must work on "
            "batches and have the flow's dim."
        )
    return out


def _check_target_is_defined(flow: Flow, log_density: LogDensity, num_samples: int) -> None:
    # A NaN at the start is a broken target, not a training failure: say so before any step
    # (-inf is allowed, it means "outside the support").
    with torch.no_grad():
        x = flow.sample((num_samples,))
        out = _evaluate(log_density, x)
    bad = int(torch.isnan(out).sum())
    if bad:
        raise ValueError(
            f"target returned NaN for {bad} of {num_samples} points drawn from the initial "
            "flow; a log density must return a number, or -inf outside its support"
        )


# ------------------------------------------------------------------------------ the loss
def annealing_schedule(
    step: int, anneal_steps: int, anneal_start: float = 0.01, kind: str = "geometric"
) -> float:
    """Inverse temperature ``beta`` at ``step`` of a tempered fit.

    ``beta`` rises from ``anneal_start`` at step 0 to 1 at step ``anneal_steps`` and stays 1.
    ``"geometric"`` spaces ``log beta`` evenly (``beta_t = anneal_start ** (1 - t/T)``), the
    usual choice for tempering paths because consecutive tempered densities then differ by
    similar amounts; ``"linear"`` spaces ``beta`` evenly and spends more steps near 1.

    Example:
        >>> [round(annealing_schedule(t, 4, 0.01), 4) for t in range(6)]
        [0.01, 0.0316, 0.1, 0.3162, 1.0, 1.0]
        >>> round(annealing_schedule(2, 4, 0.2, kind="linear"), 4)
        0.6
    """
    if kind not in _ANNEAL_SCHEDULES:
        raise ValueError(f"anneal_schedule must be one of {_ANNEAL_SCHEDULES}, got {kind!r}")
    if anneal_steps == 0 or step >= anneal_steps:
        return 1.0
    frac = step / anneal_steps
    if kind == "geometric":
        return anneal_start ** (1.0 - frac)
    return anneal_start + (1.0 - anneal_start) * frac


class _LogProbCall(nn.Module):
    """Routes ``forward`` to ``flow.log_prob`` so ``functional_call`` can swap parameters."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)


def _stl_log_q(flow: Flow, x: Tensor) -> Tensor:
    # log q at the (path-differentiable) samples x with the parameters cut out of the graph:
    # the score term E_q[d/dtheta log q] is zero in expectation but not per sample; dropping it
    # leaves the path derivative, whose variance vanishes as q approaches p (Roeder et al.).
    detached = {f"flow.{k}": p.detach() for k, p in flow.named_parameters()}
    try:
        return functional_call(_LogProbCall(flow), detached, (x,))
    except NotImplementedError as err:
        raise ValueError(
            "estimator='stl' needs log q of the flow's samples through the flow's inverse, "
            f"which this flow lacks ({err}); use estimator='standard'"
        ) from err


class _Step(NamedTuple):
    loss: Tensor        # objective at the current beta (what is differentiated)
    loss_at_one: float  # the same samples' loss at beta = 1, E_q[log q - log p~]
    outside: float      # fraction of samples where the target is -inf (zero density)


def _loss_step(
    flow: Flow, log_density: LogDensity, num_samples: int, beta: float, stl: bool
) -> _Step:
    x, log_q = flow.rsample_and_log_prob((num_samples,))
    if stl:
        log_q = _stl_log_q(flow, x)
    log_p = _evaluate(log_density, x)
    # Points of zero target density (outside a bounded support) make log q - log p = +inf.
    # They are left out of the average; their share is reported so that a flow putting mass
    # outside the support is noticed. A flow whose support is the target's (sampler_flow with
    # box=...) never draws them. NaN and +inf are kept, so they stop training.
    inside = ~torch.isneginf(log_p)
    count = int(inside.sum())
    outside = 1.0 - count / num_samples
    if count == 0:
        inf = torch.full((), math.inf, dtype=log_q.dtype, device=log_q.device)
        return _Step(inf, math.inf, outside)
    safe_log_p = torch.where(inside, log_p, torch.zeros_like(log_p))
    log_q_in, log_p_in = log_q[inside], safe_log_p[inside]
    loss = (log_q_in - beta * log_p_in).mean()
    at_one = loss if beta == 1.0 else (log_q_in - log_p_in).mean()
    return _Step(loss, float(at_one.detach()), outside)


def _cover_step(flow: Flow, log_density: LogDensity, num_samples: int, beta: float) -> _Step:
    # Self-normalised importance-weighted forward KL, -sum_i w_i log q(x_i) with x_i ~ q held
    # fixed and w = softmax(beta log p~ - log q): its expectation's gradient is that of
    # KL(p^beta || q) (up to the self-normalisation bias), which grows q wherever p has mass
    # that q under-weights. Mass covering, where reverse KL is mode seeking.
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob((num_samples,))
        log_p = _evaluate(log_density, x).detach()
        weights = torch.softmax(beta * log_p - log_q, dim=0)
        inside = ~torch.isneginf(log_p)
        count = int(inside.sum())
        at_one = float((log_q[inside] - log_p[inside]).mean()) if count else math.inf
    try:
        log_q_live = flow.log_prob(x)
    except NotImplementedError as err:
        raise ValueError(
            f"cover_steps needs log q of the flow's samples through the flow's inverse, which "
            f"this flow lacks ({err}); use cover_steps=0"
        ) from err
    # Zero-weight samples may sit where log q is -inf in float precision; 0 * -inf is NaN.
    loss = -(weights * torch.where(weights > 0, log_q_live, torch.zeros_like(log_q_live))).sum()
    return _Step(loss, at_one, 1.0 - count / num_samples)


def reverse_kl_loss(
    flow: Flow,
    target: Any,
    num_samples: int = 256,
    *,
    beta: float = 1.0,
    estimator: str = "standard",
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """One Monte Carlo estimate of ``E_q[log q(x) - beta log p~(x)]``, differentiable.

    For writing one's own loop; :func:`fit_reverse_kl` uses the same computation. Samples
    where the target is ``-inf`` are left out of the average (see :func:`fit_reverse_kl`).

    Args:
        flow: the flow ``q``.
        target: as in :func:`fit_reverse_kl`.
        num_samples: samples in the estimate.
        beta: inverse temperature of the target, in ``(0, 1]``.
        estimator: ``"standard"`` (reparameterised) or ``"stl"`` (path derivative only).

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
        >>> loss = reverse_kl_loss(flow, lambda x: -0.5 * (x**2).sum(-1), 128)
        >>> loss.backward()       # fills flow's parameter gradients
        >>> float(loss) > -2.0    # -log Z = -log(2 pi) ~= -1.84 is the minimum
        True

    References:
        Roeder, Wu & Duvenaud (2017), "Sticking the Landing", NeurIPS.
    """
    flow = _check_flow(flow)
    resolved = _resolve_target(target, model_args, model_kwargs)
    _check_dims(flow, resolved)
    check_int(num_samples, "num_samples", 2)
    if not (_is_number(beta) and 0 < beta <= 1):
        raise ValueError(f"beta must be a number in (0, 1], got {beta!r}")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    return _loss_step(flow, resolved.log_density, num_samples, float(beta),
                      estimator == "stl").loss


# ------------------------------------------------------------------------------ validation
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_fit_args(
    steps: Any, num_samples: Any, estimator: Any, anneal_steps: Any, anneal_start: Any,
    anneal_schedule: Any, cover_steps: Any, clip_grad: Any, schedule: Any, progress_: Any,
    seed: Any, callback: Any,
) -> None:
    check_int(steps, "steps", 1)
    check_int(num_samples, "num_samples", 2)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    check_int(anneal_steps, "anneal_steps", 0)
    if anneal_steps >= steps:
        raise ValueError(
            f"anneal_steps must be smaller than steps (training must reach beta = 1), got "
            f"anneal_steps={anneal_steps} with steps={steps}"
        )
    if not (_is_number(anneal_start) and 0 < anneal_start <= 1):
        raise ValueError(f"anneal_start must be a number in (0, 1], got {anneal_start!r}")
    if anneal_schedule not in _ANNEAL_SCHEDULES:
        raise ValueError(
            f"anneal_schedule must be one of {_ANNEAL_SCHEDULES}, got {anneal_schedule!r}"
        )
    check_int(cover_steps, "cover_steps", 0)
    if cover_steps > steps:
        raise ValueError(f"cover_steps must be at most steps={steps}, got {cover_steps}")
    if clip_grad is not None and not (_is_number(clip_grad) and clip_grad > 0):
        raise ValueError(f"clip_grad must be a positive number or None, got {clip_grad!r}")
    if schedule not in _LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {_LR_SCHEDULES}, got {schedule!r}")
    if progress_ is not None and not isinstance(progress_, bool):
        raise ValueError(f"progress must be True, False or None, got {progress_!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")


# ------------------------------------------------------------------------------ fitting
def fit_reverse_kl(
    flow: Flow,
    target: Any,
    *,
    steps: int = 5000,
    num_samples: int = 256,
    lr: float = 1e-3,
    estimator: str = "standard",
    anneal_steps: int = 0,
    anneal_start: float = 0.01,
    anneal_schedule: str = "geometric",
    cover_steps: int = 0,
    clip_grad: float | None = 100.0,
    schedule: str | None = "cosine",
    progress: bool | None = None,
    seed: int | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> FitResult:
    """Fit ``flow`` to an unnormalized density by minimising ``KL(q || p)``.

    Each step draws ``num_samples`` reparameterised samples ``x ~ q`` and takes an Adam step on
    ``mean(log q(x) - beta * log p~(x))``. With ``anneal_steps > 0`` the target is tempered,
    ``p~^beta``, with ``beta`` rising from ``anneal_start`` to 1 over the first
    ``anneal_steps`` steps (:func:`annealing_schedule`): the early, flat targets let the flow
    spread over the whole region before the modes sharpen.

    Mode coverage: reverse KL is mode seeking, so on a multimodal target a flow keeps the modes
    it starts near. For such targets start the flow wide (:func:`sampler_flow` with ``scale``
    of the region holding the modes) and set ``cover_steps``: the first ``cover_steps`` steps
    then minimise the self-normalised importance-weighted forward KL,
    ``-sum_i w_i log q(x_i)`` with ``x_i ~ q`` fixed and ``w = softmax(beta log p~ - log q)``,
    which is mass covering: it raises ``q`` wherever the target has mass that ``q``
    under-weights. It needs ``log q`` through the flow's inverse (one pass for coupling flows)
    and an importance-sampling ESS that is not vanishingly small at the start (a few percent
    is enough; hence the wide start). ``cover_steps=steps`` trains with it alone, which is
    what ``docs/reverse_kl.md`` measures as the remedy.

    Samples where the target is ``-inf`` (outside a bounded support) are left out of the
    average and their share is recorded in ``history["outside"]``; prefer a flow whose support
    is the target's (:func:`sampler_flow` with ``box=...``), since the average alone does not
    push mass back inside. A NaN or ``+inf`` loss, or a non-finite gradient, stops training
    with a :class:`~flowinfer.training.NonFiniteLossWarning` and restores the best parameters:
    those with the lowest running value of ``E_q[log q - log p~]`` at ``beta = 1`` (an
    exponential moving average of the per-step estimate with weight 0.02, about a 50-step
    window, restarted when annealing ends; while annealing there is no best yet and the
    initial parameters are restored). A run that completes keeps its final parameters: the
    cosine schedule has brought the learning rate to zero, so the last step is the settled one.

    Args:
        flow: the flow to fit (unconditional; trained in place).
        target: a batched log density ``f(x) -> (n,)`` for ``x`` of shape ``(n, dim)``; an
            object with ``log_prob`` and ``dim`` (e.g. :mod:`flowinfer.data.targets`); a
            :class:`PyroModelTarget`; or a Pyro model (recognised when ``model_args`` or
            ``model_kwargs`` are given, or when it runs without arguments and has latent
            sites), fitted in its unconstrained space.
        steps: optimisation steps.
        num_samples: flow samples per step.
        lr: Adam learning rate (the peak, with ``schedule="cosine"``).
        estimator: ``"standard"`` (reparameterisation gradient) or ``"stl"`` (sticking the
            landing: ``log q`` evaluated with the parameters detached, so only the path
            derivative remains; lower variance near the optimum, one extra inverse pass).
        anneal_steps: steps of tempering at the start (0: none); must be below ``steps``.
        anneal_start: the first ``beta``, in ``(0, 1]``.
        anneal_schedule: ``"geometric"`` or ``"linear"`` rise of ``beta``.
        cover_steps: leading steps that minimise the mass-covering importance-weighted
            forward KL instead (0: none; at most ``steps``).
        clip_grad: maximal gradient norm (None: no clipping).
        schedule: ``"cosine"`` decay of the learning rate to zero over ``steps``, or None.
        progress: show a progress bar (None: only when stderr is a terminal).
        seed: seed for ``torch.manual_seed`` before training (None: leave the RNG alone).
        callback: ``callback(step, info)`` after every step, ``info`` holding ``loss``,
            ``beta``, ``smoothed_loss``, ``outside`` and ``flow``; returning True stops.
        model_args, model_kwargs: the arguments of a Pyro model target.

    Returns:
        A :class:`~flowinfer.training.FitResult`; ``history`` holds per step ``"loss"`` (the
        objective minimised at that step: reverse KL at that step's ``beta``, or the forward
        cross-entropy during ``cover_steps``), ``"beta"``, ``"loss_at_one"`` (the batch's
        ``mean(log q - log p~)``, in expectation an upper bound on ``-log Z``),
        ``"smoothed_loss"`` (its running mean) and ``"outside"`` (share of samples with
        ``log p~ = -inf``).

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
        >>> log_p = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1)
        >>> result = fit_reverse_kl(flow, log_p, steps=300, lr=1e-2, seed=0, progress=False)
        >>> round(float(flow.sample((4000,)).mean()), 1)
        1.0

    References:
        Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML.
        Roeder, Wu & Duvenaud (2017), "Sticking the Landing", NeurIPS.
        Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
        Müller et al. (2019), "Neural Importance Sampling", ACM Transactions on Graphics.
    """
    flow = _check_flow(flow)
    _check_fit_args(steps, num_samples, estimator, anneal_steps, anneal_start, anneal_schedule,
                    cover_steps, clip_grad, schedule, progress, seed, callback)
    resolved = _resolve_target(target, model_args, model_kwargs)
    _check_dims(flow, resolved)
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("flow has no trainable parameters")
    optimizer = make_optimizer(params, lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if schedule == "cosine" else None
    )
    if seed is not None:
        torch.manual_seed(seed)
    _check_target_is_defined(flow, resolved.log_density, num_samples)

    result = FitResult(history={k: [] for k in
                                ("loss", "beta", "loss_at_one", "smoothed_loss", "outside")})
    best = BestState(flow)
    stl = estimator == "stl"
    max_norm = math.inf if clip_grad is None else float(clip_grad)
    smoothed, weight_sum = 0.0, 0.0
    start = time.perf_counter()
    flow.train()
    iterator = progress_bar(range(steps), progress, total=steps, desc="reverse KL")
    for step in iterator:
        beta = annealing_schedule(step, anneal_steps, anneal_start, anneal_schedule)
        if step == anneal_steps:
            smoothed, weight_sum = 0.0, 0.0  # the running loss counts beta = 1 steps only
        optimizer.zero_grad(set_to_none=True)
        if step < cover_steps:
            out = _cover_step(flow, resolved.log_density, num_samples, beta)
        else:
            out = _loss_step(flow, resolved.log_density, num_samples, beta, stl)
        loss_value = float(out.loss.detach())
        # Bias-corrected moving average (the first values are not pulled toward zero).
        if math.isfinite(out.loss_at_one):
            smoothed = (1 - _SMOOTHING) * smoothed + _SMOOTHING * out.loss_at_one
            weight_sum = (1 - _SMOOTHING) * weight_sum + _SMOOTHING
        running = smoothed / weight_sum if weight_sum else math.nan
        for key, value in (("loss", loss_value), ("beta", beta),
                           ("loss_at_one", out.loss_at_one), ("smoothed_loss", running),
                           ("outside", out.outside)):
            result.history[key].append(value)
        if stop_on_non_finite(loss_value, step, best, result, what="loss"):
            break
        out.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if stop_on_non_finite(grad_norm, step, best, result, what="gradient norm"):
            break
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if beta == 1.0:
            best.update(running, step)
        if step % 50 == 0 and hasattr(iterator, "set_postfix"):
            iterator.set_postfix(loss=f"{running if beta == 1.0 else loss_value:.4f}",
                                 beta=f"{beta:.3f}")
        if callback is not None and callback(step, {
            "loss": loss_value, "beta": beta, "smoothed_loss": running,
            "outside": out.outside, "flow": flow,
        }):
            result.stop_reason = "early_stopping"
            result.message = f"stopped by the callback at step {step}"
            result.best_epoch, result.best_loss = step, running
            break
    else:
        result.best_epoch, result.best_loss = steps - 1, running
        result.message = (
            f"completed {steps} steps; running loss E_q[log q - log p~] = {running:.4f} "
            f"(an upper bound on -log Z in expectation)"
        )
    if result.stop_reason == "non_finite_loss":
        result.best_epoch, result.best_loss = best.step, best.loss
    _warn_outside(result.history["outside"])
    result.wall_time = time.perf_counter() - start
    return result


def _warn_outside(outside: list[float]) -> None:
    tail = outside[-50:]
    share = sum(tail) / len(tail) if tail else 0.0
    if share > 0.01:
        warnings.warn(
            f"{100 * share:.1f}% of the flow's samples in the last steps fell where the target "
            "is -inf (outside its support); they are left out of the loss, so the fit ignores "
            "that mass. Use a flow with the target's support (sampler_flow(..., box=...)).",
            stacklevel=3,
        )


# ------------------------------------------------------------------------------ evidence
@torch.no_grad()
def importance_samples(
    flow: Flow,
    target: Any,
    num_samples: int = 10000,
    batch_size: int = 4096,
    *,
    seed: int | None = None,
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``x ~ q`` and their log importance weights ``log p~(x) - log q(x)``.

    Batched so that memory stays bounded by ``batch_size``; no gradients are kept.

    Returns:
        ``(x, log_weights)`` of shapes ``(num_samples, dim)`` and ``(num_samples,)``;
        ``-inf`` weights mark samples outside the target's support.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
        >>> x, lw = importance_samples(flow, lambda x: -0.5 * (x**2).sum(-1), 100)
        >>> x.shape, lw.shape
        (torch.Size([100, 2]), torch.Size([100]))
    """
    flow = _check_flow(flow)
    resolved = _resolve_target(target, model_args, model_kwargs)
    _check_dims(flow, resolved)
    check_int(num_samples, "num_samples", 2)
    check_int(batch_size, "batch_size", 1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if seed is not None:
        torch.manual_seed(seed)
    xs, lws = [], []
    for begin in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - begin)
        x, log_q = flow.sample_and_log_prob((n,))
        lws.append(_evaluate(resolved.log_density, x).detach() - log_q)
        xs.append(x)
    return torch.cat(xs), torch.cat(lws)


def estimate_log_z(
    flow: Flow,
    target: Any,
    num_samples: int = 10000,
    batch_size: int = 4096,
    *,
    seed: int | None = None,
    model_args: Sequence[Any] = (),
    model_kwargs: dict[str, Any] | None = None,
) -> ImportanceSummary:
    """Estimate ``log Z`` of an unnormalized target by importance sampling from ``flow``.

    ``log Z ~= log mean_i exp(log p~(x_i) - log q(x_i))`` with ``x_i ~ q``, its delta-method
    standard error, the effective sample size ``(sum w)^2 / sum w^2`` as a fraction of
    ``num_samples``, and the PSIS k-hat of the weights (ArviZ). Read them together: the
    standard error is only trustworthy when k-hat < 0.7 (below 0.5 is good); a low ESS
    fraction or high k-hat means ``q`` misses part of the target (often a whole mode, which no
    amount of samples reveals).

    Args:
        flow: the proposal ``q``.
        target: as in :func:`fit_reverse_kl`. For a Pyro model, ``Z`` is ``p(data)``.
        num_samples: importance samples.
        batch_size: samples evaluated at once (bounds memory).
        seed: seed for ``torch.manual_seed`` first (None: leave the RNG alone).

    Returns:
        :class:`~flowinfer.inference.evidence.ImportanceSummary` (``log_z``, ``log_z_se``, ``ess``,
        ``ess_fraction``, ``khat``, ``num_samples``).

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))  # identity
        >>> s = estimate_log_z(flow, lambda x: -0.5 * (x**2).sum(-1), 1000)
        >>> round(s.log_z, 4), round(math.log(2 * math.pi), 4), round(s.ess_fraction, 6)
        (1.8379, 1.8379, 1.0)

    References:
        Vehtari et al. (2024), "Pareto Smoothed Importance Sampling", JMLR.
        Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
    """
    _, log_weights = importance_samples(flow, target, num_samples, batch_size, seed=seed,
                                        model_args=model_args, model_kwargs=model_kwargs)
    return importance_summary(log_weights)


def importance_resample(
    x: Tensor, log_weights: Tensor, num_samples: int | None = None, *, seed: int | None = None
) -> Tensor:
    """Sampling-importance-resampling: draw from ``x`` with probabilities ``softmax(log_w)``.

    Turns weighted flow samples into (approximately) unweighted target samples, correcting
    the flow's mode proportions wherever it put some mass. It cannot create mass the flow
    never sampled: a mode the flow missed stays missed.

    Args:
        x: samples of shape ``(n, dim)``.
        log_weights: their log importance weights, shape ``(n,)`` (``-inf`` allowed).
        num_samples: how many to draw, with replacement (default ``n``).
        seed: seed of a local generator (None: the global RNG).

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> importance_resample(x, torch.tensor([0.0, -math.inf]), 3).flatten().tolist()
        [0.0, 0.0, 0.0]
    """
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of shape (n, dim), got {getattr(x, 'shape', x)}")
    if not isinstance(log_weights, Tensor) or log_weights.shape != x.shape[:1]:
        raise ValueError(
            f"log_weights must be a tensor of shape ({x.shape[0]},), got "
            f"{getattr(log_weights, 'shape', type(log_weights).__name__)}"
        )
    if torch.isnan(log_weights).any() or torch.isposinf(log_weights).any():
        raise ValueError("log_weights contains NaN or +inf")
    if torch.isneginf(log_weights).all():
        raise ValueError("log_weights are all -inf: no sample has target mass")
    n = x.shape[0] if num_samples is None else check_int(num_samples, "num_samples", 1)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(check_int(seed, "seed", 0))
    probs = torch.softmax(log_weights.double(), dim=0)
    idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    return x[idx]
