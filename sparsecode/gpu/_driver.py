"""What the GPU pursuits share: encoding block by block, launch shapes, shared memory,
the no-Gram step loop.  The twin of the CPU driver of :mod:`sparsecode.pursuit`, which
validates and prepares the :class:`~sparsecode._problem.Problem` for both backends.

Each solver supplies two callables working on one block of signals:

``gram_block(Xb, prob, stats, I, Z)``
    Computes ``C = Xb D^T`` with cuBLAS and runs the whole pursuit in one launch.
``nogram_block(Xb, prob, stats, I, Z)``
    Steps from Python (:func:`nogram_steps`): per step one GEMM for the still-active
    signals and one launch.

``stats`` holds the per-signal numbers every kernel needs (:class:`RowStats`); ``I`` and
``Z`` are the block's rows of the output (int32, -1 filled; float64, 0 filled).
"""

from dataclasses import dataclass, replace

import numpy as np

from sparsecode import _config
from sparsecode._problem import finish_codes, warn_dependent
from sparsecode._rules import DEPENDENT
from sparsecode.gpu import _module

#: Shared memory a kernel declares statically (at most 656 bytes, see ``ptxas -v`` in
#: the compile test), kept free when sizing the dynamic part.
STATIC_SMEM = 1024
#: Dynamic shared memory a launch may use without opting in.
DEFAULT_SMEM = 48 * 1024


@dataclass
class RowStats:
    """Per-signal numbers of a block (device float64 arrays of shape (n,))."""

    xnorm2: object  # ||x||^2
    tol2: object  # residual energy at which to stop
    thr: object  # smallest correlation worth a step
    status: object  # int8, why each signal stopped (DEPENDENT counts; written by OMP)


def threads_for(kernel, length):
    """Threads per block for rows of ``length`` entries: ``_config.GPU_THREADS``, fewer
    for short rows, a multiple of 32 within what the compiled kernel allows."""
    want = min(_config.GPU_THREADS, -(-length // 32) * 32)
    cap = min(1024, kernel.max_threads_per_block) // 32 * 32
    return max(32, min(want // 32 * 32, cap))


def grid_for(n_rows, threads, scratch_bytes_per_block=0):
    """Thread blocks for a launch over ``n_rows`` signals: enough to fill the device
    (blocks take signals from a queue), within ``_config.GPU_MAX_BLOCKS`` and, when each
    block needs scratch, within ``_config.GPU_BLOCK_BYTES``."""
    cap = _config.GPU_MAX_BLOCKS
    if cap is None:
        cap = _module.device_attribute("MultiProcessorCount") * max(1, 2048 // threads)
    if scratch_bytes_per_block:
        cap = min(cap, _config.GPU_BLOCK_BYTES // scratch_bytes_per_block)
    return max(1, min(n_rows, cap))


def shared_memory(prob, extra_bytes, *, row=True):
    """``(use_shared, nbytes)``: dynamic shared memory for a launch that needs
    ``extra_bytes`` and, with ``row``, would like to hold one correlation row."""
    limit = _module.device_attribute("MaxSharedMemoryPerBlockOptin") - STATIC_SMEM
    if extra_bytes > limit:
        raise ValueError(
            f"k = {prob.width} is too large for the GPU kernels (they hold k coefficients "
            f"in {extra_bytes} bytes of shared memory; the device has {limit}); use a "
            "smaller k or backend='cpu'"
        )
    row_bytes = prob.n_atoms * prob.dtype.itemsize
    use = bool(row and _config.GPU_SHARED_CORRELATIONS and row_bytes + extra_bytes <= limit)
    return use, extra_bytes + (row_bytes if use else 0)


def launch(kernel, dtype, n_rows, threads, /, *, smem=0, grid=None, gram_dtype=None, **args):
    """Launch ``kernel`` (a name of ``_module.KERNELS``) for float ``dtype`` (and Gram
    rows of ``gram_dtype``) over ``n_rows`` signals with ``threads`` threads per block.

    ``args`` are the kernel's parameters by name, but for the queue counter, which is
    supplied here; :func:`sparsecode.gpu._module.arguments` orders them by the kernel
    table, converts the scalars and checks the arrays' dtypes.
    """
    import cupy

    fn = _module.get(kernel, dtype, gram_dtype)
    if smem > DEFAULT_SMEM - STATIC_SMEM:
        fn.max_dynamic_shared_size_bytes = smem
    args["queue"] = cupy.zeros(1, dtype=np.int32)
    grid = grid_for(n_rows, threads) if grid is None else grid
    fn((grid,), (threads,), _module.arguments(kernel, dtype, args, gram_dtype),
       shared_mem=smem)


def row_stats(Xb, prob):
    """:class:`RowStats` of the signals ``Xb``."""
    import cupy

    xnorm2 = _module.row_norms2(Xb)
    return RowStats(xnorm2=xnorm2, tol2=prob.tol * xnorm2, thr=prob.rtol * cupy.sqrt(xnorm2),
                    status=cupy.zeros(Xb.shape[0], dtype=np.int8))


def rows_per_block(bytes_per_row):
    """Signals per launch under ``_config.GPU_BLOCK_BYTES``."""
    return max(_config.GPU_MIN_BLOCK_ROWS, _config.GPU_BLOCK_BYTES // max(bytes_per_row, 1))


def correlations(Xb, prob):
    """``Xb D^T`` (cuBLAS), C-contiguous, in the problem's dtype."""
    import cupy

    return cupy.ascontiguousarray(Xb @ prob.D.T)


def encode(X, prob, gram_block, nogram_block, *, nogram_bytes_per_row=0, name="pursuit"):
    """Encode the CuPy signals ``X`` block by block; return CuPy :class:`SparseCodes`
    (warning, as on the CPU, about signals stopped by a dependent atom).

    The blocks get a copy of ``prob`` with C-contiguous ``D`` and ``G``."""
    import cupy

    G = None if prob.G is None else cupy.ascontiguousarray(prob.G)
    prob = replace(prob, D=cupy.ascontiguousarray(prob.D), G=G)
    n, n_features = X.shape
    I = cupy.full((n, prob.width), -1, dtype=np.int32)
    Z = cupy.zeros((n, prob.width), dtype=np.float64)
    per_row = prob.n_atoms * prob.dtype.itemsize
    if prob.G is None:
        per_row += n_features * prob.dtype.itemsize + nogram_bytes_per_row
    B = rows_per_block(per_row)
    n_dep = 0
    for b0 in range(0, n, B):
        b1 = min(b0 + B, n)
        Xb = X[b0:b1]
        block = gram_block if prob.G is not None else nogram_block
        stats = row_stats(Xb, prob)
        block(Xb, prob, stats, I[b0:b1], Z[b0:b1])
        n_dep += int(cupy.count_nonzero(stats.status == DEPENDENT))
    # warn_dependent < encode < *_gpu < solve < solver < its caller
    warn_dependent(n_dep, n, name, stacklevel=6)
    return finish_codes(I, Z, prob)


def nogram_steps(Xb, prob, stats, step):
    """The no-Gram loop: per step one GEMM ``C = R[active] D^T``, then ``step``, for at
    most ``prob.max_steps`` steps.

    ``step(C, active, R, status)`` advances the signals ``active`` (int32) whose
    correlations are the rows of ``C``, updating their residual rows in ``R`` and their
    ``status`` (int8, 0 = running).  Signals that stop leave the active list, so they
    cost nothing further.
    """
    import cupy

    R = cupy.array(Xb, dtype=prob.dtype, order="C")
    active = cupy.flatnonzero(stats.xnorm2 > stats.tol2).astype(np.int32)
    status = stats.status
    status[...] = 1
    status[active] = 0
    for _ in range(prob.max_steps):
        if active.size == 0:
            break
        C = cupy.ascontiguousarray(R[active] @ prob.D.T)
        step(C, active, R, status)
        active = active[status[active] == 0]
