"""Training: one generic loop (:func:`fit`) and the loss objects it minimises.

``fit(loss, modules, data=...)`` trains on mini-batches of data; ``fit(loss, modules,
steps=...)`` on batches the loss samples itself. :func:`fit_density` (maximum likelihood) is a
thin wrapper over it; reverse KL (:func:`flowinfer.fit_reverse_kl`) and the guides' ELBO are
loss objects too.
"""

from flowinfer.train.density import fit_density, mean_nll
from flowinfer.train.loop import fit
from flowinfer.train.losses import Loss, MassCovering, MaximumLikelihood, ReverseKL
from flowinfer.train.state import BestState, FitResult, NonFiniteLossWarning

__all__ = ["fit", "fit_density", "mean_nll", "Loss", "MaximumLikelihood", "ReverseKL",
           "MassCovering", "FitResult", "BestState", "NonFiniteLossWarning"]
