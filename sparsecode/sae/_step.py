"""What one shard of a training batch contributes to a step, and how shards combine.

A training step of :class:`~sparsecode.MPSAE` has two halves: the work on the signals
(pursuit, residuals, gradients or code statistics: :meth:`Engine.shard_step
<sparsecode.sae.engine.Engine.shard_step>`) and the update of the model
(:meth:`Engine.apply <sparsecode.sae.engine.Engine.apply>`).  The first half runs
wherever the signals are, one shard of the batch at a time; :func:`merge` turns the parts
of the shards into the part of the whole batch, so an in-process step and a data-parallel
one take the same update.
"""

import math
from dataclasses import dataclass

import numpy as np

from sparsecode._backend import row_norms2, to_host
from sparsecode.codes import SparseCodes


@dataclass(frozen=True)
class Resample:
    """Atoms to replace after a step, and the signals of the batch to replace them with.

    Attributes
    ----------
    atoms : ndarray of shape (n_atoms,), bool
    rows : ndarray of int
        Positions in the batch (ascending) of the worst-coded non-zero signals.
    residual_norms2 : ndarray of shape (len(rows),), float64
        Their squared residual norms.
    """

    atoms: np.ndarray
    rows: np.ndarray
    residual_norms2: np.ndarray


@dataclass
class StepPart:
    """One shard's contribution to a training step.

    Attributes
    ----------
    n : int
        Signals in the shard.
    codes : SparseCodes of shape (n, n_atoms)
    residual_norms2 : ndarray of shape (n,), float64
        ``||x - b - z D||^2`` per signal.
    norms2 : ndarray of shape (n,), float64
        ``||x - b||^2`` per signal.
    x_sum : ndarray of shape (n_features,), float64
        Sum of the centred signals ``x - b``.
    spread : float
        ``sum ||x - mean||^2`` over the shard's signals, around the shard's own mean
        (merged exactly across shards; the denominator of the logged FVU).
    grads : list of ndarray or None
        ``[grad_D, grad_b]``, the loss gradients averaged over the shard (``update="adam"``).
    A, B : ndarray or None
        ``Z^T Z`` (n_atoms, n_atoms) and ``Z^T (X - b)`` (n_atoms, n_features), float64
        (``update="mod"`` or ``"online"``).
    signals : ndarray or None
        The centred signals themselves (``update="ksvd"`` only, which cannot be split).
    """

    n: int
    codes: SparseCodes
    residual_norms2: np.ndarray
    norms2: np.ndarray
    x_sum: np.ndarray
    spread: float = 0.0
    grads: list | None = None
    A: np.ndarray | None = None
    B: np.ndarray | None = None
    signals: np.ndarray | None = None

    def worst(self, m):
        """Indices (ascending, NumPy) of the ``m`` non-zero signals of largest residual, the
        candidates :func:`~sparsecode.dictionary.resample_dead` picks from (all non-zero
        ones when fewer than ``m``)."""
        candidates = np.flatnonzero(to_host(self.norms2) > 0)
        if m < candidates.size:
            score = -to_host(self.residual_norms2)[candidates]
            candidates = candidates[np.argpartition(score, m - 1)[:m]]
        return np.sort(candidates)


def merge(parts):
    """Combine the parts of a batch's shards, in batch order, into the part of the batch.

    Gradients are averaged with weights ``n_i / n`` (each shard's is a mean over its own
    signals); statistics and sums add; codes and per-signal arrays are concatenated.

    Parameters
    ----------
    parts : sequence of StepPart

    Returns
    -------
    StepPart
    """
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    if any(p.signals is not None for p in parts):
        raise ValueError("update='ksvd' revisits the whole batch and cannot be split in shards")
    n = sum(p.n for p in parts)
    width = max(p.codes.indices.shape[1] for p in parts)
    first = parts[0]
    dt = first.codes.values.dtype
    idx = np.full((n, width), -1, dtype=first.codes.indices.dtype)
    val = np.zeros((n, width), dtype=dt)
    row = 0
    for p in parts:
        w = p.codes.indices.shape[1]
        idx[row:row + p.n, :w] = p.codes.indices
        val[row:row + p.n, :w] = p.codes.values
        row += p.n
    grads = None
    if first.grads is not None:
        grads = [
            sum(p.grads[i].astype(np.float64) * (p.n / n) for p in parts).astype(g.dtype)
            for i, g in enumerate(first.grads)
        ]
    A = B = None
    if first.A is not None:
        A = sum(p.A for p in parts)
        B = sum(p.B for p in parts)
    x_sum = sum(p.x_sum for p in parts)
    mean = x_sum / n
    # the parts' spreads around their own means, moved to the batch's mean
    spread = sum(p.spread + p.n * float(np.sum((p.x_sum / p.n - mean) ** 2))
                 for p in parts if p.n)
    return StepPart(
        n=n, codes=SparseCodes(idx, val, first.codes.n_atoms),
        residual_norms2=np.concatenate([p.residual_norms2 for p in parts]),
        norms2=np.concatenate([p.norms2 for p in parts]),
        x_sum=x_sum, spread=spread, grads=grads, A=A, B=B,
    )


def data_scale(Xc):
    """The scale training takes the data in: the root mean square entry of ``Xc``
    (signals minus the pre-bias), or 1 when that is 0 or not finite.

    Parameters
    ----------
    Xc : ndarray of shape (n_samples, n_features)

    Returns
    -------
    float
    """
    Xc = np.asarray(Xc)
    if Xc.size == 0:
        return 1.0
    ms = float(np.mean(row_norms2(Xc))) / Xc.shape[1]
    s = math.sqrt(ms)
    return s if 0.0 < s < math.inf else 1.0
