"""Kernels of the pretrained SAEs' own encoders: from a block of pre-activations to sparse
codes (one parallel pass over the rows), matching pursuit as SAELens runs it, and least
squares on a given support.

Every kernel takes the pre-activations ``P = X_in W_enc`` of a block of rows, computed by
the caller with one GEMM, and the per-atom ``bias`` and ``scale``; the encoder's score of
atom ``j`` is ``(P[i, j] + bias[j]) * scale[j]``.
"""

import numpy as np
from numba import njit, prange

from sparsecode._linalg_numba import back_solve, chol_append, forward_append
from sparsecode._pursuit_numba import POSITIVE, select, update_select


@njit(cache=True, inline="always")
def _score(P, i, j, bias, scale):
    return (P[i, j] + bias[j]) * scale[j]


#: Atoms per span of :func:`fill_active`'s first, vectorised test.
SPAN = 64


@njit(cache=True, inline="always")
def _active(P, i, j, bias, scale, thr, gate, gate_bias):
    # bitwise, not short-circuit: a loop of these has no branch and vectorises
    s = _score(P, i, j, bias, scale)
    return (s > 0) & (s > thr[j]) & ((not gate) | (P[i, j] + gate_bias[j] > 0))


@njit(parallel=True, cache=True)
def count_active(P, bias, scale, thr, gate, gate_bias):
    """Number of active atoms per row of a ReLU, JumpReLU or gated encoder.

    Parameters
    ----------
    P : ndarray of shape (n, n_atoms)
        Pre-activations without their bias.
    bias, scale, thr : ndarray of shape (n_atoms,)
        Atom ``j`` is active when its score ``(P + bias) * scale`` is positive and above
        ``thr[j]``.
    gate : bool
        Gated encoder: atom ``j`` is active when ``P + gate_bias[j] > 0`` and its
        magnitude score is positive.
    gate_bias : ndarray of shape (n_atoms,)

    Returns
    -------
    ndarray of shape (n,), int64
    """
    n, m = P.shape
    out = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        c = 0
        for j in range(m):
            c += _active(P, i, j, bias, scale, thr, gate, gate_bias)
        out[i] = c
    return out


@njit(parallel=True, cache=True)
def fill_active(P, bias, scale, thr, gate, gate_bias, I, Z):
    """Write the active atoms of each row (in atom order) and their scores into ``I`` and
    ``Z`` (rows of width at least :func:`count_active`'s count; the rest untouched).

    Spans of ``SPAN`` atoms are first counted (a branch-free loop the compiler
    vectorises) and only spans holding an active atom are walked."""
    n, m = P.shape
    for i in prange(n):
        c = 0
        for j0 in range(0, m, SPAN):
            j1 = min(j0 + SPAN, m)
            hits = 0
            for j in range(j0, j1):
                hits += _active(P, i, j, bias, scale, thr, gate, gate_bias)
            if hits == 0:
                continue
            for j in range(j0, j1):
                if _active(P, i, j, bias, scale, thr, gate, gate_bias):
                    I[i, c] = j
                    Z[i, c] = _score(P, i, j, bias, scale)
                    c += 1


@njit(cache=True, inline="always")
def _sift_down(hv, hi, k, pos):
    # min-heap on (value, -index): the root is the smallest value, among equal values the
    # largest index (the first to leave, so that ties keep the lower atoms)
    while True:
        left = 2 * pos + 1
        if left >= k:
            return
        child = left
        right = left + 1
        if right < k and (hv[right] < hv[left]
                          or (hv[right] == hv[left] and hi[right] > hi[left])):
            child = right
        if hv[child] < hv[pos] or (hv[child] == hv[pos] and hi[child] > hi[pos]):
            hv[pos], hv[child] = hv[child], hv[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@njit(parallel=True, cache=True)
def topk_rows(P, bias, scale, k, I, Z):
    """The ``k`` atoms of largest score of each row, positive scores only, in order of
    decreasing score (ties: the lower atom first); ``I``/``Z`` of width ``k`` are filled
    with -1 / 0 past them."""
    n, m = P.shape
    for i in prange(n):
        hv = np.full(k, -np.inf)
        hi = np.full(k, m, dtype=np.int64)
        for j in range(m):
            s = _score(P, i, j, bias, scale)
            if s > hv[0] or (s == hv[0] and j < hi[0]):
                hv[0] = s
                hi[0] = j
                _sift_down(hv, hi, k, 0)
        # sort the heap: decreasing score, ties by increasing atom
        order = np.empty(k, dtype=np.int64)
        for a in range(k):
            order[a] = a
        for a in range(1, k):
            b = a
            while b > 0:
                x, y = order[b], order[b - 1]
                if hv[x] > hv[y] or (hv[x] == hv[y] and hi[x] < hi[y]):
                    order[b], order[b - 1] = y, x
                    b -= 1
                else:
                    break
        c = 0
        for a in range(k):
            o = order[a]
            if hv[o] > 0:
                I[i, c] = hi[o]
                Z[i, c] = hv[o]
                c += 1
        for a in range(c, k):
            I[i, a] = -1
            Z[i, a] = 0


@njit(parallel=True, cache=True)
def groupmax_rows(P, bias, scale, groups, I, Z):
    """Of each of ``groups`` consecutive, equal groups of atoms, the atom of largest score
    (the first on ties), when positive; in group order, ``I``/``Z`` filled with -1 / 0
    past them."""
    n, m = P.shape
    size = m // groups
    for i in prange(n):
        c = 0
        for g in range(groups):
            best = -np.inf
            arg = -1
            for j in range(g * size, (g + 1) * size):
                s = _score(P, i, j, bias, scale)
                if s > best:
                    best = s
                    arg = j
            if best > 0:
                I[i, c] = arg
                Z[i, c] = best
                c += 1
        for a in range(c, groups):
            I[i, a] = -1
            Z[i, a] = 0


@njit(parallel=True, cache=True)
def mp_step(C, crow, rows, R, W, dup_stop, thr2, I, Z, ns, done):
    """One step of SAELens' matching pursuit for the still-running ``rows``.

    Parameters
    ----------
    C : ndarray of shape (n_c, n_atoms)
        Correlations of residuals with the rows of ``W``: row ``crow[a]`` is ``R[rows[a]]``'s.
    crow, rows : ndarray of int64
    R : ndarray of shape (n, n_features)
        Residuals (updated).
    W : ndarray of shape (n_atoms, n_features)
        The decoder's rows as they are (free norms).
    dup_stop : bool
        Stop a row once a step leaves its support unchanged.
    thr2 : float
        Stop a row once ``||r||^2 < thr2`` (0: never).
    I, Z : ndarray of shape (n, width)
        Support in order of first selection and accumulated coefficients; ``ns`` their
        used widths.
    done : ndarray of bool
    """
    for a in prange(rows.shape[0]):
        i = rows[a]
        ci = crow[a]
        # the first largest of relu(c): atom 0 with a zero step when none is positive
        j = 0
        best = 0.0
        for t in range(C.shape[1]):
            v = max(C[ci, t], 0.0)
            if v > best:
                best = v
                j = t
        v = 0.0
        for f in range(R.shape[1]):
            v += R[i, f] * W[j, f]
        v = max(v, 0.0)
        grew = False
        if v > 0:
            slot = -1
            for s in range(ns[i]):
                if I[i, s] == j:
                    slot = s
                    break
            if slot < 0:
                if ns[i] < I.shape[1]:
                    I[i, ns[i]] = j
                    Z[i, ns[i]] = v
                    ns[i] += 1
                grew = True
            else:
                Z[i, slot] += v
            for f in range(R.shape[1]):
                R[i, f] -= v * W[j, f]
        if dup_stop and not grew:
            done[i] = True
        if thr2 > 0:
            e = 0.0
            for f in range(R.shape[1]):
                e += R[i, f] * R[i, f]
            if e < thr2:
                done[i] = True


@njit(parallel=True, cache=True)
def refit_rows(X, W, I, Z, rtol):
    """Least-squares coefficients of each row of ``X`` on the atoms of its support:
    ``Z[i, :l]`` becomes the minimiser of ``||x_i - sum_s Z[i, s] W[I[i, s]]||`` over
    the support's first ``l`` atoms (those with index >= 0).  An atom linearly dependent
    on the ones before it (pivot below ``rtol``) keeps coefficient 0."""
    n, w = I.shape
    for i in prange(n):
        L = np.zeros((w, w))
        b = np.zeros(w)
        y = np.zeros(w)
        z = np.zeros(w)
        idx = np.empty(w, dtype=np.int64)
        pos = np.empty(w, dtype=np.int64)
        s = 0
        for t in range(w):
            j = I[i, t]
            if j < 0:
                break
            # the new row of the support's Gram and the right-hand side
            grow = np.empty(s + 1)
            for u in range(s):
                acc = 0.0
                for f in range(W.shape[1]):
                    acc += W[idx[u], f] * W[j, f]
                grow[u] = acc
            acc = 0.0
            rhs = 0.0
            for f in range(W.shape[1]):
                acc += W[j, f] * W[j, f]
                rhs += W[j, f] * X[i, f]
            grow[s] = acc
            if chol_append(L, s, grow, rtol):
                b[s] = rhs
                forward_append(L, s + 1, b, y)
                idx[s] = j
                pos[s] = t
                s += 1
        back_solve(L, s, y, z)
        for t in range(w):
            Z[i, t] = 0
        for u in range(s):
            Z[i, pos[u]] = z[u]


@njit(parallel=True, cache=True)
def mp_gram_rows(C, Ci, mask, G, max_iterations, dup_stop, thr2, xnorm2, I, Z):
    """SAELens' matching pursuit for every row on the Gram path: the correlations ``C``
    (``x_in W^T``, overwritten) are updated by ``c -= v G[j]`` instead of recomputed, and
    the residual energy by ``e -= 2 v c_j - v^2 G[j, j]``; the same selections, steps and
    stops as :func:`mp_step`, up to rounding.  The selection and update are the shared
    vectorised ones of the pursuits (``select``, ``update_select``: the first largest
    positive correlation).

    Parameters
    ----------
    C : ndarray of shape (n, n_atoms)
    Ci : ndarray of shape (n, n_atoms)
        ``C``'s integer view; ``mask`` the magnitude mask of its integer type.
    G : ndarray of shape (n_atoms, n_atoms)
        ``W W^T``.
    max_iterations : int
    dup_stop : bool
    thr2 : float
        Stop once ``||r||^2 < thr2`` (0: never).
    xnorm2 : ndarray of shape (n,), float64
        ``||x_in||^2``.
    I, Z : ndarray of shape (n, width)
        Output: support in order of first selection (-1 past it), summed coefficients.
    """
    n = C.shape[0]
    for i in prange(n):
        c = C[i]
        ci = Ci[i]
        ns = 0
        e = xnorm2[i]
        j = select(ci, POSITIVE, mask)
        for _ in range(max_iterations):
            v = c[j]
            if not v > 0:
                break  # no positive correlation: every later step adds nothing
            grew = False
            slot = -1
            for q in range(ns):
                if I[i, q] == j:
                    slot = q
                    break
            if slot < 0:
                if ns < I.shape[1]:
                    I[i, ns] = j
                    Z[i, ns] = v
                    ns += 1
                grew = True
            else:
                Z[i, slot] += v
            e -= 2.0 * float(v) * float(v) - float(v) * float(v) * float(G[j, j])
            j = update_select(c, ci, G[j], v, POSITIVE, mask, G[0, :0])
            if dup_stop and not grew:
                break
            if thr2 > 0 and e < thr2:
                break
        for q in range(ns, I.shape[1]):
            I[i, q] = -1
            Z[i, q] = 0
