"""sparsecode: fast sparse coding (MP, OMP, gradient pursuit), dictionary learning and
MP-SAE training on NumPy arrays.

Importing the package is cheap: the Numba kernels load on first use (or all at once with
:func:`warmup`).
"""

from sparsecode import datasets, dictionary, gpu, metrics, pretrained
from sparsecode._gram_rows import GramRows
from sparsecode.codes import SparseCodes
from sparsecode.dictionary.itda import ITDA
from sparsecode.pretrained import PretrainedSAE
from sparsecode.pursuit import gp, gram, mp, omp
from sparsecode.sae import MPSAE, ConvergenceWarning, TrainingDivergedError, mpsae_grad

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "GramRows",
    "ITDA",
    "MPSAE",
    "PretrainedSAE",
    "SparseCodes",
    "TrainingDivergedError",
    "datasets",
    "dictionary",
    "gp",
    "gpu",
    "gram",
    "metrics",
    "mp",
    "mpsae_grad",
    "omp",
    "pretrained",
    "warmup",
    "__version__",
]


def warmup(dtypes=("float32", "float64")):
    """Compile (or load from the on-disk cache) every CPU kernel for ``dtypes``.

    Runs each solver on a tiny problem through both the Gram and the no-Gram path, so
    the first real call pays no compilation.

    Parameters
    ----------
    dtypes : sequence of str or dtype
        Float dtypes to compile for.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    for dt in dtypes:
        X = rng.standard_normal((4, 6)).astype(dt)
        D = rng.standard_normal((8, 6)).astype(dt)
        for gram_ in (True, False):
            for sel in ("abs", "positive", "signed"):
                mp(X, D, k=2, selection=sel, gram=gram_).decode(D)
            for pos in (False, True):
                omp(X, D, k=2, positive=pos, gram=gram_)
                for variant in ("gp", "acgp"):
                    gp(X, D, k=2, variant=variant, positive=pos, gram=gram_)
