"""Smoke tests of the Glow examples' command lines: one short epoch, every output written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import flowinfer as fi
from flowinfer.data.datasets import DataNotFoundError, load_mnist

ROOT = Path(__file__).resolve().parents[1]


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def check_outputs(out: Path, glow_name: str) -> dict:
    for name in ("samples.png", "interpolation.png", "results.md", "glow.pt"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())["results"]
    assert glow_name in results
    assert all(r["test_bpd"] > 0 for r in results.values())
    glow = results[glow_name]
    assert glow["test_max_bpd"] >= glow["test_bpd"]
    flow = fi.load(out / "glow.pt")
    assert flow.sample(2, temperature=0.7).shape[1:] == flow.event_shape
    return results


def test_glow_digits_example_runs_with_per_level_steps_and_widths(tmp_path):
    done = run_example("glow_digits.py", "--epochs", "1", "--no-vector", "--out",
                       str(tmp_path), "--steps-per-level", "1,2", "--hidden-channels", "8,16",
                       "--no-progress")
    assert done.returncode == 0, done.stderr
    results = check_outputs(tmp_path, "Glow (L=2, K=1/2, 8/16 channels)")
    assert len(results) == 2  # the Gaussian and the Glow


def test_glow_example_argument_errors(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    from glow_digits import parse_args

    defaults = dict(out="x", epochs=1, minutes=1.0, levels=2, steps=4, hidden_channels=64)
    args = parse_args(["--steps-per-level", "4,8", "--hidden-channels", "32"], **defaults)
    assert args.steps_per_level == (4, 8) and args.hidden_channels == 32
    for argv, message in [(["--steps-per-level", "1,2,3"], "one value per level (--levels 2)"),
                          (["--hidden-channels", "8,0"], "expected positive integers"),
                          (["--steps-per-level", "4,x"], "comma-separated integers")]:
        with pytest.raises(SystemExit):
            parse_args(argv, **defaults)
        assert message in capsys.readouterr().err


def test_glow_mnist_example_runs(tmp_path):
    try:
        load_mnist()
    except DataNotFoundError:
        pytest.skip("the MNIST test images (../shared/data/mnist) are not here")
    done = run_example("glow_mnist.py", "--epochs", "1", "--minutes", "0.05", "--no-vector",
                       "--out", str(tmp_path), "--steps-per-level", "1", "--hidden-channels",
                       "8", "--no-progress")
    assert done.returncode == 0, done.stderr
    check_outputs(tmp_path, "Glow (L=2, K=1, 8 channels)")


def test_glow_variants_benchmark_runs_both_coupling_variants(tmp_path):
    try:
        load_mnist()
    except DataNotFoundError:
        pytest.skip("the MNIST test images (../shared/data/mnist) are not here")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "glow_variants.py"), "--minutes", "0.03",
         "--epochs", "1", "--steps", "1", "--hidden", "8", "--base", "standard",
         "--coupling-scale", "one-sided", "--conditioner-actnorm", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["args"]["coupling_scale"] == "one-sided"
    assert result["test_max_bpd"] >= result["test_median_bpd"] > 0
    assert (tmp_path / "samples.png").is_file()
