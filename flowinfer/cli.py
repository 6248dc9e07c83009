"""The ``flowinfer`` command: fit, sample, list and time flows from the shell.

Subcommands:
    demo    fit a built-in 2-D data set and write density, samples, layers and loss figures
            plus a text report with the test log-likelihood
    fit     fit a flow to a CSV or NPY file of rows and save it (``fi.save``)
    sample  draw samples from a saved flow into a CSV or NPY file (or stdout)
    list    the registered flows
    bench   a quick timing of ``log_prob`` + backward for every invertible flow

Errors (bad arguments, unreadable files, bad data) print one line on stderr and exit with a
non-zero status, never a traceback.

Example:
    $ flowinfer demo --dataset moons --flow nsf
    $ flowinfer fit data.csv --flow maf --out model.pt
    $ flowinfer sample model.pt -n 1000 --out samples.csv
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

__all__ = ["main", "build_parser"]

PROG = "flowinfer"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block on an error; one line with a pointer to --help
    # is easier to read in a terminal and in a CI log.
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ helpers
def _number_arg(cast: type, accept: Callable[[float], bool], expected: str):
    """An argparse ``type`` that casts with ``cast`` and keeps values ``accept`` allows."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number_arg(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number_arg(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_fraction = _number_arg(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _read_rows(path: Path) -> np.ndarray:
    """A CSV (optional header line) or NPY file as a 2-D float array."""
    if not path.is_file():
        raise CLIError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        elif suffix in (".csv", ".txt"):
            with path.open() as handle:
                first = handle.readline()
            try:
                [float(v) for v in first.strip().split(",") if v.strip()]
                skip = 0
            except ValueError:
                skip = 1  # a header line
            rows = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
        else:
            raise CLIError(f"{path}: expected a .csv or .npy file, got {suffix or 'no suffix'}")
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise CLIError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if rows.dtype.kind not in "fiu":
        raise CLIError(f"{path}: expected numbers, got an array of dtype {rows.dtype}")
    if rows.ndim == 1:
        rows = rows.reshape(-1, 1)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise CLIError(f"{path}: expected a table of rows (n, dim), got shape {rows.shape}")
    return rows.astype(np.float64)


def _write_samples(samples: np.ndarray, out: Path | None) -> None:
    # Text gets one row per sample; NPY keeps the event shape ((n, C, H, W) for images).
    rows = samples.reshape(len(samples), -1)
    if out is None:
        np.savetxt(sys.stdout, rows, delimiter=",", fmt="%.8g")
        return
    if not out.parent.is_dir():
        raise CLIError(f"output folder does not exist: {out.parent}")
    if out.suffix.lower() == ".npy":
        np.save(out, samples)
    else:
        header = ",".join(f"x{i}" for i in range(rows.shape[1]))
        np.savetxt(out, rows, delimiter=",", fmt="%.8g", header=header, comments="")


def _flow_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.layers is not None:
        kwargs["num_layers"] = args.layers
    if args.hidden is not None:
        kwargs["hidden"] = tuple(args.hidden)
    return kwargs


def _build(name: str, dim: int, kwargs: dict[str, Any]):
    from flowinfer.registry import build_flow

    flow = build_flow(name, dim=dim, **kwargs)
    if not flow.has_inverse:
        raise CLIError(f"flow {name!r} has no inverse, so it cannot be fitted to data; "
                       "use nsf, maf or realnvp (see flowinfer list)")
    return flow


def _plot_bounds(x: torch.Tensor) -> tuple[tuple[float, float], tuple[float, float]]:
    lo = torch.quantile(x.double(), 0.001, dim=0)
    hi = torch.quantile(x.double(), 0.999, dim=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.15
    return ((float(centre[0]) - half, float(centre[0]) + half),
            (float(centre[1]) - half, float(centre[1]) + half))


# ------------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    # A listing describes registered names, not built flows: the registry's declared
    # capabilities are the source here (a built flow answers for itself: flow.has_inverse).
    from flowinfer.registry import available_flows, get_flow_spec

    flows = available_flows()
    width = max(map(len, flows))
    for name, description in flows.items():
        spec = get_flow_spec(name)
        notes = [] if spec.has_inverse else ["no inverse: guides only"]
        if not spec.supports_context:
            notes.append("unconditional")
        extra = f"  [{', '.join(notes)}]" if notes else ""
        print(f"{name:<{width}}  {description}{extra}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flowinfer.data.datasets import make_toy, toy_entropy
    from flowinfer.io import save
    from flowinfer.train.density import fit_density, mean_nll

    try:
        from flowinfer import plotting
        plotting._matplotlib()
    except ImportError:
        raise CLIError('flowinfer demo needs matplotlib: pip install "flowinfer[examples]"'
                       ) from None
    out = Path(args.out or f"flowinfer-demo-{args.dataset}-{args.flow}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create output folder {out}: {err.strerror}") from None

    torch.manual_seed(args.seed)
    train = make_toy(args.dataset, args.n, seed=args.seed)
    test = make_toy(args.dataset, args.n, seed=args.seed + 1)
    flow = _build(args.flow, 2, _flow_kwargs(args))
    print(f"fitting {args.flow} to {args.n} points of {args.dataset} "
          f"({args.epochs} epochs at most) ...", flush=True)
    result = fit_density(flow, train, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, progress=args.progress)
    with torch.no_grad():
        log_q = flow.log_prob(test).double()
    test_ll, test_se = float(log_q.mean()), float(log_q.std() / math.sqrt(log_q.numel()))

    bounds = _plot_bounds(train)
    figures = {
        "density.png": plotting.plot_density(flow, bounds=bounds),
        "samples.png": plotting.plot_samples(flow, n=2000, bounds=bounds),
        "data.png": plotting.plot_samples(train[:2000], bounds=bounds, title="data"),
        "layers.png": plotting.plot_layers(flow, n=2000, ncols=3),
        "loss.png": plotting.plot_loss(result),
    }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    lines = [
        f"flowinfer demo: {args.flow} on {args.dataset}",
        f"training points: {args.n} (10% held out for validation), test points: {args.n}",
        f"epochs run: {len(result.history['train_loss'])} of {args.epochs}, best epoch "
        f"{result.best_epoch}, wall time {result.wall_time:.1f} s",
        f"test log-likelihood: {test_ll:.4f} +- {test_se:.4f} nats per point "
        f"(NLL {-test_ll:.4f})",
    ]
    if args.dataset in ("8gaussians", "checkerboard"):
        entropy = toy_entropy(args.dataset)
        lines.append(f"entropy of the data (best possible NLL): {entropy:.4f} nats; "
                     f"gap {-test_ll - entropy:.4f} nats")
    lines.append(f"validation NLL at the best epoch: {result.best_loss:.4f} "
                 f"(train-set mean NLL now {mean_nll(flow, train):.4f})")
    lines.append(result.message)
    report = "\n".join(lines) + "\n"
    (out / "report.txt").write_text(report)
    save(flow, out / "model.pt")
    print(report, end="")
    print(f"wrote {', '.join(figures)}, report.txt and model.pt to {out.resolve()}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from flowinfer.io import save
    from flowinfer.train.density import fit_density

    rows = _read_rows(Path(args.data))
    if not np.isfinite(rows).all():
        bad = int((~np.isfinite(rows)).any(axis=1).sum())
        raise CLIError(f"{args.data}: {bad} rows contain NaN or inf; drop them first")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"output folder does not exist: {out.parent}")
    torch.manual_seed(args.seed)
    flow = _build(args.flow, rows.shape[1], _flow_kwargs(args))
    x = torch.as_tensor(rows, dtype=flow.base_loc.dtype)
    print(f"fitting {args.flow} (dim {rows.shape[1]}) to {rows.shape[0]} rows of {args.data}",
          flush=True)
    result = fit_density(flow, x, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, val_fraction=args.val_fraction, seed=args.seed,
                            progress=args.progress)
    save(flow, out)
    print(result.message)
    print(f"wrote {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from flowinfer.io import load

    path = Path(args.model)
    if not path.is_file():
        raise CLIError(f"model file not found: {path}")
    flow = load(path)
    if flow.is_conditional:
        raise CLIError(f"{path} holds a conditional flow (context_dim={flow.context_dim}); "
                       "sample it from Python with flow.sample(shape, context=...)")
    torch.manual_seed(args.seed)
    samples = flow.sample((args.n,), temperature=args.temperature).double().cpu().numpy()
    out = None if args.out in (None, "-") else Path(args.out)
    _write_samples(samples, out)
    if out is not None:
        size = (f"dim {samples.shape[1]}" if samples.ndim == 2
                else f"shape {tuple(samples.shape[1:])}")
        print(f"wrote {args.n} samples of {size} to {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from flowinfer.registry import available_flows, build_flow

    # Build every flow before any timing, so that an unknown name or a flow without an
    # inverse (log_prob of data impossible) fails at once.
    torch.manual_seed(0)
    flows = {name: build_flow(name, dim=args.dim) for name in args.flows or available_flows()}
    if args.flows:
        no_inverse = [name for name, flow in flows.items() if not flow.has_inverse]
        if no_inverse:
            raise CLIError(f"flows without an inverse cannot score data: {no_inverse}")
    flows = {name: flow for name, flow in flows.items() if flow.has_inverse}
    print(f"log_prob + backward, dim {args.dim}, batch {args.batch}, median of {args.repeats} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'flow':<12} {'ms/step':>9} {'params':>9}")
    for name, flow in flows.items():
        x = torch.randn(args.batch, args.dim, dtype=flow.base_loc.dtype)
        times = []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            flow.zero_grad(set_to_none=True)
            flow.log_prob(x).mean().neg().backward()
            if i:  # the first call warms up
                times.append(time.perf_counter() - start)
        n_params = sum(p.numel() for p in flow.parameters())
        print(f"{name:<12} {1e3 * float(np.median(times)):>9.2f} {n_params:>9}", flush=True)
    print("For the comparison with Pyro's flows and zuko run benchmarks/speed.py "
          "(in the source repository).")
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowinfer`` command."""
    from flowinfer.data.datasets import TOY_DATASETS

    parser = _Parser(prog=PROG, description="Normalizing flows for Pyro: fit, sample, plot.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def training_options(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--flow", default="nsf", help="registered flow name (default: nsf)")
        p.add_argument("--epochs", type=_positive_int, default=epochs,
                       help=f"maximum epochs (default: {epochs})")
        p.add_argument("--batch-size", type=_positive_int, default=256)
        p.add_argument("--lr", type=_positive_float, default=2e-3)
        p.add_argument("--layers", type=_positive_int, default=None,
                       help="number of layers (default: the flow's)")
        p.add_argument("--hidden", type=_positive_int, nargs="+", default=None,
                       help="hidden layer sizes, e.g. --hidden 64 64")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                       default=None, help="no progress bar")

    demo = sub.add_parser("demo", help="fit a built-in 2-D data set; write plots and a report",
                          description="Fit a flow to a built-in 2-D data set and write "
                          "density, samples, layers and loss figures and report.txt.")
    demo.add_argument("--dataset", choices=TOY_DATASETS, default="moons")
    demo.add_argument("--n", type=_positive_int, default=5000, help="training points")
    demo.add_argument("--out", default=None,
                      help="output folder (default: ./flowinfer-demo-DATASET-FLOW)")
    training_options(demo, epochs=40)
    demo.set_defaults(handler=cmd_demo)

    fit = sub.add_parser("fit", help="fit a flow to a CSV/NPY file of rows and save it",
                         description="Fit a flow by maximum likelihood to the rows of a CSV "
                         "(optional header line) or NPY file and save it with fi.save.")
    fit.add_argument("data", help="a .csv or .npy file, one row per data point")
    fit.add_argument("--out", default="model.pt", help="where to save the flow (model.pt)")
    fit.add_argument("--val-fraction", type=_fraction, default=0.1)
    training_options(fit, epochs=200)
    fit.set_defaults(handler=cmd_fit)

    sample = sub.add_parser("sample", help="draw samples from a saved flow",
                            description="Draw samples from a flow saved by `flowinfer fit` "
                            "or fi.save, into a CSV or NPY file (stdout when --out is -). "
                            "Samples of an image flow are flattened to rows in CSV and keep "
                            "their (n, C, H, W) shape in NPY.")
    sample.add_argument("model", help="a file written by `flowinfer fit` or fi.save")
    sample.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    sample.add_argument("--out", default="-", help="a .csv or .npy file, or - for stdout")
    sample.add_argument("--temperature", type=_positive_float, default=1.0,
                        help="scale of the base distribution (default: 1)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=cmd_sample)

    lst = sub.add_parser("list", help="list the registered flows",
                         description="List the registered flows with a line each.")
    lst.set_defaults(handler=cmd_list)

    bench = sub.add_parser("bench", help="time log_prob + backward per invertible flow",
                           description="Time log_prob + backward of each registered "
                           "invertible flow with default hyper-parameters on this machine.")
    bench.add_argument("--flows", nargs="+", default=None, help="flow names (default: all)")
    bench.add_argument("--dim", type=_positive_int, default=8)
    bench.add_argument("--batch", type=_positive_int, default=1024)
    bench.add_argument("--repeats", type=_positive_int, default=10)
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowinfer`` command; returns the exit status.

    Example:
        >>> code = main(["list"])  # doctest: +ELLIPSIS
        bnaf ...
        >>> code
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except CLIError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
    except (ValueError, TypeError, OSError, ImportError) as err:
        # Library errors already name the argument and the problem; show them as one line.
        message = " ".join(str(err).split())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
