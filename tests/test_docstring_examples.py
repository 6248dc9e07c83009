"""Every docstring example in the package runs and prints what it claims (the style guide asks
for runnable examples; this keeps them honest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pyro
import pytest
import torch

import flowinfer

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(flowinfer.__path__, prefix="flowinfer.")
    if not info.name.startswith("flowinfer.__main__")
)


@pytest.mark.parametrize("name", ["flowinfer", *MODULES])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    pyro.clear_param_store()
    torch.manual_seed(0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):  # each example sees its module's globals
        runner.run(test, out=lambda text: print(text, end=""))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
