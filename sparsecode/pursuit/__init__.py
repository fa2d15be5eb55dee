"""Sparse coding solvers: matching pursuit, orthogonal matching pursuit, gradient pursuit."""

from sparsecode.pursuit._gram import decide_gram, gram, model_gram
from sparsecode.pursuit.gp import gp
from sparsecode.pursuit.mp import mp
from sparsecode.pursuit.omp import omp

__all__ = ["decide_gram", "gp", "gram", "mp", "model_gram", "omp"]
