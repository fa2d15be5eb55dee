"""Training that stops when it has learnt: the held-out rule, its caps and warnings, its
state across save and resume, the data's scale, and bad input."""

import math
import warnings

import numpy as np
import pytest

import sparsecode
from sparsecode.cli import main
from sparsecode.datasets import make_sparse_signals
from sparsecode.io import load_model, save_model, write_activations
from sparsecode.metrics import explained_variance
from sparsecode.sae import MPSAE, ConvergenceWarning
from sparsecode.sae.stopping import (
    MAX_VALIDATION_ROWS,
    Stopper,
    check_every,
    held_out_fvu,
    validation_rows,
)


def _data(n=3000, seed=0):
    return make_sparse_signals(n, 16, 32, 3, noise=0.01, random_state=seed)


def _checks(m):
    """(step, held-out FVU) of each check in the history."""
    return [(h["step"], h["validation_fvu"]) for h in m.history_
            if not math.isnan(h["validation_fvu"])]


# ---------------------------------------------------------------- the rule


def test_stopper_counts_checks_without_a_relative_improvement():
    st = Stopper(2, 0.01)
    assert st.update(1.0, 1) and st.best == 1.0
    assert not st.update(0.995, 2)  # 0.5% better: not enough
    assert st.n_bad == 1 and not st.converged and st.best == 1.0
    assert st.update(0.98, 3) and st.n_bad == 0 and st.best_step == 3
    assert not st.update(0.979, 4) and not st.update(1.5, 5)
    assert st.converged and st.n_checks == 5
    again = Stopper(2, 0.01).load_state_dict(st.state_dict())
    assert vars(again) == vars(st)
    with pytest.raises(ValueError, match="held-out FVU is nan"):
        st.update(math.nan, 6)


def test_validation_rows_split_and_cap():
    rng = np.random.default_rng(0)
    train, held = validation_rows(1000, 0.1, rng)
    assert held.size == 100 and train.size == 900
    assert np.array_equal(np.union1d(train, held), np.arange(1000))
    _, held = validation_rows(10 * MAX_VALIDATION_ROWS, 0.5, rng)
    assert held.size == MAX_VALIDATION_ROWS
    assert check_every(10, 4096) == 10 and check_every(10**6, 4096) == (1 << 20) // 4096


def test_fit_converges_on_planted_data_and_says_so():
    X, _, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        m = MPSAE(32, 3, solver="omp", update="ksvd", progress=False, random_state=0).fit(X)
    assert m.stop_reason_ == "converged"
    checks = _checks(m)
    fvus = [f for _, f in checks]
    st = m.engine_.stopper
    assert st.n_checks == len(checks) and st.best == min(fvus)
    # the last n_iter_no_change checks did not beat the best of those before them
    before = min(fvus[:-m.n_iter_no_change])
    assert all(f >= before * (1 - m.stop_tol) for f in fvus[-m.n_iter_no_change:])
    assert st.best < 0.1 < fvus[0]  # it learnt
    # checks fall once per epoch of the training rows (10% are held out)
    every = math.ceil(2700 / m.engine_.config.batch_size)
    assert [s for s, _ in checks] == [every * (i + 1) for i in range(len(checks))]


def test_the_last_check_is_the_fvu_of_the_held_out_rows():
    X, _, _ = _data()
    m = MPSAE(32, 3, progress=False, random_state=0).fit(X)
    rng = np.random.default_rng(0)
    _, held = validation_rows(X.shape[0], 0.1, rng)  # the fit's first draws
    step, fvu = _checks(m)[-1]
    assert step == m.n_steps_
    assert fvu == pytest.approx(held_out_fvu(m.engine_, X[held]), rel=1e-12)
    ref = 1 - explained_variance(X[held], m.inverse_transform(m.transform(X[held])))
    assert fvu == pytest.approx(ref, rel=1e-4)


def test_plateau_halves_the_learning_rate_after_each_check_without_improvement():
    X, _, _ = _data()
    m = MPSAE(32, 3, progress=False, random_state=0, stop_tol=0.05, n_iter_no_change=4,
              warmup_steps=0).fit(X)
    assert m.engine_.config.schedule == "plateau"
    best, bad = math.inf, 0
    for _, f in _checks(m):
        if f < best * (1 - 0.05) or best == math.inf:
            best = f
        else:
            bad += 1
    assert bad >= 4 and m.engine_.lr_factor == 0.5**bad
    # the last record is the last step's, before its check halved the rate once more
    assert m.history_[-1]["lr"] == pytest.approx(m.engine_.config.lr * 0.5**(bad - 1))



@pytest.mark.parametrize("schedule", ["plateau", "cosine", "constant"])
def test_a_time_cap_decays_the_rate_over_its_last_cooldown(schedule):
    import time

    X, _, _ = _data(1000)
    m = MPSAE(32, 3, progress=False, random_state=0, max_steps=2, schedule=schedule,
              max_time=1000.0, cooldown=0.2, final_lr_ratio=0.1)
    with pytest.warns(ConvergenceWarning):
        m.fit(X)
    engine, lr = m.engine_, m.engine_.config.lr
    steps = engine.learning_rate()  # 2 of 2 steps: the cosine has reached its end
    assert steps == pytest.approx(lr * (0.1 if schedule == "cosine" else 1.0))
    for seconds, factor in [(100.0, 1.0), (900.0, 0.55), (1500.0, 0.1)]:
        engine._t0 = time.perf_counter() - seconds  # as if trained that long
        want = steps if schedule == "constant" else min(steps, lr * factor)
        assert engine.learning_rate() == pytest.approx(want, rel=1e-4)


def test_auto_rate_doubles_in_a_run_that_decays_over_its_time_cap():
    from sparsecode.sae import TrainConfig

    base = 1e-2 * math.sqrt(256 / 1024)

    def lr(**kw):
        params = MPSAE(1024, 8, **kw).get_params()
        return TrainConfig.from_params(params).resolve(10_000, held_out=True).lr

    assert lr() == pytest.approx(base)
    assert lr(max_time=60.0) == pytest.approx(2 * base)
    assert lr(max_time=60.0, cooldown=0.0) == pytest.approx(base)  # no decay: no boost
    assert lr(max_time=60.0, schedule="constant") == pytest.approx(base)
    assert lr(max_time=60.0, lr=3e-3) == 3e-3  # a given rate is kept

@pytest.mark.parametrize("cap,value", [("max_epochs", 1), ("max_steps", 3), ("max_time", 1e-9)])
def test_a_cap_before_converging_warns_and_says_which(cap, value):
    X, _, _ = _data()
    m = MPSAE(32, 3, progress=False, random_state=0, **{cap: value})
    with pytest.warns(ConvergenceWarning, match=f"stopped at {cap} .*raise {cap}"):
        m.fit(X)
    assert m.stop_reason_ == cap
    if cap == "max_steps":
        assert m.n_steps_ == 3
    if cap == "max_time":
        assert m.n_steps_ == 0  # the clock runs from the start, read before each step


def test_fixed_epochs_and_iterables_do_not_hold_rows_out():
    X, _, _ = _data(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        m = MPSAE(32, 3, n_epochs=2, batch_size=250, progress=False, random_state=0).fit(X)
        assert m.stop_reason_ == "n_epochs" and m.n_steps_ == 8 and m.n_samples_seen_ == 2000
        it = MPSAE(32, 3, batch_size=250, progress=False, random_state=0)
        it.fit(iter([X[i:i + 250] for i in range(0, 1000, 250)]))
    assert it.stop_reason_ == "data" and it.n_steps_ == 4 and it.engine_.stopper is None
    assert it.engine_.config.schedule == "cosine"


def test_the_stopping_state_survives_save_and_load(tmp_path):
    X, _, _ = _data()
    m = MPSAE(32, 3, max_epochs=3, progress=False, random_state=0)
    with pytest.warns(ConvergenceWarning):
        m.fit(X)
    save_model(m, tmp_path / "m.h5")
    back = load_model(tmp_path / "m.h5")
    assert vars(back.engine_.stopper) == vars(m.engine_.stopper)
    assert back.stop_reason_ == "max_epochs" == m.stop_reason_
    c, b = m.engine_.config, back.engine_.config
    assert (b.batch_size, b.lr, b.schedule) == (c.batch_size, c.lr, c.schedule)
    assert back.engine_.lr_factor == m.engine_.lr_factor
    assert back.engine_.scale == m.engine_.scale


# ---------------------------------------------------------------- the data's scale


@pytest.mark.parametrize("update,solver", [("adam", "mp"), ("online", "omp")])
def test_any_scale_trains_to_the_same_explained_variance(update, solver):
    X, _, _ = _data(2000)
    X = X + 2.0  # an offset, which the pre-bias learns
    ev = {}
    for f in (1e-6, 1e-3, 1.0, 1e3, 1e6):
        m = MPSAE(32, 3, update=update, solver=solver, n_epochs=3, batch_size=200,
                  progress=False, random_state=0).fit(X * np.float32(f))
        ev[f] = m.score(X * np.float32(f))
        # codes and reconstructions in the data's units
        assert np.abs(m.bias_ / f - 2.0).max() < 0.5
    assert max(ev.values()) - min(ev.values()) < 2e-3, ev
    assert min(ev.values()) > 0.5


@pytest.mark.parametrize("dtype,f", [("float64", 1e-30), ("float64", 1e30), ("float32", 1e-6),
                                     ("float32", 1e6)])
def test_the_logged_fvu_is_the_true_fvu_at_any_scale(dtype, f):
    X, _, _ = _data(500)
    X = (X.astype(np.float64) + 1.0) * f
    m = MPSAE(32, 3, batch_size=None, n_epochs=1, log_every=1, progress=False,
              dtype=dtype, random_state=0)
    m.partial_fit(X)
    true = 1 - explained_variance(X, m.inverse_transform(m.transform(X)))
    m.partial_fit(X)  # codes at the same atoms and pre-bias, logged
    assert m.history_[-1]["fvu"] == pytest.approx(true, rel=1e-3)
    assert 0 < true < 1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_validation_fraction_outside_0_1_is_refused(fraction):
    X, _, _ = _data(100)
    with pytest.raises(ValueError, match=r"validation_fraction must be a finite number in "
                                         r"\(0.0, 1.0\)"):
        MPSAE(8, 2, validation_fraction=fraction, progress=False).fit(X)


def test_a_split_leaving_no_rows_is_refused():
    X, _, _ = _data(4)
    with pytest.raises(ValueError, match="leaves no rows to hold out.*n_epochs"):
        MPSAE(8, 2, progress=False).fit(X)
    with pytest.raises(ValueError, match="leaves no rows to train on"):
        MPSAE(8, 2, validation_fraction=0.9, progress=False).fit(X[:2])


def test_nan_mid_stream_raises_and_keeps_the_state_before_it():
    X, _, _ = _data(1000)
    batches = [X[i:i + 250].copy() for i in range(0, 1000, 250)]
    batches[2][7, 3] = np.nan
    m = MPSAE(32, 3, progress=False, random_state=0)
    with pytest.raises(ValueError, match="NaN"):
        m.fit(iter(batches))
    assert m.n_steps_ == 2 and np.all(np.isfinite(m.components_))


# ---------------------------------------------------------------- the command line


@pytest.fixture()
def acts(tmp_path):
    X, _, _ = _data(3000)
    path = tmp_path / "acts.h5"
    write_activations(path, X)
    return path


def _train(acts, out, *extra):
    return main(["train", str(acts), "--dataset", "activations", "--atoms", "32", "--k", "3",
                 "--out", str(out), "--quiet", *extra])


def test_train_stops_when_held_out_rows_stop_improving(acts, capsys):
    out = acts.parent / "m.h5"
    assert _train(acts, out) == 0
    err = capsys.readouterr().err
    m = load_model(out)
    assert m.stop_reason_ == "converged" and "stopped: converged; best held-out fvu" in err
    assert "held-out rows 2700-3000" in err  # 10% at the end of the file
    assert _train(acts, acts.parent / "m1.h5", "--max-epochs", "1") == 0
    err = capsys.readouterr().err
    assert "stopped: max_epochs" in err and "warning: training stopped at max_epochs" in err


def test_train_without_epochs_needs_held_out_rows(acts, capsys):
    assert _train(acts, acts.parent / "m.h5", "--holdout", "0") == 2
    assert "pass --epochs N or a --holdout fraction" in capsys.readouterr().err


class _StopAfter:
    """A stop flag that is set after ``n`` steps (as if Ctrl-C came then)."""

    def __init__(self, n):
        self.n = n

    @property
    def set(self):
        self.n -= 1
        return self.n < 0


def test_train_resumed_stops_where_an_uninterrupted_run_stops(acts, capsys):
    from sparsecode.cli import build_parser, train
    from sparsecode.cli._common import Interrupted

    ref = acts.parent / "ref.h5"
    assert _train(acts, ref) == 0
    out = acts.parent / "out.h5"
    argv = ["train", str(acts), "--dataset", "activations", "--atoms", "32", "--k", "3",
            "--out", str(out), "--quiet"]
    a, b = load_model(ref), None
    for stop_at in (a.n_steps_ // 2, a.n_steps_ // 4):  # twice, mid-run
        args = build_parser().parse_args(argv + (["--resume"] if b is not None else []))
        args.stop = _StopAfter(stop_at)
        with pytest.raises(Interrupted):
            train.run(args)
        b = load_model(out.with_name("out.h5.ckpt"))
        assert b.engine_.stopper.n_checks > 0 and b.stop_reason_ is None
    assert main(argv + ["--resume"]) == 0
    b = load_model(out)
    assert b.n_steps_ == a.n_steps_ and b.stop_reason_ == "converged"
    assert vars(b.engine_.stopper) == vars(a.engine_.stopper)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.bias_, b.bias_)
    assert capsys.readouterr().err.count("resuming") == 2


def test_partial_fit_is_unaffected(rng=None):
    X, _, _ = _data(600)
    m = MPSAE(32, 3, progress=False, random_state=0)
    for s in range(0, 600, 200):
        m.partial_fit(X[s:s + 200])
    assert m.n_steps_ == 3 and m.stop_reason_ is None and m.engine_.stopper is None
    assert sparsecode.MPSAE is MPSAE
