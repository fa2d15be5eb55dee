"""Matching pursuit on the GPU gives the CPU's answers."""

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

RULES = ["abs", "positive", "signed"]
DTYPES = [np.float32, np.float64]


def check_mp(X, D, *, min_fraction=0.5, **kw):
    """Run MP on both backends, compare, return the GPU codes (host)."""
    cpu = sparsecode.mp(X, D, **kw)
    gpu = sparsecode.mp(cp.asarray(X), cp.asarray(D), **kw)
    assert_same_codes(gpu, cpu, X, D, naive.mp, min_fraction=min_fraction,
                      k=kw.get("k") or X.shape[1], tol=kw.get("tol") or 0.0,
                      rule=kw.get("selection", "abs"))
    return to_host(gpu), cpu


@pytest.mark.parametrize("tol", [None, 0.1, 0.5])
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
def test_mp_gpu_equals_cpu(rule, dtype, use_gram, unit, tol):
    X, D = gaussian(1, 24, 16, 40, dtype, unit)
    gpu, cpu = check_mp(X, D, k=8, tol=tol, selection=rule, gram=use_gram)
    if tol == 0.5:
        assert np.any(cpu.l0 < 8)  # the tolerance really stopped some signals


@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("rule", RULES)
def test_mp_gpu_tol_only_trims_width_like_cpu(rule, use_gram):
    X, D, _ = planted(np.random.default_rng(2), 30, 16, 40, 3, noise=0.05)
    gpu, cpu = check_mp(X, D, tol=0.01, selection=rule, gram=use_gram)
    assert gpu.k_max == cpu.k_max == cpu.l0.max()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
def test_mp_gpu_many_launches_and_blocks(rule, dtype, use_gram, shared, small_gpu_blocks,
                                         monkeypatch):
    # 7 signals per launch, 2 thread blocks of 32 threads each: every block encodes
    # several signals from the queue and every thread several of the 100 atoms
    monkeypatch.setattr(_config, "GPU_SHARED_CORRELATIONS", shared)
    X, D, _ = planted(np.random.default_rng(3), 40, 24, 100, 4, noise=0.1, dtype=dtype)
    X[5] = 0.0  # a zero signal gets an empty code
    gpu, cpu = check_mp(X, D, k=12, tol=0.05, selection=rule, gram=use_gram)
    assert gpu.l0[5] == 0


@too_slow_emulated
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
def test_mp_gpu_correlation_row_beyond_48k_of_shared_memory(rule, dtype):
    # a correlation row of 50 kB: the kernel must opt in to large shared memory
    K = 50_000 // np.dtype(dtype).itemsize
    X, D, _ = planted(np.random.default_rng(4), 6, 256, K, 3, dtype=dtype)
    gpu = sparsecode.mp(cp.asarray(X), cp.asarray(D), k=3, selection=rule, gram=True)
    cpu = sparsecode.mp(X, D, k=3, selection=rule, gram=False)  # no 2 x 625 MB on the host
    assert_same_codes(gpu, cpu, X, D, naive.mp, k=3, rule=rule)


def both(X, D, **kw):
    cpu = sparsecode.mp(X, D, **kw)
    return to_host(sparsecode.mp(cp.asarray(X), cp.asarray(D), **kw)), cpu


@pytest.mark.parametrize("use_gram", [True, False])
def test_mp_gpu_reselected_atoms_are_summed(use_gram):
    # coherent atoms: MP zig-zags between them; k > n_atoms
    D = np.array([[1.0, 0.0], [np.cos(0.3), np.sin(0.3)]])
    X = np.array([[1.0, 0.2], [0.3, -1.0]])
    gpu, cpu = both(X, D, k=60, gram=use_gram)
    assert gpu.indices.shape == (2, 2)
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-10)


@pytest.mark.parametrize("use_gram", [True, False])
def test_mp_gpu_positive_stops_when_support_repeats(use_gram):
    D = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    X = np.array([[1.0, 0.5, 0.2], [-1.0, -1.0, 0.0]])  # the second: nothing positive
    gpu, cpu = both(X, D, k=50, selection="positive", gram=use_gram)
    assert 0 < gpu.l0[0] < 50 and gpu.l0[1] == 0
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-10)


@pytest.mark.parametrize("use_gram", [True, False])
@pytest.mark.parametrize("rule", RULES)
def test_mp_gpu_ties_go_to_the_lowest_index(rule, use_gram):
    # duplicated atoms: exactly equal correlations, and both backends take the first copy
    rng = np.random.default_rng(5)
    D = rng.standard_normal((10, 8))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    D = np.vstack([D, D])
    X = rng.standard_normal((12, 8))
    gpu, cpu = both(X, D, k=1, selection=rule, gram=use_gram)
    assert np.all(gpu.indices < 10)
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-12)
    # (later steps are no test of ties: on the Gram path G[j, j] and G[j, j + 10] may
    # differ in the last bit, and which copy MP re-selects changes the code's layout)


def test_mp_backends_and_array_kinds():
    X, D = gaussian(6, 10, 12, 30, np.float32)
    cpu = sparsecode.mp(X, D, k=4)
    # NumPy input forced onto the GPU: NumPy codes back
    host = sparsecode.mp(X, D, k=4, backend="gpu")
    assert isinstance(host.indices, np.ndarray) and isinstance(host.values, np.ndarray)
    np.testing.assert_array_equal(host.indices, cpu.indices)
    # CuPy input forced onto the CPU: CuPy codes back, the CPU's numbers
    dev = sparsecode.mp(cp.asarray(X), cp.asarray(D), k=4, backend="cpu")
    np.testing.assert_array_equal(to_host(dev).values, cpu.values)
    # mixed input runs on the GPU; codes follow X
    mixed = sparsecode.mp(cp.asarray(X), D, k=4)
    np.testing.assert_array_equal(to_host(mixed).indices, cpu.indices)
    # a precomputed Gram on the device, non-contiguous signals
    G = sparsecode.gram(cp.asarray(D))
    Xf = cp.asarray(np.asfortranarray(X))
    again = sparsecode.mp(Xf, cp.asarray(D), k=4, gram=G)
    np.testing.assert_array_equal(to_host(again).indices, cpu.indices)


def test_mp_gpu_codes_methods_match_cpu():
    X, D = gaussian(7, 9, 12, 30, np.float64)
    cpu = sparsecode.mp(X, D, k=5)
    gpu = sparsecode.mp(cp.asarray(X), cp.asarray(D), k=5)
    np.testing.assert_allclose(gpu.toarray().get(), cpu.toarray(), atol=1e-10)
    np.testing.assert_allclose(gpu.decode(cp.asarray(D)).get(), cpu.decode(D), atol=1e-10)
    np.testing.assert_array_equal(gpu.l0.get(), cpu.l0)
    np.testing.assert_allclose(gpu.tocsr().toarray(), cpu.tocsr().toarray(), atol=1e-10)
    np.testing.assert_allclose(np.asarray(gpu), cpu.toarray(), atol=1e-10)


def test_mp_gpu_validates_like_cpu():
    X, D = gaussian(8, 4, 6, 10, np.float64)
    Xn = X.copy()
    Xn[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite.*\(1, 2\)"):
        sparsecode.mp(cp.asarray(Xn), cp.asarray(D), k=2)
    with pytest.raises(ValueError, match=r"zero-norm atoms.*\[3\]"):
        Dz = D.copy()
        Dz[3] = 0.0
        sparsecode.mp(cp.asarray(X), cp.asarray(Dz), k=2)
    with pytest.raises(ValueError, match="gram does not match D"):
        sparsecode.mp(cp.asarray(X), cp.asarray(D), k=2, gram=2 * cp.eye(10))
