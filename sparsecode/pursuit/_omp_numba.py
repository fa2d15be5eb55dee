"""Batch-OMP kernels (Numba).  Called only from :mod:`sparsecode.pursuit.omp`.

Per signal and step s (support size after the step):
select (n_atoms reads), grow the Cholesky factor of the support Gram (O(s^2)), extend the
forward substitution by one entry (O(s)) and back-substitute for the coefficients
(O(s^2), vectorised by columns), then update the correlations with the coefficient change:
``c -= G[I]^T delta`` (Gram path, 2 n_atoms s flops, reads s rows of G) or the residual
``r -= D[I]^T delta`` (no-Gram path, 2 n_features s flops; the caller then recomputes
``C = R D^T`` by GEMM).  The correlation of ``x`` with the new atom, needed by the
normal equations, is recovered as ``c_j + G[j, I] z`` so ``X D^T`` need not be kept.
"""

import numpy as np
from numba import njit, prange

from sparsecode._linalg_numba import back_solve, chol_append, dot, forward_append, nnls_gram
from sparsecode._parallel import group_bounds
from sparsecode._pursuit_numba import (
    DEPENDENT,
    DONE,
    RUNNING,
    add_to_support_gram,
    correlations,
    select,
    sub_rows,
    update_residual,
    vanished,
)


@njit(cache=True, inline="always")
def omp_step(c, ci, mask, S, is_gram, rule, positive, thr, rtol, I, z, s, L, GII, a0, fw,
             work, delta):
    """One OMP step for one signal.

    Parameters
    ----------
    c, ci : ndarray of shape (n_atoms,)
        Correlations of the current residual with the (unit-norm) atoms, and their
        integer view; ``mask`` is the view's magnitude mask.
    S : ndarray
        The Gram matrix (``is_gram``) or the dictionary, to read support Gram entries.
    I, z : ndarray of shape (k,)
        Support and float64 coefficients; ``s`` entries used.
    L, GII : ndarray of shape (k, k), float64
        Cholesky factor (its diagonal holds the reciprocals of the pivots) and Gram
        matrix of the support.
    a0 : ndarray of shape (k,), float64
        Correlations of the signal with the support atoms.
    fw : ndarray of shape (k,), float64
        Solution of ``L fw = a0`` (forward substitution), one entry longer per step.
    work, delta : ndarray of shape (k,), float64
        Scratch; ``delta`` receives the coefficient change.

    Returns
    -------
    s : int
        New support size.
    status : int
        RUNNING, DONE (nothing left to select) or DEPENDENT (the best atom is in the span of
        the support).
    """
    return omp_take(c, select(ci, rule, mask), S, is_gram, rule, positive, thr, rtol, I, z,
                    s, L, GII, a0, fw, work, delta)


@njit(cache=True, inline="always")
def omp_take(c, j, S, is_gram, rule, positive, thr, rtol, I, z, s, L, GII, a0, fw, work,
             delta):
    """The OMP step of :func:`omp_step` once atom ``j`` is selected: grow the factor,
    solve for the coefficients, leave their change in ``delta``."""
    cj = c[j]
    if vanished(cj, thr, rule):
        return s, DONE
    grow = add_to_support_gram(GII, S, is_gram, I, s, j)
    if not chol_append(L, s, grow, rtol):
        return s, DEPENDENT
    acc = np.float64(cj)
    for m in range(s):
        acc += z[m] * grow[m]
    a0[s] = acc
    I[s] = j
    z[s] = 0.0
    s += 1
    forward_append(L, s, a0, fw)
    back_solve(L, s, fw, work)
    if positive:
        neg = False
        for m in range(s):
            if work[m] < 0.0:
                neg = True
        if neg:
            nnls_gram(GII, a0, s, work)
    for m in range(s):
        delta[m] = work[m] - z[m]
        z[m] = work[m]
    return s, RUNNING


@njit(parallel=True, cache=True)
def omp_gram(nch, group, X, DT, mask, G, rule, positive, k, xnorm2, tol2, thr, rtol, I, Z,
             status):
    """Run Batch-OMP on every row of ``X`` (see :func:`mp_gram` for the arguments).

    ``I`` (int32, -1 filled) and ``Z`` (float64) of shape (n, k) receive the codes,
    ``status`` the reason each signal stopped.
    """
    n = X.shape[0]
    for ch in prange(nch):
        L = np.empty((k, k))
        GII = np.empty((k, k))
        a0 = np.empty(k)
        fw = np.empty(k)
        work = np.empty(k)
        delta = np.empty(k)
        lo, hi = group_bounds(ch, nch, n, group)
        C, Ci = correlations(X, DT, lo, hi, group)
        for i in range(lo, hi):
            c = C[i - lo]
            z = Z[i]
            s = 0
            st = DONE
            energy = xnorm2[i]
            while s < k and energy > tol2[i]:
                s, st = omp_step(c, Ci[i - lo], mask, G, True, rule, positive, thr[i], rtol,
                                 I[i], z, s, L, GII, a0, fw, work, delta)
                if st != RUNNING:
                    break
                # ||x - D_I^T z||^2 = ||x||^2 - 2 a0.z + z^T GII z, and GII z = a0 on the
                # support (least squares; non-negative least squares on its passive set,
                # z = 0 elsewhere), so z^T GII z = a0.z
                energy = xnorm2[i] - dot(a0, z, s)
                if s < k and energy > tol2[i]:
                    sub_rows(c, G, I[i], delta, s)
            status[i] = st


def omp_scratch_size(k):
    """Doubles of per-signal scratch of :func:`omp_nogram_step` for supports up to ``k``:
    the Cholesky factor and the support Gram (``k^2`` each), then ``a0``, ``fw``, ``work``
    and ``delta`` (``k`` each), in the order of :func:`omp_scratch`."""
    return 2 * k * k + 4 * k


@njit(cache=True)
def omp_scratch(w, k):
    """``(L, GII, a0, fw, work, delta)``: views of one signal's scratch row ``w`` of
    ``omp_scratch_size(k)`` doubles (``L``, ``GII`` of shape (k, k), the rest (k,))."""
    kk = k * k
    L = w[0:kk].reshape((k, k))
    GII = w[kk:2 * kk].reshape((k, k))
    o = 2 * kk
    return L, GII, w[o:o + k], w[o + k:o + 2 * k], w[o + 2 * k:o + 3 * k], w[o + 3 * k:o + 4 * k]


@njit(parallel=True, cache=True)
def omp_nogram_step(C, Ci, mask, rows, R, D, rule, positive, k, tol2, thr, rtol, I, Z, ns,
                    scratch, status):
    """One OMP step for the active rows; ``C[a]`` holds ``R[rows[a]] D^T`` (rows not running
    are skipped).

    ``scratch`` (float64, (n, omp_scratch_size(k))) keeps each signal's factor and
    vectors from step to step (see :func:`omp_scratch`).
    """
    for a in prange(rows.shape[0]):
        i = rows[a]
        if status[i] != RUNNING:
            continue  # finished: in the step's row groups for their GEMMs only
        L, GII, a0, fw, work, delta = omp_scratch(scratch[i], k)
        s, st = omp_step(C[a], Ci[a], mask, D, False, rule, positive, thr[i], rtol,
                         I[i], Z[i], ns[i], L, GII, a0, fw, work, delta)
        ns[i] = s
        if st == RUNNING:
            energy = update_residual(R[i], D, I[i], delta, s)
            if s >= k or energy <= tol2[i]:
                st = DONE
        status[i] = st
