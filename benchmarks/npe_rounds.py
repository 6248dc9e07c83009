"""Sequential NPE round by round: how good the posterior is after each round.

Runs ``fi.NPE(model, observed="x").fit(num_simulations=N, rounds=R, observation=x_o)`` on an
sbibm task (library defaults, seed 0) and, after every round, prints for the observation:

* ``ref_outside``: the share of the reference posterior draws outside the truncation region
  the next round will simulate from (where ``q / prior`` is above the threshold that keeps
  ``1 - 1e-4`` of ``q``'s mass); a region that cuts off true posterior mass loses it for
  good;
* ``prior_inside``: the share of the first round's prior draws inside that region, so the
  next round simulates ``1 / prior_inside`` times more densely there than the prior does
  (the most truncation can focus: near 1 means the later rounds are nearly prior draws);
* ``mean_log_q_ref``: the mean log density of the reference draws under ``q`` (higher is
  better; minus the cross-entropy, so it ranks estimators by KL from the true posterior);
* ``c2st``: sbibm's C2ST of 2,000 draws against 2,000 reference draws (noisier and higher
  than the 10,000-draw figure of ``benchmarks/sbi.py``), and that figure after the last round.

``--sequential atomic`` runs the rounds with ``q`` as the proposal and the atomic loss
(the region figures then describe the region TSNPE would use, for comparison).
``--continue-training`` restores the behaviour before the seventh session (each round kept
training the last round's networks, standardised on the first round) for comparison.

    python benchmarks/npe_rounds.py --task slcp --observation 1 [--continue-training]
        [--sequential atomic]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sbi import DATA, TASKS, c2st, load_observation  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.npe.options import round_budgets  # noqa: E402
from flowinfer.npe.sequential import region_score, region_threshold  # noqa: E402


def round_report(npe, x, reference: np.ndarray, subset: np.ndarray,
                 prior_draws: dict) -> dict:
    """The four per-round figures for ``npe``'s posterior at ``x``."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(12345)  # the report must not move the fit's random stream
        ref = {"theta": torch.as_tensor(reference, dtype=torch.float32)}
        threshold = region_threshold(npe, x)
        outside = region_score(npe, npe.info.to_unconstrained(ref), x) < threshold
        inside = region_score(npe, npe.info.to_unconstrained(prior_draws), x) >= threshold
        log_q = npe.log_prob(ref, x=x)
        draws = npe.sample(len(subset), x=x)["theta"].reshape(len(subset), -1)
    return {"ref_outside": float(outside.double().mean()),
            "prior_inside": float(inside.double().mean()),
            "mean_log_q_ref": float(log_q[torch.isfinite(log_q)].mean()),
            "c2st": c2st(draws.double().numpy(), subset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="slcp", choices=list(TASKS))
    parser.add_argument("--observation", type=int, default=1)
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--continue-training", action="store_true")
    parser.add_argument("--sequential", default="truncated", choices=["truncated", "atomic"])
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"sbibm data not found at {DATA}; nothing to do")
        return
    torch.set_num_threads(1)
    model, _ = TASKS[args.task]
    x, reference = load_observation(args.task, args.observation)
    subset = reference[np.random.default_rng(0).choice(len(reference), 2000, replace=False)]
    torch.manual_seed(0)
    npe = fi.NPE(model, observed="x", constant_data="keep")
    if args.continue_training:
        npe._restart = lambda: None
    train = npe._train

    def train_and_report(sims, options, seed, progress):
        result = train(sims, options, seed, progress)
        # The first round's simulations are prior draws, and later rounds append theirs.
        first = round_budgets(args.simulations, args.rounds)[0]
        prior_draws = {k: v[:first] for k, v in npe.simulations.latents.items()}
        row = {"round": len(npe.results), "simulations": len(sims),
               "epochs": len(result.history["train_loss"]),
               **round_report(npe, x, reference, subset, prior_draws)}
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in row.items()}), flush=True)
        return result

    npe._train = train_and_report
    npe.fit(num_simulations=args.simulations, rounds=args.rounds, observation=x, seed=0,
            sequential=args.sequential, progress=False)
    draws = npe.sample(10_000, x=x)["theta"].reshape(10_000, -1).double().numpy()
    print(f"{args.task} observation {args.observation}: C2ST (10,000 draws) "
          f"{c2st(draws, reference):.3f}, training {npe.timings['training']:.0f} s")


if __name__ == "__main__":
    main()
