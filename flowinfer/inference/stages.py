"""The stages of ``fi.infer``: mode search, flow VI per mode, importance checks, output/NUTS.

Each stage is a method of :class:`Probe`, which holds the model, its arguments and a probe
guide whose packing of the latent sites (``AutoContinuous`` order) every stage shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from flowinfer.inference.autoflow import AutoFlow
from flowinfer.inference.evidence import importance_summary, khat_standard_error
from flowinfer.inference.importance import importance_draws
from flowinfer.inference.laplace import safe_log_density
from flowinfer.inference.modes import ModeSearch, find_modes
from flowinfer.inference.sites import init_to_median_or_zero

__all__ = ["Options", "Probe", "check_model"]


@dataclass
class Options:
    """``fi.infer``'s checked options (see its docstring)."""

    num_draws: int
    num_chains: int
    route: str
    reparam: str
    flow: Any
    flow_options: dict
    num_starts: int
    max_modes: int
    max_vi_steps: int
    num_particles: int
    lr: float
    check_draws: int
    khat_threshold: float
    min_ess: int
    warmup: int
    kernel: str
    posterior_predictive: bool
    progress: bool

    @property
    def draws_per_chain(self) -> int:
        return -(-self.num_draws // self.num_chains)


def _is_flat(fn: Any) -> bool:
    return isinstance(fn, dist.ImproperUniform) or isinstance(
        getattr(fn, "base_dist", None), dist.ImproperUniform)


def check_model(model: Callable, args: tuple, kwargs: dict) -> None:
    """Fail early, in ``fi.infer``'s words, on what it cannot handle."""
    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(InitMessenger(init_to_median_or_zero)(model)).get_trace(
                *args, **kwargs)
    except TypeError as e:
        raise TypeError(f"calling the model with the given arguments failed: {e}") from e
    latent = [(name, site) for name, site in trace.iter_stochastic_nodes()
              if not site["infer"].get("is_auxiliary", False)
              and not site_is_subsample(site)]
    discrete = [name for name, site in latent
                if getattr(site["fn"].support, "is_discrete", False)]
    if discrete:
        raise ValueError(
            f"fi.infer handles continuous latent sites only; the model has discrete latent "
            f"site(s) {discrete}. Marginalise them out (@pyro.infer.config_enumerate with "
            "TraceEnum_ELBO, or Pyro's NUTS, which enumerates them), or sum them out by hand "
            "in the model.")
    if not latent:
        raise ValueError("the model has no latent sample sites: nothing to infer")
    subsampled = [name for name, site in trace.nodes.items() if site["type"] == "sample"
                  for f in site.get("cond_indep_stack", ())
                  if f.full_size is not None and f.full_size != f.size]
    if subsampled:
        raise ValueError(
            f"fi.infer needs the full data, but plates subsample at site(s) "
            f"{sorted(set(subsampled))}: importance weights and NUTS need the exact log "
            "density. Drop subsample/subsample_size, or fit fi.AutoFlow with SVI.")


def _prior_or_flat(site: dict) -> Tensor:
    # A prior draw; flat (ImproperUniform) sites get a wide draw in unconstrained space.
    fn = site["fn"]
    if _is_flat(fn):
        transform = biject_to(fn.support)
        shape = transform.inverse_shape(fn.shape())
        return transform(2.0 * torch.randn(shape, dtype=torch.get_default_dtype()))
    return fn.sample().detach()


#: A mode the guide misses is reported when it holds more than this share of the mass.
_MISSED_SHARE = 0.01
#: Draws from each found mode's Laplace Gaussian for the missed-mass check.
_MODE_DRAWS = 32
#: Steps per window of the plateau test, and the fewest steps before it may stop.
_WINDOW = 50
_MIN_STEPS = 500


class PlateauTest:
    """Stop when the ELBO stopped improving: a two-window test on the raw per-step losses.

    Every ``_WINDOW`` steps the mean loss of the last window is compared with the one
    before; when the decrease is below two standard errors of the difference (the windows'
    own spread) ``patience`` windows in a row, further steps buy less than the estimate's
    noise. The loop's own patience (on its smoothed loss) stays as a backstop.
    """

    def __init__(self, window: int = _WINDOW, min_steps: int = _MIN_STEPS,
                 patience: int = 3) -> None:
        self.window, self.min_steps, self.patience = window, min_steps, patience
        self.losses: list[float] = []
        self.flat = 0

    def __call__(self, step: int, info: dict) -> bool:
        self.losses.append(float(info["loss"]))
        n = len(self.losses)
        if n < max(self.min_steps, 2 * self.window) or n % self.window:
            return False
        prev = np.asarray(self.losses[-2 * self.window:-self.window])
        last = np.asarray(self.losses[-self.window:])
        prev, last = prev[np.isfinite(prev)], last[np.isfinite(last)]
        if prev.size < 5 or last.size < 5:
            return False
        se = math.sqrt(prev.var(ddof=1) / prev.size + last.var(ddof=1) / last.size)
        self.flat = self.flat + 1 if prev.mean() - last.mean() < 2.0 * se else 0
        return self.flat >= self.patience


@dataclass
class GuideFit:
    guide: AutoFlow
    result: Any
    summary: str


@dataclass
class CheckResult:
    khat: float
    ess: float
    passed: bool
    missed_mass: list[str]
    log_weights: Tensor                 # (N,) mixture log weights
    unconstrained: Tensor               # (N, d)
    component: Tensor                   # (N,) which guide drew each draw
    posterior: dict[str, Tensor]        # latent + deterministic sites, (N, ...)
    component_summaries: list[Any] = field(default_factory=list)
    mode_shares: list[float] = field(default_factory=list)


class Probe:
    """Model, arguments and the latent packing shared by the stages."""

    def __init__(self, model: Callable, args: tuple, kwargs: dict, opts: Options) -> None:
        self.model, self.args, self.kwargs, self.opts = model, args, kwargs, opts
        self.guide = AutoFlow(model, flow=opts.flow, init_loc_fn=init_to_median_or_zero,
                              warm_start=None, **opts.flow_options)
        with torch.no_grad():
            self.guide(*args, **kwargs)
        self.sites = [(name, site) for name, site in
                      self.guide.prototype_trace.iter_stochastic_nodes()]
        self.dim = self.guide.latent_dim
        self.log_joint = safe_log_density(self.guide.unconstrained_log_joint(*args, **kwargs))

    # ------------------------------------------------------------------ packing
    def pack(self, values: dict[str, Tensor], batch: int | None = None) -> Tensor:
        """Constrained site values -> unconstrained vectors (``(batch, d)`` or ``(d,)``)."""
        parts = []
        for name, site in self.sites:
            u = biject_to(site["fn"].support).inv(values[name])
            parts.append(u.reshape(-1) if batch is None else u.reshape(batch, -1))
        return torch.cat(parts, dim=-1)

    def unpack(self, u: Tensor) -> dict[str, Tensor]:
        return {site["name"]: biject_to(site["fn"].support)(part)
                for site, part in self.guide._unpack_latent(u)}

    # ------------------------------------------------------------------ stage 1
    def starts(self) -> list[tuple[str, Tensor]]:
        median = self.guide.loc.detach().clone()
        points = [("median", median)]
        i, last_prior = 0, None
        while len(points) < self.opts.num_starts:
            i += 1
            # Per three starts: a prior draw, its mirror image through the prior median
            # (antithetic: a mode on the other side of the prior is not left to chance), and
            # Stan's default, uniform on [-2, 2] in the unconstrained space.
            if i % 3 == 1:
                try:
                    with torch.no_grad(), poutine.block():
                        trace = poutine.trace(InitMessenger(_prior_or_flat)(self.model)
                                              ).get_trace(*self.args, **self.kwargs)
                    u = self.pack({n: trace.nodes[n]["value"] for n, _ in self.sites})
                except Exception:  # noqa: BLE001 - a prior draw the model rejects: skip it
                    u = None
                last_prior, name = u, f"prior{i // 3 + 1}"
            elif i % 3 == 2:
                u = None if last_prior is None else 2 * median - last_prior
                name = f"mirror{i // 3 + 1}"
            else:
                u = 4.0 * torch.rand(self.dim, dtype=self.guide.loc.dtype) - 2.0
                name = f"uniform{i // 3}"
            if u is not None and bool(torch.isfinite(u).all()):
                points.append((name, u.to(self.guide.loc)))
            if i > 4 * self.opts.num_starts:
                break
        return points

    def search_modes(self) -> ModeSearch:
        return find_modes(self.log_joint, self.starts(), max_modes=self.opts.max_modes,
                          progress=self.opts.progress)

    # ------------------------------------------------------------------ stage 2
    def fit_guides(self, search: ModeSearch) -> list[GuideFit]:
        opts = self.opts
        locs = [m.loc for m in search.modes] or [
            search.best_point if search.best_point is not None else self.guide.loc.detach()]
        fits = []
        for k, loc in enumerate(locs):
            values = {n: v.detach() for n, v in self.unpack(loc).items()}
            guide = AutoFlow(self.model, flow=opts.flow,
                             init_loc_fn=init_to_value(values=values,
                                                       fallback=init_to_median_or_zero),
                             warm_start="laplace", **opts.flow_options)
            result = self._train(guide, opts.num_particles, opts.lr, _MIN_STEPS,
                                 f"flow VI (mode {k + 1}/{len(locs)})")
            warm = (guide.warm_start_info or {}).get("chosen", "none")
            summary = (f"mode {k + 1}: {len(result.history['loss'])} steps "
                       f"({result.stop_reason}), -ELBO {result.best_loss:.3f}, "
                       f"warm start {warm}, {result.wall_time:.1f} s")
            fits.append(GuideFit(guide, result, summary))
        return fits

    def fit_broad(self) -> GuideFit:
        """One more guide, from the prior median with a wide plain start (no Laplace).

        A mode can be a poor summary of the posterior: the neck of a funnel (the density's
        maximum, where almost no mass is) attracts every start of the mode search, and a
        Laplace start there keeps VI in the neck. This fit starts where the prior is and
        lets the flow find the mass; pooled with the others, the importance weights decide
        how much each fit's draws count.
        """
        opts = self.opts
        guide = AutoFlow(self.model, flow=opts.flow, init_loc_fn=init_to_median_or_zero,
                         init_scale=1.0, warm_start=None, **opts.flow_options)
        # Reached only when the first fits failed the checks: a harder posterior, so twice
        # the particles and a longer minimum run before the plateau test may stop it.
        result = self._train(guide, 2 * opts.num_particles, 2 * opts.lr,
                             min(opts.max_vi_steps, 2 * _MIN_STEPS), "flow VI (broad start)")
        summary = (f"broad start: {len(result.history['loss'])} steps ({result.stop_reason}), "
                   f"-ELBO {result.best_loss:.3f}, {result.wall_time:.1f} s")
        return GuideFit(guide, result, summary)

    def _train(self, guide: AutoFlow, particles: int, lr: float, min_steps: int, desc: str):
        """Flow VI through the generic loop: plateau-stopped, recovering from bad steps."""
        from flowinfer.inference.elbo import ELBOLoss
        from flowinfer.train import fit

        loss = ELBOLoss(self.model, guide, self.args, self.kwargs, particles)
        return fit(loss, steps=self.opts.max_vi_steps, lr=lr, schedule="plateau",
                   eval_every=_WINDOW, patience=4, on_non_finite="recover", clip_grad=10.0,
                   progress_bar=self.opts.progress, callback=PlateauTest(min_steps=min_steps),
                   desc=desc)

    # ------------------------------------------------------------------ stage 3
    @torch.no_grad()
    def _log_q(self, fits: list[GuideFit], u: Tensor) -> Tensor:
        """``(K, N)`` log densities of each guide at unconstrained points ``u``."""
        rows = []
        for f in fits:
            posterior = f.guide.get_posterior(*self.args, **self.kwargs)
            rows.append(posterior.log_prob(u))
        return torch.stack(rows)

    @torch.no_grad()
    def check(self, fits: list[GuideFit], search: ModeSearch, second_look: bool = False
              ) -> CheckResult:
        """Importance checks of the (mixture of the) fits.

        ``second_look``: the check after a first one failed. Taking the better of two looks
        at a noisy k-hat favours a lucky draw, so then k-hat must be below the threshold by
        one standard error.
        """
        opts = self.opts
        k_total = len(fits)
        per = -(-opts.check_draws // k_total)
        lws, us, posts, comps, summaries = [], [], [], [], []
        for k, f in enumerate(fits):
            lw, post = self.draws(f.guide, per)
            lw = torch.nan_to_num(lw.double(), nan=-math.inf, posinf=-math.inf)
            lws.append(lw)
            us.append(self.pack(post, batch=per))
            posts.append(post)
            comps.append(torch.full((per,), k))
            summaries.append(_safe_summary(lw))
        u = torch.cat(us)
        component = torch.cat(comps)
        posterior = {n: torch.cat([p[n] for p in posts]) for n in posts[0]}
        lw = torch.cat(lws)
        if k_total > 1:
            # Balance heuristic: the pooled draws come from the mixture sum_k q_k / K.
            log_q = self._log_q(fits, u).double()
            own = log_q[component, torch.arange(u.shape[0])]
            log_mix = torch.logsumexp(log_q, 0) - math.log(k_total)
            lw = torch.where(torch.isfinite(lw), lw + own - log_mix, lw)
            lw = torch.nan_to_num(lw, nan=-math.inf, posinf=-math.inf)
        summary = _safe_summary(lw)
        missed = self._missed_modes(fits, search, lw)
        shares = []
        if k_total > 1 and bool(torch.isfinite(lw).any()):
            w = torch.softmax(lw, 0)
            shares = [float(w[component == k].sum()) for k in range(k_total)]
        finite = int(torch.isfinite(lw).sum())
        margin = khat_standard_error(summary.khat, finite) if second_look else 0.0
        passed = (summary.khat + margin < opts.khat_threshold and summary.ess >= opts.min_ess
                  and not missed)
        return CheckResult(summary.khat, summary.ess, passed, missed, lw, u, component,
                           posterior, summaries, shares)

    @torch.no_grad()
    def draws(self, guide: Any, n: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``n`` guide draws and their log weights ``log p~(u) - log q(u)``.

        Vectorized over draws when the model broadcasts over a leading dimension, else one
        model evaluation per draw.
        """
        try:
            lw, post, _ = importance_draws(self.model, guide, *self.args, num_samples=n,
                                           **self.kwargs)
            return lw, post
        except Exception:  # noqa: BLE001 - the model does not vectorize: one draw at a time
            posterior = guide.get_posterior(*self.args, **self.kwargs)
            u = posterior.sample((n,))
            log_q = posterior.log_prob(u)
            log_p = torch.stack([self.log_joint(row).reshape(()) for row in u])
            values = self.unpack(u)
            return (log_p - log_q), {k: v.reshape((n,) + self._shape(k)) for k, v in
                                     values.items()}

    def _shape(self, name: str) -> tuple[int, ...]:
        return tuple(dict(self.sites)[name]["value"].shape)

    def _missed_modes(self, fits: list[GuideFit], search: ModeSearch, lw: Tensor) -> list[str]:
        """Modes found in stage 1 whose mass the guide does not hold.

        Around each mode, draws from its Laplace Gaussian ``N_j`` estimate by importance
        sampling both the posterior's mass there (``E[p / N_j] / Z``, with ``Z`` from the
        guide's own draws) and the guide's (``E[q / N_j]``). A mode holding more than 1% of
        the posterior is missed when the guide puts less than a tenth of that there. k-hat,
        computed from the guide's own draws, cannot see such a mode: no draw lands there.
        """
        finite = lw[torch.isfinite(lw)]
        if not search.all_modes or finite.numel() == 0:
            return []
        log_z = float(torch.logsumexp(finite, 0)) - math.log(lw.numel())
        missed = []
        for mode in search.all_modes:
            eps = torch.randn(_MODE_DRAWS, self.dim, dtype=mode.loc.dtype)
            points = mode.loc + eps @ mode.scale_tril.T
            log_p = torch.stack([self.log_joint(row).reshape(()) for row in points]).double()
            log_q = self._log_q(fits, points).double()
            log_mix = torch.logsumexp(log_q, 0) - math.log(len(fits))
            log_n = dist.MultivariateNormal(mode.loc, scale_tril=mode.scale_tril).log_prob(
                points).double()

            def log_mean(t: Tensor) -> float:
                t = torch.nan_to_num(t, nan=-math.inf)
                return float(torch.logsumexp(t, 0)) - math.log(t.numel())

            p_share = log_mean(log_p - log_n) - log_z
            q_share = log_mean(log_mix - log_n)
            if p_share > math.log(_MISSED_SHARE) and q_share < p_share - math.log(10.0):
                missed.append(f"mode reached from start(s) {','.join(mode.starts)}: about "
                              f"{100 * math.exp(min(p_share, 0.0)):.0f}% of the posterior "
                              f"mass, {100 * math.exp(min(q_share, 0.0)):.2g}% of the guide's")
        return missed

    def constrained(self, u: Tensor) -> dict[str, Tensor]:
        """Unconstrained latent vectors ``(n, d)`` -> constrained site values ``(n, ...)``."""
        with torch.no_grad():
            return {k: v.reshape((u.shape[0],) + self._shape(k))
                    for k, v in self.unpack(u).items()}


def _safe_summary(lw: Tensor):
    try:
        return importance_summary(lw)
    except ValueError:
        from flowinfer.inference.evidence import ImportanceSummary

        return ImportanceSummary(-math.inf, math.inf, 0.0, 0.0, math.inf, lw.numel())
