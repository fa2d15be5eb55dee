"""The MPSAE estimator: training lowers the loss, planted and hierarchical features are
recovered, inference adapts its sparsity, and the estimator follows the usual conventions."""

import numpy as np
import pytest

import sparsecode
from sparsecode.datasets import make_hierarchical, make_sparse_signals
from sparsecode.metrics import explained_variance, match_atoms, recovery_rate
from sparsecode.sae import MPSAE, paper_recipe


def _planted(n=20000, seed=0):
    return make_sparse_signals(n, 64, 256, 5, noise=0.01, random_state=seed)


def _quick(**kw):
    params = dict(batch_size=256, n_epochs=1, lr=1e-2, warmup_steps=10, progress=False,
                  random_state=0, log_every=5)
    params.update(kw)
    return MPSAE(**params)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("update,solver", [("adam", "mp"), ("adam", "topk"), ("adam", "omp"),
                                           ("mod", "omp"), ("ksvd", "omp"), ("online", "mp")])
def test_loss_falls_over_an_epoch(update, solver):
    X, _, _ = make_sparse_signals(4000, 32, 64, 4, random_state=1)
    classic = update in ("mod", "ksvd")
    m = _quick(n_atoms=64, k=4, solver=solver, update=update, n_epochs=3 if classic else 1,
               batch_size=1000 if classic else 128, warmup_steps=5, lr=2e-2)
    m.fit(X)
    fvu = [h["fvu"] for h in m.history_]
    assert len(fvu) >= 2
    assert fvu[-1] < 0.85 * fvu[0]


# Defaults only (n_atoms, k, solver, update): >= 95% of 256 planted atoms (d = 64,
# 5-sparse, 20k signals, 1% noise) at max |cos| > 0.99, training until converged.
@pytest.mark.parametrize("update,solver", [("adam", "mp"), ("ksvd", "omp"), ("mod", "omp"),
                                           ("online", "omp")])
def test_planted_recovery_with_defaults(update, solver):
    import warnings

    X, D, _ = _planted()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sparsecode.ConvergenceWarning)
        m = MPSAE(256, 5, solver=solver, update=update, random_state=0)
        m.set_params(progress=False).fit(X)
    assert m.stop_reason_ == "converged"
    assert recovery_rate(m.components_, D, 0.99) >= 0.95


def _toy_model(seed, solver="mp"):
    # The paper's recipe (one call): batch 200, Adam (0.5, 0.9375) at 3e-2, clip 1, 100
    # warmup steps, 20% cooldown to 0.1x, "positive" MP, random init; 5000 steps, at most 3
    # MP steps (TopK: 2 atoms).
    return paper_recipe(20, 3 if solver == "mp" else 2, solver=solver, progress=False,
                        log_every=1000, random_state=seed)


@pytest.mark.parametrize("correlation", [0.0, 0.1, 0.3])
def test_hierarchical_toy_recovered(correlation):
    # At least 8 of seeds 0-9 recover all 20 features: stop once 8 have, or 3 have not.
    hits = misses = 0
    for seed in range(10):
        X, F, _ = make_hierarchical(5000 * 200, correlation=correlation, random_state=seed)
        m = _toy_model(seed).fit(X)
        _, _, cos = match_atoms(m.components_, F)
        recovered = bool((cos > 0.99).all())
        hits, misses = hits + recovered, misses + (not recovered)
        if hits == 8 or misses == 3:
            break
    assert hits >= 8, f"{hits} of {hits + misses} seeds recovered the toy"


def test_hierarchical_toy_topk_absorbs():
    # The one-step TopK encoder trained the same way does not find the hierarchy.
    X, F, _ = make_hierarchical(5000 * 200, correlation=0.3, random_state=0)
    m = _toy_model(0, solver="topk").fit(X)
    _, _, cos = match_atoms(m.components_, F)
    assert (cos > 0.99).sum() < 20


def test_reproducible_under_random_state():
    X, _, _ = make_sparse_signals(2000, 16, 32, 3, random_state=2)
    a = _quick(n_atoms=32, k=3).fit(X)
    b = _quick(n_atoms=32, k=3).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.bias_, b.bias_)
    c = _quick(n_atoms=32, k=3, random_state=1).fit(X)
    assert not np.array_equal(a.components_, c.components_)


def test_fit_on_batches_equals_partial_fit():
    X, _, _ = make_sparse_signals(1200, 16, 32, 3, random_state=3)
    batches = [X[i:i + 300] for i in range(0, 1200, 300)]
    a = _quick(n_atoms=32, k=3, max_steps=4).fit(iter(batches))
    b = _quick(n_atoms=32, k=3, max_steps=4)
    for xb in batches:
        b.partial_fit(xb)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.n_steps_ == b.n_steps_ == 4
    assert a.n_samples_seen_ == 1200


def test_history_and_callback():
    X, _, _ = make_sparse_signals(2000, 16, 32, 3, random_state=4)
    seen = []
    m = _quick(n_atoms=32, k=3, callback=seen.append, log_every=2).fit(X)
    assert seen == m.history_
    steps = [h["step"] for h in m.history_]
    assert steps[0] == 1 and steps[-1] == m.n_steps_ == 8
    h = m.history_[-1]
    assert h["explained_variance"] == pytest.approx(1 - h["fvu"])
    assert set(h) >= {"loss", "fvu", "l0", "dead_fraction", "residual_norm", "lr"}
    assert 0 < h["l0"] <= 3


# ---------------------------------------------------------------- inference


def test_transform_matches_the_solver_with_unit_atoms(rng):
    X, _, _ = make_sparse_signals(1500, 16, 32, 3, random_state=5)
    m = _quick(n_atoms=32, k=3, unit_atoms=True).fit(X)
    codes = m.transform(X)
    ref = sparsecode.mp(X - m.bias_, m.components_, k=3)
    np.testing.assert_array_equal(codes.indices, ref.indices)
    np.testing.assert_allclose(codes.values, ref.values, rtol=1e-5, atol=1e-6)
    X_hat = m.inverse_transform(codes)
    assert m.score(X) == pytest.approx(explained_variance(X, X_hat), rel=1e-6)
    np.testing.assert_allclose(m.inverse_transform(codes.toarray()), X_hat, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("held_out", ["planted", "toy"])
def test_more_steps_at_inference_lower_the_error(held_out):
    if held_out == "planted":
        X, _, _ = make_sparse_signals(6000, 32, 64, 6, random_state=6)
        m = _quick(n_atoms=64, k=3, n_epochs=2).fit(X[:5000])
    else:
        X, _, _ = make_hierarchical(200 * 1500 + 1000, correlation=0.3, random_state=0)
        m = _toy_model(0)
        m.set_params(k=1, max_steps=1500).fit(X[:-1000])
    test = X[-1000:]

    def err(**kw):
        return 1 - explained_variance(test, m.inverse_transform(m.transform(test, **kw)))

    base = err()
    assert err(k=2 * m.k + 2) < base
    assert err(tol=1e-4) < base
    assert err(solver="omp", k=m.k + 2) < base


# ---------------------------------------------------------------- conventions


def test_get_set_params_and_repr():
    m = MPSAE(16, 3, lr=0.5)
    p = m.get_params()
    assert p["n_atoms"] == 16 and p["lr"] == 0.5 and p["solver"] == "mp"
    assert m.set_params(k=4) is m and m.k == 4
    with pytest.raises(ValueError, match="'kk' is not a parameter of MPSAE"):
        m.set_params(kk=1)
    assert repr(m) == "MPSAE(k=4, lr=0.5, n_atoms=16)"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_atoms=0), "n_atoms must be >= 1"),
        (dict(k=0), "k must be >= 1"),
        (dict(solver="lasso"), "solver must be one of"),
        (dict(update="sgd"), "update must be one of"),
        (dict(selection="max"), "selection must be one of"),
        (dict(schedule="step"), "schedule must be one of"),
        (dict(init="zeros"), "init must be one of"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(forget=1.5), r"forget must be in \(0, 1\]"),
        (dict(solver="omp", k=20), "k must be <= n_atoms"),
        (dict(solver="topk", tol=0.1), "tol applies to the pursuit solvers"),
        (dict(solver="topk", update="ksvd"), "solver='topk' trains with update='adam'"),
        (dict(init=np.ones((3, 4))), r"init must have shape \(n_atoms, n_features\)"),
    ],
)
def test_bad_parameters(kwargs, match, rng):
    params = dict(n_atoms=8, k=2, progress=False)
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MPSAE(**params).fit(rng.standard_normal((50, 6)))


def test_bad_input(rng):
    m = _quick(n_atoms=8, k=2).fit(rng.standard_normal((300, 6)))
    with pytest.raises(ValueError, match="X has 5 features, but MPSAE is expecting 6"):
        m.transform(rng.standard_normal((4, 5)))
    bad = rng.standard_normal((4, 6))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        m.transform(bad)
    with pytest.raises(ValueError, match="codes must refer to n_atoms = 8"):
        m.inverse_transform(sparsecode.SparseCodes(np.zeros((1, 1), np.int32),
                                                   np.ones((1, 1), np.float32), 9))
    with pytest.raises(ValueError, match="not fitted yet"):
        MPSAE(8, 2).transform(bad)


@pytest.mark.parametrize("unit_atoms", [False, True])
def test_resampling_dead_atoms_leaves_the_live_atoms_alone(unit_atoms, rng):
    # data in the first 4 coordinates: atoms 4 and 5 (along coordinates 4 and 5) are dead
    X = np.zeros((64, 6), np.float32)
    X[:, :4] = rng.standard_normal((64, 4))
    # lr so small that the Adam steps are invisible
    model = MPSAE(6, 2, batch_size=64, lr=1e-30, init=np.eye(6, dtype=np.float32),
                  pre_bias=False, dead_window=64, unit_atoms=unit_atoms, warmup_steps=0,
                  progress=False, random_state=0)
    model.start(X)
    if not unit_atoms:
        model.components_[:4] *= 0.8  # free norms away from 1: a rescaling would show
    D0 = model.components_.copy()
    model.partial_fit(X)
    D = model.components_
    assert not np.allclose(D[4:], D0[4:])                  # the dead atoms were replaced
    np.testing.assert_allclose(D[:4], D0[:4], atol=1e-6)  # and nothing else moved
    expected = np.linalg.norm(D0, axis=1).mean() if not unit_atoms else 1.0
    np.testing.assert_allclose(np.linalg.norm(D[4:], axis=1), expected, rtol=1e-5)


@pytest.mark.parametrize("unit_atoms", [False, True])
@pytest.mark.parametrize("kwargs, match", [
    (dict(tol=-0.1), "tol must be in"),
    (dict(tol=1.5), "tol must be in"),
    (dict(k=0), "k must be"),
    (dict(k=3, tol=0.1, solver="topk"), "solver='topk' takes k atoms"),
])
def test_transform_rejects_bad_stopping_rules(unit_atoms, kwargs, match, rng):
    X = rng.standard_normal((50, 6)).astype(np.float32)
    model = MPSAE(8, 2, batch_size=50, unit_atoms=unit_atoms, progress=False,
                  random_state=0).fit(X)
    with pytest.raises(ValueError, match=match):
        model.transform(X, **kwargs)


def test_train_config_is_the_one_place_for_run_length_and_forgetting():
    from sparsecode.sae import TrainConfig

    cfg = TrainConfig.from_params(MPSAE(8, 2, batch_size=100, n_epochs=3).get_params())
    assert cfg.steps_per_epoch(1050) == 11 and cfg.total_steps(11) == 33
    assert cfg.total_steps(11, n_epochs=1) == 11 and cfg.total_steps(None) is None
    capped = TrainConfig.from_params(MPSAE(8, 2, batch_size=100, max_steps=20).get_params())
    assert capped.total_steps(11, n_epochs=5) == 20 and capped.total_steps(None) == 20
    assert cfg.forget_for(1000) == pytest.approx(0.9)
    assert cfg.forget_for(None) == 1.0
    assert cfg.forget_for(50) == 0.0  # a batch holds it all: nothing older to remember
    fixed = TrainConfig.from_params(MPSAE(8, 2, forget=0.5).get_params())
    assert fixed.forget_for(1000) == 0.5
    assert cfg.dead_window_for(7) == max(100, 50 * 8 // 2)
    whole = TrainConfig.from_params(MPSAE(8, 2, batch_size=None).get_params())
    assert whole.batch_rows(300) == 300 and whole.dead_window_for(300) == 300
    with pytest.raises(AttributeError):
        cfg.k = 3  # frozen


def test_fit_iterable_and_array_derive_the_same_run_length(rng):
    X = rng.standard_normal((600, 6)).astype(np.float32)
    a = MPSAE(8, 2, batch_size=100, n_epochs=2, progress=False, random_state=0).fit(X)
    b = MPSAE(8, 2, n_epochs=2, max_steps=50, progress=False, random_state=0)
    b.fit([X[i:i + 100] for i in range(0, 600, 100)])
    # the schedule spans the steps actually taken (12), not max_steps
    assert a.engine_.total_steps == b.engine_.total_steps == a.n_steps_ == b.n_steps_ == 12


def test_training_state_lives_in_the_engine(rng):
    from sparsecode.sae import Engine

    X = rng.standard_normal((300, 6)).astype(np.float32)
    m = MPSAE(8, 2, update="online", batch_size=100, n_epochs=1, progress=False,
              random_state=0).fit(X)
    assert isinstance(m.engine_, Engine)
    assert m.components_ is m.engine_.components and m.n_steps_ == m.engine_.n_steps == 3
    assert m.engine_.forget == pytest.approx(1 - 100 / 300)
    arrays, scalars = m.engine_.state_dict()
    assert {"online_A", "online_B", "dead_counts"} <= set(arrays)
    copy = Engine.restore(m.engine_.config, m.components_, m.bias_, arrays, scalars)
    for a, b in zip(copy.state_dict()[0].values(), arrays.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = MPSAE(8, 2)
    with pytest.raises(sparsecode.sae.NotFittedError):
        fresh.engine_  # noqa: B018
    assert not hasattr(fresh, "components_")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tol=2.0), ValueError, r"tol must be a finite number in \[0.0, 1.0\); got 2.0"),
        (dict(tol=-1.0), ValueError, "tol must be a finite number"),
        (dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be a finite number"),
        (dict(betas=(0.9,)), ValueError, r"betas must be a pair"),
        (dict(lr=float("inf")), ValueError, "lr must be a positive number"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay must be a finite number"),
        (dict(warmup_steps=-1), ValueError, "warmup_steps must be >= 0"),
        (dict(cooldown=1.5), ValueError, "cooldown must be a finite number"),
        (dict(clip_grad=0.0), ValueError, "clip_grad must be a finite number"),
        (dict(dead_window=0), ValueError, "dead_window must be >= 1"),
        (dict(pre_bias="no"), TypeError, "pre_bias must be True or False"),
        (dict(unit_atoms=1), TypeError, "unit_atoms must be True or False"),
    ],
)
def test_every_training_parameter_is_checked_before_any_work(kwargs, error, match, rng):
    X = rng.standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(error, match=match):
        MPSAE(8, 2, progress=False, **kwargs).fit(X)


def test_initialising_from_signals_that_all_equal_their_mean_warns_and_trains(rng):
    row = rng.standard_normal((1, 6)).astype(np.float32)
    m = MPSAE(8, 2, batch_size=1, progress=False, random_state=0)
    with pytest.warns(RuntimeWarning, match="all equal their mean"):
        m.partial_fit(row)  # a first step on one row: centred, it is zero
    assert np.all(np.isfinite(m.components_))
    np.testing.assert_allclose(np.linalg.norm(m.components_, axis=1), 1, rtol=1e-3)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    for s in range(0, 200, 20):
        m.partial_fit(X[s:s + 20])
    assert m.n_steps_ == 11 and np.all(np.isfinite(m.components_))
    same = np.repeat(row, 400, axis=0)
    with pytest.warns(RuntimeWarning, match=r"signal\(s\) to initialise from all equal"):
        same_fit = MPSAE(8, 2, batch_size=100, n_epochs=1, progress=False,
                         random_state=0).fit(same)
    # nothing to learn, nothing to resample from: the run ends without an error
    assert same_fit.n_steps_ == 4 and same_fit.history_[-1]["fvu"] == 0.0


# ---------------------------------------------------------------- divergence


def _training_state(m):
    """Everything a step may change, copied: atoms, pre-bias, optimizer and update state,
    counters and history."""
    arrays, scalars = m.engine_.state_dict()
    # (the learning rate is a setting the caller changed, not state a step moves)
    scalars = {k: v for k, v in scalars.items() if k not in ("seconds", "lr")}
    return (m.components_.copy(), m.bias_.copy(), {k: v.copy() for k, v in arrays.items()},
            scalars, [dict(h) for h in m.history_])


def _assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)
    assert a[3] == b[3] and a[4] == b[4]


def _diverging(rng, **kw):
    """A model after three sane steps (non-trivial moments, counters and history)."""
    X = rng.standard_normal((64, 8)).astype(np.float32)
    m = MPSAE(12, 3, lr=1e-2, batch_size=16, warmup_steps=0, log_every=1, progress=False,
              random_state=0, **kw)
    for s in range(0, 48, 16):
        m.partial_fit(X[s:s + 16])
    return m, X


def test_a_huge_learning_rate_raises_and_keeps_the_initial_state(rng):
    X = rng.standard_normal((64, 8)).astype(np.float32)
    m = MPSAE(12, 3, lr=1e30, batch_size=16, warmup_steps=100, progress=False,
              random_state=0)
    with pytest.raises(sparsecode.sae.TrainingDivergedError) as info:
        m.fit(X)  # the warmup's first rate, 1e28, already moves the atoms out of range
    assert isinstance(info.value, FloatingPointError) and info.value.step == 1
    assert m.n_steps_ == 0 and m.n_samples_seen_ == 0 and m.history_ == []
    assert m.engine_.optimizer.t == 0 and not m.engine_.optimizer.m[0].any()
    # the initial atoms (unit-norm signals) and pre-bias (a mean of signals), untouched
    assert np.all(np.isfinite(m.components_)) and np.all(np.isfinite(m.bias_))
    np.testing.assert_allclose(np.linalg.norm(m.components_, axis=1), 1, rtol=1e-5)
    assert np.all(np.abs(m.bias_) <= np.abs(X).max(axis=0))


@pytest.mark.parametrize("unit_atoms", [False, True])
def test_a_divergence_mid_run_keeps_the_state_before_the_step(unit_atoms, rng):
    m, X = _diverging(rng, unit_atoms=unit_atoms)
    before = _training_state(m)
    m.set_params(lr=1e30)
    with pytest.raises(sparsecode.TrainingDivergedError) as info:
        m.partial_fit(X[48:])
    assert info.value.step == 4
    assert np.all(np.isfinite(m.components_)) and np.all(np.isfinite(m.bias_))
    _assert_same_state(before, _training_state(m))  # atoms, moments, counters, history


def test_the_divergence_message_names_the_step_and_the_learning_rate(rng):
    import pickle

    X = rng.standard_normal((64, 8)).astype(np.float32)
    m = MPSAE(12, 3, lr=1e30, batch_size=16, warmup_steps=100, progress=False,
              random_state=0)
    with pytest.raises(sparsecode.TrainingDivergedError,
                       match=r"at step 1: the updated atoms .*keeps its state from before "
                             r"that step.* lr=1e\+30 \(1e\+28 at this step of the "
                             r"schedule\): try lr=1e\+29 or smaller") as info:
        m.fit(X)
    assert info.value.lr == 1e30
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and (again.step, again.lr) == (1, 1e30)
    # the classic updates have no learning rate: the advice is the data's scale
    big = (rng.standard_normal((40, 6)) * 1e160).astype(np.float64)
    with pytest.raises(sparsecode.TrainingDivergedError,
                       match="update='online' has no learning rate; check the data's scale"):
        MPSAE(8, 2, update="online", dtype="float64", batch_size=20, progress=False,
              random_state=0).fit(big)


@pytest.mark.parametrize("update,solver", [("adam", "mp"), ("adam", "topk"), ("adam", "omp")])
def test_float32_data_too_large_to_square_ends_as_divergence(update, solver, rng):
    X = rng.standard_normal((64, 8)).astype(np.float32) * np.float32(1e30)  # finite
    m = MPSAE(12, 3, update=update, solver=solver, batch_size=16, n_epochs=1, progress=False,
              random_state=0)
    with pytest.raises(sparsecode.TrainingDivergedError,
                       match=r"at step 1: .*products of such numbers overflow float32.*"
                             "rescale them"):
        m.fit(X)
    assert m.n_steps_ == 0 and np.all(np.isfinite(m.components_))
    # the classic updates normalise their atoms and keep their sums in float64: they train
    mod = MPSAE(12, 3, update="mod", solver="omp", batch_size=16, n_epochs=1, progress=False,
                random_state=0).fit(X)
    assert mod.n_steps_ == 4 and np.all(np.isfinite(mod.components_))


def test_training_continues_after_a_divergence_with_a_smaller_learning_rate(rng, tmp_path):
    from sparsecode.io import load_model, save_model

    X = rng.standard_normal((64, 8)).astype(np.float32)
    m = MPSAE(12, 3, lr=1e30, batch_size=16, log_every=1, progress=False, random_state=0)
    with pytest.raises(sparsecode.TrainingDivergedError):
        m.fit(X)
    save_model(m, tmp_path / "m.h5")  # the state before the failed step
    np.testing.assert_array_equal(load_model(tmp_path / "m.h5").components_, m.components_)
    m.set_params(lr=1e-2)
    for s in range(0, 64, 16):
        m.partial_fit(X[s:s + 16])
    assert m.n_steps_ == 4 and m.engine_.config.lr == 1e-2
    assert [h["step"] for h in m.history_] == [1, 2, 3, 4]
    assert np.all(np.isfinite([h["loss"] for h in m.history_]))
    assert np.all(np.isfinite(m.components_))


@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_transform_builds_the_gram_once_per_model(solver, monkeypatch):
    from sparsecode import GramRows, _config

    X, _, _ = make_sparse_signals(400, 16, 48, 3, noise=0.01, random_state=5)
    sae = MPSAE(48, k=3, n_epochs=1, unit_atoms=True, random_state=0).fit(X)
    ref = [sae.transform(X[i:i + 100], solver=solver) for i in range(0, 400, 100)]
    from tests.helpers import spy_gram_rows

    made = spy_gram_rows(monkeypatch)
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 0)  # the whole Gram is over budget
    monkeypatch.setattr(_config, "CACHED_MIN_FEATURES", 1)
    sae._engine.encoder.atoms_changed()
    got = [sae.transform(X[i:i + 100], solver=solver) for i in range(0, 400, 100)]
    assert len(made) == 1 and isinstance(made[0], GramRows)  # one store for four batches
    for codes, want in zip(got, ref, strict=True):
        np.testing.assert_array_equal(codes.indices, want.indices)
        np.testing.assert_allclose(codes.values, want.values, rtol=1e-5, atol=1e-6)
