"""The `flowinfer` command, run in-process on tiny budgets (and once as a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import flowinfer as fi
from flowinfer.cli import main

COMMANDS = ("demo", "fit", "sample", "list", "bench")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse: --help and argument errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err


def test_sample_an_image_flow_keeps_its_shape_in_npy_and_flattens_csv(capsys, tmp_path):
    torch.manual_seed(0)
    flow = fi.build_flow("glow", shape=(1, 4, 4), levels=1, steps_per_level=1,
                         hidden_channels=4)
    model = tmp_path / "glow.pt"
    fi.save(flow, model)
    npy, csv = tmp_path / "s.npy", tmp_path / "s.csv"
    code, out, err = run(capsys, "sample", str(model), "-n", "3", "--out", str(npy),
                         "--temperature", "0.7")
    assert code == 0, err
    assert "shape (1, 4, 4)" in out
    images = np.load(npy)
    assert images.shape == (3, 1, 4, 4)
    assert run(capsys, "sample", str(model), "-n", "3", "--out", str(csv),
               "--temperature", "0.7")[0] == 0
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert rows.shape == (3, 16)
    np.testing.assert_allclose(rows, images.reshape(3, 16), rtol=1e-6, atol=1e-7)
    code, _, err = run(capsys, "sample", str(model), "--out", str(tmp_path / "no" / "s.npy"))
    assert_one_line_error(code, err, "output folder does not exist")


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == sorted(fi.available_flows())
    assert "no inverse" in out  # planar & co. are marked


def test_demo_writes_figures_and_report(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--n", "300", "--epochs", "2", "--flow", "realnvp",
                         "--layers", "2", "--hidden", "16", "--out", str(out_dir),
                         "--dataset", "8gaussians")
    assert code == 0, err
    for name in ("density.png", "samples.png", "layers.png", "loss.png", "report.txt"):
        assert (out_dir / name).stat().st_size > 0
    report = (out_dir / "report.txt").read_text()
    assert "test log-likelihood" in report and "entropy of the data" in report
    assert str(out_dir.resolve()) in out
    # The saved model reproduces the reported test log-likelihood.
    flow = fi.load(out_dir / "model.pt")
    test = fi.datasets.make_toy("8gaussians", 300, seed=1)
    with torch.no_grad():
        ll = float(flow.log_prob(test).double().mean())
    assert f"test log-likelihood: {ll:.4f}" in report


def test_fit_then_sample_csv_and_npy(capsys, tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(400, 3, generator=g) * 2 + 1).numpy()
    data = tmp_path / "data.csv"
    np.savetxt(data, rows, delimiter=",", header="a,b,c", comments="")
    model = tmp_path / "model.pt"
    code, out, err = run(capsys, "fit", str(data), "--flow", "maf", "--epochs", "3",
                         "--layers", "2", "--hidden", "16", "--out", str(model))
    assert code == 0, err
    assert model.is_file() and "wrote" in out
    flow = fi.load(model)
    assert flow.dim == 3 and flow.config["name"] == "maf"

    samples_csv = tmp_path / "s.csv"
    code, _, err = run(capsys, "sample", str(model), "-n", "50", "--out", str(samples_csv))
    assert code == 0, err
    got = np.loadtxt(samples_csv, delimiter=",", skiprows=1)
    assert got.shape == (50, 3) and np.isfinite(got).all()
    # Same seed, same samples; NPY output holds the same numbers.
    samples_npy = tmp_path / "s.npy"
    assert run(capsys, "sample", str(model), "-n", "50", "--out", str(samples_npy))[0] == 0
    assert np.allclose(np.load(samples_npy), got, rtol=1e-6, atol=1e-6)
    code, out, _ = run(capsys, "sample", str(model), "-n", "4")
    assert code == 0 and len(out.strip().splitlines()) == 4

    npy = tmp_path / "data.npy"
    np.save(npy, rows[:, 0])  # 1-D: one column
    code, _, err = run(capsys, "fit", str(npy), "--flow", "realnvp", "--epochs", "1",
                       "--layers", "1", "--out", str(tmp_path / "m1.pt"))
    assert code == 0, err
    assert fi.load(tmp_path / "m1.pt").dim == 1


def test_bench(capsys):
    code, out, _ = run(capsys, "bench", "--flows", "realnvp", "maf", "--dim", "2",
                       "--batch", "32", "--repeats", "2")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()[2:4]} == {"realnvp", "maf"}
    assert "benchmarks/speed.py" in out


def test_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "fit", str(tmp_path / "missing.csv"))
    assert_one_line_error(code, err, "data file not found", "missing.csv")

    bad = tmp_path / "words.csv"
    bad.write_text("a,b\n1,2\nx,y\n")
    code, _, err = run(capsys, "fit", str(bad), "--out", str(tmp_path / "m.pt"))
    assert_one_line_error(code, err, "cannot read", "words.csv")

    other = tmp_path / "data.json"
    other.write_text("[]")
    code, _, err = run(capsys, "fit", str(other))
    assert_one_line_error(code, err, "expected a .csv or .npy file")

    nan = tmp_path / "nan.csv"
    nan.write_text("1,2\nnan,3\n4,5\n")
    code, _, err = run(capsys, "fit", str(nan), "--out", str(tmp_path / "m.pt"))
    assert_one_line_error(code, err, "1 rows contain NaN")

    good = tmp_path / "good.csv"
    np.savetxt(good, np.random.default_rng(0).normal(size=(20, 2)), delimiter=",")
    code, _, err = run(capsys, "fit", str(good), "--flow", "nope")
    assert_one_line_error(code, err, "unknown flow 'nope'")
    code, _, err = run(capsys, "fit", str(good), "--flow", "planar")
    assert_one_line_error(code, err, "no inverse")
    code, _, err = run(capsys, "fit", str(good), "--out", str(tmp_path / "no" / "m.pt"))
    assert_one_line_error(code, err, "output folder does not exist")

    code, _, err = run(capsys, "fit", str(good), "--epochs", "0")
    assert code == 2 and "expected a positive integer" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "demo", "--dataset", "spiral")
    assert code == 2 and "invalid choice" in err

    code, _, err = run(capsys, "sample", str(tmp_path / "none.pt"))
    assert_one_line_error(code, err, "model file not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    code, _, err = run(capsys, "sample", str(junk))
    assert_one_line_error(code, err, "junk.pt")
    code, _, err = run(capsys, "bench", "--flows", "nope")
    assert_one_line_error(code, err, "unknown flow")
    code, _, err = run(capsys, "bench", "--flows", "maf", "planar")
    assert_one_line_error(code, err, "flows without an inverse cannot score data: ['planar']")


def test_fit_asks_the_flow_whether_it_has_an_inverse(capsys, tmp_path, monkeypatch):
    # A registered name whose spec claims an inverse (the default) but whose layers have
    # none: the CLI must ask the built flow, not the registry entry.
    from flowinfer import registry
    from flowinfer.flows import planar

    spec = registry.FlowSpec("planar-unflagged", planar, "planar without the flag")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    assert registry.get_flow_spec(spec.name).has_inverse
    good = tmp_path / "good.csv"
    np.savetxt(good, np.random.default_rng(0).normal(size=(20, 2)), delimiter=",")
    code, _, err = run(capsys, "fit", str(good), "--flow", spec.name)
    assert_one_line_error(code, err, "'planar-unflagged' has no inverse")


def test_console_entry_point_runs_as_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "flowinfer.cli", "sample", "missing.pt"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "flowinfer sample: error: model file not found: missing.pt"
