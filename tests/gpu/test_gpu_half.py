"""A float16 Gram matrix on the GPU: the kernels read its 16-bit rows as the CPU's do."""

import numpy as np
import pytest

import sparsecode
from sparsecode.gpu import _module
from tests.gpu.compare import to_host
from tests.strategies import planted

cp = pytest.importorskip("cupy")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not sparsecode.gpu.available(), reason="no CUDA device visible to CuPy"),
]

#: The CPU and the GPU run the same arithmetic on the same rows; their initial
#: correlations (two GEMMs) differ by rounding, so coefficients agree to this (relative to
#: each signal's largest) and near-ties may go either way on a few signals.
RTOL = {np.float32: 1e-4, np.float64: 1e-9}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver, kw", [("mp", {}), ("omp", {}), ("omp", {"positive": True}),
                                        ("gp", {})])
def test_float16_gram_on_the_gpu_equals_the_cpu(solver, kw, dtype, monkeypatch):
    X, D, _ = planted(np.random.default_rng(5), 24, 16, 40, 3, noise=0.01, dtype=dtype)
    G16 = sparsecode.gram(D, dtype="float16")
    fn = getattr(sparsecode, solver)
    cpu = fn(X, D, k=3, gram=G16, **kw)
    asked = []
    get = _module.get
    monkeypatch.setattr(_module, "get",
                        lambda kernel, dt, gram_dtype=None: asked.append(gram_dtype)
                        or get(kernel, dt, gram_dtype))
    gpu = to_host(fn(cp.asarray(X), cp.asarray(D), k=3, gram=cp.asarray(G16), **kw))
    assert np.dtype(np.float16) in asked  # the 16-bit kernels ran
    same = np.all(gpu.indices == cpu.indices, axis=1)
    assert same.mean() >= 0.9
    scale = np.abs(cpu.values).max(axis=1, keepdims=True)
    assert np.all(np.abs(gpu.values - cpu.values)[same] <= RTOL[dtype] * scale[same])


def test_float16_gram_on_the_gpu_follows_the_cpus_deferred_kernel(monkeypatch):
    # from LAZY_OMP_MIN_ATOMS atoms and LAZY_OMP_MIN_K steps the CPU's OMP reads the
    # support Gram entries from the 16-bit rows (its deferred-update kernel); so does the GPU
    X, D, _ = planted(np.random.default_rng(7), 8, 64, 1024, 8, noise=0.01, dtype=np.float32)
    G16 = sparsecode.gram(D, dtype="float16")
    cpu = sparsecode.omp(X, D, k=8, gram=G16)
    gpu = to_host(sparsecode.omp(cp.asarray(X), cp.asarray(D), k=8, gram=cp.asarray(G16)))
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    scale = np.abs(cpu.values).max(axis=1, keepdims=True)
    assert np.all(np.abs(gpu.values - cpu.values) <= RTOL[np.float32] * scale)


def test_float16_gram_on_the_gpu_is_checked_like_the_cpus():
    X, D, _ = planted(np.random.default_rng(6), 5, 16, 32, 3, dtype=np.float32)
    G16 = cp.asarray(sparsecode.gram(D, dtype="float16"))
    with pytest.raises(ValueError, match="must have unit norm"):
        sparsecode.mp(cp.asarray(X), cp.asarray(2 * D), k=3, gram=G16)
    assert G16.dtype == np.float16
    on_device = sparsecode.gram(cp.asarray(D), dtype="float16")
    assert on_device.dtype == np.float16 and on_device.shape == (32, 32)
    assert np.abs(on_device.get().astype(np.float32)
                  - np.asarray(sparsecode.gram(D))).max() <= 2.0**-10
