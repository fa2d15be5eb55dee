"""Opening HDF5 files with errors a user can act on, and the partial-file protocol.

Every file sparsecode writes is first written at ``PATH.partial`` and renamed to ``PATH``
(``os.replace``, atomic on one file system) once complete, so a file at its final path is
always whole.  Appendable files record in ``attrs["committed_rows"]`` how many rows are
safely on disk, so an interrupted writer resumes from there.
"""

import json
import os
from pathlib import Path

import h5py
import numpy as np

#: ``attrs["sparsecode_format"]`` of each kind of file sparsecode writes.
FORMATS = ("activations", "codes", "model")
PARTIAL_SUFFIX = ".partial"


class FileFormatError(ValueError):
    """A file that is not what it should be: not HDF5, truncated, or missing a dataset."""


def partial_path(path):
    """pathlib.Path: where ``path`` is written before it is complete."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def open_file(path, mode="r"):
    """Open an HDF5 file, turning h5py's errors into one-line messages.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"r", "r+", "a", "w"}

    Returns
    -------
    h5py.File

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (modes "r", "r+").
    FileFormatError
        ``path`` is not an HDF5 file, or is truncated or damaged.
    """
    path = Path(path)
    if mode in ("r", "r+"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise FileFormatError(f"{path}: is a directory, not an HDF5 file")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        text = str(exc)
        if "signature" in text:
            raise FileFormatError(f"{path}: not an HDF5 file") from None
        if "truncated" in text or "eof" in text.lower():
            raise FileFormatError(
                f"{path}: the file is truncated (shorter than its HDF5 header says); it was "
                "probably cut off while being copied or written"
            ) from None
        if "lock" in text:
            raise FileFormatError(
                f"{path}: the file is open for writing in another process"
            ) from None
        raise FileFormatError(f"{path}: cannot be opened as HDF5 ({_first_line(text)})") from None


def get_dataset(f, name):
    """``f[name]`` as a dataset, or a :class:`FileFormatError` that lists what is there.

    Parameters
    ----------
    f : h5py.File
    name : str

    Returns
    -------
    h5py.Dataset
    """
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = list_datasets(f)
        what = "is a group, not a dataset" if obj is not None else "has no dataset"
        raise FileFormatError(
            f"{f.filename}: {what} {name!r}; datasets in the file: "
            + (", ".join(repr(d) for d in found[:20]) if found else "none")
        )
    return obj


def list_datasets(f):
    """list of str: the paths of every dataset in ``f``."""
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def read_json_attr(obj, name, default=None):
    """A JSON-encoded attribute of ``obj`` (None/``default`` when absent)."""
    if name not in obj.attrs:
        return default
    value = obj.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value)


def write_json_attr(obj, name, value):
    """Store ``value`` (JSON-serialisable) as a string attribute of ``obj``."""
    obj.attrs[name] = json.dumps(value, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON attribute")


def file_format(f):
    """str or None: ``attrs["sparsecode_format"]`` of an open file."""
    value = f.attrs.get("sparsecode_format")
    return value.decode() if isinstance(value, bytes) else value


def check_format(f, expected):
    """Raise :class:`FileFormatError` unless ``f`` is a sparsecode file of kind ``expected``."""
    found = file_format(f)
    if found != expected:
        what = f"a sparsecode {found} file" if found else "not a file sparsecode wrote"
        raise FileFormatError(f"{f.filename}: expected a sparsecode {expected} file; it is {what}")


def replace_into_place(tmp, path):
    """Move the finished (closed) ``tmp`` to ``path`` atomically: its content reaches
    the disk first, then the rename."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)


def fsync_file(f):
    """Push an open HDF5 file's written bytes to the disk (after ``f.flush()``)."""
    try:
        os.fsync(f.id.get_vfd_handle())
    except (OSError, ValueError, TypeError):
        pass  # a driver without a file descriptor: flush is all there is


def fsync_path(path):
    """fsync a closed file or a directory by name (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_errno(exc):
    """int or None: the ``errno`` of a failed HDF5 write (h5py puts it in the text)."""
    import re

    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    m = re.search(r"errno = (\d+)", str(exc))
    return int(m.group(1)) if m else None


def write_error(exc):
    """str: a failed write's reason in a few words (``No space left on device``...)."""
    code = write_errno(exc)
    return os.strerror(code) if code else _first_line(str(exc))


def _first_line(text):
    return text.strip().splitlines()[0] if text.strip() else text
