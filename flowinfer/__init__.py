"""flowinfer: normalizing flows as first-class citizens of Pyro.

Example:
    >>> import torch
    >>> import flowinfer as fi
    >>> flow = fi.build_flow("nsf", dim=2, num_layers=2, hidden=(16,))
    >>> flow.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
"""

from __future__ import annotations

import importlib
from typing import Any

from flowinfer import flows as _builtin_flows  # noqa: F401  (registers the built-in names)
from flowinfer import transforms
from flowinfer._version import __version__
from flowinfer.flow import Flow
from flowinfer.registry import available_flows, build_flow, register_flow
from flowinfer.train.state import FitResult

# Heavier entry points load on first use, so `import flowinfer` stays quick and ArviZ,
# matplotlib and friends are only imported by the code paths that need them.
_LAZY = {
    "fit_density": "flowinfer.train.density",
    "fit_reverse_kl": "flowinfer.reverse.fit",
    "estimate_log_z": "flowinfer.reverse.log_z",
    "sampler_flow": "flowinfer.reverse.sampler",
    "importance_resample": "flowinfer.reverse.log_z",
    "importance_summary": "flowinfer.inference.evidence",
    "AutoFlow": "flowinfer.inference.autoflow",
    "AutoAmortizedFlow": "flowinfer.inference.amortized_guide",
    "init_to_median_or_zero": "flowinfer.inference.sites",
    "diagnose": "flowinfer.inference.diagnostics",
    "to_inference_data": "flowinfer.inference.arviz",
    "neutra_mcmc": "flowinfer.inference.neutra",
    "infer": "flowinfer.inference.workflow",
    "FlowPrior": "flowinfer.vae.prior",
    "AmortizedFlowPosterior": "flowinfer.vae.posterior",
    "iwae_bound": "flowinfer.vae.bounds",
    "save": "flowinfer.io",
    "load": "flowinfer.io",
    "DataParallelSVI": "flowinfer.inference.svi",
    # neural posterior estimation (issue 15)
    "NPE": "flowinfer.npe.estimator",
    "Simulations": "flowinfer.npe.simulations",
    "simulate": "flowinfer.npe.simulate",
    "sbc": "flowinfer.npe.calibration",
    "expected_coverage": "flowinfer.npe.calibration",
    "posterior_predictive_check": "flowinfer.npe.calibration",
}
# Subpackages and modules reachable as attributes (``fi.datasets.make_toy``); the flat
# module names of release 0.1 map to their deprecated shims, which warn on import.
_LAZY_MODULES = {
    "data": "flowinfer.data",
    "datasets": "flowinfer.data.datasets",
    "targets": "flowinfer.data.targets",
    "inference": "flowinfer.inference",
    "npe": "flowinfer.npe",
    "vae": "flowinfer.vae",
    "plotting": "flowinfer.plotting",
    "io": "flowinfer.io",
    "splines": "flowinfer.splines",
    "nn": "flowinfer.nn",
    "checks": "flowinfer.checks",
    "train": "flowinfer.train",
    "reverse": "flowinfer.reverse",
    **{name: f"flowinfer.{name}" for name in (
        "diagnostics", "guides", "evidence", "fit", "reverse_kl", "priors", "amortized",
        "distributed", "training", "laplace")},
}

__all__ = [
    "Flow",
    "FitResult",
    "available_flows",
    "build_flow",
    "register_flow",
    "transforms",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    raise AttributeError(f"module 'flowinfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))
