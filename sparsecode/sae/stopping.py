"""When training stops: a held-out split, the check of its error, and the rule.

A run with no fixed number of epochs (``n_epochs=None``) trains until the explained
variance of held-out signals stops improving.  :class:`Stopper` is the rule and its state
(saved with the run, so a resumed run stops where an uninterrupted one would);
:func:`held_out_fvu` the measurement; :func:`validation_rows` the split of an array.

The reasons a run stops (``MPSAE.stop_reason_``):

- ``"converged"``: the held-out FVU did not improve by more than ``stop_tol`` (relative)
  over ``n_iter_no_change`` checks in a row;
- ``"n_epochs"``: the given number of passes was made;
- ``"max_epochs"``, ``"max_steps"``, ``"max_time"``: a cap was reached before converging
  (a :class:`ConvergenceWarning` says so);
- ``"data"``: an iterable of batches ran out.
"""

import math

import numpy as np

from sparsecode._backend import to_host

#: Why a run stopped; the last three are caps that end a run before it converged.
STOP_REASONS = ("converged", "n_epochs", "data", "max_epochs", "max_steps", "max_time")
CAPS = ("max_epochs", "max_steps", "max_time")
#: Held-out rows at most (a check costs about as much as this many training signals).
MAX_VALIDATION_ROWS = 1 << 15
#: Training signals between checks at most (a check every epoch, or every this many
#: signals when an epoch is longer).
MAX_CHECK_SAMPLES = 1 << 20
#: Factor of the learning rate after a check that did not improve (``schedule="plateau"``).
PLATEAU_FACTOR = 0.5


class ConvergenceWarning(UserWarning):
    """A training run stopped at a cap (epochs, steps or time) before its held-out error
    stopped improving."""


class Stopper:
    """The stopping rule: stop after ``n_iter_no_change`` checks in a row that did not
    lower the best held-out FVU by more than ``stop_tol`` times it.

    Parameters
    ----------
    n_iter_no_change : int
    stop_tol : float

    Attributes
    ----------
    best : float
        Lowest held-out FVU so far (inf before the first check).
    best_step : int
        Training step of that check.
    n_bad : int
        Checks since the last improvement.
    n_checks : int
    """

    def __init__(self, n_iter_no_change, stop_tol):
        self.n_iter_no_change = int(n_iter_no_change)
        self.stop_tol = float(stop_tol)
        self.best = math.inf
        self.best_step = 0
        self.n_bad = 0
        self.n_checks = 0

    def update(self, fvu, step):
        """Record the held-out FVU of a check at ``step``.

        Returns
        -------
        improved : bool
            Whether it beat the best by more than ``stop_tol`` (relative).
        """
        self.n_checks += 1
        if not fvu < math.inf:
            raise ValueError(f"the held-out FVU is {fvu}")
        improved = fvu < self.best - self.stop_tol * abs(self.best) if self.best < math.inf \
            else True
        if improved:
            self.best, self.best_step, self.n_bad = float(fvu), int(step), 0
        else:
            self.n_bad += 1
        return improved

    @property
    def converged(self):
        """Whether the last ``n_iter_no_change`` checks brought no improvement."""
        return self.n_bad >= self.n_iter_no_change

    def state_dict(self):
        """JSON scalars :meth:`load_state_dict` restores."""
        return {"stop_best": self.best if self.best < math.inf else None,
                "stop_best_step": self.best_step, "stop_n_bad": self.n_bad,
                "stop_n_checks": self.n_checks}

    def load_state_dict(self, scalars):
        best = scalars.get("stop_best")
        self.best = math.inf if best is None else float(best)
        self.best_step = int(scalars.get("stop_best_step", 0))
        self.n_bad = int(scalars.get("stop_n_bad", 0))
        self.n_checks = int(scalars.get("stop_n_checks", 0))
        return self


def validation_rows(n_samples, fraction, rng):
    """Rows held out of an array of ``n_samples`` for the stopping rule.

    Parameters
    ----------
    n_samples : int
    fraction : float
        In (0, 1): ``round(fraction n_samples)`` rows, at most
        :data:`MAX_VALIDATION_ROWS`.
    rng : numpy.random.Generator

    Returns
    -------
    train, held_out : ndarray of int
        Sorted row indices.

    Raises
    ------
    ValueError
        When either side of the split would be empty.
    """
    n_val = min(int(round(fraction * n_samples)), MAX_VALIDATION_ROWS)
    if n_val < 1 or n_val >= n_samples:
        raise ValueError(
            f"validation_fraction={fraction} of {n_samples} rows leaves "
            f"{'no rows to hold out' if n_val < 1 else 'no rows to train on'}; give more "
            "rows, another validation_fraction, or n_epochs (a fixed number of passes, no "
            "held-out rows)"
        )
    held = np.sort(rng.choice(n_samples, n_val, replace=False))
    keep = np.ones(n_samples, bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def check_every(steps_per_epoch, batch_rows):
    """Training steps between checks: one epoch, or :data:`MAX_CHECK_SAMPLES` signals
    when an epoch holds more."""
    return max(1, min(int(steps_per_epoch), MAX_CHECK_SAMPLES // max(int(batch_rows), 1)))


def spread(X, batch_rows=4096):
    """``sum ||x - mean||^2`` over the rows of ``X`` (float64, on the host, in blocks).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    float
    """
    mean = to_host(X).mean(axis=0, dtype=np.float64)
    total = 0.0
    for s in range(0, X.shape[0], batch_rows):
        dev = to_host(X[s:s + batch_rows]).astype(np.float64) - mean
        total += float(np.einsum("ij,ij->", dev, dev))
    return total


def held_out_fvu(engine, X, batch_rows=4096, total=None):
    """FVU of the model of ``engine`` on the signals ``X``: ``sum ||x - x_hat||^2 / sum
    ||x - mean||^2`` (float64 sums; inf when the signals all equal their mean but are
    not reconstructed), encoded as :meth:`~sparsecode.MPSAE.transform` does.

    Parameters
    ----------
    engine : Engine
    X : ndarray of shape (n_samples, n_features)
        In the model's dtype and device.
    batch_rows : int
        Signals encoded at a time.
    total : float, optional
        ``spread(X)``, when known (the engine computes it once for its held-out rows).

    Returns
    -------
    float
    """
    c = engine.config
    D, b = engine.components, engine.bias
    total = spread(X, batch_rows) if total is None else total
    err = 0.0
    for s in range(0, X.shape[0], batch_rows):
        Xb = X[s:s + batch_rows]
        codes = engine.encoder(Xb - b, D, k=c.k, tol=c.tol, solver=c.solver)
        R = to_host(Xb - b - codes.decode(D)).astype(np.float64)
        err += float(np.einsum("ij,ij->", R, R))
    if total > 0:
        return err / total
    return 0.0 if err == 0 else math.inf
