"""K-SVD kernels (Numba).  Called only from :mod:`sparsecode.dictionary.ksvd`.

One sweep visits the atoms in order.  For atom ``j`` with users ``w`` (the rows whose code
uses it, from the inverted index) the restricted residual ``E = R_w + z_j d_j^T``
(``|w| x n_features``, float64 scratch) is gathered from the running residual
``R = X - Z D``; the new pair ``(z_j, d_j)`` is computed from ``E``; and
``R_w = E - z_j d_j^T`` is written back, so ``R`` stays the residual of the current
dictionary and codes without ever being recomputed.

Exact update: ``d_j`` is the top right singular vector of ``E`` and ``z_j = E d_j``.
It is found by power iteration started at the old atom: on ``E`` itself (4 |w|
n_features flops a step; from the old atom a handful of steps usually suffice: a median
of 13 on a fresh dictionary, 4 near the optimum, for 256 atoms in d = 64), continued on
the small Gram matrix (``E^T E`` or ``E E^T``, whichever is smaller) once it has cost as
much as forming it, and finished by LAPACK's symmetric eigensolver when even that is
slow (nearly equal top singular values).  Started at the old atom, power iteration never
lowers the Rayleigh quotient ``||E v||^2`` below that of the old direction, which is why
the objective never rises even before convergence.

Approximate update (one pass): ``d = E^T z / ||E^T z||``, ``z = E d``.
"""

import numpy as np
from numba import njit

#: Relative eigen-residual ``||M v - lam v|| / lam`` at which power iteration stops; the
#: direction is then accurate to about ``POWER_TOL * lam_1 / (lam_1 - lam_2)``.
POWER_TOL = 1e-10


# Reductions may be reassociated so that they vectorise (plain float reductions do not);
# they run in float64 over at most n_features or |w| terms.
_REASSOC = {"reassoc", "contract"}


@njit(cache=True, fastmath=_REASSOC)
def _dot(x, y):
    acc = 0.0
    for q in range(x.shape[0]):
        acc += x[q] * y[q]
    return acc


@njit(cache=True, fastmath=_REASSOC)
def _dist2(y, lam, x):
    """``||y - lam x||^2``."""
    acc = 0.0
    for q in range(x.shape[0]):
        t = y[q] - lam * x[q]
        acc += t * t
    return acc


@njit(cache=True)
def _normalize(x):
    """Scale ``x`` to unit norm in place; returns its former norm (0: left as is)."""
    nrm = np.sqrt(_dot(x, x))
    if nrm > 0.0:
        for q in range(x.shape[0]):
            x[q] /= nrm
    return nrm


@njit(cache=True)
def _top_eigvec(M, x):
    """Top eigenvector of the symmetric matrix ``M`` (LAPACK), signed like ``x``; in ``x``."""
    _, vecs = np.linalg.eigh(M)
    top = vecs[:, vecs.shape[1] - 1]
    sign = 1.0 if _dot(top, x) >= 0 else -1.0
    for q in range(x.shape[0]):
        x[q] = sign * top[q]


@njit(cache=True)
def _power_gram(M, x, max_iter):
    """Power iteration on the PSD matrix ``M`` from the unit vector ``x`` (updated in
    place); falls back to LAPACK after ``max_iter`` steps.  Returns False when
    ``M x = 0`` (no progress possible from ``x``)."""
    for _ in range(max_iter):
        y = np.dot(M, x)
        lam = _dot(x, y)
        res2 = _dist2(y, lam, x)
        if _normalize(y) == 0.0:
            return False
        x[:] = y
        if res2 <= (POWER_TOL * lam) ** 2:
            return True
    _top_eigvec(M, x)
    return True


@njit(cache=True)
def _power_direct(E, v, max_iter):
    """Power iteration on ``E^T E`` without forming it: ``v <- E^T (E v)``, normalised.
    Returns 1 when converged, 0 when not within ``max_iter``, -1 when ``E v = 0``."""
    for _ in range(max_iter):
        u = np.dot(E, v)
        lam = _dot(u, u)
        if lam == 0.0:
            return -1
        w = np.dot(u, E)
        res2 = _dist2(w, lam, v)
        _normalize(w)
        v[:] = w
        if res2 <= (POWER_TOL * lam) ** 2:
            return 1
    return 0


@njit(cache=True)
def top_right_vector(E, v, start):
    """Replace the unit vector ``v`` by the top right singular vector of ``E`` (to
    ``POWER_TOL``), never lowering ``||E v||``.

    Power iteration on ``E`` itself first (two matrix-vector products a step); if it has
    not converged when it has cost about as much as forming the Gram matrix of the
    smaller side of ``E``, it continues on that Gram matrix, and ends with LAPACK if that
    is slow too.  ``start`` (unit) replaces ``v`` when ``E v = 0``; when ``E`` is zero
    ``v`` is left as it is.
    """
    m, d = E.shape
    for attempt in range(2):
        if attempt == 1:
            v[:] = start
        status = _power_direct(E, v, max(8, min(m, d) // 2))
        if status == 1:
            return
        if status == -1:
            continue  # E v = 0: restart from ``start``
        if d <= m:
            _power_gram(np.dot(E.T, E), v, 4 * d + 20)
        else:
            u = np.dot(E, v)
            _normalize(u)
            _power_gram(np.dot(E, E.T), u, 4 * m + 20)
            w = np.dot(u, E)
            if _normalize(w) > 0.0:
                v[:] = w
        return


@njit(cache=True)
def ksvd_sweep(R, indices, V, D, ptr, pos, exact, start):
    """One K-SVD sweep over all atoms, in place on ``R``, ``V`` and ``D``.

    Parameters
    ----------
    R : ndarray of shape (n_samples, n_features)
        Residual ``X - Z D`` of the current codes and dictionary; kept up to date.
    indices : ndarray of shape (n_samples, k_max), int32
        Sparsity pattern (unchanged).
    V : ndarray of shape (n_samples, k_max)
        Code values, updated.
    D : ndarray of shape (n_atoms, n_features)
        Dictionary, updated (atoms with users become unit norm).
    ptr, pos : ndarray, int64
        Inverted index of ``indices`` (see ``inverted_index``).
    exact : bool
        Rank-1 SVD update (True) or the one-pass approximation (False).
    start : ndarray of shape (n_features,), float64
        Unit vector used when an atom is zero or orthogonal to its restricted residual.
    """
    d = R.shape[1]
    k = indices.shape[1]
    n_atoms = D.shape[0]
    max_m = 0
    for j in range(n_atoms):
        max_m = max(max_m, ptr[j + 1] - ptr[j])
    E_buf = np.empty((max_m, d))
    z_buf = np.empty(max_m)
    dj = np.empty(d)
    v = np.empty(d)
    for j in range(n_atoms):
        m = ptr[j + 1] - ptr[j]
        if m == 0:
            continue
        base = ptr[j]
        for q in range(d):
            dj[q] = D[j, q]
        E = E_buf[:m]
        z = z_buf[:m]
        for r in range(m):
            p = pos[base + r]
            i = p // k
            zr = np.float64(V[i, p - i * k])
            z[r] = zr
            Er = E[r]
            Ri = R[i]
            for q in range(d):
                Er[q] = Ri[q] + zr * dj[q]
        nd = np.sqrt(_dot(dj, dj))
        if exact:
            if nd > 0.0:
                for q in range(d):
                    v[q] = dj[q] / nd
            else:
                v[:] = start
            top_right_vector(E, v, start)
            if _dot(v, dj) < 0.0:
                for q in range(d):
                    v[q] = -v[q]
        else:
            g = np.dot(z, E)
            if _normalize(g) > 0.0:
                v[:] = g
            elif nd > 0.0:
                for q in range(d):
                    v[q] = dj[q] / nd
            else:
                v[:] = start
        zn = np.dot(E, v)
        for q in range(d):
            D[j, q] = v[q]
        for r in range(m):
            p = pos[base + r]
            i = p // k
            zr = zn[r]
            V[i, p - i * k] = zr
            Er = E[r]
            Ri = R[i]
            for q in range(d):
                Ri[q] = Er[q] - zr * v[q]
