"""The public names: every one in ``flowinfer.__all__`` loads without a deprecation warning, and
the release-0.1 module paths still import, with one."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import flowinfer as fi


def test_public_names_load_without_deprecation_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in fi.__all__:
            assert getattr(fi, name) is not None
        for name in ("datasets", "targets", "io", "train", "reverse", "inference", "vae"):
            assert getattr(fi, name) is not None


@pytest.mark.parametrize("old, name", [
    ("flowinfer.fit", "fit_density"), ("flowinfer.training", "FitResult"),
    ("flowinfer.distributed", "DataParallelSVI"), ("flowinfer.guides", "AutoFlow"),
    ("flowinfer.diagnostics", "diagnose"), ("flowinfer.evidence", "importance_summary"),
    ("flowinfer.laplace", "laplace_start"), ("flowinfer.priors", "FlowPrior"),
    ("flowinfer.amortized", "iwae_bound"), ("flowinfer.reverse_kl", "PyroModelTarget"),
])
def test_old_paths_import_with_a_deprecation_warning(monkeypatch, old, name):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match="moved to"):
        module = importlib.import_module(old)
    assert callable(getattr(module, name))
