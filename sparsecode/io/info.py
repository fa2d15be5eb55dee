"""What an HDF5 file holds: the text of ``sparsecode info``."""

import h5py
import numpy as np

from sparsecode.io._h5 import file_format, open_file, read_json_attr

#: Rows of a codes file scanned for the usage summary.
SAMPLE_ROWS = 100_000


def file_info(path):
    """What an HDF5 file holds, as lines of text (what ``sparsecode info`` prints).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    list of str
        Every dataset (shape, dtype, chunks, compression); for files sparsecode wrote,
        what they hold: model settings and last metrics, codes settings and atom use,
        rows committed by an interrupted writer.

    Raises
    ------
    FileFormatError
        ``path`` is not HDF5, or is a model file whose model is damaged (one line, from
        :func:`~sparsecode.io.model.check_model_file`).
    """
    lines = []
    say = lines.append
    with open_file(path) as f:
        kind = file_format(f)
        say(f"{path}: {'sparsecode ' + kind if kind else 'HDF5'} file, "
              f"{_size(f)}")
        if kind in ("activations", "codes"):
            done = "complete" if f.attrs.get("complete") else "incomplete (interrupted write)"
            say(f"  {done}: {int(f.attrs['committed_rows']):,} rows committed")
        if kind == "model":
            _model(f, say)
        elif kind == "itda":
            _itda(f, say)
        elif kind == "codes":
            _codes(f, say)
        say("  datasets:")
        for name, ds in _datasets(f):
            say(f"    {name}: {describe(ds)}")
    return lines


def _itda(f, say):
    from sparsecode.io._h5 import read_json_attr

    try:
        config = read_json_attr(f, "config") or {}
    except ValueError:
        config = {}
    n = f["components"].shape[0] if "components" in f else 0
    say(f"  ITDA dictionary: {n:,} atoms from {int(f.attrs.get('n_rows_seen', 0)):,} rows; "
        f"k {config.get('k')}, threshold {config.get('threshold')}, selection "
        f"{config.get('selection')}")


def _size(f):
    import os

    n = os.path.getsize(f.filename)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _datasets(f):
    found = []
    f.visititems(lambda n, o: found.append((n, o)) if isinstance(o, h5py.Dataset) else None)
    return found


def describe(ds):
    tag = ds.attrs.get("dtype")
    tag = tag.decode() if isinstance(tag, bytes) else tag
    dtype = "bfloat16 (as uint16)" if tag == "bfloat16" else str(ds.dtype)
    parts = [f"shape {ds.shape}", dtype]
    if ds.chunks:
        parts.append(f"chunks {ds.chunks} ({np.prod(ds.chunks) * ds.dtype.itemsize / 2**20:.2f}"
                     " MiB)")
    if ds.compression:
        parts.append(f"{ds.compression}" + (f" level {ds.compression_opts}"
                                           if ds.compression_opts is not None else ""))
    return ", ".join(parts)


def _model(f, say):
    """The model's summary, once :func:`~sparsecode.io.model.check_model_file` found it
    whole (a damaged model raises its one-line :class:`FileFormatError`)."""
    from sparsecode.io.model import check_model_file

    model = check_model_file(f)
    p, state, pos = model.params, model.scalars, model.position or {}
    n_atoms, d = model.components.shape
    say(f"  MP-SAE: {n_atoms} atoms x {d} features, solver {p['solver']} "
          f"(selection {p['selection']}, k {p['k']}), update {p['update']}, "
          f"{model.components.dtype}")
    where = ""
    if "epoch" in pos and "batch" in pos:
        where = f" (checkpoint at epoch {pos['epoch']}, batch {pos['batch']})"
    if pos.get("finished"):
        where = " (finished)"
    say(f"  trained {state['n_steps']:,} steps on {state['n_samples_seen']:,} samples"
          + (f" of {pos['acts']}:{pos.get('dataset')}" if "acts" in pos else "") + where)
    hist, cols = model.history, model.columns
    if len(hist):
        last = dict(zip(cols, hist[-1], strict=True))
        shown = ", ".join(f"{label} {last[c]:{fmt}}" for c, label, fmt in (
            ("fvu", "fvu", ".4f"), ("l0", "l0", ".2f"), ("dead_fraction", "dead fraction", ".3f"),
        ) if c in last)
        step = f" (step {int(last['step'])})" if "step" in last else ""
        say(f"  last metrics{step}: {shown}")
    norms = np.linalg.norm(model.components[()], axis=1)
    say(f"  atom norms: min {norms.min():.3g}, median {np.median(norms):.3g}, "
          f"max {norms.max():.3g}")


def _codes(f, say):
    settings = read_json_attr(f, "settings", {})
    n_atoms = int(f.attrs["n_atoms"])
    n = int(f.attrs["committed_rows"])
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("model", "acts"))
    say(f"  codes over {n_atoms} atoms, width {f['indices'].shape[1]}: {shown}")
    if "model" in settings:
        say(f"  model {settings['model']}; data {settings.get('acts')}")
    m = min(n, SAMPLE_ROWS)
    if m:
        idx = f["indices"][:m]
        used = idx[idx >= 0]
        counts = np.bincount(used, minlength=n_atoms)
        say(f"  first {m:,} rows: mean l0 {used.size / m:.2f}, atoms used "
              f"{int((counts > 0).sum())} of {n_atoms}")
