"""``gram="auto"`` on the GPU: the whole Gram matrix within the device's budget, else none."""

import numpy as np
import pytest

import sparsecode
from sparsecode import _config
from sparsecode.gpu import _module
from sparsecode.pursuit import decide_gram
from tests.strategies import planted

cp = pytest.importorskip("cupy")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not sparsecode.gpu.available(), reason="no CUDA device visible to CuPy"),
]


def test_auto_decision_at_the_gpu_budgets_boundaries(monkeypatch):
    D = cp.zeros((1000, 256), dtype=np.float32)
    row = 1000 * 4
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 0)  # the CPU's budget plays no part
    monkeypatch.setattr(_config, "GPU_GRAM_BUDGET_BYTES", 1000 * row)  # exactly the whole G
    assert decide_gram("auto", 125, 8, D) is True  # n k = n_atoms: pays
    assert decide_gram("auto", 124, 8, D) is False  # fits but does not pay
    monkeypatch.setattr(_config, "GPU_GRAM_BUDGET_BYTES", 1000 * row - 1)
    assert decide_gram("auto", 10**6, 8, D) is False  # over budget: no cached rows here
    monkeypatch.setattr(_config, "GPU_GRAM_BUDGET_BYTES", None)
    assert sparsecode.gpu.gram_budget() == cp.cuda.Device().mem_info[1] // 4
    assert decide_gram("auto", 10**6, 8, D) is True
    assert decide_gram("auto", 10**6, 8, np.zeros((1000, 256), np.float32)) == "cached"  # CPU


@pytest.mark.parametrize("budget, kernel", [(None, "mp_gram"), (0, "mp_nogram_step")])
def test_auto_runs_the_path_it_decided(budget, kernel, monkeypatch):
    X, D, _ = planted(np.random.default_rng(8), 40, 16, 32, 3, noise=0.01, dtype=np.float32)
    monkeypatch.setattr(_config, "GPU_GRAM_BUDGET_BYTES", budget)
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 1 << 30 if budget == 0 else 0)
    asked = []
    get = _module.get
    monkeypatch.setattr(_module, "get", lambda name, *a: asked.append(name) or get(name, *a))
    codes = sparsecode.mp(cp.asarray(X), cp.asarray(D), k=3)
    assert kernel in asked and {"mp_gram", "mp_nogram_step"} - {kernel} - set(asked)
    cpu = sparsecode.mp(X, D, k=3)
    assert np.mean(np.all(codes.indices.get() == cpu.indices, axis=1)) >= 0.9
