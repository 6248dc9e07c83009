"""Data-parallel density estimation with torchrun: one flow, N processes, one global batch.

Every process builds the same data set (here ``--rows`` points of the 2-D "8 gaussians" toy,
whose entropy is the best possible NLL) and calls ``fi.fit_density(..., distributed=True)``:
each epoch ``DistributedSampler`` gives every rank its share of the rows, DDP averages the
gradients, the validation loss is averaged over ranks, and rank 0 alone writes the
checkpoint (after every epoch, atomically) and the report.

Launch on N CPU processes (gloo) or N GPUs (nccl, one per process)::

    torchrun --standalone --nproc_per_node 2 examples/distributed_density.py --rows 200000
    torchrun --standalone --nproc_per_node 4 examples/distributed_density.py --resume \\
        out/distributed_density/checkpoint.pt   # continue an interrupted run

Run without torchrun it trains in one process (the reference for the same global batch).

Writes into ``--out`` (default ``out/distributed_density``), from rank 0 only:
  checkpoint.pt   the flow and its training state after the last finished epoch
  flow.pt         the final (best-epoch) flow, for ``fi.load``
  report.json     world size, device, epochs, losses, entropy, wall time
  density.png     the fitted density next to the data (if matplotlib is installed)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import flowinfer as fi
from flowinfer import distributed as fd
from flowinfer.data.datasets import make_toy, toy_entropy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--flow", default="nsf")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch size")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/distributed_density"))
    parser.add_argument("--resume", type=Path, default=None)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)

    launched = "WORLD_SIZE" in os.environ
    if launched:
        fd.init_from_env()
    device = fd.rank_device()
    if fd.is_main_process():
        args.out.mkdir(parents=True, exist_ok=True)

    data = make_toy("8gaussians", args.rows, seed=args.seed)  # the same rows on every rank
    torch.manual_seed(args.seed)  # DDP starts every rank from rank 0's parameters anyway
    flow = fi.build_flow(args.flow, dim=2, num_layers=args.layers, hidden=(64, 64)).to(device)
    start = time.perf_counter()
    result = fi.fit_density(
        flow, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        patience=None, seed=args.seed, progress=args.progress, distributed=launched,
        checkpoint=args.out / "checkpoint.pt", resume=args.resume,
    )
    wall = time.perf_counter() - start
    report = {
        "world_size": fd.get_world_size(),
        "device": str(device),
        "rows": args.rows,
        "flow": args.flow,
        "epochs_run": len(result.history["train_loss"]),
        "global_batch_size": args.batch_size,
        "best_epoch": result.best_epoch,
        "best_val_nll": result.best_loss,
        "final_val_nll": result.history["val_loss"][-1],
        "entropy": toy_entropy("8gaussians"),
        "wall_time_s": wall,
        "stop": result.message,
    }
    if fd.is_main_process():
        fi.save(flow, args.out / "flow.pt")
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        _plot(flow, data, args.out / "density.png")
        print(json.dumps(report, indent=2))
    if launched:
        torch.distributed.destroy_process_group()
    return report


def _plot(flow: fi.Flow, data: torch.Tensor, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    flow = flow.cpu()
    axis = torch.linspace(-4, 4, 200)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([gx, gy], -1).reshape(-1, 2)).exp().reshape(200, 200)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), layout="constrained")
    left.hist2d(data[:50_000, 0].numpy(), data[:50_000, 1].numpy(), bins=200,
                range=[[-4, 4], [-4, 4]])
    left.set_title("data")
    right.imshow(density.numpy(), extent=(-4, 4, -4, 4), origin="lower")
    right.set_title(f"flow, {fd.get_world_size()} rank(s)")
    for ax in (left, right):
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
