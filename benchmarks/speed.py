"""Speed: flowinfer against Pyro's built-in flows and zuko, same architectures, one run.

Every row builds the same flow in each library (same dim, layers, hidden sizes, spline bins
and bound, order reversed between layers; autoregressive layers reverse their MADE ordering,
coupling layers get a reversing permutation) and times one operation: warm-up, then repeated
blocks of calls, the libraries interleaved block by block so that load on a shared machine
falls on all of them alike, and the median per call. The ratio columns are flowinfer's time
over the other library's: below 1.0 means flowinfer is faster.

Rows:
  train:  log_prob of a fresh batch + backward + Adam step (density estimation). Pyro's
          autoregressive transforms are used through `.inv`, the direction in which their
          log_prob of data is one pass (Pyro's documented MAF recipe); zuko's MAF/NSF are
          data -> base already.
  sample: 10,000 samples without gradients (MAF: `dim` passes per layer in every library).
  guide:  rsample + log_prob of the same samples + backward + Adam step (IAF direction for
          autoregressive flows: Pyro's AffineAutoregressive, as in AutoIAFNormal, through its
          cache; zuko through its inverted MAF, its documented IAF recipe).
  scale:  the train row over dim x batch for one affine (maf) and one spline (nsf) flow.
A summary checks the targets of issue 7; `--compile` adds eager against torch.compile.

Usage:
    python benchmarks/speed.py            # full run (6 minutes on 2 shared CPU cores)
    python benchmarks/speed.py --quick    # a short run (about 2 minutes)
    python benchmarks/speed.py --only train,guide --compile
    python benchmarks/speed.py --device cuda
zuko is a benchmark-only dependency: `pip install "flowinfer[bench]"` (its columns read
n/a without it).
"""

from __future__ import annotations

import argparse
import itertools
import os
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


FLOWINFER_FLOWS = {
    "maf": ("maf", {}),
    "iaf": ("iaf", {}),
    "nsf-ar": ("nsf-ar", {"bins": BINS, "bound": BOUND}),
    "nsf-ar-iaf": ("nsf-ar", {"bins": BINS, "bound": BOUND, "direction": "iaf"}),
    "nsf": ("nsf", {"bins": BINS, "bound": BOUND}),
    "realnvp": ("realnvp", {}),
}


def _flowinfer(kind: str, dim: int, layers: int, hidden: tuple[int, ...], device) -> Built:
    name, hyper = FLOWINFER_FLOWS[kind]
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
    natural = torch.arange(dim)
    for i in range(layers):
        # Autoregressive layers alternate their MADE ordering (as flowinfer's and zuko's do,
        # and as AutoIAFNormal's random orderings do) instead of paying for a Permute.
        order = natural if i % 2 == 0 else natural.flip(0)
        if kind in ("maf", "iaf"):
            t = T.AffineAutoregressive(
                AutoRegressiveNN(dim, hidden_dims, permutation=order), stable=False)
        elif kind in ("nsf-ar", "nsf-ar-iaf"):
            t = T.SplineAutoregressive(
                dim, AutoRegressiveNN(dim, hidden_dims, param_dims=[BINS, BINS, BINS - 1],
                                      permutation=order),
                count_bins=BINS, bound=BOUND, order="quadratic")
        elif kind in ("nsf", "realnvp"):
            if i > 0:
                transforms.append(T.Permute(torch.arange(dim - 1, -1, -1, device=device)))
            split = dim // 2
            out = dim - split
            if kind == "nsf":
                net = DenseNN(split, hidden_dims, param_dims=[out * BINS, out * BINS,
                                                              out * (BINS - 1)])
                t = T.SplineCoupling(dim, split, net, count_bins=BINS, bound=BOUND,
                                     order="quadratic")
            else:
                t = T.AffineCoupling(split, DenseNN(split, hidden_dims, param_dims=[out, out]))
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


def interleaved_medians(fns: dict[str, Callable[[], object]], device, warmup: int,
                        repeats: int, min_time: float) -> dict[str, float]:
    """Median seconds per call of each function, timing them in turn.

    Each repeat times one block of every function (at least ``min_time`` long), rotating
    which goes first. On a shared machine the load then drifts over all of them alike, so
    their ratios stay meaningful even when the absolute times do not.
    """
    per_block = {}
    for name, fn in fns.items():
        # Warm-up: `warmup` calls, but no more than about two blocks' worth of time for slow
        # operations (a single call of those is already long enough to settle caches).
        start = time.perf_counter()
        for i in range(warmup):
            fn()
            _sync(device)
            if i >= 1 and time.perf_counter() - start > 2 * min_time:
                break
        start = time.perf_counter()
        fn()
        _sync(device)
        per_block[name] = max(1, int(min_time / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = fns[name], per_block[name]
            _sync(device)
            start = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(t) for name, t in times.items()}


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
        # A reverse-KL loss against N(0, I), as a flow guide's ELBO gradient step would do.
        loss = (lp + 0.5 * y.pow(2).sum(-1)).mean()
        loss.backward()
        opt.step()

    return step


def _sample(built: Built, n: int) -> Callable[[], None]:
    def run():
        with torch.no_grad():
            built.sample(n)

    return run


def _operation(op: str, built: Built, dim: int, batch: int, device) -> Callable[[], None]:
    if op == "train":
        return _train_step(built, [torch.randn(batch, dim, device=device) for _ in range(8)])
    if op == "sample":
        return _sample(built, batch)
    return _guide_step(built, batch)


def run_row(op: str, kind: str, dim: int, batch: int, args) -> dict[str, float | None]:
    fns: dict[str, Callable[[], None]] = {}
    # Pyro's MADE refuses hidden layers narrower than the input, so above dim 64 every
    # library gets hidden widths of at least dim (the same network in each).
    hidden = tuple(max(h, dim) for h in args.hidden)
    for lib in args.libs:
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        built = BUILDERS[lib](kind, dim, args.layers, hidden, args.device)
        if built is not None:
            fns[lib] = _operation(op, built, dim, batch, args.device)
    times = interleaved_medians(fns, args.device, args.warmup, args.repeats, args.min_time)
    return {lib: times.get(lib) for lib in BUILDERS}


def run_compile_row(op: str, kind: str, dim: int, batch: int, args) -> tuple[float, float]:
    """flowinfer eager against the same flow under ``torch.compile`` (default inductor)."""
    fns = {}
    for label in ("eager", "compiled"):
        torch.manual_seed(0)
        flow = fi.build_flow(FLOWINFER_FLOWS[kind][0], dim=dim, num_layers=args.layers,
                             hidden=tuple(args.hidden), **FLOWINFER_FLOWS[kind][1])
        flow = flow.to(args.device)
        log_prob, rsample_lp = flow.log_prob, flow.rsample_and_log_prob
        if label == "compiled":
            torch._dynamo.reset()
            log_prob = torch.compile(flow.log_prob, fullgraph=True)
            rsample_lp = torch.compile(flow.rsample_and_log_prob, fullgraph=True)
        built = Built(params=lambda f=flow: list(f.parameters()), log_prob=log_prob,
                      sample=lambda n: None, rsample_and_log_prob=lambda n, g=rsample_lp: g((n,)))
        fns[label] = _operation(op, built, dim, batch, args.device)
        # Compile (forward and backward) before any timing starts.
        for _ in range(3):
            fns[label]()
    times = interleaved_medians(fns, args.device, args.warmup, args.repeats, args.min_time)
    return times["eager"], times["compiled"]


# ------------------------------------------------------------------------------ report
def _fmt_ms(t: float | None) -> str:
    return "n/a" if t is None else f"{1e3 * t:.3f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def _fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}"


# (op, flow, other library, largest acceptable flowinfer/other ratio), from issue 7.
TARGETS = [
    *(("train", k, "pyro", 0.5) for k in ("maf", "nsf-ar", "nsf", "realnvp")),
    ("train", "maf", "zuko", 1.0),
    ("train", "nsf-ar", "zuko", 1.0),
    ("guide", "iaf", "pyro", 1.0),
    ("guide", "iaf", "zuko", 1.0),
    ("sample", "realnvp", "zuko", 1.2),
    ("sample", "nsf", "zuko", 1.2),
]


def build_rows(quick: bool) -> list[tuple[str, str, int, int]]:
    rows: list[tuple[str, str, int, int]] = []
    for kind in ("maf", "nsf-ar", "nsf", "realnvp"):
        rows.append(("train", kind, 8, 512))
    for kind in ("realnvp", "nsf", "iaf", "maf"):
        rows.append(("sample", kind, 8, 10_000))
    for kind in ("iaf", "nsf-ar-iaf", "realnvp", "nsf"):
        rows.append(("guide", kind, 8, 512))
    dims, batches = ((2, 32), (64, 4096)) if quick else ((2, 8, 32, 128), (64, 512, 4096))
    for kind in ("maf", "nsf"):
        for dim in dims:
            for batch in batches:
                if (dim, batch) != (8, 512):
                    rows.append(("train", kind, dim, batch))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--only", default=None,
                        help="comma-separated ops to run (train, sample, guide, scale, "
                        "compile)")
    parser.add_argument("--compile", action="store_true",
                        help="also time flowinfer under torch.compile against eager")
    args = parser.parse_args(argv)
    if args.layers < 1 or args.repeats is not None and args.repeats < 1:
        parser.error("--layers and --repeats must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.warmup = 2 if args.quick else 5
    args.repeats = args.repeats or (5 if args.quick else 9)
    args.min_time = 0.05 if args.quick else 0.2
    args.libs = [lib for lib in BUILDERS if lib != "zuko" or zuko is not None]

    rows = build_rows(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {"train", "sample", "guide", "scale", "compile"}
        if unknown:
            parser.error(f"--only takes train, sample, guide, scale, compile; got {unknown}")
        args.compile = args.compile or "compile" in wanted
        rows = [r for r in rows if ("scale" if r[0] == "train" and (r[2], r[3]) != (8, 512)
                                    else r[0]) in wanted]

    device = torch.device(args.device)
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine())
    print(f"# flowinfer speed benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}: "
          f"device={args.device} ({device_name}, {os.cpu_count()} CPUs), "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, zuko {getattr(zuko, '__version__', 'missing')}, "
          f"flowinfer {fi.__version__}, python {sys.version.split()[0]}")
    print(f"# layers={args.layers}, hidden={tuple(args.hidden)} (widened to dim where dim is "
          f"larger), bins={BINS}, bound={BOUND}; ms per call, median of {args.repeats} "
          f"interleaved blocks; "
          f"ratio = flowinfer / other (< 1: flowinfer faster)")
    print("| op | flow | dim | batch | flowinfer | pyro | zuko | fi/pyro | fi/zuko |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    ratios: dict[tuple[str, str, str], float | None] = {}
    for op, kind, dim, batch in rows:
        r = run_row(op, kind, dim, batch, args)
        rp, rz = _ratio(r["flowinfer"], r["pyro"]), _ratio(r["flowinfer"], r["zuko"])
        if (dim, batch) in ((8, 512), (8, 10_000)):
            ratios[(op, kind, "pyro")], ratios[(op, kind, "zuko")] = rp, rz
        print(f"| {op} | {kind} | {dim} | {batch} | {_fmt_ms(r['flowinfer'])} | "
              f"{_fmt_ms(r['pyro'])} | {_fmt_ms(r['zuko'])} | {_fmt_ratio(rp)} | "
              f"{_fmt_ratio(rz)} |", flush=True)

    checked = [t for t in TARGETS if (t[0], t[1], t[2]) in ratios]
    if checked:
        print("\n# targets (issue 7), at dim 8, batch 512 (sampling: 10,000 points)")
        for op, kind, other, limit in checked:
            value = ratios[(op, kind, other)]
            verdict = "n/a" if value is None else ("met" if value <= limit else "NOT met")
            print(f"- {op} {kind}: fi/{other} = {_fmt_ratio(value)} (target <= {limit}): "
                  f"{verdict}")

    if args.compile:
        print("\n# torch.compile (inductor, fullgraph=True) on flowinfer's log_prob and "
              "rsample_and_log_prob; ms per step, compile time excluded")
        print("| op | flow | dim | batch | eager | compiled | speed-up |")
        print("|---|---|---|---|---:|---:|---:|")
        for op, kind in (("train", "maf"), ("train", "nsf"), ("guide", "iaf")):
            eager, compiled = run_compile_row(op, kind, 8, 512, args)
            print(f"| {op} | {kind} | 8 | 512 | {_fmt_ms(eager)} | {_fmt_ms(compiled)} | "
                  f"{eager / compiled:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
