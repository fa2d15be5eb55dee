"""Gradient pursuit and approximate conjugate gradient pursuit."""

import numpy as np

from sparsecode._rules import ABS, POSITIVE
from sparsecode._validation import check_bool, check_choice
from sparsecode.pursuit import _driver


def max_steps(k):
    """Step cap: a step that re-selects an atom of the support does not grow it."""
    return 4 * k


def _gram_block(Xb, G, p, out):
    from sparsecode._parallel import n_group_chunks
    from sparsecode.pursuit._gp_numba import gp_gram

    gp_gram(n_group_chunks(Xb.shape[0], p.group), p.group, Xb, p.D.T, p.int_view[1], G,
            p.rule, p.acgp, p.positive, p.width, p.max_steps, out.xnorm2, out.tol2, out.thr,
            out.I, out.Z, out.status)


def _nogram_block(Xb, p, out):
    from sparsecode.pursuit._gp_numba import gp_nogram_step, gp_scratch_size

    n, k = Xb.shape[0], p.width
    ns = np.zeros(n, dtype=np.int64)
    scratch = np.zeros((n, gp_scratch_size(k)))  # dprev and state start at 0

    def step(C, Ci, rows, R, status):
        gp_nogram_step(C, Ci, p.int_view[1], rows, R, p.D, p.rule, p.acgp, p.positive,
                       k, out.tol2, out.thr, out.I, out.Z, ns, scratch, status)

    _driver.nogram_steps(Xb, p, out, step)


def _rows_block(Xb, store, p, out):
    from sparsecode.pursuit import _rows
    from sparsecode.pursuit._gp_numba import gp_scratch_size
    from sparsecode.pursuit._rows_numba import gp_rows_round

    n, k = Xb.shape[0], p.width
    C, Ci = _rows.correlations(Xb, p)
    ns = np.zeros(n, dtype=np.int64)
    energy = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    scratch = np.zeros((n, gp_scratch_size(k)))  # dprev and state start at 0
    islots = np.empty((n, k), dtype=np.int64)

    def run_round(todo, rnd):
        gp_rows_round(todo, C, Ci, p.int_view[1], store.rows, store.slot, store.used, rnd,
                      p.D, p.rule, p.acgp, p.positive, k, p.max_steps, out.xnorm2, out.tol2,
                      out.thr, out.I, out.Z, ns, energy, steps, scratch, islots, out.status)

    _rows.rounds(store, out, run_round, lambda serve: _rows.support_atoms(out.I[serve]), k)


def _nogram_bytes_per_row(width):
    return 8 * (width * width + 5 * width)  # the scratch of _nogram_block


GP = _driver.Pursuit(name="gp", gram_block=_gram_block, nogram_block=_nogram_block,
                     gpu="gp_gpu", max_steps=lambda k, width: max_steps(width),
                     nogram_bytes_per_row=_nogram_bytes_per_row, rows_block=_rows_block,
                     rows_per_signal=lambda width: width)


def gp(X, D, *, k=None, tol=None, variant="gp", positive=False, gram="auto",
       backend="auto"):
    """Gradient pursuit (Blumensath and Davies, 2008).

    Each step selects an atom like MP (``|<r, d_j>| / ||d_j||``), adds it to the support,
    and takes one exact line-search step along the gradient of ``||x - z D||^2``
    restricted to the support.  ``variant="acgp"`` makes each direction conjugate to the
    previous one (approximate conjugate gradient pursuit), which approaches OMP's
    accuracy at MP-like cost.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals, one per row.  Never written to.
    D : array-like of shape (n_atoms, n_features)
        Dictionary, one atom per row.
    k : int, optional
        Maximum number of atoms per signal (``<= n_atoms``).  A step adds at most one atom
        (it may re-select one already in the support), so a signal stops when its support
        holds ``k`` atoms, after at most ``4 k`` steps.  Defaults to
        ``min(n_atoms, n_features)`` when only ``tol`` is given.
    tol : float, optional
        Stop a signal once ``||r||^2 <= tol * ||x||^2``.
    variant : {"gp", "acgp"}
    positive : bool
        Select only positively correlated atoms and keep every coefficient
        non-negative (the step is projected and shortened at the boundary).
    gram : "auto", "cached", bool, ndarray of shape (n_atoms, n_atoms) or GramRows
        See :func:`sparsecode.mp`.  The cached path holds a signal's whole support: a
        store needs at least ``k`` rows.
    backend : {"auto", "cpu", "gpu"}
        See :func:`sparsecode.mp`.

    Returns
    -------
    codes : SparseCodes
        ``n_samples`` rows of width ``k``.

    Notes
    -----
    With the Gram matrix every step is O(n_atoms * s) (``s`` the support size),
    independent of ``n_features``: the step length and the conjugate direction need only
    the support Gram.
    """
    check_choice(variant, "variant", ("gp", "acgp"))
    positive = check_bool(positive, "positive")
    return _driver.solve(X, D, GP, k=k, tol=tol, gram=gram, backend=backend,
                         rule=POSITIVE if positive else ABS, positive=positive,
                         acgp=variant == "acgp")
