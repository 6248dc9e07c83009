"""combine="mixture": EM weights, the mixture flow's density and draws, NPE end to end."""

from __future__ import annotations

import math

import pytest
import torch
from npe_models import bounded_model

import flowinfer as fi
from flowinfer.npe.mixture import MixtureFlow, mixture_weights
from flowinfer.npe.options import DEFAULT_TRAINING
from flowinfer.npe.training import training_tensors, validation_pairs


def test_em_recovers_the_weights_of_a_known_mixture():
    g = torch.Generator().manual_seed(0)
    n, w_true = 20_000, 0.3
    first = torch.rand(n, generator=g) < w_true
    x = torch.where(first, torch.randn(n, generator=g), 4.0 + torch.randn(n, generator=g))
    normal = torch.distributions.Normal
    log_q = torch.stack([normal(0.0, 1.0).log_prob(x), normal(4.0, 1.0).log_prob(x)])
    w = mixture_weights(log_q)
    # The components barely overlap, so the MLE is close to the share of first draws,
    # whose standard error is sqrt(w (1 - w) / n).
    assert abs(float(w[0]) - w_true) < 4 * math.sqrt(w_true * (1 - w_true) / n)
    # A component that is -inf everywhere gets no weight; NaN counts as -inf.
    lone = mixture_weights(torch.stack([log_q[0], torch.full((n,), math.nan)]))
    assert float(lone[1]) < 1e-12


def test_mixture_flow_draws_follow_its_density():
    torch.manual_seed(0)
    flows = [fi.build_flow("nsf", dim=1, context_dim=1, num_layers=1, hidden=(8,))
             for _ in range(2)]
    with torch.no_grad():  # move the second component away from the first
        flows[1].base_loc.fill_(3.0)
    mixture = MixtureFlow(flows, [1, 1], torch.tensor([0.25, 0.75]))
    context = torch.tensor([0.3, -0.7])
    grid = torch.linspace(-12.0, 15.0, 20_001)[:, None]
    density = mixture.log_prob(grid, context.expand(grid.shape[0], 2)).exp().detach()
    step = float(grid[1, 0] - grid[0, 0])
    assert abs(float(density.sum()) * step - 1.0) < 1e-3
    below = float(density[grid[:, 0] < 1.5].sum()) * step
    n = 20_000
    draws = mixture.sample((n,), context=context)
    assert draws.shape == (n, 1)
    share = float((draws[:, 0] < 1.5).double().mean())
    assert abs(share - below) < 4 * math.sqrt(below * (1 - below) / n)
    # Batched contexts: one draw per context row and sample.
    assert mixture.sample((5,), context=context.expand(3, 2)).shape == (5, 3, 1)


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(0)
    npe = fi.NPE(bounded_model, "x", flow_options={"num_layers": 2, "hidden": (16,)})
    assert npe.combine == "mixture"  # the default
    npe.fit(num_simulations=400, epochs=5, seed=0, progress=False)
    return npe


def test_mixture_is_at_least_as_good_as_the_best_candidate_on_validation(mixed):
    sel = mixed.selection
    assert sel["chosen"] == "mixture" and len(sel["weights"]) == 4  # 2 candidates x 2 copies
    assert abs(sum(sel["weights"]) - 1.0) < 1e-9
    z, x = validation_pairs(*training_tensors(mixed, mixed.simulations),
                            train={"val_fraction": DEFAULT_TRAINING["val_fraction"]}, seed=0)
    with torch.no_grad():
        val_loss = -float(mixed.flow.log_prob(z, mixed.embedding(x)).mean())
    # The weights maximise the validation likelihood over a set that holds each candidate.
    assert val_loss <= min(sel["val_loss"]) + 1e-5


def test_mixture_round_trip_and_support(mixed, tmp_path):
    x = mixed.simulations.observed["x"][0]
    path = tmp_path / "npe.pt"
    fi.save(mixed, path)
    loaded = fi.load(path, model=bounded_model)
    assert loaded.combine == "mixture"
    assert torch.equal(loaded.flow.weights, mixed.flow.weights)
    torch.manual_seed(1)
    a = mixed.sample(200, x=x)
    torch.manual_seed(1)
    b = loaded.sample(200, x=x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert bool(mixed.info.in_support(a).all())
    assert torch.allclose(mixed.log_prob(a, x=x), loaded.log_prob(a, x=x))


def test_combine_is_checked():
    with pytest.raises(ValueError, match="combine"):
        fi.NPE(bounded_model, "x", combine="average")


def test_a_component_that_fails_somewhere_gives_zero_density_there():
    class Failing(torch.nn.Module):
        dim, config = 1, {"name": "stub"}

        def log_prob(self, z, context):
            return torch.where(z[..., 0] > 0, torch.nan, 0.0)

    good = fi.build_flow("nsf", dim=1, context_dim=1, num_layers=1, hidden=(8,))
    mixture = MixtureFlow([good, Failing()], [1, 1], torch.tensor([0.5, 0.5]))
    z = torch.tensor([[-1.0], [1.0]])
    lp = mixture.log_prob(z, torch.zeros(2, 2))
    expected = good.log_prob(z, torch.zeros(2, 1)) + math.log(0.5)
    assert torch.isfinite(lp).all()
    assert torch.allclose(lp[1], expected[1])  # only the good component counts there
