"""Data and test densities: what flows are fitted to, and what they are checked against.

- :mod:`flowinfer.data.datasets` (``fi.datasets``): data for density estimation (2-D toy sets
  with exact densities, the digits and MNIST loaders, a seeded split, dequantization).
- :mod:`flowinfer.data.targets` (``fi.targets``): unnormalized densities for reverse KL with
  exact ``log Z`` and samplers (U1-U4, banana, funnel, Gaussian mixtures).

This layer imports only :mod:`flowinfer.checks`, torch and numpy: nothing of the flow layer.
"""
