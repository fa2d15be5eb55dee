"""MP-SAE training: the exact gradient of the unrolled pursuit, the optimiser, the
training engine and the :class:`MPSAE` estimator."""

from sparsecode.sae._step import StepPart, merge
from sparsecode.sae.config import TrainConfig
from sparsecode.sae.divergence import TrainingDivergedError
from sparsecode.sae.engine import Engine
from sparsecode.sae.estimator import MPSAE
from sparsecode.sae.fitted import NotFittedError
from sparsecode.sae.mpsae import SAEGrad, mpsae_grad
from sparsecode.sae.recipes import paper_recipe
from sparsecode.sae.stopping import ConvergenceWarning

__all__ = ["MPSAE", "ConvergenceWarning", "Engine", "NotFittedError", "SAEGrad", "StepPart",
           "TrainConfig", "TrainingDivergedError", "merge", "mpsae_grad", "paper_recipe"]
