"""Online dictionary learning on sufficient statistics (Mairal, Bach, Ponce and Sapiro,
2009): accumulate ``A = sum z z^T`` and ``B = sum z x^T`` over minibatches, then update
the dictionary by block-coordinate descent on the surrogate
``0.5 tr(D^T A D) - tr(D^T B)``."""

import numbers

import numpy as np

from sparsecode._validation import check_array, check_choice, check_count, describe, float_dtype
from sparsecode.dictionary._common import (
    check_atoms,
    check_codes,
    check_dictionary,
    require_codes,
    stats_of_codes,
)


class OnlineStats:
    """Sufficient statistics of online dictionary learning.

    ``A = sum_i z_i z_i^T`` and ``B = sum_i z_i x_i^T`` over the samples seen, each past
    contribution weighted down by a forgetting factor ``beta`` at every update:
    ``A <- beta A + Z^T Z`` and ``B <- beta B + Z^T X``.  With ``beta = 1`` (the default)
    and all data in, ``0.5 tr(D^T A D) - tr(D^T B) + 0.5 ||X||_F^2`` is exactly the
    objective ``0.5 ||X - Z D||_F^2``.

    Parameters
    ----------
    n_atoms : int
        Number of atoms.
    n_features : int
        Signal dimension.
    rho : float, optional
        Use Mairal et al.'s schedule ``beta_t = (1 - 1/t)^rho`` (``t`` = number of updates
        including the current one, so the first update replaces the statistics) whenever
        :meth:`update` gets no explicit ``forget``.  ``rho = 0`` is plain accumulation;
        larger values forget the early (poorly coded) minibatches faster.  Without
        ``rho``, ``beta = 1``.

    Attributes
    ----------
    A : ndarray of shape (n_atoms, n_atoms), float64
        ``sum z z^T``.
    B : ndarray of shape (n_atoms, n_features), float64
        ``sum z x^T`` (atoms as rows, like ``D``).
    n_samples : int
        Number of samples seen (unweighted).
    n_updates : int
        Number of calls to :meth:`update`.
    """

    def __init__(self, n_atoms, n_features, *, rho=None):
        self.n_atoms = check_count(n_atoms, "n_atoms", 1)
        self.n_features = check_count(n_features, "n_features", 1)
        if rho is not None:
            if isinstance(rho, bool) or not isinstance(rho, numbers.Real):
                raise TypeError(f"rho must be a real number >= 0 or None; got {describe(rho)}")
            if not (np.isfinite(rho) and rho >= 0):
                raise ValueError(f"rho must be a finite number >= 0; got {rho}")
            rho = float(rho)
        self.rho = rho
        self.A = np.zeros((self.n_atoms, self.n_atoms))
        self.B = np.zeros((self.n_atoms, self.n_features))
        self.n_samples = 0
        self.n_updates = 0

    def __repr__(self):
        return (
            f"OnlineStats(n_atoms={self.n_atoms}, n_features={self.n_features}, "
            f"rho={self.rho}, n_samples={self.n_samples}, n_updates={self.n_updates})"
        )

    def next_forget(self):
        """The ``beta`` that :meth:`update` uses when called without ``forget``."""
        if self.rho is None:
            return 1.0
        t = self.n_updates + 1
        return (1.0 - 1.0 / t) ** self.rho if t > 1 else 0.0

    def update(self, X, codes, *, forget=None):
        """Add a minibatch: ``A <- beta A + Z^T Z``, ``B <- beta B + Z^T X``.

        Parameters
        ----------
        X : array-like of shape (n_batch, n_features)
            Signals of the minibatch.
        codes : SparseCodes of shape (n_batch, n_atoms)
            Their codes.
        forget : float in [0, 1], optional
            The weight ``beta`` of the past statistics.  Default: Mairal's schedule when
            the statistics were created with ``rho``, else 1.

        Returns
        -------
        self : OnlineStats
        """
        X = check_array(X, "X")
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"X must have n_features = {self.n_features} columns; got shape {X.shape}"
            )
        require_codes(codes)
        dt = float_dtype(X)
        idx, val = check_codes(codes, dt, n_samples=X.shape[0], n_atoms=self.n_atoms)
        beta = self._beta(forget)
        ZZ, ZX = stats_of_codes(X.astype(dt, copy=False), idx, val, self.n_atoms)
        return self._add(ZZ, ZX, X.shape[0], beta)

    def add(self, A, B, n_samples, *, forget=None):
        """Add the statistics of a minibatch computed elsewhere (for instance summed over
        the blocks of a batch spread over several machines): ``A <- beta A + ZZ``,
        ``B <- beta B + ZX``.  :meth:`update` is ``add`` of the batch's own statistics.

        Parameters
        ----------
        A : array-like of shape (n_atoms, n_atoms)
            ``Z^T Z`` of the minibatch.
        B : array-like of shape (n_atoms, n_features)
            ``Z^T X`` of the minibatch.
        n_samples : int
            Signals in the minibatch.
        forget : float in [0, 1], optional
            As in :meth:`update`.

        Returns
        -------
        self : OnlineStats
        """
        ZZ = np.asarray(A, dtype=np.float64)
        ZX = np.asarray(B, dtype=np.float64)
        if ZZ.shape != self.A.shape or ZX.shape != self.B.shape:
            raise ValueError(
                f"A and B must have shapes {self.A.shape} and {self.B.shape}; got "
                f"{ZZ.shape} and {ZX.shape}"
            )
        return self._add(ZZ, ZX, check_count(n_samples, "n_samples", 0),
                         self._beta(forget))

    def _beta(self, forget):
        if forget is None:
            return self.next_forget()
        if isinstance(forget, bool) or not isinstance(forget, numbers.Real):
            raise TypeError(f"forget must be a real number in [0, 1]; got {describe(forget)}")
        beta = float(forget)
        if not (0.0 <= beta <= 1.0):
            raise ValueError(f"forget must be in [0, 1]; got {beta}")
        return beta

    def _add(self, ZZ, ZX, n, beta):
        if beta != 1.0:
            self.A *= beta
            self.B *= beta
        self.A += ZZ
        self.B += ZX
        self.n_samples += n
        self.n_updates += 1
        return self


    def forget_atoms(self, atoms):
        """Drop what the statistics know about ``atoms`` (their rows and columns of ``A``,
        their rows of ``B``), e.g. after resampling them, so that the next update does not
        pull the new atoms back to the old ones.

        Parameters
        ----------
        atoms : ndarray of shape (n_atoms,), bool, or ndarray of int

        Returns
        -------
        self : OnlineStats
        """
        atoms = check_atoms(atoms, self.n_atoms, name="atoms")
        self.A[atoms, :] = 0.0
        self.A[:, atoms] = 0.0
        self.B[atoms] = 0.0
        return self


def online_update(D, A, B, *, n_iter=1, constraint="ball"):
    """Block-coordinate descent of the online dictionary-learning surrogate.

    Minimises ``0.5 tr(D^T A D) - tr(D^T B)`` (``= 0.5 ||X - Z D||_F^2 - 0.5 ||X||_F^2``
    when ``A = Z^T Z``, ``B = Z^T X``) one atom at a time, in order:
    ``u_j = d_j + (B_j - A_j D) / A_jj``, then the projection

    - ``"ball"``: ``d_j = u_j / max(1, ||u_j||)`` (Mairal et al.; the exact minimiser over
      the unit ball, so each step is monotone when ``D`` starts inside the ball);
    - ``"sphere"``: ``d_j = u_j / ||u_j||`` (the exact minimiser over the unit sphere,
      monotone when ``D`` starts on the sphere).

    Atoms with ``A_jj = 0`` (never used) are left unchanged.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        Current dictionary.  Never written to.
    A : array-like of shape (n_atoms, n_atoms)
        ``sum z z^T`` (e.g. :attr:`OnlineStats.A`).  Symmetric positive semi-definite.
    B : array-like of shape (n_atoms, n_features)
        ``sum z x^T`` (e.g. :attr:`OnlineStats.B`).
    n_iter : int, default=1
        Number of sweeps over the atoms.
    constraint : {"ball", "sphere"}, default="ball"

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        In the float dtype of ``D``; computed in float64.

    Notes
    -----
    Cost per sweep: ``2 n_atoms^2 n_features`` flops (``A_j D`` for every atom), skipping
    zero entries of ``A``.
    """
    from sparsecode.dictionary._online_numba import BALL, SPHERE, online_bcd

    D = check_dictionary(D)
    n_atoms, d = D.shape
    A = check_array(A, "A")
    if A.shape != (n_atoms, n_atoms):
        raise ValueError(
            f"A must have shape (n_atoms, n_atoms) = {(n_atoms, n_atoms)} to match D; "
            f"got shape {A.shape}"
        )
    B = check_array(B, "B")
    if B.shape != (n_atoms, d):
        raise ValueError(
            f"B must have shape (n_atoms, n_features) = {(n_atoms, d)} like D; "
            f"got shape {B.shape}"
        )
    n_iter = check_count(n_iter, "n_iter", 1)
    check_choice(constraint, "constraint", ("ball", "sphere"))
    dt = float_dtype(D)
    work = np.array(D, dtype=np.float64, order="C")
    online_bcd(work, np.ascontiguousarray(A, dtype=np.float64),
               np.ascontiguousarray(B, dtype=np.float64), n_iter,
               BALL if constraint == "ball" else SPHERE)
    return work.astype(dt, copy=False)
