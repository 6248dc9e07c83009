"""Targets: stated log Z against brute-force quadrature, exact samplers, mode coverage, errors.

Quadrature tolerance: the midpoint rule on an n x n grid of the box has error about
h^2 / 24 * integral |laplacian p~|; with h = 8 / 2000 and the narrowest component
(sd 0.35, so |f''| / f ~ 1 / 0.35^2) this is below 1e-5 relative, so 1e-4 in log Z leaves a
margin of ten. Sampler checks compare Monte Carlo means with a few standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import flowinfer as fi
from flowinfer.data.targets import (
    Banana,
    Funnel,
    GaussianMixture,
    RezendeEnergy,
    available_targets,
    energy,
    gmm40,
    make_target,
    ring_of_gaussians,
)


def midpoint_log_z(target: RezendeEnergy, n: int = 2000) -> float:
    h = 2 * target.box / n
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) * h - target.box
    points = torch.cartesian_prod(grid, grid)
    return float(torch.logsumexp(target.log_prob(points), 0)) + 2 * math.log(h)


@pytest.mark.parametrize("kind", ["U1", "U2", "U3", "U4"])
def test_energy_log_z_matches_brute_force_quadrature(kind):
    target = energy(kind)
    assert target.log_z == pytest.approx(midpoint_log_z(target), abs=1e-4)


def test_u2_log_z_has_its_closed_form():
    # z2 - w1(z1) ~ N(0, 0.4^2) for every z1, and the box cuts 7.5 sd from the mean at worst.
    assert energy("U2").log_z == pytest.approx(math.log(8 * 0.4 * math.sqrt(2 * math.pi)),
                                               abs=1e-9)


def test_energy_is_zero_outside_the_box_and_follows_dtype():
    target = energy("U3", box=3.0)
    x = torch.tensor([[0.0, 0.0], [3.5, 0.0], [0.0, -3.01]], dtype=torch.float64)
    out = target.log_prob(x)
    assert out.dtype == torch.float64
    assert torch.isfinite(out[0]) and torch.isneginf(out[1:]).all()


@pytest.mark.parametrize("kind", ["U1", "U4"])
def test_energy_rejection_sampler_matches_the_density(kind):
    # The share of exact draws in the half plane z1 > 1 equals that region's mass, computed
    # by quadrature; binomial sd with 20000 draws is at most 0.0035, so 0.015 is ~4 sd.
    target = energy(kind)
    x = target.sample(20000, seed=0)
    assert x.shape == (20000, 2) and (x.abs() <= 4).all()
    n = 1000
    h = 8 / n
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) * h - 4
    points = torch.cartesian_prod(grid, grid)
    p = (target.log_prob(points) - target.log_z).exp() * h * h
    region = float(p[points[:, 0] > 1].sum())
    assert (x[:, 0] > 1).double().mean().item() == pytest.approx(region, abs=0.015)


def test_banana_log_z_and_sampler():
    b = Banana(s1=1.5, s2=0.7, curvature=0.8)
    # Closed-form log Z against a grid holding all but ~1e-11 of the mass (|x1| < 7 sd, x2
    # up to the largest conditional mean plus 8 sd). The rule is spectrally accurate for
    # Gaussian factors sampled 14+ points per sd, so 1e-6 is loose.
    h = 0.05
    g1 = torch.arange(-10.5, 10.5 + h / 2, h, dtype=torch.float64)
    g2 = torch.arange(-8.0, 92.0, h, dtype=torch.float64)
    points = torch.cartesian_prod(g1, g2)
    grid_log_z = float(torch.logsumexp(b.log_prob(points), 0)) + 2 * math.log(h)
    assert b.log_z == pytest.approx(grid_log_z, abs=1e-6)
    x = b.sample(40000, seed=0)
    # E[x2] = 0 and Var(x1) = s1^2; sd of the mean of x2 is sqrt(2 c^2 s1^4 + s2^2) / 200.
    se = math.sqrt(2 * 0.8**2 * 1.5**4 + 0.7**2) / 200
    assert abs(x[:, 1].mean().item()) < 4 * se
    assert x[:, 0].var().item() == pytest.approx(1.5**2, rel=0.03)


def test_funnel_is_normalized_and_sampler_has_the_right_marginals():
    f = Funnel(dim=3, scale=1.0)
    assert f.log_z == 0.0
    # At x = 0 each conditional factor is N(0; 0, e^v) = (2 pi e^v)^(-1/2).
    v = torch.linspace(-3, 3, 7, dtype=torch.float64)
    x = torch.stack([v, torch.zeros(7, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)],
                    -1)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(v) - (v / 2) * 2 - math.log(
        2 * math.pi)
    torch.testing.assert_close(f.log_prob(x), expected)
    draws = Funnel().sample(20000, seed=0)
    assert draws.shape == (20000, 10)
    # v ~ N(0, 9): sd of the mean 0.021, of the sd about 0.015.
    assert abs(draws[:, 0].mean().item()) < 0.1
    assert draws[:, 0].std().item() == pytest.approx(3.0, abs=0.07)


def test_funnel_log_prob_matches_pyro_distributions():
    f = Funnel()
    x = f.sample(50, seed=1)
    v = x[:, 0]
    ref = torch.distributions.Normal(0.0, 3.0).log_prob(v) + torch.distributions.Normal(
        0.0, torch.exp(v / 2)[:, None]).log_prob(x[:, 1:]).sum(-1)
    torch.testing.assert_close(f.log_prob(x), ref, rtol=1e-5, atol=1e-4)


def test_mixture_log_prob_is_a_normalized_density():
    ring = ring_of_gaussians(num_modes=8, radius=5.0, scale=0.5)
    # The grid reaches 6 sd beyond the ring (mass outside ~1e-9) with 25 points per sd.
    n = 800
    h = 16 / n
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) * h - 8
    points = torch.cartesian_prod(grid, grid)
    total = float(torch.logsumexp(ring.log_prob(points), 0)) + 2 * math.log(h)
    assert total == pytest.approx(0.0, abs=1e-5)


def test_mode_coverage_counts_modes_with_half_their_mass():
    ring = ring_of_gaussians()
    exact = ring.sample(20000, seed=0)
    assert ring.mode_coverage(exact) == 1.0
    owner = ring.mode_masses(exact)
    assert owner.sum().item() == pytest.approx(1.0)
    # Keep only samples in three of the eight modes: coverage is 3/8.
    keep = ring._component_log_probs(exact).argmax(-1) < 3
    assert ring.mode_coverage(exact[keep]) == pytest.approx(3 / 8)
    # Importance weights that undo a skew restore full coverage.
    skewed = torch.cat([exact[keep]] * 4 + [exact[~keep]])
    log_w = torch.cat([torch.full((4 * int(keep.sum()),), math.log(0.25)),
                       torch.zeros(int((~keep).sum()))])
    assert ring.mode_coverage(skewed, log_w) == 1.0


def test_gmm40_follows_the_fab_setup():
    mix = gmm40()
    assert mix.num_modes == 40 and mix.dim == 2
    assert bool((mix.means.abs() <= 40).all())
    assert mix.scales[0].item() == pytest.approx(math.log1p(math.e))
    torch.testing.assert_close(gmm40().means, mix.means)  # the same target every time
    assert mix.true_mode_masses.sum().item() == pytest.approx(1.0)


def test_targets_work_with_the_reverse_kl_tools():
    for name in available_targets():
        target = make_target(name)
        flow = fi.build_flow("realnvp", dim=target.dim, num_layers=1, hidden=(8,))
        summary = fi.estimate_log_z(flow, target, 200, seed=0)
        assert math.isfinite(summary.log_z)


# ------------------------------------------------------------------------------ bad input
def test_bad_target_arguments_are_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        RezendeEnergy("U5")
    with pytest.raises(TypeError, match="kind must be a str"):
        RezendeEnergy(1)
    with pytest.raises(ValueError, match="box must be a finite number > 0, got -1.0"):
        RezendeEnergy("U1", box=-1.0)
    with pytest.raises(TypeError, match="box must be a finite number"):
        RezendeEnergy("U1", box="4")
    with pytest.raises(ValueError, match="s1 must be a finite number > 0"):
        Banana(s1=0.0)
    with pytest.raises(ValueError, match="curvature must be a finite number"):
        Banana(curvature=math.inf)
    with pytest.raises(TypeError, match="s2 must be a finite number"):
        Banana(s2=None)
    with pytest.raises(ValueError, match="dim must be an integer >= 2, got 1"):
        Funnel(dim=1)
    with pytest.raises(TypeError, match="dim must be an integer"):
        Funnel(dim=3.0)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        Funnel(scale=0)
    with pytest.raises(ValueError, match="means must be a tensor of shape"):
        GaussianMixture(torch.zeros(3))
    with pytest.raises(TypeError, match="means must be a floating-point tensor"):
        GaussianMixture([[0.0, 1.0]])
    with pytest.raises(ValueError, match="scales"):
        GaussianMixture(torch.zeros(2, 2), scales=-1.0)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), weights=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="num_modes must be an integer >= 1, got 0"):
        ring_of_gaussians(num_modes=0)
    with pytest.raises(TypeError, match="num_modes must be an integer"):
        ring_of_gaussians(num_modes=8.0)
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        ring_of_gaussians(radius=-5.0)
    with pytest.raises(ValueError, match="loc_scaling must be a finite number > 0"):
        gmm40(loc_scaling=0.0)
    with pytest.raises(ValueError, match="name must be one of"):
        make_target("u9")
    with pytest.raises(TypeError, match="name must be a str"):
        make_target(None)


def test_bad_points_and_sample_sizes_are_named():
    target = energy("U1")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        target.log_prob(torch.zeros(5, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        target.log_prob([[0.0, 0.0]])
    with pytest.raises(TypeError, match="floating-point"):
        target.log_prob(torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        target.sample(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        Funnel().sample(2.0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        Banana().sample(3, seed=1.5)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        ring_of_gaussians().sample(3, seed=-1)
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \(0, 1\]"):
        ring_of_gaussians().mode_coverage(torch.zeros(4, 2), threshold=0.0)
    with pytest.raises(TypeError, match="threshold must be a finite number"):
        ring_of_gaussians().mode_coverage(torch.zeros(4, 2), threshold="half")
    with pytest.raises(ValueError, match=r"log_weights must have shape \(4,\)"):
        ring_of_gaussians().mode_coverage(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="log_weights must be a torch.Tensor"):
        ring_of_gaussians().mode_coverage(torch.zeros(4, 2), [0.0] * 4)


def test_old_import_path_still_works(monkeypatch):
    import importlib
    import sys

    import flowinfer.data.targets as new

    # Another test may have imported the shim already; forget it so that it runs (and warns).
    monkeypatch.delitem(sys.modules, "flowinfer.targets", raising=False)
    with pytest.warns(DeprecationWarning, match="flowinfer.targets moved"):
        old = importlib.import_module("flowinfer.targets")

    assert fi.targets is new
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name)
