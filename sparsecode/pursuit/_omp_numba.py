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

from sparsecode._halves_numba import wide
from sparsecode._linalg_numba import back_solve, chol_append, dot, forward_append, nnls_gram
from sparsecode._parallel import group_bounds
from sparsecode._pursuit_numba import (
    ABS,
    DEPENDENT,
    DONE,
    RUNNING,
    SELECT_BLOCK,
    add_to_support_gram,
    axpy,
    best_key,
    correlations,
    first_key,
    int_view,
    prefetch_l2,
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
    j = select(ci, rule, mask)
    return omp_take(c[j], j, S, is_gram, rule, positive, thr, rtol, I, z, s, L, GII, a0, fw,
                    work, delta)


@njit(cache=True, inline="always")
def omp_take(cj, j, S, is_gram, rule, positive, thr, rtol, I, z, s, L, GII, a0, fw, work,
             delta):
    """The OMP step of :func:`omp_step` once atom ``j`` is selected (``cj`` its
    correlation with the residual): grow the factor, solve for the coefficients, leave
    their change in ``delta``."""
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


@njit(cache=True, inline="always")
def _block_keys(ci, mask, bm, ahead):
    """``bm[b]``: the largest ``|c|`` key of block ``b`` of ``SELECT_BLOCK`` entries; with
    ``ahead`` as long as ``ci``, the same block of ``ahead`` is prefetched into L2 (see
    :func:`sparsecode._pursuit_numba.update_select`)."""
    n = ci.shape[0]
    pf = ahead.shape[0] == n
    line = max(1, 64 // ahead.itemsize)  # entries per 64-byte cache line
    for b in range(bm.shape[0]):
        b0 = b * SELECT_BLOCK
        b1 = min(b0 + SELECT_BLOCK, n)
        if pf:
            for q in range(b0, b1, line):
                prefetch_l2(ahead, q)
        bm[b] = best_key(ci[b0:b1], ABS, mask)


@njit(cache=True)
def lazy_select(c, ci, mask, G, I, s, pend, mub, eb, bm, cand, ahead):
    """OMP's selection (``argmax |c_j|``) when the correlations ``c`` still owe the
    deferred update ``-G[I]^T pend``.

    Every atom off the support in block ``b`` (``SELECT_BLOCK`` atoms) differs from its
    owed value by at most ``eb[b] = sum_m |pend_m| mub[I_m, b]`` (``mub[a, b]``: the
    largest ``|G[a, x]|`` over the atoms ``x != a`` of block ``b``).  The largest ``|c|``
    less its block's bound is a lower bound ``low`` on the best exact value, so only the
    atoms with ``|c_x| >= low - eb[b]`` can win; their exact correlations
    ``c_x - sum_m pend_m G[I_m, x]`` are computed (an entry of each support row, as the
    update would subtract it) and the best taken, ties to the lowest index.  ``ahead``
    (a Gram row or empty) is prefetched meanwhile.  Returns ``(j, c_j)``, or ``(-1, 0)``
    when more than ``len(cand)`` atoms are that close (the caller then applies the
    update).  ``eb`` (float64, (n_blocks,)) is scratch.
    """
    nb = bm.shape[0]
    eb[:] = 0.0
    for m in range(s):
        a = abs(pend[m])
        row = mub[I[m]]
        for b in range(nb):
            eb[b] += a * np.float64(row[b])
    _block_keys(ci, mask, bm, ahead)
    top = bm[0]
    tb = 0
    for b in range(nb):
        if bm[b] > top:
            top = bm[b]
            tb = b
    n = c.shape[0]
    b0 = tb * SELECT_BLOCK
    low = np.float64(abs(c[b0 + first_key(ci[b0:min(b0 + SELECT_BLOCK, n)], top, ABS,
                                          mask)])) - eb[tb]
    tmp = np.empty(1, dtype=c.dtype)
    nc = 0
    for b in range(nb):
        lim = low - eb[b]
        if lim <= 0.0:
            return -1, 0.0
        # the key of lim, rounded down (a relative 1e-6 below it, far beyond float32
        # rounding) so that no candidate is lost
        tmp[0] = lim * (1.0 - 1e-6)
        lim_key = int_view(tmp)[0]
        if bm[b] < lim_key:
            continue
        b0 = b * SELECT_BLOCK
        for x in range(b0, min(b0 + SELECT_BLOCK, n)):
            if (ci[x] & mask) >= lim_key:
                if nc == cand.shape[0]:
                    return -1, 0.0
                cand[nc] = x
                nc += 1
    # largest reach |c_x| + eb first (insertion sort; ties by index): once an atom's
    # reach is below the best exact value found, no later candidate can win and their
    # support entries are never read
    for q in range(1, nc):
        x = cand[q]
        rx = np.float64(abs(c[x])) + eb[x // SELECT_BLOCK]
        p = q
        while p > 0:
            y = cand[p - 1]
            ry = np.float64(abs(c[y])) + eb[y // SELECT_BLOCK]
            if ry > rx or (ry == rx and y < x):
                break
            cand[p] = y
            p -= 1
        cand[p] = x
    bj = -1
    bk = -1.0
    bv = 0.0
    for q in range(nc):
        x = cand[q]
        if (np.float64(abs(c[x])) + eb[x // SELECT_BLOCK]) * (1.0 + 1e-9) < bk:
            break
        v = np.float64(c[x])
        for m in range(s):
            v -= pend[m] * np.float64(wide(G[I[m], x]))
        if abs(v) > bk or (abs(v) == bk and x < bj):
            bk = abs(v)
            bj = x
            bv = v
    return bj, bv


@njit(cache=True)
def _pay(c, G, I, s, pend, mu, work, share):
    """Apply the deferred changes whose bound ``|pend_m| mu[I_m]`` is at least ``share``
    of the largest (all of them for 0): ``c -= G[I]^T pend`` on those, then zero them
    and the support's correlations."""
    top = 0.0
    for m in range(s):
        top = max(top, abs(pend[m]) * mu[I[m]])
    for m in range(s):
        pay = abs(pend[m]) * mu[I[m]] >= share * top
        work[m] = pend[m] if pay else 0.0
        pend[m] = 0.0 if pay else pend[m]
    sub_rows(c, G, I, work, s)
    for m in range(s):
        c[I[m]] = 0.0


@njit(cache=True)
def _lazy_next(c, ci, mask, G, I, s, pend, mu, mub, eb, bm, cand, work, ahead):
    """The next atom of one signal of :func:`omp_gram_lazy` and its exact correlation:
    :func:`lazy_select`, paying the largest deferred changes (a quarter of the largest
    bound or more), then all of them, when it cannot decide."""
    j, cj = lazy_select(c, ci, mask, G, I, s, pend, mub, eb, bm, cand, ahead)
    if j < 0:  # too close to call: pay the largest deferred changes
        _pay(c, G, I, s, pend, mu, work, 0.25)
        j, cj = lazy_select(c, ci, mask, G, I, s, pend, mub, eb, bm, cand, G[0, :0])
    if j < 0:  # still: pay all of it
        _pay(c, G, I, s, pend, mu, work, 0.0)
        j = select(ci, ABS, mask)
        cj = np.float64(c[j])
    return j, cj


@njit(parallel=True, cache=True)
def omp_gram_lazy(nch, group, X, D, mask, G, S, is_gram, mu, mub, rule, k, xnorm2, tol2,
                  thr, rtol, I, Z, status, max_candidates):
    """Batch-OMP (``positive=False``) on the Gram path with deferred updates.

    Each step subtracts the new atom's row at once (``c -= z_j G[j]``, as MP does) and
    defers the change of the older coefficients, which is small: the selection stays
    exact through :func:`lazy_select`, and the deferred rows are subtracted only when it
    can no longer decide among ``max_candidates`` atoms (then ``s`` rows, as every step
    of :func:`omp_gram` reads).  Support atoms' correlations are kept at 0 (the residual
    is orthogonal to them).  Two signals run at a time, as in MP's
    :func:`~sparsecode.pursuit._mp_numba.mp_gram_lanes`: while one selects, the other's
    next Gram row is prefetched; each signal's arithmetic is that of one signal alone.
    Arguments as :func:`omp_gram`, but ``D`` is the dictionary itself (unit-norm rows,
    C-contiguous), plus ``mub`` (float32, (n_atoms, n_blocks)): the largest off-diagonal
    ``|G[a, x]|`` of each row by block of ``SELECT_BLOCK`` atoms (the selection's bounds),
    ``mu`` (float64, (n_atoms,)): the same over each whole row (which owed changes to pay
    first), and ``S, is_gram``: where the support Gram entries come from (``G, True``, or
    ``D, False`` for 16-bit rows: exact dot products).
    """
    n = X.shape[0]
    DT = D.T
    nb = (G.shape[0] + SELECT_BLOCK - 1) // SELECT_BLOCK
    for ch in prange(nch):
        L = np.empty((2, k, k))
        GII = np.empty((2, k, k))
        a0 = np.empty((2, k))
        fw = np.empty((2, k))
        work = np.empty((2, k))
        delta = np.empty((2, k))
        pend = np.zeros((2, k))
        bm = np.empty(nb, dtype=np.int64)  # block maxima of the keys
        eb = np.empty(nb)  # the deferred changes' bounds by block
        cand = np.empty(max(max_candidates, 1), dtype=np.int64)
        sig = np.full(2, -1, dtype=np.int64)  # each lane's signal, -1 when idle
        js = np.zeros(2, dtype=np.int64)  # each lane's next atom
        cs = np.zeros(2)  # and its correlation
        ss = np.zeros(2, dtype=np.int64)  # support sizes
        lo, hi = group_bounds(ch, nch, n, group)
        C, Ci = correlations(X, DT, lo, hi, group)
        nxt = lo
        for u in range(2):
            nxt = _lane_start(u, nxt, hi, lo, C, Ci, mask, G, I, mu, mub, eb, k, xnorm2,
                              tol2, status, sig, js, cs, ss, pend, bm, cand, work)
        while sig[0] >= 0 or sig[1] >= 0:
            for u in range(2):
                i = sig[u]
                if i < 0:
                    continue
                c = C[i - lo]
                Ii = I[i]
                z = Z[i]
                j = js[u]
                s, st = omp_take(cs[u], j, S, is_gram, rule, False, thr[i], rtol, Ii, z,
                                 ss[u], L[u], GII[u], a0[u], fw[u], work[u], delta[u])
                ss[u] = s
                go = st == RUNNING
                if go:
                    energy = xnorm2[i] - dot(a0[u], z, s)
                    go = s < k and energy > tol2[i]
                if not go:
                    status[i] = st
                    nxt = _lane_start(u, nxt, hi, lo, C, Ci, mask, G, I, mu, mub, eb, k,
                                      xnorm2, tol2, status, sig, js, cs, ss, pend, bm, cand,
                                      work)
                    continue
                axpy(c, G[j], c.dtype.type(delta[u, s - 1]))
                for m in range(s - 1):
                    pend[u, m] += delta[u, m]
                for m in range(s):
                    c[Ii[m]] = 0.0
                ahead = G[js[1 - u]] if sig[1 - u] >= 0 else G[0, :0]
                js[u], cs[u] = _lazy_next(c, Ci[i - lo], mask, G, Ii, s, pend[u], mu, mub,
                                          eb, bm, cand, work[u], ahead)


@njit(cache=True)
def _lane_start(u, nxt, hi, lo, C, Ci, mask, G, I, mu, mub, eb, k, xnorm2, tol2, status,
                sig, js, cs, ss, pend, bm, cand, work):
    """Give lane ``u`` of :func:`omp_gram_lazy` the next signal from ``nxt`` that needs a
    step (those that need none are marked DONE) and select its first atom; the lane goes
    idle (``sig[u] = -1``) when none is left.  Returns the new ``nxt``."""
    for m in range(k):
        pend[u, m] = 0.0
    while nxt < hi:
        i = nxt
        nxt += 1
        if k > 0 and xnorm2[i] > tol2[i]:
            sig[u] = i
            ss[u] = 0
            js[u], cs[u] = _lazy_next(C[i - lo], Ci[i - lo], mask, G, I[i], 0, pend[u], mu,
                                      mub, eb, bm, cand, work[u], G[0, :0])
            return nxt
        status[i] = DONE
    sig[u] = -1
    return nxt


@njit(parallel=True, cache=True)
def block_coherence_keys(Gi, mask):
    """``key[a, b]``: the largest ``Gi[a, x] & mask`` over the atoms ``x != a`` of block
    ``b`` (``SELECT_BLOCK`` atoms).

    ``Gi`` is the integer view of the Gram rows (int32 or int64 for float32 or float64
    rows, the 16-bit patterns themselves for 16-bit rows) and ``mask`` clears the sign
    bit, so keys are ordered like ``|G|``.  Integer max reductions that vectorise: one
    read of ``G`` at memory speed.
    """
    K = Gi.shape[0]
    nb = (Gi.shape[1] + SELECT_BLOCK - 1) // SELECT_BLOCK
    keys = np.zeros((K, nb), dtype=Gi.dtype)
    for a in prange(K):
        row = Gi[a]
        T = type(mask)
        for b in range(nb):
            b0 = b * SELECT_BLOCK
            b1 = min(b0 + SELECT_BLOCK, K)
            m = T(0)
            for x in range(b0, b1):
                v = T(row[x] & mask)
                m = v if (v > m and x != a) else m
            keys[a, b] = m
    return keys
