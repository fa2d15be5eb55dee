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
    kernel = _module.get("mp_gram", prob.dtype)
    threads = _driver.threads_for(kernel, prob.n_atoms)
    use_shared, smem = _driver.shared_memory(prob, 0)
    n = C.shape[0]
    args = (C, prob.G, np.int32(n), np.int32(prob.n_atoms), np.int32(prob.options["rule"]),
            np.int32(prob.k), np.int32(prob.width), np.int32(use_shared), stats.xnorm2,
            stats.tol2, stats.thr, I, Z)
    _driver.launch(kernel, n, threads, args, smem=smem)
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
        args = (C, active, np.int32(n), R, prob.D, np.int32(K), np.int32(d),
                np.int32(prob.options["rule"]), stats.tol2, stats.thr, I, Z,
                np.int32(prob.width), ns, status)
        _driver.launch(kernel, n, threads, args)

    _driver.nogram_steps(Xb, prob, stats, step, prob.k)


def mp_gpu(X, prob):
    """Matching pursuit of the CuPy signals ``X`` for the prepared problem ``prob``.

    Parameters
    ----------
    X : cupy.ndarray of shape (n_samples, n_features)
    prob : sparsecode.pursuit._driver.Problem
        Unit-norm CuPy dictionary (and Gram matrix, for the Gram path), ``k``, ``tol``
        and ``options["rule"]``.

    Returns
    -------
    codes : SparseCodes
        CuPy arrays of shape (n_samples, width).
    """
    return _driver.encode(X, prob, _gram_block, _nogram_block, name="mp")
