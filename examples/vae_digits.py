"""VAEs with flow priors and flow posteriors on scikit-learn's 8x8 digits.

Four variants at the same budget (same encoder, decoder, epochs, batches and seeds):
Gaussian prior + Gaussian posterior (the standard VAE), flow prior (``fi.FlowPrior``), flow
posterior (``fi.amortized.AmortizedFlowPosterior``, IAF on the encoder's Gaussian), and both.
Each is scored on held-out images by the ELBO and the IWAE bound on log p(x) (Burda et al.
2016) with K importance samples, and the script saves a grid of prior samples and a 2-D plot of
the test images' latent codes.

Latent dimension 8 by default (``--latent-dim 2`` gives the classic 2-D latent; there the
seed-to-seed spread of every variant hides the flows' gains, see docs/benchmarks.md).

Data: the 1,797 digits, pixel intensities / 16 binarized once with a fixed seed (static
binarization: a pixel is 1 with probability intensity / 16), split 80/20 with seed 0. Model
seeds change the initialization and the batch order, not the data.

Run:
    python examples/vae_digits.py                      # 3 seeds, K = 1000, writes out/vae_digits
    python examples/vae_digits.py --seeds 0 --epochs 20 --num-particles 100   # a quick look

This file also holds the machinery ``examples/vae_mnist.py`` reuses.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

import flowinfer as fi
from flowinfer.train.optim import progress
from flowinfer.vae.bounds import iwae_bound
from flowinfer.vae.posterior import AmortizedFlowPosterior

VARIANTS = {
    "gaussian": (False, False),
    "flow prior": (True, False),
    "flow posterior": (False, True),
    "both": (True, True),
}


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Bernoulli VAE whose prior and posterior are each Gaussian or a flow."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int],
                 flow_prior: bool, flow_posterior: bool, context_dim: int = 0,
                 prior_layers: int = 4, posterior_layers: int = 2,
                 flow_hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.flow_posterior = flow_posterior
        context_dim = context_dim if flow_posterior else 0
        # Encoder and decoder come first, so for one seed every variant starts from the same
        # encoder/decoder weights and the comparison is paired.
        self.encoder = mlp([data_dim, *hidden, 2 * latent_dim + context_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), data_dim])
        self.posterior = AmortizedFlowPosterior(
            latent_dim, context_dim=context_dim, flow="iaf", num_layers=posterior_layers,
            hidden=flow_hidden,
        )
        self.prior = (
            fi.FlowPrior(latent_dim, flow="realnvp", num_layers=prior_layers, hidden=flow_hidden)
            if flow_prior else None
        )

    def prior_distribution(self, like: Tensor) -> dist.Distribution:
        if self.prior is not None:
            return self.prior()
        zeros = like.new_zeros(self.latent_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        if self.prior is not None:
            # The prior's parameters are part of p: registered here, in the model.
            pyro.module("prior", self.prior)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior_distribution(x))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("encoder", self.encoder)
        features = self.encoder(x)
        if self.flow_posterior:
            pyro.module("posterior", self.posterior)
            q = self.posterior.from_features(features)
        else:
            loc, scale, _ = self.posterior.split_features(features)
            q = dist.Normal(loc, scale).to_event(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    @torch.no_grad()
    def latent_codes(self, x: Tensor, num_samples: int = 16) -> Tensor:
        """Posterior means of z, estimated from ``num_samples`` guide draws per image."""
        features = self.encoder(x)
        if self.flow_posterior:
            return self.posterior.from_features(features).sample((num_samples,)).mean(0)
        return self.posterior.split_features(features)[0]

    @torch.no_grad()
    def sample_images(self, n: int) -> Tensor:
        """Decoder means (pixel probabilities) at ``n`` prior draws."""
        z = self.prior_distribution(next(self.decoder.parameters())).sample((n,))
        return torch.sigmoid(self.decoder(z))


def binarize(probs: Tensor, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(probs, generator=generator)


def split(n: int, n_test: int, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_test:], perm[:n_test]


def load_digits_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    values, labels = fi.datasets.load_digits()
    x = binarize(values.float() / 16.0, seed=0)
    train, test = split(len(x), n_test=360, seed=0)
    return x[train], labels[train], x[test], labels[test]


def train_vae(vae: VAE, x: Tensor, epochs: int, batch_size: int, lr: float, seed: int,
              jit: bool = False, show_progress: bool | None = None) -> list[float]:
    """SVI with Adam; returns the mean training loss (negative ELBO per image) per epoch."""
    pyro.clear_param_store()
    elbo = pyro.infer.JitTrace_ELBO() if jit else pyro.infer.Trace_ELBO()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), elbo)
    generator = torch.Generator().manual_seed(seed)
    history = []
    bar = progress(range(epochs), show_progress, total=epochs, desc="epochs")
    for _ in bar:
        perm = torch.randperm(len(x), generator=generator)
        total = 0.0
        # Drop the ragged last batch so JitTrace_ELBO sees one shape.
        for i in range(0, len(x) - batch_size + 1, batch_size):
            total += svi.step(x[perm[i : i + batch_size]])
        history.append(total / (len(x) // batch_size * batch_size))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{history[-1]:.2f}")
    return history


def evaluate(vae: VAE, x: Tensor, num_particles: int, batch_size: int = 100) -> dict:
    """Mean test ELBO and IWAE bound per image (nats), with their standard errors over images."""
    iwae, elbo = [], []
    for i in range(0, len(x), batch_size):
        bounds = iwae_bound(vae.model, vae.guide, x[i : i + batch_size],
                            num_particles=num_particles, chunk_size=100)
        iwae.append(bounds.iwae)
        elbo.append(bounds.elbo)
    iwae_t, elbo_t = torch.cat(iwae), torch.cat(elbo)
    n = len(iwae_t)
    return {
        "elbo": elbo_t.mean().item(), "elbo_se": (elbo_t.std() / math.sqrt(n)).item(),
        "iwae": iwae_t.mean().item(), "iwae_se": (iwae_t.std() / math.sqrt(n)).item(),
        "iwae_per_image": iwae_t.tolist(),
    }


def plot_samples(vaes: dict[str, VAE], image_shape: tuple[int, int], path: Path,
                 n: int = 64) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = int(math.isqrt(n))
    h, w = image_shape
    fig, axes = plt.subplots(1, len(vaes), figsize=(2.6 * len(vaes), 2.9))
    for ax, (name, vae) in zip(axes, vaes.items(), strict=True):
        images = vae.sample_images(side * side).reshape(side * side, h, w)
        # A one-pixel blank border keeps neighbouring digits apart (8x8 digits fill rows 0-7).
        images = torch.nn.functional.pad(images, (1, 1, 1, 1)).reshape(side, side, h + 2, w + 2)
        grid = images.permute(0, 2, 1, 3).reshape(side * (h + 2), side * (w + 2))
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle("decoder means at prior samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_latents(vaes: dict[str, VAE], x: Tensor, labels: Tensor, path: Path) -> None:
    """Test images' posterior means; the first two principal axes when latent_dim > 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(vaes), figsize=(2.8 * len(vaes), 2.9))
    for ax, (name, vae) in zip(axes, vaes.items(), strict=True):
        z = vae.latent_codes(x)
        if z.shape[-1] > 2:
            z = z - z.mean(0)
            z = z @ torch.linalg.svd(z, full_matrices=False).Vh[:2].T
        points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5,
                            vmax=9.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(top=0.84)
    fig.colorbar(points, ax=axes, ticks=range(10), shrink=0.8)
    fig.suptitle("test images in latent space (posterior means)", fontsize=10, y=0.99)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarize(results: list[dict], num_particles: int) -> str:
    """A markdown table: mean and seed-to-seed standard deviation, and paired differences."""
    lines = [
        f"| variant | test ELBO | test log-lik. (IWAE, K={num_particles}) | "
        "IWAE gain over gaussian, paired | seeds |",
        "|---|---|---|---|---|",
    ]
    seeds = sorted({r["seed"] for r in results})
    base = {r["seed"]: r["iwae"] for r in results if r["variant"] == "gaussian"}

    def mean_sd(values: list[float]) -> str:
        m = sum(values) / len(values)
        if len(values) < 2:
            return f"{m:.2f}"
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
        return f"{m:.2f} ± {sd:.2f}"

    for variant in VARIANTS:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        gains = [r["iwae"] - base[r["seed"]] for r in rows if r["seed"] in base]
        gain = mean_sd(gains) if gains and variant != "gaussian" else "-"
        lines.append(
            f"| {variant} | {mean_sd([r['elbo'] for r in rows])} | "
            f"{mean_sd([r['iwae'] for r in rows])} | {gain} | {len(seeds)} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, train: Tensor, test: Tensor, test_labels: Tensor,
        image_shape: tuple[int, int]) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        vaes, per_image = {}, {}
        for variant in args.variants:
            flow_prior, flow_posterior = VARIANTS[variant]
            torch.manual_seed(seed)
            pyro.set_rng_seed(seed)
            vae = VAE(train.shape[1], args.latent_dim, args.hidden, flow_prior, flow_posterior,
                      context_dim=args.context_dim, prior_layers=args.prior_layers,
                      posterior_layers=args.posterior_layers)
            start, cpu = time.perf_counter(), time.process_time()
            history = train_vae(vae, train, args.epochs, args.batch_size, args.lr, seed,
                                jit=args.jit, show_progress=args.progress)
            train_time, train_cpu = time.perf_counter() - start, time.process_time() - cpu
            pyro.set_rng_seed(10_000 + seed)
            start, cpu = time.perf_counter(), time.process_time()
            scores = evaluate(vae, test, args.num_particles)
            # CPU seconds as well as wall seconds: on a shared machine the wall clock
            # overstates what the run costs on an idle one.
            row = {"variant": variant, "seed": seed, **scores,
                   "train_loss": history[-1], "train_s": train_time, "train_cpu_s": train_cpu,
                   "eval_s": time.perf_counter() - start,
                   "eval_cpu_s": time.process_time() - cpu}
            results.append(row)
            paired = ""
            if variant != "gaussian" and "gaussian" in per_image:
                # Same test images, same seed: the per-image difference removes the spread
                # between images, leaving the test-set noise of the gain.
                diff = torch.tensor(row["iwae_per_image"]) - per_image["gaussian"]
                row["gain_paired_se"] = (diff.std() / math.sqrt(len(diff))).item()
                paired = f" gain {diff.mean().item():+.2f} ± {row['gain_paired_se']:.2f}"
            per_image[variant] = torch.tensor(row["iwae_per_image"])
            print(f"seed {seed} {variant:>15}: test ELBO {row['elbo']:8.2f}  "
                  f"IWAE {row['iwae']:8.2f} (±{row['iwae_se']:.2f}){paired}  train "
                  f"{train_time:5.0f} s (cpu {train_cpu:4.0f} s)  eval {row['eval_s']:4.0f} s "
                  f"(cpu {row['eval_cpu_s']:4.0f} s)", flush=True)
            vaes[variant] = vae
        if seed == args.seeds[0] and len(vaes) > 1:
            plot_samples(vaes, image_shape, out / "samples.png")
            plot_latents(vaes, test, test_labels, out / "latents.png")
    table = summarize(results, args.num_particles)
    print(table)
    (out / "results.json").write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items()}, "results": results}, indent=1))
    (out / "results.md").write_text(table + "\n")
    print(f"wrote {out}/results.md, results.json, samples.png, latents.png")
    return results


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parser(description: str, **defaults) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=positive_int, default=defaults.get("epochs", 150))
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.get("seeds", [0, 1, 2]))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--latent-dim", type=positive_int, default=defaults.get("latent_dim", 8))
    p.add_argument("--hidden", type=positive_int, nargs="+", default=defaults.get("hidden", [128]))
    p.add_argument("--context-dim", type=int, default=0,
                   help="size of an extra encoder context fed to the IAF posterior (default 0: "
                   "one IAF shared by all images on the encoder's Gaussian; see docs/vae.md "
                   "for why)")
    p.add_argument("--prior-layers", type=positive_int, default=4, help="RealNVP prior layers")
    p.add_argument("--posterior-layers", type=positive_int, default=2, help="IAF posterior layers")
    p.add_argument("--batch-size", type=positive_int, default=defaults.get("batch_size", 100))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-particles", type=positive_int, default=1000, help="K of the IWAE bound")
    p.add_argument("--jit", action="store_true", help="train with JitTrace_ELBO")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   default=None, help="hide the progress bars")
    p.add_argument("--out", default=defaults.get("out", "out/vae_digits"))
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.context_dim < 0:
        p.error(f"--context-dim must be >= 0, got {args.context_dim}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser(__doc__.splitlines()[0])
    args = check_args(p, p.parse_args(argv))
    train, _, test, test_labels = load_digits_data()
    print(f"digits: {len(train)} train / {len(test)} test images, statically binarized; "
          f"latent dim {args.latent_dim}, {args.epochs} epochs, K = {args.num_particles}")
    return run(args, train, test, test_labels, image_shape=(8, 8))


if __name__ == "__main__":
    main()
