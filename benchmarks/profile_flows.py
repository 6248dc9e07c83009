"""Profile one row of `speed.py`: time per step and where it goes (torch.profiler).

Prints, for each library, the median time per call of one operation and the operators that
take the most self time, and sorts the ops into four buckets: the conditioner networks
(matmuls, activations, masks), the optimizer step, the element transforms (affine or
spline arithmetic) with the flow's bookkeeping, and the base density. The first two do the
same work in every library for the same architecture, so they bound how far any
implementation can get ahead.

`--repo` imports flowinfer from another checkout, to compare versions of the code on the
same machine (e.g. an export of an older commit:
`git archive 904fe52 | tar -x -C /tmp/old && python benchmarks/profile_flows.py --repo /tmp/old`).

Usage:
    python benchmarks/profile_flows.py --op train --flow nsf-ar
    python benchmarks/profile_flows.py --op guide --flow iaf --libs flowinfer pyro zuko
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

_HERE = Path(__file__).resolve().parent

# Buckets by operator name. Adam's ops are recognised by the profiler scope they run in.
_NETWORK = ("aten::mm", "aten::addmm", "aten::linear", "aten::relu", "aten::clamp_min",
            "aten::threshold_backward", "aten::t")


def _bucket(event, adam_ids: set[int]) -> str:
    if event.id in adam_ids:
        return "optimizer"
    if event.name in _NETWORK or "Addmm" in event.name or "Mm" in event.name:
        return "network"
    return "elements, splines, flow bookkeeping, base"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", default="train", choices=("train", "sample", "guide"))
    parser.add_argument("--flow", default="nsf-ar",
                        help="maf, iaf, nsf-ar, nsf-ar-iaf, nsf or realnvp")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--libs", nargs="+", default=["flowinfer"])
    parser.add_argument("--repo", type=Path, default=None,
                        help="import flowinfer from this checkout instead")
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    parser.add_argument("--top", type=int, default=12, help="rows of the operator table")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.dim < 2 or args.batch < 1:
        parser.error("--steps and --batch must be positive and --dim at least 2")
    sys.path.insert(0, str(args.repo.resolve() if args.repo else _HERE.parent))
    sys.path.insert(0, str(_HERE))
    import speed  # noqa: PLC0415  (after the path is set)

    import flowinfer  # noqa: PLC0415

    print(f"# flowinfer from {Path(flowinfer.__file__).parent.parent}; op={args.op} "
          f"flow={args.flow} dim={args.dim} batch={args.batch}, threads="
          f"{torch.get_num_threads()}, torch {torch.__version__}")
    for lib in args.libs:
        torch.manual_seed(0)
        built = speed.BUILDERS[lib](args.flow, args.dim, 5, (64, 64), "cpu")
        if built is None:
            print(f"## {lib}: not installed")
            continue
        fn = speed._operation(args.op, built, args.dim, args.batch, "cpu")
        times = []
        for _ in range(3):
            fn()
        for _ in range(max(args.steps, 15)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                fn()
        events = [e for e in prof.events() if e.name.startswith("aten::") or
                  e.name.startswith("autograd::engine") or "Adam" in e.name]
        adam_ids: set[int] = set()
        for e in prof.events():
            if "Optimizer.step" in e.name:
                stack = list(e.cpu_children)
                while stack:
                    child = stack.pop()
                    adam_ids.add(child.id)
                    stack.extend(child.cpu_children)
        buckets: dict[str, float] = {}
        for e in events:
            key = _bucket(e, adam_ids)
            buckets[key] = buckets.get(key, 0.0) + e.self_cpu_time_total
        total = sum(buckets.values())
        n_ops = sum(1 for e in prof.events() if e.name.startswith("aten::")) / args.steps
        print(f"\n## {lib}: median {1e3 * statistics.median(times):.3f} ms per step, "
              f"min {1e3 * min(times):.3f} ms; {n_ops:.0f} aten calls per step")
        for key, value in sorted(buckets.items(), key=lambda kv: -kv[1]):
            print(f"- {key}: {100 * value / total:.0f}% of self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
