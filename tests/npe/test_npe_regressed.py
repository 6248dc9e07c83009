"""standardize="mixed" (the default through "auto"): regressed mixture members (their density,
heads, NPE end to end)."""

from __future__ import annotations

import math

import pytest
import torch
from npe_models import gaussian_model

import flowinfer as fi
from flowinfer.npe.options import training_options
from flowinfer.npe.regressed import DataBeside, RegressedFlow
from flowinfer.npe.standardize import RegressionStandardizer, regression_features
from flowinfer.npe.training import training_rows, training_tensors

SMALL = {"num_layers": 2, "hidden": (16,)}


def _member(dim: int = 1, features: int = 2, seed: int = 0) -> RegressedFlow:
    torch.manual_seed(seed)
    inner = fi.build_flow("nsf", dim=dim, context_dim=3, num_layers=2, hidden=(8,))
    with torch.no_grad():  # a member that is not the identity
        for p in inner.parameters():
            p.add_(0.3 * torch.randn_like(p))
    head = RegressionStandardizer(torch.tensor([[0.7] * dim, [-1.2] * dim][:features]),
                                  torch.full((dim,), 0.4), torch.full((dim,), 0.25),
                                  torch.full((features,), -3.0), torch.full((features,), 3.0))
    return RegressedFlow(inner, features, head)


def test_log_prob_is_the_residual_density_with_its_jacobian():
    flow = _member(dim=2)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(5, 5, generator=g)
    z = torch.randn(5, 2, generator=g)
    embedded, f = context[:, :3], context[:, 3:]
    prediction = f.clamp(-3.0, 3.0) @ flow.head.coef + flow.head.intercept
    expected = (flow.inner.log_prob((z - prediction) / 0.25, embedded)
                - 2 * math.log(0.25))
    assert torch.allclose(flow.log_prob(z, context), expected, atol=1e-5)
    # Features beyond the fitted range are clipped: the prediction does not move further.
    far = context.clone()
    far[:, 3:] = 10.0
    at_edge = context.clone()
    at_edge[:, 3:] = 3.0
    assert torch.allclose(flow.log_prob(z, far), flow.log_prob(z, at_edge))


def test_density_integrates_to_one_and_draws_follow_it():
    flow = _member(dim=1)
    context = torch.tensor([0.2, -0.5, 1.0, 0.6, -0.4])
    grid = torch.linspace(-6.0, 8.0, 40_001)[:, None]
    with torch.no_grad():
        density = flow.log_prob(grid, context.expand(grid.shape[0], -1)).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1.0) < 1e-3
    mean = float(torch.trapezoid(density * grid[:, 0], grid[:, 0]))
    var = float(torch.trapezoid(density * (grid[:, 0] - mean) ** 2, grid[:, 0]))
    draws = flow.sample((40_000,), context=context)
    assert draws.shape == (40_000, 1)
    # The draws' mean is within 4 standard errors of the density's.
    assert abs(float(draws.mean()) - mean) < 4 * math.sqrt(var / 40_000)


def test_data_beside_appends_the_pooled_features():
    net = torch.nn.Linear(6, 3)
    x = torch.randn(4, 6)
    out = DataBeside(net)(x)
    assert torch.equal(out[:, 3:], x) and out.shape == (4, 9)
    trials = torch.randn(4, 5, 2)
    pooled = DataBeside(torch.nn.Flatten(), pool=(0,))(trials)
    assert torch.allclose(pooled[:, 10:], trials.mean(1))


def test_mixed_npe_heads_are_fitted_on_the_training_rows_only():
    npe = fi.NPE(gaussian_model, "x", standardize="mixed", flow_options=SMALL)
    npe.fit(num_simulations=600, epochs=2, seed=3, progress=False)
    labels = npe.selection["candidates"]
    assert [label.endswith("regressed") for label in labels] == [False, False, True, True]
    assert math.isclose(sum(npe.selection["weights"]), 1.0, rel_tol=1e-9)
    # The latents stay prior-standardised for the unregressed members.
    assert npe.scaling.latent.coef.shape[0] == 0
    z, xs = training_tensors(npe, npe.simulations)
    rows = training_rows(z.shape[0], training_options(2, None, None, None, None), 3)
    expected = RegressionStandardizer.fit(z[rows], regression_features(xs[rows]))
    regressed = [f for f in npe.flow.flows if isinstance(f, RegressedFlow)]
    assert len(regressed) == 2
    for flow in regressed:
        assert torch.allclose(flow.head.coef, expected.coef, atol=1e-6)
        # Four trials with noise 0.8 against a prior sd of 1-1.4: the data explain most.
        assert (flow.head.scale < 0.6).all()


@pytest.mark.parametrize("combine", ["mixture", "best"])
def test_mixed_npe_round_trips_through_save_and_load(combine, tmp_path):
    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", standardize="mixed", combine=combine,
                 embedding="mlp", replicates=2, flow_options=SMALL)
    if combine == "best":  # the regressed copy alone, so a regressed member is saved as such
        npe._candidates = npe._candidates[1:]
        npe._use(npe._candidates[0])
    npe.fit(num_simulations=300, epochs=2, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    back = fi.load(path, model=gaussian_model)
    x = torch.randn(4, 2)
    theta = {"theta": torch.randn(6, 2)}
    assert back.standardize == "mixed"
    assert torch.allclose(back.log_prob(theta, x=x), npe.log_prob(theta, x=x), atol=1e-6)
    # A later sequential fit restarts the saved members, regressed ones included.
    assert [c.label for c in back._untrained][-1].endswith("regressed")
    back.fit(num_simulations=200, rounds=2, observation=x, epochs=1, seed=1, progress=False)
    assert torch.isfinite(back.log_prob(theta, x=x)).all()


def test_auto_is_mixed_with_two_copies_and_prior_with_one():
    assert fi.NPE(gaussian_model, "x").standardize == "mixed"
    labels = [c.label for c in fi.NPE(gaussian_model, "x")._candidates]
    assert [label.endswith("regressed") for label in labels] == [False, False, True, True]
    for kw in ({"replicates": 1}, {"embedding": "mlp"}):
        npe = fi.NPE(gaussian_model, "x", **kw)
        assert npe.standardize == "prior"
        assert not any(isinstance(c.flow, RegressedFlow) for c in npe._candidates)


def test_mixed_needs_two_copies_of_each_candidate():
    with pytest.raises(ValueError, match=r'standardize="mixed".*replicates >= 2, got 1'):
        fi.NPE(gaussian_model, "x", standardize="mixed", replicates=1)
    with pytest.raises(ValueError, match="standardize.*mixed"):
        fi.NPE(gaussian_model, "x", standardize="mix")


def test_tail_limit_widens_the_scale_for_heavy_tailed_residuals_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 1, generator=g)
    gaussian = x + 0.1 * torch.randn(20_000, 1, generator=g)
    plain = RegressionStandardizer.fit(gaussian, x)
    limited = RegressionStandardizer.fit(gaussian, x, tail_limit=3.0)
    # A Gaussian residual's 99% quantile is 2.58 scale units: under the limit, no change.
    assert torch.equal(limited.scale, plain.scale)
    # A contaminated Gaussian: 3% of the residuals ten times wider. Its sd is 0.2, its 99%
    # quantile of |r| about 0.97 (P(|N(0, 1)| > q) = 1/3 for the wide part): past the limit.
    wide = torch.rand(20_000, 1, generator=g) < 0.03
    t = torch.randn(20_000, 1, generator=g) * torch.where(wide, 10.0, 1.0)
    heavy = x + 0.1 * t
    widened = RegressionStandardizer.fit(heavy, x, tail_limit=3.0)
    quantile = float((heavy - x).abs().quantile(0.99))
    assert math.isclose(float(widened.scale[0]), quantile / 3.0, rel_tol=0.02)
    assert float(widened.scale[0]) > float(RegressionStandardizer.fit(heavy, x).scale[0])
