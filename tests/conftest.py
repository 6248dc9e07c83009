"""Fixtures shared by several test modules."""

from __future__ import annotations

import pyro
import pytest


@pytest.fixture
def fresh_pyro():
    """An empty Pyro param store and seed 0 for the test, and an empty store after it."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
