"""The generic training loop (flowinfer.train.fit) in both modes, with hand-made losses."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import flowinfer as fi
from flowinfer.train import FitResult, Loss, NonFiniteLossWarning, fit
from flowinfer.train.losses import MaximumLikelihood


class Quadratic(Loss):
    """Sampled-mode loss ``mean((w - target + noise)^2)``: its minimiser is ``target``."""

    def __init__(self, target: float, noise: float = 0.0) -> None:
        self.w = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.w.weight)
        self.modules = [self.w]
        self.target, self.noise = target, noise

    def __call__(self, batch):
        eps = self.noise * torch.randn(16)
        return ((self.w.weight.squeeze() - self.target + eps) ** 2).mean()


class Regression(Loss):
    """Mini-batch loss of a linear model trained jointly with a second module."""

    def __init__(self) -> None:
        self.features = nn.Linear(2, 4)
        self.head = nn.Linear(4, 1)
        self.modules = [self.features, self.head]

    def __call__(self, batch):
        x, y = batch
        return ((self.head(self.features(x)).squeeze(-1) - y) ** 2).mean()


def test_sampled_mode_reaches_the_minimiser():
    torch.manual_seed(0)
    loss = Quadratic(3.0)
    result = fit(loss, steps=400, lr=0.05, schedule=None, patience=None, progress_bar=False)
    assert isinstance(result, FitResult) and result.stop_reason == "completed"
    assert abs(float(loss.w.weight) - 3.0) < 1e-2
    assert len(result.history["loss"]) == 400 and len(result.history["smoothed_loss"]) == 400


def test_sampled_mode_stops_on_a_plateau_and_keeps_the_best():
    torch.manual_seed(0)
    loss = Quadratic(1.0, noise=0.5)
    result = fit(loss, steps=5000, lr=0.05, schedule=None, patience=3, eval_every=50,
                 progress_bar=False)
    # The loss plateaus at 0.25 (the noise variance) within a few hundred steps; three
    # 50-step windows without a new smoothed best then end the run long before 5000 steps.
    assert result.stop_reason == "early_stopping"
    assert len(result.history["loss"]) < 5000
    assert abs(float(loss.w.weight) - 1.0) < 0.2


class Spiky(Quadratic):
    """``Quadratic`` whose step 10 returns a heavy-tailed estimate a million times too large."""

    def __init__(self, target: float) -> None:
        super().__init__(target, noise=0.5)
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        value = super().__call__(batch)
        return value * 1e6 if self.calls == 11 else value


def test_one_outlier_does_not_stop_the_run_at_its_first_steps():
    # Regression: the unclipped spike held the moving average above its step-8 value for
    # 200 steps, so the run stopped at step 249 and restored step 8's parameters.
    torch.manual_seed(0)
    loss = Spiky(3.0)
    result = fit(loss, steps=3000, lr=0.01, schedule=None, patience=4, eval_every=50,
                 progress_bar=False)
    assert result.best_epoch > 300, result.message
    assert abs(float(loss.w.weight) - 3.0) < 0.2


def test_minibatch_mode_trains_several_modules_with_validation():
    torch.manual_seed(0)
    x = torch.randn(400, 2)
    y = x @ torch.tensor([2.0, -1.0]) + 0.5
    loss = Regression()
    result = fit(loss, data=(x, y), epochs=60, lr=1e-2, batch_size=32, seed=0,
                 progress_bar=False)
    assert result.history["val_loss"][-1] < 0.05 * result.history["val_loss"][0]
    assert result.best_loss == min(result.history["val_loss"])
    assert all(not m.training for m in loss.modules)


def test_non_finite_loss_stops_or_recovers():
    class Exploding(Quadratic):
        def __call__(self, batch):
            value = super().__call__(batch)
            self.calls = getattr(self, "calls", 0) + 1
            return value * math.nan if self.calls == 30 else value

    torch.manual_seed(0)
    loss = Exploding(2.0)
    with pytest.warns(NonFiniteLossWarning, match="loss became nan at step/epoch 29"):
        result = fit(loss, steps=100, lr=0.05, schedule=None, patience=None,
                     progress_bar=False)
    assert result.stop_reason == "non_finite_loss"
    assert len(result.history["loss"]) == 30
    assert math.isfinite(float(loss.w.weight))

    torch.manual_seed(0)
    loss = Exploding(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)
        result = fit(loss, steps=300, lr=0.05, schedule=None, patience=None,
                     on_non_finite="recover", progress_bar=False)
    assert result.stop_reason == "completed"
    assert result.history["recovered_at"] == [29.0]
    assert "recovered from 1 non-finite step" in result.message
    assert abs(float(loss.w.weight) - 2.0) < 1e-2


def test_callback_stops_and_sees_the_modules():
    loss = Quadratic(1.0)
    seen = []

    def callback(step, info):
        seen.append((step, info["modules"][0] is loss.w))
        return step == 4

    result = fit(loss, steps=100, callback=callback, progress_bar=False)
    assert result.stop_reason == "early_stopping" and seen[-1] == (4, True)


def test_maximum_likelihood_matches_fit_density():
    data = fi.datasets.make_toy("moons", 300, seed=0)
    a = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
    b = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
    b.load_state_dict(a.state_dict())
    ra = fi.fit_density(a, data, epochs=3, batch_size=64, seed=1, progress=False)
    rb = fit(MaximumLikelihood(b), data=(data,), epochs=3, batch_size=64, seed=1,
             progress_bar=False)
    assert ra.history["val_loss"] == pytest.approx(rb.history["val_loss"], rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"steps": 10, "eval_every": 1.5}, TypeError, "eval_every must be an integer"),
        ({"steps": 10, "on_non_finite": "retry"}, ValueError, "on_non_finite must be one of"),
        ({"steps": 10, "restore_best": 1}, TypeError, "restore_best must be True or False"),
        ({"steps": 10, "checkpoint": "x.pt"}, ValueError, "need data="),
        ({"data": [torch.zeros(3)]}, TypeError, "data must be a tuple of tensors"),
        ({"data": (torch.zeros(3), torch.zeros(4))}, ValueError, "share their first dim"),
        ({"steps": 10, "lr": -1.0}, ValueError, "lr must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(Quadratic(1.0), progress_bar=False, **kwargs)


def test_modules_are_required_for_a_plain_callable():
    with pytest.raises(ValueError, match="modules is required"):
        fit(lambda batch: torch.zeros(()), steps=1)
    with pytest.raises(TypeError, match="modules must be an nn.Module"):
        fit(lambda batch: torch.zeros(()), modules="net", steps=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(lambda batch: torch.zeros(()), modules=nn.ReLU(), steps=1)
