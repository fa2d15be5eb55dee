"""Cached-Gram kernels (Numba): MP, OMP and GP reading Gram rows from a
:class:`~sparsecode.GramRows` store.  Called only from :mod:`sparsecode.pursuit._rows`.

The work goes in rounds.  In a round each signal of ``todo`` runs its pursuit as on the
Gram path (its correlations ``c`` updated by Gram rows, in cache while it runs) until it
ends or needs a row the store lacks: it then waits, its pending update kept.  Between
rounds the caller computes the rows the waiting signals need (one GEMM for all) and
starts another round with them.  ``slot[j]`` is the row of atom ``j`` in ``rows`` or -1;
every read stamps ``used[slot]`` with the round's number (the store's eviction order).

MP waits on one row (the atom just taken); OMP and GP on the rows of their whole
support, since every update reads them all.  OMP and GP take the support Gram entries
exact from the atoms (``s`` dot products of ``n_features`` per step, float64), so 16-bit
rows change only the correlation updates.
"""

import numpy as np
from numba import njit, prange

from sparsecode._linalg_numba import dot
from sparsecode._pursuit_numba import DONE, RUNNING, axpy, select, sub_rows, take_atom
from sparsecode.pursuit._gp_numba import gp_scratch, gp_take
from sparsecode.pursuit._omp_numba import omp_scratch, omp_take

#: Status of a signal waiting for Gram rows (the others are those of sparsecode._rules).
WAITING = 3


@njit(cache=True, inline="always")
def _slots(slot, used, rnd, I, s, out):
    """Rows of the support ``I[:s]`` into ``out``; False when one is missing."""
    for m in range(s):
        sl = slot[I[m]]
        if sl < 0:
            return False
        out[m] = sl
    for m in range(s):
        used[out[m]] = rnd
    return True


@njit(cache=True, inline="always")
def _update(c, rows, slot, used, rnd, I, s, islots, delta):
    """``c -= G[I]^T delta`` from the store's rows; False (nothing done) when one is
    missing."""
    if not _slots(slot, used, rnd, I, s, islots):
        return False
    sub_rows(c, rows, islots, delta, s)
    return True


@njit(parallel=True, cache=True)
def mp_rows_round(todo, C, Ci, mask, rows, slot, used, rnd, rule, k, xnorm2, tol2, thr,
                  I, Z, ns, energy, steps, js, coef, status):
    """One round of MP for the signals ``todo`` (block rows).

    A signal with ``steps == 0`` starts (its first atom is taken); a waiting one resumes
    with the update by atom ``js`` and coefficient ``coef`` it was waiting to apply.
    Leaves ``status`` DONE or WAITING (``js``/``coef`` then hold the pending update).
    """
    for a in prange(todo.shape[0]):
        i = todo[a]
        c = C[i]
        if steps[i] == 0:
            energy[i] = xnorm2[i]
            if k <= 0 or xnorm2[i] <= tol2[i]:
                status[i] = DONE
                continue
            j = select(Ci[i], rule, mask)
            s, en, cj, go_on = take_atom(c, j, rule, thr[i], I[i], Z[i], 0, xnorm2[i])
            ns[i] = s
            energy[i] = en
            steps[i] = 1
            if not go_on or k <= 1 or en <= tol2[i]:
                status[i] = DONE
                continue
            js[i] = j
            coef[i] = np.float64(cj)
        status[i] = WAITING
        while True:
            sl = slot[js[i]]
            if sl < 0:
                break  # wait for the row
            used[sl] = rnd
            axpy(c, rows[sl], c.dtype.type(coef[i]))
            j = select(Ci[i], rule, mask)
            s, en, cj, go_on = take_atom(c, j, rule, thr[i], I[i], Z[i], ns[i], energy[i])
            ns[i] = s
            energy[i] = en
            steps[i] += 1
            if not go_on or steps[i] >= k or en <= tol2[i]:
                status[i] = DONE
                break
            js[i] = j
            coef[i] = np.float64(cj)


@njit(parallel=True, cache=True)
def omp_rows_round(todo, C, Ci, mask, rows, slot, used, rnd, D, rule, positive, k, xnorm2,
                   tol2, thr, rtol, I, Z, ns, scratch, islots, status):
    """One round of Batch-OMP for the signals ``todo``: steps as :func:`omp_gram`'s, the
    update ``c -= G[I]^T delta`` reading the support's rows from the store.  A signal
    whose update finds a row missing waits (``status`` WAITING, ``delta`` kept in its
    ``scratch`` row, see :func:`omp_scratch`); ``islots`` (int64, (n, k)) is scratch."""
    for a in prange(todo.shape[0]):
        i = todo[a]
        c = C[i]
        L, GII, a0, fw, work, delta = omp_scratch(scratch[i], k)
        s = ns[i]
        if status[i] == WAITING:
            if not _update(c, rows, slot, used, rnd, I[i], s, islots[i], delta):
                continue
        elif xnorm2[i] <= tol2[i] or k <= 0:
            status[i] = DONE
            continue
        st = DONE
        while True:
            j = select(Ci[i], rule, mask)
            s, st = omp_take(c[j], j, D, False, rule, positive, thr[i], rtol, I[i], Z[i], s,
                             L, GII, a0, fw, work, delta)
            if st != RUNNING:
                break
            energy = xnorm2[i] - dot(a0, Z[i], s)
            if s >= k or energy <= tol2[i]:
                st = DONE
                break
            if not _update(c, rows, slot, used, rnd, I[i], s, islots[i], delta):
                st = WAITING
                break
        ns[i] = s
        status[i] = st


@njit(parallel=True, cache=True)
def gp_rows_round(todo, C, Ci, mask, rows, slot, used, rnd, D, rule, acgp, positive, k,
                  max_steps, xnorm2, tol2, thr, I, Z, ns, energy, steps, scratch, islots,
                  status):
    """One round of GP/ACGP for the signals ``todo`` (see :func:`omp_rows_round`):
    ``scratch`` rows (:func:`gp_scratch`, zero before the first round) keep each signal's
    state, ``energy`` and ``steps`` its residual energy and steps taken."""
    for a in prange(todo.shape[0]):
        i = todo[a]
        c = C[i]
        GII, dprev, state, g, d, delta = gp_scratch(scratch[i], k)
        s = ns[i]
        if status[i] == WAITING:
            if not _update(c, rows, slot, used, rnd, I[i], s, islots[i], delta):
                continue
        else:
            energy[i] = xnorm2[i]
        st = DONE
        while steps[i] < max_steps:
            if energy[i] <= tol2[i] or s >= k:
                st = DONE
                break
            s, st = gp_take(c, select(Ci[i], rule, mask), D, False, rule, acgp, positive,
                            thr[i], I[i], Z[i], s, GII, dprev, state, g, d, delta)
            if st != RUNNING:
                break
            steps[i] += 1
            energy[i] -= state[1]
            if steps[i] >= max_steps or s >= k or energy[i] <= tol2[i]:
                st = DONE  # the update would not be read
                break
            if not _update(c, rows, slot, used, rnd, I[i], s, islots[i], delta):
                st = WAITING
                break
        if st == RUNNING:
            st = DONE  # out of steps
        ns[i] = s
        status[i] = st
