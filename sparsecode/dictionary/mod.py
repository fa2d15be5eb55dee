"""Method of optimal directions (MOD): the least-squares dictionary for fixed codes."""

import numbers
import warnings

import numpy as np

from sparsecode._validation import check_array, describe, float_dtype
from sparsecode.dictionary._common import (
    blas_for,
    check_codes,
    check_dictionary,
    require_codes,
    stats_of_codes,
)


def check_reg(reg):
    """Validate a non-negative ridge factor."""
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real):
        raise TypeError(f"reg must be a non-negative real number; got {describe(reg)}")
    reg = float(reg)
    if not (reg >= 0.0 and np.isfinite(reg)):
        raise ValueError(f"reg must be a finite number >= 0; got {reg}")
    return reg


def solve_normal_equations(A, B, reg):
    """Solve ``(A_uu + lam I) D_u = B_u`` on the used atoms ``u`` (``A_jj > 0``) with
    ``lam = reg * trace(A) / n_atoms``; float64.  Returns ``(D_u, used)``."""
    used = np.flatnonzero(np.diagonal(A) > 0)
    if used.size == 0:
        return np.zeros((0, B.shape[1])), used
    Au = A[np.ix_(used, used)]
    Bu = B[used]
    lam = reg * np.trace(A) / A.shape[0]
    Au[np.diag_indices_from(Au)] += lam
    m = used.size
    try:
        with blas_for(m**3 / 3 + 2 * m * m * B.shape[1]):
            import scipy.linalg  # loaded on first use: it costs half a second at import

            factor = scipy.linalg.cho_factor(Au, lower=True, check_finite=False)
            Du = scipy.linalg.cho_solve(factor, Bu, check_finite=False)
    except np.linalg.LinAlgError:
        warnings.warn(
            "mod_update: the code Gram matrix Z^T Z is singular (codes of the used atoms are "
            "linearly dependent); using the minimum-norm least-squares solution. Pass "
            "reg > 0 to regularise.",
            RuntimeWarning,
            stacklevel=3,
        )
        Du = np.linalg.lstsq(Au, Bu, rcond=None)[0]
    return Du, used


def mod_update(X, codes, *, reg=1e-6, D=None):
    """MOD dictionary update: the regularised least-squares dictionary for fixed codes.

    Solves the normal equations ``(Z^T Z + lam I) D = Z^T X`` with
    ``lam = reg * trace(Z^T Z) / n_atoms``, i.e. minimises
    ``0.5 * ||X - Z D||_F^2 + 0.5 * lam * ||D_used||_F^2`` over the atoms the codes use.
    ``Z^T Z`` and ``Z^T X`` are accumulated from the sparse codes (``nnz * (n_features +
    k_max)`` multiply-adds, parallel over atoms); no dense ``(n_samples, n_atoms)`` array is
    formed.  The ``n_used x n_used`` system is solved by Cholesky in float64.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.  Never written to.
    codes : SparseCodes of shape (n_samples, n_atoms)
        Codes of ``X``, each atom at most once per row.
    reg : float, default=1e-6
        Ridge factor relative to the mean code energy per atom.  ``reg=0`` is plain
        least squares (a singular ``Z^T Z`` then falls back to the minimum-norm solution
        with a ``RuntimeWarning``).
    D : array-like of shape (n_atoms, n_features), optional
        The current dictionary.  Atoms no code uses (``Z^T Z`` has a zero diagonal entry
        there) keep their value from ``D``; without ``D`` they are returned as zero rows,
        to be resampled (see :func:`resample_dead`) before the next pursuit.

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        In the float dtype of ``X`` (and ``D``).  Atoms are not normalised: call
        :func:`normalize_atoms` with the codes to renormalise without changing ``Z D``.

    Notes
    -----
    Cost: ``nnz * n_features`` for ``Z^T X``, ``nnz * k_max`` for ``Z^T Z``, then
    ``n_used^3 / 3 + 2 n_used^2 n_features`` flops for the factorisation and the solves.
    For fixed codes the result decreases the regularised objective, so
    ``f(D_new) <= f(D) + lam / 2 * (||D_used||^2 - ||D_new,used||^2)``.
    """
    X = check_array(X, "X")
    reg = check_reg(reg)
    n_atoms = require_codes(codes)
    if D is not None:
        D = check_dictionary(D, n_features=X.shape[1], n_atoms=n_atoms)
    dt = float_dtype(X) if D is None else float_dtype(X, D)
    idx, val = check_codes(codes, dt, n_samples=X.shape[0], n_atoms=n_atoms)
    X = X.astype(dt, copy=False)
    A, B = stats_of_codes(X, idx, val, n_atoms)
    return _solve(A, B, reg, D, dt)


def mod_from_stats(A, B, *, reg=1e-6, D=None, dtype=None):
    """MOD update from the code statistics ``A = Z^T Z`` and ``B = Z^T X``.

    :func:`mod_update` computes these from the signals and codes; when they are summed
    over parts of the data (blocks on several machines, or an accumulation over a file),
    this solves the same normal equations from the sums.

    Parameters
    ----------
    A : array-like of shape (n_atoms, n_atoms)
        ``sum_i z_i z_i^T``.
    B : array-like of shape (n_atoms, n_features)
        ``sum_i z_i x_i^T``.
    reg : float, default=1e-6
        As in :func:`mod_update`.
    D : array-like of shape (n_atoms, n_features), optional
        Current dictionary: unused atoms keep their value (zero rows without it).
    dtype : dtype, optional
        Of the result (default: that of ``D``, else float64).

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
    """
    reg = check_reg(reg)
    A = np.array(check_array(A, "A"), dtype=np.float64)  # a copy: the solve writes to it
    B = np.asarray(check_array(B, "B"), dtype=np.float64)
    K = A.shape[0]
    if A.shape != (K, K) or B.shape[0] != K:
        raise ValueError(
            f"A must be square (n_atoms, n_atoms) and B (n_atoms, n_features); got "
            f"shapes {A.shape} and {B.shape}"
        )
    if D is not None:
        D = check_dictionary(D, n_features=B.shape[1], n_atoms=K, source="A")
    if dtype is None:
        dtype = np.float64 if D is None else float_dtype(D)
    return _solve(A, B, reg, D, np.dtype(dtype))


def _solve(A, B, reg, D, dt):
    Du, used = solve_normal_equations(A, B, reg)
    if D is None:
        out = np.zeros(B.shape, dtype=dt)
    else:
        out = np.array(D, dtype=dt, order="C")
    out[used] = Du
    return out
