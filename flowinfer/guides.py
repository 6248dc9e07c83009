"""Flow variational guides for Pyro models: ``AutoFlow`` and ``AutoAmortizedFlow``.

``AutoFlow`` is an :class:`~pyro.infer.autoguide.AutoContinuous` guide: every latent site is
mapped to the unconstrained space (``biject_to``), concatenated into one vector ``u`` of size
``latent_dim``, and

    u = loc + L @ F(eps),    eps ~ N(0, I),

where ``F`` is a registered flow started at the identity and ``L`` is a diagonal
(``scale="diagonal"``, ``L = diag(scale)``) or full lower-triangular (``scale="full"``)
matrix. With ``F`` the identity this is exactly the Gaussian that ``AutoNormal`` /
``AutoMultivariateNormal`` start from (``loc`` from ``init_loc_fn``, scale ``init_scale``),
so a fresh guide can only improve on it.

The affine map comes *after* the flow so that the flow's networks see standardised inputs
whatever the scale of the posterior (a regression coefficient near 1000 would otherwise
saturate the conditioners); the family is the same "Gaussian composed with a flow".

``AutoAmortizedFlow`` is a conditional flow ``q(z_i | x_i)`` for the local latent sites of a
data plate, with the context computed by a user-supplied encoder network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import ComposeTransform
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from pyro.nn import PyroParam
from torch import Tensor, nn
from torch.distributions import biject_to

from flowinfer.flow import Flow
from flowinfer.registry import build_flow

__all__ = ["AutoFlow", "AutoAmortizedFlow", "init_to_median_or_zero"]

_SCALES = ("diagonal", "full")
_WARM_STARTS = ("laplace", None)
#: Draws used to compare the candidate starting Gaussians by their ELBO.
_WARM_START_DRAWS = 64


def init_to_median_or_zero(site: dict | None = None, num_samples: int = 15):
    """``init_to_median``, except that flat-prior sites start at zero in unconstrained space.

    ``dist.ImproperUniform`` (a flat prior) cannot be sampled, so Pyro's sampling
    initialisers (``init_to_median``, ``init_to_feasible``, ``init_to_uniform``) fail on it;
    this one maps zero through ``biject_to(support)`` there (e.g. ``sigma = 1`` on a positive
    support).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.distributions import constraints
        >>> def model():
        ...     pyro.sample("b", dist.ImproperUniform(constraints.positive, (), ()))
        >>> guide = AutoFlow(model, init_loc_fn=init_to_median_or_zero, num_layers=1)
        >>> float(guide.median()["b"]) > 0
        True

    References:
        Pyro's initialisation strategies (``pyro.infer.autoguide.initialization``).
    """
    if site is None:
        return lambda site: init_to_median_or_zero(site, num_samples)
    fn = site["fn"]
    if isinstance(fn, dist.ImproperUniform) or isinstance(
        getattr(fn, "base_dist", None), dist.ImproperUniform
    ):
        transform = biject_to(fn.support)
        shape = transform.inverse_shape(fn.shape())
        zero = torch.zeros(shape, dtype=torch.get_default_dtype())
        return transform(zero)
    return init_to_median(site, num_samples=num_samples)


def _check_init_scale(init_scale: Any) -> float:
    if isinstance(init_scale, bool) or not isinstance(init_scale, int | float):
        raise TypeError(f"init_scale must be a positive float, got {type(init_scale).__name__}")
    if not (init_scale > 0 and math.isfinite(init_scale)):
        raise ValueError(f"init_scale must be a positive finite float, got {init_scale!r}")
    return float(init_scale)


def _check_flow_arg(flow: Any) -> None:
    if not (isinstance(flow, str) or callable(flow)):
        raise TypeError(
            "flow must be a registered flow name (see fi.available_flows()) or a callable "
            f"dim -> Flow or list of transforms, got {type(flow).__name__}"
        )


#: Guide defaults that differ from the registry's density-estimation defaults. Early in SVI
#: the ELBO gradient is huge and consistent (e.g. "make sigma larger"); Adam moves every
#: weight by about lr whatever the gradient's size, and per-layer log-scales compound over the
#: layers, so with a bound of 5 a few steps can push the latent to exp(100s). A bound of 2
#: still lets five layers rescale a coordinate by e^10.
GUIDE_FLOW_DEFAULTS = {"log_scale_bound": 2.0}


def _make_flow(flow: str | Callable, dim: int, context_dim: int, hyper: dict) -> Flow:
    if isinstance(flow, str):
        import inspect

        from flowinfer.registry import get_flow_spec

        accepted = inspect.signature(get_flow_spec(flow).factory).parameters
        defaults = {k: v for k, v in GUIDE_FLOW_DEFAULTS.items() if k in accepted}
        return build_flow(flow, dim, context_dim=context_dim, **{**defaults, **hyper})
    made = flow(dim, context_dim=context_dim, **hyper) if context_dim else flow(dim, **hyper)
    if isinstance(made, Flow):
        return made
    if isinstance(made, Sequence):
        return Flow(list(made), dim=dim, context_dim=context_dim)
    raise TypeError(
        f"the flow callable must return a flowinfer Flow or a list of transforms, got "
        f"{type(made).__name__}"
    )


def _raise_if_discrete(trace: Any, guide_name: str, cause: Exception | None = None) -> None:
    discrete = [
        name
        for name, site in trace.iter_stochastic_nodes()
        if getattr(site["fn"].support, "is_discrete", False)
    ]
    if discrete:
        raise ValueError(
            f"{guide_name} handles continuous latent sites only, but the model has discrete "
            f"latent site(s) {discrete}. Enumerate them out of the model with "
            "@pyro.infer.config_enumerate and TraceEnum_ELBO, and give the flow guide the "
            f"rest: AutoFlow(poutine.block(model, hide={discrete})); or combine guides with "
            "pyro.infer.autoguide.AutoGuideList (e.g. AutoDiscreteParallel for the discrete "
            "sites)."
        ) from cause


def _improper_sites(model: Callable, args: tuple, kwargs: dict) -> list[str]:
    # Find the sites that cannot be sampled, using an init strategy that never samples them.
    try:
        trace = poutine.trace(InitMessenger(init_to_median_or_zero)(model)).get_trace(
            *args, **kwargs)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return []
    return [
        name
        for name, site in trace.iter_stochastic_nodes()
        if isinstance(site["fn"], dist.ImproperUniform)
        or isinstance(getattr(site["fn"], "base_dist", None), dist.ImproperUniform)
    ]


def _improper_error(guide_name: str, model: Callable, args: tuple, kwargs: dict,
                    cause: Exception) -> ValueError:
    sites = _improper_sites(model, args, kwargs)
    where = f" (site(s) {sites} use ImproperUniform, a flat prior)" if sites else ""
    return ValueError(
        f"{guide_name} could not initialise: a latent site's distribution cannot be sampled"
        f"{where}, and init_loc_fn draws from it. Pass an init_loc_fn that does not sample, "
        "e.g. init_loc_fn=flowinfer.guides.init_to_median_or_zero or "
        "pyro.infer.autoguide.init_to_value(values={...}) covering those sites (Pyro's "
        "init_to_feasible and init_to_uniform sample too)."
    )


class AutoFlow(AutoContinuous):
    """Normalizing-flow guide over all latent sites of a Pyro model.

    ``u = loc + L @ F(eps)`` with ``eps ~ N(0, I)``, ``F`` a flow from the registry started
    at the identity and ``L`` diagonal or lower-triangular (see the module docstring); ``u`` is
    unpacked into the model's sites in their constrained spaces. A fresh guide equals
    ``AutoNormal``'s (or, with ``scale="full"``, ``AutoMultivariateNormal``'s) starting
    point. Because ``AutoFlow`` is an ``AutoContinuous``, ``Predictive``, ``NeuTraReparam``,
    ``get_posterior``, ``median`` and ``quantiles`` work; the last two are Monte Carlo
    estimates from ``num_quantile_samples`` draws (a flow has no closed-form quantiles).

    Flows without an analytic inverse (``bnaf``, ``planar``, ...) are fine here: the ELBO
    only scores the guide's own samples, whose inverse is cached.

    Args:
        model: a Pyro model with continuous latent sites.
        flow: a registered flow name (``fi.available_flows()``; ``"iaf"`` samples and scores
            its samples in one pass) or a callable ``dim -> Flow | list of transforms``.
        init_loc_fn: per-site initialisation (Pyro's ``init_to_*``); use one that does not
            sample for ``ImproperUniform`` (flat-prior) sites, e.g.
            :func:`init_to_median_or_zero`.
        init_scale: initial standard deviation of every unconstrained coordinate (of the
            AutoNormal-like start; a Laplace start sets its own scale).
        scale: ``"diagonal"`` (default) or ``"full"`` (a lower-triangular ``L``).
        warm_start: ``"laplace"`` (default) or ``None``. With ``"laplace"`` the first call
            finds the mode of the model's unconstrained log joint (L-BFGS from
            ``init_loc_fn``'s point) and the inverse Hessian there, and starts from whichever
            of the AutoNormal start, the mode with ``init_scale``, and the Laplace
            approximation ``N(mode, H^-1)`` has the highest ELBO on 64 common draws (see
            :attr:`warm_start_info`). When the Laplace Gaussian wins, ``loc`` and ``L`` are
            learnt in the coordinates it whitens (``u = m + W (loc + L F(eps))`` with
            ``W W^T = H^-1`` fixed), so every parameter moves in posterior-sd units.
            Skipped for models whose plates subsample or whose density is random at fixed
            latents (sites hidden from this guide, as in an ``AutoGuideList``), and inside a
            JIT trace; the Hessian is skipped above 500 latent coordinates.
        **flow_hyper: the flow's hyper-parameters (``num_layers``, ``hidden``, ``bins``, ...);
            affine flows default to ``log_scale_bound=2.0`` here (see
            ``GUIDE_FLOW_DEFAULTS``), which keeps early SVI steps from blowing up.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> def model():
        ...     z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        ...     pyro.sample("x", dist.Normal(z.sum(), 1.0), obs=torch.tensor(0.5))
        >>> guide = AutoFlow(model, flow="iaf", num_layers=2, hidden=(16,))
        >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}),
        ...                      pyro.infer.Trace_ELBO())
        >>> loss = svi.step()
        >>> guide()["z"].shape
        torch.Size([2])

    References:
        Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows".
        Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive
        Flow". Kucukelbir et al. (2017), "Automatic Differentiation Variational Inference".
    """

    num_quantile_samples: int = 4000

    def __init__(
        self,
        model: Callable,
        flow: str | Callable = "iaf",
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        scale: str = "diagonal",
        warm_start: str | None = "laplace",
        **flow_hyper: Any,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        _check_flow_arg(flow)
        if warm_start not in _WARM_STARTS:
            raise ValueError(f"warm_start must be one of {_WARM_STARTS}, got {warm_start!r}")
        if not callable(init_loc_fn):
            raise TypeError(
                f"init_loc_fn must be callable (e.g. init_to_median), got "
                f"{type(init_loc_fn).__name__}"
            )
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
        if isinstance(flow, str):
            from flowinfer.registry import get_flow_spec

            get_flow_spec(flow)  # unknown names fail here, listing the available ones
        self._init_scale = _check_init_scale(init_scale)
        self._flow_arg = flow
        self._flow_hyper = dict(flow_hyper)
        self._scale_kind = scale
        self._warm_start = warm_start
        self._raw_model = model
        #: What the warm start measured and chose (``None`` before the first call).
        self.warm_start_info: dict[str, Any] | None = None
        super().__init__(model, init_loc_fn=init_loc_fn)

    @property
    def options(self) -> dict[str, Any]:
        """The constructor options ``flow``, ``init_scale``, ``scale`` and ``warm_start``.

        ``fi.save`` records them to rebuild the guide; the flow's own hyper-parameters travel
        in its config, the Laplace buffers in the state dict."""
        return {"flow": self._flow_arg, "init_scale": self._init_scale,
                "scale": self._scale_kind, "warm_start": self._warm_start}

    # ------------------------------------------------------------------ setup
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        try:
            super()._setup_prototype(*args, **kwargs)
        except NotImplementedError as e:
            raise _improper_error(name, self._raw_model, args, kwargs, e) from e
        except ValueError as e:
            if getattr(self, "prototype_trace", None) is not None:
                _raise_if_discrete(self.prototype_trace, name, e)
            raise
        _raise_if_discrete(self.prototype_trace, name)
        loc = self._init_loc()
        flow = _make_flow(self._flow_arg, self.latent_dim, 0, self._flow_hyper)
        # Devices and dtypes follow the model's values, not the flow's defaults.
        self.flow = flow.to(device=loc.device, dtype=loc.dtype)
        scale = torch.full_like(loc, self._init_scale)
        whiten = None
        if self._warm_start == "laplace":
            loc, scale, whiten = self._laplace_warm_start(args, kwargs, loc)
        self.register_buffer("warm_loc", None if whiten is None else whiten[0])
        self.register_buffer("warm_scale_tril", None if whiten is None else whiten[1])
        self.loc = nn.Parameter(loc)
        self.scale = PyroParam(scale, constraints.softplus_positive)
        if self._scale_kind == "full":
            eye = torch.eye(self.latent_dim, dtype=loc.dtype, device=loc.device)
            self.scale_tril = PyroParam(eye, constraints.unit_lower_cholesky)

    # ------------------------------------------------------------------ warm start
    @staticmethod
    def _subsamples(trace: Any) -> bool:
        # Observed sites count: the guide's prototype trace drops them, a model trace has them.
        return any(
            frame.full_size is not None and frame.full_size != frame.size
            for site in trace.nodes.values()
            for frame in site.get("cond_indep_stack", ())
        )

    def unconstrained_log_joint(self, *args: Any, **kwargs: Any) -> Callable[[Tensor], Tensor]:
        """``u -> log p(x, z(u)) + log|dz/du|`` for one packed unconstrained latent vector.

        The model's log joint in the coordinates the guide works in (the density that
        ``warm_start="laplace"`` maximises); the guide must have been called once.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> pyro.clear_param_store()
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> guide = AutoFlow(model, num_layers=1); _ = guide()
            >>> float(guide.unconstrained_log_joint()(torch.zeros(1)))  # log N(0; 0, 1)
            -0.9189385175704956
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)

        def log_joint(u: Tensor) -> Tensor:
            trace, log_det = self._conditioned_trace(u, args, kwargs)
            return trace.log_prob_sum() + log_det

        return log_joint

    def _conditioned_trace(self, u: Tensor, args: tuple, kwargs: dict) -> tuple[Any, Tensor]:
        """The model's trace at the packed unconstrained ``u``, and ``log|dz/du|``."""
        values, log_det = {}, u.new_zeros(())
        for site, u_site in self._unpack_latent(u):
            transform = biject_to(site["fn"].support)
            value = transform(u_site)
            values[site["name"]] = value
            log_det = log_det + transform.log_abs_det_jacobian(u_site, value).sum()
        with poutine.block():
            trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                *args, **kwargs)
        return trace, log_det

    def _laplace_warm_start(self, args: tuple, kwargs: dict, init: Tensor
                            ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Pick the start with the best ELBO: returns ``(loc, scale, (m, W) or None)``."""
        from flowinfer.laplace import gaussian_elbo, laplace_start

        init_scale = torch.full_like(init, self._init_scale)
        if torch._C._get_tracing_state():
            return self._skip_warm_start(init, init_scale, "inside a JIT trace")
        trace, log_det = self._conditioned_trace(init, args, kwargs)
        if self._subsamples(trace):
            return self._skip_warm_start(init, init_scale, "a plate subsamples")
        log_joint = self.unconstrained_log_joint(*args, **kwargs)
        with torch.no_grad():
            first, second = trace.log_prob_sum() + log_det, log_joint(init)
        # A tolerance, not equality: GPU reductions need not repeat bit for bit.
        if not bool(torch.isclose(first, second, rtol=1e-5, atol=1e-5)):
            # Sites this guide does not see (blocked for an AutoGuideList, say) are sampled
            # afresh on every run: a random objective that L-BFGS cannot optimise.
            return self._skip_warm_start(init, init_scale, "the model's log density is "
                                         "random at fixed latents (hidden or blocked sites)")
        start = laplace_start(log_joint, init, max_dim=500)
        eye = torch.eye(self.latent_dim, dtype=init.dtype, device=init.device)
        candidates = {"init": (init, self._init_scale * eye)}
        if start.converged:
            candidates["mode"] = (start.loc, self._init_scale * eye)
        if start.scale_tril is not None:
            candidates["laplace"] = (start.loc, start.scale_tril)
        eps = torch.randn(_WARM_START_DRAWS, self.latent_dim, dtype=init.dtype,
                          device=init.device)
        elbos = {name: gaussian_elbo(log_joint, m, tril, eps)
                 for name, (m, tril) in candidates.items()}
        chosen = max(elbos, key=elbos.get)
        self.warm_start_info = {"chosen": chosen, "elbo": elbos,
                                "log_joint_at_mode": start.log_density,
                                "evaluations": start.evaluations, "message": start.message}
        if chosen == "mode":
            return start.loc.detach().clone(), init_scale, None
        if chosen == "laplace":
            whiten = (start.loc.detach().clone(), start.scale_tril.detach().clone())
            return torch.zeros_like(init), torch.ones_like(init), whiten
        return init, init_scale, None

    def _skip_warm_start(self, init: Tensor, init_scale: Tensor, why: str
                         ) -> tuple[Tensor, Tensor, None]:
        self.warm_start_info = {"chosen": "init", "message": f"skipped: {why}"}
        return init, init_scale, None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *rest: Any) -> None:
        # A warm-started guide has the Laplace buffers, a plain one has none: take the saved
        # guide's kind before copying, so fi.load can rebuild without re-running the start.
        if getattr(self, "prototype_trace", None) is not None:
            saved = state_dict.get(prefix + "warm_scale_tril")
            if saved is not None:
                self.warm_loc = torch.empty_like(state_dict[prefix + "warm_loc"])
                self.warm_scale_tril = torch.empty_like(saved)
            else:
                self.warm_loc = self.warm_scale_tril = None
        super()._load_from_state_dict(state_dict, prefix, *rest)

    # ------------------------------------------------------------------ AutoContinuous API
    def get_base_dist(self) -> dist.Distribution:
        """Standard normal over ``latent_dim`` coordinates (NeuTra samples in this space)."""
        zero = torch.zeros_like(self.loc)
        return dist.Normal(zero, torch.ones_like(zero)).to_event(1)

    def _affine(self) -> torch.distributions.Transform:
        # A fresh transform per call, so its cache cannot go stale; the cache hands the
        # flow back its own output on log_prob, where flowinfer's stash skips the (for IAF,
        # dim-pass) inverse.
        if self.warm_scale_tril is not None:
            # u = m + W (loc + L v): one lower-triangular affine map (W and L triangular).
            whiten = self.warm_scale_tril
            inner = (self.scale[..., None] * self.scale_tril if self._scale_kind == "full"
                     else torch.diag_embed(self.scale))
            return dist.transforms.LowerCholeskyAffine(
                self.warm_loc + whiten @ self.loc, scale_tril=whiten @ inner, cache_size=1)
        if self._scale_kind == "full":
            return dist.transforms.LowerCholeskyAffine(
                self.loc, scale_tril=self.scale[..., None] * self.scale_tril, cache_size=1
            )
        return dist.transforms.AffineTransform(self.loc, self.scale, event_dim=1,
                                               cache_size=1)

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        """The map from the standard normal base to the unconstrained latent vector."""
        return ComposeTransform([*self.flow.transforms(), self._affine()])

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TransformedDistribution:
        """A fresh ``TransformedDistribution`` over the unconstrained latent vector."""
        return dist.TransformedDistribution(
            self.get_base_dist(), [*self.flow.transforms(), self._affine()]
        )

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            "a flow guide has no closed-form location/scale; use median() or quantiles()"
        )

    @torch.no_grad()
    def _constrained_draws(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        latent = self.get_posterior(*args, **kwargs).sample((self.num_quantile_samples,))
        return {
            site["name"]: biject_to(site["fn"].support)(u)
            for site, u in self._unpack_latent(latent)
        }

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | Tensor, *args: Any,
                  **kwargs: Any) -> dict[str, Tensor]:
        """Per-coordinate posterior quantiles of each site (Monte Carlo, constrained space).

        Returns a dict mapping each site to a tensor of shape ``(len(quantiles),) + shape``.
        """
        q = torch.as_tensor(quantiles, dtype=self.loc.dtype if hasattr(self, "loc") else None)
        if q.dim() != 1 or not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles must be a 1-D list of values in [0, 1], got {quantiles}")
        draws = self._constrained_draws(*args, **kwargs)
        return {
            name: torch.quantile(v.reshape(v.shape[0], -1), q.to(v), dim=0).reshape(
                (len(q),) + v.shape[1:]
            )
            for name, v in draws.items()
        }

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Per-coordinate posterior median of each site (Monte Carlo, constrained space)."""
        return {k: v[0] for k, v in self.quantiles([0.5], *args, **kwargs).items()}


class AutoAmortizedFlow(AutoGuide):
    """Amortized conditional-flow guide ``q(z_i | x_i)`` for the local latents of a data plate.

    Every latent site of ``model`` must sit in the same one ``pyro.plate`` (the data plate,
    at ``dim=-1``); per data point their unconstrained values are concatenated into one
    vector drawn from a conditional flow whose context is ``encoder(*args, **kwargs)``, a
    tensor of shape ``(N, context_dim)`` for the ``N`` data points in the plate (or for the
    full data set when the plate subsamples: rows are then picked by the plate's indices).
    For models that also have global latents, give those to another guide and combine them
    with ``AutoGuideList``, hiding the global sites from this one with ``poutine.block``.

    Args:
        model: a Pyro model whose latent sites are local to one data plate.
        encoder: an ``nn.Module`` called with the model's arguments, returning the context.
        context_dim: the encoder's output size.
        flow: a registered conditional flow name (``iaf`` default) or a callable
            ``(dim, context_dim=..., **hyper) -> Flow | list of transforms``.
        **flow_hyper: the flow's hyper-parameters.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
        >>> encoder = torch.nn.Linear(2, 4)
        >>> guide = AutoAmortizedFlow(model, encoder, context_dim=4,
        ...                           num_layers=2, hidden=(16,))
        >>> guide(torch.randn(5, 2))["z"].shape
        torch.Size([5, 2])

    References:
        Kingma & Welling (2014), "Auto-Encoding Variational Bayes" (amortized inference).
        Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive
        Flow". Winkler et al. (2019), "Learning Likelihoods with Conditional Normalizing
        Flows".
    """

    def __init__(
        self,
        model: Callable,
        encoder: Callable[..., Tensor],
        context_dim: int,
        flow: str | Callable = "iaf",
        **flow_hyper: Any,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if not callable(encoder):
            raise TypeError(
                f"encoder must be a callable (an nn.Module) returning the context, got "
                f"{type(encoder).__name__}"
            )
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim must be a positive int, got {context_dim!r}")
        _check_flow_arg(flow)
        if isinstance(flow, str):
            from flowinfer.registry import get_flow_spec

            if not get_flow_spec(flow).supports_context:
                raise ValueError(f"flow {flow!r} does not support context; try 'iaf' or 'nsf'")
        super().__init__(model)
        self.encoder = encoder
        self.context_dim = context_dim
        self._flow_arg = flow
        self._flow_hyper = dict(flow_hyper)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        try:
            super()._setup_prototype(*args, **kwargs)
        except NotImplementedError as e:
            raise _improper_error(name, self.model, args, kwargs, e) from e
        _raise_if_discrete(self.prototype_trace, name)
        sites = list(self.prototype_trace.iter_stochastic_nodes())
        if not sites:
            raise ValueError(f"{name} found no latent sites in the model")
        frame = None
        self._site_info: list[tuple[str, torch.Size, int]] = []
        for site_name, site in sites:
            stack = site["cond_indep_stack"]
            if len(stack) != 1 or stack[0].dim != -1:
                raise ValueError(
                    f"{name} handles latent sites inside exactly one data plate at dim=-1; "
                    f"site {site_name!r} is in plates {[f.name for f in stack]}. Give global "
                    "sites to another guide (AutoFlow, AutoNormal) and combine with "
                    "AutoGuideList, hiding them here with poutine.block."
                )
            if frame is not None and stack[0].name != frame.name:
                raise ValueError(
                    f"{name}: every latent site must share one plate, found {frame.name!r} "
                    f"and {stack[0].name!r}"
                )
            frame = stack[0]
            fn = site["fn"]
            if fn.batch_shape != (frame.size,):
                raise ValueError(
                    f"{name}: site {site_name!r} must have batch shape ({frame.size},) (the "
                    f"plate), got {tuple(fn.batch_shape)}; move extra dimensions into the "
                    "event with .to_event()"
                )
            u = biject_to(fn.support).inv(site["value"])
            event = u.shape[1:]
            self._site_info.append((site_name, event, math.prod(event)))
        self._frame = frame
        self.local_dim = sum(size for _, _, size in self._site_info)
        value = sites[0][1]["value"]
        flow = _make_flow(self._flow_arg, self.local_dim, self.context_dim, self._flow_hyper)
        self.flow = flow.to(device=value.device, dtype=value.dtype)

    def _context(self, *args: Any, **kwargs: Any) -> Tensor:
        # Reading self.encoder registers an nn.Module's parameters (PyroModule __getattr__).
        context = self.encoder(*args, **kwargs)
        if not isinstance(context, Tensor) or context.dim() != 2 or (
            context.shape[-1] != self.context_dim
        ):
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(
                f"encoder must return a tensor of shape (N, context_dim={self.context_dim}), "
                f"got {got}"
            )
        return context

    def _plate(self, rows: int) -> pyro.plate:
        frame = self._frame
        full = frame.full_size or frame.size
        if full != frame.size:
            # The model subsamples: mirror its plate; the model replays our indices.
            return pyro.plate(frame.name, full, subsample_size=frame.size, dim=frame.dim)
        # No subsampling: the plate is as large as the batch the encoder saw.
        return pyro.plate(frame.name, rows, dim=frame.dim)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draw every local latent site given the model's arguments."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        context = self._context(*args, **kwargs)
        result = {}
        with self._plate(context.shape[0]) as indices:
            if context.shape[0] != indices.shape[0]:
                full = self._frame.full_size or self._frame.size
                if context.shape[0] != full:
                    raise ValueError(
                        f"encoder returned {context.shape[0]} rows, expected the plate's "
                        f"{indices.shape[0]} (subsample) or {full} (full data)"
                    )
                context = context.index_select(0, indices)
            latent = pyro.sample(
                f"_{self._pyro_name}_latent", self.flow(context), infer={"is_auxiliary": True}
            )
            pos = 0
            for site_name, event, size in self._site_info:
                site = self.prototype_trace.nodes[site_name]
                u = latent[..., pos : pos + size].reshape(latent.shape[:-1] + event)
                pos += size
                transform = biject_to(site["fn"].support)
                value = transform(u)
                log_density = transform.inv.log_abs_det_jacobian(value, u)
                log_density = sum_rightmost(
                    log_density, log_density.dim() - value.dim() + site["fn"].event_dim
                )
                result[site_name] = pyro.sample(
                    site_name,
                    dist.Delta(value, log_density=log_density, event_dim=site["fn"].event_dim),
                )
        return result
