"""A model's reconstruction quality over a stream of batches, in bounded memory: FVU,
explained variance, mean L0, dead atoms and speed, for a pretrained SAE or a sparsecode
model alike."""

import time

import numpy as np

from sparsecode._backend import to_host
from sparsecode._validation import check_array, check_count
from sparsecode.codes import SparseCodes

#: Elements of a float64 work block (rows of a batch at a time): 8 MiB.
BLOCK_ELEMENTS = 1 << 20


class RunningVariance:
    """The total variance of rows about their mean, accumulated batch by batch.

    Each batch's count, mean (per feature) and sum of squared deviations ``M2`` are
    computed in float64 by two passes over the batch (with the compensation term of the
    corrected two-pass formula), then merged into the running ones by Chan, Golub and
    LeVeque's parallel update::

        n = n_a + n_b,  delta = mean_b - mean_a
        M2 = M2_a + M2_b + ||delta||^2 n_a n_b / n,  mean = mean_a + delta n_b / n

    so that rows far from the origin relative to their spread lose no precision (unlike
    ``sum ||x||^2 - n ||mean||^2``).

    Attributes
    ----------
    n : int
        Rows seen.
    mean : ndarray of shape (n_features,) or None
        Their mean (float64; None before the first row).
    m2 : float
        ``sum_i ||x_i - mean||^2`` over the rows seen.
    """

    def __init__(self):
        self.n = 0
        self.mean = None
        self.m2 = 0.0

    def update(self, X):
        """Add the rows of ``X`` (array-like of shape (n_rows, n_features))."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D; got shape {X.shape}")
        n_b = X.shape[0]
        if n_b == 0:
            return self
        mean_b = X.mean(axis=0, dtype=np.float64)
        m2_b = 0.0
        resid = np.zeros(X.shape[1])
        for rows in _blocks(n_b, X.shape[1]):
            dev = X[rows].astype(np.float64) - mean_b
            m2_b += float(np.einsum("ij,ij->", dev, dev))
            resid += dev.sum(axis=0)
        # the rounding error of mean_b, removed to first order
        m2_b = max(m2_b - float(resid @ resid) / n_b, 0.0)
        return self.merge(n_b, mean_b, m2_b)

    def merge(self, n, mean, m2):
        """Merge the statistics ``(n, mean, m2)`` of other rows into these.

        Parameters
        ----------
        n : int
        mean : ndarray of shape (n_features,)
        m2 : float
        """
        n = int(n)
        if n == 0:
            return self
        mean = np.asarray(mean, dtype=np.float64)
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean.copy(), float(m2)
            return self
        if mean.shape != self.mean.shape:
            raise ValueError(f"rows of {mean.shape[0]} features merged into rows of "
                             f"{self.mean.shape[0]}")
        total = self.n + n
        delta = mean - self.mean
        self.m2 += float(m2) + float(delta @ delta) * (self.n * n / total)
        self.mean += delta * (n / total)
        self.n = total
        return self


def _blocks(n_rows, n_cols):
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


class MPSAEModel:
    """An :class:`~sparsecode.MPSAE` (or any model with ``transform`` and
    ``inverse_transform``) seen through :class:`PretrainedSAE`'s ``encode`` / ``decode``.

    Parameters
    ----------
    model : MPSAE
    """

    def __init__(self, model):
        self.model = model

    @property
    def n_atoms(self):
        """int: atoms of the model."""
        return self.model.n_atoms

    @property
    def n_features_in_(self):
        """int: width of the signals."""
        return self.model.n_features_in_

    def encode(self, X, *, solver=None, k=None, positive=None, refit=False):
        """Codes of ``X`` by ``model.transform`` (``solver`` and ``k`` as it takes them);
        with ``refit``, least-squares coefficients on each support.  ``positive`` is the
        pretrained SAEs' option: an MPSAE keeps the selection rule it was trained with."""
        if positive is not None:
            raise ValueError("positive applies to pretrained SAEs; a sparsecode model "
                             f"encodes with its own selection rule "
                             f"({getattr(self.model, 'selection', 'as trained')})")
        codes = self.model.transform(X, k=k, solver=solver)
        codes = SparseCodes(to_host(codes.indices), to_host(codes.values), codes.n_atoms)
        if not refit:
            return codes
        from sparsecode.pretrained.native import least_squares_on_supports

        D = np.ascontiguousarray(to_host(self.model.components_))
        return least_squares_on_supports(
            D, np.asarray(X, dtype=D.dtype) - to_host(self.model.bias_), codes)

    def decode(self, codes, X=None):
        """``model.inverse_transform(codes)`` on the host (``X`` is not needed)."""
        return to_host(self.model.inverse_transform(codes))


def as_sae(model):
    """``model`` with :class:`PretrainedSAE`'s ``encode`` / ``decode``: itself when it has
    them, an :class:`MPSAEModel` around an estimator with ``transform`` /
    ``inverse_transform``."""
    if hasattr(model, "encode") and hasattr(model, "decode"):
        return model
    if hasattr(model, "transform") and hasattr(model, "inverse_transform"):
        return MPSAEModel(model)
    raise TypeError(f"model must have encode/decode (a PretrainedSAE) or transform/"
                    f"inverse_transform (an MPSAE); got {type(model).__name__}")


def _batches(batches, batch_size):
    if isinstance(batches, np.ndarray):
        X = check_array(batches, "X")
        for rows in range(0, X.shape[0], batch_size):
            yield X[rows:rows + batch_size]
        return
    yield from batches


def evaluate(model, batches, *, solver=None, k=None, positive=None, refit=False,
             max_rows=None, batch_size=8192, progress=None, stop=None):
    """How well ``model`` reconstructs a stream of rows, measured in one pass.

    Each batch is encoded and decoded; the squared error, the variance about the mean of
    all the rows (:class:`RunningVariance`, in float64), the active atoms and the time
    are accumulated, and the batch is let go.

    Parameters
    ----------
    model : PretrainedSAE or MPSAE
        Any object with ``encode(X, solver=, k=, positive=, refit=)`` and
        ``decode(codes, X)`` (as :class:`PretrainedSAE`), or an estimator with
        ``transform`` / ``inverse_transform`` (as :class:`~sparsecode.MPSAE`).
    batches : iterable of ndarray of shape (n_i, n_features), or ndarray
        The rows, batch by batch (an :class:`~sparsecode.io.ActivationReader`, a
        generator...); one array is cut into batches of ``batch_size`` rows.
    solver, k, refit
        Encoding options, as the model's ``encode`` (or ``transform``) takes them; None:
        its defaults.
    positive : bool, optional
        Pretrained SAEs' pursuits: non-negative coefficients (None: the model's default).
    max_rows : int, optional
        Stop after this many rows.
    batch_size : int
        Rows per batch when ``batches`` is one array.
    progress : callable, optional
        Called with the number of rows of each batch once it is measured.
    stop : callable, optional
        Asked before each batch; when it returns True the figures so far are returned
        (``stopped`` is then True).

    Returns
    -------
    dict
        ``n_rows``; ``fvu`` (``sum ||x - x_hat||^2 / sum ||x - mean||^2``) and
        ``explained_variance`` (``1 - fvu``), None without rows or variance;
        ``mean_l0`` (non-zero coefficients per row); ``dead_fraction`` and ``n_dead``
        (atoms no row used with a non-zero coefficient) of ``n_atoms``;
        ``squared_error`` and ``total_variance`` (the two sums); ``seconds`` and
        ``rows_per_second``; ``stopped``.
    """
    sae = as_sae(model)
    batch_size = check_count(batch_size, "batch_size")
    if max_rows is not None:
        max_rows = check_count(max_rows, "max_rows")
    opts = {"solver": solver, "k": k, "refit": bool(refit)}
    if positive is not None:
        opts["positive"] = bool(positive)
    m = int(sae.n_atoms)
    alive = np.zeros(m, dtype=bool)
    var = RunningVariance()
    n = nnz = 0
    err = 0.0
    stopped = False
    t0 = time.perf_counter()
    for X in _batches(batches, batch_size):
        if stop is not None and stop():
            stopped = True
            break
        if max_rows is not None:
            X = X[:max_rows - n]
        if not len(X):
            if max_rows is not None and n >= max_rows:
                break
            continue
        codes = sae.encode(X, **opts)
        X_hat = to_host(sae.decode(codes, X))
        for rows in _blocks(X.shape[0], X.shape[1]):
            r = np.asarray(X[rows], dtype=np.float64) - X_hat[rows]
            err += float(np.einsum("ij,ij->", r, r))
        var.update(X)
        idx, val = to_host(codes.indices), to_host(codes.values)
        used = (idx >= 0) & (val != 0)
        nnz += int(used.sum())
        alive[idx[used]] = True
        n += len(X)
        if progress is not None:
            progress(len(X))
        if max_rows is not None and n >= max_rows:
            break
    secs = time.perf_counter() - t0
    fvu = err / var.m2 if n and var.m2 > 0 else None
    dead = int(m - alive.sum())
    return {"n_rows": n, "fvu": fvu, "explained_variance": None if fvu is None else 1 - fvu,
            "mean_l0": nnz / n if n else None, "dead_fraction": dead / m, "n_dead": dead,
            "n_atoms": m, "squared_error": err, "total_variance": var.m2, "seconds": secs,
            "rows_per_second": n / secs if secs > 0 else None, "stopped": stopped}
