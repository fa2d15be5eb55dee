"""Which Gram matrix a pursuit takes, and building it: :func:`decide_gram` (whole, cached
rows or none, from the sizes and the memory budgets of the CPU and the GPU),
:func:`model_gram` (the Gram a model keeps across batches) and :func:`gram` (``D D^T``,
in the atoms' dtype or float16, on the CPU or the device).
"""

import numpy as np

from sparsecode import _config
from sparsecode._backend import array_module, is_cupy
from sparsecode._validation import check_array, check_choice

__all__ = ["decide_gram", "gram", "model_gram"]


def gram(D, dtype=None):
    """Gram matrix ``G = D D^T`` of a dictionary, for reuse across calls.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        NumPy or CuPy (then computed on the device).
    dtype : {None, "float16"}
        None: ``D``'s float dtype.  ``"float16"``: rounded to float16, half the memory of
        float32; the pursuits read it as it is (16-bit rows widened exactly, updates in
        the signals' dtype) on the CPU and the GPU alike.  Needs unit-norm atoms.

    Returns
    -------
    G : ndarray of shape (n_atoms, n_atoms)
        Pass it as ``gram=G`` to :func:`sparsecode.mp`, :func:`sparsecode.omp` or
        :func:`sparsecode.gp` with signals of ``D``'s dtype; for many calls on a float16
        ``G``, pass ``GramRows.from_gram(D, G)`` instead, which checks it once.

    Notes
    -----
    On the CPU: ``n_atoms^2 n_features`` flops (the tiles on and below the diagonal,
    mirrored: exactly symmetric), each product rounded once to float16 for
    ``dtype="float16"``, written straight into the result (no float32 copy).
    """
    from sparsecode._parallel import gram_symmetric
    from sparsecode._validation import float_dtype

    if dtype is not None:
        check_choice(dtype, "dtype", ("float16",))
    D = check_array(D, "D")
    D = D.astype(float_dtype(D), copy=False)
    if not is_cupy(D):  # half the flops, every product rounded once
        G = gram_symmetric(D, half=dtype is not None)
        return G if dtype is None else G.view(np.float16)
    xp = array_module(D)
    K = D.shape[0]
    out = xp.empty((K, K), dtype=D.dtype if dtype is None else np.float16)
    tile = max(1, _config.GRAM_BUDGET_BYTES // (8 * K * D.dtype.itemsize))
    for t0 in range(0, K, tile):  # float32/64 products, rounded tile by tile
        out[t0:t0 + tile] = D[t0:t0 + tile] @ D.T
    return out


def decide_gram(gram, n_samples, k, D, rows_per_signal=None):
    """Whether a pursuit uses the Gram matrix ``G = D D^T``, whole or cached.

    Parameters
    ----------
    gram : "auto", "cached", bool, array or GramRows
        The solvers' ``gram`` argument.
    n_samples : int
        Signals to encode.
    k : int
        Steps per signal.
    D : ndarray of shape (n_atoms, n_features)
        The dictionary (its dtype sizes the Gram matrix).
    rows_per_signal : int, optional
        Gram rows one signal needs at once on the cached path (1 for MP, ``k`` for OMP
        and GP; default ``k``).

    Returns
    -------
    True, False, "cached" or None
        ``gram`` itself for a bool or ``"cached"``.  For ``"auto"``: True (the whole
        ``G``) when it fits in ``GRAM_BUDGET_BYTES`` (for CuPy atoms:
        :func:`sparsecode.gpu.gram_budget`) and the pursuit does at least as much
        correlation work as building it; else, on the CPU, ``"cached"`` when the atoms
        have at least ``CACHED_MIN_FEATURES`` features and ``GRAM_CACHE_BYTES`` holds the
        rows one signal needs; else False.  None when ``gram`` is an array or a GramRows
        (the caller validates it).
    """
    K, n_features = D.shape
    if isinstance(gram, str):
        check_choice(gram, "gram", ("auto", "cached"))
        if gram == "cached":
            return gram
        row = K * D.dtype.itemsize
        if is_cupy(D):
            from sparsecode.gpu import gram_budget

            budget = gram_budget()
        else:
            budget = _config.GRAM_BUDGET_BYTES
        fits = K * row <= budget
        # building G costs n_atoms^2 n_features; it pays once the pursuit does more
        # correlation work than that (n_samples * k updates of n_atoms entries each).
        if fits and n_samples * k >= K:
            return True
        if is_cupy(D):
            return False  # no cached rows on the GPU
        # cached rows cost what they are used for: at most one row (n_atoms n_features)
        # per step and signal, the no-Gram path's GEMM work, and far less when signals
        # share atoms
        need = min(k, K) if rows_per_signal is None else rows_per_signal
        holds = _config.GRAM_CACHE_BYTES // row >= max(1, need)
        if holds and n_features >= _config.CACHED_MIN_FEATURES and not fits:
            return "cached"
        return False
    if isinstance(gram, (bool, np.bool_)):
        return bool(gram)
    return None  # an array or a GramRows: validated by the caller


def model_gram(D, n_signals, k, rows_per_signal):
    """The Gram a model keeps for the pursuits on its atoms ``D`` (unit norm), decided by
    :func:`decide_gram` for a first batch of ``n_signals``: the whole matrix (ndarray), a
    :class:`~sparsecode.GramRows` store, or False (no Gram).  The caller keeps it, so a
    stream of batches builds it once and every batch takes the same path."""
    from sparsecode._gram_rows import GramRows

    want = decide_gram("auto", n_signals, k, D, rows_per_signal)
    if want is True:
        return gram(D)
    if want == "cached":
        return GramRows(D)
    return False


#: The former private name of :func:`decide_gram`, kept for its callers.
_want_gram = decide_gram
