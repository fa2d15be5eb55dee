"""Batch-OMP on the GPU: the caller of ``kernels/omp.cu``.

Called by :func:`sparsecode.omp` with a validated, unit-norm problem of CuPy arrays; gives
the CPU solver's answers (same selection, the same per-signal stops, the same warning
for dependent atoms).

Cost per signal and step ``s`` (``K`` atoms, ``b`` bytes per value):

* Gram path (``omp_gram``, one launch per block of signals): the selection is fused into
  the update ``c -= G[I]^T delta`` (``2 K s`` flops, ``s`` Gram rows of ``K b`` bytes
  read, the correlation row in shared memory when it fits); the Cholesky row and the
  solve cost ``~3 s^2`` flops in warp 0 (float64).  Over ``k`` steps: ``K k^2`` flops and
  ``K k^2 b / 2`` bytes of Gram rows per signal, the memory traffic that bounds it.
  Each thread block keeps ``8 (2 k^2 + 2 k)`` bytes of scratch (``3 k^2 + 6 k`` doubles
  with ``positive``).
* No-Gram path (``omp_nogram_step``, one launch per step): the GEMM ``R_active D^T``,
  ``s + 1`` dot products of atoms for the new support Gram row, ``2 n_features s`` flops
  for the residual; the scratch is kept per signal across launches.
"""

import numpy as np

from sparsecode.gpu import _driver, _module


def _scratch_doubles(k, positive):
    """Doubles of scratch per signal (``omp_scratch_doubles`` in omp.cu): the Cholesky
    factor and the support Gram, two vectors; the non-negative solver's besides."""
    return 2 * k * k + 2 * k + (k * k + 4 * k if positive else 0)


def _exact_support(prob):
    """Whether the support Gram entries come from the atoms: on 16-bit rows, unless the
    CPU would run its deferred-update kernel, which reads them from the rows."""
    from sparsecode.pursuit.omp import deferred_updates

    return prob.G.dtype != prob.dtype and not deferred_updates(prob)


def _gram_block(Xb, prob, stats, I, Z):
    import cupy

    k = prob.width
    per = _scratch_doubles(k, prob.positive)
    C = _driver.correlations(Xb, prob)
    kernel = _module.get("omp_gram", prob.dtype, prob.G.dtype)
    threads = _driver.threads_for(kernel, prob.n_atoms)
    use_shared, smem = _driver.shared_memory(prob, k * (prob.dtype.itemsize + 4))
    n = Xb.shape[0]
    grid = _driver.grid_for(n, threads, 8 * per)
    work = cupy.empty(grid * per, dtype=np.float64)
    _driver.launch("omp_gram", prob.dtype, n, threads, smem=smem, grid=grid,
                   gram_dtype=prob.G.dtype, C=C, G=prob.G, D=prob.D, d=prob.D.shape[1], n=n,
                   K=prob.n_atoms, rule=prob.rule, positive=prob.positive, k=k,
                   exact=_exact_support(prob), use_shared=use_shared, rtol=prob.rtol,
                   xnorm2=stats.xnorm2, tol2=stats.tol2, thr=stats.thr, I=I, Z=Z,
                   status=stats.status, work=work)


def _nogram_block(Xb, prob, stats, I, Z):
    import cupy

    k = prob.width
    kernel = _module.get("omp_nogram_step", prob.dtype)
    K, d = prob.D.shape
    threads = _driver.threads_for(kernel, max(K, d))
    _, smem = _driver.shared_memory(prob, k * (prob.dtype.itemsize + 4), row=False)
    n = Xb.shape[0]
    ns = cupy.zeros(n, dtype=np.int32)
    work = cupy.empty(n * _scratch_doubles(k, prob.positive), dtype=np.float64)

    def step(C, active, R, status):
        _driver.launch("omp_nogram_step", prob.dtype, active.size, threads, smem=smem, C=C,
                       rows=active, n_active=active.size, R=R, D=prob.D, K=K, d=d,
                       rule=prob.rule, positive=prob.positive, k=k, rtol=prob.rtol,
                       tol2=stats.tol2, thr=stats.thr, I=I, Z=Z, ns=ns, work=work,
                       status=status)

    _driver.nogram_steps(Xb, prob, stats, step)


def omp_gpu(X, prob):
    """Batch-OMP of the CuPy signals ``X`` for the prepared problem ``prob``.

    Parameters
    ----------
    X : cupy.ndarray of shape (n_samples, n_features)
    prob : sparsecode._problem.Problem
        Unit-norm CuPy dictionary (and Gram matrix, for the Gram path), ``width`` (the
        largest support), ``tol``, ``rtol``, ``rule``, ``positive`` and
        ``max_steps`` (``width``).

    Returns
    -------
    codes : SparseCodes
        CuPy arrays of shape (n_samples, width); zero coefficients of the positive
        variant are dropped by the caller.
    """
    per = 8 * (_scratch_doubles(prob.width, prob.positive) + 1)
    return _driver.encode(X, prob, _gram_block, _nogram_block, nogram_bytes_per_row=per,
                          name="omp")
