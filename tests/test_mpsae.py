"""The MP-SAE loss and its exact gradient: finite differences, parity with the solvers."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import sparsecode
from sparsecode.datasets import make_sparse_signals
from sparsecode.sae import mpsae_grad
from sparsecode.sae.encoders import topk_codes
from tests import naive

RULES = ("abs", "positive", "signed")


def _problem(seed, n, nf, K, bias, unit=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, nf))
    D = rng.standard_normal((K, nf))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    if not unit:  # free atom norms: the unrolled map taken literally
        D *= rng.uniform(0.7, 1.3, size=(K, 1))
    b = 0.3 * rng.standard_normal(nf) if bias else None
    return X, D, b


def _central_differences(X, D, b, k, rule, topk, eps=1e-6):
    """Gradient of the plain-loop loss by central differences; None when a perturbation
    changes the selected atoms (the loss is not smooth there)."""
    _, trace = naive.mpsae_loss(X, D, b, k, rule, topk)

    def loss(D_, b_):
        value, tr = naive.mpsae_loss(X, D_, b_, k, rule, topk)
        return value if tr == trace else None

    gD = np.zeros_like(D)
    for idx in np.ndindex(*D.shape):
        E = np.zeros_like(D)
        E[idx] = eps
        plus, minus = loss(D + E, b), loss(D - E, b)
        if plus is None or minus is None:
            return None
        gD[idx] = (plus - minus) / (2 * eps)
    gb = None
    if b is not None:
        gb = np.zeros_like(b)
        for q in range(b.size):
            e = np.zeros_like(b)
            e[q] = eps
            plus, minus = loss(D, b + e), loss(D, b - e)
            if plus is None or minus is None:
                return None
            gb[q] = (plus - minus) / (2 * eps)
    return gD, gb


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 6),
    nf=st.integers(2, 7),
    K=st.integers(2, 9),
    k=st.integers(1, 5),
    rule=st.sampled_from(RULES),
    bias=st.booleans(),
    topk=st.booleans(),
    unit=st.booleans(),
)
def test_gradient_equals_central_differences(seed, n, nf, K, k, rule, bias, topk, unit):
    if topk:
        k = min(k, K)
    X, D, b = _problem(seed, n, nf, K, bias, unit)
    fd = _central_differences(X, D, b, k, rule, topk)
    assume(fd is not None)
    g = mpsae_grad(X, D, b, k=k, selection=rule, encoder="topk" if topk else "mp")
    loss, _ = naive.mpsae_loss(X, D, b, k, rule, topk)
    assert g.loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
    # signals reconstructed to rounding (k steps in nf <= k dimensions) leave a gradient
    # of rounding noise, which no relative tolerance can compare
    assume(loss > 1e-12 * float(np.sum(X * X)))
    assert _rel(g.grad_D, fd[0]) < 1e-6
    if bias:
        assert _rel(g.grad_b, fd[1]) < 1e-6


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_equal_the_mp_solver(rule, dtype, rng):
    X = rng.standard_normal((300, 16)).astype(dtype)
    D = rng.standard_normal((40, 16)).astype(dtype)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    g = mpsae_grad(X, D, k=6, selection=rule)
    ref = sparsecode.mp(X, D, k=6, selection=rule)
    np.testing.assert_array_equal(g.codes.indices, ref.indices)
    np.testing.assert_allclose(g.codes.values, ref.values, rtol=1e-4 if dtype == np.float32
                               else 1e-10, atol=1e-5)
    R = X - ref.decode(D)
    np.testing.assert_allclose(g.residual_norms2, (R.astype(np.float64) ** 2).sum(1),
                               rtol=1e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("rule", RULES)
def test_topk_codes_equal_the_training_encoder(rule, rng):
    X = rng.standard_normal((200, 12))
    D = rng.standard_normal((30, 12))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    g = mpsae_grad(X, D, k=5, selection=rule, encoder="topk")
    ref = topk_codes(X, D, 5, rule)
    np.testing.assert_array_equal(g.codes.indices, ref.indices)
    np.testing.assert_allclose(g.codes.values, ref.values, rtol=1e-12)


def test_gradient_does_not_depend_on_thread_count(rng):
    import numba

    X = rng.standard_normal((500, 16))
    D = rng.standard_normal((64, 16))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    a = mpsae_grad(X, D, k=8).grad_D
    b = mpsae_grad(X, D, k=8).grad_D
    np.testing.assert_array_equal(a, b)  # deterministic for a given thread count
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        c = mpsae_grad(X, D, k=8).grad_D
    finally:
        numba.set_num_threads(old)
    np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-14)


def test_a_gradient_step_lowers_the_loss(rng):
    X, D_true, _ = make_sparse_signals(2000, 32, 64, 4, dtype=np.float64, random_state=1)
    D = D_true + 0.3 * rng.standard_normal(D_true.shape)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    g = mpsae_grad(X, D, k=4)
    step = D - 0.5 * g.grad_D / np.linalg.norm(g.grad_D) * 0.05
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    assert mpsae_grad(X, step, k=4).loss < g.loss


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k must be >= 1"),
        (dict(k=2, selection="max"), "selection must be one of"),
        (dict(k=2, encoder="omp"), "encoder must be one of"),
        (dict(k=2, encoder="topk", tol=0.1), "tol applies to encoder='mp'"),
        (dict(k=2, b=np.zeros(3)), r"b must have shape \(n_features,\)"),
        (dict(k=2, gram=np.eye(3)), "gram must have shape"),
    ],
)
def test_bad_input(kwargs, match, rng):
    X = rng.standard_normal((4, 5))
    D = np.eye(5)
    with pytest.raises((ValueError, TypeError), match=match):
        mpsae_grad(X, D, **kwargs)


@pytest.mark.blas_sensitive
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [7, 300, 517, 1031])
def test_gram_symmetric_equals_the_product(dtype, K, rng):
    from sparsecode._parallel import gram_symmetric

    D = rng.standard_normal((K, 19)).astype(dtype)
    G = gram_symmetric(D)
    assert G.flags.c_contiguous and G.dtype == dtype
    np.testing.assert_array_equal(G, G.T)
    np.testing.assert_allclose(G, D.astype(np.float64) @ D.T.astype(np.float64),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
