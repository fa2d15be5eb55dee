"""Read and write safetensors files with NumPy alone.

A safetensors file is an 8-byte little-endian length ``N``, ``N`` bytes of UTF-8 JSON
(``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}, ...}``) and the
data buffer; each tensor is C-ordered, little-endian, at ``data_offsets`` (relative to the
buffer).  Tensors of a native NumPy type are returned memory-mapped and read-only;
bfloat16 (``"BF16"``), which NumPy has no type for, is widened to float32 exactly.

:func:`write_tensors` writes the bytes the ``safetensors`` package writes for the same
tensors (``safetensors.numpy.save_file``): tensors ordered by decreasing element type, then
by name, the JSON compact and padded with spaces to a multiple of 8 bytes.  The metadata
is written with its keys sorted; the package writes them in an arbitrary order, so files
with two or more metadata entries may differ from its output in that order only.
"""

import json
import math
import mmap
import os

import numpy as np

from sparsecode.io._dtypes import bfloat16_to_float32, float32_to_bfloat16
from sparsecode.io._h5 import FileFormatError, partial_path, replace_into_place

#: Element types in the order safetensors ranks them (a file holds larger ranks first),
#: with the little-endian NumPy dtype each is read as (bfloat16: its uint16 bit patterns).
_DTYPES = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "BF16": "<u2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "C64": "<c8",
    "F64": "<f8",
    "I64": "<i8",
    "U64": "<u8",
}
_RANK = {name: rank for rank, name in enumerate(_DTYPES)}
#: The safetensors type of each NumPy type that has one (bfloat16 aside).
_NAMES = {np.dtype(code).newbyteorder("<"): name for name, code in _DTYPES.items()
          if name != "BF16"}
_FLOATING = ("F16", "BF16", "F32", "F64")
#: The largest header the safetensors package accepts.
MAX_HEADER_BYTES = 100_000_000
#: How many elements of bytes are written at a time.
_WRITE_BLOCK = 1 << 24


def _fail(path, problem):
    raise FileFormatError(f"{path}: {problem}")


def _no_duplicates(path):
    def hook(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                _fail(path, f"the header names {key!r} twice")
            seen[key] = value
        return seen
    return hook


def _parse_entry(path, name, entry):
    """(dtype_str, shape, (begin, end)) of one header entry, checked."""
    if not isinstance(entry, dict):
        _fail(path, f"header entry {name!r} is not an object")
    missing = {"dtype", "shape", "data_offsets"} - entry.keys()
    if missing:
        _fail(path, f"header entry {name!r} lacks {', '.join(sorted(missing))}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPES:
        _fail(path, f"tensor {name!r} has dtype {dtype!r}, which sparsecode cannot read "
                    f"(known: {', '.join(_DTYPES)})")

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(shape, list) or not all(count(d) for d in shape):
        _fail(path, f"tensor {name!r} has shape {shape!r}, not a list of non-negative ints")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(count(v) for v in offsets)
            and offsets[0] <= offsets[1]):
        _fail(path, f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with "
                    "0 <= begin <= end")
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        _fail(path, f"tensor {name!r} spans {offsets[1] - offsets[0]} bytes; its shape "
                    f"{tuple(shape)} of {dtype} needs {nbytes}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _read_header(path):
    """(tensors, metadata, data_start): :func:`read_header` and where the buffer starts."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        _fail(path, f"{size} bytes; a safetensors file starts with an 8-byte header length")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            _fail(path, f"the header length says {n} bytes, but "
                        + (f"the file holds {size - 8} after it" if n > size - 8
                           else f"headers longer than {MAX_HEADER_BYTES} are refused")
                        + "; not a safetensors file, or a truncated one")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"the header is not valid UTF-8 JSON ({exc}); not a safetensors file")
    if not isinstance(header, dict):
        _fail(path, "the header is not a JSON object; not a safetensors file")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict)
            and all(isinstance(v, str) for v in metadata.values())):
        _fail(path, "__metadata__ is not an object of strings")
    tensors = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
    buffer = size - 8 - n
    for name, (_, _, (_, end)) in tensors.items():
        if end > buffer:
            _fail(path, f"truncated: tensor {name!r} ends at byte {end} of the data, which "
                        f"holds {buffer}")
    return tensors, metadata, 8 + n


def read_header(path):
    """The tensors a safetensors file holds and its metadata, without reading the tensors.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    tensors : dict of str to (str, tuple of int, (int, int))
        For each tensor, in the header's order: its safetensors type (``"F32"``,
        ``"BF16"``...), shape and ``(begin, end)`` byte offsets in the data buffer.
    metadata : dict of str to str
        ``__metadata__`` (empty when absent).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FileFormatError
        Not a safetensors file, a damaged header or a truncated data buffer.
    """
    tensors, metadata, _ = _read_header(path)
    return tensors, metadata


def _float_dtype(dtype):
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type (float16, float32, float64), "
                         f"not {dtype}")
    return dtype


def _selected(path, tensors, names):
    if names is None:
        return list(tensors)
    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if n not in tensors]
    if missing:
        held = sorted(tensors)
        shown = ", ".join(held[:20]) + (f", ... ({len(held)} in all)" if len(held) > 20 else "")
        _fail(path, f"no tensor {', '.join(map(repr, missing))}; the file holds: "
                    f"{shown or 'no tensors'}")
    return names


def _will_need(mapped):
    """Ask the OS to read a mapped tensor ahead, in the background: a tensor about to be
    widened or checked is read whole, and one sequential read-ahead is much faster from
    disk than page faults one by one."""
    mm = getattr(mapped, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_WILLNEED"):
        try:
            mm.madvise(mmap.MADV_WILLNEED)
        except (OSError, ValueError):
            pass  # only advice


def read_tensors(path, names=None, *, dtype=None):
    """Read tensors from a safetensors file, memory-mapped where possible.

    Parameters
    ----------
    path : str or os.PathLike
    names : str or iterable of str, optional
        The tensors to read (default: all of them).
    dtype : str or numpy.dtype, optional
        A floating type to convert the floating tensors (F16, BF16, F32, F64) to; a
        tensor already of that type is not copied.  Other tensors are left as they are.

    Returns
    -------
    dict of str to ndarray
        Each tensor in its stored shape, in the order of ``names`` (default: the
        header's).  F16, F32, F64 and integer and boolean tensors come back as read-only
        views of a read-only :class:`numpy.memmap` (their ``base``), never read whole into
        memory; BF16 tensors are widened to new float32 arrays (exactly).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FileFormatError
        Not a safetensors file, a damaged header or truncated data, or a name in
        ``names`` that the file does not hold.
    ValueError
        ``dtype`` is not a floating type.
    """
    dtype = _float_dtype(dtype)
    tensors, _, start = _read_header(path)
    out = {}
    for name in _selected(path, tensors, names):
        kind, shape, (begin, _) = tensors[name]
        native = np.dtype(_DTYPES[kind])
        if 0 in shape:
            arr = np.empty(shape, native)  # nothing to map: mmap refuses empty ranges
            arr.flags.writeable = False
        else:
            mapped = np.memmap(path, native, mode="r", offset=start + begin, shape=shape)
            _will_need(mapped)
            arr = mapped.reshape(shape).view(np.ndarray)  # memmap makes shape () (1,)
        if kind == "BF16":
            arr = bfloat16_to_float32(arr)
        if dtype is not None and kind in _FLOATING and arr.dtype != dtype:
            arr = arr.astype(dtype)
        out[name] = arr
    return out


def _prepare(tensors, metadata, bfloat16):
    """[(name, safetensors type, array to write)] in file order and the metadata, checked."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict of name to array, not "
                        f"{type(tensors).__name__}")
    bfloat16 = {bfloat16} if isinstance(bfloat16, str) else set(bfloat16)
    unknown = bfloat16 - tensors.keys()
    if unknown:
        raise ValueError(f"bfloat16 names {sorted(unknown)} are not among the tensors")
    if metadata is not None and not (
            isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("metadata must be a dict of str to str")
    items = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor name {name!r}: names must be non-empty strings other "
                             "than '__metadata__'")
        arr = np.asarray(value)
        if name in bfloat16:
            if arr.dtype.kind != "f":
                raise TypeError(f"tensor {name!r} is {arr.dtype}; only floating tensors can "
                                "be written as bfloat16")
            bits = float32_to_bfloat16(np.asarray(arr, np.float32).reshape(-1))
            items.append((name, "BF16", bits.reshape(arr.shape)))
            continue
        kind = _NAMES.get(arr.dtype.newbyteorder("<"))
        if kind is None:
            raise TypeError(f"tensor {name!r} is {arr.dtype}, which safetensors cannot hold "
                            f"(types: {', '.join(str(np.dtype(c)) for c in _DTYPES.values())})")
        items.append((name, kind, np.asarray(arr, np.dtype(_DTYPES[kind]), order="C")))
    items.sort(key=lambda item: (-_RANK[item[1]], item[0]))
    return items, None if metadata is None else dict(sorted(metadata.items()))


def write_tensors(path, tensors, *, metadata=None, bfloat16=()):
    """Write NumPy arrays as a safetensors file.

    The file is written at ``PATH.partial`` and renamed to ``path`` once complete, so
    ``path`` never holds a partial file.

    Parameters
    ----------
    path : str or os.PathLike
        Replaced if it exists.
    tensors : dict of str to array_like
        Arrays of bool, int8-64, uint8-64, float16, float32, float64 or complex64, any
        shape (0-d included); stored C-ordered and little-endian.
    metadata : dict of str to str, optional
        Written as ``__metadata__`` (keys sorted).
    bfloat16 : iterable of str
        Names of floating tensors to store as bfloat16 (``"BF16"``), rounded to nearest
        even from their float32 values.

    Raises
    ------
    TypeError
        ``tensors`` or ``metadata`` of the wrong type, or an array of a type safetensors
        cannot hold.
    ValueError
        A bad tensor name, or a ``bfloat16`` name that is not a tensor.
    """
    items, metadata = _prepare(tensors, metadata, bfloat16)
    header = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name, kind, arr in items:
        header[name] = {"dtype": kind, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for _, _, arr in items:
                flat = arr.reshape(-1).view(np.uint8)
                for i in range(0, flat.size, _WRITE_BLOCK):
                    f.write(flat[i:i + _WRITE_BLOCK])
        replace_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
