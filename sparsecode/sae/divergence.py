"""Divergence of an MP-SAE training run: the error, the finiteness checks and the advice.

A step diverges when it produces NaN or inf in the signals it centres, the codes, the loss,
the gradients or statistics it updates from, or the new atoms, pre-bias or optimiser
moments; or, with ``update="adam"``, atoms or a pre-bias with entries of magnitude
``sqrt(finfo(dtype).max / n_features)`` or more (6.7e17 in float32 with 768 features),
whose squared norms may overflow in the next step.
:class:`~sparsecode.sae.engine.Engine` checks each once per step and raises
:class:`TrainingDivergedError` before anything of the model has changed (see
:meth:`Engine.apply <sparsecode.sae.engine.Engine.apply>` for how, and what it costs).
"""

import numpy as np

from sparsecode._backend import array_module


class TrainingDivergedError(FloatingPointError):
    """Raised when a training step produces NaN or inf (atoms, pre-bias, optimiser
    moments, codes or loss), or atoms or pre-bias so large that the next step overflows.

    The model keeps its state from before that step: ``components_``, ``bias_``, the
    optimiser's moments, the step and sample counters and ``history_`` are as the last
    successful step left them, so the model can be saved, or trained on with a smaller
    learning rate (``set_params(lr=...)`` then :meth:`~sparsecode.MPSAE.partial_fit`).

    Parameters
    ----------
    message : str
    step : int or None
        The step that diverged (1-based; None when unknown, as in a worker's shard step).
    what : str or None
        What went wrong, as a clause ("the codes are NaN or inf").
    lr : float or None
        The peak learning rate of the run (None for the updates without one).

    Attributes
    ----------
    step, what, lr
        As given.
    """

    def __init__(self, message, step=None, what=None, lr=None):
        super().__init__(message)
        self.step, self.what, self.lr = step, what, lr

    def __reduce__(self):  # keeps the attributes through pickling (worker processes)
        return type(self), (self.args[0], self.step, self.what, self.lr)


class NonFinite(Exception):  # noqa: N818 - internal signal, turned into the public error
    """Internal: raised by a check, ``what`` saying what went wrong (a clause: "the codes
    are NaN or inf"); the engine turns it into a :class:`TrainingDivergedError` with the
    step's context."""

    def __init__(self, what):
        super().__init__(what)
        self.what = what


def all_finite(*arrays):
    """Whether every entry of ``arrays`` (NumPy or CuPy) is finite: one pass over each."""
    return all(bool(array_module(a).isfinite(a).all()) for a in arrays)


def within(a, limit):
    """Whether every entry of ``a`` lies strictly within ``(-limit, limit)`` (so is not
    NaN): two reductions, no temporary array."""
    return bool(a.max() < limit) and bool(a.min() > -limit)


def require_finite(what, *arrays):
    """Raise :class:`NonFinite` with ``what`` (a clause) unless every entry of ``arrays``
    is finite."""
    if not all_finite(*arrays):
        raise NonFinite(what)


def message(what, *, step, n_steps, update, lr, lr_now, dtype, max_norm2):
    """The message of a :class:`TrainingDivergedError`.

    Parameters
    ----------
    what : str
        What went wrong, as a clause.
    step : int or None
        The step that diverged.
    n_steps : int
        Steps the model has taken (those before ``step``; unused without ``step``).
    update : str
        The run's ``update``.
    lr, lr_now : float
        Peak learning rate, and the rate of the diverging step (``update="adam"``).
    dtype : dtype
        The model's dtype.
    max_norm2 : float
        Largest squared norm of a signal of the batch minus the pre-bias (may be inf
        or NaN).

    Returns
    -------
    str
    """
    if step is None:
        text = (f"training diverged in a training step: {what}. The "
                "model keeps its state from before that step. ")
    else:
        before = f"as after step {n_steps}" if n_steps else "as initialised"
        text = (f"training diverged at step {step}: {what}. The model "
                "keeps its state from before that step (atoms, pre-bias, optimizer state, "
                f"counters and history {before}). ")
    big = float(np.finfo(dtype).max)
    if not max_norm2 < np.inf:  # inf or NaN
        scale = "the squared norms of the signals minus the pre-bias overflow"
    else:
        scale = (f"the signals minus the pre-bias reach a squared norm of {max_norm2:.3g} "
                 "in this batch, and products of such numbers overflow")
    scale += (f" {dtype.name} (largest finite value {big:.3g}). If the data themselves "
              "are that large, rescale them, for instance to unit variance.")
    large = not max_norm2 * max_norm2 <= big
    if update == "adam":
        at = "" if lr_now == lr else f" ({lr_now:.3g} at this step of the schedule)"
        text += (f"The learning rate is lr={lr:.3g}{at}: try lr={lr / 10:.3g} or smaller "
                 "(set_params(lr=...), then partial_fit continues from here).")
        return f"{text} Also, {scale}" if large else text
    text += f"update={update!r} has no learning rate; check the data's scale"
    if large:
        return f"{text}: {scale}"
    return f"{text} (squared norms of the signals minus the pre-bias up to {max_norm2:.3g})."
