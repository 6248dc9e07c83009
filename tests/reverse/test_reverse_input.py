"""fit_reverse_kl refuses bad input early, naming the argument."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as pdist
import pytest
import torch

import flowinfer as fi

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


def _iaf(dim: int = 2):
    return fi.build_flow("iaf", dim=dim, **SMALL)


def test_reverse_kl_target_returning_nan_is_refused_before_training():
    def nan_target(x):
        return torch.full(x.shape[:-1], math.nan)

    with pytest.raises(ValueError, match="target returned NaN for 256 of 256 points"):
        fi.fit_reverse_kl(_iaf(), nan_target, steps=5, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fi.estimate_log_z(_iaf(), nan_target, num_samples=64)


def test_reverse_kl_target_of_wrong_shape_or_type():
    with pytest.raises(ValueError, match=r"target must return a tensor of shape \(256,\)"):
        fi.fit_reverse_kl(_iaf(), lambda x: x, steps=2, progress=False)
    with pytest.raises(ValueError, match="target must be a log density callable.*got int"):
        fi.fit_reverse_kl(_iaf(), 3, steps=2, progress=False)


def test_reverse_kl_model_with_discrete_latents():
    def model():
        pyro.sample("k", pdist.Bernoulli(0.5))
        pyro.sample("z", pdist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"discrete latent sites \['k'\]"):
        fi.fit_reverse_kl(_iaf(1), model, steps=2, progress=False)


@pytest.mark.parametrize(("option", "value"), [("steps", 0), ("num_samples", -1),
                                               ("lr", -1.0)])
def test_reverse_kl_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        fi.fit_reverse_kl(_iaf(), lambda x: -x.pow(2).sum(-1), progress=False,
                          **{"steps": 2, option: value})
