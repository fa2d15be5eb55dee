"""GPU backend (CuPy).  Importing this module never imports CuPy."""


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
