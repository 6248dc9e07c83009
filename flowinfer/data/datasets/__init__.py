"""Data for density estimation: 2-D toy sets, scikit-learn's digits, the MNIST test images.

One name space for three modules: :mod:`~flowinfer.data.datasets.toy` (the toy sets of the
flow literature, two with an exact density), :mod:`~flowinfer.data.datasets.images` (the
digits and MNIST loaders and :func:`split`) and :mod:`~flowinfer.data.datasets.dequantize`
(:class:`LogitPreprocessor`: dequantization, the logit map and bits per dimension).
``fi.datasets`` is this package.

Example:
    >>> x = make_toy("moons", 5000, seed=0)
    >>> x.shape
    torch.Size([5000, 2])

References:
    Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
    Generative Models", ICLR (the toy sets).
    Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative models",
    ICLR (dequantization and bits per dimension).
"""

from flowinfer.data.datasets.dequantize import LogitPreprocessor
from flowinfer.data.datasets.images import (
    DataNotFoundError,
    default_data_root,
    load_digits,
    load_mnist,
    split,
)
from flowinfer.data.datasets.toy import TOY_DATASETS, make_toy, toy_entropy, toy_log_prob

__all__ = [
    "TOY_DATASETS",
    "make_toy",
    "toy_log_prob",
    "toy_entropy",
    "load_digits",
    "load_mnist",
    "split",
    "LogitPreprocessor",
    "DataNotFoundError",
    "default_data_root",
]
