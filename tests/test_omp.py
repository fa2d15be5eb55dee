import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import sparsecode
from tests import naive
from tests.helpers import MARGIN, assert_codes_equal_reference, residual
from tests.strategies import planted, problems


@given(problems(), st.integers(1, 10), st.sampled_from([0.0, 0.05, 0.5]), st.booleans(),
       st.booleans())
def test_omp_equals_reference(problem, k, tol, positive, use_gram):
    X, D = problem
    k = min(k, D.shape[0])
    ref_i, ref_v, margin = naive.encode(naive.omp, X, D, k=k, tol=tol, positive=positive,
                                        dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    # keep to well-conditioned supports: tiny pivots make float32 coefficients unstable
    for idx in ref_i:
        if len(idx):
            assume(np.linalg.cond(D[idx].astype(np.float64)) < 30)
    codes = sparsecode.omp(X, D, k=k, tol=tol or None, positive=positive, gram=use_gram)
    assert codes.values.dtype == X.dtype
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_equals_scikit_learn(use_gram, rng):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, D, _ = planted(rng, 50, 32, 64, 5, noise=0.05)
    codes = sparsecode.omp(X, D, k=5, gram=use_gram)
    ref = linear_model.orthogonal_mp(D.T, X.T, n_nonzero_coefs=5).T
    np.testing.assert_allclose(codes.toarray(), ref, atol=1e-10)
    # sklearn's tol is an absolute squared norm; ours is relative to ||x||^2
    tol = 0.05
    codes = sparsecode.omp(X[:1], D, tol=tol, gram=use_gram)
    ref = linear_model.orthogonal_mp(D.T, X[0], tol=tol * float(X[0] @ X[0]))
    np.testing.assert_allclose(codes.toarray()[0], ref, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_residual_orthogonal_to_selected_atoms(dtype, use_gram, rng):
    X, D, _ = planted(rng, 40, 30, 80, 6, noise=0.3, dtype=dtype)
    codes = sparsecode.omp(X, D, k=8, gram=use_gram)
    r = residual(X, codes, D)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for i in range(len(X)):
        sel = codes.indices[i, : codes.l0[i]]
        assert np.abs(D[sel].astype(np.float64) @ r[i]).max() <= tol * np.linalg.norm(X[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_exact_recovery_from_incoherent_dictionary(dtype, use_gram, rng):
    # spikes + Hadamard in d = 64: coherence mu = 1/8, so OMP provably recovers every
    # k-sparse signal with k < (1 + 1/mu) / 2 = 4.5
    import scipy.linalg

    d, k = 64, 4
    D = np.vstack([np.eye(d), scipy.linalg.hadamard(d) / np.sqrt(d)])
    supports = np.array([rng.choice(2 * d, size=k, replace=False) for _ in range(300)])
    coef = rng.uniform(0.5, 2.0, size=(300, k)) * rng.choice([-1.0, 1.0], size=(300, k))
    X = np.einsum("nk,nkd->nd", coef, D[supports]).astype(dtype)
    codes = sparsecode.omp(X, D.astype(dtype), k=k, gram=use_gram)
    got = np.sort(codes.indices, axis=1)
    np.testing.assert_array_equal(got, np.sort(supports, axis=1))


def test_omp_k_equals_n_features_is_least_squares(rng):
    d = 12
    D = rng.standard_normal((d, d))
    X = rng.standard_normal((5, d))
    codes = sparsecode.omp(X, D, k=d)
    lsq = np.linalg.solve(D.T, X.T).T
    np.testing.assert_allclose(codes.toarray(), lsq, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_zero_signal_gives_empty_code(use_gram, rng):
    D = rng.standard_normal((10, 5))
    X = np.zeros((3, 5))
    X[1] = rng.standard_normal(5)
    codes = sparsecode.omp(X, D, k=3, gram=use_gram)
    assert codes.l0.tolist() == [0, 3, 0]
    assert np.all(codes.values[[0, 2]] == 0)


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_duplicated_atom_does_not_crash(use_gram, rng):
    D = rng.standard_normal((6, 4))
    D[3] = D[1]
    X = np.vstack([D[1:2] * 2.5 + 1e-3, rng.standard_normal((4, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a dependent pick may warn
        codes = sparsecode.omp(X, D, k=6, gram=use_gram)
    assert np.all(np.isfinite(codes.values))
    for i in range(len(X)):
        sel = codes.indices[i, : codes.l0[i]]
        assert len(set(sel.tolist())) == len(sel)
        assert not {1, 3} <= set(sel.tolist())  # never both copies
    # four independent atoms span R^4: every signal is reconstructed
    np.testing.assert_allclose(codes.decode(D), X, atol=1e-8)


@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_read_only_and_fortran_inputs_are_never_written(solver, rng):
    X, D, _ = planted(rng, 20, 16, 32, 3)
    Xf, Df = np.asfortranarray(X), np.asfortranarray(D)
    Xf.flags.writeable = False
    Df.flags.writeable = False
    X0, D0 = Xf.copy(), Df.copy()
    fn = getattr(sparsecode, solver)
    for use_gram in (True, False):
        got = fn(Xf, Df, k=3, gram=use_gram)
        want = fn(np.ascontiguousarray(X), np.ascontiguousarray(D), k=3, gram=use_gram)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(Xf, X0)
    np.testing.assert_array_equal(Df, D0)


@given(problems(), st.integers(1, 8))
def test_omp_positive_is_non_negative(problem, k):
    X, D = problem
    k = min(k, D.shape[0])
    codes = sparsecode.omp(X, D, k=k, positive=True)
    assert np.all(codes.values >= 0)
    assert np.all(codes.l0 <= k)


@pytest.mark.parametrize("use_gram", [True, False])
def test_dependent_atom_warning_points_at_the_caller(use_gram):
    # atom 1 is atom 0 up to 1e-7: picked first, atom 0 then is dependent on it
    D = np.array([[1.0, 0.0, 0.0], [1.0, 1e-7, 0.0], [0.0, 0.0, 1.0]])
    X = np.array([[1.0, 0.3, 0.2]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparsecode.omp(X, D, k=3, gram=use_gram)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "linearly dependent" in str(caught[0].message)
    assert caught[0].filename == __file__


@pytest.mark.parametrize("solver", [sparsecode.omp, sparsecode.gp])
def test_positive_must_be_a_bool(solver):
    # a string is truthy: positive="no" would silently run the non-negative solver
    X, D = np.ones((2, 3)), np.eye(3)
    with pytest.raises(TypeError, match="positive must be True or False; got str 'no'"):
        solver(X, D, k=1, positive="no")
    assert solver(X, D, k=1, positive=np.bool_(False)).indices.shape == (2, 1)


@given(problems(), st.integers(1, 10), st.sampled_from([0.0, 0.05]),
       st.sampled_from([1, 2, 64]))
def test_omp_with_deferred_updates_equals_reference(problem, k, tol, candidates):
    # the deferred-update kernel, forced on small problems; few candidates make it pay
    # the deferred changes often (partly, then wholly), many make it defer long
    from unittest import mock

    from sparsecode import _config

    X, D = (a.astype(np.float32) for a in problem)  # one dtype: CI compile time
    k = min(k, D.shape[0])
    ref_i, ref_v, margin = naive.encode(naive.omp, X, D, k=k, tol=tol, dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    for idx in ref_i:
        if len(idx):
            assume(np.linalg.cond(D[idx].astype(np.float64)) < 30)
    with mock.patch.multiple(_config, LAZY_OMP_MIN_ATOMS=1, LAZY_OMP_MIN_K=1,
                             LAZY_OMP_CANDIDATES=candidates):
        codes = sparsecode.omp(X, D, k=k, tol=tol or None, gram=True)
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("candidates", [1, 4, 16, 1000])
def test_omp_deferred_updates_give_the_plain_kernels_codes(candidates, rng, monkeypatch):
    from sparsecode import _config

    X, D, _ = planted(rng, 64, 96, 2048, 24, noise=0.02, dtype=np.float32)
    monkeypatch.setattr(_config, "LAZY_OMP_MIN_ATOMS", 10**9)
    plain = sparsecode.omp(X, D, k=24, gram=True)
    monkeypatch.setattr(_config, "LAZY_OMP_MIN_ATOMS", 1024)
    monkeypatch.setattr(_config, "LAZY_OMP_CANDIDATES", candidates)
    lazy = sparsecode.omp(X, D, k=24, gram=True)
    np.testing.assert_array_equal(lazy.indices, plain.indices)
    np.testing.assert_allclose(lazy.values, plain.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("storage", ["float32", "float64", "float16", "bfloat16"])
def test_block_coherence_bounds_a_loop_over_each_row(storage, rng):
    # the deferred updates' bounds, read from the rows as stored (16-bit rows as their
    # bits): exact, but float64 rows' maxima rounded up to float32
    from sparsecode._halves_numba import STORAGE, narrow, widen
    from sparsecode._pursuit_numba import SELECT_BLOCK
    from sparsecode.pursuit.omp import block_coherence

    K = 2 * SELECT_BLOCK + 20  # a last block of 20 atoms
    G = rng.standard_normal((K, K))
    G = G + G.T
    np.fill_diagonal(G, 9.0)  # the largest entries: never part of a bound
    G[5, 6] = G[6, 5] = -7.5  # a negative largest off-diagonal entry
    if storage in STORAGE:
        rows = narrow(G.astype(np.float32), storage)
        values = widen(rows)
    else:
        rows = values = G.astype(storage)
    mub = block_coherence(rows)
    ref = naive.block_coherence(values, SELECT_BLOCK)
    assert mub.dtype == np.float32 and mub.shape == ref.shape == (K, 3)
    if storage == "float64":  # float32 rounded up
        ref32 = ref.astype(np.float32)
        ref = np.where(ref32 < ref, np.nextafter(ref32, np.float32(np.inf)), ref32)
        assert np.all(mub.astype(np.float64) >= naive.block_coherence(values, SELECT_BLOCK))
    np.testing.assert_array_equal(mub, ref)


def test_block_coherence_is_computed_once_per_store(rng, monkeypatch):
    # a whole Gram's bounds: once for a call's blocks, and kept by the GramRows store
    import importlib

    from sparsecode import _config

    omp_module = importlib.import_module("sparsecode.pursuit.omp")  # not the function
    X, D, _ = planted(rng, 64, 96, 2048, 16, noise=0.02, dtype=np.float32)
    calls = []
    real = omp_module.block_coherence
    monkeypatch.setattr(omp_module, "block_coherence", lambda G: calls.append(1) or real(G))
    monkeypatch.setattr(_config, "LAZY_OMP_MIN_ATOMS", 1024)
    monkeypatch.setattr(_config, "BLOCK_BYTES", 16 * 2048 * 4)  # blocks of 16 signals
    monkeypatch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 0)
    plain = sparsecode.omp(X, D, k=16, gram=True)
    assert len(calls) == 1
    store = sparsecode.GramRows(D)
    first = sparsecode.omp(X, D, k=16, gram=store)
    second = sparsecode.omp(X[::-1], D, k=16, gram=store)
    assert len(calls) == 2
    np.testing.assert_array_equal(store.derived["block_coherence"][0], real(store.rows))
    np.testing.assert_array_equal(first.indices, plain.indices)
    np.testing.assert_array_equal(second.indices[::-1], plain.indices)
