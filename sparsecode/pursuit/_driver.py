"""One path through a pursuit: :func:`solve` validates the arguments (:func:`prepare`),
runs the kernels on the CPU (:func:`run`) or hands the problem to :mod:`sparsecode.gpu`,
drops zero coefficients of the non-negative variants, and returns the codes where ``X``
came from (:func:`deliver`).  Which Gram a call takes, and building it, are
:mod:`sparsecode.pursuit._gram`.

Each solver describes its kernels in a :class:`Pursuit`, whose two CPU callables work on
one block of signals:

``gram_block(X_block, G, prob, out)``
    Runs the whole pursuit in one kernel call; each thread computes the correlations of
    its chunk of signals with a single-threaded GEMM (BLAS is held to one thread around
    the call, so its idle threads do not compete with the kernel's).
``nogram_block(Xb, prob, out)``
    Steps in Python (:func:`nogram_steps`), one GEMM ``C = R_active D^T`` per step, a
    kernel call per step.
``rows_block(Xb, store, prob, out)``
    The cached Gram path: rounds reading rows from a :class:`~sparsecode.GramRows`
    ``store`` (see :mod:`sparsecode.pursuit._rows`).

``prob`` is a :class:`~sparsecode._problem.Problem`; ``out`` is a :class:`BlockOutput`
whose ``I``/``Z`` rows the kernels fill.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sparsecode import _config
from sparsecode._backend import array_module, is_cupy, row_norms2
from sparsecode._blas import one_blas_thread
from sparsecode._problem import Problem, compact_nonzero, finish_codes, warn_dependent
from sparsecode._rules import DEPENDENT
from sparsecode._validation import (
    check_choice,
    check_gram,
    check_half_gram,
    check_k_tol,
    check_on_backend,
    check_signals_and_dictionary,
)
from sparsecode.codes import SparseCodes
from sparsecode.pursuit._gram import decide_gram

__all__ = ["BlockOutput", "Problem", "Pursuit", "deliver", "nogram_steps", "prepare", "run",
           "solve"]


def _no_scratch(width):
    return 0


@dataclass(frozen=True)
class Pursuit:
    """What a solver hands to :func:`solve`: its name and its kernels."""

    name: str  # names the solver in warnings
    gram_block: Callable  # (Xb, G, prob, out): the Gram-path kernel call on one block
    nogram_block: Callable  # (Xb, prob, out): the no-Gram step loop on one block
    gpu: str  # the function of sparsecode.gpu taking (X, prob) to CuPy codes
    max_steps: Callable  # (k, width) -> step cap per signal
    nogram_bytes_per_row: Callable = _no_scratch  # (width) -> no-Gram scratch bytes per signal
    k_may_exceed_atoms: bool = False  # k may exceed n_atoms (atoms are selected again)
    rows_block: Callable = None  # (Xb, store, prob, out): the cached-Gram path on one block
    rows_per_signal: Callable = _no_scratch  # (width) -> Gram rows one signal needs at once
    defers: bool = False  # may defer missing rows (positive=False): then needs no rows


def solve(X, D, pursuit, *, k, tol, gram, backend, rule, positive=False, acgp=False):
    """Run ``pursuit`` on ``X``: validate, encode on the CPU or the GPU, drop the zero
    coefficients of the non-negative variants, and return the codes as arrays of the
    kind of ``X``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    D : array-like of shape (n_atoms, n_features)
    pursuit : Pursuit
    k, tol, gram, backend
        The solver's arguments, unchecked.
    rule : int
        Selection rule (:mod:`sparsecode._rules`).
    positive, acgp : bool
        Non-negative coefficients; conjugate directions (GP).

    Returns
    -------
    codes : SparseCodes
    """
    from sparsecode._gram_rows import GramRows

    rows_per_signal = pursuit.rows_per_signal
    if (pursuit.defers and not positive and isinstance(gram, GramRows)
            and gram.defer is True):
        rows_per_signal = _no_scratch  # a store that defers every missing row
    X, prob = prepare(X, D, k=k, tol=tol, gram=gram, backend=backend, rule=rule,
                      positive=positive, acgp=acgp, max_steps=pursuit.max_steps,
                      k_may_exceed_atoms=pursuit.k_may_exceed_atoms,
                      rows_per_signal=rows_per_signal)
    if prob.on_gpu:
        import sparsecode.gpu

        X, shift = scaled_rows(X, prob.dtype)
        # warn_dependent < encode < *_gpu < solve < solver < its caller
        codes = getattr(sparsecode.gpu, pursuit.gpu)(X, prob)
        if shift is not None:
            codes = unscaled_codes(codes, shift)
    else:
        codes = run(X, prob, pursuit)  # scales block by block
    if prob.positive:
        codes = compact_nonzero(codes)
    return deliver(codes, prob)


def scaled_rows(X, dtype, norms2=None):
    """``X`` with every row whose squared norm lies outside ``[2^-2E, 2^2E]`` (``E`` from
    ``_config.SCALE_EXPONENT``; rows of squares that overflow or underflow included)
    multiplied by the power of two that brings its largest magnitude into ``[1/2, 1)``.

    A power of two changes no rounding, so such a row is encoded exactly as its scaled
    copy and the codes scale back exactly (:func:`unscaled_codes`); rows in range are not
    touched (nor copied, when none is out of it).

    ``norms2`` are the rows' squared norms in float64 when the caller has them.

    Returns
    -------
    X : array of shape (n_samples, n_features)
    shift : int32 array of shape (n_samples,), or None
        The power of two each row was multiplied by (None: no row was).
    """
    xp = array_module(X)
    bound = 2.0 ** (2 * _config.SCALE_EXPONENT[np.dtype(dtype)])
    if norms2 is None:
        norms2 = row_norms2(X)
    out = ~((norms2 >= 1.0 / bound) & (norms2 <= bound))  # NaN-free: X is finite
    if not bool(out.any()):
        return X, None
    rows = xp.flatnonzero(out)
    amax = xp.max(xp.abs(X[rows]), axis=1).astype(np.float64)
    rows = rows[amax > 0]  # zero rows stay zero
    if rows.size == 0:
        return X, None
    _, e = xp.frexp(amax[amax > 0])
    shift = xp.zeros(X.shape[0], dtype=np.int32)
    shift[rows] = -e
    X = X.copy()
    X[rows] = xp.ldexp(X[rows], shift[rows][:, None]).astype(dtype)
    return X, shift


def unscaled_codes(codes, shift):
    """The codes of rows scaled by :func:`scaled_rows` brought back to their scale;
    raises when a coefficient is then beyond the dtype's range."""
    xp = array_module(codes.values)
    with np.errstate(over="ignore", under="ignore"):  # told below, in one error
        values = xp.ldexp(codes.values, -shift[:, None]).astype(codes.values.dtype)
    bad = ~xp.isfinite(values)
    if bool(bad.any()):
        n_bad = int(bad.any(axis=1).sum())
        big = float(np.finfo(values.dtype).max)
        raise ValueError(
            f"the coefficients of {n_bad} signal(s) exceed the range of {values.dtype} "
            f"(largest {big:.3g}): encode them in float64, or scale them down"
        )
    return SparseCodes(codes.indices, values, codes.n_atoms)


@dataclass
class BlockOutput:
    """Codes of one block and the per-signal numbers every kernel needs."""

    I: np.ndarray  # int32 (n, width), -1 filled
    Z: np.ndarray  # float64 (n, width), 0 filled
    xnorm2: np.ndarray  # ||x||^2
    tol2: np.ndarray  # residual energy at which to stop
    thr: np.ndarray  # smallest normalised correlation worth a step
    status: np.ndarray  # int8, why each signal stopped


def _on_gpu(X, D, backend):
    """Whether to run on the GPU: ``backend="gpu"``, or ``"auto"`` with CuPy input."""
    check_choice(backend, "backend", ("auto", "cpu", "gpu"))
    return backend == "gpu" or (backend == "auto" and (is_cupy(X) or is_cupy(D)))


def prepare(X, D, *, k, tol, gram, backend, rule, positive=False, acgp=False,
            max_steps=None, k_may_exceed_atoms=False, rows_per_signal=None):
    """Validate the common arguments and pick the backend; return ``(X, Problem)``.

    ``max_steps(k, width)`` gives the step cap per signal (default ``width``),
    ``rows_per_signal(width)`` the Gram rows a signal needs at once on the cached path
    (default ``width``)."""
    from sparsecode._gram_rows import GramRows

    cupy_out = is_cupy(X)
    on_gpu = _on_gpu(X, D, backend)
    if on_gpu and isinstance(gram, GramRows):
        raise ValueError("a GramRows store is for the CPU; on the GPU pass gram=True, "
                         "False or a CuPy Gram matrix")
    if on_gpu:
        from sparsecode.gpu import require

        require()  # one clear error when CuPy or a device is missing
    X = check_on_backend(X, "X", on_gpu)
    D = check_on_backend(D, "D", on_gpu)
    if (not isinstance(gram, (GramRows, str, bool, np.bool_))
            and gram is not None):
        gram = check_on_backend(gram, "gram", on_gpu)
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
    width = min(k, K)
    per_signal = width if rows_per_signal is None else rows_per_signal(width)
    want = decide_gram(gram, n, k, D, per_signal)
    derived = {}
    if isinstance(gram, GramRows):
        G = _checked_rows(gram, norms2, dt, per_signal)
        derived = gram.derived
    elif want is None and getattr(gram, "dtype", None) == np.float16:
        # read as it is: 16-bit rows on the GPU, a complete 16-bit store on the CPU
        G = check_half_gram(gram, norms2)
        if not on_gpu:
            G = GramRows.over_checked(D, G)  # checked once
            derived = G.derived
    elif want is None:
        G = check_gram(gram, norms2, dt)
        if scale is not None:
            G = G * xp.outer(scale, scale).astype(dt)
    elif on_gpu and want is True:
        G = D @ D.T
    elif want == "cached" and not on_gpu:
        G = GramRows(D)
        if G.capacity < per_signal:
            raise ValueError(
                f"gram='cached': _config.GRAM_CACHE_BYTES ({_config.GRAM_CACHE_BYTES}) "
                f"holds {G.capacity} Gram rows of {K} atoms; a signal needs {per_signal}")
    elif want is True:
        from sparsecode._parallel import gram_symmetric

        G = gram_symmetric(D)
    else:
        G = None
    prob = Problem(
        D=D,
        scale=scale,
        k=k,
        width=width,
        tol=tol,
        rtol=_config.rtol(dt),
        G=G,
        rule=rule,
        positive=positive,
        acgp=acgp,
        k_given=k_given,
        max_steps=width if max_steps is None else max_steps(k, width),
        on_gpu=on_gpu,
        cupy_out=cupy_out,
        group=int(_config.ROW_GROUP),
        derived=derived,
    )
    return X, prob


def _checked_rows(store, norms2, dt, per_signal):
    """A user's GramRows store checked against the dictionary and dtype of the call; the
    rows themselves when they are the whole Gram matrix in the call's dtype."""
    if store.dtype != dt or not store.matches(norms2):
        raise ValueError(
            f"gram: this GramRows was built from another dictionary (its atoms' norms or "
            f"its dtype {store.dtype} differ from those of D in {dt})")
    if store.capacity < per_signal:
        raise ValueError(f"gram: this GramRows holds {store.capacity} rows; a signal of "
                         f"this pursuit needs {per_signal} at once (raise max_bytes)")
    if store.complete and store.rows.dtype == dt:
        return store.rows  # the whole Gram matrix, rows in atom order
    return store


def _rows_per_block(prob, extra_bytes_per_row=0, budget=None):
    """Signals per block: as many as the budget allows (``_config.BLOCK_BYTES`` by
    default), cut at row-group bounds, and at least a row group per thread, past the
    budget if need be, in as many groups for every thread
    (``_config.BLOCK_GROUPS_PER_THREAD``; see :func:`sparsecode._parallel.n_group_chunks`)."""
    from sparsecode._parallel import block_rows, threads_rows

    per_row = prob.n_atoms * prob.dtype.itemsize + extra_bytes_per_row
    budget = _config.BLOCK_BYTES if budget is None else budget
    even = threads_rows()
    rows = block_rows(max(_config.MIN_BLOCK_ROWS, budget // max(per_row, 1), even))
    # whole row groups per thread: 5 groups on 2 threads ran 3 on one (the GEMMs 20% longer)
    return rows // even * even if even else rows


def run(X, prob, pursuit):
    """Encode the NumPy signals ``X`` block by block with ``pursuit``'s CPU kernels and
    return :class:`SparseCodes` (warning, for the solver's caller, about signals stopped
    by a dependent atom)."""
    n = X.shape[0]
    I = np.full((n, prob.width), -1, dtype=np.int32)
    Z = np.zeros((n, prob.width), dtype=np.float64)
    status = np.zeros(n, dtype=np.int8)
    budget = None
    if isinstance(prob.G, np.ndarray):
        extra = 0
    elif prob.G is not None:  # cached rows: the step state, the supports' rows, and the
        # deferred updates (n_features and 2 width doubles)
        extra = pursuit.nogram_bytes_per_row(prob.width) + 8 * (3 * prob.width + X.shape[1])
        budget = None if prob.G.complete else _config.ROWS_BLOCK_BYTES
    else:
        extra = pursuit.nogram_bytes_per_row(prob.width) + X.shape[1] * prob.dtype.itemsize
    B = _rows_per_block(prob, extra, budget)
    # every GEMM is a single-threaded one in a kernel thread (see sparsecode._parallel), so
    # BLAS is held to one thread for the whole call (its idle threads would spin against
    # the kernel's)
    with one_blas_thread():
        shift = _run_blocks(X, prob, B, I, Z, status, pursuit)
    # warn_dependent < run < solve < solver < its caller
    warn_dependent(int(np.count_nonzero(status == DEPENDENT)), n, pursuit.name, stacklevel=5)
    codes = finish_codes(I, Z, prob)
    return codes if shift is None else unscaled_codes(codes, shift)


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


def _run_blocks(X, prob, B, I, Z, status, pursuit):
    """Fill ``I``, ``Z`` and ``status`` block of ``B`` signals by block with ``pursuit``'s
    kernels; return the power of two each signal was scaled by (:func:`scaled_rows`), or
    None when none was."""
    n = X.shape[0]
    shift = None
    for b0 in range(0, n, B):
        b1 = min(b0 + B, n)
        Xb = X[b0:b1]
        xnorm2 = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
        Xb, s = scaled_rows(Xb, prob.dtype, xnorm2)
        if s is not None:
            xnorm2 = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
            shift = np.zeros(n, dtype=np.int32) if shift is None else shift
            shift[b0:b1] = s
        out = BlockOutput(
            I=I[b0:b1],
            Z=Z[b0:b1],
            xnorm2=xnorm2,
            tol2=prob.tol * xnorm2,
            thr=prob.rtol * np.sqrt(xnorm2),
            status=status[b0:b1],
        )
        if isinstance(prob.G, np.ndarray):
            pursuit.gram_block(np.ascontiguousarray(Xb), prob.G, prob, out)
        elif prob.G is not None:
            pursuit.rows_block(Xb, prob.G, prob, out)
        else:
            pursuit.nogram_block(Xb, prob, out)
    return shift


def nogram_steps(Xb, prob, out, step):
    """The no-Gram loop: per step the correlations of the row groups that hold an active
    signal (one GEMM per group and block of atoms, see :mod:`sparsecode._parallel`), then
    ``step``, for at most ``prob.max_steps`` steps.

    ``step(C, Ci, rows, R, status)`` advances the signals ``rows`` (int64; those whose
    ``status`` is not 0 = running are skipped) whose correlations are ``C`` (``Ci`` their
    integer view) and updates their residual rows in ``R`` and their ``status``.  A
    finished signal's row group is multiplied until every signal of the group is done,
    so its running signals' correlations come from the same GEMM as in any other call.
    """
    from sparsecode._parallel import group_correlations

    R = np.array(Xb, dtype=prob.dtype, order="C")
    n = R.shape[0]
    group = prob.group
    active = np.flatnonzero(out.xnorm2 > out.tol2)
    out.status[:] = 1
    out.status[active] = 0
    live = np.zeros(-(-n // group), dtype=bool)
    for _ in range(prob.max_steps):
        if active.size == 0:
            break
        live[:] = False
        live[active // group] = True
        rows = np.flatnonzero(np.repeat(live, group)[:n])
        C = np.empty((rows.size, prob.n_atoms), dtype=prob.dtype)
        group_correlations(R, prob.D, np.flatnonzero(live) * group, group,
                           int(_config.GEMM_COLS), C)
        step(C, C.view(prob.int_view[0]), rows, R, out.status)
        active = active[out.status[active] == 0]
    out.status[out.status == 0] = 1
