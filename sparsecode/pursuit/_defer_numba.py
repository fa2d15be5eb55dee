"""Cached-Gram kernels that defer missing rows (Numba): MP and Batch-OMP reading Gram
rows from a :class:`~sparsecode.GramRows` store, where a row the store lacks is not
waited for.  Called only from :mod:`sparsecode.pursuit._rows`.

A correlation update ``c -= delta G[j]`` whose row ``G[j]`` is missing is kept as a
vector instead: ``v += delta d_j`` (``n_features`` entries per signal), so the true
correlations are ``c - D v``.  Off the atoms it came from, the error of ``c`` is at
most ``e = sum |delta| mu[j]`` (``mu[j]``: the largest ``|G[j, x]|``, ``x != j``, the
store's :meth:`~sparsecode.GramRows.coherence`), so the selection stays exact: only atoms
whose ``c`` is within ``2 e`` of the best can win, and their true correlations are
computed (one dot product of ``n_features`` each) before one is taken.  When more than
``max_candidates`` atoms are that close, the signal pays: it stops with status PAYING,
the caller subtracts ``V D^T`` for all the paying signals with one GEMM, and the next
round resumes them with ``v = 0``.  A missing row thus costs ``n_features`` flops, not
``n_atoms n_features``; a payment costs one row, whatever the misses it settles.

The atoms the deferred vector came from get their own entry right: MP sets the taken
atom's ``c`` to its true value 0 and keeps the offset ``w = d_j . v`` of that moment
(``pend``/``pw``), added back to its true correlation ``c_j + w_j - d_j . v``; OMP's
support atoms have true correlation 0 and their ``c`` is kept at 0.  With no deferred
update the steps are those of the cached kernels of :mod:`sparsecode.pursuit._rows_numba`,
the same arithmetic.
"""

import numpy as np
from numba import njit, prange

from sparsecode._linalg_numba import dot
from sparsecode._pursuit_numba import (
    ABS,
    DONE,
    POSITIVE,
    RUNNING,
    SELECT_BLOCK,
    add_to_code,
    atom_dot,
    axpy,
    best_key,
    first_key,
    int_view,
    key_of,
    select,
    sub_rows,
    vanished,
)
from sparsecode.pursuit._omp_numba import omp_scratch, omp_take

#: Status of a signal that must pay its deferred updates before it can go on.
PAYING = 4


@njit(cache=True, inline="always")
def _value_key(t, rule):
    """The selection key of a correlation as a float (``|t|`` or ``t``)."""
    return abs(t) if rule == ABS else t


@njit(cache=True, inline="always")
def _offset(x, pend, pw, npend):
    """The offset ``w`` kept for atom ``x`` when an MP step deferred it, or 0."""
    for m in range(npend):
        if pend[m] == x:
            return pw[m]
    return 0.0


@njit(cache=True, inline="always")
def _key_below(lim, c):
    """The selection key of ``lim > 0`` rounded down (a relative 1e-6 below it, far
    beyond float32 rounding) so that no candidate is lost; positive values' keys are
    their bits for every rule."""
    tmp = np.empty(1, dtype=c.dtype)
    tmp[0] = lim * (1.0 - 1e-6)
    return int_view(tmp)[0]


@njit(cache=True)
def lazy_pick(c, ci, rule, mask, eg, group, D, v, pend, pw, npend, bm, cand):
    """The selection of the step when ``c`` owes ``-D v``: off the kept atoms, the error
    of the atoms of group ``g`` (``group`` atoms each) is at most ``eg[g]``.  Returns
    ``(j, t_j)``, the atom and its true correlation, or ``(-1, 0)`` when the best is not
    within reach of ``len(cand)`` exact evaluations.

    The best ``c`` less its group's bound is a lower bound ``L`` on the best true value;
    an atom of group ``g`` can reach it only if its ``c`` is at least ``L - eg[g]``."""
    n = c.shape[0]
    nb = bm.shape[0]
    for b in range(nb):
        b0 = b * SELECT_BLOCK
        bm[b] = best_key(ci[b0:min(b0 + SELECT_BLOCK, n)], rule, mask)
    top = bm[0]
    tb = 0
    for b in range(nb):
        if bm[b] > top:
            top = bm[b]
            tb = b
    b0 = tb * SELECT_BLOCK
    x = b0 + first_key(ci[b0:min(b0 + SELECT_BLOCK, n)], top, rule, mask)
    low = _value_key(np.float64(c[x]), rule) - eg[x // group]
    emax = 0.0
    for g in range(eg.shape[0]):
        emax = max(emax, eg[g])
    if low - emax <= 0.0:
        return -1, 0.0
    least = _key_below(low - emax, c)  # no candidate below it in any group
    nc = 0
    for b in range(nb):
        if bm[b] < least:
            continue
        b0 = b * SELECT_BLOCK
        g = -1
        lim_key = least
        for x in range(b0, min(b0 + SELECT_BLOCK, n)):
            if x // group != g:
                g = x // group
                lim_key = _key_below(low - eg[g], c)
            if key_of(ci[x], rule, mask) >= lim_key:
                if nc == cand.shape[0]:
                    return -1, 0.0
                cand[nc] = x
                nc += 1
    bj = -1
    bk = -np.inf
    bv = 0.0
    for q in range(nc):
        x = cand[q]
        t = np.float64(c[x]) + _offset(x, pend, pw, npend) - atom_dot(D[x], v)
        kt = _value_key(t, rule)
        if kt > bk:
            bk = kt
            bj = x
            bv = t
    return bj, bv


@njit(cache=True, inline="always")
def _add_bound(eg, mub, j, coef):
    """``eg += |coef| mub[j]``: the bounds of atom ``j``'s deferred change by group."""
    a = abs(coef)
    row = mub[j]
    for g in range(eg.shape[0]):
        eg[g] += a * np.float64(row[g])


@njit(cache=True, inline="always")
def _defer(v, D, j, coef):
    """``v += coef d_j`` (float64)."""
    row = D[j]
    for f in range(v.shape[0]):
        v[f] += coef * np.float64(row[f])


@njit(cache=True, inline="always")
def _resume(c, v, I, s, pend, pw, npend, zero_support):
    """After a payment (``c -= D v`` done by the caller): restore the kept atoms' offsets
    (MP) or zero the support's correlations (OMP), and clear ``v``."""
    for m in range(npend):
        c[pend[m]] += c.dtype.type(pw[m])
    if zero_support:
        for m in range(s):
            c[I[m]] = 0.0
    v[:] = 0.0


@njit(cache=True)
def _pick(c, ci, rule, mask, owed, eg, group, D, v, pend, pw, npend, bm, cand):
    """The step's selection: exact when nothing is owed, else :func:`lazy_pick`."""
    if not owed:
        j = select(ci, rule, mask)
        return j, np.float64(c[j])
    return lazy_pick(c, ci, rule, mask, eg, group, D, v, pend, pw, npend, bm, cand)


@njit(parallel=True, cache=True)
def mp_defer_round(todo, C, Ci, mask, rows, slot, used, rnd, D, mub, group, rule, k, xnorm2,
                   tol2, thr, I, Z, ns, energy, steps, V, pend, pw, npend, max_candidates,
                   status):
    """One round of MP for the signals ``todo`` (block rows), deferring missing rows.

    ``mub`` (float32, (n_atoms, n_groups)): the coherence bounds by group of ``group``
    atoms (:func:`sparsecode._parallel.coherence`).  ``V`` (float64, (n, n_features)),
    ``pend``/``pw`` ((n, k): atoms and offsets) and ``npend`` ((n,)) are each signal's
    deferred state; a signal found PAYING had ``V`` subtracted from ``C`` by the caller.
    Leaves ``status`` DONE or PAYING.
    """
    nb = (C.shape[1] + SELECT_BLOCK - 1) // SELECT_BLOCK
    for a in prange(todo.shape[0]):
        i = todo[a]
        c = C[i]
        ci = Ci[i]
        v = V[i]
        bm = np.empty(nb, dtype=ci.dtype)
        cand = np.empty(max(max_candidates, 1), dtype=np.int64)
        eg = np.zeros(mub.shape[1])  # the bounds by group (nothing owed at a round's start)
        owed = False
        if status[i] == PAYING:
            _resume(c, v, I[i], 0, pend[i], pw[i], npend[i], False)
            npend[i] = 0
        elif steps[i] == 0:
            energy[i] = xnorm2[i]
            if k <= 0 or xnorm2[i] <= tol2[i]:
                status[i] = DONE
                continue
        st = DONE
        while True:
            j, t = _pick(c, ci, rule, mask, owed, eg, group, D, v, pend[i], pw[i], npend[i],
                         bm, cand)
            if j < 0:
                st = PAYING
                break
            if vanished(t, thr[i], rule):
                break
            s, again = add_to_code(I[i], Z[i], ns[i], j, t)
            ns[i] = s
            energy[i] -= t * t
            steps[i] += 1
            if (again and rule == POSITIVE) or steps[i] >= k or energy[i] <= tol2[i]:
                break
            sl = slot[j]
            if sl >= 0:
                used[sl] = rnd
                axpy(c, rows[sl], c.dtype.type(t))
                continue
            _defer(v, D, j, t)
            _add_bound(eg, mub, j, t)
            owed = True
            m = 0
            while m < npend[i] and pend[i, m] != j:
                m += 1
            if m == npend[i]:
                pend[i, m] = j
                npend[i] += 1
            c[j] = 0.0  # its true value after the step
            pw[i, m] = atom_dot(D[j], v)
        status[i] = st


@njit(cache=True, inline="always")
def _owed(pd, mub, I, s, eg):
    """``eg``: the bounds by group of the error the owed changes ``pd`` leave,
    ``sum |pd_m| mub[I_m]``; True when any is owed."""
    eg[:] = 0.0
    owed = False
    for m in range(s):
        if pd[m] != 0.0:
            _add_bound(eg, mub, I[m], pd[m])
            owed = True
    return owed


@njit(cache=True)
def _pay_rows(c, rows, slot, used, rnd, D, v, I, s, pd, mu, islots, coef, share):
    """Pay the owed changes ``pd`` whose rows the store has and whose bound is at least
    ``share`` of the largest: ``c -= G[I]^T pd`` on those (reading their rows),
    ``v -= D[I]^T pd`` and ``pd = 0`` there; the support's correlations back to 0."""
    top = 0.0
    for m in range(s):
        if slot[I[m]] >= 0:
            top = max(top, abs(pd[m]) * mu[I[m]])
    n = 0
    for m in range(s):
        sl = slot[I[m]]
        if sl >= 0 and pd[m] != 0.0 and abs(pd[m]) * mu[I[m]] >= share * top:
            used[sl] = rnd
            islots[n] = sl
            coef[n] = pd[m]
            n += 1
            _defer(v, D, I[m], -pd[m])
            pd[m] = 0.0
    sub_rows(c, rows, islots, coef, n)
    for m in range(s):
        c[I[m]] = 0.0


@njit(parallel=True, cache=True)
def omp_defer_round(todo, C, Ci, mask, rows, slot, used, rnd, D, mu, mub, group, rule, k,
                    xnorm2, tol2, thr, rtol, I, Z, ns, scratch, V, pend, npend,
                    max_candidates, status):
    """One round of Batch-OMP (``positive=False``) for the signals ``todo``, deferring
    missing rows (see :func:`mp_defer_round`; ``scratch`` as
    :func:`~sparsecode.pursuit._rows_numba.omp_rows_round`'s).

    Of the update ``c -= G[I]^T delta``, the new atom's term is subtracted with its row
    when the store has it; every other term is owed, as :func:`omp_gram_lazy` owes the
    older atoms' small changes: ``pd`` sums them per support atom and ``v = D[I]^T pd``.
    When the selection cannot be decided, the owed changes with rows in the store are
    paid by those rows (the largest first, as :func:`omp_gram_lazy` does); when that is
    not enough the signal pays with the caller's product.  ``mu``/``mub``/``group``: the
    coherence and its bounds by group (:func:`sparsecode._parallel.coherence`).  ``pend``
    and ``npend`` receive the atoms taken without a row since the last payment."""
    nb = (C.shape[1] + SELECT_BLOCK - 1) // SELECT_BLOCK
    for a in prange(todo.shape[0]):
        i = todo[a]
        c = C[i]
        ci = Ci[i]
        v = V[i]
        Ii = I[i]
        z = Z[i]
        L, GII, a0, fw, work, delta = omp_scratch(scratch[i], k)
        bm = np.empty(nb, dtype=ci.dtype)
        cand = np.empty(max(max_candidates, 1), dtype=np.int64)
        pd = np.zeros(k)
        islots = np.empty(k, dtype=np.int64)
        coef = np.empty(k)
        nopend = np.empty(0, dtype=np.int64)
        nopw = np.empty(0)
        s = ns[i]
        if status[i] == PAYING:
            _resume(c, v, Ii, s, nopend, nopw, 0, True)
            npend[i] = 0
        elif xnorm2[i] <= tol2[i] or k <= 0:
            status[i] = DONE
            continue
        st = DONE
        eg = np.zeros(mub.shape[1])
        owed = False
        while True:
            j, cj = _pick(c, ci, rule, mask, owed, eg, group, D, v, nopend, nopw, 0, bm, cand)
            for share in (0.25, 0.0):  # too close to call: pay by rows what the store has
                if j >= 0:
                    break
                _pay_rows(c, rows, slot, used, rnd, D, v, Ii, s, pd, mu, islots, coef, share)
                owed = _owed(pd, mub, Ii, s, eg)
                j, cj = _pick(c, ci, rule, mask, owed, eg, group, D, v, nopend, nopw, 0, bm,
                              cand)
            if j < 0:
                st = PAYING
                break
            s, st = omp_take(cj, j, D, False, rule, False, thr[i], rtol, Ii, z, s, L, GII,
                             a0, fw, work, delta)
            if st != RUNNING:
                break
            energy = xnorm2[i] - dot(a0, z, s)
            if s >= k or energy <= tol2[i]:
                st = DONE
                break
            sl = slot[j]
            if sl >= 0:
                used[sl] = rnd
                axpy(c, rows[sl], c.dtype.type(delta[s - 1]))
            else:
                pend[i, npend[i]] = j
                npend[i] += 1
                pd[s - 1] = delta[s - 1]
                _defer(v, D, j, delta[s - 1])
            for m in range(s - 1):
                pd[m] += delta[m]
                _defer(v, D, Ii[m], delta[m])
            for m in range(s):
                c[Ii[m]] = 0.0  # the residual is orthogonal to the support
            owed = _owed(pd, mub, Ii, s, eg)
        ns[i] = s
        status[i] = st


@njit(parallel=True, cache=True)
def sub_gathered(C, rows, P):
    """``C[rows] -= P`` in place."""
    for a in prange(rows.shape[0]):
        c = C[rows[a]]
        p = P[a]
        for x in range(c.shape[0]):
            c[x] -= p[x]
