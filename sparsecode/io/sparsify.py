"""Export a fitted :class:`~sparsecode.MPSAE` or a
:class:`~sparsecode.pretrained.PretrainedSAE` in EleutherAI sparsify's on-disk format.

sparsify (``SparseCoder.load_from_disk``, alias ``Sae``) loads an SAE from a folder
holding ``cfg.json`` and ``sae.safetensors``; a model's SAEs are saved one folder per
hookpoint (``SparseCoder.load_many``).  Its encoder is
``relu((x - b_dec) @ encoder.weight.T + encoder.bias)`` followed by TopK (or groupmax),
its decoder ``top_acts @ W_dec[top_indices] + b_dec`` (plus ``x @ W_skip.T`` with a skip
connection).
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
    unit_rows,
    write_export,
)

#: The weights file sparsify reads.
WEIGHTS_FILENAME = "sae.safetensors"
#: The PretrainedSAE architectures sparsify has (its ``activation``).
ARCHITECTURES = ("topk", "groupmax")

__all__ = ["ARCHITECTURES", "CFG_FILENAME", "WEIGHTS_FILENAME", "export_sparsify"]


def export_sparsify(model, directory, *, hookpoint=None, overwrite=False):
    """Write a fitted MPSAE or a TopK or groupmax PretrainedSAE as a sparsify SAE.

    Writes ``cfg.json`` and ``sae.safetensors``, which
    ``sparsify.SparseCoder.load_from_disk`` loads, and :func:`sparsecode.io.load_sae`
    reads back.

    Parameters
    ----------
    model : MPSAE or PretrainedSAE
        A fitted MPSAE (reproduced exactly with ``solver="topk"`` and
        ``selection="positive"`` or ``"signed"``; other configurations are exported
        with a :class:`UserWarning`, see Notes), or a PretrainedSAE of architecture
        ``"topk"`` or ``"groupmax"``.
    directory : str or os.PathLike
        Target directory, created (with its parents) if missing.
    hookpoint : str, optional
        Write into ``directory/hookpoint``, sparsify's layout of one folder per hookpoint
        (``"layers.6"``), which ``load_sae(directory, hookpoint=...)`` and sparsify's
        ``load_many`` read.  A single folder name.
    overwrite : bool
        Replace an existing export in the folder.  Other files there are left alone.

    Returns
    -------
    folder : pathlib.Path
        The folder the files are in: ``directory``, or ``directory/hookpoint``.

    Raises
    ------
    TypeError
        ``model`` is neither an :class:`~sparsecode.MPSAE` nor a PretrainedSAE.
    NotFittedError
        ``model`` is an MPSAE that is not fitted.
    ValueError
        A PretrainedSAE sparsify cannot express (an architecture other than TopK and
        groupmax, or a per-row input normalisation), or a ``hookpoint`` that is not a
        single folder name.
    FileExistsError
        The folder already holds ``cfg.json`` or ``sae.safetensors`` and ``overwrite``
        is False, or it holds a SAELens export (``sae_weights.safetensors``), which reads
        the same ``cfg.json``.
    NotADirectoryError
        The folder exists and is not a directory.

    Notes
    -----
    **Weights.**  ``sae.safetensors`` holds, in the model's dtype, ``encoder.weight``
    of shape (n_atoms, n_features) (``W_enc`` transposed, as ``torch.nn.Linear`` stores
    it), ``encoder.bias`` (n_atoms,), ``W_dec`` (n_atoms, n_features), ``b_dec``
    (n_features,) and, for a model with a skip connection, ``W_skip``
    (n_features, n_features), and no metadata, as sparsify's ``save_model`` writes it.
    ``cfg.json`` holds sparsify's ``SparseCoderConfig``:
    ``activation``, ``expansion_factor`` (``n_atoms // n_features``, at least 1),
    ``normalize_decoder``, ``num_latents`` (``n_atoms``, which sparsify uses over the
    expansion factor), ``k`` (for groupmax: the number of groups), ``multi_topk``
    (false), ``skip_connection``, ``transcode`` (false), and ``d_in``.
    ``normalize_decoder`` is true when the decoder's rows have unit norm (to rounding):
    it only matters to further training in sparsify, which renormalises the rows after
    every step when it is set, and that would change a free-norm model's encoder.

    **MPSAE.**  ``encoder.weight = W_dec = components_`` (tied, the atoms as they are),
    ``encoder.bias = 0``, ``b_dec = bias_``, ``k = model.k``: sparsify's scores are the
    raw correlations ``(x - b) . d``, which MPSAE's TopK encoder ranks and codes by, and
    its ReLU keeps what ``selection="positive"`` keeps.  So a TopK model with the positive
    (or signed) rule is reproduced: the same atoms, the same values to rounding.  Any
    other model (matching pursuit, OMP, GP, or the ``"abs"`` rule) is exported, its
    atoms and bias valid, with a :class:`UserWarning`: sparsify will encode it by TopK.

    **PretrainedSAE.**  The weights as they are, except what sparsify cannot hold, folded
    into them to the same codes and reconstructions (to rounding):
    ``apply_b_dec_to_input=False`` (sparsify always subtracts ``b_dec``) becomes
    ``encoder.bias + b_dec @ W_enc``; a constant input factor (``normalize="scale"``)
    becomes ``W_enc * s``, ``W_dec / s``, ``b_dec / s``; a TopK SAE that rescales by its
    decoder norms ``n`` (``rescale_acts_by_decoder_norm``) becomes ``W_enc * n``,
    ``b_enc * n``, ``W_dec / n``.  Per-row normalisations (``"constant_norm_rescale"``,
    ``"layer_norm"``) have no sparsify counterpart: refused.

    **Writing.**  As :func:`export_saelens`: both files written in a temporary directory
    next to the folder and moved into place, weights first, so a file at its final path
    is always whole.
    """
    if check_model(model) == "mpsae":
        tensors, cfg = _from_mpsae(model)
    else:
        tensors, cfg = _from_pretrained(model)
    target = Path(directory)
    if hookpoint is not None:
        target = target / _check_hookpoint(hookpoint)
    check_target(target, (CFG_FILENAME, WEIGHTS_FILENAME), overwrite,
                 foreign=("sae_weights.safetensors", "a SAELens export"))
    write_export(target, WEIGHTS_FILENAME, tensors, cfg)
    return target


def _check_hookpoint(hookpoint):
    if not isinstance(hookpoint, str):
        raise TypeError(f"hookpoint must be a str; got {type(hookpoint).__name__}")
    if (not hookpoint or hookpoint in (".", "..") or "/" in hookpoint or "\\" in hookpoint
            or "\0" in hookpoint):
        raise ValueError(f"hookpoint must be a single folder name (as 'layers.6'); got "
                         f"{hookpoint!r}")
    return hookpoint


def _from_mpsae(model):
    exact = model.solver == "topk" and model.selection in ("positive", "signed")
    if not exact:
        if model.solver != "topk":
            why = (f"model.solver is {model.solver!r}: sparsify's SAE encodes by TopK, so "
                   "it will encode differently from model.transform")
        else:
            why = ("model.selection is 'abs': sparsify's TopK ranks by the signed score and "
                   "drops negative ones (ReLU), so it will encode differently from "
                   "model.transform")
        warnings.warn(f"{why} (the exported atoms and bias are still the model's)",
                      UserWarning, stacklevel=3)
    dtype = np.dtype(model.components_.dtype)
    D = contiguous(model.components_, dtype)
    m, d = D.shape
    tensors = {"encoder.weight": D, "encoder.bias": np.zeros(m, dtype), "W_dec": D,
               "b_dec": contiguous(model.bias_, dtype)}
    unit = model.unit_atoms or model.update != "adam" or unit_rows(D)
    return tensors, _config("topk", d, m, int(min(model.k, m)), unit, skip=False)


def _from_pretrained(sae):
    if sae.architecture not in ARCHITECTURES:
        raise ValueError(
            f"sparsify has no {sae.architecture} architecture (its activations are topk "
            "and groupmax); export this SAE with export_saelens instead")
    if sae.normalize in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(
            f"this SAE normalises each input row ({sae.normalize}), which sparsify's SAEs "
            "do not do; export it with export_saelens instead")
    sae = folded(sae, scale=True, rescale=True, input_bias=True)
    dtype = sae.dtype
    m, d = sae.W_dec.shape
    tensors = {"encoder.weight": contiguous(sae.W_enc.T, dtype),
               "encoder.bias": contiguous(sae.b_enc, dtype),
               "W_dec": contiguous(sae.W_dec, dtype), "b_dec": contiguous(sae.b_dec, dtype)}
    if sae.W_skip is not None:
        tensors["W_skip"] = contiguous(sae.W_skip, dtype)
    cfg = _config(sae.architecture, d, m, int(sae.k), unit_rows(sae.W_dec),
                  skip=sae.W_skip is not None)
    return tensors, cfg


def _config(activation, d, m, k, normalize_decoder, *, skip):
    """sparsify's ``cfg.json``: its ``SparseCoderConfig`` and ``d_in``."""
    return {
        "activation": activation,
        "expansion_factor": max(1, m // d),
        "normalize_decoder": bool(normalize_decoder),
        "num_latents": int(m),
        "k": int(k),
        "multi_topk": False,
        "skip_connection": bool(skip),
        "transcode": False,
        "d_in": int(d),
    }
