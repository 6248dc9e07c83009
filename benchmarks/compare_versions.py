"""Time this checkout's flowinfer against another checkout's, interleaved in one process.

Separate runs on a shared machine differ by more than most code changes do; timing both
versions block by block in one process (as `speed.py` does for libraries) keeps the ratio
meaningful. The other version is imported under the name `flowinfer_other`, from a copy of
its package with the imports renamed.

Usage (compare with the commit before the performance work):
    git archive 904fe52 | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    python benchmarks/compare_versions.py /tmp/old
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

import speed  # noqa: E402

import flowinfer as fi  # noqa: E402

ROWS = [("train", "maf"), ("train", "nsf-ar"), ("train", "nsf"), ("train", "realnvp"),
        ("sample", "realnvp"), ("sample", "nsf"), ("guide", "iaf"), ("guide", "nsf-ar-iaf"),
        ("guide", "nsf")]


def import_other(checkout: Path, workdir: Path):
    """Import ``checkout/flowinfer`` as the package ``flowinfer_other``."""
    source = checkout / "flowinfer"
    if not (source / "__init__.py").is_file():
        raise ValueError(f"checkout must contain flowinfer/__init__.py, got {checkout}")
    target = workdir / "flowinfer_other"
    shutil.copytree(source, target)
    pattern = re.compile(r"\bflowinfer(?=[.\s])")
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(pattern.sub("flowinfer_other", text))
    sys.path.insert(0, str(workdir))
    return importlib.import_module("flowinfer_other")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="root of the other checkout")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.dim < 2 or args.batch < 1:
        parser.error("--repeats and --batch must be positive and --dim at least 2")
    with tempfile.TemporaryDirectory() as workdir:
        other = import_other(args.other, Path(workdir))
        print(f"# this checkout ({Path(fi.__file__).parent.parent}) against {args.other}; "
              f"dim={args.dim}, ms per call, median of {args.repeats} interleaved blocks; "
              f"threads={torch.get_num_threads()}")
        print("| op | flow | batch | other | this | this/other |")
        print("|---|---|---|---:|---:|---:|")
        for op, kind in ROWS:
            batch = 10_000 if op == "sample" else args.batch
            fns = {}
            for label, package in (("other", other), ("this", fi)):
                name, hyper = speed.FLOWINFER_FLOWS[kind]
                torch.manual_seed(0)
                flow = package.build_flow(name, dim=args.dim, num_layers=5, hidden=(64, 64),
                                          **hyper)
                built = speed.Built(
                    params=lambda f=flow: list(f.parameters()), log_prob=flow.log_prob,
                    sample=lambda n, f=flow: f.sample((n,)),
                    rsample_and_log_prob=lambda n, f=flow: f.rsample_and_log_prob((n,)))
                fns[label] = speed._operation(op, built, args.dim, batch, "cpu")
            t = speed.interleaved_medians(fns, "cpu", 5, args.repeats, 0.2)
            print(f"| {op} | {kind} | {batch} | {1e3 * t['other']:.3f} | "
                  f"{1e3 * t['this']:.3f} | {t['this'] / t['other']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
