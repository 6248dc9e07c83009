"""Plots: what they draw is checked against known densities and layer outputs, not just run."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions.transforms import AffineTransform

import flowinfer as fi
from flowinfer.plotting import (
    plot_density,
    plot_layers,
    plot_loss,
    plot_samples,
    plot_target_vs_flow,
)
from flowinfer.train import FitResult

pytest.importorskip("matplotlib")


def shifted_flow() -> fi.Flow:
    # x = (1, -2) + (0.5, 1) * z: a Gaussian with a known density and an asymmetric mode.
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    return fi.Flow([AffineTransform(loc, scale, event_dim=1)], dim=2)


def test_density_image_matches_the_flow_density_and_orientation():
    flow = shifted_flow()
    bounds = ((-1.0, 3.0), (-5.0, 1.0))
    res = 41
    fig = plot_density(flow, bounds=bounds, resolution=res)
    image = fig.axes[0].get_images()[0]
    values = torch.as_tensor(image.get_array().data)
    assert values.shape == (res, res)
    assert tuple(image.get_extent()) == (-1.0, 3.0, -5.0, 1.0)
    # Row i is y = ys[i] and column j is x = xs[j] (origin="lower").
    xs, ys = torch.linspace(-1, 3, res), torch.linspace(-5, 1, res)
    i, j = 7, 30
    point = torch.tensor([[xs[j], ys[i]]])
    expected = math.exp(float(flow.log_prob(point)))
    assert float(values[i, j]) == pytest.approx(expected, rel=1e-5)
    row, col = divmod(int(values.argmax()), res)
    assert float(ys[row]) == pytest.approx(-2.0, abs=0.16)
    assert float(xs[col]) == pytest.approx(1.0, abs=0.11)
    log_fig = plot_density(flow, bounds=bounds, resolution=res, log=True)
    log_values = torch.as_tensor(log_fig.axes[0].get_images()[0].get_array().data)
    assert float(log_values[i, j]) == pytest.approx(math.log(expected), rel=1e-5)


def test_samples_scatter_and_data_scatter():
    data = torch.randn(300, 3)
    fig = plot_samples(data, bounds=((-4, 4), (-4, 4)))
    ax = fig.axes[0]
    offsets = torch.as_tensor(ax.collections[0].get_offsets().data)
    assert torch.allclose(offsets, data[:, :2].double())
    assert ax.get_title() == "data" and ax.get_xlim() == (-4.0, 4.0)
    fig = plot_samples(shifted_flow(), n=500, title="model")
    drawn = torch.as_tensor(fig.axes[0].collections[0].get_offsets().data)
    assert drawn.shape == (500, 2) and fig.axes[0].get_title() == "model"
    # The mean of 500 draws of N((1, -2), diag(0.25, 1)) within 4 standard errors.
    se = torch.tensor([0.5, 1.0]) / math.sqrt(500)
    assert ((drawn.mean(0).float() - torch.tensor([1.0, -2.0])).abs() < 4 * se).all()


def test_loss_curves():
    result = FitResult({"train_loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 2.4]},
                       best_epoch=1)
    ax = plot_loss(result).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["validation"].get_ydata()) == [3.1, 2.2, 2.4]
    assert list(lines["best"].get_xdata()) == [1, 1]
    assert ax.get_xlabel() == "epoch"
    ax = plot_loss({"loss": [5.0, 4.0]}, log_y=True).axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"


def test_layers_panels_follow_the_flow():
    torch.manual_seed(0)
    flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,))
    with torch.no_grad():  # move away from the identity so the panels differ
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    n_trainable = sum(any(p.requires_grad for p in layer.parameters()) for layer in flow.layers)
    torch.manual_seed(1)
    fig = plot_layers(flow, n=64, bounds=((-5, 5), (-5, 5)))
    assert len(fig.axes) == 1 + n_trainable
    assert fig.axes[0].get_title() == "base"
    assert len(plot_layers(flow, n=16, skip_static=False).axes) == 1 + len(flow.layers)
    # The last panel shows the flow's outputs for the base draws of the first panel.
    base = torch.as_tensor(fig.axes[0].collections[0].get_offsets().data)
    last = torch.as_tensor(fig.axes[-1].collections[0].get_offsets().data)
    with torch.no_grad():
        expected = flow.transform_with_intermediates(base.float())[-1]
    assert torch.allclose(last.float(), expected, atol=1e-5)


def test_target_vs_flow_normalises_the_target():
    flow = shifted_flow()
    res = 60
    fig = plot_target_vs_flow(lambda x: -0.5 * (x**2).sum(-1) + 7.0, flow,
                              bounds=((-6, 6), (-6, 6)), resolution=res)
    assert [a.get_title() for a in fig.axes] == ["target", "flow"]
    target = torch.as_tensor(fig.axes[0].get_images()[0].get_array().data)
    cell = (12 / (res - 1)) ** 2
    # Normalised on the grid, so it sums to one over the cells; the peak is N(0, I)'s.
    assert float(target.sum()) * cell == pytest.approx(1.0, rel=1e-9)
    assert float(target.max()) == pytest.approx(1 / (2 * math.pi), rel=0.05)


def test_plot_errors():
    flow = shifted_flow()
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow"):
        plot_density("nsf")
    with pytest.raises(ValueError, match="flow must be 2-D"):
        plot_density(fi.build_flow("maf", dim=3, num_layers=1))
    with pytest.raises(ValueError, match=r"bounds must be \(\(xmin, xmax\), \(ymin, ymax\)\)"):
        plot_density(flow, bounds=((1, 0), (0, 1)))
    with pytest.raises(ValueError, match="bounds must be"):
        plot_density(flow, bounds=((0, 1), (0, 1), (0, 1)))
    with pytest.raises(ValueError, match="bounds must be"):
        plot_density(flow, bounds=((0, math.inf), (0, 1)))
    with pytest.raises(TypeError, match="bounds must be"):
        plot_density(flow, bounds=4.0)
    with pytest.raises(TypeError, match="bounds must be"):
        plot_density(flow, bounds=(("a", "b"), (0, 1)))
    with pytest.raises(ValueError, match="resolution must be an integer >= 2, got 1"):
        plot_density(flow, resolution=1)
    with pytest.raises(TypeError, match="resolution must be an integer"):
        plot_density(flow, resolution=20.0)
    with pytest.raises(TypeError, match="log must be True or False"):
        plot_density(flow, log="yes")
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        plot_samples(torch.zeros(5))
    with pytest.raises(TypeError, match="samples_or_flow"):
        plot_samples(object())
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        plot_samples(flow, n=0)
    with pytest.raises(TypeError, match="n must be an integer"):
        plot_samples(flow, n=10.0)
    with pytest.raises(ValueError, match="no loss curve"):
        plot_loss({"lr": [1.0]})
    with pytest.raises(TypeError, match="result must be"):
        plot_loss([1.0, 2.0])
    with pytest.raises(TypeError, match="log_y must be True or False"):
        plot_loss({"loss": [1.0]}, log_y=None)
    with pytest.raises(ValueError, match="ncols must be an integer >= 1, got 0"):
        plot_layers(flow, ncols=0)
    with pytest.raises(TypeError, match="ncols must be an integer"):
        plot_layers(flow, ncols="3")
    with pytest.raises(TypeError, match="skip_static must be True or False"):
        plot_layers(flow, skip_static=1)
    with pytest.raises(TypeError, match="log_density_fn must be callable"):
        plot_target_vs_flow(3, flow)
    with pytest.raises(ValueError, match="context was given"):
        plot_density(flow, context=[1.0])


def test_bounds_may_be_a_tensor_or_numpy_numbers():
    import numpy as np

    flow = shifted_flow()
    for bounds in (torch.tensor([[-4.0, 4.0], [-3.0, 3.0]]),
                   ((np.float32(-4), np.float64(4)), (-3, 3))):
        image = plot_density(flow, bounds=bounds, resolution=10).axes[0].get_images()[0]
        assert tuple(image.get_extent()) == (-4.0, 4.0, -3.0, 3.0)
