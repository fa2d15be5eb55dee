"""Cutting a parallel loop over rows into chunks, and the row groups of every correlation
product: the one definition every kernel module and its caller share (imports Numba: load
it lazily from Python code).

Row groups
----------
Every correlation product ``X D^T`` of the CPU kernels is computed group by group: rows
``[g, g + group)`` for ``g`` a multiple of ``group`` counted from the first row of the
call (the last group may be shorter), one single-threaded GEMM per group (per group and
block of ``cols`` atoms on the no-Gram path).  A BLAS may round a row's products
differently depending on the shape of the GEMM it is part of, on its place in it and on
the threads it uses; with fixed groups each row's correlations come from the same GEMM
shape, at the same place, on one thread, whatever the BLAS, the thread count or the
chunking of the parallel loop.  Signals split into calls that start at multiples of
``group`` (see :func:`aligned_rows`) are therefore encoded bit-identically to one call on
all of them.
"""

import numba
import numpy as np
from numba import njit, prange

from sparsecode._halves_numba import entry


def n_chunks(n):
    """Chunks for a parallel loop over ``n`` rows: a few per thread for load balance;
    each chunk allocates its scratch once."""
    return max(1, min(n, 8 * numba.get_num_threads()))


@njit(cache=True)
def chunk_bounds(ch, nch, n):
    """Rows ``[lo, hi)`` of chunk ``ch`` when ``n`` rows are cut into ``nch`` chunks."""
    return ch * n // nch, (ch + 1) * n // nch


def n_group_chunks(n, group):
    """Chunks for a parallel loop over ``n`` rows whose correlations are computed by row
    groups (see :func:`group_bounds`): a few per thread, of whole groups, when there are
    as many groups as threads; else one per thread, each multiplying the whole groups it
    overlaps (a few hundred signals: twice the GEMM, but every thread busy)."""
    threads = numba.get_num_threads()
    ng = -(-n // group)
    if ng >= threads:
        return max(1, min(ng, 8 * threads))
    return max(1, min(n, threads))


@njit(cache=True)
def group_bounds(ch, nch, n, group):
    """Rows ``[lo, hi)`` of chunk ``ch`` of ``nch``: whole row groups of ``n`` rows
    (``group`` rows each, the last one shorter) when ``nch`` does not exceed their
    number, else rows cut evenly."""
    ng = (n + group - 1) // group
    if nch > ng:
        return chunk_bounds(ch, nch, n)
    glo, ghi = chunk_bounds(ch, nch, ng)
    return min(n, glo * group), min(n, ghi * group)


def row_group():
    """int: rows per group (``_config.ROW_GROUP``)."""
    from sparsecode import _config

    return int(_config.ROW_GROUP)


def aligned_rows(n):
    """int: ``n`` rounded up to a whole number of row groups: the size of the blocks a
    stream of signals is cut into so that encoding it block by block gives the codes of
    one call on all of it."""
    g = row_group()
    return max(g, -(-int(n) // g) * g)


def threads_rows():
    """int: ``_config.BLOCK_GROUPS_PER_THREAD`` row groups per thread: one is the fewest
    rows with which no thread repeats another's correlation GEMM."""
    from sparsecode import _config

    return int(_config.BLOCK_GROUPS_PER_THREAD) * numba.get_num_threads() * row_group()


def block_rows(n):
    """int: ``n`` rounded down so that blocks of that many rows start at group bounds:
    a multiple of the group when ``n`` is at least one group, else a power of two (which
    divides the group)."""
    g = row_group()
    if n >= g:
        return n // g * g
    return 1 << (max(1, int(n)).bit_length() - 1)


@njit(parallel=True, cache=True)
def group_correlations(R, D, starts, group, cols, C):
    """``C`` stacked with ``R[s:s + group] D^T`` for each group start ``s`` in
    ``starts``, one single-threaded GEMM per group and block of ``cols`` atoms, the tiles
    in parallel (the caller holds BLAS to one thread).

    Parameters
    ----------
    R : ndarray of shape (n, n_features), C-contiguous
    D : ndarray of shape (n_atoms, n_features), C-contiguous
    starts : ndarray of int64
        First rows of the groups, multiples of ``group``, increasing.
    group, cols : int
    C : ndarray of shape (n_rows, n_atoms)
        Output: the groups' rows one after the other (``n_rows`` their total).
    """
    n = R.shape[0]
    K = D.shape[0]
    ncb = (K + cols - 1) // cols
    ng = starts.shape[0]
    offsets = np.empty(ng, dtype=np.int64)
    o = 0
    for g in range(ng):
        offsets[g] = o
        o += min(starts[g] + group, n) - starts[g]
    for t in prange(ng * ncb):
        g = t // ncb
        c0 = (t % ncb) * cols
        c1 = min(c0 + cols, K)
        s = starts[g]
        e = min(s + group, n)
        if ncb == 1:
            np.dot(R[s:e], D.T, C[offsets[g]:offsets[g] + e - s])  # into C: no copy
        else:
            C[offsets[g]:offsets[g] + e - s, c0:c1] = np.dot(R[s:e], D[c0:c1].T)


@njit(parallel=True, cache=True)
def gram_tiles(D, B, G):
    """``G = D D^T`` from the ``B x B`` tiles on and below the diagonal: each is one
    single-threaded GEMM ``D[i] D[j]^T`` in a thread of the parallel loop, written to
    ``G[i, j]`` and, transposed, to ``G[j, i]`` (a diagonal tile's lower triangle is
    mirrored), so ``G`` is exactly symmetric whatever the BLAS.  Half the flops of a
    general product (``n_atoms^2 n_features``), every core busy, no BLAS thread pool (the
    caller holds BLAS to one thread).  A ``uint16`` ``G`` receives the products' float16
    bits, each rounded once from ``D``'s dtype."""
    K = D.shape[0]
    nb = (K + B - 1) // B
    n_tiles = nb * (nb + 1) // 2
    for t in prange(n_tiles):
        # tile t -> (bi, bj) with bj <= bi, row by row of the lower triangle
        bi = int((np.sqrt(8.0 * t + 1.0) - 1.0) / 2.0)
        while bi * (bi + 1) // 2 > t:
            bi -= 1
        while (bi + 1) * (bi + 2) // 2 <= t:
            bi += 1
        bj = t - bi * (bi + 1) // 2
        i0, i1 = bi * B, min(bi * B + B, K)
        j0, j1 = bj * B, min(bj * B + B, K)
        P = np.dot(D[i0:i1], D[j0:j1].T)
        if bi == bj:
            # a diagonal tile from a GEMM need not be symmetric (some BLAS kernels round
            # P[i, j] and P[j, i] differently): its lower triangle is mirrored
            for i in range(i1 - i0):
                for j in range(i + 1):
                    G[i0 + i, j0 + j] = entry(P[i, j], G)
                    G[j0 + j, i0 + i] = entry(P[i, j], G)
        else:
            for i in range(i1 - i0):
                for j in range(j1 - j0):
                    G[i0 + i, j0 + j] = entry(P[i, j], G)
            for j in range(j1 - j0):
                for i in range(i1 - i0):
                    G[j0 + j, i0 + i] = entry(P[i, j], G)


def correlations_by_group(X, D):
    """``X D^T`` computed by row groups and atom blocks (see the module's docstring):
    each row's correlations are the same bits whatever the call it is part of.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    D : ndarray of shape (n_atoms, n_features), of ``X``'s dtype

    Returns
    -------
    C : ndarray of shape (n, n_atoms)
    """
    from sparsecode import _config
    from sparsecode._blas import one_blas_thread

    n = X.shape[0]
    group = row_group()
    C = np.empty((n, D.shape[0]), dtype=X.dtype)
    with one_blas_thread():
        group_correlations(np.ascontiguousarray(X), np.ascontiguousarray(D),
                           np.arange(0, n, group, dtype=np.int64), group,
                           int(_config.GEMM_COLS), C)
    return C


def gram_symmetric(D, half=False):
    """``D D^T`` from its tiles on and below the diagonal (half the flops of a general
    product, ``n_atoms^2 n_features``), one single-threaded GEMM per tile of
    ``_config.GRAM_TILE`` atoms on every Numba thread, each tile also written transposed:
    exactly symmetric, and the same bits whatever the thread count.

    Parameters
    ----------
    D : ndarray of shape (n_atoms, n_features), float32 or float64
    half : bool
        Round each product to float16 once: the result is ``gram_symmetric(D)`` cast to
        float16, bit for bit, without the float32/64 matrix.

    Returns
    -------
    G : ndarray of shape (n_atoms, n_atoms), C-contiguous
        ``D``'s dtype, or ``uint16`` holding float16 bits with ``half``.
    """
    from sparsecode import _config
    from sparsecode._blas import one_blas_thread

    G = np.empty((D.shape[0], D.shape[0]), dtype=np.uint16 if half else D.dtype)
    with one_blas_thread():
        gram_tiles(np.ascontiguousarray(D), int(_config.GRAM_TILE), G)
    return G


@njit(parallel=True, cache=True)
def fold_coherence(B, r0, group, mub):
    """Fold the block ``B = D[r0:r0 + m] D[r0:]^T`` into ``mub``: ``mub[a, g]`` is the
    largest ``|G[a, x]|`` over the atoms ``x != a`` of group ``g`` (atoms
    ``[g group, (g + 1) group)``).  Its rows' maxima go to the block's own atoms, its
    columns' to the atoms after them (``B`` holds both halves of the symmetric Gram's
    entries)."""
    m, w = B.shape
    ng = mub.shape[1]
    for a in prange(m):
        row = B[a]
        for g in range(r0 // group, ng):
            lo = max(g * group - r0, 0)
            hi = min((g + 1) * group - r0, w)
            best = mub[r0 + a, g]
            for x in range(lo, hi):
                t = abs(np.float64(row[x]))
                best = t if (t > best and x != a) else best
            mub[r0 + a, g] = best
    nch = 64
    for ch in prange(nch):
        x0 = max(m, ch * w // nch)  # columns of the block's own rows: done above
        x1 = (ch + 1) * w // nch
        if x1 <= x0:
            continue
        for g in range(r0 // group, (r0 + m - 1) // group + 1):
            best = mub[r0 + x0:r0 + x1, g].copy()
            for a in range(max(g * group - r0, 0), min((g + 1) * group - r0, m)):
                row = B[a]
                for x in range(x0, x1):
                    t = abs(np.float64(row[x]))
                    best[x - x0] = t if t > best[x - x0] else best[x - x0]
            mub[r0 + x0:r0 + x1, g] = best


def coherence(D, group=256, block=512):
    """Bounds on the off-diagonal entries of ``G = D D^T``, by row and group of atoms,
    from products of ``block`` atoms with the atoms after them (half the flops of ``G``,
    ``n_atoms^2 n_features``; ``block n_atoms`` entries held at a time), plus a margin
    for the products' rounding (``16 eps sqrt(n_features)``): upper bounds.

    Parameters
    ----------
    D : ndarray of shape (n_atoms, n_features), float32 or float64, unit-norm rows
    group : int
        Atoms per group.

    Returns
    -------
    mu : ndarray of shape (n_atoms,), float64
        The largest ``|G[a, x]|``, ``x != a``, of each atom ``a``.
    mub : ndarray of shape (n_atoms, ceil(n_atoms / group)), float32
        The same over the atoms ``x`` of each group, rounded up.
    """
    K, d = D.shape
    mub = np.zeros((K, (K + group - 1) // group))
    for r0 in range(0, K, block):
        fold_coherence(D[r0:r0 + block] @ D[r0:].T, r0, group, mub)
    mub += 16.0 * np.finfo(D.dtype).eps * np.sqrt(d)
    mu = mub.max(axis=1)
    return mu, np.nextafter(mub.astype(np.float32), np.float32(np.inf))
