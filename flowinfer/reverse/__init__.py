"""Fitting flows to unnormalized densities by reverse KL, and their log Z.

:func:`fit_reverse_kl` fits, :func:`sampler_flow` builds a flow suited to it,
:func:`estimate_log_z` and :func:`importance_resample` use the fitted flow as a proposal.
"""

from flowinfer.reverse.fit import fit_reverse_kl, reverse_kl_loss
from flowinfer.reverse.log_z import estimate_log_z, importance_resample, importance_samples
from flowinfer.reverse.sampler import sampler_flow

__all__ = ["fit_reverse_kl", "reverse_kl_loss", "estimate_log_z", "importance_resample",
           "importance_samples", "sampler_flow"]
