"""Read the files ``torch.save`` writes (PyTorch >= 1.6) without PyTorch, and without
running code from them.

Such a file is a zip archive: ``PREFIX/data.pkl`` (a pickle, protocol 2) holds the saved
object with each tensor reduced to ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` and each storage to a persistent id ``("storage", torch.FloatStorage, key,
location, numel)``; ``PREFIX/data/KEY`` holds each storage's little-endian bytes.

A pickle is a program: unpickled freely it may call any function (``os.system``...).
:func:`read_torch_archive` unpickles with an allow-list: the tensor and parameter rebuild
functions, the storage types, ``torch`` dtypes and ``torch.Size``, ``collections.OrderedDict``,
``set``, ``frozenset``, ``complex`` and latin-1 bytes (``_codecs.encode``), each replaced by a
stand-in of sparsecode's own.  Any other name refuses the file before anything is called.
"""

import collections
import io
import math
import os
import pickle
import zipfile

import numpy as np

from sparsecode.io._dtypes import bfloat16_to_float32
from sparsecode.io._h5 import FileFormatError

#: NumPy dtype of each typed storage (bfloat16: its uint16 bit patterns).
_STORAGES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "|i1", "ByteStorage": "|u1", "BoolStorage": "|b1",
    "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}
#: NumPy dtype of each ``torch`` dtype an archive may name.
_TORCH_DTYPES = {
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "bfloat16",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "|i1", "uint8": "|u1",
    "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "|b1",
    "complex64": "<c8", "complex128": "<c16",
}
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_LOCAL_HEADER = 30


class _Refused(pickle.UnpicklingError):
    """A pickle that is well formed but asks for something this reader does not do."""


class _StandIn:
    """What ``find_class`` returns: a named callable that refuses to be modified."""

    __slots__ = ("name", "_fn")

    def __init__(self, name, fn=None):
        self.name, self._fn = name, fn

    def __call__(self, *args):
        if self._fn is None:
            raise _Refused(f"the pickle calls {self.name}, which is not a function")
        return self._fn(*args)

    def __setstate__(self, state):
        raise _Refused(f"the pickle tries to modify {self.name}")

    def __repr__(self):
        return self.name


class _StorageType(_StandIn):
    """A storage type (``torch.FloatStorage``...): ``dtype`` is its NumPy dtype code,
    None for ``UntypedStorage`` (bytes, typed by the tensor)."""

    __slots__ = ("dtype",)

    def __init__(self, name, dtype):
        super().__init__(name)
        self.dtype = dtype


class _Storage:
    """A storage named by a persistent id; its bytes are read on first use."""

    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state):
        raise _Refused(f"the pickle tries to modify storage {self.key!r}")


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _counts(value, what):
    if not (isinstance(value, (tuple, list)) and all(_count(v) for v in value)):
        raise _Refused(f"a tensor's {what} is {value!r}, not a tuple of non-negative ints")
    return tuple(value)


def _no_hooks(hooks):
    if hooks:
        raise _Refused("a tensor has backward hooks")


def _codecs_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin-1")


class _Archive:
    """One open archive: its record prefix and the storages read so far."""

    def __init__(self, path, zf):
        self.path, self.zf, self.storages = path, zf, {}
        self.prefix = self._prefix()
        order = self._record("byteorder", required=False)
        if order is not None and order != b"little":
            self.fail(f"its storages are {order.decode(errors='replace')!r}-endian; "
                      "only little-endian archives are supported")

    def fail(self, problem):
        raise FileFormatError(f"{self.path}: {problem}")

    def _prefix(self):
        names = self.zf.namelist()
        found = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(found) == 1:
            return found[0][: -len("data.pkl")]
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            self.fail("a TorchScript archive (torch.jit.save), not a torch.save file")
        if not found:
            self.fail("a zip archive without a PREFIX/data.pkl record; not a torch.save file")
        self.fail(f"a zip archive with {len(found)} data.pkl records; not a torch.save file")

    def _record(self, name, required=True):
        try:
            return self.zf.read(self.prefix + name)
        except KeyError:
            if required:
                self.fail(f"the archive has no record {self.prefix}{name}")
            return None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            self.fail(f"record {self.prefix}{name} is damaged ({_line(exc)})")

    def storage_bytes(self, key):
        """ndarray of uint8: the bytes of storage ``key``, memory-mapped when stored."""
        if key in self.storages:
            return self.storages[key]
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            self.fail(f"the pickle refers to storage {key!r}, but the archive has no "
                      f"record {name}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
            raw = np.frombuffer(self._record(f"data/{key}"), np.uint8)
        else:
            raw = self._mapped(info)
        self.storages[key] = raw
        return raw

    def _mapped(self, info):
        """Map a stored (uncompressed) record: its bytes start after its local header."""
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            head = f.read(_LOCAL_HEADER)
            size = os.fstat(f.fileno()).st_size
        if len(head) < _LOCAL_HEADER or head[:4] != b"PK\x03\x04":
            self.fail(f"record {info.filename} has no valid local header; damaged archive")
        start = (info.header_offset + _LOCAL_HEADER + int.from_bytes(head[26:28], "little")
                 + int.from_bytes(head[28:30], "little"))
        if start + info.file_size > size:
            self.fail(f"truncated: record {info.filename} ends at byte "
                      f"{start + info.file_size}, past the end of the file ({size})")
        if info.file_size == 0:
            return np.empty(0, np.uint8)
        return np.memmap(self.path, np.uint8, mode="r", offset=start, shape=(info.file_size,))

    def tensor(self, storage, offset, size, stride, dtype=None):
        """The strided view a rebuilt tensor is, from its storage (bfloat16 widened)."""
        if not isinstance(storage, _Storage):
            raise _Refused(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
        if not _count(offset):
            raise _Refused(f"a tensor's storage offset is {offset!r}")
        size, stride = _counts(size, "size"), _counts(stride, "stride")
        if len(size) != len(stride):
            raise _Refused(f"a tensor has size {size} but stride {stride}")
        code = storage.dtype if dtype is None else dtype
        if code is None:
            raise _Refused(f"a tensor on the untyped storage {storage.key!r} has no dtype")
        np_dtype = np.dtype("<u2" if code == "bfloat16" else code)
        raw = self.storage_bytes(storage.key)
        nbytes = storage.numel * (1 if storage.dtype is None else np_dtype.itemsize)
        numel = nbytes // np_dtype.itemsize
        if raw.size != nbytes or nbytes % np_dtype.itemsize:
            self.fail(f"storage {storage.key!r} holds {raw.size} bytes; the pickle describes "
                      f"{storage.numel} {'bytes' if storage.dtype is None else 'elements'} "
                      f"of {code}")
        if math.prod(size) == 0:
            arr = np.empty(size, np_dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= numel:
                self.fail(f"a tensor of size {size}, stride {stride} at offset {offset} reaches "
                          f"element {last} of storage {storage.key!r}, which holds {numel}")
            arr = np.ndarray(size, np_dtype, buffer=raw, offset=offset * np_dtype.itemsize,
                             strides=tuple(s * np_dtype.itemsize for s in stride))
        arr.flags.writeable = False
        return bfloat16_to_float32(arr) if code == "bfloat16" else arr


class _Unpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` with stand-ins for an allow-list of names, nothing else."""

    def __init__(self, file, archive):
        super().__init__(file, encoding="utf-8")
        self.archive = archive
        self.allowed = self._allowed(archive)

    @staticmethod
    def _allowed(archive):
        def v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
            _no_hooks(hooks)
            return archive.tensor(storage, offset, size, stride)

        def v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
            _no_hooks(hooks)
            if dtype not in _TORCH_DTYPES:
                raise _Refused(f"a tensor's dtype is {dtype!r}")
            return archive.tensor(storage, offset, size, stride, _TORCH_DTYPES[dtype])

        def parameter(data, requires_grad, hooks, state=None):
            _no_hooks(hooks)
            if not isinstance(data, np.ndarray):
                raise _Refused(f"a parameter holds {type(data).__name__}, not a tensor")
            return data

        def ordered_dict(*items):
            if len(items) > 1:
                raise _Refused("collections.OrderedDict with more than one argument")
            return collections.OrderedDict(*items)

        def torch_size(dims=()):
            return _counts(dims, "size")

        functions = {
            ("torch._utils", "_rebuild_tensor_v2"): v2,
            ("torch._utils", "_rebuild_tensor_v3"): v3,
            ("torch._utils", "_rebuild_parameter"): parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): parameter,
            ("collections", "OrderedDict"): ordered_dict,
            ("torch", "Size"): torch_size,
            ("_codecs", "encode"): _codecs_encode,
        }
        for module in ("builtins", "__builtin__"):
            functions.update({(module, f.__name__): f for f in (set, frozenset, complex)})
        allowed = {key: _StandIn(".".join(key), fn) for key, fn in functions.items()}
        for name, code in _STORAGES.items():
            allowed["torch", name] = _StorageType(f"torch.{name}", code)
        for module in ("torch", "torch.storage"):
            allowed[module, "UntypedStorage"] = _StorageType(f"{module}.UntypedStorage", None)
        allowed.update({("torch", name): name for name in _TORCH_DTYPES})
        return allowed

    def find_class(self, module, name):
        try:
            return self.allowed[module, name]
        except KeyError:
            pass
        self.archive.fail(f"refusing to load: the pickle asks for {module}.{name}, which is "
                          "not a tensor or a container; sparsecode never runs code from a "
                          "model file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _count(pid[4])):
            raise _Refused(f"unexpected persistent id {pid!r:.200}")
        return _Storage(pid[2], pid[1].dtype, pid[4])


def _line(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        pass
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head:
        raise FileFormatError(f"{path}: empty file; not a torch.save file")
    if head.startswith(b"PK"):
        problem = "a damaged or truncated zip archive"
    elif head == _LEGACY_MAGIC or head[:1] == b"\x80":
        problem = ("a bare pickle, the format torch.save wrote before PyTorch 1.6 (or with "
                   "_use_new_zipfile_serialization=False), which is not supported; "
                   "re-save it with a recent PyTorch")
    else:
        problem = "not a zip archive, so not a torch.save file"
    raise FileFormatError(f"{path}: {problem}")


def read_torch_archive(path):
    """Load a ``torch.save`` file (PyTorch >= 1.6) as NumPy arrays, without PyTorch.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    object
        The saved object (a state dict, a checkpoint dict...) with each tensor and
        parameter replaced by an ndarray of its shape: float32, float64, float16, the
        integer types and bool as read-only strided views of the storage (memory-mapped
        when the archive stores it uncompressed, as ``torch.save`` does); bfloat16 widened
        exactly to a new float32 array.  Dicts stay dicts, ``OrderedDict`` (with its
        ``_metadata`` attribute) stays ``OrderedDict``, ``torch.Size`` becomes a tuple
        and ``torch`` dtypes their names (``"float32"``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FileFormatError
        Not a zip archive (a pre-1.6 file included), a TorchScript archive, a damaged
        pickle or archive, a storage missing or of the wrong size, a tensor reaching
        beyond its storage, or a pickle naming anything outside the allow-list (refused
        before anything is called).
    """
    path = os.fspath(path)
    with _open_zip(path) as zf:
        archive = _Archive(path, zf)
        data = archive._record("data.pkl")
        try:
            return _Unpickler(io.BytesIO(data), archive).load()
        except FileFormatError:
            raise
        except _Refused as exc:
            archive.fail(f"{archive.prefix}data.pkl: {exc}")
        except Exception as exc:  # any failure of a malformed pickle is a bad file
            archive.fail(f"{archive.prefix}data.pkl is not a pickle of tensors this reader "
                         f"loads ({_line(exc)})")

