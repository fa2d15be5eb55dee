"""MP-SAE training: the exact gradient of the unrolled pursuit, the optimiser, and the
:class:`MPSAE` estimator."""

from sparsecode.sae.estimator import MPSAE
from sparsecode.sae.mpsae import SAEGrad, mpsae_grad

__all__ = ["MPSAE", "SAEGrad", "mpsae_grad"]
