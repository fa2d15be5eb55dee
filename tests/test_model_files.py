"""Damaged model files: every one is refused at load with one line naming the file and the
problem, by the library (:class:`FileFormatError`) and by the commands that read models
(``encode``, ``export``, ``info``: exit 2, no traceback, nothing written)."""

import json
import shutil

import h5py
import numpy as np
import pytest

import sparsecode
from sparsecode.cli import main
from sparsecode.io import (
    FileFormatError,
    file_info,
    load_model,
    model_position,
    save_model,
    write_activations,
)

N_ATOMS, N_FEATURES = 16, 16


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small valid model file (checked to load and describe) and an activation file."""
    work = tmp_path_factory.mktemp("models")
    X = np.random.default_rng(0).standard_normal((200, N_FEATURES)).astype(np.float32)
    model = sparsecode.MPSAE(N_ATOMS, 3, batch_size=100, max_steps=3, progress=False,
                             random_state=0).fit(X)
    path = save_model(model, work / "model.h5", position={"epoch": 0, "batch": 2})
    np.testing.assert_array_equal(load_model(path).components_, model.components_)
    assert any("MP-SAE" in line for line in file_info(path))
    acts = write_activations(work / "acts.h5", X, dataset="acts")
    return {"model": path, "acts": acts}


def _set(name, index, value):
    def corrupt(f):
        data = f[name][()]
        data[index] = value
        f[name][...] = data
    return corrupt


def _replace(name, data):
    def corrupt(f):
        del f[name]
        f[name] = data
    return corrupt


def _delete(name):
    def corrupt(f):
        del f[name]
    return corrupt


def _delete_attr(name):
    def corrupt(f):
        del f.attrs[name]
    return corrupt


def _set_attr(name, text, on="/"):
    def corrupt(f):
        f[on].attrs[name] = text
    return corrupt


def _edit_json(name, key, value):
    def corrupt(f):
        data = json.loads(f.attrs[name])
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
        f.attrs[name] = json.dumps(data)
    return corrupt


_DROP = object()

#: (id, corruption, what the one-line error must say)
DAMAGE = [
    ("nan-components", _set("components", (0, slice(0, 3)), np.nan),
     "components hold 3 non-finite values (NaN or inf)"),
    ("inf-bias", _set("bias", 1, np.inf), "bias holds 1 non-finite value (NaN or inf)"),
    ("nan-state-array", _set("state/adam_v0", (2, 2), np.nan),
     "state/adam_v0 holds 1 non-finite value"),
    ("bias-shape", _replace("bias", np.zeros(3, np.float32)),
     "bias has shape (3,), not (n_features,) = (16,)"),
    ("components-shape", _replace("components", np.zeros((N_ATOMS, 5), np.float32)),
     "components have shape (16, 5), not (n_atoms, n_features) = (16, 16)"),
    ("components-1d", _replace("components", np.zeros(N_ATOMS * N_FEATURES, np.float32)),
     "components have shape (256,)"),
    ("components-dtype", _replace("components", np.zeros((N_ATOMS, N_FEATURES), np.int32)),
     "components must be float32 (the config's dtype), not int32"),
    ("components-float64", _replace("components", np.zeros((N_ATOMS, N_FEATURES))),
     "components must be float32 (the config's dtype), not float64"),
    ("state-array-shape", _replace("state/adam_m0", np.zeros((3, 3), np.float32)),
     "state/adam_m0 has shape (3, 3), not (16, 16)"),
    ("no-config", _delete_attr("config"), "has no attribute 'config'"),
    ("config-not-json", _set_attr("config", "{not json"), "attribute 'config' is not valid JSON"),
    ("config-not-object", _set_attr("config", "[1, 2]"),
     "attribute 'config' must be a JSON object, not list"),
    ("config-bad-value", _edit_json("config", "k", -1), "config not accepted (k must be >= 1"),
    ("config-bad-dtype", _edit_json("config", "dtype", "float16"),
     "config 'dtype' must be 'float32' or 'float64', not 'float16'"),
    ("config-unknown-key", _edit_json("config", "colour", "red"),
     "config has unknown settings ['colour']"),
    ("config-no-n-atoms", _edit_json("config", "n_atoms", _DROP), "config has no 'n_atoms'"),
    ("config-init-array-missing", _edit_json("config", "init", "array"),
     "config 'init' is 'array' but there is no dataset 'init'"),
    ("no-state-attr", _delete_attr("state"), "has no attribute 'state'"),
    ("state-no-n-steps", _edit_json("state", "n_steps", _DROP), "state has no 'n_steps'"),
    ("state-bad-rng", _edit_json("state", "rng", {"bit_generator": "PCG64"}),
     "state 'rng' is not a random generator state"),
    ("no-state-group", _delete("state"), "has no group 'state'"),
    ("no-state-array", _delete("state/dead_counts"), "has no state array 'state/dead_counts'"),
    ("no-history", _delete("history"), "has no dataset 'history'"),
    ("history-columns", _set_attr("columns", '["step"]', on="history"),
     "history has 11 columns but its 'columns' attribute names 1"),
]
PARAMS = [pytest.param(corrupt, said, id=name) for name, corrupt, said in DAMAGE]


def _damaged_copy(good, tmp_path, corrupt):
    path = tmp_path / "damaged.h5"
    shutil.copy(good["model"], path)
    with h5py.File(path, "r+") as f:
        corrupt(f)
    return path


@pytest.mark.parametrize(("corrupt", "said"), PARAMS)
def test_load_model_refuses_a_damaged_model_in_one_line(good, tmp_path, corrupt, said):
    path = _damaged_copy(good, tmp_path, corrupt)
    with pytest.raises(FileFormatError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert said in text and text.endswith("the model is damaged"), text
    assert len(text.splitlines()) == 1, text


@pytest.mark.parametrize("command", ["encode", "export", "info"])
@pytest.mark.parametrize(("corrupt", "said"), PARAMS)
def test_commands_refuse_a_damaged_model_and_write_nothing(good, tmp_path, capsys, corrupt,
                                                            said, command):
    path = _damaged_copy(good, tmp_path, corrupt)
    out = tmp_path / "out"
    argv = {
        "encode": ["encode", str(path), str(good["acts"]), "--dataset", "acts", "--out",
                   str(out), "--quiet"],
        "export": ["export", str(path), "--saelens", str(out)],
        "info": ["info", str(path)],
    }[command]
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"sparsecode: error: {path}: "), err
    assert said in err and err.endswith("the model is damaged"), err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5"]


def test_model_position_refuses_a_position_that_is_not_a_json_object(good, tmp_path):
    for text, said in (("{oops", "attribute 'position' is not valid JSON"),
                       ("[0, 2]", "attribute 'position' must be a JSON object or null")):
        path = _damaged_copy(good, tmp_path, _set_attr("position", text))
        with pytest.raises(FileFormatError) as err:
            model_position(path)
        assert str(err.value).startswith(f"{path}: ") and said in str(err.value)
    # the position needs nothing else of the model
    path = _damaged_copy(good, tmp_path, _delete_attr("config"))
    assert model_position(path) == {"epoch": 0, "batch": 2}
