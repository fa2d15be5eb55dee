"""ITDA's kernel: matching pursuit on a grown Gram matrix, keeping only each signal's
residual energy (whether it becomes an atom)."""

import numpy as np
from numba import njit, prange

from sparsecode._parallel import chunk_bounds
from sparsecode._pursuit_numba import mp_one


@njit(parallel=True, cache=True)
def mp_energies(C, Ci, G, rule, mask, k, xnorm2, thr, energy):
    """``k`` MP steps for every row of ``C`` on the Gram path; ``energy`` receives each
    row's residual energy.

    Parameters
    ----------
    C : ndarray of shape (n, n_atoms)
        Correlations of the signals with the unit atoms (overwritten); ``Ci`` its integer
        view.
    G : ndarray of shape (capacity, capacity), C-contiguous
        The grown Gram matrix: its first ``n_atoms`` rows and columns are ``D D^T``.
    rule, mask : int
        Selection rule and the magnitude mask of the integer view.
    k : int
    xnorm2, thr : ndarray of shape (n,), float64
        ``||x||^2`` and the smallest correlation worth a step.
    energy : ndarray of shape (n,), float64
        Output.
    """
    n = C.shape[0]
    nch = min(n, 64)
    for ch in prange(nch):
        lo, hi = chunk_bounds(ch, nch, n)
        Irow = np.empty(k, dtype=np.int32)
        Zrow = np.empty(k, dtype=np.float64)
        for i in range(lo, hi):
            Irow[:] = -1
            Zrow[:] = 0.0
            energy[i] = mp_one(C[i], Ci[i], G, rule, mask, k, xnorm2[i], 0.0, thr[i], Irow,
                               Zrow)


@njit(parallel=True, cache=True)
def gram_row(D, K, out):
    """``out[j] = D[j] . D[K]`` for ``j <= K``, accumulated in float64 in a fixed order:
    the same bits whether an atom is appended or the matrix rebuilt from the atoms."""
    nf = D.shape[1]
    for j in prange(K + 1):
        acc = 0.0
        for q in range(nf):
            acc += np.float64(D[j, q]) * np.float64(D[K, q])
        out[j] = acc


@njit(cache=True)
def add_candidates(X, xnorm2, cand, rows, C0, D, G, src, K, k, rule, mask, rtol, threshold,
                   max_atoms, c, ci):
    """The candidate phase of a batch, one candidate after another (serial: each may
    change the dictionary for the next).

    A candidate is encoded again on the atoms as they are when the batch has already
    added some (its correlations with the batch's first atoms from ``C0``, with the atoms
    added since accumulated in float64), and added as
    ``x / ||x||`` when its relative error is still over ``threshold``: the atom, its
    source and its Gram row and column (:func:`gram_row`'s arithmetic).  ``D``, ``G`` and
    ``src`` have room for every candidate.  Returns the new number of atoms.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        The batch, in the atoms' dtype.
    xnorm2 : ndarray of shape (n,), float64
    cand : ndarray of int64
        Rows of the batch over the threshold at its start, in order.
    rows : ndarray of shape (n,), int64
        Their source indices.
    C0 : ndarray of shape (len(cand), K)
        The candidates' correlations with the atoms before the batch.
    D, G, src : ndarrays of capacity rows
        Atoms, Gram matrix and sources (updated in place).
    K : int
        Atoms before the batch.
    k, rule, mask, rtol, threshold, max_atoms
        Steps, selection rule, integer-view mask, relative size of a vanished
        correlation, the threshold, the atom cap (-1: none).
    c, ci : ndarrays of capacity entries
        Scratch for the correlations and their integer view.
    """
    nf = D.shape[1]
    K0 = K
    added = 0
    Irow = np.empty(k, dtype=np.int32)
    Zrow = np.empty(k, dtype=np.float64)
    for a in range(cand.shape[0]):
        i = cand[a]
        if max_atoms >= 0 and K >= max_atoms:
            break
        x = X[i]
        if added:
            c[:K0] = C0[a]
            for j in range(K0, K):
                acc = 0.0
                for q in range(nf):
                    acc += np.float64(D[j, q]) * np.float64(x[q])
                c[j] = acc
            Irow[:] = -1
            Zrow[:] = 0.0
            e = mp_one(c[:K], ci[:K], G, rule, mask, k, xnorm2[i], 0.0,
                       rtol * np.sqrt(xnorm2[i]), Irow, Zrow)
            if max(e, 0.0) / xnorm2[i] <= threshold:
                continue
        inv = 1.0 / np.sqrt(xnorm2[i])
        for q in range(nf):
            D[K, q] = x[q] * inv
        for j in range(K + 1):
            acc = 0.0
            for q in range(nf):
                acc += np.float64(D[j, q]) * np.float64(D[K, q])
            G[K, j] = acc
            G[j, K] = acc
        src[K] = rows[i]
        K += 1
        added += 1
    return K
