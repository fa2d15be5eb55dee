"""ITDA dictionaries on disk: the atoms, where each came from, and the state to go on.

Layout (``attrs["sparsecode_format"] = "itda"``)::

    /components   (n_atoms, n_features)  unit atoms
    /sources      (n_atoms,) int64       the row of the training stream each came from
    /source_info/NAME  (n_atoms,)        optional: per-row data of the activation file
                                         (token ids, document offsets...) at the sources
    attrs: config (JSON of the estimator's parameters), n_rows_seen, position (JSON, where
           in the data the build stands), format_version

The Gram matrix is not stored: loading rebuilds it row by row with the arithmetic it grew
with, so a resumed build makes the same decisions as one never interrupted.  The
``encode``, ``export`` and ``info`` commands take these files like model files
(:func:`sparsecode.io.load_model` returns the equivalent MP-SAE).
"""

import json
from pathlib import Path

import numpy as np

from sparsecode.io._h5 import (
    FileFormatError,
    check_format,
    get_dataset,
    open_file,
    partial_path,
    read_json_attr,
    replace_into_place,
    write_error,
)

FORMAT_VERSION = 1


def save_itda(model, path, *, position=None, source_info=None, overwrite=True):
    """Save a fitted :class:`~sparsecode.ITDA` (written at ``PATH.partial``, renamed).

    Parameters
    ----------
    model : ITDA
    path : str or os.PathLike
    position : dict, optional
        JSON-serialisable note of where in the data the build stands.
    source_info : dict of str to array-like of shape (n_atoms,), optional
        More about each atom's source row (token id, document offset, ...), stored under
        ``source_info/NAME`` and loaded as ``atom_source_info_``.
    overwrite : bool

    Returns
    -------
    pathlib.Path
    """
    from sparsecode import ITDA

    if not isinstance(model, ITDA):
        raise TypeError(f"model must be an ITDA; got {type(model).__name__}")
    D, src = model.components_, model.atom_sources_  # NotFittedError when not fitted
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    config = {k: (np.dtype(v).name if k == "dtype" else v)
              for k, v in model.get_params().items()}
    texts = {"config": json.dumps(config), "position": json.dumps(position)}
    tmp = partial_path(path)
    try:
        with open_file(tmp, "w") as f:
            f.attrs["sparsecode_format"] = "itda"
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["n_rows_seen"] = int(model.n_rows_seen_)
            f.attrs["n_features"] = int(model.n_features_in_)
            for name, text in texts.items():
                f.attrs[name] = text
            f.create_dataset("components", data=D)
            f.create_dataset("sources", data=src)
            for name, values in (source_info or {}).items():
                values = np.asarray(values)
                if values.shape != src.shape:
                    raise ValueError(f"source_info[{name!r}] must have shape {src.shape}; "
                                     f"got {values.shape}")
                f.create_dataset(f"source_info/{name}", data=values)
        replace_into_place(tmp, path)
    except RuntimeError as exc:  # HDF5's failed writes
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write the dictionary ({write_error(exc)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_itda(path):
    """Load a dictionary saved by :func:`save_itda`, ready to encode or to go on
    (``partial_fit`` continues the stream where it stopped).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ITDA

    Raises
    ------
    FileFormatError
        Not an ITDA file, or a damaged one (one line naming the problem).
    """
    from sparsecode import ITDA

    with open_file(path) as f:
        check_format(f, "itda")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise FileFormatError(f"{path}: ITDA format version {version} is newer than this "
                                  f"sparsecode reads ({FORMAT_VERSION}); upgrade sparsecode")
        try:
            config = read_json_attr(f, "config")
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise FileFormatError(f"{path}: no readable 'config' attribute; the file is "
                                  "damaged")
        D = get_dataset(f, "components")[()]
        src = get_dataset(f, "sources")[()]
        n_rows = int(f.attrs.get("n_rows_seen", -1))
        nf = int(f.attrs.get("n_features", -1))
        info = {name: ds[()] for name, ds in f.get("source_info", {}).items()}
    try:
        model = ITDA(**config)
        dt = model._check_params()
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: config not accepted ({exc}); the file is "
                              "damaged") from None
    problem = _check_arrays(D, src, n_rows, nf, dt)
    if problem is None and any(v.shape != src.shape for v in info.values()):
        problem = "source_info arrays must have one entry per atom"
    if problem:
        raise FileFormatError(f"{path}: {problem}; the file is damaged")
    model = model._restore(D, src, n_rows)
    model.atom_source_info_ = info
    return model


def _check_arrays(D, src, n_rows, nf, dt):
    if D.ndim != 2 or D.shape[1] != nf or D.dtype != dt:
        return f"components must be (n_atoms, {nf}) {dt.name}; got {D.shape} {D.dtype}"
    if not np.all(np.isfinite(D)):
        return "components hold NaN or inf"
    if D.shape[0] and np.abs(np.einsum("ij,ij->i", D, D, dtype=np.float64) - 1).max() > 1e-3:
        return "components are not unit rows"
    if src.shape != (D.shape[0],) or src.dtype.kind not in "iu":
        return f"sources must be ({D.shape[0]},) integers; got {src.shape} {src.dtype}"
    if D.shape[0] and (src.min() < 0 or src.max() >= n_rows
                       or len(np.unique(src)) != len(src)):
        return f"sources must be distinct rows in [0, n_rows_seen = {n_rows})"
    return None


def itda_position(path):
    """dict or None: the ``position`` stored by :func:`save_itda`."""
    with open_file(path) as f:
        check_format(f, "itda")
        try:
            return read_json_attr(f, "position")
        except ValueError:
            raise FileFormatError(f"{path}: 'position' is not JSON; the file is damaged") \
                from None


def read_source_info(acts, names, sources, n_rows):
    """Per-row data of an activation file at the given source rows.

    Parameters
    ----------
    acts : str or os.PathLike
        The activation file.
    names : list of str
        1-D datasets of ``acts`` with a value per row (token ids, document offsets...).
    sources : array-like of int
        Rows to read (any order).
    n_rows : int
        Rows the datasets must cover.

    Returns
    -------
    dict of str to ndarray of shape (len(sources),)

    Raises
    ------
    FileFormatError
        A dataset is missing, not 1-D, or shorter than ``n_rows``.
    """
    src = np.asarray(sources, dtype=np.int64)
    order = np.argsort(src, kind="stable")
    out = {}
    with open_file(acts) as f:
        for name in names:
            ds = get_dataset(f, name)
            if ds.ndim != 1 or ds.shape[0] < n_rows:
                raise FileFormatError(f"{acts}:{name} must be 1-D with a value per row "
                                      f"({n_rows:,}) to give source info; it has shape "
                                      f"{ds.shape}")
            values = ds[src[order]] if src.size else ds[:0]
            out[name] = np.empty_like(values)
            out[name][order] = values
    return out
