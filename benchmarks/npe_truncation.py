"""Distinct draws of TSNPE's truncated prior, with and without the Metropolis chains.

After one round of NPE (1,000 simulations, seed 0) on sbibm tasks, draws 1000 parameters
from the prior truncated to the posterior's highest-density region
(:func:`flowinfer.npe.sequential.truncated_prior_draws`) for observation 1, once with the
importance resampling alone (``mcmc_steps=0``) and once with the default chains, and
prints how many draws are distinct and their sds next to the reference posterior's.

    python benchmarks/npe_truncation.py [--tasks gaussian_linear_uniform two_moons]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sbi import DATA, TASKS, load_observation  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.npe.sequential import MCMC_STEPS, truncated_prior_draws  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["gaussian_linear_uniform", "two_moons"],
                        choices=list(TASKS))
    parser.add_argument("--simulations", type=int, default=1000)
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
        x, reference = load_observation(task, 1)
        for steps in (0, MCMC_STEPS):
            draws = truncated_prior_draws(npe, x, 1000, seed=1, mcmc_steps=steps)["theta"]
            print(f"{task}, mcmc_steps={steps}: {torch.unique(draws, dim=0).shape[0]} distinct "
                  f"of 1000; sd {draws.std(0).numpy().round(2)} (reference posterior sd "
                  f"{reference.std(0).round(2)})", flush=True)


if __name__ == "__main__":
    main()
