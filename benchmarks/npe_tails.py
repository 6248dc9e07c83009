"""NPE on the conjugate Gaussian of tests/npe: tails and moments of the fitted posterior.

Fits ``fi.NPE`` to the 2-D conjugate Gaussian model of ``tests/npe/npe_models.py`` and, for
two observations, compares 100,000 posterior draws with the exact posterior: mean error in
posterior sds, variance ratio, kurtosis (3 for the exact Gaussian), the largest |z|, and the
spread of the variance ratio over 20 sets of 1000 draws (what the slow test checks).

    python benchmarks/npe_tails.py --simulations 20000              # the NPE default flow
    python benchmarks/npe_tails.py --simulations 20000 --final-affine
    python benchmarks/npe_tails.py --simulations 20000 --flow maf
    python benchmarks/npe_tails.py --simulations 10000 --standardize regression --lr 1e-3 \
        --patience 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import flowinfer as fi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "npe"))
from npe_models import exact_posterior, gaussian_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=20_000)
    parser.add_argument("--flow", default="nsf")
    parser.add_argument("--final-affine", action="store_true")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--standardize", default="prior", choices=["prior", "regression"])
    args = parser.parse_args()
    options = {"final_affine": True} if args.final_affine else {}
    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, observed="x", flow=args.flow, flow_options=options,
                 standardize=args.standardize)
    start = time.perf_counter()
    npe.fit(num_simulations=args.simulations, seed=0, lr=args.lr, patience=args.patience,
            progress=False)
    print(f"{args.flow} final_affine={args.final_affine} standardize={args.standardize}: "
          f"fit {time.perf_counter() - start:.1f} s")
    g = torch.Generator().manual_seed(7)
    for theta in (torch.tensor([0.3, -0.5]), torch.tensor([1.5, -2.5])):
        x = theta + 0.8 * torch.randn(4, 2, generator=g)
        mean, cov = exact_posterior(x)
        torch.manual_seed(0)
        draws = npe.sample(100_000, x=x)["theta"].double()
        sd = cov.diagonal().sqrt()
        z = (draws - mean) / sd
        kurtosis = (z - z.mean(0)).pow(4).mean(0) / z.var(0) ** 2
        ratios = torch.stack([draws[i * 1000:(i + 1) * 1000].var(0) / cov.diagonal()
                              for i in range(20)])
        print(f"  mean err/sd {((draws.mean(0) - mean) / sd).numpy().round(3)}"
              f"  var ratio {(draws.var(0) / cov.diagonal()).numpy().round(3)}"
              f"  kurtosis {kurtosis.numpy().round(2)}"
              f"  max|z| {z.abs().max(0).values.numpy().round(1)}"
              f"  1000-draw var ratio {ratios.min(0).values.numpy().round(2)}"
              f"..{ratios.max(0).values.numpy().round(2)}")


if __name__ == "__main__":
    main()
