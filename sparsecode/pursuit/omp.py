"""Orthogonal matching pursuit (Batch-OMP)."""

import numpy as np

from sparsecode._rules import ABS, POSITIVE
from sparsecode.pursuit import _driver


def _gram_block(Xb, G, p, out):
    from sparsecode._parallel import n_chunks
    from sparsecode.pursuit._omp_numba import omp_gram

    o = p.options
    omp_gram(n_chunks(Xb.shape[0]), Xb, p.D.T, p.int_view[1], G, o["rule"], o["positive"],
             p.width, out.xnorm2, out.tol2, out.thr, p.rtol, out.I, out.Z, out.status)


def _nogram_block(Xb, p, out):
    from sparsecode.pursuit._omp_numba import omp_nogram_step

    o = p.options
    n, k = Xb.shape[0], p.width
    ns = np.zeros(n, dtype=np.int64)
    L, GII = np.empty((n, k, k)), np.empty((n, k, k))
    a0, fw = np.empty((n, k)), np.empty((n, k))
    work, delta = np.empty((n, k)), np.empty((n, k))

    def step(C, Ci, rows, R, status):
        omp_nogram_step(C, Ci, p.int_view[1], rows, R, p.D, o["rule"], o["positive"], k,
                        out.tol2, out.thr, p.rtol, out.I, out.Z, ns, L, GII, a0, fw, work, delta,
                        status)

    _driver.nogram_steps(Xb, p, out, step, k)


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
    gram : "auto", bool or ndarray of shape (n_atoms, n_atoms)
        See :func:`sparsecode.mp`.
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
    positive = bool(positive)
    X, p = _driver.prepare(X, D, k=k, tol=tol, gram=gram, backend=backend,
                           rule=POSITIVE if positive else ABS, positive=positive)
    k = p.width
    if p.on_gpu:
        from sparsecode.gpu.omp import omp_gpu

        codes = omp_gpu(X, p)
    else:
        codes = _driver.run(X, p, _gram_block, _nogram_block, name="omp",
                            nogram_bytes_per_row=8 * (2 * k * k + 4 * k))
    if positive:
        codes = _driver.compact_nonzero(codes)
    return _driver.deliver(codes, p)
