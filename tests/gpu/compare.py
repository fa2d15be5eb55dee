"""Comparing GPU codes with CPU codes."""

import numpy as np

from sparsecode import SparseCodes
from tests.helpers import MARGIN, assert_codes_equal_reference


def gaussian(seed, n, d, K, dtype, unit=True):
    """Gaussian signals ``(n, d)`` and atoms ``(K, d)``: unit norm, or norms in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    if not unit:
        D *= rng.uniform(0.5, 2.0, size=(K, 1))
    return rng.standard_normal((n, d)).astype(dtype), D.astype(dtype)


def to_host(codes):
    """CuPy codes as NumPy codes (checked to be CuPy first)."""
    assert type(codes.indices).__module__.startswith("cupy")
    assert type(codes.values).__module__.startswith("cupy")
    return SparseCodes(codes.indices.get(), codes.values.get(), codes.n_atoms)


def assert_same_codes(gpu, cpu, X, D, reference, *, min_fraction=0.5, **ref_kw):
    """The GPU codes equal the CPU codes: same layout, and on every signal whose path
    is well separated (the naive reference's margin, see tests/naive.py) the same atoms
    in the same order (compared by gathered atom vectors), the same number of atoms
    (so the same tol/k stop) and the same coefficients to dtype tolerance.

    Rounding differs between cuBLAS and the CPU BLAS, so near-ties may go either way;
    at least ``min_fraction`` of the signals must be well separated.
    """
    gpu = to_host(gpu)
    X = np.asarray(X)
    assert gpu.indices.dtype == np.int32
    assert gpu.values.dtype == cpu.values.dtype
    assert gpu.indices.shape == cpu.indices.shape
    assert gpu.n_atoms == cpu.n_atoms
    rows = []
    for i in range(X.shape[0]):
        _, _, margin = reference(X[i], D, dtype=cpu.values.dtype, **ref_kw)
        if margin > MARGIN[np.dtype(cpu.values.dtype)]:
            rows.append(i)
    assert len(rows) >= min_fraction * X.shape[0], f"only {len(rows)} separated signals"
    ref_i = [cpu.indices[i, : cpu.l0[i]] for i in rows]
    ref_v = [cpu.values[i, : cpu.l0[i]].astype(np.float64) for i in rows]
    assert_codes_equal_reference(gpu[np.array(rows)], ref_i, ref_v, D, cpu.values.dtype)
    # unused slots: index -1, value 0, on every row
    for i in range(X.shape[0]):
        assert np.all(gpu.indices[i, gpu.l0[i]:] == -1)
        assert np.all(gpu.values[i, gpu.l0[i]:] == 0)
    return rows
