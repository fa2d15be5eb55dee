"""Write files in the layout ``torch.save`` (PyTorch >= 1.6) writes, without PyTorch: for
the tests of :mod:`sparsecode.io.torch_archive`.

The pickle is written by :class:`pickle.Pickler` itself, as ``torch.save`` does: while it
runs, stand-in modules ``torch``, ``torch._utils`` and ``torch.storage`` are registered in
:data:`sys.modules` holding objects named like PyTorch's rebuild functions, storage types
and dtypes, so the pickle names them exactly as a real one does.  The archive holds the
records ``torch.save`` writes, in its order, uncompressed, each record's data aligned to
64 bytes by a padding extra field.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsecode.io._dtypes import float32_to_bfloat16

#: The storage type ``torch.save`` names for each NumPy dtype (``_rebuild_tensor_v2``).
STORAGE_TYPES = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
    "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
    "bool": "BoolStorage", "complex64": "ComplexFloatStorage",
}
#: dtypes PyTorch saves on an untyped storage with ``_rebuild_tensor_v3``.
V3_DTYPES = ("uint16", "uint32", "uint64")
ALIGNMENT = 64


@dataclass
class Strided:
    """A tensor given as a view of a 1-D storage: ``size`` and ``stride`` in elements.

    ``storage`` of uint16 with ``bfloat16=True`` holds bfloat16 bit patterns."""

    storage: np.ndarray
    offset: int
    size: tuple
    stride: tuple
    bfloat16: bool = False


class _StorageRef:
    def __init__(self, key, kind, numel):
        self.key, self.kind, self.numel = key, kind, numel


class _TensorRef:
    def __init__(self, rebuild, args):
        self.rebuild, self.args = rebuild, args

    def __reduce_ex__(self, protocol):
        return self.rebuild, self.args


class _Dtype:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name  # pickled as the global torch.NAME


def _function(module, name):
    def stand_in(*args):
        raise AssertionError("a stand-in for pickling only")
    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module, name, name
    return stand_in


@contextlib.contextmanager
def _stand_in_torch():
    """Register modules named ``torch``, ``torch._utils`` and ``torch.storage`` holding
    objects named like PyTorch's, for the pickler to name; restore sys.modules after."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage = types.ModuleType("torch.storage")
    for name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"):
        setattr(utils, name, _function("torch._utils", name))
    for name in STORAGE_TYPES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    storage.UntypedStorage = type("UntypedStorage", (), {"__module__": "torch.storage"})
    dtype = type("dtype", (_Dtype,), {"__module__": "torch"})
    for name in V3_DTYPES:
        setattr(torch, name, dtype(name))
    torch._utils, torch.storage = utils, storage
    modules = {"torch": torch, "torch._utils": utils, "torch.storage": storage}
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


class _Builder:
    """Turns arrays into tensor references and collects their storages' bytes."""

    def __init__(self, torch, bfloat16, parameter):
        self.torch, self.bfloat16, self.parameter = torch, set(bfloat16), parameter
        self.records = {}

    def convert(self, obj, name=None):
        if isinstance(obj, collections.OrderedDict):
            out = collections.OrderedDict((k, self.convert(v, k)) for k, v in obj.items())
            out.__dict__.update(obj.__dict__)  # _metadata of a state dict
            return out
        if isinstance(obj, dict):
            return {k: self.convert(v, k) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.convert(v) for v in obj)
        if isinstance(obj, Strided):
            return self.tensor(obj)
        if isinstance(obj, np.ndarray):
            return self.tensor(self.strided(obj, name in self.bfloat16))
        return obj

    @staticmethod
    def strided(arr, bfloat16):
        """A Strided for an ndarray: F-ordered arrays keep their strides (like a transposed
        tensor), anything else is stored C-ordered."""
        if bfloat16 and arr.dtype != np.uint16:
            arr = float32_to_bfloat16(np.asarray(arr, np.float32).reshape(-1)).reshape(arr.shape)
        if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
            storage = arr.ravel(order="F")
        else:
            arr = np.ascontiguousarray(arr).reshape(arr.shape)
            storage = arr.reshape(-1)
        stride = tuple(s // arr.itemsize for s in arr.strides)
        return Strided(storage, 0, arr.shape, stride, bfloat16)

    def tensor(self, view):
        key = str(len(self.records))
        data = np.asarray(view.storage).reshape(-1)
        name = "bfloat16" if view.bfloat16 else data.dtype.name
        self.records[key] = data.astype(data.dtype.newbyteorder("<")).tobytes()
        hooks = collections.OrderedDict()
        if name in V3_DTYPES:
            ref = _StorageRef(key, sys.modules["torch.storage"].UntypedStorage, data.nbytes)
            args = (ref, view.offset, tuple(view.size), tuple(view.stride), False, hooks,
                    getattr(self.torch, name))
            tensor = _TensorRef(sys.modules["torch._utils"]._rebuild_tensor_v3, args)
        else:
            ref = _StorageRef(key, getattr(self.torch, STORAGE_TYPES[name]), data.size)
            args = (ref, view.offset, tuple(view.size), tuple(view.stride), False, hooks)
            tensor = _TensorRef(sys.modules["torch._utils"]._rebuild_tensor_v2, args)
        if self.parameter:
            return _TensorRef(sys.modules["torch._utils"]._rebuild_parameter,
                              (tensor, True, collections.OrderedDict()))
        return tensor


def _record(zf, offset, name, data):
    """Write one stored record with its data aligned; return the offset after it."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    pad = -(offset + 30 + len(name.encode()) + 4) % ALIGNMENT
    info.extra = b"FB" + pad.to_bytes(2, "little") + b"Z" * pad
    zf.writestr(info, data)
    return offset + 30 + len(name.encode()) + len(info.extra) + len(data)


def write_archive(path, data_pkl, storages=None):
    """Write an archive holding ``data_pkl`` and ``storages`` (key -> bytes) in the
    record layout ``torch.save`` writes."""
    path = Path(path)
    prefix = path.stem
    records = [("data.pkl", data_pkl), (".format_version", b"1"),
               (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", b"little")]
    records += [(f"data/{key}", data) for key, data in (storages or {}).items()]
    records += [("version", b"3\n"), (".data/serialization_id", b"0" * 40)]
    offset = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            offset = _record(zf, offset, f"{prefix}/{name}", data)
    return path


def write_torch_archive(path, obj, *, bfloat16=(), parameter=False):
    """Write ``obj`` as ``torch.save(obj, path)`` would, with every ndarray as a tensor.

    Parameters
    ----------
    path : str or os.PathLike
    obj : dict, OrderedDict, list, tuple, ndarray, Strided or plain value, nested
        ndarrays of float32, float64, float16, int64, int32, int16, int8, uint8, bool,
        complex64 (typed storages) or uint16, uint32, uint64 (untyped storage and
        ``_rebuild_tensor_v3``, as PyTorch >= 2.3 saves them).
    bfloat16 : iterable of str
        Dict keys (at any depth) whose arrays are stored as bfloat16: float arrays rounded
        to nearest even, uint16 arrays taken as bit patterns.
    parameter : bool
        Wrap every tensor in ``torch._utils._rebuild_parameter`` (an ``nn.Parameter``).
    """
    with _stand_in_torch() as torch:
        builder = _Builder(torch, bfloat16, parameter)
        converted = builder.convert(obj)
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(converted)
    return write_archive(path, buf.getvalue(), builder.records)


def call_pickle(module, name, *args):
    """Pickle bytes that, unpickled freely, call ``module.name(*args)``."""
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, 2)[2:-1]
            + b"R.")


def getattr_pickle(command):
    """Pickle bytes for ``getattr(__import__("os"), "system")(command)``."""
    def push(value):
        return pickle.dumps(value, 2)[2:-1]
    return (b"\x80\x02c__builtin__\ngetattr\n(c__builtin__\n__import__\n(" + push("os")
            + b"tR" + push("system") + b"tR(" + push(command) + b"tR.")


class _Call:
    """Pickled as a call of ``fn(*args)``: a payload hidden inside a state dict."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def hidden_call_archive(path, fn, *args):
    """An archive of a state dict whose second entry, after a real tensor, is a call of
    ``fn(*args)``."""
    with _stand_in_torch() as torch:
        builder = _Builder(torch, (), False)
        obj = {"weight": builder.convert(np.ones(3, np.float32)), "bias": _Call(fn, *args)}
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
    return write_archive(path, buf.getvalue(), builder.records)
