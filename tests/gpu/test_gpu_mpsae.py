"""MP-SAE training on the GPU: the loss, codes and exact gradient of the GPU kernels equal
the CPU's, and training on CuPy arrays follows the CPU's run from the same start."""

import numpy as np
import pytest

import sparsecode
from sparsecode import MPSAE
from sparsecode.dictionary import DeadAtoms
from sparsecode.sae.mpsae import mpsae_grad
from tests.gpu.compare import gaussian, to_host
from tests.strategies import planted

cp = pytest.importorskip("cupy")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not sparsecode.gpu.available(), reason="no CUDA device visible to CuPy"),
]

#: Relative agreement of GPU and CPU gradients: only the order of additions differs.
RTOL = {np.float32: 2e-4, np.float64: 1e-10}


def _grads(X, D, b, **kw):
    cpu = mpsae_grad(X, D, b, **kw)
    gpu = mpsae_grad(cp.asarray(X), cp.asarray(D), cp.asarray(b), **kw)
    return cpu, gpu


def _assert_grad_equal(cpu, gpu, dtype):
    rtol = RTOL[dtype]
    assert type(gpu.grad_D).__module__.startswith("cupy")
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=rtol)
    np.testing.assert_allclose(gpu.residual_norms2.get(), cpu.residual_norms2, rtol=rtol,
                               atol=rtol * cpu.residual_norms2.max())
    scale = np.abs(cpu.grad_D).max()
    np.testing.assert_allclose(gpu.grad_D.get(), cpu.grad_D, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(gpu.grad_b.get(), cpu.grad_b, rtol=rtol,
                               atol=rtol * np.abs(cpu.grad_b).max())
    codes = to_host(gpu.codes)
    np.testing.assert_array_equal(codes.indices, cpu.codes.indices)
    np.testing.assert_allclose(codes.values, cpu.codes.values, rtol=rtol,
                               atol=rtol * np.abs(cpu.codes.values).max())


@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("selection", ["abs", "positive", "signed"])
@pytest.mark.parametrize("encoder", ["mp", "topk"])
def test_mpsae_grad_gpu_equals_cpu(encoder, selection, dtype, unit):
    X, D = gaussian(31, 24, 16, 40, dtype, unit)
    b = (0.1 * np.random.default_rng(32).standard_normal(16)).astype(dtype)
    cpu, gpu = _grads(X, D, b, k=6, selection=selection, encoder=encoder)
    _assert_grad_equal(cpu, gpu, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mpsae_grad_gpu_tol_and_more_steps_than_atoms(dtype):
    # k > n_atoms: MP re-selects atoms (their coefficients summed in the code); tol stops
    X, D, _ = planted(np.random.default_rng(33), 20, 12, 10, 3, noise=0.05, dtype=dtype)
    b = np.zeros(12, dtype=dtype)
    for kw in (dict(k=14), dict(k=14, tol=0.05)):
        cpu, gpu = _grads(X, D, b, **kw)
        _assert_grad_equal(cpu, gpu, dtype)
    assert np.any(cpu.codes.l0 < 10)  # the tolerance stopped some signals


def test_mpsae_grad_gpu_zero_signal_and_numpy_dictionary():
    X, D = gaussian(34, 6, 8, 20, np.float64)
    X[2] = 0.0
    cpu = mpsae_grad(X, D, k=3)
    gpu = mpsae_grad(cp.asarray(X), D, k=3)  # a NumPy dictionary is copied to the device
    _assert_grad_equal(cpu, gpu, np.float64)
    assert to_host(gpu.codes).l0[2] == 0


def test_dead_atom_counts_from_device_codes_equal_host():
    rng = np.random.default_rng(35)
    idx = np.array([rng.permutation(12)[:4] for _ in range(30)], dtype=np.int32)
    idx[rng.random((30, 4)) < 0.3] = -1  # unused slots
    codes = sparsecode.SparseCodes(idx, np.ones((30, 4)), 12)
    host, dev = DeadAtoms(12, 50), DeadAtoms(12, 50)
    for _ in range(2):
        host.update(codes)
        dev.update(sparsecode.SparseCodes(cp.asarray(idx), cp.ones((30, 4)), 12))
    np.testing.assert_array_equal(dev.counts, host.counts)
    np.testing.assert_array_equal(dev.last_used, host.last_used)


def _model(**kw):
    params = dict(n_atoms=24, k=4, batch_size=32, n_epochs=1, lr=3e-3, warmup_steps=2,
                  dtype="float64", random_state=0, progress=False, log_every=1,
                  dead_window=64)
    params.update(kw)
    return MPSAE(**params)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(solver="topk"),
    dict(unit_atoms=True, selection="positive", weight_decay=0.01),
])
def test_one_epoch_on_the_gpu_follows_the_cpu(kw):
    # same initialisation and data order: the atoms, the pre-bias and the logged fvu of the
    # two runs agree (float64; only the order of additions in the gradient differs)
    X, _, _ = planted(np.random.default_rng(36), 256, 16, 40, 3, noise=0.05)
    cpu = _model(**kw).fit(X)
    gpu = _model(**kw).fit(cp.asarray(X))
    assert type(gpu.components_).__module__.startswith("cupy")
    assert gpu.n_steps_ == cpu.n_steps_ == 8
    np.testing.assert_allclose(gpu.components_.get(), cpu.components_, atol=1e-8)
    np.testing.assert_allclose(gpu.bias_.get(), cpu.bias_, atol=1e-8)
    np.testing.assert_allclose([h["fvu"] for h in gpu.history_],
                               [h["fvu"] for h in cpu.history_], rtol=1e-8)
    # the fitted GPU model encodes NumPy and CuPy input alike
    codes = gpu.transform(X[:10])
    assert isinstance(codes.indices, np.ndarray)
    ref = cpu.transform(X[:10])
    np.testing.assert_array_equal(codes.indices, ref.indices)
    np.testing.assert_allclose(gpu.score(cp.asarray(X)), cpu.score(X), rtol=1e-8)


def test_resampling_and_partial_fit_on_the_gpu_follow_the_cpu():
    # a dictionary far larger than the signals need: dead atoms are resampled on the way
    X, _, _ = planted(np.random.default_rng(37), 192, 16, 8, 2, noise=0.01)
    cpu, gpu = _model(n_atoms=32, dead_window=32), _model(n_atoms=32, dead_window=32)
    cpu.start(X, total_steps=6)
    gpu.start(cp.asarray(X), total_steps=6)
    for s in range(0, 192, 32):
        cpu.partial_fit(X[s:s + 32])
        gpu.partial_fit(X[s:s + 32])  # NumPy batches go to the model's device
    assert gpu.engine_.n_checks == cpu.engine_.n_checks > 0
    np.testing.assert_array_equal(gpu.engine_.dead.counts, cpu.engine_.dead.counts)
    np.testing.assert_allclose(gpu.components_.get(), cpu.components_, atol=1e-8)


def test_gpu_model_saves_and_resumes(tmp_path):
    from sparsecode.io import load_model, save_model

    X, _, _ = planted(np.random.default_rng(38), 128, 16, 40, 3, noise=0.05)
    model = _model().fit(cp.asarray(X))
    save_model(model, tmp_path / "m.h5")
    back = load_model(tmp_path / "m.h5")
    assert isinstance(back.components_, np.ndarray)
    np.testing.assert_allclose(back.components_, model.components_.get())
    np.testing.assert_array_equal(back.transform(X[:8]).indices,
                                  model.transform(X[:8]).indices)


def test_classic_updates_on_gpu_data_say_what_to_do():
    X, _, _ = planted(np.random.default_rng(39), 64, 16, 40, 3)
    with pytest.raises(ValueError, match=r"update='adam' with solver='mp' or 'topk'.*X.get"):
        MPSAE(16, 3, update="mod", progress=False).fit(cp.asarray(X))
    with pytest.raises(ValueError, match="solver='omp'"):
        MPSAE(16, 3, solver="omp", progress=False).fit(cp.asarray(X))


def test_transform_on_the_gpu_builds_the_gram_once_per_model(monkeypatch):
    import sparsecode.pursuit._gram as driver

    X, _, _ = planted(np.random.default_rng(39), 400, 16, 40, 3, noise=0.05)
    cpu = _model(unit_atoms=True).fit(X)
    gpu = _model(unit_atoms=True).fit(cp.asarray(X))
    built = []
    gram = driver.gram
    monkeypatch.setattr(driver, "gram", lambda D, *a: built.append(type(D)) or gram(D, *a))
    for i in range(0, 400, 100):
        codes = gpu.transform(cp.asarray(X[i:i + 100]), solver="omp")
        np.testing.assert_array_equal(codes.indices.get(),
                                      cpu.transform(X[i:i + 100], solver="omp").indices)
    assert len(built) == 2  # one device Gram for four batches (and one for the CPU model)
    assert sum(t.__module__.startswith("cupy") for t in built) == 1
