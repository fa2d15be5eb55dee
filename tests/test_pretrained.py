"""PretrainedSAE: each native encoder against its loop reference, the normalisations and
decoders against SAELens' formulas, pursuits and least-squares refits on the decoder."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsecode
from sparsecode import PretrainedSAE, _config
from sparsecode.metrics import fvu
from tests import naive
from tests.sae_files import random_weights

D_IN, M = 12, 48
ARCH_PARAMS = {
    "relu": (), "topk": ("k",), "jumprelu": ("threshold",), "groupmax": ("k",),
    "gated": ("b_gate", "r_mag", "b_mag"),
}


def make_sae(arch, w, *, k=5, **kw):
    params = {"W_enc": w["W_enc"], "b_enc": w["b_enc"]}
    if arch == "topk":
        params["k"] = k
    elif arch == "groupmax":
        params["k"] = 6
    elif arch == "jumprelu":
        params["threshold"] = w["threshold"]
    elif arch == "gated":
        params.update(b_gate=w["b_gate"], r_mag=w["r_mag"], b_mag=w["b_mag"])
    return PretrainedSAE(w["W_dec"], w["b_dec"], architecture=arch, **params, **kw)


def signals(n=40, d=D_IN, seed=3, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def reference_acts(sae, X):
    """Dense activations by the loop reference, from the model's own parameters."""
    kw = {"k": sae.k, "threshold": sae.threshold, "b_gate": sae.b_gate, "r_mag": sae.r_mag,
          "b_mag": sae.b_mag}
    if sae.rescale_acts_by_decoder_norm:
        kw["scale"] = np.linalg.norm(sae.W_dec.astype(np.float64), axis=1)
    rows = []
    for x in X:
        xn, _ = naive.sae_normalize(x, sae.normalize, sae.norm_scale)
        x_in = xn - sae.b_dec if sae.apply_b_dec_to_input else xn
        rows.append(naive.sae_encode(x_in, sae.W_enc, sae.b_enc, sae.architecture, **kw))
    return np.array(rows)


@pytest.mark.parametrize("arch", list(ARCH_PARAMS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_native_encoder_matches_loop_reference(arch, dtype):
    w = random_weights(D_IN, M, seed=1, dtype=dtype)
    sae = make_sae(arch, w)
    X = signals(dtype=dtype)
    codes = sae.encode(X)
    ref = reference_acts(sae, X)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(codes.toarray(), ref, atol=tol)
    assert codes.l0.tolist() == (ref != 0).sum(axis=1).tolist()
    # stored in the documented order: atom order, or by decreasing value for TopK
    for i in range(len(codes)):
        idx = codes.indices[i, :codes.l0[i]]
        if arch == "topk":
            assert np.all(np.diff(codes.values[i, :codes.l0[i]]) <= 0)
        else:
            assert np.all(np.diff(idx) > 0)


def test_topk_ties_keep_the_lower_atoms():
    # every score equal: the k lowest atoms, in order
    d, m, k = 4, 10, 3
    W_enc = np.zeros((d, m))
    sae = PretrainedSAE(np.eye(m, d), architecture="topk", W_enc=W_enc, b_enc=np.ones(m), k=k)
    codes = sae.encode(np.ones((2, d)))
    assert codes.indices.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_topk_rescaled_by_decoder_norm():
    w = random_weights(D_IN, M, seed=2, dtype=np.float64, unit=False)
    sae = make_sae("topk", w, rescale_acts_by_decoder_norm=True)
    X = signals()
    ref = reference_acts(sae, X)
    np.testing.assert_allclose(sae.encode(X).toarray(), ref, atol=1e-10)
    # SAELens decodes acts / ||W_dec[j]||
    norms = np.linalg.norm(w["W_dec"], axis=1)
    expected = (ref / norms) @ w["W_dec"] + w["b_dec"]
    np.testing.assert_allclose(sae.reconstruct(X), expected, atol=1e-10)


@pytest.mark.parametrize("normalize", ["none", "scale", "constant_norm_rescale",
                                       "layer_norm"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_normalisation_and_decoder_match_saelens_formulas(normalize, apply_b_dec):
    w = random_weights(D_IN, M, seed=4, dtype=np.float64)
    kw = {"norm_scale": 0.37} if normalize == "scale" else {}
    sae = make_sae("jumprelu", w, normalize=normalize, apply_b_dec_to_input=apply_b_dec, **kw)
    X = 5.0 + 3.0 * signals(seed=5)
    ref = reference_acts(sae, X)
    np.testing.assert_allclose(sae.encode(X).toarray(), ref, atol=1e-9)
    expected = []
    for x, a in zip(X, ref, strict=True):
        _, undo = naive.sae_normalize(x, normalize, kw.get("norm_scale"))
        expected.append(undo(a @ w["W_dec"] + w["b_dec"]))
    np.testing.assert_allclose(sae.reconstruct(X), np.array(expected), atol=1e-9)


def test_skip_connection_is_added_to_the_reconstruction():
    w = random_weights(D_IN, M, seed=6, dtype=np.float64)
    W_skip = 0.1 * np.random.default_rng(0).standard_normal((D_IN, D_IN))
    sae = make_sae("topk", w, W_skip=W_skip)
    X = signals(seed=7)
    acts = reference_acts(sae, X)
    np.testing.assert_allclose(sae.reconstruct(X),
                               acts @ w["W_dec"] + w["b_dec"] + X @ W_skip.T, atol=1e-10)
    with pytest.raises(ValueError, match="skip connection"):
        sae.decode(sae.encode(X))


@pytest.mark.parametrize("stop_dup", [True, False])
@pytest.mark.parametrize("thr", [0.0, 0.5])
@pytest.mark.parametrize("gram", [True, False])
def test_matching_pursuit_matches_saelens_reference(stop_dup, thr, gram, monkeypatch):
    from sparsecode import _config

    if not gram:  # the correlations recomputed from the residual at every step
        monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 0)
    w = random_weights(D_IN, M, seed=8, dtype=np.float64, unit=False)
    W = 0.7 * w["W_dec"]
    sae = PretrainedSAE(W, w["b_dec"], architecture="matching_pursuit", max_iterations=6,
                        residual_threshold=thr, stop_on_duplicate_support=stop_dup)
    X = signals(seed=9)
    ref, margins = naive.saelens_mp_encode(X, W, w["b_dec"], 6, thr, stop_dup,
                                           return_margins=True)
    got = sae.encode(X).toarray()
    safe = margins > 1e-7
    assert safe.sum() >= len(X) // 2
    np.testing.assert_allclose(got[safe], ref[safe], atol=1e-9)


@pytest.mark.parametrize("arch", list(ARCH_PARAMS))
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_refit_never_reconstructs_worse_and_is_least_squares(arch, seed):
    w = random_weights(D_IN, M, seed=seed, dtype=np.float64)
    sae = make_sae(arch, w)
    X = signals(seed=seed + 1)
    native = sae.encode(X)
    refit = sae.encode(X, refit=True)
    assert np.array_equal(native.indices, refit.indices)
    T = sae.decoder_target(X)
    err_native = ((T - native.decode(sae.W_dec)) ** 2).sum(axis=1)
    err_refit = ((T - refit.decode(sae.W_dec)) ** 2).sum(axis=1)
    assert np.all(err_refit <= err_native * (1 + 1e-9) + 1e-12)
    for i in range(len(X)):
        s = native.indices[i, :native.l0[i]]
        ref = naive.least_squares_on_support(T[i], w["W_dec"], s)
        if len(s) < D_IN:  # an overdetermined system: the minimiser is unique
            np.testing.assert_allclose(refit.values[i, :len(s)], ref, atol=1e-8)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(2, 5))
def test_omp_at_native_l0_beats_the_native_encoder_on_planted_signals(seed, k):
    """Signals made of k decoder atoms with positive weights: OMP on the decoder at the
    native encoder's L0 reconstructs them better on average."""
    rng = np.random.default_rng(seed)
    d, m = 32, 96
    w = random_weights(d, m, seed=seed, dtype=np.float64)
    sae = PretrainedSAE(w["W_dec"], np.zeros(d), architecture="topk", W_enc=w["W_dec"].T,
                        k=k)
    X = np.zeros((60, d))
    for i in range(len(X)):
        atoms = rng.choice(m, k, replace=False)
        X[i] = rng.uniform(0.5, 2.0, k) @ w["W_dec"][atoms]
    native = sae.encode(X)
    omp = sae.encode(X, solver="omp", k=int(np.ceil(native.l0.mean())))
    err = {name: ((X - sae.decode(c)) ** 2).sum(axis=1) / (X**2).sum(axis=1)
           for name, c in (("native", native), ("omp", omp))}
    assert err["omp"].mean() < err["native"].mean()


@pytest.mark.parametrize("solver", ["omp", "gp", "mp"])
@pytest.mark.parametrize("normalize", ["none", "layer_norm"])
def test_pursuits_encode_the_decoder_target(solver, normalize):
    w = random_weights(D_IN, M, seed=12, dtype=np.float64)
    sae = make_sae("jumprelu", w, normalize=normalize, apply_b_dec_to_input=False)
    X = signals(seed=13)
    codes = sae.encode(X, solver=solver, k=4)
    T = sae.decoder_target(X)
    fn = {"omp": sparsecode.omp, "gp": sparsecode.gp}.get(solver)
    direct = (fn(T, w["W_dec"], k=4, positive=True) if fn else
              sparsecode.mp(T, w["W_dec"], k=4, selection="positive"))
    np.testing.assert_array_equal(codes.indices, direct.indices)
    np.testing.assert_allclose(codes.values, direct.values, atol=1e-12)
    # and the decoder reconstructs from them in the user's units
    for x, c, xh in zip(X, direct.toarray(), sae.reconstruct(X, solver=solver, k=4),
                        strict=True):
        _, undo = naive.sae_normalize(x, normalize)
        np.testing.assert_allclose(xh, undo(c @ w["W_dec"] + w["b_dec"]), atol=1e-9)


def test_pursuit_codes_in_saelens_units_with_rescaled_topk():
    w = random_weights(D_IN, M, seed=14, dtype=np.float64, unit=False)
    sae = make_sae("topk", w, rescale_acts_by_decoder_norm=True)
    X = signals(seed=15)
    codes = sae.encode(X, solver="omp")
    direct = sparsecode.omp(sae.decoder_target(X), w["W_dec"], k=sae.k, positive=True)
    np.testing.assert_allclose(sae.decode(codes), direct.decode(w["W_dec"]) + w["b_dec"],
                               atol=1e-10)


def test_score_is_the_fvu_of_the_reconstruction():
    w = random_weights(D_IN, M, seed=16)
    sae = make_sae("topk", w)
    X = signals(seed=17, dtype=np.float32)
    assert sae.score(X) == pytest.approx(fvu(X, sae.reconstruct(X)))
    assert sae.score(X, solver="omp", k=8) < sae.score(X)


def _all_encoders(w):
    saes = {arch: make_sae(arch, w) for arch in ARCH_PARAMS}
    for gram in (True, False):
        saes[f"mp-gram={gram}"] = PretrainedSAE(
            w["W_dec"], w["b_dec"], architecture="matching_pursuit", max_iterations=5,
            residual_threshold=0.1)
        saes[f"mp-gram={gram}"]._gram = None if gram else False  # the path, fixed
    return saes


def _codes_equal(a, b):
    w = max(a.k_max, b.k_max)
    A, B = np.full((len(a), w), -1), np.full((len(b), w), -1)
    A[:, :a.k_max], B[:, :b.k_max] = a.indices, b.indices
    np.testing.assert_array_equal(A, B)
    np.testing.assert_array_equal(a.toarray(), b.toarray())


@pytest.mark.blas_sensitive
def test_codes_do_not_depend_on_the_split(monkeypatch):
    """Signals split into calls at multiples of the row group, or into blocks, are
    encoded to the same bits as in one call (every score product by fixed row groups)."""
    from sparsecode import _config

    w = random_weights(D_IN, M, seed=18)
    X = signals(n=600, seed=19, dtype=np.float32)
    for sae in _all_encoders(w).values():
        whole = sae.encode(X)
        for lo, hi in ((0, 256), (256, 512), (512, 600)):
            _codes_equal(sae.encode(X[lo:hi]), whole[lo:hi])
        with monkeypatch.context() as patch:
            patch.setattr(_config, "BLOCK_BYTES", 256 * M * 4)  # blocks of one group
            patch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 0)
            _codes_equal(sae.encode(X), whole)
        for solver in ("omp", "mp"):
            full = sae.encode(X, solver=solver, k=4)
            _codes_equal(sae.encode(X[256:512], solver=solver, k=4), full[256:512])


@pytest.mark.parametrize("bad, match", [
    ({"architecture": "softmax"}, "architecture"),
    ({"W_enc": np.zeros((3, 3))}, "W_enc has shape"),
    ({"W_enc": None}, "needs W_enc"),
    ({"architecture": "groupmax", "k": 5}, "dividing"),
    ({"architecture": "topk", "k": None}, "needs k"),
    ({"architecture": "jumprelu", "threshold": None}, "needs threshold"),
    ({"b_dec": np.zeros(3)}, "b_dec has shape"),
    ({"b_enc": np.full(M, np.nan)}, "NaN"),
    ({"normalize": "scale"}, "norm_scale"),
    ({"architecture": "gated"}, "b_gate is required"),
    ({"architecture": "matching_pursuit"}, "no W_enc"),
])
def test_bad_parameters_are_refused(bad, match):
    w = random_weights(D_IN, M, seed=20)
    kw = {"W_dec": w["W_dec"], "b_dec": w["b_dec"], "W_enc": w["W_enc"],
          "architecture": "topk", "k": 4}
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        PretrainedSAE(**kw)


def test_bad_signals_and_options_are_refused():
    w = random_weights(D_IN, M, seed=21)
    sae = make_sae("relu", w)
    with pytest.raises(ValueError, match="features per row"):
        sae.encode(np.zeros((3, D_IN + 1)))
    with pytest.raises(ValueError, match="NaN"):
        sae.encode(np.full((3, D_IN), np.nan))
    with pytest.raises(ValueError, match="k is needed"):
        sae.encode(signals(), solver="omp")
    with pytest.raises(ValueError, match="k applies to the pursuits"):
        sae.encode(signals(), k=3)
    with pytest.raises(ValueError, match="solver"):
        sae.encode(signals(), solver="lasso", k=3)
    ln = make_sae("relu", w, normalize="layer_norm")
    with pytest.raises(ValueError, match="normalises each row"):
        ln.decode(ln.encode(signals()))


def test_compare_encoders_table():
    from sparsecode.pretrained import compare_encoders

    w = random_weights(D_IN, M, seed=22)
    sae = make_sae("jumprelu", w)
    X = signals(n=60, seed=23, dtype=np.float32)
    rows = compare_encoders(sae, X, solvers=("omp", "mp"))
    assert [r["encoder"] for r in rows] == ["native", "native+refit", "omp", "mp"]
    native = sae.encode(X)
    k = max(1, int(np.rint(native.l0.mean())))
    assert rows[0]["fvu"] == pytest.approx(sae.score(X))
    assert rows[0]["l0"] == pytest.approx(native.l0.mean())
    assert rows[1]["fvu"] == pytest.approx(sae.score(X, refit=True))
    assert rows[1]["fvu"] <= rows[0]["fvu"]
    assert rows[2]["k"] == k and rows[2]["fvu"] == pytest.approx(
        sae.score(X, solver="omp", k=k))
    from sparsecode.metrics import dead_fraction

    assert rows[0]["dead_fraction"] == dead_fraction(native, M)
    text = str(rows)
    assert text.splitlines()[0].split() == ["encoder", "k", "l0", "fvu", "dead_fraction",
                                            "seconds"]
    assert len(text.splitlines()) == 6


def test_the_decoder_gram_is_built_once_per_model(monkeypatch):
    w = random_weights(D_IN, M, seed=24)
    sae = make_sae("topk", w)
    fresh = make_sae("topk", w)
    calls = []
    real = sparsecode.gram
    monkeypatch.setattr(sparsecode, "gram", lambda D: calls.append(1) or real(D))
    batches = [signals(n=30, seed=s, dtype=np.float32) for s in range(4)]
    got = [sae.encode(X, solver="omp") for X in batches]
    assert len(calls) == 1
    for X, codes in zip(batches, got, strict=True):
        direct = sparsecode.omp(fresh.decoder_target(X), w["W_dec"], k=fresh.k,
                                positive=True, gram=True)
        np.testing.assert_array_equal(codes.indices, direct.indices)
        np.testing.assert_allclose(codes.values, direct.values, rtol=1e-6, atol=1e-7)


def test_over_budget_the_pursuits_keep_one_store_of_gram_rows(monkeypatch):
    w = random_weights(D_IN, M, seed=25)
    sae = make_sae("topk", w)
    whole = make_sae("topk", w)
    monkeypatch.setattr(_config, "CACHED_MIN_FEATURES", 1)
    batches = [signals(n=30, seed=s, dtype=np.float32) for s in range(3)]
    expected = [whole.encode(X, solver="omp") for X in batches]  # the whole Gram
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 0)  # now over budget
    got = [sae.encode(X, solver="omp") for X in batches]
    store = sae._gram_rows
    assert isinstance(store, sparsecode.GramRows) and store.rows_computed > 0
    computed = store.rows_computed
    again = sae.encode(batches[0], solver="omp")  # its rows are in the store
    assert sae._gram_rows is store and store.rows_computed == computed
    for codes, ref in zip(got + [again], expected + expected[:1], strict=True):
        np.testing.assert_array_equal(codes.indices, ref.indices)
        np.testing.assert_allclose(codes.values, ref.values, rtol=1e-5, atol=1e-6)
