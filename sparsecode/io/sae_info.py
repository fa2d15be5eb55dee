"""What a pretrained SAE's folder holds: the text of ``sparsecode info`` for an SAE."""

import re
import zipfile
from pathlib import Path

import numpy as np

from sparsecode.io._h5 import FileFormatError
from sparsecode.io.pretrained import FORMATS, _folder_of, _hookpoints, detect_format, load_sae

#: Files read besides those that identify a format, where present.
EXTRA_FILES = {"saelens": ("sparsity.safetensors",), "gemma_scope_2": ("config.json",)}
#: safetensors element types by NumPy's (or PyTorch's) names.
_SAFETENSORS_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16",
                      "BF16": "bfloat16", "I64": "int64", "I32": "int32", "I16": "int16",
                      "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                      "BOOL": "bool"}
#: The storage types (and dtype names) a ``torch.save`` pickle may name.
_TORCH_STORAGES = {"DoubleStorage": "float64", "FloatStorage": "float32",
                   "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
                   "LongStorage": "int64", "IntStorage": "int32"}
_TORCH_NAME = re.compile(rb"(?<![A-Za-z0-9_])(" + b"|".join(
    [s.encode() for s in _TORCH_STORAGES] + [b"float64", b"float32", b"float16",
                                            b"bfloat16"]) + rb")(?![A-Za-z0-9_])")


def sae_info(path, hookpoint=None):
    """What a pretrained SAE is, as lines of text (what ``sparsecode info`` prints).

    Parameters
    ----------
    path : str or os.PathLike
        The SAE's folder or one of its files, or a folder of SAEs (one sub-folder per
        hookpoint).
    hookpoint : str, optional
        The sub-folder to describe in a folder of SAEs.

    Returns
    -------
    list of str
        Format, architecture, sizes, ``k`` or thresholds (min / median / max when they
        differ per atom), input normalisation, ``apply_b_dec_to_input``, hookpoint,
        element types on disk and as loaded, and file sizes; for a folder of several
        hookpoints without ``hookpoint``, one line per hookpoint.

    Raises
    ------
    FileNotFoundError, FileFormatError
        As :func:`~sparsecode.io.load_sae`.
    """
    path = Path(path)
    folder = _folder_of(path) if path.is_file() else path
    if hookpoint is None and folder.is_dir() and detect_format(folder) is None:
        subs = _hookpoints(folder)
        if subs:
            lines = [f"{folder}: a folder of {len(subs)} pretrained SAEs, one per "
                     "hookpoint (--hookpoint NAME describes one)"]
            for name in subs:
                try:
                    lines.append(f"  {name}: {_summary(load_sae(folder, hookpoint=name))}")
                except (FileFormatError, OSError, ValueError) as exc:
                    lines.append(f"  {name}: unreadable ({exc})")
            return lines
    sae = load_sae(path, hookpoint=hookpoint)
    return _describe(sae)


def _summary(sae):
    """One line: format, architecture and sizes."""
    detail = _encoder(sae)
    return (f"{sae.info.get('format')}, {sae.architecture}{', ' + detail if detail else ''}; "
            f"d_in {sae.n_features_in_}, {sae.n_atoms:,} atoms")


def _encoder(sae):
    """The architecture's own parameters, in words."""
    arch = sae.architecture
    if arch == "topk":
        return f"k {sae.k}" + (" (scores scaled by decoder norms)"
                               if sae.rescale_acts_by_decoder_norm else "")
    if arch == "groupmax":
        return f"k {sae.k} groups of {sae.n_atoms // sae.k} atoms"
    if arch == "jumprelu":
        t = np.asarray(sae.threshold, dtype=np.float64)
        if t.size and t.min() == t.max():
            return f"threshold {t[0]:.4g} (every atom)"
        return (f"thresholds min {t.min():.4g}, median {np.median(t):.4g}, "
                f"max {t.max():.4g}")
    if arch == "matching_pursuit":
        return (f"up to {sae.max_iterations} steps, residual threshold "
                f"{sae.residual_threshold:g}, stop on a repeated support "
                f"{'yes' if sae.stop_on_duplicate_support else 'no'}")
    if arch == "gated":
        return "gate and magnitude paths"
    return ""


def _describe(sae):
    folder = Path(sae.info["path"])
    fmt = sae.info["format"]
    lines = [f"{folder}: pretrained SAE, {fmt} format"]
    say = lines.append
    detail = _encoder(sae)
    say(f"  architecture {sae.architecture}{': ' + detail if detail else ''}")
    say(f"  d_in {sae.n_features_in_}, n_atoms {sae.n_atoms:,}")
    norm = sae.normalize + (f" (x {sae.norm_scale:.6g})" if sae.norm_scale else "")
    say(f"  input normalisation {norm}; apply_b_dec_to_input "
        f"{sae.apply_b_dec_to_input}; skip connection {'yes' if sae.W_skip is not None else 'no'}")
    say(f"  hookpoint {sae.info.get('hookpoint') or 'not recorded'}")
    files = [f for f in FORMATS[fmt] + EXTRA_FILES.get(fmt, ()) if (folder / f).is_file()]
    disk = []
    for name in files:
        kinds = _disk_dtypes(folder / name)
        if kinds:
            disk.append(f"{name}: {kinds}")
    say(f"  dtype on disk: {'; '.join(disk) or 'unknown'}; loaded as {sae.dtype}")
    say("  files: " + ", ".join(f"{name} {_bytes((folder / name).stat().st_size)}"
                                for name in files))
    return lines


def _disk_dtypes(path):
    """str: the element types of the tensors in ``path`` (which tensors, when they
    differ), or None for a file that holds none."""
    try:
        if path.suffix == ".safetensors":
            from sparsecode.io.safetensors import read_header

            tensors, _ = read_header(path)
            by_name = {n: _SAFETENSORS_NAMES.get(t[0], t[0]) for n, t in tensors.items()}
        elif path.suffix == ".npz":
            by_name = _npz_dtypes(path)
        elif path.suffix == ".pt":
            return _torch_dtypes(path)
        else:
            return None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f"unreadable ({exc})"
    groups = {}
    for name, kind in by_name.items():
        groups.setdefault(kind, []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{kind} ({', '.join(sorted(names)[:6])}"
                     f"{', ...' if len(names) > 6 else ''})"
                     for kind, names in sorted(groups.items()))


def _npz_dtypes(path):
    """{name: dtype name} of the arrays of an ``.npz`` archive, from their headers."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                out[member[:-4]] = str(read(f)[2])
    return out


def _torch_dtypes(path):
    """The element types a ``torch.save`` archive's pickle names for its storages."""
    with zipfile.ZipFile(path) as zf:
        pickle = next((m for m in zf.namelist() if m.endswith("data.pkl")), None)
        if pickle is None:
            return None
        data = zf.read(pickle)
    found = {_TORCH_STORAGES.get(m.decode(), m.decode()) for m in _TORCH_NAME.findall(data)}
    return ", ".join(sorted(found)) or None


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
