"""Without CuPy (or a device) the GPU backend fails with one clear error; runs anywhere."""

import sys

import numpy as np
import pytest

import sparsecode
from sparsecode.gpu import GPUUnavailableError


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError


@pytest.mark.parametrize("solver", [sparsecode.mp, sparsecode.omp, sparsecode.gp])
def test_gpu_backend_without_cupy_names_the_extra(solver, no_cupy, rng):
    X, D = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    with pytest.raises(GPUUnavailableError, match=r'sparsecode\[cuda12\]".*sparsecode\[cuda13\]'):
        solver(X, D, k=2, backend="gpu")
    # an ImportError, as for any missing optional dependency
    with pytest.raises(ImportError, match="CuPy is not installed"):
        solver(X, D, k=2, backend="gpu")
    assert not sparsecode.gpu.available()


def test_cpu_backends_do_not_need_cupy(no_cupy, rng):
    X, D = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    for backend in ("auto", "cpu"):
        codes = sparsecode.mp(X, D, k=2, backend=backend)
        assert isinstance(codes.indices, np.ndarray)


def test_importing_sparsecode_does_not_import_cupy():
    import subprocess

    code = ("import sys, sparsecode, sparsecode.gpu, sparsecode.gpu.mp, sparsecode.gpu.gp, "
            "sparsecode.gpu.omp, sparsecode.gpu.mpsae; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gpu_backend_without_device_says_so(monkeypatch, rng):
    import types

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    X, D = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    with pytest.raises(GPUUnavailableError, match="no CUDA device.*sparsecode\\[cuda12\\]"):
        sparsecode.mp(X, D, k=2, backend="gpu")
    assert not sparsecode.gpu.available()
