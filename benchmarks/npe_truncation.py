"""TSNPE's truncated prior after one round: its draws, and which region to truncate to.

After one round of NPE (1,000 simulations, seed 0) on sbibm tasks, draws 1000 parameters
from the prior truncated to the region holding ``1 - 1e-4`` of the posterior estimate
(:func:`flowinfer.npe.sequential.truncated_prior_draws`) for observation 1, once with the
importance resampling alone (``mcmc_steps=0``) and once with the default chains, and
prints how many draws are distinct and their sds next to the reference posterior's.

``--regions`` compares two regions on observations 1-3 instead: the library's (where
``q / prior`` is above its threshold) and the highest-density region of ``q`` in the
unconstrained space (the library's choice before the ninth session). For each it prints
the share of the round's prior draws inside (how much of the prior the next round still
simulates from) and the share of the reference posterior draws outside (posterior mass the
later rounds cannot see; ``1e-4`` if ``q`` were exact); on gaussian_linear_uniform also the
prior share inside the exact posterior's region.

``--inside`` simulates 200 pairs of the next round for observations 1-3 instead
(:func:`flowinfer.npe.sequential.simulate_round`) and prints the region's prior mass and
the median share of those pairs' posteriors inside it (``npe.truncation_inside``): low
means most of the next round's pairs teach posteriors cut by the region.

    python benchmarks/npe_truncation.py [--tasks gaussian_linear_uniform two_moons]
        [--regions | --inside]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sbi import DATA, TASKS, load_observation  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.npe.sequential import (  # noqa: E402
    EPSILON,
    MCMC_STEPS,
    region_score,
    simulate_round,
    truncated_prior_draws,
)


@torch.no_grad()
def compare_regions(npe, task: str) -> None:
    """Prior share inside and reference mass outside, for both regions, observations 1-3."""
    prior = npe.info.to_unconstrained(npe.simulations.latents)
    for observation in (1, 2, 3):
        x, reference = load_observation(task, observation)
        ref = npe.info.to_unconstrained({"theta": torch.as_tensor(reference,
                                                                   dtype=torch.float32)})
        torch.manual_seed(observation)
        probe = npe.sample_unconstrained(100_000, x)
        row = []
        for name, score in (("ratio", lambda u, x=x: region_score(npe, u, x)),
                            ("hdr_u", lambda u, x=x: npe.log_prob_unconstrained(u, x))):
            threshold = torch.quantile(score(probe).double(), EPSILON)
            inside = (score(prior).double() >= threshold).double().mean()
            outside = (score(ref).double() < threshold).double().mean()
            row.append(f"{name}: prior inside {float(inside):.3f}, reference outside "
                       f"{float(outside):.4f}")
        if task == "gaussian_linear_uniform":
            row.append(f"exact posterior's region: prior inside {glu_exact_share(x):.3f}")
        print(f"{task} observation {observation}: " + "; ".join(row), flush=True)


def next_round_inside(npe, task: str) -> None:
    """The next round's region (prior mass) and its pairs' posteriors inside it."""
    for observation in (1, 2, 3):
        x, _ = load_observation(task, observation)
        npe.truncation_inside = None  # measured for each observation, after round 1
        simulate_round(npe, x, 200, {"seed": observation, "progress": False})
        print(f"{task} observation {observation}: region prior mass "
              f"{npe.truncation[-1]:.3f}, median share of the next round's pairs' "
              f"posteriors inside it {npe.truncation_inside:.3f}", flush=True)


def glu_exact_share(x, draws: int = 2_000_000) -> float:
    """The prior share inside gaussian_linear_uniform's exact region: its posterior is a
    product of normals N(x_i, 0.1) truncated to [-1, 1], so the ratio to the uniform prior
    is a function of ``|theta - x|`` and the region a ball around ``x`` within the box."""
    from scipy.stats import truncnorm

    x = np.asarray(x, dtype=float).reshape(-1)
    sd, rng = np.sqrt(0.1), np.random.default_rng(0)
    theta = truncnorm.rvs((-1 - x) / sd, (1 - x) / sd, loc=x, scale=sd,
                          size=(draws, x.size), random_state=rng)
    radius2 = np.quantile(((theta - x) ** 2).sum(1), 1 - EPSILON)
    prior = rng.uniform(-1.0, 1.0, size=(draws, x.size))
    return float((((prior - x) ** 2).sum(1) <= radius2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["gaussian_linear_uniform", "two_moons"],
                        choices=list(TASKS))
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--regions", action="store_true")
    parser.add_argument("--inside", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"sbibm data not found at {DATA}; nothing to do")
        return
    torch.set_num_threads(1)
    for task in args.tasks:
        model, _ = TASKS[task]
        torch.manual_seed(0)
        npe = fi.NPE(model, observed="x", constant_data="keep")
        npe.fit(num_simulations=args.simulations, seed=0, progress=False)
        if args.regions:
            compare_regions(npe, task)
            continue
        if args.inside:
            next_round_inside(npe, task)
            continue
        x, reference = load_observation(task, 1)
        for steps in (0, MCMC_STEPS):
            draws = truncated_prior_draws(npe, x, 1000, seed=1, mcmc_steps=steps)["theta"]
            print(f"{task}, mcmc_steps={steps}: {torch.unique(draws, dim=0).shape[0]} distinct "
                  f"of 1000; sd {draws.std(0).numpy().round(2)} (reference posterior sd "
                  f"{reference.std(0).round(2)})", flush=True)


if __name__ == "__main__":
    main()
