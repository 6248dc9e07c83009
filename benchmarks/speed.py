"""Speed: flowinfer against Pyro's built-in flows and zuko, same architectures, one run.

Every row builds the same flow three times (same dim, layers, hidden sizes, spline bins and
bound, order reversal between layers) and times one operation with warm-up, several
repeats, and the median. The ratio column is flowinfer's time over the other library's:
below 1.0 means flowinfer is faster.

Rows:
  train:  log_prob of a fresh batch + backward + Adam step (density estimation). Pyro's
          autoregressive transforms are used through `.inv`, the direction in which their
          log_prob of data is one pass (Pyro's documented MAF recipe).
  sample: 10,000 samples without gradients.
  guide:  rsample + log_prob of the same samples + backward + Adam step (IAF direction for
          autoregressive flows; Pyro through its cache, zuko through the inverted MAF).
  scale:  the train row over dim x batch for one affine and one spline flow.

Usage:
    python benchmarks/speed.py            # full run (several minutes on 2 CPU cores)
    python benchmarks/speed.py --quick    # a short run
    python benchmarks/speed.py --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import AutoRegressiveNN, DenseNN

import flowinfer as fi

try:
    import zuko
except ImportError:  # zuko is a benchmark-only dependency: pip install "flowinfer[bench]"
    zuko = None

BINS, BOUND = 8, 5.0


# ------------------------------------------------------------------------------ builders
@dataclass
class Built:
    """A flow of one library seen through three operations."""

    params: Callable[[], list]
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int], torch.Tensor]
    rsample_and_log_prob: Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def _flowinfer(kind: str, dim: int, layers: int, hidden: tuple[int, ...], device) -> Built:
    name, hyper = {
        "maf": ("maf", {}),
        "iaf": ("iaf", {}),
        "nsf-ar": ("nsf-ar", {"bins": BINS, "bound": BOUND}),
        "nsf-ar-iaf": ("nsf-ar", {"bins": BINS, "bound": BOUND, "direction": "iaf"}),
        "nsf": ("nsf", {"bins": BINS, "bound": BOUND}),
        "realnvp": ("realnvp", {}),
    }[kind]
    flow = fi.build_flow(name, dim=dim, num_layers=layers, hidden=hidden, **hyper).to(device)
    return Built(
        params=lambda: list(flow.parameters()),
        log_prob=flow.log_prob,
        sample=lambda n: flow.sample((n,)),
        rsample_and_log_prob=lambda n: flow.rsample_and_log_prob((n,)),
    )


def _pyro(kind: str, dim: int, layers: int, hidden: tuple[int, ...], device) -> Built:
    hidden_dims = list(hidden)
    modules, transforms = [], []
    for i in range(layers):
        if i > 0:
            transforms.append(T.Permute(torch.arange(dim - 1, -1, -1, device=device)))
        if kind in ("maf", "iaf"):
            t = T.AffineAutoregressive(AutoRegressiveNN(dim, hidden_dims), stable=False)
        elif kind in ("nsf-ar", "nsf-ar-iaf"):
            t = T.SplineAutoregressive(
                dim, AutoRegressiveNN(dim, hidden_dims, param_dims=[BINS, BINS, BINS - 1, BINS]),
                count_bins=BINS, bound=BOUND, order="quadratic")
        elif kind == "nsf":
            split = dim // 2
            t = T.SplineCoupling(
                dim, split, DenseNN(split, hidden_dims,
                                    param_dims=[(dim - split) * BINS, (dim - split) * BINS,
                                                (dim - split) * (BINS - 1),
                                                (dim - split) * BINS]),
                count_bins=BINS, bound=BOUND, order="quadratic")
        elif kind == "realnvp":
            split = dim // 2
            t = T.AffineCoupling(split, DenseNN(split, hidden_dims,
                                               param_dims=[dim - split, dim - split]))
        else:
            raise ValueError(kind)
        t = t.to(device)
        modules.append(t)
        # Autoregressive layers evaluate data in one pass through `.inv` (MAF direction).
        maf_direction = kind in ("maf", "nsf-ar")
        transforms.append(t.inv if maf_direction else t)
    base = dist.Normal(torch.zeros(dim, device=device), torch.ones(dim, device=device)).to_event(1)

    def distribution():
        return dist.TransformedDistribution(base, transforms)

    def rsample_and_log_prob(n):
        d = distribution()
        y = d.rsample((n,))
        return y, d.log_prob(y)

    return Built(
        params=lambda: [p for m in modules for p in m.parameters()],
        log_prob=lambda x: distribution().log_prob(x),
        sample=lambda n: distribution().sample((n,)),
        rsample_and_log_prob=rsample_and_log_prob,
    )


def _zuko(kind: str, dim: int, layers: int, hidden: tuple[int, ...], device) -> Built | None:
    if zuko is None:
        return None
    common = {"transforms": layers, "hidden_features": hidden}
    if kind in ("maf", "iaf"):
        flow = zuko.flows.MAF(dim, **common)
    elif kind in ("nsf-ar", "nsf-ar-iaf"):
        flow = zuko.flows.NSF(dim, bins=BINS, **common)
    elif kind == "nsf":
        flow = zuko.flows.NSF(dim, bins=BINS, passes=2, **common)
    elif kind == "realnvp":
        flow = zuko.flows.MAF(dim, passes=2, **common)
    else:
        raise ValueError(kind)
    # zuko's rational-quadratic splines live on [-5, 5] (its default), as BOUND here.
    if kind in ("iaf", "nsf-ar-iaf"):
        flow.transform = flow.transform.inv  # zuko's recipe for an IAF
    flow = flow.to(device)
    return Built(
        params=lambda: list(flow.parameters()),
        log_prob=lambda x: flow().log_prob(x),
        sample=lambda n: flow().sample((n,)),
        rsample_and_log_prob=lambda n: flow().rsample_and_log_prob((n,)),
    )


BUILDERS = {"flowinfer": _flowinfer, "pyro": _pyro, "zuko": _zuko}


# ------------------------------------------------------------------------------ timing
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device, warmup: int, repeats: int,
                min_time: float) -> float:
    """Median seconds per call over `repeats` blocks, each at least `min_time` long."""
    for _ in range(warmup):
        fn()
    _sync(device)
    # Calls per block so that each block lasts about min_time.
    start = time.perf_counter()
    fn()
    _sync(device)
    single = max(time.perf_counter() - start, 1e-7)
    per_block = max(1, int(min_time / single))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_block):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / per_block)
    return statistics.median(times)


def _train_step(built: Built, batches: list[torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.Adam(built.params(), lr=1e-4)
    # A fresh tensor every step, as in training (Pyro's transforms cache on the identity of
    # the input, so reusing one tensor would serve stale values and break backward).
    stream = itertools.cycle(batches)

    def step():
        data = next(stream)
        opt.zero_grad(set_to_none=True)
        loss = -built.log_prob(data).mean()
        loss.backward()
        opt.step()

    return step


def _guide_step(built: Built, n: int) -> Callable[[], None]:
    opt = torch.optim.Adam(built.params(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        y, lp = built.rsample_and_log_prob(n)
        loss = (lp + 0.5 * y.pow(2).sum(-1)).mean()
        loss.backward()
        opt.step()

    return step


def _sample(built: Built, n: int) -> Callable[[], None]:
    def run():
        with torch.no_grad():
            built.sample(n)

    return run


def run_row(op: str, kind: str, dim: int, batch: int, args) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for lib, builder in BUILDERS.items():
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        built = builder(kind, dim, args.layers, tuple(args.hidden), args.device)
        if built is None:
            row[lib] = None
            continue
        if op == "train":
            batches = [torch.randn(batch, dim, device=args.device) for _ in range(8)]
            fn = _train_step(built, batches)
        elif op == "sample":
            fn = _sample(built, batch)
        else:
            fn = _guide_step(built, batch)
        row[lib] = median_time(fn, args.device, args.warmup, args.repeats, args.min_time)
    return row


def _fmt_ms(t: float | None) -> str:
    return "n/a" if t is None else f"{1e3 * t:9.3f}"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:5.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.warmup = 2 if args.quick else 5
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = 0.05 if args.quick else 0.2

    rows: list[tuple[str, str, int, int]] = []
    for kind in ("maf", "nsf-ar", "nsf", "realnvp"):
        rows.append(("train", kind, 8, 512))
    for kind in ("maf", "nsf"):
        rows.append(("sample", kind, 8, 10_000))
    for kind in ("iaf", "nsf-ar-iaf", "realnvp", "nsf"):
        rows.append(("guide", kind, 8, 512))
    if args.quick:
        dims, batches = (2, 32), (64, 4096)
    else:
        dims, batches = (2, 8, 32, 128), (64, 512, 4096)
    for kind in ("maf", "nsf"):
        for dim in dims:
            for batch in batches:
                if (dim, batch) != (8, 512):
                    rows.append(("train", kind, dim, batch))

    device_name = (torch.cuda.get_device_name() if torch.device(args.device).type == "cuda"
                   else platform.processor() or platform.machine())
    print(f"# flowinfer speed benchmark: device={args.device} ({device_name}), "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, zuko {getattr(zuko, '__version__', 'missing')}, "
          f"python {sys.version.split()[0]}")
    print(f"# layers={args.layers}, hidden={tuple(args.hidden)}, bins={BINS}, "
          f"bound={BOUND}; times in ms (median of {args.repeats}); ratio = flowinfer / other")
    print("| op | flow | dim | batch | flowinfer | pyro | zuko | fi/pyro | fi/zuko |")
    print("|---|---|---|---|---|---|---|---|---|")
    for op, kind, dim, batch in rows:
        r = run_row(op, kind, dim, batch, args)
        print(f"| {op} | {kind} | {dim} | {batch} | {_fmt_ms(r['flowinfer'])} | "
              f"{_fmt_ms(r['pyro'])} | {_fmt_ms(r['zuko'])} | "
              f"{_fmt_ratio(r['flowinfer'], r['pyro'])} | "
              f"{_fmt_ratio(r['flowinfer'], r['zuko'])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
