"""The MP-SAE loss and its exact gradient.

An MP-SAE encodes ``x`` by ``k`` unrolled matching-pursuit steps on unit-norm atoms
``D`` after subtracting a pre-bias ``b``, and decodes with the same atoms::

    r_0 = x - b,   r_t = r_{t-1} - (d_t . r_{t-1}) d_t,   x_hat = x - r_T

The loss is the squared reconstruction error ``||r_T||^2`` averaged over signals.  The
selection of ``d_t`` is piecewise constant in ``D``; between switches the loss is smooth
and :func:`mpsae_grad` returns its exact gradient.
"""

from dataclasses import dataclass

import numpy as np

from sparsecode import _config
from sparsecode._backend import array_module, is_cupy
from sparsecode._blas import one_blas_thread
from sparsecode._rules import RULES
from sparsecode._validation import (
    check_array,
    check_choice,
    check_k_tol,
    check_on_backend,
    check_signals_and_dictionary,
)
from sparsecode.codes import SparseCodes

#: Encoders :func:`mpsae_grad` differentiates: unrolled MP, or one-step TopK.
ENCODERS = ("mp", "topk")

#: Below this many flops in the correlation GEMM a batch runs on one thread.
SERIAL_FLOPS = 2e7


@dataclass
class SAEGrad:
    """Loss, gradients and codes of one batch.

    Attributes
    ----------
    loss : float
        Squared reconstruction error averaged over signals, ``sum ||r||^2 / n_samples``.
    grad_D : ndarray of shape (n_atoms, n_features)
        Gradient of ``loss`` with respect to the atoms.
    grad_b : ndarray of shape (n_features,)
        Gradient with respect to the pre-bias.
    codes : SparseCodes
        The codes of the batch (an atom selected twice has its coefficients summed).
    residual_norms2 : ndarray of shape (n_samples,)
        ``||r||^2`` per signal, float64.
    """

    loss: float
    grad_D: np.ndarray
    grad_b: np.ndarray
    codes: SparseCodes
    residual_norms2: np.ndarray


def mpsae_grad(X, D, b=None, *, k, tol=None, selection="abs", encoder="mp", gram=None):
    """MP-SAE loss and its exact gradient on one batch, without autograd.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals.
    D : array-like of shape (n_atoms, n_features)
        Atoms (the encoder and decoder are tied).  With unit-norm atoms the encoder is
        matching pursuit; with other norms it is the same unrolled map
        ``r <- r - (d . r) d`` taken literally (training with free atom norms).
    b : array-like of shape (n_features,), optional
        Pre-bias, subtracted before encoding and added back after decoding.
    k : int
        MP steps (``encoder="mp"``) or atoms (``encoder="topk"``) per signal.
    tol : float, optional
        Also stop a signal once ``||r||^2 <= tol * ||x - b||^2`` (MP encoder only).
    selection : {"abs", "positive", "signed"}
        Selection rule, as in :func:`sparsecode.mp`.
    encoder : {"mp", "topk"}
        ``"mp"``: ``k`` unrolled MP steps.  ``"topk"``: the ``k`` atoms of largest
        correlation with ``x - b`` (by the same rule), coded by their correlations
        (one step, no explaining away).
    gram : ndarray of shape (n_atoms, n_atoms), optional
        ``D D^T``, when the caller already has it.

    Returns
    -------
    SAEGrad
        Of CuPy arrays, computed on the GPU, when ``X`` or ``D`` is a CuPy array.

    Notes
    -----
    Cost: one GEMM ``X D^T`` (``2 n n_atoms n_features`` flops), the Gram ``D D^T`` when
    not given (``n_atoms^2 n_features``), ``2 n_atoms`` per MP step for the correlation
    update, and ``~12 n_features`` per step for residual and backward.  No dense
    ``(n_samples, n_atoms)`` array is formed beyond the correlations of one chunk.
    """
    check_choice(selection, "selection", tuple(RULES))
    check_choice(encoder, "encoder", ENCODERS)
    on_gpu = is_cupy(X) or is_cupy(D)  # CuPy in: the GPU kernels, CuPy out
    X, D = check_on_backend(X, "X", on_gpu), check_on_backend(D, "D", on_gpu)
    X, D, _ = check_signals_and_dictionary(X, D)
    if encoder == "topk" and tol is not None:
        raise ValueError("tol applies to encoder='mp' only; the TopK encoder takes exactly k atoms")
    k, tol = check_k_tol(k, tol, D.shape[0], D.shape[1], k_may_exceed_atoms=encoder == "mp")
    if b is not None:
        b = check_array(check_on_backend(b, "b", on_gpu), "b", ndim=1)
        if b.shape[0] != X.shape[1]:
            raise ValueError(
                f"b must have shape (n_features,) = ({X.shape[1]},); got shape {b.shape}"
            )
        X = X - b.astype(X.dtype)
    if gram is not None:
        gram = check_array(check_on_backend(gram, "gram", on_gpu), "gram")
        gram = gram.astype(D.dtype, copy=False)
        if gram.shape != (D.shape[0],) * 2:
            raise ValueError(
                f"gram must have shape {(D.shape[0],) * 2} to match D; got {gram.shape}"
            )
    return batch_grad(X, array_module(D).ascontiguousarray(D), gram, k=k, tol=tol,
                      rule=RULES[selection], topk=encoder == "topk")


def batch_grad(X, D, G, *, k, tol, rule, topk, backward=True):
    """:func:`mpsae_grad` on trusted inputs: ``X`` already centred by the pre-bias, ``D``
    C-contiguous atoms of ``X``'s dtype, ``G`` their Gram or None.  With
    ``backward=False`` only the codes, loss and residual norms are computed."""
    if is_cupy(X):
        from sparsecode.gpu.mpsae import batch_grad_gpu

        loss2, gD, gb, codes = batch_grad_gpu(X, D, G, k=k, tol=tol, rule=rule, topk=topk,
                                              backward=backward)
        return SAEGrad(loss=float(loss2.sum()) / X.shape[0], grad_D=gD, grad_b=gb,
                       codes=codes, residual_norms2=loss2)
    import numba

    from sparsecode._parallel import gram_symmetric
    from sparsecode.sae._mpsae_numba import mp_train, mp_train_serial

    n, nf = X.shape
    K = D.shape[0]
    dt = D.dtype
    X = np.ascontiguousarray(X)
    if G is None and not topk:
        G = gram_symmetric(D)
    if G is None:
        G = np.empty((1, 1), dtype=dt)  # unused by the TopK encoder
    width = min(k, K)
    I = np.full((n, width), -1, dtype=np.int32)
    Z = np.zeros((n, width), dtype=np.float64)
    loss2 = np.empty(n, dtype=np.float64)
    # threads pay off once the batch's correlation GEMM is worth more than ~1 ms
    serial = 2 * n * K * nf < SERIAL_FLOPS
    group = int(_config.ROW_GROUP)
    nch = 1 if serial else max(1, min(-(-n // group), numba.get_num_threads()))
    shape = (nch, K, nf) if backward else (nch, 1, 1)
    gD = np.zeros(shape, dtype=dt)
    gb = np.zeros(shape[::2], dtype=np.float64)
    xnorm2 = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    it = np.dtype(np.int32 if dt == np.float32 else np.int64)
    mask = it.type(np.iinfo(it).max)
    with one_blas_thread():
        train = mp_train_serial if serial else mp_train
        train(nch, group, X, D.T, D, G, rule, mask, k, tol * xnorm2,
              _config.rtol(dt) * np.sqrt(xnorm2), topk, 1.0 / n, I, Z, loss2, gD, gb, backward)
    codes = SparseCodes(I, Z.astype(dt), K)
    return SAEGrad(
        loss=float(loss2.sum() / n),
        grad_D=gD.sum(axis=0) if nch > 1 else gD[0],
        grad_b=gb.sum(axis=0).astype(dt),
        codes=codes,
        residual_norms2=loss2,
    )
