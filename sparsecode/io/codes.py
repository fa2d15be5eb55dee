"""Codes files: ``indices`` and ``values`` of :class:`~sparsecode.SparseCodes`, written
as they are computed and read back by row range."""

import json

import numpy as np

from sparsecode.codes import SparseCodes
from sparsecode.io._append import CHUNK_BYTES, AppendableFile, chunk_rows
from sparsecode.io._h5 import (
    _json_default,
    check_format,
    get_dataset,
    open_file,
    read_json_attr,
    write_json_attr,
)


class CodesWriter(AppendableFile):
    """Write sparse codes to an HDF5 file batch by batch; resumable.

    The file holds ``indices`` (int32, -1 where unused) and ``values`` (float32 or
    float64), both ``(n_samples, k)``, with ``n_atoms`` and the solver settings in the
    root's attrs.  It is written at ``PATH.partial`` and renamed to ``PATH`` when the
    ``with`` block ends without an error (or by :meth:`finish`).

    Parameters
    ----------
    path : str or os.PathLike
    n_atoms : int
        Atoms of the dictionary the codes refer to.
    k : int
        Width of the stored rows; narrower codes are padded, wider ones refused.
    dtype : {"float32", "float64"}
        dtype of ``values``.
    settings : dict, optional
        JSON-serialisable settings of the encoder (solver, k, tol, model, ...), stored in
        ``attrs["settings"]``.  A resumed file must have been started with the same.
    resume : bool
        Continue the partial file of an interrupted run after its committed rows
        (:attr:`n_rows`).  Without it, an existing partial file is an error.
    overwrite : bool
        Replace an existing file at ``path`` (and a partial one) instead of refusing.
    commit_seconds : float
        Commit at most this often while appending.
    sources : dict, optional
        JSON-serialisable note of where the codes come from (input paths...), stored in
        ``attrs["sources"]`` and not compared on resume.
    """

    kind = "codes"
    names = ("indices", "values")

    def __init__(self, path, n_atoms, k, *, dtype="float32", settings=None, resume=False,
                 overwrite=False, commit_seconds=5.0, sources=None):
        self.n_atoms = int(n_atoms)
        self.k = int(k)
        if self.n_atoms < 1 or self.k < 1:
            raise ValueError(f"n_atoms and k must be >= 1; got {n_atoms} and {k}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        self.settings = dict(settings or {})
        self.sources = dict(sources or {})
        super().__init__(path, resume=resume, overwrite=overwrite,
                         commit_seconds=commit_seconds)

    def _create(self, f):
        rows = chunk_rows(self.k * 4, CHUNK_BYTES // 2)
        for name, dt in (("indices", np.int32), ("values", self.dtype)):
            f.create_dataset(name, shape=(0, self.k), dtype=dt, maxshape=(None, self.k),
                             chunks=(rows, self.k))
        f.attrs["n_atoms"] = self.n_atoms
        write_json_attr(f, "settings", self.settings)
        write_json_attr(f, "sources", self.sources)

    def _check_resume(self, f):
        self._require("n_atoms", self.n_atoms, int(f.attrs["n_atoms"]))
        self._require("k", self.k, f["indices"].shape[1])
        self._require("dtype", self.dtype, f["values"].dtype)
        # compare as stored: JSON turns tuples into lists
        stored = json.loads(json.dumps(self.settings, default=_json_default))
        self._require("settings", stored, read_json_attr(f, "settings", {}))

    def append(self, codes):
        """Append a batch of codes.

        Parameters
        ----------
        codes : SparseCodes
            Of ``n_atoms`` atoms and width at most ``k``.
        """
        if not isinstance(codes, SparseCodes):
            raise TypeError(f"codes must be SparseCodes; got {type(codes).__name__}")
        if codes.n_atoms != self.n_atoms:
            raise ValueError(f"codes refer to {codes.n_atoms} atoms, not {self.n_atoms}")
        idx, val = np.asarray(codes.indices), np.asarray(codes.values)
        width = idx.shape[1]
        if width > self.k:
            used = int((idx >= 0).sum(axis=1).max(initial=0))
            if used > self.k:
                raise ValueError(f"codes use up to {used} atoms per row; the file holds {self.k}")
            idx, val = idx[:, : self.k], val[:, : self.k]
        elif width < self.k:
            pad = ((0, 0), (0, self.k - width))
            idx = np.pad(idx, pad, constant_values=-1)
            val = np.pad(val, pad)
        self._append([idx.astype(np.int32, copy=False), val.astype(self.dtype, copy=False)])


def read_codes(path, start=0, stop=None):
    """Read rows ``[start, stop)`` of a codes file.

    Parameters
    ----------
    path : str or os.PathLike
        A finished codes file (or a ``.partial`` one: its committed rows).
    start, stop : int, optional

    Returns
    -------
    SparseCodes
    """
    with open_file(path) as f:
        check_format(f, "codes")
        n = int(f.attrs["committed_rows"])
        start, stop, _ = slice(start, stop).indices(n)
        stop = max(start, stop)
        idx = get_dataset(f, "indices")[start:stop]
        val = get_dataset(f, "values")[start:stop]
        return SparseCodes(idx, val, int(f.attrs["n_atoms"]))


def codes_settings(path):
    """dict: the encoder settings stored with a codes file, plus ``n_atoms``, ``n_rows``
    and ``k``."""
    with open_file(path) as f:
        check_format(f, "codes")
        out = read_json_attr(f, "settings", {})
        out.update(n_atoms=int(f.attrs["n_atoms"]), n_rows=int(f.attrs["committed_rows"]),
                   k=f["indices"].shape[1])
        return out
