import numpy as np
import pytest
import scipy.sparse

import sparsecode

SOLVERS = [sparsecode.mp, sparsecode.omp, sparsecode.gp]


@pytest.fixture
def XD(rng):
    return rng.standard_normal((5, 4)), rng.standard_normal((6, 4))


@pytest.mark.parametrize("fn", SOLVERS)
def test_bad_inputs_name_argument_expected_and_actual(fn, XD):
    X, D = XD
    cases = [
        (dict(X=X[0], D=D, k=2), ValueError, r"X must be 2-D.*reshape\(1, -1\)"),
        (dict(X=X, D=D[:, :3], k=2), ValueError, r"same number of features.*4.*3"),
        (dict(X=np.where(np.eye(5, 4) > 0, np.nan, X), D=D, k=2), ValueError, "X must be finite"),
        (dict(X=X, D=np.where(np.eye(6, 4) > 0, np.inf, D), k=2), ValueError, "D must be finite"),
        (dict(X=X[:0], D=D, k=2), ValueError, "X must not be empty"),
        (dict(X=X, D=np.vstack([D, np.zeros(4)]), k=2), ValueError, r"zero-norm atoms.*\[6\]"),
        (dict(X=X, D=D, k=0), ValueError, "k must be >= 1; got 0"),
        (dict(X=X, D=D, k=2.5), TypeError, r"k must be an integer >= 1; got float 2.5"),
        (dict(X=X, D=D), ValueError, "give k .*tol, or both"),
        (dict(X=X, D=D, tol=1.5), ValueError, r"tol must be in \[0, 1\).*1.5"),
        (dict(X=X.astype(complex), D=D, k=2), ValueError, "Complex data not supported"),
        (dict(X=X.astype(str), D=D, k=2), TypeError, "X must hold real numbers"),
        (dict(X=scipy.sparse.csr_matrix(X), D=D, k=2), TypeError, "sparse input is not supported"),
        (dict(X=X[:, :0], D=D, k=2), ValueError, r"0 feature\(s\) \(shape=\(5, 0\)\)"),
        (dict(X=X, D=D, k=2, gram="yes"), ValueError, "gram must be one of 'auto'"),
        (dict(X=X, D=D, k=2, gram=np.eye(5)), ValueError, r"gram must have shape .*\(6, 6\)"),
        (dict(X=X, D=D, k=2, gram=np.eye(6)), ValueError, "gram does not match D"),
        (dict(X=X, D=D, k=2, backend="tpu"), ValueError, "backend must be one of"),
    ]
    if fn is not sparsecode.mp:
        cases.append((dict(X=X, D=D, k=7), ValueError, "k must be <= n_atoms = 6; got k = 7"))
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn(kwargs.pop("X"), kwargs.pop("D"), **kwargs)


def test_solver_specific_choices(XD):
    X, D = XD
    with pytest.raises(ValueError, match="selection must be one of 'abs', 'positive', 'signed'"):
        sparsecode.mp(X, D, k=2, selection="max")
    with pytest.raises(ValueError, match="variant must be one of 'gp', 'acgp'"):
        sparsecode.gp(X, D, k=2, variant="cg")


def test_dtypes_are_kept_or_promoted(XD):
    X, D = XD
    assert sparsecode.omp(X.astype(np.float32), D.astype(np.float32), k=2).dtype == np.float32
    assert sparsecode.omp(X.astype(np.float16), D.astype(np.float32), k=2).dtype == np.float32
    assert sparsecode.omp(np.round(X * 10).astype(int), D, k=2).dtype == np.float64
    assert sparsecode.omp(X.astype(np.float32), D, k=2).dtype == np.float64


@pytest.mark.parametrize("fn", SOLVERS)
def test_precomputed_gram_is_used_and_gives_the_same_codes(fn, rng):
    X = rng.standard_normal((30, 8))
    D = rng.standard_normal((20, 8))
    G = sparsecode.gram(D)
    a = fn(X, D, k=4, gram=G)
    b = fn(X, D, k=4, gram=False)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-9, atol=1e-9)
    # the Gram really is read: a corrupted off-diagonal changes the result
    Gbad = G.copy()
    Gbad[~np.eye(20, dtype=bool)] *= 0.5
    c = fn(X, D, k=4, gram=Gbad)
    assert not np.allclose(c.toarray(), a.toarray())


def test_check_count_is_one_rule_for_every_count():
    from sparsecode._validation import check_count

    assert check_count(np.int64(3), "n") == 3 and type(check_count(np.int64(3), "n")) is int
    assert check_count(0, "seed", 0) == 0
    for bad in (2.0, True, "3", None):
        with pytest.raises(TypeError, match=r"n must be an integer >= 1; got"):
            check_count(bad, "n")
    with pytest.raises(ValueError, match=r"n must be >= 1; got 0"):
        check_count(0, "n")
    # the estimators, readers and dictionary helpers all use it
    from sparsecode import MPSAE
    from sparsecode.dictionary import DeadAtoms

    with pytest.raises(TypeError, match="batch_size must be an integer >= 1"):
        MPSAE(8, 2, batch_size=2.5).fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match="window must be >= 1"):
        DeadAtoms(4, 0)


@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_tiny_but_representable_atoms_are_normalised_not_rejected(solver, rng):
    X = rng.standard_normal((20, 8)).astype(np.float32)
    D = rng.standard_normal((16, 8)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    solve = getattr(sparsecode, solver)
    ref = solve(X, D, k=3)
    small = solve(X, D * np.float32(1e-30), k=3)  # norms 1e-30: float32 holds them
    np.testing.assert_array_equal(small.indices, ref.indices)
    np.testing.assert_allclose(small.values * np.float32(1e-30), ref.values, rtol=1e-4)
    with pytest.raises(ValueError, match=r"atom\(s\) \[2\] have norm 0"):
        D0 = D.copy()
        D0[2] = 0
        solve(X, D0, k=3)
    with pytest.raises(ValueError, match="too small to normalise in float32"):
        D1 = D.copy()
        D1[5] *= np.float32(1e-40)  # subnormal: 1 / norm overflows float32
        solve(X, D1, k=3)


def test_float64_atoms_whose_squared_norm_underflows_are_too_small_not_zero(rng):
    X = rng.standard_normal((4, 3))
    D = np.eye(3)
    D[1] *= 1e-200
    with pytest.raises(ValueError, match="too small to normalise in float64"):
        sparsecode.omp(X, D, k=1)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_are_found_in_any_chunk(dtype, bad, monkeypatch):
    from sparsecode import _validation

    monkeypatch.setattr(_validation, "FINITE_CHUNK_BYTES", 64)  # chunks of a few rows
    a = np.ones((40, 8), dtype=dtype)
    assert _validation.check_array(a, "X") is a
    a[37, 5] = bad  # in the last chunk
    with pytest.raises(ValueError, match=r"X must be finite; got NaN or inf, first at "
                                         r"index \(37, 5\)"):
        _validation.check_array(a, "X")
    # the largest finite float16 is no inf
    assert _validation.check_array(np.full((3, 3), 65504, np.float16), "X").shape == (3, 3)
