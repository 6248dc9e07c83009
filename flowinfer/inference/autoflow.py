"""``AutoFlow`` is an :class:`~pyro.infer.autoguide.AutoContinuous` guide: every latent site is
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
"""


from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import ComposeTransform
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import Tensor, nn
from torch.distributions import biject_to

from flowinfer.inference.autoflow_checkpoint import GuideCheckpoint
from flowinfer.inference.potential import ModelPotential
from flowinfer.inference.sites import (
    _SCALES,
    _WARM_START_DRAWS,
    _WARM_STARTS,
    _check_flow_arg,
    _check_init_scale,
    _improper_error,
    _make_flow,
    _raise_if_discrete,
)

__all__ = ['AutoFlow']


class AutoFlow(GuideCheckpoint, AutoContinuous):
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
        self._claim_param_names()
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

    def _claim_param_names(self) -> None:
        """Take a name whose parameters are not already in Pyro's global param store.

        A PyroModule reads its parameters from the param store by name, and every guide of a
        class is called ``AutoFlow`` by default: a second guide (for another model, or a
        second mode of one posterior) would silently share the first one's parameters, or
        fail with a shape error when the models differ. A top-level guide set up while
        ``AutoFlow.*`` entries exist that are not its own becomes ``AutoFlow_1`` (then
        ``_2``, ...); after ``pyro.clear_param_store()`` the plain name is free again.
        """
        if "." in self._pyro_name:  # a part of a bigger module (AutoGuideList): its parent
            return                  # owns the names
        store = pyro.get_param_store()
        mine = {id(p) for p in self.parameters()}

        def taken(prefix: str) -> bool:
            return any(key.startswith(prefix + ".") and id(store._params[key]) not in mine
                       for key in store.keys())  # noqa: SIM118 - not a dict

        if not taken(self._pyro_name):
            return
        base = type(self).__name__
        for i in itertools.count(1):
            if not taken(f"{base}_{i}"):
                self._pyro_name = f"{base}_{i}"
                return

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
        return self._potential(args, kwargs).log_prob

    def _potential(self, args: tuple, kwargs: dict) -> ModelPotential:
        """The model's potential over this guide's packed latent vector."""
        # The raw model: the guide's own copy sits inside an InitMessenger, which a
        # reparameterised model (poutine.reparam) applies to its original sites before the
        # conditioning on the new ones, so the potential would read init values there.
        return ModelPotential.from_trace(self._raw_model, self.prototype_trace, args, kwargs)

    def _conditioned_trace(self, u: Tensor, args: tuple, kwargs: dict) -> tuple[Any, Tensor]:
        """The model's trace at the packed unconstrained ``u``, and ``log|dz/du|``."""
        return self._potential(args, kwargs).conditioned_trace(u)

    def _laplace_warm_start(self, args: tuple, kwargs: dict, init: Tensor
                            ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Pick the start with the best ELBO: returns ``(loc, scale, (m, W) or None)``."""
        from flowinfer.inference.laplace import MODEL_ERRORS

        init_scale = torch.full_like(init, self._init_scale)
        if torch._C._get_tracing_state():
            return self._skip_warm_start(init, init_scale, "inside a JIT trace")
        try:
            return self._laplace_candidates(args, kwargs, init, init_scale)
        except MODEL_ERRORS as e:
            # The start is an optimisation, never a reason to fail: a model that raises
            # somewhere along the way (the search backs off from such points, but the
            # Hessian or the ELBO draws may still hit one) keeps Pyro's own start.
            return self._skip_warm_start(init, init_scale, f"the model raised "
                                         f"{type(e).__name__} ({e})")

    def _laplace_candidates(self, args: tuple, kwargs: dict, init: Tensor, init_scale: Tensor
                            ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        from flowinfer.inference.laplace import gaussian_elbo, laplace_start

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
        message = start.message
        bad = [name for name, value in elbos.items() if not math.isfinite(value)]
        if bad:
            message = (message + "; " if message else "") + (
                f"candidate(s) {bad} have a non-finite ELBO: the model raised or returned "
                "NaN/-inf at some of their test draws")
        self.warm_start_info = {"chosen": chosen, "elbo": elbos,
                                "log_joint_at_mode": start.log_density,
                                "evaluations": start.evaluations, "message": message}
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
