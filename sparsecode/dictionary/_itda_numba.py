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
