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
    """MSE of the tied MP-SAE (or one-step TopK) on ``X``, as a plain function of ``D`` and
    ``b`` (float64, one signal at a time): ``r_0 = x - b``, then per step the atom ``d`` with
    the best score of ``D r`` (``rule``, as in :func:`mp`) and ``r <- r - (d . r) d``.
    The formula holds for atoms of any norm, so finite differences can perturb ``D``.

    Returns ``(loss, trace)``; ``trace`` lists the selected atoms of every signal, so a
    caller can check that a perturbation did not change the path.
    """
    D = np.asarray(D, dtype=np.float64)
    n, nf = X.shape
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
    return total / (n * nf), trace
