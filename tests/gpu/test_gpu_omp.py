"""Batch-OMP on the GPU gives the CPU's answers."""

import warnings

import numpy as np
import pytest

import sparsecode
from sparsecode import _config
from tests import naive
from tests.gpu.compare import assert_same_codes, gaussian, to_host
from tests.strategies import planted

cp = pytest.importorskip("cupy")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not sparsecode.gpu.available(), reason="no CUDA device visible to CuPy"),
]
#: tests/gpu/emulator runs the kernels on CPU threads: skip what is too slow there
too_slow_emulated = pytest.mark.skipif(getattr(cp, "EMULATED", False),
                                       reason="too slow on the CPU emulator")

DTYPES = [np.float32, np.float64]


def check_omp(X, D, *, min_fraction=0.5, **kw):
    """Run OMP on both backends, compare, return the codes (host)."""
    cpu = sparsecode.omp(X, D, **kw)
    gpu = sparsecode.omp(cp.asarray(X), cp.asarray(D), **kw)
    k = kw.get("k") or min(D.shape)
    assert_same_codes(gpu, cpu, X, D, naive.omp, min_fraction=min_fraction, k=k,
                      tol=kw.get("tol") or 0.0, positive=kw.get("positive", False))
    return to_host(gpu), cpu


@pytest.mark.parametrize("tol", [None, 0.1, 0.4])
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("positive", [False, True])
def test_omp_gpu_equals_cpu(positive, dtype, use_gram, unit, tol):
    X, D = gaussian(21, 24, 16, 40, dtype, unit)
    gpu, cpu = check_omp(X, D, k=6, tol=tol, positive=positive, gram=use_gram)
    if positive:
        assert np.all(gpu.values[gpu.indices >= 0] > 0)
    if tol == 0.4:
        assert np.any(cpu.l0 < 6)  # the tolerance really stopped some signals


@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("positive", [False, True])
def test_omp_gpu_supports_larger_than_a_warp(positive, use_gram):
    # k = 40 > 32: the Cholesky sweeps and the solve give each lane several entries
    X, D, _ = planted(np.random.default_rng(22), 12, 64, 100, 30, noise=0.01)
    gpu, _ = check_omp(X, D, k=40, positive=positive, gram=use_gram)
    # the residual is orthogonal to every selected atom (least squares on the support)
    if not positive:
        R = X - gpu.decode(D)
        for i in range(X.shape[0]):
            sel = gpu.indices[i, : gpu.l0[i]]
            assert np.abs(D[sel] @ R[i]).max() <= 1e-8 * np.linalg.norm(X[i])


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_gpu_tol_only_like_cpu(use_gram):
    X, D, _ = planted(np.random.default_rng(23), 20, 16, 40, 3, noise=0.05)
    gpu, cpu = check_omp(X, D, tol=0.02, gram=use_gram)
    assert gpu.k_max == cpu.k_max


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("positive", [False, True])
def test_omp_gpu_many_launches_and_blocks(positive, dtype, use_gram, shared, small_gpu_blocks,
                                          monkeypatch):
    monkeypatch.setattr(_config, "GPU_SHARED_CORRELATIONS", shared)
    X, D, _ = planted(np.random.default_rng(24), 40, 24, 100, 4, noise=0.1, dtype=dtype)
    X[3] = 0.0
    gpu, _ = check_omp(X, D, k=8, tol=0.05, positive=positive, gram=use_gram)
    assert gpu.l0[3] == 0


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_gpu_exact_recovery_and_least_squares(use_gram):
    # k-sparse signals of an incoherent dictionary are recovered exactly; with
    # k = n_features OMP is least squares
    X, D, supports = planted(np.random.default_rng(25), 16, 32, 48, 3)
    gpu = to_host(sparsecode.omp(cp.asarray(X), cp.asarray(D), k=3, gram=use_gram))
    for i in range(X.shape[0]):
        assert set(gpu.indices[i].tolist()) == set(supports[i].tolist())
    np.testing.assert_allclose(gpu.decode(D), X, atol=1e-9)
    rng = np.random.default_rng(26)
    Dsq = rng.standard_normal((8, 8))
    Xsq = rng.standard_normal((5, 8))
    full = to_host(sparsecode.omp(cp.asarray(Xsq), cp.asarray(Dsq), k=8, gram=use_gram))
    np.testing.assert_allclose(full.toarray(), np.linalg.solve(Dsq.T, Xsq.T).T, atol=1e-8)


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_gpu_duplicated_atom_stops_and_warns_like_cpu(use_gram):
    rng = np.random.default_rng(27)
    D = rng.standard_normal((6, 4))
    D[3] = D[1]
    X = np.vstack([D[1:2] * 2.5 + 1e-3, rng.standard_normal((4, 4))])
    with warnings.catch_warnings(record=True) as cpu_warn:
        warnings.simplefilter("always")
        cpu = sparsecode.omp(X, D, k=6, gram=use_gram)
    with warnings.catch_warnings(record=True) as gpu_warn:
        warnings.simplefilter("always")
        gpu = to_host(sparsecode.omp(cp.asarray(X), cp.asarray(D), k=6, gram=use_gram))
    assert [str(w.message) for w in gpu_warn] == [str(w.message) for w in cpu_warn]
    assert all(w.filename == __file__ for w in gpu_warn + cpu_warn)  # the caller's line
    assert np.all(np.isfinite(gpu.values))
    for i in range(len(X)):
        sel = gpu.indices[i, : gpu.l0[i]].tolist()
        assert len(set(sel)) == len(sel) and not {1, 3} <= set(sel)
    np.testing.assert_allclose(gpu.decode(D), X, atol=1e-8)
    np.testing.assert_array_equal(gpu.l0, cpu.l0)


@too_slow_emulated
@pytest.mark.parametrize("dtype", DTYPES)
def test_omp_gpu_correlation_row_beyond_48k_of_shared_memory(dtype):
    K = 50_000 // np.dtype(dtype).itemsize
    X, D, _ = planted(np.random.default_rng(28), 6, 256, K, 3, dtype=dtype)
    gpu = sparsecode.omp(cp.asarray(X), cp.asarray(D), k=3, gram=True)
    cpu = sparsecode.omp(X, D, k=3, gram=False)
    assert_same_codes(gpu, cpu, X, D, naive.omp, k=3)


def test_omp_gpu_numpy_in_numpy_out():
    X, D = gaussian(29, 8, 12, 30, np.float64)
    host = sparsecode.omp(X, D, k=4, backend="gpu")
    assert isinstance(host.indices, np.ndarray)
    cpu = sparsecode.omp(X, D, k=4)
    np.testing.assert_array_equal(host.indices, cpu.indices)
    np.testing.assert_allclose(host.values, cpu.values, atol=1e-10)


@pytest.mark.parametrize("use_gram", [True, False])
def test_omp_gpu_dependent_atom_warning_points_at_the_caller(use_gram):
    # atom 1 is atom 0 up to 1e-7: picked first, atom 0 then is dependent on it
    D = np.array([[1.0, 0.0, 0.0], [1.0, 1e-7, 0.0], [0.0, 0.0, 1.0]])
    X = np.array([[1.0, 0.3, 0.2]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparsecode.omp(cp.asarray(X), cp.asarray(D), k=3, gram=use_gram)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "linearly dependent" in str(caught[0].message)
    assert caught[0].filename == __file__
