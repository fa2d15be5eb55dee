"""Online dictionary-learning kernel (Numba).  Called only from
:mod:`sparsecode.dictionary.online`.

Block-coordinate descent on ``0.5 tr(D^T A D) - tr(D^T B)`` over the atoms in order:
``u_j = d_j + (B_j - A_j D) / A_jj``, projected on the unit ball or sphere.  Per atom
``2 n_atoms n_features`` flops for ``A_j D`` (one pass over the float64 working copy of
``D``), ``O(n_features)`` for the rest.
"""

import numpy as np
from numba import njit

BALL = 0
SPHERE = 1


@njit(cache=True)
def online_bcd(D, A, B, n_iter, constraint):
    """``n_iter`` sweeps of block-coordinate descent, in place on the float64 ``D``."""
    n_atoms, d = D.shape
    u = np.empty(d)
    for _ in range(n_iter):
        for j in range(n_atoms):
            ajj = A[j, j]
            if ajj <= 0.0:
                continue
            # u = B_j - A_j D + A_jj d_j  (A_jj times the unconstrained minimiser)
            for q in range(d):
                u[q] = B[j, q]
            Aj = A[j]
            for m in range(n_atoms):
                a = Aj[m]
                if a != 0.0:
                    Dm = D[m]
                    for q in range(d):
                        u[q] -= a * Dm[q]
            nrm = 0.0
            for q in range(d):
                u[q] = D[j, q] + u[q] / ajj
                nrm += u[q] * u[q]
            nrm = np.sqrt(nrm)
            if constraint == BALL:
                scale = 1.0 / max(1.0, nrm)
            elif nrm > 0.0:
                scale = 1.0 / nrm
            else:
                continue  # the sphere has no closest point to 0: keep the atom
            for q in range(d):
                D[j, q] = u[q] * scale
