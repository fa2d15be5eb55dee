"""Export a fitted :class:`~sparsecode.MPSAE` in SAELens' on-disk format.

SAELens (``sae_lens``) loads an SAE from a directory holding ``cfg.json`` and
``sae_weights.safetensors`` (``SAE.load_from_disk``).  Its ``"matching_pursuit"``
architecture is a tied, inference-only MP-SAE whose only parameters are the decoder
``W_dec`` and the decoder bias ``b_dec``.
"""

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from sparsecode._backend import to_host

#: File names SAELens reads (``sae_lens.constants``).
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"

_INSTALL_HINT = 'exporting to SAELens needs safetensors: pip install "sparsecode[export]"'


def export_saelens(model, directory, *, overwrite=False):
    """Write a fitted MPSAE as a SAELens ``"matching_pursuit"`` SAE.

    Writes ``directory/cfg.json`` and ``directory/sae_weights.safetensors``, which
    ``sae_lens.SAE.load_from_disk(directory)`` loads as a ``MatchingPursuitSAE``.

    Parameters
    ----------
    model : MPSAE
        A fitted model.  ``solver="mp"`` with ``selection="positive"`` is the only
        configuration SAELens reproduces; other configurations are exported with a
        :class:`UserWarning` (see Notes).
    directory : str or os.PathLike
        Target directory, created (with its parents) if missing.
    overwrite : bool
        Replace an existing export in ``directory``.  Other files there are left alone.

    Returns
    -------
    directory : pathlib.Path
        ``directory`` as given, as a path.

    Raises
    ------
    TypeError
        ``model`` is not an :class:`~sparsecode.MPSAE`.
    NotFittedError
        ``model`` is not fitted.
    ImportError
        safetensors is not installed (``pip install "sparsecode[export]"``).
    FileExistsError
        ``directory`` already holds ``cfg.json`` or ``sae_weights.safetensors`` and
        ``overwrite`` is False.
    NotADirectoryError
        ``directory`` exists and is not a directory.

    Notes
    -----
    **Weights.**  ``sae_weights.safetensors`` holds exactly two tensors in the model's
    dtype: ``W_dec`` of shape (n_atoms, n_features), equal to ``model.components_``,
    and ``b_dec`` of shape (n_features,), equal to ``model.bias_`` (zeros without a
    pre-bias).  ``cfg.json`` sets ``apply_b_dec_to_input``, so SAELens encodes
    ``x - b_dec`` and decodes ``acts @ W_dec + b_dec``, as :meth:`MPSAE.transform` and
    :meth:`MPSAE.inverse_transform` do.

    **Encoder.**  SAELens' encoder, per signal, starting from ``r = x - b_dec``, repeats
    up to ``max_iterations`` times: ``j = argmax relu(W_dec r)``,
    ``v = relu(W_dec[j] . r)``, ``acts[j] += v``, ``r -= v W_dec[j]``; it stops a signal
    once its support did not change in a step (``stop_on_duplicate_support``).  That is
    the map MPSAE's ``"positive"`` MP runs, step for step, including the stop when an
    atom is selected again (its increment is kept) or no correlation is positive.  So
    the export reproduces ``model.transform`` (with its default ``k``) and
    ``model.inverse_transform``: the feature activations are the dense codes.

    The atoms are exported *as they are*, not normalised.  With ``unit_atoms=False``
    (MPSAE's default) the atom norms are free and MPSAE's encoder is the unrolled map
    ``r <- r - (d . r) d`` taken literally: it selects by the raw correlation ``d . r``
    and steps by ``(d . r) d``, which is exactly SAELens' loop on the raw ``W_dec``.
    Normalising the rows would turn it into MP on unit atoms, a different encoder (other
    atoms selected, other step sizes) that the model was not trained with.  With
    ``unit_atoms=True`` the atoms have unit norm to rounding anyway.  (SAELens refuses
    ``fold_W_dec_norm`` on this architecture for the same reason.)

    **Stopping.**  ``max_iterations`` is ``model.k``.  ``residual_threshold`` is 0.0
    (disabled): SAELens stops a signal once the *absolute* ``||r|| <`` the threshold,
    while MPSAE's ``tol`` is relative to ``||x - b||^2``, so no single threshold matches;
    MPSAE's :meth:`~MPSAE.transform` does not apply the training ``tol`` by default
    either.  ``stop_on_duplicate_support`` is true for ``selection="positive"``.  The
    one remaining difference: MPSAE also stops when the selected correlation is below
    ``1e-5 ||x - b||`` (float32; ``1e-12`` in float64), where SAELens takes that tiny
    step, so the two can differ by about that much once a signal is fitted exactly.

    SAELens always selects by the positive rule and runs MP: a model with
    ``selection="abs"`` or ``"signed"``, or with another solver, is exported (its atoms
    and bias are valid) with a :class:`UserWarning`, since SAELens will encode it
    differently from ``model.transform``.

    ``cfg.json`` also carries a ``metadata`` dict (kept by SAELens'
    ``SAEMetadata``) with sparsecode's provenance: ``sparsecode_version``,
    ``n_steps``, ``solver``, ``selection``, ``k``, ``tol``.

    **Writing.**  Both files are written into a temporary directory next to
    ``directory`` (same parent, hence same file system) and moved into place with
    :func:`os.replace`, weights first, so a file at its final path is always whole; the
    temporary directory is removed whether or not the export succeeds.
    """
    from sparsecode.sae.estimator import MPSAE

    if not isinstance(model, MPSAE):
        raise TypeError(f"model must be a fitted MPSAE; got {type(model).__name__}")
    model.engine_  # noqa: B018 - raises NotFittedError when not fitted
    try:
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    if model.selection != "positive":
        warnings.warn(
            f"model.selection is {model.selection!r}: SAELens' matching_pursuit SAE always "
            "selects by the positive rule, so it will encode differently from "
            "model.transform (the exported atoms and bias are still the model's)",
            UserWarning,
            stacklevel=2,
        )
    if model.solver != "mp":
        warnings.warn(
            f"model.solver is {model.solver!r}: SAELens' matching_pursuit SAE always encodes "
            "by matching pursuit, so it will encode differently from model.transform",
            UserWarning,
            stacklevel=2,
        )

    target = Path(directory)
    _check_target(target, overwrite)

    D = to_host(model.components_)
    dtype = np.dtype(D.dtype)
    tensors = {
        "W_dec": np.ascontiguousarray(D, dtype=dtype),
        "b_dec": np.ascontiguousarray(to_host(model.bias_), dtype=dtype),
    }
    cfg = _config(model, dtype)

    target.mkdir(parents=True, exist_ok=True)
    real = target.resolve()  # a symlinked target: write next to where the files land
    tmp = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}."))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILENAME))
        with open(tmp / CFG_FILENAME, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, allow_nan=False)
            f.write("\n")
        # cfg.json last: a fresh export interrupted in between leaves no config that
        # points at missing weights
        for name in (WEIGHTS_FILENAME, CFG_FILENAME):
            os.replace(tmp / name, real / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_target(target, overwrite):
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target}: exists and is not a directory")
    if overwrite or not target.is_dir():
        return
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        path = target / name
        if path.exists():
            raise FileExistsError(
                f"{path}: already exists; pass overwrite=True to replace the export"
            )


def _config(model, dtype):
    """The ``cfg.json`` dict of SAELens' ``MatchingPursuitSAEConfig``."""
    import sparsecode

    tol = model.tol
    return {
        "architecture": "matching_pursuit",
        "d_in": int(model.components_.shape[1]),
        "d_sae": int(model.components_.shape[0]),
        "dtype": dtype.name,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "max_iterations": int(model.k),
        "residual_threshold": 0.0,
        "stop_on_duplicate_support": model.selection == "positive",
        "metadata": {
            "sparsecode_version": sparsecode.__version__,
            "n_steps": int(model.n_steps_),
            "solver": model.solver,
            "selection": model.selection,
            "k": int(model.k),
            "tol": None if tol is None else float(tol),
        },
    }
