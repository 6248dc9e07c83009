"""Data-parallel training on ``torch.distributed``: density fitting and subsampled SVI.

Launch one process per device with PyTorch's own launcher::

    torchrun --nproc_per_node 4 my_script.py

Every process runs the same script on the same full data set; ``fi.fit_density(...,
distributed=True)`` then

- joins the process group ``torchrun`` describes (``init_from_env``; ``nccl`` on GPUs,
  ``gloo`` on CPUs) unless the script already did;
- shards the training rows each epoch with ``torch.utils.data.DistributedSampler`` and splits
  the global ``batch_size`` evenly over the ranks;
- wraps the flow's negative log-likelihood in ``DistributedDataParallel``, so gradients are
  averaged across ranks after every backward pass;
- averages the training and validation losses over all ranks (early stopping and the
  learning-rate schedule see the same numbers everywhere) and writes checkpoints from rank 0
  only.

With the global batch size fixed, a run on ``N`` ranks takes the same optimisation steps as
one process on the same shuffled order: ``DistributedSampler`` hands rank ``r`` the rows
``perm[r::N]`` of one seeded permutation, so the ``N`` local batches of a step together are
exactly the single-process batch, and the averaged gradient is its gradient.

For SVI with data subsampling (``pyro.plate(..., subsample_size=...)``) use
:class:`DataParallelSVI`, a ``pyro.infer.SVI`` whose ``step`` averages the gradients of all
ranks before the optimizer step (each rank draws its own subsample).

References:
    Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training", VLDB 13(12).
    Hoffman et al. (2013), "Stochastic Variational Inference", JMLR 14 (subsampled SVI).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
import torch.distributed as dist
from pyro.infer.util import zero_grads
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from flowinfer.flow import Flow

__all__ = [
    "DataParallelSVI",
    "all_reduce_gradients",
    "broadcast_parameters",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_main_process",
    "rank_device",
]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------ process group
def get_rank() -> int:
    """This process's rank in the default process group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the default process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the rank that writes files."""
    return get_rank() == 0


def rank_device() -> torch.device:
    """The device this rank should use: ``cuda:LOCAL_RANK`` when CUDA is present, else CPU.

    Example:
        >>> rank_device().type in ("cpu", "cuda")
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables.

    Does nothing when the group already exists. ``backend`` defaults to ``nccl`` when CUDA
    is available and ``gloo`` otherwise; on CUDA the rank's device (``LOCAL_RANK``) becomes
    the current one.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None (chosen as above).
        timeout_s: how long collective operations wait for the other ranks before failing.

    Returns:
        True when a process group of any size is now initialized.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` are missing (the
            script was not started by ``torchrun`` and no group was initialized by hand).

    Example:
        A group of one process, with the variables torchrun would set:

        >>> import os, socket
        >>> with socket.socket() as s:
        ...     _ = s.bind(("127.0.0.1", 0))
        ...     port = str(s.getsockname()[1])
        >>> env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        >>> os.environ.update(env)
        >>> init_from_env(backend="gloo"), get_world_size(), is_main_process()
        (True, 1, True)
        >>> dist.destroy_process_group()
        >>> for key in env:
        ...     del os.environ[key]
    """
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        return True
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(
            "distributed=True needs a torch.distributed process group: launch the script "
            "with `torchrun --nproc_per_node N script.py` (which sets RANK, WORLD_SIZE, "
            "MASTER_ADDR, MASTER_PORT) or call torch.distributed.init_process_group first; "
            f"missing environment variables: {', '.join(missing)}"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl", "mpi"):
        raise ValueError(f"backend must be 'gloo', 'nccl', 'mpi' or None, got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(rank_device())
    from datetime import timedelta

    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


# ------------------------------------------------------------------------------ collectives
def _ordered(params: Iterable[Tensor]) -> list[Tensor]:
    params = list(params)
    if not all(isinstance(p, Tensor) for p in params):
        raise TypeError("params must be an iterable of tensors")
    return params


def broadcast_parameters(params: Iterable[Tensor], src: int = 0) -> None:
    """Overwrite ``params`` (in place) with rank ``src``'s values; a no-op in one process.

    Every rank must pass the same tensors in the same order.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> before = layer.weight.detach().clone()
        >>> broadcast_parameters(layer.parameters())  # one process: unchanged
        >>> torch.equal(layer.weight, before)
        True
    """
    params = _ordered(params)
    if get_world_size() == 1 or not params:
        return
    with torch.no_grad():
        for p in params:
            # Receive into a copy, then copy_: an in-place op bumps the version counter, which
            # invalidates the bijectors' cached values (a write through .data would not).
            buf = p.detach().clone()
            dist.broadcast(buf, src=src)
            p.copy_(buf)


def all_reduce_gradients(params: Iterable[Tensor]) -> None:
    """Replace each parameter's ``.grad`` by its average over all ranks; a no-op in one process.

    Parameters without a gradient on this rank count as zero, so every rank takes part in
    the same collective whatever its subsample touched. Every rank must pass the same
    tensors in the same order. The gradients travel as one flat buffer (one collective).

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
        >>> all_reduce_gradients([p]); p.grad  # one process: unchanged
        tensor([3., 3.])
    """
    params = _ordered(params)
    world = get_world_size()
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _all_sum(values: list[float], like: Tensor) -> list[float]:
    buf = torch.tensor(values, dtype=torch.float64, device=like.device)
    if get_world_size() > 1:
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.tolist()


# ------------------------------------------------------------------------------ fit_density
class _NegLogLik(nn.Module):
    # DDP synchronises gradients of what runs through its forward(); Flow.forward builds a
    # distribution instead, so the loss gets a module of its own.
    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return -self.flow.log_prob(x, context).mean()


class _RowRange(torch.utils.data.Dataset):
    # DistributedSampler only needs a length; the rows themselves stay in one tensor.
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class SerialContext:
    """How ``fit_density`` trains in one process (the default); see :class:`DataParallel`."""

    world_size = 1
    rank = 0
    is_main = True

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def shared_seed(self, seed: int | None, like: Tensor) -> int:
        return int(torch.randint(0, 2**62, ())) if seed is None else seed

    def local_batch(self, batch_size: int) -> int:
        return batch_size

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        return math.ceil(n_train / batch_size)

    def prepare(self, x: Tensor, c: Tensor | None, batch_size: int, seed: int) -> None:
        pass

    def epoch_order(self, n_train: int, generator: torch.Generator, epoch: int) -> Tensor:
        return torch.randperm(n_train, generator=generator, device=generator.device)

    def nll(self, x: Tensor, c: Tensor | None) -> Tensor:
        return -self.flow.log_prob(x, c).mean()

    def mean_nll(self, x: Tensor, c: Tensor | None) -> float:
        from flowinfer.fit import mean_nll

        return mean_nll(self.flow, x, c)

    def average(self, total: float, count: int, like: Tensor) -> float:
        return total / count

    def any(self, flag: bool, like: Tensor) -> bool:
        return bool(flag)

    def close(self) -> None:
        pass


class DataParallel(SerialContext):
    """How ``fit_density(..., distributed=True)`` trains on every rank of a process group.

    Not meant to be used directly; it is the piece of :func:`~flowinfer.fit.fit_density`
    that differs between one process and many.
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__(flow)
        init_from_env()
        self.world_size = get_world_size()
        self.rank = get_rank()
        self.is_main = self.rank == 0
        self.seed = 0
        self.ddp: DistributedDataParallel | None = None

    def shared_seed(self, seed: int | None, like: Tensor) -> int:
        # The validation split and the shuffling must agree on every rank: rank 0's seed wins.
        mine = int(torch.randint(0, 2**62, ())) if seed is None else seed
        buf = torch.tensor([mine], dtype=torch.int64, device=like.device)
        dist.broadcast(buf, src=0)
        return int(buf.item())

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size is the global batch and must be divisible by the number of "
                f"ranks ({self.world_size}), got {batch_size}"
            )
        return batch_size // self.world_size

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        return math.ceil(math.ceil(n_train / self.world_size) / self.local_batch(batch_size))

    def prepare(self, x: Tensor, c: Tensor | None, batch_size: int, seed: int) -> None:
        self.seed = seed
        self.local_batch(batch_size)
        # Data-dependent initialisation (ActNorm) must see the same rows on every rank,
        # before DDP copies rank 0's parameters: use the first global batch of epoch 0.
        first = self._order(x.shape[0], 0, num_replicas=1, rank=0)[:batch_size].to(x.device)
        self.flow.train()
        with torch.no_grad():
            self.flow.log_prob(x[first], None if c is None else c[first])
        device_ids = [x.device] if x.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_NegLogLik(self.flow), device_ids=device_ids)
        # DDP wrote rank 0's values into the parameters behind autograd's back (no version
        # bump), so drop what the warm-up pass cached.
        for module in self.flow.modules():
            if hasattr(module, "clear_cache"):
                module.clear_cache()

    def _order(self, n: int, epoch: int, num_replicas: int, rank: int) -> Tensor:
        sampler = DistributedSampler(_RowRange(n), num_replicas=num_replicas, rank=rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return torch.as_tensor(list(iter(sampler)), dtype=torch.long)

    def epoch_order(self, n_train: int, generator: torch.Generator, epoch: int) -> Tensor:
        order = self._order(n_train, epoch, self.world_size, self.rank)
        return order.to(generator.device)

    def nll(self, x: Tensor, c: Tensor | None) -> Tensor:
        return self.ddp(x, c)

    def mean_nll(self, x: Tensor, c: Tensor | None) -> float:
        from flowinfer.fit import mean_nll

        # Each rank scores every world_size-th validation row; the sums are pooled.
        mine = x[self.rank::self.world_size]
        ctx = None if c is None else c[self.rank::self.world_size]
        n = mine.shape[0]
        total = -mean_nll(self.flow, mine, ctx) * n if n else 0.0
        total, count = _all_sum([total, float(n)], x)
        return -total / count

    def average(self, total: float, count: int, like: Tensor) -> float:
        total, count = _all_sum([total, float(count)], like)
        return total / count

    def any(self, flag: bool, like: Tensor) -> bool:
        return _all_sum([float(bool(flag))], like)[0] > 0

    def close(self) -> None:
        self.ddp = None


def training_context(flow: Flow, distributed: Any) -> SerialContext:
    """The one-process or the data-parallel strategy for ``fit_density``."""
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False, got {type(distributed).__name__}")
    return DataParallel(flow) if distributed else SerialContext(flow)


# ------------------------------------------------------------------------------ SVI
class DataParallelSVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose steps average gradients over all ranks of a process group.

    Use it exactly like ``SVI`` in a script launched with ``torchrun``. The model should
    subsample its data with ``pyro.plate("data", N, subsample_size=b)`` (``N`` the full size,
    so the ELBO of each rank is an unbiased estimate of the full-data ELBO); seed each rank
    differently (``pyro.set_rng_seed(seed + rank)``) so the ranks draw different
    subsamples. The first step copies rank 0's initial parameters (the guide's and those the
    model registers, e.g. with ``pyro.module``) to every rank, then each
    step averages the gradients (one all-reduce) before the optimizer step, so all ranks
    keep identical parameters and the step uses ``world_size * b`` rows. ``step`` returns
    the loss averaged over the ranks. In one process it is plain ``SVI``.

    Args:
        model, guide, optim, loss: as for ``pyro.infer.SVI``.
        **kwargs: passed to ``pyro.infer.SVI``.

    Example:
        >>> import pyro, pyro.distributions as pdist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> data = torch.randn(1000) + 3.0
        >>> def model():
        ...     mu = pyro.sample("mu", pdist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(data), subsample_size=100) as idx:
        ...         pyro.sample("x", pdist.Normal(mu, 1.0), obs=data[idx])
        >>> pyro.clear_param_store()
        >>> svi = DataParallelSVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}),
        ...                       pyro.infer.Trace_ELBO())
        >>> losses = [svi.step() for _ in range(300)]
        >>> abs(pyro.param("AutoNormal.locs.mu").item() - 3.0) < 0.3
        True

    References:
        Hoffman et al. (2013), "Stochastic Variational Inference", JMLR 14.
    """

    def __init__(self, model: Any, guide: Any, optim: Any, loss: Any, **kwargs: Any) -> None:
        super().__init__(model, guide, optim, loss, **kwargs)
        self._synced = False

    def step(self, *args: Any, **kwargs: Any) -> float:
        world = get_world_size()
        if world > 1 and not self._synced:
            self._sync_initial_parameters(*args, **kwargs)
        with poutine.trace(param_only=True) as capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        # Sorted by site name: every rank must all-reduce the same tensors in one order.
        names = sorted(capture.trace.nodes)
        params = [capture.trace.nodes[n]["value"].unconstrained() for n in names]
        all_reduce_gradients(params)
        self.optim(params)
        zero_grads(set(params))
        loss = float(loss)
        if world > 1:
            loss = _all_sum([loss], params[0] if params else torch.zeros(()))[0] / world
        return loss

    def _sync_initial_parameters(self, *args: Any, **kwargs: Any) -> None:
        # Guides and models create their parameters lazily (often from random draws): one
        # gradient-free ELBO evaluation makes them all exist, then rank 0's values win.
        with poutine.block():
            self.evaluate_loss(*args, **kwargs)
        store = pyro.get_param_store()
        names = sorted(store.keys())
        params = dict(store.named_parameters())
        broadcast_parameters([params[n] for n in names])
        self._synced = True
