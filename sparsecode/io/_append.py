"""Appendable HDF5 files that survive interruption: the base of the activation and codes
writers."""

import contextlib
import errno
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
    write_errno,
    write_error,
)
from sparsecode.io.guard import OutputLock

#: Target chunk size of every appendable dataset.
CHUNK_BYTES = 1 << 20
#: Free space kept on the disk beyond a write's rows and chunks (HDF5's own records).
ROOM_RESERVE = 1 << 18


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
        # before anything is touched: another live writer of this path keeps it
        self._lock = OutputLock(self.path)
        try:
            self._open(resume, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume, overwrite):
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
        self._check_room(sum(np.asarray(a).nbytes for a in arrays))
        failed = None
        try:
            for ds, a in zip(self._datasets, arrays, strict=True):
                ds.resize(stop, axis=0)
                if n:
                    ds.write_direct(np.ascontiguousarray(a), dest_sel=np.s_[start:stop])
        except (OSError, RuntimeError) as exc:
            failed = exc.with_traceback(None)
        ds = None  # no HDF5 object outlives a failed write in this frame
        if failed is not None:
            self._fail(failed)
        self._rows = stop
        if time.monotonic() - self._committed_at >= self.commit_seconds:
            self.commit()

    def commit(self):
        """Make every row written so far durable: flush, then record the count."""
        f = self._file
        failed = None
        try:
            f.flush()
            fsync_file(f)  # the rows are on disk before the count that vouches for them
            f.attrs["committed_rows"] = self._rows
            f.flush()
            fsync_file(f)
        except (OSError, RuntimeError) as exc:
            failed = exc.with_traceback(None)
        f = None
        if failed is not None:
            self._fail(failed)
        self._committed_at = time.monotonic()

    def _check_room(self, nbytes):
        """Refuse a write the disk has no room for, before HDF5 holds data it cannot write
        (an HDF5 file whose buffered writes fail cannot be closed cleanly): commit what is
        written, close, and raise one :class:`OSError` line."""
        import shutil

        chunks = sum(int(np.prod(ds.chunks)) * ds.dtype.itemsize for ds in self._datasets)
        need = int(nbytes) + chunks + ROOM_RESERVE
        free = shutil.disk_usage(self.partial.parent).free
        if free >= need:
            return
        self.close()
        error = OSError(
            f"{self.partial}: the disk is full ({free / 2**20:.1f} MiB free; the next rows "
            f"need about {need / 2**20:.1f} MiB); the {self._rows:,} rows written before "
            "are kept: make room and continue with --resume"
        )
        error.errno = errno.ENOSPC
        raise error

    def _fail(self, exc):
        """A write failed (disk full, I/O error): close the file as far as it goes, keep
        it for a resume from its committed rows, and raise one :class:`OSError` line."""
        f, self._file, self._datasets = self._file, None, []
        with contextlib.suppress(Exception):
            f.close()  # what it could not write stays unwritten
        del f
        committed = _committed_rows(self.partial)
        self._lock.release()
        error = OSError(f"{self.partial}: cannot write ({write_error(exc)}); the "
                        f"{committed:,} rows committed before are kept: make room and "
                        "continue with --resume")
        error.errno = write_errno(exc)
        raise error

    def close(self):
        """Commit and close, leaving the partial file to be resumed."""
        try:
            if self._file is not None:
                try:
                    self.commit()
                finally:
                    self._file.close()
                    self._file = None
        finally:
            self._lock.release()

    def discard(self):
        """Close and delete the partial file (for a run that failed on bad input)."""
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
            self.partial.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def finish(self):
        """Mark the file complete, close it and move it to its final path.

        Returns
        -------
        pathlib.Path
            The final path.
        """
        if self._file is None:
            raise ValueError(f"{self.partial}: the writer is closed")
        try:
            self._file.attrs["complete"] = True
            self.commit()
            self._file.close()
            self._file = None
            replace_into_place(self.partial, self.path)
        finally:
            self._lock.release()
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
        if isinstance(expected, dict) and isinstance(actual, dict) and expected != actual:
            keys = sorted(set(expected) | set(actual), key=str)
            diff = [k for k in keys if expected.get(k) != actual.get(k)]
            raise FileFormatError(
                f"{self.partial}: cannot resume, it was written with other {name}: "
                + "; ".join(f"{k} = {actual.get(k)!r}, not {expected.get(k)!r}" for k in diff)
            )
        if expected != actual:
            raise FileFormatError(
                f"{self.partial}: cannot resume, it was written with {name} = {actual!r}, "
                f"not {expected!r}"
            )


def _committed_rows(path):
    """int: the rows a partial file vouches for (0 when it cannot be read)."""
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs.get("committed_rows", 0))
    except Exception:  # noqa: BLE001 - a file cut short by the failed write
        return 0
