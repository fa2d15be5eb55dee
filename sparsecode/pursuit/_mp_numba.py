"""Matching pursuit kernels (Numba).  Called only from :mod:`sparsecode.pursuit.mp`.

Atoms are unit norm here (the caller normalises).  Gram path, per signal and step:
``c -= coef * G[j]`` (2 n_atoms flops, reads one Gram row), then the selection (one
vectorised pass over the keys and a vectorised search of the winning block).  The
residual is never formed; its energy is tracked.  The Gram rows are the memory traffic
(4 n_atoms bytes per step in float32); when the Gram matrix does not fit in cache, the
next row of one signal is prefetched while another signal computes.

No-Gram path: the caller recomputes ``C = R D^T`` for the still-active signals with one
GEMM per step; the kernel selects and updates the residual rows (O(n_features)).
"""

import numpy as np
from numba import njit, prange

from sparsecode._parallel import group_bounds
from sparsecode._pursuit_numba import (
    DONE,
    POSITIVE,
    RUNNING,
    add_to_code,
    correlations,
    mp_one,
    select,
    take_atom,
    update_select,
    vanished,
)


@njit(cache=True)
def _start(u, nxt, hi, lo, Ci, rule, mask, k, xnorm2, tol2, sig, js, ss, ts, en):
    """Give lane ``u`` the next signal from ``nxt`` on that needs a step (``sig[u] = -1``
    when none is left); returns the new ``nxt``."""
    while nxt < hi:
        i = nxt
        nxt += 1
        if k > 0 and xnorm2[i] > tol2[i]:
            sig[u] = i
            js[u] = select(Ci[i - lo], rule, mask)
            ss[u] = 0
            ts[u] = 0
            en[u] = xnorm2[i]
            return nxt
    sig[u] = -1
    return nxt


@njit(cache=True, inline="always")
def _mp_two_lanes(C, Ci, lo, hi, G, rule, mask, k, xnorm2, tol2, thr, I, Z):
    """MP on rows ``lo:hi``, two signals at a time: each lane's update prefetches the
    other lane's next Gram row.  A lane whose signal ends takes the next one."""
    js = np.zeros(2, dtype=np.int64)  # pending atom
    ss = np.zeros(2, dtype=np.int64)  # support size
    ts = np.zeros(2, dtype=np.int64)  # steps taken
    en = np.zeros(2)  # residual energy
    sig = np.full(2, -1, dtype=np.int64)  # signal of each lane, -1 when idle
    nxt = lo
    for u in range(2):
        nxt = _start(u, nxt, hi, lo, Ci, rule, mask, k, xnorm2, tol2, sig, js, ss, ts, en)
    while sig[0] >= 0 or sig[1] >= 0:
        for u in range(2):
            i = sig[u]
            if i < 0:
                continue
            c = C[i - lo]
            s, energy, cj, go_on = take_atom(c, js[u], rule, thr[i], I[i], Z[i], ss[u], en[u])
            ss[u] = s
            en[u] = energy
            ts[u] += 1
            if go_on and ts[u] < k and energy > tol2[i]:
                ahead = G[js[1 - u]] if sig[1 - u] >= 0 else G[0, :0]
                js[u] = update_select(c, Ci[i - lo], G[js[u]], cj, rule, mask, ahead)
            else:
                nxt = _start(u, nxt, hi, lo, Ci, rule, mask, k, xnorm2, tol2, sig, js, ss,
                             ts, en)


@njit(parallel=True, cache=True)
def mp_gram(nch, group, X, DT, mask, G, rule, k, xnorm2, tol2, thr, I, Z):
    """Run up to ``k`` MP steps for every row of ``X`` on the Gram path, one signal after
    another (:func:`mp_gram_lanes` for Gram matrices too large for the caches).

    Parameters
    ----------
    nch : int
        Number of chunks of whole row groups for the parallel loop.
    group : int
        Rows per group of the correlation GEMMs (see :mod:`sparsecode._parallel`).
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
        lo, hi = group_bounds(ch, nch, n, group)
        C, Ci = correlations(X, DT, lo, hi, group)
        for i in range(lo, hi):
            mp_one(C[i - lo], Ci[i - lo], G, rule, mask, k, xnorm2[i], tol2[i], thr[i], I[i],
                   Z[i])


@njit(parallel=True, cache=True)
def mp_gram_lanes(nch, group, X, DT, mask, G, rule, k, xnorm2, tol2, thr, I, Z):
    """:func:`mp_gram` two signals at a time: one's next Gram row is fetched from memory
    while the other computes (see :func:`update_select`); the codes are the same, bit for
    bit.  Arguments as :func:`mp_gram`."""
    n = X.shape[0]
    for ch in prange(nch):
        lo, hi = group_bounds(ch, nch, n, group)
        C, Ci = correlations(X, DT, lo, hi, group)
        _mp_two_lanes(C, Ci, lo, hi, G, rule, mask, k, xnorm2, tol2, thr, I, Z)


@njit(parallel=True, cache=True)
def mp_nogram_step(C, Ci, mask, rows, R, D, rule, tol2, thr, I, Z, ns, status):
    """One MP step for the active rows on the no-Gram path.

    ``C[a]`` holds the correlations ``R[rows[a]] D^T`` (``Ci`` its integer view); rows not
    running are skipped.  Updates ``R``, ``I``, ``Z``, ``ns`` (support sizes) and ``status``
    of those rows.
    """
    nfeat = R.shape[1]
    for a in prange(rows.shape[0]):
        i = rows[a]
        if status[i] != RUNNING:
            continue  # finished: in the step's row groups for their GEMMs only
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
