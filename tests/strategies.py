"""Hypothesis strategies: random sparse-coding problems.

Hypothesis draws the sizes, the dtype and a seed; NumPy draws the numbers from the seed,
which keeps examples fast and shrinking meaningful (smaller shapes first).
"""

import numpy as np
from hypothesis import strategies as st

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def problems(draw, max_atoms=40, max_features=24, max_samples=12, unit=None):
    """``(X, D)`` with Gaussian signals and a Gaussian dictionary.

    ``unit``: True for unit-norm atoms, False for atoms of random norms in [0.5, 2],
    None to let hypothesis choose.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, max_samples))
    d = draw(st.integers(2, max_features))
    K = draw(st.integers(2, max_atoms))
    dtype = draw(DTYPES)
    if unit is None:
        unit = draw(st.booleans())
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    if not unit:
        D *= rng.uniform(0.5, 2.0, size=(K, 1))
    X = rng.standard_normal((n, d))
    return X.astype(dtype), D.astype(dtype)


def planted(rng, n, d, K, k, noise=0.0, dtype=np.float64):
    """k-sparse signals ``X = Z D + noise`` from a unit-norm Gaussian dictionary.

    Returns ``X, D, supports`` with ``supports`` of shape (n, k).
    """
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    supports = np.array([rng.choice(K, size=k, replace=False) for _ in range(n)])
    coef = rng.uniform(1.0, 2.0, size=(n, k)) * rng.choice([-1.0, 1.0], size=(n, k))
    X = np.einsum("nk,nkd->nd", coef, D[supports])
    scale = np.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(d)
    X += noise * rng.standard_normal(X.shape) * scale
    return X.astype(dtype), D.astype(dtype), supports
