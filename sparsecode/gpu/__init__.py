"""GPU backend (CuPy RawKernels).  Importing this module never imports CuPy.

:func:`sparsecode.mp` and :func:`sparsecode.gp` run here when given CuPy arrays (or
``backend="gpu"``); the CUDA C lives in ``kernels/*.cu`` and is compiled on first use
(see :mod:`sparsecode.gpu._module`).
"""

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
