"""Data sets: shapes, seed determinism, exact densities, MNIST parsing, dequantization.

Statistical checks use fixed seeds and bounds of 4 standard errors of the estimator, so a
correct implementation fails them with probability below 1e-4 (and, seeded, never flakes).
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flowinfer.data.datasets import (
    TOY_DATASETS,
    DataNotFoundError,
    LogitPreprocessor,
    default_data_root,
    load_digits,
    load_mnist,
    make_toy,
    split,
    toy_entropy,
    toy_log_prob,
)


# ------------------------------------------------------------------------------ toy sets
@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_dtype_and_seed(name):
    x = make_toy(name, 1001, seed=3)
    assert x.shape == (1001, 2)
    assert x.dtype == torch.get_default_dtype()
    assert torch.isfinite(x).all()
    assert torch.equal(x, make_toy(name, 1001, seed=3))
    assert not torch.equal(x, make_toy(name, 1001, seed=4))
    assert make_toy(name, 7, seed=0, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_rows_are_shuffled(name):
    # The first half and the second half must be samples of the same distribution: their
    # means agree within 4 standard errors of the difference.
    x = make_toy(name, 4000, seed=0).double()
    a, b = x[:2000], x[2000:]
    se = torch.sqrt(a.var(0) / 2000 + b.var(0) / 2000)
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all()


def test_toy_respects_global_seed():
    torch.manual_seed(5)
    a = make_toy("moons", 10)
    torch.manual_seed(5)
    assert torch.equal(a, make_toy("moons", 10))


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_exact_density_integrates_to_one(name):
    # Midpoint rule on [-6, 6]^2 with h = 0.02: the checkerboard's edges fall on cell
    # boundaries (exact); for Gaussians with sigma = 0.35 = 18 h the rule's error is
    # exponentially small, and the tails beyond 6 hold < 1e-20 of the mass.
    m = 600
    h = 12 / m
    axis = -6 + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    logp = toy_log_prob(name, torch.stack([gx, gy], -1))
    assert logp.shape == (m, m)
    assert float(torch.exp(logp).sum() * h * h) == pytest.approx(1.0, abs=1e-6)


def test_samples_follow_the_exact_density():
    # -mean log p over samples estimates the entropy with standard error sd / sqrt(n).
    for name in ("8gaussians", "checkerboard"):
        x = make_toy(name, 50000, seed=11).double()
        logp = toy_log_prob(name, x)
        assert torch.isfinite(logp).all(), f"{name}: a sample lies outside the support"
        se = float(logp.std()) / math.sqrt(x.shape[0])
        assert abs(float(-logp.mean()) - toy_entropy(name)) < 4 * se + 1e-12
    # Checkerboard: uniform over its 8 squares (each share 1/8 within 4 SE).
    x = make_toy("checkerboard", 40000, seed=2)
    cell = torch.floor((x + 4) / 2).long()
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).double() / 40000
    occupied = counts[counts > 0]
    assert occupied.numel() == 8
    assert ((occupied - 1 / 8).abs() < 4 * math.sqrt(1 / 8 * 7 / 8 / 40000)).all()


def test_entropies():
    assert toy_entropy("checkerboard") == pytest.approx(math.log(32))
    # A mixture of 8 equally weighted, well separated Gaussians: just below the entropy of
    # the labelled mixture, ln 8 + ln(2 pi e sigma^2), by less than a hundredth of a nat.
    sigma2 = 0.125
    upper = math.log(8) + math.log(2 * math.pi * math.e * sigma2)
    assert upper - 0.01 < toy_entropy("8gaussians") < upper


def test_toy_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        make_toy("spiral", 10)
    with pytest.raises(TypeError, match="name must be a str"):
        make_toy(3, 10)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        make_toy("moons", 0)
    with pytest.raises(TypeError, match="n must be an integer >= 1, got float 10.0"):
        make_toy("moons", 10.0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0 or None, got -1"):
        make_toy("moons", 10, seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        make_toy("moons", 10, seed="0")
    with pytest.raises(TypeError, match="dtype"):
        make_toy("moons", 10, dtype=torch.int64)
    with pytest.raises(ValueError, match="name must be one of"):
        toy_log_prob("moons", torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        toy_log_prob("8gaussians", torch.zeros(4, 3))
    with pytest.raises(TypeError, match="name must be a str"):
        toy_entropy(None)


# ------------------------------------------------------------------------------ split
def test_split():
    data = torch.arange(100)
    train, val, test = split(data, (0.8, 0.1, 0.1), seed=1)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert torch.equal(torch.sort(torch.cat([train, val, test])).values, data)
    assert torch.equal(train, split(data, (0.8, 0.1, 0.1), seed=1)[0])
    with pytest.raises(ValueError, match="fractions must be positive numbers summing to 1"):
        split(data, (0.5, 0.4))
    with pytest.raises(ValueError, match="fractions must be positive"):
        split(data, (1.5, -0.5))
    with pytest.raises(TypeError, match="fractions must be a sequence of numbers"):
        split(data, ("0.5", "0.5"))
    with pytest.raises(TypeError, match="fractions must be a sequence of numbers"):
        split(data, 1.0)
    with pytest.raises(TypeError, match="data must be a tensor"):
        split([1, 2, 3])
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        split(data, seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        split(data, seed=0.5)


# ------------------------------------------------------------------------------ digits
def test_load_digits():
    pytest.importorskip("sklearn")
    values, labels = load_digits()
    assert values.shape == (1797, 64) and values.dtype == torch.uint8
    assert int(values.min()) == 0 and int(values.max()) == 16
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))


# ------------------------------------------------------------------------------ preprocessing
def test_logit_preprocessor_log_jacobian_matches_autograd():
    pre = LogitPreprocessor(levels=17, alpha=0.05)
    s = pre.dequantize(torch.randint(0, 17, (3, 5)), torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    y, ladj = pre.transform(s), pre.transform.log_abs_det_jacobian(s, pre.transform(s))
    # The map is elementwise, so log|det| is the sum of log derivatives.
    s_req = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(pre.transform(s_req).sum(), s_req)
    assert torch.allclose(ladj, grad.log().sum(-1))
    assert y.shape == (3, 5) and ladj.shape == (3,)


def test_logit_preprocessor_any_trailing_shape_and_decode():
    pre = LogitPreprocessor(levels=256, event_dim=3)
    values = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    y, ladj = pre(values, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert y.shape == (4, 1, 6, 6) and ladj.shape == (4,)
    assert torch.isfinite(y).all()
    assert torch.equal(pre.decode(y), values.long())
    per_image = LogitPreprocessor(levels=256, event_dim=1)(
        values.reshape(4, -1), generator=torch.Generator().manual_seed(1),
        dtype=torch.float64)[1]
    assert torch.allclose(ladj, per_image)


def test_bits_per_dim_is_a_density_of_the_dequantized_values():
    # With q = N(0, 1) on y, p(s) = q(T(s)) |T'(s)| = 2^(-bpd) must integrate over
    # s in [0, levels) to the mass q puts on T's range, [logit(alpha), logit(1 - alpha)].
    alpha, levels = 0.05, 4
    pre = LogitPreprocessor(levels=levels, alpha=alpha)
    m = 200000
    s = (torch.arange(m, dtype=torch.float64) + 0.5) * (levels / m)
    y = pre.transform(s[:, None])
    ladj = pre.transform.log_abs_det_jacobian(s[:, None], y)
    log_q = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(-1)
    bpd = pre.bits_per_dim(log_q, ladj, 1)
    mass = float((2.0 ** (-bpd)).sum() * (levels / m))
    edge = math.log((1 - alpha) / alpha)
    expected = math.erf(edge / math.sqrt(2))
    assert mass == pytest.approx(expected, abs=1e-6)


def test_logit_preprocessor_errors():
    with pytest.raises(ValueError, match="levels must be an integer >= 2, got 1"):
        LogitPreprocessor(levels=1)
    with pytest.raises(TypeError, match="levels must be an integer"):
        LogitPreprocessor(levels=17.0)
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \[0, 0.5\)"):
        LogitPreprocessor(levels=17, alpha=0.5)
    with pytest.raises(TypeError, match="alpha must be a finite number"):
        LogitPreprocessor(levels=17, alpha="0.1")
    with pytest.raises(ValueError, match="event_dim must be an integer >= 0"):
        LogitPreprocessor(levels=17, event_dim=-1)
    with pytest.raises(TypeError, match="event_dim must be an integer"):
        LogitPreprocessor(levels=17, event_dim=True)
    pre = LogitPreprocessor(levels=17)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 16\]"):
        pre(torch.tensor([[0, 17]]))
    with pytest.raises(ValueError, match="integers"):
        pre(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="same shape"):
        pre.bits_per_dim(torch.zeros(3), torch.zeros(4), 64)
    with pytest.raises(ValueError, match="num_dims must be an integer >= 1"):
        pre.bits_per_dim(torch.zeros(3), torch.zeros(3), 0)
    with pytest.raises(TypeError, match="num_dims must be an integer"):
        pre.bits_per_dim(torch.zeros(3), torch.zeros(3), 64.0)
    with pytest.raises(TypeError, match="ladj must be a torch.Tensor"):
        pre.bits_per_dim(torch.zeros(3), [0.0, 0.0, 0.0], 64)


# ------------------------------------------------------------------------------ MNIST
def _idx_zip(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data-idx", header + array.astype(np.uint8).tobytes())


def test_load_mnist_parses_idx_zips(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28))
    labels = rng.integers(0, 10, 5)
    _idx_zip(tmp_path / "t10k-images-idx3-ubyte.zip", images)
    _idx_zip(tmp_path / "t10k-labels-idx1-ubyte.zip", labels)
    got_images, got_labels = load_mnist(tmp_path)
    assert got_images.dtype == torch.uint8 and got_labels.dtype == torch.int64
    assert np.array_equal(got_images.numpy(), images)
    assert np.array_equal(got_labels.numpy(), labels)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte.zip") as info:
        load_mnist(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "t10k-images-idx3-ubyte.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        load_mnist(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x", bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))  # says 9 values, has 2
    (tmp_path / "t10k-images-idx3-ubyte.zip").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="header says shape"):
        load_mnist(tmp_path)
    with pytest.raises(TypeError, match="root"):
        load_mnist(3)


def test_default_data_root_is_the_shared_folder_beside_the_repository(monkeypatch):
    import flowinfer

    monkeypatch.delenv("FLOWINFER_DATA", raising=False)
    repo = Path(flowinfer.__file__).resolve().parents[1]
    assert default_data_root() == repo.parent / "shared" / "data"
    monkeypatch.setenv("FLOWINFER_DATA", "/some/where")
    assert default_data_root() == Path("/some/where")


def test_old_import_path_still_works(monkeypatch):
    import importlib
    import sys

    import flowinfer
    import flowinfer.data.datasets as new

    # Another test may have imported the shim already; forget it so that it runs (and warns).
    monkeypatch.delitem(sys.modules, "flowinfer.datasets", raising=False)
    with pytest.warns(DeprecationWarning, match="flowinfer.datasets moved"):
        old = importlib.import_module("flowinfer.datasets")
    assert flowinfer.datasets is new
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name)


def test_load_mnist_real_files():
    folder = default_data_root() / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.zip").is_file():
        pytest.skip(f"MNIST test images not found in {folder} (see shared/data/README.md)")
    images, labels = load_mnist()
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,)
    assert set(labels.tolist()) == set(range(10))
    assert int(images.max()) == 255 and int(images.min()) == 0
