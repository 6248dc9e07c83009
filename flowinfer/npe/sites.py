"""What NPE needs to know about a Pyro model's sites, found from one plain run.

The model is traced once (``model(*args, **kwargs)`` samples every site). Its sample sites
split into the *observed* ones (named by the user) and the *latent* ones (all others that the
model does not already observe). Each latent site gets the bijection ``biject_to(support)``
from unconstrained space, so the flow can model unconstrained coordinates and its draws never
leave the prior's support.

Example:
    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     s = pyro.sample("s", dist.HalfNormal(1.0))
    ...     pyro.sample("x", dist.Normal(0.0, s).expand([3]).to_event(1))
    >>> info = inspect_model(model, "x")
    >>> info.latent_names, info.observed_names, info.latent_dim
    (['s'], ['x'], 1)
    >>> info.observed_shapes["x"]
    torch.Size([3])

References:
    Bingham et al. (2019), "Pyro: Deep Universal Probabilistic Programming", JMLR
    (``biject_to`` and the effect handlers used here).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from flowinfer.npe.data_space import data_transforms
from flowinfer.npe.supports import check_fixed_supports, draws_outside, support_bounds

__all__ = ["ModelInfo", "inspect_model", "check_site_names"]

_ATTEMPTS = 10
#: Extra plain runs that check that each bounded latent's support is the same on every run.
_SUPPORT_RUNS = 2


def check_site_names(value: Any, argument: str = "observed") -> list[str]:
    """``value`` as a non-empty list of distinct site names (a string is one name).

    ``argument`` names the argument in the errors.
    """
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        names = list(value)
    else:
        raise TypeError(f"{argument} must be a site name or a list of site names, got "
                        f"{type(value).__name__} {value!r}")
    if not names:
        raise ValueError(f"{argument} must name at least one sample site, got an empty list")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{argument} must hold site names (str), got "
                            f"{type(name).__name__} {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{argument} names a site twice: {names}")
    return names


@dataclass
class ModelInfo:
    """The latent and observed sites of a model, with shapes, supports and bijections.

    Attributes:
        latent_names: latent sample sites, in the model's order.
        observed_names: the observed sites, in the order the user gave.
        latent_shapes: each latent site's value shape in a plain run.
        observed_shapes: each observed site's value shape in a plain run.
        supports: each latent site's support (a ``torch.distributions`` constraint).
        transforms: ``biject_to(support)`` of each latent site (unconstrained -> support).
        unconstrained_shapes: each latent site's shape in unconstrained space.
        particle_dim: the dimension a particle plate would use to vectorise the model
            (left of every batch dimension of every site).
        nuisance_shapes: the shapes of the other free sample sites (simulated along and
            marginalised, not inferred), in the model's order.
        nuisance_first: nuisance sites sampled before some latent site (the latents'
            prior may then depend on them).
        data_transforms: maps of the observed sites read on an unconstrained scale
            (:mod:`flowinfer.npe.data_space`).
    """

    latent_names: list[str]
    observed_names: list[str]
    latent_shapes: dict[str, torch.Size]
    observed_shapes: dict[str, torch.Size]
    supports: dict[str, Any]
    transforms: dict[str, Any]
    unconstrained_shapes: dict[str, torch.Size]
    particle_dim: int
    observed_dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    nuisance_shapes: dict[str, torch.Size] = field(default_factory=dict)
    nuisance_first: list[str] = field(default_factory=list)
    data_transforms: dict[str, Any] = field(default_factory=dict)

    @property
    def nuisance_names(self) -> list[str]:
        """Free sample sites that are neither inferred nor observed."""
        return list(self.nuisance_shapes)

    @property
    def latent_dim(self) -> int:
        """Total number of unconstrained latent coordinates (the flow's dimension)."""
        return sum(math.prod(s) for s in self.unconstrained_shapes.values())

    @property
    def data_dim(self) -> int:
        """Total number of observed coordinates."""
        return sum(math.prod(s) for s in self.observed_shapes.values())

    # ------------------------------------------------------------ packing
    def to_unconstrained(self, latents: dict[str, Tensor]) -> Tensor:
        """Constrained values ``{site: (N, *shape)}`` -> one ``(N, latent_dim)`` tensor."""
        parts = []
        for name in self.latent_names:
            value = latents[name]
            n = value.shape[0]
            u = self.transforms[name].inv(value)
            parts.append(u.reshape(n, -1))
        return torch.cat(parts, dim=-1)

    def to_constrained(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(N, latent_dim)`` -> (``{site: (N, *shape)}``, log|d theta / d u| of shape (N,))."""
        out, ladj, start = {}, torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device), 0
        for name in self.latent_names:
            ushape = self.unconstrained_shapes[name]
            size = math.prod(ushape)
            piece = u[..., start:start + size].reshape(*u.shape[:-1], *ushape)
            start += size
            t = self.transforms[name]
            value = t(piece)
            term = t.log_abs_det_jacobian(piece, value)
            # Elementwise transforms give one term per coordinate: sum the site's event.
            extra = term.dim() - (u.dim() - 1)
            if extra > 0:
                term = term.reshape(*u.shape[:-1], -1).sum(-1)
            ladj = ladj + term
            out[name] = value
        return out, ladj

    def in_support(self, latents: dict[str, Tensor]) -> Tensor:
        """Boolean ``(N,)``: whether every coordinate of each draw lies in its site's support."""
        ok = None
        for name in self.latent_names:
            value = latents[name]
            check = self.supports[name].check(value)
            check = check.reshape(value.shape[0], -1).all(-1)
            ok = check if ok is None else ok & check
        return ok

    def unconstrained_draws(self, latents: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Simulated latents -> ``(u, keep)``: ``(N, latent_dim)`` unconstrained values and
        the rows where ``u`` is finite (a draw on its support's edge, e.g. a Gamma draw that
        underflowed to 0, maps to infinity; such draws are dropped with a warning).

        Raises:
            ValueError: draws outside the support found on the first plain run (a support
                that changes between runs and slipped past the check in ``inspect_model``).
        """
        for name in self.latent_names:
            bad = draws_outside(self.supports[name], latents[name])
            if bad.any():
                raise ValueError(f"{int(bad.sum())} simulated draws of latent site {name!r} "
                                 f"lie outside its support {self.supports[name]} from the "
                                 "first run: its support changes between runs; reparametrise "
                                 "it (e.g. Uniform(0, a) as a * Uniform(0, 1))")
        u = self.to_unconstrained(latents)
        keep = torch.isfinite(u).all(-1)
        if not keep.all():
            warnings.warn(f"{int((~keep).sum())} of {len(keep)} simulated draws lie on the edge "
                          "of a latent's support (infinite in unconstrained space) and are "
                          "not used for training", stacklevel=3)
        return u, keep

    def check_values(self, values: Any) -> tuple[dict[str, Tensor], torch.Size]:
        """``values`` ``{latent: (*batch, *shape)}`` flattened to ``{latent: (B, *shape)}``.

        Returns the flattened values and the common ``batch`` shape.

        Raises:
            TypeError: ``values`` is not a dict. ValueError: a latent site is missing or a
                value's shape is not ``batch + site shape`` with one batch for all sites.
        """
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict {{site: tensor}}, got "
                            f"{type(values).__name__}")
        missing = [k for k in self.latent_names if k not in values]
        if missing:
            raise ValueError(f"values lack latent site(s) {missing}")
        first = torch.as_tensor(values[self.latent_names[0]])
        batch = first.shape[:first.dim() - len(self.latent_shapes[self.latent_names[0]])]
        flat = {}
        for name in self.latent_names:
            v = torch.as_tensor(values[name], dtype=torch.get_default_dtype())
            shape, lead = self.latent_shapes[name], v.dim() - len(self.latent_shapes[name])
            if lead < 0 or tuple(v.shape[lead:]) != tuple(shape) or v.shape[:lead] != batch:
                raise ValueError(f"values[{name!r}] has shape {tuple(v.shape)}; expected "
                                 f"{tuple(batch)} + {tuple(shape)}")
            flat[name] = v.reshape(-1, *shape)
        return flat, batch

    def check_observation(self, x: Any, name: str = "x") -> dict[str, Tensor]:
        """``x`` (a tensor for one observed site, or ``{site: tensor}``) with shapes checked."""
        if isinstance(x, dict):
            given = dict(x)
        elif len(self.observed_names) == 1:
            given = {self.observed_names[0]: x}
        else:
            raise TypeError(f"{name} must be a dict {{site: tensor}} for the observed sites "
                            f"{self.observed_names}, got {type(x).__name__}")
        missing = [k for k in self.observed_names if k not in given]
        unknown = [k for k in given if k not in self.observed_names]
        if missing or unknown:
            raise ValueError(f"{name} must give exactly the observed sites "
                             f"{self.observed_names}; missing {missing}, unknown {unknown}")
        out = {}
        for site in self.observed_names:
            value = given[site]
            if not isinstance(value, Tensor):
                try:
                    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
                except (TypeError, ValueError, RuntimeError):
                    raise TypeError(f"{name}[{site!r}] must be a tensor, got "
                                    f"{type(value).__name__}") from None
            want = self.observed_shapes[site]
            if value.shape != want:
                raise ValueError(
                    f"the observation of site {site!r} has shape {tuple(value.shape)}, but "
                    f"the model's site {site!r} has shape {tuple(want)}"
                )
            if not torch.isfinite(value.to(torch.float64)).all():
                raise ValueError(f"the observation of site {site!r} holds NaN or inf values")
            out[site] = value.to(torch.get_default_dtype())
        return out


def _is_discrete(fn: Any) -> bool:
    return bool(getattr(fn.support, "is_discrete", False))


def _plain_trace(model: Callable, args: tuple, kwargs: dict) -> Any:
    # A simulator may raise on some parameter draws: try a few plain runs before giving up.
    for attempt in range(_ATTEMPTS):
        try:
            # Validation off, as in the simulations: a NaN draw is not the model's fault.
            with pyro.validation_enabled(False):
                return poutine.trace(model).get_trace(*args, **kwargs)
        except NotImplementedError as err:
            raise ValueError(
                f"the model could not be run plainly ({err}); NPE simulates from the prior, "
                "so every latent site needs a proper prior that can be sampled (not "
                "ImproperUniform)"
            ) from None
        except Exception as err:
            if attempt == _ATTEMPTS - 1:
                first = (str(err).strip().splitlines() or [""])[0]
                raise RuntimeError(f"the model raised on each of {_ATTEMPTS} plain runs made "
                                   f"to find its sites: {type(err).__name__}: {first}"
                                   ) from err
    raise AssertionError("unreachable")


def _chosen_latents(latents: Any, free: list[str], observed: list[str]) -> list[str] | None:
    if latents is None:
        return None
    chosen = check_site_names(latents, "latents")
    for name in chosen:
        if name in observed:
            raise ValueError(f"latents and observed both name site {name!r}")
        if name not in free:
            raise ValueError(f"latents names {name!r}, which is not a free sample site of the "
                             f"model; its free sample sites are {free}")
    return chosen


def _check_fixed_sites(sample_sites: dict, fixed: list[str], observed: list[str]) -> None:
    # NPE learns from plain simulations, which ignore data the model conditions on itself
    # and factors: the posterior would silently leave out their likelihood terms.
    factors = [n for n in fixed if isinstance(sample_sites[n]["fn"], dist.Unit)]
    if factors:
        raise ValueError(f"the model has pyro.factor site(s) {factors}: NPE learns from the "
                         "model's plain simulations, which cannot be weighted by a factor; "
                         "write that term as a distribution the model samples from")
    data = [n for n in fixed if n not in observed
            and not sample_sites[n]["infer"].get("_deterministic")]
    if data:
        raise ValueError(f"the model observes site(s) {data} itself (obs=...): NPE learns "
                         "p(latents | observed) from plain simulations and would ignore that "
                         "data; sample those sites with obs=None and add them to observed=")


def inspect_model(model: Callable, observed: Any, args: tuple = (),
                  kwargs: dict | None = None, latents: Any = None) -> ModelInfo:
    """Trace ``model`` once and describe its latent and observed sites.

    ``latents`` (a name or list of names) picks the sites to infer; every other free
    sample site is then a nuisance: simulated along, marginalised by NPE, never returned.
    By default every free site that is not observed is a latent.

    Raises:
        TypeError: ``model`` is not callable, ``observed`` or ``latents`` is not a name or
            list of names.
        ValueError: an observed name is not a sample site of the model (or is one the model
            observes itself), a name in ``latents`` is not a free sample site, the model has
            no latent site, a latent site is discrete, or a latent distribution cannot be
            sampled (``ImproperUniform``).
        RuntimeError: the model raised on its plain run (the message says so).
    """
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    names = check_site_names(observed)
    kwargs = kwargs or {}
    # fork_rng: finding the sites must not move the caller's random stream.
    with torch.random.fork_rng():
        trace = _plain_trace(model, args, kwargs)
    # Plates appear in a trace as sample sites too (their subsample indices): not random.
    sample_sites = {n: s for n, s in trace.nodes.items()
                    if s["type"] == "sample" and not site_is_subsample(s)}
    free = [n for n, s in sample_sites.items() if not s["is_observed"]]
    fixed = [n for n, s in sample_sites.items() if s["is_observed"]]
    for name in names:
        # A pyro.deterministic site (a summary statistic of the simulation) is data too.
        if name in fixed and not sample_sites[name]["infer"].get("_deterministic"):
            raise ValueError(f"observed site {name!r} is already observed inside the model "
                             "(obs=...); NPE must simulate it: sample it with obs=None")
        if name not in sample_sites:
            raise ValueError(f"observed site {name!r} is not a sample site of the model; its "
                             f"sample sites are {free}")
    _check_fixed_sites(sample_sites, fixed, names)
    chosen = _chosen_latents(latents, free, names)
    latents = [n for n in free if n not in names and (chosen is None or n in chosen)]
    if not latents:
        raise ValueError(f"the model has no latent sample site besides the observed {names}: "
                         "there is nothing to infer")
    discrete = [n for n in latents if _is_discrete(sample_sites[n]["fn"])]
    if discrete:
        continuous = [n for n in latents if n not in discrete]
        raise ValueError(
            f"NPE handles continuous latent sites only, but {discrete} are discrete (support "
            f"{sample_sites[discrete[0]]['fn'].support}); infer the continuous ones only with "
            f"latents={continuous} (the others are then simulated and marginalised), or make "
            "the discrete sites observed"
        )
    again = []
    if any(support_bounds(sample_sites[n]["fn"].support) for n in latents + names):
        with torch.random.fork_rng():
            again = [_plain_trace(model, args, kwargs) for _ in range(_SUPPORT_RUNS)]
    check_fixed_supports(latents, trace, again)
    improper = [n for n in latents if isinstance(sample_sites[n]["fn"], dist.ImproperUniform)]
    if improper:
        raise ValueError(f"latent site(s) {improper} have a flat ImproperUniform prior; NPE "
                         "needs a proper prior to simulate from")
    supports, transforms, ushapes = {}, {}, {}
    for n in latents:
        fn = sample_sites[n]["fn"]
        supports[n] = fn.support
        transforms[n] = biject_to(fn.support)
        ushapes[n] = torch.Size(transforms[n].inverse_shape(sample_sites[n]["value"].shape))
    nuisance = [n for n in free if n not in names and n not in latents]
    last = max(free.index(n) for n in latents)
    depth = max(len(s["fn"].batch_shape) for s in sample_sites.values())
    return ModelInfo(
        latent_names=latents,
        observed_names=names,
        latent_shapes={n: sample_sites[n]["value"].shape for n in latents},
        observed_shapes={n: sample_sites[n]["value"].shape for n in names},
        supports=supports,
        transforms=transforms,
        unconstrained_shapes=ushapes,
        particle_dim=-(depth + 1),
        observed_dtypes={n: sample_sites[n]["value"].dtype for n in names},
        nuisance_shapes={n: sample_sites[n]["value"].shape for n in nuisance},
        nuisance_first=[n for n in nuisance if free.index(n) < last],
        data_transforms=data_transforms(trace, names, again),
    )
