"""Held-out density of NPE reading bounded data unconstrained (default) or as simulated.

``fi.NPE(data_space="unconstrained")`` reads an observed site with a bounded continuous
support through ``biject_to(support).inv`` (the log of positive data); ``"raw"`` z-scores the
data as simulated. The posterior given the data is the same either way, so the expected
held-out ``-log q(theta | x)`` (``npe_heldout.py``'s score: the expected KL divergence from
the posterior up to a constant) compares the two on the same 20,000 fresh pairs.

Models (in no other benchmark): Lotka-Volterra as sbibm defines it (log-normal prior on the
four rates, predator and prey counts from the ODE, classical RK4 with step 0.05, read at
t = 2, 4, ..., 20 with log-normal noise of sd 0.1: 20 positive data spanning orders of
magnitude), and an exponential decay measured at 12 times with gamma noise of shape 4.

    python benchmarks/npe_data_space.py --models lotka_volterra decay --budgets 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from npe_heldout import capped, heldout_nll, paired  # noqa: E402

import flowinfer as fi  # noqa: E402

LV_PRIOR_LOC = torch.tensor([-0.125, -3.0, -0.125, -3.0])


def lotka_volterra_counts(theta: torch.Tensor, t_end: float = 20.0, dt: float = 0.05,
                          every: int = 40) -> torch.Tensor:
    """Prey and predator counts ``(..., 20)`` at t = 2, 4, ..., 20 from (30, 1) (RK4)."""
    a, b, g, d = theta.double().unbind(-1)
    prey, pred = torch.full_like(a, 30.0), torch.ones_like(a)

    def rates(x, y):
        return a * x - b * x * y, d * x * y - g * y

    out = []
    for step in range(1, round(t_end / dt) + 1):
        k1 = rates(prey, pred)
        k2 = rates(prey + 0.5 * dt * k1[0], pred + 0.5 * dt * k1[1])
        k3 = rates(prey + 0.5 * dt * k2[0], pred + 0.5 * dt * k2[1])
        k4 = rates(prey + dt * k3[0], pred + dt * k3[1])
        # Clamped: a stiff draw must not overflow to inf or fall to a non-positive count.
        prey = (prey + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])).clamp(1e-6, 1e6)
        pred = (pred + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])).clamp(1e-6, 1e6)
        if step % every == 0:
            out.append(torch.stack([prey, pred], -1))
    return torch.stack(out, -2).reshape(*a.shape, -1).to(theta.dtype)


def lotka_volterra():
    theta = pyro.sample("theta", dist.LogNormal(LV_PRIOR_LOC, 0.5).to_event(1))
    pyro.sample("x", dist.LogNormal(lotka_volterra_counts(theta).log(), 0.1).to_event(1))


DECAY_TIMES = torch.linspace(0.5, 10.0, 12)


def decay():
    rate = pyro.sample("rate", dist.LogNormal(-1.0, 0.7))
    amount = pyro.sample("amount", dist.LogNormal(2.0, 1.0))
    mean = amount[..., None] * torch.exp(-rate[..., None] * DECAY_TIMES)
    pyro.sample("x", dist.Gamma(4.0, 4.0 / mean).to_event(1))


MODELS = {"lotka_volterra": lotka_volterra, "decay": decay}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--test-size", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        model = MODELS[name]
        for budget in args.budgets:
            for seed in args.seeds:
                sims = fi.simulate(model, "x", budget, seed=seed, progress=False)
                test = fi.simulate(model, "x", args.test_size, seed=10_000 + seed,
                                   progress=False)
                base = None
                for space in ("raw", "unconstrained"):
                    torch.manual_seed(seed)
                    npe = fi.NPE(model, observed="x", data_space=space)
                    start = time.perf_counter()
                    npe.fit(simulations=sims, seed=seed, progress=False)
                    seconds = time.perf_counter() - start
                    nll = capped(heldout_nll(npe, test))
                    base = nll if base is None else base
                    print(json.dumps({"model": name, "budget": budget, "seed": seed,
                                      "data_space": space,
                                      **{k: round(v, 3) for k, v in paired(nll, base).items()},
                                      "train_s": round(seconds)}), flush=True)


if __name__ == "__main__":
    main()
