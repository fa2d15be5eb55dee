"""Holding BLAS to one thread around the Numba kernels.

The parallel kernels call a single-threaded GEMM from each of their threads; BLAS threads
left free would only spin against them.  Finding the loaded BLAS libraries reads the
process's memory map (about a millisecond), so it is done once and the controller reused:
a training step calls this every few milliseconds.
"""

import contextlib

_controller = None


def one_blas_thread():
    """Context manager holding every loaded BLAS to one thread (a no-op when none can be
    controlled)."""
    global _controller
    try:
        if _controller is None:
            # the kernels' np.dot calls SciPy's BLAS (Numba binds to it), which may not be
            # loaded yet: load it first so the controller finds and limits it too
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001 - no controllable BLAS: nothing to limit
        return contextlib.nullcontext()
