"""Writing activation files: an appendable, resumable writer, and a whole array at once.

The file holds one 2-D dataset ``(n_samples, n_features)`` (the layout
:class:`~sparsecode.io.activations.ActivationReader` reads), appendable along the rows in
chunks of about 1 MiB, written at ``PATH.partial`` and renamed into place when complete.
"""

import numpy as np

from sparsecode._validation import check_count
from sparsecode.io._append import CHUNK_BYTES, AppendableFile, chunk_rows
from sparsecode.io._dtypes import SOURCE_DTYPES, float32_to_bfloat16, source_dtype
from sparsecode.io._h5 import get_dataset


class ActivationWriter(AppendableFile):
    """Write an activation file row block by row block; resumable.

    The dataset is ``(None, n_features)``-appendable with chunks of about 1 MiB.  Written
    at ``PATH.partial`` and renamed to ``PATH`` when the ``with`` block ends without an
    error (or :meth:`finish`); after an interruption, ``resume=True`` continues after the
    committed rows (:attr:`n_rows`).

    Parameters
    ----------
    path : str or os.PathLike
    n_features : int
    dataset : str
        Name of the dataset.
    dtype : {"float32", "float16", "float64", "bfloat16"}
        Stored element type (bfloat16: rounded to nearest, stored as uint16).
    compression : {None, "gzip", "lzf"}
        HDF5 filter (with the byte-shuffle filter).
    compression_opts : int, optional
        gzip level.
    resume, overwrite : bool
        See :class:`sparsecode.io.codes.CodesWriter`.
    commit_seconds : float
        Commit (flush and record the row count) at most this often while appending.
    attrs : dict, optional
        Extra attributes of the dataset.
    """

    kind = "activations"

    def __init__(self, path, n_features, *, dataset="activations", dtype="float32",
                 compression=None, compression_opts=None, resume=False, overwrite=False,
                 commit_seconds=5.0, attrs=None):
        self.n_features = check_count(n_features, "n_features")
        self.dtype = str(np.dtype(dtype)) if dtype != "bfloat16" else "bfloat16"
        if self.dtype not in SOURCE_DTYPES:
            raise ValueError(f"dtype must be one of {SOURCE_DTYPES}; got {dtype!r}")
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"compression must be None, 'gzip' or 'lzf'; got {compression!r}")
        self.dataset = dataset
        self.names = (dataset,)
        self._compression = (compression, compression_opts)
        self._attrs = dict(attrs or {})
        super().__init__(path, resume=resume, overwrite=overwrite,
                         commit_seconds=commit_seconds)

    def _storage(self):
        return np.dtype(np.uint16) if self.dtype == "bfloat16" else np.dtype(self.dtype)

    def _create(self, f):
        st = self._storage()
        rows = chunk_rows(self.n_features * st.itemsize, CHUNK_BYTES)
        comp, opts = self._compression
        ds = f.create_dataset(self.dataset, shape=(0, self.n_features), dtype=st,
                              maxshape=(None, self.n_features), chunks=(rows, self.n_features),
                              compression=comp, compression_opts=opts, shuffle=comp is not None)
        if self.dtype == "bfloat16":
            ds.attrs["dtype"] = "bfloat16"
        for key, value in self._attrs.items():
            ds.attrs[key] = value

    def _check_resume(self, f):
        ds = get_dataset(f, self.dataset)
        self._require("n_features", self.n_features, ds.shape[1])
        self._require("dtype", self.dtype, source_dtype(ds))

    def append(self, X):
        """Append rows.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X must have shape (n_rows, {self.n_features}); got {X.shape}"
            )
        if X.dtype.kind not in "fiu":
            raise TypeError(f"X must hold real numbers; got dtype {X.dtype}")
        _check_range(X, self.dtype)
        if self.dtype == "bfloat16":
            X = float32_to_bfloat16(X.astype(np.float32, copy=False))
        else:
            X = X.astype(self.dtype, copy=False)
        self._append([X])


def _check_range(X, dtype):
    """Refuse finite values that the stored type would turn into infinity."""
    if dtype not in ("float16", "bfloat16", "float32") or X.size == 0:
        return
    # values at or above the rounding midpoint past the largest finite value overflow
    limit = {"float16": 65520.0, "bfloat16": 3.3961775e38}.get(
        dtype, float(np.finfo(np.float32).max))
    if dtype != "bfloat16" and np.finfo(
            X.dtype if X.dtype.kind == "f" else np.float64).max <= limit:
        return
    finite = np.isfinite(X)
    big = finite & (np.abs(X) >= limit if dtype != "float32" else np.abs(X) > limit)
    if big.any():
        row = int(np.flatnonzero(big.any(axis=1))[0])
        raise ValueError(
            f"row {row} of X holds {X[row][big[row]][0]!r}, beyond the {dtype} range "
            f"(+-{float(limit):.6g}); store as float32 or scale the activations"
        )


def write_activations(path, X, *, dataset="activations", dtype="float32", compression=None,
                      compression_opts=None, overwrite=False, rows_per_write=65536):
    """Write an in-memory array as an activation file (atomically).

    Parameters
    ----------
    path : str or os.PathLike
    X : array-like of shape (n_samples, n_features)
    dataset, dtype, compression, compression_opts, overwrite
        See :class:`ActivationWriter`.
    rows_per_write : int
        Rows converted and written at a time.

    Returns
    -------
    pathlib.Path
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    with ActivationWriter(path, X.shape[1], dataset=dataset, dtype=dtype,
                          compression=compression, compression_opts=compression_opts,
                          overwrite=overwrite) as w:
        for s in range(0, X.shape[0], rows_per_write):
            w.append(X[s:s + rows_per_write])
    return w.path
