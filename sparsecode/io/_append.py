"""Appendable HDF5 files that survive interruption: the base of the activation and codes
writers."""

import time
from pathlib import Path

import h5py
import numpy as np

from sparsecode.io._h5 import (
    FileFormatError,
    check_format,
    fsync_file,
    open_file,
    partial_path,
    replace_into_place,
)

#: Target chunk size of every appendable dataset.
CHUNK_BYTES = 1 << 20


def chunk_rows(row_bytes, chunk_bytes=CHUNK_BYTES):
    """int: rows per chunk so that a chunk holds about ``chunk_bytes``."""
    return max(1, int(chunk_bytes) // max(1, int(row_bytes)))


class AppendableFile:
    """An HDF5 file of datasets that grow along their first axis, written at
    ``PATH.partial`` and renamed to ``PATH`` by :meth:`finish`.

    ``attrs["committed_rows"]`` counts the rows known to be on disk; :meth:`commit`
    writes the rows out (flush and fsync), then advances it, and runs at most every
    ``commit_seconds`` from :meth:`append`.  Reopened with ``resume=True``, the partial
    file is cut back to its committed rows and writing goes on from there.

    Subclasses set ``kind`` and implement ``_create(f)`` (make the datasets, named in
    ``self.names``) and ``_check_resume(f)`` (raise if the partial file was made with
    other settings).
    """

    kind = None
    names = ()

    def __init__(self, path, *, resume=False, overwrite=False, commit_seconds=5.0):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.commit_seconds = float(commit_seconds)
        self.resumed = False
        self._file = None
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} already exists; choose another output path or overwrite it"
            )
        if self.partial.exists() and resume:
            self._file = open_file(self.partial, "r+")
            try:
                check_format(self._file, self.kind)
                self._check_resume(self._file)
                n = int(self._file.attrs.get("committed_rows", 0))
                if any(n > self._file[name].shape[0] for name in self.names):
                    raise FileFormatError(
                        f"{self.partial}: records {n} committed rows but holds fewer; the "
                        "file is damaged, delete it to start over"
                    )
                for name in self.names:
                    self._file[name].resize(n, axis=0)
            except BaseException:
                self._file.close()
                raise
            self.resumed = True
        else:
            if self.partial.exists() and not overwrite:
                raise FileExistsError(
                    f"{self.partial} is left from an interrupted run; resume it, or delete "
                    "it to start over"
                )
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self.partial, "w")
            self._file.attrs["sparsecode_format"] = self.kind
            self._file.attrs["committed_rows"] = 0
            self._file.attrs["complete"] = False
            self._create(self._file)
            self._file.flush()
        self._datasets = [self._file[name] for name in self.names]
        self._rows = int(self._file.attrs["committed_rows"])
        self._committed_at = time.monotonic()

    # subclasses
    def _create(self, f):
        raise NotImplementedError

    def _check_resume(self, f):
        pass

    @property
    def n_rows(self):
        """int: rows written so far (after a resume, the committed rows of the earlier
        run)."""
        return self._rows

    def _append(self, arrays):
        """Write the rows of ``arrays`` (one per name in ``self.names``, same length)."""
        if self._file is None:
            raise ValueError(f"{self.partial}: the writer is closed")
        n = len(arrays[0])
        start, stop = self._rows, self._rows + n
        for ds, a in zip(self._datasets, arrays, strict=True):
            ds.resize(stop, axis=0)
            if n:
                ds.write_direct(np.ascontiguousarray(a), dest_sel=np.s_[start:stop])
        self._rows = stop
        if time.monotonic() - self._committed_at >= self.commit_seconds:
            self.commit()

    def commit(self):
        """Make every row written so far durable: flush, then record the count."""
        f = self._file
        f.flush()
        fsync_file(f)  # the rows are on disk before the count that vouches for them
        f.attrs["committed_rows"] = self._rows
        f.flush()
        fsync_file(f)
        self._committed_at = time.monotonic()

    def close(self):
        """Commit and close, leaving the partial file to be resumed."""
        if self._file is not None:
            try:
                self.commit()
            finally:
                self._file.close()
                self._file = None

    def discard(self):
        """Close and delete the partial file (for a run that failed on bad input)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)

    def finish(self):
        """Mark the file complete, close it and move it to its final path.

        Returns
        -------
        pathlib.Path
            The final path.
        """
        if self._file is None:
            raise ValueError(f"{self.partial}: the writer is closed")
        self._file.attrs["complete"] = True
        self.commit()
        self._file.close()
        self._file = None
        replace_into_place(self.partial, self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self.close()
        return False

    def _require(self, name, expected, actual):
        if expected != actual:
            raise FileFormatError(
                f"{self.partial}: cannot resume, it was written with {name} = {actual!r}, "
                f"not {expected!r}"
            )
