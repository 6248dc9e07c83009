"""The standardisation of NPE's latents: z-scoring, and the ridge regression on the data."""

from __future__ import annotations

import pytest
import torch
from npe_models import gaussian_model, iid_model

import flowinfer as fi
from flowinfer.npe.standardize import RegressionStandardizer, regression_features

SMALL = {"num_layers": 2, "hidden": (16,)}


def _linear_pairs(n: int, p: int, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g)
    coef = torch.zeros(p, 2)
    coef[0, 0], coef[1, 1] = 1.0, -0.5
    z = x @ coef + noise * torch.randn(n, 2, generator=g)
    return z, x, coef


def test_regression_recovers_a_linear_relation_and_its_residual_scale():
    z, x, coef = _linear_pairs(20_000, 5, noise=0.2)
    head = RegressionStandardizer.fit(z, x)
    # Least squares on 20,000 rows: coefficient errors of order 0.2 / sqrt(20,000) = 0.0014.
    assert torch.allclose(head.coef, coef, atol=0.01)
    assert torch.allclose(head.scale, torch.full((2,), 0.2), rtol=0.03)
    e = head(z, x)
    assert torch.allclose(e.mean(0), torch.zeros(2), atol=0.03)
    assert torch.allclose(e.std(0), torch.ones(2), atol=0.03)
    assert torch.allclose(head.inverse(e, x), z, atol=1e-5)
    assert torch.allclose(head.log_abs_det(), -torch.log(head.scale).sum())


def test_no_signal_gives_no_regression():
    """Pure noise: generalised cross-validation shrinks the coefficients to (nearly) zero,
    so the standardiser is (nearly) the identity on z-scored latents."""
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(2000, 20, generator=g), torch.randn(2000, 2, generator=g)
    head = RegressionStandardizer.fit(z, x)
    # An unpenalised fit would have coefficients of sd 1/sqrt(2000) = 0.022 each.
    assert head.coef.abs().max() < 0.03
    assert torch.allclose(head.scale, torch.ones(2), atol=0.05)


def test_few_rows_per_feature_give_a_shrunk_fit_that_generalises():
    """200 features, 300 rows: the GCV-best penalty fits noise (new-data residual variance
    1.27-1.40 times the fitted scale's square, averaged over these 20 fits). Capped at
    300 / 20 = 15 effective degrees of freedom the excess is about 15 / 300 = 0.05; one
    fit's ratio varies by about sqrt(2 / 300) = 0.08 (the scale is estimated from 300 rows),
    so the mean of 20 has a standard error of about 0.02 and 1.11 allows three of them."""
    ratios = []
    for seed in range(20):
        z, x, _ = _linear_pairs(300, 200, noise=1.0, seed=seed)
        head = RegressionStandardizer.fit(z, x)
        z_new, x_new, _ = _linear_pairs(5000, 200, noise=1.0, seed=100 + seed)
        ratios.append(head(z_new, x_new).var(0))
    assert float(torch.stack(ratios).mean(0).max()) < 1.11


def test_regression_generalises_at_the_smallest_allowed_ratio():
    """20 rows per feature: on new data the standardised residual's sd is about
    sqrt(1 + p / n) = 1.025 (least squares) or less (ridge); 5000 new rows estimate it to
    1 / sqrt(10000) = 0.01, so 1.06 allows three standard errors above the worst case."""
    p = 20
    z, x, _ = _linear_pairs(RegressionStandardizer.ROWS_PER_FEATURE * p, p, noise=1.0, seed=2)
    head = RegressionStandardizer.fit(z, x)
    assert head.coef.shape[0] == p
    z_new, x_new, _ = _linear_pairs(5000, p, noise=1.0, seed=3)
    assert float(head(z_new, x_new).std(0).max()) < 1.06


def test_prediction_is_clipped_to_the_range_of_the_fit():
    z, x, _ = _linear_pairs(2000, 2, noise=0.1)
    head = RegressionStandardizer.fit(z, x)
    far = torch.tensor([[100.0, -100.0]])
    edge = torch.stack([x[:, 0].max(), x[:, 1].min()])[None]
    assert torch.allclose(head.prediction(far), head.prediction(edge))


def test_pooled_axes_make_the_features_order_and_count_free():
    x = torch.randn(4, 6, 3)
    features = regression_features(x, pool=(0,))
    assert features.shape == (4, 3)
    assert torch.allclose(features, regression_features(x.flip(1), pool=(0,)), atol=1e-6)
    assert torch.allclose(regression_features(torch.cat([x, x], 1), pool=(0,)), features,
                          atol=1e-6)


def test_identity_and_too_many_features_leave_latents_unchanged():
    z = torch.randn(50, 3)
    head = RegressionStandardizer.identity(3)
    assert torch.equal(head(z, torch.randn(50, 4)), z)
    wide = RegressionStandardizer.fit(z, torch.randn(50, RegressionStandardizer.MAX_FEATURES + 1))
    assert wide.coef.shape[0] == 0 and torch.equal(wide.scale, torch.ones(3))


@pytest.mark.parametrize("standardize", ["regression", "mixed"])
def test_npe_posterior_is_permutation_invariant_for_iid_trials(standardize):
    # "mixed": the regressed members' features are pooled over the trials as well.
    npe = fi.NPE(iid_model, "x", embedding="deepset", standardize=standardize,
                 replicates=2 if standardize == "mixed" else 1, flow_options=SMALL)
    npe.fit(num_simulations=300, epochs=2, seed=0, progress=False)
    x = torch.tensor([0.3, -1.0, 2.0, 0.1, 0.5, 1.5])
    values = {"mu": torch.tensor([0.2, 0.9]), "scale": torch.tensor([1.0, 1.3])}
    assert torch.allclose(npe.log_prob(values, x=x), npe.log_prob(values, x=x.flip(0)),
                          atol=1e-5)


def test_npe_standardize_options():
    with pytest.raises(ValueError, match="standardize"):
        fi.NPE(gaussian_model, "x", standardize="posterior")
    torch.manual_seed(0)
    prior = fi.NPE(gaussian_model, "x", flow_options=SMALL)  # the default
    prior.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    assert prior.scaling.latent.coef.shape[0] == 0
    torch.manual_seed(0)
    regression = fi.NPE(gaussian_model, "x", standardize="regression", flow_options=SMALL)
    regression.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    # Four trials with noise 0.8 against a prior sd of 1-1.4: the data explain most of it.
    assert (regression.scaling.latent.scale < 0.6).all()


def test_records_saved_before_the_regression_load_as_prior_standardised(tmp_path):
    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", standardize="prior", flow_options=SMALL)
    npe.fit(num_simulations=300, epochs=2, seed=0, progress=False)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    checkpoint = fi.io.load_checkpoint(path)
    record = {k: v for k, v in checkpoint["object"].items()
              if k not in ("standardize", "latent_regression")}
    old = fi.NPE.from_checkpoint(fi.io.from_checkpoint(checkpoint), record,
                                 model=gaussian_model)
    x = torch.zeros(4, 2)
    theta = {"theta": torch.randn(5, 2)}
    assert old.standardize == "prior"
    assert torch.equal(old.log_prob(theta, x=x), npe.log_prob(theta, x=x))


def test_calibration_draws_go_through_the_same_regression_as_sample():
    """SBC and coverage draw for many data sets at once (their own code path); with the
    regression standardiser their draws must be those of ``sample`` for the same data."""
    from flowinfer.npe.calibration import _posterior_batch

    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", standardize="regression", embedding="mlp",
                 flow_options=SMALL)
    npe.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    x = npe.simulations.observed["x"][7]
    torch.manual_seed(5)
    batch = _posterior_batch(npe, {"x": x[None]}, 50)[:, 0]
    torch.manual_seed(5)
    single = npe.sample_unconstrained(50, x)
    assert torch.allclose(batch, single, atol=1e-5)
    check = fi.sbc(npe, num_simulations=20, num_posterior_samples=9, seed=1)
    assert check.ranks.shape[0] == 20


def test_regression_keeps_the_shapes_of_log_prob():
    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", standardize="regression", embedding="mlp",
                 flow_options=SMALL)
    npe.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    x = torch.zeros(4, 2)
    assert npe.log_prob_unconstrained(torch.zeros(2), x).shape == ()
    assert npe.log_prob({"theta": torch.zeros(3, 5, 2)}, x=x).shape == (3, 5)
    single = npe.log_prob({"theta": torch.tensor([0.1, -0.2])}, x=x)
    batched = npe.log_prob({"theta": torch.tensor([[0.1, -0.2]])}, x=x)
    assert torch.allclose(single, batched[0])


def test_regression_is_fitted_on_the_training_rows_only():
    """The validation split scores the estimator on pairs it has not seen: the regression
    (``p * D`` coefficients) must not have seen them either."""
    from flowinfer.npe.options import training_options
    from flowinfer.npe.training import training_rows, training_tensors, validation_pairs

    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", standardize="regression", embedding="mlp",
                 flow_options=SMALL)
    npe.fit(num_simulations=400, epochs=1, seed=3, progress=False)
    u = npe.info.to_unconstrained(npe.simulations.latents)
    x = npe.simulations.observed["x"]
    train = training_options(1, None, None, None, None)
    rows = training_rows(400, train, 3)
    expected = RegressionStandardizer.fit(npe.scaling.theta(u[rows]), npe.scaling.x(x[rows]))
    assert torch.allclose(npe.scaling.latent.coef, expected.coef, atol=1e-6)
    # The held-out rows are the complement of the training rows.
    z, xs = training_tensors(npe, npe.simulations)
    z_val, _ = validation_pairs(z, xs, train=train, seed=3)
    assert len(rows) + z_val.shape[0] == 400
    everything = RegressionStandardizer.fit(npe.scaling.theta(u), npe.scaling.x(x))
    assert not torch.allclose(npe.scaling.latent.coef, everything.coef, atol=1e-6)
