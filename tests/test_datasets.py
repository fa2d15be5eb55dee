"""sparsecode.datasets.make_hierarchical against the specification of the hierarchical toy."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecode import SparseCodes
from sparsecode.datasets import (
    HIERARCHY_PARENTS,
    HIERARCHY_ROOT_CHILDREN,
    make_hierarchical,
)

LEVELS = [l / 10 for l in range(9)]
GROUPS = [list(HIERARCHY_ROOT_CHILDREN)] + [list(c) for c in HIERARCHY_PARENTS.values()]
EPS_CHILDREN = [0, 0.0895, 0.163, 0.226, 0.282, 0.3335, 0.3825, 0.431, 0.482]
EPS_TOP = [0, 0.3, 0.44, 0.529, 0.594, 0.6467, 0.692, 0.733, 0.7739]


def group_cosines(F, group):
    return [float(F[i] @ F[j]) for i in group for j in group if i < j]


def test_tree_constants():
    assert dict(HIERARCHY_PARENTS) == {0: (1, 2, 3), 4: (5, 6, 7), 8: (9, 10, 11)}
    assert HIERARCHY_ROOT_CHILDREN == (0, 4, 8, 12, 13, 14, 15, 16, 17, 18, 19)
    # the groups partition the 20 features
    assert sorted(sum(GROUPS, [])) == list(range(20))
    with pytest.raises(TypeError):
        HIERARCHY_PARENTS[12] = (13,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_dtypes_and_reconstruction(dtype):
    X, F, codes = make_hierarchical(500, correlation=0.3, dtype=dtype, random_state=0)
    assert X.shape == (500, 20) and X.dtype == dtype
    assert F.shape == (20, 20) and F.dtype == dtype
    assert isinstance(codes, SparseCodes)
    assert codes.shape == (500, 20) and codes.k_max == 2
    assert codes.indices.dtype == np.int32 and codes.values.dtype == dtype
    np.testing.assert_allclose(np.linalg.norm(F.astype(np.float64), axis=1), 1.0, rtol=1e-6)
    # x = z F exactly, no noise: compare with a per-sample loop
    Z = np.zeros((500, 20))
    for i in range(500):
        for j, v in zip(codes.indices[i], codes.values[i], strict=True):
            if j >= 0:
                Z[i, j] += v
    atol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(X, Z @ F.astype(np.float64), atol=atol)


def test_codes_follow_the_tree():
    X, F, codes = make_hierarchical(20_000, random_state=1, dtype=np.float64)
    first, second = codes.indices[:, 0], codes.indices[:, 1]
    assert set(np.unique(first)) == set(HIERARCHY_ROOT_CHILDREN)
    for a, b, v in zip(first, second, codes.values[:, 1], strict=True):
        if b == -1:
            assert v == 0.0
        else:
            assert b in HIERARCHY_PARENTS[a]
    assert set(np.unique(codes.l0)) == {1, 2}
    # L0: 1 + P(parent) * P(child | parent) = 1 + 0.6 * 0.6 = 1.36; sd of the mean ~0.0034
    assert codes.l0.mean() == pytest.approx(1.36, abs=0.02)
    used = codes.indices >= 0
    assert np.all(codes.values[used] != 0)


def test_activation_frequencies():
    n = 40_000
    _, _, codes = make_hierarchical(n, random_state=2)
    first, second = codes.indices[:, 0], codes.indices[:, 1]
    freq = np.bincount(first, minlength=20) / n
    for j in HIERARCHY_ROOT_CHILDREN:
        want = 0.2 if j in HIERARCHY_PARENTS else 0.05
        assert freq[j] == pytest.approx(want, abs=4 * np.sqrt(want * (1 - want) / n))
    for parent, children in HIERARCHY_PARENTS.items():
        sub = second[first == parent]
        for c, want in zip((*children, -1), (0.2, 0.2, 0.2, 0.4), strict=True):
            got = np.mean(sub == c)
            assert got == pytest.approx(want, abs=4 * np.sqrt(want * (1 - want) / sub.size))
    # children occur only below their parent, and a leaf never has a child
    leaves = np.isin(first, list(range(12, 20)))
    assert np.all(second[leaves] == -1)


def test_magnitudes():
    _, _, codes = make_hierarchical(20_000, random_state=3, dtype=np.float64)
    v = codes.values[codes.indices >= 0]
    assert v.mean() == pytest.approx(1.5, abs=0.01)
    assert v.std() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("level", range(9))
def test_within_group_cosines_match_request(level):
    correlation = level / 10
    _, F, _ = make_hierarchical(5, correlation=correlation, dtype=np.float64, random_state=level)
    top = group_cosines(F, GROUPS[0])
    assert len(top) == 55
    np.testing.assert_allclose(top, correlation, atol=0.0015)
    for children in GROUPS[1:]:
        np.testing.assert_allclose(group_cosines(F, children), correlation, atol=0.0015)


@given(seed=st.integers(0, 2**32 - 1), level=st.integers(0, 8))
def test_features_of_different_groups_are_orthogonal(seed, level):
    _, F, _ = make_hierarchical(1, correlation=level / 10, dtype=np.float64, random_state=seed)
    G = F @ F.T
    same = np.zeros((20, 20), dtype=bool)
    for g in GROUPS:
        same[np.ix_(g, g)] = True
    assert np.abs(G[~same]).max() < 1e-12
    # in particular each parent and its children (conditional orthogonality)
    for parent, children in HIERARCHY_PARENTS.items():
        assert np.abs(G[parent, list(children)]).max() < 1e-12


@pytest.mark.parametrize("level", [0, 3, 8])
def test_directions_follow_the_mixing_formula(level):
    seed = 11
    _, F, _ = make_hierarchical(3, correlation=level / 10, dtype=np.float64, random_state=seed)
    Q0 = np.linalg.qr(np.random.default_rng(seed).standard_normal((20, 20)))[0]
    want = np.empty((20, 20))
    for g, eps in zip(GROUPS, [EPS_TOP[level]] + [EPS_CHILDREN[level]] * 3, strict=True):
        for i in g:
            row = (1 - eps) * Q0[i]
            for j in g:
                if j != i:
                    row = row + eps / (len(g) - 1) * Q0[j]
            want[i] = row / np.linalg.norm(row)
    np.testing.assert_allclose(F, want, atol=1e-12)
    if level == 0:
        np.testing.assert_allclose(F @ F.T, np.eye(20), atol=1e-12)


def test_reproducible():
    a = make_hierarchical(50, correlation=0.6, random_state=7)
    b = make_hierarchical(50, correlation=0.6, random_state=np.random.default_rng(7))
    c = make_hierarchical(50, correlation=0.6, random_state=8)
    for x, y in zip(a[:2], b[:2], strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[2].indices, b[2].indices)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_correlation_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"correlation must be in \[0, 1\); got {bad}"):
        make_hierarchical(10, correlation=bad)


@pytest.mark.parametrize("corr", [0.05, 0.2999, 0.35, 0.9, 0.95])
def test_any_correlation_off_the_grid(corr):
    _, F, _ = make_hierarchical(3, correlation=corr, dtype=np.float64, random_state=3)
    for group in GROUPS:
        C = F[list(group)] @ F[list(group)].T
        off = C[~np.eye(len(group), dtype=bool)]
        np.testing.assert_allclose(off, corr, atol=1e-10)


def test_argument_errors():
    with pytest.raises(TypeError, match="correlation must be a number"):
        make_hierarchical(10, correlation="0.3")
    with pytest.raises(TypeError, match="correlation must be a number"):
        make_hierarchical(10, correlation=True)
    with pytest.raises(ValueError, match="n_samples must be >= 1; got 0"):
        make_hierarchical(0)
    with pytest.raises(TypeError, match="n_samples must be a positive integer; got 2.5"):
        make_hierarchical(2.5)
    # grid values written differently are accepted
    make_hierarchical(2, correlation=3 / 10)
    make_hierarchical(2, correlation=np.float32(0.7))
    make_hierarchical(2, correlation=0)
