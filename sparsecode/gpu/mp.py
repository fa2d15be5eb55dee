"""Matching pursuit on the GPU: the caller of ``kernels/mp.cu``.

Called by :func:`sparsecode.mp` with a validated, unit-norm problem of CuPy arrays; gives
the CPU solver's answers (same selection rules, ties to the lowest index, the same
per-signal stops).

Cost per signal and step (``K`` atoms, ``b`` bytes per value):

* Gram path (``mp_gram``, one launch per block of signals): ``2 K`` flops; ``K b`` bytes
  of one Gram row read from device memory, plus the correlation row read and written
  (``2 K b``) in shared memory when it fits (``_config.GPU_SHARED_CORRELATIONS``), in
  device memory otherwise.  The up-front ``X D^T`` is one cuBLAS GEMM.
* No-Gram path (``mp_nogram_step``, one launch per step): the GEMM ``R_active D^T``
  (``2 K n_features`` flops per active signal), then ``K b`` bytes to select and
  ``O(n_features)`` to update the residual.
"""

import numpy as np

from sparsecode.gpu import _driver, _module


def launch_gram(C, prob, stats, I, Z):
    """The Gram-path pursuit of one block whose correlations are ``C`` (overwritten when
    the rows do not fit in shared memory); returns whether they did."""
    kernel = _module.get("mp_gram", prob.dtype, prob.G.dtype)
    threads = _driver.threads_for(kernel, prob.n_atoms)
    use_shared, smem = _driver.shared_memory(prob, 0)
    n = C.shape[0]
    _driver.launch("mp_gram", prob.dtype, n, threads, smem=smem, gram_dtype=prob.G.dtype,
                   C=C, G=prob.G, n=n, K=prob.n_atoms, rule=prob.rule, k=prob.k,
                   width=prob.width, use_shared=use_shared, xnorm2=stats.xnorm2,
                   tol2=stats.tol2, thr=stats.thr, I=I, Z=Z)
    return use_shared


def _gram_block(Xb, prob, stats, I, Z):
    launch_gram(_driver.correlations(Xb, prob), prob, stats, I, Z)


def _nogram_block(Xb, prob, stats, I, Z):
    import cupy

    kernel = _module.get("mp_nogram_step", prob.dtype)
    K, d = prob.D.shape
    threads = _driver.threads_for(kernel, max(K, d))
    ns = cupy.zeros(Xb.shape[0], dtype=np.int32)

    def step(C, active, R, status):
        n = active.size
        _driver.launch("mp_nogram_step", prob.dtype, n, threads, C=C, rows=active,
                       n_active=n, R=R, D=prob.D, K=K, d=d, rule=prob.rule, tol2=stats.tol2,
                       thr=stats.thr, I=I, Z=Z, width=prob.width, ns=ns, status=status)

    _driver.nogram_steps(Xb, prob, stats, step)


def mp_gpu(X, prob):
    """Matching pursuit of the CuPy signals ``X`` for the prepared problem ``prob``.

    Parameters
    ----------
    X : cupy.ndarray of shape (n_samples, n_features)
    prob : sparsecode._problem.Problem
        Unit-norm CuPy dictionary (and Gram matrix, for the Gram path), ``k``, ``tol``,
        ``rule`` and ``max_steps`` (``k``).

    Returns
    -------
    codes : SparseCodes
        CuPy arrays of shape (n_samples, width).
    """
    return _driver.encode(X, prob, _gram_block, _nogram_block, name="mp")
