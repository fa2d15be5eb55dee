"""Checks at the public boundary.

Every check raises ``ValueError`` or ``TypeError`` with the argument's name, what was
expected and what was given.  Kernels never validate: they trust what passes here.
"""

import numbers

import numpy as np

from sparsecode import _config
from sparsecode._backend import array_module, is_cupy, row_norms2, to_host


def describe(x):
    """A short description of ``x`` for error messages."""
    if isinstance(x, np.ndarray) or is_cupy(x):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def float_dtype(*arrays):
    """Return the dtype the computation runs in.

    float32 and float64 are kept, float16 is computed in float32, integers and booleans
    in float64.  Mixed inputs are computed in the wider type.
    """
    out = []
    for a in arrays:
        dt = a.dtype
        if dt == np.float16:
            dt = np.dtype(np.float32)
        elif dt.kind in "biu":
            dt = np.dtype(np.float64)
        out.append(dt)
    return np.result_type(*out)


def check_array(x, name, *, ndim=2):
    """Return ``x`` as a real NumPy array of ``ndim`` dimensions, without copying.

    A CuPy array is checked on its device and returned as it is.

    Raises
    ------
    TypeError
        If ``x`` is not array-like of real numbers.
    ValueError
        If ``x`` has the wrong number of dimensions, is empty, or holds NaN or inf.
    """
    if x is None:
        raise TypeError(f"{name} must be an array of shape (n, m); got None")
    if hasattr(x, "tocsr") or hasattr(x, "todense"):
        raise TypeError(
            f"{name} must be a dense array; sparse input is not supported "
            f"(got {type(x).__name__}). Convert it with {name}.toarray()."
        )
    xp = array_module(x)
    try:
        a = x if xp is not np else np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a type error
        raise TypeError(f"{name} must be array-like; got {type(x).__name__}") from exc
    if a.dtype.kind == "c":
        raise ValueError(
            f"{name} must hold real numbers. Complex data not supported (got dtype {a.dtype})"
        )
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must hold real numbers; got dtype object with entries that are not "
                f"numbers ({exc})"
            ) from exc
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (float32, float64, float16 or integers); "
            f"got dtype {a.dtype}. Convert it with {name}.astype(numpy.float32)."
        )
    if a.ndim != ndim:
        hint = (f" Reshape your data: {name}.reshape(1, -1) for a single signal."
                if a.ndim == 1 and ndim == 2 else "")
        raise ValueError(f"{name} must be {ndim}-D; got {describe(a)}.{hint}")
    if a.size == 0:
        if ndim == 2 and a.shape[1] == 0:
            raise ValueError(
                f"{name} must not be empty; got 0 feature(s) (shape={a.shape}) while a "
                "minimum of 1 is required."
            )
        raise ValueError(f"{name} must not be empty; got {describe(a)}")
    if a.dtype.kind == "f" and not _all_finite(a, xp):
        bad = xp.argwhere(~xp.isfinite(a))[0]
        raise ValueError(
            f"{name} must be finite; got NaN or inf, first at index {tuple(int(i) for i in bad)}"
        )
    return a


#: Bytes of an array checked for NaN and inf at a time: the check's temporaries stay this
#: small whatever the array (an 8 GiB float16 Gram matrix took 4 GiB checked whole).
FINITE_CHUNK_BYTES = 16 << 20
_HALF_EXPONENT = np.uint16(0x7C00)  # all ones in a float16's exponent: inf or nan


def _all_finite(a, xp):
    """Whether the float array ``a`` holds no NaN or inf.  NumPy arrays are checked a
    chunk of rows at a time, float16 through its bits (NumPy's float16 ``isfinite``
    widens every entry)."""
    if xp is not np:
        return bool(xp.isfinite(a).all())
    rows = max(1, FINITE_CHUNK_BYTES // max(1, a[:1].nbytes))
    for r0 in range(0, a.shape[0], rows):
        part = a[r0:r0 + rows]
        if a.dtype == np.float16:
            if bool(((part.view(np.uint16) & _HALF_EXPONENT) == _HALF_EXPONENT).any()):
                return False
        elif not bool(np.isfinite(part).all()):
            return False
    return True


def check_on_backend(a, name, on_gpu):
    """``a`` as an array of the chosen backend: a host array bound for the GPU is first
    checked as an array on the host (:func:`check_array`) and copied to the device; a
    device array is copied to the host for the CPU.  Finer checks follow where it lands.
    """
    if on_gpu:
        if is_cupy(a):
            return a
        from sparsecode.gpu import require

        return require().asarray(check_array(a, name))
    return to_host(a)


def check_signals_and_dictionary(X, D):
    """Validate signals and dictionary and bring them to one float dtype.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    D : array-like of shape (n_atoms, n_features)

    Returns
    -------
    X, D : ndarray
        Same dtype (float32 or float64); copied only when the dtype had to change.  NumPy
        or CuPy like the inputs (both of one kind).
    norms2 : ndarray of shape (n_atoms,)
        Squared atom norms, in float64.
    """
    X = check_array(X, "X")
    D = check_array(D, "D")
    if X.shape[1] != D.shape[1]:
        raise ValueError(
            f"X and D must have the same number of features (columns); got X with "
            f"{X.shape[1]} (shape {X.shape}) and D with {D.shape[1]} (shape {D.shape}). "
            "D holds one atom per row: shape (n_atoms, n_features)."
        )
    dt = float_dtype(X, D)
    X = X.astype(dt, copy=False)
    D = D.astype(dt, copy=False)
    norms2 = row_norms2(D)
    # atoms are normalised by 1 / ||d||, which must be representable in the dtype
    # (norms2 is float64: in float64 a norm below ~1e-154 underflows it to 0)
    smallest = 1.0 / float(np.finfo(dt).max)
    xp = array_module(D)
    suspect = to_host(xp.flatnonzero((norms2 < smallest * smallest) | (norms2 == 0)))
    if suspect.size:
        is_zero = to_host(~(D[suspect] != 0).any(axis=1))
        zero, tiny = suspect[is_zero], suspect[~is_zero]
        if zero.size:
            raise ValueError(
                f"D must not contain zero-norm atoms; atom(s) {zero[:10].tolist()} "
                f"{'(and more) ' if zero.size > 10 else ''}have norm 0. Remove them or "
                "replace them with random unit vectors."
            )
        d = to_host(D[int(tiny[0])]).astype(np.float64)
        m = np.abs(d).max()
        norm = m * np.sqrt(np.sum((d / m) ** 2))  # without underflow
        raise ValueError(
            f"D has atoms too small to normalise in {dt}: atom(s) {tiny[:10].tolist()} "
            f"{'(and more) ' if tiny.size > 10 else ''}(atom {int(tiny[0])} has norm "
            f"{norm:.3g}; the smallest {dt} handles is about "
            f"{max(smallest, np.sqrt(np.finfo(np.float64).tiny)):.3g}). Rescale D."
        )
    return X, D, norms2


def check_k_tol(k, tol, n_atoms, n_features, *, k_may_exceed_atoms=False):
    """Validate the stopping rule and return ``(k, tol)`` with defaults filled in.

    When only ``tol`` is given, ``k`` defaults to ``n_features`` for MP
    (``k_may_exceed_atoms``) and to ``min(n_atoms, n_features)`` for OMP and GP; ``tol``
    defaults to 0.
    """
    if k is None and tol is None:
        raise ValueError("give k (maximum number of steps/atoms), tol, or both; got neither")
    if k is not None:
        k = check_count(k, "k")
        if not k_may_exceed_atoms and k > n_atoms:
            raise ValueError(f"k must be <= n_atoms = {n_atoms}; got k = {k}")
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"tol must be a real number in [0, 1); got {describe(tol)}")
        tol = float(tol)
        if not (0.0 <= tol < 1.0):
            raise ValueError(
                f"tol must be in [0, 1) (a fraction of ||x||^2 left in the residual); got {tol}"
            )
    if k is None:
        k = n_features if k_may_exceed_atoms else min(n_atoms, n_features)
    return k, (0.0 if tol is None else tol)


def check_count(value, name, minimum=1):
    """Return ``value`` as an int, checked to be an integer ``>= minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` and floats included).
    ValueError
        If ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_bool(value, name):
    """Return ``value`` as a bool, checked to be one (``numpy.bool_`` included): a string
    such as ``"no"`` is truthy and would silently mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {describe(value)}")
    return bool(value)


def check_real(value, name, low=None, high=None, *, low_open=False, high_open=False):
    """Return ``value`` as a float, checked to be a finite real number within the bounds
    (closed unless ``low_open`` / ``high_open``).

    Raises
    ------
    TypeError
        If ``value`` is not a real number (``bool`` included).
    ValueError
        If it is not finite or lies outside the bounds.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {describe(value)}")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    span = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    bad = not np.isfinite(v)
    bad |= low is not None and (v <= low if low_open else v < low)
    bad |= high is not None and (v >= high if high_open else v > high)
    if bad:
        raise ValueError(f"{name} must be a finite number in {span}; got {value!r}")
    return v


def check_choice(value, name, choices):
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_gram(gram, norms2, dtype):
    """Validate a precomputed Gram matrix against the atoms' squared norms.

    Returns the Gram as an array of ``dtype``; it is copied only when its dtype differs
    (pass a Gram of the signals' dtype to reuse it without copies).
    """
    G = check_array(gram, "gram")
    K = norms2.shape[0]
    if G.shape != (K, K):
        raise ValueError(
            f"gram must have shape (n_atoms, n_atoms) = {(K, K)} to match D; got shape {G.shape}"
        )
    G = G.astype(dtype, copy=False)
    xp = array_module(G)
    diag = G.diagonal().astype(np.float64)
    rtol = _config.GRAM_CHECK_RTOL[np.dtype(dtype)]
    bad = xp.flatnonzero(xp.abs(diag - norms2) > rtol * norms2)
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            "gram does not match D: its diagonal must be the squared atom norms; "
            f"at atom {j} expected {float(norms2[j]):.6g}, got {float(diag[j]):.6g}. "
            "Build it with sparsecode.gram(D)."
        )
    return G


def check_half_gram(gram, norms2):
    """Validate a float16 Gram matrix, which the pursuits read as it is (16-bit rows):
    shape ``(n_atoms, n_atoms)``, unit-norm atoms and a diagonal of ones.

    Returns it C-contiguous (NumPy or CuPy, as given).
    """
    G = check_array(gram, "gram")
    K = norms2.shape[0]
    if G.shape != (K, K):
        raise ValueError(
            f"gram must have shape (n_atoms, n_atoms) = {(K, K)} to match D; got shape {G.shape}")
    xp = array_module(G)
    if bool(xp.any(xp.abs(norms2 - 1.0) > _config.HALF_GRAM_ATOL)):
        raise ValueError("a float16 gram is read as it is, so D's atoms must have unit norm: "
                         "normalise D, or pass a Gram matrix in D's dtype")
    diag = G.diagonal().astype(np.float64)
    bad = xp.flatnonzero(xp.abs(diag - 1.0) > _config.HALF_GRAM_ATOL)
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"gram does not match D: the diagonal of a float16 gram of unit atoms "
                         f"must be 1; at atom {j} it is {float(diag[j]):.6g}. "
                         "Build it with sparsecode.gram(D, dtype='float16').")
    return xp.ascontiguousarray(G)
