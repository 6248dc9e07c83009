"""Glow on scikit-learn's 8x8 digits, against a diagonal Gaussian and vector flows.

Trains the multiscale image Glow (``build_flow("glow", shape=(1, 8, 8), ...)``), a vector
neural spline flow and the vector Glow on the flattened images at equal budget (60 epochs
each, same batch size and learning rate; a 10-minute wall-clock cap per model is only a
safety net), and the best diagonal Gaussian (its
maximum-likelihood fit, in closed form). Reports test bits/dim, writes sample grids at
temperatures 1.0 and 0.7 and an interpolation between two encoded test images.

Pixels are dequantized (``v + u``, ``u ~ U[0, 1)``) and logit-transformed; bits/dim include
that Jacobian, so they are those of the dequantized 17-level values (see
``flowinfer.data.datasets.LogitPreprocessor``). Fixed-seed 80/10/10 split of the 1797 images.

Run::

    python examples/glow_digits.py                 # a few minutes on a laptop CPU
    python examples/glow_digits.py --epochs 5 --out out/glow_digits_quick

The helpers here (training loop, bits/dim, grids, interpolation) are reused by
``examples/glow_mnist.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import flowinfer as fi
from flowinfer.data.datasets import LogitPreprocessor, load_digits, split
from flowinfer.train.optim import progress
from flowinfer.train.state import BestState

Reshape = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------- training
def mean_bpd(flow: fi.Flow, y: Tensor, ladj: Tensor, pre: LogitPreprocessor,
             reshape: Reshape, batch: int = 500) -> tuple[float, float, Tensor]:
    """Mean test bits/dim, its standard error, and the per-image values."""
    flow.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            lp = flow.log_prob(reshape(y[i:i + batch]))
            parts.append(pre.bits_per_dim(lp, ladj[i:i + batch], y[0].numel()))
    bpd = torch.cat(parts)
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), bpd


def train(flow: fi.Flow, train_values: Tensor, val: tuple[Tensor, Tensor],
          pre: LogitPreprocessor, reshape: Reshape, *, epochs: int, minutes: float,
          batch_size: int, lr: float, seed: int, show: bool | None, name: str) -> dict:
    """Maximum likelihood on freshly dequantized batches; keeps the best validation state.

    Adam's learning rate decays from ``lr`` to zero on a cosine over the budget.

    Stops after ``epochs`` epochs or ``minutes`` of wall-clock time, whichever comes first
    (the epoch under way when time runs out is cut short, then validated).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(train_values) / batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    best = BestState(flow)
    history: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    out_of_time = False
    bar = progress(range(epochs), show, desc=name)
    for epoch in bar:
        flow.train()
        # A new dequantization draw every epoch: the model never sees the same noise twice.
        y, _ = pre(train_values, generator=gen)
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            # Cosine decay to zero over the budget (epochs or minutes, whichever runs out
            # first): the last epochs average out Adam's noise instead of bouncing at lr.
            done = max(step / total_steps, (time.perf_counter() - start) / (60 * minutes))
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * min(done, 1.0)))
            step += 1
            loss = -flow.log_prob(reshape(y[order[i:i + batch_size]])).mean()
            opt.zero_grad()
            loss.backward()
            # Early steps of deep flows can spike; clipping keeps them from diverging.
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
            opt.step()
            out_of_time = time.perf_counter() - start > 60 * minutes
            if out_of_time:
                break
        val_bpd = mean_bpd(flow, *val, pre, reshape)[0]
        history.append(val_bpd)
        best.update(val_bpd, epoch)
        bar.set_postfix(val_bpd=f"{val_bpd:.3f}")
        if out_of_time or not math.isfinite(val_bpd):
            break
    best.restore()
    flow.eval()
    # Process time is what a quiet machine would need; wall time depends on the load.
    return {"epochs": len(history), "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start, "stopped_by_time": out_of_time,
            "best_epoch": None if best.step is None else best.step + 1, "val_bpd": history}


def gaussian_bpd(y_train: Tensor, y_test: Tensor, ladj_test: Tensor,
                 pre: LogitPreprocessor) -> tuple[float, float, Tensor]:
    """The maximum-likelihood diagonal Gaussian on the logit-space training data."""
    mean, std = y_train.mean(0), y_train.std(0, unbiased=False)
    lp = torch.distributions.Normal(mean, std).log_prob(y_test).flatten(1).sum(1)
    bpd = pre.bits_per_dim(lp, ladj_test, y_test[0].numel())
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), bpd


def count_parameters(flow: torch.nn.Module) -> int:
    return sum(p.numel() for p in flow.parameters())


# ----------------------------------------------------------------------------- figures
def to_pixels(y: Tensor, pre: LogitPreprocessor) -> Tensor:
    """Logit-space images back to intensities in [0, 1]."""
    return (pre.transform.inv(y) / pre.levels).clamp(0, 1)


def tile(images: Tensor, rows: int) -> Tensor:
    """``(n, 1, h, w)`` images into one ``(rows*(h+1)-1, cols*(w+1)-1)`` array."""
    n, _, h, w = images.shape
    cols = math.ceil(n / rows)
    canvas = torch.zeros(rows * (h + 1) - 1, cols * (w + 1) - 1)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[k, 0]
    return canvas


def save_samples(flow: fi.Flow, pre: LogitPreprocessor, path: Path, title: str,
                 temperatures: tuple[float, ...] = (1.0, 0.7), n: int = 64,
                 seed: int = 0) -> None:
    """One panel of ``n`` samples per temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(temperatures), figsize=(3.2 * len(temperatures), 3.5))
    for ax, temperature in zip(axes, temperatures, strict=True):
        torch.manual_seed(seed)
        images = to_pixels(flow.sample(n, temperature=temperature), pre)
        ax.imshow(1 - tile(images, int(math.sqrt(n))), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"T = {temperature}")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_interpolation(flow: fi.Flow, pre: LogitPreprocessor, pairs: list[tuple[Tensor, Tensor]],
                       path: Path, title: str, steps: int = 9) -> None:
    """Encode test images to the base, interpolate linearly there, decode every point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encode = torch.distributions.ComposeTransform(flow.transforms()).inv
    weights = torch.linspace(0, 1, steps).reshape(-1, 1, 1, 1)
    rows = []
    with torch.no_grad():
        for a, b in pairs:
            za, zb = encode(a.unsqueeze(0)), encode(b.unsqueeze(0))
            rows.append(flow.transform_with_intermediates((1 - weights) * za + weights * zb)[-1])
    images = to_pixels(torch.cat(rows), pre)
    fig, ax = plt.subplots(figsize=(0.55 * steps + 0.4, 0.6 * len(pairs) + 0.5))
    ax.imshow(1 - tile(images, len(pairs)), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: dict) -> str:
    lines = ["| model | test bits/dim (± s.e.) | parameters | epochs | train wall / CPU (s) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['test_bpd']:.3f} ± {r['test_se']:.3f} | "
                     f"{r.get('parameters', 0):,} | {r.get('epochs', '-')} | "
                     f"{r.get('seconds', 0):.0f} / {r.get('cpu_seconds', 0):.0f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def per_level(text: str) -> int | tuple[int, ...]:
    """``"4"`` -> 4 (every level), ``"4,8"`` -> (4, 8) (one per level, finest first)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer or comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values[0] if len(values) == 1 else values


def describe(value: int | tuple[int, ...]) -> str:
    return str(value) if isinstance(value, int) else "/".join(map(str, value))


def parse_args(argv: list[str] | None = None, *, out: str, epochs: int, minutes: float,
               levels: int, steps: int | tuple[int, ...],
               hidden_channels: int | tuple[int, ...], lr: float = 1e-3,
               description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--out", default=out, help="folder for figures and results")
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs per model (cap)")
    parser.add_argument("--minutes", type=float, default=minutes,
                        help="wall-clock training cap per model, in minutes")
    parser.add_argument("--levels", type=int, default=levels)
    parser.add_argument("--steps-per-level", type=per_level, default=steps,
                        help="flow steps per level: one int, or one per level finest first "
                             "(e.g. 4,8)")
    parser.add_argument("--hidden-channels", type=per_level, default=hidden_channels,
                        help="conditioner width: one int, or one per level (e.g. 64,128)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-vector", action="store_true", help="skip the vector flows")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    for name in ("epochs", "levels", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    for name in ("steps_per_level", "hidden_channels"):
        value = getattr(args, name)
        if not isinstance(value, int) and len(value) != args.levels:
            parser.error(f"--{name.replace('_', '-')} needs one value per level "
                         f"(--levels {args.levels}), got {describe(value)}")
    if not args.minutes > 0 or not args.lr > 0:
        parser.error("--minutes and --lr must be positive")
    return args


def compare(values: Tensor, labels: Tensor, levels_count: int, args: argparse.Namespace,
            label: str, vector_flows: dict[str, dict],
            interpolation_classes: list[tuple[int, int]]) -> dict:
    """Split, preprocess, fit every model at equal budget, write figures and results.

    The interpolation runs between the first test images of each pair of classes.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(values.shape[1:])
    dims = math.prod(shape)
    train_v, val_v, test_v = split(values, (0.8, 0.1, 0.1), seed=args.seed)
    test_labels = split(labels, (0.8, 0.1, 0.1), seed=args.seed)[2]  # same shuffle
    pre = LogitPreprocessor(levels=levels_count, event_dim=3)
    # Validation and test images are dequantized once, with a fixed draw shared by all models.
    gen = torch.Generator().manual_seed(args.seed + 1)
    val = pre(val_v, generator=gen)
    y_test, ladj_test = pre(test_v, generator=gen)
    print(f"{label}: {len(train_v)} train / {len(val_v)} validation / {len(test_v)} test "
          f"images of shape {shape} (split seed {args.seed})")

    results: dict[str, dict] = {}
    mean, se, gauss = gaussian_bpd(pre(train_v, generator=gen)[0], y_test, ladj_test, pre)
    results["diagonal Gaussian (closed-form MLE)"] = {"test_bpd": mean, "test_se": se,
                                                      "parameters": 2 * dims}
    budget = dict(epochs=args.epochs, minutes=args.minutes, batch_size=args.batch_size,
                  lr=args.lr, show=args.progress)

    torch.manual_seed(args.seed)
    glow = fi.build_flow("glow", shape=shape, levels=args.levels,
                         steps_per_level=args.steps_per_level,
                         hidden_channels=args.hidden_channels)
    name = (f"Glow (L={args.levels}, K={describe(args.steps_per_level)}, "
            f"{describe(args.hidden_channels)} channels)")
    log = train(glow, train_v, val, pre, lambda y: y, seed=args.seed, name="glow", **budget)
    mean, se, glow_bpd = mean_bpd(glow, y_test, ladj_test, pre, lambda y: y)
    # The worst image too: one confidently mis-modelled test image can move a mean over a
    # small test set (docs/benchmarks.md, "One test image at 99 bits/dim").
    results[name] = {"test_bpd": mean, "test_se": se, "test_max_bpd": float(glow_bpd.max()),
                     "parameters": count_parameters(glow), **log}
    diff = gauss - glow_bpd
    print(f"Glow vs diagonal Gaussian: {float(diff.mean()):.3f} ± "
          f"{float(diff.std() / math.sqrt(len(diff))):.3f} bits/dim better (paired)")
    fi.save(glow, out / "glow.pt")

    flat_pre = LogitPreprocessor(levels=levels_count, event_dim=1)
    if not args.no_vector:
        for vname, spec in vector_flows.items():
            torch.manual_seed(args.seed)
            flow = fi.build_flow(spec["name"], dim=dims, **spec["hyper"])
            log = train(flow, train_v.flatten(1), (val[0].flatten(1), val[1]), flat_pre,
                        lambda y: y, seed=args.seed, name=spec["name"], **budget)
            mean, se, per_image = mean_bpd(flow, y_test.flatten(1), ladj_test, flat_pre,
                                           lambda y: y)
            results[vname] = {"test_bpd": mean, "test_se": se,
                              "test_max_bpd": float(per_image.max()),
                              "parameters": count_parameters(flow), **log}

    save_samples(glow, pre, out / "samples.png",
                 f"Glow samples, {label} ({results[name]['epochs']} epochs)")
    first = {int(c): int(torch.nonzero(test_labels == c)[0]) for c in test_labels.unique()}
    pairs = [(y_test[first[a]], y_test[first[b]]) for a, b in interpolation_classes
             if a in first and b in first]
    save_interpolation(glow, pre, pairs, out / "interpolation.png",
                       f"Glow: interpolation between encoded test images ({label})")
    table = markdown_table(results)
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"label": label, "args": vars(args), "results": results}, indent=2))
    print(f"figures and results written to {out}/")
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, out="out/glow_digits", epochs=60, minutes=10.0, levels=2, steps=4,
                      hidden_channels=64)
    values, labels = load_digits()
    vector = {
        "NSF (vector, 64-D)": {"name": "nsf", "hyper": {"num_layers": 5, "hidden": (128, 128)}},
        "Glow (vector, 64-D)": {"name": "glow",
                                "hyper": {"num_layers": 5, "hidden": (128, 128)}},
    }
    return compare(values.reshape(-1, 1, 8, 8), labels, 17, args, "8x8 digits", vector,
                   interpolation_classes=[(0, 1), (2, 3), (4, 5), (7, 9)])


if __name__ == "__main__":
    main()
