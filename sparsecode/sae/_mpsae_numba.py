"""MP-SAE training kernel (Numba): the unrolled MP encoder and its exact backward pass,
fused per signal.  Called only from :func:`sparsecode.sae.mpsae.batch_grad`.

Forward (Gram path): ``c = x D^T`` once, then per step select ``j``, take ``c_j``,
``c -= c_j G[j]``; the step trace ``(j_t, c_t)`` is kept.  The atoms may have any norm:
the encoder is the unrolled map ``r <- r - (d . r) d`` taken literally, as training with
free atom norms (the default) uses it; on unit-norm atoms it is :func:`sparsecode.mp`.
The residual ``r_T = x - sum_t c_t d_{j_t}`` costs ``T n_features``.

Backward of ``L = s ||r_T||^2`` (``s`` the loss scale): step ``t`` maps
``r_t = r_{t-1} - (d . r_{t-1}) d``, so with ``g = dL/dr_t``::

    dL/dd  += -[(g . d) r_{t-1} + c_t g]
    g      <- g - d (d . g)                    (g becomes dL/dr_{t-1})

and ``r_{t-1} = r_t + c_t d`` is rebuilt on the way back, so nothing but the trace is
stored.  ``dL/dx = g`` at the end; the pre-bias gradient is ``-g``.  Per signal and step
that is ``8 n_features`` flops, touching one atom: no dense ``(n, n_atoms)`` array.

The one-step TopK encoder (``topk=True``) selects ``k`` atoms from the first
correlations and codes them with ``c_j = d_j . x``; its backward is
``dL/dd_j += -[(g . d_j) x + c_j g]`` and ``dL/dx = g - sum_j d_j (d_j . g)``.

The rows are cut into one chunk of whole row groups per thread; each chunk adds its atom
gradients into its own buffer (``gD[chunk]``) and the caller sums the buffers, so the
result does not depend on which thread ran which chunk.  Within a chunk the correlations
are computed one row group at a time (see :mod:`sparsecode._parallel`), so they stay in
cache for the pursuit that follows and each row's come from the same GEMM whatever the
chunking.
"""

import types

import numpy as np
from numba import njit, prange

from sparsecode._parallel import group_bounds
from sparsecode._pursuit_numba import (
    ABS,
    POSITIVE,
    add_to_code,
    atom_dot,
    correlations,
    select,
    update_select,
    vanished,
)


@njit(cache=True, inline="always")
def _mp_forward(c, ci, G, rule, mask, k, energy, tol2, thr, topk, J, Cs, I, Z):
    """Select up to ``k`` atoms for one signal; fill the trace ``J``/``Cs`` and the code
    ``I``/``Z``; return the number of steps."""
    if k <= 0 or energy <= tol2:
        return 0
    s = 0
    t = 0
    j = select(ci, rule, mask)
    while True:
        cj = c[j]
        if vanished(cj, thr, rule):
            break
        s, again = add_to_code(I, Z, s, j, np.float64(cj))
        J[t] = j
        Cs[t] = cj
        t += 1
        if topk:
            if t >= k:
                break
            # take atom j out of the running: |c| = 0 (abs), -inf otherwise
            c[j] = 0.0 if rule == ABS else -np.inf
            j = select(ci, rule, mask)
        else:
            if again and rule == POSITIVE:
                break  # support did not change
            # ||r - c d||^2 = ||r||^2 - c^2 (2 - ||d||^2): exact for atoms of any norm
            energy -= np.float64(cj) * np.float64(cj) * (2.0 - np.float64(G[j, j]))
            if t >= k or energy <= tol2:
                break  # the last step updates no correlations
            j = update_select(c, ci, G[j], cj, rule, mask, G[0, :0])
    return t


@njit(cache=True, inline="always")
def _residual(x, D, J, Cs, T, r):
    """``r = x - sum_t c_t d_{j_t}``; returns ``||r||^2``."""
    nf = x.shape[0]
    for q in range(nf):
        r[q] = x[q]
    for t in range(T):
        d = D[J[t]]
        for q in range(nf):
            r[q] -= Cs[t] * d[q]
    return atom_dot(r, r)


@njit(cache=True, inline="always")
def _mp_backward(x, D, J, Cs, T, gscale, r, g, gD):
    """Residual of one signal, its loss, and the MP backward; ``g`` ends as dL/dx."""
    nf = x.shape[0]
    loss = _residual(x, D, J, Cs, T, r)
    for q in range(nf):
        g[q] = 2.0 * gscale * r[q]
    for t in range(T - 1, -1, -1):
        d = D[J[t]]
        cj = Cs[t]
        for q in range(nf):
            r[q] += cj * d[q]  # r is now r_{t-1}
        gd = atom_dot(g, d)
        gj = gD[J[t]]
        for q in range(nf):
            gj[q] -= gd * r[q] + cj * g[q]
            g[q] -= gd * d[q]
    return loss


@njit(cache=True, inline="always")
def _topk_backward(x, D, J, Cs, T, gscale, r, g, gD):
    """Residual, loss and backward of the one-step TopK encoder; ``g`` ends as dL/dx."""
    nf = x.shape[0]
    loss = _residual(x, D, J, Cs, T, r)
    for q in range(nf):
        r[q] = 2.0 * gscale * r[q]  # r now holds dL/dr
    for q in range(nf):
        g[q] = r[q]
    for t in range(T):
        d = D[J[t]]
        cj = Cs[t]
        gd = atom_dot(r, d)
        gj = gD[J[t]]
        for q in range(nf):
            gj[q] -= gd * x[q] + cj * r[q]
            g[q] -= gd * d[q]
    return loss


@njit(parallel=True, cache=True)
def mp_train(nch, group, X, DT, D, G, rule, mask, k, tol2, thr, topk, gscale, I, Z, loss2, gD, gb,
             backward=True):
    """Encode every row of ``X`` and accumulate the gradient of ``gscale * sum ||r||^2``.

    Parameters
    ----------
    nch : int
        Chunks of whole row groups for the parallel loop (one per thread).
    group : int
        Rows per group of the correlation GEMMs (see :mod:`sparsecode._parallel`).
    X : ndarray of shape (n, n_features), C-contiguous
        Signals, pre-bias already subtracted.
    DT : ndarray of shape (n_features, n_atoms)
        ``D.T``.
    D : ndarray of shape (n_atoms, n_features), C-contiguous
        Unit-norm atoms.
    G : ndarray of shape (n_atoms, n_atoms)
        ``D D^T`` (unused when ``topk``).
    rule, mask : int
        Selection rule and the magnitude mask of the correlations' integer view.
    k : int
        Steps (MP) or atoms (TopK) per signal.
    tol2, thr : ndarray of shape (n,), float64
        Residual energy at which a signal stops; smallest correlation worth a step.
    topk : bool
        One-step TopK encoder instead of MP.
    gscale : float
        Loss scale ``s``.
    I, Z : ndarray of shape (n, min(k, n_atoms))
        Output codes (int32 filled with -1, float64 filled with 0).
    loss2 : ndarray of shape (n,), float64
        Output ``||r||^2`` per signal.
    gD : ndarray of shape (nch, n_atoms, n_features), zero
        Per-chunk atom gradients (output, in the dtype of ``D``).
    gb : ndarray of shape (nch, n_features), float64, zero
        Per-chunk sums of ``-dL/dx`` over the signals: the pre-bias gradient (output).
    backward : bool
        Accumulate the gradients; when False only codes and ``loss2`` are computed (the
        encoder alone, for atoms of any norm).
    """
    n, nf = X.shape
    for ch in prange(nch):
        lo, hi = group_bounds(ch, nch, n, group)
        J = np.empty(k, dtype=np.int64)
        Cs = np.empty(k, dtype=np.float64)
        r = np.empty(nf, dtype=np.float64)
        g = np.empty(nf, dtype=np.float64)
        mine = gD[ch]
        gb_mine = gb[ch]
        for lo2 in range(lo, hi, group):
            hi2 = min(lo2 + group, hi)
            C, Ci = correlations(X, DT, lo2, hi2, group)
            for i in range(lo2, hi2):
                x = X[i]
                energy = atom_dot(x, x)
                T = _mp_forward(C[i - lo2], Ci[i - lo2], G, rule, mask, k, energy, tol2[i],
                                thr[i], topk, J, Cs, I[i], Z[i])
                if not backward:
                    loss2[i] = _residual(x, D, J, Cs, T, r)
                    continue
                if topk:
                    loss2[i] = _topk_backward(x, D, J, Cs, T, gscale, r, g, mine)
                else:
                    loss2[i] = _mp_backward(x, D, J, Cs, T, gscale, r, g, mine)
                for q in range(nf):
                    gb_mine[q] -= g[q]


def _renamed(func, name):
    """A copy of the Python function ``func`` under another name.  Numba's on-disk cache
    is indexed by the function's qualified name and line, not by its compile options:
    two compilations of one function (parallel and serial) would load each other's
    machine code."""
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__,
                              func.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = func.__doc__
    return copy


#: The same kernel without threads: for small batches (a few hundred signals of a small
#: dictionary), where starting the thread pool costs more than the work.
mp_train_serial = njit(cache=True)(_renamed(mp_train.py_func, "mp_train_serial"))
