"""Export a fitted :class:`~sparsecode.MPSAE` or a
:class:`~sparsecode.pretrained.PretrainedSAE` in SAELens' on-disk format.

SAELens (``sae_lens``) loads an SAE from a directory holding ``cfg.json`` and
``sae_weights.safetensors`` (``SAE.load_from_disk``).  An MPSAE that encodes by matching
pursuit becomes SAELens' ``"matching_pursuit"`` architecture, a tied, inference-only
MP-SAE whose only parameters are the decoder ``W_dec`` and the decoder bias ``b_dec``; a
TopK MPSAE becomes its ``"topk"`` architecture.  The weights file is written by
:func:`sparsecode.io.safetensors.write_tensors` (the bytes the ``safetensors`` package
writes), so no optional dependency is needed.
"""

import warnings
from pathlib import Path

import numpy as np

from sparsecode.io._export import (
    CFG_FILENAME,
    check_model,
    check_target,
    contiguous,
    folded,
    provenance,
    write_export,
)

#: The weights file SAELens reads (``sae_lens.constants``).
WEIGHTS_FILENAME = "sae_weights.safetensors"
#: SAELens' architecture of each PretrainedSAE architecture it has.
ARCHITECTURES = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu",
                 "gated": "gated", "matching_pursuit": "matching_pursuit"}
#: The tensors of each SAELens architecture, besides ``W_dec`` and ``b_dec``.
_TENSORS = {"standard": ("W_enc", "b_enc"), "topk": ("W_enc", "b_enc"),
            "jumprelu": ("W_enc", "b_enc", "threshold"),
            "gated": ("W_enc", "b_gate", "b_mag", "r_mag"), "matching_pursuit": ()}

__all__ = ["ARCHITECTURES", "CFG_FILENAME", "WEIGHTS_FILENAME", "export_saelens"]


def export_saelens(model, directory, *, overwrite=False):
    """Write a fitted MPSAE or a PretrainedSAE as a SAELens SAE.

    Writes ``directory/cfg.json`` and ``directory/sae_weights.safetensors``, which
    ``sae_lens.SAE.load_from_disk(directory)`` loads, and :func:`sparsecode.io.load_sae`
    reads back.

    Parameters
    ----------
    model : MPSAE or PretrainedSAE
        A fitted MPSAE: ``solver="mp"`` with ``selection="positive"`` becomes SAELens'
        ``"matching_pursuit"`` SAE, ``solver="topk"`` its ``"topk"`` SAE; other
        configurations are exported with a :class:`UserWarning` (see Notes).  A
        PretrainedSAE of architecture ``"relu"`` (SAELens' ``"standard"``), ``"topk"``,
        ``"jumprelu"``, ``"gated"`` or ``"matching_pursuit"``.
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
        ``model`` is neither an :class:`~sparsecode.MPSAE` nor a PretrainedSAE.
    NotFittedError
        ``model`` is an MPSAE that is not fitted.
    ValueError
        A PretrainedSAE SAELens cannot express: architecture ``"groupmax"``, a skip
        connection (``W_skip``), or a matching-pursuit SAE normalising its input by a
        factor.
    FileExistsError
        ``directory`` already holds ``cfg.json`` or ``sae_weights.safetensors`` and
        ``overwrite`` is False, or it holds a sparsify export (``sae.safetensors``), which
        reads the same ``cfg.json``.
    NotADirectoryError
        ``directory`` exists and is not a directory.

    Notes
    -----
    **MP-SAE.**  ``sae_weights.safetensors`` holds exactly two tensors in the model's
    dtype: ``W_dec`` of shape (n_atoms, n_features), equal to ``model.components_``,
    and ``b_dec`` of shape (n_features,), equal to ``model.bias_`` (zeros without a
    pre-bias).  ``cfg.json`` sets ``apply_b_dec_to_input``, so SAELens encodes
    ``x - b_dec`` and decodes ``acts @ W_dec + b_dec``, as :meth:`MPSAE.transform` and
    :meth:`MPSAE.inverse_transform` do.

    SAELens' encoder, per signal, starting from ``r = x - b_dec``, repeats up to
    ``max_iterations`` times: ``j = argmax relu(W_dec r)``, ``v = relu(W_dec[j] . r)``,
    ``acts[j] += v``, ``r -= v W_dec[j]``; it stops a signal once its support did not
    change in a step (``stop_on_duplicate_support``).  That is the map MPSAE's
    ``"positive"`` MP runs, step for step, including the stop when an atom is selected
    again (its increment is kept) or no correlation is positive.  So the export
    reproduces ``model.transform`` (with its default ``k``) and
    ``model.inverse_transform``: the feature activations are the dense codes.

    The atoms are exported *as they are*, not normalised.  With ``unit_atoms=False``
    (MPSAE's default) the atom norms are free and MPSAE's encoder is the unrolled map
    ``r <- r - (d . r) d`` taken literally: it selects by the raw correlation ``d . r``
    and steps by ``(d . r) d``, which is exactly SAELens' loop on the raw ``W_dec``.
    Normalising the rows would turn it into MP on unit atoms, a different encoder (other
    atoms selected, other step sizes) that the model was not trained with.  With
    ``unit_atoms=True`` the atoms have unit norm to rounding anyway.  (SAELens refuses
    ``fold_W_dec_norm`` on this architecture for the same reason.)

    ``max_iterations`` is ``model.k``.  ``residual_threshold`` is 0.0 (disabled):
    SAELens stops a signal once the *absolute* ``||r|| <`` the threshold, while MPSAE's
    ``tol`` is relative to ``||x - b||^2``, so no single threshold matches; MPSAE's
    :meth:`~MPSAE.transform` does not apply the training ``tol`` by default either.
    ``stop_on_duplicate_support`` is true for ``selection="positive"``.  The one
    remaining difference: MPSAE also stops when the selected correlation is below
    ``1e-5 ||x - b||`` (float32; ``1e-12`` in float64), where SAELens takes that tiny
    step, so the two can differ by about that much once a signal is fitted exactly.

    SAELens always selects by the positive rule and runs MP: a model with
    ``selection="abs"`` or ``"signed"``, or with ``solver="omp"`` or ``"gp"``, is
    exported (its atoms and bias are valid) with a :class:`UserWarning`, since SAELens
    will encode it differently from ``model.transform``.

    **TopK MPSAE.**  SAELens' ``"topk"`` SAE computes
    ``pre = (x - b_dec) @ W_enc + b_enc``, keeps the ``k`` largest and applies a ReLU, and
    decodes ``acts @ W_dec + b_dec``.  The export writes ``W_enc = components_.T``,
    ``b_enc = 0``, ``W_dec = components_``, ``b_dec = bias_``, ``k = model.k`` and
    ``rescale_acts_by_decoder_norm`` false: the scores are the raw correlations with the
    atoms as they are, which is what MPSAE's TopK encoder ranks and codes by.  With
    ``selection="positive"`` (or ``"signed"``, which ranks TopK the same way) the export
    reproduces ``model.transform``: the same atoms, in the same order (decreasing score,
    ties to the lower atom), with the same values to rounding.  ``selection="abs"``
    ranks by ``|d . r|`` and keeps negative codes, which SAELens' ReLU drops: exported
    with a :class:`UserWarning`.

    The config of an MPSAE carries a ``metadata`` dict with sparsecode's provenance:
    ``sparsecode_version``, ``n_steps``, ``solver``, ``selection``, ``k``, ``tol``.

    **PretrainedSAE.**  The weights SAELens' architecture holds, in the model's dtype:
    ``W_enc``, ``b_enc`` (standard, topk, jumprelu), ``threshold`` (jumprelu), ``b_gate``,
    ``b_mag``, ``r_mag`` (gated), ``W_dec``, ``b_dec``; ``apply_b_dec_to_input``, ``k``,
    ``rescale_acts_by_decoder_norm``, ``max_iterations``, ``residual_threshold`` and
    ``stop_on_duplicate_support`` as the model has them.  Input normalisations map back
    to SAELens' ``normalize_activations``: ``"none"``, ``"constant_norm_rescale"`` and
    ``"layer_norm"`` by name; a constant factor (``normalize="scale"``: Llama Scope's
    dataset-wise norm, SAELens' ``expected_average_only_in`` with a known factor) is
    folded into the weights as SAELens' ``fold_activation_norm_scaling_factor`` does
    (``W_enc * s``, ``W_dec / s``, ``b_dec / s``; a TopK SAE rescaling by its decoder
    norms has that folded too), leaving ``"none"``: the same codes and reconstructions,
    to rounding.  The metadata records ``hook_name`` (where known) and the format the
    model was read from.

    **Writing.**  Both files are written into a temporary directory next to
    ``directory`` (same parent, hence same file system) and moved into place with
    :func:`os.replace`, weights first, so a file at its final path is always whole; the
    temporary directory is removed whether or not the export succeeds.
    """
    if check_model(model) == "mpsae":
        tensors, cfg = _from_mpsae(model)
    else:
        tensors, cfg = _from_pretrained(model)
    target = Path(directory)
    check_target(target, (CFG_FILENAME, WEIGHTS_FILENAME), overwrite,
                 foreign=("sae.safetensors", "a sparsify export"))
    write_export(target, WEIGHTS_FILENAME, tensors, cfg)
    return target


def _from_mpsae(model):
    """The tensors and config of an MPSAE, with a warning where SAELens encodes it
    differently."""
    topk = model.solver == "topk"
    if topk and model.selection == "abs":
        warnings.warn(
            "model.selection is 'abs': SAELens' topk SAE ranks by the signed score and "
            "drops negative ones (ReLU), so it will encode differently from "
            "model.transform (the exported atoms and bias are still the model's)",
            UserWarning, stacklevel=3)
    if not topk and model.selection != "positive":
        warnings.warn(
            f"model.selection is {model.selection!r}: SAELens' matching_pursuit SAE always "
            "selects by the positive rule, so it will encode differently from "
            "model.transform (the exported atoms and bias are still the model's)",
            UserWarning, stacklevel=3)
    if model.solver not in ("mp", "topk"):
        warnings.warn(
            f"model.solver is {model.solver!r}: SAELens' matching_pursuit SAE always encodes "
            "by matching pursuit, so it will encode differently from model.transform",
            UserWarning, stacklevel=3)
    dtype = np.dtype(model.components_.dtype)
    D = contiguous(model.components_, dtype)
    m, d = D.shape
    tensors = {"W_dec": D, "b_dec": contiguous(model.bias_, dtype)}
    tol = model.tol
    cfg = _base_config("topk" if topk else "matching_pursuit", d, m, dtype,
                       apply_b_dec_to_input=True, normalize="none")
    if topk:
        tensors.update(W_enc=np.ascontiguousarray(D.T), b_enc=np.zeros(m, dtype))
        cfg.update(k=int(min(model.k, m)), rescale_acts_by_decoder_norm=False)
    else:
        cfg.update(max_iterations=int(model.k), residual_threshold=0.0,
                   stop_on_duplicate_support=model.selection == "positive")
    cfg["metadata"] = provenance(n_steps=int(model.n_steps_), solver=model.solver,
                                 selection=model.selection, k=int(model.k),
                                 tol=None if tol is None else float(tol))
    return tensors, cfg


def _from_pretrained(sae):
    """The tensors and config of a PretrainedSAE SAELens has an architecture for."""
    if sae.architecture not in ARCHITECTURES:
        raise ValueError(
            f"SAELens has no {sae.architecture} architecture (it has "
            f"{', '.join(sorted(set(ARCHITECTURES.values())))}); export this SAE with "
            "export_sparsify instead")
    if sae.W_skip is not None:
        raise ValueError("this SAE has a skip connection (W_skip), which SAELens' SAEs do "
                         "not have; export it with export_sparsify instead")
    sae = folded(sae, scale=True)
    arch = ARCHITECTURES[sae.architecture]
    dtype = sae.dtype
    m, d = sae.W_dec.shape
    tensors = {name: contiguous(getattr(sae, name), dtype)
               for name in ("W_dec", "b_dec") + _TENSORS[arch]}
    cfg = _base_config(arch, d, m, dtype, apply_b_dec_to_input=sae.apply_b_dec_to_input,
                       normalize=sae.normalize)
    if arch == "topk":
        cfg.update(k=int(sae.k),
                   rescale_acts_by_decoder_norm=sae.rescale_acts_by_decoder_norm)
    elif arch == "matching_pursuit":
        cfg.update(max_iterations=int(sae.max_iterations),
                   residual_threshold=float(sae.residual_threshold),
                   stop_on_duplicate_support=sae.stop_on_duplicate_support)
    meta = {}
    if sae.info.get("hookpoint") is not None:
        meta["hook_name"] = str(sae.info["hookpoint"])
    if sae.info.get("format") is not None:
        meta["source_format"] = str(sae.info["format"])
    cfg["metadata"] = provenance(**meta)
    return tensors, cfg


def _base_config(architecture, d, m, dtype, *, apply_b_dec_to_input, normalize):
    """The fields of SAELens' ``SAEConfig`` every architecture has."""
    return {
        "architecture": architecture,
        "d_in": int(d),
        "d_sae": int(m),
        "dtype": np.dtype(dtype).name,
        "device": "cpu",
        "apply_b_dec_to_input": bool(apply_b_dec_to_input),
        "normalize_activations": normalize,
        "reshape_activations": "none",
    }
