"""What a training run saves and restores: the half of :class:`~sparsecode.sae.Engine`
that turns its state into arrays and JSON scalars (model files, checkpoints) and back."""

import time
from dataclasses import replace

import numpy as np

from sparsecode._backend import on_device_of
from sparsecode.sae.stopping import Stopper


class SavedState:
    """:meth:`state_dict` and :meth:`load_state_dict` of an
    :class:`~sparsecode.sae.Engine` (which this is a base of)."""

    def state_dict(self):
        """Everything a resumed run needs beyond ``components`` and ``bias``.

        Returns
        -------
        arrays : dict of str to ndarray
        scalars : dict of str to JSON-serialisable values
        """
        arrays, scalars = {}, {
            "n_steps": self.n_steps, "n_samples_seen": self.n_samples_seen,
            "n_features_in": int(self.components.shape[1]), "total_steps": self.total_steps,
            "forget": self.forget, "data_scale": self.scale, "lr_factor": self.lr_factor,
            "last_check": self.last_check,
            "n_checks": self.n_checks, "rng": self.rng.bit_generator.state,
            "seconds": time.perf_counter() - self._t0,
            # the settings "auto" resolved to for this run
            "batch_size": self.config.batch_size, "lr": self.config.lr,
            "schedule": self.config.schedule,
        }
        for name, value in self.optimizer.state_dict().items():
            if isinstance(value, np.ndarray):
                arrays[f"adam_{name}"] = value
            else:
                scalars[f"adam_{name}"] = value
        dead = self.dead
        arrays.update(dead_counts=dead.counts, dead_last_used=dead.last_used)
        scalars.update(dead_window=dead.window, dead_n_samples=dead.n_samples)
        if self.stopper is not None:
            scalars.update(self.stopper.state_dict())
        scalars["stop_reason"] = self.stop_reason
        more_arrays, more_scalars = self.update.state_dict()
        arrays.update(more_arrays)
        scalars.update(more_scalars)
        return arrays, scalars

    def load_state_dict(self, components, bias, arrays, scalars, history=()):
        """Restore a run saved by :meth:`state_dict` into this engine (made by
        :meth:`setup` with the same configuration).  Returns ``self``."""
        settled = {k: scalars[k] for k in ("batch_size", "lr", "schedule") if k in scalars}
        self.config = replace(self.config, **settled)
        self.components[...] = on_device_of(components, self.components)
        self.bias[...] = on_device_of(bias, self.bias)
        self.total_steps = scalars["total_steps"]
        self.forget = scalars["forget"]
        # runs saved before the data's scale was kept trained in the data's units
        self.scale = float(scalars.get("data_scale", 1.0))
        self.lr_factor = float(scalars.get("lr_factor", 1.0))
        self.n_steps = int(scalars["n_steps"])
        self.n_samples_seen = int(scalars["n_samples_seen"])
        self.last_check = int(scalars["last_check"])
        self.n_checks = int(scalars["n_checks"])
        self.rng.bit_generator.state = scalars["rng"]
        self._t0 = time.perf_counter() - float(scalars.get("seconds", 0.0))
        opt = {k[5:]: v for k, v in {**arrays, **scalars}.items() if k.startswith("adam_")}
        self.optimizer.load_state_dict(opt)
        dead = self.dead
        dead.window = int(scalars["dead_window"])
        dead.n_samples = int(scalars["dead_n_samples"])
        dead.counts[...] = arrays["dead_counts"]
        dead.last_used[...] = arrays["dead_last_used"]
        self.update.load_state_dict(arrays, scalars)
        if "stop_n_checks" in scalars:
            c = self.config
            self.stopper = Stopper(c.n_iter_no_change, c.stop_tol).load_state_dict(scalars)
        self.stop_reason = scalars.get("stop_reason")
        self.history = [dict(h) for h in history]
        return self
