"""Data-parallel training on torch.distributed: 2 CPU processes, gloo, localhost.

The ranks are real processes started the way ``torchrun`` starts them (RANK, WORLD_SIZE,
MASTER_ADDR and a MASTER_PORT picked at run time), so the test exercises the same
``init_from_env`` path a user's ``torchrun`` launch does.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer.autoguide import AutoDelta
from torch.distributions.constraints import positive

import flowinfer as fi
from flowinfer.inference.svi import DataParallelSVI
from flowinfer.train import process_group as fd

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240

# Shared by the workers and the in-process references below.
N_ROWS, VAL_FRACTION, BATCH, EPOCHS, SEED = 1000, 0.2, 100, 4, 3
SVI_ROWS, SVI_STEPS = 400, 30

WORKER = textwrap.dedent(
    """
    import sys
    import pyro, torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    import test_distributed as t
    import flowinfer as fi
    from flowinfer.inference.svi import DataParallelSVI
    from flowinfer.train.process_group import init_from_env

    out = sys.argv[1]
    init_from_env(backend="gloo", timeout_s=120)
    rank = dist.get_rank()
    # Different initial parameters on every rank: DDP must start them all from rank 0's.
    torch.manual_seed(100 + rank)
    flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
    result = fi.fit_density(flow, t.density_data(), epochs=t.EPOCHS, batch_size=t.BATCH,
                            lr=1e-2, val_fraction=t.VAL_FRACTION, patience=None,
                            seed=t.SEED, progress=False, distributed=True,
                            checkpoint=f"{out}/ckpt.pt")
    pyro.set_rng_seed(rank)  # rank 0 seeds like the single-process reference
    params = t.run_svi(DataParallelSVI, rank, dist.get_world_size())
    torch.save({"flow": flow.state_dict(), "history": result.history, "svi": params},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def density_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_ROWS, 2, generator=g) * torch.tensor([2.0, 0.5]) + 1.0


def svi_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SVI_ROWS, generator=g)
    return x, 0.5 - 1.5 * x + 0.3 * torch.randn(SVI_ROWS, generator=g)


def regression(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
    a = pyro.sample("a", pdist.Normal(0.0, 5.0))
    b = pyro.sample("b", pdist.Normal(0.0, 5.0))
    # A model-side parameter with a random start: DataParallelSVI must sync it too.
    noise = pyro.param("noise", lambda: 0.2 + 0.2 * torch.rand(()), constraint=positive)
    # Explicit subsample indices: pyro scales the shard's likelihood by SVI_ROWS / len(idx).
    with pyro.plate("data", SVI_ROWS, subsample=idx):
        pyro.sample("y", pdist.Normal(a + b * x[idx], noise), obs=y[idx])


def run_svi(svi_class: type, rank: int, world: int) -> dict[str, torch.Tensor]:
    """MAP regression (noise by maximum likelihood): rank r sees rows r, r + world, ...

    Returns the final parameters.
    """
    pyro.clear_param_store()
    x, y = svi_data()
    idx = torch.arange(rank, SVI_ROWS, world)
    guide = AutoDelta(regression)
    svi = svi_class(regression, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    for _ in range(SVI_STEPS):
        svi.step(x, y, idx)
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env() -> dict[str, str]:
    # Gloo picks its network interface from the host name, which some CI containers resolve
    # to an address they cannot reach; the loopback interface always works on localhost.
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        return {"GLOO_SOCKET_IFNAME": "lo"}
    return {}


def _launch(world: int, out: Path) -> None:
    out.mkdir()
    script = out / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), **_loopback_env())
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(out), str(Path(__file__).parent)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:  # a rank stuck in a collective must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} of {world} failed:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    _launch(2, base / "two")
    ranks = [torch.load(base / "two" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return ranks, base / "two" / "ckpt.pt"


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_ranks_end_with_identical_parameters(runs):
    (r0, r1), _ = runs
    assert _max_diff(r0["flow"], r1["flow"]) == 0.0
    assert r0["history"] == r1["history"]
    assert _max_diff(r0["svi"], r1["svi"]) == 0.0


def test_two_ranks_take_the_single_process_steps(runs):
    """Same global batch: 2 ranks follow the 1-process trajectory up to float rounding.

    The 1-process run uses the same DistributedSampler order (a world of one), so the only
    differences are the order of float additions in the gradient average.
    """
    (r0, _), _ = runs
    torch.manual_seed(100)  # rank 0's initial parameters
    flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
    with OneProcessGroup():
        fi.fit_density(flow, density_data(), epochs=EPOCHS, batch_size=BATCH, lr=1e-2,
                       val_fraction=VAL_FRACTION, patience=None, seed=SEED, progress=False,
                       distributed=True)
    assert _max_diff(r0["flow"], flow.state_dict()) < 1e-4


def test_loss_close_to_plain_single_process_fit(runs):
    """Plain fit_density shuffles differently; its validation loss must agree within noise.

    The tolerance is three standard errors of a mean NLL over the validation rows, the
    resolution at which the validation set can tell two fits apart.
    """
    (r0, _), _ = runs
    torch.manual_seed(100)
    flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
    single = fi.fit_density(flow, density_data(), epochs=EPOCHS, batch_size=BATCH, lr=1e-2,
                            val_fraction=VAL_FRACTION, patience=None, seed=SEED,
                            progress=False)
    g = torch.Generator().manual_seed(SEED)
    val = density_data()[torch.randperm(N_ROWS, generator=g)[:round(N_ROWS * VAL_FRACTION)]]
    with torch.no_grad():
        nll = -flow.log_prob(val)
    se = float(nll.std()) / math.sqrt(nll.numel())
    assert abs(r0["history"]["val_loss"][-1] - single.history["val_loss"][-1]) < 3 * se


def test_svi_gradient_average_equals_full_data_gradient(runs):
    """Two ranks on half the rows each take the full-data MAP steps of one process."""
    (r0, _), _ = runs
    pyro.set_rng_seed(0)
    reference = run_svi(pyro.infer.SVI, rank=0, world=1)
    assert _max_diff(r0["svi"], reference) < 1e-4


def test_checkpoint_written_by_rank_zero_loads(runs):
    (r0, _), path = runs
    flow = fi.load(path)
    assert _max_diff(flow.state_dict(), r0["flow"]) == 0.0


# ------------------------------------------------------------------------------ in-process
class OneProcessGroup:
    """A gloo group of one process on a free localhost port, torn down afterwards."""

    def __enter__(self):
        self.env = _loopback_env()
        os.environ.update(self.env)
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)

    def __exit__(self, *exc):
        torch.distributed.destroy_process_group()
        for key in self.env:
            del os.environ[key]


def test_distributed_without_process_group_explains_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
    with pytest.raises(ValueError, match="torchrun.*missing environment variables: RANK"):
        fi.fit_density(flow, torch.randn(50, 2), epochs=1, progress=False, distributed=True)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_distributed_flag_must_be_bool(value):
    flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
    with pytest.raises(TypeError, match="distributed must be True or False"):
        fi.fit_density(flow, torch.randn(50, 2), epochs=1, progress=False, distributed=value)


def test_bad_backend_is_named(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="backend must be"):
        fd.init_from_env(backend="tcp")


def test_helpers_are_no_ops_in_one_process():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    fd.all_reduce_gradients([p])
    fd.broadcast_parameters([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0)) and torch.equal(p.data, torch.ones(3))
    assert (fd.get_rank(), fd.get_world_size(), fd.is_main_process()) == (0, 1, True)
    with pytest.raises(TypeError, match="iterable of tensors"):
        fd.all_reduce_gradients([p, "not a tensor"])


def test_svi_in_one_process_equals_pyro_svi():
    pyro.set_rng_seed(0)
    ours = run_svi(DataParallelSVI, rank=0, world=1)
    pyro.set_rng_seed(0)
    reference = run_svi(pyro.infer.SVI, rank=0, world=1)
    assert _max_diff(ours, reference) == 0.0


@pytest.mark.slow
def test_example_runs_under_torchrun(tmp_path):
    """The documented command: torchrun (standalone rendezvous, its own free port)."""
    out = tmp_path / "example"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(ROOT / "examples" / "distributed_density.py"), "--rows", "4000",
           "--epochs", "2", "--layers", "2", "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               **_loopback_env())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["epochs_run"] == 2
    assert fi.load(out / "flow.pt").config["name"] == "nsf"
    training = fi.io.load_checkpoint(out / "checkpoint.pt")["extra"]["training"]
    assert training["epoch"] == 1


def test_global_batch_must_split_evenly_over_ranks():
    flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
    with OneProcessGroup():
        from flowinfer.train.losses import MaximumLikelihood
        from flowinfer.train.strategy import training_strategy

        parallel = training_strategy(MaximumLikelihood(flow), [flow], True)
        parallel.world_size = 4  # as on a 4-rank run; only the arithmetic is exercised
        with pytest.raises(ValueError, match=r"divisible by the number of ranks \(4\), got 6"):
            parallel.local_batch(6)
        assert parallel.local_batch(8) == 2
