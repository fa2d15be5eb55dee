"""Gradient pursuit kernels (Numba).  Called only from :mod:`sparsecode.pursuit.gp`.

Per signal and step (s = support size): select like MP (n_atoms reads), take the
gradient ``g = c[I]`` on the support, optionally make the direction conjugate to the
previous one (ACGP), and take the exact line-search step along it.  Everything about the
direction needs only the support Gram (O(s^2)); the correlations are then updated with
``c -= G[I]^T delta`` (Gram path, 2 n_atoms s flops) or the residual with
``r -= D[I]^T delta`` (no-Gram path).
"""

import numpy as np
from numba import njit, prange

from sparsecode._linalg_numba import quad
from sparsecode._parallel import group_bounds
from sparsecode._pursuit_numba import (
    DONE,
    RUNNING,
    add_to_support_gram,
    correlations,
    find,
    select,
    sub_rows,
    update_residual,
    vanished,
)


@njit(cache=True, inline="always")
def _project(d, z, s):
    """Zero the direction where a coefficient sits at 0 and would go negative."""
    for m in range(s):
        if z[m] <= 0.0 and d[m] < 0.0:
            d[m] = 0.0


@njit(cache=True)
def gp_step(c, ci, mask, S, is_gram, rule, acgp, positive, thr, I, z, s, GII, dprev,
            state, g, d, delta):
    """One gradient-pursuit step for one signal.

    ``state`` is a float64 array of length 2: the curvature ``dprev^T GII dprev`` of the
    previous direction (0 before the first step) and, on return, the decrease of the
    residual energy.  Returns ``(s, status)``; ``delta`` receives the coefficient change.
    """
    return gp_take(c, select(ci, rule, mask), S, is_gram, rule, acgp, positive, thr, I, z, s,
                   GII, dprev, state, g, d, delta)


@njit(cache=True, inline="always")
def gp_take(c, j, S, is_gram, rule, acgp, positive, thr, I, z, s, GII, dprev, state, g, d,
            delta):
    """The GP step of :func:`gp_step` once atom ``j`` is selected."""
    cj = c[j]
    state[1] = 0.0
    if vanished(cj, thr, rule):
        return s, DONE
    if find(I, s, j) < 0:
        add_to_support_gram(GII, S, is_gram, I, s, j)
        I[s] = j
        z[s] = 0.0
        dprev[s] = 0.0
        s += 1
    for m in range(s):
        g[m] = c[I[m]]
        d[m] = g[m]
    if positive:
        _project(d, z, s)
    if acgp and state[0] > 0.0:
        beta = -quad(GII, s, g, dprev) / state[0]
        dg = 0.0
        for m in range(s):
            d[m] = g[m] + beta * dprev[m]
        if positive:
            _project(d, z, s)
        for m in range(s):
            dg += d[m] * g[m]
        if dg <= 0.0:  # lost descent (projection): fall back to the gradient
            for m in range(s):
                d[m] = g[m]
            if positive:
                _project(d, z, s)
    dg = 0.0
    for m in range(s):
        dg += d[m] * g[m]
    curv = quad(GII, s, d, d)
    if dg <= 0.0 or curv <= 0.0:
        return s, DONE
    step = dg / curv
    hit = -1  # the coefficient that reaches 0 first (positive variant)
    if positive:
        for m in range(s):
            if d[m] < 0.0 and -z[m] / d[m] < step:
                step = -z[m] / d[m]
                hit = m
    for m in range(s):
        delta[m] = step * d[m]
        z[m] += delta[m]
        if positive and (z[m] < 0.0 or m == hit):  # land exactly on the boundary
            delta[m] -= z[m]
            z[m] = 0.0
        dprev[m] = d[m]
    state[0] = curv
    state[1] = 2.0 * step * dg - step * step * curv
    return s, RUNNING


@njit(parallel=True, cache=True)
def gp_gram(nch, group, X, DT, mask, G, rule, acgp, positive, k, max_steps, xnorm2, tol2,
            thr, I, Z, status):
    """Run GP/ACGP on every row of ``X`` (see :func:`mp_gram`) until the support holds ``k``
    atoms, the residual energy reaches ``tol2`` or ``max_steps`` steps were taken."""
    n = X.shape[0]
    for ch in prange(nch):
        GII = np.empty((k, k))
        dprev = np.zeros(k)
        g = np.empty(k)
        d = np.empty(k)
        delta = np.empty(k)
        state = np.zeros(2)
        lo, hi = group_bounds(ch, nch, n, group)
        C, Ci = correlations(X, DT, lo, hi, group)
        for i in range(lo, hi):
            c = C[i - lo]
            z = Z[i]
            s = 0
            st = DONE
            state[0] = 0.0
            energy = xnorm2[i]
            for _t in range(max_steps):
                if energy <= tol2[i] or s >= k:
                    st = DONE
                    break
                s, st = gp_step(c, Ci[i - lo], mask, G, True, rule, acgp, positive, thr[i], I[i],
                                z, s, GII, dprev, state, g, d, delta)
                if st != RUNNING:
                    break
                energy -= state[1]
                sub_rows(c, G, I[i], delta, s)
            status[i] = st


def gp_scratch_size(k):
    """Doubles of per-signal scratch of :func:`gp_nogram_step` for supports up to ``k``:
    the support Gram (``k^2``), then ``dprev``, ``g``, ``d`` and ``delta`` (``k`` each) and
    ``state`` (2), in the order of :func:`gp_scratch`."""
    return k * k + 4 * k + 2


@njit(cache=True)
def gp_scratch(w, k):
    """``(GII, dprev, state, g, d, delta)``: views of one signal's scratch row ``w`` of
    ``gp_scratch_size(k)`` doubles, zero at the start (``GII`` of shape (k, k), ``state``
    (2,), the rest (k,))."""
    o = k * k
    GII = w[0:o].reshape((k, k))
    return (GII, w[o:o + k], w[o + 4 * k:o + 4 * k + 2], w[o + k:o + 2 * k],
            w[o + 2 * k:o + 3 * k], w[o + 3 * k:o + 4 * k])


@njit(parallel=True, cache=True)
def gp_nogram_step(C, Ci, mask, rows, R, D, rule, acgp, positive, k, tol2, thr, I, Z, ns,
                   scratch, status):
    """One GP/ACGP step for the active rows; ``C[a]`` holds ``R[rows[a]] D^T`` (rows not
    running are skipped).

    ``scratch`` (float64, (n, gp_scratch_size(k)), zero filled before the first step)
    keeps each signal's support Gram, previous direction and line-search state from step
    to step (see :func:`gp_scratch`).
    """
    for a in prange(rows.shape[0]):
        i = rows[a]
        if status[i] != RUNNING:
            continue  # finished: in the step's row groups for their GEMMs only
        GII, dprev, state, g, d, delta = gp_scratch(scratch[i], k)
        s, st = gp_step(C[a], Ci[a], mask, D, False, rule, acgp, positive, thr[i], I[i], Z[i],
                        ns[i], GII, dprev, state, g, d, delta)
        ns[i] = s
        if st == RUNNING:
            energy = update_residual(R[i], D, I[i], delta, s)
            if energy <= tol2[i] or s >= k:
                st = DONE
        status[i] = st
