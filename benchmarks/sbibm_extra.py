"""Five sbibm tasks beyond the four in ``../shared``, as Pyro models with reference draws.

After the definitions in Lueckmann et al. (2021), written so that their posterior can be drawn
here without stored reference files:

* ``gaussian_linear``: theta ~ N(0, 0.1 I_10), x ~ N(theta, 0.1 I_10); exact posterior
  N(x / 2, 0.05 I).
* ``gaussian_mixture``: theta ~ U(-10, 10)^2, x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I);
  exact posterior: the two Gaussians centred at x, truncated to the box, weighted by
  0.5 x their mass inside it.
* ``bernoulli_glm`` / ``bernoulli_glm_raw``: a logistic GLM of 100 time bins driven by a
  white-noise stimulus through a 9-lag filter plus a bias, with sbibm's smoothness prior;
  data the 10 sufficient statistics (``design.T @ y``) or the 100 raw spikes. Both have the
  same posterior, drawn with Pyro's NUTS (one chain, 1,000 warm-up steps; cached).
* ``slcp_distractors``: slcp's 8 data values beside 92 heavy-tailed uninformative columns
  (Student-t, 2 degrees of freedom, so their variance is infinite); its observations are
  slcp's ten from ``../shared`` with fresh distractor values, so slcp's reference draws
  there are exact.

Observation ``k`` of the other tasks is the model's draw under ``torch.manual_seed(1000 + k)``.
The file ``sbi.py`` beside this one is loaded under the name ``sbibm_tasks`` (as ``sbi`` it
would shadow the sbi package in ``npe_vs_sbi.py``).

References:
    Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference", AISTATS.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

HERE = Path(__file__).resolve().parent


def _load_sbibm_tasks():
    if "sbibm_tasks" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sbibm_tasks", HERE / "sbi.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["sbibm_tasks"] = module
        spec.loader.exec_module(module)
    return sys.modules["sbibm_tasks"]


sbibm_tasks = _load_sbibm_tasks()

_PRIOR_SCALE = 0.1 ** 0.5


def gaussian_linear():
    theta = pyro.sample("theta", dist.Normal(torch.zeros(10), _PRIOR_SCALE).to_event(1))
    pyro.sample("x", dist.Normal(theta, _PRIOR_SCALE).to_event(1))


def _gaussian_linear_reference(x, n, rng):
    return (x / 2 + 0.05 ** 0.5 * torch.randn(n, 10, generator=rng)).numpy()


class _GaussianMixtureNoise(dist.TorchDistribution):
    """0.5 N(loc, I) + 0.5 N(loc, 0.01 I), 2-d."""

    arg_constraints = {}
    support = dist.constraints.real_vector

    def __init__(self, loc):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:])

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        narrow = torch.rand(shape[:-1] + (1,)) < 0.5
        scale = torch.where(narrow, 0.1, 1.0)
        return self.loc.expand(shape) + scale * torch.randn(shape)

    def log_prob(self, value):
        wide = dist.Normal(self.loc, 1.0).log_prob(value).sum(-1)
        narrow = dist.Normal(self.loc, 0.1).log_prob(value).sum(-1)
        return torch.logaddexp(wide, narrow) - np.log(2.0)


def gaussian_mixture():
    theta = pyro.sample("theta", dist.Uniform(-10.0 * torch.ones(2), 10.0).to_event(1))
    pyro.sample("x", _GaussianMixtureNoise(theta))


def _gaussian_mixture_reference(x, n, rng):
    """Exact: each component N(x, s^2 I) truncated to the box, weight 0.5 x box mass."""
    x = x.double()
    scales = torch.tensor([1.0, 0.1], dtype=torch.double)
    normal = torch.distributions.Normal(0.0, 1.0)
    mass = torch.stack([(normal.cdf((10 - x) / s) - normal.cdf((-10 - x) / s)).prod()
                        for s in scales])
    which = torch.multinomial(mass / mass.sum(), n, replacement=True, generator=rng)
    out = torch.empty(n, 2, dtype=torch.double)
    for k, s in enumerate(scales):
        idx = (which == k).nonzero().squeeze(-1)
        kept = torch.empty(0, 2, dtype=torch.double)
        while len(kept) < len(idx):
            draw = x + s * torch.randn(4 * len(idx) + 10, 2, generator=rng, dtype=torch.double)
            kept = torch.cat([kept, draw[(draw.abs() < 10).all(-1)]])
        out[idx] = kept[: len(idx)]
    return out.numpy()


def _glm_design() -> torch.Tensor:
    """100 bins of white-noise stimulus (fixed seed), a bias column and lags 0-8."""
    stimulus = torch.randn(100, generator=torch.Generator().manual_seed(0))
    lags = torch.stack([torch.cat([torch.zeros(k), stimulus[: 100 - k]]) for k in range(9)], 1)
    return torch.cat([torch.ones(100, 1), lags], 1)


_DESIGN = _glm_design()


def _glm_prior() -> dist.MultivariateNormal:
    """sbibm's prior: N(0, 2) on the bias, a second-difference smoothness prior on the filter."""
    m = 9
    d = torch.eye(m) - torch.diag(torch.ones(m - 1), -1)
    f = d @ d + torch.diag(torch.arange(m) / m) ** 0.5
    precision = torch.zeros(m + 1, m + 1)
    precision[0, 0] = 0.5
    precision[1:, 1:] = f.T @ f
    return dist.MultivariateNormal(torch.zeros(m + 1), precision_matrix=precision)


def _glm_spikes():
    theta = pyro.sample("theta", _glm_prior())
    logits = (_DESIGN * theta.unsqueeze(-2)).sum(-1)
    return theta, pyro.sample("spikes", dist.Bernoulli(logits=logits).to_event(1))


def bernoulli_glm_raw():
    _glm_spikes()


def bernoulli_glm():
    with pyro.poutine.block(hide=["spikes"]):
        _, spikes = _glm_spikes()
    pyro.sample("x", dist.Delta(spikes @ _DESIGN, event_dim=1))


def _glm_reference(spikes, n, seed):
    def conditioned():
        theta = pyro.sample("theta", _glm_prior())
        pyro.sample("spikes", dist.Bernoulli(logits=_DESIGN @ theta).to_event(1), obs=spikes)

    pyro.set_rng_seed(seed)
    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(conditioned), num_samples=n, warmup_steps=1000,
                           disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()["theta"].double().numpy()


_DISTRACTORS = dist.StudentT(2.0, 3.0 * torch.randn(92, generator=torch.Generator()
                                                    .manual_seed(0)), 1.0).to_event(1)


def slcp_distractors():
    """slcp's data beside 92 uninformative heavy-tailed columns: the ideal score is slcp's."""
    sbibm_tasks.slcp()
    pyro.sample("noise", _DISTRACTORS)

#: name: (model, observed site(s)); every model's latent site is ``theta``
TASKS = {
    "gaussian_linear": (gaussian_linear, "x"),
    "gaussian_mixture": (gaussian_mixture, "x"),
    "bernoulli_glm": (bernoulli_glm, "x"),
    "bernoulli_glm_raw": (bernoulli_glm_raw, "spikes"),
    "slcp_distractors": (slcp_distractors, ["x", "noise"]),
}


def sbi_prior(task: str):
    """The task model's own prior on ``theta`` (a torch distribution, as sbi takes it)."""
    return pyro.poutine.trace(TASKS[task][0]).get_trace().nodes["theta"]["fn"]


def observation(task: str, k: int, n: int, reference_dir: Path):
    """``({observed site: value}, reference draws)`` for observation ``k``."""
    if task == "slcp_distractors":
        x, reference = sbibm_tasks.load_observation("slcp", k)
        with torch.random.fork_rng():
            torch.manual_seed(2000 + k)
            noise = _DISTRACTORS.sample()
        return {"x": x, "noise": noise}, reference[:n]
    rng = torch.Generator().manual_seed(1000 + k)
    with pyro.poutine.trace() as tr, torch.random.fork_rng():
        torch.manual_seed(1000 + k)
        TASKS[task][0]()
    site = TASKS[task][1]
    value = tr.trace.nodes[site]["value"]
    cache = reference_dir / f"{task}_{k}_{n}.npy"
    if task == "gaussian_linear":
        reference = _gaussian_linear_reference(value, n, rng)
    elif task == "gaussian_mixture":
        reference = _gaussian_mixture_reference(value, n, rng)
    elif cache.exists():
        reference = np.load(cache)
    else:
        spikes = tr.trace.nodes["spikes"]["value"] if "spikes" in tr.trace.nodes else None
        if spikes is None:  # bernoulli_glm hides its spikes: rerun the same draw unblocked
            with pyro.poutine.trace() as raw, torch.random.fork_rng():
                torch.manual_seed(1000 + k)
                _glm_spikes()
            spikes = raw.trace.nodes["spikes"]["value"]
        reference = _glm_reference(spikes, n, seed=k)
        np.save(cache, reference)
    return {site: value}, reference
