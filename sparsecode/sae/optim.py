"""Adam / AdamW, learning-rate schedules and gradient clipping, in NumPy.

The state is plain arrays (``state_dict`` / ``load_state_dict``), so a training run can be
saved and resumed exactly.
"""

import math

import numpy as np

#: Learning-rate schedules understood by :func:`learning_rate`.
SCHEDULES = ("constant", "cosine", "wsd", "plateau")


def learning_rate(step, *, lr, schedule="cosine", total_steps=None, warmup_steps=0,
                  cooldown=0.2, final_ratio=0.1):
    """Learning rate at optimiser step ``step`` (0-based).

    Parameters
    ----------
    step : int
    lr : float
        Peak learning rate.
    schedule : {"constant", "cosine", "wsd", "plateau"}
        After a linear warmup of ``warmup_steps``: ``"constant"`` holds ``lr``
        (so does ``"plateau"``, which the training loop lowers when the held-out error
        stalls);
        ``"cosine"`` decays from ``lr`` to ``final_ratio * lr`` along a half cosine until
        ``total_steps``; ``"wsd"`` (warmup-stable-decay) holds ``lr`` and decays linearly to
        ``final_ratio * lr`` over the last ``cooldown`` fraction of ``total_steps``.
    total_steps : int or None
        Length of the run.  Without it the decaying schedules hold ``lr`` after warmup.
    warmup_steps : int
    cooldown : float
        Fraction of the run spent decaying (``"wsd"``).
    final_ratio : float
        Last learning rate as a fraction of ``lr``.

    Returns
    -------
    float
    """
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule in ("constant", "plateau") or not total_steps or step >= total_steps:
        if schedule in ("cosine", "wsd") and total_steps and step >= total_steps:
            return lr * final_ratio
        return lr
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        frac = (step - warmup_steps) / span
        return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
    # wsd
    start = total_steps - int(round(cooldown * total_steps))
    if step < start:
        return lr
    frac = (step - start) / max(total_steps - start, 1)
    return lr * (1 - (1 - final_ratio) * frac)



def time_decay(seconds, max_time, *, cooldown=0.2, final_ratio=0.1):
    """Fraction of the peak learning rate a run capped at ``max_time`` seconds takes after
    ``seconds`` of training: 1, then linearly down to ``final_ratio`` over the last
    ``cooldown`` fraction of the time (the ``"wsd"`` cooldown, in seconds).

    Parameters
    ----------
    seconds : float
        Training time so far.
    max_time : float
        The run's time cap.
    cooldown : float
        Fraction of ``max_time`` spent decaying (0: no decay).
    final_ratio : float
        Fraction of the peak rate at ``max_time`` and after.

    Returns
    -------
    float
    """
    if cooldown <= 0:
        return 1.0
    start = (1.0 - cooldown) * max_time
    if seconds <= start:
        return 1.0
    frac = min((seconds - start) / (cooldown * max_time), 1.0)
    return 1.0 - (1.0 - final_ratio) * frac

def clip_grad_norm(grads, max_norm):
    """Scale ``grads`` in place so their joint 2-norm is at most ``max_norm``.

    Parameters
    ----------
    grads : list of ndarray
        NumPy or CuPy arrays.
    max_norm : float or None
        No clipping when None or not positive.

    Returns
    -------
    float
        The joint norm before clipping (summed in float64 when the squares overflow the
        gradients' dtype).
    """
    from sparsecode._backend import array_module

    sq = sum(float(array_module(g).vdot(g, g)) for g in grads)
    if not math.isfinite(sq):  # the squares overflowed the grads' dtype, or are non-finite
        sq = sum(float(array_module(g).vdot(g64, g64))
                 for g in grads for g64 in [g.astype(np.float64)])
    norm = math.sqrt(sq)
    if max_norm and max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-12)
        for g in grads:
            g *= scale
    return norm


class Adam:
    """Adam, or AdamW with ``weight_decay`` (decoupled), over a list of arrays.

    Parameters
    ----------
    shapes : list of tuple
        Shapes of the parameters, in the order :meth:`step` receives them.
    betas : tuple of float
    eps : float
    weight_decay : float
        Decoupled weight decay (AdamW); 0 gives Adam.
    dtype : dtype
        dtype of the moment estimates.
    xp : module
        ``numpy``, or ``cupy`` to keep the moments on the GPU (the parameters and
        gradients passed to :meth:`step` must then be CuPy arrays too).
    """

    def __init__(self, shapes, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 dtype=np.float32, xp=np):
        self.betas = tuple(float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self._gpu = xp is not np  # the module itself is not stored: models pickle
        self.m = [xp.zeros(s, dtype=dtype) for s in shapes]
        self.v = [xp.zeros(s, dtype=dtype) for s in shapes]
        self.t = 0

    @property
    def xp(self):
        """The array module of the moments (``numpy`` or ``cupy``)."""
        if self._gpu:
            import cupy

            return cupy
        return np

    def step(self, params, grads, lr):
        """Update ``params`` in place from ``grads`` with learning rate ``lr``
        (:meth:`propose` then :meth:`commit`)."""
        self.commit(params, self.propose(params, grads, lr))

    def propose(self, params, grads, lr):
        """The step from ``grads`` with learning rate ``lr``, computed into new arrays;
        nothing changes until :meth:`commit` (so a step can be checked, and dropped).

        The temporaries an in-place step would allocate become the new moments; the
        parameters cost one more array each, and :meth:`commit` one copy.

        Returns
        -------
        list of tuple
            ``(new_param, new_m, new_v)`` per parameter.
        """
        t = self.t + 1
        b1, b2 = self.betas
        c1 = 1 - b1**t
        c2 = 1 - b2**t
        xp = self.xp
        out = []
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m_new = m * b1
            m_new += (1 - b1) * g
            v_new = g * g
            v_new *= 1 - b2
            v_new += b2 * v
            denom = v_new / c2
            xp.sqrt(denom, out=denom)
            denom += self.eps
            delta = (lr / c1) * m_new
            delta /= denom
            if self.weight_decay:
                p_new = p * (1 - lr * self.weight_decay)
                p_new -= delta
            else:
                p_new = xp.subtract(p, delta, out=delta)
            out.append((p_new, m_new, v_new))
        return out

    def commit(self, params, new):
        """Take the step :meth:`propose` returned: ``params`` are written in place, the
        moments replaced."""
        for i, (p, (p_new, m_new, v_new)) in enumerate(zip(params, new, strict=True)):
            p[...] = p_new
            self.m[i] = m_new
            self.v[i] = v_new
        self.t += 1

    def reset_rows(self, index, rows):
        """Zero the moments of ``rows`` (a NumPy boolean mask or indices) of parameter
        ``index`` (resampled atoms)."""
        rows = self.xp.asarray(rows)
        self.m[index][rows] = 0
        self.v[index][rows] = 0

    def state_dict(self):
        """dict of NumPy arrays and numbers that :meth:`load_state_dict` restores."""
        out = {"t": self.t}
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            out[f"m{i}"] = m.get() if self.xp is not np else m.copy()
            out[f"v{i}"] = v.get() if self.xp is not np else v.copy()
        return out

    def load_state_dict(self, state):
        """Restore the state saved by :meth:`state_dict`."""
        self.t = int(state["t"])
        for i in range(len(self.m)):
            self.m[i][...] = self.xp.asarray(state[f"m{i}"])
            self.v[i][...] = self.xp.asarray(state[f"v{i}"])
