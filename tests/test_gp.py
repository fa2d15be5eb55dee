import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import sparsecode
from tests import naive
from tests.helpers import MARGIN, assert_codes_equal_reference, residual
from tests.strategies import planted, problems

VARIANTS = ["gp", "acgp"]


@given(problems(), st.integers(1, 10), st.sampled_from([0.0, 0.1]), st.sampled_from(VARIANTS),
       st.booleans(), st.booleans())
def test_gp_equals_reference(problem, k, tol, variant, positive, use_gram):
    X, D = problem
    k = min(k, D.shape[0])
    ref_i, ref_v, margin = naive.encode(naive.gp, X, D, k=k, tol=tol, variant=variant,
                                        positive=positive, dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    codes = sparsecode.gp(X, D, k=k, tol=tol or None, variant=variant, positive=positive,
                          gram=use_gram)
    assert codes.values.dtype == X.dtype
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("use_gram", [True, False])
def test_gp_error_never_increases(variant, positive, use_gram, rng):
    X, D, _ = planted(rng, 40, 24, 64, 5, noise=0.2)
    prev = np.inf
    for k in range(1, 12):
        codes = sparsecode.gp(X, D, k=k, variant=variant, positive=positive, gram=use_gram)
        err = (residual(X, codes, D) ** 2).sum(1)
        assert np.all(err <= prev * (1 + 1e-9) + 1e-12)
        if positive:
            assert np.all(codes.values >= 0)
        prev = err


def test_acgp_matches_omp_on_orthogonal_atoms(rng):
    # with orthonormal atoms every pursuit is exact after k steps
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    X = rng.standard_normal((10, 16))
    for variant in VARIANTS:
        codes = sparsecode.gp(X, Q, k=5, variant=variant)
        ref = sparsecode.omp(X, Q, k=5)
        np.testing.assert_allclose(codes.toarray(), ref.toarray(), atol=1e-10)


def test_acgp_is_closer_to_omp_than_gp(rng):
    X, D, _ = planted(rng, 300, 32, 96, 8, noise=0.05)
    err = {}
    for name, codes in [("gp", sparsecode.gp(X, D, k=8)),
                        ("acgp", sparsecode.gp(X, D, k=8, variant="acgp")),
                        ("omp", sparsecode.omp(X, D, k=8))]:
        err[name] = float((residual(X, codes, D) ** 2).sum())
    assert err["omp"] <= err["acgp"] < err["gp"]


@pytest.mark.parametrize("solver", ["omp", "gp"])
@pytest.mark.parametrize("use_gram", [True, False])
def test_tol_every_signal_meets_tol_or_uses_k_atoms(solver, use_gram, rng):
    X, D, _ = planted(rng, 60, 24, 64, 3, noise=0.1)
    fn = getattr(sparsecode, solver)
    for tol in (0.3, 0.05, 0.001):
        codes = fn(X, D, k=4, tol=tol, gram=use_gram)
        err = (residual(X, codes, D) ** 2).sum(1)
        met = err <= tol * (X**2).sum(1) * (1 + 1e-9)
        assert np.all(met | (codes.l0 == 4))
        if tol == 0.3:
            assert np.any(codes.l0 < 4)  # the tolerance really stopped some signals
