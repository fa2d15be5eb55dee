"""The checked, frozen configuration of an MP-SAE training run.

:meth:`TrainConfig.from_params` is the one place where the estimator's parameters are
validated, and :meth:`TrainConfig.total_steps`, :meth:`TrainConfig.forget_for` and
:meth:`TrainConfig.dead_window_for` the one place where the run's length, the online
update's forgetting and the dead-atom window are derived from them: the estimator, the
data-parallel trainer and the command line all ask here.
"""

import math
import numbers
from dataclasses import dataclass, fields, replace

import numpy as np

from sparsecode._rules import RULES
from sparsecode._validation import check_bool, check_choice, check_count, check_real
from sparsecode.sae import optim

#: Encoders of an MP-SAE (``solver``) and ways its atoms learn (``update``).
SOLVERS = ("mp", "topk", "omp", "gp")
UPDATES = ("adam", "mod", "ksvd", "online")

#: ``lr="auto"`` is this many times higher in a run given ``max_time``, which decays over
#: the last ``cooldown`` of its seconds (see :meth:`TrainConfig.resolve`).
TIMED_LR_FACTOR = 2.0


@dataclass(frozen=True)
class TrainConfig:
    """The parameters of :class:`~sparsecode.MPSAE`, checked (see its docstring for
    each); ``dtype`` is a NumPy dtype and ``betas`` a tuple."""

    n_atoms: int
    k: int
    solver: str = "mp"
    selection: str = "abs"
    tol: float | None = None
    update: str = "adam"
    batch_size: object = "auto"
    n_epochs: int | None = None
    max_epochs: int = 100
    max_time: float | None = None
    validation_fraction: float = 0.1
    n_iter_no_change: int = 3
    stop_tol: float = 1e-3
    lr: object = "auto"
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    schedule: str = "auto"
    warmup_steps: int = 0
    cooldown: float = 0.2
    final_lr_ratio: float = 0.1
    max_steps: int | None = None
    clip_grad: float | None = 1.0
    pre_bias: bool = True
    unit_atoms: bool = False
    forget: float | None = None
    init: object = "auto"
    resample_dead: bool = True
    dead_window: int | None = None
    log_every: int = 50
    dtype: np.dtype = np.dtype(np.float32)

    @classmethod
    def from_params(cls, params):
        """Check the estimator's parameters and freeze them.

        Parameters
        ----------
        params : dict
            ``MPSAE.get_params()`` (keys that are not fields, such as ``callback``, are
            ignored).

        Returns
        -------
        TrainConfig

        Raises
        ------
        ValueError, TypeError
            Naming the parameter, what it must be and what it was.
        """
        p = {f.name: params[f.name] for f in fields(cls) if f.name in params}
        check_count(p["n_atoms"], "n_atoms")
        check_count(p["k"], "k")
        check_choice(p["solver"], "solver", SOLVERS)
        check_choice(p["selection"], "selection", tuple(RULES))
        check_choice(p["update"], "update", UPDATES)
        check_choice(p["schedule"], "schedule", ("auto", *optim.SCHEDULES))
        if isinstance(p["init"], str):
            check_choice(p["init"], "init", ("auto", "signals", "random"))
        check_choice(str(np.dtype(p["dtype"])), "dtype", ("float32", "float64"))
        p["dtype"] = np.dtype(p["dtype"])
        for name in ("max_steps", "n_epochs"):
            if p[name] is not None:
                check_count(p[name], name)
        if p["batch_size"] is not None and p["batch_size"] != "auto":
            check_count(p["batch_size"], "batch_size")
        check_count(p["max_epochs"], "max_epochs")
        check_count(p["n_iter_no_change"], "n_iter_no_change")
        check_real(p["validation_fraction"], "validation_fraction", 0.0, 1.0,
                   low_open=True, high_open=True)
        check_real(p["stop_tol"], "stop_tol", 0.0)
        if p["max_time"] is not None:
            check_real(p["max_time"], "max_time", 0.0, low_open=True)
        check_count(p["log_every"], "log_every")
        if p["solver"] != "mp" and p["k"] > p["n_atoms"]:
            raise ValueError(
                f"k must be <= n_atoms = {p['n_atoms']} for solver={p['solver']!r}; "
                f"got {p['k']}"
            )
        if p["solver"] == "topk" and p["tol"] is not None:
            raise ValueError("tol applies to the pursuit solvers; solver='topk' takes k atoms")
        lr = p["lr"]
        if lr != "auto" and (isinstance(lr, bool) or not (
                isinstance(lr, numbers.Real) and 0 < lr < math.inf)):
            raise ValueError(f"lr must be a positive number or 'auto'; got {lr!r}")
        if p["tol"] is not None:
            check_real(p["tol"], "tol", 0.0, 1.0, high_open=True)
        betas = p["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        for i, beta in enumerate(betas):
            check_real(beta, f"betas[{i}]", 0.0, 1.0, high_open=True)
        check_real(p["weight_decay"], "weight_decay", 0.0)
        check_count(p["warmup_steps"], "warmup_steps", 0)
        check_real(p["cooldown"], "cooldown", 0.0, 1.0)
        check_real(p["final_lr_ratio"], "final_lr_ratio", 0.0, 1.0)
        if p["clip_grad"] is not None:
            check_real(p["clip_grad"], "clip_grad", 0.0, low_open=True)
        if p["dead_window"] is not None:
            check_count(p["dead_window"], "dead_window")
        for name in ("pre_bias", "unit_atoms", "resample_dead"):
            p[name] = check_bool(p[name], name)
        if p["forget"] is not None and not (0.0 < float(p["forget"]) <= 1.0):
            raise ValueError(f"forget must be in (0, 1]; got {p['forget']!r}")
        if p["update"] != "adam" and p["solver"] == "topk":
            raise ValueError("solver='topk' trains with update='adam' only")
        p["betas"] = tuple(p["betas"])
        return cls(**p)

    @property
    def gradient_encoder(self):
        """True when the atoms learn through the exact gradient of the unrolled encoder
        (``update="adam"`` with ``solver="mp"`` or ``"topk"``)."""
        return self.update == "adam" and self.solver in ("mp", "topk")

    def resolve(self, n_samples=None, *, held_out=False):
        """This configuration with ``"auto"`` settled for a run over ``n_samples`` rows.

        - ``batch_size="auto"``: with ``update="adam"``, ``n_samples / 32`` rounded to a
          power of two within [256, 4096] (4096 when the size is unknown): small data
          needs many steps per epoch, large data gains nothing from steps below 4096
          signals.  The classic updates take 4096 rows (and at least ``4 n_atoms``),
          as their least-squares updates need several signals per atom.
        - ``lr="auto"``: ``1e-2 sqrt(256 / n_atoms)`` within [3e-4, 1e-2] (Adam's step on
          atoms of unit norm; a wider dictionary gets fewer signals per atom a step, hence
          noisier gradients), times :data:`TIMED_LR_FACTOR` when ``max_time`` is set and
          the run decays over its last seconds (``cooldown > 0``, a schedule other than
          ``"constant"``): a run that ends on a low rate can start higher.
        - ``schedule="auto"``: ``"plateau"`` when the run stops on held-out rows, else
          ``"cosine"``.
        - ``init="auto"``: random unit vectors for ``solver="topk"`` (atoms drawn from
          correlated signals make a tied TopK decoder add up nearly parallel atoms),
          else signals.

        Parameters
        ----------
        n_samples : int, optional
            Rows the run passes over each epoch (None: unknown).
        held_out : bool
            Whether the run checks held-out rows (the stopping rule).

        Returns
        -------
        TrainConfig
        """
        bs = self.batch_size
        if bs == "auto":
            if self.update != "adam":
                bs = max(4096, 4 * self.n_atoms)
            elif n_samples is None:
                bs = 4096
            else:
                bs = 1 << int(round(math.log2(max(n_samples / 32, 1))))
                bs = min(max(bs, 256), 4096)
        lr = self.lr
        schedule = self.schedule
        if schedule == "auto":
            schedule = "plateau" if held_out else "cosine"
        if lr == "auto":
            lr = min(max(1e-2 * math.sqrt(256 / self.n_atoms), 3e-4), 1e-2)
            if self.decays_in_time(schedule):
                lr *= TIMED_LR_FACTOR
        init = self.init
        if isinstance(init, str) and init == "auto":
            init = "random" if self.solver == "topk" else "signals"
        return replace(self, batch_size=bs, lr=float(lr), schedule=schedule, init=init)

    def decays_in_time(self, schedule=None):
        """True when the learning rate decays over the last ``cooldown`` of ``max_time``
        (``schedule``: the resolved schedule, default this configuration's)."""
        schedule = self.schedule if schedule is None else schedule
        return self.max_time is not None and self.cooldown > 0 and schedule != "constant"

    def batch_rows(self, n_samples):
        """Signals per step when fitting an array of ``n_samples`` rows."""
        return n_samples if self.batch_size is None else min(self.batch_size, n_samples)

    def total_steps(self, batches_per_epoch, n_epochs=None):
        """Length of the run: ``batches_per_epoch * n_epochs`` steps, capped by
        ``max_steps``; ``max_steps`` (or None) when the number of batches is unknown.

        Parameters
        ----------
        batches_per_epoch : int or None
        n_epochs : int, optional
            Passes over the data (default: the configured ``n_epochs``).

        Returns
        -------
        int or None
        """
        if batches_per_epoch is None:
            return self.max_steps
        total = int(batches_per_epoch) * (self.n_epochs if n_epochs is None else n_epochs)
        return total if self.max_steps is None else min(total, self.max_steps)

    def steps_per_epoch(self, n_samples):
        """Batches in one pass over an array of ``n_samples`` rows."""
        return math.ceil(n_samples / self.batch_rows(n_samples))

    def forget_for(self, n_samples=None):
        """Forgetting factor of the online statistics per step: the configured
        ``forget``, else ``1 - batch_size / n_samples`` (about one pass of memory) when
        the run's data size is known and larger than a batch, else 1.

        Parameters
        ----------
        n_samples : int, optional
            Rows the run passes over.

        Returns
        -------
        float
        """
        if self.forget is not None:
            return self.forget
        if n_samples is None:
            return 1.0
        bs = self.batch_rows(n_samples)
        return max(1.0 - bs / n_samples, 0.0)

    def dead_window_for(self, n_init):
        """Samples over which an unused atom counts as dead: the configured
        ``dead_window``, else ``max(batch_size, 50 n_atoms / k)`` (``n_init``, the rows the
        model was initialised from, standing in for the batch size when there is none).
        """
        if self.dead_window is not None:
            return self.dead_window
        return max(self.batch_size or n_init, 50 * self.n_atoms // self.k)
