"""Matching pursuit kernels (Numba).  Called only from :mod:`sparsecode.pursuit.mp`.

Gram path, per signal and step: one pass over the correlations to select (n_atoms
reads), one pass to update them with a Gram row (``c -= coef * G[j]``: 2 n_atoms flops,
reads one row of G).  The residual is never formed; its energy is tracked.

No-Gram path: the caller recomputes ``C = R D^T`` for the still-active signals with one
GEMM per step; the kernel selects and updates the residual rows (O(n_features)).
"""

import numpy as np
from numba import njit, prange

from sparsecode.pursuit._common_numba import (
    DONE,
    POSITIVE,
    RUNNING,
    axpy_max,
    chunk_bounds,
    find,
    first_with_score,
    max_score,
    select,
    vanished,
)


@njit(cache=True, inline="always")
def _record(I, Z, s, j, coef):
    """Add ``coef`` to atom ``j``'s entry; returns ``(s, was_in_support)``."""
    pos = find(I, s, j)
    if pos < 0:
        I[s] = j
        Z[s] = coef
        return s + 1, False
    Z[pos] += coef
    return s, True


@njit(parallel=True, cache=True)
def mp_gram(nch, C, G, w, inv_n2, unit, rule, k, xnorm2, tol2, thr, I, Z, ns):
    """Run up to ``k`` MP steps for every row of ``C`` on the Gram path.

    Parameters
    ----------
    C : ndarray of shape (n, n_atoms)
        Correlations ``X D^T`` of the block; overwritten.
    G : ndarray of shape (n_atoms, n_atoms)
    w, inv_n2 : ndarray of shape (n_atoms,)
        ``1 / ||d_j||`` (input dtype) and ``1 / ||d_j||^2`` (float64).
    unit : bool
        All atoms have unit norm (``w`` is ignored).
    rule : int
        Selection rule (ABS, POSITIVE or SIGNED).
    k : int
        Maximum number of steps.
    xnorm2, tol2, thr : ndarray of shape (n,), float64
        ``||x||^2``, the residual energy at which to stop, and the smallest normalised
        correlation worth a step.
    I : ndarray of shape (n, k_max), int32
        Output support, pre-filled with -1.
    Z : ndarray of shape (n, k_max), float64
        Output coefficients, pre-filled with 0.
    ns : ndarray of shape (n,), int64
        Output: support size.
    """
    n = C.shape[0]
    for ch in prange(nch):
        lo, hi = chunk_bounds(ch, nch, n)
        for i in range(lo, hi):
            c = C[i]
            energy = xnorm2[i]
            s = 0
            t = 0
            best = max_score(c, w, unit, rule)
            while t < k and energy > tol2[i]:
                j = first_with_score(c, w, unit, rule, best)
                cj = c[j]
                if vanished(cj, w[j], thr[i], rule):
                    break
                coef = cj * inv_n2[j]
                s, again = _record(I[i], Z[i], s, j, coef)
                energy -= coef * cj
                t += 1
                if again and rule == POSITIVE:
                    break  # support did not change
                best = axpy_max(c, G[j], c.dtype.type(coef), w, unit, rule)
            ns[i] = s


@njit(parallel=True, cache=True)
def mp_nogram_step(C, rows, R, D, w, inv_n2, unit, rule, tol2, thr, I, Z, ns, status):
    """One MP step for the active rows on the no-Gram path.

    ``C[a]`` holds the correlations ``R[rows[a]] D^T``.  Updates ``R``, ``I``, ``Z``,
    ``ns`` and ``status`` of those rows.
    """
    nfeat = R.shape[1]
    for a in prange(rows.shape[0]):
        i = rows[a]
        c = C[a]
        j = select(c, w, unit, rule)
        cj = c[j]
        if vanished(cj, w[j], thr[i], rule):
            status[i] = DONE
            continue
        coef = cj * inv_n2[j]
        s, again = _record(I[i], Z[i], ns[i], j, coef)
        ns[i] = s
        r = R[i]
        cf = r.dtype.type(coef)
        dj = D[j]
        energy = 0.0
        for q in range(nfeat):
            r[q] -= cf * dj[q]
            energy += np.float64(r[q]) * np.float64(r[q])
        if energy <= tol2[i] or (again and rule == POSITIVE):
            status[i] = DONE
        else:
            status[i] = RUNNING
