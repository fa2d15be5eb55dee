"""What the exports to other libraries share: the model check, the target folder's checks,
the atomic write of a weights file and its config, and the folds that turn a
:class:`~sparsecode.pretrained.PretrainedSAE`'s input normalisations into its weights."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sparsecode.io.safetensors import write_tensors

#: The config file both SAELens and sparsify read.
CFG_FILENAME = "cfg.json"


def check_model(model):
    """``"mpsae"`` or ``"pretrained"``: the kind of ``model``, once checked.

    Raises
    ------
    TypeError
        ``model`` is neither an MPSAE nor a PretrainedSAE.
    NotFittedError
        ``model`` is an MPSAE that is not fitted.
    """
    from sparsecode.pretrained import PretrainedSAE
    from sparsecode.sae.estimator import MPSAE

    if isinstance(model, MPSAE):
        model.engine_  # noqa: B018 - raises NotFittedError when not fitted
        return "mpsae"
    if isinstance(model, PretrainedSAE):
        return "pretrained"
    raise TypeError(f"model must be a fitted MPSAE or a PretrainedSAE; got "
                    f"{type(model).__name__}")


def check_target(target, names, overwrite, foreign=None):
    """Raise unless ``target`` can receive an export of files ``names``.

    Parameters
    ----------
    target : pathlib.Path
    names : tuple of str
        The export's files.
    overwrite : bool
        Whether existing files ``names`` may be replaced.
    foreign : tuple of (str, str), optional
        ``(file, what)``: a file of another format's export that reads the same
        ``cfg.json``; the two cannot share a folder, whatever ``overwrite``.
    """
    for path in (target, *target.parents):  # the nearest existing one must be a folder
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"{path}: exists and is not a directory")
            break
    if not target.is_dir():
        return
    if foreign is not None:
        name, what = foreign
        if (target / name).exists():
            raise FileExistsError(
                f"{target / name}: the folder holds {what}, which reads the same "
                f"{CFG_FILENAME}; export into another directory")
    if overwrite:
        return
    for name in names:
        path = target / name
        if path.exists():
            raise FileExistsError(
                f"{path}: already exists; pass overwrite=True to replace the export"
            )


def write_export(target, weights_name, tensors, cfg, metadata=None):
    """Write ``target/weights_name`` (safetensors) and ``target/cfg.json`` atomically.

    Both files are written into a temporary directory next to ``target`` (same parent,
    hence same file system) and moved into place with :func:`os.replace`, weights
    first, so a file at its final path is always whole; the temporary directory is
    removed whether or not the write succeeds.

    Parameters
    ----------
    target : pathlib.Path
        Created (with its parents) if missing.
    weights_name : str
    tensors : dict of str to ndarray
    cfg : dict
        Written as indented JSON (no NaN or infinity).
    metadata : dict of str to str, optional
        The safetensors file's ``__metadata__``.
    """
    target.mkdir(parents=True, exist_ok=True)
    real = target.resolve()  # a symlinked target: write next to where the files land
    tmp = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}."))
    try:
        write_tensors(tmp / weights_name, tensors, metadata=metadata)
        with open(tmp / CFG_FILENAME, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, allow_nan=False)
            f.write("\n")
        # cfg.json last: a fresh export interrupted in between leaves no config that
        # points at missing weights
        for name in (weights_name, CFG_FILENAME):
            os.replace(tmp / name, real / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def contiguous(a, dtype):
    """``a`` (host memory) as a C-contiguous array of ``dtype``."""
    from sparsecode._backend import to_host

    return np.ascontiguousarray(to_host(a), dtype=dtype)


def provenance(**fields):
    """The ``metadata`` entries every export's config carries."""
    import sparsecode

    return {"sparsecode_version": sparsecode.__version__, **fields}


def folded(sae, *, scale=False, rescale=False, input_bias=False):
    """A PretrainedSAE with the same codes and reconstructions as ``sae`` (to rounding),
    some of its options folded into its weights.

    Parameters
    ----------
    sae : PretrainedSAE
    scale : bool
        Fold ``normalize="scale"`` (factor ``s``): ``W_enc * s``, ``W_dec / s``,
        ``b_dec / s``, normalisation ``"none"`` (as SAELens'
        ``fold_activation_norm_scaling_factor``).  The pre-activations, hence thresholds
        and gates, are unchanged.  A TopK SAE that rescales by the decoder norms has that
        folded too: the rescaled decoder would otherwise scale its codes by ``1 / s``.
    rescale : bool
        Fold a TopK SAE's ``rescale_acts_by_decoder_norm`` (norms ``n``):
        ``W_enc * n``, ``b_enc * n``, ``W_dec / n`` (an atom of norm 0 is never active
        and is left as it is).
    input_bias : bool
        Fold ``apply_b_dec_to_input=False`` into the encoder bias
        (``b_enc + b_dec W_enc``), so that the encoder subtracts ``b_dec`` (ReLU, TopK,
        JumpReLU and groupmax SAEs).

    Returns
    -------
    PretrainedSAE
        ``sae`` itself when nothing is to fold.  Folded arrays are computed in float64
        and stored in ``sae``'s dtype.

    Raises
    ------
    ValueError
        ``scale`` on a matching-pursuit SAE: its tied encoder's codes scale with the input,
        so no weights reproduce them.
    """
    arch = sae.architecture
    do_rescale = arch == "topk" and sae.rescale_acts_by_decoder_norm and (
        rescale or (scale and sae.normalize == "scale"))
    do_scale = scale and sae.normalize == "scale"
    do_bias = input_bias and not sae.apply_b_dec_to_input and arch in (
        "relu", "topk", "jumprelu", "groupmax")
    if not (do_rescale or do_scale or do_bias):
        return sae
    if do_scale and arch == "matching_pursuit":
        raise ValueError(
            f"this matching-pursuit SAE normalises its input by a factor "
            f"({sae.norm_scale}); its tied encoder's codes scale with the input, so the "
            "factor cannot be folded into its weights")
    f64 = {n: None if getattr(sae, n) is None else np.array(getattr(sae, n), np.float64)
           for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    W_enc, b_enc, W_dec, b_dec = (f64[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    kw = {"normalize": sae.normalize, "norm_scale": sae.norm_scale,
          "rescale_acts_by_decoder_norm": sae.rescale_acts_by_decoder_norm,
          "apply_b_dec_to_input": sae.apply_b_dec_to_input}
    if do_rescale:
        n = np.sqrt(np.einsum("ij,ij->i", W_dec, W_dec))
        W_enc *= n
        b_enc *= n
        W_dec /= np.where(n > 0, n, 1.0)[:, None]
        kw["rescale_acts_by_decoder_norm"] = False
    if do_scale:
        s = sae.norm_scale
        if W_enc is not None:
            W_enc *= s
        W_dec /= s
        b_dec /= s
        kw.update(normalize="none", norm_scale=None)
    if do_bias:
        b_enc += b_dec @ W_enc
        kw["apply_b_dec_to_input"] = True
    from sparsecode.pretrained import PretrainedSAE

    dt = sae.dtype
    return PretrainedSAE(
        W_dec.astype(dt), b_dec.astype(dt), architecture=arch,
        W_enc=None if W_enc is None else W_enc.astype(dt), b_enc=b_enc.astype(dt),
        k=sae.k, threshold=sae.threshold, b_gate=sae.b_gate, r_mag=sae.r_mag,
        b_mag=sae.b_mag, W_skip=sae.W_skip,
        max_iterations=sae.max_iterations, residual_threshold=sae.residual_threshold,
        stop_on_duplicate_support=sae.stop_on_duplicate_support, info=sae.info, **kw)


def unit_rows(W):
    """Whether the rows of ``W`` have unit norm to the rounding of its dtype."""
    W = np.asarray(W)
    norms = np.sqrt(np.einsum("ij,ij->i", W, W, dtype=np.float64))
    return bool(np.all(np.abs(norms - 1.0) <= np.sqrt(np.finfo(W.dtype).eps)))
