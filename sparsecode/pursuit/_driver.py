"""What MP, OMP and GP share: validation, the Gram decision, encoding block by block,
and assembling :class:`~sparsecode.codes.SparseCodes`.

Each solver supplies two callables working on one block of signals:

``gram_block(X_block, G, ctx, out)``
    Runs the whole pursuit in one kernel call; each thread computes the correlations of
    its chunk of signals with a single-threaded GEMM (BLAS is held to one thread around
    the call, so its idle threads do not compete with the kernel's).
``nogram_block(Xb, ctx, out)``
    Steps in Python, one GEMM ``C = R_active D^T`` per step, a kernel call per step.

``ctx`` is a :class:`Problem`; ``out`` is a :class:`BlockOutput` whose ``I``/``Z``
rows the kernels fill.

:func:`prepare` also picks the backend: with ``Problem.on_gpu`` the solver hands the
problem (CuPy arrays) to :mod:`sparsecode.gpu` instead of :func:`run`; both end in
:func:`finish_codes`, and :func:`deliver` returns the codes where ``X`` came from.
"""

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np

from sparsecode import _config
from sparsecode._backend import array_module, is_cupy, to_backend
from sparsecode._blas import one_blas_thread
from sparsecode._rules import DEPENDENT
from sparsecode._validation import (
    check_array,
    check_choice,
    check_gram,
    check_k_tol,
    check_signals_and_dictionary,
)
from sparsecode.codes import SparseCodes


@dataclass
class Problem:
    """Validated inputs and per-dictionary constants shared by every block."""

    D: np.ndarray  # unit-norm atoms (normalised here when they were not)
    scale: np.ndarray | None  # 1 / ||d_j|| of the given atoms, or None when unit norm
    k: int
    width: int
    tol: float
    rtol: float
    G: np.ndarray | None
    options: dict
    on_gpu: bool = False  # the arrays are CuPy arrays and the GPU kernels run
    cupy_out: bool = False  # return CuPy codes (X was a CuPy array)

    @property
    def dtype(self):
        return self.D.dtype

    @property
    def n_atoms(self):
        return self.D.shape[0]

    @property
    def int_view(self):
        """``(dtype, mask)``: the integer type of the same width as the float dtype, and
        its magnitude mask, for the kernels' bitwise selection."""
        it = np.dtype(np.int32 if self.dtype == np.float32 else np.int64)
        return it, it.type(np.iinfo(it).max)


@dataclass
class BlockOutput:
    """Codes of one block and the per-signal numbers every kernel needs."""

    I: np.ndarray  # int32 (n, width), -1 filled
    Z: np.ndarray  # float64 (n, width), 0 filled
    xnorm2: np.ndarray  # ||x||^2
    tol2: np.ndarray  # residual energy at which to stop
    thr: np.ndarray  # smallest normalised correlation worth a step
    status: np.ndarray  # int8, why each signal stopped


def gram(D):
    """Gram matrix ``G = D D^T`` of a dictionary, for reuse across calls.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)

    Returns
    -------
    G : ndarray of shape (n_atoms, n_atoms)
        In ``D``'s float dtype.  Pass it as ``gram=G`` to :func:`sparsecode.mp`,
        :func:`sparsecode.omp` or :func:`sparsecode.gp` with signals of the same dtype.
    """
    from sparsecode._validation import float_dtype

    D = check_array(D, "D")
    D = D.astype(float_dtype(D), copy=False)
    return D @ D.T


def _want_gram(gram, n_samples, k, D):
    K = D.shape[0]
    if isinstance(gram, str):
        check_choice(gram, "gram", ("auto",))
        fits = K * K * D.dtype.itemsize <= _config.GRAM_BUDGET_BYTES
        # building G costs n_atoms^2 n_features; it pays once the pursuit does more
        # correlation work than that (n_samples * k updates of n_atoms entries each).
        return fits and n_samples * k >= K
    if isinstance(gram, (bool, np.bool_)):
        return bool(gram)
    return None  # an array: validated by the caller


def _on_gpu(X, D, backend):
    """Whether to run on the GPU: ``backend="gpu"``, or ``"auto"`` with CuPy input."""
    check_choice(backend, "backend", ("auto", "cpu", "gpu"))
    return backend == "gpu" or (backend == "auto" and (is_cupy(X) or is_cupy(D)))


def prepare(X, D, *, k, tol, gram, backend, k_may_exceed_atoms=False, **options):
    """Validate the common arguments and pick the backend; return ``(X, Problem)``."""
    cupy_out = is_cupy(X)
    on_gpu = _on_gpu(X, D, backend)
    if on_gpu:
        from sparsecode.gpu import require

        require()  # one clear error when CuPy or a device is missing
    X = to_backend(X, "X", on_gpu)
    D = to_backend(D, "D", on_gpu)
    if not isinstance(gram, (str, bool, np.bool_)) and gram is not None:
        gram = to_backend(gram, "gram", on_gpu)
    X, D, norms2 = check_signals_and_dictionary(X, D)
    xp = array_module(D)
    n, n_features = X.shape
    K = D.shape[0]
    k_given = k
    k, tol = check_k_tol(k, tol, K, n_features, k_may_exceed_atoms=k_may_exceed_atoms)
    dt = X.dtype
    # The kernels work on unit-norm atoms: normalise here (a copy) when needed, and
    # rescale the coefficients at the end.  Selection by |<r, d_j>| / ||d_j|| and every
    # residual are unchanged by this.
    unit = bool(xp.all(xp.abs(norms2 - 1.0) <= _config.UNIT_NORM_ATOL[dt]))
    scale = None if unit else 1.0 / xp.sqrt(norms2)
    if scale is not None:
        D = D * scale[:, None].astype(dt)
    want = _want_gram(gram, n, k, D)
    if want is None:
        G = check_gram(gram, norms2, dt)
        if scale is not None:
            G = G * xp.outer(scale, scale).astype(dt)
    elif want:
        G = D @ D.T
    else:
        G = None
    prob = Problem(
        D=D,
        scale=scale,
        k=k,
        width=min(k, K),
        tol=tol,
        rtol=_config.rtol(dt),
        G=G,
        options=dict(options, k_given=k_given),
        on_gpu=on_gpu,
        cupy_out=cupy_out,
    )
    return X, prob


def _rows_per_block(prob, extra_bytes_per_row=0):
    per_row = prob.n_atoms * prob.dtype.itemsize + extra_bytes_per_row
    return max(_config.MIN_BLOCK_ROWS, _config.BLOCK_BYTES // max(per_row, 1))


def run(X, prob, gram_block, nogram_block, *, nogram_bytes_per_row=0, name="pursuit"):
    """Encode ``X`` block by block and return :class:`SparseCodes`."""
    n = X.shape[0]
    I = np.full((n, prob.width), -1, dtype=np.int32)
    Z = np.zeros((n, prob.width), dtype=np.float64)
    status = np.zeros(n, dtype=np.int8)
    use_gram = prob.G is not None
    extra = 0 if use_gram else nogram_bytes_per_row + X.shape[1] * prob.dtype.itemsize
    B = _rows_per_block(prob, extra)
    # Gram path: each kernel thread runs its own single-threaded GEMM, so BLAS is held to
    # one thread for the whole call (its idle threads would spin against the kernel's).
    limit = one_blas_thread() if use_gram else contextlib.nullcontext()
    with limit:
        _run_blocks(X, prob, B, I, Z, status, gram_block, nogram_block)
    warn_dependent(int(np.count_nonzero(status == DEPENDENT)), n, name)
    return finish_codes(I, Z, prob)


def warn_dependent(n_dep, n, name, stacklevel=4):
    """Warn (for the caller of the solver) when ``n_dep`` of ``n`` signals stopped because
    their next atom was linearly dependent on the atoms already selected.  ``stacklevel``
    counts from this function to the solver's caller."""
    if n_dep:
        warnings.warn(
            f"{name} stopped early for {n_dep} of {n} signal(s): the next atom is linearly "
            "dependent on the atoms already selected (duplicated or dependent atoms in D)",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def finish_codes(I, Z, prob):
    """:class:`SparseCodes` from the kernels' ``I`` (int32) and ``Z`` (float64) of the
    unit-norm problem (NumPy or CuPy): coefficients rescaled to the given atoms, cast to
    the problem's dtype, and the width trimmed to the longest code when ``k`` was not
    given."""
    xp = array_module(I)
    if prob.scale is not None:
        Z *= xp.where(I >= 0, prob.scale[xp.maximum(I, 0)], 0.0)
    values = Z.astype(prob.dtype)
    if prob.options.get("k_given") is None and I.shape[0]:
        width = max(1, int((I >= 0).sum(axis=1).max()))
        I, values = I[:, :width].copy(), values[:, :width].copy()
    return SparseCodes(I, values, prob.n_atoms)


def deliver(codes, prob):
    """The codes as arrays of the kind of the input ``X``: NumPy for NumPy input (also
    when computed on the GPU), CuPy for CuPy input (also when computed on the CPU)."""
    if prob.on_gpu and not prob.cupy_out:
        return SparseCodes(codes.indices.get(), codes.values.get(), codes.n_atoms)
    if prob.cupy_out and not prob.on_gpu:
        import cupy

        return SparseCodes(cupy.asarray(codes.indices), cupy.asarray(codes.values),
                           codes.n_atoms)
    return codes


def _run_blocks(X, prob, B, I, Z, status, gram_block, nogram_block):
    """Fill ``I``, ``Z`` and ``status`` block of ``B`` signals by block."""
    n = X.shape[0]
    use_gram = prob.G is not None
    for b0 in range(0, n, B):
        b1 = min(b0 + B, n)
        Xb = X[b0:b1]
        xnorm2 = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
        out = BlockOutput(
            I=I[b0:b1],
            Z=Z[b0:b1],
            xnorm2=xnorm2,
            tol2=prob.tol * xnorm2,
            thr=prob.rtol * np.sqrt(xnorm2),
            status=status[b0:b1],
        )
        if use_gram:
            gram_block(np.ascontiguousarray(Xb), prob.G, prob, out)
        else:
            nogram_block(Xb, prob, out)


def nogram_steps(Xb, prob, out, step, max_steps):
    """The no-Gram loop: per step one GEMM for the active signals, then ``step``.

    ``step(C, Ci, rows, R, status)`` advances the signals ``rows`` (int64) whose
    correlations are ``C`` (``Ci`` their integer view) and updates their residual rows in
    ``R`` and their ``status`` (0 = running).
    """
    R = np.array(Xb, dtype=prob.dtype, order="C")
    active = np.flatnonzero(out.xnorm2 > out.tol2)
    out.status[:] = 1
    out.status[active] = 0
    DT = prob.D.T
    for _ in range(max_steps):
        if active.size == 0:
            break
        C = np.matmul(R[active], DT)
        step(C, C.view(prob.int_view[0]), active, R, out.status)
        active = active[out.status[active] == 0]
    out.status[out.status == 0] = 1


def compact_nonzero(codes):
    """Drop zero coefficients from each row of ``codes`` in place, keeping order.

    Used by the non-negative solvers, where an atom can end at exactly 0.  Works on
    NumPy and CuPy codes.
    """
    xp = array_module(codes.indices)
    keep = (codes.values != 0) & (codes.indices >= 0)
    if not keep.size or bool(keep.all()):
        return codes
    n, width = keep.shape
    col = xp.cumsum(keep, axis=1) - 1  # where each kept entry moves to
    rows = xp.broadcast_to(xp.arange(n)[:, None], (n, width))
    idx = xp.full_like(codes.indices, -1)
    val = xp.zeros_like(codes.values)
    idx[rows[keep], col[keep]] = codes.indices[keep]
    val[rows[keep], col[keep]] = codes.values[keep]
    codes.indices, codes.values = idx, val
    return codes
