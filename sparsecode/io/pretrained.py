"""Read the SAEs other libraries publish, without PyTorch: SAELens, EleutherAI sparsify,
Gemma Scope (1 and 2), Llama Scope and dictionary_learning, into a
:class:`~sparsecode.pretrained.PretrainedSAE`.

The format is detected from the files.  safetensors files are memory-mapped (bfloat16 and
float16 widened); ``ae.pt`` archives are read by a restricted unpickler that only rebuilds
tensors (:mod:`sparsecode.io.torch_archive`).
"""

from pathlib import Path

import numpy as np

from sparsecode.io import _sae_formats
from sparsecode.io._h5 import FileFormatError
from sparsecode.pretrained import PretrainedSAE

#: The files that identify each format in a folder, in the order they are tried.
FORMATS = {
    "saelens": ("cfg.json", "sae_weights.safetensors"),
    "sparsify": ("cfg.json", "sae.safetensors"),
    "gemma_scope": ("params.npz",),
    "gemma_scope_2": ("params.safetensors",),
    "llama_scope": ("hyperparams.json", "checkpoints/final.safetensors"),
    "dictionary_learning": ("config.json", "ae.pt"),
}


def detect_format(path):
    """The format of the SAE in folder ``path`` (see :data:`FORMATS`), or None."""
    path = Path(path)
    for name, files in FORMATS.items():
        if all((path / f).is_file() for f in files):
            return name
    return None


def load_sae(path, *, hookpoint=None, dtype="float32"):
    """Read a pretrained SAE, whatever library wrote it.

    Parameters
    ----------
    path : str or os.PathLike
        The SAE's folder (or one of its files): SAELens (``cfg.json`` +
        ``sae_weights.safetensors``, optional ``sparsity.safetensors``); sparsify
        (``cfg.json`` + ``sae.safetensors``); Gemma Scope (``params.npz``); Gemma Scope 2
        (``params.safetensors``); Llama Scope (``hyperparams.json`` +
        ``checkpoints/final.safetensors``); dictionary_learning (``config.json`` +
        ``ae.pt``).  A folder of SAEs, one sub-folder per hookpoint (as sparsify saves
        them), needs ``hookpoint``.
    hookpoint : str, optional
        The sub-folder of ``path`` to read (``"layers.6"``).
    dtype : {"float32", "float64"}
        The dtype of the model's arrays.  Tensors already of this dtype stay memory-mapped.

    Returns
    -------
    PretrainedSAE
        ``info`` holds ``format``, ``path``, ``hookpoint`` (where known) and the original
        configuration.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FileFormatError
        No SAE is recognised there, a file is damaged or truncated, keys are missing,
        shapes contradict each other or the config, the architecture is unknown, or an
        ``ae.pt`` pickle asks for anything but tensors (it is never run).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        path = _folder_of(path)
    if hookpoint is not None:
        sub = path / hookpoint
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub}: no such hookpoint folder; {_hookpoints_hint(path)}")
        path = sub
    fmt = detect_format(path)
    if fmt is None:
        subs = _hookpoints(path)
        if subs:
            raise FileFormatError(f"{path} holds SAEs for {len(subs)} hookpoints "
                                  f"({', '.join(subs[:8])}{', ...' if len(subs) > 8 else ''}): "
                                  "pass hookpoint=")
        raise FileFormatError(
            f"{path}: no SAE found; expected one of: "
            + "; ".join(f"{name} ({' + '.join(files)})" for name, files in FORMATS.items()))
    sae = getattr(_sae_formats, f"read_{fmt}")(path, dtype)
    sae.info.setdefault("hookpoint", hookpoint)
    sae.info.update({"format": fmt, "path": str(path)})
    return sae


def _folder_of(file):
    """The SAE folder a file given in its place belongs to."""
    if file.name == "final.safetensors" and file.parent.name == "checkpoints":
        return file.parent.parent
    return file.parent


def _hookpoints(path):
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and detect_format(p))


def _hookpoints_hint(path):
    subs = _hookpoints(path)
    return f"{path} has: {', '.join(subs)}" if subs else f"{path} has no SAE folders"


def is_sae(path):
    """Whether ``path`` is an SAE folder (or file of one) :func:`load_sae` reads."""
    path = Path(path)
    if path.is_file():
        if path.suffix in (".h5", ".hdf5"):
            return False
        path = _folder_of(path)
    return path.is_dir() and (detect_format(path) is not None or bool(_hookpoints(path)))


__all__ = ["FORMATS", "PretrainedSAE", "detect_format", "is_sae", "load_sae"]
