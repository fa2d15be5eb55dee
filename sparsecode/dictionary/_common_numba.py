"""Numba kernels shared by the dictionary updates: the inverted index of the codes, the
sufficient statistics ``Z^T Z`` and ``Z^T X``, and the residual ``X - Z D``.

Codes arrive as ``indices`` (int32, ``(n, k_max)``, -1 where unused) and ``values``
(``(n, k_max)``); an entry is addressed by its flat position ``p = i * k_max + s``.
Accumulations run in float64 whatever the input dtype.
"""

import numpy as np
from numba import njit, prange

from sparsecode._parallel import chunk_bounds


@njit(cache=True)
def inverted_index(indices, n_atoms):
    """Users of every atom: a counting sort of the entries by atom.

    Returns
    -------
    ptr : ndarray of shape (n_atoms + 1,), int64
        Atom ``j``'s entries are ``pos[ptr[j]:ptr[j + 1]]``.
    pos : ndarray of shape (nnz,), int64
        Flat positions ``i * k_max + s``, ascending (so rows ascend) within each atom.
    """
    n, k = indices.shape
    ptr = np.zeros(n_atoms + 1, dtype=np.int64)
    for i in range(n):
        for s in range(k):
            j = indices[i, s]
            if j >= 0:
                ptr[j + 1] += 1
    for j in range(n_atoms):
        ptr[j + 1] += ptr[j]
    fill = ptr[:-1].copy()
    pos = np.empty(ptr[n_atoms], dtype=np.int64)
    for i in range(n):
        for s in range(k):
            j = indices[i, s]
            if j >= 0:
                pos[fill[j]] = i * k + s
                fill[j] += 1
    return ptr, pos


@njit(parallel=True, cache=True)
def code_stats(X, indices, values, ptr, pos, A, B):
    """Add ``Z^T Z`` to ``A`` and ``Z^T X`` to ``B`` (both float64), parallel over atoms.

    Atom ``j`` owns row ``j`` of ``A`` and of ``B``, so threads never write the same
    memory.  Cost: ``nnz * (n_features + k_max)`` multiply-adds, no dense code matrix.
    """
    k = indices.shape[1]
    d = X.shape[1]
    n_atoms = ptr.shape[0] - 1
    for j in prange(n_atoms):
        for e in range(ptr[j], ptr[j + 1]):
            p = pos[e]
            i = p // k
            v = np.float64(values[i, p - i * k])
            if v == 0.0:
                continue
            xi = X[i]
            bj = B[j]
            for q in range(d):
                bj[q] += v * xi[q]
            for s in range(k):
                m = indices[i, s]
                if m >= 0:
                    A[j, m] += v * values[i, s]


@njit(parallel=True, cache=True)
def residual(X, indices, values, D, R):
    """``R = X - Z D`` row by row (``R`` in the caller's dtype); returns
    ``||X - Z D||_F^2`` accumulated in float64."""
    n, d = X.shape
    k = indices.shape[1]
    energy = np.zeros(n)
    for i in prange(n):
        r = R[i]
        for q in range(d):
            r[q] = X[i, q]
        for s in range(k):
            j = indices[i, s]
            if j >= 0:
                v = values[i, s]
                dj = D[j]
                for q in range(d):
                    r[q] -= v * dj[q]
        acc = 0.0
        for q in range(d):
            acc += np.float64(r[q]) * np.float64(r[q])
        energy[i] = acc
    return energy.sum()


@njit(parallel=True, cache=True)
def residual_energy(nch, X, indices, values, D):
    """``||X - Z D||_F^2`` in float64 without storing the residual; ``nch`` chunks of rows
    for the parallel loop, each with its own float64 scratch row."""
    n, d = X.shape
    k = indices.shape[1]
    energy = np.zeros(nch)
    for ch in prange(nch):
        lo, hi = chunk_bounds(ch, nch, n)
        r = np.empty(d)
        acc = 0.0
        for i in range(lo, hi):
            for q in range(d):
                r[q] = X[i, q]
            for s in range(k):
                j = indices[i, s]
                if j >= 0:
                    v = np.float64(values[i, s])
                    for q in range(d):
                        r[q] -= v * D[j, q]
            for q in range(d):
                acc += r[q] * r[q]
        energy[ch] = acc
    return energy.sum()


@njit(cache=True)
def coherent_pairs(G, threshold):
    """The pairs ``a < b`` with ``|G[a, b]| > threshold``, in row-major order (by ``a``,
    then ``b``), and their ``|G[a, b]|``: one read of the upper triangle.  ``threshold``
    in ``G``'s dtype, so the comparison is NumPy's ``G > threshold``."""
    n = G.shape[0]
    count = 0
    for a in range(n):
        for b in range(a + 1, n):
            v = G[a, b]
            if v > threshold or v < -threshold:
                count += 1
    first = np.empty(count, dtype=np.int64)
    second = np.empty(count, dtype=np.int64)
    coh = np.empty(count, dtype=G.dtype)
    p = 0
    for a in range(n):
        for b in range(a + 1, n):
            v = G[a, b]
            if v > threshold or v < -threshold:
                first[p] = a
                second[p] = b
                coh[p] = abs(v)
                p += 1
    return first, second, coh
