"""Rows of the Gram matrix of a dictionary, computed for the atoms the pursuits select
and kept, up to a memory bound, for the next steps, batches and calls.

A pursuit on the Gram path reads one row ``G[j] = D d_j`` per selected atom.  When the
whole ``G`` is too large (65,536 atoms: 17 GB in float32), :class:`GramRows` holds only
the rows of the atoms in use: the pursuit asks for the rows its signals are waiting on,
the missing ones are computed with one GEMM ``D[J] D^T`` for all of them (not one per
signal), and rows stay until the store is full, when the rows used in the fewest
rounds give way (heavy-tailed atom usage, as in SAE codes, keeps the frequent atoms'
rows resident).  Rows may be stored in float16 or bfloat16 (half the bytes; see
:mod:`sparsecode._halves_numba`).  MP and OMP may instead defer the rows the store lacks
(``defer``; :mod:`sparsecode.pursuit._defer_numba`): a rarely used atom then costs
``n_features`` flops where its row costs ``n_atoms n_features``.

Kept free of kernels of its own: the products are :func:`sparsecode._parallel.group_correlations`.
"""

import numpy as np

from sparsecode import _config
from sparsecode._halves_numba import STORAGE, narrow

__all__ = ["GramRows"]


class GramRows:
    """Gram-matrix rows of a dictionary, computed on demand and kept within a memory
    bound.  Pass one as ``gram=`` to :func:`sparsecode.mp`, :func:`sparsecode.omp` or
    :func:`sparsecode.gp` to share its rows across calls (a stream of batches).

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        The dictionary the pursuits will be given (float32 or float64).  Its atoms are
        normalised here as the pursuits normalise them.
    max_bytes : int, optional
        Memory for the rows (default ``_config.GRAM_CACHE_BYTES``).  When all
        ``n_atoms`` rows fit, they are all computed at once (a whole Gram matrix,
        possibly in 16 bits); otherwise rows are computed as atoms are selected.
    dtype : {None, "float32", "float64", "float16", "bfloat16"}
        Storage of the rows (None: the dictionary's dtype).  16-bit rows halve the bytes
        the updates read; the pursuits still accumulate in the signals' dtype and take
        every support Gram entry exact from ``D``.
    defer : {"auto", True, False}
        What MP and OMP (``positive=False``) do when a signal needs a row the store
        lacks.  ``True``: defer it, keeping ``delta d_j`` in a vector of ``n_features``
        per signal, and settle all of a signal's deferred rows with one product when its
        selection can no longer be decided exactly (see
        :mod:`sparsecode.pursuit._defer_numba`).  This needs the atoms' coherence
        (:meth:`coherence`: once per store, half the flops of the whole Gram matrix).
        ``False``: wait for the row, computed with those of the other waiting signals.
        ``"auto"``: defer once the coherence is known, or when a call's
        ``n_signals k`` is at least ``n_atoms / 2`` (computing it then costs at most what
        the call would cost with no Gram at all).  An atom taken three times without
        its row gets its row computed and kept.

    Attributes
    ----------
    capacity : int
        Rows held at most.
    complete : bool
        All rows are present (never evicted).
    rows_computed : int
        Rows computed so far (a measure of the cache's misses).
    payments : int
        Signals' deferred rows settled so far (one product of ``n_atoms n_features``
        each, like a row).
    mu : ndarray of shape (n_atoms,) or None
        The atoms' coherence once :meth:`coherence` has computed it; ``mu_groups`` (float32,
        (n_atoms, n_groups)) the same by group of ``mu_group`` atoms.  They depend on the
        dictionary only: a store of the same atoms may be given them.
    derived : dict
        What the pursuits derive from the rows of a complete store (the largest
        off-diagonal ``|G[a, x]|`` of each row by block of atoms, as stored, for OMP's
        deferred updates), computed by the first call that needs it and kept for the
        next ones.
    """

    def __init__(self, D, *, max_bytes=None, dtype=None, defer="auto", _rows=None):
        from sparsecode._validation import check_array, float_dtype

        D = check_array(D, "D")
        if D.ndim != 2 or D.shape[0] == 0:
            raise ValueError(f"D must be a non-empty 2-D array; got shape {D.shape}")
        D = np.ascontiguousarray(D, dtype=float_dtype(D))
        norms2 = np.einsum("ij,ij->i", D, D, dtype=np.float64)
        if not np.all(norms2 > 0):
            raise ValueError("D has an atom of zero norm")
        unit = bool(np.all(np.abs(norms2 - 1.0) <= _config.UNIT_NORM_ATOL[D.dtype]))
        self.D = D if unit else D * (1.0 / np.sqrt(norms2))[:, None].astype(D.dtype)
        self.norms2 = norms2
        if dtype is None:
            dtype = D.dtype.name
        allowed = ("float32", "float64", "float16", "bfloat16")
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {allowed}; got {dtype!r}")
        if dtype in ("float32", "float64") and np.dtype(dtype) != D.dtype:
            raise ValueError(f"dtype {dtype!r} differs from the dictionary's {D.dtype}: "
                             "rows in the dictionary's dtype, or 16 bits")
        self.storage = dtype
        if defer not in ("auto", True, False):
            raise ValueError(f"defer must be 'auto', True or False; got {defer!r}")
        self.defer = defer
        self.mu = None
        self.mu_groups = None
        self.mu_group = None
        self.derived = {}  # what the kernels derive from whole rows, computed once
        self.payments = 0
        self.misses = np.zeros(D.shape[0], dtype=np.int64)  # atoms taken without a row
        store = STORAGE[dtype] if dtype in STORAGE else np.dtype(dtype)
        K = D.shape[0]
        if max_bytes is None:
            max_bytes = _config.GRAM_CACHE_BYTES
        max_bytes = int(max_bytes)
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0; got {max_bytes}")
        self.capacity = min(K, max_bytes // (K * store.itemsize))
        self.rows = np.empty((self.capacity, K) if self.capacity < K else (0, K),
                             dtype=store)
        self.slot = np.full(K, -1, dtype=np.int64)  # row of each atom in `rows`, or -1
        self.atom = np.full(self.capacity, -1, dtype=np.int64)  # atom of each row
        self.used = np.zeros(self.capacity, dtype=np.int64)  # last round that read it
        self.rounds_used = np.zeros(self.capacity, dtype=np.int64)  # rounds that read it
        self.round = 0
        self.filled = 0
        self.rows_computed = 0
        self.complete = False
        if self.capacity == K:
            atoms = np.arange(K, dtype=np.int64)
            self.atom[:] = atoms
            self.slot[:] = atoms
            self.filled = K
            if _rows is not None:  # from_gram: rows given, bits of self.storage
                self.rows = _rows
            elif self.storage != "bfloat16":
                from sparsecode._parallel import gram_symmetric

                # half the flops; = sparsecode.gram(D, dtype) (float16: its bits)
                self.rows = gram_symmetric(self.D, half=self.storage == "float16")
                self.rows_computed = K
            else:
                self.rows = np.empty((K, K), dtype=store)
                self._compute(atoms, atoms)
            self.complete = True

    @classmethod
    def from_gram(cls, D, G):
        """A complete store of float16 rows over the float16 Gram matrix ``G`` of the
        unit-norm atoms ``D`` (not copied): what the pursuits run on when given
        ``gram=G``, as the GPU reads it.

        Parameters
        ----------
        D : ndarray of shape (n_atoms, n_features)
            Unit-norm atoms, float32 or float64.
        G : ndarray of float16, shape (n_atoms, n_atoms)
            As :func:`sparsecode.gram` builds with ``dtype="float16"``.
        """
        from sparsecode._validation import check_array, check_half_gram, float_dtype

        D = check_array(D, "D")
        norms2 = np.einsum("ij,ij->i", D, D, dtype=np.float64)
        G = check_half_gram(np.asarray(G), norms2)
        return cls.over_checked(D.astype(float_dtype(D), copy=False), G)

    @classmethod
    def over_checked(cls, D, G):
        """:meth:`from_gram` for ``D`` (float32 or float64) and ``G`` already checked
        (``sparsecode._validation.check_half_gram``): no pass over the matrix."""
        K = D.shape[0]
        return cls(D, max_bytes=K * K * 2, dtype="float16", defer=False,
                   _rows=G.view(STORAGE["float16"]))

    @property
    def n_atoms(self):
        return self.D.shape[0]

    @property
    def dtype(self):
        """dtype of the dictionary (and of the signals it encodes)."""
        return self.D.dtype

    @property
    def nbytes(self):
        return self.rows.nbytes

    def matches(self, norms2):
        """Whether this store was built from a dictionary with these squared atom norms
        (float64, shape (n_atoms,))."""
        rtol = _config.GRAM_CHECK_RTOL[self.dtype]
        return (norms2.shape == self.norms2.shape
                and bool(np.allclose(norms2, self.norms2, rtol=rtol, atol=0.0)))

    def coherence(self):
        """The largest off-diagonal ``|G[a, x]|`` of each atom (float64, (n_atoms,)), an
        upper bound computed once (:func:`sparsecode._parallel.coherence`), with the
        same by group of ``_config.COHERENCE_GROUP`` atoms ``x`` in :attr:`mu_groups`."""
        if self.mu is None or self.mu_groups is None:
            from sparsecode._parallel import coherence

            self.mu_group = int(_config.COHERENCE_GROUP)
            self.mu, self.mu_groups = coherence(self.D, self.mu_group)
        return self.mu

    def defers(self, n_signals, k):
        """Whether a call of ``n_signals`` signals and ``k`` steps defers missing rows."""
        if self.defer != "auto":
            return self.defer
        return self.mu is not None or 2 * n_signals * k >= self.n_atoms

    def next_round(self):
        """Start a round: reads by the kernels are stamped with its number."""
        self.round += 1
        return self.round

    def end_round(self):
        """Count the rows read in the round just ended (the eviction order)."""
        self.rounds_used += self.used == self.round

    def ensure(self, atoms):
        """Make the rows of ``atoms`` (int64, distinct, at most ``capacity``) present,
        computing the missing ones with one product and evicting, when the store is
        full, the rows not in ``atoms`` read in the fewest rounds (then the least
        recently).  Returns the number of rows computed."""
        if atoms.size > self.capacity:
            raise ValueError(f"{atoms.size} rows asked of a store of {self.capacity}")
        missing = atoms[self.slot[atoms] < 0]
        m = missing.size
        if m == 0:
            return 0
        free = self.capacity - self.filled
        slots = np.arange(self.filled, self.filled + min(free, m), dtype=np.int64)
        if m > free:
            keep = np.zeros(self.capacity, dtype=bool)
            present = self.slot[atoms]
            keep[present[present >= 0]] = True
            cand = np.flatnonzero(~keep[:self.filled])  # filled rows not asked for
            order = np.lexsort((self.used[cand], self.rounds_used[cand]))
            out = cand[order[:m - free]]
            self.slot[self.atom[out]] = -1
            slots = np.concatenate([slots, out])
        self.filled += min(free, m)
        self.atom[slots] = missing
        self.slot[missing] = slots
        self.used[slots] = self.round
        self.rounds_used[slots] = 0
        self._compute(missing, slots)
        return m

    def _compute(self, atoms, slots):
        """Rows ``G[atoms]`` into ``rows[slots]``, in
        pieces of ``_config.GRAM_TILE`` atoms: one group of single-threaded GEMMs per piece,
        on every Numba thread."""
        from sparsecode._blas import one_blas_thread
        from sparsecode._parallel import group_correlations

        piece = int(_config.GRAM_TILE)
        K = self.n_atoms
        buf = np.empty((min(piece, atoms.size), K), dtype=self.dtype)
        with one_blas_thread():
            for p0 in range(0, atoms.size, piece):
                p1 = min(p0 + piece, atoms.size)
                A = np.ascontiguousarray(self.D[atoms[p0:p1]])
                out = buf[:p1 - p0]
                group_correlations(A, self.D, np.zeros(1, dtype=np.int64), p1 - p0,
                                   int(_config.GEMM_COLS), out)
                if self.storage in STORAGE:
                    out = narrow(out, self.storage)
                contiguous = np.all(np.diff(slots[p0:p1]) == 1)
                if contiguous:
                    self.rows[slots[p0]:slots[p0] + p1 - p0] = out
                else:
                    self.rows[slots[p0:p1]] = out
        self.rows_computed += atoms.size
