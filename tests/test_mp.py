import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import sparsecode
from tests import naive
from tests.helpers import MARGIN, assert_codes_equal_reference, residual
from tests.strategies import planted, problems

RULES = ["abs", "positive", "signed"]


@given(
    problems(),
    st.integers(1, 12),
    st.sampled_from([0.0, 0.1, 0.5]),
    st.sampled_from(RULES),
    st.booleans(),
)
def test_mp_equals_reference(problem, k, tol, rule, use_gram):
    X, D = problem
    ref_i, ref_v, margin = naive.encode(naive.mp, X, D, k=k, tol=tol, rule=rule, dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    codes = sparsecode.mp(X, D, k=k, tol=tol or None, selection=rule, gram=use_gram)
    assert codes.values.dtype == X.dtype
    assert codes.indices.dtype == np.int32
    assert codes.indices.shape == (X.shape[0], min(k, D.shape[0]))
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("use_gram", [True, False])
def test_mp_multi_block_equals_single_block(rule, use_gram, rng, small_blocks):
    X, D, _ = planted(rng, 40, 16, 48, 3, noise=0.1)
    one = sparsecode.mp(X[:1], D, k=6, selection=rule, gram=use_gram)
    many = sparsecode.mp(X, D, k=6, selection=rule, gram=use_gram)
    np.testing.assert_array_equal(many.indices[:1], one.indices)
    ref_i, ref_v, _ = naive.encode(naive.mp, X, D, k=6, rule=rule)
    assert_codes_equal_reference(many, ref_i, ref_v, D, X.dtype)


@given(
    problems(max_samples=9),
    st.integers(1, 12),
    st.sampled_from([0.0, 0.3, 0.8]),
    st.sampled_from(RULES),
)
def test_mp_two_lanes_equal_one_signal_at_a_time(problem, k, tol, rule):
    """Large Gram matrices run two signals at a time with prefetching; the codes are the
    same, bit for bit, including signals that stop at different steps (tol, positive)."""
    from sparsecode import _config

    X, D = problem
    # several signals per parallel chunk, so lanes take new signals as theirs end
    X = np.concatenate([X, -0.5 * X[::-1], 2.0 * X, X[::-1] + X[0]] * 4)
    X[::5] = 0.0  # signals with nothing to do are skipped when a lane takes the next one
    one = sparsecode.mp(X, D, k=k, tol=tol or None, selection=rule, gram=True)
    saved = _config.PREFETCH_GRAM_BYTES
    _config.PREFETCH_GRAM_BYTES = -1
    try:
        two = sparsecode.mp(X, D, k=k, tol=tol or None, selection=rule, gram=True)
    finally:
        _config.PREFETCH_GRAM_BYTES = saved
    np.testing.assert_array_equal(two.indices, one.indices)
    np.testing.assert_array_equal(two.values, one.values)


@pytest.mark.parametrize("rule", RULES)
def test_mp_two_lanes_on_a_large_gram_equal_the_reference(rule, rng):
    X, D, _ = planted(rng, 7, 64, 1500, 4, noise=0.05, dtype=np.float64)  # 18 MB Gram
    codes = sparsecode.mp(X, D, k=6, selection=rule, gram=True)
    ref_i, ref_v, margin = naive.encode(naive.mp, X, D, k=6, tol=0.0, rule=rule,
                                        dtype=X.dtype)
    assert margin > MARGIN[X.dtype]
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mp_residual_never_increases_and_energy_drops_by_coef_squared(rule, dtype, rng):
    # unit atoms: ||r_t||^2 = ||r_{t-1}||^2 - c_t^2, and r_t is orthogonal to d_{j_t}
    X, D, _ = planted(rng, 30, 20, 60, 4, noise=0.2, dtype=dtype)
    prev = sparsecode.mp(X, D, k=1, selection=rule)
    prev_r = residual(X, prev, D)
    tol = 1e-3 if dtype == np.float32 else 1e-10
    for t in range(2, 10):
        cur = sparsecode.mp(X, D, k=t, selection=rule)
        r = residual(X, cur, D)
        e_prev, e = (prev_r**2).sum(1), (r**2).sum(1)
        assert np.all(e <= e_prev * (1 + tol) + tol)
        dz = cur.toarray().astype(np.float64) - prev.toarray().astype(np.float64)
        changed = np.abs(dz).sum(1) > 0
        step = dz.sum(1)  # one atom changes per step
        np.testing.assert_allclose(e_prev - e, np.where(changed, step**2, 0.0),
                                   atol=tol * (1 + (X.astype(float) ** 2).sum(1)).max())
        j = np.argmax(np.abs(dz), axis=1)
        ortho = np.einsum("nd,nd->n", r, D[j].astype(np.float64))
        assert np.all(np.abs(ortho[changed]) <= tol * np.linalg.norm(X, axis=1)[changed] * 10)
        prev, prev_r = cur, r


@given(problems(), st.integers(1, 10))
def test_mp_positive_codes_are_non_negative(problem, k):
    X, D = problem
    codes = sparsecode.mp(X, D, k=k, selection="positive")
    assert np.all(codes.values >= 0)
    used = codes.indices >= 0
    assert np.all(codes.values[used] > 0)


def test_mp_positive_stops_when_support_repeats():
    # two orthonormal atoms; x along d0 then residual ~ 0, so a re-selection ends it
    D = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    X = np.array([[1.0, 0.5, 0.2]])
    codes = sparsecode.mp(X, D, k=50, selection="positive")
    ref_i, ref_v, _ = naive.mp(X[0], D, k=50, rule="positive")
    assert codes.l0[0] == len(ref_i) < 50
    np.testing.assert_allclose(codes.values[0, : codes.l0[0]], ref_v)


def test_mp_reselected_atom_sums_coefficients():
    D = np.array([[1.0, 0.0], [np.cos(0.3), np.sin(0.3)]])
    X = np.array([[1.0, 0.2]])
    # coherent atoms: MP zig-zags between them, converging like cos(0.3)^t
    codes = sparsecode.mp(X, D, k=400)
    ref_i, ref_v, _ = naive.mp(X[0], D, k=400)
    assert codes.l0[0] == 2  # both atoms used many times, summed into two entries
    np.testing.assert_allclose(codes.values[0], ref_v)
    np.testing.assert_allclose(codes.decode(D), X, atol=1e-6)


@pytest.mark.parametrize("use_gram", [True, False])
def test_mp_tol_only_runs_until_tol(use_gram, rng):
    X, D, _ = planted(rng, 20, 16, 40, 3)
    codes = sparsecode.mp(X, D, tol=0.01, gram=use_gram)
    r = residual(X, codes, D)
    assert np.all((r**2).sum(1) <= 0.01 * (X**2).sum(1) * (1 + 1e-9))
    # the width is trimmed to the longest code when k was not given
    assert codes.k_max == codes.l0.max()


def test_mp_signed_matches_overcomplete_rule():
    # the signed rule takes the largest signed correlation even when it is negative
    D = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.array([[-3.0, -1.0]])
    codes = sparsecode.mp(X, D, k=1, selection="signed")
    assert codes.indices[0, 0] == 1 and codes.values[0, 0] == -1.0
    codes = sparsecode.mp(X, D, k=1, selection="abs")
    assert codes.indices[0, 0] == 0 and codes.values[0, 0] == -3.0


def test_mp_k_may_exceed_n_atoms():
    D = np.eye(3)[:2] + 0.1
    X = np.ones((2, 3))
    codes = sparsecode.mp(X, D, k=10)
    assert codes.indices.shape == (2, 2)
