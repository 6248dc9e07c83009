"""Glow variants on MNIST: the exploratory runs behind the MNIST example's defaults.

Trains one image Glow exactly as ``examples/glow_mnist.py`` does (same split, dequantization
draws, training loop with cosine decay, wall-clock cap) and reports test bits/dim, the worst
test image, epochs, and a sample grid at temperatures 1.0 and 0.7. Options change one thing
at a time: the base (``--base standard|learnable``), steps and widths per level, batch size,
learning rate, seed, and two coupling variants that are not part of the library:

* ``--coupling-scale one-sided``: Glow's sigmoid scale, shifted to start at the identity.
  In the data -> base direction a coupling multiplies by ``sigmoid(raw + 2) / sigmoid(2)``
  (at most 1.135), so it cannot amplify a deviation; the log scale is then softly bounded as
  usual.
* ``--conditioner-actnorm``: an ActNorm (per-channel affine, data-dependent start) after each
  hidden convolution of the conditioners, as in Glow.

The rows of docs/benchmarks.md ("Glow on images") ran two at a time with one thread each::

    python benchmarks/glow_variants.py --threads 1 --minutes 11 --steps 4,8 --hidden 64,128
    python benchmarks/glow_variants.py --threads 1 --minutes 11 --steps 4,8 --hidden 64,128 \\
        --base standard
    python benchmarks/glow_variants.py --threads 1 --minutes 11 --steps 4,8 --hidden 96,128 \\
        --coupling-scale one-sided

References:
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import flowinfer as fi
from flowinfer.data.datasets import DataNotFoundError, LogitPreprocessor, load_mnist, split
from flowinfer.transforms.elements import AffineElement
from flowinfer.transforms.images import ChannelCoupling

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from glow_digits import count_parameters, mean_bpd, per_level, save_samples, train  # noqa: E402


class OneSidedAffineElement(AffineElement):
    """Affine element whose data -> base factor ``exp(-s)`` is at most ``1 / sigmoid(2)``."""

    def _shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params[..., 0], params[..., 1]
        # -log(sigmoid(raw + 2) / sigmoid(2)): zero at raw = 0, > -0.127 everywhere.
        u = F.softplus(-(raw + 2.0)) - F.softplus(raw.new_tensor(-2.0))
        bound = self.log_scale_bound
        return shift, bound * torch.tanh(u / bound)


class HiddenActNorm(nn.Module):
    """Per-channel affine map of hidden features, set from the first training batch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, h: Tensor) -> Tensor:
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.loc.copy_(-h.mean((0, 2, 3), keepdim=True))
                self.log_scale.copy_(-h.std((0, 2, 3), keepdim=True).clamp_min(1e-6).log())
                self.initialized.fill_(True)
        return (h + self.loc) * torch.exp(self.log_scale)


def apply_variants(glow: fi.Flow, args: argparse.Namespace) -> None:
    for module in glow.modules():
        if not isinstance(module, ChannelCoupling):
            continue
        if args.coupling_scale == "one-sided":
            module.element = OneSidedAffineElement(module.element.log_scale_bound)
        if args.conditioner_actnorm:
            conv_in, relu_1, conv_mid, relu_2, conv_out = module.conditioner
            hidden = conv_in.out_channels
            module.conditioner = nn.Sequential(conv_in, HiddenActNorm(hidden), relu_1,
                                               conv_mid, HiddenActNorm(hidden), relu_2,
                                               conv_out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/glow_variants/run")
    parser.add_argument("--steps", type=per_level, default=(4, 8), help="per level, e.g. 4,8")
    parser.add_argument("--hidden", type=per_level, default=(64, 128), help="e.g. 64,128")
    parser.add_argument("--base", choices=("standard", "learnable"), default="learnable")
    parser.add_argument("--coupling-scale", choices=("symmetric", "one-sided"),
                        default="symmetric")
    parser.add_argument("--conditioner-actnorm", action="store_true")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        images, _ = load_mnist()
    except DataNotFoundError as err:
        sys.exit(f"glow_variants: {err}")
    # The MNIST example's split and dequantization draws (its seed 0).
    train_v, val_v, test_v = split(images.reshape(-1, 1, 28, 28), (0.8, 0.1, 0.1), seed=0)
    pre = LogitPreprocessor(levels=256, event_dim=3)
    gen = torch.Generator().manual_seed(1)
    val = pre(val_v, generator=gen)
    y_test, ladj_test = pre(test_v, generator=gen)

    torch.manual_seed(args.seed)
    glow = fi.build_flow("glow", shape=(1, 28, 28), levels=2, steps_per_level=args.steps,
                         hidden_channels=args.hidden, base=args.base)
    apply_variants(glow, args)
    log = train(glow, train_v, val, pre, lambda y: y, epochs=args.epochs,
                minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                show=False, name="glow")
    mean, se, per_image = mean_bpd(glow, y_test, ladj_test, pre, lambda y: y)
    result = {"args": vars(args), "test_bpd": mean, "test_se": se,
              "test_max_bpd": float(per_image.max()),
              "test_median_bpd": float(per_image.median()),
              "parameters": count_parameters(glow), **log}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    save_samples(glow, pre, out / "samples.png",
                 f"{mean:.3f} bits/dim, {log['epochs']} epochs")
    print(f"test {mean:.3f} ± {se:.3f} bits/dim (worst image {result['test_max_bpd']:.2f}), "
          f"{log['epochs']} epochs; written to {out}/")
    return result


if __name__ == "__main__":
    main()
