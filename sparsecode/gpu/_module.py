"""The CUDA kernels: one table, one module, compiled on first use.

``KERNELS`` lists every kernel template and ``DTYPES`` the float types each is built
for; the module's source is the shared ``kernels/common.cuh`` followed by the
``kernels/*.cu`` files of ``SOURCES``, and its ``name_expressions`` are generated from the
table, so adding a kernel is one line here plus its CUDA.  The same table generates the explicit
instantiations of :func:`instantiation_source`, which the test suite compiles with
``nvcc`` on machines without a GPU.

Nothing here imports CuPy before a kernel is requested.
"""

import functools
from pathlib import Path

import numpy as np

#: The header every kernel file includes, and the kernel files of the module.
HEADER = "common.cuh"
SOURCES = ("mp.cu", "gp.cu", "omp.cu", "mpsae.cu")

#: Every kernel template of the module.
KERNELS = ("row_norms2", "mp_gram", "mp_nogram_step", "gp_gram", "gp_nogram_step", "omp_gram",
           "omp_nogram_step", "mpsae_forward", "mpsae_backward")

#: The C type each kernel is instantiated for, per NumPy dtype.
DTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

#: NVRTC options.  None needed: CuPy adds the device's architecture (and its own flags),
#: and the kernels are plain C++11 (NVRTC's default dialect is newer).
OPTIONS = ()

_KERNEL_DIR = Path(__file__).parent / "kernels"


def name_expression(kernel, dtype):
    """``"mp_gram<float>"``: how CuPy names one instantiation."""
    return f"{kernel}<{DTYPES[np.dtype(dtype)]}>"


def name_expressions():
    """Every instantiation of the table."""
    return [name_expression(k, dt) for k in KERNELS for dt in DTYPES]


@functools.cache
def source():
    """The module's CUDA source: ``HEADER``, then the files of ``SOURCES`` with their
    ``#include`` of it blanked (the header's text itself, not an include, so CuPy's cache
    of compiled modules sees every change), each after a ``#line`` marker so compiler
    messages name the file and line they come from."""
    include = f'#include "{HEADER}"'
    parts = []
    for name in (HEADER, *SOURCES):
        text = (_KERNEL_DIR / name).read_text()
        if name != HEADER:
            if include not in text:
                raise RuntimeError(f"{name} must include {HEADER}")
            text = text.replace(include, "")
        parts.append(f'#line 1 "{name}"\n{text}')
    return "\n".join(parts)


def instantiation_source():
    """``source()`` plus a host function taking the address of every instantiation of
    the table, which makes ``nvcc`` compile each of them (the compile test)."""
    refs = "\n".join(f"      (const void*)&{e}," for e in name_expressions())
    return (
        f"{source()}\n"
        '#line 1 "instantiations"\n'
        "const void* const* sparsecode_all_kernels() {\n"
        "  static const void* const kernels[] = {\n"
        f"{refs}\n"
        "  };\n"
        "  return kernels;\n"
        "}\n"
    )


@functools.cache
def _module(device_id):
    import cupy

    return cupy.RawModule(code=source(), options=OPTIONS, name_expressions=name_expressions())


@functools.cache
def _kernel(kernel, dtype, device_id):
    return _module(device_id).get_function(name_expression(kernel, dtype))


def get(kernel, dtype):
    """The compiled ``kernel`` for ``dtype`` on the current device (compiled on first
    use; CuPy also caches the binary on disk)."""
    import cupy

    return _kernel(kernel, np.dtype(dtype), cupy.cuda.Device().id)


@functools.cache
def _device_attributes(device_id):
    import cupy

    return cupy.cuda.Device(device_id).attributes


def device_attribute(name):
    """An attribute of the current device (``"MultiProcessorCount"``, ...), cached."""
    import cupy

    return _device_attributes(cupy.cuda.Device().id)[name]


def row_norms2(a):
    """Squared norms of the rows of a 2-D CuPy array, in float64 (no float64 copy of
    ``a``)."""
    import cupy

    a = cupy.ascontiguousarray(a)
    if a.dtype not in DTYPES:
        a = a.astype(np.float64)
    n, m = a.shape
    out = cupy.empty(n, dtype=np.float64)
    if n:
        threads = min(256, max(32, -(-m // 32) * 32))
        grid = min(n, 8 * device_attribute("MultiProcessorCount"))  # rows by grid stride
        get("row_norms2", a.dtype)((grid,), (threads,), (a, np.int64(n), np.int32(m), out))
    return out
