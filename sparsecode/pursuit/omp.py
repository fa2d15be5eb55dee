"""Orthogonal matching pursuit (Batch-OMP)."""

import numpy as np

from sparsecode._rules import ABS, POSITIVE
from sparsecode._validation import check_bool
from sparsecode.pursuit import _driver


def deferred_updates(p):
    """Whether the deferred-update kernel runs (see ``omp_gram_lazy``) on the prepared
    problem ``p`` with a whole Gram matrix.  On 16-bit rows it reads the support Gram
    entries from the rows, where the other kernels take them exact from the atoms; the
    GPU kernels follow the same rule."""
    from sparsecode import _config

    return (not p.positive and p.n_atoms >= _config.LAZY_OMP_MIN_ATOMS
            and p.width >= _config.LAZY_OMP_MIN_K)


def block_coherence(G):
    """The largest off-diagonal ``|G[a, x]|`` of each row of a whole Gram matrix by block
    of ``SELECT_BLOCK`` atoms ``x``, as the rows store it (float32/float64, or the bits
    of 16-bit rows): float32, (n_atoms, n_blocks), exact (a maximum of stored values
    widened to float32 or, for float64 rows, rounded up)."""
    from sparsecode._halves_numba import STORAGE, widen
    from sparsecode.pursuit._omp_numba import block_coherence_keys

    if G.dtype in STORAGE.values():
        return widen(block_coherence_keys(G, G.dtype.type(0x7FFF)))
    it = np.dtype(np.int32 if G.dtype == np.float32 else np.int64)
    mub = block_coherence_keys(G.view(it), it.type(np.iinfo(it).max)).view(G.dtype)
    if G.dtype == np.float32:
        return mub
    up = mub.astype(np.float32)
    return np.where(up < mub, np.nextafter(up, np.float32(np.inf)), up)


def _lazy_block(Xb, G, p, out, exact_support):
    from sparsecode import _config
    from sparsecode._parallel import n_group_chunks
    from sparsecode.pursuit._omp_numba import omp_gram_lazy

    if "block_coherence" not in p.derived:  # once per Gram matrix
        mub = block_coherence(G)
        p.derived["block_coherence"] = mub, mub.max(axis=1).astype(np.float64)
    mub, mu = p.derived["block_coherence"]
    S, is_gram = (p.D, False) if exact_support else (G, True)
    omp_gram_lazy(n_group_chunks(Xb.shape[0], p.group), p.group, Xb, p.D, p.int_view[1], G,
                  S, is_gram, mu, mub, p.rule, p.width, out.xnorm2, out.tol2, out.thr,
                  p.rtol, out.I, out.Z, out.status,
                  max(1, int(_config.LAZY_OMP_CANDIDATES) * p.n_atoms // 4096))


def _gram_block(Xb, G, p, out):
    from sparsecode._parallel import n_group_chunks
    from sparsecode.pursuit._omp_numba import omp_gram

    if deferred_updates(p):
        _lazy_block(Xb, G, p, out, exact_support=False)
        return
    omp_gram(n_group_chunks(Xb.shape[0], p.group), p.group, Xb, p.D.T, p.int_view[1], G,
             p.rule, p.positive, p.width, out.xnorm2, out.tol2, out.thr, p.rtol, out.I, out.Z,
             out.status)


def _nogram_block(Xb, p, out):
    from sparsecode.pursuit._omp_numba import omp_nogram_step, omp_scratch_size

    n, k = Xb.shape[0], p.width
    ns = np.zeros(n, dtype=np.int64)
    scratch = np.empty((n, omp_scratch_size(k)))

    def step(C, Ci, rows, R, status):
        omp_nogram_step(C, Ci, p.int_view[1], rows, R, p.D, p.rule, p.positive, k,
                        out.tol2, out.thr, p.rtol, out.I, out.Z, ns, scratch, status)

    _driver.nogram_steps(Xb, p, out, step)


def _rows_block(Xb, store, p, out):
    from sparsecode.pursuit import _rows
    from sparsecode.pursuit._omp_numba import omp_scratch_size
    from sparsecode.pursuit._rows_numba import omp_rows_round

    if store.complete and deferred_updates(p):  # a whole 16-bit Gram: the per-signal kernel
        # support Gram entries from float16 rows (errors under 2.5e-4 for |G| <= 0.5), or
        # exact from the atoms for bfloat16's 8 bits (a dot of n_features per entry:
        # 2.6x the time at P4)
        _lazy_block(np.ascontiguousarray(Xb), store.rows, p, out,
                    exact_support=store.storage == "bfloat16")
        return
    n, k = Xb.shape[0], p.width
    C, Ci = _rows.correlations(Xb, p)
    ns = np.zeros(n, dtype=np.int64)
    scratch = np.empty((n, omp_scratch_size(k)))
    if not (p.positive or store.complete) and store.defers(n, k):
        _deferred(C, Ci, store, p, out, ns, scratch)
        return
    islots = np.empty((n, k), dtype=np.int64)  # the waiting path's support rows

    def run_round(todo, rnd):
        omp_rows_round(todo, C, Ci, p.int_view[1], store.rows, store.slot, store.used, rnd,
                       p.D, p.rule, p.positive, k, out.xnorm2, out.tol2, out.thr, p.rtol,
                       out.I, out.Z, ns, scratch, islots, out.status)

    _rows.rounds(store, out, run_round, lambda serve: _rows.support_atoms(out.I[serve]), k)


def _deferred(C, Ci, store, p, out, ns, scratch):
    """The cached path deferring missing rows (:func:`sparsecode.pursuit._rows.deferred_rounds`)."""
    from sparsecode.pursuit import _rows
    from sparsecode.pursuit._defer_numba import omp_defer_round

    mu = store.coherence()
    st = _rows.Deferred(C.shape[0], p.D.shape[1], p.width)

    def run_round(todo, rnd):
        omp_defer_round(todo, C, Ci, p.int_view[1], store.rows, store.slot, store.used, rnd,
                        p.D, mu, store.mu_groups, store.mu_group, p.rule, p.width,
                        out.xnorm2, out.tol2, out.thr, p.rtol,
                        out.I, out.Z, ns, scratch, st.V, st.pend,
                        st.npend, _rows.MAX_CANDIDATES, out.status)

    _rows.deferred_rounds(store, out, C, p, st, run_round)


def _max_steps(k, width):
    return width  # every step grows the support


def _nogram_bytes_per_row(width):
    return 8 * (2 * width * width + 4 * width)  # the scratch of _nogram_block (float64)


OMP = _driver.Pursuit(name="omp", gram_block=_gram_block, nogram_block=_nogram_block,
                      gpu="omp_gpu", max_steps=_max_steps,
                      nogram_bytes_per_row=_nogram_bytes_per_row, rows_block=_rows_block,
                      rows_per_signal=lambda width: width, defers=True)


def omp(X, D, *, k=None, tol=None, positive=False, gram="auto", backend="auto"):
    """Orthogonal matching pursuit (Batch-OMP).

    At each step select the atom most correlated with the residual, then refit all
    selected coefficients by least squares, so the residual is orthogonal to every
    selected atom.  The least-squares problem is solved with a Cholesky factor of the
    support Gram matrix grown by one row per step; the residual is never formed on the
    Gram path (Rubinstein, Zibulevsky and Elad, 2008).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals, one per row.  Never written to.
    D : array-like of shape (n_atoms, n_features)
        Dictionary, one atom per row.  Selection uses ``|<r, d_j>| / ||d_j||``, so atoms
        need not have unit norm.
    k : int, optional
        Maximum number of atoms per signal (``<= n_atoms``).  Defaults to
        ``min(n_atoms, n_features)`` when only ``tol`` is given.
    tol : float, optional
        Stop a signal once ``||r||^2 <= tol * ||x||^2``.
    positive : bool
        Non-negative OMP: select only positively correlated atoms and fit the
        coefficients by non-negative least squares on the support.  Atoms whose
        coefficient ends at 0 are dropped from the code.
    gram : "auto", "cached", bool, ndarray of shape (n_atoms, n_atoms) or GramRows
        See :func:`sparsecode.mp`.  The cached path holds a signal's whole support: a
        store needs at least ``k`` rows.
    backend : {"auto", "cpu", "gpu"}
        See :func:`sparsecode.mp`.

    Returns
    -------
    codes : SparseCodes
        ``n_samples`` rows of width ``k``.

    Warns
    -----
    RuntimeWarning
        When a signal stops early because its next atom is linearly dependent on the
        atoms already selected (for example a duplicated atom).

    Notes
    -----
    Gram path cost per signal and step ``s``: ``n_atoms`` reads (select), O(s^2) for the
    Cholesky row and the solve, ``2 n_atoms s`` flops reading ``s`` Gram rows (update);
    ``n_atoms k^2`` flops over ``k`` steps.
    """
    positive = check_bool(positive, "positive")
    return _driver.solve(X, D, OMP, k=k, tol=tol, gram=gram, backend=backend,
                         rule=POSITIVE if positive else ABS, positive=positive)
