"""Checkpoints: round trips, clear errors for bad files, atomic writes, resuming training."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as pdist
import pytest
import torch

import flowinfer as fi
from flowinfer import io as fio

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"num_layers": 2, "hidden": (8,)}


def _small(name: str, **kw):
    hyper = {} if name in ("planar", "radial", "householder", "sylvester", "bnaf") else SMALL
    if name == "bnaf":
        hyper = {"num_layers": 1}
    return fi.build_flow(name, dim=3, **hyper, **kw)


def _same_samples(a, b) -> bool:
    torch.manual_seed(0)
    xa = a.sample((7,))
    torch.manual_seed(0)
    xb = b.sample((7,))
    return torch.equal(xa, xb)


def _perturb(flow) -> None:
    # A fresh flow is the identity; give it non-trivial parameters so a round trip that
    # dropped or mixed them up would show.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", sorted(fi.available_flows()))
def test_every_registered_flow_round_trips(name, tmp_path):
    flow = _small(name)
    _perturb(flow)
    path = fi.save(flow, tmp_path / "f.pt")
    loaded = fi.load(path)
    assert not loaded.training
    assert loaded.config == flow.config
    assert _same_samples(flow.eval(), loaded)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_float64_learnable_conditional_flow_round_trips(tmp_path):
    flow = fi.build_flow("nsf", dim=2, context_dim=3, base="learnable", **SMALL).double()
    _perturb(flow)
    loaded = fi.load(fi.save(flow, str(tmp_path / "f.pt")))
    assert loaded.base_loc.dtype == torch.float64
    x, c = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(loaded.log_prob(x, c), flow.eval().log_prob(x, c))


def test_checkpoint_records_versions_and_extra(tmp_path):
    flow = fi.build_flow("maf", dim=2, **SMALL)
    fi.save(flow, tmp_path / "f.pt", extra={"epoch": 3, "note": ("a", 1.5), "t": torch.ones(2)})
    ckpt = fio.load_checkpoint(tmp_path / "f.pt")
    assert ckpt["format"] == fio.FORMAT and ckpt["format_version"] == fio.FORMAT_VERSION
    assert ckpt["flowinfer_version"] == fi.__version__
    assert ckpt["torch_version"] == str(torch.__version__)
    assert ckpt["config"]["hyper"] == {"num_layers": 2, "hidden": [8]}
    assert ckpt["extra"]["epoch"] == 3 and ckpt["extra"]["note"] == ["a", 1.5]
    assert torch.equal(ckpt["extra"]["t"], torch.ones(2))


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": fio.FORMAT, "payload": Evil()}, f)
    with pytest.raises(ValueError, match="not a flowinfer checkpoint.*weights_only"):
        fi.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------ priors, guides
def test_flow_prior_round_trips(tmp_path):
    prior = fi.FlowPrior(3, flow="nsf", **SMALL)
    _perturb(prior)
    loaded = fi.load(fi.save(prior, tmp_path / "prior.pt"))
    assert type(loaded) is type(prior) and loaded.dim == 3
    z = torch.randn(6, 3)
    assert torch.equal(loaded.log_prob(z), prior.eval().log_prob(z))


def _model(x):
    z = pyro.sample("z", pdist.Normal(torch.zeros(2), 1.0).to_event(1))
    s = pyro.sample("s", pdist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", pdist.Normal(z.sum(), s), obs=x)


@pytest.mark.parametrize("warm_start", ["laplace", None])
def test_autoflow_guide_round_trips_with_its_model(tmp_path, warm_start):
    x = torch.randn(20) + 1.0
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = fi.AutoFlow(_model, flow="iaf", scale="full", warm_start=warm_start, **SMALL)
    guide(x)
    # The Laplace start wins on this near-Gaussian posterior; the buffers must travel.
    assert (guide.warm_scale_tril is not None) == (warm_start == "laplace")
    svi = pyro.infer.SVI(_model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(5):
        svi.step(x)
    path = fi.save(guide, tmp_path / "guide.pt")
    pyro.clear_param_store()
    loaded = fi.load(path, model=_model, model_args=(x,))
    assert type(loaded) is type(guide)
    assert loaded.state_dict().keys() == guide.state_dict().keys()
    for key, value in guide.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    pyro.set_rng_seed(1)
    expected = guide(x)
    pyro.set_rng_seed(1)
    got = loaded(x)
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    with pytest.raises(ValueError, match="holds an AutoFlow guide: pass model="):
        fi.load(path)
    with pytest.raises(ValueError, match="model= was given but .* holds a flow"):
        fi.load(fi.save(fi.build_flow("maf", dim=2, **SMALL), tmp_path / "f.pt"), model=_model)


def test_guide_without_parameters_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="no parameters yet: call it once"):
        fi.save(fi.AutoFlow(_model), tmp_path / "guide.pt")


# ------------------------------------------------------------------------------ bad files
@pytest.fixture
def saved(tmp_path):
    flow = fi.build_flow("realnvp", dim=2, **SMALL)
    return flow, fi.save(flow, tmp_path / "good.pt")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt is not a readable checkpoint \(corrupt, "
                                         r"truncated"):
        fi.load(cut)


def test_empty_and_random_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(os.urandom(512))
    for name in ("empty.pt", "noise.pt"):
        with pytest.raises(ValueError, match=f"{name} is not a"):
            fi.load(tmp_path / name)


@pytest.mark.parametrize("content", [torch.zeros(3), {"state_dict": {}}, [1, 2]])
def test_file_from_another_program(content, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="not a flowinfer checkpoint.*fi.save"):
        fi.load(path)


def _rewrite(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def test_newer_format_version(saved):
    _, path = saved
    _rewrite(path, lambda c: c.update(format_version=fio.FORMAT_VERSION + 1,
                                      flowinfer_version="9.0"))
    with pytest.raises(ValueError, match="format_version 2, newer.*flowinfer 9.0: upgrade"):
        fi.load(path)


def test_mismatched_shapes(saved):
    _, path = saved
    _rewrite(path, lambda c: c["config"]["hyper"].update(hidden=[16]))
    with pytest.raises(ValueError, match="saved parameters do not fit flow 'realnvp'.*size"):
        fi.load(path)


def test_unregistered_flow_name(saved):
    _, path = saved
    _rewrite(path, lambda c: c["config"].update(name="not-registered"))
    with pytest.raises(ValueError, match="'not-registered' is not registered.*register_flow"):
        fi.load(path)


def test_broken_config(saved):
    _, path = saved
    _rewrite(path, lambda c: c["config"].update(dim="two"))
    with pytest.raises(ValueError, match=r"config\['dim'\] must be a int"):
        fi.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        fi.load(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="is a folder"):
        fi.load(tmp_path)


def test_save_rejects_bad_arguments(tmp_path):
    flow = fi.build_flow("maf", dim=2, **SMALL)
    with pytest.raises(TypeError, match="flow must be a flowinfer Flow.*got Linear"):
        fi.save(torch.nn.Linear(2, 2), tmp_path / "f.pt")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        fi.save(flow, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fi.save(flow, tmp_path / "no" / "f.pt")
    with pytest.raises(TypeError, match=r"extra\['fn'\] is a builtin_function_or_method"):
        fi.save(flow, tmp_path / "f.pt", extra={"fn": print})
    with pytest.raises(TypeError, match="extra must be a dict"):
        fi.save(flow, tmp_path / "f.pt", extra=[1])
    hand_made = fi.Flow(list(flow.layers), dim=2)
    with pytest.raises(ValueError, match="flow has no config"):
        fi.save(hand_made, tmp_path / "f.pt")
    assert not list(tmp_path.iterdir())  # nothing half-written was left behind


# ------------------------------------------------------------------------------ atomic writes
CRASHING_WRITER = textwrap.dedent(
    """
    import io, sys, time
    import torch
    import flowinfer as fi

    real_save = torch.save

    def half_then_hang(obj, f, *args, **kwargs):
        # Write half of the bytes, report, and wait to be killed: a crash mid-write.
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        print("half written", flush=True)
        time.sleep(600)

    torch.save = half_then_hang
    torch.manual_seed(5)
    fi.save(fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,)), sys.argv[1])
    """
)


def test_checkpoint_survives_a_writer_killed_mid_write(saved, tmp_path):
    old_flow, path = saved
    script = tmp_path / "writer.py"
    script.write_text(CRASHING_WRITER)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "half written", line + proc.stdout.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The destination still holds the previous checkpoint, intact.
    _perturb_free = fi.load(path)
    for key, value in old_flow.state_dict().items():
        assert torch.equal(value, _perturb_free.state_dict()[key]), key
    # The half-written temporary file is the crash's only trace, and it reads as truncated.
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".good.pt.")]
    assert len(leftovers) == 1
    with pytest.raises(ValueError, match="corrupt, truncated"):
        fi.load(leftovers[0])


# ------------------------------------------------------------------------------ resuming
DATA_SEED = 0


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(DATA_SEED)
    return torch.randn(300, 2, generator=g) * torch.tensor([2.0, 0.5]) + 1.0


def _fit(flow, **kw):
    options = {"epochs": 5, "batch_size": 64, "lr": 1e-2, "progress": False, "patience": None,
               "schedule": "plateau"}
    options.update(kw)
    return fi.fit_density(flow, _data(), **options)


def _fresh(seed: int = 1):
    torch.manual_seed(seed)
    return fi.build_flow("maf", dim=2, **SMALL)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    straight = _fresh()
    full = _fit(straight, seed=3)
    ckpt = tmp_path / "run.pt"
    _fit(_fresh(), seed=3, checkpoint=ckpt, callback=lambda epoch, info: epoch == 1)
    # A different initialisation: everything must come from the checkpoint.
    resumed_flow = _fresh(seed=99)
    resumed = _fit(resumed_flow, resume=ckpt)
    assert resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_flow.state_dict()[key]), key


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path):
    ckpt = tmp_path / "run.pt"
    flow = _fresh()
    # patience=1 stops at the first epoch without improvement (a large lr makes that early).
    first = _fit(flow, seed=3, epochs=30, lr=0.5, patience=1, schedule=None, checkpoint=ckpt)
    assert first.stop_reason == "early_stopping"
    again_flow = _fresh(seed=99)
    again = _fit(again_flow, epochs=30, lr=0.5, patience=1, schedule=None, resume=ckpt)
    assert again.stop_reason == "early_stopping"
    assert again.history == first.history and again.best_epoch == first.best_epoch
    for key, value in flow.state_dict().items():
        assert torch.equal(value, again_flow.state_dict()[key]), key


def test_checkpoint_holds_last_epoch_and_loads_as_a_flow(tmp_path):
    flow = _fresh()
    ckpt = tmp_path / "run.pt"
    _fit(flow, seed=3, checkpoint=ckpt, epochs=2)
    training = fio.load_checkpoint(ckpt)["extra"]["training"]
    assert training["epoch"] == 1 and len(training["history"]["train_loss"]) == 2
    assert fi.load(ckpt).config == flow.config


def test_resume_errors(tmp_path):
    ckpt = tmp_path / "run.pt"
    _fit(_fresh(), seed=3, checkpoint=ckpt, epochs=2)
    with pytest.raises(ValueError, match="seed=4 differs from the resumed run's seed 3"):
        _fit(_fresh(), seed=4, resume=ckpt)
    other = fi.build_flow("maf", dim=2, num_layers=3, hidden=(8,))
    with pytest.raises(ValueError, match="written for a different flow"):
        _fit(other, resume=ckpt)
    with pytest.raises(ValueError, match="written for 270 training rows, this run has 360"):
        fi.fit_density(_fresh(), torch.cat([_data(), _data()[:100]]), epochs=3,
                       progress=False, schedule="plateau", resume=ckpt)
    with pytest.raises(ValueError, match="different schedule"):
        _fit(_fresh(), resume=ckpt, schedule=None)
    plain = fi.save(_fresh(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="holds no training state"):
        _fit(_fresh(), resume=plain)


def test_checkpoint_and_resume_arguments_are_checked_before_training(tmp_path):
    calls = []

    def spy(epoch, info):
        calls.append(epoch)

    with pytest.raises(ValueError, match="resume=.*no such checkpoint file"):
        _fit(_fresh(), resume=tmp_path / "missing.pt", callback=spy)
    with pytest.raises(ValueError, match="folder .* does not exist"):
        _fit(_fresh(), checkpoint=tmp_path / "no" / "c.pt", callback=spy)
    with pytest.raises(ValueError, match="is a folder"):
        _fit(_fresh(), checkpoint=tmp_path, callback=spy)
    with pytest.raises(TypeError, match="checkpoint must be a str or os.PathLike, got float"):
        _fit(_fresh(), checkpoint=1.5, callback=spy)
    assert calls == []
