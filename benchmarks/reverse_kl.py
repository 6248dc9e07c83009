"""Reverse KL: log Z accuracy on the standard targets, and mode coverage with and without remedy.

Part 1 (accuracy): U1-U4 (boxed to [-4, 4]^2), the banana and Neal's 10-d funnel, each
fitted with the default sampler flow (``sampler_flow``: NSF coupling, 5 layers, hidden
(64, 64), 8 bins, plus the output map matching the target) by ``fit_reverse_kl``; then
``estimate_log_z`` with 50,000 importance samples reports the log Z error against the exact
value, its standard error, the ESS fraction and the PSIS k-hat. Goal: |error| < 0.05 and
ESS fraction > 0.3.

Part 2 (mode coverage): the ring of 8 Gaussians and the 40-mode mixture of the FAB paper.
Coverage is the fraction of modes receiving at least half of their true mass among 50,000
flow samples ("flow"), and among the same samples importance-weighted ("flow + IS", i.e.
after importance resampling). Methods:

* ``reverse KL``: the flow starts as N(0, I) (the usual default) and minimises KL(q || p);
* ``wide + reverse KL``: the same loss from a wide start (N(0, s^2 I) with s the extent of
  the modes);
* ``wide + annealing``: tempering beta from 0.01 to 1 over the first half of the steps;
* ``wide + cover`` (the remedy): the importance-weighted forward KL (``cover_steps=steps``).

Usage:
    python benchmarks/reverse_kl.py                     # everything: ~80 min on 2 busy cores
    python benchmarks/reverse_kl.py --part accuracy     # or --part modes
    python benchmarks/reverse_kl.py --targets u1 banana --steps 500   # a quick look

Writes ``<out>/reverse_kl.json`` and ``<out>/reverse_kl.md`` (default ``out/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

import flowinfer as fi
from flowinfer.data.targets import make_target
from flowinfer.inference.evidence import importance_summary
from flowinfer.reverse import fit_reverse_kl, importance_samples, sampler_flow

ACCURACY_TARGETS = ("u1", "u2", "u3", "u4", "banana", "funnel")
MODE_TARGETS = ("ring8", "gmm40")
METHODS = ("reverse KL", "wide + cover", "wide + annealing", "wide + reverse KL")
EVAL_SAMPLES = 50_000


def default_flow(name: str, target) -> fi.Flow:
    """The default sampler flow for a target: its output map set from what is known of it."""
    if name.startswith("u"):
        return sampler_flow(2, box=target.bounds)
    if name == "banana":
        return sampler_flow(2, scale=(target.s1, 2 * target.s1))
    if name == "funnel":
        # v has sd 3; x_i given v has sd exp(v / 2), up to exp(3) = 20 at two sd of v. The
        # splines act on [-5, 5] only (identity tails), so the output map must let that
        # interval reach the mouth: with scale 1 the fit lost ~26% of the mass there.
        return sampler_flow(target.dim, scale=(target.scale,) + (8.0,) * (target.dim - 1))
    raise ValueError(f"no default flow for {name!r}")


def evaluate(flow: fi.Flow, target, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    x, log_w = importance_samples(flow, target, EVAL_SAMPLES, seed=seed)
    s = importance_summary(log_w)
    row = {
        "log_z": s.log_z, "log_z_se": s.log_z_se, "log_z_true": target.log_z,
        "log_z_error": s.log_z - target.log_z, "ess_fraction": s.ess_fraction, "khat": s.khat,
    }
    return row, x, log_w


def run_accuracy(names, steps: int, seed: int, progress: bool) -> list[dict]:
    rows = []
    for name in names:
        target = make_target(name)
        torch.manual_seed(seed)
        flow = default_flow(name, target)
        result = fit_reverse_kl(flow, target, steps=steps, num_samples=256, lr=1e-3, seed=seed,
                                progress=progress)
        row, _, _ = evaluate(flow, target, seed + 1)
        row |= {"target": name, "steps": steps, "fit_seconds": result.wall_time,
                "stop_reason": result.stop_reason}
        ok = abs(row["log_z_error"]) < 0.05 and row["ess_fraction"] > 0.3
        row["meets_goal"] = ok
        print(f"{name:7s} log Z err {row['log_z_error']:+.4f} (se {row['log_z_se']:.4f}) "
              f"ESS {row['ess_fraction']:.3f} k-hat {row['khat']:.2f} "
              f"fit {result.wall_time:.0f}s {'ok' if ok else 'MISSED'}", flush=True)
        rows.append(row)
    return rows


def mode_flow(method: str, target) -> fi.Flow:
    if method == "reverse KL":
        return sampler_flow(2)
    extent = float(target.means.abs().max())
    return sampler_flow(2, scale=extent)


def run_modes(names, steps: int, seed: int, progress: bool, methods=METHODS) -> list[dict]:
    rows = []
    for name in names:
        target = make_target(name)
        for method in methods:
            torch.manual_seed(seed)
            flow = mode_flow(method, target)
            options = {}
            if method == "wide + annealing":
                options = {"anneal_steps": steps // 2, "anneal_start": 0.01}
            elif method == "wide + cover":
                options = {"cover_steps": steps}
            result = fit_reverse_kl(flow, target, steps=steps, num_samples=256, lr=1e-3,
                                    seed=seed, progress=progress, **options)
            row, x, log_w = evaluate(flow, target, seed + 1)
            row |= {
                "target": name, "method": method, "steps": steps,
                "fit_seconds": result.wall_time, "stop_reason": result.stop_reason,
                "coverage": target.mode_coverage(x),
                "coverage_is": target.mode_coverage(x, log_w),
                "num_modes": target.num_modes,
            }
            print(f"{name:6s} {method:18s} coverage {row['coverage']:.3f} (IS "
                  f"{row['coverage_is']:.3f}) log Z err {row['log_z_error']:+.4f} "
                  f"ESS {row['ess_fraction']:.3f} fit {result.wall_time:.0f}s", flush=True)
            rows.append(row)
    return rows


def markdown(accuracy: list[dict], modes: list[dict]) -> str:
    lines = []
    if accuracy:
        lines += ["| target | steps | log Z (true) | estimate +- se | error | ESS fraction | "
                  "k-hat | fit s | goal |", "|---|---|---|---|---|---|---|---|---|"]
        for r in accuracy:
            lines.append(
                f"| {r['target']} | {r['steps']} | {r['log_z_true']:.4f} | {r['log_z']:.4f} "
                f"+- {r['log_z_se']:.4f} | {r['log_z_error']:+.4f} | {r['ess_fraction']:.3f} | "
                f"{r['khat']:.2f} | {r['fit_seconds']:.0f} | "
                f"{'met' if r['meets_goal'] else 'missed'} |")
        lines.append("")
    if modes:
        lines += ["| target | method | steps | modes covered (flow) | modes covered (flow + IS) "
                  "| log Z error +- se | ESS fraction | k-hat | fit s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in modes:
            k = r["num_modes"]
            lines.append(
                f"| {r['target']} | {r['method']} | {r['steps']} | "
                f"{round(r['coverage'] * k)}/{k} | {round(r['coverage_is'] * k)}/{k} | "
                f"{r['log_z_error']:+.3f} +- {r['log_z_se']:.3f} | {r['ess_fraction']:.3f} | "
                f"{r['khat']:.2f} | {r['fit_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "accuracy", "modes"), default="all")
    parser.add_argument("--targets", nargs="+", default=None,
                        help=f"subset of {ACCURACY_TARGETS + MODE_TARGETS}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=3000, help="accuracy fits")
    parser.add_argument("--mode-steps", type=int, default=2000, help="mode-coverage fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = args.targets
    acc_names = [n for n in ACCURACY_TARGETS if chosen is None or n in chosen]
    mode_names = [n for n in MODE_TARGETS if chosen is None or n in chosen]
    start = time.perf_counter()
    accuracy = (run_accuracy(acc_names, args.steps, args.seed, args.progress)
                if args.part in ("all", "accuracy") else [])
    modes = (run_modes(mode_names, args.mode_steps, args.seed, args.progress, args.methods)
             if args.part in ("all", "modes") else [])
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "threads": args.threads,
            "eval_samples": EVAL_SAMPLES, "seconds": time.perf_counter() - start}
    stem = "reverse_kl" if args.part == "all" else f"reverse_kl_{args.part}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"info": info, "accuracy": accuracy, "modes": modes}, indent=2,
                   default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    table = markdown(accuracy, modes)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {args.out / stem}.json and .md in {info['seconds']:.0f}s")


if __name__ == "__main__":
    main()
