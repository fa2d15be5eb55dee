"""How the atoms of an MP-SAE learn: one small strategy object per ``update``.

Each strategy has two halves, matching the two halves of a training step (see
:mod:`sparsecode.sae._step`): :meth:`~Update.shard` computes, on one shard of the batch,
what the update needs from the signals (gradients, code statistics, or the signals
themselves), and :meth:`~Update.propose` computes the atoms' move from the merged part of
the batch, into new arrays, checked finite: the engine commits it only then (see
:mod:`sparsecode.sae.divergence`).
"""

import copy
import math

import numpy as np

from sparsecode.sae import optim
from sparsecode.sae.divergence import NonFinite, all_finite, require_finite, within

#: Dead atoms are replaced every ``dead_window`` samples; near-duplicates every this many
#: windows with ``update="adam"`` (every window with the classic updates, whose windows
#: are whole passes and which stall on duplicates).
COHERENCE_EVERY = 4


class Update:
    """The interface of an update; also what the classic updates share."""

    #: Windows between searches for near-duplicated atoms.
    coherence_every = 1
    #: Whether atoms keep free norms (resampled atoms then take the others' mean norm).
    free_norms = False

    def __init__(self, config):
        self.config = config

    def shard(self, Xc, codes, R):
        """What the update needs from one shard: keyword fields of a ``StepPart``.

        Parameters
        ----------
        Xc : ndarray of shape (n, n_features)
            The shard's signals minus the pre-bias.
        codes : SparseCodes of shape (n, n_atoms)
        R : ndarray of shape (n, n_features)
            Residuals ``Xc - codes.decode(D)``.

        Returns
        -------
        dict
        """
        raise NotImplementedError

    def propose(self, engine, part, lr):
        """The move of ``engine.components`` (and pre-bias) from the batch's merged
        ``part``, computed without changing any state.

        Returns
        -------
        commit : callable
            Takes the move: writes the new atoms (and pre-bias, optimiser or online
            state).

        Raises
        ------
        NonFinite
            When the new atoms, pre-bias or state (or what they are computed from) hold
            NaN or inf; nothing has changed.
        """
        raise NotImplementedError

    def forget_atoms(self, mask):
        """Drop what the update remembers of the atoms of ``mask`` (they were resampled)."""

    def state_dict(self):
        """``(arrays, scalars)`` a resumed run needs (names unique across strategies)."""
        return {}, {}

    def load_state_dict(self, arrays, scalars):
        """Inverse of :meth:`state_dict`."""

    @staticmethod
    def _atoms(engine, new):
        """Check the classic update's new atoms ``new`` (any norm); return the commit that
        writes them, normalised, into ``engine.components``."""
        from sparsecode.dictionary import normalize_atoms

        D = engine.components
        new = np.asarray(new, dtype=D.dtype)
        require_finite("the new atoms are NaN or inf", new)
        new = normalize_atoms(new)

        def commit():
            D[...] = new

        return commit


class Adam(Update):
    """Gradient steps (Adam/AdamW) on the mean squared reconstruction error: the exact
    gradient of the unrolled encoder, or the decoder gradient at fixed codes for the
    OMP and GP encoders."""

    coherence_every = COHERENCE_EVERY

    @property
    def free_norms(self):
        return not self.config.unit_atoms

    def shard(self, Xc, codes, R):
        scale = -2.0 / R.shape[0]
        gD = np.asarray(codes.tocsr().T @ R) * scale
        gb = (R.sum(axis=0, dtype=np.float64) * scale).astype(R.dtype)
        return {"grads": [gD.astype(R.dtype, copy=False), gb]}

    def propose(self, engine, part, lr):
        cfg = self.config
        D, b = engine.components, engine.bias
        gD, gb = part.grads
        if cfg.unit_atoms:
            # only the component of each atom's gradient tangent to the unit sphere: the
            # radial part is undone by the renormalisation, and Adam, which scales each
            # coordinate by its own history, would let it inflate the tangent steps
            gD = gD - (gD * D).sum(axis=1, keepdims=True) * D
        # Adam steps the problem of the signals divided by the data's scale s: there the
        # loss is L / s^2 and the pre-bias b / s, so its gradients are gD / s^2 and
        # gb / s (clipping and Adam's epsilon then act the same at any scale)
        s = engine.scale
        grads = [gD / s / s, gb / s] if cfg.pre_bias else [gD / s / s]
        params = [D, b / s] if cfg.pre_bias else [D]
        # an overflow here leaves NaN or inf in the result, which is checked and reported
        with np.errstate(over="ignore", invalid="ignore"):
            optim.clip_grad_norm(grads, cfg.clip_grad)
            new = engine.optimizer.propose(params, grads, lr)
        if cfg.pre_bias:
            new[1] = (new[1][0] * s, *new[1][1:])
        params = [D, b] if cfg.pre_bias else [D]
        # the atoms and pre-bias must keep finite squared norms (entries below
        # sqrt(largest value / n_features)), or the next step's products overflow; a
        # finite second moment (>= 0: its max is finite, or NaN) means finite squared
        # gradients, hence a finite first moment.  Three reductions, no temporaries.
        limit = math.sqrt(np.finfo(D.dtype).max / D.shape[1])
        if not all(within(p, limit) and bool(v.max() < math.inf) for p, _, v in new):
            raise NonFinite(_adam_diagnosis(grads, new, limit))
        if cfg.unit_atoms:
            _normalise_rows(new[0][0])
        return lambda: engine.optimizer.commit(params, new)


class MOD(Update):
    """Least-squares atoms for the batch's codes (method of optimal directions)."""

    def shard(self, Xc, codes, R):
        from sparsecode.dictionary import code_stats

        A, B = code_stats(Xc, codes)
        return {"A": A, "B": B}

    def propose(self, engine, part, lr):
        from sparsecode.dictionary import mod_from_stats

        require_finite("the code statistics are NaN or inf", part.A, part.B)
        return self._atoms(engine, mod_from_stats(part.A, part.B, D=engine.components))


class KSVD(Update):
    """A K-SVD sweep over the atoms (revisits the signals of each atom: not shardable)."""

    def shard(self, Xc, codes, R):
        return {"signals": Xc}

    def propose(self, engine, part, lr):
        from sparsecode.dictionary import ksvd_update

        new, _ = ksvd_update(part.signals, part.codes, engine.components, exact=True)
        return self._atoms(engine, new)


class Online(MOD):
    """Block coordinate descent on running statistics of all batches seen, with
    forgetting (``engine.forget`` per step)."""

    def __init__(self, config, n_features):
        super().__init__(config)
        self.n_features = n_features
        self._stats = None

    @property
    def stats(self):
        """The running :class:`~sparsecode.dictionary.OnlineStats` (allocated on first
        use: shard steps on workers never need them)."""
        if self._stats is None:
            from sparsecode.dictionary import OnlineStats

            self._stats = OnlineStats(self.config.n_atoms, self.n_features)
        return self._stats

    def propose(self, engine, part, lr):
        from sparsecode.dictionary import online_update

        # the statistics move on a copy (O(n_atoms (n_atoms + n_features)), small next to
        # the update's O(n_atoms^2 n_features)), kept only if the new atoms are finite
        stats = copy.deepcopy(self.stats).add(part.A, part.B, part.n, forget=engine.forget)
        require_finite("the online statistics are NaN or inf", stats.A, stats.B)
        D = engine.components
        set_atoms = self._atoms(engine, online_update(D, stats.A, stats.B,
                                                      constraint="sphere"))

        def commit():
            self._stats = stats
            set_atoms()

        return commit

    def forget_atoms(self, mask):
        self.stats.forget_atoms(mask)

    def state_dict(self):
        s = self.stats
        return ({"online_A": s.A, "online_B": s.B},
                {"online_n_samples": s.n_samples, "online_n_updates": s.n_updates})

    def load_state_dict(self, arrays, scalars):
        s = self.stats
        s.A[...] = arrays["online_A"]
        s.B[...] = arrays["online_B"]
        s.n_samples = int(scalars["online_n_samples"])
        s.n_updates = int(scalars["online_n_updates"])


def _adam_diagnosis(grads, new, limit):
    """What went wrong in an Adam step (only called when something did), as a clause."""
    if not all_finite(*grads):
        return "the gradients are NaN or inf"
    names = ("atoms", "pre-bias")[:len(new)]
    large = [n for n, (p, _, _) in zip(names, new, strict=True) if not within(p, limit)]
    moments = [n for n, (_, _, v) in zip(names, new, strict=True) if not all_finite(v)]
    found = []
    if large:
        found.append(f"the updated {' and '.join(large)} hold{'' if large[0] == 'atoms' else 's'}"
                     f" NaN, inf or entries of magnitude {limit:.3g} or more (past which "
                     f"squared norms overflow {new[0][0].dtype})")
    if moments:
        found.append(f"the optimizer's second moments of the {' and '.join(moments)} are "
                     "NaN or inf")
    return "; ".join(found)


def make_update(config, n_features):
    """The strategy of ``config.update``."""
    if config.update == "online":
        return Online(config, n_features)
    return {"adam": Adam, "mod": MOD, "ksvd": KSVD}[config.update](config)


def _normalise_rows(D):
    from sparsecode._backend import array_module

    xp = array_module(D)
    norms = xp.linalg.norm(D, axis=1, keepdims=True)
    xp.maximum(norms, np.finfo(D.dtype).tiny, out=norms)
    D /= norms
