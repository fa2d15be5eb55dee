"""What the CPU and GPU pursuits share: the validated problem (:class:`Problem`), the
warning about dependent atoms, and turning the kernels' ``I``/``Z`` into
:class:`~sparsecode.codes.SparseCodes`.

:mod:`sparsecode.pursuit` builds the :class:`Problem` and runs it on the CPU;
:mod:`sparsecode.gpu` runs the same :class:`Problem` on the GPU.  Both import this module,
so neither imports the other's private modules.  Kept free of Numba and CuPy.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from sparsecode._backend import array_module
from sparsecode.codes import SparseCodes


@dataclass(frozen=True)
class Problem:
    """Validated inputs and per-dictionary constants shared by every block (immutable:
    derive a changed copy with :func:`dataclasses.replace`).

    The arrays are NumPy arrays, or CuPy arrays when ``on_gpu``.
    """

    D: np.ndarray  # (n_atoms, n_features) unit-norm atoms (normalised when they were not)
    scale: np.ndarray | None  # (n_atoms,) 1 / ||d_j|| of the given atoms, or None (unit norm)
    k: int  # step cap of MP (may exceed n_atoms); the support cap elsewhere
    width: int  # min(k, n_atoms): columns of the codes the kernels fill
    tol: float  # stop once ||r||^2 <= tol ||x||^2
    rtol: float  # relative size below which a correlation or pivot counts as zero
    G: np.ndarray | None  # (n_atoms, n_atoms) Gram of the unit-norm atoms, or None
    rule: int  # selection rule, one of sparsecode._rules.RULES' values
    positive: bool = False  # non-negative coefficients (OMP, GP)
    acgp: bool = False  # conjugate directions (GP)
    k_given: int | None = None  # the caller's k (None: trim the codes to the longest)
    max_steps: int = 0  # step cap per signal of the step loops
    on_gpu: bool = False  # the arrays are CuPy arrays and the GPU kernels run
    cupy_out: bool = False  # return CuPy codes (X was a CuPy array)
    group: int = 256  # rows per group of the correlation GEMMs (sparsecode._parallel)
    # what a kernel derives from a whole Gram ``G`` (its rows' coherence), by name: kept
    # for the call's blocks, and by a GramRows store for every call on its rows
    derived: dict = field(default_factory=dict, compare=False)

    @property
    def dtype(self):
        return self.D.dtype

    @property
    def n_atoms(self):
        return self.D.shape[0]

    @property
    def int_view(self):
        """``(dtype, mask)``: the integer type of the same width as the float dtype, and
        its magnitude mask, for the kernels' bitwise selection."""
        it = np.dtype(np.int32 if self.dtype == np.float32 else np.int64)
        return it, it.type(np.iinfo(it).max)


def warn_dependent(n_dep, n, name, stacklevel):
    """Warn (for the caller of the solver) when ``n_dep`` of ``n`` signals stopped because
    their next atom was linearly dependent on the atoms already selected.  ``stacklevel``
    counts from this function to the solver's caller."""
    if n_dep:
        warnings.warn(
            f"{name} stopped early for {n_dep} of {n} signal(s): the next atom is linearly "
            "dependent on the atoms already selected (duplicated or dependent atoms in D)",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def finish_codes(I, Z, prob):
    """:class:`SparseCodes` from the kernels' ``I`` (int32, (n, width)) and ``Z`` (float64,
    (n, width)) of the unit-norm problem (NumPy or CuPy): coefficients rescaled to the
    given atoms, cast to the problem's dtype, and the width trimmed to the longest code
    when ``k`` was not given.  ``Z`` is overwritten."""
    xp = array_module(I)
    if prob.scale is not None:
        Z *= xp.where(I >= 0, prob.scale[xp.maximum(I, 0)], 0.0)
    values = Z.astype(prob.dtype)
    if prob.k_given is None and I.shape[0]:
        width = max(1, int((I >= 0).sum(axis=1).max()))
        I, values = I[:, :width].copy(), values[:, :width].copy()
    return SparseCodes(I, values, prob.n_atoms)


def compact_nonzero(codes):
    """Drop zero coefficients from each row of ``codes`` in place, keeping order.

    Used by the non-negative solvers, where an atom can end at exactly 0.  Works on
    NumPy and CuPy codes.
    """
    xp = array_module(codes.indices)
    keep = (codes.values != 0) & (codes.indices >= 0)
    if not keep.size or bool(keep.all()):
        return codes
    n, width = keep.shape
    col = xp.cumsum(keep, axis=1) - 1  # where each kept entry moves to
    rows = xp.broadcast_to(xp.arange(n)[:, None], (n, width))
    idx = xp.full_like(codes.indices, -1)
    val = xp.zeros_like(codes.values)
    idx[rows[keep], col[keep]] = codes.indices[keep]
    val[rows[keep], col[keep]] = codes.values[keep]
    codes.indices, codes.values = idx, val
    return codes
