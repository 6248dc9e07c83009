"""fit_density: it learns, stops early with the best parameters, survives NaN, rejects bad input.

The accuracy check compares the test NLL of a flow fitted to Gaussian data with the data's
entropy; the tolerance is 4 standard errors of the test-set mean of ``-log p(x)`` (for a
d-dimensional Gaussian ``-log p`` has variance d / 2), plus nothing tuned.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import flowinfer as fi
from flowinfer.train.density import fit_density, mean_nll
from flowinfer.train.state import NonFiniteLossWarning

LOG_2PI = math.log(2 * math.pi)
LOC = torch.tensor([1.0, -1.0])
SCALE = torch.tensor([2.0, 0.5])


def gaussian_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return LOC + SCALE * torch.randn(n, 2, generator=g)


def small_flow(dim: int = 2, layers: int = 2, **kwargs) -> fi.Flow:
    torch.manual_seed(0)
    return fi.build_flow("realnvp", dim=dim, num_layers=layers, hidden=(16,), **kwargs)


def test_fit_reaches_the_entropy_of_gaussian_data():
    # An affine coupling flow represents a diagonal Gaussian exactly, so after fitting the
    # test NLL should equal the entropy up to sampling error (plus O(k / n) estimation
    # error, about 1e-3 here, far below the tolerance).
    flow = small_flow()
    start = mean_nll(flow, gaussian_data(4000, 2))
    result = fit_density(flow, gaussian_data(2000, 1), epochs=60, lr=1e-2, progress=False,
                         seed=0)
    entropy = LOG_2PI + 1 + float(torch.log(SCALE).sum())
    # The fresh flow is N(0, I): E[-log N(x; 0, I)] = log 2 pi + E|x|^2 / 2.
    assert start == pytest.approx(LOG_2PI + float((LOC**2 + SCALE**2).sum()) / 2, abs=0.1)
    test = gaussian_data(4000, 2)
    se = math.sqrt(2 / 2) / math.sqrt(test.shape[0])
    assert abs(mean_nll(flow, test) - entropy) < 4 * se
    hist = result.history
    assert len(hist["train_loss"]) == len(hist["val_loss"]) == len(hist["lr"])
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert result.best_loss == min(hist["val_loss"])
    assert result.wall_time > 0
    assert not flow.training


def test_early_stopping_restores_the_best_parameters():
    # 20 training points and a flexible flow: the validation loss turns up as it overfits.
    train = gaussian_data(20, 3)
    val = gaussian_data(500, 4)
    torch.manual_seed(0)
    flow = fi.build_flow("realnvp", dim=2, num_layers=4, hidden=(64, 64))
    patience = 5
    result = fit_density(flow, train, val_data=val, epochs=500, batch_size=20, lr=1e-2,
                         schedule=None, patience=patience, progress=False, seed=0)
    hist = result.history["val_loss"]
    assert result.stop_reason == "early_stopping"
    assert len(hist) == result.best_epoch + patience + 1 < 500
    assert hist[result.best_epoch] == min(hist) < hist[-1]
    # The flow holds the best epoch's parameters, not the last epoch's.
    assert mean_nll(flow, val) == pytest.approx(hist[result.best_epoch], rel=1e-6)
    assert "restored" in result.message


def test_non_finite_loss_stops_and_restores():
    flow = small_flow()
    data = gaussian_data(400, 5)

    def poison(epoch, info):
        if epoch == 2:
            with torch.no_grad():
                next(info["flow"].parameters()).fill_(float("nan"))

    with pytest.warns(NonFiniteLossWarning, match="restored the parameters of step/epoch"):
        result = fit_density(flow, data, epochs=20, lr=1e-2, progress=False, seed=0,
                             callback=poison)
    assert result.stop_reason == "non_finite_loss"
    assert len(result.history["train_loss"]) == 4
    assert not math.isfinite(result.history["train_loss"][-1])
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    val_best = result.history["val_loss"][result.best_epoch]
    assert result.best_epoch <= 2
    assert math.isfinite(val_best)


def test_seed_makes_runs_repeatable_and_numpy_float64_is_accepted():
    data = gaussian_data(300, 6).double().numpy()
    runs = []
    for _ in range(2):
        flow = small_flow(layers=1)
        runs.append(fit_density(flow, data, epochs=3, progress=False, seed=7).history)
    assert runs[0] == runs[1]
    flow = small_flow(layers=1)
    other = fit_density(flow, data, epochs=3, progress=False, seed=8).history
    assert other != runs[0]


def test_schedules_and_no_validation():
    data = gaussian_data(300, 7)
    flow = small_flow(layers=1)
    cosine = fit_density(flow, data, epochs=4, lr=1e-2, progress=False, seed=0)
    assert cosine.history["lr"][0] == pytest.approx(1e-2)
    lrs = cosine.history["lr"]
    assert all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=True))
    flow = small_flow(layers=1)
    const = fit_density(flow, data, epochs=3, lr=1e-2, schedule=None, val_fraction=0,
                        progress=False, seed=0)
    assert const.history["lr"] == [1e-2] * 3 and "val_loss" not in const.history
    assert const.best_loss == min(const.history["train_loss"])
    flow = small_flow(layers=1)
    plateau = fit_density(flow, data, epochs=3, schedule="plateau", progress=False, seed=0)
    assert len(plateau.history["train_loss"]) == 3


def test_float64_flow_and_dtype_following():
    flow = small_flow(layers=1).double()
    fit_density(flow, gaussian_data(200, 8), epochs=2, progress=False, seed=0)
    assert all(p.dtype == torch.float64 for p in flow.parameters())


def test_conditional_fit_learns_the_context():
    # x = c + 0.1 noise: a conditional flow should put its density near the context.
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2000, 1, generator=g) * 2
    x = c.expand(-1, 2) + 0.1 * torch.randn(2000, 2, generator=g)
    torch.manual_seed(0)
    flow = fi.build_flow("realnvp", dim=2, context_dim=1, num_layers=2, hidden=(32,))
    before = mean_nll(flow, x, c)
    result = fit_density(flow, (x, c), epochs=15, lr=1e-2, progress=False, seed=0)
    after = mean_nll(flow, x, c)
    # The unconditional marginal has NLL > log 2 pi + ...; with the context known the
    # residual spread is 0.1 per axis: entropy log 2 pi + 1 + 2 log 0.1 = -1.77 nats.
    assert after < before - 2
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]


def test_progress_bar_on_and_off(capsys):
    data = gaussian_data(100, 9)
    fit_density(small_flow(layers=1), data, epochs=2, progress=True, seed=0)
    assert "fit_density" in capsys.readouterr().err
    fit_density(small_flow(layers=1), data, epochs=2, progress=False, seed=0)
    assert "fit_density" not in capsys.readouterr().err


def test_callback_can_stop():
    result = fit_density(small_flow(layers=1), gaussian_data(100, 10), epochs=50,
                         progress=False, seed=0, callback=lambda epoch, info: epoch == 1)
    assert len(result.history["train_loss"]) == 2
    assert result.stop_reason == "early_stopping"


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros(10), r"2-D of shape \(n, 2\).*reshape"),
        (np.zeros((10, 2, 1)), r"2-D of shape \(n, 2\)"),
        (np.zeros((10, 3)), r"data must have 2 columns"),
        (np.zeros((0, 2)), "data has no rows"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [np.inf, 0.0]]), "2 of 3 rows contain NaN"),
        ("abc", "data must be a numeric array"),
        ([[1, 2], [3]], "data must be a numeric array"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        fit_density(small_flow(layers=1), data, epochs=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
        ({"schedule": "step"}, ValueError, "schedule must be one of"),
        ({"clip_grad": -1.0}, ValueError, "clip_grad"),
        ({"val_fraction": 1.0}, ValueError, r"val_fraction must be a finite number in \[0, 1\)"),
        ({"patience": 0}, ValueError, "patience"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"seed": -3}, ValueError, "seed"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
        ({"context": np.zeros((10, 1))}, ValueError, "flow is unconditional"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_density(small_flow(layers=1), np.zeros((10, 2)),
                    **{"epochs": 1, "progress": False, **kwargs})


def test_bad_flow_and_context():
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow"):
        fit_density(torch.nn.Linear(2, 2), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="no analytic inverse"):
        fit_density(fi.build_flow("planar", dim=2), np.zeros((10, 2)))
    cond = fi.build_flow("realnvp", dim=2, context_dim=3, num_layers=1, hidden=(8,))
    with pytest.raises(ValueError, match="context is required"):
        fit_density(cond, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="context must have 3 columns"):
        fit_density(cond, np.zeros((10, 2)), context=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="one row per row of data"):
        fit_density(cond, np.zeros((10, 2)), context=np.zeros((9, 3)))
    with pytest.raises(ValueError, match="too few"):
        fit_density(small_flow(layers=1), np.zeros((1, 2)), val_fraction=0.5)


def test_mean_nll_of_standard_normal():
    flow = small_flow(layers=1)  # a fresh coupling is the identity, so q = N(0, I)
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    expected = LOG_2PI + float((x.double() ** 2).sum(-1).mean()) / 2
    assert mean_nll(flow, x, batch_size=128) == pytest.approx(expected, rel=1e-5)


def test_no_warning_on_a_normal_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)
        fit_density(small_flow(layers=1), gaussian_data(100, 11), epochs=2, progress=False)


@pytest.mark.slow
def test_default_nsf_beats_the_best_gaussian_on_moons():
    # The maximum-likelihood Gaussian is the best any affine flow can do; a flexible flow
    # fitted with the demo's settings must beat it on fresh points by more than 4 standard
    # errors of the paired per-point difference.
    train = fi.datasets.make_toy("moons", 5000, seed=0)
    test = fi.datasets.make_toy("moons", 5000, seed=1)
    torch.manual_seed(0)
    flow = fi.build_flow("nsf", dim=2)
    fit_density(flow, train, epochs=40, lr=2e-3, progress=False, seed=0)
    gauss = torch.distributions.MultivariateNormal(
        train.double().mean(0), covariance_matrix=torch.cov(train.double().T, correction=0))
    with torch.no_grad():
        diff = flow.log_prob(test).double() - gauss.log_prob(test.double())
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert float(diff.mean()) > 4 * se


def test_fit_density_takes_image_shaped_data():
    # A Glow flow models (C, H, W) tensors: fit_density takes (n, C, H, W) and lowers the NLL.
    torch.manual_seed(0)
    flow = fi.build_flow("glow", shape=(1, 4, 4), levels=1, steps_per_level=1,
                         hidden_channels=8)
    x = 0.3 * torch.randn(256, 1, 4, 4) + torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    before = fi.fit.mean_nll(flow, x)
    result = fi.fit_density(flow, x, epochs=5, batch_size=64, val_fraction=0.0,
                            progress=False, seed=0)
    assert result.best_loss < before
    with pytest.raises(ValueError, match=r"reshape flattened images with data\.reshape"):
        fi.fit_density(flow, x.reshape(256, 16), epochs=1, progress=False)
    bad = x.clone()
    bad[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of 256 rows contain NaN"):
        fi.fit_density(flow, bad, epochs=1, progress=False)
