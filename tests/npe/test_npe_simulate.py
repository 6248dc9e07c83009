"""Simulation through Pyro: vectorised or looped, seeds, workers, executors, resumable files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyro
import pyro.distributions as dist
import pytest
import torch
from npe_models import bounded_model, gaussian_model

import flowinfer as fi
from flowinfer.npe.simulate import Simulations, simulate


def mixing_model():
    # theta[0] mixes particles under a plate: must be detected and looped, not trusted.
    theta = pyro.sample("theta", dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1))
    pyro.sample("x", dist.Normal(theta[0] * torch.ones(2), 0.1).to_event(1))


def test_vectorised_when_the_model_broadcasts():
    sims = simulate(gaussian_model, "x", 300, seed=0)
    assert sims.vectorized
    assert sims.latents["theta"].shape == (300, 2) and sims.observed["x"].shape == (300, 4, 2)
    sims = simulate(bounded_model, "x", 50, seed=0)
    assert sims.vectorized and sims.latents["w"].shape == (50, 3)


def test_a_model_that_mixes_particles_is_looped():
    sims = simulate(mixing_model, "x", 20, seed=0)
    assert not sims.vectorized
    # Looped draws keep each draw's own theta: x ~ N(theta_0, 0.1) in both coordinates.
    resid = sims.observed["x"] - sims.latents["theta"][:, :1]
    assert resid.abs().max() < 0.6


def test_vectorised_and_looped_draws_have_the_same_distribution():
    a = simulate(gaussian_model, "x", 2000, seed=1).observed["x"].reshape(2000, -1)
    b = simulate(gaussian_model, "x", 2000, seed=2, vectorize=False).observed["x"].reshape(
        2000, -1)
    # Means of 2000 draws with sd about 1.6: 5 standard errors of the difference is 0.25.
    assert (a.mean(0) - b.mean(0)).abs().max() < 5 * (2 * 2.6 / 2000) ** 0.5


def test_same_seed_same_draws_with_workers_and_executors():
    base = simulate(gaussian_model, "x", 900, seed=3, chunk_size=200)
    workers = simulate(gaussian_model, "x", 900, seed=3, chunk_size=200, num_workers=2)
    with ThreadPoolExecutor(2) as pool:
        executor = simulate(gaussian_model, "x", 900, seed=3, chunk_size=200, executor=pool)
    other = simulate(gaussian_model, "x", 900, seed=4, chunk_size=200)
    assert torch.equal(base.observed["x"], workers.observed["x"])
    assert torch.equal(base.latents["theta"], executor.latents["theta"])
    assert not torch.equal(base.latents["theta"], other.latents["theta"])


def test_seed_does_not_touch_the_callers_stream():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    simulate(gaussian_model, "x", 10, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_file_campaign_resumes_and_appends(tmp_path):
    path = tmp_path / "sims.pt"
    first = simulate(gaussian_model, "x", 300, seed=0, chunk_size=100, path=path)
    assert Simulations.load(path).num_chunks == 3
    more = simulate(gaussian_model, "x", 500, seed=0, chunk_size=100, path=path)
    assert len(more) == 500 and Simulations.load(path).num_chunks == 5
    assert torch.equal(more.latents["theta"][:300], first.latents["theta"])
    # New chunks continue the chunk index: no draw repeats the first 300.
    assert not torch.isin(more.latents["theta"][300:, 0], first.latents["theta"][:, 0]).any()
    again = simulate(gaussian_model, "x", 500, seed=0, chunk_size=100, path=path)
    assert torch.equal(again.observed["x"], more.observed["x"])
    # A budget that ends inside a chunk: the file keeps the whole chunk, the caller gets
    # its budget; a smaller budget reads the file's first draws.
    odd = simulate(gaussian_model, "x", 550, seed=0, chunk_size=100, path=path)
    assert len(odd) == 550 and len(Simulations.load(path)) == 600
    fewer = simulate(gaussian_model, "x", 200, seed=0, chunk_size=100, path=path)
    assert torch.equal(fewer.latents["theta"], first.latents["theta"][:200])


def test_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "sims.pt"
    simulate(gaussian_model, "x", 20, seed=0, path=path)
    with pytest.raises(ValueError, match="latent sites"):
        simulate(bounded_model, "x", 40, seed=0, path=path)


def test_npe_takes_simulations_the_user_has():
    sims = simulate(gaussian_model, "x", 200, seed=0)
    npe = fi.NPE(gaussian_model, "x", flow_options={"num_layers": 1, "hidden": (8,)})
    npe.fit(simulations={"theta": sims.latents["theta"], "x": sims.observed["x"]}, epochs=1,
            progress=False, seed=0)
    assert len(npe.simulations) == 200
    with pytest.raises(ValueError, match="shape"):
        npe.fit(simulations={"theta": sims.latents["theta"], "x": sims.observed["x"][:, :2]})
