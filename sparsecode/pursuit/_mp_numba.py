"""Matching pursuit kernels (Numba).  Called only from :mod:`sparsecode.pursuit.mp`.

Atoms are unit norm here (the caller normalises).  Gram path, per signal and step: one
SIMD pass over the correlation keys and a scan to the winner (select), then
``c -= coef * G[j]`` (2 n_atoms flops, reads one Gram row).  The residual is never
formed; its energy is tracked.  No-Gram path: the caller recomputes ``C = R D^T`` for
the still-active signals with one GEMM per step; the kernel selects and updates the
residual rows (O(n_features)).
"""

import numpy as np
from numba import njit, prange

from sparsecode.pursuit._common_numba import (
    DONE,
    POSITIVE,
    RUNNING,
    add_to_code,
    axpy,
    chunk_bounds,
    correlations,
    select,
    vanished,
)


@njit(parallel=True, cache=True)
def mp_gram(nch, X, DT, mask, G, rule, k, xnorm2, tol2, thr, I, Z):
    """Run up to ``k`` MP steps for every row of ``C`` on the Gram path.

    Parameters
    ----------
    nch : int
        Number of chunks the rows are split into for the parallel loop.
    X : ndarray of shape (n, n_features), C-contiguous
        Signals of the block.
    DT : ndarray of shape (n_features, n_atoms)
        Transposed unit-norm dictionary.
    mask : int32 or int64
        Magnitude mask of the integer view of the correlations (0x7f..f).
    G : ndarray of shape (n_atoms, n_atoms)
        Gram matrix of the unit-norm atoms.
    rule : int
        Selection rule (ABS, POSITIVE or SIGNED).
    k : int
        Maximum number of steps.
    xnorm2, tol2, thr : ndarray of shape (n,), float64
        ``||x||^2``, the residual energy at which to stop, and the smallest correlation
        worth a step.
    I : ndarray of shape (n, k_max), int32
        Output support, pre-filled with -1.
    Z : ndarray of shape (n, k_max), float64
        Output coefficients, pre-filled with 0.
    """
    n = X.shape[0]
    for ch in prange(nch):
        lo, hi = chunk_bounds(ch, nch, n)
        C, Ci = correlations(X, DT, lo, hi)
        for i in range(lo, hi):
            c = C[i - lo]
            ci = Ci[i - lo]
            energy = xnorm2[i]
            s = 0
            t = 0
            while t < k and energy > tol2[i]:
                j = select(ci, rule, mask)
                cj = c[j]
                if vanished(cj, thr[i], rule):
                    break
                s, again = add_to_code(I[i], Z[i], s, j, np.float64(cj))
                energy -= np.float64(cj) * np.float64(cj)
                t += 1
                if again and rule == POSITIVE:
                    break  # support did not change
                axpy(c, G[j], cj)


@njit(parallel=True, cache=True)
def mp_nogram_step(C, Ci, mask, rows, R, D, rule, tol2, thr, I, Z, ns, status):
    """One MP step for the active rows on the no-Gram path.

    ``C[a]`` holds the correlations ``R[rows[a]] D^T`` (``Ci`` its integer view).  Updates
    ``R``, ``I``, ``Z``, ``ns`` (support sizes) and ``status`` of those rows.
    """
    nfeat = R.shape[1]
    for a in prange(rows.shape[0]):
        i = rows[a]
        j = select(Ci[a], rule, mask)
        cj = C[a, j]
        if vanished(cj, thr[i], rule):
            status[i] = DONE
            continue
        s, again = add_to_code(I[i], Z[i], ns[i], j, np.float64(cj))
        ns[i] = s
        r = R[i]
        dj = D[j]
        energy = 0.0
        for q in range(nfeat):
            r[q] -= cj * dj[q]
            energy += np.float64(r[q]) * np.float64(r[q])
        if energy <= tol2[i] or (again and rule == POSITIVE):
            status[i] = DONE
        else:
            status[i] = RUNNING
