"""Cutting a parallel loop over rows into chunks: the one definition every kernel module
and its caller share (imports Numba: load it lazily from Python code)."""

import numba
from numba import njit


def n_chunks(n):
    """Chunks for a parallel loop over ``n`` rows: a few per thread for load balance;
    each chunk allocates its scratch once."""
    return max(1, min(n, 8 * numba.get_num_threads()))


@njit(cache=True)
def chunk_bounds(ch, nch, n):
    """Rows ``[lo, hi)`` of chunk ``ch`` when ``n`` rows are cut into ``nch`` chunks."""
    return ch * n // nch, (ch + 1) * n // nch
