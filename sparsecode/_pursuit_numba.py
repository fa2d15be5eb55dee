"""Numba helpers shared by the pursuit kernels (MP, OMP, GP, and the MP-SAE encoder in
:mod:`sparsecode.sae`): selection, support bookkeeping, and the row update that is the
inner loop of every pursuit.  The small linear algebra on the support (Cholesky factor,
triangular solves, non-negative least squares) is in :mod:`sparsecode._linalg_numba`.

The kernels see unit-norm atoms only: the caller normalises the dictionary (and Gram)
and rescales the coefficients afterwards.

Every pursuit step produces a change ``delta`` of the coefficients on the support.  The
correlations ``c = D r`` then change by ``-G[I]^T delta`` (Gram path) and the residual by
``-D[I]^T delta`` (no-Gram path): both are :func:`sub_rows` with ``S = G`` or ``S = D``.
The support Gram and the coefficients are kept in float64 whatever the input dtype; the
O(n_atoms) loops run in the input dtype.  Rows of ``S`` may be 16-bit (see
:mod:`sparsecode._halves_numba`): every read goes through ``wide``.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from sparsecode._halves_numba import wide
from sparsecode._rules import ABS, DEPENDENT, DONE, POSITIVE, RUNNING, SIGNED  # noqa: F401

#: Entries per chunk in :func:`sub_rows`: the chunk of the target (8 KiB in float32)
#: stays in L1 while the selected rows stream through.
CHUNK = 2048


# Selection works on the bits of the correlations.  For IEEE floats, the integer view of
# |v| (sign bit cleared) is ordered like |v|, the view of v itself is ordered like v for
# v >= 0, and flipping the magnitude bits of negative values orders every v.  Integer max
# reductions vectorise where float ones do not, so a select costs one SIMD pass plus a
# SIMD search of one block for the first index reaching the maximum.  ``ci`` is the
# integer view of ``c`` (int32 for float32, int64 for float64) and ``mask`` its magnitude
# mask (0x7f..f).


#: Entries per block of :func:`select`: the maximum key is found block by block (one
#: vectorised pass), then only the block holding it is searched for the first index.
SELECT_BLOCK = 128


@njit(cache=True, inline="always")
def key_of(a, rule, mask):
    """Selection key of one correlation from its integer view ``a`` (same integer type:
    Numba would widen ``a & mask`` to int64, halving the vector width for float32)."""
    T = type(a)
    if rule == ABS:
        return T(a & mask)
    if rule == SIGNED and a < 0:
        return T(a ^ mask)
    return a


@njit(cache=True, inline="always")
def best_key(ci, rule, mask):
    """Largest selection key of the correlations whose integer view is ``ci``.

    One loop per rule, so each is a plain integer max reduction that vectorises.
    """
    T = ci.dtype.type
    best = key_of(ci[0], rule, mask)
    if rule == ABS:
        for m in range(ci.shape[0]):
            a = T(ci[m] & mask)
            best = a if a > best else best
    elif rule == POSITIVE:
        for m in range(ci.shape[0]):
            a = ci[m]
            best = a if a > best else best
    else:
        for m in range(ci.shape[0]):
            a = ci[m]
            a = T(a if a >= 0 else a ^ mask)
            best = a if a > best else best
    return best


@njit(cache=True, inline="always")
def first_key(ci, best, rule, mask):
    """First index of ``ci`` whose selection key is ``best`` (``len(ci)`` if none).

    A min reduction over candidate indices rather than a loop that exits early: it
    vectorises like :func:`best_key`.
    """
    T = ci.dtype.type
    n = ci.shape[0]
    first = n
    if rule == ABS:
        for m in range(n):
            cand = m if T(ci[m] & mask) == best else n
            first = cand if cand < first else first
    elif rule == POSITIVE:
        for m in range(n):
            cand = m if ci[m] == best else n
            first = cand if cand < first else first
    else:
        for m in range(n):
            a = ci[m]
            cand = m if T(a if a >= 0 else a ^ mask) == best else n
            first = cand if cand < first else first
    return first


@intrinsic
def prefetch_l2(typingctx, arr, idx):
    """Hint the CPU to bring the cache line of ``arr[idx]`` into L2 (no bounds check, no
    fault: a prefetch of any address is harmless)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read, locality 2 (L2 and outward), data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _select_blocks(ci, rule, mask, ahead):
    """:func:`select`; with ``ahead`` as long as ``ci`` (not empty), each block of
    ``ahead`` is prefetched into L2 while the same block of ``ci`` is reduced."""
    n = ci.shape[0]
    pf = ahead.shape[0] == n
    line = max(1, 64 // ahead.itemsize)  # entries per 64-byte cache line
    best = key_of(ci[0], rule, mask)
    b_best = 0
    for b0 in range(0, n, SELECT_BLOCK):
        b1 = min(b0 + SELECT_BLOCK, n)
        if pf:
            for q in range(b0, b1, line):
                prefetch_l2(ahead, q)
        bm = best_key(ci[b0:b1], rule, mask)
        if bm > best:
            best = bm
            b_best = b0
    return b_best + first_key(ci[b_best:min(b_best + SELECT_BLOCK, n)], best, rule, mask)


@njit(cache=True)
def select(ci, rule, mask):
    """Index of the best atom: argmax |c_j| (``ABS``), max(c_j, 0) (``POSITIVE``) or
    c_j (``SIGNED``) for unit atoms; ties go to the lowest index.

    The maximum key of each block of ``SELECT_BLOCK`` entries comes from a vectorised
    reduction; the first block reaching the overall maximum is then searched, also
    vectorised.  One pass over ``ci`` plus one block, instead of a scalar scan to the
    winner (4096 atoms: 0.24 us, was 1.2 us).
    """
    return _select_blocks(ci, rule, mask, ci[:0])


@njit(cache=True, inline="always")
def update_select(c, ci, row, coef, rule, mask, ahead):
    """``c -= coef * row``, then :func:`select` on the result.

    ``ahead`` is another signal's next Gram row (or an empty array).  While the selection
    runs, it is prefetched into L2 a block at a time (a few cache lines per block of keys:
    one burst would fill the queue of outstanding misses and stall the core).  That
    signal's update then finds its row in cache, and the memory traffic of one signal
    overlaps the arithmetic of the other.

    Returns the index of the best atom of the updated correlations.
    """
    axpy(c, row, coef)
    return _select_blocks(ci, rule, mask, ahead)


@njit(cache=True)
def axpy(c, row, coef):
    """``c -= coef * row`` (vectorised)."""
    for m in range(c.shape[0]):
        c[m] -= coef * wide(row[m])


@njit(cache=True, inline="always")
def vanished(cj, thr, rule):
    """True when the selected correlation cannot make progress.

    ``thr`` is the smallest correlation worth a step (a tiny fraction of ||x||); the
    positive rule also stops when no correlation is positive.
    """
    if rule == POSITIVE and cj <= 0:
        return True
    return abs(cj) <= thr


def int_view(c):
    """Integer view of a float32 (int32) or float64 (int64) array (jitted code only)."""
    raise NotImplementedError


@overload(int_view)
def _int_view(c):
    if c.dtype == types.float32:
        return lambda c: c.view(np.int32)
    return lambda c: c.view(np.int64)


@njit(cache=True)
def correlations(X, DT, lo, hi, group):
    """``X[lo:hi] D^T`` for one chunk of signals, and its integer view.

    Called inside the parallel loops, so each thread runs its own single-threaded GEMMs
    on its chunk (the caller limits BLAS to one thread) and the chunk's correlations stay
    in that core's cache for the pursuit that follows.  The GEMMs are the row groups the
    chunk overlaps, whole (see :mod:`sparsecode._parallel`): none is cut when ``lo`` and
    ``hi`` are group bounds, as they are unless there are fewer groups than threads.
    """
    n = X.shape[0]
    glo = lo // group * group
    ghi = min(n, (hi + group - 1) // group * group)
    C = np.empty((ghi - glo, DT.shape[1]), dtype=X.dtype)
    for g0 in range(glo, ghi, group):
        g1 = min(g0 + group, n)
        np.dot(X[g0:g1], DT, C[g0 - glo:g1 - glo])  # into C: no copy
    C = C[lo - glo:hi - glo]
    return C, int_view(C)


@njit(cache=True, inline="always")
def find(I, s, j):
    """Position of atom ``j`` in the support ``I[:s]``, or -1."""
    for m in range(s):
        if I[m] == j:
            return m
    return -1


@njit(cache=True, inline="always")
def add_to_code(I, Z, s, j, coef):
    """Add ``coef`` to atom ``j``'s entry of a code with ``s`` entries (MP: an atom
    selected again has its coefficients summed); returns ``(s, was_in_support)``."""
    pos = find(I, s, j)
    if pos < 0:
        I[s] = j
        Z[s] = coef
        return s + 1, False
    Z[pos] += coef
    return s, True


@njit(cache=True, fastmath=True)
def atom_dot(u, v):
    """``<u, v>`` in float64, summed in any order: vectorised (a fixed order of one
    dependent add per entry took 4 cycles an entry), the same bits on every call."""
    acc = 0.0
    for q in range(u.shape[0]):
        acc += np.float64(u[q]) * np.float64(v[q])
    return acc


@njit(cache=True, inline="always")
def gram_entry(S, is_gram, a, b):
    """``<d_a, d_b>``: read from the Gram matrix, or a dot product of two atoms."""
    if is_gram:
        return np.float64(wide(S[a, b]))
    return atom_dot(S[a], S[b])


@njit(cache=True)
def _sub2(c, r0, r1, a0, a1):
    """``c -= a0 r0 + a1 r1``, subtracting in that order."""
    for q in range(c.shape[0]):
        c[q] = c[q] - a0 * wide(r0[q]) - a1 * wide(r1[q])


@njit(cache=True)
def _sub3(c, r0, r1, r2, a0, a1, a2):
    """``c -= a0 r0 + a1 r1 + a2 r2``, subtracting in that order."""
    for q in range(c.shape[0]):
        c[q] = c[q] - a0 * wide(r0[q]) - a1 * wide(r1[q]) - a2 * wide(r2[q])


@njit(cache=True)
def _sub4(c, r0, r1, r2, r3, a0, a1, a2, a3):
    """``c -= a0 r0 + a1 r1 + a2 r2 + a3 r3``, subtracting in that order."""
    for q in range(c.shape[0]):
        c[q] = (c[q] - a0 * wide(r0[q]) - a1 * wide(r1[q]) - a2 * wide(r2[q])
                - a3 * wide(r3[q]))


@njit(cache=True, inline="always")
def sub_rows(vec, S, I, delta, s):
    """``vec -= sum_m delta[m] * S[I[m]]`` over the support ``m < s`` (zeros skipped).

    The work of every pursuit step: O(len(vec) * s) multiply-adds, reading ``s`` rows of
    ``S``.  Done chunk by chunk (the chunk of ``vec`` stays in L1 while the rows stream)
    and four rows per pass over a chunk, so ``vec`` is loaded and stored once per four
    rows and the pass is bound by reading the rows.  The subtractions run in support
    order, exactly as one row at a time would.
    """
    n = vec.shape[0]
    dt = vec.dtype.type
    for q0 in range(0, n, CHUNK):
        q1 = min(q0 + CHUNK, n)
        part = vec[q0:q1]
        m = 0
        while m < s:
            # the next (up to) four rows with a nonzero coefficient
            j0 = j1 = j2 = j3 = 0
            a0 = a1 = a2 = a3 = dt(0.0)
            cnt = 0
            while m < s and cnt < 4:
                if delta[m] != 0.0:
                    if cnt == 0:
                        j0, a0 = I[m], dt(delta[m])
                    elif cnt == 1:
                        j1, a1 = I[m], dt(delta[m])
                    elif cnt == 2:
                        j2, a2 = I[m], dt(delta[m])
                    else:
                        j3, a3 = I[m], dt(delta[m])
                    cnt += 1
                m += 1
            if cnt == 4:
                _sub4(part, S[j0, q0:q1], S[j1, q0:q1], S[j2, q0:q1], S[j3, q0:q1],
                      a0, a1, a2, a3)
            elif cnt == 3:
                _sub3(part, S[j0, q0:q1], S[j1, q0:q1], S[j2, q0:q1], a0, a1, a2)
            elif cnt == 2:
                _sub2(part, S[j0, q0:q1], S[j1, q0:q1], a0, a1)
            elif cnt == 1:
                axpy(part, S[j0, q0:q1], a0)


@njit(cache=True)
def update_residual(r, D, I, delta, s):
    """No-Gram path: ``r -= D[I]^T delta`` and return ``||r||^2`` (float64)."""
    sub_rows(r, D, I, delta, s)
    energy = 0.0
    for q in range(r.shape[0]):
        energy += np.float64(r[q]) * np.float64(r[q])
    return energy


@njit(cache=True, inline="always")
def add_to_support_gram(GII, S, is_gram, I, s, j):
    """Append atom ``j`` to the support Gram ``GII`` (float64, k x k, lower part used).

    Returns the new row ``GII[s, :s+1]`` (a view).
    """
    for m in range(s):
        # G[I[m], j], not G[j, I[m]]: the support rows are in cache (every update reads
        # them), the new row is not yet
        GII[s, m] = gram_entry(S, is_gram, I[m], j)
        GII[m, s] = GII[s, m]
    GII[s, s] = gram_entry(S, is_gram, j, j)
    return GII[s, : s + 1]


@njit(cache=True, inline="always")
def take_atom(c, j, rule, thr, Irow, Zrow, s, energy):
    """MP: add atom ``j`` to the code.  Returns ``(s, energy, cj, go_on)``; ``go_on`` is
    False when the correlation vanished or the support did not change (positive
    rule)."""
    cj = c[j]
    if vanished(cj, thr, rule):
        return s, energy, cj, False
    s, again = add_to_code(Irow, Zrow, s, j, np.float64(cj))
    energy -= np.float64(cj) * np.float64(cj)
    return s, energy, cj, not (again and rule == POSITIVE)


@njit(cache=True, inline="always")
def mp_one(c, ci, G, rule, mask, k, xnorm2, tol2, thr, Irow, Zrow):
    """MP on the Gram path for one signal whose correlations with unit atoms are ``c``
    (``ci`` their integer view); ``G`` may have more columns than ``c`` (a grown Gram
    matrix's capacity): only the first ``len(c)`` are read.  Returns the residual energy
    ``||x||^2 - sum of the squared coefficients taken``."""
    if k <= 0 or xnorm2 <= tol2:
        return xnorm2
    j = select(ci, rule, mask)
    energy = xnorm2
    s = 0
    for t in range(1, k + 1):
        s, energy, cj, go_on = take_atom(c, j, rule, thr, Irow, Zrow, s, energy)
        if not go_on or t >= k or energy <= tol2:
            return energy
        j = update_select(c, ci, G[j], cj, rule, mask, G[0, :0])
    return energy
