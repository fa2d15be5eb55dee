"""What a fitted MP-SAE is, whatever trained it: the engine holding its atoms and
pre-bias, the fitted attributes read from it, and encoding and decoding with it.

:class:`FittedModel` is the half of :class:`~sparsecode.MPSAE` that needs no training
parameters beyond ``n_atoms``, ``k`` and ``solver``; the estimator adds the training.
"""

from sparsecode._backend import on_device_of, to_host
from sparsecode._validation import check_array, check_choice, check_k_tol
from sparsecode.codes import SparseCodes
from sparsecode.sae.config import SOLVERS


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted model is called before ``fit``."""


class FittedModel:
    """The fitted state and the inference of :class:`~sparsecode.MPSAE`.

    A subclass sets ``n_atoms``, ``k``, ``solver`` and ``callback``, and makes the model
    fitted by assigning :attr:`engine_`.
    """

    # ------------------------------------------------------------------ fitted state

    @property
    def engine_(self):
        """Engine: the training engine of the fitted model (its state and step; see
        :mod:`sparsecode.sae.engine`).  Assigning one (a restored run, atoms for
        inference) makes the model fitted with it."""
        return self._fitted()

    @engine_.setter
    def engine_(self, engine):
        engine.callback = self.callback
        self._engine = engine
        self.n_features_in_ = int(engine.components.shape[1])

    @property
    def components_(self):
        return self._fitted().components

    @property
    def bias_(self):
        return self._fitted().bias

    @property
    def n_steps_(self):
        return self._fitted().n_steps

    @property
    def n_samples_seen_(self):
        return self._fitted().n_samples_seen

    @property
    def stop_reason_(self):
        return self._fitted().stop_reason

    @property
    def history_(self):
        return self._fitted().history

    def _fitted(self):
        engine = self.__dict__.get("_engine")
        if engine is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit or partial_fit first"
            )
        return engine

    def _set_engine(self, engine):
        self.engine_ = engine
        return self

    # ------------------------------------------------------------------ inference

    def transform(self, X, *, k=None, tol=None, solver=None):
        """Encode ``X``.

        Inference can use more steps than training, a ``tol`` stop, or another solver on
        the learnt atoms (for instance OMP).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        k : int, optional
            Steps/atoms per signal (default: the training ``k``, or ``n_features`` when
            only ``tol`` is given).
        tol : float, optional
            Stop a signal once ``||r||^2 <= tol ||x - b||^2``.
        solver : {"mp", "topk", "omp", "gp"}, optional
            Default: the training solver (with its selection rule).

        Returns
        -------
        codes : SparseCodes
        """
        engine = self._fitted()
        X = self._check_X(X, "X", reset=False, dtype=engine.config.dtype)
        solver = self.solver if solver is None else check_choice(solver, "solver", SOLVERS)
        if k is None and tol is None:
            k = self.k
        if solver == "topk" and tol is not None:
            raise ValueError("tol applies to the pursuit solvers; solver='topk' takes k atoms")
        # validated here: the free-norm MP encoder and TopK do not go through the solvers
        check_k_tol(k, tol, self.n_atoms, X.shape[1], k_may_exceed_atoms=solver == "mp")
        return engine.encoder(X - on_device_of(engine.bias, X),
                              on_device_of(engine.components, X), k=k, tol=tol, solver=solver)

    def inverse_transform(self, codes):
        """Reconstruct signals from codes: ``z D + b``.

        Parameters
        ----------
        codes : SparseCodes or array-like of shape (n_samples, n_atoms)

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
        """
        engine = self._fitted()
        if isinstance(codes, SparseCodes):
            if codes.n_atoms != self.n_atoms:
                raise ValueError(
                    f"codes must refer to n_atoms = {self.n_atoms} atoms; got {codes.n_atoms}"
                )
            X_hat = codes.decode(on_device_of(engine.components, codes.values))
            return X_hat + on_device_of(engine.bias, X_hat)
        Z = check_array(codes, "codes")
        if Z.shape[1] != self.n_atoms:
            raise ValueError(
                f"codes must have n_atoms = {self.n_atoms} columns; got shape {Z.shape}"
            )
        D, b = on_device_of(engine.components, Z), on_device_of(engine.bias, Z)
        return (Z @ D + b).astype(D.dtype, copy=False)

    def score(self, X, y=None):
        """Explained variance of the reconstruction of ``X`` (1 is perfect).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        float
        """
        if "_engine" in self.__dict__:
            X = self._check_X(X, "X", reset=False, dtype=self._engine.config.dtype)
        X_hat = self.inverse_transform(self.transform(X))
        from sparsecode.metrics import explained_variance

        return float(explained_variance(to_host(X), to_host(X_hat)))

    # ------------------------------------------------------------------ helpers

    def _check_X(self, X, name, *, reset, dtype):
        X = check_array(X, name)
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return X.astype(dtype, copy=False)
