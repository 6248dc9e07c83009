"""VAEs with flow priors and flow posteriors on MNIST (the 10,000 test images).

The same four variants as ``examples/vae_digits.py`` (Gaussian/Gaussian, flow prior, IAF flow
posterior, both), at the same budget, on real 28x28 digits: the MNIST test set in
``../shared/data/mnist`` relative to the repository root, split with seed 0 into 8,000
training and 2,000 test images. Pixels are binarized once with a fixed seed (static
binarization: a pixel is 1 with probability intensity / 255). Reports the test ELBO and the
IWAE bound on log p(x) with K importance samples, and saves a grid of prior samples and a 2-D
plot of the latent codes (first two principal axes).

Published MNIST numbers train on 60,000 images; these train on 8,000, so they are not
comparable to them, only to each other.

Run:
    python examples/vae_mnist.py          # defaults: seed 0, 30 epochs, K = 1000; measured 6
                                          # CPU-minutes on one core (29 min on a loaded 2-core box)
    python examples/vae_mnist.py --epochs 100 --seeds 0 1 2  # longer, with seed-to-seed spread
"""

from __future__ import annotations

from vae_digits import binarize, check_args, parser, run, split

from flowinfer.data.datasets import DataNotFoundError, load_mnist


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser(
        __doc__.splitlines()[0], epochs=30, seeds=[0], latent_dim=16, hidden=[256, 256],
        out="out/vae_mnist",
    )
    args = check_args(p, p.parse_args(argv))
    try:
        images, labels = load_mnist()     # ../shared/data/mnist, or $FLOWINFER_DATA
    except DataNotFoundError as error:
        raise SystemExit(f"{error} (see ../shared/data/README.md)") from None
    x = binarize(images.reshape(len(images), -1).float() / 255.0, seed=0)
    train, test = split(len(x), n_test=2000, seed=0)
    print(f"MNIST: {len(train)} train / {len(test)} test images, statically binarized; "
          f"latent dim {args.latent_dim}, {args.epochs} epochs, K = {args.num_particles}")
    return run(args, x[train], x[test], labels[test], image_shape=(28, 28))


if __name__ == "__main__":
    main()
