"""Eight schools with a flow guide: fit, diagnose, ArviZ summary and plot, then NeuTra HMC.

The non-centred eight-schools model (Rubin 1981; Gelman et al., BDA3 section 5.5) has a
funnel between ``tau`` and the school effects that a Gaussian guide cannot follow. This
script fits ``fi.AutoFlow`` and ``AutoNormal`` with the same optimizer and budget, prints
each one's diagnostics (ELBO, log-evidence estimate, PSIS k-hat, importance ESS), turns the
flow guide into an ArviZ ``InferenceData`` (summary table and posterior plot), and finally
runs NUTS in the flow's preconditioned space (``fi.neutra_mcmc``) and prints R-hat and ESS.

Run:  python examples/eight_schools_flow_guide.py [--steps 2000] [--out out/eight_schools]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import flowinfer as fi
from flowinfer.train.optim import progress

# The classic data: estimated coaching effects and their standard errors.
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def model(y: torch.Tensor, sigma: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", y.shape[0]):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def fit(guide, steps: int, show: bool | None) -> float:
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.1 ** (1 / steps)}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))
    start = time.perf_counter()
    for _ in progress(range(steps), show, desc=type(guide).__name__):
        svi.step(Y, SIGMA)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--flow", default="iaf", help="a name from fi.available_flows()")
    parser.add_argument("--num-samples", type=int, default=4000, help="draws for diagnostics")
    parser.add_argument("--neutra-samples", type=int, default=300, help="NUTS draws per chain")
    parser.add_argument("--neutra-warmup", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/eight_schools"))
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    a = parser.parse_args(argv)
    if a.steps < 1 or a.num_samples < 10:
        parser.error("--steps must be >= 1 and --num-samples >= 10")
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a.out.mkdir(parents=True, exist_ok=True)

    # 1. Fit a Gaussian baseline and the flow guide with the same budget.
    reports = {}
    for name, make in [("AutoNormal", lambda: AutoNormal(model)),
                       (f"fi.AutoFlow({a.flow!r})", lambda: fi.AutoFlow(model, flow=a.flow))]:
        pyro.clear_param_store()
        pyro.set_rng_seed(a.seed)
        guide = make()
        seconds = fit(guide, a.steps, a.progress)
        # 2. Diagnose: how good is each fit?
        reports[name] = fi.diagnose(model, guide, Y, SIGMA, num_samples=a.num_samples)
        print(f"== {name}: {a.steps} steps in {seconds:.1f} s\n{reports[name]}\n")

    # 3. ArviZ: the flow guide's draws (guide is the flow guide, fitted last).
    idata = fi.to_inference_data(model, guide, Y, SIGMA, num_samples=a.num_samples)
    print(az.summary(idata, var_names=["mu", "tau", "theta"], kind="stats"))
    az.plot_posterior(idata, var_names=["mu", "tau"], figsize=(8, 3))
    plt.tight_layout()
    plt.savefig(a.out / "posterior.png", dpi=80)
    plt.close("all")
    print(f"wrote {a.out / 'posterior.png'}")

    # 4. NeuTra: NUTS in the flow's base space, with R-hat and ESS from ArviZ.
    start = time.perf_counter()
    mcmc_data = fi.neutra_mcmc(model, guide, Y, SIGMA, num_samples=a.neutra_samples,
                               warmup=a.neutra_warmup, num_chains=2, progress=a.progress)
    print(f"\n== NeuTra NUTS: 2 chains x {a.neutra_samples} draws "
          f"({a.neutra_warmup} warm-up) in {time.perf_counter() - start:.1f} s, "
          f"{mcmc_data.attrs['num_divergences']} divergent transitions")
    print(az.summary(mcmc_data, var_names=["mu", "tau"]))


if __name__ == "__main__":
    main()
