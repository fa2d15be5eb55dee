"""Quality measures for reconstructions, codes and dictionaries.

Everything here runs on NumPy arrays and accumulates in float64 whatever the input dtype.
CuPy-backed :class:`~sparsecode.SparseCodes` are moved to the host.  Large dictionaries are
processed in row blocks, so no ``(n_atoms, n_atoms)`` matrix is held at once except by
:func:`match_atoms`, whose assignment problem needs the full matrix.
"""

import numbers

import numpy as np

from sparsecode._validation import check_array, check_choice, describe
from sparsecode.codes import SparseCodes

__all__ = [
    "atom_usage",
    "babel",
    "dead_fraction",
    "effective_rank",
    "explained_variance",
    "fvu",
    "itda_similarity",
    "l0",
    "match_atoms",
    "mutual_coherence",
    "recovery_rate",
]

# Elements of a float64 work block (rows of X or of a Gram matrix): 8 MiB.
_BLOCK_ELEMENTS = 1 << 20


def _row_blocks(n_rows, n_cols):
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _host(a):
    return a.get() if type(a).__module__.startswith("cupy") else np.asarray(a)


def _check_codes(codes):
    """Return ``(indices, values)`` of ``codes`` as NumPy arrays, after validation."""
    if not isinstance(codes, SparseCodes):
        raise TypeError(f"codes must be a SparseCodes; got {type(codes).__name__}")
    idx, val = _host(codes.indices), _host(codes.values)
    if idx.size and idx.max() >= codes.n_atoms:
        raise ValueError(
            f"codes.indices must be < codes.n_atoms = {codes.n_atoms}; got index {idx.max()}"
        )
    if idx.size and idx.min() < -1:
        raise ValueError(f"codes.indices must be >= -1 (-1 marks unused); got {idx.min()}")
    return idx, val


def _used(idx, val):
    """Mask of the stored coefficients that are really used: index >= 0 and value != 0."""
    return (idx >= 0) & (val != 0)


def _unit_atoms(D, name):
    """Validate a dictionary and return its atoms normalised to unit norm, in float64."""
    D = check_array(D, name).astype(np.float64)
    norms = np.linalg.norm(D, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{name} must not contain zero-norm atoms (rows); atom(s) {zero[:10].tolist()} "
            f"{'(and more) ' if zero.size > 10 else ''}have norm 0"
        )
    return D / norms[:, None]


def _check_same_shape(X, X_hat):
    X = check_array(X, "X")
    X_hat = check_array(X_hat, "X_hat")
    if X.shape != X_hat.shape:
        raise ValueError(
            f"X_hat must have the shape of X, {X.shape}; got X_hat of shape {X_hat.shape}"
        )
    return X, X_hat


# ---------------------------------------------------------------------------- reconstruction


def fvu(X, X_hat):
    """Fraction of variance unexplained by a reconstruction.

    ``sum ||X - X_hat||^2 / sum ||X - mean(X, axis=0)||^2``: 0 for a perfect
    reconstruction, 1 for reconstructing every signal by the mean signal.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstructions, for instance ``codes.decode(D)``.

    Returns
    -------
    float
        Accumulated in float64.

    Raises
    ------
    ValueError
        If the shapes differ, an input is empty or not finite, or ``X`` has zero variance
        (for instance a single signal), where the ratio is undefined.
    """
    X, X_hat = _check_same_shape(X, X_hat)
    mean = X.mean(axis=0, dtype=np.float64)
    num = 0.0
    den = 0.0
    for rows in _row_blocks(X.shape[0], X.shape[1]):
        x = X[rows].astype(np.float64)
        r = x - X_hat[rows]
        num += float(np.einsum("ij,ij->", r, r))
        x -= mean
        den += float(np.einsum("ij,ij->", x, x))
    if den == 0.0:
        raise ValueError(
            f"X must vary around its mean for the fraction of variance to be defined; got "
            f"{describe(X)} with zero variance"
        )
    return num / den


def explained_variance(X, X_hat):
    """Fraction of variance explained by a reconstruction, ``1 - fvu(X, X_hat)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstructions.

    Returns
    -------
    float
        1 for a perfect reconstruction, 0 for the mean signal, negative when worse.

    See Also
    --------
    fvu
    """
    return 1.0 - fvu(X, X_hat)


# --------------------------------------------------------------------------------- codes


def l0(codes):
    """Mean number of non-zero coefficients per signal.

    Unlike :attr:`SparseCodes.l0`, which counts every used slot, a slot whose coefficient
    is exactly 0 is not counted.

    Parameters
    ----------
    codes : SparseCodes of shape (n_samples, n_atoms)

    Returns
    -------
    float
    """
    idx, val = _check_codes(codes)
    if idx.shape[0] == 0:
        raise ValueError("codes must hold at least one signal; got 0 rows")
    return float(_used(idx, val).sum(axis=1).mean())


def atom_usage(codes):
    """Number of non-zero coefficients on each atom.

    Parameters
    ----------
    codes : SparseCodes of shape (n_samples, n_atoms)

    Returns
    -------
    counts : ndarray of shape (n_atoms,), int64
        ``counts[j]``: the number of stored entries with index ``j`` and a non-zero value
        (the number of signals using atom ``j`` when no row repeats an atom).
    """
    idx, val = _check_codes(codes)
    used = idx[_used(idx, val)]
    return np.bincount(used.astype(np.int64), minlength=codes.n_atoms).astype(np.int64)


def dead_fraction(codes, n_atoms=None):
    """Fraction of atoms that no signal uses with a non-zero coefficient.

    Parameters
    ----------
    codes : SparseCodes of shape (n_samples, n_atoms)
    n_atoms : int, optional
        Number of atoms to count over; defaults to ``codes.n_atoms``.  It must be at
        least ``max(codes.indices) + 1``; atoms beyond ``codes.n_atoms`` count as dead.

    Returns
    -------
    float
        In [0, 1].
    """
    counts = atom_usage(codes)
    if n_atoms is None:
        n_atoms = codes.n_atoms
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, numbers.Integral):
        raise TypeError(f"n_atoms must be a positive integer or None; got {describe(n_atoms)}")
    n_atoms = int(n_atoms)
    used = np.flatnonzero(counts)
    needed = int(used[-1]) + 1 if used.size else 1
    if n_atoms < max(needed, 1):
        raise ValueError(
            f"n_atoms must be >= {needed} (the largest used atom index + 1, and at least 1); "
            f"got {n_atoms}"
        )
    return 1.0 - used.size / n_atoms


# ---------------------------------------------------------------------------- dictionaries


def _abs_gram_blocks(Dn):
    """Yield ``(rows, |Dn[rows] Dn^T|)`` with the diagonal entries set to -1."""
    n = Dn.shape[0]
    for rows in _row_blocks(n, n):
        G = np.abs(Dn[rows] @ Dn.T)
        r = np.arange(rows.start, rows.stop)
        G[r - rows.start, r] = -1.0
        yield rows, G


def _check_two_atoms(Dn, name):
    if Dn.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 atoms (rows); got shape {Dn.shape}")


def mutual_coherence(D):
    """Largest absolute cosine between two distinct atoms.

    ``max_{i != j} |<d_i, d_j>| / (||d_i|| ||d_j||)``.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        At least two atoms, none of zero norm.

    Returns
    -------
    float
        In [0, 1]: 0 for orthogonal atoms, 1 when two atoms are parallel.
    """
    Dn = _unit_atoms(D, "D")
    _check_two_atoms(Dn, "D")
    best = 0.0
    for _, G in _abs_gram_blocks(Dn):
        best = max(best, float(G.max()))
    return min(best, 1.0)


def babel(D, s=None):
    """Babel function (cumulative coherence) of a dictionary.

    ``mu_1(s) = max_j max_{|L| = s, j not in L} sum_{i in L} |<d_i, d_j>|`` on unit-normalised
    atoms: how much ``s`` atoms together can correlate with one more atom.  ``mu_1(1)`` is
    the mutual coherence.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)
        At least two atoms, none of zero norm.
    s : int or None
        Size of the set ``L``, in ``1 .. n_atoms - 1``.  None returns the whole curve.

    Returns
    -------
    float or ndarray of shape (n_atoms - 1,)
        ``mu_1(s)``, or for ``s=None`` the array whose entry ``s - 1`` is ``mu_1(s)``.
    """
    Dn = _unit_atoms(D, "D")
    _check_two_atoms(Dn, "D")
    n = Dn.shape[0]
    if s is not None:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"s must be an integer or None; got {describe(s)}")
        s = int(s)
        if not 1 <= s <= n - 1:
            raise ValueError(f"s must be in [1, n_atoms - 1] = [1, {n - 1}]; got {s}")
    curve = np.zeros(n - 1)
    for _, G in _abs_gram_blocks(Dn):
        # descending sort of each row; the diagonal (-1) sorts last and is dropped
        G = -np.sort(-G, axis=1)[:, : n - 1]
        np.maximum(curve, np.cumsum(G, axis=1).max(axis=0), out=curve)
    return curve if s is None else float(curve[s - 1])


def effective_rank(D):
    """Effective rank of a matrix (Roy and Vetterli, 2007).

    ``exp(H(p))`` where ``p`` are the singular values divided by their sum and ``H`` is the
    Shannon entropy (natural log, ``0 log 0 = 0``).  Between 1 and ``min(D.shape)``: 1 for a
    rank-one matrix, ``n`` for ``n`` orthogonal atoms of equal norm.

    Parameters
    ----------
    D : array-like of shape (n_atoms, n_features)

    Returns
    -------
    float
    """
    D = check_array(D, "D").astype(np.float64)
    sv = np.linalg.svd(D, compute_uv=False)
    total = sv.sum()
    if total == 0:
        raise ValueError(f"D must not be all zeros; got {describe(D)} of zeros")
    p = sv[sv > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def _check_pair(D_hat, D_true):
    A = _unit_atoms(D_hat, "D_hat")
    B = _unit_atoms(D_true, "D_true")
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"D_hat and D_true must have the same number of features (columns); got D_hat of "
            f"shape {A.shape} and D_true of shape {B.shape}"
        )
    return A, B


def match_atoms(D_hat, D_true):
    """Pair learnt atoms with true atoms, maximising the total absolute cosine.

    Solves the assignment problem (Hungarian algorithm) on ``|cos(d_hat_i, d_true_j)|``;
    every atom is used at most once, so ``min(n_hat, n_true)`` pairs are returned.

    Parameters
    ----------
    D_hat : array-like of shape (n_hat, n_features)
        Learnt dictionary, no zero-norm atom.
    D_true : array-like of shape (n_true, n_features)
        Reference dictionary, no zero-norm atom.

    Returns
    -------
    rows : ndarray of shape (n_pairs,), intp
        Indices into ``D_hat``, increasing.
    cols : ndarray of shape (n_pairs,), intp
        The matching indices into ``D_true``.
    cos : ndarray of shape (n_pairs,), float64
        ``|cos(D_hat[rows[i]], D_true[cols[i]])|``.
    """
    from scipy.optimize import linear_sum_assignment

    A, B = _check_pair(D_hat, D_true)
    C = np.abs(A @ B.T)
    rows, cols = linear_sum_assignment(C, maximize=True)
    return rows, cols, C[rows, cols]


def recovery_rate(D_hat, D_true, threshold=0.99, matching="max"):
    """Fraction of the true atoms that the learnt dictionary recovers.

    Parameters
    ----------
    D_hat : array-like of shape (n_hat, n_features)
        Learnt dictionary, no zero-norm atom.
    D_true : array-like of shape (n_true, n_features)
        Reference dictionary, no zero-norm atom.
    threshold : float
        A true atom is recovered when the absolute cosine exceeds it (strictly); in [0, 1].
    matching : {"max", "hungarian"}
        ``"max"``: true atom ``j`` is recovered when ``max_i |cos(d_hat_i, d_true_j)|``
        exceeds ``threshold`` (one learnt atom may recover several true atoms).
        ``"hungarian"``: the cosine of ``d_true_j`` with its partner in
        :func:`match_atoms` must exceed ``threshold``.

    Returns
    -------
    float
        In [0, 1].
    """
    check_choice(matching, "matching", ("max", "hungarian"))
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number in [0, 1]; got {describe(threshold)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
    if matching == "hungarian":
        _, _, cos = match_atoms(D_hat, D_true)
        n_true = np.asarray(D_true).shape[0]
        return float(np.count_nonzero(cos > threshold)) / n_true
    A, B = _check_pair(D_hat, D_true)
    best = np.zeros(B.shape[0])
    for rows in _row_blocks(A.shape[0], B.shape[0]):
        np.maximum(best, np.abs(A[rows] @ B.T).max(axis=0), out=best)
    return float(np.mean(best > threshold))


def itda_similarity(a, b):
    """Similarity of two ITDA dictionaries built on the same stream of tokens: the Jaccard
    index ``|A & B| / |A | B|`` of the sets of stream positions their atoms came from
    (Leask et al., 2025), for comparing layers or models fed the same tokens.

    Parameters
    ----------
    a, b : ITDA or array-like of int
        Fitted :class:`~sparsecode.ITDA` models (their ``atom_sources_``), or the source
        positions themselves.

    Returns
    -------
    float in [0, 1]
    """
    sa, sb = (set(np.asarray(getattr(m, "atom_sources_", m), dtype=np.int64).ravel().tolist())
              for m in (a, b))
    union = sa | sb
    if not union:
        raise ValueError("itda_similarity needs at least one atom source; both are empty")
    return len(sa & sb) / len(union)
