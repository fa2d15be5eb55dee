"""The encoders of an MP-SAE: which pursuit codes signals on the model's atoms.

:class:`Encoder` holds the choice (solver, selection rule, free or unit atom norms) and
the Gram matrix of the current atoms, kept until the atoms change.
"""

import numpy as np

from sparsecode._backend import array_module
from sparsecode._rules import RULES
from sparsecode.codes import SparseCodes
from sparsecode.sae.mpsae import batch_grad


class Encoder:
    """Codes of signals (already centred by the pre-bias) on atoms ``D``.

    Parameters
    ----------
    selection : {"abs", "positive", "signed"}
        Selection rule of MP and TopK.
    unit_atoms : bool
        False: the MP encoder is the unrolled map ``r <- r - (d . r) d`` on atoms of free
        norm (as trained); True: :func:`sparsecode.mp`.
    use_gram : bool, optional
        Whether MP on unit atoms uses the Gram matrix; None decides per call from its
        number of signals (a caller encoding a large set in blocks fixes it for all of
        them, so every block takes the same path).
    """

    def __init__(self, selection, unit_atoms, use_gram=None):
        self.selection = selection
        self.unit_atoms = unit_atoms
        self.use_gram = use_gram
        self._gram = None

    def atoms_changed(self):
        """Forget the Gram matrix of the old atoms."""
        self._gram = None

    def __call__(self, Xc, D, *, k, tol, solver):
        """Encode ``Xc``.

        Parameters
        ----------
        Xc : ndarray of shape (n_samples, n_features)
            Signals minus the pre-bias, in ``D``'s dtype and on its device.
        D : ndarray of shape (n_atoms, n_features)
        k : int or None
        tol : float or None
        solver : {"mp", "topk", "omp", "gp"}

        Returns
        -------
        SparseCodes
        """
        import sparsecode

        if solver == "topk":
            return topk_codes(Xc, D, k, self.selection)
        if solver == "mp" and not self.unit_atoms:
            return batch_grad(Xc, D, None, k=k or Xc.shape[1], tol=tol or 0.0,
                              rule=RULES[self.selection], topk=False, backward=False).codes
        gram = self._gram_for(Xc, D, k, solver)
        if solver == "mp":
            return sparsecode.mp(Xc, D, k=k, tol=tol, selection=self.selection, gram=gram)
        if solver == "omp":
            return sparsecode.omp(Xc, D, k=k, tol=tol, gram=gram)
        return sparsecode.gp(Xc, D, k=k, tol=tol, gram=gram)

    def _gram_for(self, Xc, D, k, solver):
        """The Gram of the pursuits on ``D`` (unit atoms): built once and kept until the
        atoms change — the whole matrix when it fits the budget (on the GPU a device
        matrix within the device's budget), else a :class:`~sparsecode.GramRows` store
        (CPU) — or False.  With ``use_gram`` None a call
        of few signals recomputes correlations (and decides again next call)."""
        from sparsecode.pursuit import model_gram

        steps = k or Xc.shape[1]
        rows = 1 if solver == "mp" else min(steps, D.shape[0])
        G = self._gram
        if self.use_gram is False:
            return False
        if G is not None and array_module(G) is not array_module(D):
            G = None  # the atoms moved between host and device
        if G is None:  # on the GPU a whole Gram (device GEMMs) or none
            n = Xc.shape[0] if self.use_gram is None else 1 << 62
            G = model_gram(D, n, steps, rows)
            if G is False:
                return False
            self._gram = G
        if getattr(G, "capacity", rows) < rows:
            return False  # a store too small for this pursuit's supports
        return G


def topk_codes(Xc, D, k, selection):
    """One-step TopK codes: the ``k`` atoms of best score of ``Xc D^T`` under the selection
    rule, coded by their correlations (zero scores dropped).

    Parameters
    ----------
    Xc : ndarray of shape (n_samples, n_features)
    D : ndarray of shape (n_atoms, n_features)
    k : int
    selection : {"abs", "positive", "signed"}

    Returns
    -------
    SparseCodes
        Atoms in order of decreasing score (ties by atom index).
    """
    xp = array_module(Xc)
    if xp is np:
        from sparsecode._parallel import correlations_by_group

        C = correlations_by_group(Xc, D)
    else:
        C = Xc @ D.T
    score = xp.abs(C) if selection == "abs" else C
    k = min(k, D.shape[0])
    part = xp.argpartition(-score, k - 1, axis=1)[:, :k]
    # ties in order of atom index, as the stable sort of the CPU
    part.sort(axis=1)
    order = xp.argsort(-xp.take_along_axis(score, part, axis=1), axis=1, kind="stable")
    idx = xp.take_along_axis(part, order, axis=1)
    val = xp.take_along_axis(C, idx, axis=1)
    keep = xp.take_along_axis(score, idx, axis=1) > 0
    idx = xp.where(keep, idx, -1).astype(np.int32)
    val = xp.where(keep, val, 0).astype(D.dtype)
    return SparseCodes(idx, val, D.shape[0])
