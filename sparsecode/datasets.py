"""Synthetic data with a known answer."""

import numbers
from types import MappingProxyType

import numpy as np

from sparsecode.codes import SparseCodes


def make_sparse_signals(n_samples, n_features, n_atoms, k, *, noise=0.01, dtype=np.float32,
                        random_state=None, usage=None):
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
    usage : array-like of shape (n_atoms,), optional
        Relative frequency of each atom in the supports (default: all equal).  Each
        support is then ``k`` distinct atoms drawn without replacement with these weights
        (Gumbel top-k), e.g. :func:`zipf_usage` for the heavy-tailed usage of SAE codes.

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
    if usage is None:
        idx = np.argpartition(rng.random((n_samples, n_atoms)), k - 1, axis=1)[:, :k]
    else:
        logw = np.log(np.asarray(usage, dtype=np.float64))
        if logw.shape != (n_atoms,) or not np.all(np.isfinite(logw)):
            raise ValueError(f"usage must hold {n_atoms} positive weights")
        idx = np.empty((n_samples, k), dtype=np.int64)
        for r0 in range(0, n_samples, 256):  # a (256, n_atoms) block of keys at a time
            r1 = min(r0 + 256, n_samples)
            keys = logw - np.log(-np.log(rng.random((r1 - r0, n_atoms))))
            idx[r0:r1] = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    val = rng.uniform(1.0, 2.0, size=(n_samples, k)) * rng.choice([-1.0, 1.0], size=(n_samples, k))
    X = np.empty((n_samples, n_features))
    for r0 in range(0, n_samples, 256):  # D[idx] of 256 rows at a time
        r1 = min(r0 + 256, n_samples)
        X[r0:r1] = np.einsum("nk,nkd->nd", val[r0:r1], D[idx[r0:r1]])
    if noise:
        scale = np.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(n_features)
        X += noise * scale * rng.standard_normal(X.shape)
    codes = SparseCodes(idx.astype(np.int32), val.astype(dtype), n_atoms)
    return X.astype(dtype), D.astype(dtype), codes


def zipf_usage(n_atoms, exponent=1.0, *, random_state=None):
    """Heavy-tailed atom usage for :func:`make_sparse_signals`: the atom of rank ``r``
    (ranks in random order over the atoms) is used in proportion to ``r^-exponent``.

    Returns
    -------
    ndarray of shape (n_atoms,)
        Weights summing to 1.
    """
    rng = np.random.default_rng(random_state)
    w = np.arange(1, n_atoms + 1, dtype=np.float64) ** -float(exponent)
    w = w[rng.permutation(n_atoms)]
    return w / w.sum()


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


# ------------------------------------------------------------------ the hierarchical toy

#: The tree of :func:`make_hierarchical`: each parent feature and its three children.
HIERARCHY_PARENTS = MappingProxyType({0: (1, 2, 3), 4: (5, 6, 7), 8: (9, 10, 11)})

#: The root's children in :func:`make_hierarchical`: the three parents, then the eight leaves.
HIERARCHY_ROOT_CHILDREN = (0, 4, 8, *range(12, 20))

# Mixing weight epsilon giving a within-group cosine of 0.1 * l, l = 0..8, for a group of
# three siblings and for the eleven-member top level.
_EPS_CHILDREN = (0.0, 0.0895, 0.163, 0.226, 0.282, 0.3335, 0.3825, 0.431, 0.482)
_EPS_TOP = (0.0, 0.3, 0.44, 0.529, 0.594, 0.6467, 0.692, 0.733, 0.7739)


def _group_cosine(eps, m):
    """Cosine between two rows of a group of ``m`` orthonormal rows mixed with ``eps``."""
    b = eps / (m - 1)
    return ((1 - eps) * 2 * b + (m - 2) * b * b) / ((1 - eps) ** 2 + (m - 1) * b * b)


def _eps_for(correlation, m, table):
    """Mixing weight giving ``correlation``: the paper's value on its grid 0, 0.1, ..., 0.8,
    else the root of the closed-form cosine (which rises from 0 to 1 on [0, (m-1)/m])."""
    level = round(correlation * 10)
    if 0 <= level <= 8 and abs(correlation * 10 - level) < 1e-6:
        return table[level]
    from scipy.optimize import brentq

    return brentq(lambda e: _group_cosine(e, m) - correlation, 0.0, (m - 1) / m, xtol=1e-14)


def _mix_group(Q0, group, eps):
    """Pull the rows ``group`` of ``Q0`` towards each other, then renormalise them."""
    G = Q0[list(group)]
    m = len(group)
    mixed = (1.0 - eps) * G + eps / (m - 1) * (G.sum(axis=0) - G)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def make_hierarchical(n_samples, *, correlation=0.0, dtype=np.float32, random_state=None):
    """Signals from a two-level tree of 20 features in 20 dimensions.

    The tree: the root has 11 children, the parents 0, 4 and 8 (probability 0.2 each) and
    the leaves 12..19 (0.05 each); exactly one of them is active in every signal.  An
    active parent activates exactly one of its children (listed in
    :data:`HIERARCHY_PARENTS`), each with probability 0.2, or none with probability 0.4.
    So every signal uses 1 or 2 features, 1.36 on average.  Active features have
    magnitude ``1.5 + 0.25 N(0, 1)``; a signal is ``x = z F``, without noise.

    Feature directions start from an orthonormal basis ``Q0`` (the Q factor of a QR
    decomposition of a standard normal 20 x 20 matrix).  Within each group ``G`` (the
    root's 11 children, and each triple of siblings) row ``i`` becomes
    ``(1 - eps) Q0_i + eps / (|G| - 1) sum_{j in G, j != i} Q0_j``, renormalised, with
    ``eps`` chosen so that atoms of one group have cosine ``correlation``.  Groups use
    disjoint rows of ``Q0``, so atoms of different groups, a parent and its children in
    particular, stay orthogonal.

    Parameters
    ----------
    n_samples : int
        Number of signals, >= 1.
    correlation : float
        Cosine between two features of the same group, in [0, 1).  On the paper's grid
        0, 0.1, ..., 0.8 the paper's mixing weights are used; elsewhere the weight is
        solved for exactly.
    dtype : dtype
        dtype of ``X``, ``F`` and the code values.
    random_state : int, Generator or None
        Seed of both the directions and the activations.

    Returns
    -------
    X : ndarray of shape (n_samples, 20)
        The signals.
    F : ndarray of shape (20, 20)
        Unit-norm feature directions, one per row, in depth-first order.
    codes : SparseCodes of shape (n_samples, 20)
        The true activations, width 2: the root's active child first, then the active
        grandchild or -1.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise TypeError(f"n_samples must be a positive integer; got {n_samples!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    if isinstance(correlation, bool) or not isinstance(correlation, numbers.Real):
        raise TypeError(f"correlation must be a number in [0, 1); got {correlation!r}")
    correlation = float(correlation)
    if not (0.0 <= correlation < 1.0):
        raise ValueError(f"correlation must be in [0, 1); got {correlation!r}")
    rng = np.random.default_rng(random_state)

    Q0 = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    F = Q0.copy()
    top = HIERARCHY_ROOT_CHILDREN
    F[list(top)] = _mix_group(Q0, top, _eps_for(correlation, len(top), _EPS_TOP))
    eps_children = _eps_for(correlation, 3, _EPS_CHILDREN)
    for children in HIERARCHY_PARENTS.values():
        F[list(children)] = _mix_group(Q0, children, eps_children)

    # first level: one of the root's children; second level: child 1, 2, 3 or none
    p_top = [0.2 if j in HIERARCHY_PARENTS else 0.05 for j in top]
    first = np.asarray(top)[rng.choice(len(top), size=n_samples, p=p_top)]
    pick = rng.choice(4, size=n_samples, p=[0.2, 0.2, 0.2, 0.4])
    table = np.full((20, 4), -1)
    for parent, children in HIERARCHY_PARENTS.items():
        table[parent, :3] = children
    second = table[first, pick]
    indices = np.stack([first, second], axis=1).astype(np.int32)
    values = 1.5 + 0.25 * rng.standard_normal((n_samples, 2))
    values[indices < 0] = 0.0

    X = values[:, :1] * F[first] + values[:, 1:] * F[np.maximum(second, 0)]
    codes = SparseCodes(indices, values.astype(dtype), 20)
    return X.astype(dtype), F.astype(dtype), codes
