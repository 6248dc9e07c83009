"""How the training loop runs in one process or data-parallel over a process group.

The loop takes its one-process vs many-process differences from a strategy object: the order
of rows in an epoch, the local batch, the loss call (wrapped in ``DistributedDataParallel``
for many ranks, so gradients are averaged after every backward pass), loss averaging across
ranks, and which rank writes files. With the global batch size fixed, ``N`` ranks take the same
optimisation steps as one process on the same shuffled order: ``DistributedSampler`` hands
rank ``r`` the rows ``perm[r::N]`` of one seeded permutation.

References:
    Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training", VLDB 13(12).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from flowinfer.checks import check_bool
from flowinfer.train.process_group import _all_sum, get_rank, get_world_size, init_from_env

__all__ = ["SerialStrategy", "DataParallel", "training_strategy", "Batch"]

Batch = tuple[Tensor, ...]
# Rows evaluated at once for a validation loss: bounds memory, no gradients kept.
EVAL_BATCH = 8192


class _LossModule(nn.Module):
    # DDP synchronises the gradients of what runs through its forward(); a loss object is a
    # plain callable, so it gets a module holding every trained module.
    def __init__(self, loss: Callable[[Batch], Tensor], modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.loss = loss

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss(batch)


class _RowRange(torch.utils.data.Dataset):
    # DistributedSampler only needs a length; the rows themselves stay in one tensor.
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _take(data: Batch, idx: Tensor) -> Batch:
    return tuple(t[idx] for t in data)


@torch.no_grad()
def evaluate_rows(evaluate: Callable[[Batch], Tensor], data: Batch,
                  batch_size: int = EVAL_BATCH) -> float:
    """Row-weighted mean of ``evaluate`` over ``data`` in batches, without gradients."""
    n = data[0].shape[0]
    total = torch.zeros((), dtype=torch.float64, device=data[0].device)
    for start in range(0, n, batch_size):
        part = tuple(t[start:start + batch_size] for t in data)
        total += evaluate(part).double() * part[0].shape[0]
    return float(total) / n


class SerialStrategy:
    """One process (the default)."""

    world_size = 1
    rank = 0
    is_main = True

    def __init__(self, loss: Callable[[Batch], Tensor], modules: Sequence[nn.Module]) -> None:
        self.loss = loss
        self.modules = list(modules)

    def shared_seed(self, seed: int | None, like: Tensor) -> int:
        return int(torch.randint(0, 2**62, ())) if seed is None else seed

    def local_batch(self, batch_size: int) -> int:
        return batch_size

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        return math.ceil(n_train / batch_size)

    def prepare(self, data: Batch, batch_size: int, seed: int) -> None:
        pass

    def epoch_order(self, n_train: int, generator: torch.Generator, epoch: int) -> Tensor:
        return torch.randperm(n_train, generator=generator, device=generator.device)

    def train_loss(self, batch: Batch) -> Tensor:
        return self.loss(batch)

    def evaluate(self, evaluate: Callable[[Batch], Tensor], data: Batch) -> float:
        return evaluate_rows(evaluate, data)

    def average(self, total: float, count: int, like: Tensor) -> float:
        return total / count

    def any(self, flag: bool, like: Tensor) -> bool:
        return bool(flag)

    def close(self) -> None:
        pass


class DataParallel(SerialStrategy):
    """Every rank of a ``torch.distributed`` process group (``fit(..., distributed=True)``).

    Not meant to be used directly: it is the piece of the loop that differs between one
    process and many.
    """

    def __init__(self, loss: Callable[[Batch], Tensor], modules: Sequence[nn.Module]) -> None:
        super().__init__(loss, modules)
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

    def prepare(self, data: Batch, batch_size: int, seed: int) -> None:
        self.seed = seed
        self.local_batch(batch_size)
        # Data-dependent initialisation (ActNorm) must see the same rows on every rank,
        # before DDP copies rank 0's parameters: use the first global batch of epoch 0.
        first = self._order(data[0].shape[0], 0, num_replicas=1, rank=0)[:batch_size]
        for module in self.modules:
            module.train()
        with torch.no_grad():
            self.loss(_take(data, first.to(data[0].device)))
        device = data[0].device
        device_ids = [device] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_LossModule(self.loss, self.modules),
                                           device_ids=device_ids)
        # DDP wrote rank 0's values into the parameters behind autograd's back (no version
        # bump), so drop what the warm-up pass cached.
        for module in self.modules:
            for sub in module.modules():
                if hasattr(sub, "clear_cache"):
                    sub.clear_cache()

    def _order(self, n: int, epoch: int, num_replicas: int, rank: int) -> Tensor:
        sampler = DistributedSampler(_RowRange(n), num_replicas=num_replicas, rank=rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return torch.as_tensor(list(iter(sampler)), dtype=torch.long)

    def epoch_order(self, n_train: int, generator: torch.Generator, epoch: int) -> Tensor:
        order = self._order(n_train, epoch, self.world_size, self.rank)
        return order.to(generator.device)

    def train_loss(self, batch: Batch) -> Tensor:
        return self.ddp(*batch)

    def evaluate(self, evaluate: Callable[[Batch], Tensor], data: Batch) -> float:
        # Each rank scores every world_size-th row; the sums are pooled.
        mine = tuple(t[self.rank::self.world_size] for t in data)
        n = mine[0].shape[0]
        total = evaluate_rows(evaluate, mine) * n if n else 0.0
        total, count = _all_sum([total, float(n)], data[0])
        return total / count

    def average(self, total: float, count: int, like: Tensor) -> float:
        total, count = _all_sum([total, float(count)], like)
        return total / count

    def any(self, flag: bool, like: Tensor) -> bool:
        return _all_sum([float(bool(flag))], like)[0] > 0

    def close(self) -> None:
        self.ddp = None


def training_strategy(loss: Callable[[Batch], Tensor], modules: Sequence[nn.Module],
                      distributed: Any) -> SerialStrategy:
    """The one-process or the data-parallel strategy."""
    check_bool(distributed, "distributed")
    return DataParallel(loss, modules) if distributed else SerialStrategy(loss, modules)
