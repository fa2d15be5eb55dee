"""Export to SAELens' "matching_pursuit" format: the files, the config, SAELens' encoder
reproducing the model on the exported weights, and the boundary (errors, warnings,
atomic writes)."""

import copy
import functools
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import sparsecode
from sparsecode.datasets import make_sparse_signals
from sparsecode.io import _export as export_module
from sparsecode.io import export_saelens
from sparsecode.io.saelens import CFG_FILENAME, WEIGHTS_FILENAME
from sparsecode.io.safetensors import read_tensors
from sparsecode.sae import MPSAE, NotFittedError
from tests import naive
from tests.helpers import MARGIN

DTYPES = ("float32", "float64")
#: Reconstruction and activation tolerance (relative to ||x - b||), per dtype.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
N_TRAIN = 2000


@functools.cache
def _data():
    X, _, _ = make_sparse_signals(N_TRAIN + 500, 24, 48, 4, noise=0.01, random_state=0)
    return X + np.linspace(-1.0, 1.0, X.shape[1])  # an offset for the pre-bias to learn


@functools.cache
def _model(dtype="float32", unit_atoms=False, selection="positive", solver="mp", tol=None,
           max_steps=None, seed=0):
    m = MPSAE(48, 6, selection=selection, solver=solver, tol=tol, unit_atoms=unit_atoms,
              pre_bias=True, batch_size=250, lr=1e-2, warmup_steps=5, max_steps=max_steps,
              progress=False, random_state=seed, dtype=dtype)
    return m.fit(_data()[:N_TRAIN])


def _held_out():
    return _data()[N_TRAIN:]


def _export(model, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return export_saelens(model, path, **kw)


def _load(path):
    weights = {k: np.array(v) for k, v in read_tensors(path / WEIGHTS_FILENAME).items()}
    cfg = json.loads((path / CFG_FILENAME).read_text())
    return weights, cfg


def _saelens_encode(weights, cfg, X, **kw):
    return naive.saelens_mp_encode(X, weights["W_dec"], weights["b_dec"], cfg["max_iterations"],
                                   cfg["residual_threshold"], cfg["stop_on_duplicate_support"],
                                   **kw)


# ---------------------------------------------------------------- files and config


@pytest.mark.parametrize("unit_atoms", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_file(tmp_path, dtype, unit_atoms):
    m = _model(dtype, unit_atoms)
    out = export_saelens(m, tmp_path / "sae")
    assert out == tmp_path / "sae"
    assert sorted(p.name for p in out.iterdir()) == sorted([CFG_FILENAME, WEIGHTS_FILENAME])
    weights, _ = _load(out)
    assert set(weights) == {"W_dec", "b_dec"}
    W, b = weights["W_dec"], weights["b_dec"]
    assert W.shape == (m.n_atoms, m.n_features_in_)
    assert b.shape == (m.n_features_in_,)
    assert W.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype)
    # the atoms as they are: SAELens' loop on the raw rows is the model's encoder
    np.testing.assert_array_equal(W, m.components_)
    np.testing.assert_array_equal(b, m.bias_)
    norms = np.linalg.norm(W.astype(np.float64), axis=1)
    if unit_atoms:
        np.testing.assert_allclose(norms, 1.0, rtol=RTOL[np.dtype(dtype)])
    else:
        assert np.ptp(norms) > 1e-2  # free norms survived training and the export


def test_weights_are_c_contiguous(tmp_path, monkeypatch):
    seen = {}
    real = export_module.write_tensors

    def spy(filename, tensors, *args, **kw):
        seen.update(tensors)
        return real(filename, tensors, *args, **kw)

    monkeypatch.setattr(export_module, "write_tensors", spy)
    m = _model()
    # Fortran-ordered atoms must still be written C-contiguous
    m_f = copy.deepcopy(m)
    m_f.engine_.components = np.asfortranarray(m.components_)
    export_saelens(m_f, tmp_path / "sae")
    assert set(seen) == {"W_dec", "b_dec"}
    assert all(a.flags.c_contiguous for a in seen.values())
    np.testing.assert_array_equal(seen["W_dec"], m.components_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_config(tmp_path, dtype):
    m = _model(dtype)
    _, cfg = _load(export_saelens(m, tmp_path / "sae"))
    assert cfg["architecture"] == "matching_pursuit"
    assert cfg["d_in"] == m.n_features_in_
    assert cfg["d_sae"] == m.n_atoms
    assert cfg["dtype"] == dtype
    assert cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none"
    assert cfg["reshape_activations"] == "none"
    assert cfg["max_iterations"] == m.k
    assert cfg["residual_threshold"] == 0.0
    assert cfg["stop_on_duplicate_support"] is True
    assert cfg["metadata"] == {
        "sparsecode_version": sparsecode.__version__, "n_steps": m.n_steps_,
        "solver": m.solver, "selection": m.selection, "k": m.k, "tol": m.tol,
    }


def test_config_of_other_settings(tmp_path):
    # a relative tol has no SAELens counterpart: recorded in the metadata only
    m = _model(tol=0.05, max_steps=3)
    _, cfg = _load(export_saelens(m, tmp_path / "tol"))
    assert cfg["residual_threshold"] == 0.0
    assert cfg["metadata"]["tol"] == 0.05
    assert cfg["metadata"]["n_steps"] == m.n_steps_ == 3
    m = _model(selection="abs", max_steps=3)
    _, cfg = _load(_export(m, tmp_path / "abs"))
    assert cfg["stop_on_duplicate_support"] is False
    assert cfg["metadata"]["selection"] == "abs"


# ---------------------------------------------------------------- SAELens' encoder


@pytest.mark.parametrize("unit_atoms", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_saelens_encoder_reproduces_the_model(tmp_path, dtype, unit_atoms):
    m = _model(dtype, unit_atoms)
    X = _held_out()
    weights, cfg = _load(export_saelens(m, tmp_path / "sae"))
    acts, margins = _saelens_encode(weights, cfg, X, return_margins=True)
    recon = acts @ weights["W_dec"].astype(np.float64) + weights["b_dec"].astype(np.float64)

    codes = m.transform(X)  # the default: k = model.k, no tol
    Z = codes.toarray().astype(np.float64)
    X_hat = m.inverse_transform(codes).astype(np.float64)
    # the set-up exercises the stops: some signals stop before k steps (an atom selected
    # again, or no positive correlation left), most run all k
    assert (codes.l0 < m.k).any() and (codes.l0 == m.k).mean() > 0.5

    dt = np.dtype(dtype)
    scale = np.linalg.norm(X - m.bias_.astype(np.float64), axis=1)[:, None]
    # rows whose path rounding could flip (near-ties) need not agree; they are few
    ok = margins > MARGIN[dt]
    assert ok.mean() > 0.8
    np.testing.assert_allclose((acts - Z)[ok] / scale[ok], 0.0, atol=RTOL[dt])
    np.testing.assert_allclose((recon - X_hat)[ok] / scale[ok], 0.0, atol=RTOL[dt])
    # same support, and SAELens' activations are non-negative as ours
    np.testing.assert_array_equal((acts != 0)[ok], (Z != 0)[ok])
    assert (acts >= 0).all()


def test_normalising_the_atoms_would_change_a_free_norm_encoder(tmp_path):
    # why W_dec is not normalised: with free norms the model's encoder steps by
    # (d . r) d on the raw atoms; SAELens' loop on unit rows would be another encoder
    m = _model("float64", unit_atoms=False)
    X = _held_out()
    weights, cfg = _load(export_saelens(m, tmp_path / "sae"))
    W = weights["W_dec"]
    unit = {"W_dec": W / np.linalg.norm(W, axis=1, keepdims=True), "b_dec": weights["b_dec"]}
    recon = _saelens_encode(unit, cfg, X) @ unit["W_dec"] + unit["b_dec"]
    X_hat = m.inverse_transform(m.transform(X))
    scale = np.linalg.norm(X - m.bias_, axis=1)
    err = np.abs(recon - X_hat).max(axis=1) / scale
    assert np.mean(err > 1e-3) > 0.5


# ---------------------------------------------------------------- warnings


def test_no_warning_for_positive_mp(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_saelens(_model(), tmp_path / "sae")


@pytest.mark.parametrize("selection", ["abs", "signed"])
def test_warns_for_other_selection_rules(tmp_path, selection):
    m = _model(selection=selection, max_steps=3)
    with pytest.warns(UserWarning, match="positive rule"):
        export_saelens(m, tmp_path / "sae")
    assert (tmp_path / "sae" / WEIGHTS_FILENAME).exists()  # exported all the same


@pytest.mark.parametrize("solver", ["omp", "gp"])
def test_warns_for_other_solvers(tmp_path, solver):
    m = _model(solver=solver, max_steps=3)
    with pytest.warns(UserWarning, match="matching pursuit"):
        export_saelens(m, tmp_path / "sae")
    assert (tmp_path / "sae" / CFG_FILENAME).exists()


# ---------------------------------------------------------------- the boundary


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sae"
    export_saelens(_model(), path)
    with pytest.raises(FileExistsError, match=str(path / CFG_FILENAME)):
        export_saelens(_model(seed=1, max_steps=3), path)
    weights, _ = _load(path)
    np.testing.assert_array_equal(weights["W_dec"], _model().components_)  # untouched


@pytest.mark.parametrize("present", [CFG_FILENAME, WEIGHTS_FILENAME])
def test_either_file_blocks_the_export(tmp_path, present):
    path = tmp_path / "sae"
    path.mkdir()
    (path / present).write_text("old")
    with pytest.raises(FileExistsError, match=present):
        export_saelens(_model(), path)
    assert (path / present).read_text() == "old"


def test_overwrite_replaces_the_export(tmp_path):
    path = tmp_path / "sae"
    export_saelens(_model(), path)
    (path / "README.md").write_text("notes")
    other = _model(seed=1, max_steps=3)
    assert export_saelens(other, path, overwrite=True) == path
    weights, cfg = _load(path)
    np.testing.assert_array_equal(weights["W_dec"], other.components_)
    np.testing.assert_array_equal(weights["b_dec"], other.bias_)
    assert cfg["metadata"]["n_steps"] == other.n_steps_
    assert (path / "README.md").read_text() == "notes"  # other files are left alone


def test_existing_directory_without_an_export(tmp_path):
    path = tmp_path / "sae"
    path.mkdir()
    (path / "other.txt").write_text("x")
    export_saelens(_model(), path)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [CFG_FILENAME, WEIGHTS_FILENAME, "other.txt"])


def test_creates_parents_and_accepts_str(tmp_path):
    path = tmp_path / "a" / "b" / "sae"
    out = export_saelens(_model(), str(path))
    assert out == path and isinstance(out, type(path))
    assert (path / CFG_FILENAME).is_file() and (path / WEIGHTS_FILENAME).is_file()


def test_target_that_is_a_file(tmp_path):
    path = tmp_path / "sae"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match="sae"):
        export_saelens(_model(), path, overwrite=True)


@pytest.mark.parametrize("bad", [None, np.zeros((4, 3)), "model.h5", object()])
def test_type_error_for_a_non_model(tmp_path, bad):
    with pytest.raises(TypeError, match="MPSAE"):
        export_saelens(bad, tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


def test_not_fitted(tmp_path):
    with pytest.raises(NotFittedError):
        export_saelens(MPSAE(8, 2, selection="positive"), tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


def test_exports_without_safetensors(tmp_path, monkeypatch):
    # the weights are written by sparsecode's own safetensors writer: the optional
    # package is not needed (an import of it would fail here)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    out = export_saelens(_model(), tmp_path / "sae")
    weights, _ = _load(out)
    np.testing.assert_array_equal(weights["W_dec"], _model().components_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_file_is_what_safetensors_writes(tmp_path, dtype):
    # byte for byte the file safetensors.numpy.save_file writes for the same tensors
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    m = _model(dtype)
    out = export_saelens(m, tmp_path / "sae")
    safetensors_numpy.save_file({"W_dec": m.components_, "b_dec": m.bias_},
                                str(tmp_path / "reference.safetensors"))
    assert ((out / WEIGHTS_FILENAME).read_bytes()
            == (tmp_path / "reference.safetensors").read_bytes())


def _hidden(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_no_temporary_directory_left_after_success(tmp_path):
    export_saelens(_model(), tmp_path / "sae")
    export_saelens(_model(), tmp_path / "sae", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    assert _hidden(tmp_path / "sae") == []


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    written = []

    def broken(filename, tensors, *args, **kw):
        written.append(Path(filename))
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "write_tensors", broken)
    path = tmp_path / "sae"
    with pytest.raises(OSError, match="disk full"):
        export_saelens(_model(), path)
    # written in a hidden temporary directory beside the target, not inside it
    (w,) = written
    assert w.parent.parent == tmp_path and w.parent.name.startswith(".sae.")
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    assert list(path.iterdir()) == []  # no half-written file at the final path


def test_failed_overwrite_keeps_the_previous_export(tmp_path, monkeypatch):
    path = tmp_path / "sae"
    export_saelens(_model(), path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def fail_on_config(*args, **kw):
        raise TypeError("not JSON serialisable")

    monkeypatch.setattr(json, "dump", fail_on_config)
    with pytest.raises(TypeError, match="JSON"):
        export_saelens(_model(seed=1, max_steps=3), path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
