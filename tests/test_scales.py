"""Signals at the edges of their dtype's range are encoded as at unit scale: rows whose
squares would overflow or underflow run scaled by a power of two (exact), and codes
beyond the dtype's range are an error, never empty or infinite codes."""

import warnings

import numpy as np
import pytest

import sparsecode

SOLVERS = ["mp", "omp", "gp"]


def _problem(dtype, n=40, d=12, K=30):
    rng = np.random.default_rng(0)
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return rng.standard_normal((n, d)).astype(dtype), D.astype(dtype)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("dtype,exponent", [(np.float64, 996), (np.float64, -1000),
                                            (np.float32, 120), (np.float32, -120),
                                            (np.float32, 60), (np.float64, 300)])
def test_a_power_of_two_scale_gives_the_same_codes_scaled(solver, gram, dtype, exponent):
    X, D = _problem(dtype)
    solve = getattr(sparsecode, solver)
    ref = solve(X, D, k=5, gram=gram)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = solve(np.ldexp(X, exponent), D, k=5, gram=gram)
    assert np.array_equal(codes.indices, ref.indices)
    np.testing.assert_array_equal(codes.values, np.ldexp(ref.values, exponent))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e300), (np.float64, 1e-300),
                                         (np.float32, 1e37), (np.float32, 1e-37)])
def test_extreme_scales_give_the_unit_scale_codes(solver, dtype, scale):
    X, D = _problem(dtype)
    solve = getattr(sparsecode, solver)
    ref = solve(X, D, k=5)
    Xs = (X.astype(np.float64) * scale).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = solve(Xs, D, k=5)
    assert np.all(np.isfinite(codes.values))
    assert np.array_equal(codes.indices, ref.indices)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(codes.values / scale, ref.values, rtol=tol, atol=tol)


def test_mixed_scales_in_one_call_and_zero_rows():
    X, D = _problem(np.float64)
    scales = np.array([1e-300, 1.0, 1e300, 0.0] * 10)[:, None]
    codes = sparsecode.omp(X * scales, D, k=4)
    ref = sparsecode.omp(X, D, k=4)
    live = scales[:, 0] > 0
    assert np.array_equal(codes.indices[live], ref.indices[live])
    assert np.all(codes.indices[~live] == -1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_coefficients_beyond_the_dtype_are_an_error(solver):
    D = (np.ones((1, 2)) / np.sqrt(2)).astype(np.float32)
    X = np.full((3, 2), 3e38, dtype=np.float32)  # its coefficient is 4.2e38
    with pytest.raises(ValueError, match="exceed the range of float32"):
        getattr(sparsecode, solver)(X, D, k=1)
