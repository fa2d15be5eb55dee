"""The encoders of pretrained SAEs, block by block: the scores ``X_in W_enc`` of a block
of rows, then one parallel pass that keeps the active atoms; SAELens' matching pursuit;
the pursuits of :mod:`sparsecode` on the decoder; least squares on a support.

The scores of a block take at most ``sparsecode._config.BLOCK_BYTES``.  They are
computed by fixed row groups (:func:`sparsecode._parallel.correlations_by_group`), as
the pursuits' correlations are: a row's codes are the same bits whatever the BLAS, the
thread count or how the rows are split into calls at multiples of
``_config.ROW_GROUP`` (the ``encode`` command's batches).
"""

import numpy as np

from sparsecode import _config
from sparsecode._parallel import correlations_by_group
from sparsecode.codes import SparseCodes


def block_rows(n_atoms, itemsize):
    """Rows per block whose scores fit ``_config.BLOCK_BYTES`` (at least
    ``_config.MIN_BLOCK_ROWS``), rounded down to whole row groups: blocks start at group
    bounds, so every row's scores are the same bits however the rows are split."""
    from sparsecode._parallel import block_rows as whole_groups

    rows = max(int(_config.MIN_BLOCK_ROWS), int(_config.BLOCK_BYTES) // (n_atoms * itemsize))
    return whole_groups(rows)


def _stack(parts, n_atoms, dtype):
    """One SparseCodes of the blocks' codes, padded to the widest."""
    width = max([p[0].shape[1] for p in parts] + [1])
    n = sum(p[0].shape[0] for p in parts)
    I = np.full((n, width), -1, dtype=np.int32)
    Z = np.zeros((n, width), dtype=dtype)
    r = 0
    for idx, val in parts:
        I[r:r + idx.shape[0], :idx.shape[1]] = idx
        Z[r:r + idx.shape[0], :idx.shape[1]] = val
        r += idx.shape[0]
    return SparseCodes(I, Z, n_atoms)


def encode_native(sae, Xin):
    """The architecture's own encoder.

    Parameters
    ----------
    sae : PretrainedSAE
    Xin : ndarray of shape (n_samples, n_features)
        Encoder input (:meth:`PretrainedSAE.encoder_input`).

    Returns
    -------
    SparseCodes
        ReLU, JumpReLU, gated: active atoms in atom order; TopK: by decreasing activation
        (ties: the lower atom first); groupmax: one slot per group; matching pursuit: in
        order of first selection.  Zero activations are not stored.
    """
    from sparsecode.pretrained import _native_numba as K

    if sae.architecture == "matching_pursuit":
        G = pursuit_gram(sae, Xin.shape[0], sae.max_iterations)
        if G is not False:
            return saelens_mp_gram(Xin, decoder_atoms(sae), G, sae.max_iterations,
                                   sae.residual_threshold, sae.stop_on_duplicate_support)
        return saelens_mp(Xin, sae.W_dec, sae.max_iterations, sae.residual_threshold,
                          sae.stop_on_duplicate_support)
    m, dt = sae.n_atoms, sae.dtype
    arch = sae.architecture
    bias = sae.b_enc
    scale = np.ones(m, dtype=dt)
    if arch == "topk" and sae.rescale_acts_by_decoder_norm:
        scale = np.sqrt(np.einsum("ij,ij->i", sae.W_dec, sae.W_dec,
                                  dtype=np.float64)).astype(dt)
    thr = np.full(m, -np.inf, dtype=dt)
    gate, gate_bias = False, bias
    if arch == "jumprelu":
        thr = sae.threshold
    elif arch == "gated":
        # one GEMM serves both paths: gate = P + b_gate, magnitude = exp(r_mag) P + b_mag
        gate, gate_bias = True, sae.b_gate
        scale = np.exp(sae.r_mag.astype(np.float64)).astype(dt)
        bias = (sae.b_mag.astype(np.float64) / scale).astype(dt)
    parts = []
    E = encoder_rows(sae)
    B = block_rows(m, dt.itemsize)
    for lo in range(0, Xin.shape[0], B):
        P = correlations_by_group(Xin[lo:lo + B], E)
        n = P.shape[0]
        if arch == "topk":
            I = np.empty((n, sae.k), dtype=np.int32)
            Z = np.empty((n, sae.k), dtype=dt)
            K.topk_rows(P, bias, scale, sae.k, I, Z)
        elif arch == "groupmax":
            I = np.empty((n, sae.k), dtype=np.int32)
            Z = np.empty((n, sae.k), dtype=dt)
            K.groupmax_rows(P, bias, scale, sae.k, I, Z)
        else:
            counts = K.count_active(P, bias, scale, thr, gate, gate_bias)
            w = int(counts.max()) if n else 0
            I = np.full((n, w), -1, dtype=np.int32)
            Z = np.zeros((n, w), dtype=dt)
            K.fill_active(P, bias, scale, thr, gate, gate_bias, I, Z)
        parts.append((I, Z))
    return _stack(parts, m, dt)


def saelens_mp(Xin, W, max_iterations, residual_threshold, stop_on_duplicate_support):
    """SAELens' matching pursuit on the rows of ``W`` as they are (free norms).

    Parameters
    ----------
    Xin : ndarray of shape (n_samples, n_features)
    W : ndarray of shape (n_atoms, n_features)
    max_iterations : int
    residual_threshold : float
        Stop a signal once ``||r|| <`` this after a step (0: never).
    stop_on_duplicate_support : bool
        Stop a signal once a step leaves its support unchanged (an atom selected again,
        its increment kept, or no positive correlation).

    Returns
    -------
    SparseCodes
        Atoms in order of first selection, coefficients summed over re-selections.
    """
    from sparsecode.pretrained._native_numba import mp_step

    n, d = Xin.shape
    dt = W.dtype
    width = min(max_iterations, W.shape[0])
    W = np.ascontiguousarray(W)
    R = np.array(Xin, dtype=dt, order="C")
    I = np.full((n, width), -1, dtype=np.int32)
    Z = np.zeros((n, width), dtype=dt)
    ns = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.bool_)
    thr2 = float(residual_threshold) ** 2
    from sparsecode._blas import one_blas_thread
    from sparsecode._parallel import group_correlations, row_group

    group = row_group()
    B = block_rows(W.shape[0], dt.itemsize) // group  # groups per block
    for _ in range(max_iterations):
        running = np.flatnonzero(~done)
        if not running.size:
            break
        # the correlations of every row group holding a running row, group by group
        starts = np.unique(running // group) * group
        for g0 in range(0, starts.size, B):
            st = starts[g0:g0 + B]
            rows = running[(running >= st[0]) & (running < st[-1] + group)]
            C = np.empty((int(np.minimum(st + group, n).sum() - st.sum()), W.shape[0]),
                         dtype=dt)
            with one_blas_thread():
                group_correlations(R, W, st.astype(np.int64), group,
                                   int(_config.GEMM_COLS), C)
            # each running row's place among the groups' rows
            offsets = np.concatenate(([0], np.cumsum(np.minimum(st + group, n) - st)))
            crow = offsets[np.searchsorted(st, rows, side="right") - 1] + rows % group
            mp_step(C, crow, rows, R, W, stop_on_duplicate_support, thr2, I, Z, ns, done)
    return SparseCodes(I, Z, W.shape[0])


def saelens_mp_gram(Xin, W, G, max_iterations, residual_threshold,
                    stop_on_duplicate_support):
    """:func:`saelens_mp` on the Gram path: one GEMM ``X_in W^T`` per block of rows, then
    every step updates the correlations from the Gram matrix ``G = W W^T``."""
    from sparsecode.pretrained._native_numba import mp_gram_rows

    n = Xin.shape[0]
    dt = W.dtype
    m = W.shape[0]
    width = min(max_iterations, m)
    I = np.empty((n, width), dtype=np.int32)
    Z = np.empty((n, width), dtype=dt)
    B = block_rows(m, dt.itemsize)
    thr2 = float(residual_threshold) ** 2
    it = np.dtype(np.int32 if dt == np.float32 else np.int64)
    for lo in range(0, n, B):
        Xb = Xin[lo:lo + B]
        C = correlations_by_group(Xb, W)
        xnorm2 = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
        mp_gram_rows(C, C.view(it), it.type(np.iinfo(it).max), G, max_iterations,
                     stop_on_duplicate_support, thr2, xnorm2, I[lo:lo + B], Z[lo:lo + B])
    return SparseCodes(I, Z, m)


def encode_pursuit(sae, T, solver, k, positive):
    """``k``-sparse codes of ``T`` (:meth:`PretrainedSAE.decoder_target`) on the rows of
    ``W_dec`` by ``solver``, in the SAE's units (divided by
    :meth:`PretrainedSAE.atom_scale`)."""
    import sparsecode

    D = decoder_atoms(sae)
    G = pursuit_gram(sae, T.shape[0], k, rows_per_signal=1 if solver == "mp" else k)
    if solver == "omp":
        codes = sparsecode.omp(T, D, k=k, positive=positive, gram=G)
    elif solver == "gp":
        codes = sparsecode.gp(T, D, k=k, positive=positive, gram=G)
    else:
        codes = sparsecode.mp(T, D, k=k, selection="positive" if positive else "abs",
                              gram=G)
    return _to_sae_units(sae, codes)


def decoder_atoms(sae):
    """``W_dec`` as a C-contiguous array in memory, made once per model."""
    D = getattr(sae, "_atoms", None)
    if D is None:
        D = sae._atoms = np.ascontiguousarray(sae.W_dec)
    return D


def encoder_rows(sae):
    """``W_enc^T`` (n_atoms, n_features) C-contiguous, the operand of the grouped score
    products: a view for encoders stored as ``nn.Linear`` weights, else copied once per
    model."""
    E = getattr(sae, "_enc_rows", None)
    if E is None:
        E = sae._enc_rows = np.ascontiguousarray(sae.W_enc.T)
    return E


def pursuit_gram(sae, n_signals, k, rows_per_signal=None):
    """The Gram of the decoder's rows: the whole matrix, a :class:`~sparsecode.GramRows`
    store of the rows of the atoms in use (only for the inference-time pursuits, which
    give ``rows_per_signal``: what one signal needs at once), or False (correlations
    recomputed from the residual at every step).

    Decided once per model, by its first call: the whole Gram when it fits
    ``_config.GRAM_BUDGET_BYTES`` and ``n_signals * k >= n_atoms``; else, for the
    pursuits, a store when :func:`sparsecode.pursuit.decide_gram` picks one.  Built then
    and kept: a stream of batches (the ``encode`` command) pays for the Gram once, a
    store's rows serve every later batch, and the codes do not depend on the size of a
    batch."""
    G = getattr(sae, "_gram", None)
    if G is None:
        import sparsecode

        m = sae.n_atoms
        fits = m * m * sae.dtype.itemsize <= _config.GRAM_BUDGET_BYTES
        G = sae._gram = (sparsecode.gram(decoder_atoms(sae)) if fits and n_signals * k >= m
                         else False)
    if G is not False or rows_per_signal is None:
        return G
    store = getattr(sae, "_gram_rows", None)
    if store is None:
        from sparsecode import GramRows
        from sparsecode.pursuit import decide_gram

        D = decoder_atoms(sae)
        want = decide_gram("auto", n_signals, k, D, rows_per_signal)
        store = sae._gram_rows = GramRows(D) if want == "cached" else False
    if store is False or store.capacity < rows_per_signal:
        return False
    return store


def _to_sae_units(sae, codes):
    scale = sae.atom_scale()
    if scale is None:
        return codes
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = codes.values / scale[np.maximum(codes.indices, 0)]
    vals = np.where(codes.indices >= 0, vals, 0).astype(codes.values.dtype)
    return SparseCodes(codes.indices, vals, codes.n_atoms)


def refit_codes(sae, T, codes):
    """The same supports, coefficients by least squares on each one's atoms.

    Parameters
    ----------
    sae : PretrainedSAE
    T : ndarray of shape (n_samples, n_features)
        :meth:`PretrainedSAE.decoder_target` of the signals.
    codes : SparseCodes

    Returns
    -------
    SparseCodes
        Each row's coefficients minimise ``||t - c W_dec[support]||`` (an atom linearly
        dependent on the ones before it in the row keeps 0), in the SAE's units.
    """
    return _to_sae_units(sae, least_squares_on_supports(decoder_atoms(sae), T, codes))


def least_squares_on_supports(D, T, codes):
    """``codes`` with each row's coefficients replaced by the least-squares fit of ``T``'s
    row on the atoms of its support (an atom linearly dependent on the ones before it
    keeps 0).

    Parameters
    ----------
    D : ndarray of shape (n_atoms, n_features), C-contiguous
    T : ndarray of shape (n_samples, n_features)
    codes : SparseCodes

    Returns
    -------
    SparseCodes
        Same indices, coefficients in ``D``'s dtype.
    """
    from sparsecode.pretrained._native_numba import refit_rows

    Z = np.zeros(codes.values.shape, dtype=np.float64)
    refit_rows(np.ascontiguousarray(T, dtype=D.dtype), D,
               np.ascontiguousarray(codes.indices), Z, _config.rtol(D.dtype))
    return SparseCodes(codes.indices, Z.astype(D.dtype), codes.n_atoms)
