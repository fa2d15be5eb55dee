"""Kernel of :meth:`sparsecode.SparseCodes.decode` on the CPU."""

from numba import njit, prange


@njit(parallel=True, cache=True)
def decode(indices, values, D, out):
    """``out = Z D`` row by row: ``out[i] = sum_s values[i, s] D[indices[i, s]]``.

    Reads ``n k`` atoms (``n k n_features`` multiply-adds) and writes ``out`` once.
    """
    n, k = indices.shape
    d = D.shape[1]
    for i in prange(n):
        o = out[i]
        for q in range(d):
            o[q] = 0
        for s in range(k):
            j = indices[i, s]
            if j >= 0:
                v = values[i, s]
                dj = D[j]
                for q in range(d):
                    o[q] += v * dj[q]
