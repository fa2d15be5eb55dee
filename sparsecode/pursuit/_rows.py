"""The cached Gram path: pursuits reading Gram rows from a :class:`~sparsecode.GramRows`
store, in rounds (see :mod:`sparsecode.pursuit._rows_numba`).

Per block: the correlations ``X_block D^T`` (one GEMM per row group and block of atoms),
then rounds until every signal is done.  After each round the rows the waiting signals
need are computed together (one product ``D[J] D^T``) and those signals go on.  A round
serves at most as many waiting signals as the store can hold rows for (one row each for
MP, a whole support for OMP and GP), so every round makes progress.

MP and OMP (``positive=False``) may instead defer the rows a store lacks
(:func:`deferred_rounds`, :mod:`sparsecode.pursuit._defer_numba`): a round runs every
signal until it ends or must pay its deferred updates; the payers' ``V D^T`` is
subtracted from their correlations (one GEMM per row group) and they go on in the next
round.  The store counts the atoms taken without a row, across rounds and calls: an atom
counted ``HOT_MISSES`` times gets its row computed between rounds and kept
(``EVICT_MISSES`` once the store is full).
"""

import numpy as np

from sparsecode import _config
from sparsecode.pursuit._defer_numba import PAYING
from sparsecode.pursuit._rows_numba import WAITING

#: An atom taken this many times without a row gets its row computed and kept; once
#: the store is full, ``EVICT_MISSES`` times (its row then replaces the least used).
HOT_MISSES = 3
EVICT_MISSES = 12
#: Exact correlations a deferred selection may compute before the signal pays.
MAX_CANDIDATES = 64


def correlations(Xb, prob):
    """``Xb D^T`` by row groups and blocks of atoms, and its integer view."""
    from sparsecode._parallel import group_correlations

    n = Xb.shape[0]
    C = np.empty((n, prob.n_atoms), dtype=prob.dtype)
    group_correlations(np.ascontiguousarray(Xb), prob.D, np.arange(0, n, prob.group,
                       dtype=np.int64), prob.group, int(_config.GEMM_COLS), C)
    return C, C.view(prob.int_view[0])


def rounds(store, out, run_round, needed, per_signal):
    """Run rounds of ``run_round(todo, rnd)`` until no signal of the block waits.

    ``needed(serve)`` gives the atoms (int64, possibly repeated) whose rows the signals
    ``serve`` wait for; ``per_signal`` bounds their number per signal."""
    status = out.status
    todo = np.arange(status.shape[0], dtype=np.int64)
    serve_max = max(1, store.capacity // per_signal)
    while todo.size:
        rnd = store.next_round()
        run_round(todo, rnd)
        store.end_round()
        waiting = np.flatnonzero(status == WAITING)
        if waiting.size == 0:
            break
        todo = waiting[:serve_max]
        store.ensure(np.unique(needed(todo)))


def support_atoms(I):
    """The atoms of the supports ``I`` (rows -1 filled past their size)."""
    return I[I >= 0].astype(np.int64)


class Deferred:
    """Each signal's deferred updates: ``V`` (float64, (n, n_features)), and the atoms
    taken without a row (``pend``, ``npend``) with, for MP, their offsets ``pw``."""

    def __init__(self, n, n_features, k):
        self.V = np.zeros((n, n_features))
        self.pend = np.zeros((n, max(k, 1)), dtype=np.int64)
        self.pw = np.zeros((n, max(k, 1)))
        self.npend = np.zeros(n, dtype=np.int64)


def pay(C, V, rows, prob):
    """``C[rows] -= V[rows] D^T`` (in the dictionary's dtype), one GEMM per row group."""
    from sparsecode._blas import one_blas_thread
    from sparsecode._parallel import group_correlations
    from sparsecode.pursuit._defer_numba import sub_gathered

    g = prob.group
    buf = np.empty((min(g, rows.size), prob.n_atoms), dtype=prob.dtype)
    with one_blas_thread():
        for p0 in range(0, rows.size, g):
            part = rows[p0:p0 + g]
            out = buf[:part.size]
            group_correlations(np.ascontiguousarray(V[part], dtype=prob.dtype), prob.D,
                               np.zeros(1, dtype=np.int64), part.size,
                               int(_config.GEMM_COLS), out)
            sub_gathered(C, part, out)


def deferred_rounds(store, out, C, prob, state, run_round):
    """Run rounds of ``run_round(todo, rnd)`` until no signal of the block pays.  After
    each round, count the atoms its signals took without a row (``state.pend``; see
    :func:`_count_misses`), then settle the payers' deferred updates."""
    status = out.status
    todo = np.arange(status.shape[0], dtype=np.int64)
    while todo.size:
        rnd = store.next_round()
        run_round(todo, rnd)
        store.end_round()
        kept = np.arange(state.pend.shape[1]) < state.npend[todo][:, None]
        _count_misses(store, state.pend[todo][kept])
        todo = np.flatnonzero(status == PAYING)
        if todo.size:
            pay(C, state.V, todo, prob)
            store.payments += todo.size


def _count_misses(store, atoms):
    """Add ``atoms`` (repeated once per miss) to the store's counts; compute the rows of
    the atoms counted ``HOT_MISSES`` times, the most counted first."""
    if atoms.size == 0 or store.capacity == 0:
        return
    store.misses += np.bincount(atoms, minlength=store.n_atoms)
    hot = np.unique(atoms)
    hot = hot[(store.misses[hot] >= HOT_MISSES) & (store.slot[hot] < 0)]
    if hot.size == 0:
        return
    hot = hot[np.argsort(-store.misses[hot], kind="stable")[:store.capacity]]
    free = store.capacity - store.filled
    hot = np.concatenate([hot[:free], hot[free:][store.misses[hot[free:]] >= EVICT_MISSES]])
    if hot.size:
        store.misses[hot] = 0
        store.ensure(np.sort(hot))
