"""Codes do not depend on how signals are split into calls, nor on the thread count: every
correlation product is computed by fixed row groups (``sparsecode._parallel``).  These
tests are BLAS-sensitive: CI also runs them with OpenBLAS's Haswell kernels, whose
results for a row change with the shape of the GEMM the row is part of."""

import numba
import numpy as np
import pytest

import sparsecode
from sparsecode import _config
from sparsecode._parallel import aligned_rows, block_rows, correlations_by_group, gram_symmetric
from sparsecode.sae import MPSAE

pytestmark = pytest.mark.blas_sensitive

GROUP = 16  # small groups: many of them in small arrays


@pytest.fixture(autouse=True)
def small_groups(monkeypatch):
    monkeypatch.setattr(_config, "ROW_GROUP", GROUP)
    monkeypatch.setattr(_config, "GEMM_COLS", 40)  # several atom blocks too


def _split(n, rng):
    """Cut points of ``n`` rows at random multiples of the group."""
    cuts = sorted(set(rng.integers(1, n // GROUP, size=4) * GROUP))
    return [0, *cuts, n]


def _data(dtype, n=203, d=24, K=96, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))
    return X.astype(dtype), D.astype(dtype), rng


def _in_pieces(encode, X, cuts):
    parts = [encode(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    w = max(p.indices.shape[1] for p in parts)
    pad = [np.pad(p.indices, ((0, 0), (0, w - p.indices.shape[1])), constant_values=-1)
           for p in parts]
    vals = [np.pad(p.values, ((0, 0), (0, w - p.values.shape[1]))) for p in parts]
    return np.concatenate(pad), np.concatenate(vals)


SOLVERS = [
    ("mp", dict(k=6)),
    ("mp", dict(k=9, tol=0.05, selection="positive")),
    ("omp", dict(k=5)),
    ("omp", dict(k=8, tol=0.02, positive=True)),
    ("gp", dict(k=5)),
    ("gp", dict(k=6, variant="acgp")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("solver,options", SOLVERS)
def test_codes_do_not_depend_on_the_split_or_the_threads(solver, options, gram, dtype):
    X, D, rng = _data(dtype)
    solve = getattr(sparsecode, solver)
    whole = solve(X, D, gram=gram, **options)
    idx, val = _in_pieces(lambda Y: solve(Y, D, gram=gram, **options), X, _split(len(X), rng))
    w = whole.indices.shape[1]
    assert np.array_equal(idx[:, :w], whole.indices) and np.all(idx[:, w:] == -1)
    assert np.array_equal(val[:, :w], whole.values)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = solve(X, D, gram=gram, **options)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(one.indices, whole.indices)
    assert np.array_equal(one.values, whole.values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver,options", SOLVERS)
def test_fewer_groups_than_threads_give_the_same_codes(solver, options, dtype):
    # 13 signals: one group, shared by chunks of rows that each multiply it whole
    X, D, _ = _data(dtype, n=13)
    solve = getattr(sparsecode, solver)
    threads = numba.get_num_threads()
    out = []
    for n_threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), threads}):
        try:
            numba.set_num_threads(n_threads)
            out.append(solve(X, D, gram=True, **options))
        finally:
            numba.set_num_threads(threads)
    for codes in out[1:]:
        assert np.array_equal(codes.indices, out[0].indices)
        assert np.array_equal(codes.values, out[0].values)


@pytest.mark.parametrize("solver", ["mp", "topk", "omp"])
@pytest.mark.parametrize("unit", [True, False])
def test_model_codes_do_not_depend_on_the_split(solver, unit):
    X, _, rng = _data(np.float32, n=301)
    model = MPSAE(40, 4, batch_size=100, max_steps=3, unit_atoms=unit, progress=False,
                  random_state=0).fit(X)
    whole = model.transform(X, solver=solver)
    idx, val = _in_pieces(lambda Y: model.transform(Y, solver=solver), X,
                          _split(len(X), rng))
    assert np.array_equal(idx, whole.indices) and np.array_equal(val, whole.values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_correlations_and_gram(dtype):
    X, D, _ = _data(dtype, n=70, K=130)
    C = correlations_by_group(X, D)
    ref = X.astype(np.float64) @ D.T.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, ref, rtol=tol, atol=tol * 10)
    # a row's correlations are the same bits in any call that keeps its group
    assert np.array_equal(correlations_by_group(X[GROUP:3 * GROUP], D), C[GROUP:3 * GROUP])
    G = gram_symmetric(D)
    assert np.array_equal(G, G.T)
    np.testing.assert_allclose(G, D.astype(np.float64) @ D.T.astype(np.float64), rtol=tol,
                               atol=tol * 10)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert np.array_equal(gram_symmetric(D), G)
    finally:
        numba.set_num_threads(threads)


def test_block_sizes_keep_group_bounds():
    assert [aligned_rows(n) for n in (1, 16, 17, 700)] == [16, 16, 32, 704]
    # blocks smaller than a group divide it; larger ones are whole groups
    assert [block_rows(n) for n in (1, 5, 16, 31, 40)] == [1, 4, 16, 16, 32]
    assert all(GROUP % block_rows(n) == 0 for n in range(1, GROUP))


def test_a_block_holds_a_row_group_per_thread(monkeypatch):
    # a budget of one group's correlations: the block still gives every thread a group of
    # its own (with fewer groups than threads, threads would multiply the same group)
    from types import SimpleNamespace

    from sparsecode.pursuit._driver import _rows_per_block

    prob = SimpleNamespace(n_atoms=1000, dtype=np.dtype(np.float32))
    monkeypatch.setattr(_config, "BLOCK_BYTES", GROUP * 1000 * 4)
    threads = numba.get_num_threads()
    assert _rows_per_block(prob) == threads * GROUP
    monkeypatch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 0)
    assert _rows_per_block(prob) == GROUP
    # a budget of 5 groups: as many groups for every thread, within the budget (5 groups
    # on 2 threads ran 3 on one), or one per thread
    monkeypatch.setattr(_config, "BLOCK_BYTES", 5 * GROUP * 1000 * 4)
    monkeypatch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 1)
    assert _rows_per_block(prob) == max(5 // threads, 1) * threads * GROUP
    monkeypatch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 0)  # the budget alone
    assert _rows_per_block(prob) == 5 * GROUP
