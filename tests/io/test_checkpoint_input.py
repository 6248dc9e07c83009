"""fi.save and fi.load refuse bad input early, naming the argument."""

from __future__ import annotations

import pytest
import torch

import flowinfer as fi

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


@pytest.mark.parametrize("path", [None, 3, ["f.pt"]])
def test_save_and_load_bad_paths(flow, path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        fi.save(flow, path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        fi.load(path)


def test_save_refuses_non_flow(tmp_path):
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow.*got dict"):
        fi.save({"a": torch.ones(1)}, tmp_path / "x.pt")
