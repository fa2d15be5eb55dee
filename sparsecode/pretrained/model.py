"""``PretrainedSAE``: a sparse autoencoder trained elsewhere, held as NumPy arrays, with
its own encoder and the pursuits of :mod:`sparsecode` on its decoder."""

import numpy as np

from sparsecode._validation import check_array, check_choice, check_count
from sparsecode.codes import SparseCodes

#: Encoders reproduced (``"relu"`` is SAELens' ``standard``).
ARCHITECTURES = ("relu", "topk", "jumprelu", "gated", "groupmax", "matching_pursuit")
#: Input normalisations: none; ``x * norm_scale`` (SAELens' ``expected_average_only_in``
#: with a known factor, Llama Scope's dataset-wise norm); ``sqrt(d) / ||x||`` per row
#: (``constant_norm_rescale``); centring and scaling per row (``layer_norm``).
NORMALIZATIONS = ("none", "scale", "constant_norm_rescale", "layer_norm")
#: Pursuits on the decoder's rows.
SOLVERS = ("omp", "gp", "mp")
#: SAELens' ``layer_norm`` adds this to the row's standard deviation.
LAYER_NORM_EPS = 1e-5


class PretrainedSAE:
    """A pretrained sparse autoencoder: its weights, its encoder, and pursuits on its
    decoder.

    Usually made by :func:`sparsecode.io.load_sae`.  Every array is in one float dtype
    (that of ``W_dec``); arrays read from disk may be read-only memory maps.

    The forward pass, as the original libraries run it::

        x_n  = normalize(x)                    # see ``normalize``
        x_in = x_n - b_dec  if apply_b_dec_to_input  else  x_n
        pre  = x_in @ W_enc + b_enc            # (n_atoms,) scores per signal
        acts = encoder(pre)                    # the architecture's activation
        x_hat = denormalize(acts @ W_dec + b_dec) + x @ W_skip.T

    Parameters
    ----------
    W_dec : ndarray of shape (n_atoms, n_features)
        Decoder, one atom per row.
    b_dec : ndarray of shape (n_features,), optional
        Decoder bias (zeros when omitted).
    architecture : {"relu", "topk", "jumprelu", "gated", "groupmax", "matching_pursuit"}
        ``"relu"``: ``acts = relu(pre)``.  ``"topk"``: the ``k`` largest positive ``pre``.
        ``"jumprelu"``: ``pre`` where ``pre > threshold`` and ``pre > 0``.  ``"gated"``:
        ``relu(exp(r_mag) * x_in W_enc + b_mag)`` where ``x_in W_enc + b_gate > 0``.
        ``"groupmax"``: the largest positive ``pre`` of each of ``k`` consecutive equal
        groups of atoms.  ``"matching_pursuit"``: SAELens' tied encoder on ``W_dec`` (no
        ``W_enc``): up to ``max_iterations`` steps ``j = argmax relu(W_dec r)``,
        ``v = relu(W_dec[j] . r)``, ``acts[j] += v``, ``r -= v W_dec[j]``.
    W_enc : ndarray of shape (n_features, n_atoms), optional
        Encoder (every architecture but ``"matching_pursuit"``).
    b_enc : ndarray of shape (n_atoms,), optional
        Encoder bias (zeros when omitted; unused by ``"gated"``).
    k : int, optional
        ``"topk"``: atoms kept; ``"groupmax"``: number of groups (dividing ``n_atoms``).
    threshold : float or ndarray of shape (n_atoms,), optional
        ``"jumprelu"``'s thresholds.
    b_gate, r_mag, b_mag : ndarray of shape (n_atoms,), optional
        ``"gated"``'s gate bias, log magnitude scale and magnitude bias.
    W_skip : ndarray of shape (n_features, n_features), optional
        A linear skip connection added to the reconstruction (``x @ W_skip.T``).
    apply_b_dec_to_input : bool
        Subtract ``b_dec`` from the (normalised) input before encoding.
    normalize : {"none", "scale", "constant_norm_rescale", "layer_norm"}
        ``"scale"``: ``x_n = x * norm_scale``; ``"constant_norm_rescale"``:
        ``x_n = x * sqrt(n_features) / ||x||``; ``"layer_norm"``:
        ``x_n = (x - mean(x)) / (std(x) + 1e-5)`` (``std`` with ``n - 1``).  The
        reconstruction is mapped back by the inverse of the same row's map.
    norm_scale : float, optional
        The factor of ``normalize="scale"``.
    rescale_acts_by_decoder_norm : bool
        ``"topk"``: scores are ``pre * ||W_dec[j]||`` and the decoder divides the
        activations by ``||W_dec[j]||`` (SAELens).
    max_iterations : int, optional
        ``"matching_pursuit"``: steps per signal (default ``n_features``).
    residual_threshold : float
        ``"matching_pursuit"``: stop a signal once ``||r|| <`` this (0: never).
    stop_on_duplicate_support : bool
        ``"matching_pursuit"``: stop a signal once a step leaves its support unchanged.
    info : dict, optional
        Where the model came from (format, path, hookpoint, the original config).

    Attributes
    ----------
    n_atoms, n_features_in_ : int
    components_ : ndarray of shape (n_atoms, n_features)
        ``W_dec``, the atoms the pursuits use.
    """

    def __init__(self, W_dec, b_dec=None, *, architecture, W_enc=None, b_enc=None, k=None,
                 threshold=None, b_gate=None, r_mag=None, b_mag=None, W_skip=None,
                 apply_b_dec_to_input=True, normalize="none", norm_scale=None,
                 rescale_acts_by_decoder_norm=False, max_iterations=None,
                 residual_threshold=0.0, stop_on_duplicate_support=True, info=None):
        check_choice(architecture, "architecture", ARCHITECTURES)
        check_choice(normalize, "normalize", NORMALIZATIONS)
        W_dec = check_array(W_dec, "W_dec")
        if W_dec.dtype.kind != "f" or W_dec.dtype.itemsize < 4:
            W_dec = W_dec.astype(np.float32)
        dt = W_dec.dtype
        m, d = W_dec.shape
        self.architecture = architecture
        self.W_dec = W_dec
        self.b_dec = _vector(b_dec, "b_dec", d, dt)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.normalize = normalize
        self.norm_scale = None
        if normalize == "scale":
            if norm_scale is None or not np.isfinite(norm_scale) or norm_scale <= 0:
                raise ValueError(f"normalize='scale' needs a positive finite norm_scale; got "
                                 f"{norm_scale!r}")
            self.norm_scale = float(norm_scale)
        self.W_enc = None
        self.b_enc = _vector(b_enc, "b_enc", m, dt)
        if architecture == "matching_pursuit":
            if W_enc is not None:
                raise ValueError("a matching_pursuit SAE is tied: it has no W_enc")
        else:
            if W_enc is None:
                raise ValueError(f"a {architecture} SAE needs W_enc")
            W_enc = check_array(W_enc, "W_enc")
            if W_enc.shape != (d, m):
                raise ValueError(f"W_enc has shape {W_enc.shape}; W_dec {W_dec.shape} needs "
                                 f"W_enc of shape {(d, m)}")
            self.W_enc = W_enc.astype(dt, copy=False)
        self.k = None
        if architecture in ("topk", "groupmax"):
            if k is None:
                raise ValueError(f"a {architecture} SAE needs k")
            self.k = check_count(k, "k")
            if architecture == "topk":
                self.k = min(self.k, m)
            elif m % self.k:
                raise ValueError(f"groupmax needs k dividing n_atoms; got k={k} with "
                                 f"{m} atoms")
        self.threshold = None
        if architecture == "jumprelu":
            if threshold is None:
                raise ValueError("a jumprelu SAE needs threshold")
            thr = np.asarray(threshold, dtype=dt)
            self.threshold = _vector(np.broadcast_to(thr, (m,)) if thr.ndim == 0 else thr,
                                     "threshold", m, dt)
        self.b_gate = self.r_mag = self.b_mag = None
        if architecture == "gated":
            self.b_gate = _vector(b_gate, "b_gate", m, dt, required=True)
            self.r_mag = _vector(r_mag, "r_mag", m, dt, required=True)
            self.b_mag = _vector(b_mag, "b_mag", m, dt, required=True)
        self.W_skip = None
        if W_skip is not None:
            W_skip = check_array(W_skip, "W_skip")
            if W_skip.shape != (d, d):
                raise ValueError(f"W_skip has shape {W_skip.shape}; expected {(d, d)}")
            self.W_skip = W_skip.astype(dt, copy=False)
        self.rescale_acts_by_decoder_norm = bool(rescale_acts_by_decoder_norm)
        self.max_iterations = (d if max_iterations is None
                               else check_count(max_iterations, "max_iterations"))
        self.residual_threshold = float(residual_threshold)
        if not self.residual_threshold >= 0:
            raise ValueError(f"residual_threshold must be >= 0; got {residual_threshold!r}")
        self.stop_on_duplicate_support = bool(stop_on_duplicate_support)
        self.info = dict(info or {})
        # the decoder in memory and its Gram matrix: built by the first pursuit that
        # needs them and kept for the model's life (sparsecode.pretrained.native)
        self._atoms = None
        self._gram = None
        self._gram_rows = None
        self._enc_rows = None

    # ---- shapes -------------------------------------------------------------------------

    @property
    def n_atoms(self):
        """int: number of atoms (latents)."""
        return self.W_dec.shape[0]

    @property
    def n_features_in_(self):
        """int: width of the activations."""
        return self.W_dec.shape[1]

    @property
    def components_(self):
        """ndarray of shape (n_atoms, n_features): the decoder's atoms."""
        return self.W_dec

    @property
    def dtype(self):
        """The float dtype of the weights (and of codes and reconstructions)."""
        return self.W_dec.dtype

    def __repr__(self):
        extra = f", k={self.k}" if self.k is not None else ""
        fmt = self.info.get("format")
        src = f", format={fmt!r}" if fmt else ""
        return (f"PretrainedSAE({self.architecture}, n_atoms={self.n_atoms}, "
                f"n_features={self.n_features_in_}{extra}, dtype={self.dtype}{src})")

    # ---- the forward pass ---------------------------------------------------------------

    def check_signals(self, X):
        """``X`` as a finite 2-D array of the model's width and dtype.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        X = check_array(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features per row; this SAE takes "
                             f"{self.n_features_in_}")
        return X.astype(self.dtype, copy=False)

    def encoder_input(self, X):
        """The rows the SAE's encoder sees: normalised, minus ``b_dec`` when the
        architecture subtracts it.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        X_in : ndarray of shape (n_samples, n_features)
        """
        return self._encoder_input(self.check_signals(X))

    def _encoder_input(self, X):
        Xn = _forward_map(self, X, _row_stats(self, X))
        if self.apply_b_dec_to_input:
            Xn = Xn - self.b_dec
        return Xn

    def decoder_target(self, X):
        """What ``codes @ W_dec`` must approximate for the reconstruction to equal ``X``:
        ``X`` minus its skip term, mapped by ``X``'s normalisation, minus ``b_dec`` where
        the decoder adds it.  The pursuits encode these rows.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        return self._decoder_target(self.check_signals(X))

    def _decoder_target(self, X):
        T = X if self.W_skip is None else X - X @ self.W_skip.T
        T = _forward_map(self, T, _row_stats(self, X))
        if self.architecture != "matching_pursuit" or self.apply_b_dec_to_input:
            T = T - self.b_dec
        return T

    def encode(self, X, *, solver=None, k=None, positive=True, refit=False):
        """Sparse codes of ``X``: by the SAE's own encoder, or by a pursuit on its decoder.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        solver : {None, "omp", "gp", "mp"}
            None: the architecture's encoder.  Otherwise that pursuit on the rows of
            ``W_dec`` ("inference-time optimisation"), after the same normalisation and
            ``b_dec``.
        k : int, optional
            The pursuit's number of atoms per signal (default: the SAE's ``k`` or
            ``max_iterations``; required for the other architectures).
        positive : bool
            Pursuits: non-negative coefficients, as the SAE's activations are (``"mp"``:
            the positive selection rule).
        refit : bool
            Replace the coefficients by least squares on each signal's support (never a
            worse reconstruction; coefficients may turn negative).

        Returns
        -------
        SparseCodes
            Of width the largest number of atoms a signal uses; values in the SAE's units
            (what its ``encode`` returns), so :meth:`decode` reconstructs.
        """
        return self._encode(self.check_signals(X), solver=solver, k=k, positive=positive,
                            refit=refit)

    def _encode(self, X, *, solver=None, k=None, positive=True, refit=False):
        """:meth:`encode` of signals already checked (:meth:`check_signals`)."""
        from sparsecode.pretrained.native import encode_native, encode_pursuit, refit_codes

        if solver is None and k is not None:
            raise ValueError("k applies to the pursuits (solver='omp', 'gp' or 'mp'); the "
                             "SAE's own encoder keeps its own")
        if solver is None:
            codes = encode_native(self, self._encoder_input(X))
        else:
            check_choice(solver, "solver", SOLVERS)
            k = self._pursuit_k(k)
        if solver is not None or refit:
            T = self._decoder_target(X)
        if solver is not None:
            codes = encode_pursuit(self, T, solver, k, bool(positive))
        if refit:
            codes = refit_codes(self, T, codes)
        return codes

    def _pursuit_k(self, k):
        if k is not None:
            return check_count(k, "k")
        if self.architecture == "topk":
            return self.k
        if self.architecture == "groupmax":
            return self.k
        if self.architecture == "matching_pursuit":
            return self.max_iterations
        raise ValueError(f"k is needed: a {self.architecture} SAE has no fixed number of "
                         "atoms per signal")

    def atom_scale(self):
        """ndarray of shape (n_atoms,) or None: what the SAE's activations are multiplied
        by to become coefficients of ``W_dec``'s rows (``1 / ||W_dec[j]||`` with
        ``rescale_acts_by_decoder_norm``, else None)."""
        if not self.rescale_acts_by_decoder_norm:
            return None
        norms = np.sqrt(np.einsum("ij,ij->i", self.W_dec, self.W_dec, dtype=np.float64))
        with np.errstate(divide="ignore"):
            return np.where(norms > 0, 1.0 / norms, 0.0).astype(self.dtype)

    def decode(self, codes, X=None):
        """Reconstruct signals from codes.

        Parameters
        ----------
        codes : SparseCodes
            Codes of ``n`` signals on this SAE (from :meth:`encode`).
        X : array-like of shape (n, n_features), optional
            The signals the codes came from: needed when the SAE normalises each row
            (``constant_norm_rescale``, ``layer_norm``) or has a skip connection.

        Returns
        -------
        ndarray of shape (n, n_features)
        """
        if not isinstance(codes, SparseCodes):
            raise TypeError(f"codes must be SparseCodes; got {type(codes).__name__}")
        if codes.n_atoms != self.n_atoms:
            raise ValueError(f"codes refer to {codes.n_atoms} atoms; this SAE has "
                             f"{self.n_atoms}")
        needs_x = self.normalize in ("constant_norm_rescale", "layer_norm") or (
            self.W_skip is not None)
        if X is None and needs_x:
            why = ("has a skip connection" if self.W_skip is not None
                   else f"normalises each row ({self.normalize})")
            raise ValueError(f"this SAE {why}: pass the signals the codes came from as X")
        if X is not None:
            X = self.check_signals(X)
            if X.shape[0] != len(codes):
                raise ValueError(f"X has {X.shape[0]} rows; codes have {len(codes)}")
        return self._decode(codes, X)

    def _decode(self, codes, X):
        """:meth:`decode` of codes of this SAE and checked signals (or None)."""
        scale = self.atom_scale()
        vals = codes.values if scale is None else codes.values * scale[
            np.maximum(codes.indices, 0)]
        Y = SparseCodes(codes.indices, vals.astype(self.dtype, copy=False),
                        self.n_atoms).decode(self.W_dec).astype(self.dtype, copy=False)
        if self.architecture != "matching_pursuit" or self.apply_b_dec_to_input:
            Y = Y + self.b_dec
        Y = _inverse_map(self, Y, None if X is None else _row_stats(self, X))
        if self.W_skip is not None:
            Y = Y + X @ self.W_skip.T
        return Y

    def reconstruct(self, X, **encode_options):
        """``decode(encode(X, **encode_options), X)``."""
        X = self.check_signals(X)
        return self._decode(self._encode(X, **encode_options), X)

    def score(self, X, **encode_options):
        """Fraction of variance of ``X`` the SAE leaves unexplained (FVU, lower is better),
        with :meth:`encode`'s options.

        Returns
        -------
        float
        """
        from sparsecode.metrics import fvu

        X = self.check_signals(X)
        return fvu(X, self._decode(self._encode(X, **encode_options), X))


def _row_stats(sae, X):
    """What the normalisation of each row of ``X`` needs (None when it is not per row)."""
    if sae.normalize == "constant_norm_rescale":
        norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
        with np.errstate(divide="ignore"):
            return (np.sqrt(X.shape[1]) / norms).astype(sae.dtype)[:, None]
    if sae.normalize == "layer_norm":
        mu = X.mean(axis=1, dtype=np.float64, keepdims=True).astype(sae.dtype)
        Xm = X - mu
        std = np.sqrt(np.einsum("ij,ij->i", Xm, Xm, dtype=np.float64)
                      / max(X.shape[1] - 1, 1))[:, None].astype(sae.dtype)
        return mu, std
    return None


def _forward_map(sae, T, stats):
    """The normalisation of rows ``T`` with the statistics of the rows they belong to."""
    if sae.normalize == "none":
        return T
    if sae.normalize == "scale":
        return T * sae.dtype.type(sae.norm_scale)
    if sae.normalize == "constant_norm_rescale":
        return T * stats
    mu, std = stats
    return (T - mu) / (std + sae.dtype.type(LAYER_NORM_EPS))


def _inverse_map(sae, Y, stats):
    """The inverse of the normalisation on reconstructions (SAELens' output map)."""
    if sae.normalize == "none":
        return Y
    if sae.normalize == "scale":
        return Y / sae.dtype.type(sae.norm_scale)
    if sae.normalize == "constant_norm_rescale":
        return Y / stats
    mu, std = stats
    return Y * std + mu


def _finite(a, name):
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _vector(v, name, n, dtype, required=False):
    if v is None:
        if required:
            raise ValueError(f"{name} is required")
        return np.zeros(n, dtype=dtype)
    v = _finite(np.asarray(v), name)
    if v.shape != (n,):
        raise ValueError(f"{name} has shape {v.shape}; expected ({n},)")
    return v.astype(dtype, copy=False)
