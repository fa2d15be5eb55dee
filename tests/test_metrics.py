"""sparsecode.metrics against loop-level reference computations."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sparsecode import SparseCodes, metrics
from tests.strategies import DTYPES

# ------------------------------------------------------------------------ loop references


def fvu_loop(X, X_hat):
    n, d = X.shape
    mean = [sum(float(X[i, j]) for i in range(n)) / n for j in range(d)]
    num = sum((float(X[i, j]) - float(X_hat[i, j])) ** 2 for i in range(n) for j in range(d))
    den = sum((float(X[i, j]) - mean[j]) ** 2 for i in range(n) for j in range(d))
    return num / den


def cosine(a, b):
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def babel_brute(D, s):
    """Max over atoms j and all s-subsets L not containing j of sum |cos(d_i, d_j)|."""
    n = D.shape[0]
    best = 0.0
    for j in range(n):
        others = [i for i in range(n) if i != j]
        for L in itertools.combinations(others, s):
            best = max(best, sum(abs(cosine(D[i], D[j])) for i in L))
    return best


def best_assignment_brute(C):
    """Largest total of C[i, p(i)] over injective maps p (n_rows <= n_cols)."""
    n_rows, n_cols = C.shape
    return max(
        sum(C[i, p[i]] for i in range(n_rows))
        for p in itertools.permutations(range(n_cols), n_rows)
    )


def random_codes(rng, n, k, n_atoms, zero_frac=0.2):
    """Codes with -1 padding and some explicit zero coefficients on used slots."""
    idx = np.full((n, k), -1, dtype=np.int32)
    val = np.zeros((n, k))
    for i in range(n):
        m = rng.integers(0, k + 1)
        idx[i, :m] = rng.choice(n_atoms, size=m, replace=False)
        val[i, :m] = rng.standard_normal(m) * (rng.random(m) > zero_frac)
    return SparseCodes(idx, val, n_atoms)


def usage_loop(codes):
    counts = [0] * codes.n_atoms
    for row_i, row_v in zip(codes.indices, codes.values, strict=True):
        for j, v in zip(row_i, row_v, strict=True):
            if j >= 0 and v != 0:
                counts[j] += 1
    return counts


def random_orthonormal(rng, n):
    return np.linalg.qr(rng.standard_normal((n, n)))[0]


# ------------------------------------------------------------------------------ fvu


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 8),
    d=st.integers(1, 6),
    dtype=DTYPES,
)
def test_fvu_matches_loop(seed, n, d, dtype):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    X_hat = (X + 0.3 * rng.standard_normal((n, d))).astype(dtype)
    want = fvu_loop(X, X_hat)
    assert metrics.fvu(X, X_hat) == pytest.approx(want, rel=1e-9)
    assert metrics.explained_variance(X, X_hat) == pytest.approx(1.0 - want, rel=1e-9, abs=1e-12)


def test_fvu_invariants(rng):
    X = rng.standard_normal((30, 7)) * 5 + 3
    assert metrics.fvu(X, X) == 0.0
    assert metrics.explained_variance(X, X) == 1.0
    mean = np.broadcast_to(X.mean(axis=0), X.shape)
    assert metrics.fvu(X, mean) == pytest.approx(1.0, rel=1e-12)
    assert metrics.explained_variance(X, mean) == pytest.approx(0.0, abs=1e-12)
    # the mean is per dimension: the overall mean explains less
    assert metrics.fvu(X, np.full_like(X, X.mean())) > 1.0


def test_fvu_accumulates_in_float64_across_blocks(rng, monkeypatch):
    # large offset: float32 accumulation of the denominator would lose most digits
    X = (1000.0 + rng.standard_normal((50, 5))).astype(np.float32)
    X_hat = (X + 0.1 * rng.standard_normal(X.shape)).astype(np.float32)
    want = fvu_loop(X, X_hat)
    assert metrics.fvu(X, X_hat) == pytest.approx(want, rel=1e-9)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)  # 1 row per block
    assert metrics.fvu(X, X_hat) == pytest.approx(want, rel=1e-9)


def test_fvu_does_not_write_inputs(rng):
    X = rng.standard_normal((10, 3))
    X_hat = rng.standard_normal((10, 3))
    X.setflags(write=False)
    X_hat.setflags(write=False)
    before = X.copy()
    metrics.fvu(X, X_hat)
    np.testing.assert_array_equal(X, before)


def test_fvu_errors(rng):
    X = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"X_hat must have the shape of X, \(5, 3\).*\(5, 4\)"):
        metrics.fvu(X, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="X must vary around its mean"):
        metrics.fvu(X[:1], X[:1])
    with pytest.raises(ValueError, match="X must vary"):
        metrics.fvu(np.ones((4, 3)), np.zeros((4, 3)))
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"X_hat must be finite.*\(2, 1\)"):
        metrics.fvu(X, bad)
    with pytest.raises(ValueError, match="X must be 2-D"):
        metrics.fvu(X[0], X[0])
    with pytest.raises(ValueError, match="X must not be empty"):
        metrics.fvu(np.zeros((0, 3)), np.zeros((0, 3)))


# ---------------------------------------------------------------------------- codes


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 10), k=st.integers(0, 4))
def test_l0_usage_dead_match_loops(seed, n, k):
    rng = np.random.default_rng(seed)
    n_atoms = 6
    codes = random_codes(rng, n, k, n_atoms)
    counts = usage_loop(codes)
    used_per_row = [
        sum(1 for j, v in zip(ri, rv, strict=True) if j >= 0 and v != 0)
        for ri, rv in zip(codes.indices, codes.values, strict=True)
    ]
    assert metrics.l0(codes) == pytest.approx(sum(used_per_row) / n)
    usage = metrics.atom_usage(codes)
    assert usage.dtype == np.int64 and usage.shape == (n_atoms,)
    assert usage.tolist() == counts
    dead = sum(1 for c in counts if c == 0)
    assert metrics.dead_fraction(codes) == pytest.approx(dead / n_atoms)
    assert metrics.dead_fraction(codes, n_atoms=10) == pytest.approx((dead + 4) / 10)


def test_l0_ignores_explicit_zero_coefficients():
    idx = np.array([[0, 2, -1], [1, -1, -1], [3, 0, 1]], dtype=np.int32)
    val = np.array([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    codes = SparseCodes(idx, val, 5)
    assert metrics.l0(codes) == pytest.approx(5 / 3)
    assert codes.l0.mean() == pytest.approx(6 / 3)  # the container counts used slots
    assert metrics.atom_usage(codes).tolist() == [2, 2, 0, 1, 0]
    assert metrics.dead_fraction(codes) == pytest.approx(2 / 5)


def test_codes_metrics_errors():
    codes = SparseCodes(np.array([[3, -1]], dtype=np.int32), np.array([[1.0, 0.0]]), 5)
    with pytest.raises(TypeError, match="codes must be a SparseCodes; got ndarray"):
        metrics.l0(codes.toarray())
    with pytest.raises(ValueError, match=r"n_atoms must be >= 4.*got 3"):
        metrics.dead_fraction(codes, n_atoms=3)
    with pytest.raises(TypeError, match="n_atoms must be a positive integer or None"):
        metrics.dead_fraction(codes, n_atoms=4.0)
    out_of_range = SparseCodes(np.array([[7]], dtype=np.int32), np.array([[1.0]]), 5)
    with pytest.raises(ValueError, match=r"codes.indices must be < codes.n_atoms = 5; got .*7"):
        metrics.atom_usage(out_of_range)
    below = SparseCodes(np.array([[-2]], dtype=np.int32), np.array([[1.0]]), 5)
    with pytest.raises(ValueError, match="codes.indices must be >= -1"):
        metrics.atom_usage(below)
    empty = SparseCodes(np.zeros((0, 2), dtype=np.int32), np.zeros((0, 2)), 5)
    with pytest.raises(ValueError, match="codes must hold at least one signal"):
        metrics.l0(empty)


# -------------------------------------------------------------------- dictionaries


@st.composite
def dictionaries(draw, max_atoms=6, max_features=5):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(2, max_atoms))
    d = draw(st.integers(1, max_features))
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, size=(n, 1))
    return D.astype(draw(DTYPES))


@given(D=dictionaries())
def test_mutual_coherence_matches_loop(D):
    n = D.shape[0]
    want = max(abs(cosine(D[i], D[j])) for i in range(n) for j in range(n) if i != j)
    assert metrics.mutual_coherence(D) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_mutual_coherence_blocks_and_invariants(rng, monkeypatch):
    Q = random_orthonormal(rng, 8)
    assert metrics.mutual_coherence(Q * rng.uniform(0.5, 2, (8, 1))) < 1e-12
    D = rng.standard_normal((9, 4))
    want = max(abs(cosine(D[i], D[j])) for i in range(9) for j in range(9) if i != j)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 10)  # one row per block
    assert metrics.mutual_coherence(D) == pytest.approx(want, rel=1e-12)
    D[5] = -3 * D[2]
    assert metrics.mutual_coherence(D) == pytest.approx(1.0, rel=1e-12)


@given(D=dictionaries(), data=st.data())
def test_babel_matches_brute_force_over_subsets(D, data):
    n = D.shape[0]
    s = data.draw(st.integers(1, n - 1))
    want = babel_brute(D, s)
    assert metrics.babel(D, s) == pytest.approx(want, rel=1e-6, abs=1e-9)
    curve = metrics.babel(D)
    assert curve.shape == (n - 1,)
    assert curve[s - 1] == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_babel_curve_properties(rng, monkeypatch):
    D = rng.standard_normal((7, 3))
    curve = metrics.babel(D)
    assert curve[0] == pytest.approx(metrics.mutual_coherence(D), rel=1e-12)
    assert np.all(np.diff(curve) >= 0)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)
    np.testing.assert_allclose(metrics.babel(D), curve, rtol=1e-12)
    assert np.all(metrics.babel(random_orthonormal(rng, 5)) < 1e-12)


def test_dictionary_metric_errors(rng):
    D = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"s must be in \[1, n_atoms - 1\] = \[1, 3\]; got 4"):
        metrics.babel(D, 4)
    with pytest.raises(ValueError, match="got 0"):
        metrics.babel(D, 0)
    with pytest.raises(TypeError, match="s must be an integer or None"):
        metrics.babel(D, 2.0)
    with pytest.raises(ValueError, match=r"D must have at least 2 atoms .*\(1, 3\)"):
        metrics.mutual_coherence(D[:1])
    with pytest.raises(ValueError, match=r"D must have at least 2 atoms"):
        metrics.babel(D[:1])
    Z = D.copy()
    Z[2] = 0
    with pytest.raises(ValueError, match=r"D must not contain zero-norm atoms.*\[2\]"):
        metrics.mutual_coherence(Z)
    with pytest.raises(ValueError, match="D must not contain zero-norm atoms"):
        metrics.babel(Z)
    with pytest.raises(ValueError, match="D must be finite"):
        metrics.mutual_coherence(np.full((3, 2), np.inf))


# ------------------------------------------------------------------- effective rank


def effective_rank_loop(D):
    sv = np.linalg.svd(np.asarray(D, dtype=np.float64), compute_uv=False).tolist()
    total = sum(sv)
    return math.exp(-sum(s / total * math.log(s / total) for s in sv if s > 0))


@given(D=dictionaries(max_atoms=8, max_features=8))
def test_effective_rank_matches_loop(D):
    got = metrics.effective_rank(D)
    assert got == pytest.approx(effective_rank_loop(D), rel=1e-9)
    assert 1.0 - 1e-9 <= got <= min(D.shape) + 1e-9


def test_effective_rank_invariants(rng):
    for n in (1, 2, 5, 12):
        assert metrics.effective_rank(np.eye(n)) == pytest.approx(n, rel=1e-12)
    Q = random_orthonormal(rng, 6)
    assert metrics.effective_rank(3.0 * Q[:4]) == pytest.approx(4.0, rel=1e-9)
    rank1 = np.outer(rng.standard_normal(7), rng.standard_normal(5))
    assert metrics.effective_rank(rank1) == pytest.approx(1.0, rel=1e-6)
    # unequal singular values: strictly between 1 and the rank
    er = metrics.effective_rank(np.diag([1.0, 0.5, 0.1]))
    assert 1.0 < er < 3.0
    assert er == pytest.approx(effective_rank_loop(np.diag([1.0, 0.5, 0.1])), rel=1e-12)
    with pytest.raises(ValueError, match="D must not be all zeros"):
        metrics.effective_rank(np.zeros((3, 3)))


# ------------------------------------------------------------------ atom matching


@given(
    seed=st.integers(0, 2**32 - 1),
    n_hat=st.integers(1, 5),
    n_true=st.integers(1, 5),
    d=st.integers(1, 4),
)
def test_match_atoms_is_optimal_against_all_permutations(seed, n_hat, n_true, d):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n_hat, d))
    B = rng.standard_normal((n_true, d))
    rows, cols, cos = metrics.match_atoms(A, B)
    n_pairs = min(n_hat, n_true)
    assert rows.shape == cols.shape == cos.shape == (n_pairs,)
    assert len(set(rows.tolist())) == len(set(cols.tolist())) == n_pairs
    assert np.all(np.diff(rows) > 0)
    for r, c, v in zip(rows, cols, cos, strict=True):
        assert v == pytest.approx(abs(cosine(A[r], B[c])), rel=1e-9, abs=1e-12)
    C = [[abs(cosine(a, b)) for b in B] for a in A]
    C = np.array(C) if n_hat <= n_true else np.array(C).T
    assert cos.sum() == pytest.approx(best_assignment_brute(C), rel=1e-9, abs=1e-12)


def test_match_atoms_recovers_permutation_signs_and_scale(rng):
    B = rng.standard_normal((4, 6))
    perm = np.array([2, 0, 3, 1])
    A = B[perm] * np.array([[-1.0], [2.0], [0.5], [-3.0]])
    rows, cols, cos = metrics.match_atoms(A, B)
    np.testing.assert_array_equal(rows, np.arange(4))
    np.testing.assert_array_equal(cols, perm)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)


def test_match_atoms_beats_greedy():
    # |cosines| [[0.6, 0.55], [0.55, 0.1]]: greedy (best pair first) takes a0-b0 then a1-b1,
    # total 0.7; the optimum pairs a0-b1 and a1-b0, total 1.1
    B = np.eye(4)[:2]
    A = np.array(
        [
            [0.6, 0.55, math.sqrt(1 - 0.6**2 - 0.55**2), 0.0],
            [0.55, 0.1, 0.0, math.sqrt(1 - 0.55**2 - 0.1**2)],
        ]
    )
    rows, cols, cos = metrics.match_atoms(A, B)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(cols, [1, 0])
    np.testing.assert_allclose(cos, [0.55, 0.55], rtol=1e-12)
    assert cos.sum() == pytest.approx(best_assignment_brute(np.abs(A @ B.T)), rel=1e-12)


@given(
    seed=st.integers(0, 2**32 - 1),
    n_hat=st.integers(1, 5),
    n_true=st.integers(1, 5),
    threshold=st.floats(0.0, 1.0),
)
def test_recovery_rate_matches_loops(seed, n_hat, n_true, threshold):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n_true, 3))
    # some learnt atoms are noisy copies of true atoms, the rest random
    A = rng.standard_normal((n_hat, 3))
    for i in range(min(n_hat, n_true)):
        if rng.random() < 0.6:
            A[i] = B[i] + rng.uniform(0, 0.3) * rng.standard_normal(3)
    C = [[abs(cosine(a, b)) for b in B] for a in A]
    assume(all(abs(v - threshold) > 1e-9 for row in C for v in row))
    want_max = sum(1 for j in range(n_true) if max(C[i][j] for i in range(n_hat)) > threshold)
    assert metrics.recovery_rate(A, B, threshold) == pytest.approx(want_max / n_true)
    rows, cols, cos = metrics.match_atoms(A, B)
    want_h = sum(1 for v in cos if v > threshold)
    got_h = metrics.recovery_rate(A, B, threshold, matching="hungarian")
    assert got_h == pytest.approx(want_h / n_true)
    assert got_h <= metrics.recovery_rate(A, B, threshold) + 1e-12


def test_recovery_rate_max_and_hungarian_differ():
    # two nearly parallel true atoms (cos 0.999): one learnt atom recovers both under "max",
    # only one under "hungarian"
    t = math.acos(0.999)
    B = np.array([[1.0, 0.0, 0.0], [math.cos(t), math.sin(t), 0.0]])
    A = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert metrics.recovery_rate(A, B) == 1.0
    assert metrics.recovery_rate(A, B, matching="hungarian") == 0.5
    assert metrics.recovery_rate(A, B, threshold=0.9995) == 0.5


def test_recovery_rate_blocks(rng, monkeypatch):
    B = rng.standard_normal((6, 4))
    A = np.vstack([B[[4, 1]] + 1e-4, rng.standard_normal((5, 4))])
    want = metrics.recovery_rate(A, B)
    assert want >= 2 / 6
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)
    assert metrics.recovery_rate(A, B) == want


def test_matching_errors(rng):
    A = rng.standard_normal((3, 4))
    B = rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match=r"same number of features.*\(3, 4\).*\(5, 3\)"):
        metrics.match_atoms(A, B[:, :3])
    with pytest.raises(ValueError, match=r"same number of features"):
        metrics.recovery_rate(A, B[:, :3])
    with pytest.raises(ValueError, match="matching must be one of 'max', 'hungarian'; got 'x'"):
        metrics.recovery_rate(A, B, matching="x")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]; got 1.5"):
        metrics.recovery_rate(A, B, threshold=1.5)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        metrics.recovery_rate(A, B, threshold="0.9")
    Z = B.copy()
    Z[1] = 0
    with pytest.raises(ValueError, match=r"D_true must not contain zero-norm atoms.*\[1\]"):
        metrics.match_atoms(A, Z)
    with pytest.raises(ValueError, match=r"D_hat must not contain zero-norm atoms"):
        metrics.recovery_rate(Z, A)
