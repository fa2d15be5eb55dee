"""``SparseCodes``: the one container for sparse codes."""

import numpy as np

from sparsecode._backend import array_module


class SparseCodes:
    """Sparse codes stored as ``(indices, values)`` of fixed width.

    Row ``i`` uses atoms ``indices[i, :l0[i]]`` with coefficients ``values[i, :l0[i]]``;
    unused slots hold index -1 and value 0.  Atoms appear in the order the pursuit first
    selected them, so a prefix of a row is the code after fewer steps.

    Parameters
    ----------
    indices : ndarray of shape (n_samples, k_max), int32
        Selected atoms, -1 where unused.
    values : ndarray of shape (n_samples, k_max)
        Coefficients, 0 where unused.
    n_atoms : int
        Number of atoms of the dictionary the codes refer to.
    """

    __slots__ = ("indices", "values", "n_atoms")

    def __init__(self, indices, values, n_atoms):
        if indices.shape != values.shape or indices.ndim != 2:
            raise ValueError(
                f"indices and values must be 2-D of the same shape; got {indices.shape} "
                f"and {values.shape}"
            )
        self.indices = indices
        self.values = values
        self.n_atoms = int(n_atoms)

    @property
    def shape(self):
        """tuple: ``(n_samples, n_atoms)``, the shape of the dense code matrix."""
        return (self.indices.shape[0], self.n_atoms)

    @property
    def dtype(self):
        """dtype of the coefficients."""
        return self.values.dtype

    @property
    def k_max(self):
        """int: width of the stored arrays."""
        return self.indices.shape[1]

    @property
    def l0(self):
        """ndarray of shape (n_samples,): number of selected atoms per row."""
        return (self.indices >= 0).sum(axis=1)

    def __len__(self):
        return self.indices.shape[0]

    def __repr__(self):
        n = len(self)
        mean_l0 = float(self.l0.mean()) if n else 0.0
        return (
            f"SparseCodes(n_samples={n}, n_atoms={self.n_atoms}, k_max={self.k_max}, "
            f"dtype={self.dtype}, mean_l0={mean_l0:.3g})"
        )

    def __getitem__(self, rows):
        """Codes of a subset of rows (a slice, an index array or a boolean mask)."""
        idx = self.indices[rows]
        if idx.ndim == 1:
            idx, val = idx[None, :], self.values[rows][None, :]
        else:
            val = self.values[rows]
        return SparseCodes(idx, val, self.n_atoms)

    def __array__(self, dtype=None, copy=None):
        """The dense ``(n_samples, n_atoms)`` matrix, so ``numpy.asarray(codes)`` works."""
        dense = self.toarray()
        if array_module(self.indices) is not np:
            dense = dense.get()
        return dense if dtype is None else dense.astype(dtype, copy=False)

    def toarray(self):
        """Dense codes.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_atoms)
        """
        xp = array_module(self.indices)
        n, k = self.indices.shape
        Z = xp.zeros((n, self.n_atoms), dtype=self.values.dtype)
        used = self.indices >= 0
        rows = xp.broadcast_to(xp.arange(n)[:, None], (n, k))
        Z[rows[used], self.indices[used]] = self.values[used]
        return Z

    def tocsr(self):
        """Codes as a ``scipy.sparse.csr_matrix`` of shape (n_samples, n_atoms).

        Column order within a row is the selection order.  CuPy codes are moved to the host.
        """
        import scipy.sparse

        idx, val = self.indices, self.values
        if array_module(self.indices) is not np:
            idx, val = idx.get(), val.get()
        used = idx >= 0
        indptr = np.zeros(idx.shape[0] + 1, dtype=np.int64)
        np.cumsum(used.sum(axis=1), out=indptr[1:])
        return scipy.sparse.csr_matrix(
            (val[used], idx[used], indptr), shape=(idx.shape[0], self.n_atoms)
        )

    def decode(self, D):
        """Reconstruct the signals ``Z D``.

        Parameters
        ----------
        D : ndarray of shape (n_atoms, n_features)

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
            In the dtype of the codes.
        """
        xp = array_module(self.indices)
        D = xp.asarray(D)
        if D.ndim != 2 or D.shape[0] != self.n_atoms:
            raise ValueError(
                f"D must have shape (n_atoms={self.n_atoms}, n_features); got shape {D.shape}"
            )
        D = D.astype(self.values.dtype, copy=False)
        if xp is np:
            from sparsecode._codes_numba import decode

            out = np.empty((len(self), D.shape[1]), dtype=self.values.dtype)
            decode(np.ascontiguousarray(self.indices), np.ascontiguousarray(self.values),
                   np.ascontiguousarray(D), out)
            return out
        out = xp.zeros((len(self), D.shape[1]), dtype=self.values.dtype)
        # one gathered GEMV per slot: O(n * k * n_features), never a dense (n, n_atoms) array
        for s in range(self.k_max):
            idx = self.indices[:, s]
            used = idx >= 0
            if not bool(used.any()):
                break
            out += self.values[:, s, None] * D[xp.where(used, idx, 0)] * used[:, None]
        return out
