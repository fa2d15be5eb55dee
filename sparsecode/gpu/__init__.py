"""GPU backend (CuPy RawKernels).  Importing this module never imports CuPy.

:func:`sparsecode.mp`, :func:`sparsecode.omp` and :func:`sparsecode.gp` run here when
given CuPy arrays (or ``backend="gpu"``), through :func:`mp_gpu`, :func:`omp_gpu` and
:func:`gp_gpu`; so does MP-SAE training on CuPy arrays (:func:`batch_grad_gpu`, the loss
and gradient of :mod:`sparsecode.sae`).  Those four are loaded on first access.  The
CUDA C lives in ``kernels/*.cu`` and is compiled on first use (see
:mod:`sparsecode.gpu._module`).
"""

import importlib

#: The GPU entry points, loaded on first access, and the module of each.
_LAZY = {"mp_gpu": "mp", "omp_gpu": "omp", "gp_gpu": "gp", "batch_grad_gpu": "mpsae"}

__all__ = ["INSTALL_HINT", "GPUUnavailableError", "available", "batch_grad_gpu", "gp_gpu",
           "gram_budget", "mp_gpu", "omp_gpu", "require", "row_norms2"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later accesses skip this function
    return value

INSTALL_HINT = (
    'pip install "sparsecode[cuda12]" (CUDA 12) or pip install "sparsecode[cuda13]" (CUDA 13)'
)


class GPUUnavailableError(ImportError, RuntimeError):
    """The GPU backend was requested but CuPy or a CUDA device is missing."""


def available():
    """True when CuPy is installed and at least one CUDA device is visible."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: the GPU is not available
        return False


def _unavailable(reason):
    return GPUUnavailableError(
        f"the GPU backend needs CuPy and a CUDA device: {reason}. Install CuPy with "
        f"{INSTALL_HINT}; or pass NumPy arrays or backend='cpu' to run on the CPU."
    )


def require():
    """Return the ``cupy`` module, or raise :class:`GPUUnavailableError` saying what is
    missing and how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise _unavailable(f"CuPy is not installed ({exc})") from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - report the driver's reason
        raise _unavailable(f"CuPy found no usable CUDA driver or device ({exc})") from exc
    if n == 0:
        raise _unavailable("CuPy sees no CUDA device (check CUDA_VISIBLE_DEVICES)")
    return cupy


def row_norms2(a):
    """Squared norms of the rows of a 2-D CuPy array, in float64 (no float64 copy)."""
    from sparsecode.gpu._module import row_norms2 as kernel

    return kernel(a)


def gram_budget():
    """Bytes ``gram="auto"`` may spend on a whole Gram matrix on the current device:
    ``_config.GPU_GRAM_BUDGET_BYTES``, or a quarter of the device's memory when that is
    None (the same on every call on one device, so the choice, and the codes, do not
    depend on what else is allocated)."""
    from sparsecode import _config

    if _config.GPU_GRAM_BUDGET_BYTES is not None:
        return int(_config.GPU_GRAM_BUDGET_BYTES)
    from sparsecode.gpu._module import total_memory

    return total_memory() // 4
