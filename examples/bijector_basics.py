"""Bijectors from the ground up: shift, scale, a chain, a permutation, change of variables.

A walk through the elementary bijectors with the transforms torch and Pyro already provide
(``AffineTransform``, ``ComposeTransform``, ``Permute``, ``PowerTransform``), as in the classic
TensorFlow Probability bijector tutorial:

1. a shift, a scale, their chain and a permutation applied to a grid of 2-D points;
2. a transformed distribution (a chain applied to N(0, I)): its samples and its density on a
   grid, computed with the change-of-variables formula by ``log_prob``;
3. the change-of-variables check in 1-D: ``z ~ Uniform(0, 2)``, ``x = z**2`` has density
   ``p(x) = 1 / (4 sqrt(x))`` on (0, 4); ``TransformedDistribution.log_prob`` must agree with
   it, and a histogram of transformed samples must agree with both (within 4 standard errors
   per bin).
4. the same with a flowinfer flow: a ``Flow`` built from those transforms is a Pyro
   distribution.

Writes ``bijectors.png``, ``transformed_density.png`` and ``change_of_variables.png`` to
``--out`` (default ``out/examples/bijector_basics``). Runs in seconds.

Run:
    python examples/bijector_basics.py
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pyro.distributions as dist
import torch
from matplotlib.figure import Figure
from pyro.distributions.transforms import Permute
from torch.distributions.transforms import AffineTransform, ComposeTransform, PowerTransform

import flowinfer as fi
from flowinfer.plotting import plot_density


def bijector_panels(out: Path) -> None:
    g = torch.linspace(-1, 1, 11)
    grid = torch.cartesian_prod(g, g)
    colour = grid[:, 0] + 2 * grid[:, 1]
    shift = AffineTransform(loc=torch.tensor([2.0, 1.0]), scale=1.0, event_dim=1)
    scale = AffineTransform(loc=0.0, scale=torch.tensor([2.0, 0.75]), event_dim=1)
    chain = ComposeTransform([scale, shift])  # scale first, then shift
    permute = Permute(torch.tensor([1, 0]))
    panels = [("input", grid), ("shift by (2, 1)", shift(grid)),
              ("scale by (2, 0.75)", scale(grid)), ("chain: scale, then shift", chain(grid)),
              ("permute (swap axes)", permute(scale(grid)))]
    fig = Figure(figsize=(13, 2.9), layout="constrained")
    for i, (title, points) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.scatter(points[:, 0], points[:, 1], c=colour, cmap="viridis", s=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-3, 4)
        ax.set_ylim(-3, 4)
        ax.set_aspect("equal")
    fig.savefig(out / "bijectors.png", dpi=90)
    # Every bijector inverts exactly, and its log|det J| is what the matrix says.
    for name, t in [("shift", shift), ("scale", scale), ("chain", chain), ("permute", permute)]:
        y = t(grid)
        err = float((t.inv(y) - grid).abs().max())
        ladj = t.log_abs_det_jacobian(grid, y)
        print(f"{name:8s} max |inv(f(x)) - x| = {err:.1e}, log|det J| = {float(ladj[0]):+.4f}")
    print(f"expected for the scale and the chain: log(2 * 0.75) = {math.log(1.5):+.4f}")


def transformed_density(out: Path) -> None:
    shift = AffineTransform(loc=torch.tensor([1.0, -1.0]), scale=1.0, event_dim=1)
    scale = AffineTransform(loc=0.0, scale=torch.tensor([1.5, 0.5]), event_dim=1)
    permute = Permute(torch.tensor([1, 0]))
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    # The same chain as a Pyro distribution and as a flowinfer Flow (static transforms).
    d = dist.TransformedDistribution(base, [scale, permute, shift])
    flow = fi.Flow([scale, permute, shift], dim=2)
    x = d.sample((2000,))
    gap = float((d.log_prob(x) - flow.log_prob(x)).abs().max())
    print(f"TransformedDistribution vs Flow log_prob: max difference {gap:.1e}")
    # Analytic: x = permute(scale * z) + shift is N((1, -1), diag(0.5^2, 1.5^2)).
    exact = dist.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.5])).to_event(1)
    print(f"vs the analytic Gaussian: max difference "
          f"{float((d.log_prob(x) - exact.log_prob(x)).abs().max()):.1e}")
    fig = Figure(figsize=(8.5, 4), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    ax.set_xlim(-4, 4)
    ax.set_ylim(-5, 3)
    ax.set_title("samples")
    plot_density(flow, bounds=((-4, 4), (-5, 3)), ax=fig.add_subplot(1, 2, 2))
    fig.savefig(out / "transformed_density.png", dpi=90)


def change_of_variables(out: Path, n: int, bins: int) -> float:
    z_dist = dist.Uniform(0.0, 2.0)
    x_dist = dist.TransformedDistribution(z_dist, [PowerTransform(2.0)])
    x = x_dist.sample((n,))
    xs = torch.linspace(0.01, 3.99, 400)
    analytic = 1 / (4 * torch.sqrt(xs))
    by_pyro = x_dist.log_prob(xs).exp()
    print(f"change of variables: max |pyro - analytic| = "
          f"{float((by_pyro - analytic).abs().max()):.1e}")
    # Histogram: bin probability from the CDF, P(a < x < b) = (sqrt(b) - sqrt(a)) / 2, and
    # a count's standard error sqrt(n p (1 - p)).
    edges = torch.linspace(0, 4, bins + 1)
    counts = torch.histc(x, bins=bins, min=0, max=4)
    p = (edges[1:].sqrt() - edges[:-1].sqrt()) / 2
    z_scores = (counts - n * p) / torch.sqrt(n * p * (1 - p))
    worst = float(z_scores.abs().max())
    print(f"histogram vs exact bin probabilities: largest |z| = {worst:.2f} over {bins} bins")
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    width = 4 / bins
    ax.bar(((edges[1:] + edges[:-1]) / 2).numpy(), (counts / (n * width)).numpy(),
           width=width, alpha=0.5, label=f"histogram of {n} samples of z**2")
    ax.plot(xs.numpy(), analytic.numpy(), "k-", label="1 / (4 sqrt(x))")
    ax.plot(xs.numpy(), by_pyro.numpy(), "r--", label="TransformedDistribution")
    ax.set_ylim(0, 2)
    ax.set_xlabel("x")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("z ~ Uniform(0, 2), x = z**2")
    fig.savefig(out / "change_of_variables.png", dpi=90)
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/examples/bijector_basics"))
    parser.add_argument("--n", type=int, default=100000, help="samples for the histogram")
    parser.add_argument("--bins", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    bijector_panels(args.out)
    transformed_density(args.out)
    change_of_variables(args.out, args.n, args.bins)
    print(f"figures in {args.out.resolve()}")


if __name__ == "__main__":
    main()
