"""ITDA: a dictionary built from the activations themselves by matching pursuit (Leask,
Nanda and Al Moubayed, 2025, "Inference-Time Decomposition of Activations").

Stream the signals; encode each with ``k`` steps of matching pursuit on the current
dictionary; when its relative error ``||x - x_hat||^2 / ||x||^2`` exceeds ``threshold``,
add the signal itself, normalised, as a new atom.  No gradient, no pass over the data
but one.

The Gram matrix ``G = D D^T`` grows with the dictionary (rows and columns appended in
place; the capacity doubles), so the pursuit always runs on the Gram path: an added atom
costs ``O(n_atoms n_features)``, never a rebuild.

Batch semantics (``batch_size`` rows at a time):

1. every row of the batch is encoded on the dictionary as it was when the batch started;
   rows at or under the threshold are done;
2. the others are candidates, taken in the batch's order: each is encoded again on the
   dictionary as it is then (with the atoms added before it in this batch) and added if
   it is still over the threshold (and ``max_atoms`` is not reached).

With ``batch_size=1`` this is exactly the sequential algorithm.  With larger batches a
row under the threshold at the batch's start is not encoded again, and a candidate is
checked against the candidates added before it (so near-duplicates within a batch are
not both added).
"""

import numbers

import numpy as np

from sparsecode import _config
from sparsecode._estimator import ParamsMixin
from sparsecode._rules import RULES
from sparsecode._validation import check_array, check_choice, check_count, describe
from sparsecode.codes import SparseCodes


class ITDA(ParamsMixin):
    """A dictionary of normalised activations, grown by matching pursuit.

    Parameters
    ----------
    k : int
        Matching-pursuit steps per signal (the paper's default is 40).
    threshold : float in (0, 1)
        A signal whose relative error ``||x - x_hat||^2 / ||x||^2`` after ``k`` steps
        exceeds this becomes an atom.
    max_atoms : int, optional
        Stop adding atoms at this many (the rest of the stream is only encoded).
    selection : {"abs", "positive", "signed"}
        Selection rule of the pursuit (see :func:`sparsecode.mp`).
    batch_size : int
        Rows encoded together (see the module's batch semantics).
    dtype : {"float32", "float64"}
        dtype of the atoms and of the pursuit.
    random_state : int, optional
        With :meth:`fit` on an array: the rows are visited in the order of a permutation
        drawn from this seed (None: in their order).  Streams are taken as they come.

    Attributes
    ----------
    components_ : ndarray of shape (n_atoms, n_features)
        The atoms, unit rows: normalised signals of the stream.
    atom_sources_ : ndarray of shape (n_atoms,), int64
        For each atom, the index of its signal in the training stream (rows counted over
        every :meth:`partial_fit` call; for :meth:`fit` on an array, the row of the
        array).
    n_atoms_ : int
    n_rows_seen_ : int
        Rows processed.
    n_features_in_ : int
    """

    def __init__(self, k=40, threshold=0.1, *, max_atoms=None, selection="abs",
                 batch_size=1024, dtype="float32", random_state=None):
        self.k = k
        self.threshold = threshold
        self.max_atoms = max_atoms
        self.selection = selection
        self.batch_size = batch_size
        self.dtype = dtype
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters

    def _check_params(self):
        check_count(self.k, "k", 1)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 < t < 1.0:
            raise ValueError(f"threshold must be a number in (0, 1); got {describe(t)}")
        if self.max_atoms is not None:
            check_count(self.max_atoms, "max_atoms", 1)
        check_choice(self.selection, "selection", tuple(RULES))
        check_count(self.batch_size, "batch_size", 1)
        dt = np.dtype(self.dtype) if isinstance(self.dtype, (str, type, np.dtype)) else None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        return dt

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Build the dictionary from ``X`` (one pass), starting from an empty one.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or an iterable of such arrays
            (e.g. a :class:`sparsecode.io.ActivationReader`'s ``epoch(0)``, or the
            reader itself)
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        self.__dict__.pop("_D", None)
        if hasattr(X, "epoch") and callable(X.epoch):
            X = X.epoch(0)
        if isinstance(X, (list, tuple)):
            try:  # rows as nested lists (one array), or a list of batches
                rows = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError):
                rows = None
            if rows is not None and rows.ndim == 2:
                X = rows
        if isinstance(X, np.ndarray) or hasattr(X, "__array__") and not hasattr(X, "__next__"):
            X = check_array(X, "X")
            order = (np.arange(len(X)) if self.random_state is None
                     else np.random.default_rng(self.random_state).permutation(len(X)))
            bs = self.batch_size
            for b0 in range(0, len(X), bs):
                rows = order[b0:b0 + bs]
                self._partial(X[rows], rows if self.random_state is not None else None)
            return self
        for Xb in X:
            self.partial_fit(Xb)
        return self

    def partial_fit(self, X, y=None):
        """Process the rows of ``X`` (in ``batch_size`` batches), growing the dictionary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        X = check_array(X, "X")
        bs = self.batch_size
        for b0 in range(0, len(X), bs):
            self._partial(X[b0:b0 + bs], None)
        return self

    def _start(self, n_features, dt):
        cap = 64
        self._D = np.zeros((cap, n_features), dtype=dt)
        self._G = np.zeros((cap, cap), dtype=dt)
        self._sources = np.zeros(cap, dtype=np.int64)
        self.n_atoms_ = 0
        self.n_rows_seen_ = 0
        self.n_features_in_ = n_features
        self._gram_copy = None

    def _partial(self, Xb, rows):
        """One batch; ``rows`` are the batch's source indices (None: the stream's)."""
        dt = self._check_params()
        if "_D" not in self.__dict__:
            self._start(Xb.shape[1], dt)
        if Xb.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Xb.shape[1]} features per row; the dictionary has "
                             f"{self.n_features_in_}")
        Xb = np.ascontiguousarray(Xb, dtype=self._D.dtype)
        if rows is None:
            rows = self.n_rows_seen_ + np.arange(len(Xb), dtype=np.int64)
        xnorm2 = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
        cand = np.flatnonzero(self.relative_errors(Xb, xnorm2) > self.threshold)
        if cand.size and (self.max_atoms is None or self.n_atoms_ < self.max_atoms):
            self._add_candidates(Xb, xnorm2, cand, np.asarray(rows, dtype=np.int64))
        self.n_rows_seen_ += len(Xb)

    def _add_candidates(self, Xb, xnorm2, cand, rows):
        from sparsecode.dictionary._itda_numba import add_candidates

        K = self.n_atoms_
        if K + cand.size > self._D.shape[0]:
            self._grow(max(2 * self._D.shape[0], K + cand.size))
        dt = self._D.dtype
        it = np.dtype(np.int32 if dt == np.float32 else np.int64)
        c = np.empty(self._D.shape[0], dtype=dt)
        if K:
            from sparsecode._parallel import correlations_by_group

            C0 = correlations_by_group(np.ascontiguousarray(Xb[cand]), self._D[:K])
        else:
            C0 = np.empty((cand.size, 0), dtype=dt)
        self.n_atoms_ = add_candidates(
            Xb, xnorm2, cand, rows, C0, self._D, self._G, self._sources, K, int(self.k),
            RULES[self.selection], it.type(np.iinfo(it).max), _config.rtol(dt),
            float(self.threshold), -1 if self.max_atoms is None else int(self.max_atoms),
            c, c.view(it))
        if self.n_atoms_ != K:
            self._gram_copy = None

    def relative_errors(self, X, xnorm2=None):
        """``||x - x_hat||^2 / ||x||^2`` of each row after ``k`` MP steps on the current
        dictionary (1 with no atom yet; 0 for a zero row).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), C-contiguous, in the atoms' dtype
        xnorm2 : ndarray of shape (n_samples,), float64, optional

        Returns
        -------
        ndarray of shape (n_samples,), float64
        """
        from sparsecode.dictionary._itda_numba import mp_energies

        if xnorm2 is None:
            xnorm2 = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        K = self.n_atoms_
        if K == 0:
            return np.where(xnorm2 > 0, 1.0, 0.0)
        from sparsecode._blas import one_blas_thread
        from sparsecode._parallel import correlations_by_group

        C = correlations_by_group(X, self._D[:K])
        dt = self._D.dtype
        it = np.dtype(np.int32 if dt == np.float32 else np.int64)
        energy = np.empty(len(X), dtype=np.float64)
        with one_blas_thread():
            mp_energies(C, C.view(it), self._G, RULES[self.selection],
                        it.type(np.iinfo(it).max), int(self.k), xnorm2,
                        _config.rtol(dt) * np.sqrt(xnorm2), energy)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(xnorm2 > 0, np.maximum(energy, 0.0) / xnorm2, 0.0)

    def _append_gram(self, K):
        from sparsecode.dictionary._itda_numba import gram_row

        g = np.empty(K + 1, dtype=np.float64)
        gram_row(self._D, K, g)
        self._G[K, :K + 1] = g
        self._G[:K + 1, K] = g

    def _restore(self, components, sources, n_rows_seen):
        """The state of a saved model (see :func:`sparsecode.io.load_itda`): the atoms,
        their sources and the rows seen; the Gram matrix rebuilt row by row exactly as it
        grew."""
        dt = self._check_params()
        K, nf = components.shape
        self._start(nf, dt)
        self._grow(max(64, K))
        self._D[:K] = components
        self._sources[:K] = sources
        for j in range(K):
            self._append_gram(j)
        self.n_atoms_ = K
        self.n_rows_seen_ = int(n_rows_seen)
        return self

    def _grow(self, cap):
        K = self.n_atoms_
        D = np.zeros((cap, self._D.shape[1]), dtype=self._D.dtype)
        G = np.zeros((cap, cap), dtype=self._D.dtype)
        src = np.zeros(cap, dtype=np.int64)
        D[:K], G[:K, :K], src[:K] = self._D[:K], self._G[:K, :K], self._sources[:K]
        self._D, self._G, self._sources = D, G, src

    # ------------------------------------------------------------------ results

    def _fitted(self):
        if "_D" not in self.__dict__:
            from sparsecode.sae import NotFittedError

            raise NotFittedError("this ITDA has not been fitted; call fit or partial_fit")

    @property
    def components_(self):
        self._fitted()
        return self._D[:self.n_atoms_]

    @property
    def atom_sources_(self):
        self._fitted()
        return self._sources[:self.n_atoms_]

    @property
    def gram_(self):
        """ndarray of shape (n_atoms, n_atoms): ``D D^T``, grown with the atoms."""
        self._fitted()
        return self._G[:self.n_atoms_, :self.n_atoms_]

    def transform(self, X, k=None):
        """Codes of ``X``: ``k`` (default: the model's) MP steps on the atoms.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        k : int, optional

        Returns
        -------
        SparseCodes
        """
        import sparsecode

        self._fitted()
        if self.n_atoms_ == 0:
            raise ValueError("the dictionary is empty: no row exceeded the threshold")
        X = check_array(X, "X")
        if self._gram_copy is None:
            self._gram_copy = np.ascontiguousarray(self.gram_)
        return sparsecode.mp(X.astype(self._D.dtype, copy=False), self.components_,
                             k=self.k if k is None else k, selection=self.selection,
                             gram=self._gram_copy)

    def to_mpsae(self):
        """An :class:`~sparsecode.MPSAE` that encodes like this dictionary (its atoms,
        unit norm, matching pursuit with the same ``k`` and selection, no pre-bias): what
        the ``encode`` and ``export`` commands and every MPSAE tool take.

        Returns
        -------
        MPSAE
        """
        from sparsecode.sae import MPSAE

        self._fitted()
        if self.n_atoms_ == 0:
            raise ValueError("the dictionary is empty: no row exceeded the threshold")
        D = self.components_.copy()
        m = MPSAE(self.n_atoms_, self.k, selection=self.selection, unit_atoms=True,
                  pre_bias=False, init=D, dtype=D.dtype.name, progress=False,
                  resample_dead=False)
        return m.start(D)

    def inverse_transform(self, codes):
        """Reconstructions ``codes @ components_``.

        Parameters
        ----------
        codes : SparseCodes

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        self._fitted()
        if not isinstance(codes, SparseCodes):
            raise TypeError(f"codes must be SparseCodes; got {type(codes).__name__}")
        return codes.decode(self.components_)

    def score(self, X, y=None):
        """Explained variance of the reconstructions of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        float
        """
        from sparsecode.metrics import explained_variance

        X = check_array(X, "X")
        return explained_variance(X, self.inverse_transform(self.transform(X)))
