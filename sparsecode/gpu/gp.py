"""Gradient pursuit and ACGP on the GPU: the caller of ``kernels/gp.cu``.

Called by :func:`sparsecode.gp` with a validated, unit-norm problem of CuPy arrays.

Cost per signal and step (``K`` atoms, ``s`` atoms in the support, ``b`` bytes per value):

* Gram path (``gp_gram``, one launch per block of signals): the selection is fused into
  the update ``c -= G[I]^T delta`` (``2 K s`` flops, ``s`` Gram rows of ``K b`` bytes
  read, the correlation row in shared memory when it fits); the direction and step
  need ``O(s^2)`` flops on the support Gram (warp 0, float64).  Each thread block keeps
  ``8 (k^2 + 3k)`` bytes of scratch (the support Gram and three vectors).
* No-Gram path (``gp_nogram_step``, one launch per step): the GEMM ``R_active D^T``, ``s``
  dot products of atoms for the new support Gram row, ``2 n_features s`` flops for the
  residual; the scratch is kept per signal across launches.
"""

import numpy as np

from sparsecode.gpu import _driver, _module


def _scratch_doubles(k):
    """Doubles of scratch per signal: the support Gram and three vectors of length k."""
    return k * k + 3 * k


def _gram_block(Xb, prob, stats, I, Z):
    import cupy

    k = prob.width
    C = _driver.correlations(Xb, prob)
    kernel = _module.get("gp_gram", prob.dtype, prob.G.dtype)
    threads = _driver.threads_for(kernel, prob.n_atoms)
    use_shared, smem = _driver.shared_memory(prob, k * (prob.dtype.itemsize + 4))
    n = Xb.shape[0]
    grid = _driver.grid_for(n, threads, 8 * _scratch_doubles(k))
    work = cupy.empty(grid * _scratch_doubles(k), dtype=np.float64)
    _driver.launch("gp_gram", prob.dtype, n, threads, smem=smem, grid=grid,
                   gram_dtype=prob.G.dtype, C=C, G=prob.G, D=prob.D, d=prob.D.shape[1], n=n,
                   K=prob.n_atoms, rule=prob.rule, acgp=prob.acgp, positive=prob.positive,
                   k=k, max_steps=prob.max_steps, use_shared=use_shared, xnorm2=stats.xnorm2,
                   tol2=stats.tol2, thr=stats.thr, I=I, Z=Z, work=work)


def _nogram_block(Xb, prob, stats, I, Z):
    import cupy

    k = prob.width
    kernel = _module.get("gp_nogram_step", prob.dtype)
    K, d = prob.D.shape
    threads = _driver.threads_for(kernel, max(K, d))
    _, smem = _driver.shared_memory(prob, k * (prob.dtype.itemsize + 4), row=False)
    n = Xb.shape[0]
    ns = cupy.zeros(n, dtype=np.int32)
    curv = cupy.zeros(n, dtype=np.float64)
    work = cupy.empty(n * _scratch_doubles(k), dtype=np.float64)

    def step(C, active, R, status):
        _driver.launch("gp_nogram_step", prob.dtype, active.size, threads, smem=smem, C=C,
                       rows=active, n_active=active.size, R=R, D=prob.D, K=K, d=d,
                       rule=prob.rule, acgp=prob.acgp, positive=prob.positive, k=k,
                       tol2=stats.tol2, thr=stats.thr, I=I, Z=Z, ns=ns, curv=curv, work=work,
                       status=status)

    _driver.nogram_steps(Xb, prob, stats, step)


def gp_gpu(X, prob):
    """Gradient pursuit (``prob.acgp``: ACGP) of the CuPy signals ``X``.

    Parameters
    ----------
    X : cupy.ndarray of shape (n_samples, n_features)
    prob : sparsecode._problem.Problem
        Unit-norm CuPy dictionary (and Gram matrix, for the Gram path), ``width`` (the
        largest support), ``tol``, ``rule``, ``acgp``, ``positive`` and ``max_steps``
        (the step cap per signal: a step that re-selects an atom does not grow the
        support).

    Returns
    -------
    codes : SparseCodes
        CuPy arrays of shape (n_samples, width); zero coefficients of the positive
        variant are dropped by the caller.
    """
    return _driver.encode(X, prob, _gram_block, _nogram_block,
                          nogram_bytes_per_row=8 * (_scratch_doubles(prob.width) + 2),
                          name="gp")
