"""Signals as dask arrays: HDF5 datasets read by the workers, arrays as they are."""

import contextlib
import warnings

import numpy as np

from sparsecode._validation import check_count
from sparsecode.distributed._cluster import require_dask

#: Default rows per block: about this many bytes of signals (in the output dtype).
BLOCK_BYTES = 32 * 2**20


@contextlib.contextmanager
def _quiet():
    """No warning about slow tall-chunk reads from a reader that only reads given row
    ranges (its buffer is unused)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* is chunked ", category=UserWarning)
        yield


def read_rows(path, dataset, ranges, dtype="float32"):
    """Rows ``[a, b)`` for each ``(a, b)`` in ``ranges``, one after another; runs on a
    worker, which opens the file itself (h5py handles never travel).

    Parameters
    ----------
    path : str
    dataset : str
    ranges : sequence of (int, int)
        File row ranges.
    dtype : {"float32", "float64"}

    Returns
    -------
    ndarray of shape (sum of b - a, n_features)
    """
    from sparsecode.io import ActivationReader

    with _quiet(), ActivationReader(path, dataset, shuffle=False, dtype=dtype,
                                    buffer_bytes=1) as r:
        out = np.empty((sum(b - a for a, b in ranges), r.n_features), r.dtype)
        row = 0
        for a, b in ranges:
            out[row:row + b - a] = r.read(a, b)
            row += b - a
    return out


def describe_hdf5(path, dataset, dtype="float32"):
    """``(n_rows, n_features, block_rows)`` of an activation dataset (opened here)."""
    from sparsecode.io import ActivationReader

    with _quiet(), ActivationReader(path, dataset, shuffle=False, dtype=dtype,
                                    buffer_bytes=1) as r:
        return r.n_rows, r.n_features, r.block_rows


def default_block_rows(n_features, itemsize, aligned=1):
    """About :data:`BLOCK_BYTES` of rows, a multiple of ``aligned``."""
    rows = max(1, BLOCK_BYTES // (n_features * itemsize))
    return max(aligned, rows // aligned * aligned)


def from_hdf5(path, dataset, *, block_rows=None, dtype="float32"):
    """A dask array of an HDF5 activation dataset, each block read by the worker that
    needs it (float16/bfloat16 files are converted there).

    Parameters
    ----------
    path : str or os.PathLike
        Readable at this path on every worker.
    dataset : str
    block_rows : int, optional
        Rows per block (default: about 32 MiB of ``dtype``, whole HDF5 chunks).
    dtype : {"float32", "float64"}

    Returns
    -------
    dask.array.Array of shape (n_rows, n_features)
    """
    require_dask()
    import dask
    import dask.array as da

    path = str(path)
    dt = np.dtype(dtype)
    n, d, aligned = describe_hdf5(path, dataset, dt)
    if block_rows is None:
        block_rows = default_block_rows(d, dt.itemsize, aligned)
    block_rows = check_count(block_rows, "block_rows")
    read = dask.delayed(read_rows, pure=True)
    blocks = [
        da.from_delayed(read(path, dataset, [(a, min(a + block_rows, n))], dt.name),
                        shape=(min(a + block_rows, n) - a, d), dtype=dt)
        for a in range(0, n, block_rows)
    ]
    return da.concatenate(blocks, axis=0)


def as_dask_array(X, *, block_rows=None, dtype=None):
    """Signals as a 2-D dask array with every row whole in one block.

    Parameters
    ----------
    X : dask.array.Array, ndarray, or (path, dataset)
        A tuple ``(path, dataset)`` names an HDF5 activation dataset (:func:`from_hdf5`).
    block_rows : int, optional
        Rows per block for arrays and files (a dask array keeps its row blocks).
    dtype : {"float32", "float64"}, optional
        Output float type (default: float32 for files, float64 for integer arrays, else
        the array's).

    Returns
    -------
    dask.array.Array
    """
    require_dask()
    import dask.array as da

    if isinstance(X, tuple):
        if len(X) != 2 or not all(isinstance(v, str) or hasattr(v, "__fspath__") for v in X):
            raise TypeError("an HDF5 source is given as (path, dataset); got a tuple of "
                            f"{len(X)} items")
        return from_hdf5(*X, block_rows=block_rows, dtype=dtype or "float32")
    if not isinstance(X, da.Array):
        from sparsecode._validation import check_array

        X = check_array(X, "X")
        rows = block_rows or default_block_rows(X.shape[1], X.dtype.itemsize)
        X = da.from_array(X, chunks=(check_count(rows, "block_rows"), -1))
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got {X.ndim}-D")
    if X.dtype.kind not in "fiu":
        raise TypeError(f"X must hold real numbers; got dtype {X.dtype}")
    out = np.dtype(dtype) if dtype is not None else (
        X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64))
    if out not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {out}")
    if X.dtype != out:
        X = X.astype(out)
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X
