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
final path is always whole.
"""

import numbers

import numpy as np

from sparsecode._backend import to_host
from sparsecode.io._h5 import (
    FileFormatError,
    check_format,
    get_dataset,
    open_file,
    partial_path,
    read_json_attr,
    replace_into_place,
    write_json_attr,
)

FORMAT_VERSION = 1
#: Parameters not stored (not serialisable); they load as their defaults.
_UNSTORED = ("callback",)
_INT_COLUMNS = ("step", "samples")


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
    from pathlib import Path

    from sparsecode.sae import MPSAE

    if not isinstance(model, MPSAE):
        raise TypeError(f"model must be an MPSAE; got {type(model).__name__}")
    engine = model.engine_  # raises NotFittedError when not fitted
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    arrays, scalars = engine.state_dict()
    import json

    from sparsecode.io._h5 import _json_default

    # everything that could fail to serialise is encoded before the file is opened
    texts = {name: json.dumps(value, default=_json_default) for name, value in
             (("config", _config(model)), ("state", scalars), ("position", position))}
    columns = list(model.history_[0]) if model.history_ else []
    table = np.array([[h[c] for c in columns] for h in model.history_], np.float64)
    tmp = partial_path(path)
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_model(path):
    """Load a model saved by :func:`save_model`, ready to transform or to go on training
    (``partial_fit`` continues the same run: optimizer, schedule, RNG and counters).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    MPSAE
    """
    from sparsecode.sae import MPSAE

    with open_file(path) as f:
        check_format(f, "model")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise FileFormatError(
                f"{path}: model format version {version} is newer than this sparsecode "
                f"reads ({FORMAT_VERSION}); upgrade sparsecode"
            )
        config = read_json_attr(f, "config")
        if "init" in f:
            config["init"] = f["init"][()]
        if isinstance(config.get("betas"), list):
            config["betas"] = tuple(config["betas"])
        model = MPSAE(**config)
        scalars = read_json_attr(f, "state")
        arrays = {name: ds[()] for name, ds in f["state"].items()}
        hist = get_dataset(f, "history")
        columns = read_json_attr(hist, "columns", [])
        history = [{c: int(v) if c in _INT_COLUMNS else float(v)
                    for c, v in zip(columns, row, strict=True)} for row in hist[()]]
        components = get_dataset(f, "components")[()]
        bias = get_dataset(f, "bias")[()]
    if components.shape != (model.n_atoms, scalars["n_features_in"]):
        raise FileFormatError(
            f"{path}: components have shape {components.shape}, not (n_atoms, n_features) = "
            f"{(model.n_atoms, scalars['n_features_in'])}"
        )
    from sparsecode.sae import Engine, TrainConfig

    model.engine_ = Engine.restore(TrainConfig.from_params(model.get_params()), components, bias,
                                   arrays, scalars, history)
    return model


def model_position(path):
    """dict or None: the ``position`` stored by :func:`save_model`."""
    with open_file(path) as f:
        check_format(f, "model")
        return read_json_attr(f, "position")
