"""Exports to SAELens and sparsify read back by load_sae: the files hold each format's
documented keys, shapes and config fields; the model read back holds the same arrays and
encodes as the exported model did (same atoms, values to rounding); options a format
cannot hold are folded into the weights or refused.  The command line: test_exports_cli.py."""

import functools
import json
import warnings

import numpy as np
import pytest

import sparsecode
from sparsecode.datasets import make_sparse_signals
from sparsecode.io import (
    FileFormatError,
    export_saelens,
    export_sparsify,
    load_sae,
)
from sparsecode.io.safetensors import read_header
from sparsecode.pretrained import PretrainedSAE
from sparsecode.sae import MPSAE, NotFittedError
from tests.sae_files import random_weights, write_llama_scope, write_sparsify

D, M, K = 16, 32, 4
#: Value tolerance of codes and reconstructions, per dtype.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}
SPARSIFY_CFG = {"activation", "expansion_factor", "normalize_decoder", "num_latents", "k",
                "multi_topk", "skip_connection", "transcode", "d_in"}


@functools.cache
def _X(dtype="float32"):
    X, _, _ = make_sparse_signals(600, D, M, K, noise=0.01, random_state=0)
    return (X + np.linspace(-0.5, 0.5, D)).astype(dtype)


@functools.cache
def _mpsae(solver="topk", selection="positive", dtype="float32", unit_atoms=False):
    m = MPSAE(M, k=K, solver=solver, selection=selection, unit_atoms=unit_atoms,
              batch_size=100, lr=1e-2, warmup_steps=2, progress=False, random_state=0,
              dtype=dtype)
    return m.fit(_X(dtype))


def _pretrained(architecture, *, dtype=np.float32, m=64, seed=0, **kw):
    w = random_weights(D, m, seed=seed, dtype=dtype)
    names = {"relu": ("W_enc", "b_enc"), "topk": ("W_enc", "b_enc"),
             "groupmax": ("W_enc", "b_enc"), "jumprelu": ("W_enc", "b_enc", "threshold"),
             "gated": ("W_enc", "b_gate", "b_mag", "r_mag"), "matching_pursuit": ()}
    if architecture in ("topk", "groupmax"):
        kw.setdefault("k", 8)
    if architecture == "matching_pursuit":
        kw.setdefault("max_iterations", 6)
    return PretrainedSAE(w["W_dec"], w["b_dec"], architecture=architecture,
                         **{n: w[n] for n in names[architecture]}, **kw)


def _quiet(export, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return export(*args, **kw)


def _cfg(folder):
    return json.loads((folder / "cfg.json").read_text())


def _header(path):
    tensors, metadata = read_header(path)
    return {name: (kind, shape) for name, (kind, shape, _) in tensors.items()}, metadata


def _same_codes(a, b, dtype):
    np.testing.assert_array_equal(a.indices, b.indices)
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(a.values, b.values, rtol=rtol, atol=rtol)


def _same_reconstructions(A, B, dtype):
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(A, B, rtol=rtol, atol=rtol * np.abs(A).max())


def _kind(dtype):
    return {"float32": "F32", "float64": "F64"}[np.dtype(dtype).name]


# ---------------------------------------------------------------- a TopK MPSAE


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_topk_mpsae_to_saelens(tmp_path, dtype):
    m = _mpsae(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the positive rule is reproduced: no warning
        out = export_saelens(m, tmp_path / "sae")
    tensors, metadata = _header(out / "sae_weights.safetensors")
    f = _kind(dtype)
    assert tensors == {"W_dec": (f, (M, D)), "W_enc": (f, (D, M)), "b_dec": (f, (D,)),
                       "b_enc": (f, (M,))}
    assert metadata == {}  # as SAELens (safetensors.torch.save_file) writes it
    cfg = _cfg(out)
    assert {k: cfg[k] for k in ("architecture", "d_in", "d_sae", "dtype", "k",
                                "rescale_acts_by_decoder_norm", "apply_b_dec_to_input",
                                "normalize_activations", "reshape_activations")} == {
        "architecture": "topk", "d_in": D, "d_sae": M, "dtype": dtype, "k": K,
        "rescale_acts_by_decoder_norm": False, "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none"}
    assert cfg["metadata"] == {"sparsecode_version": sparsecode.__version__,
                               "n_steps": m.n_steps_, "solver": "topk",
                               "selection": "positive", "k": K, "tol": None}

    sae = load_sae(out, dtype=dtype)
    assert (sae.architecture, sae.k, sae.apply_b_dec_to_input,
            sae.rescale_acts_by_decoder_norm, sae.normalize) == ("topk", K, True, False,
                                                                 "none")
    codes = _same_as_tied_topk(sae, m, dtype)
    assert (codes.l0 == K).mean() > 0.5


def _same_as_tied_topk(sae, m, dtype):
    """A loaded export of the TopK MPSAE ``m``: its tied weights, and its codes and
    reconstructions of the test rows; returns the model's codes."""
    np.testing.assert_array_equal(sae.W_dec, m.components_)
    np.testing.assert_array_equal(sae.W_enc, m.components_.T)
    np.testing.assert_array_equal(sae.b_enc, 0)
    np.testing.assert_array_equal(sae.b_dec, m.bias_)
    X = _X(dtype)
    codes = m.transform(X)
    _same_codes(sae.encode(X), codes, dtype)
    _same_reconstructions(sae.reconstruct(X), m.inverse_transform(codes), dtype)
    return codes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_topk_mpsae_to_sparsify(tmp_path, dtype):
    m = _mpsae(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = export_sparsify(m, tmp_path / "sae")
    assert out == tmp_path / "sae"
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae.safetensors"]
    tensors, metadata = _header(out / "sae.safetensors")
    f = _kind(dtype)
    assert tensors == {"W_dec": (f, (M, D)), "b_dec": (f, (D,)),
                       "encoder.bias": (f, (M,)), "encoder.weight": (f, (M, D))}
    assert metadata == {}  # as sparsify's save_model (safetensors.torch) writes it
    assert _cfg(out) == {"activation": "topk", "expansion_factor": M // D,
                         "normalize_decoder": False, "num_latents": M, "k": K,
                         "multi_topk": False, "skip_connection": False,
                         "transcode": False, "d_in": D}

    sae = load_sae(out, dtype=dtype)
    assert (sae.architecture, sae.k, sae.apply_b_dec_to_input) == ("topk", K, True)
    _same_as_tied_topk(sae, m, dtype)


def test_unit_atoms_set_normalize_decoder(tmp_path):
    m = _mpsae(unit_atoms=True)
    assert _cfg(export_sparsify(m, tmp_path / "sae"))["normalize_decoder"] is True


def test_signed_rule_ranks_topk_as_the_positive_one(tmp_path):
    m = _mpsae(selection="signed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = export_saelens(m, tmp_path / "saelens")
        b = export_sparsify(m, tmp_path / "sparsify")
    for out in (a, b):
        _same_codes(load_sae(out).encode(_X()), m.transform(_X()), "float32")


def test_abs_rule_and_other_solvers_warn(tmp_path):
    m = _mpsae(selection="abs")
    with pytest.warns(UserWarning, match="ReLU"):
        export_saelens(m, tmp_path / "a")
    assert _cfg(tmp_path / "a")["architecture"] == "topk"
    with pytest.warns(UserWarning, match="ReLU"):
        export_sparsify(m, tmp_path / "b")
    with pytest.warns(UserWarning, match="encodes by TopK"):
        export_sparsify(_mpsae(solver="mp"), tmp_path / "c")
    assert (tmp_path / "c" / "sae.safetensors").exists()  # exported all the same


def test_mp_mpsae_reads_back_as_matching_pursuit(tmp_path):
    m = _mpsae(solver="mp")
    sae = load_sae(export_saelens(m, tmp_path / "sae"))
    assert (sae.architecture, sae.max_iterations, sae.residual_threshold,
            sae.stop_on_duplicate_support) == ("matching_pursuit", K, 0.0, True)
    np.testing.assert_array_equal(sae.W_dec, m.components_)
    np.testing.assert_array_equal(sae.b_dec, m.bias_)
    X = _X()
    codes, mine = m.transform(X), sae.encode(X)
    # the same loop (see test_saelens); rows on near-ties may take another path
    same = (codes.indices == mine.indices).all(axis=1)
    assert same.mean() > 0.95
    np.testing.assert_allclose(mine.values[same], codes.values[same], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- a PretrainedSAE to SAELens

SAELENS_CASES = [
    ("relu", {}), ("relu", {"apply_b_dec_to_input": False}),
    ("relu", {"normalize": "constant_norm_rescale"}), ("relu", {"normalize": "layer_norm"}),
    ("topk", {}), ("topk", {"rescale_acts_by_decoder_norm": True}),
    ("jumprelu", {"apply_b_dec_to_input": False}), ("gated", {}),
    ("matching_pursuit", {"residual_threshold": 0.1, "stop_on_duplicate_support": False}),
]
SAELENS_ARCH = {"relu": "standard"}
SAELENS_TENSORS = {"relu": ("W_enc", "b_enc"), "topk": ("W_enc", "b_enc"),
                   "jumprelu": ("W_enc", "b_enc", "threshold"),
                   "gated": ("W_enc", "b_gate", "b_mag", "r_mag"), "matching_pursuit": ()}


@pytest.mark.parametrize(("architecture", "kw"), SAELENS_CASES)
def test_pretrained_to_saelens(tmp_path, architecture, kw):
    sae = _pretrained(architecture, info={"hookpoint": "blocks.3.hook_resid_post",
                                          "format": "gemma_scope"}, **kw)
    out = export_saelens(sae, tmp_path / "sae")
    m, d = sae.W_dec.shape
    shapes = {"W_enc": (d, m), "W_dec": (m, d), "b_dec": (d,)}
    tensors, _ = _header(out / "sae_weights.safetensors")
    assert tensors == {n: ("F32", shapes.get(n, (m,)))
                       for n in ("W_dec", "b_dec") + SAELENS_TENSORS[architecture]}
    cfg = _cfg(out)
    assert cfg["architecture"] == SAELENS_ARCH.get(architecture, architecture)
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (d, m, "float32")
    assert cfg["apply_b_dec_to_input"] is sae.apply_b_dec_to_input
    assert cfg["normalize_activations"] == sae.normalize
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert cfg["metadata"]["source_format"] == "gemma_scope"
    if architecture == "topk":
        assert (cfg["k"], cfg["rescale_acts_by_decoder_norm"]) == (
            8, sae.rescale_acts_by_decoder_norm)
    if architecture == "matching_pursuit":
        assert (cfg["max_iterations"], cfg["residual_threshold"],
                cfg["stop_on_duplicate_support"]) == (6, 0.1, False)

    back = load_sae(out)
    assert back.info["hookpoint"] == "blocks.3.hook_resid_post"
    for name in ("architecture", "k", "apply_b_dec_to_input", "normalize",
                 "rescale_acts_by_decoder_norm", "max_iterations", "residual_threshold",
                 "stop_on_duplicate_support"):
        assert getattr(back, name) == getattr(sae, name), name
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag",
                 "r_mag"):
        if getattr(sae, name) is None:
            assert getattr(back, name) is None
        else:
            np.testing.assert_array_equal(getattr(back, name), getattr(sae, name), name)
    X = _X()
    codes = sae.encode(X)
    assert codes.l0.mean() > 0
    _same_codes(back.encode(X), codes, "float32")
    _same_reconstructions(back.reconstruct(X), sae.reconstruct(X), "float32")


@pytest.mark.parametrize(("architecture", "kw"), [
    ("relu", {}), ("relu", {"apply_b_dec_to_input": False}), ("jumprelu", {}),
    ("gated", {}), ("topk", {}), ("topk", {"rescale_acts_by_decoder_norm": True})])
def test_a_constant_input_factor_is_folded_into_the_weights(tmp_path, architecture, kw):
    sae = _pretrained(architecture, dtype=np.float64, normalize="scale", norm_scale=2.5,
                      **kw)
    back = load_sae(export_saelens(sae, tmp_path / "sae"), dtype="float64")
    assert _cfg(tmp_path / "sae")["normalize_activations"] == "none"
    assert back.normalize == "none" and not back.rescale_acts_by_decoder_norm
    np.testing.assert_allclose(back.W_enc, sae.W_enc * 2.5 * (
        np.linalg.norm(sae.W_dec, axis=1) if kw else 1), rtol=1e-14)
    X = _X("float64")
    _same_codes(back.encode(X), sae.encode(X), "float64")
    _same_reconstructions(back.reconstruct(X), sae.reconstruct(X), "float64")


def test_saelens_refusals(tmp_path):
    cases = [(_pretrained("groupmax"), "no groupmax architecture"),
             (_pretrained("topk", W_skip=np.eye(D, dtype=np.float32)), "skip connection"),
             (_pretrained("matching_pursuit", normalize="scale", norm_scale=2.0),
              "cannot be folded")]
    for sae, message in cases:
        with pytest.raises(ValueError, match=message):
            export_saelens(sae, tmp_path / "sae")
        assert not (tmp_path / "sae").exists()


# ---------------------------------------------------------------- a PretrainedSAE to sparsify


@pytest.mark.parametrize("architecture", ["topk", "groupmax"])
@pytest.mark.parametrize("skip", [False, True])
def test_pretrained_to_sparsify(tmp_path, architecture, skip):
    W_skip = 0.05 * np.random.default_rng(1).standard_normal((D, D)).astype(np.float32)
    sae = _pretrained(architecture, W_skip=W_skip if skip else None)
    out = export_sparsify(sae, tmp_path, hookpoint="layers.3")
    assert out == tmp_path / "layers.3"
    tensors, _ = _header(out / "sae.safetensors")
    expected = {"encoder.weight": ("F32", (64, D)), "encoder.bias": ("F32", (64,)),
                "W_dec": ("F32", (64, D)), "b_dec": ("F32", (D,))}
    if skip:
        expected["W_skip"] = ("F32", (D, D))
    assert tensors == expected
    cfg = _cfg(out)
    assert set(cfg) == SPARSIFY_CFG
    assert (cfg["activation"], cfg["num_latents"], cfg["expansion_factor"], cfg["k"],
            cfg["skip_connection"], cfg["normalize_decoder"], cfg["d_in"]) == (
        architecture, 64, 4, 8, skip, True, D)

    with pytest.raises(FileFormatError, match="pass hookpoint="):
        load_sae(tmp_path)
    back = load_sae(tmp_path, hookpoint="layers.3")
    assert (back.architecture, back.k) == (architecture, 8)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip"):
        if getattr(sae, name) is None:
            assert getattr(back, name) is None
        else:
            np.testing.assert_array_equal(getattr(back, name), getattr(sae, name), name)
    X = _X()
    _same_codes(back.encode(X), sae.encode(X), "float32")
    _same_reconstructions(back.reconstruct(X), sae.reconstruct(X), "float32")


@pytest.mark.parametrize("kw", [{"apply_b_dec_to_input": False},
                                {"normalize": "scale", "norm_scale": 0.4},
                                {"rescale_acts_by_decoder_norm": True},
                                {"normalize": "scale", "norm_scale": 3.0,
                                 "apply_b_dec_to_input": False,
                                 "rescale_acts_by_decoder_norm": True}])
def test_what_sparsify_cannot_hold_is_folded(tmp_path, kw):
    sae = _pretrained("topk", dtype=np.float64, **kw)
    back = load_sae(export_sparsify(sae, tmp_path / "sae"), dtype="float64")
    assert back.apply_b_dec_to_input and back.normalize == "none"
    X = _X("float64")
    _same_codes(back.encode(X), sae.encode(X), "float64")
    _same_reconstructions(back.reconstruct(X), sae.reconstruct(X), "float64")


def test_a_llama_scope_topk_sae_to_sparsify(tmp_path):
    # a published layout (nn.Linear weights, no b_dec on the input, a dataset-wise norm)
    w = random_weights(D, 64, seed=3)
    sae = load_sae(write_llama_scope(tmp_path / "llama", w, act_fn="topk", k=8,
                                     norm_in=3.0))
    assert sae.normalize == "scale" and not sae.apply_b_dec_to_input
    back = load_sae(export_sparsify(sae, tmp_path / "sparsify"))
    X = _X()
    _same_codes(back.encode(X), sae.encode(X), "float32")
    _same_reconstructions(back.reconstruct(X), sae.reconstruct(X), "float32")


def test_a_sparsify_sae_exports_back_to_its_own_config_and_tensors(tmp_path):
    w = random_weights(D, 64, seed=4)
    src = write_sparsify(tmp_path / "src", w, k=8)
    out = export_sparsify(load_sae(src), tmp_path / "out")
    assert _cfg(out) == _cfg(src)
    a, b = load_sae(src), load_sae(out)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize(("architecture", "kw", "message"), [
    ("relu", {}, "no relu architecture"), ("jumprelu", {}, "no jumprelu"),
    ("gated", {}, "no gated"), ("matching_pursuit", {}, "no matching_pursuit"),
    ("topk", {"normalize": "layer_norm"}, "normalises each input row"),
    ("topk", {"normalize": "constant_norm_rescale"}, "normalises each input row")])
def test_sparsify_refusals(tmp_path, architecture, kw, message):
    with pytest.raises(ValueError, match=message):
        export_sparsify(_pretrained(architecture, **kw), tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


# ---------------------------------------------------------------- the boundary

EXPORTS = {"saelens": (export_saelens, "sae_weights.safetensors"),
           "sparsify": (export_sparsify, "sae.safetensors")}


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
def test_refuses_to_overwrite_unless_asked(tmp_path, fmt):
    export, weights = EXPORTS[fmt]
    out = export(_mpsae(), tmp_path / "sae")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(_pretrained("topk"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    export(_pretrained("topk"), out, overwrite=True)
    assert load_sae(out).n_atoms == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no temporary left
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", weights]


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
def test_target_that_is_a_file(tmp_path, fmt):
    export, _ = EXPORTS[fmt]
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(NotADirectoryError, match="file: exists and is not a directory"):
            export(_mpsae(), target, overwrite=True)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        export_sparsify(_mpsae(), tmp_path / "file", hookpoint="layers.0")
    assert (tmp_path / "file").read_text() == "x"


def test_two_formats_cannot_share_a_folder(tmp_path):
    export_saelens(_mpsae(), tmp_path / "a")
    with pytest.raises(FileExistsError, match="a SAELens export"):
        export_sparsify(_mpsae(), tmp_path / "a", overwrite=True)
    export_sparsify(_mpsae(), tmp_path / "b")
    with pytest.raises(FileExistsError, match="a sparsify export"):
        export_saelens(_mpsae(), tmp_path / "b", overwrite=True)
    assert load_sae(tmp_path / "a").info["format"] == "saelens"
    assert load_sae(tmp_path / "b").info["format"] == "sparsify"


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
def test_not_a_model(tmp_path, fmt):
    export, _ = EXPORTS[fmt]
    for bad in (None, np.zeros((4, 3)), "model.h5"):
        with pytest.raises(TypeError, match="MPSAE or a PretrainedSAE"):
            export(bad, tmp_path / "sae")
    with pytest.raises(NotFittedError):
        export(MPSAE(8, 2), tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


@pytest.mark.parametrize("hookpoint", ["", ".", "..", "a/b", "/abs"])
def test_hookpoint_is_one_folder_name(tmp_path, hookpoint):
    with pytest.raises(ValueError, match="single folder name"):
        export_sparsify(_mpsae(), tmp_path / "sae", hookpoint=hookpoint)
    with pytest.raises(TypeError, match="hookpoint"):
        export_sparsify(_mpsae(), tmp_path / "sae", hookpoint=3)
    assert not (tmp_path / "sae").exists()


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from sparsecode.io import _export

    def broken(path, tensors, **kw):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(_export, "write_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        export_sparsify(_mpsae(), tmp_path / "sae")
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    assert list((tmp_path / "sae").iterdir()) == []
