"""Gradient pursuit and ACGP on the GPU give the CPU's answers."""

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

VARIANTS = ["gp", "acgp"]
DTYPES = [np.float32, np.float64]


def check_gp(X, D, *, min_fraction=0.5, **kw):
    """Run GP on both backends, compare, return the codes (host)."""
    cpu = sparsecode.gp(X, D, **kw)
    gpu = sparsecode.gp(cp.asarray(X), cp.asarray(D), **kw)
    k = kw.get("k") or min(D.shape)
    assert_same_codes(gpu, cpu, X, D, naive.gp, min_fraction=min_fraction, k=k,
                      tol=kw.get("tol") or 0.0, variant=kw.get("variant", "gp"),
                      positive=kw.get("positive", False))
    return to_host(gpu), cpu


@pytest.mark.parametrize("tol", [None, 0.1, 0.4])
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_equals_cpu(variant, positive, dtype, use_gram, unit, tol):
    X, D = gaussian(11, 24, 16, 40, dtype, unit)
    gpu, cpu = check_gp(X, D, k=6, tol=tol, variant=variant, positive=positive, gram=use_gram)
    if positive:
        assert np.all(gpu.values[gpu.indices >= 0] > 0)
    if tol == 0.4:
        assert np.any(cpu.l0 < 6)  # the tolerance really stopped some signals


@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_supports_larger_than_a_warp(variant, positive, use_gram):
    # k = 40 > 32: every lane of warp 0 handles several support entries
    X, D, _ = planted(np.random.default_rng(12), 12, 64, 100, 30, noise=0.01)
    check_gp(X, D, k=40, variant=variant, positive=positive, gram=use_gram)


@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_tol_only_like_cpu(variant, use_gram):
    X, D, _ = planted(np.random.default_rng(13), 20, 16, 40, 3, noise=0.05)
    gpu, cpu = check_gp(X, D, tol=0.02, variant=variant, gram=use_gram)
    assert gpu.k_max == cpu.k_max


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_many_launches_and_blocks(variant, positive, dtype, use_gram, shared,
                                         small_gpu_blocks, monkeypatch):
    monkeypatch.setattr(_config, "GPU_SHARED_CORRELATIONS", shared)
    X, D, _ = planted(np.random.default_rng(14), 40, 24, 100, 4, noise=0.1, dtype=dtype)
    X[3] = 0.0
    gpu, _ = check_gp(X, D, k=8, tol=0.05, variant=variant, positive=positive, gram=use_gram)
    assert gpu.l0[3] == 0


@too_slow_emulated
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_correlation_row_beyond_48k_of_shared_memory(variant, dtype):
    K = 50_000 // np.dtype(dtype).itemsize
    X, D, _ = planted(np.random.default_rng(15), 6, 256, K, 3, dtype=dtype)
    gpu = sparsecode.gp(cp.asarray(X), cp.asarray(D), k=3, variant=variant, gram=True)
    cpu = sparsecode.gp(X, D, k=3, variant=variant, gram=False)
    assert_same_codes(gpu, cpu, X, D, naive.gp, k=3, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gp_gpu_orthonormal_atoms_are_exact(variant):
    rng = np.random.default_rng(16)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    X = rng.standard_normal((10, 16))
    gpu = sparsecode.gp(cp.asarray(X), cp.asarray(Q), k=5, variant=variant)
    np.testing.assert_allclose(gpu.toarray().get(), sparsecode.omp(X, Q, k=5).toarray(),
                               atol=1e-10)


def test_gp_gpu_numpy_in_numpy_out():
    X, D = gaussian(17, 8, 12, 30, np.float64)
    host = sparsecode.gp(X, D, k=4, variant="acgp", backend="gpu")
    assert isinstance(host.indices, np.ndarray)
    cpu = sparsecode.gp(X, D, k=4, variant="acgp")
    np.testing.assert_array_equal(host.indices, cpu.indices)
    np.testing.assert_allclose(host.values, cpu.values, atol=1e-10)
