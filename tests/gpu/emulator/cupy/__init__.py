"""A NumPy-backed stand-in for the CuPy calls of sparsecode.gpu, for running the GPU
tests on a machine without a GPU (``SPARSECODE_GPU_EMULATOR=1``, see tests/gpu/conftest.py).

``RawModule`` compiles the module's CUDA source with g++ against ``cuda_emu.h`` (one
std::thread per CUDA thread, real barriers and warp shuffles) and runs the kernels on
the CPU.  Every kernel argument is checked against the kernel's C signature (the dtype
and C-contiguity of every array, the exact NumPy type of every scalar), which real CuPy
does not do, so marshalling mistakes fail here instead of computing garbage on a GPU.
Not a model of GPU timing or of the memory model: races are not detected.
"""

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import types

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_HEADER = os.path.join(_HERE, "..", "cuda_emu.h")
_BUILD = os.path.join(tempfile.gettempdir(), "sparsecode-cuda-emulator")

#: Tests skip what is too slow here (thousands of OS-thread barriers per signal).
EMULATED = True

#: Every launch: (name expression, grid, block, dynamic shared memory).
LAUNCHES = []


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A NumPy array whose type lives in a module called ``cupy``."""

    def get(self):
        return np.array(self, copy=True).view(np.ndarray)


def _wrap(x):
    return x.view(ndarray) if isinstance(x, np.ndarray) and not isinstance(x, ndarray) else x


def _unwrap(x):
    return x.view(np.ndarray) if isinstance(x, ndarray) else x


def __getattr__(name):
    obj = getattr(np, name)
    if callable(obj) and not isinstance(obj, type):
        def f(*a, **k):
            r = obj(*[_unwrap(x) for x in a], **k)
            return tuple(_wrap(x) for x in r) if isinstance(r, tuple) else _wrap(r)

        return f
    return obj


def asarray(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype)
    return _wrap(np.array(a, dtype=dtype))


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        self.attributes = {"MultiProcessorCount": 3, "MaxSharedMemoryPerBlockOptin": 232448}
        self.mem_info = (1 << 33, 1 << 34)  # (free, total): a 16 GiB device


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


cuda = types.SimpleNamespace(Device=_Device, runtime=_Runtime)

_SIG = re.compile(r"template <typename T(?:, typename GT)?>\s*__global__ void (\w+)\(([^)]*)\)")
_EXPR = re.compile(r"(\w+)<(\w+)(?:, (\w+))?>")
_CTYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
           "signed char": np.int8, "sc_half": np.float16}
_SCALARS = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int32: ctypes.c_int32,
            np.int64: ctypes.c_int64}


def _params(signature, ctype, gtype):
    """``[(base type, is pointer, name)]`` of a kernel's parameters, T and GT replaced."""
    out = []
    for p in signature.split(","):
        p = re.sub(r"\s+", " ", p.replace("__restrict__", "").replace("const", "")).strip()
        base, name = p.rsplit(" ", 1)
        star = base.endswith("*")
        base = base.rstrip("* ").strip()
        out.append(({"T": ctype, "GT": gtype}.get(base, base), star, name))
    return out


def _symbol(name, ctype, gtype):
    return f"emu_{name}_{ctype}" + (f"_{gtype}" if gtype else "")


def _wrapper(name, ctype, gtype, params):
    args = ", ".join(f"*({b}{'*' if s else ''}*)a[{i}]" for i, (b, s, _) in enumerate(params))
    targs = ctype + (f", {gtype}" if gtype else "")
    return (f'extern "C" void {_symbol(name, ctype, gtype)}(int g, int b, long long sm, '
            f"void** a) {{ emu_launch(g, b, sm, [&] {{ {name}<{targs}>({args}); }}); }}\n")


class RawModule:
    def __init__(self, code, options=(), name_expressions=()):
        self.signatures = {m.group(1): m.group(2) for m in _SIG.finditer(code)}
        src = code.replace("extern __shared__ double sc_smem[];", "double* sc_smem = emu_smem;")
        assert "extern __shared__" not in src
        wrappers = ""
        for e in name_expressions:
            n, t, g = _EXPR.fullmatch(e).groups()
            wrappers += _wrapper(n, t, g, _params(self.signatures[n], t, g))
        full = f'#include "cuda_emu.h"\n{src}\n{wrappers}'
        with open(_HEADER, "rb") as f:
            key = hashlib.sha1(full.encode() + f.read()).hexdigest()[:16]
        os.makedirs(_BUILD, exist_ok=True)
        so = os.path.join(_BUILD, f"kernels_{key}.so")
        if not os.path.exists(so):
            cpp = so[:-3] + ".cpp"
            with open(cpp, "w") as f:
                f.write(full)
            subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w",
                            "-I", os.path.dirname(_HEADER), cpp, "-o", so + ".tmp"], check=True)
            os.replace(so + ".tmp", so)
        self.lib = ctypes.CDLL(so)

    def get_function(self, expr):
        n, t, g = _EXPR.fullmatch(expr).groups()
        return RawKernel(getattr(self.lib, _symbol(n, t, g)), _params(self.signatures[n], t, g),
                         expr)


class RawKernel:
    max_threads_per_block = 1024

    def __init__(self, fn, params, expr):
        self.fn, self.params, self.expr = fn, params, expr
        self.max_dynamic_shared_size_bytes = 48 * 1024 - 1024

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.params), (self.expr, len(args), len(self.params))
        assert shared_mem <= self.max_dynamic_shared_size_bytes, (self.expr, shared_mem)
        assert grid[0] >= 1 and 32 <= block[0] <= 1024 and block[0] % 32 == 0
        keep = []
        for (base, star, name), a in zip(self.params, args, strict=True):
            want = np.dtype(_CTYPES[base])
            if star:
                assert isinstance(a, ndarray), (self.expr, name, type(a))
                assert a.dtype == want, (self.expr, name, a.dtype, want)
                assert a.flags.c_contiguous, (self.expr, name)
                keep.append(ctypes.c_void_p(a.__array_interface__["data"][0]))
            else:
                assert type(a) is want.type, (self.expr, name, type(a), want)
                keep.append(_SCALARS[want.type](a))
        ptrs = (ctypes.c_void_p * len(keep))(
            *[ctypes.cast(ctypes.pointer(c), ctypes.c_void_p) for c in keep])
        LAUNCHES.append((self.expr, grid[0], block[0], shared_mem))
        self.fn(ctypes.c_int(grid[0]), ctypes.c_int(block[0]), ctypes.c_longlong(shared_mem), ptrs)
