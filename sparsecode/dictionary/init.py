"""Initialisation, normalisation and dead-atom resampling of dictionaries."""

import numbers
import warnings

import numpy as np

from sparsecode._backend import is_cupy
from sparsecode._validation import check_array, check_count, describe, float_dtype
from sparsecode.codes import SparseCodes
from sparsecode.dictionary._common import (
    check_atoms,
    check_codes,
    check_dictionary,
    require_codes,
)

#: Relative size of the perturbation that makes repeated atoms distinct (1% of the atom's
#: norm, orthogonal to it: far above the pursuits' linear-dependence threshold, small
#: enough to keep the atom's direction).
DUPLICATE_NOISE = 1e-2


def _unit_rows(M):
    """Rows of ``M`` divided by their norms (float64 norms; zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", M, M, dtype=np.float64))
    out = M / np.where(norms > 0, norms, 1.0)[:, None].astype(M.dtype)
    return out, norms


def _repeated_directions(U):
    """Mask of rows of the unit-norm ``U`` that repeat an earlier row up to sign (and up
    to rounding: entries are compared on a grid of 2^-20)."""
    grid = np.round(U.astype(np.float64) * 2.0**20)
    first = np.argmax(grid != 0, axis=1)
    sign = np.sign(grid[np.arange(U.shape[0]), first])
    canon = grid * np.where(sign == 0, 1, sign)[:, None]
    _, keep = np.unique(canon, axis=0, return_index=True)
    repeated = np.ones(U.shape[0], dtype=bool)
    repeated[keep] = False
    return repeated


def _perturb(U, mask, rng):
    """Tilt the unit rows ``U[mask]`` by a random orthogonal component of norm
    ``DUPLICATE_NOISE`` and renormalise them (``1 - cos`` to the original: about 5e-5)."""
    if not mask.any():
        return U
    V = U[mask].astype(np.float64)
    G = rng.standard_normal(V.shape)
    G -= np.einsum("ij,ij->i", G, V)[:, None] * V
    G /= np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-300)
    U[mask] = _unit_rows(V + DUPLICATE_NOISE * G)[0].astype(U.dtype)
    return U


def _pick_signals(order, count, rng):
    """``count`` rows: the distinct rows ``order`` first (in that order), then random
    repeats of them when there are not enough; returns ``(rows, repeated_mask)``."""
    n = order.size
    if count <= n:
        return order[:count], np.zeros(count, dtype=bool)
    extra = rng.choice(order, size=count - n, replace=True)
    picked = np.concatenate([order, extra])
    repeated = np.zeros(count, dtype=bool)
    repeated[n:] = True
    return picked, repeated


def init_dictionary(X, n_atoms, *, method="signals", random_state=None):
    """Initial dictionary.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.  Never written to.
    n_atoms : int
        Number of atoms.
    method : "signals" or array-like of shape (n_atoms, n_features), default="signals"
        ``"signals"``: ``n_atoms`` distinct non-zero signals drawn at random, normalised.
        When there are fewer non-zero signals than atoms, every signal is used and the
        rest are repeats; repeated directions (also signals that are multiples of each
        other) get a small random tilt (an orthogonal component of relative size
        ``DUPLICATE_NOISE``, 1%) so that no two atoms coincide.  An array: these atoms,
        validated (finite, no zero rows) and normalised.
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    D : ndarray of shape (n_atoms, n_features)
        Unit-norm atoms in the float dtype of ``X``.
    """
    X = check_array(X, "X")
    n_atoms = check_count(n_atoms, "n_atoms")
    dt = float_dtype(X)
    if not isinstance(method, str):
        D0 = check_dictionary(method, "method", n_features=X.shape[1], n_atoms=n_atoms,
                              source="the n_atoms argument")
        D0 = D0.astype(dt)
        U, norms = _unit_rows(D0)
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(
                f"method (the initial atoms) must not contain zero rows; row(s) "
                f"{zero[:10].tolist()} are zero"
            )
        return U
    if method != "signals":
        raise ValueError(f"method must be 'signals' or an array of atoms; got {method!r}")
    rng = np.random.default_rng(random_state)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    candidates = np.flatnonzero(norms > 0)
    if candidates.size == 0:
        raise ValueError("X must contain at least one non-zero signal to initialise from; "
                         "got only zero rows")
    picked, repeated = _pick_signals(rng.permutation(candidates), n_atoms, rng)
    U = (X[picked] / norms[picked, None]).astype(dt)
    repeated |= _repeated_directions(U)
    return _perturb(U, repeated, rng)


def normalize_atoms(D, codes=None):
    """Scale the atoms to unit norm, and the codes so that ``Z D`` is unchanged.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        Dictionary.  Never written to.
    codes : SparseCodes of shape (n_samples, n_atoms), optional
        Codes to rescale: ``z_ij <- z_ij * ||d_j||``.

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        Unit-norm atoms (zero atoms stay zero), in the float dtype of ``D``.
    codes_new : SparseCodes
        Only when ``codes`` is given: rescaled copy (same indices).

    Warns
    -----
    RuntimeWarning
        When some atoms have zero norm; they are left as they are (resample them, see
        :func:`resample_dead`) and their coefficients are left unchanged.
    """
    D = check_dictionary(D)
    dt = float_dtype(D)
    if codes is not None:
        require_codes(codes)
        idx, val = check_codes(codes, dt, n_atoms=D.shape[0])
    U, norms = _unit_rows(D.astype(dt, copy=False))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        warnings.warn(
            f"normalize_atoms: {zero.size} atom(s) have zero norm and were left as they are "
            f"(first: {zero[:10].tolist()}); resample them with resample_dead",
            RuntimeWarning,
            stacklevel=2,
        )
    if codes is None:
        return U
    scale = np.where(norms > 0, norms, 1.0)
    used = idx >= 0
    values = np.where(used, val * scale[np.where(used, idx, 0)], val).astype(dt)
    return U, SparseCodes(idx.copy(), values, D.shape[0])


def resample_dead(D, dead, X, residual_norms2, *, noise=0.0, random_state=None):
    """Replace dead atoms by the worst-represented signals (K-SVD practice).

    The ``m`` dead atoms are replaced, in order, by the normalised rows of ``X`` with the
    ``m`` largest ``residual_norms2`` (the signals the current model explains worst, so
    each new atom immediately removes the largest remaining error).  Pass the signals
    themselves as ``X`` (the usual choice) or the residuals ``X - Z D`` to start the new
    atoms from what the other atoms miss.  Rows of ``X`` that are zero are never used;
    when fewer usable rows than dead atoms exist, rows are reused with a perturbation.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        Dictionary.  Never written to.
    dead : ndarray of shape (n_atoms,), bool, or ndarray of int
        The atoms to replace (a mask, e.g. :meth:`DeadAtoms.dead`, or indices).
    X : array-like of shape (n_samples, n_features)
        Candidate signals (or residuals).
    residual_norms2 : array-like of shape (n_samples,)
        Squared residual norms ``||x_i - z_i D||^2`` ranking the candidates.
    noise : float, default=0.0
        Relative Gaussian perturbation added to every new atom before normalising
        (e.g. 0.01).  Rows used twice also get the small tilt of :func:`init_dictionary`.
    random_state : int, numpy.random.Generator or None
        Seeds the perturbations and the rows reused when candidates run out.

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        Copy of ``D`` (float dtype of ``D``) with the dead atoms replaced by unit-norm
        rows; the other atoms are untouched.
    """
    D = check_dictionary(D)
    n_atoms, d = D.shape
    dead = check_atoms(dead, n_atoms)
    X = check_array(X, "X")
    if X.shape[1] != d:
        raise ValueError(
            f"X must have n_features = {d} columns like D; got shape {X.shape}"
        )
    r2 = check_array(residual_norms2, "residual_norms2", ndim=1)
    if r2.shape != (X.shape[0],):
        raise ValueError(
            f"residual_norms2 must have shape (n_samples,) = ({X.shape[0]},), one per row "
            f"of X; got shape {r2.shape}"
        )
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a real number >= 0; got {describe(noise)}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    dt = float_dtype(D)
    out = np.array(D, dtype=dt, order="C")
    if dead.size == 0:
        return out
    rng = np.random.default_rng(random_state)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    candidates = np.flatnonzero(norms > 0)
    if candidates.size == 0:
        raise ValueError("X must contain at least one non-zero row to resample from; "
                         "got only zero rows")
    m = dead.size
    score = r2[candidates].astype(np.float64)
    if m < candidates.size:
        top = np.argpartition(-score, m - 1)[:m]
        top = top[np.argsort(-score[top], kind="stable")]
    else:
        top = np.argsort(-score, kind="stable")
    picked, repeated = _pick_signals(candidates[top], m, rng)
    U = (X[picked] / norms[picked, None]).astype(dt)
    if noise > 0:
        U = _unit_rows(U + (rng.standard_normal(U.shape) * (noise / np.sqrt(d))).astype(dt))[0]
    repeated |= _repeated_directions(U)
    out[dead] = _perturb(U, repeated, rng)
    return out


class DeadAtoms:
    """Track which atoms went unused over the last ``window`` samples.

    Parameters
    ----------
    n_atoms : int
    window : int
        An atom is dead when none of the last ``window`` samples passed to
        :meth:`update` used it.  Until ``window`` samples have been seen no atom is dead.

    Attributes
    ----------
    counts : ndarray of shape (n_atoms,), int64
        Number of samples that used each atom, since creation.
    last_used : ndarray of shape (n_atoms,), int64
        For each atom, the number of samples seen up to and including its last use
        (0: never used since creation or :meth:`reset`).
    n_samples : int
        Samples seen.
    """

    def __init__(self, n_atoms, window):
        self.n_atoms = check_count(n_atoms, "n_atoms")
        self.window = check_count(window, "window")
        self.counts = np.zeros(self.n_atoms, dtype=np.int64)
        self.last_used = np.zeros(self.n_atoms, dtype=np.int64)
        self.n_samples = 0

    def __repr__(self):
        return (
            f"DeadAtoms(n_atoms={self.n_atoms}, window={self.window}, "
            f"n_samples={self.n_samples}, dead={int(self.dead().sum())})"
        )

    def update(self, codes):
        """Count the atoms used by a batch of codes (in row order).  An atom is used by a
        sample when its code lists it (index >= 0), whatever the coefficient.

        Parameters
        ----------
        codes : SparseCodes of shape (n_batch, n_atoms)
            NumPy or CuPy (counted on the device; only ``2 n_atoms`` numbers come back).

        Returns
        -------
        self : DeadAtoms
        """
        require_codes(codes)
        if is_cupy(codes.indices):
            counts, last = _atom_use_on_device(codes.indices, self.n_atoms)
        else:
            idx, _ = check_codes(codes, float_dtype(codes.values), n_atoms=self.n_atoms)
            rows, slots = np.nonzero(idx >= 0)
            atoms = idx[rows, slots]
            counts = np.bincount(atoms, minlength=self.n_atoms)
            last = np.full(self.n_atoms, -1, dtype=np.int64)
            np.maximum.at(last, atoms, rows)
        self.counts += counts
        hit = last >= 0
        self.last_used[hit] = self.n_samples + last[hit] + 1
        self.n_samples += len(codes)
        return self

    def idle(self):
        """ndarray of shape (n_atoms,), int64: samples seen since each atom's last use."""
        return self.n_samples - self.last_used

    def dead(self):
        """ndarray of shape (n_atoms,), bool: atoms unused over the last ``window``
        samples."""
        return self.idle() >= self.window

    def reset(self, atoms=None):
        """Restart the clock of ``atoms`` (all by default), e.g. after resampling them,
        so they get a full window before they can be dead again.

        Parameters
        ----------
        atoms : ndarray of bool of shape (n_atoms,) or of int, optional
        """
        if atoms is None:
            self.last_used[:] = self.n_samples
        else:
            self.last_used[check_atoms(atoms, self.n_atoms, name="atoms")] = self.n_samples
        return self


def coherent_atoms(D, threshold=0.99, usage=None):
    """Atoms that nearly duplicate another atom, to be resampled (K-SVD practice).

    For every pair with ``|cos(d_a, d_b)| > threshold`` one atom is marked: the less used
    one when ``usage`` is given, else the one with the larger index.  Pairs are taken in
    order of decreasing coherence, and an atom already marked no longer counts, so of a
    group of ``m`` near-copies ``m - 1`` are marked.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
    threshold : float, default=0.99
        Largest allowed ``|cos|`` between two atoms.
    usage : array-like of shape (n_atoms,), optional
        How often each atom is used (e.g. :attr:`DeadAtoms.counts` or
        ``numpy.bincount`` of the code indices).

    Returns
    -------
    mask : ndarray of shape (n_atoms,), bool

    Notes
    -----
    Forms the ``n_atoms x n_atoms`` Gram matrix of the normalised atoms
    (``n_atoms^2 n_features`` flops, its lower half) and reads its upper triangle once.
    """
    D = check_dictionary(D)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number in (0, 1]; got {describe(threshold)}")
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    n_atoms = D.shape[0]
    if usage is not None:
        usage = check_array(usage, "usage", ndim=1)
        if usage.shape != (n_atoms,):
            raise ValueError(
                f"usage must have shape (n_atoms,) = ({n_atoms},); got shape {usage.shape}"
            )
    # in the atoms' own float dtype: float32 resolves a 0.99 threshold, and the
    # n_atoms x n_atoms work (a product and one comparison pass) halves
    U, _ = _unit_rows(D.astype(float_dtype(D), copy=False))
    from sparsecode._parallel import gram_symmetric
    from sparsecode.dictionary._common_numba import coherent_pairs

    G = gram_symmetric(U)  # half a general product's flops, the same bits on any BLAS
    a, b, coh = coherent_pairs(G, G.dtype.type(threshold))
    mask = np.zeros(n_atoms, dtype=bool)
    for e in np.argsort(-coh, kind="stable"):
        i, j = a[e], b[e]
        if mask[i] or mask[j]:
            continue
        drop = j if usage is None or usage[j] <= usage[i] else i
        mask[drop] = True
    return mask


def _atom_use_on_device(idx, n_atoms):
    """Per atom, the number of uses and the last row using it (-1: none) in the CuPy
    code indices ``idx``, as NumPy arrays."""
    import cupy

    rows, slots = cupy.nonzero(idx >= 0)
    atoms = idx[rows, slots].astype(np.int64)
    counts = cupy.bincount(atoms, minlength=n_atoms)
    # rows ascend in row-major order: the first hit of an atom in the reversed list is
    # its last use
    found, first = cupy.unique(atoms[::-1], return_index=True)
    last = cupy.full(n_atoms, -1, dtype=np.int64)
    last[found] = rows[::-1][first]
    return counts.get(), last.get()
