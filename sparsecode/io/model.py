"""Models on disk: an :class:`~sparsecode.MPSAE` with its whole training state in one
HDF5 file.

Layout (``attrs["sparsecode_format"] = "model"``)::

    /components          (n_atoms, n_features)  the atoms
    /bias                (n_features,)          the pre-bias
    /history             (n_records, n_columns) float64, attrs["columns"]
    /state/...           optimizer moments, dead-atom counters, online statistics
    attrs: config (JSON of get_params), state (JSON scalars: step, RNG, ...),
           position (JSON, where in the data training stopped), format_version,
           sparsecode_version

A file is written at ``PATH.partial`` and renamed into place, so a checkpoint at its
final path is always whole.  :func:`load_model` checks the whole file first
(:func:`check_model_file`: attributes, datasets, shapes, dtypes, settings, finiteness), so
a damaged model is refused with one line naming the file and the problem, before anything
is built from it.
"""

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sparsecode._backend import to_host
from sparsecode.io._h5 import (
    FileFormatError,
    check_format,
    file_format,
    open_file,
    partial_path,
    replace_into_place,
    write_error,
    write_json_attr,
)

FORMAT_VERSION = 1
#: Parameters not stored (not serialisable); they load as their defaults.
_UNSTORED = ("callback",)
_INT_COLUMNS = ("step", "samples")
#: Values read at a time when checking a dataset is finite (64 MiB of float64).
_FINITE_BLOCK = 1 << 23


def _config(model):
    config = {}
    for name, value in model.get_params().items():
        if name in _UNSTORED:
            continue
        if name == "init" and not isinstance(value, str):
            value = "array"  # the atoms it gave are in /components
        elif name == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
            value = None  # a Generator: its state is saved with the training state
        elif name == "dtype":
            value = np.dtype(value).name
        elif isinstance(value, tuple):
            value = list(value)
        config[name] = value
    return config


def save_model(model, path, *, position=None, overwrite=True):
    """Save a fitted :class:`~sparsecode.MPSAE` and its training state.

    Parameters
    ----------
    model : MPSAE
        Fitted.
    path : str or os.PathLike
        Destination (``.h5``); written at ``PATH.partial`` and renamed into place.
    position : dict, optional
        JSON-serialisable note of where in the data training stands (the command line
        stores the epoch, batch and data file here).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    from sparsecode.sae import MPSAE

    if not isinstance(model, MPSAE):
        raise TypeError(f"model must be an MPSAE; got {type(model).__name__}")
    engine = model.engine_  # raises NotFittedError when not fitted
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    arrays, scalars = engine.state_dict()
    from sparsecode.io._h5 import _json_default

    # everything that could fail to serialise is encoded before the file is opened
    texts = {name: json.dumps(value, default=_json_default) for name, value in
             (("config", _config(model)), ("state", scalars), ("position", position))}
    columns = list(model.history_[0]) if model.history_ else []
    table = np.array([[h[c] for c in columns] for h in model.history_], np.float64)
    tmp = partial_path(path)
    _check_room(path, [model.components_, model.bias_, table, *arrays.values()])
    try:
        with open_file(tmp, "w") as f:
            import sparsecode

            f.attrs["sparsecode_format"] = "model"
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["sparsecode_version"] = sparsecode.__version__
            for name, text in texts.items():
                f.attrs[name] = text
            f.create_dataset("components", data=to_host(model.components_))
            f.create_dataset("bias", data=to_host(model.bias_))
            hist = f.create_dataset("history",
                                    data=table.reshape(len(model.history_), len(columns)))
            write_json_attr(hist, "columns", columns)
            state = f.create_group("state")
            for name, value in arrays.items():
                state.create_dataset(name, data=value)
            if not isinstance(model.init, str):
                f.create_dataset("init", data=np.asarray(model.init))
        replace_into_place(tmp, path)
    except RuntimeError as exc:  # HDF5's failed writes
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write the model ({write_error(exc)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_room(path, arrays):
    """Refuse to start a model file the disk has no room for (an existing file at
    ``path`` is left as it is)."""
    import errno
    import shutil

    need = sum(int(np.asarray(to_host(a)).nbytes) for a in arrays) + (1 << 20)
    parent = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(parent).free
    if free < need:
        error = OSError(f"{path}: the disk is full ({free / 2**20:.1f} MiB free; the model "
                        f"needs about {need / 2**20:.1f} MiB)")
        error.errno = errno.ENOSPC
        raise error


def load_model(path):
    """Load a model saved by :func:`save_model`, ready to transform or to go on training
    (``partial_fit`` continues the same run: optimizer, schedule, RNG and counters).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    MPSAE

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FileFormatError
        ``path`` is not a model file sparsecode can read, or the model in it is damaged
        (see :func:`check_model_file`); nothing is constructed then.
    """
    from sparsecode.sae import MPSAE, Engine, TrainConfig

    with open_file(path) as f:
        itda = file_format(f) == "itda"
        if not itda:
            contents = check_model_file(f, read=True)
    if itda:  # an ITDA dictionary encodes as the MP-SAE of its atoms
        from sparsecode.io.itda import load_itda

        return load_itda(path).to_mpsae()
    model = MPSAE(**contents.params)
    columns = contents.columns
    history = [{c: int(v) if c in _INT_COLUMNS else float(v)
                for c, v in zip(columns, row, strict=True)} for row in contents.history]
    model.engine_ = Engine.restore(TrainConfig.from_params(model.get_params()),
                                   contents.components, contents.bias, contents.arrays,
                                   contents.scalars, history)
    return model


def model_position(path):
    """dict or None: the ``position`` stored by :func:`save_model`.

    Raises
    ------
    FileFormatError
        ``path`` is not a sparsecode model file, or its ``position`` is not a JSON object.
    """
    with open_file(path) as f:
        if file_format(f) != "itda":
            check_format(f, "model")
        return _json_attr(f, "position", (dict, type(None)), "a JSON object or null")


# ------------------------------------------------------------------ checking a model file


@dataclass
class ModelContents:
    """What :func:`check_model_file` found in a model file, checked.

    Attributes
    ----------
    params : dict
        The estimator's parameters (stored ones, defaults for the others; ``init`` is the
        stored array when the model was given one).
    scalars : dict
        The scalar training state (``attrs["state"]``).
    position : dict or None
    columns : list of str
        Names of the history columns.
    components, bias, history : ndarray or h5py.Dataset
        Arrays in memory when read, else the file's datasets (so is ``params["init"]``
        when the model was given initial atoms).
    arrays : dict of str to ndarray or h5py.Dataset
        The state arrays the training engine restores, by name in the ``state`` group.
    """

    params: dict
    scalars: dict
    position: dict | None
    columns: list
    components: object
    bias: object
    history: object
    arrays: dict


def check_model_file(f, *, read=False):
    """Check that an open file holds a whole, consistent model, before anything is built
    from it.

    Checked: the format and its version; the ``config``, ``state`` and ``position``
    attributes (JSON of the right types; every setting accepted by the estimator);
    ``components`` (2-D, float32 or float64 as the config says, shape
    (n_atoms, n_features)); ``bias`` ((n_features,), same dtype); ``history`` (2-D
    numbers, one name per column); the ``state`` group and every array the training
    engine restores for this configuration (shapes, kinds); the scalar state (integers,
    generator state); ``init`` when the model was given initial atoms; and that every
    floating-point array of the model is finite.

    Parameters
    ----------
    f : h5py.File
        Open for reading.
    read : bool
        Read the arrays into memory (once) and return them; otherwise they are checked
        block by block and the datasets returned.

    Returns
    -------
    ModelContents

    Raises
    ------
    FileFormatError
        One line: the file's name, what is wrong, and that the model is damaged.
    """
    path = f.filename
    check_format(f, "model")
    try:
        version = int(f.attrs.get("format_version", 0))
    except (TypeError, ValueError):
        raise _damaged(path, "attribute 'format_version' is not an integer") from None
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path}: model format version {version} is newer than this sparsecode "
            f"reads ({FORMAT_VERSION}); upgrade sparsecode"
        )
    config = _json_attr(f, "config", dict, "a JSON object", required=True)
    scalars = _json_attr(f, "state", dict, "a JSON object", required=True)
    position = _json_attr(f, "position", (dict, type(None)), "a JSON object or null")
    params, config_obj = _check_config(path, config, "init" in f)
    n_atoms = config_obj.n_atoms
    _check_scalars(path, scalars, config_obj)
    nf = scalars["n_features_in"]
    dtype = config_obj.dtype

    components = _dataset(f, "components")
    _expect(path, "components", components, (n_atoms, nf), dtype, "(n_atoms, n_features) = ")
    bias = _dataset(f, "bias")
    _expect(path, "bias", bias, (nf,), dtype, "(n_features,) = ")
    history = _dataset(f, "history")
    columns = _check_history(path, history)
    state = f.get("state")
    if not isinstance(state, h5py.Group):
        raise _damaged(path, "has no group 'state' (the training state)")
    arrays = {}
    for name, (shape, kind) in _state_arrays(config_obj, nf).items():
        ds = state.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise _damaged(path, f"has no state array 'state/{name}'")
        _expect(path, f"state/{name}", ds, shape, kind)
        arrays[name] = ds
    floats = {"components": components, "bias": bias,
              **{f"state/{name}": ds for name, ds in arrays.items() if ds.dtype.kind == "f"}}
    if params["init"] is None:  # the model was given initial atoms: they are stored
        floats["init"] = _dataset(f, "init")
        _expect(path, "init", floats["init"], (n_atoms, nf), "f")
    if read:
        floats = {name: ds[()] for name, ds in floats.items()}
        components, bias, history = floats["components"], floats["bias"], history[()]
        arrays = {name: floats.get(f"state/{name}", ds[()]) for name, ds in arrays.items()}
    for name, values in floats.items():
        _check_finite(path, name, values)
    for c in _INT_COLUMNS:
        if c in columns:
            _check_finite(path, f"history column {c!r}", history[:, columns.index(c)])
    params["init"] = floats.get("init", params["init"])
    return ModelContents(params, scalars, position, columns, components, bias, history, arrays)


def _damaged(path, what):
    what = " ".join(str(what).splitlines())  # one line, whatever an inner error said
    return FileFormatError(f"{path}: {what}; the model is damaged")


def _json_attr(f, attr, types, expected, required=False):
    """A JSON attribute of ``f`` (a file or a dataset) checked to be of ``types``; a
    :class:`FileFormatError` if it is not (or is absent and ``required``)."""
    path = f.file.filename
    if isinstance(f, h5py.Dataset):
        name = f"{f.name.lstrip('/')} attribute {attr!r}"
    else:
        name = f"attribute {attr!r}"
    if attr not in f.attrs:
        if required:
            raise _damaged(path, f"has no {name}")
        return None
    value = f.attrs[attr]
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        raise _damaged(path, f"{name} is not text (JSON)")
    try:
        value = json.loads(value)
    except ValueError as exc:
        raise _damaged(path, f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, types):
        raise _damaged(path, f"{name} must be {expected}, not {type(value).__name__}")
    return value


def _check_config(path, config, has_init):
    """The estimator's parameters from the stored config, and their checked form."""
    from sparsecode.sae import MPSAE, TrainConfig

    defaults = MPSAE(1, 1).get_params()
    unknown = sorted((set(config) - set(defaults)) | (set(config) & set(_UNSTORED)))
    if unknown:
        raise _damaged(path, f"config has unknown settings {unknown}")
    for key in ("n_atoms", "k"):
        if key not in config:
            raise _damaged(path, f"config has no {key!r}")
    params = {**{k: v for k, v in defaults.items() if k not in _UNSTORED}, **config}
    checks = {
        "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
        "forget": (lambda v: v is None or _is_real(v), "a number or null"),
        "random_state": (lambda v: v is None or (_is_int(v) and v >= 0),
                         "an integer >= 0 or null"),
        "progress": (lambda v: v is None or isinstance(v, bool) or v == "auto",
                     "true, false, null or 'auto'"),
        "init": (lambda v: v in ("auto", "signals", "random", "array"),
                 "'auto', 'signals', 'random' or 'array'"),
    }
    for key, (ok, expected) in checks.items():
        value = params[key]
        if not ok(value):
            raise _damaged(path, f"config {key!r} must be {expected}, not {value!r}")
    if params["init"] == "array":
        if not has_init:
            raise _damaged(path, "config 'init' is 'array' but there is no dataset 'init'")
        params["init"] = None  # the caller reads the array
    if isinstance(params["betas"], list):
        params["betas"] = tuple(params["betas"])
    try:
        checked = TrainConfig.from_params({**params, "init": "random"})
    except (TypeError, ValueError) as exc:
        raise _damaged(path, f"config not accepted ({exc})") from None
    return params, checked


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def _check_scalars(path, scalars, config):
    """The scalar training state the engine restores, for ``config``."""
    counts = {"n_features_in": 1, "n_steps": 0, "n_samples_seen": 0, "last_check": 0,
              "n_checks": 0, "adam_t": 0, "dead_window": 1, "dead_n_samples": 0}
    if config.update == "online":
        counts.update(online_n_samples=0, online_n_updates=0)
    for key, low in counts.items():
        if key not in scalars:
            raise _damaged(path, f"state has no {key!r}")
        if not (_is_int(scalars[key]) and scalars[key] >= low):
            raise _damaged(path, f"state {key!r} must be an integer >= {low}, not "
                                 f"{scalars[key]!r}")
    for key, ok, expected in (
        ("total_steps", lambda v: v is None or (_is_int(v) and v >= 0),
         "an integer >= 0 or null"),
        ("forget", lambda v: _is_real(v) and 0 < v <= 1, "a number in (0, 1]"),
        ("seconds", lambda v: v is None or _is_real(v), "a number"),
    ):
        if key not in scalars and key != "seconds":
            raise _damaged(path, f"state has no {key!r}")
        if not ok(scalars.get(key)):
            raise _damaged(path, f"state {key!r} must be {expected}, not {scalars[key]!r}")
    if "rng" not in scalars:
        raise _damaged(path, "state has no 'rng' (the random generator's state)")
    try:
        np.random.default_rng().bit_generator.state = scalars["rng"]
    except (TypeError, ValueError, KeyError) as exc:
        raise _damaged(path, f"state 'rng' is not a random generator state ({exc})") from None


def _state_arrays(config, n_features):
    """name -> (shape, dtype kind) of the state arrays the engine restores."""
    a = config.n_atoms
    out = {"adam_m0": ((a, n_features), "f"), "adam_v0": ((a, n_features), "f")}
    if config.pre_bias:
        out.update(adam_m1=((n_features,), "f"), adam_v1=((n_features,), "f"))
    out.update(dead_counts=((a,), "iu"), dead_last_used=((a,), "iu"))
    if config.update == "online":
        out.update(online_A=((a, a), "f"), online_B=((a, n_features), "f"))
    return out


def _dataset(f, name):
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _damaged(f.filename, f"{name!r} is a group, not a dataset" if obj is not None
                       else f"has no dataset {name!r}")
    return obj


def _verb(name, singular, plural):
    """The verb agreeing with ``name`` ("components" is plural)."""
    return plural if name == "components" else singular


def _expect(path, name, ds, shape, dtype, meaning=""):
    """Check a dataset's dtype (a NumPy dtype, or a string of dtype kinds) and shape."""
    if isinstance(dtype, str):
        if ds.dtype.kind not in dtype:
            what = "floating-point numbers" if dtype == "f" else "integers"
            raise _damaged(path, f"{name} must hold {what}, not {ds.dtype}")
    elif ds.dtype != dtype:
        raise _damaged(path, f"{name} must be {np.dtype(dtype).name} (the config's dtype), "
                             f"not {ds.dtype}")
    if ds.shape != shape:
        raise _damaged(path, f"{name} {_verb(name, 'has', 'have')} shape {ds.shape}, not "
                             f"{meaning}{shape}")


def _check_history(path, ds):
    """The column names of the history table, checked against it."""
    if ds.ndim != 2 or ds.dtype.kind not in "fiu":
        raise _damaged(path, f"history must be a 2-D table of numbers, not shape "
                             f"{ds.shape} and dtype {ds.dtype}")
    columns = _json_attr(ds, "columns", list, "a JSON list of names") or []
    if not all(isinstance(c, str) for c in columns) or len(columns) != ds.shape[1]:
        raise _damaged(path, f"history has {ds.shape[1]} columns but its 'columns' "
                             f"attribute names {len(columns)}")
    return columns


def _check_finite(path, name, values):
    """Raise unless every value of ``values`` (an array, or a dataset read block by block
    of rows) is finite."""
    per_row = max(1, int(np.prod(values.shape[1:], dtype=np.int64)))
    step = max(1, _FINITE_BLOCK // per_row)
    bad = 0
    for start in range(0, values.shape[0], step):
        block = np.asarray(values[start:start + step])
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    if bad:
        raise _damaged(path, f"{name} {_verb(name, 'holds', 'hold')} {bad} non-finite "
                             f"value{'s' if bad != 1 else ''} (NaN or inf)")
