"""The array backends: NumPy on the host, CuPy on a GPU.

The one home of the helpers that let a body of code serve both (never imports CuPy
unless it is handed a CuPy array).
"""

import numpy as np


def is_cupy(x):
    """True when ``x`` is a CuPy array (checked without importing CuPy)."""
    return type(x).__module__.startswith("cupy")


def array_module(x):
    """``cupy`` for a CuPy array, else ``numpy``."""
    if is_cupy(x):
        import cupy

        return cupy
    return np


def to_host(a):
    """``a`` as a NumPy array: CuPy arrays are copied from the device."""
    return a.get() if is_cupy(a) else a


def on_device_of(a, ref):
    """``a`` on the device of ``ref``: copied to the GPU when ``ref`` is a CuPy array and
    ``a`` is not, to the host in the opposite case, returned as it is otherwise."""
    if is_cupy(ref) and not is_cupy(a):
        import cupy

        return cupy.asarray(a)
    return to_host(a) if not is_cupy(ref) else a


def row_norms2(a):
    """Squared norms of the rows of a 2-D NumPy or CuPy array, in float64."""
    if is_cupy(a):
        from sparsecode.gpu import row_norms2 as gpu_row_norms2

        return gpu_row_norms2(a)
    return np.einsum("ij,ij->i", a, a, dtype=np.float64)
