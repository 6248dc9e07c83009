"""Every public entry point answers bad input with a clear ValueError/TypeError.

Wrong shapes, NaN/inf, empty data, wrong dtypes, non-tensors, a model with discrete latents
and a target returning NaN: each must be refused early with a message naming the argument
(never a bare AssertionError, a torch internals error, or a silent NaN result). The flow,
registry and transform checks live beside their modules (tests/test_flow.py,
tests/test_registry.py, tests/transforms/), the FlowPrior checks in tests/vae/test_prior.py.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch

import flowinfer as fi

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


def _fit(flow, data, **kw):
    return fi.fit_density(flow, data, **{"epochs": 1, "progress": False, **kw})


# ------------------------------------------------------------------------------ fit_density
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


@pytest.mark.parametrize(("option", "value", "match"), [
    ("epochs", 0, "epochs must be an integer"),
    ("epochs", 2.0, "epochs must be an integer"),
    ("batch_size", -5, "batch_size must be an integer"),
    ("lr", math.nan, "lr must be a positive finite number"),
    ("lr", "fast", "lr must be a positive finite number"),
    ("val_fraction", 1.0, r"val_fraction must be a number in \[0, 1\)"),
    ("clip_grad", math.inf, "clip_grad must be a positive finite number"),
    ("schedule", "linear", "schedule must be one of"),
    ("seed", -1, "seed must be an integer"),
    ("callback", 3, "callback must be callable"),
])
def test_fit_density_bad_options(flow, option, value, match):
    with pytest.raises(ValueError, match=match):
        _fit(flow, torch.randn(20, 2), **{option: value})


def test_fit_density_refuses_non_flows_and_flows_without_inverse():
    with pytest.raises(ValueError, match="flow must be a flowinfer Flow.*got Linear"):
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


# ------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("path", [None, 3, ["f.pt"]])
def test_save_and_load_bad_paths(flow, path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        fi.save(flow, path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        fi.load(path)


def test_save_refuses_non_flow(tmp_path):
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow.*got dict"):
        fi.save({"a": torch.ones(1)}, tmp_path / "x.pt")


# ------------------------------------------------------------------------------ reverse KL
def _iaf(dim: int = 2):
    return fi.build_flow("iaf", dim=dim, **SMALL)


def test_reverse_kl_target_returning_nan_is_refused_before_training():
    def nan_target(x):
        return torch.full(x.shape[:-1], math.nan)

    with pytest.raises(ValueError, match="target returned NaN for 256 of 256 points"):
        fi.fit_reverse_kl(_iaf(), nan_target, steps=5, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fi.estimate_log_z(_iaf(), nan_target, num_samples=64)


@pytest.mark.parametrize("data", [torch.zeros(10, 2, dtype=torch.bool),
                                  np.zeros((10, 2), dtype=complex)])
def test_fit_density_refuses_bool_and_complex_data(flow, data):
    with pytest.raises(TypeError, match="data must hold real numbers"):
        _fit(flow, data)


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


# ------------------------------------------------------------------------------ guides
def _discrete_model():
    pyro.sample("k", pdist.Bernoulli(0.5))
    pyro.sample("z", pdist.Normal(0.0, 1.0))


def _regression(x):
    z = pyro.sample("z", pdist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", pdist.Normal(z.sum(), 1.0), obs=x)


def _svi_step(model, guide, *args):
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    return svi.step(*args)


def test_autoflow_discrete_latents():
    with pytest.raises(ValueError, match=r"continuous latent sites only.*discrete.*\['k'\]"):
        _svi_step(_discrete_model, fi.AutoFlow(_discrete_model))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"flow": "nope"}, ValueError, "unknown flow 'nope'"),
    ({"flow": 3}, TypeError, "flow must be a registered flow name"),
    ({"init_scale": math.nan}, ValueError, "init_scale must be a positive finite"),
    ({"init_scale": -1.0}, ValueError, "init_scale must be a positive finite"),
    ({"scale": "tri"}, ValueError, "scale must be one of"),
])
def test_autoflow_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        fi.AutoFlow(_regression, **kwargs)


def test_autoflow_non_callable_model():
    with pytest.raises(TypeError, match="model must be a callable Pyro model, got int"):
        fi.AutoFlow(3)


def test_autoflow_nan_data_and_nan_target_are_refused():
    with pytest.raises(ValueError, match="site 'x'"):
        _svi_step(_regression, fi.AutoFlow(_regression), torch.tensor([math.nan, 1.0]))

    def nan_model():
        z = pyro.sample("z", pdist.Normal(0.0, 1.0))
        pyro.factor("f", torch.tensor(math.nan) * z)

    with pytest.raises(ValueError, match="nan"):
        _svi_step(nan_model, fi.AutoFlow(nan_model))


def test_diagnostics_bad_input():
    guide = fi.AutoFlow(_regression)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        fi.diagnose(_regression, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        fi.to_inference_data(_regression, guide, x, num_samples=-1)
    with pytest.raises(TypeError, match="model must be a callable Pyro model"):
        fi.diagnose(3, guide)
    with pytest.raises(ValueError, match="discrete latent"):
        fi.diagnose(_discrete_model, fi.AutoFlow(_discrete_model))
