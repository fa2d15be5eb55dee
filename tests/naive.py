"""Slow, obviously correct references: one signal at a time, the residual formed
explicitly, correlations recomputed from it at every step, in float64.

Each function returns ``(indices, values, margin)``.  ``margin`` is the smallest gap,
relative to ||x||, between the winning selection score and the runner-up over all steps,
and between the residual energy and the ``tol`` threshold: where it is tiny, rounding can
legitimately change the path, so tests only compare exactly when it is comfortable.
"""

import numpy as np
import scipy.optimize

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def _scores(c, norms, rule):
    if rule == "abs":
        s = np.abs(c)
    elif rule == "positive":
        s = np.maximum(c, 0.0)
    else:
        s = c.copy()
    return s / norms


def _gap(scores, j):
    if scores.size < 2:
        return np.inf
    rest = np.delete(scores, j)
    return scores[j] - rest.max()


def _vanished(cj, norm_j, thr, rule):
    return (rule == "positive" and cj <= 0) or abs(cj) / norm_j <= thr


def _start(x, tol, dtype):
    x = np.asarray(x, dtype=np.float64)
    xn2 = float(x @ x)
    return x, xn2, tol * xn2, RTOL[np.dtype(dtype)] * np.sqrt(xn2)


def _margin(margin, value, xn2):
    return min(margin, abs(value) / max(xn2, 1e-300))


def _select(D, r, norms, rule, thr, xn2, margin):
    """One selection from correlations recomputed atom by atom.

    Returns ``(j, c, margin, vanished)``: the winner, the correlations, the margin updated
    with this step's gap to the runner-up and to the stopping threshold, and whether the
    winner's correlation is too small to make progress.
    """
    c = np.array([D[j] @ r for j in range(D.shape[0])])
    s = _scores(c, norms, rule)
    j = int(np.argmax(s))
    gaps = (_gap(s, j), abs(abs(c[j]) / norms[j] - thr))
    margin = min(margin, min(gaps) / np.sqrt(xn2))
    return j, c, margin, _vanished(c[j], norms[j], thr, rule)


def mp(x, D, k, tol=0.0, rule="abs", dtype=np.float64):
    """Matching pursuit for one signal ``x`` of shape (n_features,)."""
    x, xn2, tol2, thr = _start(x, tol, dtype)
    D = np.asarray(D, dtype=np.float64)
    norms = np.sqrt((D * D).sum(axis=1))
    r = x.copy()
    idx, val = [], []
    margin = np.inf
    for _ in range(k):
        e = r @ r
        margin = _margin(margin, e - tol2, xn2)
        if e <= tol2:
            break
        j, c, margin, vanished = _select(D, r, norms, rule, thr, xn2, margin)
        if vanished:
            break
        coef = c[j] / norms[j] ** 2
        r = r - coef * D[j]
        if j in idx:
            val[idx.index(j)] += coef
            if rule == "positive":
                break
        else:
            idx.append(j)
            val.append(coef)
    return np.array(idx, dtype=np.int64), np.array(val), margin


def _distance_to_span(DI, d):
    if DI.shape[0] == 0:
        return 1.0
    coef, *_ = np.linalg.lstsq(DI.T, d, rcond=None)
    res = d - DI.T @ coef
    return (res @ res) / (d @ d)


def omp(x, D, k, tol=0.0, positive=False, dtype=np.float64):
    """Orthogonal matching pursuit for one signal; ``positive`` fits by NNLS."""
    x, xn2, tol2, thr = _start(x, tol, dtype)
    D = np.asarray(D, dtype=np.float64)
    norms = np.sqrt((D * D).sum(axis=1))
    rule = "positive" if positive else "abs"
    r = x.copy()
    idx = []
    z = np.zeros(0)
    margin = np.inf
    while len(idx) < k:
        e = r @ r
        margin = _margin(margin, e - tol2, xn2)
        if e <= tol2:
            break
        j, c, margin, vanished = _select(D, r, norms, rule, thr, xn2, margin)
        if vanished:
            break
        if _distance_to_span(D[idx], D[j]) <= RTOL[np.dtype(dtype)]:
            break
        idx.append(j)
        DI = D[idx]
        if positive:
            z, _ = scipy.optimize.nnls(DI.T, x)
        else:
            z, *_ = np.linalg.lstsq(DI.T, x, rcond=None)
        r = x - DI.T @ z
    idx = np.array(idx, dtype=np.int64)
    if positive:
        keep = z != 0
        idx, z = idx[keep], z[keep]
    return idx, np.asarray(z, dtype=np.float64), margin


def gp(x, D, k, tol=0.0, variant="gp", positive=False, dtype=np.float64):
    """Gradient pursuit (``variant="gp"``) or approximate conjugate gradient pursuit
    (``"acgp"``) for one signal; ``positive`` keeps coefficients non-negative.

    Gradient steps are taken in the coordinates of the normalised atoms (so the result
    does not depend on how the atoms are scaled), then mapped back.
    """
    x, xn2, tol2, thr = _start(x, tol, dtype)
    D = np.asarray(D, dtype=np.float64)
    atom_norms = np.sqrt((D * D).sum(axis=1))
    D = D / atom_norms[:, None]
    norms = np.ones(D.shape[0])
    rule = "positive" if positive else "abs"
    r = x.copy()
    idx = []
    z = np.zeros(0)
    d_prev = np.zeros(0)
    c_prev = None  # previous direction in signal space
    margin = np.inf

    def project(d):
        if positive:
            d = np.where((z <= 0) & (d < 0), 0.0, d)
        return d

    for _ in range(4 * k):  # a re-selecting step does not grow the support
        e = r @ r
        margin = _margin(margin, e - tol2, xn2)
        if e <= tol2 or len(idx) >= k:
            break
        j, c, margin, vanished = _select(D, r, norms, rule, thr, xn2, margin)
        if vanished:
            break
        if j not in idx:
            idx.append(j)
            z = np.append(z, 0.0)
            d_prev = np.append(d_prev, 0.0)
        DI = D[idx]
        g = DI @ r  # negative gradient on the support
        d = project(g.copy())
        if variant == "acgp" and c_prev is not None:
            beta = -(c_prev @ (DI.T @ g)) / (c_prev @ c_prev)
            d = project(g + beta * d_prev)
            if d @ g <= 0:
                d = project(g.copy())
        dg = d @ g
        cvec = DI.T @ d
        curv = cvec @ cvec
        if dg <= 0 or curv <= 0:
            break
        step = dg / curv
        hit = None
        if positive:
            for m in np.flatnonzero(d < 0):
                if -z[m] / d[m] < step:
                    step, hit = -z[m] / d[m], m
        z = z + step * d
        if positive:
            z = np.maximum(z, 0.0)
            if hit is not None:
                z[hit] = 0.0  # the coefficient that stopped the step sits on the boundary
        r = x - DI.T @ z
        d_prev, c_prev = d, cvec
    idx = np.array(idx, dtype=np.int64)
    if positive:
        keep = z != 0
        idx, z = idx[keep], z[keep]
    return idx, z / atom_norms[idx], margin


def encode(fn, X, D, **kw):
    """Run a reference on every row: lists of index arrays and value arrays, and the
    smallest margin."""
    out_i, out_v, margin = [], [], np.inf
    for x in np.asarray(X):
        i, v, m = fn(x, D, **kw)
        out_i.append(i)
        out_v.append(v)
        margin = min(margin, m)
    return out_i, out_v, margin


# ---- MP-SAE: the unrolled encoder as a plain function of D and b ----


def mpsae_loss(X, D, b, k, rule, topk=False):
    """Mean ``||x - x_hat||^2`` of the tied MP-SAE (or one-step TopK) on ``X``, as a plain function of ``D`` and
    ``b`` (float64, one signal at a time): ``r_0 = x - b``, then per step the atom ``d`` with
    the best score of ``D r`` (``rule``, as in :func:`mp`) and ``r <- r - (d . r) d``.
    The formula holds for atoms of any norm, so finite differences can perturb ``D``.

    Returns ``(loss, trace)``; ``trace`` lists the selected atoms of every signal, so a
    caller can check that a perturbation did not change the path.
    """
    D = np.asarray(D, dtype=np.float64)
    n = X.shape[0]
    total = 0.0
    trace = []
    for x in np.asarray(X, dtype=np.float64):
        r = x - (0.0 if b is None else np.asarray(b, dtype=np.float64))
        r0 = r.copy()
        steps = []
        c0 = D @ r0
        for _ in range(k):
            c = c0.copy() if topk else D @ r
            if topk:
                c[steps] = -np.inf if rule != "abs" else 0.0
            s = _scores(c, np.ones(D.shape[0]), rule)
            j = int(np.argmax(s))
            if (rule == "positive" and c[j] <= 0) or c[j] == 0:
                break
            again = j in steps
            steps.append(j)
            r = r - c[j] * D[j]
            if rule == "positive" and again and not topk:
                break
        total += r @ r
        trace.append(steps)
    return total / n, trace


# ---- dictionary learning: MOD, K-SVD, online BCD, dead atoms (dense, one atom at a time) ----


def dl_objective(X, Z, D):
    """``0.5 * ||X - Z D||_F^2`` with dense codes, in float64."""
    R = np.asarray(X, dtype=np.float64) - np.asarray(Z, dtype=np.float64) @ np.asarray(D, dtype=np.float64)
    return 0.5 * float((R * R).sum())


def mod_update(X, Z, D, reg):
    """MOD by dense least squares on the used atoms: minimise
    ``||X - Z_u D_u||^2 + lam ||D_u||^2`` as the stacked problem ``[Z_u; sqrt(lam) I] D_u = [X; 0]``,
    ``lam = reg * trace(Z^T Z) / n_atoms``; unused atoms keep ``D`` (zero rows if ``D`` is None)."""
    X = np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    K = Z.shape[1]
    out = np.zeros((K, X.shape[1])) if D is None else np.array(D, dtype=np.float64)
    used = [j for j in range(K) if np.any(Z[:, j] != 0)]
    lam = reg * sum(Z[:, j] @ Z[:, j] for j in range(K)) / K
    Zu = Z[:, used]
    lhs = np.vstack([Zu, np.sqrt(lam) * np.eye(len(used))])
    rhs = np.vstack([X, np.zeros((len(used), X.shape[1]))])
    sol, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    for m, j in enumerate(used):
        out[j] = sol[m]
    return out


def ksvd_update(X, Z, pattern, D, exact=True):
    """K-SVD sweep with the restricted residual formed explicitly for every atom.

    ``pattern`` (n_samples, n_atoms) bool marks the entries that may be non-zero (the
    users of each atom).  Exact: ``np.linalg.svd`` of ``E``; approximate: ``d = E^T z``
    normalised, ``z = E d``.  Returns ``(D, Z, gap)``: ``gap`` is the smallest relative
    singular gap ``(s1 - s2) / s1`` met (exact updates are only determined up to sign, and
    only well determined when the gap is comfortable).
    """
    X = np.asarray(X, dtype=np.float64)
    Z = np.array(Z, dtype=np.float64)
    D = np.array(D, dtype=np.float64)
    gap = np.inf
    for j in range(D.shape[0]):
        w = np.flatnonzero(pattern[:, j])
        if w.size == 0:
            continue
        E = X[w] - Z[w] @ D + np.outer(Z[w, j], D[j])
        if exact:
            U, S, Vt = np.linalg.svd(E, full_matrices=False)
            d = Vt[0]
            s2 = S[1] if S.size > 1 else 0.0
            if S[0] > 0:
                gap = min(gap, (S[0] - s2) / S[0])
        else:
            d = E.T @ Z[w, j]
            if np.linalg.norm(d) == 0:
                d = D[j]
            d = d / np.linalg.norm(d)
        D[j] = d
        Z[w, j] = E @ d
    return D, Z, gap


def online_update(D, A, B, n_iter=1, constraint="ball"):
    """Block-coordinate descent, one atom at a time, with ``A_j D`` as a sum over atoms."""
    D = np.array(D, dtype=np.float64)
    K = D.shape[0]
    for _ in range(n_iter):
        for j in range(K):
            if A[j, j] == 0:
                continue
            AjD = sum(A[j, m] * D[m] for m in range(K))
            u = D[j] + (B[j] - AjD) / A[j, j]
            nrm = np.linalg.norm(u)
            if constraint == "ball":
                D[j] = u / max(1.0, nrm)
            elif nrm > 0:
                D[j] = u / nrm
    return D


def dead_atoms(batches, n_atoms, window):
    """Dead-atom mask after streaming the index arrays ``batches`` sample by sample: atoms
    that no sample among the last ``window`` used (none dead before ``window`` samples)."""
    last = [0] * n_atoms  # samples seen up to and including the last use
    seen = 0
    for idx in batches:
        for row in idx:
            seen += 1
            for j in row:
                if j >= 0:
                    last[j] = seen
    return np.array([seen - last[j] >= window for j in range(n_atoms)])


# ---- SAELens' "matching_pursuit" SAE (inference), for the export ----


def saelens_mp_encode(X, W_dec, b_dec, max_iterations, residual_threshold,
                      stop_on_duplicate_support, *, return_margins=False):
    """Feature activations of SAELens' ``MatchingPursuitSAE.encode`` (with
    ``apply_b_dec_to_input``), one signal at a time in float64: ``r = x - b_dec``, then up
    to ``max_iterations`` times ``j = argmax relu(W_dec r)``, ``v = relu(W_dec[j] . r)``,
    ``acts[j] += v``, ``r -= v W_dec[j]``; a signal stops once its support
    (``acts != 0``) is the same as before the step (``stop_on_duplicate_support``) or
    ``||r|| < residual_threshold`` (when > 0).  ``W_dec`` is used as given (no
    normalisation).

    Returns dense ``acts`` of shape (n_samples, d_sae); with ``return_margins`` also, per
    signal, the smallest gap relative to ||x - b_dec|| over its steps between the winning
    score and the runner-up, between the winning score and 0 (the stop on no positive
    correlation), and between ||r|| and ``residual_threshold``: where a margin is tiny,
    rounding can legitimately change the path.
    """
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W_dec, dtype=np.float64)
    b = np.asarray(b_dec, dtype=np.float64)
    acts = np.zeros((X.shape[0], W.shape[0]))
    margins = np.full(X.shape[0], np.inf)
    for i in range(X.shape[0]):
        r = X[i] - b
        scale = max(np.sqrt(r @ r), 1e-300)
        a = acts[i]
        prev = np.zeros(W.shape[0], dtype=bool)
        margin = np.inf
        for _ in range(max_iterations):
            c = np.array([W[j] @ r for j in range(W.shape[0])])
            s = np.maximum(c, 0.0)
            j = int(np.argmax(s))
            if s[j] > 0:
                gap = min(_gap(s, j), s[j])
            else:
                gap = -c.max()  # how far the best correlation is from turning positive
            margin = min(margin, gap / scale)
            v = max(float(W[j] @ r), 0.0)
            a[j] += v
            r = r - v * W[j]
            support = a != 0
            done = False
            if stop_on_duplicate_support:
                done = bool(np.array_equal(support, prev))
                prev = support
            if residual_threshold > 0:
                rn = np.sqrt(r @ r)
                margin = min(margin, abs(rn - residual_threshold) / scale)
                done = done or rn < residual_threshold
            if done:
                break
        margins[i] = margin
    return (acts, margins) if return_margins else acts


# ---- bfloat16, for the activation files ----


def bfloat16_round(x):
    """bfloat16 bit patterns (uint16) of the float32 values of ``x``, one value at a time
    on the float32 bit pattern as a Python int: keep the high 16 bits, rounding the
    dropped low 16 bits to nearest with ties to the even result (a carry may ripple into
    the exponent: the largest finite values round up to infinity).  Every NaN becomes the
    quiet NaN 0x7FC0 (rounding could turn a NaN's payload into infinity)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for i in range(flat_in.size):
        bits = int(flat_in[i : i + 1].view(np.uint32)[0])
        exponent, mantissa = (bits >> 23) & 0xFF, bits & 0x7FFFFF
        if exponent == 0xFF and mantissa != 0:
            flat_out[i] = 0x7FC0
            continue
        high, low = bits >> 16, bits & 0xFFFF
        if low > 0x8000 or (low == 0x8000 and high & 1):
            high += 1
        flat_out[i] = high
    return out


def itda(X, k, threshold, rule="abs", max_atoms=None):
    """ITDA, one signal after another: encode with :func:`mp` on the atoms so far; add
    ``x / ||x||`` when ``||x - x_hat||^2 / ||x||^2`` exceeds ``threshold``.  Returns the
    atoms and the row each came from."""
    X = np.asarray(X, dtype=np.float64)
    atoms, sources = [], []
    for i, x in enumerate(X):
        if max_atoms is not None and len(atoms) >= max_atoms:
            break
        xn2 = x @ x
        if xn2 == 0:
            continue
        err = 1.0
        if atoms:
            D = np.array(atoms)
            idx, val, _ = mp(x, D, k, rule=rule)
            r = x - val @ D[idx] if len(idx) else x
            err = (r @ r) / xn2
        if err > threshold:
            atoms.append(x / np.sqrt(xn2))
            sources.append(i)
    return np.array(atoms).reshape(len(atoms), X.shape[1]), np.array(sources, dtype=np.int64)


def itda_error(x, D, k, rule="abs"):
    """``||x - x_hat||^2 / ||x||^2`` after :func:`mp` on ``D`` (1 for no atom)."""
    x = np.asarray(x, dtype=np.float64)
    if len(D) == 0:
        return 1.0
    idx, val, _ = mp(x, D, k, rule=rule)
    r = x - val @ np.asarray(D, dtype=np.float64)[idx] if len(idx) else x
    return (r @ r) / (x @ x)


# ---- the encoders of pretrained SAEs ----


def sae_normalize(x, mode, scale=None):
    """One signal normalised as SAELens documents it; returns ``(x_n, undo)`` where
    ``undo(y)`` maps a reconstruction back."""
    x = np.asarray(x, dtype=np.float64)
    if mode == "none":
        return x, lambda y: y
    if mode == "scale":
        return x * scale, lambda y: y / scale
    if mode == "constant_norm_rescale":
        c = np.sqrt(x.size) / np.sqrt(sum(v * v for v in x))
        return x * c, lambda y: y / c
    mu = sum(x) / x.size
    std = np.sqrt(sum((v - mu) ** 2 for v in x) / (x.size - 1))
    return (x - mu) / (std + 1e-5), lambda y: y * std + mu


def sae_encode(x_in, W_enc, b_enc, arch, *, k=None, threshold=None, b_gate=None,
               r_mag=None, b_mag=None, scale=None):
    """Dense activations of one encoder input ``x_in`` (already normalised and centred),
    atom by atom: ReLU, TopK (the ``k`` largest ``pre * scale``, ties to the lower atom,
    positive ones kept), JumpReLU, gated, groupmax (``k`` equal groups)."""
    x = np.asarray(x_in, dtype=np.float64)
    W = np.asarray(W_enc, dtype=np.float64)
    m = W.shape[1]
    proj = np.array([sum(x[f] * W[f, j] for f in range(x.size)) for j in range(m)])
    pre = proj + np.asarray(b_enc, dtype=np.float64)
    acts = np.zeros(m)
    if arch == "relu":
        for j in range(m):
            acts[j] = pre[j] if pre[j] > 0 else 0.0
    elif arch == "jumprelu":
        for j in range(m):
            acts[j] = pre[j] if pre[j] > 0 and pre[j] > threshold[j] else 0.0
    elif arch == "topk":
        s = pre * (np.ones(m) if scale is None else np.asarray(scale, dtype=np.float64))
        order = sorted(range(m), key=lambda j: (-s[j], j))[:k]
        for j in order:
            acts[j] = s[j] if s[j] > 0 else 0.0
    elif arch == "groupmax":
        size = m // k
        for g in range(k):
            best, arg = -np.inf, -1
            for j in range(g * size, (g + 1) * size):
                v = max(pre[j], 0.0)
                if v > best:
                    best, arg = v, j
            acts[arg] = best
    elif arch == "gated":
        for j in range(m):
            gate = proj[j] + b_gate[j]
            mag = np.exp(r_mag[j]) * proj[j] + b_mag[j]
            acts[j] = max(mag, 0.0) if gate > 0 else 0.0
    else:
        raise ValueError(arch)
    return acts


def least_squares_on_support(t, W_dec, support):
    """Coefficients of ``t`` on the atoms ``W_dec[support]`` by least squares."""
    A = np.asarray(W_dec, dtype=np.float64)[list(support)].T
    if not len(support):
        return np.zeros(0)
    return np.linalg.lstsq(A, np.asarray(t, dtype=np.float64), rcond=None)[0]


def coherence(D, group):
    """``mub[a, g]``: the largest ``|<d_a, d_x>|`` over the atoms ``x != a`` of group
    ``g`` (atoms ``g group`` to ``(g + 1) group - 1``), for unit atoms."""
    K = D.shape[0]
    mub = np.zeros((K, -(-K // group)))
    for a in range(K):
        for x in range(K):
            if x != a:
                mub[a, x // group] = max(mub[a, x // group], abs(float(np.dot(D[a], D[x]))))
    return mub


def coherent_pairs(G, threshold):
    """Pairs ``a < b`` with ``|G[a, b]| > threshold`` in row-major order, and their
    ``|G[a, b]|``: one entry at a time (``threshold`` compared in ``G``'s dtype)."""
    t = G.dtype.type(threshold)
    first, second, coh = [], [], []
    for a in range(G.shape[0]):
        for b in range(a + 1, G.shape[0]):
            if G[a, b] > t or G[a, b] < -t:
                first.append(a)
                second.append(b)
                coh.append(abs(G[a, b]))
    return np.array(first, dtype=np.int64), np.array(second, dtype=np.int64), np.array(
        coh, dtype=G.dtype)


def block_coherence(G, block):
    """``mub[a, b]``: the largest ``|G[a, x]|`` over the atoms ``x != a`` of block ``b``
    (atoms ``b block`` to ``(b + 1) block - 1``), one entry at a time (float64)."""
    K = G.shape[0]
    mub = np.zeros((K, -(-G.shape[1] // block)))
    for a in range(K):
        for x in range(G.shape[1]):
            if x != a:
                mub[a, x // block] = max(mub[a, x // block], abs(float(G[a, x])))
    return mub
