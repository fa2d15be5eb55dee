"""Matching pursuit."""

import numpy as np

from sparsecode import _config
from sparsecode._rules import RULES
from sparsecode._validation import check_choice
from sparsecode.pursuit import _driver


def _gram_block(Xb, G, p, out):
    from sparsecode._parallel import n_group_chunks
    from sparsecode.pursuit._mp_numba import mp_gram, mp_gram_lanes

    # two kernels, not one with a flag: each compiles only when its case comes up
    kernel = mp_gram_lanes if G.nbytes > _config.PREFETCH_GRAM_BYTES else mp_gram
    kernel(n_group_chunks(Xb.shape[0], p.group), p.group, Xb, p.D.T, p.int_view[1], G,
           p.rule, p.k, out.xnorm2, out.tol2, out.thr, out.I, out.Z)


def _nogram_block(Xb, p, out):
    from sparsecode.pursuit._mp_numba import mp_nogram_step

    ns = np.zeros(Xb.shape[0], dtype=np.int64)

    def step(C, Ci, rows, R, status):
        mp_nogram_step(C, Ci, p.int_view[1], rows, R, p.D, p.rule, out.tol2, out.thr, out.I,
                       out.Z, ns, status)

    _driver.nogram_steps(Xb, p, out, step)


def _rows_block(Xb, store, p, out):
    from sparsecode.pursuit import _rows

    if store.complete:  # a whole 16-bit Gram: the per-signal kernel
        _gram_block(np.ascontiguousarray(Xb), store.rows, p, out)
        return
    n = Xb.shape[0]
    C, Ci = _rows.correlations(Xb, p)
    ns = np.zeros(n, dtype=np.int64)
    energy = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    if store.defers(n, p.k):
        _deferred(C, Ci, store, p, out, ns, energy, steps)
        return
    from sparsecode.pursuit._rows_numba import mp_rows_round

    js = np.zeros(n, dtype=np.int64)
    coef = np.zeros(n)

    def run_round(todo, rnd):
        mp_rows_round(todo, C, Ci, p.int_view[1], store.rows, store.slot, store.used, rnd,
                      p.rule, p.k, out.xnorm2, out.tol2, out.thr, out.I, out.Z, ns, energy,
                      steps, js, coef, out.status)

    _rows.rounds(store, out, run_round, lambda serve: js[serve], 1)


def _deferred(C, Ci, store, p, out, ns, energy, steps):
    """The cached path deferring missing rows (:func:`sparsecode.pursuit._rows.deferred_rounds`)."""
    from sparsecode.pursuit import _rows
    from sparsecode.pursuit._defer_numba import mp_defer_round

    store.coherence()
    st = _rows.Deferred(C.shape[0], p.D.shape[1], p.k)

    def run_round(todo, rnd):
        mp_defer_round(todo, C, Ci, p.int_view[1], store.rows, store.slot, store.used, rnd,
                       p.D, store.mu_groups, store.mu_group, p.rule, p.k, out.xnorm2,
                       out.tol2, out.thr, out.I, out.Z, ns, energy, steps, st.V, st.pend,
                       st.pw, st.npend, _rows.MAX_CANDIDATES, out.status)

    _rows.deferred_rounds(store, out, C, p, st, run_round)


def _max_steps(k, width):
    return k  # an atom may be selected again


MP = _driver.Pursuit(name="mp", gram_block=_gram_block, nogram_block=_nogram_block,
                     gpu="mp_gpu", max_steps=_max_steps, k_may_exceed_atoms=True,
                     rows_block=_rows_block, rows_per_signal=lambda width: 1,
                     defers=True)


def mp(X, D, *, k=None, tol=None, selection="abs", gram="auto", backend="auto"):
    """Matching pursuit.

    At each step select an atom from the correlations of the residual with the atoms,
    subtract its projection from the residual, and add the coefficient to the code (an
    atom selected again has its coefficients summed).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals, one per row.  float32 and float64 are kept; float16 runs in float32,
        integers in float64.  Never written to.
    D : array-like of shape (n_atoms, n_features)
        Dictionary, one atom per row.  Atoms need not have unit norm.
    k : int, optional
        Maximum number of steps per signal (may exceed ``n_atoms``: atoms can be selected
        again).  Defaults to ``n_features`` when only ``tol`` is given.
    tol : float, optional
        Stop a signal once ``||r||^2 <= tol * ||x||^2``.  At least one of ``k`` and
        ``tol`` is required.
    selection : {"abs", "positive", "signed"}
        ``"abs"``: classic MP, the atom maximising ``|<r, d_j>| / ||d_j||``, with a signed
        coefficient ``<r, d_j> / ||d_j||^2``.
        ``"positive"``: non-negative MP, the atom maximising ``max(<r, d_j>, 0) / ||d_j||``
        with a non-negative coefficient; a signal also stops when no correlation is
        positive or when the step re-selects an atom already in its support (the rule of
        the MP-SAE paper's code and of SAELens' ``matching_pursuit`` SAE).
        ``"signed"``: the atom maximising ``<r, d_j> / ||d_j||`` (no absolute value); the
        coefficient may be negative (overcomplete's ``MpSAE``).
    gram : "auto", "cached", bool, ndarray of shape (n_atoms, n_atoms) or GramRows
        Use the Gram matrix ``G = D D^T`` to update correlations (``True``), recompute
        them from the residual with one GEMM per step (``False``), read the rows of the
        selected atoms from a bounded store that computes them on demand (``"cached"``,
        ``_config.GRAM_CACHE_BYTES`` of rows), or decide by memory and amount of work
        (``"auto"``: the whole ``G`` when it fits ``_config.GRAM_BUDGET_BYTES`` and pays
        off, else the cached rows for atoms of at least
        ``_config.CACHED_MIN_FEATURES`` features, else no Gram).  A precomputed ``G``
        (see :func:`sparsecode.gram`) is used as given; so is a
        :class:`sparsecode.GramRows` store (also in float16 or bfloat16), whose rows
        then serve every later call on the same dictionary.
    backend : {"auto", "cpu", "gpu"}
        ``"auto"``: the GPU (CuPy kernels) when ``X`` or ``D`` is a CuPy array, else the
        CPU.  ``"cpu"``/``"gpu"`` force it; the codes are CuPy arrays when ``X`` is one.
        The GPU needs CuPy: ``pip install "sparsecode[cuda12]"`` (or ``[cuda13]``).

    Returns
    -------
    codes : SparseCodes
        ``n_samples`` rows of width ``min(k, n_atoms)`` in the dtype of the computation.

    Notes
    -----
    Gram path cost per signal and step: ``2 n_atoms`` flops reading one Gram row
    (update) and one pass over the ``n_atoms`` correlations (select).  The up-front
    correlations ``X D^T`` cost ``2 n_samples n_atoms n_features`` flops.  When the Gram
    matrix is too large for the CPU caches, the Gram rows are the cost (memory
    bandwidth); the kernel then works on two signals at a time and prefetches one's next
    row while the other computes.  On the cached path a row missing from the store costs
    ``2 n_atoms n_features`` flops (one signal's share of ``X D^T``), paid once for all
    the signals waiting on it.
    """
    check_choice(selection, "selection", tuple(RULES))
    return _driver.solve(X, D, MP, k=k, tol=tol, gram=gram, backend=backend,
                         rule=RULES[selection])
