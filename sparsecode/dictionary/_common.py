"""What the dictionary updates share: checks of the codes at the public boundary, the
objective, the residual and the sufficient statistics computed from sparse codes."""

import contextlib

import numpy as np

from sparsecode._blas import one_blas_thread
from sparsecode._validation import check_array, describe, float_dtype
from sparsecode.codes import SparseCodes


def check_dictionary(D, name="D", *, n_features=None, n_atoms=None, source="codes.n_atoms"):
    """Validate a dictionary: 2-D, finite, real; optionally its number of features and
    of atoms (``source`` names where that number comes from).  Zero-norm atoms are
    allowed (unused atoms may be zero)."""
    D = check_array(D, name)
    if n_features is not None and D.shape[1] != n_features:
        raise ValueError(
            f"{name} must have n_features = {n_features} columns (one atom per row, shape "
            f"(n_atoms, n_features)) to match X; got shape {D.shape}"
        )
    if n_atoms is not None and D.shape[0] != n_atoms:
        raise ValueError(
            f"{name} must have n_atoms = {n_atoms} rows (one atom per row) to match "
            f"{source}; got shape {D.shape}"
        )
    return D


def require_codes(codes, name="codes"):
    """Raise ``TypeError`` unless ``codes`` is a :class:`SparseCodes`; return its
    ``n_atoms``."""
    if not isinstance(codes, SparseCodes):
        raise TypeError(f"{name} must be a sparsecode.SparseCodes; got {describe(codes)}")
    return codes.n_atoms


def check_codes(codes, dtype, *, n_samples=None, n_atoms=None, name="codes"):
    """Validate sparse codes and return ``(indices, values)`` as C-contiguous int32 and
    ``dtype`` arrays (copied only when needed).

    Checks: a NumPy :class:`SparseCodes`; ``n_samples`` rows and ``n_atoms`` atoms when
    given; indices in ``[-1, n_atoms)``; finite values; no atom twice in a row (the codes
    would not define one coefficient per atom and signal).
    """
    require_codes(codes, name)
    if not isinstance(codes.indices, np.ndarray) or not isinstance(codes.values, np.ndarray):
        raise TypeError(
            f"{name} must hold NumPy arrays (move CuPy codes to the host first); got "
            f"{type(codes.indices).__name__} indices"
        )
    if n_atoms is not None and codes.n_atoms != n_atoms:
        raise ValueError(
            f"{name}.n_atoms must equal the number of atoms (rows of D) = {n_atoms}; "
            f"got {name}.n_atoms = {codes.n_atoms}"
        )
    if n_samples is not None and len(codes) != n_samples:
        raise ValueError(
            f"{name} must have one row per signal, n_samples = {n_samples} (rows of X); "
            f"got {len(codes)} rows"
        )
    idx = codes.indices
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}.indices must be integers; got dtype {idx.dtype}")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1 or hi >= codes.n_atoms:
            raise ValueError(
                f"{name}.indices must lie in [-1, n_atoms) = [-1, {codes.n_atoms}); "
                f"got values in [{lo}, {hi}]"
            )
    val = codes.values
    if val.dtype.kind not in "biuf":
        raise TypeError(f"{name}.values must be real numbers; got dtype {val.dtype}")
    if val.dtype.kind == "f" and not np.isfinite(val).all():
        bad = np.argwhere(~np.isfinite(val))[0]
        raise ValueError(
            f"{name}.values must be finite; got NaN or inf, first at index "
            f"{tuple(int(i) for i in bad)}"
        )
    if idx.shape[1] > 1:
        srt = np.sort(idx, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ValueError(
                f"{name} must use each atom at most once per row; row {row} repeats an "
                f"atom: {idx[row].tolist()}"
            )
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    val = np.ascontiguousarray(val, dtype=dtype)
    return idx, val


#: Hold BLAS to one thread (see :mod:`sparsecode._blas`).
single_blas = one_blas_thread


#: Below this many flops a BLAS/LAPACK call runs on one thread: waking a thread pool costs
#: more than it saves, and far more on a busy machine (a 256 x 256 Cholesky factorisation
#: measured 0.5 ms on one thread and 260 ms on two contended ones).
SMALL_BLAS_FLOPS = 1e8


def blas_for(flops):
    """One BLAS thread for small problems, the default pool for large ones."""
    return single_blas() if flops < SMALL_BLAS_FLOPS else contextlib.nullcontext()


def stats_of_codes(X, indices, values, n_atoms):
    """``Z^T Z`` and ``Z^T X`` in float64 from sparse codes (trusted inputs)."""
    from sparsecode.dictionary._common_numba import code_stats as _stats
    from sparsecode.dictionary._common_numba import inverted_index

    A = np.zeros((n_atoms, n_atoms))
    B = np.zeros((n_atoms, X.shape[1]))
    ptr, pos = inverted_index(indices, n_atoms)
    _stats(np.ascontiguousarray(X), indices, values, ptr, pos, A, B)
    return A, B


def residual(X, indices, values, D):
    """``(R, ||R||_F^2)`` with ``R = X - Z D`` in the dtype of ``X`` (trusted inputs)."""
    from sparsecode.dictionary._common_numba import residual as _residual

    R = np.empty(X.shape, dtype=X.dtype)
    energy = _residual(np.ascontiguousarray(X), indices, values, np.ascontiguousarray(D), R)
    return R, energy


def objective(X, codes, D):
    """The dictionary-learning objective ``0.5 * ||X - Z D||_F^2``.

    Computed in float64 row by row, without a dense code matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.
    codes : SparseCodes of shape (n_samples, n_atoms)
        Their codes ``Z``.
    D : array-like of shape (n_atoms, n_features)
        Dictionary, one atom per row.

    Returns
    -------
    float
    """
    from sparsecode._parallel import n_chunks
    from sparsecode.dictionary._common_numba import residual_energy

    X = check_array(X, "X")
    D = check_dictionary(D, n_features=X.shape[1])
    dt = float_dtype(X, D)
    idx, val = check_codes(codes, dt, n_samples=X.shape[0], n_atoms=D.shape[0])
    X = np.ascontiguousarray(X, dtype=dt)
    D = np.ascontiguousarray(D, dtype=dt)
    return 0.5 * float(residual_energy(n_chunks(X.shape[0]), X, idx, val, D))


def check_atoms(dead, n_atoms, name="dead"):
    """Return a mask or list of atoms as a sorted array of indices."""
    dead = np.asarray(dead)
    if dead.dtype == bool:
        if dead.shape != (n_atoms,):
            raise ValueError(
                f"{name} must be a boolean mask of shape (n_atoms,) = ({n_atoms},) or an "
                f"array of atom indices; got a mask of shape {dead.shape}"
            )
        return np.flatnonzero(dead)
    if dead.dtype.kind not in "iu" or dead.ndim != 1:
        raise TypeError(
            f"{name} must be a boolean mask of shape (n_atoms,) or a 1-D array of atom "
            f"indices; got {describe(dead)}"
        )
    if dead.size and (dead.min() < 0 or dead.max() >= n_atoms):
        raise ValueError(
            f"{name} indices must lie in [0, n_atoms) = [0, {n_atoms}); got values in "
            f"[{int(dead.min())}, {int(dead.max())}]"
        )
    out = np.unique(dead)
    if out.size != dead.size:
        raise ValueError(f"{name} must not repeat an atom index")
    return out


def residual_energy(X, codes, D):
    """``||X - Z D||_F^2``, summed in float64 row by row without a dense code matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    codes : SparseCodes of shape (n_samples, n_atoms)
    D : array-like of shape (n_atoms, n_features)

    Returns
    -------
    float
    """
    return 2.0 * objective(X, codes, D)


def code_stats(X, codes):
    """The sufficient statistics ``A = Z^T Z`` and ``B = Z^T X`` of codes ``Z`` of ``X``.

    What MOD solves from and what :class:`~sparsecode.dictionary.OnlineStats` accumulates;
    they add over the blocks of a data set coded in parts.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    codes : SparseCodes of shape (n_samples, n_atoms)

    Returns
    -------
    A : ndarray of shape (n_atoms, n_atoms), float64
    B : ndarray of shape (n_atoms, n_features), float64
    """
    X = check_array(X, "X")
    require_codes(codes)
    dt = float_dtype(X)
    idx, val = check_codes(codes, dt, n_samples=X.shape[0], n_atoms=codes.n_atoms)
    return stats_of_codes(X.astype(dt, copy=False), idx, val, codes.n_atoms)
