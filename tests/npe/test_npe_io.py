"""Save/load of a trained NPE through fi.save / fi.load."""

from __future__ import annotations

import pytest
import torch
from npe_models import bounded_model, iid_model

import flowinfer as fi

SMALL = {"num_layers": 2, "hidden": (16,)}


def test_round_trip_gives_the_same_posterior(tmp_path):
    npe = fi.NPE(bounded_model, "x", flow_options=SMALL)
    npe.fit(num_simulations=200, epochs=2, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    loaded = fi.load(path, model=bounded_model)
    assert isinstance(loaded, fi.NPE)
    x = npe.simulations.observed["x"][3]
    torch.manual_seed(1)
    a = npe.sample(100, x=x)
    torch.manual_seed(1)
    b = loaded.sample(100, x=x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(npe.log_prob(a, x=x), loaded.log_prob(a, x=x))


def test_custom_embedding_must_be_passed_again(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    npe = fi.NPE(iid_model, "x", embedding=net, flow_options=SMALL)
    npe.fit(num_simulations=100, epochs=1, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    with pytest.raises(ValueError, match="custom embedding"):
        fi.load(path, model=iid_model)
    ckpt = fi.io.load_checkpoint(path)
    fresh = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    loaded = fi.NPE.from_checkpoint(fi.io.from_checkpoint(ckpt), ckpt["object"],
                                    model=iid_model, embedding=fresh)
    assert torch.equal(fresh[1].weight, net[1].weight)
    x = npe.simulations.observed["x"][0]
    values = {"mu": torch.zeros(3), "scale": torch.ones(3)}
    assert torch.equal(npe.log_prob(values, x=x), loaded.log_prob(values, x=x))


def test_load_needs_the_model_and_the_right_one(tmp_path):
    npe = fi.NPE(bounded_model, "x", flow_options=SMALL)
    npe.fit(num_simulations=100, epochs=1, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    with pytest.raises(ValueError, match="pass model="):
        fi.load(path)
    with pytest.raises(ValueError, match="latent sites"):
        fi.load(path, model=iid_model)


def test_untrained_npe_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="not trained"):
        fi.save(fi.NPE(bounded_model, "x"), tmp_path / "npe.pt")


def test_loaded_mixture_restarts_sequential_rounds_with_all_its_members(tmp_path):
    """Sequential rounds restart from untrained members: after a load they must be as many
    and of the same kinds as the saved mixture's, not the one candidate a load builds."""
    npe = fi.NPE(bounded_model, "x", flow_options=SMALL)  # "auto": a four-member mixture
    npe.fit(num_simulations=200, epochs=1, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    loaded = fi.load(path, model=bounded_model)
    assert [c.label for c in loaded._untrained] == [c.label for c in npe._untrained]
    x = npe.simulations.observed["x"][0]
    loaded.fit(num_simulations=120, rounds=2, observation=x, epochs=1, seed=1,
               progress=False)
    assert loaded.selection["candidates"] == [c.label for c in npe._untrained]
    assert len(loaded.flow.flows) == len(npe.flow.flows)
