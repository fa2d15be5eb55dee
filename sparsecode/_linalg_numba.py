"""Small dense linear algebra on a pursuit's support (Numba, float64 whatever the input
dtype): the lower Cholesky factor of the support Gram grown one row per step, the
triangular solves on it, non-negative least squares on the support Gram (OMP's
``positive=True``), and the dot products of gradient pursuit.  Sizes are the support's
(at most ``k``), never ``n_atoms``."""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def chol_append(L, s, grow, rtol):
    """Grow the lower Cholesky factor ``L`` of the support Gram by one row.

    ``grow`` is ``[<d_j, d_I[m]> for m < s] + [||d_j||^2]``.  Returns False (and leaves
    ``L`` as a factor of the first ``s`` atoms) when the new atom is numerically in the
    span of the support.

    The diagonal of ``L`` holds the *reciprocals* of the pivots: the substitutions then
    multiply instead of divide, and a division's latency no longer sits on their chains
    of dependent operations.
    """
    for m in range(s):
        acc = grow[m]
        for p in range(m):
            acc -= L[s, p] * L[m, p]
        L[s, m] = acc * L[m, m]
    d2 = grow[s]
    for p in range(s):
        d2 -= L[s, p] * L[s, p]
    if d2 <= rtol * grow[s]:
        return False
    L[s, s] = 1.0 / np.sqrt(d2)
    return True


@njit(cache=True, inline="always")
def forward_append(L, s, b, w):
    """Extend the solution of ``L w = b`` by its last entry, ``w[s - 1]``.

    Appending a row to ``L`` and an entry to ``b`` leaves ``w[:s - 1]`` unchanged, so each
    OMP step costs O(s) here instead of a whole forward substitution.
    """
    m = s - 1
    acc = b[m]
    for p in range(m):
        acc -= L[m, p] * w[p]
    w[m] = acc * L[m, m]  # the diagonal holds reciprocals (see chol_append)


@njit(cache=True, inline="always")
def back_solve(L, s, w, out):
    """Solve ``L^T out = w`` for the first ``s`` unknowns.

    By columns: once ``out[m]`` is known it is removed from every earlier equation, a
    contiguous (vectorised) pass over row ``m`` of ``L``.
    """
    for m in range(s):
        out[m] = w[m]
    for m in range(s - 1, -1, -1):
        x = out[m] * L[m, m]  # the diagonal holds reciprocals (see chol_append)
        out[m] = x
        for q in range(m):
            out[q] -= L[m, q] * x


@njit(cache=True)
def _solve_subset(A, b, P, p, out):
    """Solve ``A[P, P] y = b[P]`` (A symmetric positive definite) into ``out[P]``."""
    Lp = np.zeros((p, p))
    for m in range(p):
        for q in range(m + 1):
            acc = A[P[m], P[q]]
            for r in range(q):
                acc -= Lp[m, r] * Lp[q, r]
            if m == q:
                Lp[m, m] = np.sqrt(max(acc, 1e-300))
            else:
                Lp[m, q] = acc / Lp[q, q]
    y = np.empty(p)
    for m in range(p):
        acc = b[P[m]]
        for r in range(m):
            acc -= Lp[m, r] * y[r]
        y[m] = acc / Lp[m, m]
    for m in range(p - 1, -1, -1):
        acc = y[m]
        for r in range(m + 1, p):
            acc -= Lp[r, m] * y[r]
        y[m] = acc / Lp[m, m]
    for m in range(p):
        out[P[m]] = y[m]


@njit(cache=True)
def nnls_gram(A, b, s, x):
    """Non-negative least squares in Gram form (Lawson and Hanson).

    Minimises ``0.5 x^T A x - b^T x`` over ``x >= 0`` for the leading ``s x s`` block of
    ``A``; ``x`` (length >= s) receives the solution.
    """
    passive = np.zeros(s, dtype=np.bool_)
    P = np.empty(s, dtype=np.int64)
    z = np.zeros(s)
    wgrad = np.empty(s)
    for m in range(s):
        x[m] = 0.0
    tol = 1e-12 * max(1.0, np.abs(b[:s]).max())
    for _outer in range(3 * s + 3):
        # gradient of the objective, negated
        for m in range(s):
            acc = b[m]
            for q in range(s):
                acc -= A[m, q] * x[q]
            wgrad[m] = acc
        jb = -1
        best = tol
        for m in range(s):
            if not passive[m] and wgrad[m] > best:
                best = wgrad[m]
                jb = m
        if jb < 0:
            return
        passive[jb] = True
        for _inner in range(3 * s + 3):
            p = 0
            for m in range(s):
                if passive[m]:
                    P[p] = m
                    p += 1
            for m in range(s):
                z[m] = 0.0
            _solve_subset(A, b, P, p, z)
            ok = True
            for m in range(p):
                if z[P[m]] <= 0.0:
                    ok = False
            if ok:
                for m in range(s):
                    x[m] = z[m]
                break
            alpha = 1.0
            for m in range(p):
                q = P[m]
                if z[q] <= 0.0:
                    alpha = min(alpha, x[q] / (x[q] - z[q]))
            for m in range(s):
                x[m] += alpha * (z[m] - x[m])
                if passive[m] and x[m] <= 1e-15:
                    passive[m] = False
                    x[m] = 0.0


@njit(cache=True, inline="always")
def dot(u, v, s):
    """``u[:s] . v[:s]`` (a loop: BLAS calls cost more than they save at this size)."""
    acc = 0.0
    for m in range(s):
        acc += u[m] * v[m]
    return acc


@njit(cache=True)
def quad(A, s, u, v):
    """``u[:s]^T A[:s, :s] v[:s]``."""
    acc = 0.0
    for m in range(s):
        t = 0.0
        for q in range(s):
            t += A[m, q] * v[q]
        acc += u[m] * t
    return acc
