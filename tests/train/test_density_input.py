"""fit_density refuses bad input early with a clear TypeError/ValueError naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowinfer as fi

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


def _fit(flow, data, **kw):
    return fi.fit_density(flow, data, **{"epochs": 1, "progress": False, **kw})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_fit_density_non_finite_rows(flow, bad):
    data = torch.randn(20, 2)
    data[3, 1] = bad
    data[7, 0] = bad
    with pytest.raises(ValueError, match="data must be finite: 2 of 20 rows contain NaN or inf"):
        _fit(flow, data)


def test_fit_density_non_finite_validation_and_context():
    cond = fi.build_flow("maf", dim=2, context_dim=1, **SMALL)
    x, c = torch.randn(20, 2), torch.randn(20, 1)
    c[0, 0] = math.nan
    with pytest.raises(ValueError, match="context must be finite"):
        _fit(cond, x, context=c)
    flow = fi.build_flow("maf", dim=2, **SMALL)
    val = torch.randn(5, 2)
    val[1, 1] = math.inf
    with pytest.raises(ValueError, match="val_data must be finite"):
        _fit(flow, torch.randn(20, 2), val_data=val)


@pytest.mark.parametrize("data", [torch.zeros(0, 2), np.zeros((0, 2)), []])
def test_fit_density_empty_data(flow, data):
    with pytest.raises(ValueError, match="data"):
        _fit(flow, data)


@pytest.mark.parametrize(("data", "match"), [
    (torch.zeros(10), r"2-D.*reshape\(-1, 1\)"),
    (torch.zeros(10, 3), "must have 2 columns"),
    (torch.zeros(10, 2, 1), "2-D"),
    (torch.zeros(()), "2-D"),
])
def test_fit_density_wrong_shapes(flow, data, match):
    with pytest.raises(ValueError, match=match):
        _fit(flow, data)


@pytest.mark.parametrize("data", ["abc", None, {"x": 1}, np.array([["a", "b"]]), object()])
def test_fit_density_non_numeric_data(flow, data):
    with pytest.raises(ValueError, match="data must be a numeric array or tensor"):
        _fit(flow, data)


def test_fit_density_too_few_rows_for_validation(flow):
    with pytest.raises(ValueError, match="too few to hold out"):
        _fit(flow, torch.randn(1, 2), val_fraction=0.5)


def test_fit_density_integer_and_float64_data_are_converted(flow):
    # Not errors: numeric data of another dtype is converted to the flow's dtype.
    for data in (torch.randint(-3, 3, (40, 2)), torch.randn(40, 2, dtype=torch.float64)):
        result = _fit(flow, data)
        assert math.isfinite(result.best_loss)


@pytest.mark.parametrize(("option", "value", "error", "match"), [
    ("epochs", 0, ValueError, "epochs must be an integer"),
    ("epochs", 2.0, TypeError, "epochs must be an integer"),
    ("batch_size", -5, ValueError, "batch_size must be an integer"),
    ("lr", math.nan, ValueError, "lr must be a finite number > 0"),
    ("lr", "fast", TypeError, "lr must be a finite number > 0"),
    ("val_fraction", 1.0, ValueError, r"val_fraction must be a finite number in \[0, 1\)"),
    ("clip_grad", math.inf, ValueError, "clip_grad must be a finite number > 0"),
    ("schedule", "linear", ValueError, "schedule must be one of"),
    ("seed", -1, ValueError, "seed must be an integer"),
    ("callback", 3, TypeError, "callback must be callable"),
])
def test_fit_density_bad_options(flow, option, value, error, match):
    with pytest.raises(error, match=match):
        _fit(flow, torch.randn(20, 2), **{option: value})


def test_fit_density_refuses_non_flows_and_flows_without_inverse():
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow.*got Linear"):
        _fit(torch.nn.Linear(2, 2), torch.randn(20, 2))
    with pytest.raises(ValueError, match="'planar' has no analytic inverse"):
        _fit(fi.build_flow("planar", dim=2), torch.randn(20, 2))


@pytest.mark.parametrize(("option", "value", "error", "match"), [
    ("checkpoint", 1.5, TypeError, "checkpoint must be a str or os.PathLike"),
    ("resume", 7, TypeError, "resume must be a str or os.PathLike"),
    ("distributed", "yes", TypeError, "distributed must be True or False"),
])
def test_fit_density_bad_scale_out_options(flow, option, value, error, match):
    with pytest.raises(error, match=match):
        _fit(flow, torch.randn(20, 2), **{option: value})


@pytest.mark.parametrize("data", [torch.zeros(10, 2, dtype=torch.bool),
                                  np.zeros((10, 2), dtype=complex)])
def test_fit_density_refuses_bool_and_complex_data(flow, data):
    with pytest.raises(TypeError, match="data must hold real numbers"):
        _fit(flow, data)
