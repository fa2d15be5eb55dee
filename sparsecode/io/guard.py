"""What keeps one run from damaging another's files or its own inputs: a lock per output
path, the check that no output is an input, and the identity of inputs for a resume."""

import hashlib
import os
from pathlib import Path

import numpy as np

LOCK_SUFFIX = ".lock"

try:
    import fcntl
except ImportError:  # no POSIX locks here: runs are not protected from each other
    fcntl = None

#: Locks this process holds: path -> [file descriptor, depth] (a lock is re-entrant
#: within a process, e.g. a job that locks OUT and then opens OUT's writer).
_held = {}


def lock_path(path):
    """pathlib.Path: the lock file of the output ``path``."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


class OutputLock:
    """An exclusive lock on an output path (``PATH.lock``, held while the run writes
    ``PATH``, ``PATH.partial`` or its checkpoint), released by :meth:`release` or when the
    process ends, however it ends.

    Parameters
    ----------
    path : str or os.PathLike
        The final output path.

    Raises
    ------
    FileExistsError
        Another live process holds the lock: it is writing ``path``.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._key = str(self.path.resolve())
        if self._key in _held:
            _held[self._key][1] += 1
        else:
            _held[self._key] = [_acquire(self.path), 1]
        self._released = False

    def release(self):
        """Release the lock (once; the file goes with the last holder in this process)."""
        if self._released:
            return
        self._released = True
        entry = _held.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self._key]
            fd = entry[0]
            if fd is not None:
                lock_path(self.path).unlink(missing_ok=True)  # unlinked while still held
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _acquire(path):
    if fcntl is None:
        return None
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise FileExistsError(
                f"{path} is being written by another process{who}; wait for it to finish "
                "or choose another output path"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file its last holder removed while this one opened it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def check_not_inputs(outputs, inputs):
    """Raise unless every output path differs from every input file (same file through a
    symbolic or hard link included).

    Parameters
    ----------
    outputs : dict of str to path
        What the run writes, by the name the user knows it by (``"--out"``...); paths that
        do not exist yet cannot be an input.
    inputs : dict of str to path
        What it reads, by name.
    """
    for out_name, out in outputs.items():
        for in_name, inp in inputs.items():
            try:
                same = os.path.samefile(out, inp)
            except OSError:  # one of them does not exist
                continue
            if same:
                raise ValueError(
                    f"{out_name} {out} is the {in_name} {inp} (the same file); writing it "
                    "would destroy the input: choose another output path"
                )


def array_digest(*arrays):
    """str: SHA-256 of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def dataset_digest(path, dataset, n_rows_sampled=64):
    """dict: identity of an activation dataset for a resume: its shape, dtype and a
    SHA-256 of ``n_rows_sampled`` rows spread evenly over it (first and last included).

    A file rewritten with other values in those rows, another number of rows or another
    dtype has another digest; a change confined to rows not sampled is not seen.
    """
    from sparsecode.io._h5 import get_dataset, open_file

    with open_file(path) as f:
        ds = get_dataset(f, dataset)
        n = int(ds.shape[0])
        rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, n_rows_sampled)).astype(int))
        sample = ds[rows] if n else np.empty((0,) + ds.shape[1:], ds.dtype)
        return {"shape": list(ds.shape), "dtype": str(ds.dtype),
                "rows_sha256": array_digest(sample)}
