"""K-SVD dictionary update: atom by atom, codes and atom refitted together on the atom's
users."""

import numpy as np

from sparsecode._validation import check_array, float_dtype
from sparsecode.codes import SparseCodes
from sparsecode.dictionary._common import (
    check_codes,
    check_dictionary,
    require_codes,
    residual,
    single_blas,
)


def ksvd_update(X, codes, D, *, exact=True, random_state=None):
    """K-SVD dictionary update (one sweep over the atoms, codes refitted on their support).

    Atoms are visited in order.  For atom ``j`` with users ``w`` (the signals whose code
    uses it), the restricted residual without the atom is
    ``E = X_w - Z_w D + z_j d_j^T`` (``|w| x n_features``).  Then

    - ``exact=True``: ``(z_j, d_j)`` is the best rank-1 approximation of ``E``: ``d_j``
      its top right singular vector (unit norm, sign chosen so that ``<d_j, d_j_old> >=
      0``) and ``z_j = E d_j``;
    - ``exact=False`` (the one-pass approximate K-SVD): ``d_j = E^T z_j / ||E^T z_j||``,
      then ``z_j = E d_j``.

    Only the coefficients of the users change: the sparsity pattern is kept.  Both
    variants never increase ``0.5 * ||X - Z D||_F^2``.  Atoms that no code uses are
    returned unchanged (resample them, see :func:`resample_dead`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.  Never written to.
    codes : SparseCodes of shape (n_samples, n_atoms)
        Codes of ``X``, each atom at most once per row.
    D : array-like of shape (n_atoms, n_features)
        Current dictionary.  Need not be normalised.  Never written to.
    exact : bool, default=True
        Rank-1 SVD update (True) or the one-pass approximation (False).
    random_state : int, numpy.random.Generator or None
        Seeds the starting direction used for an atom that is zero or orthogonal to its
        restricted residual (the only case where the update needs one).

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        Updated dictionary in the float dtype of ``X`` and ``D``; atoms with users are
        unit norm.
    codes_new : SparseCodes of shape (n_samples, n_atoms)
        Same indices (a copy), updated values.

    Notes
    -----
    The residual ``R = X - Z D`` is computed once and updated in place on each atom's
    users, so an atom costs ``O(|w| n_features)`` for gathering ``E`` and writing back,
    plus the rank-1 problem: power iteration started at the old atom on the small Gram
    matrix of ``E`` (``2 |w| n_features min(|w|, n_features)`` flops to form, a LAPACK
    eigensolver if the iteration converges slowly), or on ``E`` itself when both sides
    are large.  The approximate update costs ``4 |w| n_features``.  Summed over atoms
    ``sum |w| = nnz``.  Extra memory: the residual (``X``'s size) and one ``|w| x
    n_features`` float64 scratch for the most used atom.
    """
    from sparsecode.dictionary._ksvd_numba import ksvd_sweep

    X = check_array(X, "X")
    n_atoms = require_codes(codes)
    D = check_dictionary(D, n_features=X.shape[1], n_atoms=n_atoms)
    dt = float_dtype(X, D)
    idx, val = check_codes(codes, dt, n_samples=X.shape[0], n_atoms=n_atoms)
    X = np.ascontiguousarray(X, dtype=dt)
    D_new = np.array(D, dtype=dt, order="C")
    values = np.array(val, dtype=dt, order="C")
    rng = np.random.default_rng(random_state)
    start = rng.standard_normal(X.shape[1])
    start /= np.linalg.norm(start)
    from sparsecode.dictionary._common_numba import inverted_index

    R, _ = residual(X, idx, values, D_new)
    ptr, pos = inverted_index(idx, n_atoms)
    with single_blas():
        ksvd_sweep(R, idx, values, D_new, ptr, pos, bool(exact), start)
    return D_new, SparseCodes(idx.copy(), values, n_atoms)
