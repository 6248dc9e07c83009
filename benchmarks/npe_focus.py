"""Does focusing the simulations on an observation help NPE? A check with exact posteriors.

Truncated sequential NPE draws later rounds' parameters from the prior restricted to a region
``R`` holding ``1 - 1e-4`` of the posterior at ``x_o``; with the plain likelihood loss the
estimator then learns ``p(theta | x) 1_R(theta) / P(R | x)`` at every simulated ``x``, which
equals the posterior at ``x_o`` but is *cut by R* wherever ``x``'s own posterior reaches past
R's edge. This script separates that effect from everything else in the rounds: for a model
with a closed-form posterior it computes the exact region (where ``p(theta | x_o) / p(theta)``
is above its ``1e-4`` posterior quantile) and trains the default NPE (seed 0) once on ``N``
prior simulations and once on ``N / 10`` prior simulations plus ``0.9 N`` from the prior
truncated to the exact region (what ideal rounds would give), for each of ``--seeds``
(fresh simulations and initial weights; the observation and region stay), then prints:

* ``kl``: ``KL(p(. | x_o) || q(. | x_o))`` in nats (10,000 exact posterior draws, with its
  standard error): lower is better;
* ``prior_mass``: the region's prior mass (how much denser the focused pairs lie);
* the mean over seeds of each setting's KL and of the paired difference (focused minus
  prior) with its standard error over seeds: a single run's KL varies by about 0.1 nats
  with the simulations and initial weights;
* ``posterior_inside``: quantiles (10/50/90%) over focused pairs of the share of *their own*
  posterior ``p(theta | x_i)`` inside R (1 means the pair teaches an uncut posterior).

Models: ``gaussian_linear_uniform`` (sbibm's, uniform prior on [-1, 1]^10, noise variance
0.1; ``x_o`` is sbibm's observation when ``../shared/data/sbibm`` is there) and ``gaussian``
(``N(0, I_d)`` prior, ``--dim d``, noise sd ``--noise``, by default the same as sbibm's;
``x_o`` drawn from the model).

    python benchmarks/npe_focus.py --model gaussian_linear_uniform --observation 8
    python benchmarks/npe_focus.py --model gaussian --dim 2 [--noise 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
from sbi import DATA, load_observation  # noqa: E402

import flowinfer as fi  # noqa: E402

NOISE_SD = math.sqrt(0.1)
EPSILON = 1e-4


class GaussianLinearUniform:
    """sbibm's gaussian_linear_uniform: its posterior is a product of truncated normals."""

    noise = NOISE_SD

    def __init__(self, dim: int = 10) -> None:
        self.dim = dim

    def model(self):
        low, high = -torch.ones(self.dim), torch.ones(self.dim)
        theta = pyro.sample("theta", dist.Uniform(low, high).to_event(1))
        pyro.sample("x", dist.Normal(theta, NOISE_SD).to_event(1))

    def prior(self, n, rng):
        return rng.uniform(-1.0, 1.0, size=(n, self.dim))

    def _bounds(self, x):
        return (-1 - x) / NOISE_SD, (1 - x) / NOISE_SD

    def posterior(self, x, n, rng):
        from scipy.stats import truncnorm

        return truncnorm.rvs(*self._bounds(x), loc=x, scale=NOISE_SD, size=(n, self.dim),
                             random_state=rng)

    def log_posterior(self, theta, x):
        from scipy.stats import truncnorm

        return truncnorm.logpdf(theta, *self._bounds(x), loc=x, scale=NOISE_SD).sum(1)


class Gaussian:
    """``theta ~ N(0, I_d)``, ``x ~ N(theta, 0.1 I_d)``: the posterior is normal."""

    def __init__(self, dim: int, noise: float = NOISE_SD) -> None:
        self.dim, self.noise = dim, noise
        self.shrink = 1.0 / (1.0 + noise**2)
        self.sd = math.sqrt(noise**2 * self.shrink)

    def model(self):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(self.dim), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(theta, self.noise).to_event(1))

    def prior(self, n, rng):
        return rng.standard_normal((n, self.dim))

    def posterior(self, x, n, rng):
        return self.shrink * x + self.sd * rng.standard_normal((n, self.dim))

    def log_posterior(self, theta, x):
        z = (theta - self.shrink * x) / self.sd
        return (-0.5 * z**2 - math.log(self.sd) - 0.5 * math.log(2 * math.pi)).sum(1)


def exact_region(task, x_o, rng):
    """The squared radius of the exact region: ``p(theta | x_o) / p(theta)`` is the
    likelihood, a function of ``|theta - x_o|``, so the region is a ball around ``x_o``."""
    post = task.posterior(x_o, 1_000_000, rng)
    return float(np.quantile(((post - x_o) ** 2).sum(1), 1 - EPSILON))


def truncated_prior(task, x_o, radius2, n, rng):
    """``n`` prior draws inside the ball (rejection), and the ball's prior mass."""
    kept, tried = [], 0
    while sum(len(k) for k in kept) < n:
        draws = task.prior(500_000, rng)
        tried += len(draws)
        kept.append(draws[((draws - x_o) ** 2).sum(1) <= radius2])
    inside = sum(len(k) for k in kept)
    return np.concatenate(kept)[:n], inside / tried


def posterior_inside(task, theta, x_o, radius2, rng, pairs=300, draws=1000):
    """Share of each focused pair's own posterior inside the region, for ``pairs`` pairs."""
    x = theta[:pairs] + task.noise * rng.standard_normal(theta[:pairs].shape)
    shares = [float((((task.posterior(xi, draws, rng) - x_o) ** 2).sum(1) <= radius2).mean())
              for xi in x]
    return np.quantile(shares, [0.1, 0.5, 0.9])


def kl_at(npe, task, x_o, rng):
    post = task.posterior(x_o, 10_000, rng)
    with torch.no_grad():
        log_q = npe.log_prob({"theta": torch.as_tensor(post, dtype=torch.float32)},
                             x=torch.as_tensor(x_o, dtype=torch.float32)).double().numpy()
    diff = task.log_posterior(post, x_o) - log_q
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def fit(task, theta, rng, seed=0):
    x = theta + task.noise * rng.standard_normal(theta.shape)
    torch.manual_seed(seed)
    npe = fi.NPE(task.model, observed="x", constant_data="keep")
    start = time.perf_counter()
    npe.fit(simulations={"theta": torch.as_tensor(theta, dtype=torch.float32),
                         "x": torch.as_tensor(x, dtype=torch.float32)},
            seed=seed, progress=False)
    return npe, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gaussian_linear_uniform",
                        choices=["gaussian_linear_uniform", "gaussian"])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--noise", type=float, default=NOISE_SD)
    parser.add_argument("--observation", type=int, default=1)
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    if args.model == "gaussian":
        task = Gaussian(args.dim, args.noise)
        x_o = task.prior(1, rng)[0] + task.noise * rng.standard_normal(args.dim)
        label = f"gaussian, dim {args.dim}, noise sd {args.noise:.3g}"
    else:
        task = GaussianLinearUniform()
        if DATA.is_dir():
            x_o = load_observation(args.model, args.observation)[0].double().numpy()
            label = f"gaussian_linear_uniform, observation {args.observation}"
        else:
            x_o = task.prior(1, rng)[0] + NOISE_SD * rng.standard_normal(task.dim)
            label = "gaussian_linear_uniform, x_o drawn from the model (no sbibm data)"
    n = args.simulations
    radius2 = exact_region(task, x_o, rng)
    focused, mass = truncated_prior(task, x_o, radius2, n - n // 10, rng)
    inside = posterior_inside(task, focused, x_o, radius2, rng)
    print(f"{label}: region prior mass {mass:.4f}, focused pairs' posterior inside the "
          f"region (10/50/90%) {np.round(inside, 3).tolist()}", flush=True)
    kls = {"prior": [], "focused": []}
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        focused, _ = truncated_prior(task, x_o, radius2, n - n // 10, rng)
        for name, theta in [("prior", task.prior(n, rng)),
                            ("focused", np.concatenate([task.prior(n // 10, rng), focused]))]:
            npe, seconds = fit(task, theta, rng, seed)
            kl, se = kl_at(npe, task, x_o, rng)
            kls[name].append(kl)
            print(json.dumps({"model": label, "seed": seed, "simulations": name, "n": n,
                              "kl": round(kl, 4), "kl_se": round(se, 4),
                              "train_s": round(seconds)}), flush=True)
    diff = np.subtract(kls["focused"], kls["prior"])
    spread = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    print(f"{label}, {n} simulations, seeds {args.seeds}: KL prior {np.mean(kls['prior']):.3f}, "
          f"focused {np.mean(kls['focused']):.3f}, focused - prior {diff.mean():+.3f} "
          f"(se {spread:.3f})", flush=True)


if __name__ == "__main__":
    main()
