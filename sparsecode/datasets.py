"""Synthetic data with a known answer."""

import numpy as np

from sparsecode.codes import SparseCodes


def make_sparse_signals(n_samples, n_features, n_atoms, k, *, noise=0.01, dtype=np.float32,
                        random_state=None):
    """k-sparse signals from a planted unit-norm Gaussian dictionary.

    Each signal combines ``k`` distinct atoms with coefficients of random sign and
    magnitude uniform in [1, 2]; Gaussian noise of relative level ``noise`` is added
    (``noise=0.01``: noise norm about 1% of the signal norm).

    Parameters
    ----------
    n_samples, n_features, n_atoms, k : int
    noise : float
    dtype : dtype
    random_state : int, Generator or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    D : ndarray of shape (n_atoms, n_features)
        Unit-norm atoms.
    codes : SparseCodes
        The planted codes (``k`` atoms per row, in random order).
    """
    if k > n_atoms:
        raise ValueError(f"k must be <= n_atoms = {n_atoms}; got k = {k}")
    rng = np.random.default_rng(random_state)
    D = rng.standard_normal((n_atoms, n_features))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    # k distinct atoms per row: the first k of a random permutation (argpartition of noise)
    idx = np.argpartition(rng.random((n_samples, n_atoms)), k - 1, axis=1)[:, :k]
    val = rng.uniform(1.0, 2.0, size=(n_samples, k)) * rng.choice([-1.0, 1.0], size=(n_samples, k))
    X = np.einsum("nk,nkd->nd", val, D[idx])
    if noise:
        scale = np.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(n_features)
        X += noise * scale * rng.standard_normal(X.shape)
    codes = SparseCodes(idx.astype(np.int32), val.astype(dtype), n_atoms)
    return X.astype(dtype), D.astype(dtype), codes


def support_recovery(codes, truth):
    """Fraction of the planted atoms found, averaged over signals.

    Parameters
    ----------
    codes, truth : SparseCodes
        Estimated and planted codes of the same signals.

    Returns
    -------
    float
    """
    hits = 0
    total = 0
    for got, want in zip(codes.indices, truth.indices, strict=True):
        want = want[want >= 0]
        hits += np.isin(want, got[got >= 0]).sum()
        total += want.size
    return hits / max(total, 1)
