"""The MP-SAE training engine: the model's state and the training step.

:class:`Engine` is what :class:`~sparsecode.MPSAE` trains with, and all that the
data-parallel trainer (:mod:`sparsecode.distributed`) and the model files
(:mod:`sparsecode.io`) touch:

- :meth:`Engine.setup` initialises atoms, pre-bias, optimiser and counters from signals;
- :meth:`Engine.shard_step` is the half of a step that needs the signals (it runs where
  they are, one shard of the batch at a time) and :meth:`Engine.apply` the half that moves
  the model, from the merged parts (see :mod:`sparsecode.sae._step`);
  :meth:`Engine.resample` then replaces the atoms :meth:`Engine.apply` found dead, from
  the few signals it asks for; :meth:`Engine.step` is the three in one process;
- :meth:`Engine.state_dict` / :meth:`Engine.load_state_dict` save and restore a run.

A step that produces NaN or inf raises :class:`~sparsecode.sae.TrainingDivergedError`
and leaves the engine as it was before the step (see :meth:`Engine.apply`).
"""

import math
import time
import warnings
from dataclasses import replace

import numpy as np

from sparsecode._backend import array_module, is_cupy, on_device_of, row_norms2, to_host
from sparsecode._rules import RULES
from sparsecode._validation import check_array
from sparsecode.sae import divergence, optim
from sparsecode.sae._state import SavedState
from sparsecode.sae._step import Resample, StepPart, data_scale
from sparsecode.sae.divergence import NonFinite, TrainingDivergedError, all_finite
from sparsecode.sae.encoders import Encoder
from sparsecode.sae.mpsae import batch_grad
from sparsecode.sae.stopping import PLATEAU_FACTOR, Stopper, held_out_fvu, spread
from sparsecode.sae.updates import make_update


class Engine(SavedState):
    """State of an MP-SAE training run, and its step.

    Build one with :meth:`setup` (a new run), :meth:`for_inference` (atoms only, for
    encoding and shard steps on workers) or :meth:`setup` followed by
    :meth:`load_state_dict` (a saved run).

    Attributes
    ----------
    config : TrainConfig
    components : ndarray of shape (n_atoms, n_features)
        The atoms (NumPy, or CuPy when training on the GPU); updated in place.
    bias : ndarray of shape (n_features,)
    encoder : Encoder
    rng : numpy.random.Generator
    total_steps : int or None
        Length of the run, for the learning-rate schedule and the last history record.
    forget : float
        Forgetting factor of the online statistics per step.
    scale : float
        The data's scale: the root mean square entry of the signals the run started from,
        minus the pre-bias (see :func:`data_scale`).  Adam steps the atoms and pre-bias
        as if the signals were divided by it, so training does not depend on the data's
        units; the atoms, pre-bias, codes and logged metrics stay in those units.
    lr_factor : float
        Multiplies the schedule's learning rate (``schedule="plateau"`` lowers it when
        the held-out error stalls).
    n_steps, n_samples_seen : int
    stopper : Stopper or None
        The stopping rule's state, when the run checks held-out signals (see
        :meth:`watch`).
    stop_reason : str or None
        Why the last run stopped (see :mod:`sparsecode.sae.stopping`).
    history : list of dict
    last_check, n_checks : int
        Samples seen at the last search for dead atoms, and searches so far.
    optimizer : Adam
    update : Update
        The strategy of ``config.update`` (see :mod:`sparsecode.sae.updates`).
    dead : DeadAtoms
        Atom use over the dead-atom window.
    """

    def __init__(self, config, components, bias, *, rng=None, use_gram=None):
        self.config = _settled(config)
        self.components = components
        self.bias = bias
        self.encoder = Encoder(config.selection, config.unit_atoms, use_gram)
        self.rng = np.random.default_rng() if rng is None else rng
        self.total_steps = None
        self.forget = 1.0
        self.scale = 1.0
        self.lr_factor = 1.0
        self.n_steps = 0
        self.n_samples_seen = 0
        self.history = []
        self.callback = None
        self.optimizer = self.update = self.dead = None
        self._dead_now = None  # atoms dead after the last step, for the log
        self.last_check = self.n_checks = 0
        self.stopper = self.stop_reason = None
        self._held_out = None  # (signals, steps between checks, their spread)
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_inference(cls, config, components, bias, *, use_gram=None):
        """An engine over given atoms, with no optimiser: for encoding and for
        :meth:`shard_step` (what workers of a data-parallel run need).

        Parameters
        ----------
        config : TrainConfig
        components : ndarray of shape (n_atoms, n_features)
        bias : ndarray of shape (n_features,)
        use_gram : bool, optional
            Fix the Gram decision of the MP encoder (see :class:`Encoder`).
        """
        self = cls(config, components, bias, use_gram=use_gram)
        self.update = make_update(config, components.shape[1])
        return self

    @classmethod
    def setup(cls, config, X, *, rng, total_steps=None, forget=1.0):
        """Start a run: atoms and pre-bias from ``X``, fresh optimiser and counters.

        Parameters
        ----------
        config : TrainConfig
        X : ndarray of shape (n_samples, n_features)
            Signals to initialise from (NumPy, or CuPy to train on the GPU), in the
            model's dtype.
        rng : numpy.random.Generator
            Drives initialisation and, later, resampling.
        total_steps : int, optional
        forget : float

        Returns
        -------
        Engine
        """
        from sparsecode.dictionary import DeadAtoms, init_dictionary

        on_gpu = is_cupy(X)
        if on_gpu and not config.gradient_encoder:
            raise ValueError(
                "training on the GPU (CuPy data) supports update='adam' with solver='mp' or "
                f"'topk'; got update={config.update!r}, solver={config.solver!r}. Pass NumPy "
                "arrays (X.get()) to train on the CPU."
            )
        X = to_host(X)  # initialisation draws from the data once, on the host
        config = _settled(config)
        dt = config.dtype
        nf = X.shape[1]
        b = X.mean(axis=0, dtype=np.float64).astype(dt) if config.pre_bias else np.zeros(nf, dt)
        init = config.init
        if not isinstance(init, str):
            init = check_array(init, "init").astype(dt)
            if init.shape != (config.n_atoms, nf):
                raise ValueError(
                    f"init must have shape (n_atoms, n_features) = {(config.n_atoms, nf)}; "
                    f"got {init.shape}"
                )
        if isinstance(init, str) and init == "signals" and not np.any(X - b):
            warnings.warn(
                f"the {X.shape[0]} signal(s) to initialise from all equal their mean (the "
                "pre-bias), which leaves no direction to draw atoms from; the atoms start "
                "as random unit vectors (initialise from more, varied signals with "
                "MPSAE.start, or pass init=...)", RuntimeWarning, stacklevel=3)
            init = "random"
        if isinstance(init, str) and init == "random":
            D = rng.standard_normal((config.n_atoms, nf))
            D /= np.linalg.norm(D, axis=1, keepdims=True)
        else:
            D = init_dictionary(X - b, config.n_atoms, method=init, random_state=rng)
        xp = np
        if on_gpu:
            import cupy as xp
        self = cls(config, xp.ascontiguousarray(xp.asarray(D, dtype=dt)), xp.asarray(b),
                   rng=rng)
        self.total_steps = total_steps
        self.forget = forget
        self.scale = data_scale(X - b)
        shapes = [D.shape, b.shape] if config.pre_bias else [D.shape]
        self.optimizer = optim.Adam(shapes, betas=config.betas,
                                    weight_decay=config.weight_decay, dtype=dt, xp=xp)
        self.update = make_update(self.config, nf)
        self.dead = DeadAtoms(config.n_atoms, self.config.dead_window_for(X.shape[0]))
        return self

    @classmethod
    def restore(cls, config, components, bias, arrays, scalars, history=()):
        """A saved run: an engine made by :meth:`setup` for ``config``, then
        :meth:`load_state_dict` of what :meth:`state_dict` returned.

        Parameters
        ----------
        config : TrainConfig
        components : ndarray of shape (n_atoms, n_features)
        bias : ndarray of shape (n_features,)
        arrays, scalars : dict
            As :meth:`state_dict` returns them.
        history : sequence of dict

        Returns
        -------
        Engine
        """
        X0 = np.zeros((1, int(scalars["n_features_in"])), config.dtype)
        # allocates the optimiser and trackers; atoms and RNG state are overwritten
        self = cls.setup(replace(config, init="random"), X0, rng=np.random.default_rng())
        self.config = _settled(config)
        return self.load_state_dict(components, bias, arrays, scalars, history)

    @property
    def seconds(self):
        """Seconds since the run started, across saves and resumes."""
        return time.perf_counter() - self._t0

    def inference_copy(self, *, use_gram=None):
        """:meth:`for_inference` over this engine's atoms and pre-bias."""
        return self.for_inference(self.config, self.components, self.bias, use_gram=use_gram)

    # ------------------------------------------------------------------ the step

    def learning_rate(self):
        """The learning rate of the next step: the schedule's, and with ``max_time`` set
        (and a schedule other than ``"constant"``) at most the peak rate times
        :func:`~sparsecode.sae.optim.time_decay`, so a run that ends on its time cap ends
        on a decayed rate."""
        c = self.config
        rate = self.lr_factor * optim.learning_rate(
            self.n_steps, lr=c.lr, schedule=c.schedule, total_steps=self.total_steps,
            warmup_steps=c.warmup_steps, cooldown=c.cooldown, final_ratio=c.final_lr_ratio,
        )
        if c.decays_in_time():
            rate = min(rate, c.lr * optim.time_decay(self.seconds, c.max_time,
                                                     cooldown=c.cooldown,
                                                     final_ratio=c.final_lr_ratio))
        return rate

    def step(self, X):
        """One whole training step on the batch ``X`` (in the model's dtype and device).

        Raises
        ------
        TrainingDivergedError
            When the step produces NaN or inf; the engine keeps its state from before the
            step (see :meth:`apply`).
        """
        Xc = X - self.bias
        request = self.apply(self.shard_step(Xc))
        if request is not None:
            self.resample(request, Xc[on_device_of(request.rows, Xc)])

    def shard_step(self, Xc):
        """The part of a step that needs the signals: codes, residuals, and the gradients
        (``update="adam"``) or code statistics (``"mod"``, ``"online"``) of ``Xc``
        (signals minus the pre-bias) at the current atoms.

        Returns
        -------
        StepPart
            The parts of a batch's shards merge into the part of the whole batch.

        Raises
        ------
        TrainingDivergedError
            When ``Xc`` or the codes hold NaN or inf (nothing of the engine changes here).
        """
        c = self.config
        D = self.components
        norms2 = row_norms2(Xc)  # float64; NaN or inf when Xc overflowed the dtype
        if not all_finite(norms2):
            raise self._diverged(
                "the signals minus the pre-bias, or their squared norms, are NaN or inf", norms2)
        if c.gradient_encoder:
            g = batch_grad(Xc, D, None, k=c.k, tol=c.tol or 0.0, rule=RULES[c.selection],
                           topk=c.solver == "topk")
            codes, resid2, extra = g.codes, g.residual_norms2, {"grads": [g.grad_D, g.grad_b]}
        else:
            codes = self.encoder(Xc, D, k=c.k, tol=c.tol, solver=c.solver)
            if not all_finite(codes.values):  # before what would refuse them
                raise self._diverged("the codes are NaN or inf", norms2)
            R = Xc - codes.decode(D)
            resid2 = row_norms2(R)
            extra = self.update.shard(Xc, codes, R)
        x_sum = Xc.sum(axis=0, dtype=np.float64)
        spread = float(row_norms2(Xc - (x_sum / Xc.shape[0]).astype(Xc.dtype)).sum())
        return StepPart(n=Xc.shape[0], codes=codes, residual_norms2=resid2,
                        norms2=norms2, x_sum=x_sum, spread=spread, **extra)

    def apply(self, part):
        """Finish a step from the merged :class:`StepPart` of the batch: move the atoms
        (and pre-bias), count atom use, log.

        Returns
        -------
        Resample or None
            The atoms to replace now (dead or duplicated, every ``dead_window`` samples
            with ``resample_dead``) and which signals of the batch to replace them with:
            pass those signals (minus the pre-bias of before this step) to
            :meth:`resample`.

        Raises
        ------
        TrainingDivergedError
            When the batch's codes or loss, or the new atoms, pre-bias or optimiser
            moments (online statistics with ``update="online"``), hold NaN or inf, or
            Adam's new atoms or pre-bias reach ``sqrt(finfo(dtype).max / n_features)`` (see
            :mod:`sparsecode.sae.divergence`).  The engine is then exactly as before the
            step: atoms, pre-bias, optimiser state, counters, dead-atom tracking and
            history.

        Notes
        -----
        Nothing needs restoring after a divergence, because nothing changes before the
        checks pass, and no snapshot of the state is kept.  The update computes the new
        atoms, pre-bias and Adam moments into new arrays (the temporaries an in-place
        step allocates anyway; the classic updates' results; for ``"online"`` a copy of
        the running statistics, small next to their update), checks them with a few
        reductions (O(n_atoms n_features)), then commits them: atoms and pre-bias copied
        in place, moments swapped in.  The signal norms, codes and loss are checked in
        O(n) and O(n k).  An Adam step thus pays one copy and three reductions over the
        atoms: about a third of the optimiser's own update, which is itself small next to
        the pursuit's O(n n_atoms n_features).
        """
        lr = self.learning_rate()
        try:
            if not all_finite(part.codes.values):
                raise NonFinite("the codes are NaN or inf")
            if not all_finite(part.residual_norms2):
                raise NonFinite("the loss (the residuals) is NaN or inf")
            commit = self.update.propose(self, part, lr)
        except NonFinite as bad:
            raise self._diverged(bad.what, part.norms2, lr) from None
        commit()
        self.encoder.atoms_changed()
        self.n_steps += 1
        self.n_samples_seen += part.n
        request = self._count_use(part)
        held_out = self._check()
        if self.n_steps % self.config.log_every == 0 or self.n_steps == 1 or (
            self.total_steps and self.n_steps == self.total_steps
        ) or not math.isnan(held_out):
            self._log(part, lr, held_out)
        return request

    def watch(self, X, every):
        """Check the FVU of the held-out signals ``X`` every ``every`` steps (after the
        step; a check also writes a history record), for the stopping rule (a fresh
        :class:`~sparsecode.sae.stopping.Stopper` unless one was restored).

        Parameters
        ----------
        X : ndarray of shape (n_held_out, n_features)
            In the model's dtype and device.
        every : int
        """
        c = self.config
        if self.stopper is None:
            self.stopper = Stopper(c.n_iter_no_change, c.stop_tol)
        self._held_out = (X, int(every), spread(X))  # the spread once, not per check

    def _check(self):
        """The held-out FVU after this step, when a check is due (else NaN); a check
        that brings no improvement halves the learning rate of ``schedule="plateau"``."""
        if self._held_out is None or self.n_steps % self._held_out[1]:
            return math.nan
        X, _, total = self._held_out
        fvu = held_out_fvu(self, X, total=total)
        if not self.stopper.update(fvu, self.n_steps) and self.config.schedule == "plateau":
            self.lr_factor *= PLATEAU_FACTOR
        return fvu

    def _diverged(self, what, norms2, lr=None):
        """The :class:`TrainingDivergedError` of this step (``what``: what went wrong, a
        clause; ``norms2``: the squared norms of the batch's signals minus the pre-bias)."""
        c = self.config
        training = self.optimizer is not None  # not a worker's engine for shard steps
        step = self.n_steps + 1 if training else None
        lr_now = self.learning_rate() if lr is None else lr
        max_norm2 = float(array_module(norms2).max(norms2)) if norms2.size else 0.0
        msg = divergence.message(what, step=step, n_steps=self.n_steps, update=c.update,
                                 lr=c.lr, lr_now=lr_now, dtype=c.dtype, max_norm2=max_norm2)
        return TrainingDivergedError(msg, step, what, c.lr if c.update == "adam" else None)

    def _count_use(self, part):
        from sparsecode.dictionary import coherent_atoms

        dead = self.dead
        dead.update(part.codes)
        self._dead_now = dead.dead()
        if not self.config.resample_dead or dead.n_samples - self.last_check < dead.window:
            return None
        self.last_check = dead.n_samples
        self.n_checks += 1
        replace = self._dead_now.copy()
        if (self.n_checks - 1) % self.update.coherence_every == 0:
            # near-duplicates (an n_atoms^2 n_features product) are looked for less often
            replace |= coherent_atoms(to_host(self.components), 0.99, usage=dead.counts)
        if not replace.any():
            return None
        # the worst-coded non-zero signals, all that resample_dead will look at
        rows = part.worst(int(replace.sum()))
        if rows.size == 0:  # every signal of the batch equals the pre-bias
            return None
        return Resample(replace, rows, to_host(part.residual_norms2)[rows])

    def resample(self, request, signals):
        """Replace the atoms of ``request`` by ``signals`` (the batch's rows
        ``request.rows`` minus the pre-bias of before the step)."""
        from sparsecode.dictionary import resample_dead

        D = self.components
        Dh = to_host(D)
        new = resample_dead(Dh, request.atoms, to_host(signals), request.residual_norms2,
                            random_state=self.rng)
        if self.update.free_norms:
            # free norms: the new (unit) atoms take the mean norm of the others
            new[request.atoms] *= np.linalg.norm(Dh, axis=1).mean()
        D[...] = on_device_of(new, D)
        self.optimizer.reset_rows(0, request.atoms)
        self.update.forget_atoms(request.atoms)
        self.dead.reset(request.atoms)
        self.encoder.atoms_changed()

    def _log(self, part, lr, held_out=math.nan):
        n = part.n
        total = part.spread  # sum ||x - mean||^2 of the batch
        err = float(part.residual_norms2.sum())
        fvu = err / total if total > 0 else (0.0 if err == 0 else math.inf)
        xp = array_module(part.codes.values)
        record = {
            "step": self.n_steps,
            "samples": self.n_samples_seen,
            "lr": lr,
            "loss": err / n,
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "validation_fvu": held_out,
            "l0": float(xp.count_nonzero(part.codes.values)) / n,
            "dead_fraction": float(np.mean(self._dead_now)),
            "residual_norm": float(xp.sqrt(part.residual_norms2).mean()),
            "seconds": time.perf_counter() - self._t0,
        }
        self.history.append(record)
        if self.callback is not None:
            self.callback(record)

    # ------------------------------------------------------------------ state


def _settled(config):
    """``config`` with its ``"auto"`` settings resolved for a run of unknown size."""
    init = config.init if isinstance(config.init, str) else None
    auto = "auto" in (config.batch_size, config.lr, config.schedule, init)
    return config.resolve() if auto else config
