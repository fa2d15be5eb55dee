"""The cached Gram path: pursuits reading Gram rows from a :class:`~sparsecode.GramRows`
store, in rounds (see :mod:`sparsecode.pursuit._rows_numba`).

Per block: the correlations ``X_block D^T`` (one GEMM per row group and block of atoms),
then rounds until every signal is done.  After each round the rows the waiting signals
need are computed together (one product ``D[J] D^T``) and those signals go on.  A round
serves at most as many waiting signals as the store can hold rows for (one row each for
MP, a whole support for OMP and GP), so every round makes progress.
"""

import numpy as np

from sparsecode import _config
from sparsecode.pursuit._rows_numba import WAITING


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
