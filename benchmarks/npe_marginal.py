"""A marginal posterior with nuisances integrated out, against the exact one, by budget.

The model of ``tests/npe/test_npe_nuisance.py``: mu ~ N(0, 2^2), six group effects
eta_g ~ N(mu, 1) in a plate (nuisances: ``fi.NPE(..., latents="mu")``), four trials per
group y_gn ~ N(eta_g, 0.5^2), so 24-d data and one latent. The exact posterior of mu is
Gaussian (each group mean is N(mu, 1 + 0.5^2 / 4)). For each budget the script prints the
epoch of the best validation loss and the last epoch (a best epoch early in a long run is
overfitting), the validation loss against its ideal value (the exact posterior's entropy in
the standardised space, an estimate: the standardiser's sd of mu is the simulations'), and
for two data sets the NPE posterior's mean and sd against the exact ones.

    python benchmarks/npe_marginal.py --budgets 5000 20000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "npe"))

from test_npe_nuisance import (  # noqa: E402
    GROUPS,
    PER_GROUP,
    exact_mu_posterior,
    hierarchical,
    simulated_groups,
)

import flowinfer as fi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[5000, 20_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for budget in args.budgets:
        torch.manual_seed(args.seed)
        npe = fi.NPE(hierarchical, "y", latents="mu")
        npe.fit(num_simulations=budget, seed=args.seed, progress=False,
                weight_decay=args.weight_decay)
        result = npe.results[-1]
        val = result.history["val_loss"]
        best = min(range(len(val)), key=val.__getitem__)
        _, sd = exact_mu_posterior(torch.zeros(PER_GROUP, GROUPS))
        # The exact posterior's entropy in the flow's space: log sd plus log|dz/dmu|.
        ideal = (0.5 * math.log(2 * math.pi * math.e) + math.log(sd)
                 + float(npe.scaling.log_abs_det()))
        print(f"{budget} simulations ({npe.selection['chosen']}): best validation loss "
              f"{val[best]:.3f} at epoch {best + 1} of {len(val)}; ideal {ideal:.3f}")
        g = torch.Generator().manual_seed(3)
        for mu in (-1.0, 2.5):
            y = simulated_groups(mu, g)
            mean, sd = exact_mu_posterior(y)
            draws = npe.sample(4000, x=y)["mu"]
            print(f"  mu {mu:+.1f}: NPE mean {float(draws.mean()):.3f} sd "
                  f"{float(draws.std()):.3f}; exact mean {mean:.3f} sd {sd:.3f} "
                  f"(error {(float(draws.mean()) - mean) / sd:+.2f} sd, sd ratio "
                  f"{float(draws.std()) / sd:.2f})", flush=True)


if __name__ == "__main__":
    main()
