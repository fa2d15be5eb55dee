"""The building blocks every pursuit kernel shares, against plain NumPy: the blocked
selection, the four-rows-per-pass update and the incremental triangular solves."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecode import _linalg_numba as LA
from sparsecode import _pursuit_numba as K
from sparsecode._rules import ABS, POSITIVE, SIGNED

RULES = {"abs": ABS, "positive": POSITIVE, "signed": SIGNED}
INT = {np.float32: np.int32, np.float64: np.int64}


def reference_select(c, rule):
    """First index of the largest score (np.argmax returns the first maximum)."""
    score = {"abs": np.abs(c), "positive": c, "signed": c}[rule]
    return int(np.argmax(score))


def select(c, rule):
    it = INT[c.dtype.type]
    return K.select(c.view(it), RULES[rule], it(np.iinfo(it).max))


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3 * K.SELECT_BLOCK + 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    rule=st.sampled_from(list(RULES)),
    n_ties=st.integers(0, 4),
)
def test_select_is_the_first_maximum(seed, n, dtype, rule, n_ties):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(n).astype(dtype)
    # copies of the winner (and of its negation) spread over other blocks
    top = c[reference_select(c, rule)]
    for pos in rng.integers(0, n, size=n_ties):
        c[pos] = top if rng.random() < 0.5 else -top
    j = select(c, rule)
    if rule == "positive" and c.max() <= 0:
        assert c[j] <= 0  # nothing positive: any pick ends the pursuit
    else:
        assert j == reference_select(c, rule)


@pytest.mark.parametrize("rule", list(RULES))
def test_select_ties_across_blocks_go_to_the_lowest_index(rule):
    n = 3 * K.SELECT_BLOCK + 7
    c = np.zeros(n, dtype=np.float32)
    for pos in (n - 1, 2 * K.SELECT_BLOCK + 3, K.SELECT_BLOCK + 1):
        c[pos] = 2.0
    assert select(c, rule) == K.SELECT_BLOCK + 1
    c[K.SELECT_BLOCK - 1] = -2.0  # the same magnitude, earlier, negative
    assert select(c, rule) == (K.SELECT_BLOCK - 1 if rule == "abs" else K.SELECT_BLOCK + 1)


def test_select_all_negative():
    c = -np.arange(1.0, 2 * K.SELECT_BLOCK + 11.0)[::-1].copy()  # -n ... -1: largest last
    assert select(c, "signed") == c.size - 1
    assert select(c, "abs") == 0
    assert c[select(c, "positive")] < 0  # the positive rule stops on any non-positive pick


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 2 * K.CHUNK + 9),
    s=st.integers(0, 11),
    dtype=st.sampled_from([np.float32, np.float64]),
    zeros=st.integers(0, 5),
)
def test_sub_rows_equals_one_row_at_a_time(seed, n, s, dtype, zeros):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((s + 3, n)).astype(dtype)
    I = rng.permutation(s + 3)[:s].astype(np.int32)
    delta = rng.standard_normal(s)
    delta[rng.integers(0, max(s, 1), size=min(zeros, s))] = 0.0
    vec = rng.standard_normal(n).astype(dtype)
    expected = vec.copy()
    for m in range(s):  # the same subtractions in the same order: bitwise equal
        if delta[m] != 0.0:
            expected -= dtype(delta[m]) * S[I[m]]
    K.sub_rows(vec, S, I, delta, s)
    np.testing.assert_array_equal(vec, expected)


@given(seed=st.integers(0, 2**32 - 1), s=st.integers(1, 12))
def test_incremental_forward_and_back_substitution_solve_the_normal_equations(seed, s):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((s, s + 4))
    gram = A @ A.T
    b = rng.standard_normal(s)
    L = np.zeros((s, s))
    fw = np.empty(s)
    for m in range(s):  # grow the factor and the forward solution one row at a time
        assert LA.chol_append(L, m, gram[m, : m + 1].copy(), 1e-12)
        LA.forward_append(L, m + 1, b, fw)
        # the stored diagonal holds the reciprocals of the factor's
        factor = np.tril(L[: m + 1, : m + 1], -1) + np.diag(1.0 / np.diag(L)[: m + 1])
        np.testing.assert_allclose(factor @ factor.T, gram[: m + 1, : m + 1], atol=1e-9)
        np.testing.assert_allclose(factor @ fw[: m + 1], b[: m + 1], atol=1e-9)
    out = np.empty(s)
    LA.back_solve(L, s, fw, out)
    np.testing.assert_allclose(gram @ out, b, rtol=1e-8, atol=1e-8)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 3 * K.SELECT_BLOCK + 5),
    rule=st.sampled_from(list(RULES)),
    n_pend=st.integers(0, 4),
    cap=st.sampled_from([1, 4, 64]),
    adversarial=st.booleans(),
    group=st.sampled_from([5, 128, 10**4]),
)
def test_lazy_pick_is_the_selection_on_the_true_correlations(seed, n, rule, n_pend, cap,
                                                             adversarial, group):
    # the deferred selection sees c = t + D v - w (t the true correlations, w the offsets
    # kept for the pending atoms) and bounds eg[g] on |D_x v| for the atoms of each group
    # of `group` atoms; it must take the atom the exact selection takes on t, with its
    # true value, or give up
    from sparsecode.pursuit._defer_numba import lazy_pick

    rng = np.random.default_rng(seed)
    d = 16
    D = rng.standard_normal((n, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    D = D.astype(np.float32)
    t = rng.standard_normal(n)
    v = 0.1 * rng.standard_normal(d)
    pend = rng.choice(n, size=min(n_pend, n), replace=False).astype(np.int64)
    t[pend] = rng.uniform(-3, 3, pend.size)  # pending atoms anywhere, the top included
    Dv = D.astype(np.float64) @ v
    off = np.setdiff1d(np.arange(n), pend)
    e = float(np.abs(Dv[off]).max()) if off.size else 0.1
    ng = (n + group - 1) // group
    eg = np.full(ng, 1e-3)
    np.maximum.at(eg, off // group, np.abs(Dv[off]))
    if adversarial and off.size >= 2:
        # the atom whose c is most above its truth leads in c, while the one most below
        # it is the true best, by e/2: only a margin of 2e keeps it a candidate
        a, b = off[np.argmax(Dv[off])], off[np.argmin(Dv[off])]
        t[a] = np.abs(t).max() + 4 * e + 1.0
        t[b] = t[a] + (Dv[a] - Dv[b]) / 4
    # a pending atom's offset is d_p . v of when it was taken: its c is off by the
    # change of d_p . v since then, within the bound e like the others'
    pw = Dv[pend] - rng.uniform(-1, 1, pend.size) * eg[pend // group]
    w = np.zeros(n)
    w[pend] = pw
    c = (t + Dv - w).astype(np.float32)
    t = c.astype(np.float64) - Dv + w  # the true values of the float32 c
    it = np.int32
    nb = (n + K.SELECT_BLOCK - 1) // K.SELECT_BLOCK
    j, tj = lazy_pick(c, c.view(it), RULES[rule], it(np.iinfo(it).max), eg * (1 + 1e-9),
                      group, D, v, pend, pw, pend.size, np.empty(nb, dtype=it),
                      np.empty(cap, dtype=np.int64))
    if j < 0:
        return  # too close to call within `cap` evaluations: the caller pays
    score = {"abs": np.abs(t), "positive": t, "signed": t}[rule]
    assert score[j] >= score.max() - 1e-6
    np.testing.assert_allclose(tj, t[j], rtol=1e-6, atol=1e-6)
