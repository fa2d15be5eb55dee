"""MP-SAE loss and exact gradient on the GPU: the caller of ``kernels/mpsae.cu``.

The twin of :func:`sparsecode.sae.mpsae.batch_grad` (which calls it for CuPy arrays):
the same encoder (unrolled MP on atoms of any norm, or one-step TopK), the same codes,
and the same gradients up to the order of floating-point additions (the atoms'
gradient is summed with atomic adds).

Cost per batch of ``n`` signals (``K`` atoms, ``d`` features, ``T`` steps per signal):

* cuBLAS: ``C = X D^T`` (``2 n K d`` flops) and, for MP, ``G = D D^T`` (``2 K^2 d``).
* ``mpsae_forward``: per step ``2 K`` flops and one Gram row (``K b`` bytes) per signal,
  the correlation row in shared memory when it fits.
* ``mpsae_backward``: per step ``~8 d`` flops, one atom row read and ``d`` atomic adds
  into the atoms' gradient per signal; ``r`` and ``dL/dr`` in shared memory.
"""

import numpy as np

from sparsecode import _config
from sparsecode._problem import Problem
from sparsecode.codes import SparseCodes
from sparsecode.gpu import _driver, _module


def batch_grad_gpu(X, D, G, *, k, tol, rule, topk, backward=True):
    """The MP-SAE encoder and its exact backward pass on CuPy ``X`` (centred by the
    pre-bias) and ``D`` (C-contiguous, ``X``'s dtype), ``G`` their Gram or None.

    Returns
    -------
    residual_norms2 : cupy.ndarray of shape (n_samples,), float64
    grad_D : cupy.ndarray of shape (n_atoms, n_features), or (1, 1) without ``backward``
        Gradient of the mean squared residual with respect to the atoms.
    grad_b : cupy.ndarray of shape (n_features,)
        Gradient with respect to the pre-bias (zeros without ``backward``).
    codes : SparseCodes of CuPy arrays
    """
    import cupy

    n, d = X.shape
    K = D.shape[0]
    dt = D.dtype
    X = cupy.ascontiguousarray(X)
    D = cupy.ascontiguousarray(D)
    if G is None and not topk:
        G = D @ D.T
    if G is None:
        G = cupy.empty((1, 1), dtype=dt)  # unused by the TopK encoder
    G = cupy.ascontiguousarray(G)
    width = min(k, K)
    prob = Problem(D=D, scale=None, k=k, width=width, tol=tol, rtol=_config.rtol(dt), G=G,
                   rule=rule, k_given=k, max_steps=k)
    I = cupy.full((n, width), -1, dtype=np.int32)
    Z = cupy.zeros((n, width), dtype=np.float64)
    J = cupy.zeros((n, k), dtype=np.int32)
    Cs = cupy.zeros((n, k), dtype=np.float64)
    nsteps = cupy.zeros(n, dtype=np.int32)
    loss2 = cupy.empty(n, dtype=np.float64)
    gD = cupy.zeros((K, d) if backward else (1, 1), dtype=dt)
    dX = cupy.empty((n, d) if backward else (1, 1), dtype=np.float64)
    B = _driver.rows_per_block(K * dt.itemsize)
    for b0 in range(0, n, B):
        b1 = min(b0 + B, n)
        Xb = X[b0:b1]
        stats = _driver.row_stats(Xb, prob)
        _forward(_driver.correlations(Xb, prob), prob, stats, topk, I[b0:b1], Z[b0:b1],
                 J[b0:b1], Cs[b0:b1], nsteps[b0:b1])
    _backward(X, D, J, Cs, nsteps, topk, backward, 1.0 / n, loss2, gD, dX)
    grad_b = (-dX.sum(axis=0)).astype(dt) if backward else cupy.zeros(d, dtype=dt)
    # gD is (1, 1) without backward, as on the CPU
    return loss2, gD, grad_b, SparseCodes(I, Z.astype(dt), K)


def _forward(C, prob, stats, topk, I, Z, J, Cs, nsteps):
    kernel = _module.get("mpsae_forward", prob.dtype)
    threads = _driver.threads_for(kernel, prob.n_atoms)
    use_shared, smem = _driver.shared_memory(prob, 0)
    n = C.shape[0]
    _driver.launch("mpsae_forward", prob.dtype, n, threads, smem=smem, C=C, G=prob.G, n=n,
                   K=prob.n_atoms, rule=prob.rule, k=prob.k, width=prob.width, topk=topk,
                   use_shared=use_shared, xnorm2=stats.xnorm2, tol2=stats.tol2, thr=stats.thr,
                   I=I, Z=Z, J=J, Cs=Cs, nsteps=nsteps)


def _backward(X, D, J, Cs, nsteps, topk, backward, gscale, loss2, gD, dX):
    n, d = X.shape
    kernel = _module.get("mpsae_backward", X.dtype)
    threads = _driver.threads_for(kernel, d)
    smem = 2 * d * 8
    limit = _module.device_attribute("MaxSharedMemoryPerBlockOptin") - _driver.STATIC_SMEM
    if smem > limit:
        raise ValueError(
            f"n_features = {d} is too large for the GPU training kernel (it holds two float64 "
            f"vectors of n_features in shared memory, {smem} bytes; the device has {limit})"
        )
    _driver.launch("mpsae_backward", X.dtype, n, threads, smem=smem, X=X, D=D, n=n, d=d,
                   k=J.shape[1], J=J, Cs=Cs, nsteps=nsteps, topk=topk, backward=backward,
                   gscale=gscale, loss2=loss2, gD=gD, dX=dX)
