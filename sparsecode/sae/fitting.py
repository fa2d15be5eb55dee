"""The run of :meth:`MPSAE.fit <sparsecode.MPSAE.fit>`: the batches of an array or an
iterable, the loop over them, and why it stopped.

An array with ``n_epochs=None`` is split into training rows and held-out rows
(:func:`~sparsecode.sae.stopping.validation_rows`); the engine checks the held-out FVU
every epoch (or every :data:`~sparsecode.sae.stopping.MAX_CHECK_SAMPLES` signals) and the
loop stops when the rule of :class:`~sparsecode.sae.stopping.Stopper` says so, or at a
cap (``max_epochs``, ``max_steps``, ``max_time``), warning then.
"""

import warnings

import numpy as np

from sparsecode._backend import is_cupy, on_device_of
from sparsecode._blas import one_blas_thread
from sparsecode._progress import progress_bar
from sparsecode.sae.engine import Engine
from sparsecode.sae.stopping import CAPS, ConvergenceWarning, check_every, validation_rows


class ArrayRun:
    """The plan of a fit on an array: rows, batches, length, held-out check.

    Parameters
    ----------
    cfg : TrainConfig
        As given (``"auto"`` settings allowed).
    X : ndarray of shape (n_samples, n_features)
        Checked, in the model's dtype.
    rng : numpy.random.Generator

    Attributes
    ----------
    config : TrainConfig
        Resolved for the training rows (see :meth:`TrainConfig.resolve`).
    train : ndarray of int or None
        Training rows (None: all).
    held_out : ndarray of int or None
        Held-out rows (``n_epochs=None``).
    epochs : int
        Passes at most.
    steps_per_epoch, total : int
        Steps in one pass; in the whole run at most.
    every : int or None
        Steps between held-out checks.
    """

    def __init__(self, cfg, X, rng):
        n = X.shape[0]
        self.train = self.held_out = None
        if cfg.n_epochs is None:
            self.train, self.held_out = validation_rows(n, cfg.validation_fraction, rng)
            n = self.train.size
        if n < 2 and cfg.pre_bias:
            raise ValueError(
                "fitting needs >= 2 training rows with pre_bias=True (the pre-bias starts at "
                f"the data mean, which leaves nothing to learn from); got n_samples = {n}"
            )
        self.config = cfg = cfg.resolve(n, held_out=self.held_out is not None)
        self.n = n
        self.bs = cfg.batch_rows(n)
        self.steps_per_epoch = cfg.steps_per_epoch(n)
        self.epochs = cfg.n_epochs or cfg.max_epochs
        self.total = cfg.total_steps(self.steps_per_epoch, self.epochs)
        self.every = None if self.held_out is None else check_every(self.steps_per_epoch,
                                                                      self.bs)

    def rows(self, order):
        """Positions ``order`` of the training rows, as rows of the array."""
        return order if self.train is None else self.train[order]

    def setup(self, X, rng):
        """The engine of a new run: atoms from random training rows, and the held-out
        check."""
        first = self.rows(rng.permutation(self.n)[: max(self.bs, self.config.n_atoms)])
        engine = Engine.setup(self.config, X[first], rng=rng, total_steps=self.total,
                              forget=self.config.forget_for(self.n))
        if self.held_out is not None:
            engine.watch(X[on_device_of(self.held_out, X)], self.every)
        return engine

    def batches(self, X, rng):
        """Shuffled minibatches of the training rows, ``epochs`` passes (rows in array
        order within each batch)."""
        for _ in range(self.epochs):
            order = rng.permutation(self.n)
            for s in range(0, self.n, self.bs):
                rows = self.rows(np.sort(order[s : s + self.bs]))
                yield X[on_device_of(rows, X)]


def stop_now(engine, cfg):
    """Why the run must stop before its next step (``"converged"``, ``"max_steps"``,
    ``"max_time"``: ``engine.seconds``, its training time across resumes), or None."""
    if engine.stopper is not None and engine.stopper.converged:
        return "converged"
    if cfg.max_steps is not None and engine.n_steps >= cfg.max_steps:
        return "max_steps"
    if cfg.max_time is not None and engine.seconds >= cfg.max_time:
        return "max_time"
    return None


def finish(engine, reason, stacklevel=3):
    """Record why the run stopped; warn (:class:`ConvergenceWarning`) when a run that
    watches held-out rows stopped at a cap."""
    engine.stop_reason = reason
    if reason in CAPS and engine.stopper is not None:
        st = engine.stopper
        warnings.warn(
            f"training stopped at {reason} ({engine.n_steps} steps, "
            f"{engine.n_samples_seen:,} samples) before the held-out FVU stopped improving "
            f"(best {st.best:.4g} at step {st.best_step}, {st.n_bad} of "
            f"{st.n_iter_no_change} checks without improvement); raise {reason} to train "
            "further", ConvergenceWarning, stacklevel=stacklevel)
    return reason


def train(model, batches, total, cfg, *, end_reason):
    """Step ``model``'s engine through ``batches`` until they run out (``end_reason``)
    or :func:`stop_now` says to stop; :func:`finish` then records why.  Returns the
    reason."""
    bar = progress_bar(model.progress, total, unit="step")
    reason = None
    try:
        for Xb in batches:
            engine = model._engine
            engine.callback = model.callback
            reason = stop_now(engine, cfg)
            if reason is not None:
                break
            # Numba's threads do the parallel work; BLAS threads left free between kernel
            # calls would spin against them (measured: online learning 5x slower on 2 cores)
            with one_blas_thread():
                engine.step(Xb)
            if bar is not None:
                bar.update(1)
                if engine.history and engine.history[-1]["step"] == engine.n_steps:
                    h = engine.history[-1]
                    bar.set_postfix(fvu=f"{h['fvu']:.4f}", l0=f"{h['l0']:.1f}",
                                    dead=f"{h['dead_fraction']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    engine = model.__dict__.get("_engine")
    if engine is None:  # no batch came
        return None
    if reason is None:  # the batches ran out: converged or capped on the last step?
        reason = stop_now(engine, cfg) or end_reason
    return finish(engine, reason, stacklevel=4)


def is_array(X):
    """Whether ``fit`` takes ``X`` as one array (else as an iterable of batches)."""
    return isinstance(X, np.ndarray) or is_cupy(X) or hasattr(X, "__array__") or (
        isinstance(X, (list, tuple)) and len(X) > 0 and np.isscalar(np.asarray(X[0]).flat[0])
        and np.asarray(X[0]).ndim == 1
    )
